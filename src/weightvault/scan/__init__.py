"""Scan model files for code-execution payloads without running them; convert to safetensors.

Public API::

    from weightvault.scan import scan_paths, Severity
    report = scan_paths(["model/"], allow=["mypkg.MyLayer"], policy_file="policy.toml")
    if report.exit_code(Severity.UNKNOWN): ...   # 0 only when every file is safe

Every import a pickle makes is *safe*, *unknown* or *dangerous*, with the evidence and the
knowledge-base entry that decided it (:mod:`weightvault.scan.policy`).
:func:`scan_paths` reports (never raises for a bad file: each file's problems are errors in the
report); :func:`verify_paths` enforces, raising :class:`~weightvault.errors.UnsafeFileError` that
lists every finding at or above the threshold. Nothing from a scanned file is imported or executed.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Iterator

from weightvault.errors import InputError, UnsafeFileError
from weightvault.scan._engine import FileContext, ScanLimits
from weightvault.scan.policy import DEFAULT_POLICY, Policy, Severity, load_policy_file
from weightvault.scan.report import FileResult, Finding, ScanReport

__all__ = [
    "FileResult",
    "Finding",
    "Policy",
    "ScanLimits",
    "ScanReport",
    "Severity",
    "convert_checkpoint",
    "describe",
    "display_path",
    "make_policy",
    "scan_file",
    "scan_paths",
    "verify_paths",
]

_IGNORED_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})


def scan_file(
    path: str | os.PathLike[str], *, display: str | None = None, policy: Policy = DEFAULT_POLICY,
    limits: ScanLimits | None = None,
) -> FileResult:
    """Scan one file; problems reading it become errors in the result, never exceptions."""
    from weightvault.scan._io import ByteReader, Truncated
    from weightvault.scan.formats import scan_reader

    target = display_path(os.fspath(path))  # opened as pathlib would: "a/b/" is "a/b"
    name = display if display is not None else str(path)
    ctx = FileContext(path=name, policy=policy, limits=limits or ScanLimits())
    fmt = "unknown"
    size: int | None = None
    try:
        with open(target, "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):  # a pipe's size is 0: it would pass as empty
                raise _NotRegular
            size = status.st_size
            reader = ByteReader(handle, 0, size)
            name_hint = target.rpartition("/")[2]  # pathlib's ``.name``
            fmt = scan_reader(ctx, reader, handle, "", name=name_hint, depth=0)
    except _NotRegular:
        ctx.error("", _NOT_REGULAR)
    except PermissionError:
        ctx.error("", "permission denied; the file must be readable")
    except IsADirectoryError:
        ctx.error("", "is a directory")
    except FileNotFoundError:
        ctx.error("", "no such file")
    except OSError as exc:
        ctx.error("", f"read error: {exc.strerror or exc}")
    except Truncated as exc:
        ctx.error("", f"truncated: {exc}")
    except RecursionError:
        ctx.error("", "structure nested too deeply to scan")
    except MemoryError:
        ctx.error("", "ran out of memory while scanning")
    except Exception as exc:  # a scanner bug must not stop the other files, nor pass as clean
        ctx.error("", f"internal error while scanning ({type(exc).__name__}: {exc}); please report")
    return FileResult(
        path=name,
        format=fmt,
        size=size,
        findings=tuple(_dedupe(ctx.findings)),
        errors=tuple(ctx.errors),
    )


class _NotRegular(Exception):
    pass


_NOT_REGULAR = "not a regular file (device, socket or FIFO); not read"


def _dedupe(findings: list[Finding]) -> Iterator[Finding]:
    seen: set[tuple[str, str, str, str]] = set()
    for finding in findings:
        if finding.severity == Severity.SAFE:
            continue
        key = (finding.location.split("@")[0], finding.kind, finding.subject, finding.message)
        if key in seen:
            continue
        seen.add(key)
        yield finding


def display_path(text: str) -> str:
    """``str(pathlib.Path(text))`` without pathlib (a costly import and object per file on the
    scan path): empty and ``.`` components dropped, ``..`` kept, a leading ``//`` kept.

    This is how a folder's files are named in reports, and how the command line (Typer's
    ``Path`` arguments) names what it was given.
    """
    if os.sep != "/" or os.altsep:  # pragma: no cover - POSIX only; elsewhere ask pathlib
        from pathlib import Path

        return str(Path(text))
    root = ""
    rest = text
    if text.startswith("/"):
        rest = text.lstrip("/")
        root = "//" if len(text) - len(rest) == 2 else "/"
    return root + "/".join(part for part in rest.split("/") if part and part != ".") or "."


def _walk(root: str) -> Iterator[tuple[str | None, str, str | None]]:
    """Yield ``(path, display, error)`` for every file under ``root`` (a :func:`display_path`),
    sorted, not following folder symlinks (loops); symlinks to files are followed (Hugging Face
    caches use them)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:
        yield None, root, f"cannot list folder: {exc.strerror or exc}"
        return
    # ``display_path(entry.path)``, cheaply: the root is already normalized, a name is one
    # component that is neither "." nor "..".
    prefix = "" if root == "." else root if root.endswith("/") else root + "/"
    for entry in entries:
        display = prefix + entry.name
        try:
            if entry.is_symlink():
                if not entry.is_file():
                    yield None, display, "symlink to a folder or dangling symlink; not followed"
                    continue
                yield entry.path, display, None
                continue
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError as exc:
            yield None, display, f"cannot stat: {exc.strerror or exc}"
            continue
        if stat.S_ISDIR(mode):
            if entry.name in _IGNORED_DIRS:
                continue
            yield from _walk(display)
        elif stat.S_ISREG(mode):
            yield entry.path, display, None
        else:
            yield None, display, _NOT_REGULAR


