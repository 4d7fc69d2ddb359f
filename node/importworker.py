"""Reading and checking an import file, in the node's process or in a worker process of its own.

A live import's rows are read and checked in Python (node.importrows), a loop that holds the
interpreter lock for as long as the file takes (about 40 s for a million rows): in the node's
process it held up every query's Python work for as long, and a query's p99 grew by an order
of magnitude. A running node therefore hands the reading to one worker process at a lower CPU
priority (IMPORT_NICENESS): the node's own threads keep the lock and the cores to answer
queries, and the import takes what is left. The worker writes the staging file the node's
DuckDB then reads; what it sends back is the problems found and the number of rows.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import datetime
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node.importrows import (
    FILE_COLUMNS,
    REQUIRED_COLUMNS,
    STAGED_COLUMNS,
    ProblemList,
    Row,
    RowRules,
    RowValidator,
    read_table,
)
from osmanthus.core.errors import ImportRejected, InvalidArgument, OsmanthusError, Unavailable
from osmanthus.core.types import SubjectKind

#: how much lower than the node's the worker's CPU priority is (nice(2) increment): on a busy
#: machine the queries' threads run first and the import takes the cycles they leave
IMPORT_NICENESS: Final = 10
#: how often (rows read) the reading reports its progress
PROGRESS_EVERY: Final = 10_000
#: the worker's OOM score adjustment (proc(5)): the kernel's first choice when memory runs out
_OOM_SCORE_ADJ: Final = 1000
#: how often (seconds) an idle worker checks that the node's process still runs
_PARENT_WATCH_S: Final = 1.0
#: how often (seconds) the node passes on the worker's progress while it waits for it
_PROGRESS_POLL_S: Final = 0.5


@dataclass(frozen=True)
class StageJob:
    """One import file to read and check, and the staging file to write its rows into."""

    path: Path
    staging: Path
    rules: RowRules
    served: frozenset[SubjectKind]
    today: datetime.date


@dataclass(frozen=True)
class Staged:
    """What reading a file found: its problems (the first MAX_PROBLEMS, `more` only counted),
    the rows staged, and what a row is called in it (line, row)."""

    problems: list[tuple[int, str, str]]
    more: int
    staged: int
    unit: str

    def problem_list(self) -> ProblemList:
        problems = ProblemList()
        problems.extend(self.problems)
        problems.more += self.more
        return problems


def stage_file(job: StageJob, progress: Callable[[int], None] | None = None) -> Staged:
    """Read and check every row of `job.path`, writing the rows that name a record id into
    `job.staging` (STAGED_COLUMNS, CSV); a bad header raises ImportRejected at once."""
    rows, unit = read_table(job.path, columns=FILE_COLUMNS, required=REQUIRED_COLUMNS)
    if progress is not None:
        rows = _counted(rows, progress)
    validator = RowValidator(rules=job.rules, served=job.served, today=job.today, unit=unit)
    problems = ProblemList()
    staged = 0
    # "w" keeps the mode mkstemp gave the file (0600): personal data stays the node's
    with job.staging.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(STAGED_COLUMNS)

        def stage(values: tuple[object, ...]) -> None:
            nonlocal staged
            writer.writerow(values)
            staged += 1

        validator.validate(rows, problems, stage)
    return Staged(problems=list(problems), more=problems.more, staged=staged, unit=unit)


def _counted(rows: Iterator[Row], progress: Callable[[int], None]) -> Iterator[Row]:
    count = 0
    for row in rows:
        count += 1
        if count % PROGRESS_EVERY == 0:
            progress(count)
        yield row
    progress(count)


# -- the worker process ------------------------------------------------------------------------

# set in the worker by _start_worker: where it reports the rows read so far (a plain shared
# integer, no lock: one writer, and a lock held by a process killed mid-write would hang the
# other side for good)
_rows_read: ctypes.c_longlong | None = None
# and the node's process id: the worker ends when it does (checked at each progress report)
_parent = 0


def _start_worker(rows_read: ctypes.c_longlong, niceness: int, parent: int) -> None:
    global _rows_read, _parent
    _rows_read, _parent = rows_read, parent
    with contextlib.suppress(OSError):
        os.nice(niceness)
    # if a file (a Parquet bomb, say) exhausts the machine's memory, the kernel ends this
    # process rather than the node's: the import fails, the node keeps answering
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text(f"{_OOM_SCORE_ADJ}\n")
    # between files the worker waits on a queue whose pipe it holds both ends of, so it would
    # not notice the node's end: a watch of its own ends it then
    threading.Thread(target=_watch_parent, name="watch-node", daemon=True).start()


def _watch_parent() -> None:
    while True:
        time.sleep(_PARENT_WATCH_S)
        if os.getppid() != _parent:
            os._exit(1)


def _report(rows: int) -> None:
    assert _rows_read is not None
    _rows_read.value = rows
    if os.getppid() != _parent:
        # the node's process ended (killed mid-import): nobody waits for the rest of the file
        os._exit(1)


@dataclass(frozen=True)
class _Refused:
    """An error of ours raised in the worker, sent back as data: our errors take keyword
    arguments, which an exception does not keep through pickle."""

    kind: type[OsmanthusError]
    message: str
    field: str | None
    problems: list[tuple[int, str, str]] | None = None
    problem_count: int = 0

    def error(self) -> OsmanthusError:
        if self.problems is not None:
            return ImportRejected(
                self.message, problems=self.problems, problem_count=self.problem_count
            )
        try:
            return self.kind(self.message, field=self.field)
        except TypeError:  # a class of ours with a constructor of its own
            return InvalidArgument(self.message, field=self.field)


def _stage_in_worker(job: StageJob) -> Staged | _Refused:
    _report(0)
    try:
        return stage_file(job, _report)
    except ImportRejected as e:
        return _Refused(ImportRejected, e.message, e.field, e.problems, e.problem_count)
    except OsmanthusError as e:
        return _Refused(type(e), e.message, e.field)


class StagingWorker:
    """One worker process, started on first use, that reads and checks import files at a lower
    CPU priority; one file at a time (imports commit one at a time anyway)."""

    def __init__(self, *, niceness: int = IMPORT_NICENESS) -> None:
        self._niceness = niceness
        # spawn, not fork: the node's process runs gRPC's threads, which a fork does not copy
        self._context = multiprocessing.get_context("spawn")
        self._rows_read: ctypes.c_longlong = self._context.RawValue(ctypes.c_longlong, 0)
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None
        # set by close(): a file being read is abandoned, the worker ended
        self._closing = threading.Event()

    def stage(self, job: StageJob, progress: Callable[[int], None] | None = None) -> Staged:
        """stage_file(job) in the worker; `progress(rows)` hears of its progress from here."""
        with self._lock:
            if self._closing.is_set():
                raise Unavailable("the node is stopping; nothing was imported; send it again")
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=1,
                    mp_context=self._context,
                    initializer=_start_worker,
                    initargs=(self._rows_read, self._niceness, os.getpid()),
                )
            outcome = self._wait(self._executor, job, progress)
        if isinstance(outcome, _Refused):
            raise outcome.error()
        if progress is not None:
            progress(self._rows_read.value)
        return outcome

    def _wait(
        self,
        executor: ProcessPoolExecutor,
        job: StageJob,
        progress: Callable[[int], None] | None,
    ) -> Staged | _Refused:
        reported = -1
        try:
            future = executor.submit(_stage_in_worker, job)
            while True:
                try:
                    return future.result(timeout=_PROGRESS_POLL_S)
                except FutureTimeout:
                    if self._closing.is_set():
                        _end(executor)
                        raise Unavailable(
                            "the node is stopping; nothing was imported; send the file again"
                        ) from None
                    rows = int(self._rows_read.value)
                    if progress is not None and rows != reported:
                        reported = rows
                        progress(rows)
        except BrokenProcessPool:
            # killed (out of memory, say): the next import starts a new worker
            executor.shutdown(wait=False)
            self._executor = None
            raise Unavailable(
                "the node's import worker stopped while it read the file; nothing was "
                "imported; send the file again"
            ) from None

    def close(self) -> None:
        """End the worker; a file it is reading is abandoned (its import refused UNAVAILABLE)."""
        self._closing.set()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _end(executor: ProcessPoolExecutor) -> None:
    """Kill the executor's worker: a stopping node does not wait for the rest of a file."""
    for process in list(getattr(executor, "_processes", {}).values()):
        process.kill()
    executor.shutdown(wait=True, cancel_futures=True)


__all__ = ["IMPORT_NICENESS", "StageJob", "Staged", "StagingWorker", "stage_file"]
