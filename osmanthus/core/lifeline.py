"""Process pools whose worker processes die with the process that owns them.

A pool's workers hold what their owner gave them (a requester's Paillier private key, a secret
blinding table), so they must not outlive it. A plain `ProcessPoolExecutor` does not see its
owner die: after a `kill -9` of the owner its workers wait for work for ever, re-parented to
init, because each worker holds both ends of the pool's queues (so it never reads end-of-file
on them). With the fork server each worker also holds the fork server's "alive" pipe and the
resource tracker's pipe, so neither of those two helpers ever reads end-of-file either: four
processes stay, two of them with the key.

The lifeline: the owner makes a pipe and keeps its write end to itself; every worker receives
the read end and starts a thread that blocks reading it. No one ever writes, so the read
returns (end-of-file) exactly when the last descriptor of the write end is closed, which the
kernel does when the owner dies, however it dies. The worker then exits at once. Once the
workers are gone, the fork server reads end-of-file on its alive pipe and exits, and so does
the resource tracker: nothing of the pool is left. A pipe's end-of-file works wherever Python
runs (Linux, macOS, Windows), so there is no platform-specific path to keep in step.

Why not Linux's parent-death signal (prctl(PR_SET_PDEATHSIG)): a worker's parent is the fork
server, not the owner, so the signal would follow the fork server, which itself only exits
after the workers (above); and the signal is sent when the parent *thread* ends, while a pool
starts its processes from whichever thread first submits work (a gRPC handler thread in the
coordinator), so the fork server would be killed with a thread that merely finished.

The write end must stay in the owner alone. It is created non-inheritable (so no exec'd child
gets it), and a child made by `os.fork` without exec closes it at once (`os.register_at_fork`):
otherwise a long-lived forked child would keep the workers alive after the owner died.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

#: a worker's exit status when its owner is gone (EX_SOFTWARE); no one is left to read it, but a
#: process listing of the moment shows it apart from a normal exit (0)
OWNER_GONE_EXIT_CODE = 70
#: the name of a worker's lifeline thread, as shown by debuggers and py-spy
LIFELINE_THREAD_NAME = "osmanthus-lifeline"

_R = TypeVar("_R")


def pool_context() -> multiprocessing.context.BaseContext:
    """The way a pool starts its processes: a fork server where there is one, else spawn."""
    # not "fork": the owner runs gRPC threads, and forking a threaded process can deadlock the
    # child; a fork server is a fresh interpreter, and workers forked from it start in ~10 ms
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


class OwnedPool:
    """A process pool whose workers exit as soon as the process that made it dies.

    `initializer(*initargs)` runs in each worker after its lifeline is in place, as with
    `ProcessPoolExecutor`. `shutdown` stops the workers; with `wait=False` they are stopped at
    once, even in the middle of a task (cut off, not drained), which is what an owner that drops
    a pool holding a key wants.
    """

    def __init__(
        self,
        *,
        workers: int,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        context = pool_context()
        # the read end goes to every worker (duplicated for it when it starts), the write end
        # nowhere: this process holds the only copy
        self._reader, self._writer = context.Pipe(duplex=False)
        self._cut_lock = threading.Lock()
        self._executor = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=context,
            initializer=_start_worker,
            initargs=(self._reader, initializer, initargs),
        )
        _owned.add(self)

    def map(self, fn: Callable[..., _R], *iterables: Iterable[Any]) -> Iterator[_R]:
        """`ProcessPoolExecutor.map`: `fn` over the iterables on the workers, results in order."""
        return self._executor.map(fn, *iterables)

    def pids(self) -> list[int]:
        """Process ids of the workers started so far (they start with the first tasks)."""
        # the executor keeps its processes by pid; None once it has shut down
        processes = self._executor._processes
        return sorted(processes) if processes else []

    def shutdown(self, *, wait: bool, cancel_futures: bool = False) -> None:
        """Stop the workers: after the tasks in progress (`wait`), or at once."""
        try:
            self._executor.shutdown(wait=wait, cancel_futures=cancel_futures)
        finally:
            self._cut()

    def _cut(self) -> None:
        # closing the only write end is end-of-file in every worker: each one exits
        with self._cut_lock:
            self._writer.close()
            self._reader.close()
        _owned.discard(self)

    def _close_in_forked_child(self) -> None:
        # no lock: another thread of the parent may have held it when the fork happened, and
        # the child has only this thread
        self._writer.close()


#: the pools of this process with their write ends open, for `_after_fork_in_child`
_owned: weakref.WeakSet[OwnedPool] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """Close every lifeline's write end in a child made by `os.fork` (a copy it must not hold)."""
    for pool in list(_owned):
        pool._close_in_forked_child()
    _owned.clear()


if hasattr(os, "register_at_fork"):  # POSIX; on Windows no process is forked
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _start_worker(
    lifeline: Connection,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> None:
    """A worker's first step: watch the lifeline, then the pool's own initializer."""
    threading.Thread(
        target=_exit_with_owner, args=(lifeline,), name=LIFELINE_THREAD_NAME, daemon=True
    ).start()
    # an owner that died before this line already closed the write end: the thread reads
    # end-of-file at once, so there is no moment in which a death goes unseen
    if initializer is not None:
        initializer(*initargs)


def _exit_with_owner(lifeline: Connection) -> None:
    """Block until the owner's write end closes, then end this worker process at once."""
    # EOFError is the owner's death; OSError a lifeline already closed in this process
    with contextlib.suppress(EOFError, OSError):
        lifeline.recv_bytes()
    # os._exit, not sys.exit: nothing is flushed or joined on the way out (the owner is gone,
    # and a worker that waited for its queues' threads could wait for ever), and the main
    # thread may be in the middle of a task with the key
    os._exit(OWNER_GONE_EXIT_CODE)
