"""A static interpreter of pickle opcode streams that reads them as every real loader does.

Nothing is imported or called: globals become :class:`Global` records, calls become :class:`Obj`
records. What it reproduces (and why it matters for a scanner):

* **Three readers, one reading.** CPython has three unpicklers that can see different opcodes in
  the same bytes: the C unpickler reading a *file* (``pickle.load``), the C unpickler reading
  *bytes* (``pickle.loads``) and the pure-Python one (``pickle._Unpickler``, which joblib and
  ``torch.load(weights_only=True)``'s reader resemble). They agree as long as no opcode, argument
  or text line crosses the end of a ``FRAME``. Across one they part ways (``Modules/_pickle.c``:
  the file unpickler reads a frame with ``read(n)`` into its buffer and, when an opcode needs
  more, discards the frame's rest and reads fresh bytes from the file; ``loads`` reads on
  linearly; the Python unpickler raises "pickle exhausted before end of frame"). So any such
  crossing, a ``FRAME`` that starts before the previous one ends, a ``STOP`` before its frame's
  end, and a ``FRAME`` longer than the data (the C readers stop there, the Python one runs the
  opcodes it has) are **malformed**: the file is refused, never called safe. Elsewhere the readers
  agree, and the interpreter reads linearly.
* **Stack, marks and memo** are tracked, so a ``STACK_GLOBAL`` whose strings came from the memo,
  from text opcodes or from ``BINUNICODE`` is resolved; a ``GET`` of a missing memo key is an
  error *after* everything before it was recorded.
* **Imports**: ``GLOBAL``/``INST`` (text lines), ``STACK_GLOBAL`` (two strings), Python 2 module
  renaming for protocols < 3 (``_compat_pickle`` tables), dotted names resolved attribute by
  attribute (judged by :class:`~weightvault.scan.policy.Policy`). ``EXT1/2/4`` codes refer to the
  loading process's extension registry and are reported.
* **Called or referenced**: a global is *called* when it is the callee of ``REDUCE``,
  ``NEWOBJ``, ``NEWOBJ_EX``, ``INST`` or ``OBJ`` (``BUILD`` then reaches its ``__setstate__``),
  or is handed to a helper that calls its arguments (``copyreg._reconstructor``); otherwise it is
  only *referenced* (pushed and stored, e.g. an activation function kept as a module attribute).
  ``getattr(Class, "literal")`` is resolved like the dotted name ``Class.literal``; a tensor
  loader called on a literal blob (``torch.storage._load_from_bytes``) has the blob scanned as a
  nested file.
* **Calls** on computed objects and the implicit method calls of ``APPEND(S)``/``SETITEM(S)``/
  ``ADDITEMS`` on non-builtin targets are reported.
* Stacked pickles (legacy PyTorch files, joblib) are read one after another; joblib's raw array
  bytes between opcodes are skipped exactly as joblib's unpickler reads them.

Binary payloads (``BINBYTES*``, ``BYTEARRAY8``, long strings) are skipped by seeking. Byte strings
that start like a pickle are interpreted as nested pickles (bounded depth).
"""

from __future__ import annotations

import codecs
import re
import struct
from typing import Any

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.policy import Judgement, Severity
from weightvault.scan.report import Finding

__all__ = [
    "Global",
    "Obj",
    "PickleError",
    "PickleMachine",
    "PickleRun",
    "scan_pickle_file",
    "scan_pickle_stream_once",
]

HIGHEST_PROTOCOL = 5
_UNPACK_I32 = struct.Struct("<i").unpack
_UNPACK_U32 = struct.Struct("<I").unpack
_UNPACK_U64 = struct.Struct("<Q").unpack
_UNPACK_U16 = struct.Struct("<H").unpack
_UNPACK_F64 = struct.Struct(">d").unpack
LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
#: "Not inside a frame": a frame end no offset reaches.
_NO_FRAME = 1 << 62
_GETATTR = ("builtins.getattr",)


