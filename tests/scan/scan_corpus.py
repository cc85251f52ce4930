"""The scanning corpus: benign files made by real libraries, malicious ones with harmless payloads.

Every payload that could run would create a marker file under ``<root>/markers/`` (touching a
file, nothing else), so a test can prove that scanning never executed anything. Shared by the
tests and by ``benchmarks/scanning.py`` (same corpus for every tool).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shlex
import struct
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "build_corpus"]


@dataclass(frozen=True)
class Sample:
    name: str
    path: Path
    malicious: bool
    expect: str
    """For malicious samples: ``dangerous``, ``suspicious`` (at least) or ``error`` (never clean);
    for benign ones: ``clean`` or ``not-dangerous``."""
    subject: str = ""
    """A substring expected in some finding's subject (malicious samples; ``a|b``: either)."""
    marker: Path | None = None
    """The file the payload would create if it ever ran."""
    note: str = ""
    loader: str = ""
    """The real loader that runs the payload (malicious) or reads the file (benign), proven by
    ``test_corpus_fires.py``; empty for the older samples."""
    inert_under: str = ""
    """For divergence samples: a reader under which the payload must *not* run."""
    category: str = ""
    """The class of attack (or of benign file) the sample stands for."""


# -- raw opcode helpers ---------------------------------------------------------------------------


def _bu(text: str) -> bytes:
    data = text.encode()
    return b"\x8c" + bytes([len(data)]) + data if len(data) < 256 else (
        b"X" + struct.pack("<I", len(data)) + data
    )


def _proto4_call(module: str, name: str, *args: str) -> bytes:
    body = _bu(module) + _bu(name) + b"\x93"
    body += b"(" + b"".join(_bu(a) for a in args) + b"tR"
    return b"\x80\x04" + body + b"."


class _Reduce:
    """Pickles as ``func(*args)`` without the pickling process ever calling ``func``."""

    def __init__(self, func: Callable[..., object], *args: object) -> None:
        self.func = func
        self.args = args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _touch(marker: Path) -> str:
    return f"touch {shlex.quote(str(marker))}"


