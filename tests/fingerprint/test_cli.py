"""``weightvault fingerprint keygen | issue`` and ``weightvault trace``: the round trip, exit
codes, and one-line errors for bad input (never a traceback, never a partial output)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tests.fingerprint.models import KEY, state_of, tiny_bert

from weightvault.cli.app import run
from weightvault.fingerprint.keys import (
    FingerprintKey,
    create_fingerprint_key,
    keystream,
    load_fingerprint_key,
)


def _error(capsys: pytest.CaptureFixture[str], text: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: "), err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert text in err, err
    return err


@pytest.fixture
def world(tmp_path: Path) -> Path:
    model = tiny_bert()
    save_file(state_of(model), tmp_path / "model.safetensors")
    model.config.save_pretrained(tmp_path)  # heads come from config.json beside the model
    (tmp_path / "recipients.txt").write_text("# custody grantees\nalice\nbob\ncarol\n")
    assert run(["fingerprint", "keygen", "-o", str(tmp_path / "fp.key")]) == 0
    return tmp_path


def test_issue_then_trace(world: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, key = str(world / "model.safetensors"), str(world / "fp.key")
    capsys.readouterr()
    out = str(world / "bob.safetensors")
    assert run(["fingerprint", "issue", model, "-r", "bob", "-o", out, "-k", key, "--json"]) == 0
    issued = json.loads(capsys.readouterr().out)
    assert issued["permuted_groups"] == 6 and issued["fingerprint_id"].startswith("fp1-")
    code = run(
        ["trace", out, "-m", model, "-k", key, "--recipients", str(world / "recipients.txt")]
    )
    text = capsys.readouterr().out
    assert code == 0 and text.startswith("recipient bob: z = "), text
    assert "(corrected for 3 recipients)" in text
    code = run(["trace", model, "-m", model, "-k", key, "-r", "alice", "-r", "bob", "--json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["recipient"] is None and doc["candidates"] == 2


def test_bad_input_is_one_line_and_writes_nothing(
    world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, key = str(world / "model.safetensors"), str(world / "fp.key")
    out = world / "copy.safetensors"
    issue = ["fingerprint", "issue", model, "-r", "bob", "-o", str(out), "-k", key]
    capsys.readouterr()
    assert run([*issue[:-1], str(world / "missing.key")]) == 2
    _error(capsys, "no such fingerprint key")
    assert run([*issue, "--strength", "0.9"]) == 2
    _error(capsys, "--strength 0.9")
    assert run([*issue[:4], "", *issue[5:]]) == 2
    _error(capsys, "recipient id ''")
    (world / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    assert run(["fingerprint", "issue", str(world / "junk.safetensors"), *issue[3:]]) == 2
    _error(capsys, "junk.safetensors: header is not valid JSON")
    assert not out.exists() and not list(world.glob(".copy*"))
    assert run(issue) == 0 and run(issue) == 2
    _error(capsys, "already exists; pass --force")
    trace = ["trace", str(out), "-m", model, "-k", key]
    assert run(trace) == 2
    _error(capsys, "no candidate recipients")
    assert run([*trace, "-r", "bob", "-r", "bob"]) == 2
    _error(capsys, "listed twice")
    torch.save({"other.weight": torch.zeros(4, 4)}, world / "other.pt")
    assert run(["trace", str(world / "other.pt"), "-m", model, "-k", key, "-r", "bob"]) == 2
    _error(capsys, "shares no marked tensor")
    wrong = world / "wrong.key"
    wrong.write_text("not a key\n")
    wrong.chmod(0o600)
    assert run([*trace[:-1], str(wrong), "-r", "bob"]) == 2
    _error(capsys, "not a fingerprint key")


def test_key_files_are_secret_and_strict(tmp_path: Path) -> None:
    from weightvault.errors import KeyMaterialError

    key = create_fingerprint_key(tmp_path / "k", rng=lambda n: bytes(range(n)))
    assert os.stat(tmp_path / "k").st_mode & 0o777 == 0o600
    assert load_fingerprint_key(tmp_path / "k").secret == KEY.secret == key.secret
    (tmp_path / "k").chmod(0o644)
    with pytest.raises(KeyMaterialError, match="accessible by group or others"):
        load_fingerprint_key(tmp_path / "k")
    (tmp_path / "short").write_text("wvfpk1:AAAA\n")
    (tmp_path / "short").chmod(0o600)
    with pytest.raises(KeyMaterialError):
        load_fingerprint_key(tmp_path / "short")


def test_derivations_are_pinned() -> None:
    """Known answers: a change of derivation would silently orphan every issued mark."""
    assert KEY.fingerprint_id("alice") == "fp1-6a6205c5cbd1595038a407f6"
    assert keystream(bytes(32), 16).tobytes().hex() == "dc95c078a2408989ad48a21492842087"
    assert KEY.seed("alice", "robust", "w") != KEY.seed("alice", "robust", "w2")
    # length-prefixed fields: moving a character between fields changes the seed
    assert KEY.seed("ab", "robust", "c") != KEY.seed("a", "robust", "bc")
    assert FingerprintKey(bytes(32)).key_id() != KEY.key_id()


_MODULES_AFTER = (
    "import sys; from weightvault.cli import run; code = run(sys.argv[1:]); "
    "sys.stderr.write(' '.join(sorted(sys.modules))); sys.exit(code)"
)
"""The command line, then the names of every module it imported (``-X importtime`` does not see
the command modules, which the application imports through :mod:`importlib`)."""


@pytest.mark.parametrize(
    "argv", [["fingerprint", "--help"], ["fingerprint", "issue", "--help"], ["trace", "--help"]]
)
def test_help_imports_neither_torch_nor_numpy(argv: list[str]) -> None:
    """The commands and their help are built from Typer alone: PyTorch (seconds to import) and
    NumPy are imported inside the commands, when they run."""
    proc = subprocess.run(
        [sys.executable, "-c", _MODULES_AFTER, *argv],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0 and "Usage: weightvault" in proc.stdout, proc.stderr[-2000:]
    modules = set(proc.stderr.split())
    assert "weightvault.cli.fingerprint" in modules
    assert not {m.split(".")[0] for m in modules} & {"torch", "numpy", "safetensors", "scipy"}