class PickleError(Exception):
    """The stream is malformed where a real unpickler would fail, or where real unpicklers
    would disagree about what it holds."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


# -- symbolic values ----------------------------------------------------------------------------


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


_BUILTIN_CONTAINERS = (PList, PSet, PDict)


def _global_name(value: Any) -> str:
    if isinstance(value, Global):
        return value.full
    if isinstance(value, Obj):
        return f"<result of {_global_name(value.func)}>"
    return f"<{type(value).__name__}>"


def _reachable_globals(run: PickleRun) -> set[int]:
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


def _finding_offset(finding: Finding) -> int:
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


_SAFE_METHOD_TARGETS = (PList, PSet, PDict)

_DTYPE_RE = re.compile(r"^[<>|=]?([biufcmMOSUV?])(\d*)$")
_DTYPE_SIZES = {"b": 1, "?": 1}


def numpy_itemsize(descr: str) -> int | None:
    """Item size of a simple NumPy dtype string (``<f4``, ``|b1``, ``<U3``); ``None`` for object.

    Raises ``ValueError`` for strings it does not understand.
    """
    aliases = {
        "f8": "<f8", "float64": "<f8", "float32": "<f4", "f4": "<f4", "f2": "<f2",
        "int64": "<i8", "int32": "<i4", "i8": "<i8", "i4": "<i4", "i2": "<i2", "i1": "|i1",
        "u1": "|u1", "uint8": "|u1", "bool": "|b1", "b1": "|b1", "O": "|O", "O8": "|O",
        "c8": "<c8", "c16": "<c16", "complex128": "<c16", "float16": "<f2",
    }
    descr = aliases.get(descr, descr)
    match = _DTYPE_RE.match(descr)
    if not match:
        raise ValueError(f"unsupported dtype {descr!r}")
    kind, digits = match.group(1), match.group(2)
    if kind == "O":
        return None
    if kind in _DTYPE_SIZES and not digits:
        return _DTYPE_SIZES[kind]
    if not digits:
        raise ValueError(f"dtype {descr!r} without a size")
    size = int(digits)
    return size * 4 if kind == "U" else size


def _crossing(offset: int, frame_end: int) -> PickleError:
    return PickleError(
        f"an opcode argument crosses the end of its FRAME (at offset {frame_end}); "
        "unpicklers disagree on what follows (pickle.load on a file discards the frame's rest, "
        "pickle.loads reads on, the pure-Python unpickler fails)", offset,
    )


class PickleMachine:
    """Interprets one pickle at a time from a reader, recording imports and calls.

    ``location`` names the stream in findings (``archive/data.pkl``); offsets are appended.
    """

    def __init__(
        self, ctx: FileContext, location: str, *, nested_depth: int = 0,
        python_unpickler: bool = False,
    ) -> None:
        self.ctx = ctx
        self.location = location
        self.limits = ctx.limits
        self.policy = ctx.policy
        self.nested_depth = nested_depth
        self.python_unpickler = python_unpickler
        self._seen: dict[tuple[str, str, str], Finding] = {}

    # -- helpers --------------------------------------------------------------------------------
    def _where(self, offset: int) -> str:
        return f"{self.location}@{offset}" if self.location else f"@{offset}"

    def _add(
        self, run: PickleRun, severity: Severity, kind: str, subject: str, message: str,
        offset: int, rule: str = "", usage: str = "",
    ) -> None:
        key = (kind, subject, message)
        if key in self._seen:
            return
        finding = Finding(
            self.ctx.path, self._where(offset), severity, kind, subject, message, rule, usage
        )
        self._seen[key] = finding
        run.findings.append(finding)

    # -- the interpreter ------------------------------------------------------------------------
    def run_one(self, r: ByteReader) -> PickleRun:
        """Interpret up to and including STOP. Raises :class:`PickleError` when malformed.

        Findings recorded before an error stay in the returned run (``run`` is attached to the
        exception as ``exc.run``), import findings included.
        """
        run = PickleRun()
        try:
            self._run(r, run)
        except PickleError as exc:
            self._finish(run)
            error = run.deferred or exc  # the readers parted ways first: that is the problem
            error.run = run  # type: ignore[attr-defined]
            if error is exc:
                raise
            raise error from exc
        except Truncated as exc:
            self._finish(run)
            err = run.deferred or PickleError(f"truncated pickle: {exc}", r.tell())
            err.run = run  # type: ignore[attr-defined]
            raise err from exc
        self._finish(run)
        if run.deferred is not None:
            run.deferred.run = run  # type: ignore[attr-defined]
            raise run.deferred
        return run

    def _finish(self, run: PickleRun) -> None:
        """Turn the run's imports into findings: one per effective name, called if any import
        site of it was called, at its first site; ordered by offset with the other findings."""
        if not run.globals:
            return
        first: dict[str, Global] = {}
        called: dict[str, bool] = {}
        resolved_only: list[Global] = []
        for g in run.globals:
            if g.full not in first:
                first[g.full] = g
                called[g.full] = False
            if g.called:
                called[g.full] = True
            elif g.resolved:
                resolved_only.append(g)
        escaped: set[int] = set()
        if resolved_only:
            escaped = _reachable_globals(run)
        usage_of: dict[str, str] = {}
        for g in run.globals:
            name = g.full
            if called[name]:
                usage_of[name] = "called"
            elif g.resolved and id(g) not in escaped:
                usage_of.setdefault(name, "resolved")
            else:
                usage_of[name] = "referenced"
        before = len(run.findings)
        for name, g in first.items():
            usage = usage_of[name]
            if usage == "resolved":
                continue  # every use was resolved statically: the result carries the verdict
            verdict = g.judgement.verdict(usage == "called")
            if verdict.severity > Severity.SAFE:
                self._add(
                    run, verdict.severity, "import", name, verdict.reason, g.offset,
                    verdict.rule, usage,
                )
        if len(run.findings) > before:
            run.findings.sort(key=_finding_offset)

    def _run(self, r: ByteReader, run: PickleRun) -> None:
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}
        limits = self.limits
        max_values = limits.max_pickle_values
        max_line = limits.max_line
        proto = 0
        read = r.read
        read_byte = r.read_byte
        readline = r.readline
        unpack_i = _UNPACK_I32
        unpack_I = _UNPACK_U32
        unpack_Q = _UNPACK_U64
        unpack_H = _UNPACK_U16
        unpack_d = _UNPACK_F64
        kept = limits.max_kept_string
        judge = self.policy.judge
        globals_ = run.globals
        frame_end = _NO_FRAME  # the file offset where the current FRAME ends

        def fail(message: str, offset: int) -> PickleError:
            return PickleError(message, offset)

        def pop(offset: int) -> Any:
            if len(stack) <= (marks[-1] if marks else 0):
                raise fail("unpickling stack underflow", offset)
            return stack.pop()

        def pop_mark(offset: int) -> list[Any]:
            if not marks:
                raise fail("could not find MARK", offset)
            base = marks.pop()
            items = stack[base:]
            del stack[base:]
            return items

        def top(offset: int) -> Any:
            if len(stack) <= (marks[-1] if marks else 0):
                raise fail("unpickling stack underflow", offset)
            return stack[-1]

        def text_str(raw: bytes, offset: int) -> str:
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise fail("GLOBAL argument is not UTF-8", offset) from exc

        def do_import(module: str, name: str, offset: int) -> Global:
            run.imports += 1
            g = Global(module, name, judge(module, name, proto), offset)
            globals_.append(g)
            return g

        def do_call(func: Any, offset: int, opname: str) -> None:
            if isinstance(func, Global):
                func.called = True
                return
            if isinstance(func, Persistent):
                pid = func.pid
                if (
                    isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module"
                    and isinstance(pid[1], Global)
                ):
                    # Legacy torch.save of a whole module: torch's persistent_load returns
                    # the class in ("module", class, source file, source), which is then built.
                    pid[1].called = True
                    return
            self._add(
                run, Severity.UNKNOWN, "call", _global_name(func),
                f"{opname} calls a computed object, not an imported global", offset,
                "rule:computed-call", "called",
            )

        def reduce(func: Any, args: Any, offset: int) -> Any:
            """REDUCE: the call's result; marks what gets called."""
            if not isinstance(func, Global):
                do_call(func, offset, "REDUCE")
                return Obj(func, args)
            klass = func.judgement.klass
            if klass == "calls-arguments":
                func.called = True
                if isinstance(args, tuple) and args:
                    for arg in args:
                        if isinstance(arg, Global):
                            arg.called = True
                    if isinstance(args[0], Obj | Persistent):
                        do_call(args[0], offset, f"{func.full} (through REDUCE)")
                return Obj(func, args)
            if (
                func.full in _GETATTR and isinstance(args, tuple) and len(args) == 2
                and isinstance(args[0], Global) and isinstance(args[1], str)
                and all(part.isidentifier() for part in args[1].split("."))
            ):
                # getattr(Class, "name") is the dotted name Class.name: judge that instead.
                func.resolved += 1
                owner: Global = args[0]
                owner.resolved += 1  # consumed by the lookup, unless also stored elsewhere
                name = f"{owner.name}.{args[1]}"
                derived = Global(
                    owner.module, name, judge(owner.module, name, proto), offset, derived=True
                )
                globals_.append(derived)
                return derived
            if klass == "loader" and self._scan_loaded_blob(r, func, args, offset, run):
                func.resolved += 1
                return Obj(func, args)
            func.called = True
            return Obj(func, args)

        def method_target(target: Any, offset: int, opname: str, items: list[Any]) -> None:
            if isinstance(target, _SAFE_METHOD_TARGETS):
                return
            if isinstance(target, Global):
                self._add(
                    run, Severity.DANGEROUS, "call", target.full,
                    f"{opname} calls a method of an imported object", offset,
                    "rule:method-of-global", "called",
                )
            elif isinstance(target, Obj):
                # A method of an instance: its class was called to build it and carries the
                # verdict (a computed callee was reported as a call). The items are kept: a
                # global stored in them is referenced.
                if target.items is None:
                    target.items = []
                target.items.extend(items)

        # Reads through the reader, one per C-level read of ``_pickle.c``. A frame is read
        # ahead as one block by the file unpickler (and by the pure-Python one), so each read
        # must lie wholly inside the current frame or start at or after its end (then the frame
        # is over: every reader reads on from the file). A read that straddles the end is where
        # the readers part ways (see the module docstring): refused.
        def unit(size: int, offset: int) -> None:
            nonlocal frame_end
            start = r.tell()
            if start >= frame_end:
                frame_end = _NO_FRAME
            elif start + size > frame_end:
                raise _crossing(offset, frame_end)

        def take(size: int, offset: int) -> bytes:
            if frame_end != _NO_FRAME:
                unit(size, offset)
            return read(size)

        def take_line(offset: int) -> bytes:
            nonlocal frame_end
            start = r.tell()
            line = readline(max_line)
            if start >= frame_end:
                frame_end = _NO_FRAME
            elif r.tell() > frame_end:
                raise _crossing(offset, frame_end)
            return line

        def read_string(n: int, offset: int, kind: str) -> Any:
            if n < 0:
                raise fail(f"{kind}: negative byte count", offset)
            unit(n, offset)
            if n > limits.max_kept_string:
                start = r.tell()
                r.skip(n)
                return Opaque("str", n, start, offset)
            data = read(n)
            try:
                return data.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as exc:
                raise fail(f"{kind}: invalid UTF-8", offset) from exc

        def read_bytes(n: int, offset: int, kind: str) -> Any:
            if n < 0:
                raise fail(f"{kind}: negative byte count", offset)
            unit(n, offset)
            start = r.tell()
            if (
                n >= 4
                and n <= limits.max_nested_blob
                and r.remaining() is not None
                and (r.remaining() or 0) >= n
            ):
                head = r.peek(2)
                if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= HIGHEST_PROTOCOL:
                    self._nested(r, n, offset, run)
                    return Opaque(kind, n, start, offset)
            r.skip(n)
            return Opaque(kind, n, start, offset)

        head = r.peek(1)
        run.first_opcode = head[0] if head else -1
        count = 0
        # The interpreter works on a local cursor over the reader's buffer: ``buf``, the usable
        # length ``n``, the next byte ``i`` and the file offset ``base`` of ``buf[0]``. Inside a
        # FRAME, ``n`` stops at the frame's end, so an opcode whose argument would cross it
        # never takes a fast path: it is read through the reader (section 2), and the check
        # after that read refuses the crossing. Opcodes whose arguments are already buffered
        # (nearly all, in practice) never touch the reader; anything that reads through the
        # reader hands the position back first (``r._i = i``) and reloads the cursor after.
        buf = r._buf
        i = r._i
        base = r._buf_pos
        n = len(buf)
        try:
            while True:
                if i < n:
                    op = buf[i]
                    offset = base + i
                    i += 1
                else:
                    r._i = i
                    i = -1
                    offset = r.tell()
                    if offset >= frame_end:  # the frame is complete: read on from the file
                        frame_end = _NO_FRAME
                    op = read_byte()
                    if op < 0:
                        run.opcodes = count
                        raise fail("pickle data was truncated (no STOP opcode)", offset)
                    buf = r._buf
                    i = r._i
                    base = r._buf_pos
                    n = len(buf) if base + len(buf) <= frame_end else frame_end - base
                count += 1
                if count > max_values:
                    raise fail(
                        f"pickle has more than {max_values} opcodes; refusing to interpret it",
                        offset,
                    )

                # -- 1. opcodes handled on the local cursor, most frequent first --------------
                # Each branch ends with ``continue``; an opcode whose argument is not (wholly)
                # buffered within the frame falls through to section 2.
                if op == 0x71 and i < n:  # BINPUT
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise fail("unpickling stack underflow", offset)
                    memo[buf[i]] = stack[-1]
                    i += 1
                    continue
                if op == 0x4B and i < n:  # BININT1
                    stack.append(buf[i])
                    i += 1
                    continue
                if op == 0x68 and i < n:  # BINGET
                    idx = buf[i]
                    i += 1
                    if idx not in memo:
                        raise fail(f"memo key {idx} not found (GET before PUT)", offset)
                    stack.append(memo[idx])
                    continue
                if op == 0x58 and i + 4 <= n:  # BINUNICODE
                    size = buf[i] | buf[i + 1] << 8 | buf[i + 2] << 16 | buf[i + 3] << 24
                    if size <= kept and i + 4 + size <= n:
                        try:
                            text = buf[i + 4 : i + 4 + size].decode("utf-8", "surrogatepass")
                        except UnicodeDecodeError as exc:
                            raise fail("BINUNICODE: invalid UTF-8", offset) from exc
                        stack.append(text)
                        i += 4 + size
                        continue
                elif op == 0x28:  # MARK
                    marks.append(len(stack))
                    continue
                elif op == 0x74:  # TUPLE
                    if not marks:
                        raise fail("could not find MARK", offset)
                    mark = marks.pop()
                    items_t = tuple(stack[mark:])
                    del stack[mark:]
                    stack.append(items_t)
                    continue
                elif op == 0x86:  # TUPLE2
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise fail("unpickling stack underflow", offset)
                    b = stack.pop()
                    stack[-1] = (stack[-1], b)
                    continue
                elif op == 0x52:  # REDUCE
                    if len(stack) - (marks[-1] if marks else 0) < 2:
                        raise fail("unpickling stack underflow", offset)
                    args = stack.pop()
                    stack[-1] = reduce(stack[-1], args, offset)
                    continue
                elif op == 0x94:  # MEMOIZE
                    memo[len(memo)] = top(offset)
                    continue
                elif op == 0x8C:  # SHORT_BINUNICODE
                    if i < n and i + 1 + buf[i] <= n:
                        size = buf[i]
                        try:
                            stack.append(buf[i + 1 : i + 1 + size].decode("utf-8", "surrogatepass"))
                        except UnicodeDecodeError as exc:
                            raise fail("SHORT_BINUNICODE: invalid UTF-8", offset) from exc
                        i += 1 + size
                        continue
                elif op == 0x4D:  # BININT2
                    if i + 2 <= n:
                        stack.append(buf[i] | buf[i + 1] << 8)
                        i += 2
                        continue
                elif op == 0x29:  # EMPTY_TUPLE
                    stack.append(())
                    continue
                elif op == 0x89:  # NEWFALSE
                    stack.append(False)
                    continue
                elif op == 0x88:  # NEWTRUE
                    stack.append(True)
                    continue
                elif op == 0x51:  # BINPERSID
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise fail("unpickling stack underflow", offset)
                    pid = stack.pop()
                    run.persistent_ids.append(pid)
                    stack.append(Persistent(pid))
                    continue
                elif op == 0x87:  # TUPLE3
                    if len(stack) - (marks[-1] if marks else 0) < 3:
                        raise fail("unpickling stack underflow", offset)
                    c = stack.pop()
                    b = stack.pop()
                    stack[-1] = (stack[-1], b, c)
                    continue
                elif op == 0x85:  # TUPLE1
                    stack.append((pop(offset),))
                    continue
                elif op == 0x75:  # SETITEMS
                    items = pop_mark(offset)
                    if len(items) % 2:
                        raise fail("odd number of items for SETITEMS", offset)
                    target = top(offset)
                    method_target(target, offset, "SETITEMS", items)
                    if isinstance(target, PDict):
                        target.items.extend(zip(items[0::2], items[1::2], strict=True))
                    continue
                elif op == 0x7D:  # EMPTY_DICT
                    stack.append(PDict())
                    continue
                elif op == 0x93:  # STACK_GLOBAL
                    name_v = pop(offset)
                    module_v = pop(offset)
                    if not isinstance(name_v, str) or not isinstance(module_v, str):
                        if isinstance(name_v, Opaque | Global | Obj) or isinstance(
                            module_v, Opaque | Global | Obj
                        ):
                            self._add(
                                run, Severity.DANGEROUS, "import", "<unresolved>",
                                "STACK_GLOBAL operands are not plain strings "
                                "(computed or oversized); cannot tell what is imported", offset,
                                "rule:unresolved-import",
                            )
                        raise fail("STACK_GLOBAL requires str", offset)
                    stack.append(do_import(module_v, name_v, offset))
                    continue
                elif op == 0x4A:  # BININT
                    if i + 4 <= n:
                        (value,) = unpack_i(buf[i : i + 4])
                        stack.append(value)
                        i += 4
                        continue
                elif op == 0x72:  # LONG_BINPUT
                    if i + 4 <= n:
                        (idx,) = unpack_I(buf[i : i + 4])
                        i += 4
                        memo[idx] = top(offset)
                        continue
                elif op == 0x65:  # APPENDS
                    items = pop_mark(offset)
                    target = top(offset)
                    method_target(target, offset, "APPENDS", items)
                    if isinstance(target, list):
                        target.extend(items)
                    continue
                elif op == 0x5D:  # EMPTY_LIST
                    stack.append(PList())
                    continue
                elif op == 0x4E:  # NONE
                    stack.append(None)
                    continue
                elif op == 0x62:  # BUILD
                    state = pop(offset)
                    inst = top(offset)
                    if isinstance(inst, Global):
                        self._add(
                            run, Severity.DANGEROUS, "build", inst.full,
                            "BUILD sets attributes on an imported module, class or function "
                            "(monkey-patching at load time)", offset, "rule:build-on-global",
                        )
                    elif isinstance(inst, Obj):
                        inst.state = state
                        if (
                            isinstance(inst.func, Global)
                            and inst.func.full == "joblib.numpy_pickle.NumpyArrayWrapper"
                        ):
                            # joblib reads the array from the file right after this BUILD:
                            # inside a frame, its reader and ours would start at different
                            # bytes (the frame is read ahead).
                            if frame_end != _NO_FRAME:
                                if base + i != frame_end:
                                    raise fail(
                                        "joblib array data inside a pickle FRAME (joblib "
                                        "reads it after the frame's end)", offset,
                                    )
                                frame_end = _NO_FRAME
                            r._i = i
                            i = -1  # the reader is authoritative until the reload
                            self._joblib_array(r, inst, offset, run)
                            buf, i, base = r._buf, r._i, r._buf_pos
                            n = len(buf)
                    continue
                elif op == 0x81:  # NEWOBJ
                    args = pop(offset)
                    cls = pop(offset)
                    do_call(cls, offset, "NEWOBJ")
                    stack.append(Obj(cls, args))
                    continue
                elif op == 0x61:  # APPEND
                    value = pop(offset)
                    target = top(offset)
                    method_target(target, offset, "APPEND", [value])
                    if isinstance(target, list):
                        target.append(value)
                    continue
                elif op == 0x73:  # SETITEM
                    value = pop(offset)
                    key = pop(offset)
                    target = top(offset)
                    method_target(target, offset, "SETITEM", [key, value])
                    if isinstance(target, PDict):
                        target.items.append((key, value))
                    continue
                elif op == 0x2E:  # STOP
                    r._i = i
                    run.value = pop(offset)
                    run.stopped = True
                    run.opcodes = count
                    if frame_end != _NO_FRAME and base + i < frame_end:
                        raise fail(
                            f"STOP before the end of its FRAME (at offset {frame_end}); "
                            "loaders disagree on where the next read starts", offset,
                        )
                    return
                elif op == 0x6F:  # OBJ
                    items = pop_mark(offset)
                    if not items:
                        raise fail("OBJ without a class", offset)
                    do_call(items[0], offset, "OBJ")
                    stack.append(Obj(items[0], tuple(items[1:])))
                    continue
                elif op == 0x92:  # NEWOBJ_EX
                    kwargs = pop(offset)
                    args = pop(offset)
                    cls = pop(offset)
                    do_call(cls, offset, "NEWOBJ_EX")
                    stack.append(Obj(cls, args, kwargs=kwargs))
                    continue
                elif op == 0x30:  # POP
                    if marks and marks[-1] >= len(stack):
                        marks.pop()
                    else:
                        pop(offset)
                    continue
                elif op == 0x31:  # POP_MARK
                    pop_mark(offset)
                    continue
                elif op == 0x32:  # DUP
                    stack.append(top(offset))
                    continue
                elif op == 0x8F:  # EMPTY_SET
                    stack.append(PSet())
                    continue
                elif op == 0x6C:  # LIST
                    stack.append(PList(pop_mark(offset)))
                    continue
                elif op == 0x91:  # FROZENSET
                    stack.append(tuple(pop_mark(offset)))
                    continue
                elif op == 0x64:  # DICT
                    items = pop_mark(offset)
                    if len(items) % 2:
                        raise fail("odd number of items for DICT", offset)
                    stack.append(PDict(list(zip(items[0::2], items[1::2], strict=True))))
                    continue
                elif op == 0x90:  # ADDITEMS
                    items = pop_mark(offset)
                    target = top(offset)
                    method_target(target, offset, "ADDITEMS", items)
                    if isinstance(target, PSet):
                        target.extend(items)
                    continue
                elif op == 0x97:  # NEXT_BUFFER
                    stack.append(Opaque("buffer"))
                    continue
                elif op == 0x98:  # READONLY_BUFFER
                    top(offset)
                    continue
                elif op == 0x47:  # BINFLOAT
                    if i + 8 <= n:
                        stack.append(unpack_d(buf[i : i + 8])[0])
                        i += 8
                        continue
                elif op == 0x8A:  # LONG1
                    if i < n and i + 1 + buf[i] <= n:
                        size = buf[i]
                        data = buf[i + 1 : i + 1 + size]
                        stack.append(int.from_bytes(data, "little", signed=True))
                        i += 1 + size
                        continue

                # -- 2. opcodes that read through the reader ----------------------------------
                r._i = i
                i = -1  # the reader is authoritative until the reload
                if op == 0x95:  # FRAME
                    (length,) = unpack_Q(take(8, offset))
                    position = r.tell()
                    if frame_end != _NO_FRAME and position < frame_end:
                        raise fail(
                            "FRAME before the end of the previous frame (the pure-Python "
                            "unpickler refuses it, the C one reads on)", offset,
                        )
                    frame_end = position + length
                    remaining = r.remaining()
                    if remaining is not None and length > remaining:
                        if run.deferred is None:
                            run.deferred = fail(
                                f"FRAME declares {length} bytes but only {remaining} follow "
                                "(the C unpickler stops here, the pure-Python one runs what "
                                "there is)", offset,
                            )
                        frame_end = position + remaining
                elif op == 0x63:  # GLOBAL
                    module = text_str(take_line(offset), offset)
                    name = text_str(take_line(offset), offset)
                    stack.append(do_import(module, name, offset))
                elif op == 0x71:  # BINPUT
                    idx = take(1, offset)[0]
                    memo[idx] = top(offset)
                elif op == 0x4B:  # BININT1
                    stack.append(take(1, offset)[0])
                elif op == 0x68:  # BINGET
                    idx = take(1, offset)[0]
                    if idx not in memo:
                        raise fail(f"memo key {idx} not found (GET before PUT)", offset)
                    stack.append(memo[idx])
                elif op == 0x58:  # BINUNICODE
                    stack.append(read_string(unpack_I(take(4, offset))[0], offset, "BINUNICODE"))
                elif op == 0x8C:  # SHORT_BINUNICODE
                    stack.append(read_string(take(1, offset)[0], offset, "SHORT_BINUNICODE"))
                elif op == 0x4D:  # BININT2
                    stack.append(unpack_H(take(2, offset))[0])
                elif op == 0x4A:  # BININT
                    stack.append(unpack_i(take(4, offset))[0])
                elif op == 0x72:  # LONG_BINPUT
                    (idx,) = unpack_I(take(4, offset))
                    memo[idx] = top(offset)
                elif op == 0x80:  # PROTO
                    proto = take(1, offset)[0]
                    if proto > HIGHEST_PROTOCOL:
                        raise fail(f"unsupported pickle protocol: {proto}", offset)
                    run.protocol = proto
                elif op == 0x6A:  # LONG_BINGET
                    (idx,) = unpack_I(take(4, offset))
                    if idx not in memo:
                        raise fail(f"memo key {idx} not found (GET before PUT)", offset)
                    stack.append(memo[idx])
                elif op == 0x67:  # GET
                    try:
                        idx = int(take_line(offset))
                    except ValueError as exc:
                        raise fail("GET argument is not an integer", offset) from exc
                    if idx not in memo:
                        raise fail(f"memo key {idx} not found (GET before PUT)", offset)
                    stack.append(memo[idx])
                elif op == 0x69:  # INST
                    module = text_str(take_line(offset), offset)
                    name = text_str(take_line(offset), offset)
                    cls = do_import(module, name, offset)  # imported before the MARK is popped
                    cls.called = True
                    args = pop_mark(offset)
                    stack.append(Obj(cls, tuple(args)))
                elif op in (0x82, 0x83, 0x84):  # EXT1 / EXT2 / EXT4
                    size = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                    code = int.from_bytes(take(size, offset), "little", signed=size == 4)
                    self._add(
                        run, Severity.UNKNOWN, "import", f"<extension {code}>",
                        "EXT opcode imports whatever the loading process registered under this "
                        "code (copyreg extension registry)", offset, "rule:extension-code",
                    )
                    stack.append(Opaque("extension"))
                elif op == 0x50:  # PERSID
                    pid = take_line(offset).decode("ascii", "replace")
                    run.persistent_ids.append(pid)
                    stack.append(Persistent(pid))
                elif op == 0x70:  # PUT
                    line = take_line(offset)
                    try:
                        idx = int(line)
                    except ValueError as exc:
                        raise fail("PUT argument is not an integer", offset) from exc
                    if idx < 0:
                        raise fail("negative PUT argument", offset)
                    memo[idx] = top(offset)
                elif op == 0x49:  # INT
                    stack.append(self._parse_int(take_line(offset), offset))
                elif op == 0x4C:  # LONG
                    line = take_line(offset)
                    if line.endswith(b"L"):
                        line = line[:-1]
                    try:
                        stack.append(int(line) if len(line) <= 4300 else Opaque("int"))
                    except ValueError as exc:
                        raise fail("LONG argument is not an integer", offset) from exc
                elif op == 0x8A:  # LONG1
                    size = take(1, offset)[0]
                    stack.append(int.from_bytes(take(size, offset), "little", signed=True))
                elif op == 0x8B:  # LONG4
                    (size,) = unpack_i(take(4, offset))
                    if size < 0:
                        raise fail("LONG pickle has negative byte count", offset)
                    if size > 1024:
                        unit(size, offset)
                        r.skip(size)
                        stack.append(Opaque("int"))
                    else:
                        stack.append(int.from_bytes(take(size, offset), "little", signed=True))
                elif op == 0x46:  # FLOAT
                    line = take_line(offset)
                    try:
                        stack.append(float(line))
                    except ValueError as exc:
                        raise fail("could not convert FLOAT argument", offset) from exc
                elif op == 0x47:  # BINFLOAT
                    stack.append(struct.unpack(">d", take(8, offset))[0])
                elif op == 0x8D:  # BINUNICODE8
                    stack.append(read_string(unpack_Q(take(8, offset))[0], offset, "BINUNICODE8"))
                elif op == 0x56:  # UNICODE
                    line = take_line(offset)
                    try:
                        stack.append(line.decode("raw-unicode-escape"))
                    except UnicodeDecodeError as exc:
                        raise fail("UNICODE argument is not raw-unicode-escape", offset) from exc
                elif op == 0x53:  # STRING
                    stack.append(self._parse_string(take_line(offset), offset))
                elif op == 0x54:  # BINSTRING
                    (size,) = unpack_i(take(4, offset))
                    unit(max(size, 0), offset)
                    stack.append(self._decode_binstring(size, r, offset))
                elif op == 0x55:  # SHORT_BINSTRING
                    size = take(1, offset)[0]
                    unit(size, offset)
                    stack.append(self._decode_binstring(size, r, offset))
                elif op == 0x42:  # BINBYTES
                    stack.append(read_bytes(unpack_I(take(4, offset))[0], offset, "bytes"))
                elif op == 0x43:  # SHORT_BINBYTES
                    stack.append(read_bytes(take(1, offset)[0], offset, "bytes"))
                elif op == 0x8E:  # BINBYTES8
                    stack.append(read_bytes(unpack_Q(take(8, offset))[0], offset, "bytes"))
                elif op == 0x96:  # BYTEARRAY8
                    stack.append(read_bytes(unpack_Q(take(8, offset))[0], offset, "bytearray"))
                else:
                    raise fail(f"invalid load key, {bytes([op])!r}", offset)
                buf = r._buf
                i = r._i
                base = r._buf_pos
                n = len(buf) if base + len(buf) <= frame_end else frame_end - base
        except PickleError:
            if i >= 0:  # raised on the local cursor: hand the position back (callers read on)
                r._i = i
            raise

    # -- loaders of literal blobs ---------------------------------------------------------------
    def _scan_loaded_blob(
        self, r: ByteReader, func: Global, args: Any, offset: int, run: PickleRun,
    ) -> bool:
        """A loader (``torch.storage._load_from_bytes``) called on one literal byte string:
        scan the blob as a file by content (a legacy or zip checkpoint). False when the blob
        cannot be scanned (computed, or in a stream that cannot seek back)."""
        if not (isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], Opaque)):
            return False
        blob: Opaque = args[0]
        if blob.kind != "bytes" or blob.start < 0 or not r._seekable:
            return False
        if self.nested_depth >= self.limits.max_nested_depth:
            self._add(
                run, Severity.UNKNOWN, "nested", func.full,
                f"blob loaded more than {self.limits.max_nested_depth} levels deep; not "
                "followed", offset, "rule:nesting-limit",
            )
            return True
        from weightvault.scan.formats import scan_reader

        location = f"{self._where(blob.offset)}/bytes"
        raw: Any = r._raw
        fmt = scan_reader(
            self.ctx, ByteReader(raw, blob.start, blob.start + blob.size), raw, location,
            name="", depth=self.nested_depth + 1,
        )
        if fmt in ("data", "empty"):
            self.ctx.error(location, f"{func.full} is called on bytes that are not a checkpoint")
        return True

    # -- opcode argument parsing ----------------------------------------------------------------
    @staticmethod
    def _parse_int(line: bytes, offset: int) -> Any:
        if line in (b"00", b"01"):
            return line == b"01"
        text = line.decode("ascii", "replace").strip()
        if len(text) > 4300:
            return Opaque("int")
        for base in (0, 10):
            try:
                return int(text, base)
            except ValueError:
                continue
        raise PickleError("INT argument is not an integer", offset)

    @staticmethod
    def _parse_string(line: bytes, offset: int) -> Any:
        if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
            raise PickleError("the STRING opcode argument must be quoted", offset)
        try:
            data = codecs.escape_decode(line[1:-1])[0]
        except ValueError as exc:
            raise PickleError("bad escape in STRING argument", offset) from exc
        return data.decode("latin-1")

    def _decode_binstring(self, n: int, r: ByteReader, offset: int) -> Any:
        if n < 0:
            raise PickleError("BINSTRING pickle has negative byte count", offset)
        if n > self.limits.max_kept_string:
            r.skip(n)
            return Opaque("str", n)
        return r.read(n).decode("latin-1")

    # -- nested pickles and joblib arrays -------------------------------------------------------
    def _nested(self, r: ByteReader, n: int, offset: int, run: PickleRun) -> None:
        """Interpret a byte string that starts like a pickle; keep findings only if it is one."""
        sub = r.sub_reader(n)
        if self.nested_depth >= self.limits.max_nested_depth:
            self._add(
                run, Severity.UNKNOWN, "nested", "<nested pickle>",
                f"pickle nested more than {self.limits.max_nested_depth} levels deep in byte "
                "strings; not followed", offset, "rule:nesting-limit",
            )
            return
        inner = PickleMachine(
            self.ctx, f"{self._where(offset)}/bytes", nested_depth=self.nested_depth + 1,
        )
        try:
            result = inner.run_one(sub)
        except PickleError as exc:
            partial: PickleRun = exc.run  # type: ignore[attr-defined]
            if partial.max_severity >= Severity.DANGEROUS:
                run.findings.extend(partial.findings)
            return
        run.findings.extend(result.findings)

    def _joblib_array(self, r: ByteReader, wrapper: Obj, offset: int, run: PickleRun) -> None:
        """Skip the raw array joblib writes right after a NumpyArrayWrapper's BUILD."""
        state = wrapper.state
        if not isinstance(state, PDict):
            raise PickleError("joblib NumpyArrayWrapper state is not a dict", offset)
        shape = state.get("shape")
        dtype = state.get("dtype")
        if not isinstance(shape, tuple) or not all(
            isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in shape
        ):
            raise PickleError("joblib array shape is not a tuple of sizes", offset)
        descr = None
        if isinstance(dtype, Obj) and isinstance(dtype.args, tuple) and dtype.args:
            descr = dtype.args[0]
        if not isinstance(descr, str):
            raise PickleError("joblib array dtype is not numpy.dtype(<str>)", offset)
        try:
            itemsize = numpy_itemsize(descr)
        except ValueError as exc:
            raise PickleError(f"joblib array: {exc}", offset) from exc
        if itemsize is not None and isinstance(dtype.state, tuple) and len(dtype.state) > 5:
            elsize = dtype.state[5]
            if isinstance(elsize, int) and elsize > 0 and descr.lstrip("<>|=")[:1] in "SUV":
                itemsize = elsize
        run.joblib_arrays += 1
        if itemsize is None:
            # Object arrays: a complete nested pickle follows, read by a fresh unpickler.
            inner = PickleMachine(
                self.ctx, f"{self._where(r.tell())}/object-array",
                nested_depth=self.nested_depth, python_unpickler=True,
            )
            try:
                result = inner.run_one(r)
            except PickleError as exc:
                run.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
                raise
            run.findings.extend(result.findings)
            return
        count = 1
        for dim in shape:
            count *= dim
        if state.get("numpy_array_alignment_bytes") is not None:
            padding = r.read(1)[0]
            r.skip(padding)
        r.skip(count * itemsize)


