"""Whole-model operations: encrypt, decrypt, rewrap and inspect a file or a model folder.

Layout: a model folder ``M`` becomes a folder of ``<name>.wvenc`` files with the same relative
paths; a single file ``w.bin`` becomes ``w.bin.wvenc``. Each file gets its own data key and its
own context (model name, path, index, file count, run id, optional manifest digest), so a file
moved to another path or model, dropped, or mixed in from another run is refused on decryption.

Headers are made and opened in the calling thread (PKCS#11 sessions and passphrase prompts stay
there); bodies are encrypted and decrypted by a pool of worker threads, one file per task
(:mod:`weightvault.crypt._pool`: largest first, all or nothing). Results never depend on the
number of workers. If any file fails, or the run is interrupted, the outputs this run already
wrote, and the folders it created, are removed before the error is raised.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

from weightvault import _interrupt
from weightvault._fs import already_exists, fsync_dir, temporary_name
from weightvault.crypt._pool import (
    FileTask,
    check_workers,
    make_parents,
    prepare_output_folder,
    remove_created,
    run_tasks,
)
from weightvault.crypt.envelope import read_file_header, rewrap_header, seal, unlock
from weightvault.crypt.format import (
    SUFFIX,
    FileContext,
    Header,
    body_context_for,
    plaintext_size_for,
)
from weightvault.crypt.recipients.base import Identity, Random, Recipient
from weightvault.crypt.stream import Progress, copy_body, decrypt_body, encrypt_body
from weightvault.errors import InputError, UsageError, VerificationError
from weightvault.tree import walk_model

__all__ = [
    "CryptResult",
    "FileInfo",
    "FileResult",
    "decrypt_path",
    "encrypt_path",
    "inspect_path",
    "manifest_digest_of",
    "rewrap_path",
]


@dataclass(frozen=True)
class FileResult:
    """One file processed by an operation."""

    name: str
    """Path within the model (the context path)."""
    source: Path
    destination: Path
    plaintext_size: int
    ciphertext_size: int

    def to_json(self) -> dict[str, Any]:
        """The fields in order, paths as strings."""
        return {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class CryptResult:
    """What an operation did, file by file, in the model's canonical order."""

    model: str
    set_id: str
    output: Path
    files: tuple[FileResult, ...]
    recipients: tuple[str, ...] = field(default=())

    @property
    def plaintext_size(self) -> int:
        return sum(f.plaintext_size for f in self.files)

    @property
    def ciphertext_size(self) -> int:
        return sum(f.ciphertext_size for f in self.files)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "set_id": self.set_id,
            "output": str(self.output),
            "recipients": list(self.recipients),
            "plaintext_size": self.plaintext_size,
            "ciphertext_size": self.ciphertext_size,
            "files": [f.to_json() for f in self.files],
        }


# --- encrypt ------------------------------------------------------------------------------


