"""One shell session per document: the machinery behind ``tests/docs`` (conventions in conftest).

A document is read as one terminal session: every command runs in the same long-lived ``bash``
(so ``cd``, ``export``, shell variables, ``$?`` and background jobs carry from one command to the
next, as they would for a reader typing them), in a fresh folder that is also ``$HOME``. Each
command's standard output and error go, interleaved, to a file of their own; the shell then
prints a sentinel line with the exit status on its own standard output, which is how this
module knows the command ended. The shell leads its own process group, so closing the session
ends whatever the document left running (a custody server, say), even after a failure.
"""

from __future__ import annotations

import difflib
import os
import re
import secrets
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = (
    REPO / ".venv" / "bin" if (REPO / ".venv" / "bin").is_dir() else Path(sys.executable).parent
)

DOC_HOME = "/home/me"
"""What the session's home (and starting folder) is shown as in the documents."""
DOC_PORT = "8471"
"""The port the documents show for the custody service; the test gives ``$PORT`` a free one."""


class StepFailure(Exception):
    """A command or script did not do what its document says (the message says how)."""


@dataclass(frozen=True)
class Normalisation:
    """One explicit substitution applied to expected and actual output alike, for a value that
    truly varies between runs (a fresh key's id, a random request id, a duration)."""

    name: str
    pattern: re.Pattern[str]
    replacement: str

    def apply(self, text: str) -> str:
        return self.pattern.sub(self.replacement, text)


def _norm(name: str, pattern: str, replacement: str, flags: int = 0) -> Normalisation:
    return Normalisation(name, re.compile(pattern, flags), replacement)


NORMALISATIONS: tuple[Normalisation, ...] = (
    # keys made fresh by the document: their ids and public values differ on every run
    _norm("EC key id", r"\bEC key [0-9a-f]{16}\b", "EC key <key id>"),
    _norm("keyring id", r"\bkeyring([: ])[0-9a-f]{16}\b", r"keyring\1<key id>"),
    _norm("key fingerprint", r'"key_fingerprint": "[0-9a-f]{64}"', '"key_fingerprint": "<hex>"'),
    _norm("keygen fingerprint", r"^fingerprint: [0-9a-f]{64}$", "fingerprint: <hex>", re.MULTILINE),
    _norm("X25519 recipient", r"\bwvx25519:[A-Za-z0-9_-]{43}\b", "wvx25519:<public key>"),
    _norm(
        "C2SP verifier key",
        r"(?<![\w.+/-])([a-z0-9][\w.-]*(?:/[\w.-]+)*)\+[0-9a-f]{8}\+[A-Za-z0-9+/]{40,}={0,2}",
        r"\1+<key id>+<public key>",
    ),
    _norm(
        "signed-note signature line",
        r"^— (\S+) [A-Za-z0-9+/]{40,}={0,2}$",
        r"— \1 <signature>",
        re.MULTILINE,
    ),
    # random identifiers the service makes
    _norm("custody token", r"\bwvt_[0-9a-f]{16}_[A-Za-z0-9_-]{20,}", "wvt_<token>"),
    # 128-bit random ids: custody request ids, encryption run ids (hashes are 64 hex digits)
    _norm("random id", r"\b[0-9a-f]{32}\b", "<random id>"),
    # SoftHSM2 numbers a new token's slot at random
    _norm("SoftHSM2 slot", r"\b(reassigned to slot) [0-9]+\b", r"\1 <slot>"),
    # durations of work
    _norm("seconds taken", r"\b(in|took) [0-9]+(?:\.[0-9]+)? s\b", r"\1 <seconds> s"),
)