def scan_pickle_stream_once(
    r: ByteReader, ctx: FileContext, location: str
) -> PickleRun:
    """Interpret one pickle and commit its findings; errors become per-file errors."""
    machine = PickleMachine(ctx, location)
    try:
        run = machine.run_one(r)
    except PickleError as exc:
        partial: PickleRun = exc.run  # type: ignore[attr-defined]
        ctx.findings.extend(partial.findings)
        ctx.error(f"{location}@{exc.offset}" if location else f"@{exc.offset}", str(exc))
        return partial
    ctx.findings.extend(run.findings)
    return run


_PICKLE_FIRST_BYTES = frozenset(
    b"(.012FGIJKLMNPQRSTUVXabcdeghijlopqrstu}])" + bytes(range(0x80, 0x99))
)


def looks_like_pickle_start(head: bytes) -> bool:
    """Cheap test on the first bytes: a PROTO opcode, or any opcode of protocols 0-1."""
    if not head:
        return False
    if head[0] == 0x80:
        return len(head) >= 2 and head[1] <= HIGHEST_PROTOCOL
    return head[0] in _PICKLE_FIRST_BYTES


def scan_pickle_file(
    r: ByteReader, ctx: FileContext, location: str, *, claimed: bool,
) -> str | None:
    """Scan a raw pickle file: every stacked pickle, legacy PyTorch layout included.

    ``claimed`` is true when the caller already knows this is a pickle (name or container says
    so). Otherwise a stream that fails before STOP without a dangerous finding is "not a pickle"
    and ``None`` is returned so the caller can treat it as plain data. Returns the format name.
    """
    machine = PickleMachine(ctx, location)
    start = r.tell()
    try:
        first = machine.run_one(r)
    except PickleError as exc:
        partial: PickleRun = exc.run  # type: ignore[attr-defined]
        is_pickle = (
            claimed
            or partial.first_opcode == 0x80
            or partial.max_severity >= Severity.DANGEROUS
        )
        if not is_pickle:
            return None
        ctx.findings.extend(partial.findings)
        ctx.error(_loc(location, exc.offset), str(exc))
        return "pickle"
    if not claimed and first.first_opcode != 0x80 and first.imports == 0 and r.tell() - start < 2:
        return None
    ctx.findings.extend(first.findings)
    if first.value == LEGACY_TORCH_MAGIC and not isinstance(first.value, bool):
        _scan_legacy_torch(r, ctx, location, machine)
        return "pytorch-legacy"
    count = 1
    while not r.at_eof():
        count += 1
        try:
            run = machine.run_one(r)
        except PickleError as exc:
            partial = exc.run  # type: ignore[attr-defined]
            ctx.findings.extend(partial.findings)
            ctx.error(
                _loc(location, exc.offset),
                f"data after pickle {count - 1} is not a valid pickle: {exc}",
            )
            break
        ctx.findings.extend(run.findings)
    return "pickle" if count == 1 else f"pickle (stacked x{count})"


