"""The error translation layer: OS errors become exit 2 naming the path and the option that gave
it; library remedies become hints in the command line's words; exit 3 is kept for bugs.

The real failures (read-only mounts, a full disk, a busy port) for every command are in
``tests/test_failures.py``; these tests pin the wording and the rules.
"""

from __future__ import annotations

import ast
import errno
import os
import pickle
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from tests.paths import REPO

from weightvault.cli._exit import REMEDY_HINTS, message_for, report_exception
from weightvault.cli.app import run
from weightvault.errors import REMEDIES, FileSystemError, InputError, UsageError


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    ("code", "writing", "expected"),
    [
        (errno.EROFS, True, "output folder is read-only: /x/out"),
        (errno.ENOSPC, True, "no space left on device while writing /x/out/model.sig"),
        (errno.EACCES, True, "permission denied writing /x/out/model.sig"),
        (errno.EACCES, False, "permission denied reading /x/out/model.sig"),
        (errno.ENOENT, False, "no such file or folder: /x/out/model.sig"),
        (errno.ENOENT, True, "folder does not exist: /x/out"),
        (errno.EISDIR, False, "is a folder, expected a file: /x/out/model.sig"),
        (errno.ENOTDIR, False, "not a folder (a part of the path is a file): /x/out/model.sig"),
        (errno.EMFILE, False, "too many open files (opening /x/out/model.sig)"),
        (errno.EIO, False, "input/output error: /x/out/model.sig"),
    ],
)
def test_os_errors_are_described_with_their_path(code: int, writing: bool, expected: str) -> None:
    error = FileSystemError.from_os_error(
        OSError(code, os.strerror(code), "/x/out/model.sig"), writing=writing
    )
    assert error.message == expected
    assert error.exit_code == 2
    assert error.path == "/x/out/model.sig" and error.errno == code


def test_a_temporary_name_is_shown_as_the_file_the_user_named() -> None:
    error = FileSystemError.from_os_error(
        OSError(errno.ENOSPC, "No space left on device", "/x/.model.sig.wvtmp-0a1b2c3d4e5f")
    )
    assert error.message == "no space left on device while writing /x/model.sig"


@pytest.mark.parametrize(
    ("argv", "path", "code", "hint"),
    [
        (["sign", "m", "--signature", "/x/out/m.sig"], "/x/out/m.sig", errno.ENOSPC, "--signature"),
        (["encrypt", "m", "-o", "/x/out/m.wvenc"], "/x/out/m.wvenc/w.wvenc", errno.ENOSPC, "-o"),
        (["encrypt", "m", "--output=/x/out/e"], "/x/out", errno.EROFS, "--output"),
        (["log", "export", "/x/l.db", "--out", "/x/out/e.json"], "/x/out", errno.EROFS, "--out"),
    ],
)
def test_the_hint_names_the_option_that_gave_the_path(
    argv: list[str], path: str, code: int, hint: str
) -> None:
    error = FileSystemError.from_os_error(OSError(code, os.strerror(code), path), writing=True)
    options = {"--signature", "-o", "--output", "--out", "--key"}
    line = message_for(error, argv, lambda: options)
    assert line.endswith(f"; choose another with {hint}"), line


def test_an_input_path_is_checked_not_replaced_and_flags_are_never_taken_for_options() -> None:
    missing = FileSystemError.from_os_error(OSError(errno.ENOENT, "x", "/in/key.pem"))
    line = message_for(missing, ["sign", "m", "--key", "/in/key.pem"], lambda: {"--key"})
    assert line == "no such file or folder: /in/key.pem; check --key"
    # "--force" takes no value: the path after it is a positional argument, not its value.
    line = message_for(missing, ["x", "--force", "/in/key.pem"], lambda: {"--key"})
    assert line == "no such file or folder: /in/key.pem"


def test_every_remedy_has_words_on_the_command_line() -> None:
    assert set(REMEDY_HINTS) == set(REMEDIES)
    with pytest.raises(ValueError, match="unknown remedy"):
        InputError("x", remedy="no-such-remedy")
    error = InputError("/x: already exists", hint="allow overwriting it", remedy="overwrite")
    assert error.one_line() == "/x: already exists; allow overwriting it"  # library words
    assert message_for(error) == "/x: already exists; pass --force to overwrite it"


