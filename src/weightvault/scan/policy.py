"""Verdicts for imports found in model files: an allow-list, a deny-list, and "suspicious" between.

A deny-list alone is never complete (every public scanner has been bypassed through a stdlib
callable it did not list), so the decision is made by the allow-list: only imports known to be
needed for weights are clean. The deny-list only decides how loud the rest is: *dangerous* for
code execution, processes, files, network, import machinery and ``getattr``-style indirection,
*suspicious* for everything else (named, so a user can allow it with ``--allow module.name``).

Names are classified the way CPython resolves them: ``module`` is imported, then each dotted
component of ``name`` is an attribute lookup, so ``pathlib`` + ``os.system`` is ``os.system`` and
``builtins`` + ``eval.__call__`` is ``eval``. Python 2 names are remapped as the unpickler does
(``_compat_pickle``; it is data, not code from the scanned file).
"""

from __future__ import annotations

import _compat_pickle
from collections.abc import Iterable
from enum import IntEnum
from typing import NamedTuple

__all__ = [
    "DEFAULT_POLICY",
    "Policy",
    "Severity",
    "Verdict",
    "remap_python2",
]


class Severity(IntEnum):
    """How bad a finding is; ordered, so ``max()`` and comparisons work."""

    CLEAN = 0
    SUSPICIOUS = 1
    DANGEROUS = 2

    @property
    def label(self) -> str:
        return self.name.lower()

    def at_least(self, threshold: Severity) -> bool:
        """True when this severity meets or exceeds ``threshold`` (the ``--fail-on`` test)."""
        return self >= threshold

    @classmethod
    def parse(cls, text: str) -> Severity:
        """Parse ``clean`` / ``suspicious`` / ``dangerous`` (case-insensitive)."""
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(
                f"unknown severity {text!r}; use clean, suspicious or dangerous"
            ) from None


class Verdict(NamedTuple):
    """The classification of one import: its severity and a short reason."""

    severity: Severity
    reason: str


# --- the allow-list: what weights need ---------------------------------------------------------

_TORCH_STORAGES = frozenset(
    f"{kind}Storage"
    for kind in (
        "Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
        "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
        "Untyped",
    )
)

_TORCH_DTYPES = frozenset(
    (
        "float32 float64 float16 bfloat16 int64 int32 int16 int8 uint8 uint16 uint32 uint64 bool "
        "complex64 complex128 float8_e4m3fn float8_e5m2 float8_e4m3fnuz float8_e5m2fnuz "
        "qint8 quint8 qint32 quint4x2 half float double long int short cfloat cdouble"
    ).split()
)

SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("torch._utils", "_rebuild_tensor"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch._utils", "_rebuild_qtensor"),
        ("torch._utils", "_rebuild_sparse_tensor"),
        ("torch._utils", "_rebuild_nested_tensor"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch._utils", "_rebuild_meta_tensor_no_storage"),
        ("torch._tensor", "_rebuild_from_type_v2"),
        ("torch._tensor", "_rebuild_from_type"),
        ("torch.serialization", "_get_layout"),
        ("torch.storage", "UntypedStorage"),
        ("torch.storage", "TypedStorage"),
        ("torch", "Size"),
        ("torch", "Tensor"),
        ("torch", "device"),
        ("torch", "dtype"),
        ("torch", "strided"),
        ("torch", "sparse_coo"),
        ("torch", "per_tensor_affine"),
        ("torch", "per_channel_affine"),
        ("torch.nn.parameter", "Parameter"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.dtypes", "Float32DType"),
        ("numpy.dtypes", "Float64DType"),
        ("numpy.dtypes", "Float16DType"),
        ("numpy.dtypes", "Int64DType"),
        ("numpy.dtypes", "Int32DType"),
        ("numpy.dtypes", "Int16DType"),
        ("numpy.dtypes", "Int8DType"),
        ("numpy.dtypes", "UInt8DType"),
        ("numpy.dtypes", "BoolDType"),
        ("numpy.dtypes", "ObjectDType"),
        ("joblib.numpy_pickle", "NumpyArrayWrapper"),
        ("_codecs", "encode"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        ("builtins", "int"),
        ("builtins", "float"),
        ("builtins", "complex"),
        ("builtins", "bool"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "str"),
        ("builtins", "slice"),
        ("builtins", "range"),
    ]
    + [("torch", name) for name in _TORCH_STORAGES]
    + [("torch", name) for name in _TORCH_DTYPES]
)

# --- the deny-list: what makes an import dangerous rather than merely unknown -------------------

#: Modules (and all their sub-modules) whose every callable is dangerous in a model file.
DANGEROUS_MODULES: frozenset[str] = frozenset(
    """
    os posix nt posixpath ntpath subprocess _posixsubprocess _winapi pty tty ctypes _ctypes
    socket _socket ssl http urllib urllib2 urllib3 requests httplib ftplib smtplib telnetlib
    imaplib nntplib poplib socketserver xmlrpc wsgiref webbrowser asyncio selectors
    shutil tempfile glob pathlib io _io fileinput filecmp zipfile tarfile gzip bz2 lzma
    shelve dbm sqlite3 mmap
    runpy code codeop compileall py_compile importlib imp zipimport pkgutil pydoc modulefinder
    pip ensurepip venv site sysconfig setuptools distutils pkg_resources
    sys builtins __builtin__ __builtins__ marshal pickle _pickle cPickle pickletools
    dill cloudpickle torch.serialization
    multiprocessing concurrent threading _thread signal resource faulthandler gc
    timeit profile cProfile pstats trace tracemalloc pdb bdb idlelib lib2to3 doctest unittest
    inspect types uuid platform commands popen2 logging
    ast dis tokenize linecache traceback warnings atexit weakref
    tkinter turtle turtledemo curses readline rlcompleter
    numpy.testing numpy.f2py numpy.distutils numpy.ctypeslib numpy.lib.format
    torch.hub torch.jit torch.utils.cpp_extension torch.package torch._dynamo torch._inductor
    torch.fx torch.distributed torch._C torch.ops torch._ops torch.backends torch.cuda
    jinja2 yaml
    """.split()
)

#: Attribute names that are dangerous in any module (indirection, execution, loading).
DANGEROUS_NAMES: frozenset[str] = frozenset(
    """
    system popen popen2 popen3 popen4 spawn spawnl spawnle spawnlp spawnv spawnve spawnvp
    execl execle execlp execv execve execvp execvpe fork forkpty startfile kill
    eval exec compile execfile __import__ import_module reload load_module getattr setattr
    delattr globals locals vars breakpoint input open __getattribute__ __getattr__
    __reduce__ __reduce_ex__ __class__ __globals__ __builtins__ __subclasses__ __dict__
    __code__ __closure__ __func__ __self__ __mro__ __bases__ __init_subclass__ __new__
    __setattr__ __setstate__ __call__
    loads load load_inline runstring run_path run_module call check_call check_output run
    Popen getoutput getstatusoutput attrgetter methodcaller resolve_name locate
    urlopen urlretrieve get_server_certificate create_connection FileHandler FileIO
    _get_command_stdout spawnv_passfds IMAP4_stream main
    """.split()
)

#: A dotted-name component that names a dangerous module (``pathlib`` + ``os.system``).
_DANGEROUS_COMPONENTS = frozenset(m for m in DANGEROUS_MODULES if "." not in m)


def remap_python2(module: str, name: str) -> tuple[str, str]:
    """Apply the unpickler's Python 2 -> 3 renaming (protocols 0-2 with ``fix_imports``)."""
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is not None:
        return mapped
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _module_prefixes(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


class Policy(NamedTuple):
    """Classifies imports; ``allow`` adds user-trusted names.

    An ``allow`` entry is ``module.name`` (exactly that global) or ``module.*`` (every global of
    that module and its sub-modules). Allowing never silences a *structural* finding (a BUILD on an
    imported object, a zip path traversal, ...), only import verdicts.
    """

    allow: frozenset[str] = frozenset()

    @classmethod
    def with_allowed(cls, entries: Iterable[str]) -> Policy:
        cleaned: set[str] = set()
        for entry in entries:
            text = entry.strip()
            if not text or text.startswith(".") or text.endswith(".") or " " in text:
                raise ValueError(f"--allow {entry!r}: expected module.name or module.*")
            cleaned.add(text)
        return cls(frozenset(cleaned))

    def _user_allowed(self, module: str, name: str) -> bool:
        if f"{module}.{name}" in self.allow:
            return True
        return any(f"{prefix}.*" in self.allow for prefix in _module_prefixes(module))

    def classify(self, module: str, name: str) -> Verdict:
        """The verdict for ``module`` + ``name`` as the unpickler would resolve them."""
        if (module, name) in SAFE_GLOBALS:
            return Verdict(Severity.CLEAN, "allow-listed")
        danger = _danger_reason(module, name)
        if danger is not None:
            return Verdict(Severity.DANGEROUS, danger)
        if self._user_allowed(module, name):
            return Verdict(Severity.CLEAN, "allowed by the caller")
        if not module or not name or not _looks_like_identifier_path(module, name):
            return Verdict(Severity.SUSPICIOUS, "malformed import name")
        return Verdict(Severity.SUSPICIOUS, "not on the allow-list")

    def classify_pickle_global(self, module: str, name: str, protocol: int) -> tuple[str, Verdict]:
        """Classify a pickle global, with Python 2 remapping; returns the effective name too.

        Exactly as ``_pickle.c`` does it: the remapping applies while the stream's current
        protocol (the last PROTO opcode seen) is below 3.
        """
        if protocol < 3:
            mapped_module, mapped_name = remap_python2(module, name)
            return f"{mapped_module}.{mapped_name}", self.classify(mapped_module, mapped_name)
        return f"{module}.{name}", self.classify(module, name)


def _looks_like_identifier_path(module: str, name: str) -> bool:
    return all(part.isidentifier() for part in module.split(".")) and all(
        part.isidentifier() for part in name.split(".")
    )


def _danger_reason(module: str, name: str) -> str | None:
    prefixes = _module_prefixes(module)
    for prefix in prefixes:
        if prefix in DANGEROUS_MODULES:
            return f"module {prefix} can run code or touch files, processes or the network"
    parts = name.split(".")
    if module in ("builtins", "__builtin__", "__builtins__"):
        return "builtins outside the allow-list (eval, exec, getattr, __import__, open, ...)"
    for part in parts:
        if part in DANGEROUS_NAMES:
            return f"{part!r} executes, loads or looks up code indirectly"
        if part.startswith("__") and part.endswith("__"):
            return f"dunder attribute {part!r} reaches interpreter internals"
    for part in parts[:-1]:
        if part in _DANGEROUS_COMPONENTS:
            return f"dotted name reaches module {part!r} through an attribute"
    return None


DEFAULT_POLICY = Policy()
