"""Append-only audit log (JSON Lines): one durable entry per decision, subjects as salted hashes.

Resident identity numbers come from a small, enumerable space, so an unsalted hash of one is as
good as the number itself. Entries therefore carry HMAC-SHA256(salt, subject id); the salt is a
secret file next to the log, readable by its owner only. Both files must be mode 0600 or stricter:
a log or salt that others can read is refused rather than silently tightened, because it may
already have leaked.

A crash in the middle of a write can leave a torn last line. The log is never truncated to hide
it; the next append starts on a fresh line and `entries()` reports the torn line by number.

Appends from many threads share fsyncs (group commit): the thread that finds no write in progress
writes every line queued so far (a batch) with one write and one fsync, while the others wait for
it. Each append still returns only once its own line is on disk, and learns the outcome of its
own batch only: a later batch that was written says nothing about an earlier one that failed.
No answer may leave without its entry, so an append that cannot write (a full disk, a file
system turned read-only, an I/O error) raises `Unavailable` (naming no path; the server log has
it) and the caller answers nothing. The bytes a failed write left were never acknowledged: they
are cut off (truncated back to the last durable line) before anything else is written, so that a
retry never counts on data a failed fsync may have dropped, and the log and its tree keep the
same lines. The next append simply tries again:
the log recovers by itself once the disk takes writes, with no restart. `probe` tries without
an entry (a scratch file beside the log): a server saying NOT_SERVING is sent no requests by
its load balancer, so no append would come to try, and its background probe says SERVING again
once the disk takes writes.

The log keeps the RFC 6962 / RFC 9162 Merkle tree of its lines beside it (`merkle.HashStore`,
files `<log name>.tree.<level>`, mode 0600): leaf i is `merkle.leaf_hash` of line i + 1 as
written, without its newline. Every line is a leaf, a torn one included once reopening has
ended it with a newline, so that leaf i is always line i + 1 and the tree commits to the file's
bytes with no parsing: a verifier replays the file, not our reading of it. (A torn line was never
acknowledged; it stays in the tree as it stays in the file, as evidence of the crash.)
The tree is derived data and is not fsynced: the log is the source of truth, and opening the log
repairs the tree from it. A tree that cannot be written while the log can (its files on a disk
that just filled up) falls behind, and roots and proofs are refused until the next entry written
catches it up from the leaves kept in memory. A tree behind the log (a crash after the log's
fsync) catches up by hashing the missing lines only; a torn or out-of-step tree, or none, is
rebuilt from the whole log with a warning; a tree holding more leaves than the log has lines
means the log was truncated, and is refused rather than rebuilt over. A clean restart reads the
log once to count its lines (no parsing, no hashing) and hashes one line: the tree's last leaf
must be the hash of the log's corresponding line, so an edited last line is caught at once;
checking every line is `audit verify`'s job. Without signed checkpoints the tree proves nothing
against whoever holds the log: they can rebuild it over an edited log (docs/caveats.md).
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
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from osmanthus.core import merkle, probes
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError, Unavailable
from osmanthus.core.files import sync_directory

SALT_BYTES: Final = 32
#: shorter salts make the HMAC guessable by brute force over the identifier space
MIN_SALT_BYTES: Final = 16
DECISIONS: Final = frozenset({"allow", "deny"})
_SUBJECT_HASH = re.compile(r"[0-9a-f]{64}")
_FILE_MODE: Final = 0o600
#: the Merkle tree of `audit.jsonl` is in `audit.jsonl.tree.0`, `audit.jsonl.tree.1`, ...
TREE_SUFFIX: Final = ".tree"
#: the log is read in chunks of this size to count its lines on opening
_SCAN_BYTES: Final = 1 << 20
#: leaf hashes kept in memory (32 bytes each) for a tree that cannot be written while the log
#: can; beyond this many the tree waits for a restart to catch up from the log
MAX_TREE_BACKLOG: Final = 1 << 20
#: the scratch file beside the log that AuditLog.probe writes (`audit.jsonl.probe`), and how
#: much: a page, more than an entry about one subject needs
PROBE_SUFFIX: Final = ".probe"
PROBE_BYTES: Final = 4096

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


class _Batch:
    """Lines written together by one write and one fsync, and how that went (under the lock)."""

    __slots__ = ("done", "failure", "leaves", "lines")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        #: the leaf hash of each line, in the same order (with a tree only)
        self.leaves: list[bytes] = []
        #: set by the thread that wrote the batch, before it lets another write
        self.done = False
        #: why the write failed (no path); None when the lines are durable
        self.failure: str | None = None


class AuditLog:
    """Thread-safe append-only log; every append reaches the disk before it returns.

    With `tree` (the default) the log keeps its Merkle tree beside it (see the module docstring);
    `tree=False` keeps none and is the log as it was before the tree (benchmarks compare both).
    """

    def __init__(
        self, *, path: Path, salt: bytes, tree: bool = True, service: str = "this server"
    ) -> None:
        if len(salt) < MIN_SALT_BYTES:
            raise InvalidArgument(
                f"the audit salt has {len(salt)} bytes; at least {MIN_SALT_BYTES} are required "
                "(use load_or_create_salt)",
                field="salt",
            )
        self.path = path
        #: how a refusal names the service to its caller ("the node", "the coordinator")
        self.service = service
        # keyed once; each hash copies it instead of deriving the padded keys again
        self._hmac = hmac.new(salt, digestmod=hashlib.sha256)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        # group commit state, guarded by _lock: the batch lines join until a thread writes it
        self._batch = _Batch()
        self._writing = False
        #: why the last write failed (its cause, no path); None once a write succeeds
        self._failure: str | None = None
        #: told the failure (None: the log takes writes again) whenever it changes
        self._watchers: list[Callable[[str | None], None]] = []
        #: a failed write may have left bytes after the last durable line (cut off before the
        #: next write: they were never acknowledged)
        self._torn = False
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
        self._tree: merkle.HashStore | None = None
        #: leaves of the tree readers may ask about, guarded by _lock
        self._tree_size = 0
        #: why the tree stopped following the log (the next batch written tries to catch up)
        self._tree_failure: str | None = None
        #: leaves of durable lines the tree lacks, written by the next batch; only the thread
        #: writing a batch touches it
        self._tree_backlog: list[bytes] = []
        #: set when the backlog overflowed: the tree catches up only when the log is reopened
        self._tree_lost: str | None = None
        #: threads reading the tree's files outside the lock; close waits for them
        self._tree_readers = 0
        if tree:
            try:
                self._tree = _open_tree(path, size)
            except BaseException:
                os.close(self._fd)
                raise
            self._tree_size = self._tree.size

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
        """Write `entry` durably; returns once its line is on disk (fsynced).

        When the line cannot be written (a full disk, a read-only file system, an I/O error),
        raises `Unavailable` naming no path (the server log has the path and the cause): the
        caller must not answer. The next append tries again, so the log recovers by itself
        once the disk takes writes again.
        """
        text = entry.to_json().encode("ascii")
        line = text + b"\n"
        # hashed here, outside the lock, rather than by the thread that writes the batch
        leaf = merkle.leaf_hash(text) if self._tree is not None else b""
        with self._changed:
            self._check_open()
            batch = self._batch
            batch.lines.append(line)
            batch.leaves.append(leaf)
            while self._writing:
                self._changed.wait()
                # the outcome of this line's own batch, never another's: a later batch that
                # was written says nothing about this one, which may have failed
                if batch.done:
                    if batch.failure is None:
                        return
                    raise self._unavailable(batch.failure)
                self._check_open()
            # no write in progress, so nobody took this batch (a batch is done before its
            # writer clears _writing): this thread writes it, its own line and the queued ones
            self._batch = _Batch()
            self._writing = True
            fd = self._fd
            durable_size = self._durable_size
            torn = self._torn
        failure: OSError | None = None
        size = -1
        tree_size: int | None = None
        tree_failure: str | None = None
        try:
            if torn:
                # bytes of a failed write, never acknowledged: cut them off before writing on
                os.ftruncate(fd, durable_size)
                torn = False
            _write_durably(fd, b"".join(batch.lines))
            size = os.fstat(fd).st_size
            # only once the lines are durable: the tree never holds a line the log may lose
            tree_size, tree_failure = self._extend_tree(batch.leaves)
        except OSError as exc:
            failure = exc
        finally:
            if size < 0:
                torn = _cut_back(fd, durable_size)
            # also on an exception that is not an OSError: waiters must never wait for ever
            with self._changed:
                self._writing = False
                self._torn = torn
                if tree_failure is not None:
                    self._tree_failure = tree_failure
                elif tree_size is not None:
                    if self._tree_failure is not None:
                        _log.warning(
                            "%s: the audit log's Merkle tree caught up with the log (%d "
                            "leaves); roots and proofs are served again", self.path, tree_size,
                        )  # fmt: skip
                    self._tree_failure = None
                    self._tree_size = tree_size
                batch.done = True
                if size >= 0:
                    self._durable_size = size
                    if self._failure is not None:
                        _log.warning(
                            "%s: the audit log takes writes again; requests are answered",
                            self.path,
                        )
                        self._failure = None
                        self._tell_watchers()
                else:
                    problem = (failure.strerror if failure is not None else None) or "interrupted"
                    batch.failure = problem
                    if self._failure != problem:
                        # once per distinct cause: a full disk would otherwise flood the log
                        _log.error(
                            "%s: writing the audit log failed (%s); every request is refused "
                            "(UNAVAILABLE) until an entry can be written again: free space or "
                            "make the file system writable; nothing needs a restart",
                            self.path, problem,
                        )  # fmt: skip
                        self._failure = problem
                        self._tell_watchers()
                self._changed.notify_all()
        if batch.failure is not None:
            raise self._unavailable(batch.failure) from failure
        # the batch's entries (this thread's and those that waited for it) are durable now
        probes.audit_appended(self.path.name, len(batch.lines))

    def _unavailable(self, cause: str) -> Unavailable:
        """The refusal a caller gets when its entry's batch was not written: no path in it."""
        return Unavailable(
            f"{self.service} cannot write its audit log: {cause}; it answers nothing until it can"
        )

    @property
    def failure(self) -> str | None:
        """Why the last write failed (the cause, no path), or None when the log takes writes."""
        with self._lock:
            return self._failure

    def watch(self, watcher: Callable[[str | None], None]) -> None:
        """Tell `watcher` the failure now, then each time it changes: the cause when a write
        fails, None when the log takes writes again (a server's health status follows it).

        The watcher is called with the log's lock held, so that calls keep the order of the
        changes: it must be quick and must not use the log.
        """
        with self._lock:
            self._watchers.append(watcher)
            self._call(watcher)

    def _tell_watchers(self) -> None:
        for watcher in self._watchers:
            self._call(watcher)

    def _call(self, watcher: Callable[[str | None], None]) -> None:
        try:
            watcher(self._failure)
        except Exception:  # a watcher's fault never fails an append
            _log.exception("%s: a watcher of the audit log failed", self.path)

    def probe(self) -> bool:
        """Whether the log takes writes again, tried without writing an entry; True tells the
        watchers (a server's health says SERVING again) with no request needed.

        Called while the last write failed (a server's background probe,
        RunningServer.follow_audit). Two checks, both fsynced: PROBE_BYTES written to a scratch
        file beside the log (`<log name>.probe`, removed again: the file system has room and
        takes writes), and the log itself cut back to its last durable line (what the next
        append does first: the file still takes changes, unlike one turned immutable or a file
        system remounted read-only). Room for a page is not room for every entry: a larger
        batch may fail again, and the probing resumes then.
        """
        with self._lock:
            self._check_open()
            if self._failure is None:
                return True
            if self._writing:
                return False  # the write in progress says how it went
        scratch = self.path.with_name(self.path.name + PROBE_SUFFIX)
        try:
            _probe_write(scratch)
        except OSError as exc:
            _log.debug("%s: audit log probe: %s", self.path, exc.strerror)
            return False
        with self._changed:
            self._check_open()
            if self._failure is None:
                return True
            if self._writing:
                return False
            try:
                # only the lines acknowledged stay: bytes of a failed write are cut off now
                os.ftruncate(self._fd, self._durable_size)
                os.fsync(self._fd)
            except OSError as exc:
                _log.debug("%s: audit log probe: %s", self.path, exc.strerror)
                return False
            self._torn = False
            _log.warning(
                "%s: the audit log takes writes again (probed); requests are answered",
                self.path,
            )
            self._failure = None
            self._tell_watchers()
        return True

    def _extend_tree(self, leaves: list[bytes]) -> tuple[int | None, str | None]:
        """Append a durable batch's leaves to the tree, unsynced: (the tree's new size, None),
        (None, why the tree stopped following the log), or (None, None) with no tree to extend.

        Only the thread writing the batch calls this, so appends to the tree keep the log's
        order. A failure stops the tree, not the log: the entries are durable. The leaves the
        tree lacks are kept (up to MAX_TREE_BACKLOG) and appended by the next batch, after the
        tree's files are cut back to its last complete append; beyond that, reopening the log
        catches the tree up from it.
        """
        tree = self._tree
        if tree is None:
            return None, None
        if self._tree_lost is not None:
            return None, self._tree_lost
        backlog = self._tree_backlog
        backlog.extend(leaves)
        done = 0
        try:
            if self._tree_failure is not None:
                tree.discard_partial()
            for leaf in backlog:
                tree.append(leaf, sync=False)
                done += 1
        except (OSError, OsmanthusError) as exc:
            del backlog[:done]
            problem = exc.strerror if isinstance(exc, OSError) else str(exc)
            if len(backlog) > MAX_TREE_BACKLOG:
                backlog.clear()
                self._tree_lost = (
                    f"{self.path}: extending the audit log's Merkle tree failed ({problem}) at "
                    f"{tree.size} leaves, and more than {MAX_TREE_BACKLOG} entries since; "
                    "entries are still recorded, but roots and proofs are refused until the "
                    "service restarts and the tree catches up from the log"
                )
                _log.error("%s", self._tree_lost)
                return None, self._tree_lost
            message = (
                f"{self.path}: extending the audit log's Merkle tree failed ({problem}) at "
                f"{tree.size} leaves; entries are still recorded, and the tree catches up at "
                "the next entry written once the disk takes writes; until then roots and proofs "
                "are refused"
            )
            if self._tree_failure is None:
                _log.error("%s", message)
            return None, message
        backlog.clear()
        return tree.size, None

    def _check_open(self) -> None:
        if self._fd < 0:
            raise ConfigError(f"{self.path}: the audit log is closed")

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry in order; a line that is not a valid entry raises ConfigError naming it.

        Entries appended while the caller iterates are not included.
        """
        for _, entry in self.indexed_entries():
            yield entry

    def indexed_entries(self) -> Iterator[tuple[int, AuditEntry]]:
        """(leaf index, entry) of every entry in order, as `entries()`: the index is the line's
        number less one, its leaf in the Merkle tree (`inclusion_proof(index, size)`)."""
        for index, raw in self._lines():
            if not raw.strip():
                continue
            try:
                yield index, AuditEntry.from_json(raw.decode("ascii"))
            except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
                raise ConfigError(
                    f"{self.path}, line {index + 1}: not a valid audit entry ({exc}); "
                    "a torn line is what a crash during a write leaves"
                ) from exc

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        """(index, raw line) of every whole, durable line when the call is made."""
        with self._lock:
            # a group write in flight is neither whole nor durable yet, nor are the bytes a
            # failed one left: stop short of them
            end = self._durable_size if self._writing or self._torn else self.path.stat().st_size
        with self.path.open("rb") as handle:
            offset = 0
            for index, raw in enumerate(handle):
                offset += len(raw)
                if offset > end:
                    return
                yield index, raw

    def entries_about(self, subject_hash: str) -> Iterator[tuple[AuditEntry, bool]]:
        """Every entry naming `subject_hash` (AuditLog.subject_hash of one subject), in order,
        with True for a batch entry that names it among its `subject_hashes`.

        A line is parsed only when it holds the hash at all: batch entries carry thousands of
        hashes each, and a subject is in few of them. A line that holds it but is not a valid
        entry (the torn last line a crash leaves, never acknowledged) is skipped with a
        warning, so one crash does not keep a subject from their entries for good; a STATS
        entry names its cohort by one hash of the whole set and is not found this way.
        """
        for _, entry, in_batch in self.indexed_entries_about(subject_hash):
            yield entry, in_batch

    def indexed_entries_about(self, subject_hash: str) -> Iterator[tuple[int, AuditEntry, bool]]:
        """(leaf index, entry, in a batch) of every entry `entries_about` yields."""
        for index, _, entry, in_batch in self.indexed_lines_about(subject_hash):
            yield index, entry, in_batch

    def indexed_lines_about(
        self, subject_hash: str
    ) -> Iterator[tuple[int, bytes, AuditEntry, bool]]:
        """(leaf index, the line as the log holds it without its newline, entry, in a batch) of
        every entry `entries_about` yields: the line is the leaf's input (merkle.leaf_hash), so
        that whoever is shown the entry can check its inclusion proof against it."""
        if not _SUBJECT_HASH.fullmatch(subject_hash):
            raise InvalidArgument(
                "subject_hash must be AuditLog.subject_hash(subject), 64 lower-case hex digits",
                field="subject_hash",
            )
        needle = subject_hash.encode("ascii")
        for index, raw in self._lines():
            if needle not in raw:
                continue
            try:
                entry = AuditEntry.from_json(raw.decode("ascii"))
            except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
                _log.warning(
                    "%s, line %d: not a valid audit entry (%s); skipped", self.path, index + 1,
                    type(exc).__name__,
                )  # fmt: skip
                continue
            line = raw[:-1] if raw.endswith(b"\n") else raw
            if entry.subject_hash == subject_hash:
                yield index, line, entry, False
            elif subject_hash in entry.subject_hashes:
                yield index, line, entry, True

    # -- the Merkle tree ---------------------------------------------------------------------------

    @property
    def tree_size(self) -> int:
        """Leaves in the tree: every line of the log up to the last completed append."""
        with self._lock:
            self._usable_tree()
            return self._tree_size

    @property
    def tree_size_known(self) -> int:
        """`tree_size`, without refusing while the tree is behind the log (a full disk): then
        the leaves it had, fewer than the log's lines. For status reports, which must still
        answer when the disk is full."""
        with self._lock:
            return self._tree_size

    def root(self, size: int | None = None) -> bytes:
        """MTH of the first `size` lines (all of them by default), RFC 9162 §2.1.1."""
        with self._reading_tree() as (tree, tree_size):
            n = tree_size if size is None else _tree_size_arg(size, tree_size, "size")
            return tree.root(n)

    def leaf(self, index: int) -> bytes:
        """The stored leaf hash of line `index` + 1."""
        with self._reading_tree() as (tree, tree_size):
            if not 0 <= index < tree_size:
                raise InvalidArgument(
                    f"leaf {index} is not in a tree of {tree_size}", field="index"
                )
            return tree.leaf(index)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[size]) (RFC 9162 §2.1.3.1); `size` defaults to the tree's size."""
        with self._reading_tree() as (tree, tree_size):
            n = tree_size if size is None else _tree_size_arg(size, tree_size, "size")
            return merkle.inclusion_proof(tree, index, n)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1); `new_size` defaults to the tree's."""
        with self._reading_tree() as (tree, tree_size):
            n = tree_size if new_size is None else _tree_size_arg(new_size, tree_size, "new_size")
            return merkle.consistency_proof(tree, old_size, n)

    def _usable_tree(self) -> merkle.HashStore:
        """The tree, or ConfigError saying why it cannot be read; called under _lock."""
        if self._tree is None:
            raise ConfigError(f"{self.path}: this audit log was opened without its Merkle tree")
        if self._tree_failure is not None:
            raise ConfigError(self._tree_failure)
        if self._fd < 0:
            raise ConfigError(f"{self.path}: the audit log is closed")
        return self._tree

    @contextmanager
    def _reading_tree(self) -> Iterator[tuple[merkle.HashStore, int]]:
        """The tree and its published size; close() waits until the reader is done, so that
        no read lands on a file descriptor the close has freed (and the system reused)."""
        with self._lock:
            tree = self._usable_tree()
            size = self._tree_size
            self._tree_readers += 1
        try:
            yield tree, size
        finally:
            with self._changed:
                self._tree_readers -= 1
                self._changed.notify_all()

    def close(self) -> None:
        """Close the file once any write in progress is done; waiting appends then fail."""
        with self._changed:
            while self._writing or self._tree_readers:
                self._changed.wait()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
                if self._tree is not None:
                    self._tree.close()
            # appends waiting in the open batch wake, find the log closed and fail
            self._batch = _Batch()
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


