"""Append-only audit log (JSON Lines): one durable entry per decision, subjects as salted hashes.

Resident identity numbers come from a small, enumerable space, so an unsalted hash of one is as
good as the number itself. Entries therefore carry HMAC-SHA256(salt, subject id); the salt is a
secret file next to the log, readable by its owner only. Both files must be mode 0600 or stricter:
a log or salt that others can read is refused rather than silently tightened, because it may
already have leaked.

A crash in the middle of a write can leave a torn last line. The log is never truncated to hide
it; the next append starts on a fresh line and `entries()` reports the torn line by number.

Appends from many threads share fsyncs (group commit): the thread that finds no write in progress
writes every line queued so far with one write and one fsync, while the others wait for it. Each
append still returns only once its own line is on disk. A failed write or fsync closes the log for
good: after fsync fails, the kernel may have dropped the data while a retry reports success, so
a retry would be a false promise of durability.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError
from osmanthus.core.files import sync_directory

SALT_BYTES: Final = 32
#: shorter salts make the HMAC guessable by brute force over the identifier space
MIN_SALT_BYTES: Final = 16
DECISIONS: Final = frozenset({"allow", "deny"})
_SUBJECT_HASH = re.compile(r"[0-9a-f]{64}")
_FILE_MODE: Final = 0o600

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AuditEntry:
    """One decision. `subject_hash` is AuditLog.subject_hash(subject) for a single-subject query;
    a batch chunk names its subjects in `subject_hashes` (AuditLog.subject_hashes) and leaves
    `subject_hash` "". An entry about no subject (a batch being opened) has neither; one with
    both is refused. `extra` holds counts and identifiers of the exchange (never personal data)."""

    time: datetime
    query_id: str
    requester: str
    purpose: str
    consent_id: str
    policy_hash: str
    decision: str
    reason: str
    shape: str
    subject_hash: str
    extra: Mapping[str, int | str] = field(default_factory=dict)
    subject_hashes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise InvalidArgument("audit time must be a timezone-aware datetime", field="time")
        if self.decision not in DECISIONS:
            raise InvalidArgument(
                f"audit decision must be 'allow' or 'deny', got {self.decision!r}", field="decision"
            )
        if self.subject_hash and not _SUBJECT_HASH.fullmatch(self.subject_hash):
            # the one field where a raw identifier would most easily slip in by mistake
            raise InvalidArgument(
                "subject_hash must be AuditLog.subject_hash(subject), 64 lower-case hex digits",
                field="subject_hash",
            )
        if isinstance(self.subject_hashes, str):
            # a lone hash string would otherwise be read as 64 one-character "hashes"
            raise InvalidArgument(
                "subject_hashes must be a sequence of hashes, not one string; "
                "use AuditLog.subject_hashes(subjects)",
                field="subject_hashes",
            )
        hashes = tuple(self.subject_hashes)
        for position, digest in enumerate(hashes):
            if not isinstance(digest, str) or not _SUBJECT_HASH.fullmatch(digest):
                # the value itself is not quoted: it may be the raw identifier that slipped in
                raise InvalidArgument(
                    f"subject_hashes[{position}] is not AuditLog.subject_hash(subject), "
                    "64 lower-case hex digits",
                    field="subject_hashes",
                )
        if hashes and self.subject_hash:
            raise InvalidArgument(
                "an entry names its subject in subject_hash (one subject) or in subject_hashes "
                '(a batch chunk), not in both; set subject_hash to "" for a batch entry',
                field="subject_hashes",
            )
        object.__setattr__(self, "subject_hashes", hashes)
        for key, value in self.extra.items():
            if (
                not isinstance(key, str)
                or isinstance(value, bool)
                or not isinstance(value, int | str)
            ):
                raise InvalidArgument(
                    f"audit extra {key!r} must map a name to a whole number or text, got {value!r}",
                    field="extra",
                )
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def to_json(self) -> str:
        record: dict[str, Any] = {
            "time": self.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "query_id": self.query_id,
            "requester": self.requester,
            "purpose": self.purpose,
            "consent_id": self.consent_id,
            "policy_hash": self.policy_hash,
            "decision": self.decision,
            "reason": self.reason,
            "shape": self.shape,
            "subject_hash": self.subject_hash,
            "extra": dict(self.extra),
        }
        if self.subject_hashes:
            # only batch entries carry the key: single-subject lines keep their earlier form
            record["subject_hashes"] = list(self.subject_hashes)
        # ensure_ascii keeps every entry on one line whatever the reason text holds
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> AuditEntry:
        record = json.loads(line)
        hashes = record.get("subject_hashes", [])
        if not isinstance(hashes, list):
            raise TypeError(f"subject_hashes must be a list, got {type(hashes).__name__}")
        return cls(
            time=datetime.fromisoformat(record["time"]),
            query_id=record["query_id"],
            requester=record["requester"],
            purpose=record["purpose"],
            consent_id=record["consent_id"],
            policy_hash=record["policy_hash"],
            decision=record["decision"],
            reason=record["reason"],
            shape=record["shape"],
            subject_hash=record["subject_hash"],
            extra=record["extra"],
            subject_hashes=tuple(hashes),
        )


class AuditLog:
    """Thread-safe append-only log; every append reaches the disk before it returns."""

    def __init__(self, *, path: Path, salt: bytes) -> None:
        if len(salt) < MIN_SALT_BYTES:
            raise InvalidArgument(
                f"the audit salt has {len(salt)} bytes; at least {MIN_SALT_BYTES} are required "
                "(use load_or_create_salt)",
                field="salt",
            )
        self.path = path
        # keyed once; each hash copies it instead of deriving the padded keys again
        self._hmac = hmac.new(salt, digestmod=hashlib.sha256)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # group commit state, guarded by _lock: lines are numbered in the order they are queued
        self._pending: list[bytes] = []
        self._queued = 0
        self._durable = 0
        self._writing = False
        self._failure: str | None = None
        self._fd = _open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                # a torn last line from a crash: keep it as evidence, start the next entry afresh
                _write_durably(self._fd, b"\n")
                size += 1
        except OSError as exc:
            os.close(self._fd)
            raise ConfigError(f"{path}: cannot use the audit log: {exc.strerror}") from exc
        #: bytes of the file known to hold only whole, durable lines
        self._durable_size = size

    def subject_hash(self, subject_id: str) -> str:
        mac = self._hmac.copy()
        mac.update(subject_id.encode("utf-8"))
        return mac.hexdigest()

    def subject_hashes(self, subject_ids: Sequence[str]) -> list[str]:
        """subject_hash of each id, in order (for the subjects of a batch entry)."""
        base = self._hmac
        hashes: list[str] = []
        for subject_id in subject_ids:
            mac = base.copy()
            mac.update(subject_id.encode("utf-8"))
            hashes.append(mac.hexdigest())
        return hashes

    def cohort_hash(self, subject_ids: Sequence[str]) -> str:
        """One salted hash naming a set of subjects (a STATS cohort), whatever their order.

        Whoever holds the set and the salt can show which cohort an entry was about; nobody
        can read a member off the entry.
        """
        digest = hashlib.sha256()
        for value in sorted(self.subject_hashes(subject_ids)):
            digest.update(bytes.fromhex(value))
        return digest.hexdigest()

    def append(self, entry: AuditEntry) -> None:
        """Write `entry` durably; returns once its line is on disk (fsynced)."""
        line = (entry.to_json() + "\n").encode("ascii")
        with self._changed:
            self._check_usable()
            self._pending.append(line)
            self._queued += 1
            mine = self._queued
            while self._writing:
                self._changed.wait()
                if self._durable >= mine:
                    return
                self._check_usable()
            # no write in progress: this thread writes everything queued, its own line included
            batch, self._pending = self._pending, []
            last = self._queued
            self._writing = True
            fd = self._fd
        failure: OSError | None = None
        size = -1
        try:
            _write_durably(fd, b"".join(batch))
            size = os.fstat(fd).st_size
        except OSError as exc:
            failure = exc
        finally:
            # also on an exception that is not an OSError: waiters must never wait for ever
            with self._changed:
                self._writing = False
                if size >= 0:
                    self._durable = last
                    self._durable_size = size
                else:
                    problem = failure.strerror if failure is not None else "interrupted"
                    self._failure = (
                        f"{self.path}: writing the audit log failed ({problem}); no further "
                        "entries are accepted. Fix the disk, then restart the service: reopening "
                        "the log starts a fresh line after any torn one"
                    )
                self._changed.notify_all()
        if failure is not None:
            raise ConfigError(self._failure or str(failure)) from failure

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise ConfigError(self._failure)
        if self._fd < 0:
            raise ConfigError(f"{self.path}: the audit log is closed")

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry in order; a line that is not a valid entry raises ConfigError naming it.

        Entries appended while the caller iterates are not included.
        """
        with self._lock:
            # a group write in flight is neither whole nor durable yet: stop short of it
            end = self._durable_size if self._writing else self.path.stat().st_size
        with self.path.open("rb") as handle:
            offset = 0
            for number, raw in enumerate(handle, start=1):
                offset += len(raw)
                if offset > end:
                    return
                if not raw.strip():
                    continue
                try:
                    yield AuditEntry.from_json(raw.decode("ascii"))
                except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
                    raise ConfigError(
                        f"{self.path}, line {number}: not a valid audit entry ({exc}); "
                        "a torn line is what a crash during a write leaves"
                    ) from exc

    def entries_about(self, subject_hash: str) -> Iterator[tuple[AuditEntry, bool]]:
        """Every entry naming `subject_hash` (AuditLog.subject_hash of one subject), in order,
        with True for a batch entry that names it among its `subject_hashes`.

        A line is parsed only when it holds the hash at all: batch entries carry thousands of
        hashes each, and a subject is in few of them. A line that holds it but is not a valid
        entry (the torn last line a crash leaves, never acknowledged) is skipped with a
        warning, so one crash does not keep a subject from their entries for good; a STATS
        entry names its cohort by one hash of the whole set and is not found this way.
        """
        if not _SUBJECT_HASH.fullmatch(subject_hash):
            raise InvalidArgument(
                "subject_hash must be AuditLog.subject_hash(subject), 64 lower-case hex digits",
                field="subject_hash",
            )
        needle = subject_hash.encode("ascii")
        with self._lock:
            end = self._durable_size if self._writing else self.path.stat().st_size
        with self.path.open("rb") as handle:
            offset = 0
            for number, raw in enumerate(handle, start=1):
                offset += len(raw)
                if offset > end:
                    return
                if needle not in raw:
                    continue
                try:
                    entry = AuditEntry.from_json(raw.decode("ascii"))
                except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
                    _log.warning(
                        "%s, line %d: not a valid audit entry (%s); skipped", self.path, number,
                        type(exc).__name__,
                    )  # fmt: skip
                    continue
                if entry.subject_hash == subject_hash:
                    yield entry, False
                elif subject_hash in entry.subject_hashes:
                    yield entry, True

    def close(self) -> None:
        """Close the file once any write in progress is done; waiting appends then fail."""
        with self._changed:
            while self._writing:
                self._changed.wait()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            self._pending.clear()
            self._changed.notify_all()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_or_create_salt(path: Path) -> bytes:
    """Read the audit salt, or create it (32 random bytes, mode 0600) if the file does not exist."""
    if path.exists():
        return _read_salt(path)
    salt = secrets.token_bytes(SALT_BYTES)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
    except FileExistsError:
        # another process created it first: use theirs, or the two would hash differently
        return _read_salt(path)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create the audit salt: {exc.strerror}") from exc
    try:
        _write_durably(fd, salt)
    finally:
        os.close(fd)
    sync_directory(path.parent, written=path, field="audit_log")
    return salt