def test_errors_keep_their_attributes_across_processes() -> None:
    error = FileSystemError.from_os_error(OSError(errno.ENOSPC, "full", "/x/y"), writing=True)
    back = pickle.loads(pickle.dumps(error))
    assert (type(back), back.message, back.path, back.errno, back.writing, back.hint) == (
        FileSystemError,
        error.message,
        "/x/y",
        errno.ENOSPC,
        True,
        error.hint,
    )
    usage = pickle.loads(pickle.dumps(UsageError("bad", remedy="recipient")))
    assert usage.remedy == "recipient" and usage.message == "bad"


def test_an_os_error_behind_another_exception_is_still_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    try:
        try:
            raise OSError(errno.EROFS, "Read-only file system", "/ro/out/x")
        except OSError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as outer:
        assert report_exception(outer, ["cmd", "-o", "/ro/out/x"], lambda: {"-o"}) == 2
    assert _one_line(capsys.readouterr().err) == (
        "error: output folder is read-only: /ro/out; choose another with -o"
    )


def test_sqlite_refusals_are_system_failures(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "gone"
    try:
        sqlite3.connect(folder / "x.db").execute("CREATE TABLE t (x)")
    except sqlite3.OperationalError as exc:
        assert report_exception(exc) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("error: database: ") and "internal error" not in line


def test_a_bug_is_exit_3_and_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bug = KeyError("oops")
    monkeypatch.delenv("WEIGHTVAULT_DEBUG", raising=False)
    assert report_exception(bug) == 3
    line = _one_line(capsys.readouterr().err)
    assert "internal error (KeyError)" in line and "WEIGHTVAULT_DEBUG=1" in line
    monkeypatch.setenv("WEIGHTVAULT_DEBUG", "1")
    try:
        raise bug
    except KeyError as raised:
        assert report_exception(raised) == 3
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.splitlines()[-1].startswith("error: internal error (KeyError)")


def test_help_documents_exit_codes_and_debug(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "3 a bug in weightvault" in out
    assert "WEIGHTVAULT_DEBUG=1" in out
    assert "--install-completion" in out and "--show-completion" in out


def test_shell_completion_script_and_completions() -> None:
    """Typer's standard mechanism, through the console script's lean dispatcher."""
    env = {**os.environ, "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    shown = subprocess.run(
        [sys.executable, "-m", "weightvault", "--show-completion", "bash"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "_WEIGHTVAULT_COMPLETE=complete_bash" in shown.stdout
    completing = subprocess.run(
        [sys.executable, "-m", "weightvault"],
        capture_output=True,
        text=True,
        env={
            **env,
            "_WEIGHTVAULT_COMPLETE": "complete_bash",
            "COMP_WORDS": "weightvault ke",
            "COMP_CWORD": "1",
        },
        check=False,
    )
    assert completing.returncode == 0, completing.stderr
    assert completing.stdout.split() == ["keygen"]
    subcommand = subprocess.run(
        [sys.executable, "-m", "weightvault"],
        capture_output=True,
        text=True,
        env={
            **env,
            "_WEIGHTVAULT_COMPLETE": "complete_bash",
            "COMP_WORDS": "weightvault scan --js",
            "COMP_CWORD": "2",
        },
        check=False,
    )
    assert subcommand.stdout.split() == ["--json"], subcommand.stderr


#: Strings outside the command line that look like options but are not ours.
_NOT_OUR_FLAGS = {
    "--allow",  # scan.policy: the source tag of allow-list entries the caller added
    "serve --init-admin",  # custody: recorded in the audit log as how the first admin came
}
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]+")


def _library_strings() -> list[tuple[str, int, str]]:
    """Every string literal in the library (not the CLI), docstrings excluded."""
    found = []
    for path in sorted((REPO / "src" / "weightvault").rglob("*.py")):
        relative = path.relative_to(REPO / "src" / "weightvault").as_posix()
        if relative.startswith("cli/") or relative == "scan/__main__.py":
            continue  # the command lines themselves
        tree = ast.parse(path.read_text())
        docstrings = {  # a bare string statement documents something: not a message
            id(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and id(node) not in docstrings
            ):
                found.append((relative, node.lineno, node.value))
    return found


def test_library_messages_never_name_command_line_flags() -> None:
    offenders = [
        f"{where}:{line}: {text!r}"
        for where, line, text in _library_strings()
        if text not in _NOT_OUR_FLAGS
        and "pkcs11-tool" not in text  # another program's options, quoted as a recipe
        and _FLAG.search(text)
    ]
    assert not offenders, "\n".join(offenders)
