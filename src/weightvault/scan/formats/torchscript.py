"""TorchScript archives (``torch.jit.save``), judged the way ``torch.jit.load`` reads them.

``torch.jit.load`` never runs a Python unpickler or Python code. Its pickles (``data.pkl``,
``constants.pkl``, ``traced_inputs.pkl``, the ``.debug_pkl`` files) go through PyTorch's C++
unpickler (``torch/csrc/jit/serialization/unpickler.cpp``), which builds a fixed set of globals
natively (tensor, list and type-tag rebuilds, storages, devices, ``OrderedDict``, ``complex``)
and resolves every other name as a TorchScript class compiled from the archive's own ``code/``
folder (``__torch__.a.b.C`` -> ``code/__torch__/a/b.py``) or as a C++ custom class registered by
a loaded library. ``torch.load`` hands an archive to ``torch.jit.load`` when a record is named
exactly ``constants.pkl``; only then are the pickles' globals judged as the C++ unpickler sees
them (here), not as Python's (the pickle scanner's findings for those names are dropped). Any
other global keeps the pickle scanner's verdict.

The ``code/*.py`` files are TorchScript source: a Python-syntax language that ``torch.jit``
compiles and runs in its own interpreter, where a program can only call operators
(``torch.add``, ``ops.aten.*``, ``ops.prim.*``), TorchScript builtins and the archive's own
classes. They are parsed with Python's ``ast`` (serialized TorchScript is valid Python syntax)
and every operator they reach is judged:

* *dangerous*: operators that read or write files or reach the network (``aten::save``,
  ``aten::from_file``, ``prim::rpc_*`` and the distributed namespaces ``c10d``,
  ``_c10d_functional``, ``symm_mem``, found by reading every registered schema of PyTorch 2.13),
  Python builtins TorchScript does not have (``eval``, ``exec``, ``open``, ``__import__``, ...),
  imports, and Python introspection attributes (``__globals__``, ``__subclasses__``, ...) or
  ``getattr`` with a name that is not a constant: no TorchScript compiler emits them;
* *unknown*: operators and custom classes from namespaces outside PyTorch's core (code of a
  library outside the archive, e.g. ``torchvision``'s ``image::read_file``);
* everything else (core tensor operators, control flow, the archive's own classes) is safe.

Mobile archives (``_save_for_lite_interpreter``) also carry ``bytecode.pkl``, whose operator table
the lite interpreter runs instead of the code folder: every operator name it lists is judged by
the same rules.
"""

from __future__ import annotations

import ast
import re
import zlib
from typing import TYPE_CHECKING, BinaryIO

from weightvault.scan._engine import FileContext, join_location
from weightvault.scan.policy import Severity

if TYPE_CHECKING:
    from weightvault.scan.formats.zip_archive import TorchLayout
    from weightvault.scan.formats.zip_views import ZipMember

__all__ = ["CPP_UNPICKLER_GLOBALS", "judge_code", "judge_torchscript"]

#: Globals the C++ unpickler builds itself (``Unpickler::readGlobal``), never importing them.
CPP_UNPICKLER_GLOBALS = frozenset({
    "torch.jit._pickle.build_tensor_from_id", "torch.jit._pickle.restore_type_tag",
    "torch.jit._pickle.build_intlist", "torch.jit._pickle.build_tensorlist",
    "torch.jit._pickle.build_doublelist", "torch.jit._pickle.build_boollist",
    "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_qtensor",
    "torch._utils._rebuild_sparse_tensor", "torch._tensor._rebuild_from_type_v2",
    "builtins.complex", "collections.OrderedDict", "torch.device",
    "__main__.TensorID", "__main__.IntList",
})
#: ``torch.<X>Storage`` and the quantization schemes resolve to enum values, nothing is called.
_CPP_TORCH_ENUM = re.compile(
    r"torch\.(\w+Storage|per_tensor_affine|per_channel_affine|per_tensor_symmetric"
    r"|per_channel_symmetric|per_channel_affine_float_qparams)"
)
#: Pickles ``torch.jit.load`` reads with the C++ unpickler.
_JIT_PICKLES = (b"data.pkl", b"constants.pkl", b"traced_inputs.pkl")

