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

The package: :mod:`._values` (symbolic values, the record of a run), :mod:`._arguments` (opcode
arguments and constants), :mod:`._calls` (findings, what calls mean, nested payloads, joblib
arrays), :mod:`._machine` (the opcode loop) and :mod:`._files` (stacked pickles, legacy PyTorch
files).
"""

from __future__ import annotations

from weightvault.scan.formats.pickle._arguments import (
    HIGHEST_PROTOCOL,
    looks_like_pickle_start,
    numpy_itemsize,
)
from weightvault.scan.formats.pickle._files import (
    LEGACY_TORCH_MAGIC,
    STORAGE_ELEMENT_SIZE,
    scan_pickle_file,
    scan_pickle_stream_once,
)
from weightvault.scan.formats.pickle._machine import PickleMachine
from weightvault.scan.formats.pickle._values import Global, Obj, PickleError, PickleRun

__all__ = [
    "HIGHEST_PROTOCOL",
    "LEGACY_TORCH_MAGIC",
    "STORAGE_ELEMENT_SIZE",
    "Global",
    "Obj",
    "PickleError",
    "PickleMachine",
    "PickleRun",
    "looks_like_pickle_start",
    "numpy_itemsize",
    "scan_pickle_file",
    "scan_pickle_stream_once",
]
