"""How a model is turned into a manifest: one typed options object instead of keyword lists.

Signing, digesting and computing a manifest take the same choices (hash, serialization, ignored
paths, symlinks, workers). :class:`ManifestOptions` holds them once, checked when it is made;
the functions that take it also accept the same names as keywords
(``sign(model, signer, hash_type="blake3")``), applied over ``options`` when both are given.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from weightvault.hashing import HashAlgorithm, ProgressCallback, ProgressDisplay
from weightvault.oms.manifest import DEFAULT_SHARD_SIZE

__all__ = ["CheckKeywords", "ManifestKeywords", "ManifestOptions", "PathLike"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class ManifestOptions:
    """The choices that make a manifest, and how to run the hashing.

    ``hash_type`` takes a :class:`HashAlgorithm` or its name; ``shard_size`` applies to
    ``shards`` only (default 1 GB, the peer's). Values are checked on creation: a wrong one is a
    ``ValueError`` (a caller mistake), as the hashing engine reports its own.
    """

    hash_type: HashAlgorithm = HashAlgorithm.SHA256
    serialization: Literal["files", "shards"] = "files"
    shard_size: int | None = None
    ignore_paths: tuple[PathLike, ...] = ()
    """Paths to leave out (absolute, relative to the working folder, or to the model)."""
    ignore_git_paths: bool = True
    allow_symlinks: bool = False
    max_workers: int | None = None
    """Hashing threads (default: every core this process may use)."""
    cluster: str | None = None
    """Hash on this Ray cluster (an address, or ``auto``) instead of local threads."""
    progress: ProgressCallback | None = field(default=None, compare=False, repr=False)
    """Called with each number of bytes hashed (from worker threads)."""

    def __post_init__(self) -> None:
        # frozen: names become their enum member and iterables a tuple, here and only here
        object.__setattr__(self, "hash_type", HashAlgorithm.parse(self.hash_type))
        object.__setattr__(self, "ignore_paths", tuple(self.ignore_paths))
        if self.serialization not in ("files", "shards"):
            raise ValueError(
                f"unknown serialization {self.serialization!r} (expected files or shards)"
            )
        if self.serialization == "shards" and self.shard_size is not None and self.shard_size <= 0:
            raise ValueError("shard_size must be positive")

    @classmethod
    def merge(cls, options: ManifestOptions | None, keywords: Mapping[str, Any]) -> ManifestOptions:
        """``options`` (or the defaults) with ``keywords`` applied over them."""
        base = options if options is not None else cls()
        return dataclasses.replace(base, **keywords) if keywords else base

    @property
    def method(self) -> Literal["files", "shards"]:
        """The serialization a manifest records. BLAKE3 is parallel inside one file, so
        model-signing records BLAKE3 models as files whatever was asked, and so does weightvault
        (both tools then produce the same manifest)."""
        if self.serialization == "shards" and self.hash_type is not HashAlgorithm.BLAKE3:
            return "shards"
        return "files"

    @property
    def recorded_shard_size(self) -> int | None:
        """The shard size a manifest records (``None`` for files)."""
        if self.method == "files":
            return None
        return DEFAULT_SHARD_SIZE if self.shard_size is None else self.shard_size


class ManifestKeywords(TypedDict, total=False):
    """:class:`ManifestOptions`' fields as keywords (``sign(..., hash_type="blake2")``)."""

    hash_type: HashAlgorithm | str
    serialization: str
    shard_size: int | None
    ignore_paths: Iterable[PathLike]
    ignore_git_paths: bool
    allow_symlinks: bool
    max_workers: int | None
    cluster: str | None
    progress: ProgressCallback | None


class CheckKeywords(TypedDict, total=False):
    """The choices a check takes besides the model, the signature and the verifier (what the
    signature does not decide): see :func:`weightvault.signing.check`."""

    ignore_paths: Iterable[PathLike]
    ignore_unsigned_files: bool
    max_workers: int | None
    cluster: str | None
    progress: ProgressCallback | None
    progress_display: ProgressDisplay | None