#: ``stat`` errors that mean "there is nothing at this path" (pathlib's ``exists()`` list).
_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP})


def make_policy(
    allow: Iterable[str] = (), policy_file: str | os.PathLike[str] | None = None
) -> Policy:
    """The policy for ``allow`` patterns (``module.name``, ``module.*``) and a policy file.

    Raises ``ValueError`` for a malformed ``allow`` pattern, and
    :class:`~weightvault.errors.FormatError` / :class:`~weightvault.errors.InputError` for a
    policy file that is malformed or unreadable.
    """
    allowed = list(allow)
    if policy_file is None and not allowed:
        return DEFAULT_POLICY
    extra = load_policy_file(policy_file) if policy_file is not None else []
    return Policy.with_allowed(allowed, extra=extra)


_NOTHING_TO_SCAN = "nothing to scan: the folder holds no files"


def scan_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    allow: Iterable[str] = (),
    policy_file: str | os.PathLike[str] | None = None,
    policy: Policy | None = None,
    limits: ScanLimits | None = None,
    workers: int = 1,
) -> ScanReport:
    """Scan files and folder trees; one :class:`FileResult` per file, in a stable order.

    ``allow`` adds trusted imports (``module.name`` or ``module.*``), ``policy_file`` a TOML
    policy (see :func:`~weightvault.scan.policy.load_policy_file`); or pass a ready ``policy``.
    A missing path, and a folder without files, is an error result for that path; the other
    paths are still scanned. ``workers > 1`` scans files in that many forked processes when
    there are enough files to pay for them (``0``: one per CPU); results are identical and in
    the same order whatever the number of workers. Leave it at 1 inside multi-threaded programs
    (forking a threaded process is unsafe).
    """
    if policy is None:
        policy = make_policy(allow, policy_file)
    elif allow or policy_file is not None:
        raise TypeError("pass either policy, or allow/policy_file")
    limits = limits or ScanLimits()
    jobs: list[_Job] = []
    for item in paths:
        path = display_path(os.fspath(item))  # what pathlib would open: "" is "."
        try:
            mode = os.stat(path).st_mode
        except (OSError, ValueError) as exc:
            if isinstance(exc, OSError) and exc.errno not in _MISSING_ERRNOS:
                jobs.append((None, str(item), f"cannot stat: {exc.strerror or exc}"))
            else:
                jobs.append((None, str(item), "no such file or directory"))
            continue
        if stat.S_ISDIR(mode) and not os.path.islink(path):
            before = len(jobs)
            jobs.extend(_walk(path))
            if len(jobs) == before:
                jobs.append((None, str(item), _NOTHING_TO_SCAN))
        elif stat.S_ISDIR(mode) or stat.S_ISREG(mode):  # a link to a folder: "is a directory"
            jobs.append((path, str(item), None))
        else:  # opening a FIFO would block; a pipe (/dev/stdin) would read as an empty file
            jobs.append((None, str(item), _NOT_REGULAR))

    if workers == 0:
        workers = os.cpu_count() or 1
    if workers > 1 and len(jobs) >= _MIN_FILES_PER_WORKER * 2:
        results = _scan_in_processes(jobs, policy, limits, workers)
    else:
        results = [_run_job(job, policy, limits) for job in jobs]
    return ScanReport(files=tuple(results))