#: Operator namespaces of PyTorch itself whose operators compute on tensors and values.
_CORE_NAMESPACES = frozenset({
    "aten", "prim", "prims", "quantized", "_quantized", "quantization", "sparse", "mkldnn",
    "mkldnn_prepacked", "onednn", "mkl", "rngprims", "debugprims", "inductor_prims",
    "profiler", "_native", "static_runtime",
})
#: Namespaces whose operators communicate with other processes or machines.
_NETWORK_NAMESPACES = frozenset({
    "c10d", "_c10d_functional", "_c10d_functional_autograd", "symm_mem", "_dtensor",
})
#: Core operators with side effects outside the process (from their registered schemas).
_FILE_OPERATORS = {"save": "writes a file", "from_file": "reads (or maps) a file"}
_NETWORK_OPERATORS = frozenset({"rpc_async", "rpc_sync", "rpc_remote"})
#: Core custom-class namespaces (packed quantized weights).
_CORE_CLASS_NAMESPACES = frozenset({"quantized"})
#: Python builtins that run code, import or touch files: TorchScript has none of them.
_PYTHON_ONLY_BUILTINS = frozenset({
    "eval", "exec", "compile", "open", "__import__", "globals", "locals", "vars", "setattr",
    "delattr", "breakpoint", "__builtins__", "__loader__", "__spec__",
})
#: Attributes through which Python code reaches interpreter internals.
_INTROSPECTION = frozenset({
    "__globals__", "__builtins__", "__subclasses__", "__class__", "__mro__", "__bases__",
    "__base__", "__dict__", "__code__", "__closure__", "__func__", "__self__", "__module__",
    "__import__", "__getattribute__", "__reduce__", "__reduce_ex__", "__init_subclass__",
    "__loader__", "__spec__", "__traceback__", "f_globals", "f_locals", "f_back", "gi_frame",
    "gi_code", "tb_frame", "co_code", "__getattr__", "__setattr__", "__delattr__",
})
_MAX_CODE_BYTES = 64 << 20


def _dotted(node: ast.expr) -> list[str] | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return parts[::-1]
    return None