def build_corpus(root: Path, *, only: set[str] | None = None) -> list[Sample]:
    """Write the corpus under ``root``; return its samples (``only`` limits which are made)."""
    root.mkdir(parents=True, exist_ok=True)
    markers = root / "markers"
    markers.mkdir(exist_ok=True)
    mal = root / "malicious"
    ben = root / "benign"
    mal.mkdir(exist_ok=True)
    ben.mkdir(exist_ok=True)
    samples: list[Sample] = []

    def want(name: str) -> bool:
        return only is None or name in only

    def add_mal(name: str, data: bytes, expect: str, subject: str, *, marker: bool = True,
                note: str = "") -> None:
        if not want(name):
            return
        path = mal / name
        path.write_bytes(data)
        samples.append(Sample(name, path, True, expect, subject,
                              markers / name if marker else None, note))

    def m(name: str) -> Path:
        return markers / name

    import os as _os

    # 1. Plain payloads in every protocol.
    for proto in (0, 1, 2, 4, 5):
        name = f"reduce_os_system_p{proto}.pkl"
        add_mal(name, pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=proto),
                "dangerous", "system")
    name = "subprocess_popen_newobj_ex.pkl"
    add_mal(name, b"\x80\x04" + _bu("subprocess") + _bu("Popen") + b"\x93"
            + b"(" + _bu("touch") + _bu(str(m(name))) + b"l\x85}\x92.", "dangerous", "Popen",
            note="NEWOBJ_EX with a dangerous class")
    name = "inst_opcode_p0.pkl"
    add_mal(name, b"(S'" + _touch(m(name)).encode() + b"'\nios\nsystem\n.", "dangerous", "system",
            note="INST (protocol 0 text)")
    name = "obj_opcode.pkl"
    add_mal(name, b"(cos\nsystem\nS'" + _touch(m(name)).encode() + b"'\no.", "dangerous",
            "system", note="OBJ opcode")
    # 2. Python 2 names remapped by the unpickler.
    name = "py2_builtin_eval.pkl"
    code = f"__import__('os').system({_touch(m(name))!r})"
    add_mal(name, b"\x80\x02c__builtin__\neval\n(X" + struct.pack("<I", len(code))
            + code.encode() + b"tR.", "dangerous", "eval", note="__builtin__ -> builtins")
    name = "py2_commands.pkl"
    add_mal(name, b"ccommands\ngetoutput\n(S'" + _touch(m(name)).encode() + b"'\ntR.",
            "dangerous", "getoutput", note="commands -> subprocess")
    # 3. STACK_GLOBAL operands through the memo and through text opcodes.
    name = "stack_global_memo.pkl"
    add_mal(name, b"\x80\x04" + _bu("os") + b"q\x00" + _bu("decoy") + b"0" + _bu("system")
            + b"q\x01" + b"0h\x00h\x01\x93(" + _bu(_touch(m(name))) + b"tR.", "dangerous",
            "system", note="module and name fetched from the memo")
    name = "stack_global_text_strings.pkl"
    add_mal(name, b"\x80\x04S'\\x6fs'\np0\nVsystem\np1\n0g0\ng1\n\x93(S'"
            + _touch(m(name)).encode() + b"'\ntR.", "dangerous", "system",
            note="STRING with escapes + UNICODE + text PUT/GET")
    name = "stack_global_binstring.pkl"
    add_mal(name, b"\x80\x04U\x02osU\x06system\x93(U" + bytes([len(_touch(m(name)))])
            + _touch(m(name)).encode() + b"tR.", "dangerous", "system")
    # 4. Name tricks.
    name = "dotted_pathlib_os_system.pkl"
    add_mal(name, _proto4_call("pathlib", "os.system", _touch(m(name))), "dangerous", "system")
    name = "dotted_harmless_module.pkl"
    add_mal(name, _proto4_call("mimetypes", "os.system", _touch(m(name))), "dangerous",
            "system", note="dotted name through a module nobody blocks")
    name = "eval_call_suffix.pkl"
    add_mal(name, _proto4_call("builtins", "eval.__call__",
                               f"__import__('os').system({_touch(m(name))!r})"),
            "dangerous", "eval")
    name = "posix_direct.pkl"
    add_mal(name, _proto4_call("posix", "system", _touch(m(name))), "dangerous", "system")
    # 5. Deny-list gaps of public scanners.
    stmt = "import os; os.system({!r})"
    name = "timeit_timeit.pkl"
    add_mal(name, _proto4_call("timeit", "timeit", "pass", stmt.format(_touch(m(name)))),
            "dangerous", "timeit", note="setup code runs once, 'pass' a million times")
    for name, module, func in (
        ("cprofile_run.pkl", "cProfile", "run"),
        ("profile_run.pkl", "profile", "run"),
        ("code_interact_exec.pkl", "code", "InteractiveInterpreter.runsource"),
        ("runpy_run_code.pkl", "runpy", "_run_code"),
    ):
        add_mal(name, _proto4_call(module, func, stmt.format(_touch(m(name)))), "dangerous",
                func.split(".")[-1])
    name = "uuid_get_command_stdout.pkl"
    add_mal(name, _proto4_call("uuid", "_get_command_stdout", "touch", str(m(name))),
            "dangerous", "_get_command_stdout")
    name = "io_fileio_create.pkl"
    add_mal(name, _proto4_call("_io", "FileIO", str(m(name)), "w"), "dangerous", "FileIO")
    name = "logging_filehandler.pkl"
    add_mal(name, _proto4_call("logging", "FileHandler", str(m(name))), "dangerous",
            "FileHandler")
    name = "pkgutil_resolve_name.pkl"
    add_mal(name, b"\x80\x04" + _bu("pkgutil") + _bu("resolve_name") + b"\x93"
            + _bu("os.system") + b"\x85R(" + _bu(_touch(m(name))) + b"tR.", "dangerous",
            "resolve_name", note="call of a call result")
    name = "pydoc_locate.pkl"
    add_mal(name, b"\x80\x04" + _bu("pydoc") + _bu("locate") + b"\x93" + _bu("os.system")
            + b"\x85R(" + _bu(_touch(m(name))) + b"tR.", "dangerous", "locate")
    name = "importlib_getattr.pkl"
    add_mal(name, b"\x80\x04" + _bu("builtins") + _bu("getattr") + b"\x93(" + _bu("importlib")
            + _bu("import_module") + b"\x93" + _bu("os") + b"\x85R" + _bu("system")
            + b"tR(" + _bu(_touch(m(name))) + b"tR.", "dangerous", "getattr")
    name = "operator_methodcaller.pkl"
    add_mal(name, b"\x80\x04" + _bu("operator") + _bu("methodcaller") + b"\x93(" + _bu("system")
            + _bu(_touch(m(name))) + b"tR(" + _bu("importlib") + _bu("import_module") + b"\x93"
            + _bu("os") + b"\x85Rt" + b"R.", "dangerous", "methodcaller")
    name = "numpy_runstring.pkl"
    add_mal(name, b"\x80\x04" + _bu("numpy.testing._private.utils") + _bu("runstring") + b"\x93("
            + _bu(stmt.format(_touch(m(name)))) + b"}tR.", "dangerous", "runstring")
    name = "torch_load_nested.pkl"
    add_mal(name, _proto4_call("torch.serialization", "load", "x.pt"), "dangerous", "load",
            marker=False)
    for name, module, func, args in (
        ("ssl_get_server_certificate.pkl", "ssl", "get_server_certificate", ("localhost",)),
        ("urllib_urlopen.pkl", "urllib.request", "urlopen", ("http://127.0.0.1:9/",)),
        ("webbrowser_open.pkl", "webbrowser", "open", ("http://127.0.0.1:9/",)),
        ("pip_main.pkl", "pip", "main", ("--version",)),
        ("ctypes_cdll.pkl", "ctypes", "CDLL", ("libc.so.6",)),
        ("pty_spawn.pkl", "pty", "spawn", ("true",)),
        ("posixsubprocess.pkl", "_posixsubprocess", "fork_exec", ("true",)),
        ("multiprocessing_spawnv.pkl", "multiprocessing.util", "spawnv_passfds", ("true",)),
        ("imaplib_stream.pkl", "imaplib", "IMAP4_stream", ("true",)),
        ("idlelib_run.pkl", "idlelib.pyshell", "main", ()),
        ("ensurepip_bootstrap.pkl", "ensurepip", "bootstrap", ()),
        ("shutil_rmtree.pkl", "shutil", "rmtree", ("/nonexistent",)),
        ("socket_connect.pkl", "socket", "create_connection", ("127.0.0.1",)),
        ("torch_hub_load.pkl", "torch.hub", "load", ("x", "y")),
    ):
        add_mal(name, _proto4_call(module, func, *args), "dangerous", func, marker=False)
    name = "unknown_module.pkl"
    add_mal(name, _proto4_call("evilpkg.loader", "Payload", "x"), "suspicious",
            "evilpkg.loader.Payload", marker=False, note="allow-list: unknown is suspicious")
    name = "ext_opcode.pkl"
    add_mal(name, b"\x80\x02\x82\x01)R.", "suspicious", "extension", marker=False)
    # 6. Parser divergence and broken streams.
    name = "payload_then_missing_memo.pkl"
    add_mal(name, _proto4_call("os", "system", _touch(m(name)))[:-1] + b"h\x63.", "dangerous",
            "system", note="payload runs, then the stream fails")
    name = "payload_then_bad_opcode.pkl"
    add_mal(name, _proto4_call("os", "system", _touch(m(name)))[:-1] + b"\xff", "dangerous",
            "system")
    name = "frame_short_declared.pkl"
    payload = _proto4_call("os", "system", _touch(m(name)))[2:]
    add_mal(name, b"\x80\x04\x95" + struct.pack("<Q", 3) + payload, "dangerous",
            "system|frame|FRAME",
            note="FRAME declares fewer bytes than follow; the C unpickler reads on (refused "
                 "for the payload or as a FRAME divergence)")
    name = "frame_in_middle.pkl"
    add_mal(name, b"\x80\x04" + _bu("os") + b"\x95" + struct.pack("<Q", 8) + _bu("system")
            + b"\x93(" + _bu(_touch(m(name))) + b"tR.", "dangerous", "system",
            note="a FRAME opcode between the STACK_GLOBAL operands")
    name = "build_on_global.pkl"
    add_mal(name, b"\x80\x04" + _bu("collections") + _bu("OrderedDict") + b"\x93}"
            + _bu("__reduce__") + _bu("x") + b"sb.", "dangerous", "OrderedDict", marker=False,
            note="BUILD on an imported class (monkey-patching)")
    name = "setitem_on_global.pkl"
    add_mal(name, b"\x80\x04" + _bu("os") + _bu("environ") + b"\x93" + _bu("LD_PRELOAD")
            + _bu("/tmp/x.so") + b"s.", "dangerous", "environ", marker=False)
    # 7. Nested pickles.
    inner = pickle.dumps(_Reduce(_os.system, _touch(m("nested_pickle_loads.pkl"))), protocol=4)
    name = "nested_pickle_loads.pkl"
    add_mal(name, b"\x80\x04" + _bu("pickle") + _bu("loads") + b"\x93C" + bytes([len(inner)])
            + inner + b"\x85R.", "dangerous", "loads")
    name = "nested_pickle_in_bytes.pkl"
    add_mal(name, pickle.dumps({"blob": pickle.dumps(_Reduce(_os.system, "true"), protocol=4)},
                               protocol=4), "dangerous", "system", marker=False,
            note="a pickle inside a byte string of a benign pickle")
    # 8. Disguised by extension.
    for name in ("disguised.safetensors", "disguised.bin", "disguised.json"):
        add_mal(name, pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=2),
                "dangerous", "system")

    import numpy as np
    import torch

    state = {"layer.weight": torch.randn(8, 4), "layer.bias": torch.zeros(8)}

    # 9. PyTorch zip checkpoints.
    def torch_bytes(obj: object, *, legacy: bool = False) -> bytes:
        buffer = io.BytesIO()
        torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
        return buffer.getvalue()

    name = "torch_zip_payload.pt"
    add_mal(name, torch_bytes({**state, "x": _Reduce(_os.system, _touch(m(name)))}),
            "dangerous", "system")
    name = "torch_zip_extra_member.pt"
    if want(name):
        data = torch_bytes(state)
        buffer = io.BytesIO(data)
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr("archive/extra/model.bin",
                             pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=2))
        add_mal(name, buffer.getvalue(), "dangerous", "system", note="pickle in a non-.pkl member")
    name = "torch_zip_pickle_in_storage.pt"
    if want(name):
        buffer = io.BytesIO(torch_bytes(state))
        with zipfile.ZipFile(buffer, "a") as archive:
            archive.writestr("archive/data/99",
                             pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=2))
        add_mal(name, buffer.getvalue(), "dangerous", "system")
    for name, patch in (
        ("torch_zip_name_mismatch.pt", "name"),
        ("torch_zip_encrypted_flag.pt", "encrypted"),
        ("torch_zip_bad_crc.pt", "crc"),
    ):
        if want(name):
            data = bytearray(torch_bytes({**state, "x": _Reduce(_os.system, _touch(m(name)))}))
            _patch_zip(data, "archive/data.pkl", patch)
            add_mal(name, bytes(data), "dangerous", "system")
    # 10. Legacy PyTorch with the payload in a later stacked pickle.
    name = "torch_legacy_payload_sysinfo.pt"
    if want(name):
        benign = torch_bytes(state, legacy=True)
        reader = io.BytesIO(benign)
        for _ in range(3):
            pickle.load(reader)  # our own benign file: magic, protocol, sys_info
        rest = benign[reader.tell():]
        data = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
                + pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=2) + rest)
        add_mal(name, data, "dangerous", "system", note="payload in pickle 3 of 5")
    name = "torch_legacy_payload_main.pt"
    add_mal(name, torch_bytes({**state, "x": _Reduce(_os.system, _touch(m(name)))}, legacy=True),
            "dangerous", "system")
    # 11. joblib, numpy.
    import joblib

    name = "joblib_payload.joblib"
    if want(name):
        path = mal / name
        joblib.dump({"a": np.arange(1000.0), "evil": _Reduce(_os.system, _touch(m(name))),
                     "b": np.ones((3, 5), dtype=np.int32)}, path)
        samples.append(Sample(name, path, True, "dangerous", "system", m(name)))
    name = "joblib_compressed_payload.joblib"
    if want(name):
        path = mal / name
        joblib.dump({"a": np.arange(100.0), "evil": _Reduce(_os.system, _touch(m(name)))}, path,
                    compress=3)
        samples.append(Sample(name, path, True, "dangerous", "system", m(name)))
    name = "npy_object_payload.npy"
    if want(name):
        path = mal / name
        np.save(path, np.array([1, _Reduce(_os.system, _touch(m(name)))], dtype=object),
                allow_pickle=True)
        samples.append(Sample(name, path, True, "dangerous", "system", m(name)))
    name = "npz_object_payload.npz"
    if want(name):
        path = mal / name
        np.savez(path, ok=np.arange(4), bad=np.array([_Reduce(_os.system, _touch(m(name)))],
                                                     dtype=object))
        samples.append(Sample(name, path, True, "dangerous", "system", m(name)))
    # 12. Archives.
    evil = pickle.dumps(_Reduce(_os.system, "true"), protocol=4)
    name = "zip_traversal.zip"
    if want(name):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("../../evil.txt", b"hello")
        add_mal(name, buffer.getvalue(), "dangerous", "evil.txt", marker=False)
    name = "zip_pickle_as_text.zip"
    if want(name):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("weights/readme.txt", evil)
        add_mal(name, buffer.getvalue(), "dangerous", "system", marker=False)
    name = "nested_zip.zip"
    if want(name):
        inner_buf = io.BytesIO()
        with zipfile.ZipFile(inner_buf, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model.pkl", evil)
        outer = io.BytesIO()
        with zipfile.ZipFile(outer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("inner.zip", inner_buf.getvalue())
        add_mal(name, outer.getvalue(), "dangerous", "system", marker=False)
    name = "tar_gz_payload.tar.gz"
    if want(name):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as archive:
            info = tarfile.TarInfo("model/pytorch_model.bin")
            info.size = len(evil)
            archive.addfile(info, io.BytesIO(evil))
        add_mal(name, gzip.compress(raw.getvalue()), "dangerous", "system", marker=False)
    name = "tar_symlink_escape.tar"
    if want(name):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as archive:
            info = tarfile.TarInfo("model/weights.bin")
            info.type = tarfile.SYMTYPE
            info.linkname = "../../../../etc/passwd"
            archive.addfile(info)
        add_mal(name, raw.getvalue(), "dangerous", "weights.bin", marker=False)
    name = "sevenzip_wrapped.7z"
    add_mal(name, b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\x00" * 24 + evil, "error", "",
            marker=False, note="unsupported container: an error, never clean")
    name = "gzip_pickle.pkl.gz"
    add_mal(name, gzip.compress(evil), "dangerous", "system", marker=False)
    # 12b. LZMA zip members (method 14) and real 7z archives (py7zr, the [scan] extra).
    name = "zip_lzma_payload.zip"
    if want(name):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_LZMA) as archive:
            archive.writestr("model.pkl", pickle.dumps(_Reduce(_os.system, _touch(m(name))),
                                                       protocol=4))
        add_mal(name, buffer.getvalue(), "dangerous", "system",
                note="zip compression method 14: scanners that skip LZMA members miss it")
    name = "torch_zip_lzma.pt"
    if want(name):
        data = torch_bytes({**state, "x": _Reduce(_os.system, _touch(m(name)))})
        add_mal(name, _repack_zip(data, zipfile.ZIP_LZMA), "dangerous", "system",
                note="a PyTorch checkpoint re-packed with LZMA members")
    name = "sevenzip_payload.7z"
    if want(name):
        add_mal(name, _sevenzip({"model/pytorch_model.bin": pickle.dumps(
            _Reduce(_os.system, _touch(m(name))), protocol=2)}), "dangerous", "system",
            note="a real 7z archive (LZMA2) holding a pickle")
    name = "sevenzip_bomb.7z"
    if want(name):
        add_mal(name, _sevenzip({"weights.bin": bytes(16 << 20)}), "suspicious",
                "<compression bomb>", marker=False,
                note="16 MiB of zeros in a few KB: over the compression-ratio limit")
    name = "sevenzip_traversal.7z"
    if want(name):
        add_mal(name, _sevenzip(
            {"xx/xx/evil.pkl": pickle.dumps(_Reduce(_os.system, _touch(m(name))), protocol=2)},
            rename={"xx/xx/evil.pkl": "../../evil.pkl"}), "dangerous", "evil.pkl",
            note="a member name that extracts outside the target folder")
    name = "sevenzip_corrupt.7z"
    if want(name):
        data = bytearray(_sevenzip({"model.pkl": evil}))
        (packed_size,) = struct.unpack_from("<Q", data, 12)  # the header follows the packed data
        data[32 + packed_size // 2] ^= 0xFF
        add_mal(name, bytes(data), "error", "", marker=False,
                note="packed data corrupted: an error, never clean")
    name = "sevenzip_encrypted.7z"
    if want(name):
        add_mal(name, _sevenzip({"model.pkl": pickle.dumps(
            _Reduce(_os.system, _touch(m(name))), protocol=2)}, password="secret"), "error", "",
            note="encrypted members cannot be scanned: an error, never clean")
    # 13. Keras, ONNX, GGUF.
    lam = {"class_name": "Lambda", "config": {"name": "l", "function": {
        "class_name": "__lambda__", "config": {"code": "4wEAAAAAAAAA"}}}}
    keras_config = {"class_name": "Functional", "module": "keras", "config": {"layers": [lam]}}
    name = "keras_lambda.keras"
    if want(name):
        add_mal(name, _keras_zip(keras_config), "dangerous", "Lambda", marker=False)
    name = "keras_function_module.keras"
    if want(name):
        cfg = {"class_name": "Sequential", "module": "keras", "config": {"layers": [
            {"class_name": "Activation", "module": "keras.layers", "config": {"activation": {
                "module": "os", "class_name": "function", "config": "system"}}}]}}
        add_mal(name, _keras_zip(cfg), "dangerous", "os.system", marker=False)
    name = "keras_lambda_legacy.h5"
    if want(name):
        import h5py

        path = mal / name
        with h5py.File(path, "w") as h5:
            h5.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
                "layers": [{"class_name": "Lambda", "config": {
                    "function": ["4wEAAAAA", None, None], "function_type": "lambda"}}]}})
            h5.create_dataset("w", data=np.zeros(4))
        samples.append(Sample(name, path, True, "dangerous", "Lambda"))
    name = "onnx_external_traversal.onnx"
    if want(name):
        add_mal(name, _onnx_model(external="../../../../etc/passwd"), "dangerous",
                "external-data", marker=False)
    name = "onnx_custom_domain.onnx"
    if want(name):
        add_mal(name, _onnx_model(domain="com.evil.ops"), "suspicious", "com.evil.ops",
                marker=False)
    name = "gguf_template_injection.gguf"
    if want(name):
        path = mal / name
        _gguf(path, template="{{ ''.__class__.__mro__[1].__subclasses__() }}")
        samples.append(Sample(name, path, True, "dangerous", "chat_template"))

    # -- benign ---------------------------------------------------------------------------------
    def add_ben(name: str, writer: Callable[[Path], object], expect: str = "clean") -> None:
        if not want(name):
            return
        path = ben / name
        writer(path)
        samples.append(Sample(name, path, False, expect))

    add_ben("state_dict.pt", lambda p: torch.save(state, p))
    add_ben("state_dict_legacy.pt",
            lambda p: torch.save(state, p, _use_new_zipfile_serialization=False))
    add_ben("checkpoint.pth", lambda p: torch.save({
        "model": state, "epoch": 3, "lr": 0.1, "optimizer": {"state": {}, "param_groups": [
            {"lr": 0.1, "params": [0, 1]}]}, "dtypes": [torch.float16, torch.bfloat16],
        "half": torch.ones(3, dtype=torch.float16), "bf": torch.ones(2, dtype=torch.bfloat16),
        "ints": torch.arange(5), "bools": torch.tensor([True, False]),
    }, p))
    add_ben("pytorch_model.bin", lambda p: torch.save(state, p))
    add_ben("array.npy", lambda p: np.save(p, np.arange(12.0).reshape(3, 4)))
    add_ben("structured.npy", lambda p: np.save(p, np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])))
    add_ben("arrays.npz", lambda p: np.savez_compressed(p, a=np.arange(5), b=np.ones((2, 2))))
    for proto in (2, 4, 5):
        add_ben(f"numpy_arrays_p{proto}.pkl", lambda p, pr=proto: p.write_bytes(pickle.dumps(
            {"w": np.arange(100, dtype=np.float32), "i": np.int64(3), "s": "text"}, protocol=pr)))
    add_ben("plain_data_p0.pkl", lambda p: p.write_bytes(pickle.dumps(
        {"a": [1, 2.5, "x", None, True], "b": (1, 2), "c": {3, 4}, "d": b"bytes"}, protocol=0)))
    add_ben("arrays.joblib", lambda p: joblib.dump({"a": np.arange(1000.0), "b": np.ones(
        (4, 4), dtype=np.int8), "s": np.array(["ab", "c"])}, p))
    add_ben("arrays_compressed.joblib", lambda p: joblib.dump({"a": np.arange(1000.0)}, p,
                                                              compress=3))

    def sklearn_model(path: Path) -> None:
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression().fit(np.random.default_rng(0).normal(size=(20, 3)),
                                         np.arange(20) % 2)
        joblib.dump(model, path)

    add_ben("sklearn_logreg.joblib", sklearn_model, "not-dangerous")

    def safetensors_file(path: Path) -> None:
        from safetensors.numpy import save_file

        save_file({"w": np.ones((3, 3), dtype=np.float32), "b": np.arange(4, dtype=np.int64)},
                  str(path), metadata={"format": "np"})

    add_ben("model.safetensors", safetensors_file)
    add_ben("model.gguf", lambda p: _gguf(p, template="{% for m in messages %}{{ m.content }}"
                                                       "{% endfor %}"))
    add_ben("model.onnx", lambda p: p.write_bytes(_onnx_model(external="weights.bin")))
    add_ben("model.keras", lambda p: p.write_bytes(_keras_zip({
        "class_name": "Sequential", "module": "keras", "config": {"layers": [
            {"class_name": "Dense", "module": "keras.layers", "config": {"units": 2},
             "registered_name": None}]}})))

    def legacy_h5(path: Path) -> None:
        import h5py

        with h5py.File(path, "w") as h5:
            h5.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": {
                "layers": [{"class_name": "Dense", "config": {"units": 2}}]}})
            h5.create_dataset("w", data=np.zeros(4))

    add_ben("model_legacy.h5", legacy_h5)
    add_ben("config.json", lambda p: p.write_text(json.dumps({"hidden_size": 8})))
    add_ben("README.md", lambda p: p.write_text("# model\n(c) 2024 someone\n"))
    add_ben("LICENSE", lambda p: p.write_text("(c) 2024 Example Corp\nAll rights reserved.\n"))

    def tar_gz(path: Path) -> None:
        inner = io.BytesIO()
        torch.save(state, inner)
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as archive:
            info = tarfile.TarInfo("model/pytorch_model.bin")
            info.size = len(inner.getvalue())
            archive.addfile(info, io.BytesIO(inner.getvalue()))
        path.write_bytes(raw.getvalue())

    add_ben("model.tar.gz", tar_gz)

    def bundle_7z(path: Path) -> None:
        from safetensors.numpy import save

        npy = io.BytesIO()
        np.save(npy, np.arange(12.0).reshape(3, 4))
        path.write_bytes(_sevenzip({
            "model/model.safetensors": save({"w": np.ones((3, 3), dtype=np.float32)}),
            "model/stats.npy": npy.getvalue(),
        }))

    add_ben("model_bundle.7z", bundle_7z)

    def npz_lzma(path: Path) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, a=np.arange(5), b=np.ones((2, 2)))
        path.write_bytes(_repack_zip(buffer.getvalue(), zipfile.ZIP_LZMA))

    add_ben("arrays_lzma.npz", npz_lzma)

    # Issue 12: one malicious sample per class of bypass, benign files of mainstream libraries.
    from corpus_benign import build_benign
    from corpus_malicious import build_malicious

    samples += build_malicious(root, only)
    samples += build_benign(root, only)
    return samples


