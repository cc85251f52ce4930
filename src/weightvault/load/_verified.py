"""From a model path and a signature to verified bytes in memory, each file read once.

    signature -> Verifier.verify -> OMS manifest -> list the model (same rules as ``verify``)
    -> refuse missing / extra files before reading -> read each file once, hashing it in the
    same pass -> refuse any digest mismatch -> hand out the buffers

Three layouts: a model folder (or single file) as ``weightvault verify`` sees it; one file of a
signed folder (only that file is read and checked); a Hugging Face cache snapshot, whose entries
are symlinks into the repository's ``blobs/`` folder, followed only inside that repository.
"""

from __future__ import annotations

import hmac
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from weightvault.errors import (
    FileSystemError,
    FormatError,
    InputError,
    Reason,
    VerificationError,
)
from weightvault.hashing import default_workers
from weightvault.load import _errors as refusal
from weightvault.load._errors import listed
from weightvault.load._read import (
    Extent,
    Placer,
    open_inside,
    read_hashed,
    read_into,
    real_folder,
    shard_extents,
    whole_file,
)
from weightvault.oms.dsse import INTOTO_PAYLOAD_TYPE
from weightvault.oms.manifest import Manifest, component_key, parse_statement, split_shard_name
from weightvault.signing import (
    SignerIdentity,
    Verifier,
    read_signature,
    signature_path_for,
)
from weightvault.tree import DEFAULT_IGNORED_NAMES, SymlinkError, normalize_ignore_path, walk_model