def _read_salt(path: Path) -> bytes:
    fd = _open_private(path, os.O_RDONLY)
    try:
        salt = os.read(fd, SALT_BYTES + 1)
    finally:
        os.close(fd)
    if len(salt) != SALT_BYTES:
        raise ConfigError(
            f"{path}: the audit salt file holds {len(salt)} bytes, expected {SALT_BYTES}; "
            "restore it from backup (a new salt would unlink every past entry from its subject)"
        )
    return salt


def _open_private(path: Path, flags: int) -> int:
    """Open (creating with mode 0600 where flags allow) and refuse files others can read."""
    existed = path.exists()
    try:
        fd = os.open(
            path, flags | (os.O_CREAT if flags & (os.O_WRONLY | os.O_RDWR) else 0), _FILE_MODE
        )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot open: {exc.strerror}") from exc
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode & 0o077:
        os.close(fd)
        raise ConfigError(
            f"{path}: mode {mode:04o} lets other users read it; it must be 0600 "
            f"(check who has read it, then run: chmod 600 {path})"
        )
    if not existed:
        sync_directory(path.parent, written=path, field="audit_log")
    return fd


def _write_durably(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


#: request fields whose validation messages quote parts of an identifier (birth date, region)
_SUBJECT_FIELDS = frozenset({"subject_id", "resident_id", "credit_code"})


def redacted_reason(error: OsmanthusError) -> str:
    """The reason an audit entry records for a refusal, without any piece of the subject's id."""
    # a batch names its ids by position: subject_ids, subject_ids[17]
    base = (error.field or "").split("[", 1)[0]
    if base in _SUBJECT_FIELDS or base == "subject_ids":
        return f"{type(error).__name__}: {error.field} failed validation"
    return str(error)
