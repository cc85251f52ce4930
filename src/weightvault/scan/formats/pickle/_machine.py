"""The opcode loop: one pickle, read the way the C file unpickler reads it.

Speed matters here (a checkpoint can hold millions of opcodes), so the loop keeps its cursor over
the reader's buffer in locals and decodes the common binary arguments inline; what an opcode
*means* beyond the stack (calls, nested payloads, findings) is in :class:`~._calls.MachineBase`.
See the package docstring for the FRAME rules enforced here.
"""

from __future__ import annotations

from typing import Any

from weightvault.scan._io import ByteReader
from weightvault.scan.formats.pickle._arguments import (
    HIGHEST_PROTOCOL,
    NO_FRAME,
    UNPACK_F64,
    UNPACK_I32,
    UNPACK_U16,
    UNPACK_U32,
    UNPACK_U64,
    crossing,
    decode_binstring,
    decode_line,
    frame_start,
    parse_int,
    parse_long,
    parse_string,
)
from weightvault.scan.formats.pickle._calls import MachineBase
from weightvault.scan.formats.pickle._values import (
    Global,
    Obj,
    Opaque,
    PDict,
    Persistent,
    PickleError,
    PickleRun,
    PList,
    PSet,
)
from weightvault.scan.policy import Severity

__all__ = ["PickleMachine"]

_NOT_UTF8 = "GLOBAL argument is not UTF-8"


