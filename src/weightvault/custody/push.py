"""The push pipeline of the models room: a new version from a framed upload body.

The body is one JSON line, then the files' bytes in order. The JSON line:
``{"signature": base64(OMS bundle), "files": [{"path", "size"}, ...], "single_file": bool}``.

Steps: (1) the uploader owns the model; (2) stream the files to a private staging folder;
(3) verify the OMS signature against the policy's signers; (4) scan; (5) encrypt each file
under a fresh data key wrapped by the service KEK into the blob store; (6) audit, then register
the version and its files in one transaction. Plaintext lives only in the staging folder, which
is removed whatever happens (and at every start, for a process that was killed).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from weightvault import _b64 as b64
from weightvault._json import load_object
from weightvault.crypt import FileContext, Recipient, encrypt_file
from weightvault.custody import _integrations, _names
from weightvault.custody.alerts import AlertEvent, AlertSink
from weightvault.custody.blobs import BlobStore
from weightvault.custody.context import RequestContext, Room, Shared, require_role
from weightvault.custody.errors import ConflictError
from weightvault.custody.models import load_model
from weightvault.custody.store import ModelVersion, VersionFile
from weightvault.errors import (
    FormatError,
    PolicyError,
    UnsafeFileError,
    VerificationError,
    WeightvaultError,
)

__all__ = ["Push", "PushManifest", "ReadableBody", "parse_push_manifest"]

MAX_MANIFEST = 4 * 1024 * 1024


class ReadableBody(Protocol):
    """What an upload body must offer (a file object, or the HTTP layer's stream reader)."""

    def read(self, size: int = -1, /) -> bytes: ...

    def readline(self, limit: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class PushManifest:
    """The first line of an upload: the signature and the files that follow, in order."""

    signature: bytes
    files: tuple[tuple[str, int], ...]
    """``(path, size)`` of each file, in the order of the body."""
    single_file: bool

    @property
    def total(self) -> int:
        return sum(size for _path, size in self.files)


def parse_push_manifest(line: bytes) -> PushManifest:
    """Parse and check the manifest line (paths, sizes, no duplicates, limits)."""
    manifest = load_object(line, "upload manifest")
    if not {"files", "signature"} <= set(manifest) or not (
        set(manifest) <= {"files", "signature", "single_file"}
    ):
        raise FormatError("upload manifest: expected 'files', 'signature' and 'single_file'")
    single = manifest.get("single_file", False)
    if not isinstance(single, bool):
        raise FormatError("upload manifest.single_file: expected true or false")
    signature = b64.decode(
        manifest["signature"], "upload manifest.signature", max_size=1 << 20, canonical=False
    )
    files = manifest["files"]
    if not isinstance(files, list) or not 1 <= len(files) <= _names.MAX_FILES:
        raise FormatError(f"upload manifest.files: expected 1 to {_names.MAX_FILES} entries")
    entries: list[tuple[str, int]] = []
    seen: set[str] = set()
    for i, item in enumerate(files):
        where = f"upload manifest.files[{i}]"
        if not isinstance(item, dict) or set(item) != {"path", "size"}:
            raise FormatError(f"{where}: expected path and size")
        path = _names.check_file_path(item["path"], f"{where}.path")
        if path == ".":
            raise FormatError(f"{where}.path: name the file (single_file: true for one file)")
        size = item["size"]
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise FormatError(f"{where}.size: expected a non-negative integer")
        if path in seen:
            raise FormatError(f"{where}.path: listed twice")
        if single and (len(files) != 1 or "/" in path or path == "."):
            raise FormatError(f"{where}.path: a single-file model is one plain file name")
        seen.add(path)
        entries.append((path, size))
    return PushManifest(signature, tuple(entries), single)


class Push(Room):
    """Registers versions: receive, verify, scan, encrypt, store, register."""

    alerts: AlertSink | None = None
    """Where incident signals go (a failed signature, a scan finding); set by the service."""

    def __init__(self, shared: Shared, blobs: BlobStore, kek: Recipient, staging: Path) -> None:
        super().__init__(shared)
        self._blobs = blobs
        self._kek = kek
        self._staging = staging

    def upload(
        self, ctx: RequestContext, model_name: str, version: str, body: ReadableBody
    ) -> dict[str, Any]:
        """Register ``model_name@version`` from a framed body (see the module docstring)."""
        # (1)
        principal = require_role(ctx, "owner", "admin")
        _names.check_model_name(model_name)
        _names.check_version_name(version)
        with self._store.session() as session:
            model, policy = load_model(session, model_name)
            if model.owner != principal.name:
                raise PolicyError(f"only the owner of {model_name!r} may upload versions")
            if session.get(ModelVersion, (model_name, version)) is not None:
                raise ConflictError(f"{model_name}@{version} exists already")
        line = body.readline(MAX_MANIFEST + 1)
        if not line.endswith(b"\n"):
            raise FormatError("upload: the first line must be the JSON manifest (at most 4 MiB)")
        manifest = parse_push_manifest(line)
        total = manifest.total
        if total > self._config.max_upload_bytes:
            raise PolicyError(f"upload: {total} bytes is over the service's limit")
        upload_id = secrets.token_hex(16)
        ctx.detail.update(
            {"model": model_name, "version": version, "upload_id": upload_id, "bytes": total}
        )
        self._audit(ctx, "started")  # an upload that dies half-way is still on record
        ctx.audited = False
        stage = Path(tempfile.mkdtemp(prefix=f"{upload_id}-", dir=self._staging))
        try:
            root = stage / "model"
            # (2)
            digests = _receive(body, root, manifest.files)
            # What arrived, before it is judged: a refused (tampered) upload's entry names the
            # digests of the files it carried (incident indicators).
            ctx.detail["received"] = [
                {"path": path, "sha256": digest}
                for (path, _size), digest in zip(manifest.files, digests, strict=True)
            ]
            model_root = root / manifest.files[0][0] if manifest.single_file else root
            # (3), (4), (5)
            try:
                signer = _integrations.verify_model_signature(
                    model_root, manifest.signature, policy
                )
            except VerificationError as exc:
                self._signal(ctx, "upload.signature_failed", model_name, exc)
                raise
            try:
                scan_summary = _integrations.scan_clean(model_root)
            except UnsafeFileError as exc:
                self._signal(ctx, "scan.finding", model_name, exc)
                raise
            stored = self._encrypt_and_store(model_root, upload_id, model_name, manifest)
        except BaseException:
            self._blobs.delete_prefix(upload_id)
            raise
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        version_row = ModelVersion(
            model=model_name,
            version=version,
            size=total,
            file_count=len(manifest.files),
            signer=signer,
            signature=manifest.signature,
            scan_summary=scan_summary,
            registered_by=principal.name,
            registered_at=self._clock(),
            blob_prefix=upload_id,
        )
        files = [
            VersionFile(
                model=model_name,
                version=version,
                index=index,
                path=path,
                size=size,
                sha256=digest,
                blob_key=f"{upload_id}/{index}.wvenc",
                header_size=header_size,
                body_size=body_size,
            )
            for index, ((path, size), digest, (header_size, body_size)) in enumerate(
                zip(manifest.files, digests, stored, strict=True)
            )
        ]
        # (6)
        ctx.detail.pop("received", None)  # the registered entry lists the files itself
        try:
            self._register(ctx, version_row, files)
        except BaseException:
            self._blobs.delete_prefix(upload_id)
            raise
        return {
            "model": model_name,
            "version": version,
            "size": total,
            "files": len(manifest.files),
            "signer": signer,
            "scan": scan_summary,
        }

    def _signal(
        self, ctx: RequestContext, kind: str, model_name: str, exc: WeightvaultError
    ) -> None:
        """An incident signal for a refused upload (the refusal itself is audited as usual)."""
        if self.alerts is None:
            return
        detail = {
            "version": ctx.detail.get("version"),
            "upload_id": ctx.detail.get("upload_id"),
            "reason": exc.one_line()[:300],
            "received": ctx.detail.get("received", []),
        }
        with self._store.session() as session:
            self.alerts.emit(
                session,
                AlertEvent(
                    kind, self._clock(), principal=ctx.name or None, model=model_name, detail=detail
                ),
            )

    def _register(
        self, ctx: RequestContext, version: ModelVersion, files: list[VersionFile]
    ) -> None:
        """Audit, then insert the version and its files in one transaction."""
        with self._store.session() as session:
            if session.get(ModelVersion, (version.model, version.version)) is not None:
                raise ConflictError(f"{version.model}@{version.version} exists already")
            session.add(version)
            session.add_all(files)
            session.flush()
            self._audit(
                ctx,
                "allowed",
                {
                    "signer": version.signer,
                    "signature_sha256": hashlib.sha256(version.signature).hexdigest(),
                    "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
                    "scan": version.scan_summary,
                },
            )

    def _encrypt_and_store(
        self, base: Path, upload_id: str, model_name: str, manifest: PushManifest
    ) -> list[tuple[int, int]]:
        """Encrypt each staged file to the service KEK and store it; ``(header, body)`` sizes."""
        manifest_digest = "sha256:" + hashlib.sha256(manifest.signature).hexdigest()
        stored = []
        paths = [path for path, _size in manifest.files]
        contexts = FileContext.of_set(model_name, paths, upload_id, manifest_digest)
        for index, (path, context) in enumerate(zip(paths, contexts, strict=True)):
            source = base if manifest.single_file else base / path
            target = self._staging / f"{upload_id}-{index}.wvenc"
            sealed = encrypt_file(source, target, context, [self._kek])
            source.unlink()
            self._blobs.put_file(f"{upload_id}/{index}.wvenc", target)
            target.unlink(missing_ok=True)
            stored.append((sealed.header_size, sealed.body_size))
        return stored


def _receive(body: ReadableBody, root: Path, entries: tuple[tuple[str, int], ...]) -> list[str]:
    """Write each file of the body under ``root`` (0600); returns their SHA-256 digests."""
    digests = []
    root.mkdir(mode=0o700)
    for path, size in entries:
        target = root / path
        hasher = hashlib.sha256()
        remaining = size
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise FormatError(
                f"upload manifest: file path {path!r} collides with another file's folder"
            ) from exc
        with os.fdopen(fd, "wb") as out:
            while remaining:
                piece = body.read(min(remaining, 1 << 20))
                if not piece:
                    raise FormatError(f"upload: body ended inside file {path!r}")
                hasher.update(piece)
                out.write(piece)
                remaining -= len(piece)
        digests.append(hasher.hexdigest())
    if body.read(1):
        raise FormatError("upload: bytes after the last file")
    return digests
