"""Append-only audit log (JSON Lines): one durable entry per decision, subjects as salted hashes.

Resident identity numbers come from a small, enumerable space, so an unsalted hash of one is as
good as the number itself. Entries therefore carry HMAC-SHA256(salt, subject id); the salt is a
secret file next to the log, readable by its owner only. Both files must be mode 0600 or stricter:
a log or salt that others can read is refused rather than silently tightened, because it may
already have leaked.

A crash in the middle of a write can leave a torn last line. The log is never truncated to hide
it; the next append starts on a fresh line and `entries()` reports the torn line by number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from osmanthus.errors import ConfigError, InvalidArgument, OsmanthusError

SALT_BYTES: Final = 32
#: shorter salts make the HMAC guessable by brute force over the identifier space
MIN_SALT_BYTES: Final = 16
DECISIONS: Final = frozenset({"allow", "deny"})
_SUBJECT_HASH = re.compile(r"[0-9a-f]{64}")
_FILE_MODE: Final = 0o600


@dataclass(frozen=True)
class AuditEntry:
    """One decision. `subject_hash` is AuditLog.subject_hash(subject) or "" when there is none;
    `extra` holds counts and identifiers of the exchange (never personal data)."""

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
        # ensure_ascii keeps every entry on one line whatever the reason text holds
        return json.dumps(record, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, line: str) -> AuditEntry:
        record = json.loads(line)
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
        self._salt = salt
        self._lock = threading.Lock()
        self._fd = _open_private(path, os.O_RDWR | os.O_APPEND)
        try:
            size = os.fstat(self._fd).st_size
            if size and os.pread(self._fd, 1, size - 1) != b"\n":
                # a torn last line from a crash: keep it as evidence, start the next entry afresh
                _write_durably(self._fd, b"\n")
        except OSError as exc:
            os.close(self._fd)
            raise ConfigError(f"{path}: cannot use the audit log: {exc.strerror}") from exc

    def subject_hash(self, subject_id: str) -> str:
        return hmac.new(self._salt, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()

    def append(self, entry: AuditEntry) -> None:
        line = (entry.to_json() + "\n").encode("ascii")
        with self._lock:
            if self._fd < 0:
                raise ConfigError(f"{self.path}: the audit log is closed")
            _write_durably(self._fd, line)

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry in order; a line that is not a valid entry raises ConfigError naming it.

        Entries appended while the caller iterates are not included.
        """
        with self._lock:
            # entries written after this point may still be in flight; stop short of them
            end = self.path.stat().st_size
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

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

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
    _sync_directory(path.parent)
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
        _sync_directory(path.parent)
    return fd


def _write_durably(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _sync_directory(directory: Path) -> None:
    """Make a newly created file's directory entry durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: request fields whose validation messages quote parts of an identifier (birth date, region)
_SUBJECT_FIELDS = frozenset({"subject_id", "resident_id", "credit_code"})


def redacted_reason(error: OsmanthusError) -> str:
    """The reason an audit entry records for a refusal, without any piece of the subject's id."""
    if error.field in _SUBJECT_FIELDS:
        return f"{type(error).__name__}: {error.field} failed validation"
    return str(error)
