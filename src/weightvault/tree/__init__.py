"""Walking a model: one file or a directory tree, with ignore rules and a symlink policy.

Signing, scanning and encryption all see a model through :func:`walk_model`, so they agree on
which files belong to it, what they are called, and in which order they come:

* names are POSIX relative paths (``/`` separators on every OS), the same bytes the OMS manifest
  records; a single-file model has one entry named ``"."``;
* order is by path components (``a/b/w.bin`` sorts before ``a-c``), as the OMS peer orders them;
* ignored paths (a file or a whole folder) are never opened;
* symlinks are refused unless ``allow_symlinks``; a symlink whose target leaves the tree is refused
  always, and so is a symlink loop.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from weightvault.errors import InputError, Reason, UsageError

if TYPE_CHECKING:
    from weightvault.tree.s3 import S3Object

__all__ = [
    "DEFAULT_IGNORED_NAMES",
    "ModelFile",
    "ModelTree",
    "SymlinkError",
    "normalize_ignore_path",
    "sort_key",
    "walk_model",
]

#: Git metadata never belongs to a model's weights; ignored unless the caller opts out.
DEFAULT_IGNORED_NAMES: tuple[str, ...] = (".git", ".gitattributes", ".github", ".gitignore")


class SymlinkError(InputError):
    """A symlink the policy refuses; ``name`` is its model-relative name (``"."`` for the root).

    Verification turns this into a mismatch (a file was replaced by a link), signing into an
    input error.
    """

    reason = Reason.SYMLINK

    def __init__(self, message: str, *, name: str, remedy: str | None = None) -> None:
        super().__init__(message, remedy=remedy)
        self.name = name


def sort_key(name: str) -> tuple[str, ...]:
    """Order names by path components, so ``a/b`` sorts before ``a-c``."""
    return tuple(name.split("/"))


@dataclass(frozen=True)
class ModelFile:
    """One regular file of a model (or a permitted symlink to one)."""

    name: str
    """POSIX path relative to the model root; ``"."`` for a single-file model."""
    path: Path
    """Where to read it: the file itself, or the resolved target of a permitted symlink."""
    size: int
    is_symlink: bool = False
    source: S3Object | None = None
    """Where the bytes are when not on the local disk (then ``path`` is only a label)."""


@dataclass(frozen=True)
class ModelTree:
    """The files of a model, in canonical order, and the rules that selected them."""

    root: Path
    files: tuple[ModelFile, ...]
    ignored: tuple[str, ...]
    """Ignored paths relative to the root, as recorded in a signature (sorted, unique)."""
    is_single_file: bool
    allow_symlinks: bool = False
    empty_dirs: tuple[str, ...] = field(default=())

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def without(self, names: Iterable[str]) -> ModelTree:
        """This tree with the files ``names`` left out, as if the walk had been told to ignore
        them (recorded as ignored; a folder they leave empty is listed as empty), without
        listing the folders again."""
        drop = frozenset(names)
        files = tuple(f for f in self.files if f.name not in drop)
        if not files:
            raise _no_files(self.root)
        parents = {name.rpartition("/")[0] for name in drop if "/" in name}
        emptied = [
            folder
            for folder in parents
            if not any(f.name.startswith(f"{folder}/") for f in files)
            and not any(d == folder or d.startswith(f"{folder}/") for d in self.empty_dirs)
        ]
        return dataclasses.replace(
            self,
            files=files,
            ignored=tuple(sorted({*self.ignored, *drop})),
            empty_dirs=tuple(sorted({*self.empty_dirs, *emptied})),
        )


def _no_files(root: Path | str) -> InputError:
    return InputError(
        f"{root}: the model has no files to process (empty or all ignored)",
        reason=Reason.NO_FILES,
    )


def _folder_tree(
    root: Path,
    where: Path | str,
    files: list[ModelFile],
    ignored: Iterable[str],
    *,
    allow_symlinks: bool = False,
    empty_dirs: Iterable[str] = (),
) -> ModelTree:
    """A folder's (or a bucket prefix's) tree in canonical order, the one way both walks end;
    a folder with nothing to sign is an error naming ``where``."""
    if not files:
        raise _no_files(where)
    files.sort(key=lambda f: sort_key(f.name))
    return ModelTree(
        root=root,
        files=tuple(files),
        ignored=tuple(sorted(ignored)),
        is_single_file=False,
        allow_symlinks=allow_symlinks,
        empty_dirs=tuple(sorted(empty_dirs)),
    )


def normalize_ignore_path(root: Path, ignored: str | os.PathLike[str]) -> str | None:
    """Turn an ignore path (absolute, relative to cwd, or relative to the root) into a root name.

    Returns ``None`` when the path lies outside the model (it then cannot match anything).
    """
    candidate = Path(ignored)
    root_abs = Path(os.path.abspath(root))
    if candidate.is_absolute():
        absolute = Path(os.path.abspath(candidate))
    else:
        # Relative to the model root if it exists there, else relative to the working folder,
        # which is how users type paths such as ``model/ignore-me``.
        inside = Path(os.path.abspath(root_abs / candidate))
        from_cwd = Path(os.path.abspath(candidate))
        if (
            inside.exists()
            or inside.is_symlink()
            or not (from_cwd.exists() or from_cwd.is_symlink())
        ):
            absolute = inside
        else:
            absolute = from_cwd
    try:
        rel = absolute.relative_to(root_abs)
    except ValueError:
        return None
    text = rel.as_posix()
    return text if text not in ("", ".") else None


def _is_ignored(name: str, ignored: frozenset[str]) -> bool:
    parts = name.split("/")
    return any("/".join(parts[: i + 1]) in ignored for i in range(len(parts)))


def _check_name(name: str, where: Path) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputError(
            f"{where}: file name is not valid UTF-8; rename it so it can be recorded portably"
        ) from exc
    if "\\" in name:
        raise InputError(
            f"{where}: file name contains a backslash, which is a separator on Windows; rename it"
        )


def walk_model(
    model_path: str | os.PathLike[str],
    *,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
) -> ModelTree:
    """List the files of a model in canonical order.

    Raises :class:`InputError` for a missing or unreadable model, a refused symlink, a special file
    (socket, device, FIFO), or a model with no files left after ignoring.
    """
    root = Path(model_path)
    if not root.exists() and not root.is_symlink():
        raise InputError(
            f"{root}: no such file or directory; check the model path", reason=Reason.NOT_FOUND
        )
    if root.is_symlink() and not allow_symlinks:
        raise SymlinkError(f"{root}: model path is a symlink", name=".", remedy="allow-symlinks")
    if not root.exists():
        raise SymlinkError(f"{root}: model path is a dangling symlink", name=".")

    ignored_names: set[str] = set()
    if ignore_git_paths:
        ignored_names.update(DEFAULT_IGNORED_NAMES)
    for item in ignore_paths:
        name = normalize_ignore_path(root, item) if root.is_dir() else None
        if name is not None:
            ignored_names.add(name)
    ignored = frozenset(ignored_names)

    if root.is_file():
        st = os.stat(root)
        if not os.access(root, os.R_OK):
            raise InputError(f"{root}: permission denied; the model file must be readable")
        target = Path(os.path.realpath(root))
        return ModelTree(
            root=root,
            files=(ModelFile(".", target, st.st_size, root.is_symlink()),),
            ignored=(),
            is_single_file=True,
            allow_symlinks=allow_symlinks,
        )
    if not root.is_dir():
        raise InputError(f"{root}: not a regular file or directory")

    root_real = Path(os.path.realpath(root))
    files: list[ModelFile] = []
    empty_dirs: list[str] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except PermissionError as exc:
            raise InputError(
                f"{folder}: permission denied; the model folder must be readable"
            ) from exc
        kept = 0
        for entry in entries:
            name = f"{prefix}{entry.name}"
            if _is_ignored(name, ignored):
                continue
            kept += 1
            where = Path(entry.path)
            _check_name(name, where)
            if entry.is_symlink():
                if not allow_symlinks:
                    raise SymlinkError(
                        f"{where}: is a symlink; symlinks are refused unless allowed",
                        name=name,
                        remedy="allow-symlinks",
                    )
                target = Path(os.path.realpath(where))
                if not target.exists():
                    raise SymlinkError(f"{where}: dangling symlink", name=name)
                if target != root_real and root_real not in target.parents:
                    raise SymlinkError(
                        f"{where}: symlink points outside the model ({target}); refused always",
                        name=name,
                    )
                if target.is_dir():
                    raise SymlinkError(
                        f"{where}: symlink to a folder; only symlinks to files can be followed",
                        name=name,
                    )
                files.append(ModelFile(name, target, target.stat().st_size, True))
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
            if stat.S_ISDIR(mode):
                stack.append((where, f"{name}/"))
            elif stat.S_ISREG(mode):
                files.append(ModelFile(name, where, entry.stat(follow_symlinks=False).st_size))
            else:
                raise InputError(f"{where}: special file (socket, device or FIFO) in the model")
        if kept == 0 and prefix:
            empty_dirs.append(prefix.rstrip("/"))

    return _folder_tree(
        root,
        root,
        files,
        ignored,
        allow_symlinks=allow_symlinks,
        empty_dirs=empty_dirs,
    )


def posix_name(path: Path) -> str:
    """The POSIX spelling of a relative path."""
    if path.is_absolute():
        raise UsageError(f"{path}: expected a relative path")
    return PurePosixPath(*path.parts).as_posix()