def encrypt_path(
    model_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    recipients: Sequence[Recipient],
    model_name: str | None = None,
    manifest_digest: str | None = None,
    workers: int | None = None,
    force: bool = False,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    rng: Random = os.urandom,
    progress: Progress | None = None,
) -> CryptResult:
    """Encrypt a model file or folder for ``recipients``.

    Output: ``<file>.wvenc`` (or ``output``) for a file; for a folder, ``output`` (default
    ``<folder>.wvenc``) holding ``<name>.wvenc`` for every file, layout preserved.
    """
    workers = check_workers(workers)
    if not recipients:
        raise UsageError("no recipients given", remedy="recipient")
    source = Path(model_path)
    tree = walk_model(source, ignore_paths=ignore_paths)
    model = model_name if model_name is not None else Path(os.path.abspath(source)).name
    set_id = rng(16).hex()
    created: list[Path] = []
    try:
        if tree.is_single_file:
            destination = Path(output) if output is not None else Path(f"{source}{SUFFIX}")
            if destination.is_dir():
                destination = destination / f"{source.name}{SUFFIX}"
            plan = [(source.name, tree.files[0].path, destination, tree.files[0].size)]
            out_root = destination
        else:
            out_root = Path(output) if output is not None else Path(f"{source}{SUFFIX}")
            root_abs = Path(os.path.abspath(source))
            out_abs = Path(os.path.abspath(out_root))
            if out_abs == root_abs or root_abs in out_abs.parents:
                raise UsageError(f"{out_root}: the output folder must not be inside the model")
            prepare_output_folder(out_root, force=force, created=created)
            make_parents(out_root, (f.name for f in tree.files), created)
            plan = [
                (f.name, f.path, out_root.joinpath(*PurePosixPath(f.name + SUFFIX).parts), f.size)
                for f in tree.files
            ]
        tasks: list[FileTask] = []
        contexts = FileContext.of_set(model, [name for name, *_ in plan], set_id, manifest_digest)
        for (_name, path, destination, size), context in zip(plan, contexts, strict=True):
            header, dek = seal(context, recipients, rng=rng)
            encrypt = partial(encrypt_body, force=force, expected_size=size)
            args = (str(path), str(destination), header, dek, body_context_for(context))
            tasks.append(FileTask(encrypt, args, size, destination))
        sizes = run_tasks(tasks, workers, progress)
    except BaseException:
        remove_created(created)
        raise
    files = tuple(
        FileResult(name, path, destination, size, written)
        for (name, path, destination, size), written in zip(plan, sizes, strict=True)
    )
    return CryptResult(
        model=model,
        set_id=set_id,
        output=out_root,
        files=files,
        recipients=tuple(r.describe() for r in recipients),
    )


# --- decrypt ------------------------------------------------------------------------------


def _encrypted_files(path: Path) -> tuple[bool, list[tuple[str, Path]]]:
    """(is_single_file, [(location name without suffix, file path)]) of an encrypted input."""
    tree = walk_model(path)
    if tree.is_single_file:
        return True, [(path.name, path)]
    found: list[tuple[str, Path]] = []
    for item in tree.files:
        if not item.name.endswith(SUFFIX):
            raise InputError(
                f"{tree.root / item.name}: not a {SUFFIX} file; an encrypted model folder holds "
                f"only {SUFFIX} files (move it out)"
            )
        found.append((item.name[: -len(SUFFIX)], item.path))
    return False, found


def _check_tree_contexts(root: Path, headers: Sequence[tuple[str, Path, Header]]) -> None:
    """A folder must be one complete model from one run, every file at its own path."""
    from collections import Counter

    # The run most files belong to is the reference; the odd ones out are named.
    runs = Counter((h.context.model, h.context.set_id) for _l, _p, h in headers)
    (model, set_id), _count = runs.most_common(1)[0]
    for location, path, header in headers:
        context = header.context
        if context.path != location:
            raise VerificationError(
                f"{path}: encrypted for path {context.path!r}, found at {location!r}; a file "
                "moved within or between models is refused"
            )
        if (context.model, context.set_id) != (model, set_id):
            raise VerificationError(
                f"{path}: belongs to model {context.model!r} (run {context.set_id[:8]}), not to "
                f"model {model!r} (run {set_id[:8]}) like the other files; files from different "
                "models or encryption runs do not mix"
            )
    indexes: set[int] = set()
    for _location, path, header in headers:
        context = header.context
        if context.file_count != len(headers):
            raise VerificationError(
                f"{root}: model {model!r} was encrypted as {context.file_count} files, "
                f"found {len(headers)}; a file is missing or was added"
            )
        if context.file_index in indexes:
            raise VerificationError(f"{path}: file index {context.file_index} appears twice")
        indexes.add(context.file_index)


