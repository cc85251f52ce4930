"""Where the ciphertext lives: a local folder (default) or an S3-compatible bucket.

Keys are chosen by the service (``<random upload id>/<file index>.wvenc``), never by clients, so
no client string ever becomes a path. Writes are atomic in both stores (a temp file renamed into
place; an S3 object appears only when its upload completes), and reads stream fixed-size pieces
of any byte range, so memory stays flat whatever the size.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from weightvault._fs import atomic_output, fsync_dir
from weightvault.errors import InputError, UsageError

__all__ = ["BlobStore", "FileBlobStore", "S3BlobStore", "open_blob_store"]

READ_PIECE = 4 * 1024 * 1024
_KEY_RE = re.compile(r"[0-9a-f]{32}/[0-9]{1,6}\.wvenc")


def _check_key(key: str) -> str:
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"bad blob key {key!r}")
    return key


class BlobStore(Protocol):
    """The operations the service needs from a blob store."""

    def put_file(self, key: str, source: Path) -> None:
        """Store the file at ``source`` under ``key`` atomically (``source`` may be moved)."""

    def size(self, key: str) -> int:
        """Size of the stored object."""

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        """Yield the bytes ``[start, start + length)`` in pieces of at most 4 MiB."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix/`` (cleanup of failed uploads)."""

    def describe(self) -> str:
        """Where the blobs are, for messages."""

    def sweep(self, referenced: set[str], older_than: float) -> list[str]:
        """Delete upload prefixes not in ``referenced`` last written before ``older_than``
        (epoch seconds): ciphertext of uploads that died before they were registered."""


class FileBlobStore:
    """Blobs as files under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Same file system (the staging folder sits beside the blobs): a rename is atomic.
            with source.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(source, target)
            fsync_dir(target.parent)
            return
        except OSError:
            pass
        with atomic_output(target, force=True, mode=0o600) as out, source.open("rb") as src:
            shutil.copyfileobj(src, out, READ_PIECE)

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        with self._path(key).open("rb", buffering=0) as handle:
            handle.seek(start)
            remaining = length
            while remaining > 0:
                piece = handle.read(min(READ_PIECE, remaining))  # one allocation, one copy
                if not piece:
                    raise InputError(f"blob {key}: shorter than recorded")
                remaining -= len(piece)
                yield piece

    def delete_prefix(self, prefix: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", prefix):
            raise ValueError(f"bad blob prefix {prefix!r}")
        shutil.rmtree(self.root / prefix, ignore_errors=True)

    def describe(self) -> str:
        return str(self.root)

    def sweep(self, referenced: set[str], older_than: float) -> list[str]:
        removed = []
        for entry in self.root.iterdir():
            if not re.fullmatch(r"[0-9a-f]{32}", entry.name) or entry.name in referenced:
                continue
            if entry.stat().st_mtime < older_than:
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
        return removed


class S3BlobStore:
    """Blobs in an S3-compatible bucket under a prefix (boto3; endpoint from the environment)."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint_url or os.environ.get("WEIGHTVAULT_S3_ENDPOINT") or None,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                max_pool_connections=32,
                s3={"addressing_style": "path"},
            ),
        )

    def _name(self, key: str) -> str:
        key = _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_file(self, key: str, source: Path) -> None:
        from boto3.s3.transfer import TransferConfig

        self._client.upload_file(
            str(source),
            self.bucket,
            self._name(key),
            Config=TransferConfig(multipart_threshold=64 * 1024 * 1024, max_concurrency=4),
        )

    def size(self, key: str) -> int:
        head = self._client.head_object(Bucket=self.bucket, Key=self._name(key))
        return int(head["ContentLength"])

    def read_range(self, key: str, start: int, length: int) -> Iterator[bytes]:
        if length <= 0:
            return
        response = self._client.get_object(
            Bucket=self.bucket, Key=self._name(key), Range=f"bytes={start}-{start + length - 1}"
        )
        body = response["Body"]
        try:
            received = 0
            for piece in body.iter_chunks(READ_PIECE):
                received += len(piece)
                yield piece
            if received != length:
                raise InputError(f"blob {key}: object shorter than recorded")
        finally:
            with contextlib.suppress(Exception):
                body.close()

    def delete_prefix(self, prefix: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", prefix):
            raise ValueError(f"bad blob prefix {prefix!r}")
        full = f"{self.prefix}/{prefix}/" if self.prefix else f"{prefix}/"
        listing = self._client.list_objects_v2(Bucket=self.bucket, Prefix=full)
        for item in listing.get("Contents", []):
            self._client.delete_object(Bucket=self.bucket, Key=item["Key"])

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def sweep(self, referenced: set[str], older_than: float) -> list[str]:
        base = f"{self.prefix}/" if self.prefix else ""
        newest: dict[str, float] = {}
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=base):
            for item in page.get("Contents", []):
                name = item["Key"][len(base) :].split("/", 1)[0]
                stamp = item["LastModified"].timestamp()
                newest[name] = max(newest.get(name, 0.0), stamp)
        removed = []
        for name, stamp in newest.items():
            if re.fullmatch(r"[0-9a-f]{32}", name) and name not in referenced:
                if stamp < older_than:
                    self.delete_prefix(name)
                    removed.append(name)
        return removed


def open_blob_store(spec: str, data_dir: Path) -> BlobStore:
    """``s3://bucket/prefix`` or a folder path (default ``DATA_DIR/blobs``)."""
    if spec.startswith("s3://"):
        parsed = urllib.parse.urlsplit(spec)
        if not parsed.netloc:
            raise UsageError("blob location: expected s3://BUCKET/PREFIX", remedy="blobs")
        return S3BlobStore(parsed.netloc, parsed.path)
    if "://" in spec:
        raise UsageError("blob location: expected a folder or s3://BUCKET/PREFIX", remedy="blobs")
    path = Path(spec) if spec else data_dir / "blobs"
    return FileBlobStore(path)
