"""Running one task per file on a pool of threads, all or nothing: what encrypt, decrypt and
rewrap of a whole model share (:mod:`weightvault.crypt.ops`).

Tasks run largest first; results never depend on the number of workers. If any task fails, or
the run is interrupted, the workers stop within one 1 MiB block and the outputs this run
already wrote, and the folders it created, are removed before the error is raised.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from weightvault import _interrupt
from weightvault.crypt.stream import Progress
from weightvault.errors import InputError, UsageError

__all__ = [
    "FileTask",
    "check_workers",
    "make_parents",
    "prepare_output_folder",
    "remove_created",
    "run_tasks",
]


@dataclass
class FileTask:
    """One file's work: ``function(*args, progress=...)`` returns the bytes it wrote to
    ``destination``."""

    function: Callable[..., int]
    args: tuple[Any, ...]
    size: int
    """Bytes the task reports to ``progress`` in all (topped up when it completes)."""
    destination: Path


class _Control:
    """The per-block callback handed to every task: stops a task when the run is being stopped
    (a signal, or another task failed) and forwards progress, serialized, to the caller."""

    def __init__(self, progress: Progress | None) -> None:
        self.stop = threading.Event()
        self._progress = progress
        self._lock = threading.Lock()

    def for_task(self) -> tuple[Callable[[int], None], list[int]]:
        reported = [0]

        def tick(count: int) -> None:
            if self.stop.is_set():
                raise _interrupt.Cancelled
            _interrupt.check_stop()
            reported[0] += count
            self.advance(count)

        return tick, reported

    def advance(self, count: int) -> None:
        if self._progress is not None and count > 0:
            with self._lock:
                self._progress(count)


def run_tasks(tasks: Sequence[FileTask], workers: int, progress: Progress | None) -> list[int]:
    """Run tasks (largest first) on a pool of threads; on failure or interrupt stop them all,
    wait for them, remove every destination this run wrote, then raise.

    Threads, not processes: the library's AES-GCM and file I/O release the GIL, so a pool of
    threads uses every core, needs no re-import of ``__main__``, leaves no process behind, and
    a signal reaches only the main thread, which stops the workers between two 1 MiB blocks.
    """
    results: dict[int, int] = {}
    done_paths: list[Path] = []
    order = sorted(range(len(tasks)), key=lambda i: -tasks[i].size)
    control = _Control(progress)

    def call(index: int) -> int:
        task = tasks[index]
        tick, reported = control.for_task()
        if control.stop.is_set():
            raise _interrupt.Cancelled
        _interrupt.check_stop()
        value = task.function(*task.args, progress=tick)
        control.advance(task.size - reported[0])
        return value

    futures: dict[Future[int], int] = {}
    failure: BaseException | None = None
    pool: ThreadPoolExecutor | None = None
    try:
        # Starting the threads must not be cut short: a thread started by ``submit`` but not
        # yet registered by the executor would not be waited for.
        with _interrupt.deferred():
            pool = ThreadPoolExecutor(
                max_workers=max(1, min(workers, len(tasks))),
                thread_name_prefix="weightvault-crypt",
            )
            for i in order:
                futures[pool.submit(call, i)] = i
        pending = set(futures)
        while pending and failure is None:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                error = future.exception()
                if error is None:
                    results[futures[future]] = future.result()
                    done_paths.append(tasks[futures[future]].destination)
                elif not isinstance(error, _interrupt.Cancelled) and failure is None:
                    failure = error
    except BaseException as exc:  # Interrupted (a signal), or anything unexpected
        failure = exc
    finally:
        if failure is not None:
            control.stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if failure is None and len(results) < len(tasks):
        # Workers gave up (a stop was requested) before the main thread saw the signal.
        failure = _interrupt.Interrupted(_interrupt.pending_signal() or signal.SIGINT)
    if failure is None:
        return [results[i] for i in range(len(tasks))]
    # Tasks that finished while the others were being stopped wrote their outputs too.
    for future, i in futures.items():
        if future.done() and not future.cancelled() and future.exception() is None:
            if tasks[i].destination not in done_paths:
                done_paths.append(tasks[i].destination)
    for path in done_paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    raise failure


def check_workers(workers: int | None) -> int:
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError("workers must be a whole number, at least 1")
    return workers


def prepare_output_folder(folder: Path, *, force: bool, created: list[Path]) -> None:
    """Create the output folder (recorded in ``created``); refuse a non-empty one without
    ``force``."""
    if folder.exists():
        if not folder.is_dir():
            raise InputError(f"{folder}: exists and is not a folder")
        if any(folder.iterdir()) and not force:
            raise InputError(
                f"{folder}: folder exists and is not empty",
                hint="allow replacing its contents",
                remedy="overwrite",
            )
        return
    if not folder.parent.exists():
        raise InputError(f"{folder.parent}: folder does not exist; create it first")
    with _interrupt.deferred():
        folder.mkdir(mode=0o755)
        created.append(folder)
        _interrupt.record_created(folder)


def make_parents(root: Path, names: Iterable[str], created: list[Path]) -> None:
    """Create the sub-folders the outputs need, recording each one created (for clean-up)."""
    for name in names:
        folder = root
        for part in PurePosixPath(name).parts[:-1]:
            folder = folder / part
            if not folder.is_dir():
                with _interrupt.deferred():
                    folder.mkdir(exist_ok=True)
                    created.append(folder)
                    _interrupt.record_created(folder)


def remove_created(created: Sequence[Path]) -> None:
    """Remove the folders this run created, deepest first (they are empty by now)."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()
