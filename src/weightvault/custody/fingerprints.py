"""Fingerprinted pulls: under a model's ``fingerprint`` policy, each grant gets its own copy.

On a grant's first listing or pull, every safetensors file of the version is decrypted into the
service's private staging folder, marked for the recipient ``PRINCIPAL:GRANT_ID`` with the
service's fingerprint key (``weightvault.fingerprint``, planned over all the version's files so
a unit group split across shards stays consistent), encrypted again under a fresh data key for
the service KEK, stored as a blob, and recorded (:class:`~weightvault.custody.store.
FingerprintedFile`). Pulls of that grant then stream the stored copy exactly as they stream an
original: the same bytes for every range and every resume. Other files are delivered as stored.
The staging folder holds plaintext only while a copy is made, as during an upload.

The fingerprint key is ``fingerprint.key`` in the data folder (created 0600 on first use);
replicas of one service must share it, like the KEK. Tracing a leak:
``weightvault trace SUSPECT --model ORIGINAL --key DATA/fingerprint.key --recipients FILE`` with
the ``PRINCIPAL:GRANT_ID`` of the model's grants.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from sqlalchemy import select
from sqlalchemy.orm import Session

from weightvault.crypt import (
    FileContext,
    Identity,
    Recipient,
    decrypt_file,
    encrypt_file,
    unlock_header,
)
from weightvault.custody.blobs import BlobStore
from weightvault.custody.models import load_model
from weightvault.custody.store import FingerprintedFile, GrantRequest, VersionFile

if TYPE_CHECKING:  # torch and numpy load only when a fingerprinted copy is made
    from weightvault.fingerprint import FingerprintKey

__all__ = ["FINGERPRINT_KEY_FILE", "Fingerprinter", "recipient_id"]

FINGERPRINT_KEY_FILE = "fingerprint.key"


def recipient_id(grant: GrantRequest) -> str:
    """The id a grant's copy is marked for: its principal and grant id."""
    return f"{grant.requester}:{grant.id}"


class Fingerprinter:
    """Makes and records a grant's marked copies (once per grant)."""

    def __init__(self, blobs: BlobStore, kek: Identity, staging: Path, key_path: Path) -> None:
        if not isinstance(kek, Recipient):
            raise TypeError("the service KEK must also wrap keys")
        self._blobs = blobs
        self._kek = kek
        self._staging = staging
        self._key_path = key_path
        self._lock = threading.Lock()
        self._key: FingerprintKey | None = None

    def key(self) -> FingerprintKey:
        """The service's fingerprint key (created on first use)."""
        from weightvault.fingerprint import create_fingerprint_key, load_fingerprint_key

        if self._key is None:
            if self._key_path.exists():
                self._key = load_fingerprint_key(self._key_path)
            else:
                self._key = create_fingerprint_key(self._key_path)
        return self._key

    def grant_mark(self, session: Session, grant: GrantRequest) -> str | None:
        """The public id of the mark ``grant``'s copies carry, or None when its model has no
        ``fingerprint`` policy (then its pulls are delivered as stored)."""
        if not load_model(session, grant.model)[1].fingerprint:
            return None
        return self.key().fingerprint_id(recipient_id(grant))

    def copies(
        self, session: Session, grant: GrantRequest, files: list[VersionFile]
    ) -> dict[int, FingerprintedFile]:
        """The grant's marked copies by file index, made now if this is the grant's first use."""
        with self._lock:
            made = {
                row.file_index: row
                for row in session.scalars(
                    select(FingerprintedFile).where(FingerprintedFile.grant_id == grant.id)
                )
            }
            if made or not any(f.path.endswith(".safetensors") for f in files):
                return made
            rows = self._make(grant, files)
            for row in rows:
                session.add(row)
            session.flush()
            return {row.file_index: row for row in rows}

    def _make(self, grant: GrantRequest, files: list[VersionFile]) -> list[FingerprintedFile]:
        from weightvault.fingerprint import Marker, MarkOptions, ModelReader, plan_marks

        key = self.key()
        recipient = recipient_id(grant)
        work = self._staging / f"fp-{secrets.token_hex(8)}"
        work.mkdir(mode=0o700)
        prefix = secrets.token_hex(16)
        try:
            plain: dict[int, Path] = {}
            for vfile in files:
                if not vfile.path.endswith(".safetensors"):
                    continue
                encrypted = work / f"{vfile.index}.wvenc"
                with encrypted.open("xb") as handle:
                    for piece in self._blobs.read_range(
                        vfile.blob_key, 0, vfile.header_size + vfile.body_size
                    ):
                        handle.write(piece)
                plain[vfile.index] = work / f"{vfile.index}-plain.safetensors"
                decrypt_file(
                    encrypted, plain[vfile.index], [self._kek], expected_sha256=vfile.sha256
                )
                encrypted.unlink()
            infos = {}
            for path in plain.values():
                infos.update(ModelReader(path).infos)
            marker = Marker(plan_marks(infos), key, recipient, MarkOptions())
            rows = []
            for vfile in files:
                if vfile.index not in plain:
                    continue
                marked = work / f"{vfile.index}-marked.safetensors"
                digest = hashlib.sha256()
                with plain[vfile.index].open("rb") as source, marked.open("xb") as sink:
                    size = marker.rewrite(
                        source, cast(BinaryIO, _Hashing(sink, digest)), vfile.path
                    )
                plain[vfile.index].unlink()
                stored = self._blobs_header(vfile)
                sealed = encrypt_file(marked, work / f"{vfile.index}.out", stored, [self._kek])
                marked.unlink()
                blob_key = f"{prefix}/{vfile.index}.wvenc"
                self._blobs.put_file(blob_key, work / f"{vfile.index}.out")
                rows.append(
                    FingerprintedFile(
                        grant_id=grant.id,
                        file_index=vfile.index,
                        fingerprint_id=key.fingerprint_id(recipient),
                        size=size,
                        sha256=digest.hexdigest(),
                        blob_key=blob_key,
                        header_size=sealed.header_size,
                        body_size=sealed.body_size,
                    )
                )
            return rows
        except BaseException:
            self._blobs.delete_prefix(prefix)
            raise
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _blobs_header(self, vfile: VersionFile) -> FileContext:
        """The original's file context (model, path, position): the copy keeps it."""
        stored = b"".join(self._blobs.read_range(vfile.blob_key, 0, vfile.header_size))
        return unlock_header(stored, [self._kek], vfile.path).header.context


class _Hashing:
    """A write-only file that also hashes what passes through it."""

    def __init__(self, sink: object, digest: hashlib._Hash) -> None:
        self._sink = sink
        self._digest = digest

    def write(self, data: bytes) -> int:
        self._digest.update(data)
        return self._sink.write(data)  # type: ignore[attr-defined, no-any-return]
