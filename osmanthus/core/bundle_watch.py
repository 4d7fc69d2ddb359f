"""Servers following a signed policy bundle file: start-up, hot reload, rollback guard, SIGHUP.

A server given a bundle verifies it at start (osmanthus.core.bundle; it refuses to start if that
fails), then polls the file. A new bundle is put in force only if it verifies (a trusted
publisher key, this server's scope, a valid policy), has a higher serial than the bundle in
force and was not published before it; anything else is logged and the policy in force stays.
A node reads two scopes ("node" and its own "node:<department>") as one sequence: serials and
publication times must keep increasing across both, so an old bundle of one scope cannot be
replayed over a newer bundle of the other. The bundle in force is recorded in the server's state
directory, so a restart does not accept an older bundle either.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import json
import logging
import math
import os
import re
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from osmanthus.core.bundle import (
    DEFAULT_POLL_S,
    VerifiedBundle,
    check_scope,
    load_trusted_keys,
    read_bundle_file,
    reader_scopes,
    scope_accepts,
    short_repr,
    verify_bundle,
)
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import PRIVATE_FILE_MODE, write_atomically
from osmanthus.core.policy import ReloadablePolicy

_log = logging.getLogger(__name__)

#: the poll interval allowed: often enough to be cheap, rarely enough that a change is noticed
MIN_POLL_S: Final = 0.05
MAX_POLL_S: Final = 3600.0
#: how far ahead of a server's clock a bundle's publication time may be; a bundle dated far in the
#: future would, once in force, make every correctly dated bundle after it look older
MAX_CLOCK_AHEAD: Final = timedelta(hours=1)
#: the scope, serial, hash and publication time of the last bundle a server put in force, kept
#: in its state directory so that a restart does not accept an older bundle (a rollback) either
STATE_FILE_NAME: Final = "policy-bundle.state"

_HEX64 = re.compile(r"[0-9a-f]{64}")


# --- which bundle may replace the one in force ----------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BundleRecord:
    """What a server remembers of the bundle in force, in memory and in its state file."""

    scope: str
    serial: int
    hash: str
    #: when it was signed; None in a state file written before publication times were kept
    created_at: datetime | None

    @classmethod
    def of(cls, bundle: VerifiedBundle) -> BundleRecord:
        return cls(
            scope=bundle.scope,
            serial=bundle.serial,
            hash=bundle.hash,
            created_at=bundle.created_at,
        )

    def describe(self) -> str:
        """e.g. "'node:tax' serial 3 (published 2026-11-26T09:30:00+00:00, hash 1f2e…)"."""
        published = f"published {self.created_at.isoformat()}, " if self.created_at else ""
        return f"{self.scope!r} serial {self.serial} ({published}hash {self.hash[:16]}…)"


def check_succession(
    in_force: BundleRecord, new: VerifiedBundle, *, now: datetime | None = None
) -> bool:
    """Whether `new` may replace the bundle in force: True to install it, False when it is that
    same bundle; ConfigError when it is not newer.

    Newer means a higher serial and a publication time no earlier than the bundle in force,
    whatever the two scopes: a node reads "node" and "node:<department>" bundles as one
    sequence, so an old bundle of one scope with a high serial must not displace a newer bundle
    of the other. With `now` (a server's clock), a bundle dated more than MAX_CLOCK_AHEAD in the
    future is refused too: once in force it would make every correctly dated bundle look older.
    """
    if new.hash == in_force.hash:
        return False
    shown = in_force.describe()
    if new.scope != in_force.scope:
        sequence = (
            f"; this server reads {in_force.scope!r} and {new.scope!r} bundles as one sequence, "
            f"so a bundle for either scope needs a serial above {in_force.serial} and a later "
            "publication time"
        )
    else:
        sequence = ""
    if new.serial < in_force.serial:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) is older than the bundle in force, "
            f"{shown}: a rollback is refused; to restore an old policy, publish it again with a "
            f"serial above {in_force.serial}{sequence}",
            field="serial",
        )
    if new.serial == in_force.serial:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) is the serial of the bundle in force, "
            f"{shown}, but the content differs (hash {new.hash[:16]}…): every new bundle needs "
            f"a higher serial{sequence}",
            field="serial",
        )
    if in_force.created_at is not None and new.created_at < in_force.created_at:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) was published "
            f"{new.created_at.isoformat()}, before the bundle in force, {shown}: an old bundle "
            "is refused even with a higher serial (it may be a superseded bundle replayed); if "
            "it is new, the clock of the machine that published it is behind: set it right and "
            f"publish again with a serial above {new.serial}",
            field="created_at",
        )
    if now is not None and new.created_at > now + MAX_CLOCK_AHEAD:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) was published "
            f"{new.created_at.isoformat()}, more than {_hours(MAX_CLOCK_AHEAD)} after this "
            f"server's clock ({now.astimezone(UTC).isoformat(timespec='seconds')}): the clock of "
            "the publishing machine or of this server is wrong; a bundle from the future would "
            "make every later, correctly dated bundle look older. Set the clock right and "
            f"publish again with a serial above {new.serial}",
            field="created_at",
        )
    return True


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return "1 hour" if hours == 1 else f"{hours:g} hours"


# --- hot reload -----------------------------------------------------------------------------------


class ReloadStatus(enum.StrEnum):
    """What a look at the bundle file did: put a new bundle in force, nothing, or refused it."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ReloadOutcome:
    """What the last look at a bundle file found; `serial`/`hash` are the bundle in force."""

    status: ReloadStatus
    path: Path
    serial: int
    hash: str
    reason: str
    at: datetime


def check_poll_interval(value: float) -> float:
    """`value` if it is a usable bundle poll interval in seconds, else ConfigError."""
    if not math.isfinite(value) or not MIN_POLL_S <= value <= MAX_POLL_S:
        raise ConfigError(
            f"the bundle poll interval is {value!r} seconds; give a number of seconds from "
            f"{MIN_POLL_S:g} to {MAX_POLL_S:g} (SIGHUP makes a server look at once whatever it is)",
            field="policy_poll",
        )
    return value


def _read_record(path: Path) -> BundleRecord | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="state_dir") from exc
    damaged = (
        f"{path} is damaged: it holds the bundle last in force, which guards against rollbacks; "
        "restore it from backup, or delete it once you are sure the bundle file is the newest "
        "one published"
    )
    try:
        value = json.loads(text)
        serial, bundle_hash, scope = value["serial"], value["hash"], value["scope"]
        created_text = value.get("created_at")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ConfigError(damaged, field="state_dir") from exc
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ConfigError(f"{damaged} (serial {short_repr(serial)})", field="state_dir")
    if not isinstance(bundle_hash, str) or not _HEX64.fullmatch(bundle_hash):
        raise ConfigError(f"{damaged} (hash {short_repr(bundle_hash)})", field="state_dir")
    try:
        check_scope(scope if isinstance(scope, str) else "")
    except ConfigError as exc:
        raise ConfigError(f"{damaged} (scope {short_repr(scope)})", field="state_dir") from exc
    created_at: datetime | None = None
    if created_text is not None:
        try:
            created_at = datetime.fromisoformat(created_text)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{damaged} (created_at {short_repr(created_text)})", field="state_dir"
            ) from exc
        if created_at.utcoffset() is None:
            raise ConfigError(f"{damaged} (created_at has no time zone)", field="state_dir")
    return BundleRecord(scope=scope, serial=serial, hash=bundle_hash, created_at=created_at)