class _CodeChecker(ast.NodeVisitor):
    """Collects one verdict per distinct subject of one code file."""

    def __init__(self, bound: set[str]) -> None:
        self.bound = bound
        self.verdicts: dict[str, tuple[Severity, str]] = {}

    def _add(self, severity: Severity, subject: str, message: str) -> None:
        known = self.verdicts.get(subject)
        if known is None or severity > known[0]:
            self.verdicts[subject] = (severity, message)

    def _operator(self, namespace: str, op: str, shown: str) -> None:
        if namespace in _NETWORK_NAMESPACES or (namespace == "prim" and op in _NETWORK_OPERATORS):
            self._add(Severity.DANGEROUS, shown,
                      f"TorchScript calls {namespace}::{op}, which communicates over the network")
        elif namespace in ("aten", "prim") and op in _FILE_OPERATORS:
            self._add(Severity.DANGEROUS, shown,
                      f"TorchScript calls {namespace}::{op}, which {_FILE_OPERATORS[op]}")
        elif namespace not in _CORE_NAMESPACES:
            self._add(Severity.UNKNOWN, shown,
                      f"TorchScript calls operator {namespace}::{op} from a library outside "
                      "PyTorch's core (native code outside the archive, not judged)")

    def _custom_class(self, namespace: str, shown: str) -> None:
        if namespace not in _CORE_CLASS_NAMESPACES:
            self._add(Severity.UNKNOWN, shown,
                      f"TorchScript uses custom class namespace {namespace!r} (native code "
                      "registered by a library outside the archive, not judged)")

    def _internal(self, attribute: str) -> None:
        self._add(Severity.DANGEROUS, attribute,
                  f"TorchScript source reaches Python internals through {attribute!r} "
                  "(no TorchScript compiler writes that: a crafted archive)")

    def visit_Import(self, node: ast.Import) -> None:
        self._add(Severity.DANGEROUS, "<import>",
                  "TorchScript source with an import statement (torch.jit never writes one)")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.visit_Import(ast.Import(names=[]))

    def visit_Name(self, node: ast.Name) -> None:
        if not isinstance(node.ctx, ast.Load) or node.id in self.bound:
            return
        if node.id in _PYTHON_ONLY_BUILTINS:
            self._add(Severity.DANGEROUS, node.id,
                      f"TorchScript source names the Python builtin {node.id!r}, which runs "
                      "code or touches files (not TorchScript: a crafted archive)")
        elif node.id in _INTROSPECTION:
            self._internal(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        parts = _dotted(node)
        if parts is None:  # an attribute of a computed value: ``(x).forward``, ``f().y``
            if node.attr in _INTROSPECTION:
                self._internal(node.attr)
            self.generic_visit(node)
            return
        for part in parts[1:]:
            if part in _INTROSPECTION:
                self._internal(part)
        root = parts[0]
        if root not in self.bound:
            shown = ".".join(parts)
            if root == "torch" and len(parts) >= 2:
                if parts[1] == "ops":
                    if len(parts) >= 4:
                        self._operator(parts[2], parts[3], shown)
                elif parts[1] == "classes":
                    if len(parts) >= 3:
                        self._custom_class(parts[2], shown)
                else:
                    self._operator("aten", parts[1], shown)
            elif root == "ops" and len(parts) >= 3:
                self._operator(parts[1], parts[2], shown)
            elif root == "__torch__" and parts[1:3] == ["torch", "classes"] and len(parts) >= 4:
                self._custom_class(parts[3], shown)
        self.visit_Name(ast.Name(id=root, ctx=ast.Load()))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Name) and func.id in ("getattr", "hasattr") and (
            func.id not in self.bound
        ):
            name = node.args[1] if len(node.args) >= 2 else None
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                self._add(Severity.DANGEROUS, func.id,
                          f"{func.id} with a computed attribute name (TorchScript only "
                          "accepts constant names: a crafted archive)")
            elif name.value.startswith("__") or name.value in _INTROSPECTION:
                self._internal(name.value)
        self.generic_visit(node)


def _bound_names(tree: ast.AST) -> set[str]:
    """Names the file assigns, takes as parameters or defines (they shadow builtins)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            bound.add(node.id)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            bound.add(node.name)
    return bound


def judge_code(source: bytes) -> tuple[dict[str, tuple[Severity, str]], list[str]]:
    """Verdicts for one TorchScript code file, and the names it defines at module level.

    Raises ``ValueError`` with a one-line reason when the source cannot be parsed.
    """
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError("TorchScript code is not UTF-8") from exc
    try:
        tree = ast.parse(text)
    except SyntaxError as exc:
        raise ValueError(f"TorchScript code does not parse: {exc.msg} (line {exc.lineno})"
                         ) from exc
    except (RecursionError, MemoryError, ValueError) as exc:
        raise ValueError("TorchScript code nested too deeply to parse") from exc
    try:
        checker = _CodeChecker(_bound_names(tree))
        checker.visit(tree)
    except RecursionError as exc:
        raise ValueError("TorchScript code nested too deeply to check") from exc
    defined = [
        node.name for node in tree.body
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    return checker.verdicts, defined


def _read_member(raw: BinaryIO, start: int, member: ZipMember) -> bytes | str:
    """A stored or deflated member's bytes (bounded), or a one-line reason it cannot be read."""
    from weightvault.scan._io import pread

    if member.file_size > _MAX_CODE_BYTES or member.compress_size > _MAX_CODE_BYTES:
        return "TorchScript code file over the size limit; not checked"
    header = pread(raw, 30, start + member.header_offset)
    if len(header) < 30 or header[:4] != b"PK\x03\x04":
        return "no local header"
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(
        header[28:30], "little")
    data = pread(raw, member.compress_size, start + member.header_offset + 30 + name_len
                  + extra_len)
    if len(data) != member.compress_size:
        return "member data cut off"
    if member.method == 0:
        return data
    if member.method == 8:
        try:
            decoder = zlib.decompressobj(-15)
            out = decoder.decompress(data, _MAX_CODE_BYTES + 1)
        except zlib.error as exc:
            return f"corrupt deflate data: {exc}"
        if len(out) > _MAX_CODE_BYTES:
            return "TorchScript code file over the size limit; not checked"
        return out
    return f"compression method {member.method} is not read by torch.jit.load"


