"""Text that comes from the files being checked prints exactly as written.

File names and import names are chosen by whoever made the model. Rich markup in them
(``[conceal]`` hides text on a terminal, ``[/]`` used to crash the table) or emoji codes
(``:white_check_mark:``) must never restyle, hide or replace part of a report.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from tests.keyfiles import write_ec_key_pair

from weightvault.cli import run as console_run
from weightvault.cli.app import run

TRICKY_NAMES = [  # file names cannot hold "/", so "[/]" is tried in import names below
    "ok:white_check_mark:.bin",
    "[conceal]hidden.bin",
    "[bold red]styled.bin",
    "[link=https:example.com]linked.bin",
]
TRICKY_MODULES = ["[conceal]posix", "[/]posix", "os:skull:"]


def _global_pickle(module: str, name: str) -> bytes:
    """A protocol-2 pickle that imports ``module.name`` and calls it (never loaded here)."""
    text = f"c{module}\n{name}\n".encode()
    return b"\x80\x02" + text + b")R."


@pytest.mark.parametrize("entry", ["typer", "lean"])
def test_scan_report_shows_names_and_imports_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    import weightvault.cli._ui as ui

    monkeypatch.setenv("COLUMNS", "400")  # wide enough that no table cell is folded
    monkeypatch.setattr(ui, "_consoles", {})
    for name in TRICKY_NAMES:
        (tmp_path / name).write_bytes(_global_pickle("os", "system"))
    for index, module in enumerate(TRICKY_MODULES):  # imports an attacker would hide
        (tmp_path / f"import-{index}.pkl").write_bytes(_global_pickle(module, "system"))
    (tmp_path / "fine.pkl").write_bytes(pickle.dumps({"w": [1, 2]}, protocol=4))
    argv = ["scan", str(tmp_path), "-v"]
    code = run(argv) if entry == "typer" else console_run(argv)
    assert code == 1
    out = capsys.readouterr().out
    for name in TRICKY_NAMES:
        assert name in out, (name, out)
    for module in TRICKY_MODULES:
        assert f"{module}.system" in out, (module, out)
    assert "✅" not in out and "💀" not in out


def test_verify_report_shows_file_names_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = write_ec_key_pair(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    for name in TRICKY_NAMES:
        (model / name).write_bytes(b"weights")
    assert run(["sign", str(model), "--key", str(private)]) == 0
    capsys.readouterr()
    for name in TRICKY_NAMES:
        (model / name).write_bytes(b"tampered")
    assert run(["verify", str(model), "--key", str(public)]) == 1
    out = capsys.readouterr().out
    assert sorted(out.splitlines()) == sorted(f"changed: {name}" for name in TRICKY_NAMES)


CONTROL_NAMES = {  # name on disk -> how it must be shown
    "ok\x1b[8mhidden\x1b[0m.bin": "ok\\x1b[8mhidden\\x1b[0m.bin",
    "erase\x1b[1A\x1b[2K.bin": "erase\\x1b[1A\\x1b[2K.bin",
    "back\rspace.bin": "back\\x0dspace.bin",
    "model\u202egnp.pt": "model\\u202egnp.pt",
    "bell\x07\x9b.bin": "bell\\x07\\x9b.bin",
}
RAW_CONTROLS = ("\x1b", "\r", "\u202e", "\x07", "\x9b")


def _assert_no_raw_controls(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, (char, text)


@pytest.mark.parametrize("entry", ["typer", "lean"])
def test_control_characters_in_names_are_shown_not_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    import weightvault.cli._ui as ui

    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setattr(ui, "_consoles", {})
    for name in CONTROL_NAMES:
        (tmp_path / name).write_bytes(_global_pickle("os", "system"))
    argv = ["scan", str(tmp_path)]
    assert (run(argv) if entry == "typer" else console_run(argv)) == 1
    captured = capsys.readouterr()
    _assert_no_raw_controls(captured.out + captured.err)
    for shown in CONTROL_NAMES.values():
        assert shown in captured.out, (shown, captured.out)


def test_control_characters_in_verify_and_error_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = write_ec_key_pair(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    for name in CONTROL_NAMES:
        (model / name).write_bytes(b"weights")
    assert run(["sign", str(model), "--key", str(private)]) == 0
    signed = capsys.readouterr()
    _assert_no_raw_controls(signed.out + signed.err)
    for name in CONTROL_NAMES:
        (model / name).write_bytes(b"tampered")
    assert run(["verify", str(model), "--key", str(public)]) == 1
    captured = capsys.readouterr()
    _assert_no_raw_controls(captured.out + captured.err)
    assert sorted(captured.out.splitlines()) == sorted(
        f"changed: {shown}" for shown in CONTROL_NAMES.values()
    )
    assert len(captured.err.strip().splitlines()) == 1  # still one line

    missing = tmp_path / "no\x1b[2Jsuch\nmodel"
    assert run(["verify", str(missing), "--key", str(public)]) == 2
    err = capsys.readouterr().err
    _assert_no_raw_controls(err)
    assert len(err.strip().splitlines()) == 1
    assert "no\\x1b[2Jsuch" in err
