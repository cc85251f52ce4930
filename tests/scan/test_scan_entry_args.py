"""``weightvault scan``'s own parser: after ``--`` every argument is a path, as click reads it.

The console script parses ``scan`` command lines itself (:func:`weightvault.cli.scan.parse`); it
must not drop a path that looks like an option, nor answer a path named ``-h`` with its help and
exit 0 (a file it never scanned would pass a CI gate).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from weightvault.cli import run
from weightvault.cli.scan import parse

EVIL = b"\x80\x04\x8c\x02os\x8c\x06system\x93."  # imports os.system, calls nothing


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clean.pkl").write_bytes(b"\x80\x04K\x01.")
    for name in ("--json", "-h", "--help", "-v", "--", "-1"):
        (tmp_path / name).write_bytes(EVIL)
    return tmp_path


@pytest.mark.parametrize(
    ("argv", "paths"),
    [
        (["--", "clean.pkl", "--json"], ["clean.pkl", "--json"]),
        (["clean.pkl", "--", "--json", "-v"], ["clean.pkl", "--json", "-v"]),
        (["--json", "--", "-1", "--json"], ["-1", "--json"]),
        (["--", "-h"], ["-h"]),
        (["--", "--help"], ["--help"]),
        (["--", "clean.pkl", "--"], ["clean.pkl", "--"]),
        (["-v", "clean.pkl", "--", "-1"], ["clean.pkl", "-1"]),
    ],
)
def test_everything_after_double_dash_is_a_path(
    folder: Path, argv: list[str], paths: list[str]
) -> None:
    options = parse(argv)
    assert options is not None and options.paths == paths


@pytest.mark.parametrize(
    "argv",
    [
        ["--", "clean.pkl", "--json"],
        ["--", "-h"],
        ["--", "--help"],
        ["clean.pkl", "--", "-v"],
        ["--", "clean.pkl", "--"],
    ],
)
def test_a_path_after_double_dash_is_scanned(
    folder: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["scan", *argv]) == 1  # the file named like an option imports os.system
    assert "os.system" in capsys.readouterr().out


def test_option_like_path_before_double_dash_is_still_refused(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse(["-1", "--", "clean.pkl"]) is None  # click words the usage error
    assert run(["scan", "-1", "--", "clean.pkl"]) == 2
    assert capsys.readouterr().err == "error: No such option '-1'. (see --help)\n"
