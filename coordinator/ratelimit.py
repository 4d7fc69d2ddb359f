"""Per-requester rate limits from policy: how often a requester may be granted under a rule."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from osmanthus.core.errors import RateLimited
from osmanthus.core.policy import RateLimit

#: (requester, rule) pairs remembered at most; the least recently charged are dropped first
MAX_TRACKED = 100_000


class RateLimiter:
    """Sliding windows of grant times, per requester and rule, in this process's memory.

    A request reserves a place under every limit of the rules that allowed it, or none: if
    one has no room it is refused and nothing is counted. A request refused later (too few
    departments, a partial answer the policy refuses) gives its places back with `refund`,
    so only answers count, and requests in flight cannot overshoot the limit.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[tuple[str, str], deque[float]] = {}

    def charge(self, requester: str, limits: Sequence[RateLimit]) -> float | None:
        """Reserve a place under each limit; the stamp returned is what `refund` takes."""
        if not limits:
            return None
        now = self._clock()
        with self._lock:
            windows = []
            for limit in limits:
                key = (requester, limit.policy_id)
                window = self._grants.pop(key, None) or deque()
                self._grants[key] = window  # most recently used last
                while window and window[0] <= now - limit.period_s:
                    window.popleft()
                if len(window) >= limit.count:
                    wait = math.ceil(window[0] + limit.period_s - now)
                    raise RateLimited(
                        f"{requester} may be granted {limit.text} under rule "
                        f"'{limit.policy_id}' and has reached it; retry in {max(wait, 1)} s",
                        retry_after_s=max(wait, 1),
                    )
                windows.append(window)
            for window in windows:
                window.append(now)
            while len(self._grants) > MAX_TRACKED:
                del self._grants[next(iter(self._grants))]
        return now

    def refund(self, requester: str, limits: Sequence[RateLimit], stamp: float | None) -> None:
        """Give back the places a refused request reserved with `charge`."""
        if stamp is None:
            return
        with self._lock:
            for limit in limits:
                window = self._grants.get((requester, limit.policy_id))
                if window is not None and stamp in window:
                    window.remove(stamp)