def decrypt_path(
    encrypted_path: str | os.PathLike[str],
    output: str | os.PathLike[str] | None = None,
    *,
    identities: Sequence[Identity],
    workers: int | None = None,
    force: bool = False,
    expect_model: str | None = None,
    unsafe_any_path: bool = False,
    progress: Progress | None = None,
) -> CryptResult:
    """Decrypt a ``.wvenc`` file or a folder of them.

    Every header is opened and every context checked before any plaintext is written; the
    bodies are then decrypted, each into an unnamed file that gets its name only once its last
    chunk authenticated.
    """
    workers = check_workers(workers)
    source = Path(encrypted_path)
    single, found = _encrypted_files(source)
    unlocked = [unlock(path, identities) for _location, path in found]
    for item in unlocked:
        if expect_model is not None and item.header.context.model != expect_model:
            raise VerificationError(
                f"{item.name}: encrypted for model {item.header.context.model!r}, "
                f"expected {expect_model!r}"
            )
    created: list[Path] = []
    if single:
        item = unlocked[0]
        context = item.header.context
        location = source.name[: -len(SUFFIX)] if source.name.endswith(SUFFIX) else None
        expected_name = PurePosixPath(context.path).name
        if not unsafe_any_path and location is not None and location != expected_name:
            raise VerificationError(
                f"{source}: encrypted for {context.path!r} of model {context.model!r}, but named "
                f"{source.name!r}; rename it back to {expected_name}{SUFFIX}",
                remedy="unsafe-any-path",
            )
        if output is None:
            if location is None:
                raise UsageError(
                    f"{source}: name does not end in {SUFFIX}; name the output",
                    remedy="output-name",
                )
            destination = source.with_name(location)
        else:
            destination = Path(output)
            if destination.is_dir():
                destination = destination / expected_name
        plan = [(context.path, item, destination)]
        out_root = destination
    else:
        if not unsafe_any_path:
            _check_tree_contexts(
                source,
                [(loc, path, u.header) for (loc, path), u in zip(found, unlocked, strict=True)],
            )
        if output is None:
            name = source.name
            if not name.endswith(SUFFIX):
                raise UsageError(
                    f"{source}: folder name does not end in {SUFFIX}; name the output",
                    remedy="output-name",
                )
            output = source.with_name(name[: -len(SUFFIX)])
        out_root = Path(output)
        names = [loc for loc, _path in found]
        plan = [
            (loc, u, out_root.joinpath(*PurePosixPath(loc).parts))
            for loc, u in zip(names, unlocked, strict=True)
        ]
    tasks = [
        FileTask(
            partial(decrypt_body, force=force),
            (u, destination),
            u.file_size,
            destination,
        )
        for _name, u, destination in plan
    ]
    try:
        if not single:
            prepare_output_folder(out_root, force=force, created=created)
            make_parents(out_root, (name for name, _u, _d in plan), created)
        sizes = run_tasks(tasks, workers, progress)
    except BaseException:
        remove_created(created)
        raise
    first = unlocked[0].header.context
    return CryptResult(
        model=first.model,
        set_id=first.set_id,
        output=out_root,
        files=tuple(
            FileResult(name, u.path, destination, size, u.file_size)
            for (name, u, destination), size in zip(plan, sizes, strict=True)
        ),
    )


# --- rewrap -------------------------------------------------------------------------------


