"""What the interpreter computes instead of objects: symbolic values and the record of one run.

Nothing is imported or called: a global becomes a :class:`Global`, a call an :class:`Obj`, skipped
bytes an :class:`Opaque`; containers keep their items, so a global stored in the loaded value is
known to be *referenced*.
"""

from __future__ import annotations

from typing import Any

from weightvault.scan.policy import Judgement, Severity
from weightvault.scan.report import Finding

__all__ = [
    "BUILTIN_CONTAINERS",
    "Global",
    "Obj",
    "Opaque",
    "PDict",
    "PList",
    "PSet",
    "Persistent",
    "PickleError",
    "PickleRun",
    "finding_offset",
    "global_name",
    "reachable_globals",
]


class PickleError(Exception):
    """The stream is malformed where a real unpickler would fail, or where real unpicklers
    would disagree about what it holds."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset




class Global:
    """An import the stream made (never performed), and how it was used.

    ``module`` and ``name`` are as written in the stream (what ``find_class`` receives);
    ``full`` is the effective dotted name after Python 2 remapping, the one ``--allow`` takes.
    """

    __slots__ = ("called", "derived", "full", "judgement", "module", "name", "offset", "resolved")

    def __init__(
        self, module: str, name: str, judgement: Judgement, offset: int, *, derived: bool = False,
    ) -> None:
        self.module = module
        self.name = name
        self.full = judgement.full
        self.judgement = judgement
        self.offset = offset
        self.derived = derived
        """Made by a resolved ``getattr(Global, "name")``, not by an import opcode."""
        self.called = False
        """Called by an opcode or a calling helper, with arguments the scanner cannot vouch for."""
        self.resolved = 0
        """Calls the scanner resolved statically (a getattr with literal arguments, a loader
        on a literal blob): they are not calls of unknown code."""


class Obj:
    """The result of a call (REDUCE, NEWOBJ, INST, OBJ); BUILD stores its state here, and
    APPEND/SETITEM on it keep their items (they may hold globals)."""

    __slots__ = ("args", "func", "items", "kwargs", "state")

    def __init__(self, func: Any, args: Any, state: Any = None, kwargs: Any = None) -> None:
        self.func = func
        self.args = args
        self.state = state
        self.kwargs = kwargs
        self.items: list[Any] | None = None


class Opaque:
    """A value that was skipped, not read (bytes, long strings, buffers).

    ``start`` is the file offset of the skipped bytes (``-1`` when unknown) and ``offset`` that
    of the opcode, so a loader called on the blob can have it scanned."""

    __slots__ = ("kind", "offset", "size", "start")

    def __init__(self, kind: str, size: int = 0, start: int = -1, offset: int = -1) -> None:
        self.kind = kind
        self.size = size
        self.start = start
        self.offset = offset


class Persistent:
    """What ``persistent_load`` would be asked for (PyTorch storages)."""

    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid


class PList(list[Any]):
    pass


class PSet(list[Any]):
    pass


class PDict:
    """A dict as a list of pairs (keys may be unhashable symbolic values)."""

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Any, Any]] | None = None) -> None:
        self.items = items if items is not None else []

    def get(self, key: str) -> Any:
        for k, v in self.items:
            if k == key and isinstance(k, str):
                return v
        return None


BUILTIN_CONTAINERS = (PList, PSet, PDict)
"""Builtin containers: APPEND(S), SETITEM(S) and ADDITEMS on them call no code."""


def global_name(value: Any) -> str:
    if isinstance(value, Global):
        return value.full
    if isinstance(value, Obj):
        return f"<result of {global_name(value.func)}>"
    return f"<{type(value).__name__}>"


def reachable_globals(run: PickleRun) -> set[int]:
    """``id()`` of every :class:`Global` the loaded value (or a persistent id) still holds: a
    global stored there is referenced, whatever else was done with it. A callee is not followed
    (its use was a call), the arguments and state of calls are."""
    found: set[int] = set()
    seen: set[int] = set()
    todo: list[Any] = [run.value, *run.persistent_ids]
    while todo:
        value = todo.pop()
        if value is None or isinstance(value, str | int | float | bytes):
            continue
        key = id(value)
        if key in seen:
            continue
        seen.add(key)
        if isinstance(value, Global):
            found.add(key)
        elif isinstance(value, tuple | list):
            todo.extend(value)
        elif isinstance(value, PDict):
            for pair in value.items:
                todo.extend(pair)
        elif isinstance(value, Obj):
            if not isinstance(value.func, Global):
                todo.append(value.func)
            todo.extend((value.args, value.state, value.kwargs))
            if value.items:
                todo.extend(value.items)
        elif isinstance(value, Persistent):
            todo.append(value.pid)
    return found


def finding_offset(finding: Finding) -> int:
    """The byte offset a pickle finding's location ends with (``...@123``)."""
    tail = finding.location.rpartition("@")[2]
    return int(tail) if tail.isdigit() else -1


class PickleRun:
    """What one pickle (up to its STOP) contained."""

    def __init__(self) -> None:
        self.stopped = False
        self.value: Any = None
        self.protocol = 0
        self.first_opcode = -1
        self.opcodes = 0
        self.imports = 0
        self.persistent_ids: list[Any] = []
        self.findings: list[Finding] = []
        self.globals: list[Global] = []
        """Every import, in stream order (derived ones from ``getattr`` included)."""
        self.joblib_arrays = 0
        self.deferred: PickleError | None = None
        """A disagreement between readers found before the stream ended: raised at its end."""

    @property
    def max_severity(self) -> Severity:
        return max((f.severity for f in self.findings), default=Severity.SAFE)
