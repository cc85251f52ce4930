"""TorchScript archives: real torch.jit.save output is clean; code that reaches files, the
network or Python internals is dangerous; pickles are judged as torch.jit.load reads them."""

from __future__ import annotations

import io
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import torch

from weightvault.scan import Severity, scan_file
from weightvault.scan.formats.torchscript import judge_code


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.norm = torch.nn.BatchNorm2d(4)
        self.heads = torch.nn.ModuleList([torch.nn.Linear(4, 2) for _ in range(2)])
        self.names: list[str] = ["a", "b"]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3))
        outs: list[torch.Tensor] = []
        for head in self.heads:
            outs.append(head(x))
        label = "{}-{}".format(self.names[0], len(outs))  # noqa: UP032 - aten::format
        y = torch.cat(outs, 1) if label.startswith("a") else outs[0]
        if bias is not None:
            y = y + bias
        return torch.nn.functional.gelu(y)


def _save(module: torch.jit.ScriptModule | torch.jit.ScriptFunction, path: Path,
          **kwargs: object) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(module, str(path), **kwargs)  # type: ignore[arg-type]
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("torchscript")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = _Block().eval()
        quantized = torch.ao.quantization.quantize_dynamic(
            torch.nn.Sequential(torch.nn.Linear(4, 4)), {torch.nn.Linear}, dtype=torch.qint8)
        out = {
            "scripted": _save(torch.jit.script(block), root / "scripted.pt"),
            "traced": _save(torch.jit.trace(block, torch.ones(1, 3, 8, 8)), root / "traced.pt"),
            "lstm": _save(torch.jit.script(torch.nn.LSTM(4, 5)), root / "lstm.pt"),
            "transformer": _save(torch.jit.script(torch.nn.TransformerEncoderLayer(
                8, 2, 16, batch_first=True)), root / "transformer.pt"),
            "quantized": _save(torch.jit.script(quantized), root / "quantized.pt"),
            "extra-files": _save(torch.jit.script(block), root / "extra.pt",
                                 _extra_files={"meta.json": b'{"a": 1}'}),
        }
    return out


@pytest.mark.parametrize("name", ["scripted", "traced", "lstm", "transformer", "quantized",
                                  "extra-files"])
def test_real_torchscript_archives_are_clean(archives: dict[str, Path], name: str) -> None:
    result = scan_file(archives[name])
    assert result.format == "torchscript"
    assert (result.status, result.findings, result.errors) == ("safe", (), ()), result


def _with_code(source: Path, target: Path, edit: dict[str, str]) -> Path:
    """A copy of an archive with code files edited (old text -> new text)."""
    with zipfile.ZipFile(source) as archive:
        members = [(i.filename, archive.read(i)) for i in archive.infolist()]
    buffer = io.BytesIO()
    edited = 0
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members:
            if "/code/" in member and member.endswith(".py"):
                text = data.decode()
                for old, new in edit.items():
                    edited += old in text
                    text = text.replace(old, new)
                data = text.encode()
            archive.writestr(member, data)
    assert edited == len(edit), (edit, members)
    target.write_bytes(buffer.getvalue())
    return target


