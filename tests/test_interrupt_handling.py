"""The pieces behind clean interrupts, each at the exact moment that is hard to hit at random:
a signal during a commit, inside a deferred step, inside a finalizer, behind another exception.

Each case runs in a fresh interpreter (the handlers are process-wide) that sends itself the
signal at the chosen point.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from weightvault._fs import staged_outputs, write_bytes_atomic
from weightvault.errors import InputError


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )


def test_a_signal_during_a_commit_removes_the_file_just_named(tmp_path: Path) -> None:
    done = _python(
        """
        import os, signal
        from pathlib import Path
        from weightvault import _fs, _interrupt
        _interrupt.install()
        real = _fs.fsync_dir
        def fsync_then_signal(path):  # runs after the rename, inside the uninterruptible step
            os.kill(os.getpid(), signal.SIGTERM)
            print("still committing", flush=True)
            real(path)
        _fs.fsync_dir = fsync_then_signal
        try:
            _fs.write_bytes_atomic(Path("out.bin"), b"x" * 1000)
        except _interrupt.Interrupted as exc:
            print("interrupted", exc.signum, sorted(os.listdir(".")))
        """,
        tmp_path,
    )
    assert done.stdout == "still committing\ninterrupted 15 []\n", done.stderr
    assert done.stderr == ""


def test_a_signal_inside_a_deferred_step_is_raised_after_it_and_finishing_drops_it(
    tmp_path: Path,
) -> None:
    done = _python(
        """
        import os, signal
        from weightvault import _interrupt
        _interrupt.install()
        steps = []
        try:
            with _interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("step completed")
        except _interrupt.Interrupted as exc:
            steps.append(f"raised after it: {exc.signum}")
        print(steps)
        """,
        tmp_path,
    )
    assert done.stdout == "['step completed', 'raised after it: 2']\n", done.stderr
    done = _python(
        """
        import os, signal
        from weightvault import _interrupt
        _interrupt.install()
        with _interrupt.finishing():
            os.kill(os.getpid(), signal.SIGTERM)
        print("the command completes")
        os.kill(os.getpid(), signal.SIGTERM)  # later signals are ignored too
        print("still running")
        """,
        tmp_path,
    )
    assert done.stdout == "the command completes\nstill running\n", done.stderr
    assert done.returncode == 0


def test_an_interrupt_swallowed_by_a_finalizer_is_raised_again_silently(tmp_path: Path) -> None:
    """Python prints "Exception ignored" and drops an exception raised in ``__del__`` or a
    weak-reference callback (the import system has one): the interrupt must still happen."""
    done = _python(
        """
        import gc, os, signal
        from weightvault import _interrupt
        _interrupt.install()
        class Finalized:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)  # the handler raises inside __del__
        def work():
            return sum(range(10))
        try:
            Finalized()
            gc.collect()
            for _ in range(1000):
                work()
            print("not interrupted")
        except _interrupt.Interrupted as exc:
            print("interrupted", exc.signum)
        """,
        tmp_path,
    )
    assert done.stdout == "interrupted 2\n"
    assert done.stderr == ""  # no "Exception ignored ... Traceback"


def test_an_interrupt_wrapped_in_another_exception_is_still_an_interrupt(tmp_path: Path) -> None:
    """An exception inside a class body being created becomes a RuntimeError (Python 3.11)."""
    done = _python(
        """
        import os, signal
        from weightvault import _interrupt
        _interrupt.install()
        class Named:
            def __set_name__(self, owner, name):
                os.kill(os.getpid(), signal.SIGTERM)
        try:
            class Owner:
                attribute = Named()
        except BaseException as exc:
            print(type(exc).__name__, _interrupt.delivered())
            try:
                _interrupt.reraise_if_delivered(exc)
            except _interrupt.Interrupted as again:
                print("reported as", again.signum)
        """,
        tmp_path,
    )
    assert done.stdout.splitlines()[-1] == "reported as 15", done.stdout + done.stderr


def test_the_command_line_reports_one_line_and_the_signal_exit_code(tmp_path: Path) -> None:
    """From ``weightvault.cli.main``: what the command created is removed, the line names the
    command's inputs, exit code 128 + the signal."""
    (tmp_path / "input.bin").write_bytes(b"weights")
    done = _python(
        """
        import os, signal, sys
        from pathlib import Path
        from weightvault import _interrupt, cli
        def fake_run(argv):
            _interrupt.note_untouched("input.bin")
            with _interrupt.deferred():
                Path("made").mkdir()
                _interrupt.record_created("made")
            with _interrupt.deferred():
                Path("made/output.bin").write_bytes(b"out")
                _interrupt.record_created("made/output.bin")
            os.kill(os.getpid(), signal.SIGTERM)
            return 0
        cli.run = fake_run
        sys.argv = ["weightvault", "fake"]
        cli.main()
        """,
        tmp_path,
    )
    assert done.returncode == 143
    assert done.stderr == "interrupted by SIGTERM: nothing written; input.bin unchanged\n"
    assert sorted(os.listdir(tmp_path)) == ["input.bin"]


def test_staged_outputs_appear_together_or_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_outputs() as batch:
        batch.write_bytes(tmp_path / "a.json", b"{}")
        batch.write_bytes(tmp_path / "b.png", b"png")
        assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == []
        raise RuntimeError("the third file failed")
    assert list(tmp_path.iterdir()) == []
    with staged_outputs() as batch:
        batch.write_bytes(tmp_path / "a.json", b"{}")
        batch.write_bytes(tmp_path / "b.png", b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.png"]


def test_staged_outputs_refuse_an_existing_file_before_writing_and_undo_on_a_late_clash(
    tmp_path: Path,
) -> None:
    (tmp_path / "b.png").write_bytes(b"old")
    with pytest.raises(InputError, match="already exists"), staged_outputs() as batch:
        batch.write_bytes(tmp_path / "a.json", b"{}")
        batch.write_bytes(tmp_path / "b.png", b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]
    assert (tmp_path / "b.png").read_bytes() == b"old"
    # Someone creates a name between the check and the commit: what this batch named is undone.
    with pytest.raises(InputError, match="already exists"), staged_outputs() as batch:
        batch.write_bytes(tmp_path / "c.json", b"{}")
        batch.write_bytes(tmp_path / "d.png", b"new")
        write_bytes_atomic(tmp_path / "d.png", b"theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png", "d.png"]
    assert (tmp_path / "d.png").read_bytes() == b"theirs"