def _loc(location: str, offset: int) -> str:
    return f"{location}@{offset}" if location else f"@{offset}"


_STORAGE_ELEMENT_SIZE = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexDouble": 16, "ComplexFloat": 8, "QUInt8": 1,
    "QInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1, "Untyped": 1,
}


def _scan_legacy_torch(
    r: ByteReader, ctx: FileContext, location: str, machine: PickleMachine
) -> None:
    """Legacy ``torch.save(..., _use_new_zipfile_serialization=False)``: 4 more pickles + data.

    Layout: magic, protocol version, sys_info, the object, the list of storage keys; then per key
    an 8-byte element count and the raw storage bytes.
    """
    runs: list[PickleRun] = []
    for index in range(4):
        try:
            run = machine.run_one(r)
        except PickleError as exc:
            ctx.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
            ctx.error(_loc(location, exc.offset), f"legacy PyTorch pickle {index + 2}: {exc}")
            return
        ctx.findings.extend(run.findings)
        runs.append(run)
    main, keys_run = runs[2], runs[3]
    sizes: dict[str, int] = {}
    for pid in main.persistent_ids:
        if (
            isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"
            and isinstance(pid[1], Global) and isinstance(pid[2], str)
        ):
            kind = pid[1].name.removesuffix("Storage")
            sizes[pid[2]] = _STORAGE_ELEMENT_SIZE.get(kind, 0)
    keys = keys_run.value
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        ctx.error(_loc(location, r.tell()), "legacy PyTorch storage key list is malformed")
        return
    for key in keys:
        element = sizes.get(key)
        if not element:
            ctx.error(
                _loc(location, r.tell()),
                f"legacy PyTorch storage {key!r} has no known element type",
            )
            return
        try:
            (count,) = struct.unpack("<q", r.read(8))
            if count < 0:
                raise Truncated("negative storage size")
            r.skip(count * element)
        except Truncated as exc:
            ctx.error(_loc(location, r.tell()), f"legacy PyTorch storage {key!r}: {exc}")
            return
    if not r.at_eof():
        offset = r.tell()
        tail = PickleMachine(ctx, location)
        try:
            extra = tail.run_one(r)
        except PickleError as exc:
            # Whatever a broken trailing pickle imported before it broke still counts.
            ctx.findings.extend(exc.run.findings)  # type: ignore[attr-defined]
            ctx.find(
                Severity.UNKNOWN, "structure", "<trailing data>",
                "bytes after the last storage of a legacy PyTorch file", _loc(location, offset),
            )
            return
        ctx.findings.extend(extra.findings)
        ctx.find(
            Severity.UNKNOWN, "structure", "<trailing pickle>",
            "a pickle after the last storage of a legacy PyTorch file", _loc(location, offset),
        )