class PickleMachine(MachineBase):
    """Interprets one pickle at a time from a reader (:meth:`run_one`), recording imports and
    calls; ``location`` names the stream in findings (``archive/data.pkl``)."""

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
        unpack_i = UNPACK_I32
        unpack_I = UNPACK_U32
        unpack_Q = UNPACK_U64
        unpack_H = UNPACK_U16
        unpack_d = UNPACK_F64
        kept = limits.max_kept_string
        judge = self.policy.judge
        globals_ = run.globals
        frame_end = NO_FRAME  # the file offset where the current FRAME ends
        fail = PickleError
        call = self._call
        reduce = self._reduce
        method_target = self._method_target
        add_items = self._add_items
        string_at = self._text
        blob_at = self._blob

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

        def do_import(module: str, name: str, offset: int) -> Global:
            run.imports += 1
            g = Global(module, name, judge(module, name, proto), offset)
            globals_.append(g)
            return g

        def import_lines(offset: int) -> Global:
            """GLOBAL and INST: a module line and a name line, decoded as UTF-8."""
            module = decode_line(take_line(offset), "utf-8", offset, _NOT_UTF8)
            return do_import(module, decode_line(take_line(offset), "utf-8", offset, _NOT_UTF8),
                             offset)

        # Reads through the reader, one per C-level read of ``_pickle.c``. A frame is read
        # ahead as one block by the file unpickler (and by the pure-Python one), so each read
        # must lie wholly inside the current frame or start at or after its end (then the frame
        # is over: every reader reads on from the file). A read that straddles the end is where
        # the readers part ways (see the module docstring): refused.
        def unit(size: int, offset: int) -> None:
            nonlocal frame_end
            start = r.tell()
            if start >= frame_end:
                frame_end = NO_FRAME
            elif start + size > frame_end:
                raise crossing(offset, frame_end)

        def take(size: int, offset: int) -> bytes:
            if frame_end != NO_FRAME:
                unit(size, offset)
            return read(size)

        def take_line(offset: int) -> bytes:
            nonlocal frame_end
            start = r.tell()
            line = readline(max_line)
            if start >= frame_end:
                frame_end = NO_FRAME
            elif r.tell() > frame_end:
                raise crossing(offset, frame_end)
            return line

        def read_string(n: int, offset: int, kind: str) -> Any:
            unit(n, offset)
            return string_at(r, n, offset, kind)

        def read_bytes(n: int, offset: int, kind: str) -> Any:
            unit(n, offset)
            return blob_at(r, run, n, offset, kind)

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
                        frame_end = NO_FRAME
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
                    stack[-1] = reduce(r, run, stack[-1], args, offset, proto)
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
                    method_target(run, target, offset, "SETITEMS", items)
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
                elif op == 0x65 or op == 0x90:  # APPENDS, ADDITEMS
                    items = pop_mark(offset)
                    add_items(run, top(offset), offset, op, items)
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
                            if frame_end != NO_FRAME:
                                if base + i != frame_end:
                                    raise fail(
                                        "joblib array data inside a pickle FRAME (joblib "
                                        "reads it after the frame's end)", offset,
                                    )
                                frame_end = NO_FRAME
                            r._i = i
                            i = -1  # the reader is authoritative until the reload
                            self._joblib_array(r, inst, offset, run)
                            buf, i, base = r._buf, r._i, r._buf_pos
                            n = len(buf)
                    continue
                elif op == 0x81:  # NEWOBJ
                    args = pop(offset)
                    cls = pop(offset)
                    call(run, cls, offset, "NEWOBJ")
                    stack.append(Obj(cls, args))
                    continue
                elif op == 0x61:  # APPEND
                    value = pop(offset)
                    target = top(offset)
                    method_target(run, target, offset, "APPEND", [value])
                    if isinstance(target, list):
                        target.append(value)
                    continue
                elif op == 0x73:  # SETITEM
                    value = pop(offset)
                    key = pop(offset)
                    target = top(offset)
                    method_target(run, target, offset, "SETITEM", [key, value])
                    if isinstance(target, PDict):
                        target.items.append((key, value))
                    continue
                elif op == 0x2E:  # STOP
                    r._i = i
                    run.value = pop(offset)
                    run.stopped = True
                    run.opcodes = count
                    if frame_end != NO_FRAME and base + i < frame_end:
                        raise fail(
                            f"STOP before the end of its FRAME (at offset {frame_end}); "
                            "loaders disagree on where the next read starts", offset,
                        )
                    return
                elif op == 0x6F:  # OBJ
                    items = pop_mark(offset)
                    if not items:
                        raise fail("OBJ without a class", offset)
                    call(run, items[0], offset, "OBJ")
                    stack.append(Obj(items[0], tuple(items[1:])))
                    continue
                elif op == 0x92:  # NEWOBJ_EX
                    kwargs = pop(offset)
                    args = pop(offset)
                    cls = pop(offset)
                    call(run, cls, offset, "NEWOBJ_EX")
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
                    frame_end = frame_start(r, run, unpack_Q(take(8, offset))[0], frame_end,
                                            offset)
                elif op == 0x63:  # GLOBAL
                    stack.append(import_lines(offset))
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
                    cls = import_lines(offset)  # imported before the MARK is popped
                    cls.called = True
                    args = pop_mark(offset)
                    stack.append(Obj(cls, tuple(args)))
                elif op in (0x82, 0x83, 0x84):  # EXT1 / EXT2 / EXT4
                    code = take({0x82: 1, 0x83: 2, 0x84: 4}[op], offset)
                    stack.append(self._extension(run, code, offset))
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
                    stack.append(parse_int(take_line(offset), offset))
                elif op == 0x4C:  # LONG
                    stack.append(parse_long(take_line(offset), offset))
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
                    stack.append(unpack_d(take(8, offset))[0])
                elif op == 0x8D:  # BINUNICODE8
                    stack.append(read_string(unpack_Q(take(8, offset))[0], offset, "BINUNICODE8"))
                elif op == 0x56:  # UNICODE
                    stack.append(decode_line(take_line(offset), "raw-unicode-escape", offset,
                                             "UNICODE argument is not raw-unicode-escape"))
                elif op == 0x53:  # STRING
                    stack.append(parse_string(take_line(offset), offset))
                elif op == 0x54:  # BINSTRING
                    (size,) = unpack_i(take(4, offset))
                    unit(max(size, 0), offset)
                    stack.append(decode_binstring(size, r, offset, kept))
                elif op == 0x55:  # SHORT_BINSTRING
                    size = take(1, offset)[0]
                    unit(size, offset)
                    stack.append(decode_binstring(size, r, offset, kept))
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