def _patch_zip(data: bytearray, member: str, patch: str) -> None:
    """Patch one member's headers in place: rename locally, set the encrypted bit, or break CRC."""
    encoded = member.encode()
    local = data.find(b"PK\x03\x04" + b"", 0)
    while local >= 0:
        name_len = struct.unpack_from("<H", data, local + 26)[0]
        if bytes(data[local + 30: local + 30 + name_len]) == encoded:
            break
        local = data.find(b"PK\x03\x04", local + 4)
    central = data.find(b"PK\x01\x02")
    while central >= 0:
        name_len = struct.unpack_from("<H", data, central + 28)[0]
        if bytes(data[central + 46: central + 46 + name_len]) == encoded:
            break
        central = data.find(b"PK\x01\x02", central + 4)
    assert local >= 0 and central >= 0
    if patch == "name":
        data[local + 30 + len(encoded) - 1] = ord("X")
    elif patch == "encrypted":
        data[local + 6] |= 1
        data[central + 8] |= 1
    elif patch == "crc":
        for offset in (local + 14, central + 16):
            data[offset] ^= 0xFF


def _repack_zip(data: bytes, method: int) -> bytes:
    """The same zip with every member re-compressed with ``method`` (e.g. ``ZIP_LZMA``)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", method) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
    return out.getvalue()


def _sevenzip(members: dict[str, bytes], *, password: str | None = None,
              rename: dict[str, str] | None = None) -> bytes:
    """A 7z archive made by py7zr; ``rename`` patches member names afterwards (same length),
    for names py7zr refuses to write (``..``), fixing both header CRCs."""
    import zlib

    import py7zr

    buffer = io.BytesIO()
    with py7zr.SevenZipFile(buffer, "w", password=password) as archive:
        if rename:
            archive.set_encoded_header_mode(False)  # names stored in clear, patchable
        for name, data in members.items():
            archive.writestr(data, name)
    if not rename:
        return buffer.getvalue()
    out = bytearray(buffer.getvalue())
    for old, new in rename.items():
        old_raw, new_raw = old.encode("utf-16-le"), new.encode("utf-16-le")
        assert len(old_raw) == len(new_raw)
        at = out.index(old_raw)
        out[at: at + len(old_raw)] = new_raw
    next_offset, next_size = struct.unpack_from("<QQ", out, 12)
    header = bytes(out[32 + next_offset: 32 + next_offset + next_size])
    struct.pack_into("<I", out, 28, zlib.crc32(header))
    struct.pack_into("<I", out, 8, zlib.crc32(bytes(out[12:32])))
    return bytes(out)


def _keras_zip(config: dict[str, object]) -> bytes:
    import h5py
    import numpy as np

    weights = io.BytesIO()
    with h5py.File(weights, "w") as h5:
        h5.create_dataset("layers/dense/vars/0", data=np.zeros((2, 2)))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", weights.getvalue())
    return buffer.getvalue()


def _onnx_model(*, external: str | None = None, domain: str | None = None) -> bytes:
    from onnx import TensorProto, helper

    node = helper.make_node("Identity", ["x"], ["y"],
                            domain=domain or "")
    init = TensorProto()
    init.name = "w"
    init.data_type = TensorProto.FLOAT
    init.dims.extend([4])
    if external:
        init.data_location = TensorProto.EXTERNAL
        for key, value in (("location", external), ("offset", "0"), ("length", "16")):
            entry = init.external_data.add()
            entry.key = key
            entry.value = value
    else:
        init.raw_data = b"\x00" * 16
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[init],
    )
    opsets = [helper.make_opsetid("", 17)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets)
    return bytes(model.SerializeToString())


def _gguf(path: Path, *, template: str) -> None:
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_chat_template(template)
    writer.add_tensor("w", np.zeros((4, 32), dtype=np.float32))
    writer.add_tensor("b", np.ones(32, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_hf_tokenizer(folder: Path, *, chat_template: object = None,
                       jinja: str | None = None, jinja_name: str = "chat_template.jinja") -> None:
    """A tiny Hugging Face tokenizer folder that ``AutoTokenizer.from_pretrained`` loads
    (``tokenizer.json`` from the ``tokenizers`` library, a ``tokenizer_config.json``), with its
    chat template in the config (``chat_template``: a string or a list of ``{"name",
    "template"}``) or in a ``.jinja`` file beside it. Written without importing transformers."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "hello": 3, "weather": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()  # type: ignore[assignment]
    tokenizer.save(str(folder / "tokenizer.json"))
    config: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast",
                                 "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                 "model_max_length": 128}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    if jinja is not None:
        (folder / jinja_name).write_text(jinja)


if __name__ == "__main__":  # pragma: no cover - manual use
    import sys

    for sample in build_corpus(Path(sys.argv[1])):
        print(("MAL " if sample.malicious else "BEN ") + sample.name, os.path.getsize(sample.path))