def _tree_size_arg(size: int, tree_size: int, field: str) -> int:
    if not 0 <= size <= tree_size:
        raise InvalidArgument(
            f"the audit log's Merkle tree has {tree_size} leaves; {size} is not a size of it",
            field=field,
        )
    return size


def _open_tree(path: Path, log_size: int) -> merkle.HashStore:
    """The Merkle tree of the log's first `log_size` bytes (whole lines), repaired as the module
    docstring says; ConfigError if the log is shorter than its tree or its last line changed."""
    directory, prefix = path.parent, path.name + TREE_SUFFIX
    files = _tree_files(directory, prefix)
    lines, marks = _count_lines(path, log_size)
    leaves = files[0][1] // merkle.HASH_BYTES if 0 in files else 0
    if leaves > lines:
        raise ConfigError(
            f"{path}: the log has {lines} complete lines but its Merkle tree "
            f"({prefix}.0) holds {leaves} leaves: the log was truncated or replaced by a shorter "
            "one after those entries were recorded. Restore it from a backup; the tree is kept "
            "as evidence and never rebuilt over a log shorter than it"
        )
    problem = _tree_problem(prefix, files, leaves)
    if problem is None and not files and lines:
        problem = "there is none (a log from before the tree, or its files were deleted)"
    store: merkle.HashStore | None = None
    if problem is None:
        try:
            store = merkle.HashStore(directory, prefix=prefix)
        except ConfigError as exc:
            problem = str(exc)
    if store is not None and leaves:
        try:
            stored = store.leaf(leaves - 1)
            line = next(_read_lines(path, marks, leaves - 1, leaves))
        except BaseException:
            store.close()
            raise
        if stored != merkle.leaf_hash(line[:-1]):
            store.close()
            store = None
            if stored != bytes(merkle.HASH_BYTES):
                raise ConfigError(
                    f"{path}, line {leaves}: the line does not hash to leaf {leaves - 1} of the "
                    f"log's Merkle tree ({prefix}.0): the line was changed after it was "
                    "recorded, or the tree was. Compare the log with a backup; if the log is "
                    f"right, delete {path}{TREE_SUFFIX}.* to rebuild the tree from it"
                )
            # zeros: the size of an unsynced write reached the disk, its data did not
            problem = f"its last leaf ({prefix}.0, leaf {leaves - 1}) is zeros"
    start = 0
    if store is None:
        _log.warning(
            "%s: rebuilding the audit log's Merkle tree from its %d lines: %s",
            path, lines, problem,
        )  # fmt: skip
        for level_path, _ in files.values():
            level_path.unlink()
        store = merkle.HashStore(directory, prefix=prefix)
    else:
        start = store.size
        if lines > start:
            _log.warning(
                "%s: the audit log's Merkle tree lacks the last %d line(s) of the log (a stop "
                "after the log's write); hashing them",
                path, lines - start,
            )  # fmt: skip
    try:
        for raw in _read_lines(path, marks, start, lines):
            store.append(merkle.leaf_hash(raw[:-1]), sync=False)
    except BaseException:
        store.close()
        raise
    return store


