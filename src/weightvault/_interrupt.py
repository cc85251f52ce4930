"""SIGINT and SIGTERM as a clean stop: partial outputs removed, one line said, exit 130 / 143.

Only the command line installs these handlers (:func:`install`); the library keeps Python's
defaults. Once installed:

* the first SIGINT or SIGTERM raises :class:`Interrupted` in the main thread (Python runs signal
  handlers there only), so every ``except BaseException`` / ``finally`` clean-up on the way out
  runs; SIGTERM no longer kills the process before it can remove a half-written file;
* :class:`Interrupted` derives from ``BaseException`` but not from ``KeyboardInterrupt``: click
  turns a ``KeyboardInterrupt`` into its own "Aborted!" after printing a blank line, and ordinary
  ``except Exception`` handlers must not swallow it either;
* worker threads never receive signals; they poll :func:`stop_requested` between blocks;
* a step that must not be cut in half (renaming a finished output into place, creating a folder
  and recording it for clean-up) runs inside :func:`deferred`: the exception is raised when the
  step is complete;
* further signals while the first is being handled are ignored (clean-up is short), except that
  a third one ends the process the default way, for a clean-up that hangs.

Commands say what an interrupt leaves untouched with :func:`note_untouched`; the entry point prints
:func:`interrupted_line`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = [
    "Cancelled",
    "Interrupted",
    "check_stop",
    "deferred",
    "delivered",
    "finishing",
    "install",
    "interrupted_line",
    "note_outcome",
    "note_untouched",
    "raise_if_requested",
    "release",
    "reraise_if_delivered",
    "stop_requested",
]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The command received SIGINT or SIGTERM (raised in the main thread)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report a process ended by that signal."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class Cancelled(BaseException):
    """Raised in a worker thread that gives up its task because a stop was requested (a signal,
    or another task's failure); never reaches the user."""


class _State:
    def __init__(self) -> None:
        self.pending: int | None = None
        self.raised = False
        self.delivered: int | None = None  # the signal raised as Interrupted, if any
        self.deferring = 0
        self.count = 0
        self.stop = threading.Event()
        self.untouched: list[str] = []
        self.outcome: str | None = None
        self.installed = False
        self.created: list[tuple[str, bool, bool]] = []  # (path, existed before, is a folder)


_state = _State()


def _handler(signum: int, _frame: FrameType | None) -> None:
    _state.count += 1
    if _state.raised or (_state.pending is not None and _state.deferring):
        if _state.count >= 3:  # the clean-up hangs: let the user end it the default way
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        return
    if _state.pending is None:
        _state.pending = signum
        _state.stop.set()
    if _state.deferring == 0:
        _state.raised = True
        _state.delivered = _state.pending
        raise Interrupted(_state.pending)


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """An :class:`Interrupted` raised where Python cannot propagate it (a weak-reference
    callback of the import system, a ``__del__``) is printed as "Exception ignored" and lost.
    Say nothing, and raise it again at the main thread's next function call (a trace function
    that removes itself): the handler cannot be re-run from here, it would raise in this hook.
    """
    exc = info.exc_value
    if isinstance(exc, Interrupted) and _state.installed and _state.delivered == exc.signum:
        signum = exc.signum

        def raise_again(_frame: FrameType, _event: str, _arg: object) -> None:
            sys.settrace(None)
            raise Interrupted(signum)

        sys.settrace(raise_again)
        return
    _previous_unraisablehook(info)


_previous_unraisablehook = sys.unraisablehook


def install() -> None:
    """Handle SIGINT and SIGTERM as described in the module docstring (main thread only)."""
    global _previous_unraisablehook
    for signum in _SIGNALS:
        signal.signal(signum, _handler)
    _previous_unraisablehook = sys.unraisablehook
    sys.unraisablehook = _unraisable
    _state.installed = True


def release() -> None:
    """Give SIGINT and SIGTERM back to Python's defaults and stop recording outputs: for a
    long-running service (``serve``), where a signal is the normal way to stop and what it
    wrote must stay. The service installs its own graceful handlers."""
    global _previous_unraisablehook
    if not _state.installed:
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    sys.unraisablehook = _previous_unraisablehook
    _state.installed = False
    _state.created.clear()


def delivered() -> int | None:
    """The signal that was raised as :class:`Interrupted` in this command, if one was.

    Code that catches every exception may turn it into another one (an exception inside a
    class body being created becomes a ``RuntimeError``; a generic handler may report it as an
    internal error): the command line asks this, not the exception's type.
    """
    return _state.delivered


def reraise_if_delivered(exc: BaseException) -> None:
    """Raise :class:`Interrupted` (from ``exc``) if ``exc`` is the aftermath of an interrupt."""
    if _state.delivered is not None and not isinstance(exc, Interrupted):
        raise Interrupted(_state.delivered) from exc


def pending_signal() -> int | None:
    """The signal received (raised or not yet), if any."""
    return _state.pending or None


def stop_requested() -> bool:
    """True once SIGINT or SIGTERM arrived (for worker threads polling between blocks)."""
    return _state.stop.is_set()


def raise_if_requested() -> None:
    """In the main thread: raise :class:`Interrupted` now if a signal arrived and is pending."""
    if (
        _state.pending is not None
        and not _state.raised
        and _state.deferring == 0
        and threading.current_thread() is threading.main_thread()
    ):
        _state.raised = True
        _state.delivered = _state.pending
        raise Interrupted(_state.pending)


def check_stop() -> None:
    """Stop here if SIGINT or SIGTERM arrived: :class:`Interrupted` in the main thread (unless
    deferred or already raised), :class:`Cancelled` in any other thread."""
    if not _state.stop.is_set():
        return
    if threading.current_thread() is threading.main_thread():
        raise_if_requested()
    else:
        raise Cancelled


@contextlib.contextmanager
def _holding() -> Iterator[bool]:
    """Hold a signal's exception while the block runs; yields whether it did (only the main
    thread receives signals, so in other threads there is nothing to hold)."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    _state.deferring += 1
    try:
        yield True
    finally:
        _state.deferring -= 1


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold a signal's exception until the block is done (it is raised on leaving the block).

    Only the main thread receives signals, so in other threads this does nothing.
    """
    with _holding() as held:
        yield
    if held:
        raise_if_requested()


@contextlib.contextmanager
def finishing() -> Iterator[None]:
    """Like :func:`deferred`, for the step that completes the command's output (an in-place
    commit that cannot be undone): a signal arriving during it is dropped, and the command ends
    as if the signal had come just after it finished."""
    with _holding() as held:
        yield
    if held and _state.pending is not None and not _state.raised:
        _state.raised = True  # too late to stop: the work is done


def finish() -> None:
    """The command has completed (or its interrupt is being reported): signals from now on are
    ignored, so the exit code stays. ``SIG_IGN`` rather than a Python handler, because the
    interpreter restores the default action of Python handlers while it shuts down."""
    _state.raised = True
    if _state.pending is None:
        _state.pending = 0
    if _state.installed:
        for signum in _SIGNALS:
            signal.signal(signum, signal.SIG_IGN)


def record_created(path: str | os.PathLike[str], *, existed: bool = False) -> None:
    """Note a file (or folder) this command just gave its final name, so that an interrupt
    arriving at any later point, even after the operation returned, removes it again.

    Call it in the same :func:`deferred` step as the rename or ``mkdir``. ``existed``: the name
    was already taken and has been replaced (``--force``); it cannot be restored, and the last
    line says so. A no-op unless the command line installed the handlers.
    """
    if _state.installed:
        text = os.fspath(path)
        _state.created.append((text, existed, os.path.isdir(text)))


def undo_created() -> None:
    """Remove what :func:`record_created` noted, newest first (called once, on an interrupt)."""
    replaced = []
    for path, existed, is_dir in reversed(_state.created):
        if existed:
            replaced.append(path)
            continue
        with contextlib.suppress(OSError):
            if is_dir:
                os.rmdir(path)  # only if empty: a folder this run created holds only its files
            else:
                os.unlink(path)
    _state.created.clear()
    if replaced and _state.outcome is None:
        shown = ", ".join(reversed(replaced[-3:])) + (" ..." if len(replaced) > 3 else "")
        _state.outcome = f"already replaced, cannot be restored: {shown}; nothing else written"


def note_untouched(*names: str | os.PathLike[str]) -> None:
    """Record what an interrupt leaves unchanged (the command's inputs), for the last line."""
    for name in names:
        text = os.fspath(name)
        if text not in _state.untouched:
            _state.untouched.append(text)


def note_outcome(text: str) -> None:
    """Replace the default "nothing written" when a clean-up could not undo everything."""
    _state.outcome = text


def interrupted_line(exc: Interrupted) -> str:
    """The one line printed on standard error, e.g.
    ``interrupted by SIGINT: nothing written; model/ unchanged``."""
    from weightvault._console import printable

    parts = [_state.outcome or "nothing written"]
    if _state.untouched:
        parts.append(", ".join(_state.untouched) + " unchanged")
    return printable(f"interrupted by {exc.signal_name}: " + "; ".join(parts))


def _reset_for_tests() -> None:
    global _state
    _state = _State()
