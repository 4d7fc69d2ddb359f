"""Waiting in tests for something to happen, however busy the machine is.

A test waits for an event (a file written, a state reached, a process gone), never for a fixed
time; the bound on a wait only stops a test that would otherwise hang. A wait returns as soon as
its event comes, so a generous bound costs nothing when all is well, and only a broken program,
not a slow machine, reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: the bound on a wait for something that takes a moment on an idle machine: long enough for a
#: machine with far more work than cores, short enough to stay within a test's pytest timeout
EVENT_TIMEOUT_S = 120.0


def wait_until(
    condition: Callable[[], object],
    *,
    what: str | Callable[[], str],
    timeout_s: float = EVENT_TIMEOUT_S,
    poll_s: float = 0.01,
) -> None:
    """Return once `condition()` is true; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            detail = what() if callable(what) else what
            raise AssertionError(f"not within {timeout_s:g} s: {detail}")
        time.sleep(poll_s)
