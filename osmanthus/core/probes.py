"""Hooks the core calls where something worth counting happens, with no metrics library behind.

The audit log is part of what the SDK installs (a requester verifies entries and proofs), and the
SDK's base install has no Prometheus client. So core modules the SDK reaches report here, to a
sink that does nothing until a server process installs one (osmanthus.core.metrics installs its
own when it is imported). A sink's method must not raise: a failure to count never fails the
audit append that reported it.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

_log = logging.getLogger(__name__)


class ProbeSink(Protocol):
    """Where the core's hooks go: osmanthus.core.metrics counts them."""

    def audit_appended(self, log: str, count: int) -> None:
        """`count` entries made durable in the audit log whose file is named `log`."""

    def table_built(self, seconds: float) -> None:
        """One requester key's encryption tables built, in `seconds`."""


class CheckpointedLog(Protocol):
    """What a transparency log (osmanthus.core.logserver.LocalLog) shows for its checkpoint age."""

    @property
    def origin(self) -> str: ...


_sink: ProbeSink | None = None
_lock = threading.Lock()
#: the transparency logs open in this process (their checkpoint age is read at each scrape)
_logs: weakref.WeakSet[CheckpointedLog] = weakref.WeakSet()


def install(sink: ProbeSink | None) -> None:
    """Send the hooks to `sink` from now on (None: to nothing)."""
    global _sink
    _sink = sink


def audit_appended(log: str, count: int = 1) -> None:
    sink = _sink
    if sink is None:
        return
    try:
        sink.audit_appended(log, count)
    except Exception:  # counting never fails an append that is already durable
        _log.exception("the metrics sink failed to count an audit append")


def table_built(seconds: float) -> None:
    sink = _sink
    if sink is None:
        return
    try:
        sink.table_built(seconds)
    except Exception:  # counting never fails the build it counts
        _log.exception("the metrics sink failed to count a table build")


def log_opened(log: CheckpointedLog) -> None:
    """A transparency log starts: its checkpoint age is exported until `log_closed`."""
    with _lock:
        _logs.add(log)


def log_closed(log: CheckpointedLog) -> None:
    with _lock:
        _logs.discard(log)


def open_logs() -> tuple[CheckpointedLog, ...]:
    with _lock:
        return tuple(_logs)
