"""Running an approved job: the worker gets the data keys, the service keeps everything else.

For each job: (1) mark it running; (2) open each stored file's header with the service KEK and
pass the data key and the ciphertext's location to the worker over its standard input (for a
blob store that is not a local folder, the ciphertext is first copied into the job's scratch
folder: it stays ciphertext); (3) for a fine-tune, seal fresh data keys for the tuned files
under the KEK, so the worker writes them encrypted; (4) run the worker
(:func:`weightvault.access.sandbox.run_worker`); (5) keep its outputs in the database, not
released, and write a ``job.finished`` entry (outcome, digests, environment); a fine-tune's
tuned weights become a derived version, signed with the log key, with its lineage;
(6) remove the scratch folder whatever happened.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select

from weightvault._json import canonical, load_object
from weightvault.access.policy import AccessPolicy
from weightvault.access.result import digest_of, public_key_id, sign_result
from weightvault.access.sandbox import Limits, WorkerOutcome, run_worker, stop_worker
from weightvault.access.spec import JobRequest
from weightvault.crypt import FileContext, Identity, Recipient, unlock_header
from weightvault.crypt.envelope import seal
from weightvault.custody.blobs import BlobStore, FileBlobStore
from weightvault.custody.context import RequestContext, Room, Shared
from weightvault.custody.models import load_model
from weightvault.custody.store import Job, ModelVersion, VersionFile
from weightvault.errors import FormatError, WeightvaultError

__all__ = ["DERIVED_PREDICATE", "JobRunner", "root_digest_of"]

DERIVED_PREDICATE = "https://weightvault.dev/access/derived-version/v1"
_MODEL_FILES = ("config.json",)


def root_digest_of(signature: bytes) -> str:
    """``sha256:<hex>`` root digest of a version: from its OMS bundle, or from the lineage
    statement the custody signed for a derived version."""
    from weightvault.oms.bundle import parse_bundle
    from weightvault.oms.manifest import parse_statement

    try:
        return "sha256:" + parse_statement(parse_bundle(signature).payload).root_digest.hex()
    except WeightvaultError:
        pass
    envelope = load_object(signature, "derived version signature")
    payload = base64.b64decode(envelope.get("payload", ""))
    predicate = load_object(payload, "derived version statement").get("predicate", {})
    digest = predicate.get("root_digest") if isinstance(predicate, dict) else None
    if not isinstance(digest, str):
        raise FormatError("version signature: no root digest")
    return digest


def _selected(files: list[VersionFile]) -> list[VersionFile]:
    """The files a worker loads: the config and the safetensors weights."""
    return [f for f in files if f.path in _MODEL_FILES or f.path.endswith(".safetensors")]


class JobRunner(Room):
    """Starts workers for approved jobs (one thread each, at most ``workers`` at a time)."""

    def __init__(
        self,
        shared: Shared,
        blobs: BlobStore,
        kek: Identity,
        sign: Callable[[bytes], bytes],
        public_key: bytes,
        *,
        workers: int,
        allow_unisolated: bool,
    ) -> None:
        super().__init__(shared)
        self._blobs = blobs
        self._kek = kek
        self._sign = sign
        self._key_id = public_key_id(public_key)
        self._slots = threading.Semaphore(max(1, workers))
        self._allow_unisolated = allow_unisolated
        self._groups: dict[str, int] = {}
        self._lock = threading.Lock()
        self.scratch_root = (self._config.data_dir / "jobs").resolve()
        shutil.rmtree(self.scratch_root, ignore_errors=True)  # left by a killed service
        self.scratch_root.mkdir(mode=0o700, parents=True, exist_ok=True)

    # -- control -------------------------------------------------------------------------------

    def start(self, job_id: str) -> None:
        """Run ``job_id`` in the background (it must be ``approved``)."""
        threading.Thread(
            target=self._run, args=(job_id,), name=f"job-{job_id}", daemon=True
        ).start()

    def stop(self, job_id: str) -> None:
        """Kill the worker of ``job_id`` if this replica runs it."""
        with self._lock:
            group = self._groups.get(job_id)
        if group is not None:
            stop_worker(group)

    def resume(self) -> None:
        """At start: jobs a dead service was running failed; approved ones run now."""
        with self._store.session() as session:
            waiting = []
            for job in session.scalars(select(Job).where(Job.status.in_(("running", "approved")))):
                if job.status == "running":
                    job.status, job.reason = "failed", "the service stopped while the job ran"
                    job.finished_at = self._clock()
                else:
                    waiting.append(job.id)
        for job_id in waiting:
            self.start(job_id)

    # -- one job -------------------------------------------------------------------------------

    def _run(self, job_id: str) -> None:
        with self._slots:
            scratch = self.scratch_root / job_id
            try:
                outcome = self._work(job_id, scratch)
            except Exception as exc:  # a job that cannot start fails; the service goes on
                message = exc.message if isinstance(exc, WeightvaultError) else type(exc).__name__
                outcome = WorkerOutcome(
                    "failed", {}, f"the job could not start: {message}", {}, 0.0
                )
            finally:
                with self._lock:
                    self._groups.pop(job_id, None)
            try:
                self._finish(job_id, outcome, scratch)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    def _work(self, job_id: str, scratch: Path) -> WorkerOutcome:
        # (1)
        with self._store.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status != "approved":
                return WorkerOutcome("cancelled", {}, "not approved", {}, 0.0)
            job.status = "running"
            job.started_at = self._clock()
            _model, policy = load_model(session, job.model)
            files = _selected(
                list(
                    session.scalars(
                        select(VersionFile)
                        .where(VersionFile.model == job.model, VersionFile.version == job.version)
                        .order_by(VersionFile.index)
                    )
                )
            )
            request = JobRequest.from_json(job.request_json)
            session.expunge_all()
        access = policy.access or AccessPolicy()
        scratch.mkdir(mode=0o700)
        # (2)
        entries = []
        for f in files:
            header = b"".join(self._blobs.read_range(f.blob_key, 0, f.header_size))
            dek = unlock_header(header, [self._kek], f.path).dek
            entries.append(
                {
                    "path": f.path,
                    "blob": str(self._ciphertext(f, scratch)),
                    "dek": base64.b64encode(dek).decode("ascii"),
                }
            )
        # (3)
        outputs = self._output_slots(job_id, request, files) if request.kind == "finetune" else []
        message = {
            "job": request.to_dict(),
            "files": entries,
            "outputs": outputs,
            "forbidden": [str(self._config.data_dir.resolve())],
            "threads": os.cpu_count() or 1,
        }
        limits = Limits(
            cpu_s=access.cpu_s,
            wall_s=float(access.wall_s),
            memory_bytes=access.memory_bytes,
            output_bytes=max(job.output_limit, 1 << 20),
        )

        def started(group: int) -> None:
            with self._lock:
                self._groups[job_id] = group

        # (4)
        return run_worker(
            message,
            scratch=scratch,
            limits=limits,
            allow_unisolated=self._allow_unisolated,
            on_start=started,
        )

    def _ciphertext(self, f: VersionFile, scratch: Path) -> Path:
        if isinstance(self._blobs, FileBlobStore):
            return (self._blobs.root / f.blob_key).resolve()
        copy = scratch / f"in-{f.index}.wvenc"
        with copy.open("xb") as out:
            for piece in self._blobs.read_range(f.blob_key, 0, f.header_size + f.body_size):
                out.write(piece)
        return copy

    def _output_slots(
        self, job_id: str, request: JobRequest, files: list[VersionFile]
    ) -> list[dict[str, Any]]:
        """A fresh data key per tuned file, sealed for the KEK now (the worker encrypts)."""
        assert isinstance(self._kek, Recipient)
        set_id = secrets.token_hex(16)
        manifest = "sha256:" + hashlib.sha256(f"{job_id}:{request.digest()}".encode()).hexdigest()
        slots = []
        contexts = FileContext.of_set(request.model, [f.path for f in files], set_id, manifest)
        for index, (f, context) in enumerate(zip(files, contexts, strict=True)):
            header, dek = seal(context, [self._kek])
            slots.append(
                {
                    "path": f.path,
                    "file": f"out-{index}.wvenc",
                    "header": base64.b64encode(header).decode("ascii"),
                    "dek": base64.b64encode(dek).decode("ascii"),
                    "set_id": set_id,
                }
            )
        return slots

    # -- (5) the outcome -----------------------------------------------------------------------

    def _finish(self, job_id: str, outcome: WorkerOutcome, scratch: Path) -> None:
        if outcome.status == "cancelled":
            return
        ctx = RequestContext(secrets.token_hex(16), "JOB", f"/v1/jobs/{job_id}", "local")
        ctx.action = "job.finished"
        with self._store.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or job.status != "running":
                return  # cancelled while it ran: nothing it made is kept
            outputs = outcome.outputs
            status = outcome.status
            reason = outcome.reason
            derived = None
            if status == "succeeded" and job.kind == "finetune":
                try:
                    with self._derived_savepoint(session, ctx) as prefix:
                        derived = self._register_derived(
                            session, ctx, job, outputs, scratch, prefix
                        )
                except WeightvaultError as exc:
                    status, reason = "failed", f"the tuned version was not stored: {exc.message}"
                outputs = {k: v for k, v in outputs.items() if k != "files"}
                outputs["derived_version"] = derived
            environment = outcome.environment
            detail: dict[str, Any] = {
                "job_id": job_id,
                "model": job.model,
                "version": job.version,
                "kind": job.kind,
                "status": status,
                "reason": reason,
                "seconds": round(outcome.seconds, 3),
                "environment": environment,
                "environment_digest": digest_of(environment),
            }
            job.status = status
            job.reason = reason or None
            job.finished_at = self._clock()
            job.environment = json.dumps(environment, sort_keys=True)
            if status == "succeeded":
                job.outputs = canonical(outputs, ascii_only=True)
                job.outputs_digest = digest_of(outputs)
                job.derived_version = derived
                detail["outputs_digest"] = job.outputs_digest
                detail["output_bytes"] = len(job.outputs)
            self._audit(ctx, "allowed" if status == "succeeded" else "failed", detail)

    @contextlib.contextmanager
    def _derived_savepoint(self, session: Any, ctx: RequestContext) -> Iterator[str]:
        """A derived version's registration all or nothing; yields its new blob prefix.

        In a savepoint, so a failure (its audit entry refused, say) rolls back the version rows
        alone and the job's transaction goes on to record the failure; what was uploaded under
        the prefix is deleted (best effort: the orphan sweep removes what is left)."""
        prefix = secrets.token_hex(16)
        savepoint = session.begin_nested()
        try:
            yield prefix
        except Exception:
            savepoint.rollback()
            with contextlib.suppress(Exception):  # must not hide why the version was refused
                self._blobs.delete_prefix(prefix)
            raise
        finally:
            ctx.action = "job.finished"  # the entry that follows, whatever happened
        savepoint.commit()

    def _register_derived(
        self,
        session: Any,
        ctx: RequestContext,
        job: Job,
        outputs: dict[str, Any],
        scratch: Path,
        prefix: str,
    ) -> str:
        """Store a fine-tune's encrypted files as version ``VERSION-ftN`` under the blob
        ``prefix``, signed with lineage."""
        written = outputs.get("files")
        if not isinstance(written, list) or not written:
            raise FormatError("the fine-tune wrote no files")
        stem = f"{job.version}-ft"[:60]
        number = 1
        while session.get(ModelVersion, (job.model, f"{stem}{number}")) is not None:
            number += 1
        name = f"{stem}{number}"
        base = session.get(ModelVersion, (job.model, job.version))
        if base is None:
            raise FormatError("the base version is gone")
        digests = hashlib.sha256()
        rows = []
        for index, item in enumerate(written):
            path = str(item["path"])
            source = scratch / str(item["file"])
            if source.parent != scratch or not source.is_file():
                raise FormatError("the fine-tune's output file is missing")
            key = f"{prefix}/{index}.wvenc"
            self._blobs.put_file(key, source)
            digests.update(bytes.fromhex(str(item["sha256"])))
            rows.append(
                VersionFile(
                    model=job.model,
                    version=name,
                    index=index,
                    path=path,
                    size=int(item["size"]),
                    sha256=str(item["sha256"]),
                    blob_key=key,
                    header_size=int(item["header_size"]),
                    body_size=int(item["body_size"]),
                )
            )
        lineage = {
            "base": {
                "model": job.model,
                "version": job.version,
                "root_digest": root_digest_of(base.signature),
            },
            "job_id": job.id,
            "request_digest": job.request_digest,
            "tuned_by": job.requester,
            "root_digest": "sha256:" + digests.hexdigest(),
        }
        statement = {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": r.path, "digest": {"sha256": r.sha256}} for r in rows],
            "predicateType": DERIVED_PREDICATE,
            "predicate": lineage,
        }
        signature = sign_result(statement, self._sign, self._key_id)
        session.add(
            ModelVersion(
                model=job.model,
                version=name,
                size=sum(r.size for r in rows),
                file_count=len(rows),
                signer=f"custody:finetune job {job.id}",
                signature=signature,
                scan_summary=f"derived from {job.version} by finetune job {job.id}; "
                "written by the custody's worker, not uploaded",
                registered_by=job.requester,
                registered_at=self._clock(),
                blob_prefix=prefix,
            )
        )
        session.add_all(rows)
        session.flush()
        ctx.action = "version.derived"
        self._audit(ctx, "allowed", {"model": job.model, "version": name, "lineage": lineage})
        return name