def _write_record(path: Path, bundle: VerifiedBundle) -> None:
    data = json.dumps(
        {
            "scope": bundle.scope,
            "serial": bundle.serial,
            "hash": bundle.hash,
            "created_at": bundle.created_at.isoformat(),
        }
    )
    # in the server's state directory, private like everything else there
    write_atomically(path, (data + "\n").encode(), mode=PRIVATE_FILE_MODE, field="state_dir")


# every started watcher, for SIGHUP
_ACTIVE: set[PolicyWatcher] = set()
_ACTIVE_LOCK = threading.Lock()


def wake_watchers() -> int:
    """Ask every running watcher of this process to look at its bundle now; returns how many
    were woken. Not for a signal handler (it takes locks): see install_sighup_handler."""
    with _ACTIVE_LOCK:
        watchers = tuple(_ACTIVE)
    for watcher in watchers:
        watcher.wake()
    return len(watchers)


def active_watchers() -> tuple[PolicyWatcher, ...]:
    """The watchers running in this process (for status and tests)."""
    with _ACTIVE_LOCK:
        return tuple(_ACTIVE)


# SIGHUP: the handler writes one byte to a pipe and a relay thread wakes the watchers. A Python
# signal handler runs in the main thread between two bytecodes, possibly while that thread holds
# an Event's lock (in wake() or close()); setting the Event from the handler would then wait
# forever for a lock its own thread holds. Writing to a pipe takes no lock.
_RELAY_LOCK = threading.Lock()
_relay_write_fd: int | None = None


