"""A model that lives in an S3 bucket (``s3://bucket/prefix``), listed and read without a disk.

:func:`walk_object_store` lists the objects under a prefix into the same :class:`ModelTree`
:func:`~weightvault.tree.walk_model` makes for a folder (same names, order and ignore rules), so
a manifest of the objects is byte-identical to one of the same files on a disk. Each file
carries an :class:`S3Object`, which the hashing engine reads by range:

* **parallel ranged GETs**: a file is fetched in parts of ``part_size`` bytes, ``depth`` of them
  in flight at once, handed to the hasher in order (memory per file: ``depth x part_size``);
* **the listed version or nothing**: every GET carries ``If-Match`` with the ETag seen when
  listing, so an object replaced while it is hashed is refused ("changed while hashing"),
  never hashed half old, half new.

Endpoint and credentials come from the standard AWS variables (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles) plus ``WEIGHTVAULT_S3_ENDPOINT`` for
an S3-compatible server (path-style addressing). ``boto3`` is imported on first use, here only.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightvault.errors import InputError, Reason
from weightvault.tree import DEFAULT_IGNORED_NAMES, ModelFile, ModelTree, _folder_tree

__all__ = [
    "ENDPOINT_VARIABLE",
    "S3Location",
    "S3Object",
    "is_object_url",
    "walk_object_store",
]

SCHEME = "s3://"
#: An S3-compatible server's URL (SeaweedFS, MinIO, ...); unset means AWS itself.
ENDPOINT_VARIABLE = "WEIGHTVAULT_S3_ENDPOINT"
#: Bytes per ranged GET: large enough to amortise a request, small enough to bound memory.
DEFAULT_PART_SIZE = 8 << 20
#: Ranged GETs in flight per file being hashed.
DEFAULT_DEPTH = 4


def is_object_url(value: object) -> bool:
    """Whether ``value`` names a model in a bucket (``s3://...``) rather than a local path."""
    return isinstance(value, str) and value.startswith(SCHEME)


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix``, split (the prefix without a trailing ``/``; may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def parse(cls, url: str) -> S3Location:
        if not is_object_url(url):
            raise InputError(f"{url}: not an s3:// URL")
        bucket, _, prefix = url[len(SCHEME) :].partition("/")
        if not bucket:
            raise InputError(f"{url}: no bucket named (expected s3://bucket/prefix)")
        return cls(bucket, prefix.strip("/"))

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.prefix}" if self.prefix else f"{SCHEME}{self.bucket}"

    @property
    def name(self) -> str:
        """The model's name, as a folder's name is (the prefix's last part, else the bucket)."""
        return self.prefix.rpartition("/")[2] or self.bucket


@functools.cache
def _client(endpoint: str | None) -> Any:
    """One thread-safe client per endpoint and process (Ray workers make their own)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:  # pragma: no cover - boto3 comes with the server extra
        raise InputError(
            "reading s3:// models needs boto3 (pip install 'weightvault[server]')"
        ) from exc
    config = Config(
        max_pool_connections=64,
        retries={"max_attempts": 5, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
    )
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None, config=config)


def _endpoint() -> str | None:
    return os.environ.get(ENDPOINT_VARIABLE) or None


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _read_error(where: str, exc: BaseException) -> InputError:
    """A botocore failure as one line (never a traceback)."""
    code = _error_code(exc)
    if code in ("PreconditionFailed", "412"):
        return InputError(f"{where}: object changed while hashing (its ETag no longer matches)")
    if code in ("NoSuchKey", "404", "NotFound"):
        return InputError(f"{where}: no such object", reason=Reason.NOT_FOUND)
    if code == "NoSuchBucket":
        return InputError(f"{where}: no such bucket", reason=Reason.NOT_FOUND)
    if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return InputError(f"{where}: access denied ({code}); check the AWS credentials")
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return InputError(f"{where}: no AWS credentials (set AWS_ACCESS_KEY_ID and its secret)")
    detail = code or str(exc).splitlines()[0][:200]
    return InputError(f"{where}: cannot read ({detail})")


@dataclass(frozen=True)
class S3Object:
    """One object of a listed model: a :class:`~weightvault.hashing.RangeReader`.

    Plain data (it pickles, so a Ray worker can read it); the client is made in whichever
    process reads.
    """

    bucket: str
    key: str
    size: int
    etag: str
    endpoint: str | None = None
    part_size: int = DEFAULT_PART_SIZE
    depth: int = DEFAULT_DEPTH

    @property
    def url(self) -> str:
        return f"{SCHEME}{self.bucket}/{self.key}"

    def _get(self, start: int, end: int) -> bytes:
        try:
            response = _client(self.endpoint).get_object(
                Bucket=self.bucket,
                Key=self.key,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=self.etag,
            )
            data: bytes = response["Body"].read()
        except InputError:
            raise
        except Exception as exc:  # botocore raises many kinds; each becomes one line
            raise _read_error(self.url, exc) from exc
        if len(data) != end - start:
            raise InputError(
                f"{self.url}: got {len(data)} bytes for a {end - start}-byte range "
                "(changed while hashing?)"
            )
        return data

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes ``[start, end)``, fetched ``depth`` ranged GETs ahead of the hasher."""
        if end > self.size or start < 0 or start > end:
            raise InputError(f"{self.url}: range {start}-{end} is outside the object")
        parts = [(s, min(s + self.part_size, end)) for s in range(start, end, self.part_size)]
        if len(parts) <= 1:
            if parts:
                yield self._get(*parts[0])
            return
        pool = ThreadPoolExecutor(min(self.depth, len(parts)), thread_name_prefix="weightvault-s3")
        pending: deque[Future[bytes]] = deque()
        queued = iter(parts)
        try:
            for part in queued:
                pending.append(pool.submit(self._get, *part))
                if len(pending) >= self.depth:
                    break
            while pending:
                data = pending.popleft().result()
                for part in queued:
                    pending.append(pool.submit(self._get, *part))
                    break
                yield data
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True, cancel_futures=True)


