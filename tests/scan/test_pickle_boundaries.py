"""The pickle interpreter works on a local cursor over the reader's buffer and hands the position
back only for some opcodes; the reader refills 4 KiB first, then 64 KiB. Findings must not depend
on where an opcode or its argument meets a refill boundary: each payload below is shifted so that
every one of its bytes lands on the first and on the second boundary in turn, behind stack-neutral
filler (many short opcodes, or strings that are read, not skipped).
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from weightvault.scan import scan_file

_FIRST, _LATER = 1 << 12, 1 << 16


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


def _filler(size: int, strings: bool) -> bytes:
    """Exactly ``size`` (>= 6) bytes that leave the stack as they found it: kept strings of at
    most 30,000 bytes (read, not skipped: the reader's refills stay where they were), or many
    short opcodes."""
    if strings:
        out = b""
        while size > 30_006 + 6:
            out += b"X" + _u32(30_000) + b"a" * 30_000 + b"0"  # BINUNICODE, POP
            size -= 30_006
        return out + b"X" + _u32(size - 6) + b"a" * (size - 6) + b"0"
    head = b"K\x000" if size % 2 else b""  # BININT1 0, POP
    return head + b"N0" * ((size - len(head)) // 2)  # NONE, POP


_NESTED = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R."
# Bodies push one value; each contains an import the policy reports.
BODIES = {
    "memo and ints": b"M\x01\x02K\x05\x86q\x07r\x08\x00\x00\x00h\x07j\x08\x00\x00\x00\x86\x86"
    b"J\x01\x02\x03\x04\x86\x8c\x02os\x8c\x06system\x93\x86",
    "memoized names": b"X\x02\x00\x00\x00os\x940X\x06\x00\x00\x00system\x940h\x00h\x01\x93",
    "short strings": b"\x8c\x02os\x94\x8c\x06system\x94\x93N\x85R",
    "text opcodes": b"cposix\nsystem\n(S'id'\ntR0(S'x'\nios\nsystem\n0Vos\nVsystem\n\x93",
    "binstrings": b"U\x02osT\x06\x00\x00\x00system\x93",
    "frame": b"\x95\x0c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93",
    "nested pickle": b"B" + _u32(len(_NESTED)) + _NESTED + b"0cbuiltins\neval\n",
    "build on a global": b"cos\nsystem\n}b",
}


def _subjects(path: Path) -> tuple[set[tuple[int, str, str]], tuple[str, ...]]:
    result = scan_file(path)
    return {(int(f.severity), f.kind, f.subject) for f in result.findings}, tuple(result.errors)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_findings_do_not_depend_on_refill_boundaries(tmp_path: Path, name: str) -> None:
    body = BODIES[name]
    path = tmp_path / "x.pkl"
    path.write_bytes(b"\x80\x04" + _filler(8, False) + body + b".")
    reference = _subjects(path)
    assert reference[0] and not reference[1], reference
    for boundary, fillers in ((_FIRST, (False, True)), (_FIRST + _LATER, (True,))):
        for start in range(boundary - len(body) - 1, boundary + 2):
            for strings in fillers:
                path.write_bytes(b"\x80\x04" + _filler(start - 2, strings) + body + b".")
                assert _subjects(path) == reference, (start, strings)


def test_truncated_at_a_boundary_is_never_clean(tmp_path: Path) -> None:
    body = BODIES["memo and ints"]
    data = b"\x80\x04" + _filler(_FIRST - 12 - 2, False) + body + b"."
    path = tmp_path / "x.pkl"
    for cut in range(_FIRST - 14, len(data)):
        path.write_bytes(data[:cut])
        result = scan_file(path)
        assert result.errors, cut
