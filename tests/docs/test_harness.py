"""The documentation runner itself: a wrong document must fail, and fail naming what differed.

Small Markdown documents written here exercise each rule of ``tests/docs/conftest.py`` with
plain shell commands (fast, no weightvault), so a runner that silently passed everything would
be caught.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
from pathlib import Path

import pytest
from sybil.example import SybilFailure
from tests.docs.runner import Directive, run_document
from tests.docs.shell import normalise, output_matches, parse_transcript

FENCE = "```"


def _doc(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(body.replace("~~~", FENCE))
    return path


def _fresh(tmp_path: Path) -> Path:
    """A new folder for one document run (each run makes its own home and spool)."""
    return Path(tempfile.mkdtemp(dir=tmp_path))


def _fails(tmp_path: Path, body: str, *expected: str) -> str:
    with pytest.raises(SybilFailure) as caught:
        run_document(_doc(tmp_path, body), _fresh(tmp_path), timeout_s=20)
    message = str(caught.value)
    for text in expected:
        assert text in message, message
    return message


def test_shown_output_is_compared(tmp_path: Path) -> None:
    run = run_document(
        _doc(tmp_path, "~~~console\n$ echo hello\nhello\n$ printf 'a\\nb\\n'\na\nb\n~~~\n"),
        tmp_path / "run",
    )
    assert run.ran == 1
    _fails(
        tmp_path,
        "~~~console\n$ echo hello\nhullo\n~~~\n",
        "line 2: $ echo hello",
        "-hullo",
        "+hello",
    )


def test_a_failure_must_be_shown_and_a_shown_failure_must_happen(tmp_path: Path) -> None:
    _fails(tmp_path, "~~~console\n$ false\n~~~\n", "exit status 1, but the document shows no")
    _fails(
        tmp_path,
        "~~~console\n$ echo 'error: boom'\nerror: boom\n~~~\n",
        "exit status 0, but the document shows an error",
    )
    # Shown either way, they pass: an error line, `echo $?` next, or the status printed.
    run_document(
        _doc(
            tmp_path,
            "~~~console\n$ sh -c 'echo error: boom >&2; exit 2'\nerror: boom\n"
            '$ false\n$ echo $?\n1\n$ false; echo "exit $?"\nexit 1\n~~~\n',
        ),
        tmp_path / "run",
    )


def test_blocks_share_one_session_in_order(tmp_path: Path) -> None:
    body = (
        "~~~console\n$ mkdir work && cd work && export GREETING=hi && NAME=doc\n~~~\n\n"
        '~~~bash\ntest "$(basename "$PWD")" = work\n~~~\n\n'
        '~~~console\n$ echo "$GREETING $NAME from $(basename "$PWD")"\nhi doc from work\n~~~\n\n'
        "~~~python\nimport os, pathlib\nassert pathlib.Path.cwd().name == 'work'\n"
        "assert os.environ['GREETING'] == 'hi'\n~~~\n"
    )
    assert run_document(_doc(tmp_path, body), tmp_path / "run").ran == 4


def test_a_failing_script_or_python_block_fails(tmp_path: Path) -> None:
    _fails(tmp_path, "~~~bash\ntrue\nexit 3\n~~~\n", "exit status 3")
    _fails(tmp_path, "~~~python\nraise SystemExit('no good')\n~~~\n", "no good")


def test_skip_directive_skips_exactly_the_next_block_with_its_reason(tmp_path: Path) -> None:
    body = (
        '<!-- docs-test: skip reason="needs the moon" -->\n\n~~~console\n$ false\n~~~\n\n'
        "~~~console\n$ echo ran\nran\n~~~\n"
    )
    run = run_document(_doc(tmp_path, body), tmp_path / "run")
    assert run.skipped == [(3, "needs the moon")]
    assert run.ran == 1
    with pytest.raises(ValueError, match="reason"):
        Directive.parse("skip")
    with pytest.raises(ValueError, match="unknown docs-test directive"):
        Directive.parse("sometimes")
    with pytest.raises(ValueError, match="unknown fixture"):
        Directive.parse("setup no-such-fixture")


def test_invisible_blocks_run_and_count(tmp_path: Path) -> None:
    body = (
        "<!-- invisible-code-block: console\n$ echo secret > hidden.txt\n-->\n\n"
        "~~~console\n$ cat hidden.txt\nsecret\n~~~\n"
    )
    assert run_document(_doc(tmp_path, body), tmp_path / "run").ran == 2


def test_untagged_and_unknown_fences_are_reported(tmp_path: Path) -> None:
    from tests.docs.runner import fenced_block_languages

    path = _doc(tmp_path, "~~~\nx\n~~~\n\n~~~sh\ny\n~~~\n\n~~~text\nz\n~~~\n")
    assert fenced_block_languages(path) == [(1, ""), (5, "sh"), (9, "text")]


def test_timeout_ends_the_block_and_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "run" / "home" / "sleeper.pid"
    with pytest.raises(SybilFailure, match="timed out after 1 s"):
        run_document(
            _doc(tmp_path, "~~~console\n$ sleep 300 & echo $! > sleeper.pid; sleep 30\n~~~\n"),
            tmp_path / "run",
            timeout_s=1,
        )
    _assert_gone(int(pid_file.read_text()))


def test_background_jobs_are_ended_with_the_session(tmp_path: Path) -> None:
    run_document(
        _doc(
            tmp_path, "~~~console\n$ sleep 300 > /dev/null 2>&1 &\n$ echo $! > sleeper.pid\n~~~\n"
        ),
        tmp_path / "run",
    )
    _assert_gone(int((tmp_path / "run" / "home" / "sleeper.pid").read_text()))


def _assert_gone(pid: int) -> None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return
    os.kill(pid, signal.SIGKILL)
    raise AssertionError(f"process {pid} outlived its document")


def test_the_session_folder_and_port_are_shown_as_the_document_shows_them() -> None:
    text = "saved to /tmp/x/home/.config/v.json; listening on http://127.0.0.1:40123"
    assert normalise(text, home="/tmp/x/home", port="40123") == (
        "saved to /home/me/.config/v.json; listening on http://127.0.0.1:8471"
    )


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        ("signer: key EC key a74ac8b239279650", "signer: key EC key 17c108794e7c8421"),
        ("request 32ba8b1811a085e8f45fe728000b9cbf: revoked", f"request {'0' * 32}: revoked"),
        (
            "created x; token (shown once): wvt_d030e890691fc2b9_" + "A" * 43,
            "created x; token (shown once): wvt_0123456789abcdef_" + "b" * 43,
        ),
        (
            "log.key+167cca60+AQja6OzgIJPEmEOAW9lSpj7Qhj0AEwiubV4f1ixCt7AS",
            "log.key+00000000+ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopq0",
        ),
        (
            "— example.com/log FnzKYM6S1cLcIQBWJwvHlM3/aHZr8zFj9w+zbaYBDNxnWDsQc9TOHqiAReJXz=",
            "— example.com/log AAAAYM6S1cLcIQBWJwvHlM3/aHZr8zFj9w+zbaYBDNxnWDsQc9TOHqiAReJXz=",
        ),
    ],
)
def test_fresh_ids_and_keys_are_normalised(shown: str, printed: str) -> None:
    assert normalise(shown, home="/h", port="1") == normalise(printed, home="/h", port="1")


@pytest.mark.parametrize(
    ("shown", "printed"),
    [
        # digests of fixed content, sizes, counts and words are compared as they are
        ("root digest: sha256:" + "a" * 64, "root digest: sha256:" + "b" * 64),
        ("pulled 2 files of llama into pulled", "pulled 3 files of llama into pulled"),
        ("encrypted 2 files (8,388,824 bytes)", "encrypted 2 files (8,388,825 bytes)"),
        ("signer: key EC key a74ac8b239279650", "signer: certificate a74ac8b239279650"),
        ("audit log OK: 30 entries", "audit log OK: 31 entries"),
    ],
)
def test_everything_else_is_compared_exactly(shown: str, printed: str) -> None:
    assert normalise(shown, home="/h", port="1") != normalise(printed, home="/h", port="1")


def test_ellipsis_stands_for_any_lines_and_only_there() -> None:
    assert output_matches(["a", "...", "d"], ["a", "b", "c", "d"])
    assert output_matches(["a", "  ...", "d"], ["a", "d"])
    assert not output_matches(["a", "...", "d"], ["a", "b", "c"])
    assert not output_matches(["a", "b"], ["a", "b", "c"])


def test_transcripts_split_into_commands_and_their_output() -> None:
    source = (
        "$ one \\\n    --flag\nout 1\n$ python - <<'EOF'\nprint('$ not a prompt')\nEOF\n"
        "$ echo 'open\n> quote'\nopen\nquote\n"
    )
    commands = parse_transcript(source, 10)
    assert [(c.text, c.expected, c.line) for c in commands] == [
        ("one \\\n    --flag", ("out 1",), 10),
        ("python - <<'EOF'\nprint('$ not a prompt')\nEOF", (), 13),
        ("echo 'open\nquote'", ("open", "quote"), 16),
    ]
    with pytest.raises(ValueError, match=re.escape("must start with '$ COMMAND'")):
        parse_transcript("output first\n$ cmd\n", 1)