def _check_key_name(name: str, url: str) -> None:
    """An object name must be a path a folder could hold, or the two manifests could differ."""
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts) or "\\" in name:
        raise InputError(
            f"{url}: object name {name!r} cannot be a file's path (empty, '.' or '..' part,"
            " or a backslash); rename it"
        )


def _normalize_ignore(location: S3Location, item: str | os.PathLike[str]) -> str | None:
    """An ignore path as a model-relative name: ``a/b``, ``./a/b`` or ``s3://bucket/prefix/a/b``."""
    text = os.fspath(item)
    if is_object_url(text):
        inside = S3Location.parse(text)
        head = f"{location.prefix}/" if location.prefix else ""
        if inside.bucket != location.bucket or not inside.prefix.startswith(head):
            return None
        text = inside.prefix[len(head) :]
    parts = [p for p in text.split("/") if p not in ("", ".")]
    return "/".join(parts) or None


def _list(location: S3Location, endpoint: str | None) -> list[dict[str, Any]]:
    client = _client(endpoint)
    head = f"{location.prefix}/" if location.prefix else ""
    objects: list[dict[str, Any]] = []
    try:
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=head):
            objects.extend(page.get("Contents", []))
    except Exception as exc:
        raise _read_error(location.url, exc) from exc
    return objects


def walk_object_store(
    url: str,
    *,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
) -> ModelTree:
    """List the objects under ``url`` as a model (a prefix is a folder, a key a single file).

    Folder markers (keys ending in ``/``) are not files. Raises :class:`InputError` for a
    missing bucket, unreadable listing, an object name no folder could hold, or nothing left.
    """
    location = S3Location.parse(url)
    endpoint = _endpoint()
    root = Path(location.url)
    objects = _list(location, endpoint)
    if not objects and location.prefix:
        try:
            found = _client(endpoint).head_object(Bucket=location.bucket, Key=location.prefix)
        except Exception as exc:
            if _error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                raise InputError(
                    f"{location.url}: no such object or prefix; check the model URL",
                    reason=Reason.NOT_FOUND,
                ) from exc
            raise _read_error(location.url, exc) from exc
        source = S3Object(
            location.bucket,
            location.prefix,
            int(found["ContentLength"]),
            str(found["ETag"]),
            endpoint,
        )
        return ModelTree(
            root=root,
            files=(ModelFile(".", Path(location.url), source.size, source=source),),
            ignored=(),
            is_single_file=True,
        )
    ignored_names: set[str] = set(DEFAULT_IGNORED_NAMES) if ignore_git_paths else set()
    for item in ignore_paths:
        name = _normalize_ignore(location, item)
        if name is not None:
            ignored_names.add(name)
    head = f"{location.prefix}/" if location.prefix else ""
    files: list[ModelFile] = []
    for entry in objects:
        key = str(entry["Key"])
        if key.endswith("/"):
            continue  # a folder marker, not content
        name = key[len(head) :]
        _check_key_name(name, location.url)
        parts = name.split("/")
        if any("/".join(parts[: i + 1]) in ignored_names for i in range(len(parts))):
            continue
        source = S3Object(location.bucket, key, int(entry["Size"]), str(entry["ETag"]), endpoint)
        files.append(ModelFile(name, Path(source.url), source.size, source=source))
    return _folder_tree(root, location.url, files, ignored_names)
