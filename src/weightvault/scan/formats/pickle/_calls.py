"""What the interpreter records, and what calls mean: findings, calls, nested payloads.

:class:`MachineBase` is the half of :class:`~._machine.PickleMachine` that is not the opcode loop:
turning a run's imports into findings (called or referenced), the meaning of a call (a global
called, a helper that calls its arguments, ``getattr`` on a literal name, a loader on a literal
blob), method calls on restored objects, byte strings that hold nested pickles, and the raw array
data joblib writes between opcodes.
"""

from __future__ import annotations

from typing import Any

from weightvault.scan._engine import FileContext
from weightvault.scan._io import ByteReader, Truncated
from weightvault.scan.formats.pickle._arguments import GETATTR, HIGHEST_PROTOCOL, numpy_itemsize
from weightvault.scan.formats.pickle._values import (
    BUILTIN_CONTAINERS,
    Global,
    Obj,
    Opaque,
    PDict,
    Persistent,
    PickleError,
    PickleRun,
    PSet,
    finding_offset,
    global_name,
    reachable_globals,
)
from weightvault.scan.policy import Severity
from weightvault.scan.report import Finding

__all__ = ["MachineBase"]

#: The opcodes that add marked items to a container: their name and the container they fill.
_ADDERS: dict[int, tuple[str, type[list[Any]]]] = {
    0x65: ("APPENDS", list),
    0x90: ("ADDITEMS", PSet),
}


class MachineBase:
    """Interprets one pickle at a time from a reader, recording imports and calls.

    ``location`` names the stream in findings (``archive/data.pkl``); offsets are appended.
    The opcode loop is :meth:`_run`, supplied by :class:`~._machine.PickleMachine`.
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

    def _run(self, r: ByteReader, run: PickleRun) -> None:
        raise NotImplementedError

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

    # -- one pickle -----------------------------------------------------------------------------
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
            escaped = reachable_globals(run)
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
            run.findings.sort(key=finding_offset)

    # -- calls ----------------------------------------------------------------------------------
    def _call(self, run: PickleRun, func: Any, offset: int, opname: str) -> None:
        """``opname`` calls ``func``: a global is marked called; a computed callee is reported."""
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
            run, Severity.UNKNOWN, "call", global_name(func),
            f"{opname} calls a computed object, not an imported global", offset,
            "rule:computed-call", "called",
        )

    def _reduce(
        self, r: ByteReader, run: PickleRun, func: Any, args: Any, offset: int, proto: int,
    ) -> Any:
        """REDUCE: the call's result; marks what gets called."""
        if not isinstance(func, Global):
            self._call(run, func, offset, "REDUCE")
            return Obj(func, args)
        klass = func.judgement.klass
        if klass == "calls-arguments":
            func.called = True
            if isinstance(args, tuple) and args:
                for arg in args:
                    if isinstance(arg, Global):
                        arg.called = True
                if isinstance(args[0], Obj | Persistent):
                    self._call(run, args[0], offset, f"{func.full} (through REDUCE)")
            return Obj(func, args)
        if (
            func.full in GETATTR and isinstance(args, tuple) and len(args) == 2
            and isinstance(args[0], Global) and isinstance(args[1], str)
            and all(part.isidentifier() for part in args[1].split("."))
        ):
            # getattr(Class, "name") is the dotted name Class.name: judge that instead.
            func.resolved += 1
            owner: Global = args[0]
            owner.resolved += 1  # consumed by the lookup, unless also stored elsewhere
            name = f"{owner.name}.{args[1]}"
            derived = Global(
                owner.module, name, self.policy.judge(owner.module, name, proto), offset,
                derived=True,
            )
            run.globals.append(derived)
            return derived
        if klass == "loader" and self._scan_loaded_blob(r, func, args, offset, run):
            func.resolved += 1
            return Obj(func, args)
        func.called = True
        return Obj(func, args)

    def _method_target(
        self, run: PickleRun, target: Any, offset: int, opname: str, items: list[Any],
    ) -> None:
        """APPEND(S), SETITEM(S) and ADDITEMS call a method of their target."""
        if isinstance(target, BUILTIN_CONTAINERS):
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

    def _add_items(
        self, run: PickleRun, target: Any, offset: int, op: int, items: list[Any]
    ) -> None:
        """APPENDS (``op`` 0x65) and ADDITEMS (0x90): the method call judged, then the items
        kept when the target is a restored list (APPENDS) or set (ADDITEMS), so that a global
        stored in it is still seen when the container is used later."""
        opname, container = _ADDERS[op]
        self._method_target(run, target, offset, opname, items)
        if isinstance(target, container):
            target.extend(items)

    def _extension(self, run: PickleRun, code: bytes, offset: int) -> Opaque:
        """EXT1/2/4 (``code``: 1, 2 or 4 bytes): an import of whatever the loading process
        registered under the code, reported as such."""
        number = int.from_bytes(code, "little", signed=len(code) == 4)
        self._add(
            run, Severity.UNKNOWN, "import", f"<extension {number}>",
            "EXT opcode imports whatever the loading process registered under this code "
            "(copyreg extension registry)", offset, "rule:extension-code",
        )
        return Opaque("extension")

    # -- strings and byte strings ---------------------------------------------------------------
    def _text(self, r: ByteReader, n: int, offset: int, kind: str) -> Any:
        """A UTF-8 string argument of ``n`` bytes (kept only up to ``max_kept_string``)."""
        if n < 0:
            raise PickleError(f"{kind}: negative byte count", offset)
        if n > self.limits.max_kept_string:
            start = r.tell()
            r.skip(n)
            return Opaque("str", n, start, offset)
        data = r.read(n)
        try:
            return data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as exc:
            raise PickleError(f"{kind}: invalid UTF-8", offset) from exc

    def _blob(self, r: ByteReader, run: PickleRun, n: int, offset: int, kind: str) -> Any:
        """A byte string of ``n`` bytes: skipped, or read as a nested pickle if it is one."""
        if n < 0:
            raise PickleError(f"{kind}: negative byte count", offset)
        start = r.tell()
        if (
            n >= 4
            and n <= self.limits.max_nested_blob
            and r.remaining() is not None
            and (r.remaining() or 0) >= n
        ):
            head = r.peek(2)
            if len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= HIGHEST_PROTOCOL:
                self._nested(r, n, offset, run)
                return Opaque(kind, n, start, offset)
        r.skip(n)
        return Opaque(kind, n, start, offset)

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
        inner = type(self)(
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
            inner = type(self)(
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