_MIN_FILES_PER_WORKER = 16
_Job = tuple[str | None, str, str | None]


def _run_job(job: _Job, policy: Policy, limits: ScanLimits) -> FileResult:
    path, display, error = job
    if path is None:
        kind = "folder" if error == _NOTHING_TO_SCAN else "unknown"
        return FileResult(path=display, format=kind, size=None, errors=(error or "",))
    return scan_file(path, display=display, policy=policy, limits=limits)


def _run_chunk(chunk: list[_Job], policy: Policy, limits: ScanLimits) -> list[FileResult]:
    return [_run_job(job, policy, limits) for job in chunk]


def _scan_in_processes(
    jobs: list[_Job], policy: Policy, limits: ScanLimits, workers: int
) -> list[FileResult]:
    """Scan in forked worker processes (the scanner is pure Python: threads would not help)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        return [_run_job(job, policy, limits) for job in jobs]
    workers = min(workers, len(jobs) // _MIN_FILES_PER_WORKER)
    # Interleaved chunks balance big and small files; order is restored below.
    chunks = [jobs[i::workers] for i in range(workers)]
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        parts = list(pool.map(_run_chunk, chunks, [policy] * workers, [limits] * workers))
    results: list[FileResult | None] = [None] * len(jobs)
    for index, part in enumerate(parts):
        results[index::workers] = part
    return [r for r in results if r is not None]


def describe(finding: Finding) -> str:
    """One line for a finding: ``path: dangerous import os.system (called) at @2: ... [rule]``."""
    usage = f" ({finding.usage})" if finding.usage else ""
    rule = f" [{finding.rule}]" if finding.rule else ""
    return (
        f"{finding.path}: {finding.severity.label} {finding.kind} {finding.subject}{usage} "
        f"at {finding.location or 'top level'}: {finding.message}{rule}"
    )


def verify_paths(
    paths: Iterable[str | os.PathLike[str]],
    *,
    fail_on: Severity = Severity.UNKNOWN,
    allow: Iterable[str] = (),
    policy_file: str | os.PathLike[str] | None = None,
    limits: ScanLimits | None = None,
    report: ScanReport | None = None,
) -> ScanReport:
    """Scan (or take ``report``) and enforce: raise when a finding is at or above ``fail_on``,
    or when a file could not be scanned.

    Raises :class:`UnsafeFileError`, whose message lists **every** finding at or above the
    threshold (``"; "``-separated), or :class:`InputError` naming every file that could not be
    scanned (an unscannable file is never treated as safe). Returns the report otherwise.
    """
    if report is None:
        report = scan_paths(paths, allow=allow, policy_file=policy_file, limits=limits)
    failing = [f for f in report.findings if f.severity.at_least(fail_on)]
    if failing:
        head = f"{len(failing)} findings: " if len(failing) > 1 else ""
        raise UnsafeFileError(
            head + "; ".join(describe(f) for f in failing),
            hint="inspect the file; a trusted import can be allowed by name (module.name)",
            remedy="allow-import",
        )
    if report.errors:
        raise InputError(
            "; ".join(f"{path}: could not be scanned: {message}" for path, message in report.errors)
        )
    return report


def convert_checkpoint(*args: object, **kwargs: object) -> object:
    """See :func:`weightvault.scan.convert.convert_checkpoint` (imported lazily)."""
    from weightvault.scan.convert import convert_checkpoint as _convert

    return _convert(*args, **kwargs)  # type: ignore[arg-type]