def install_sighup_handler() -> Callable[[int, FrameType | None], Any] | int | None:
    """Make SIGHUP wake every watcher of this process; returns the handler it replaces.

    Call it from the main thread, before the server starts: until then SIGHUP's default action
    ends the process. A SIGHUP that comes before the watchers start is not lost: a watcher
    looks at its file as soon as it starts.
    """
    global _relay_write_fd
    with _RELAY_LOCK:
        if _relay_write_fd is None:
            read_fd, write_fd = os.pipe()
            # a full pipe already holds a pending wake-up: the handler must never block on it
            os.set_blocking(write_fd, False)
            threading.Thread(
                target=_relay_sighup, args=(read_fd,), name="policy-sighup", daemon=True
            ).start()
            _relay_write_fd = write_fd
    return signal.signal(signal.SIGHUP, _on_sighup)


def _on_sighup(_signum: int, _frame: FrameType | None) -> None:
    fd = _relay_write_fd
    if fd is None:
        return
    # a full pipe: the relay has not read the earlier bytes yet, and will wake the watchers
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"\x01")


def _relay_sighup(read_fd: int) -> None:
    while True:
        try:
            if not os.read(read_fd, 512):
                return
            woken = wake_watchers()
            _log.info("SIGHUP: %d policy bundle watcher(s) looking at their file now", woken)
        except Exception:  # the relay must outlive any one failure, or SIGHUP stops working
            _log.exception("SIGHUP: could not wake the policy bundle watchers")


class PolicyWatcher:
    """Polls a bundle file and puts each newer valid bundle in force; a bad one changes nothing.

    A rejected file is logged once, with the reason, and not checked again until its content
    changes. `last_outcome` tells what the last look found.
    """

    def __init__(
        self,
        *,
        path: Path,
        policy: ReloadablePolicy,
        bundle: VerifiedBundle,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        scope: str,
        interval_s: float = DEFAULT_POLL_S,
        state_file: Path | None = None,
        loaded_digest: str = "",
    ) -> None:
        """`loaded_digest` is the SHA-256 of the file content `bundle` was verified from, so
        that the first poll does not verify it again."""
        self.path = path
        self._policy = policy
        self._bundle = bundle
        self._trusted = dict(trusted_keys)
        self._scope = scope
        self._interval_s = check_poll_interval(interval_s)
        self._state_file = state_file
        self._check_lock = threading.Lock()
        # the content of the file last looked at (its SHA-256), or the read error it gave
        self._seen: str = loaded_digest
        self._last = ReloadOutcome(
            status=ReloadStatus.INSTALLED,
            path=path,
            serial=bundle.serial,
            hash=bundle.hash,
            reason=f"serial {bundle.serial} in force since start-up",
            at=datetime.now(UTC),
        )
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def bundle(self) -> VerifiedBundle:
        """The bundle in force."""
        with self._check_lock:
            return self._bundle

    @property
    def last_outcome(self) -> ReloadOutcome:
        with self._check_lock:
            return self._last

    def start(self) -> PolicyWatcher:
        """Record the bundle in force in the state file and start polling in a daemon thread;
        the first look at the file is at once."""
        if self._thread is not None:
            return self
        self._record(self._bundle)
        self._thread = threading.Thread(
            target=self._run, name=f"policy-watcher-{self.path.name}", daemon=True
        )
        self._thread.start()
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)
        return self

    def wake(self) -> None:
        """Look at the file now rather than at the next poll (from any thread, not from a
        signal handler: install_sighup_handler does that safely)."""
        self._wake.set()

    def close(self) -> None:
        """Stop polling; the policy in force stays in force."""
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def check_now(self) -> ReloadOutcome:
        """Look at the bundle file once and act on it; returns (and remembers) the outcome."""
        with self._check_lock:
            try:
                data = read_bundle_file(self.path)
            except ConfigError as exc:
                seen = f"unreadable: {exc.message}"
                if seen != self._seen:
                    self._seen = seen
                    self._reject(exc.message)
                return self._last
            seen = hashlib.sha256(data).hexdigest()
            if seen == self._seen:
                return self._last
            self._seen = seen
            try:
                new = verify_bundle(
                    data, trusted_keys=self._trusted, scope=self._scope, origin=str(self.path)
                )
                install = check_succession(
                    BundleRecord.of(self._bundle), new, now=datetime.now(UTC)
                )
            except ConfigError as exc:
                self._reject(str(exc))
                return self._last
            except Exception as exc:  # a fault while checking must never install the bundle
                _log.exception("policy bundle %s: unexpected error while checking", self.path)
                self._reject(f"{self.path}: unexpected error while checking: {exc!r}")
                return self._last
            if not install:
                self._last = self._outcome(
                    ReloadStatus.UNCHANGED, f"serial {new.serial} is the bundle already in force"
                )
                return self._last
            previous = self._bundle
            try:
                self._policy.install(new.engine)
            except BaseException:
                # not in force: look at this same content again at the next poll
                self._seen = ""
                raise
            self._bundle = new
            _log.info(
                "policy bundle %s: serial %d (hash %s, published by %r with key %s at %s) now "
                "in force; it replaces serial %d (hash %s)",
                self.path, new.serial, new.hash, new.publisher, new.key_id,
                new.created_at.isoformat(), previous.serial, previous.hash,
            )  # fmt: skip
            self._record(new)
            self._last = self._outcome(ReloadStatus.INSTALLED, f"serial {new.serial} installed")
            return self._last

    def _record(self, bundle: VerifiedBundle) -> None:
        if self._state_file is None:
            return
        try:
            _write_record(self._state_file, bundle)
        except ConfigError as exc:
            # the verified policy is in force either way; only the rollback check at the next
            # start is weaker, so the server keeps serving and says so loudly
            _log.error("cannot record the policy bundle in force: %s", exc)

    def _reject(self, reason: str) -> None:
        _log.error(
            "policy bundle %s rejected; serial %d (hash %s) stays in force: %s",
            self.path, self._bundle.serial, self._bundle.hash, reason,
        )  # fmt: skip
        self._last = self._outcome(ReloadStatus.REJECTED, reason)

    def _outcome(self, status: ReloadStatus, reason: str) -> ReloadOutcome:
        return ReloadOutcome(
            status=status,
            path=self.path,
            serial=self._bundle.serial,
            hash=self._bundle.hash,
            reason=reason,
            at=datetime.now(UTC),
        )

    def _run(self) -> None:
        # look first, then wait: the file may have changed since the server read it at start,
        # and a SIGHUP sent before this thread existed woke nobody
        while not self._stopping:
            try:
                self.check_now()
                self._wake.wait(self._interval_s)
                self._wake.clear()
            except Exception:  # the watcher must outlive anything: log it and keep polling
                _log.exception("policy bundle %s: unexpected error while checking", self.path)
                # never spin on an error that repeats at once
                self._wake.wait(self._interval_s)
                self._wake.clear()