def normalise(text: str, *, home: str, port: str) -> str:
    """Apply the narrow substitutions: the session's home becomes :data:`DOC_HOME`, its port
    :data:`DOC_PORT`, then every :data:`NORMALISATIONS` entry in order."""
    text = text.replace(home, DOC_HOME)
    text = re.sub(rf"\b127\.0\.0\.1:{re.escape(port)}\b", f"127.0.0.1:{DOC_PORT}", text)
    for rule in NORMALISATIONS:
        text = rule.apply(text)
    return text


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return lines


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Line by line equality, where an expected line ``...`` (indented or not) stands for any
    number of lines."""
    if not expected:
        return not actual
    head, *rest = expected
    if head.strip() == "...":
        return any(output_matches(rest, actual[i:]) for i in range(len(actual) + 1))
    return bool(actual) and actual[0] == head and output_matches(rest, actual[1:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Command:
    """One ``$ command`` of a console block and the output the document shows after it."""

    text: str
    expected: tuple[str, ...]
    line: int
    """Line of the ``$`` within the document."""


_HEREDOC = re.compile(r"<<-?\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1")


def parse_transcript(source: str, first_line: int) -> list[Command]:
    """Split a console block into commands and their expected output.

    A line starting with ``$ `` is a command; one ending in a backslash continues on the next
    line, so do lines starting with ``> `` right after it (the shell's prompt inside an open
    quote), and a here-document (``<<EOF``) continues up to its terminator. The lines after a
    command, up to the next ``$ ``, are what it prints (standard output and error together).
    """
    lines = source.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    commands: list[Command] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not (line.startswith("$ ") or line == "$"):
            raise ValueError(
                f"line {first_line + index}: a console block must start with '$ COMMAND'; "
                f"got {line!r}"
            )
        start = index
        parts = [line[2:]]
        index += 1
        while index < len(lines):
            if parts[-1].endswith("\\"):
                parts.append(lines[index])
            elif lines[index].startswith("> ") or lines[index] == ">":
                parts.append(lines[index][2:])  # the shell's PS2 prompt: an open quote goes on
            else:
                break
            index += 1
        for match in _HEREDOC.finditer("\n".join(parts)):
            terminator = match.group(2)
            while index < len(lines) and lines[index].strip() != terminator:
                parts.append(lines[index])
                index += 1
            if index == len(lines):
                raise ValueError(
                    f"line {first_line + start}: here-document {terminator} not closed"
                )
            parts.append(lines[index])
            index += 1
        expected: list[str] = []
        while index < len(lines) and not (lines[index].startswith("$ ") or lines[index] == "$"):
            expected.append(lines[index])
            index += 1
        commands.append(Command("\n".join(parts), tuple(expected), first_line + start))
    return commands


class ShellSession:
    """The long-lived shell a document's blocks run in (see the module docstring)."""

    def __init__(self, root: Path, *, timeout_s: float = 120.0) -> None:
        self.home = root / "home"
        self.spool = root / "session"
        self.home.mkdir(parents=True)
        self.spool.mkdir()
        self.port = str(free_port())
        self.default_timeout_s = timeout_s
        self._sentinel = f"__docs_test_{secrets.token_hex(8)}__"
        self._count = 0
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("WEIGHTVAULT_", "SIGSTORE_", "PYTEST_", "COV_"))
            and key not in {"PYTHONPATH", "VIRTUAL_ENV", "XDG_CONFIG_HOME", "SOFTHSM2_CONF"}
        }
        env.update(
            HOME=str(self.home),
            PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            VIRTUAL_ENV=str(VENV_BIN.parent),
            PORT=self.port,
            COLUMNS="100",
            LC_ALL="C.UTF-8",
            TERM="dumb",
            PYTHONUNBUFFERED="1",
            TZ="UTC",
        )
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=self.home,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._send("__docs_rc=0\n")

    def _send(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode())
        self.process.stdin.flush()

    def run(self, command: str, *, timeout_s: float | None = None) -> tuple[int, str]:
        """Run one command (any shell text) in the session; return its status and output."""
        self._count += 1
        out = self.spool / f"out-{self._count}"
        script = self.spool / f"command-{self._count}.sh"
        script.write_text(command + "\n", encoding="utf-8")
        # Sourced, so cd, variables and jobs stay in the session; `(exit N)` first, so `$?` in
        # the command is the previous command's status.
        self._send(
            f"(exit $__docs_rc); . '{script}' > '{out}' 2>&1 < /dev/null\n"
            f"__docs_rc=$?\nprintf '\\n%s %s\\n' {self._sentinel} \"$__docs_rc\"\n"
        )
        status = self._wait(timeout_s or self.default_timeout_s, command)
        return status, out.read_text(encoding="utf-8", errors="replace")

    def _wait(self, timeout_s: float, command: str) -> int:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        buffer = b""
        pattern = re.compile(rf"{self._sentinel} (\d+)\n".encode())
        while True:
            match = pattern.search(buffer)
            if match:
                return int(match.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise StepFailure(f"timed out after {timeout_s:.0f} s: {command}")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    shown = buffer.decode(errors="replace")
                    raise StepFailure(f"the shell exited while running: {command}\n{shown}")
                buffer += chunk

    def normalise(self, text: str) -> str:
        return normalise(text, home=str(self.home), port=self.port)

    def check_command(
        self, command: Command, following: Command | None, timeout_s: float | None
    ) -> None:
        """Run one ``$`` command and compare what it printed with what the document shows."""
        status, output = self.run(command.text, timeout_s=timeout_s)
        actual = _lines(self.normalise(output))
        expected = _lines(self.normalise("\n".join(command.expected)))
        problems = []
        if expected and not output_matches(expected, actual):
            diff = difflib.unified_diff(expected, actual, "document", "actual", lineterm="", n=2)
            problems.append("output differs:\n" + "\n".join(diff))
        shows_failure = any(line.startswith("error:") for line in expected) or (
            following is not None and following.text.strip() == "echo $?"
        )
        if status != 0 and not shows_failure:
            problems.append(
                f"exit status {status}, but the document shows no failure"
                + ("" if expected else ":\n" + "\n".join(actual[-30:]))
            )
        if (
            status == 0
            and "$?" not in command.text  # `cmd; echo "exit $?"` shows the status itself
            and any(line.startswith("error:") for line in expected)
        ):
            problems.append("exit status 0, but the document shows an error")
        if problems:
            raise StepFailure(f"line {command.line}: $ {command.text}\n" + "\n".join(problems))

    def check_script(self, command: str, line: int, timeout_s: float | None) -> str:
        """Run a script (a bash block, a Python file); it must succeed. Returns its output."""
        status, output = self.run(command, timeout_s=timeout_s)
        if status != 0:
            raise StepFailure(f"line {line}: exit status {status}:\n{output[-4000:]}")
        return output

    def check_transcript(self, commands: Iterable[Command], timeout_s: float | None) -> None:
        listed = list(commands)
        for position, command in enumerate(listed):
            following = listed[position + 1] if position + 1 < len(listed) else None
            self.check_command(command, following, timeout_s)

    def close(self) -> None:
        """End the shell and everything the document started in its process group."""
        if self.process.poll() is None or _group_alive(self.process.pid):
            for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.process.pid, sig)
                except ProcessLookupError:
                    break
                deadline = time.monotonic() + wait_s
                while _group_alive(self.process.pid) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    self.process.poll()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL was sent
            pass
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover
        return True
    return True