def _tree_files(directory: Path, prefix: str) -> dict[int, tuple[Path, int]]:
    """level -> (path, size) of the tree files there are; ConfigError for one others can read."""
    files: dict[int, tuple[Path, int]] = {}
    with os.scandir(directory) as found:
        for item in found:
            level = item.name[len(prefix) + 1 :]
            if not item.name.startswith(prefix + ".") or not level.isdigit():
                continue
            info = item.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode)
            if mode & 0o077:
                raise ConfigError(
                    f"{item.path}: mode {mode:04o} lets other users read it; it must be 0600 "
                    f"(run: chmod 600 {item.path})"
                )
            files[int(level)] = (Path(item.path), info.st_size)
    return files


def _tree_problem(prefix: str, files: Mapping[int, tuple[Path, int]], leaves: int) -> str | None:
    """What makes the tree files unusable as they are (torn, out of step), or None."""
    for level, (_, size) in sorted(files.items()):
        if size % merkle.HASH_BYTES:
            return (
                f"{prefix}.{level} holds {size} bytes, not a whole number of "
                f"{merkle.HASH_BYTES}-byte hashes (a write torn by a stop)"
            )
    top = max([leaves.bit_length() - 1, *files])
    for level in range(top + 1):
        if level not in files:
            return f"{prefix}.{level} is missing"
        have, want = files[level][1] // merkle.HASH_BYTES, leaves >> level
        if have != want:
            return (
                f"{prefix}.{level} holds {have} hashes where {leaves} leaves make {want}: the "
                "tree's files are out of step"
            )
    return None