#: An operator name as the lite interpreter's bytecode lists it: ``aten::add``.
_OPERATOR_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)::([A-Za-z_][A-Za-z0-9_]*)")


def _pickled_strings(data: bytes) -> set[str]:
    """Every short string a pickle stores with BINUNICODE or SHORT_BINUNICODE, found by their
    length prefixes (a superset: bytes that merely look like one are included)."""
    found: set[str] = set()
    for match in re.finditer(rb"X(.{4})|\x8c(.)", data, re.DOTALL):
        if match.group(1) is not None:
            length = int.from_bytes(match.group(1), "little")
        else:
            length = match.group(2)[0]
        if length > 256:
            continue
        text = data[match.end() : match.end() + length]
        try:
            found.add(text.decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return found


def _judge_bytecode(
    ctx: FileContext, raw: BinaryIO, start: int, member: ZipMember, location: str,
) -> None:
    """The lite interpreter (``_load_for_lite_interpreter``) runs ``bytecode.pkl``'s operator
    table, not the code folder: judge every operator it lists the same way."""
    data = _read_member(raw, start, member)
    if isinstance(data, str):
        ctx.error(location, data)
        return
    checker = _CodeChecker(set())
    for text in _pickled_strings(data):
        match = _OPERATOR_NAME.fullmatch(text)
        if match:
            checker._operator(match.group(1), match.group(2), text)
    for subject, (severity, message) in sorted(checker.verdicts.items()):
        ctx.find(severity, "code", subject, f"mobile bytecode: {message}", location)


def judge_torchscript(
    ctx: FileContext, raw: BinaryIO, start: int, layout: TorchLayout, location: str,
    per_member: list[tuple[bytes, int, int]],
) -> None:
    """Judge the code folder, then re-judge the pickles' globals as the C++ unpickler sees
    them (only where ``torch.load`` dispatches the archive to ``torch.jit.load``)."""
    defined: set[str] = set()
    for record, member in layout.records.items():
        if not (record.startswith(b"code/") and record.endswith(b".py")):
            continue
        member_loc = join_location(location, member.name)
        data = _read_member(raw, start, member)
        if isinstance(data, str):
            ctx.error(member_loc, data)
            continue
        try:
            verdicts, names = judge_code(data)
        except ValueError as exc:
            ctx.error(member_loc, str(exc))
            continue
        module = record[len(b"code/"):-3].decode("utf-8", "replace").replace("/", ".")
        defined.update(f"{module}.{name}" for name in names)
        for subject, (severity, message) in sorted(verdicts.items()):
            ctx.find(severity, "code", subject, message, member_loc)
    for record, member in layout.records.items():
        if record.lower() == b"bytecode.pkl":
            _judge_bytecode(ctx, raw, start, member, join_location(location, member.name))
    if not layout.torchscript:
        return
    jit_pickles = {layout.prefix + name for name in _JIT_PICKLES}
    drop: set[int] = set()
    for raw_name, first, last in per_member:
        if raw_name not in jit_pickles and not (
            raw_name.startswith(layout.prefix + b"code/") and raw_name.endswith(b".debug_pkl")
        ):
            continue
        for index in range(first, last):
            subject = ctx.findings[index].subject
            if (
                subject in CPP_UNPICKLER_GLOBALS or _CPP_TORCH_ENUM.fullmatch(subject)
                or subject in defined
                or subject.startswith("__torch__.torch.classes.quantized.")
            ):
                drop.add(index)
    if drop:
        ctx.findings[:] = [f for i, f in enumerate(ctx.findings) if i not in drop]
