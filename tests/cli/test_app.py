"""The command-line shell: help, version, exit codes, one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from weightvault import __version__
from weightvault.cli.app import run


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"weightvault {__version__}"


def test_help_lists_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    out = capsys.readouterr().out
    assert "Exit codes" in out


def test_unknown_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_console_script_runs_without_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "weightvault", "--bogus-flag"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: ")


@pytest.mark.parametrize(
    "argv",
    [
        ["sign", "--help"],
        ["verify", "--help"],
        ["scan", "--help"],
        ["encrypt", "--help"],
        ["vault", "--help"],
        ["vault", "request", "--help"],
        ["tamper", "--help"],
        ["log", "--help"],
    ],
)
def test_a_command_run_alone_reads_as_in_the_whole_application(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``run`` builds only the invoked command's module; help and usage must not change."""
    import weightvault.cli.app as cli_app

    slim = cli_app._app_for(argv)
    assert slim is not cli_app.app  # the slim path is the one exercised
    assert run(argv) == 0
    slim_out = capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        cli_app.app(args=argv, prog_name="weightvault")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == slim_out


def test_whole_application_for_help_version_and_unknown_commands() -> None:
    import weightvault.cli.app as cli_app

    for argv in ([], ["--help"], ["--version"], ["no-such-command"], ["-x"]):
        assert cli_app._app_for(argv) is cli_app.app


def test_every_command_is_owned_by_one_module() -> None:
    """Two modules registering one name would make the slim application pick either."""
    import weightvault.cli.app as cli_app

    seen: dict[str, str] = {}
    for module in cli_app._MODULES:
        for name in cli_app._top_level_names(module):
            assert name not in seen, (name, seen.get(name), module.__name__)
            seen[name] = module.__name__
    assert {"sign", "verify", "digest", "scan", "convert", "encrypt", "serve", "vault"} <= set(seen)
