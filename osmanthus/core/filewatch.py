"""Following a file that another process replaces: poll its identity, hand on its new content.

Revocation lists (osmanthus.core.crl, osmanthus.core.denylist) are files an operator
replaces while the servers run. A `PolledFile` looks at the file's identity (inode, size,
modification and change times: one `stat` per poll, cheap) in a daemon thread and, when it
changed, reads the file and hands the bytes to its owner, which decides whether to put them in
force. Content already handed on (same SHA-256) is not handed on again, so a `touch` costs one
read and nothing more.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, NamedTuple

from osmanthus.core.errors import ConfigError

_log = logging.getLogger(__name__)

#: the poll intervals allowed, in seconds
MIN_POLL_S: Final = 0.05
MAX_POLL_S: Final = 60.0
#: a revocation list larger than this is refused unread (a CRL of 100,000 serials is ~3 MB)
MAX_FILE_BYTES: Final = 64 * 2**20


#: a content refused as dated ahead of the clock is offered again at most this often
RETRY_AHEAD_S: Final = 60.0


class AheadOfClock(ConfigError):
    """A list dated ahead of this server's clock: refused now, but the same content may be
    right once the clock has caught up (or been corrected), so it is offered again later."""


class FileIdentity(NamedTuple):
    """What a `stat` tells apart: a file replaced by rename gets a new inode."""

    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int


def read_limited(path: Path, *, field: str, what: str) -> bytes:
    """The whole file, refused (ConfigError naming `field`) when unreadable or too large."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"the {what} {path} does not exist", field=field) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}", field=field) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(
            f"the {what} {path} is larger than {MAX_FILE_BYTES // 2**20} MiB", field=field
        )
    return data


class PolledFile:
    """Polls `path` every `interval_s` seconds and calls `on_change(content)` when it changed.

    `on_change` decides and logs; an exception it raises is logged and the same content is
    offered again at the next change only. When it returns True (it refused the content as
    dated ahead of the clock, AheadOfClock) the same content is offered again after
    min(RETRY_AHEAD_S, the poll interval × 10), unchanged or not: time may make it acceptable.
    A file that cannot be read is reported to `on_unreadable` once per distinct problem.
    `started_with` is the SHA-256 of the content the owner already holds, so that the first
    poll does not offer it again. `on_poll` runs after every look, changed or not (to notice
    that what is in force went stale).
    """

    def __init__(
        self,
        *,
        path: Path,
        what: str,
        on_change: Callable[[bytes], bool | None],
        on_unreadable: Callable[[str], None],
        interval_s: float,
        started_with: str = "",
        on_poll: Callable[[], None] | None = None,
    ) -> None:
        if not math.isfinite(interval_s) or not MIN_POLL_S <= interval_s <= MAX_POLL_S:
            raise ConfigError(
                f"the {what} poll interval is {interval_s!r} seconds; give {MIN_POLL_S:g} to "
                f"{MAX_POLL_S:g}",
                field="poll",
            )
        self.path = path
        self._what = what
        self._on_change = on_change
        self._on_unreadable = on_unreadable
        self._on_poll = on_poll
        self._interval_s = interval_s
        self._identity: FileIdentity | None = None
        self._digest = started_with
        self._problem = ""
        # monotonic time at which content refused as dated ahead is offered again (0: none)
        self._retry_at = 0.0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> PolledFile:
        """Poll in a daemon thread; the first look is at once."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name=f"watch-{self.path.name}", daemon=True
            )
            self._thread.start()
        return self

    def wake(self) -> None:
        """Look at the file now rather than at the next poll."""
        self._wake.set()

    def close(self) -> None:
        """Stop polling; whatever is in force stays in force."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def check_now(self) -> None:
        """Look at the file once and hand on its content if it changed."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                self._unreadable(f"cannot read the {self._what} {self.path}: {exc.strerror}")
                return
            identity = FileIdentity(st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            retry = self._retry_at > 0 and time.monotonic() >= self._retry_at
            if identity == self._identity and not retry:
                return
            try:
                data = read_limited(self.path, field="path", what=self._what)
            except ConfigError as exc:
                self._unreadable(exc.message)
                return
            self._identity = identity
            self._problem = ""
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._digest and not retry:
                return
            self._digest = digest
            self._retry_at = 0.0
            if self._on_change(data):
                self._retry_at = time.monotonic() + min(RETRY_AHEAD_S, self._interval_s * 10)

    def _unreadable(self, problem: str) -> None:
        # once per problem: a file missing for an hour is one line, not 1,800
        self._identity = None
        if problem != self._problem:
            self._problem = problem
            self._on_unreadable(problem)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.check_now()
                if self._on_poll is not None:
                    self._on_poll()
            except Exception:  # the watcher must outlive anything: log it and keep polling
                _log.exception("%s %s: unexpected error while checking", self._what, self.path)
            self._wake.wait(self._interval_s)
            self._wake.clear()
