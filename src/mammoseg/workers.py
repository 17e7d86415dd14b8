"""Worker processes that outlive a crash: a task that kills its worker fails alone.

`ProcessPoolExecutor` breaks as a whole when one worker dies (out of memory, a segfault in a
decoder), failing every pending task. Here each worker has its own pipe and takes one task
at a time, so the parent always knows which task a dead worker was on: that task is
reported as failed, a fresh worker replaces the dead one, and the rest go on.
Workers are spawned (not forked), so they start clean whatever threads the parent runs.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any


@dataclass
class TaskResult:
    """The outcome of task `index`: its return value, or why its worker died."""

    index: int
    value: Any = None
    worker_died: str = ""


def _serve(conn: Connection, fn: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
    """A worker's loop: receive (index, task), send back (index, fn(task)); None ends it."""
    if initializer is not None:
        initializer()
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        index, task = message
        conn.send((index, fn(task)))


def _death_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name if -exitcode in signal.valid_signals() else str(-exitcode)
        why = " (e.g. by the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"worker process was killed by {name}{why}"
    return f"worker process died (exit code {exitcode})"


class _Worker:
    def __init__(self, ctx: Any, fn: Callable[[Any], Any], initializer: Callable[[], None] | None) -> None:
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_serve, args=(child, fn, initializer), daemon=True)
        self.process.start()
        child.close()
        self.current: int | None = None

    def give(self, pending: deque) -> bool:
        """Send the next task (True), or tell the worker to stop (False)."""
        if not pending:
            self.current = None
            with contextlib.suppress(OSError):  # a worker that already died needs no goodbye
                self.conn.send(None)
            return False
        index, task = pending.popleft()
        try:
            self.conn.send((index, task))
            self.current = index
        except OSError:  # it died after its last result: the task goes back, the death is reaped below
            pending.appendleft((index, task))
            self.current = None
        return True


def run_tasks(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int,
    initializer: Callable[[], None] | None = None,
) -> Iterator[TaskResult]:
    """`fn(task)` for every task in `workers` spawned processes, yielded as they finish."""
    ctx = multiprocessing.get_context("spawn")
    pending: deque = deque(enumerate(tasks))
    pool = [_Worker(ctx, fn, initializer) for _ in range(min(workers, len(tasks)))]
    busy = [w for w in pool if w.give(pending)]
    try:
        while busy:
            waitables = {w.conn: w for w in busy} | {w.process.sentinel: w for w in busy}
            for ready in wait(list(waitables)):
                worker = waitables[ready]
                if worker not in busy:
                    continue
                if worker.conn.poll():
                    try:
                        index, value = worker.conn.recv()
                    except EOFError:  # the pipe closed under a dying worker
                        index, value = None, None
                    if index is not None:
                        yield TaskResult(index, value)
                        if not worker.give(pending):
                            busy.remove(worker)
                        continue
                if not worker.process.is_alive():
                    worker.process.join()
                    if worker.current is not None:
                        yield TaskResult(worker.current, worker_died=_death_reason(worker.process.exitcode))
                    busy.remove(worker)
                    if pending:
                        fresh = _Worker(ctx, fn, initializer)
                        pool.append(fresh)
                        if fresh.give(pending):
                            busy.append(fresh)
    finally:
        for worker in pool:
            if worker.process.is_alive():
                worker.process.terminate()
            worker.process.join()
            worker.conn.close()