__all__ = ["LocalFile", "VerifiedModel", "hf_snapshot_root", "read_verified"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class LocalFile:
    """A model file to read: its signed name, where to open it, the folder it must lie in."""

    name: str
    path: Path
    size: int
    folder: Path


@dataclass(frozen=True)
class VerifiedModel:
    """A model whose every returned byte matched its signature; ``files`` maps signed names to
    those bytes (only the files read: all of them, or the one file asked for)."""

    model_path: Path
    signature_path: Path
    signer: SignerIdentity
    manifest: Manifest
    files: dict[str, memoryview] = field(repr=False)

    def names(self) -> list[str]:
        return sorted(self.files, key=component_key)


def hf_snapshot_root(path: Path) -> Path | None:
    """The cache repository folder (``models--org--name``) if ``path`` is one of its snapshots."""
    absolute = Path(os.path.abspath(path))
    if absolute.parent.name != "snapshots":
        return None
    repository = absolute.parent.parent
    if not (repository / "blobs").is_dir():
        return None
    return repository


def _signed_files(manifest: Manifest) -> dict[str, dict[str, bytes]]:
    """Signed file name -> {resource name: digest} (one resource, or its shards)."""
    files: dict[str, dict[str, bytes]] = {}
    shards = manifest.serialization.method == "shards"
    for resource in manifest.resources:
        name = split_shard_name(resource.name, "resource")[0] if shards else resource.name
        files.setdefault(name, {})[resource.name] = resource.digest
    return files


def _ignored(manifest: Manifest, signed: Iterable[str]) -> list[str]:
    """The paths the signer left out; an older signature recorded none, and its signer left
    out git paths unless it covers them."""
    recorded = manifest.serialization.ignore_paths
    if recorded is not None:
        return list(recorded)
    covered = {name.split("/")[0] for name in signed}
    return [name for name in DEFAULT_IGNORED_NAMES if name not in covered]


def _verified_manifest(
    signature_path: Path, verifier: Verifier, cache: Path | None
) -> tuple[SignerIdentity, Manifest]:
    """Steps 1-2 of ``verify``: the signature vouches for a payload, which is a manifest."""
    if cache is not None and signature_path.is_symlink():
        target = os.path.realpath(signature_path)
        if not (target + "/").startswith(str(cache) + "/"):
            raise refusal.SymlinkEscapeError(
                f"{signature_path}: signature links outside the cache ({target})",
                names=[signature_path.name],
            )
    bundle = read_signature(signature_path)
    try:
        verified = verifier.verify(bundle)
    except (VerificationError, FormatError) as exc:
        raise refusal.BadSignatureError(
            f"{signature_path}: signature does not verify: {exc.message}"
        ) from exc
    if verified.payload_type != INTOTO_PAYLOAD_TYPE:
        raise refusal.BadSignatureError(
            f"{signature_path}: payload is {verified.payload_type!r}, not an in-toto statement"
        )
    try:
        manifest = parse_statement(verified.payload)
    except FormatError as exc:
        raise refusal.BadSignatureError(
            f"{signature_path}: signed payload is not a model manifest: {exc.message}"
        ) from exc
    return verified.signer, manifest


def _list_folder(
    root: Path, signature_path: Path, manifest: Manifest, signed: dict[str, dict[str, bytes]]
) -> list[LocalFile]:
    """The model's files as ``weightvault verify`` lists them."""
    ignore = list(_ignored(manifest, signed))
    name = normalize_ignore_path(root, os.path.abspath(signature_path))
    if name:
        ignore.append(name)
    folder = real_folder(root)
    with _listing(root, "model"):
        try:
            tree = walk_model(
                root,
                ignore_paths=ignore,
                ignore_git_paths=False,
                allow_symlinks=manifest.serialization.allow_symlinks,
            )
        except SymlinkError as exc:
            link = root / exc.name if exc.name != "." else root
            target = Path(os.path.realpath(link))
            if target != folder and folder not in target.parents:
                raise refusal.SymlinkEscapeError(
                    f"{link}: symlink points outside the model ({target})", names=[exc.name]
                ) from exc
            raise refusal.LoadRefusedError(
                exc.message, names=[exc.name], reason=Reason.SYMLINK
            ) from exc
        except InputError as exc:
            if exc.reason is not Reason.NO_FILES:
                raise
            missing = sorted(signed, key=component_key)
            raise refusal.MissingFileError(
                f"{root}: signed files are missing: {listed(missing)}", names=missing
            ) from exc
    if tree.is_single_file:
        return [LocalFile(".", tree.files[0].path, tree.files[0].size, real_folder(root.parent))]
    return [LocalFile(f.name, f.path, f.size, folder) for f in tree.files]


@contextmanager
def _listing(root: Path, what: str) -> Iterator[None]:
    """A file that vanishes while ``root`` is listed is a missing file; other I/O errors say
    what the system said."""
    try:
        yield
    except FileNotFoundError as exc:
        raise refusal.MissingFileError(
            f"{root}: a file disappeared while the {what} was listed ({exc.filename})"
        ) from exc
    except OSError as exc:
        raise FileSystemError.from_os_error(exc) from exc


def _list_snapshot(
    root: Path,
    cache: Path,
    signature_path: Path,
    manifest: Manifest,
    signed: dict[str, dict[str, bytes]],
) -> list[LocalFile]:
    """A Hugging Face snapshot: every entry a symlink into ``cache/blobs`` (or a plain file).

    A link that resolves anywhere outside the cache repository is refused, whatever the
    signature allows; folders are walked, symlinked folders refused.
    """
    ignored = set(_ignored(manifest, signed))
    sig_name = normalize_ignore_path(root, os.path.abspath(signature_path))
    if sig_name:
        ignored.add(sig_name)
    with _listing(root, "snapshot"):
        return _walk_snapshot(root, cache, ignored)


def _walk_snapshot(root: Path, cache: Path, ignored: set[str]) -> list[LocalFile]:
    files: list[LocalFile] = []
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        for entry in os.scandir(folder):
            name = f"{prefix}{entry.name}"
            parts = name.split("/")
            if any("/".join(parts[: i + 1]) in ignored for i in range(len(parts))):
                continue
            where = Path(entry.path)
            if entry.is_symlink():
                target = Path(os.path.realpath(where))
                if target != cache and cache not in target.parents:
                    raise refusal.SymlinkEscapeError(
                        f"{where}: symlink leaves the cache ({target})", names=[name]
                    )
                try:
                    status = target.stat()
                except OSError as exc:
                    raise refusal.MissingFileError(
                        f"{where}: dangling symlink", names=[name]
                    ) from exc
                if not stat.S_ISREG(status.st_mode):
                    raise refusal.LoadRefusedError(
                        f"{where}: symlink to something other than a file",
                        names=[name],
                        reason=Reason.SYMLINK,
                    )
                files.append(LocalFile(name, target, status.st_size, cache))
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                stack.append((where, f"{name}/"))
            elif stat.S_ISREG(mode):
                size = entry.stat(follow_symlinks=False).st_size
                files.append(LocalFile(name, where, size, cache))
            else:
                raise refusal.LoadRefusedError(f"{where}: special file in the model", names=[name])
    return sorted(files, key=lambda f: component_key(f.name))


def _extents(local: LocalFile, manifest: Manifest, want: dict[str, bytes]) -> list[Extent]:
    """How ``local`` is hashed; a shard layout other than the signed one means the size changed."""
    serialization = manifest.serialization
    if serialization.method != "shards":
        return whole_file(local.name, local.size)
    assert serialization.shard_size is not None
    extents = shard_extents(local.name, local.size, serialization.shard_size)
    if {e.resource for e in extents} != set(want):
        raise refusal.DigestMismatchError(
            f"{local.name}: size differs from the signed one ({local.size} bytes)",
            names=[local.name],
        )
    return extents


def _read_one(
    local: LocalFile,
    manifest: Manifest,
    want: dict[str, bytes],
    workers: int = 1,
    place: Placer | None = None,
) -> memoryview:
    extents = _extents(local, manifest, want)
    fd, size = open_inside(local.path, local.name, local.folder)
    try:
        if size != local.size:
            raise refusal.DigestMismatchError(
                f"{local.name}: size changed since the model was listed", names=[local.name]
            )
        algorithm = manifest.serialization.hash_type
        placement = place(local.name, fd, size) if place is not None else None
        if placement is None:
            buffer, digests = read_hashed(fd, size, local.name, algorithm, extents, workers=workers)
        else:
            buffer = placement.kept
            digests = read_into(
                fd,
                size,
                local.name,
                algorithm,
                extents,
                placement.segments,
                workers=workers,
            )
    finally:
        os.close(fd)
    for extent, digest in zip(extents, digests, strict=True):
        if not hmac.compare_digest(digest, want[extent.resource]):
            raise refusal.DigestMismatchError(
                f"{local.name}: does not match its signed digest", names=[local.name]
            )
    return buffer


def read_verified(
    model_path: PathLike,
    *,
    signature: PathLike | None = None,
    verifier: Verifier,
    max_workers: int | None = None,
    place: Placer | None = None,
) -> VerifiedModel:
    """Verify ``model_path`` against ``signature`` while reading it; nothing is returned unless
    every file matches.

    ``model_path`` is a model folder, a Hugging Face cache snapshot, a single-file model, or one
    file of a signed folder (its signature, by default ``model.sig`` beside it, covers the
    folder: then only that file is read and checked). Raises a :class:`refusal.LoadRefusedError`
    subclass naming the reason, :class:`InputError` when the model or signature cannot be read.

    ``place`` may send a file's bytes somewhere other than a new buffer (a tensor's final
    storage): they are still read once, through the one descriptor, and hashed from where they
    landed; ``files`` then holds what ``place`` kept (see :class:`Placement`).
    """
    root = Path(model_path)
    if not root.exists() and not root.is_symlink():
        raise InputError(f"{root}: no such file or folder", reason=Reason.NOT_FOUND)
    sig = signature_path_for(root, signature)
    cache = hf_snapshot_root(root if root.is_dir() else sig.parent)
    cache_real = real_folder(cache) if cache is not None else None
    signer, manifest = _verified_manifest(sig, verifier, cache_real)
    signed = _signed_files(manifest)

    if root.is_dir():
        if cache_real is not None:
            local = _list_snapshot(root, cache_real, sig, manifest, signed)
        else:
            local = _list_folder(root, sig, manifest, signed)
        if set(signed) == {"."}:
            raise InputError(f"{root}: is a folder, but the signature covers a single file")
        names = {f.name for f in local}
        missing = sorted(set(signed) - names, key=component_key)
        if missing:
            raise refusal.MissingFileError(
                f"{root}: signed files are missing: {listed(missing)}", names=missing
            )
        extra = sorted(names - set(signed), key=component_key)
        if extra:
            raise refusal.ExtraFileError(
                f"{root}: files the signature does not cover: {listed(extra)}", names=extra
            )
    else:
        local = _list_member(root, sig, signed, cache_real)

    cores = max_workers or default_workers()
    workers = max(1, min(len(local), cores))
    per_file = max(1, cores // workers)  # threads left for the shards of one file
    if workers == 1:
        buffers = [_read_one(f, manifest, signed[f.name], per_file, place) for f in local]
    else:
        largest_first = sorted(local, key=lambda f: -f.size)
        with ThreadPoolExecutor(workers, thread_name_prefix="weightvault-load") as pool:
            futures = {
                f.name: pool.submit(_read_one, f, manifest, signed[f.name], per_file, place)
                for f in largest_first
            }
            buffers = [futures[f.name].result() for f in local]
    files = {f.name: buffer for f, buffer in zip(local, buffers, strict=True)}
    return VerifiedModel(root, sig, signer, manifest, files)


def _list_member(
    root: Path, signature_path: Path, signed: dict[str, dict[str, bytes]], cache: Path | None
) -> list[LocalFile]:
    """A single file: the whole model (the signature covers ``.``) or one file of a signed
    folder (named relative to the signature's folder). In a cache snapshot (``cache`` is the
    repository's real path) the file is a link, followed only into that repository."""
    if set(signed) == {"."}:
        if root.is_symlink():
            raise refusal.LoadRefusedError(
                f"{root}: is a symlink", names=["."], reason=Reason.SYMLINK
            )
        return [LocalFile(".", root, root.stat().st_size, real_folder(root.parent))]
    if cache is not None:
        folder = Path(os.path.abspath(signature_path.parent))
        where = Path(os.path.abspath(root))
        inside = cache
    else:
        if root.is_symlink():
            raise refusal.LoadRefusedError(
                f"{root}: is a symlink", names=["."], reason=Reason.SYMLINK
            )
        folder = real_folder(signature_path.parent)
        where = Path(os.path.realpath(root))
        inside = folder
    if folder not in where.parents:
        raise refusal.ExtraFileError(
            f"{root}: is not inside the folder its signature covers ({folder})", names=[root.name]
        )
    name = where.relative_to(folder).as_posix()
    if name not in signed:
        raise refusal.ExtraFileError(f"{root}: the signature does not cover {name}", names=[name])
    target = Path(os.path.realpath(root))
    if target != inside and inside not in target.parents:
        raise refusal.SymlinkEscapeError(
            f"{root}: symlink leaves the cache ({target})", names=[name]
        )
    return [LocalFile(name, target, target.stat().st_size, inside)]