def _count_lines(path: Path, end: int) -> tuple[int, list[tuple[int, int]]]:
    """Newlines in the first `end` bytes, and (offset, index) of a line start about every
    _SCAN_BYTES bytes, from which `_read_lines` finds a line without counting again."""
    lines = offset = 0
    marks = [(0, 0)]
    with path.open("rb", buffering=0) as handle:
        while offset < end:
            chunk = handle.read(min(_SCAN_BYTES, end - offset))
            if not chunk:
                break
            found = chunk.count(b"\n")
            if found:
                lines += found
                marks.append((offset + chunk.rindex(b"\n") + 1, lines))
            offset += len(chunk)
    return lines, marks


def _read_lines(path: Path, marks: list[tuple[int, int]], start: int, stop: int) -> Iterator[bytes]:
    """Lines start..stop-1 (0-based) with their newlines, found from `_count_lines`' marks."""
    if start >= stop:
        return
    offset, index = marks[bisect_right(marks, start, key=lambda mark: mark[1]) - 1]
    with path.open("rb") as handle:
        handle.seek(offset)
        for raw in handle:
            if index >= start:
                if not raw.endswith(b"\n"):
                    raise ConfigError(f"{path}: line {index + 1} changed while being read")
                yield raw
                if index + 1 == stop:
                    return
            index += 1
    raise ConfigError(f"{path}: the log has fewer than {stop} lines; it changed while being read")


def _cut_back(fd: int, size: int) -> bool:
    """Truncate to `size` what a failed write left after the last durable line; whether bytes
    may remain (the truncation failed too: the next write tries again)."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        return True
    return False


def _probe_write(path: Path) -> None:
    """PROBE_BYTES written to `path` and fsynced, then the file removed (AuditLog.probe)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, _FILE_MODE)
    try:
        _write_durably(fd, b"\0" * PROBE_BYTES)
    finally:
        os.close(fd)
        # also after a failed write: a scratch file never stays to take the room it tested
        with suppress(FileNotFoundError):
            path.unlink()


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
