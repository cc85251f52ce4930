"""A fine-tune whose ``version.derived`` audit entry cannot be written stores no derived version:
the job fails, its version rows are rolled back and its uploaded ciphertext is deleted.

The real :meth:`JobRunner._finish` runs in-process, on the pieces the service builds (a SQLite
:class:`Store`, the local blob store, the service KEK, the audit trail and its recorder), with
the encrypted outputs the worker's own code writes. A real log outage cannot be timed from a
test to land between the version rows' flush and their audit append (both happen inside one
call, microseconds apart), so the one injected fault sits under the real trail, at its log's
next write transaction (:class:`tests.custody.in_doubt.CommitFaults`): that is the
``version.derived`` append, the first one ``_finish`` makes. ``before`` is a log that refused
the write (nothing landed); ``after`` is a commit in doubt (the entry landed, the trail voids it
at its next append).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from tests.custody.helpers import make_model, sign_model
from tests.custody.in_doubt import CommitFaults, log_of

from weightvault.access.kinds import _seal_output
from weightvault.access.sandbox import WorkerOutcome
from weightvault.access.spec import JobRequest
from weightvault.crypt import parse_identity
from weightvault.custody.alerts import AlertSink
from weightvault.custody.audit import VOID_ACTION, AuditTrail
from weightvault.custody.auditing import Auditing
from weightvault.custody.blobs import FileBlobStore, open_blob_store
from weightvault.custody.config import ServiceConfig
from weightvault.custody.context import Shared
from weightvault.custody.jobs_runner import JobRunner
from weightvault.custody.kek import ServiceKek
from weightvault.custody.store import (
    Job,
    Model,
    ModelVersion,
    Principal,
    Store,
    VersionFile,
    utcnow,
)


@dataclass
class Vault:
    store: Store
    blobs: FileBlobStore
    trail: AuditTrail
    runner: JobRunner
    base_prefix: str

    def entries(self) -> list[dict[str, Any]]:
        log = log_of(self.trail)
        return [json.loads(log.entry(i)) for i in range(log.size())]

    def prefixes(self) -> set[str]:
        """Upload prefixes present in the blob store."""
        return {p.name for p in self.blobs.root.iterdir() if re.fullmatch("[0-9a-f]{32}", p.name)}

    def job(self, job_id: str) -> Job:
        with self.store.session(read_only=True) as session:
            job = session.get(Job, job_id)
            assert job is not None
            return job

    def derived(self, version: str) -> tuple[ModelVersion | None, list[VersionFile]]:
        with self.store.session(read_only=True) as session:
            files = session.scalars(
                select(VersionFile).where(
                    VersionFile.model == "tiny", VersionFile.version == version
                )
            )
            return session.get(ModelVersion, ("tiny", version)), list(files)


@pytest.fixture
def vault(tmp_path: Path) -> Any:
    config = ServiceConfig(data_dir=tmp_path / "data")
    config.prepare()
    store = Store(config.database_url)
    store.create_schema()
    blobs = open_blob_store(config.blobs, config.data_dir)
    assert isinstance(blobs, FileBlobStore)
    kek = ServiceKek(parse_identity(config.kek_spec))
    signer = config.load_log_signer()
    trail = AuditTrail(
        config.log_location,
        config.log_origin,
        signer,
        config.load_hmac_key(),
        checkpoint_interval_s=1e9,  # no checkpoint write to take the planned fault
    )
    alerts = AlertSink(trail.append, None)
    auditing = Auditing(config, store, utcnow, trail, alerts)
    shared = Shared(config, store, utcnow, auditing.record)
    runner = JobRunner(
        shared,
        blobs,
        kek,
        signer.sign_message,
        signer.public_key,
        workers=1,
        allow_unisolated=False,
    )
    # The base version: a real (tiny) model signed by its release key; its own files are not
    # needed (the worker has run already), only the signature the lineage reads.
    signature = sign_model(
        make_model(tmp_path / "tiny", megabytes=0.01), ec.generate_private_key(ec.SECP256R1())
    ).read_bytes()
    now = utcnow()
    base_prefix = secrets.token_hex(16)
    with store.session() as session:
        session.add(Principal(name="olivia", roles="owner", created_at=now))
        session.add(Principal(name="aude", roles="auditor", created_at=now))
        session.flush()
        session.add(Model(name="tiny", owner="olivia", policy_json="{}", created_at=now))
        session.flush()
        session.add(
            ModelVersion(
                model="tiny",
                version="v1",
                size=1,
                file_count=1,
                signer="release-key",
                signature=signature,
                scan_summary="test",
                registered_by="olivia",
                registered_at=now,
                blob_prefix=base_prefix,
            )
        )
    try:
        yield Vault(store, blobs, trail, runner, base_prefix)
    finally:
        alerts.close()
        trail.close()
        store.dispose()


def _finetune_ran(vault: Vault) -> tuple[str, WorkerOutcome, Path]:
    """A running fine-tune job whose worker succeeded: its row, its outcome, and its scratch
    folder holding the encrypted tuned files as the worker writes them."""
    job_id = secrets.token_hex(16)
    request = JobRequest("finetune", "tiny", "v1", {"steps": 1}, {})
    now = utcnow()
    with vault.store.session() as session:
        session.add(
            Job(
                id=job_id,
                model="tiny",
                version="v1",
                requester="aude",
                kind="finetune",
                justification="rollback test",
                request_json=request.to_json(),
                request_digest=request.digest(),
                status="running",
                approvals_required=2,
                wall_s=600,
                output_limit=1 << 20,
                created_at=now,
                expires_at=now + dt.timedelta(days=1),
                started_at=now,
            )
        )
    scratch = vault.runner.scratch_root / job_id
    scratch.mkdir(mode=0o700)
    base_files = [VersionFile(path="config.json"), VersionFile(path="model.safetensors")]
    slots = vault.runner._output_slots(job_id, request, base_files)
    contents = {"config.json": b'{"hidden": 64}', "model.safetensors": secrets.token_bytes(4096)}
    written = [_seal_output(slot, contents[slot["path"]], str(scratch)) for slot in slots]
    outputs = {"metrics_before": {"loss": 2.0}, "metrics_after": {"loss": 1.5}, "files": written}
    outcome = WorkerOutcome("succeeded", outputs, "", {"python": "3"}, 1.0)
    return job_id, outcome, scratch


@pytest.mark.parametrize("fault", ["before", "after"])
def test_a_derived_version_whose_audit_entry_fails_is_not_stored(vault: Vault, fault: str) -> None:
    job_id, outcome, scratch = _finetune_ran(vault)
    faults = CommitFaults(vault.trail)
    faults.plan = [fault]

    vault.runner._finish(job_id, outcome, scratch)

    assert not faults.plan, "the planned fault was not reached"
    job = vault.job(job_id)
    assert job.status == "failed"
    assert job.reason is not None
    assert job.reason.startswith("the tuned version was not stored: the audit log cannot be")
    assert job.derived_version is None and job.outputs is None and job.released_at is None
    version, files = vault.derived("v1-ft1")
    assert version is None, "custody holds a derived version the audit log does not record"
    assert files == []
    assert vault.prefixes() <= {vault.base_prefix}, "the tuned files' ciphertext was left behind"

    entries = vault.entries()
    (finished,) = [e for e in entries if e["action"] == "job.finished"]
    assert finished["outcome"] == "failed"
    assert finished["detail"]["status"] == "failed"
    assert finished["detail"]["job_id"] == job_id
    derived = [e for e in entries if e["action"] == "version.derived"]
    voids = [e for e in entries if e["action"] == VOID_ACTION]
    if fault == "before":
        assert derived == [] and voids == []
    else:  # it landed: voided, as the version it names was not stored
        assert len(derived) == 1 and len(voids) == 1
        assert voids[0]["request_id"] == derived[0]["request_id"]

    # The same call with the log working stores the version (the setup does register one).
    job_id, outcome, scratch = _finetune_ran(vault)
    vault.runner._finish(job_id, outcome, scratch)
    job = vault.job(job_id)
    assert (job.status, job.reason, job.derived_version) == ("succeeded", None, "v1-ft1")
    version, files = vault.derived("v1-ft1")
    assert version is not None and version.blob_prefix in vault.prefixes()
    assert [f.path for f in files] == ["config.json", "model.safetensors"]
    assert all(f.blob_key.startswith(version.blob_prefix + "/") for f in files)
    last = vault.entries()[-2:]
    assert [(e["action"], e["outcome"]) for e in last] == [
        ("version.derived", "allowed"),
        ("job.finished", "allowed"),
    ]


def test_a_failed_cleanup_does_not_hide_why_the_version_was_refused(
    vault: Vault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blob store refusing the cleanup too (a second fault, on purpose): the job still fails
    for the audit log, and the ciphertext left is an orphan for the sweep (unreferenced)."""

    def refuse(prefix: str) -> None:
        raise OSError("blob store unreachable (simulated)")

    monkeypatch.setattr(vault.blobs, "delete_prefix", refuse)
    job_id, outcome, scratch = _finetune_ran(vault)
    CommitFaults(vault.trail).plan = ["before"]
    vault.runner._finish(job_id, outcome, scratch)
    job = vault.job(job_id)
    assert job.status == "failed" and job.reason is not None and "audit log" in job.reason
    assert vault.derived("v1-ft1") == (None, [])
    with vault.store.session(read_only=True) as session:
        referenced = set(session.scalars(select(ModelVersion.blob_prefix)))
    assert len(vault.prefixes() - referenced) == 1
