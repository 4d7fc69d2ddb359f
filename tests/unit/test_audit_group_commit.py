"""Group commit on a failing disk: each append learns the outcome of its own batch, no other's.

The interleaving is played step by step, not left to timing: a trace function installed in each
appending thread pauses it where the test says (before its thread writes a batch; after it is
woken, before it takes the log's lock again) and reports where it is, and the test lets it go
on. The failure is real: a small tmpfs the test fills (tests/smalldisk.py).
"""

from __future__ import annotations

import queue
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from osmanthus.core import audit
from osmanthus.core.audit import AuditEntry, AuditLog, load_or_create_salt
from osmanthus.core.errors import Unavailable
from tests.smalldisk import fill, small_disk
from tests.waiting import EVENT_TIMEOUT_S

#: a full disk still takes entries into the last page of the log: at most this many fit there
PAGE_SLACK_ENTRIES = 64
FULL = "No space left on device"

#: where a thread is about to write a batch (outside the log's lock)
_WRITE = audit._write_durably.__code__
#: where a waiting thread, woken, takes a Condition's lock again (a plain Lock's Condition
#: uses these Python methods of its own)
_WOKEN = threading.Condition._acquire_restore.__code__  # type: ignore[attr-defined]
#: where a thread starts to wait on a Condition (its lock still held, its waiter registered)
_WAITING = threading.Condition._release_save.__code__  # type: ignore[attr-defined]


class _Steps:
    """Pauses the thread it traces at the points the test holds, and reports every point."""

    def __init__(self, name: str, log: AuditLog, reports: _Reports) -> None:
        self.name = name
        self._changed = log._changed
        self._reports = reports
        self.hold_write = True
        self.hold_woken = False
        self._resume: queue.Queue[None] = queue.Queue()

    def resume(self) -> None:
        self._resume.put(None)

    def trace(self, frame: FrameType, event: str, _arg: Any) -> None:
        # tracing is off inside this function: the queues below are not traced
        if event != "call":
            return
        code = frame.f_code
        if code is _WRITE:
            self._reports.put((self.name, "writing"))
            if self.hold_write:
                self._resume.get(timeout=EVENT_TIMEOUT_S)
        elif code in (_WOKEN, _WAITING) and frame.f_locals.get("self") is self._changed:
            self._reports.put((self.name, "woken" if code is _WOKEN else "waiting"))
            if code is _WOKEN and self.hold_woken:
                self._resume.get(timeout=EVENT_TIMEOUT_S)


def _entry(log: AuditLog, query_id: str) -> AuditEntry:
    return AuditEntry(
        time=datetime(2026, 11, 26, 10, 0, tzinfo=UTC),
        query_id=query_id,
        requester="agency-1",
        purpose="loan_underwriting",
        consent_id="cns_abcdefghijklmnopqrstuv",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted",
        shape="breakdown",
        subject_hash=log.subject_hash("110101199003074578"),
    )


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk", size_bytes=256 * 1024) as mounted:
        yield mounted


def _open(directory: Path) -> AuditLog:
    return AuditLog(
        path=directory / "audit.jsonl", salt=load_or_create_salt(directory / "audit.salt")
    )


def _fill_the_log(log: AuditLog, disk: Path) -> tuple[Path, list[str]]:
    """Fill the disk and the log's last page: (the filler, the ids that still fitted)."""
    filler = fill(disk)
    written: list[str] = []
    for n in range(PAGE_SLACK_ENTRIES):
        try:
            log.append(_entry(log, f"slack_{n}"))
        except Unavailable:
            return filler, written
        written.append(f"slack_{n}")
    raise AssertionError(f"{PAGE_SLACK_ENTRIES} entries fitted on a full disk")