def load_policy(
    *,
    policy_file: Path,
    bundle: Path | None,
    trust: Sequence[Path],
    scope: str,
    state_dir: Path,
    interval_s: float = DEFAULT_POLL_S,
) -> tuple[ReloadablePolicy, PolicyWatcher | None]:
    """The policy a server starts with: `policy_file`, or the verified `bundle` with a watcher
    (not yet started: start it once the server is up, close it when it stops).

    ConfigError, and no start, when the bundle fails any check, is not newer than the last
    bundle this server put in force (recorded in state_dir; see check_succession) or the poll
    interval is unusable.
    """
    if bundle is None:
        return ReloadablePolicy.from_file(policy_file), None
    check_poll_interval(interval_s)
    trusted = load_trusted_keys(trust)
    data = read_bundle_file(bundle, field="policy_bundle")
    verified = verify_bundle(data, trusted_keys=trusted, scope=scope, origin=str(bundle))
    state_file = state_dir / STATE_FILE_NAME
    record = _read_record(state_file)
    if record is not None:
        if not scope_accepts(scope, record.scope):
            raise ConfigError(
                f"{state_file} records a bundle for scope {record.scope!r} in force, and this "
                f"server reads {reader_scopes(scope)}: the state directory belongs to another "
                "server; give each server its own --state-dir",
                field="state_dir",
            )
        try:
            check_succession(record, verified, now=datetime.now(UTC))
        except ConfigError as exc:
            raise ConfigError(
                f"{bundle}: {exc.message} (the last bundle this server used is recorded in "
                f"{state_file})",
                field="policy_bundle",
            ) from exc
    policy = ReloadablePolicy(verified.engine)
    watcher = PolicyWatcher(
        path=bundle,
        policy=policy,
        bundle=verified,
        trusted_keys=trusted,
        scope=scope,
        interval_s=interval_s,
        state_file=state_file,
        loaded_digest=hashlib.sha256(data).hexdigest(),
    )
    return policy, watcher
