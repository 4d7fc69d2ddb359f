"""A live import stays out of the queries' way: lookups during a commit read the state before it
(without waiting for the commit), and the rows are read and checked in a worker process of lower
CPU priority whose refusals, progress and failures reach the node as its own would."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from node.importrows import RowRules
from node.importworker import IMPORT_NICENESS, StageJob, StagingWorker, stage_file
from node.store import FILE_COLUMNS, FROZEN_READERS, RecordStore
from osmanthus.core.errors import ImportRejected, InvalidArgument, Unavailable
from tests.unit.test_store import CATALOGUE, PERSON, TAX, TAX_RULES, TODAY, good_row, pid, write_csv
from tests.waiting import EVENT_TIMEOUT_S, wait_until


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore(tmp_path / "tax.duckdb", department=TAX) as s:
        s.import_file(
            write_csv(tmp_path / "base.csv", [good_row(i) for i in range(1, 4)]),
            rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY,
        )  # fmt: skip
        yield s


@pytest.fixture
def worker() -> Iterator[StagingWorker]:
    w = StagingWorker()
    try:
        yield w
    finally:
        w.close()


def _file(path: Path, rows: list[list[str]]) -> Path:
    return write_csv(path, rows, header=list(FILE_COLUMNS))


def _job(path: Path, staging: Path) -> StageJob:
    return StageJob(
        path=path,
        staging=staging,
        rules=RowRules.of(TAX_RULES),
        served=CATALOGUE.department(TAX).subject_kinds,
        today=TODAY,
    )


# -- lookups during a commit -------------------------------------------------------------------


def test_lookups_while_a_write_commits_read_the_state_before_it(store: RecordStore) -> None:
    before = store.records_for(PERSON, pid(1))
    assert len(before) == 1
    with store._readers_frozen():
        # a write that commits while the readers are frozen (as an import's commit does)
        store._writer.execute("DELETE FROM records WHERE subject_id = ?", [pid(1)])
        assert store.records_for(PERSON, pid(1)) == before
        with store.snapshot():
            assert store.count() == 3
    # the next lookup after the commit reads the new state
    assert store.records_for(PERSON, pid(1)) == []
    assert store.count() == 2


def test_more_concurrent_lookups_than_snapshots_all_read_the_state_before(
    store: RecordStore,
) -> None:
    threads = FROZEN_READERS * 3
    counts: list[int] = []
    started = threading.Barrier(threads + 1)

    def look() -> None:
        started.wait()
        for _ in range(20):
            counts.append(store.count())

    lookers = [threading.Thread(target=look) for _ in range(threads)]
    for t in lookers:
        t.start()
    with store._readers_frozen():
        store._writer.execute("DELETE FROM records")
        started.wait()
        for t in lookers:
            t.join()
    assert counts == [3] * threads * 20
    assert store.count() == 0


def test_a_snapshot_taken_during_a_commit_outlives_it(store: RecordStore) -> None:
    with store._readers_frozen():
        store._writer.execute("DELETE FROM records")
        pinned = store.snapshot()
        pinned.__enter__()
    try:
        # the commit is over; the snapshot pinned during it still reads the state before
        assert store.count() == 3
    finally:
        pinned.__exit__(None, None, None)
    assert store.count() == 0


def test_a_lookup_waiting_for_a_snapshot_goes_on_when_the_commit_ends(store: RecordStore) -> None:
    counts: list[int] = []
    with store._readers_frozen():
        store._writer.execute("DELETE FROM records")
        # every snapshot taken: a lookup now waits for one back, or for the commit to end
        taken = [store._open_reader() for _ in range(FROZEN_READERS)]
        waiting = threading.Thread(target=lambda: counts.append(store.count()))
        waiting.start()
    waiting.join(timeout=EVENT_TIMEOUT_S)
    assert not waiting.is_alive()
    assert counts == [0]
    for cursor, frozen in taken:
        store._close_reader(cursor, frozen, reuse=True)  # closed: the commit is over
    assert store.count() == 0


def test_a_lookup_that_fails_during_a_commit_does_not_spoil_the_next(store: RecordStore) -> None:
    with store._readers_frozen():
        store._writer.execute("DELETE FROM records")
        # a statement that fails inside a frozen snapshot aborts its transaction: that
        # snapshot is given up, and the next lookup reads another one
        for given_up in range(1, FROZEN_READERS + 1):
            with pytest.raises(duckdb.Error):
                store._read("SELECT CAST('x' AS INTEGER) FROM meta", [])
            if given_up < FROZEN_READERS:
                assert store.count() == 3
        # every snapshot given up: lookups start transactions of their own (after the commit)
        assert store.count() == 0


def test_the_wal_is_checkpointed_although_readers_are_frozen_at_each_commit(
    tmp_path: Path,
) -> None:
    def wal_bytes() -> int:
        wal = tmp_path / "tax.duckdb.wal"
        return wal.stat().st_size if wal.exists() else 0

    rows = [[*good_row(i), "", ""] for i in range(1, 200)]
    corrections = [[*good_row(i)[:5], "2024-04-01", "", "", "correct", "date fixed"]
                   for i in range(1, 200) if i % 3]  # fmt: skip
    for threshold, expect_checkpoint in ((1 << 40, False), (1, True)):
        db = tmp_path / "tax.duckdb"
        for leftover in (db, tmp_path / "tax.duckdb.wal"):
            leftover.unlink(missing_ok=True)
        with RecordStore(db, department=TAX, checkpoint_wal_bytes=threshold) as store:
            for name, file_rows in (("add.csv", rows), ("fix.csv", corrections)):
                store.import_file(_file(tmp_path / name, file_rows), rules=TAX_RULES,
                                  catalogue=CATALOGUE, today=TODAY)  # fmt: skip
            # DuckDB left the WAL alone (the positive control), or the store checkpointed
            assert (wal_bytes() == 0) is expect_checkpoint, (threshold, wal_bytes())


def test_an_import_commits_and_is_seen_whole_by_the_next_lookup(
    store: RecordStore, tmp_path: Path
) -> None:
    rows = [[*good_row(i), "", ""] for i in range(10, 40)]
    store.import_file(_file(tmp_path / "more.csv", rows), rules=TAX_RULES, catalogue=CATALOGUE,
                      today=TODAY)  # fmt: skip
    assert store.count() == 33
    with store._lock:
        assert store._frozen is None  # nothing left frozen after the commit


# -- the worker process -----------------------------------------------------------------------


def test_the_worker_stages_what_the_node_would_and_reports_progress(
    tmp_path: Path, worker: StagingWorker
) -> None:
    # more rows than one progress report: 25,000 rows about 1,000 persons
    rows = [[f"R-{i}", *good_row(i % 1_000 + 1)[1:], "", ""] for i in range(25_000)]
    path = _file(tmp_path / "big.csv", rows)
    here = stage_file(_job(path, tmp_path / "here.csv"))
    heard: list[int] = []
    there = worker.stage(_job(path, tmp_path / "there.csv"), heard.append)
    assert there == here and there.staged == 25_000 and not there.problems
    assert (tmp_path / "there.csv").read_bytes() == (tmp_path / "here.csv").read_bytes()
    assert heard and heard[-1] == 25_000 and heard == sorted(heard)


def test_the_workers_refusals_are_the_nodes_own(tmp_path: Path, worker: StagingWorker) -> None:
    nobody = ["T-2", "person", "nobody", "tax_arrears", "1", "2024-03-01", "", "", "", ""]
    bad = _file(tmp_path / "bad.csv", [[*good_row(1), "", ""], nobody])
    staged = worker.stage(_job(bad, tmp_path / "s.csv"))
    assert [(line, field) for line, field, _ in staged.problems] == [(3, "subject_id")]
    header = write_csv(tmp_path / "header.csv", [good_row(1)], header=["record_id", "colour"])
    with pytest.raises(ImportRejected) as caught:
        worker.stage(_job(header, tmp_path / "s2.csv"))
    assert any(field == "colour" for _, field, _ in caught.value.problems)
    with pytest.raises(InvalidArgument, match="extension"):
        worker.stage(_job(tmp_path / "rows.txt", tmp_path / "s3.csv"))


def test_the_worker_runs_at_a_lower_cpu_priority(tmp_path: Path, worker: StagingWorker) -> None:
    worker.stage(_job(_file(tmp_path / "one.csv", [[*good_row(1), "", ""]]), tmp_path / "s.csv"))
    assert worker._executor is not None
    (pid_,) = worker._executor._processes
    mine = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, pid_) == min(mine + IMPORT_NICENESS, 19)


def test_a_worker_that_dies_refuses_that_import_and_the_next_starts_a_new_one(
    tmp_path: Path, worker: StagingWorker
) -> None:
    path = _file(tmp_path / "one.csv", [[*good_row(1), "", ""]])
    worker.stage(_job(path, tmp_path / "s.csv"))
    assert worker._executor is not None
    (pid_,) = worker._executor._processes
    os.kill(pid_, 9)
    wait_until(lambda: _gone(pid_), what="the worker process to end")
    with pytest.raises(Unavailable, match="import worker stopped"):
        worker.stage(_job(path, tmp_path / "s2.csv"))
    assert worker.stage(_job(path, tmp_path / "s3.csv")).staged == 1


_IDLE_PARENT = """
import sys, time
from pathlib import Path
from tests.unit.test_import_isolation import StagingWorker, _file, _job, good_row
tmp = Path(sys.argv[1])
worker = StagingWorker()
worker.stage(_job(_file(tmp / "one.csv", [[*good_row(1), "", ""]]), tmp / "s.csv"))
print(*worker._executor._processes, flush=True)
time.sleep(3600)  # killed by the test
"""


def test_an_idle_worker_ends_when_the_nodes_process_is_killed(tmp_path: Path) -> None:
    node = subprocess.Popen(
        [sys.executable, "-c", _IDLE_PARENT, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert node.stdout is not None
        (worker_pid,) = (int(w) for w in node.stdout.readline().split())
        node.kill()
    finally:
        node.wait()
    wait_until(lambda: _gone(worker_pid), what="the idle worker to end with its node")


def test_a_closed_worker_stages_nothing(tmp_path: Path) -> None:
    worker = StagingWorker()
    worker.close()
    with pytest.raises(Unavailable, match="stopping"):
        worker.stage(_job(tmp_path / "x.csv", tmp_path / "s.csv"))


def test_closing_the_worker_abandons_the_file_it_reads(tmp_path: Path) -> None:
    # a file that never ends: a pipe the test writes into and keeps open
    fifo = tmp_path / "endless.csv"
    os.mkfifo(fifo)
    worker = StagingWorker()
    heard = threading.Event()
    outcome: list[BaseException] = []

    def progress(rows: int) -> None:
        if rows:
            heard.set()

    def stage() -> None:
        try:
            worker.stage(_job(fifo, tmp_path / "s.csv"), progress)
        except BaseException as e:  # the outcome is what the test checks
            outcome.append(e)

    staging = threading.Thread(target=stage)
    staging.start()
    with fifo.open("w", encoding="utf-8") as pipe:
        pipe.write(",".join(FILE_COLUMNS) + "\n")
        for i in range(20_000):
            pipe.write(",".join([f"R-{i}", *good_row(i % 1_000 + 1)[1:], "", ""]) + "\n")
        pipe.flush()
        assert heard.wait(EVENT_TIMEOUT_S), "no progress from the worker"
        worker.close()
        staging.join(timeout=EVENT_TIMEOUT_S)
        assert not staging.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], Unavailable)
    assert "stopping" in str(outcome[0])


def _gone(pid_: int) -> bool:
    try:
        os.kill(pid_, 0)
    except ProcessLookupError:
        return True
    # a zombie until the pool reaps it: its state says so
    try:
        return Path(f"/proc/{pid_}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