class _Reports:
    """Every (thread, point) the traced threads reported, in order; waits for counts of them."""

    def __init__(self) -> None:
        self._seen: list[tuple[str, str]] = []
        self._changed = threading.Condition()

    def put(self, report: tuple[str, str]) -> None:
        with self._changed:
            self._seen.append(report)
            self._changed.notify_all()

    def wait_for(self, name: str, point: str, times: int = 1) -> None:
        with self._changed:
            if not self._changed.wait_for(
                lambda: self._seen.count((name, point)) >= times, timeout=EVENT_TIMEOUT_S
            ):
                raise AssertionError(
                    f"not within {EVENT_TIMEOUT_S:g} s: {name} {point} x{times}; seen {self._seen}"
                )

    def first(self, point: str, names: set[str]) -> str:
        """The first of `names` to report `point`, once one has."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: [n for n, p in self._seen if p == point and n in names],
                timeout=EVENT_TIMEOUT_S,
            )
            if not found:
                raise AssertionError(f"not within {EVENT_TIMEOUT_S:g} s: {names} {point}")
            return found[0]


def test_a_waiter_whose_batch_failed_is_refused_even_after_a_later_batch_was_written(
    disk: Path,
) -> None:
    """A batch of two lines fails on a full disk; before its waiter takes the lock again,
    space is freed and another entry is written. The waiter must still be refused: its line
    is not in the log (it used to see the later entry durable and answer without its own)."""
    log = _open(disk)
    log.append(_entry(log, "before"))
    filler, slack = _fill_the_log(log, disk)
    reports = _Reports()
    steps = {name: _Steps(name, log, reports) for name in ("zero", "a", "c")}
    outcomes: dict[str, str] = {}

    def append(name: str) -> None:
        sys.settrace(steps[name].trace)
        try:
            log.append(_entry(log, name))
            outcomes[name] = "written"
        except Unavailable as refused:
            outcomes[name] = str(refused)
        finally:
            sys.settrace(None)

    threads = {name: threading.Thread(target=append, args=(name,)) for name in steps}
    # "zero" takes the log and is held before writing its batch of one line
    threads["zero"].start()
    reports.wait_for("zero", "writing")
    # "a" and "c" queue behind it: one batch of two lines
    threads["a"].start()
    threads["c"].start()
    reports.wait_for("a", "waiting")
    reports.wait_for("c", "waiting")
    steps["zero"].resume()
    # zero's batch fails; one of a, c takes their batch and is held before writing it
    writer = reports.first("writing", {"a", "c"})
    waiter = "c" if writer == "a" else "a"
    threads["zero"].join()
    # the other one waits again, for the batch that holds its line
    reports.wait_for(waiter, "waiting", times=2)
    steps[waiter].hold_woken = True
    steps[writer].resume()
    # their batch fails; its waiter is woken and held before it takes the lock again
    reports.wait_for(waiter, "woken", times=2)
    threads[writer].join()
    assert outcomes[writer].startswith(f"this server cannot write its audit log: {FULL}")
    # meanwhile the disk takes writes again and a later entry is written
    filler.unlink()
    log.append(_entry(log, "later"))
    steps[waiter].resume()
    threads[waiter].join()
    refusal = f"this server cannot write its audit log: {FULL}; it answers nothing until it can"
    assert outcomes == {"zero": refusal, "a": refusal, "c": refusal}
    # and indeed none of the three is in the log
    assert [e.query_id for e in log.entries()] == ["before", *slack, "later"]
    assert log.failure is None
    log.close()


def test_watchers_follow_the_log_failing_and_recovering(disk: Path) -> None:
    log = _open(disk)
    seen: list[str | None] = []
    log.watch(seen.append)
    assert seen == [None]  # told the state at once
    log.append(_entry(log, "before"))
    filler, _ = _fill_the_log(log, disk)
    with pytest.raises(Unavailable):
        log.append(_entry(log, "still_full"))
    assert seen == [None, FULL]  # once per change, not once per refused entry
    filler.unlink()
    log.append(_entry(log, "after"))
    log.append(_entry(log, "after_2"))
    assert seen == [None, FULL, None]
    log.close()