def rewrap_path(
    encrypted_path: str | os.PathLike[str],
    *,
    identities: Sequence[Identity],
    recipients: Sequence[Recipient],
    keep_existing: bool = False,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
    workers: int | None = None,
) -> CryptResult:
    """Re-wrap each file's data key for a new set of recipients; bodies are copied untouched.

    In place by default (each file replaced atomically). ``keep_existing`` keeps the current
    stanzas and adds ``recipients``; otherwise ``recipients`` replace them (rotation/removal).
    """
    workers = check_workers(workers)
    if not recipients and not keep_existing:
        raise UsageError("no recipients given", remedy="recipient")
    source = Path(encrypted_path)
    single, found = _encrypted_files(source)
    out_root = Path(output) if output is not None else source
    in_place = output is None or Path(os.path.abspath(out_root)) == Path(os.path.abspath(source))
    if not in_place and single:
        if out_root.is_dir():
            out_root = out_root / source.name
        if out_root.exists() and not force:
            raise already_exists(out_root)
    tasks: list[FileTask] = []
    plan: list[tuple[str, Path, Path, int, int]] = []
    staged: list[tuple[Path, Path]] = []  # in place: (temporary name, the file it replaces)
    for location, path in found:
        item = unlock(path, identities)
        header = rewrap_header(item.header, item.dek, recipients, keep_existing=keep_existing)
        if in_place:
            destination = path
        elif single:
            destination = out_root
        else:
            destination = out_root.joinpath(*PurePosixPath(location + SUFFIX).parts)
        written_to = destination
        if in_place:
            written_to = temporary_name(path)
            staged.append((written_to, path))
        tasks.append(
            FileTask(
                partial(copy_body, force=True),
                (str(path), str(written_to), item.body_offset, header),
                item.body_size,
                written_to,
            )
        )
        plan.append(
            (
                item.header.context.path,
                path,
                destination,
                item.plaintext_size,
                len(header) + item.body_size,
            )
        )
    created: list[Path] = []
    try:
        if not in_place and not single:
            prepare_output_folder(out_root, force=force, created=created)
            make_parents(out_root, (loc + SUFFIX for loc, _p in found), created)
        # In place, every new file is written under a temporary name first and the originals
        # are replaced together at the end: a failure or an interrupt leaves them all as they
        # were, never half of the model re-wrapped.
        run_tasks(tasks, workers, None)
        if in_place:
            with _interrupt.finishing():
                for temporary, original in staged:
                    os.replace(temporary, original)
                    _interrupt.record_created(original, existed=True)
                for folder in {original.parent for _t, original in staged}:
                    fsync_dir(folder)
            # The originals are replaced and cannot come back: from here the command has
            # completed, and a later signal must not report it as interrupted.
            _interrupt.finish()
    except BaseException:
        for temporary, _original in staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        remove_created(created)
        raise
    header0, _size = read_file_header(plan[0][2])
    return CryptResult(
        model=header0.context.model,
        set_id=header0.context.set_id,
        output=out_root,
        files=tuple(FileResult(n, s, d, p, c) for n, s, d, p, c in plan),
        recipients=tuple(r.describe() for r in recipients),
    )


def manifest_digest_of(path: Path) -> str:
    """``sha256:<hex>`` of a file's bytes, e.g. a signature bundle, for ``manifest_digest``."""
    import hashlib

    try:
        with open(path, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        raise InputError(
            f"{path}: cannot read the manifest/signature file: {exc.strerror}"
        ) from exc


# --- inspect ------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    """Public facts about one encrypted file (no secrets, no key needed)."""

    location: Path
    header: Header
    file_size: int

    @property
    def plaintext_size(self) -> int:
        size = plaintext_size_for(self.file_size - self.header.size)
        assert size is not None
        return size

    @property
    def chunk_count(self) -> int:
        return self.plaintext_size // 16384 + 1

    def to_json(self) -> dict[str, Any]:
        recipients = []
        for stanza in self.header.recipients:
            entry: dict[str, Any] = {"type": stanza.TYPE}
            for key in ("kid", "key", "log_n"):
                if hasattr(stanza, key):
                    entry[key] = getattr(stanza, key)
            recipients.append(entry)
        return {
            "file": str(self.location),
            "format_version": self.header.version,
            "suite": self.header.suite,
            "context": self.header.context.to_json(),
            "recipients": recipients,
            "header_size": self.header.size,
            "file_size": self.file_size,
            "plaintext_size": self.plaintext_size,
            "chunks": self.chunk_count,
        }


def inspect_path(encrypted_path: str | os.PathLike[str]) -> list[FileInfo]:
    """Read the headers of a ``.wvenc`` file or folder; needs no key and reveals no secret."""
    _single, found = _encrypted_files(Path(encrypted_path))
    infos = []
    for _location, path in found:
        header, size = read_file_header(path)
        infos.append(FileInfo(path, header, size))
    return infos
