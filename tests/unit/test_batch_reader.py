"""The coordinator's read-ahead of a batch stream: order kept, errors passed on, idle closed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from coordinator.batch import SendWatchdog, _read_ahead
from osmanthus.core.errors import DeadlineExceeded, InvalidArgument
from osmanthus.core.wire.coordinator import SubjectChunk
from tests.waiting import EVENT_TIMEOUT_S


def _chunks(n: int) -> Iterator[SubjectChunk]:
    for i in range(n):
        yield SubjectChunk(i, (f"s{i}",))


def test_chunks_come_through_in_order() -> None:
    assert [c.chunk for c in _read_ahead(_chunks(50), 3, idle_s=5)] == list(range(50))


def test_an_error_in_the_clients_stream_reaches_the_consumer() -> None:
    def broken() -> Iterator[SubjectChunk]:
        yield SubjectChunk(0, ("a",))
        raise InvalidArgument("only the first message of a batch is a header", field="chunk")

    reader = _read_ahead(broken(), 3, idle_s=5)
    assert next(reader).chunk == 0
    with pytest.raises(InvalidArgument, match="header"):
        next(reader)


def test_a_silent_client_is_closed_after_the_idle_time() -> None:
    silence = threading.Event()

    def silent() -> Iterator[SubjectChunk]:
        yield SubjectChunk(0, ("a",))
        silence.wait(10)

    reader = _read_ahead(silent(), 3, idle_s=0.2)
    assert next(reader).chunk == 0
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"no chunk arrived for 0\.2 s") as caught:
        next(reader)
    assert caught.value.field == "chunk"
    assert time.monotonic() - started < 2
    silence.set()


def test_a_consumer_that_stops_early_stops_the_reader_thread() -> None:
    # the threads this test starts, by identity: other tests' threads may end meanwhile
    before = set(threading.enumerate())
    reader = _read_ahead(_chunks(10_000), 2, idle_s=5)
    next(reader)
    started = set(threading.enumerate()) - before
    assert started
    reader.close()
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while any(t.is_alive() for t in started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.is_alive() for t in started)


def test_the_send_watchdog_cancels_a_client_that_takes_nothing() -> None:
    cancelled = threading.Event()
    watchdog = SendWatchdog(cancelled.set, seconds=0.2)
    with watchdog:
        time.sleep(0.05)  # a client that reads: the hand-over is quick
    time.sleep(0.3)
    assert not cancelled.is_set() and not watchdog.fired
    with watchdog:
        assert cancelled.wait(EVENT_TIMEOUT_S)  # a client that stopped reading
    assert watchdog.fired