class _Tiny(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save(torch.jit.script(_Tiny()), tmp_path_factory.mktemp("tiny") / "tiny.pt")


RETURN = "return torch.add(x, 1)"


@pytest.mark.parametrize(("statement", "subject", "severity"), [
    ('_0 = torch.save(x, "/tmp/out")', "torch.save", Severity.DANGEROUS),
    ('_0 = ops.aten.from_file("/etc/passwd", False, 10)', "ops.aten.from_file",
     Severity.DANGEROUS),
    ("_0 = ops.prim.rpc_async(\"w\", torch.add, (x, x))", "ops.prim.rpc_async",
     Severity.DANGEROUS),
    ("_0 = ops.c10d.allreduce_([x], None, None, None)", "ops.c10d.allreduce_",
     Severity.DANGEROUS),
    ('_0 = ops.image.read_file("/etc/passwd")', "ops.image.read_file", Severity.UNKNOWN),
    ("_0 = torch.classes.myns.Loader()", "torch.classes.myns.Loader", Severity.UNKNOWN),
    ('_0 = eval("1")', "eval", Severity.DANGEROUS),
    ("_0 = x.__class__", "__class__", Severity.DANGEROUS),
    ("_0 = getattr(x, self.name)", "getattr", Severity.DANGEROUS),
    ('_0 = getattr(x, "__globals__")', "__globals__", Severity.DANGEROUS),
])
def test_code_reaching_outside_torchscript_is_reported(
    tiny: Path, tmp_path: Path, statement: str, subject: str, severity: Severity,
) -> None:
    path = _with_code(tiny, tmp_path / "edited.pt", {RETURN: f"{statement}\n    {RETURN}"})
    result = scan_file(path)
    found = {f.subject: f for f in result.findings}
    assert subject in found, result.findings
    assert found[subject].severity == severity and found[subject].kind == "code"
    assert result.max_severity == severity


def test_an_import_in_code_is_dangerous_and_unparseable_code_an_error(
    tiny: Path, tmp_path: Path,
) -> None:
    path = _with_code(tiny, tmp_path / "imp.pt", {"class _Tiny": "import os\nclass _Tiny"})
    assert scan_file(path).max_severity == Severity.DANGEROUS
    path = _with_code(tiny, tmp_path / "broken.pt", {RETURN: "return torch.add(x, 1"})
    result = scan_file(path)
    assert result.status != "safe" and "does not parse" in result.errors[0]


def test_file_writing_torchscript_really_writes_when_the_model_runs(
    tiny: Path, tmp_path: Path,
) -> None:
    """The judgement is about real behaviour: torch.jit.load compiles aten::save, and running
    the model writes the file (child process)."""
    marker = tmp_path / "marker"
    path = _with_code(tiny, tmp_path / "writer.pt",
                      {RETURN: f'_0 = torch.save(x, "{marker}")\n    {RETURN}'})
    assert scan_file(path).max_severity == Severity.DANGEROUS
    code = ("import sys, warnings, torch\nwarnings.simplefilter('ignore')\n"
            "torch.jit.load(sys.argv[1])(torch.ones(2))\n")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=120,
                   capture_output=True)
    assert marker.exists()


def _members(path: Path) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(path) as archive:
        return [(i.filename, archive.read(i)) for i in archive.infolist()]


def _rewrite(members: list[tuple[str, bytes]], target: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def test_pickles_are_judged_as_the_cpp_unpickler_only_when_torch_load_dispatches_to_jit(
    archives: dict[str, Path], tmp_path: Path,
) -> None:
    """torch.load hands an archive to torch.jit.load only when a record is named exactly
    'constants.pkl'. Renamed 'CONSTANTS.PKL', torch.load unpickles data.pkl in Python, where
    torch.jit._pickle and __torch__ globals are not the C++ unpickler's builtins."""
    members = _members(archives["scripted"])
    renamed = [(n.replace("constants.pkl", "CONSTANTS.PKL"), d) for n, d in members]
    result = scan_file(_rewrite(renamed, tmp_path / "renamed.pt"))
    assert result.format == "pytorch-zip"
    assert result.status != "safe"
    assert any(f.subject.startswith(("torch.jit._pickle", "__torch__")) for f in result.findings)


def test_a_python_payload_in_a_torchscript_pickle_is_still_reported(
    archives: dict[str, Path], tmp_path: Path,
) -> None:
    """Names outside the C++ unpickler's builtins keep the pickle scanner's verdict."""
    payload = b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00trueq\x00\x85R."
    members = [(n, payload if n.endswith("/constants.pkl") else d)
               for n, d in _members(archives["lstm"])]
    result = scan_file(_rewrite(members, tmp_path / "payload.pt"))
    assert result.max_severity == Severity.DANGEROUS
    assert any(f.subject.endswith("system") for f in result.findings)


def test_judge_code_names_defined_classes() -> None:
    verdicts, names = judge_code(b"class A(Module):\n  pass\ndef f(x: int) -> int:\n  return x\n")
    assert (verdicts, names) == ({}, ["A", "f"])


def test_mobile_bytecode_operators_are_judged(tmp_path: Path) -> None:
    """The lite interpreter runs bytecode.pkl's operator table, not the code folder."""
    path = tmp_path / "mobile.ptl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(_Tiny())._save_for_lite_interpreter(str(path))
    result = scan_file(path)
    assert (result.format, result.status, result.errors) == ("torchscript", "safe", ()), result
    add, save = b"X\t\x00\x00\x00aten::add", b"X\n\x00\x00\x00aten::save"
    members = _members(path)
    assert any(add in d for n, d in members if n.endswith("/bytecode.pkl"))
    edited = [(n, d.replace(add, save) if n.endswith("/bytecode.pkl") else d)
              for n, d in members]
    result = scan_file(_rewrite(edited, tmp_path / "evil.ptl"))
    found = {f.subject: f for f in result.findings}
    assert found["aten::save"].severity == Severity.DANGEROUS, result.findings
    assert "mobile bytecode" in found["aten::save"].message
