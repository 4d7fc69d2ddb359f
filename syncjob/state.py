"""The sync job's state file: checkpoints, the outbox of signed batches and staged work.

One SQLite file in the job's state directory (SQLite, not DuckDB: `osmanthus sync status` reads
it while a running job holds it open, which DuckDB's one-process lock would refuse). Every step
that must not be half-done is one transaction:

- a gathered range becomes signed batches in the outbox, and the cursors it read past advance,
  together; a crash before the commit gathers the same range again, a crash after it resends the
  saved batches, never rebuilt ones (statistics are noisy, so a rebuilt batch would conflict);
- a batch leaves the outbox, and its stream's checkpoint advances, together, only once the
  receiver has acknowledged it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import sqlite3
import stat
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from osmanthus.core.errors import ConfigError, FailedPrecondition
from osmanthus.core.files import narrow_umask, private_directory
from osmanthus.core.storefile import sqlite_transaction
from osmanthus.core.syncbatch import BatchKind, SignedBatch

STATE_FILE: Final = "sync.sqlite"
LOCK_FILE: Final = "sync.lock"
#: what the state directory holds, for the log lines and errors about its modes
STATE_WHAT: Final = (
    "the sync job's state (the outbox of signed batches, staged grades, where each stream stands)"
)
SCHEMA_VERSION: Final = 1
#: where a stream starts: the watermark_from of its first batch
ORIGIN: Final = "origin"

_SCHEMA: Final = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- the last batch of each stream the receiver acknowledged
CREATE TABLE streams (
    kind TEXT PRIMARY KEY,
    sequence INTEGER NOT NULL,
    watermark TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    acked_at TEXT NOT NULL
);
-- signed batches not yet acknowledged, sent in (kind, sequence) order
CREATE TABLE outbox (
    kind TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    batch_id TEXT NOT NULL UNIQUE,
    watermark_from TEXT NOT NULL,
    watermark_to TEXT NOT NULL,
    records INTEGER NOT NULL,
    partial INTEGER NOT NULL,
    payload BLOB NOT NULL,
    signature BLOB NOT NULL,
    key_id TEXT NOT NULL,
    built_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (kind, sequence)
);
CREATE TABLE runs (
    run INTEGER PRIMARY KEY,
    tag TEXT NOT NULL UNIQUE,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT
);
-- the phases of a run already committed (lists, grades, statistics)
CREATE TABLE run_phases (run INTEGER NOT NULL, phase TEXT NOT NULL, PRIMARY KEY (run, phase));
-- when each kind of work (a phase, or one statistic) last completed, for its schedule
CREATE TABLE done (work TEXT PRIMARY KEY, at TEXT NOT NULL);
-- each department's list change feed: which feed (a re-created store is another) and the
-- cursor after the last event batched
CREATE TABLE list_cursors (
    department TEXT PRIMARY KEY,
    cursor TEXT NOT NULL,
    feed_id TEXT NOT NULL
);
-- published entries reported and not yet withdrawn or expired (their expiry is reported by us)
CREATE TABLE list_open (
    department TEXT NOT NULL,
    entry_id TEXT NOT NULL,
    window_end TEXT NOT NULL,
    entry TEXT NOT NULL,
    PRIMARY KEY (department, entry_id)
);
-- the grade last batched for each enterprise: a grade goes up again only when it changes
CREATE TABLE grades_sent (
    credit_code TEXT PRIMARY KEY,
    grade TEXT NOT NULL,
    score INTEGER NOT NULL,
    departments_answered INTEGER NOT NULL
);
-- a run's grades as they are computed, so a stopped run resumes where it stopped; `roster` is
-- the digest of the roster the positions refer to (a changed roster starts over), and a refused
-- row keeps no code (the value may be anything, even a person's id)
CREATE TABLE grade_staging (
    run INTEGER NOT NULL,
    roster TEXT NOT NULL,
    position INTEGER NOT NULL,
    credit_code TEXT NOT NULL,
    grade TEXT,
    score INTEGER,
    departments_answered INTEGER,
    as_of TEXT NOT NULL,
    refused TEXT,
    PRIMARY KEY (run, position)
);
-- a run's statistic answers: a spent ε is never asked for again
CREATE TABLE stat_staging (
    run INTEGER NOT NULL,
    name TEXT NOT NULL,
    records TEXT NOT NULL,
    complete INTEGER NOT NULL,
    PRIMARY KEY (run, name)
);
CREATE TABLE errors (at TEXT NOT NULL, work TEXT NOT NULL, message TEXT NOT NULL);
"""
#: tables added since schema version 1 was released: created where missing, so that a state an
#: earlier release made opens as it is (and an earlier release passes them over)
_ADDED_TABLES: Final = """
-- every Ed25519 public key the job has signed batches with (the current one and the earlier
-- ones): a waiting batch is verified against the key that signed it before it is signed anew
-- or sent (syncjob.verify)
CREATE TABLE IF NOT EXISTS signing_keys (
    key_id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL,
    first_used TEXT NOT NULL,
    last_used TEXT NOT NULL
);
-- waiting batches that failed that check: never signed anew or sent, their stream waiting
-- behind them until `sync quarantine drop|rebuild`; a resolved row is kept as the record
CREATE TABLE IF NOT EXISTS quarantine (
    batch_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL,
    reason TEXT NOT NULL,
    quarantined_at TEXT NOT NULL,
    resolved_at TEXT,
    resolution TEXT
)
"""
#: errors kept for `sync status`; older ones are dropped
_ERRORS_KEPT: Final = 200


@dataclass(frozen=True)
class Run:
    run: int
    #: the run's watermark stem: UTC start time and run number, never the same twice
    tag: str
    started_at: datetime
    resumed: bool
    #: what the work a run completes is dated by, for its schedule: the run's start, so a daily
    #: job whose grades take minutes finds them due at the same hour the next day; for a
    #: resumed run the time it resumed (its own start may be a day old, and the fresh run that
    #: follows must not find the work due again)
    stamp: datetime


@dataclass(frozen=True)
class OutboxBatch:
    kind: BatchKind
    sequence: int
    batch_id: str
    watermark_from: str
    watermark_to: str
    records: int
    partial: bool
    signed: SignedBatch
    built_at: datetime
    attempts: int


@dataclass(frozen=True)
class OutboxSummary:
    batches: int
    records: int
    #: kind → (batches, records)
    by_kind: Mapping[BatchKind, tuple[int, int]]
    oldest_built_at: datetime | None
    attempts: int


@dataclass(frozen=True)
class StreamPosition:
    kind: BatchKind
    sequence: int
    watermark: str
    batch_id: str
    acked_at: datetime


@dataclass(frozen=True)
class QuarantinedBatch:
    """A waiting batch that failed verification (syncjob.verify), as the state records it."""

    batch_id: str
    kind: BatchKind
    sequence: int
    #: as the outbox row named it: unverified, so shown only through shown_key_id
    key_id: str
    payload_sha256: str
    reason: str
    quarantined_at: datetime
    resolved_at: datetime | None
    resolution: str | None


@dataclass(frozen=True)
class SigningKeyRecord:
    """A public key the job signed with: raw Ed25519 bytes, and when it was first and last used."""

    key_id: str
    public_key: bytes
    first_used: datetime
    last_used: datetime


@dataclass(frozen=True)
class StagedGrade:
    position: int
    credit_code: str
    grade: str | None
    score: int | None
    departments_answered: int | None
    as_of: str
    refused: str | None


@dataclass(frozen=True)
class OpenEntry:
    department: str
    entry_id: str
    window_end: str
    #: the list-change record the entry was published with (its published fields)
    record: Mapping[str, Any]


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold the job's lock on `directory`: a second job on the same state is refused, since two
    would number the same stream's batches twice. The kernel drops the lock if the job dies."""
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory", field="state_dir")
    # the job's files are its user's alone from here on (SQLite makes its -wal and -shm with
    # the state file's mode; the umask covers anything else the job creates)
    narrow_umask()
    private_directory(directory, what=STATE_WHAT)
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"cannot use {directory}: {exc.strerror}", field="state_dir") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FailedPrecondition(
                f"another sync job is running on {directory} (process {running_job(directory)}); "
                "one job per state directory",
                field="state_dir",
            ) from None
        # who holds it, for `sync status` (which must not take the lock itself: a job
        # starting at that moment would be refused)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def running_job(directory: Path) -> int | None:
    """The process id of the job holding `directory`'s lock, if one is running (from the
    kernel's table of held locks, not from the pid the file names: that may be stale)."""
    try:
        held = (directory / LOCK_FILE).stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            pid = int(fields[4])
            same = (
                int(inode) == held.st_ino
                and int(major, 16) == os.major(held.st_dev)
                and int(minor, 16) == os.minor(held.st_dev)
            )
        except ValueError:
            continue
        if same:
            return pid
    return None


def _text(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SyncState:
    """The job's state file. One job at a time may write it (see `lock`); anyone may read it."""

    def __init__(self, directory: Path, *, sender: str, key_id: str | None) -> None:
        """Open (or create, with `key_id` given) the state of `sender`'s job in `directory`.

        The file is bound to its sender at creation: a configuration naming another sender is
        refused, so two cities' streams never mix in one checkpoint.
        """
        self.directory = directory
        self.path = directory / STATE_FILE
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory} is not a directory", field="state_dir")
        creating = not self.path.exists()
        if creating and key_id is None:
            raise FailedPrecondition(
                f"{self.path} does not exist: the job has not run yet", field="state_dir"
            )
        if creating:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)
        elif stat.S_IMODE(directory.stat().st_mode) & 0o077:
            raise ConfigError(
                f"{directory} is open to other users; the state holds the job's outbox: "
                f"chmod 700 {directory}",
                field="state_dir",
            )
        old = os.umask(0o077)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old)
        try:
            self._open(sender=sender, key_id=key_id)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigError(
                f"{self.path} is not a readable sync state ({exc}); restore it from a backup "
                "(never delete it: it holds the outbox and where each stream stands)",
                field="state_dir",
            ) from None
        except BaseException:
            self._db.close()
            raise

    def _open(self, *, sender: str, key_id: str | None) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        with self.transaction():
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "meta" not in tables:
                if key_id is None:
                    raise FailedPrecondition(f"{self.path} holds no sync state", field="state_dir")
                # one statement at a time: executescript would commit the open transaction
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("sender", sender),
                        ("created_at", _text(datetime.now(UTC))),
                    ],
                )
            meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            for statement in _ADDED_TABLES.split(";\n"):
                if statement.strip():
                    self._db.execute(statement)
        if meta.get("schema_version") != str(SCHEMA_VERSION):
            raise ConfigError(
                f"{self.path} has schema version {meta.get('schema_version')}; this version of "
                f"Osmanthus reads {SCHEMA_VERSION}",
                field="state_dir",
            )
        if meta.get("sender") != sender:
            raise ConfigError(
                f"{self.path} holds the streams of sender {meta.get('sender')!r}, not "
                f"{sender!r}: give each sender its own state_dir",
                field="sender",
            )

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return sqlite_transaction(self._db)

    def close(self) -> None:
        self._db.close()

    # --- runs ------------------------------------------------------------------------------------

    def begin_run(self, now: datetime) -> Run:
        """The unfinished run to resume, or a new one."""
        with self.transaction() as db:
            row = db.execute(
                "SELECT run, tag, started_at FROM runs WHERE finished_at IS NULL "
                "ORDER BY run DESC LIMIT 1"
            ).fetchone()
            if row is not None:
                return Run(
                    run=row[0], tag=row[1], started_at=_time(row[2]), resumed=True, stamp=now
                )
            (last,) = db.execute("SELECT coalesce(max(run), 0) FROM runs").fetchone()
            number = last + 1
            tag = f"{now.astimezone(UTC):%Y%m%dT%H%M%SZ}.r{number}"
            db.execute(
                "INSERT INTO runs (run, tag, started_at) VALUES (?, ?, ?)",
                [number, tag, _text(now)],
            )
        return Run(run=number, tag=tag, started_at=now, resumed=False, stamp=now)

    def phase_done(self, run: Run, phase: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM run_phases WHERE run = ? AND phase = ?", [run.run, phase]
        ).fetchone()
        return row is not None

    def last_done(self, work: str) -> datetime | None:
        row = self._db.execute("SELECT at FROM done WHERE work = ?", [work]).fetchone()
        return _time(row[0]) if row else None

    def finish_run(self, run: Run, *, now: datetime, summary: Mapping[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET finished_at = ?, summary = ? WHERE run = ?",
                [_text(now), json.dumps(summary, sort_keys=True), run.run],
            )

    # --- building batches ------------------------------------------------------------------------

    def next_position(self, kind: BatchKind) -> tuple[int, str]:
        """The sequence and watermark_from of `kind`'s next batch: after the outbox's last
        batch of the stream, else after the last acknowledged one, else the stream's start."""
        row = self._db.execute(
            "SELECT sequence, watermark_to FROM outbox WHERE kind = ? "
            "ORDER BY sequence DESC LIMIT 1",
            [kind.value],
        ).fetchone()
        if row is None:
            row = self._db.execute(
                "SELECT sequence, watermark FROM streams WHERE kind = ?", [kind.value]
            ).fetchone()
        return (row[0] + 1, row[1]) if row else (1, ORIGIN)

    @staticmethod
    def _enqueue(db: sqlite3.Connection, batches: Sequence[OutboxBatch]) -> None:
        db.executemany(
            "INSERT INTO outbox (kind, sequence, batch_id, watermark_from, watermark_to, "
            "records, partial, payload, signature, key_id, built_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    b.kind.value,
                    b.sequence,
                    b.batch_id,
                    b.watermark_from,
                    b.watermark_to,
                    b.records,
                    int(b.partial),
                    b.signed.payload,
                    b.signed.signature,
                    b.signed.key_id,
                    _text(b.built_at),
                )
                for b in batches
            ],
        )

    @staticmethod
    def _mark(db: sqlite3.Connection, run: Run, phase: str, *, done: bool = True) -> None:
        db.execute("INSERT OR IGNORE INTO run_phases VALUES (?, ?)", [run.run, phase])
        if done:
            db.execute("INSERT OR REPLACE INTO done VALUES (?, ?)", [phase, _text(run.stamp)])

    # --- list changes ----------------------------------------------------------------------------

    def list_cursor(self, department: str) -> tuple[str, str]:
        """(feed id, cursor) of `department`'s change feed; ("", "") before its first event."""
        row = self._db.execute(
            "SELECT feed_id, cursor FROM list_cursors WHERE department = ?", [department]
        ).fetchone()
        return (str(row[0]), str(row[1])) if row else ("", "")

    def open_entries(self) -> list[OpenEntry]:
        return [
            OpenEntry(department=r[0], entry_id=r[1], window_end=r[2], record=json.loads(r[3]))
            for r in self._db.execute(
                "SELECT department, entry_id, window_end, entry FROM list_open "
                "ORDER BY window_end, department, entry_id"
            )
        ]

    def commit_list_changes(
        self,
        run: Run,
        *,
        batches: Sequence[OutboxBatch],
        cursors: Mapping[str, tuple[str, str]],
        opened: Sequence[OpenEntry],
        closed: Sequence[tuple[str, str]],
        complete: bool,
    ) -> None:
        """Enqueue the range's batches and move every cursor past it, in one transaction.

        `complete` is false when a department could not be read: the phase is then not marked
        done for scheduling, so the next run asks that department again at once."""
        with self.transaction() as db:
            self._enqueue(db, batches)
            db.executemany(
                "INSERT OR REPLACE INTO list_cursors VALUES (?, ?, ?)",
                [(d, cursor, feed) for d, (feed, cursor) in cursors.items()],
            )
            db.executemany(
                "DELETE FROM list_open WHERE department = ? AND entry_id = ?", list(closed)
            )
            db.executemany(
                "INSERT OR REPLACE INTO list_open VALUES (?, ?, ?, ?)",
                [
                    (e.department, e.entry_id, e.window_end, json.dumps(e.record, sort_keys=True))
                    for e in opened
                ],
            )
            self._mark(db, run, "lists", done=complete)

    # --- grades ----------------------------------------------------------------------------------

    def adopt_staged_grades(self, run: Run, *, roster: str) -> int:
        """Take over the grades an earlier, failed run staged from the same roster (digest
        `roster`; those of another roster are dropped: their positions mean nothing now); how
        many `run` now holds."""
        with self.transaction() as db:
            db.execute("DELETE FROM grade_staging WHERE roster != ?", [roster])
            db.execute("UPDATE grade_staging SET run = ? WHERE run < ?", [run.run, run.run])
            (count,) = db.execute(
                "SELECT count(*) FROM grade_staging WHERE run = ?", [run.run]
            ).fetchone()
        return int(count)

    def stage_grades(self, run: Run, rows: Sequence[StagedGrade], *, roster: str) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO grade_staging VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run.run,
                        roster,
                        g.position,
                        g.credit_code,
                        g.grade,
                        g.score,
                        g.departments_answered,
                        g.as_of,
                        g.refused,
                    )
                    for g in rows
                ],
            )

    def changed_grades(self, run: Run) -> Iterator[StagedGrade]:
        """The run's graded enterprises whose grade, score or coverage differs from the last one
        batched (or that were never batched), in roster order."""
        cursor = self._db.execute(
            "SELECT s.position, s.credit_code, s.grade, s.score, s.departments_answered, "
            "s.as_of, s.refused FROM grade_staging s LEFT JOIN grades_sent g "
            "ON g.credit_code = s.credit_code WHERE s.run = ? AND s.refused IS NULL AND "
            "(g.credit_code IS NULL OR g.grade != s.grade OR g.score != s.score OR "
            "g.departments_answered != s.departments_answered) ORDER BY s.position",
            [run.run],
        )
        for row in cursor:
            yield StagedGrade(*row)

    def refused_grades(self, run: Run) -> list[StagedGrade]:
        return [
            StagedGrade(*row)
            for row in self._db.execute(
                "SELECT position, credit_code, grade, score, departments_answered, as_of, "
                "refused FROM grade_staging WHERE run = ? AND refused IS NOT NULL "
                "ORDER BY position",
                [run.run],
            )
        ]

    def commit_grades(
        self, run: Run, *, batches: Sequence[OutboxBatch], sent: Sequence[StagedGrade]
    ) -> None:
        with self.transaction() as db:
            self._enqueue(db, batches)
            db.executemany(
                "INSERT OR REPLACE INTO grades_sent VALUES (?, ?, ?, ?)",
                [(g.credit_code, g.grade, g.score, g.departments_answered) for g in sent],
            )
            db.execute("DELETE FROM grade_staging WHERE run = ?", [run.run])
            self._mark(db, run, "grades")

    # --- statistics ------------------------------------------------------------------------------

    def staged_statistics(self, run: Run) -> dict[str, tuple[list[dict[str, Any]], bool]]:
        """The statistics staged for `run`, after taking over those an earlier run staged and
        never batched (their ε is spent: they go up, never asked again)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE OR IGNORE stat_staging SET run = ? WHERE run < ?", [run.run, run.run]
            )
        return {
            name: (json.loads(records), bool(complete))
            for name, records, complete in self._db.execute(
                "SELECT name, records, complete FROM stat_staging WHERE run = ? ORDER BY name",
                [run.run],
            )
        }

    def stage_statistic(
        self, run: Run, name: str, records: Sequence[Mapping[str, Any]], *, complete: bool
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO stat_staging VALUES (?, ?, ?, ?)",
                [run.run, name, json.dumps(list(records), sort_keys=True), int(complete)],
            )

    def commit_statistics(
        self,
        run: Run,
        *,
        batches: Sequence[OutboxBatch],
        completed: Sequence[str],
    ) -> None:
        """Enqueue the statistics batch; only statistics answered in full count as done for
        their schedule (one a department missed is asked again next run)."""
        with self.transaction() as db:
            self._enqueue(db, batches)
            db.executemany(
                "INSERT OR REPLACE INTO done VALUES (?, ?)",
                [(f"statistic:{name}", _text(run.stamp)) for name in completed],
            )
            db.execute("DELETE FROM stat_staging WHERE run = ?", [run.run])
            db.execute("INSERT OR IGNORE INTO run_phases VALUES (?, 'statistics')", [run.run])

    # --- delivery --------------------------------------------------------------------------------

    _OUTBOX_COLUMNS: Final = (
        "kind, sequence, batch_id, watermark_from, watermark_to, records, partial, payload, "
        "signature, key_id, built_at, attempts"
    )

    @staticmethod
    def _outbox_batch(r: Sequence[Any]) -> OutboxBatch:
        return OutboxBatch(
            kind=BatchKind(r[0]),
            sequence=r[1],
            batch_id=r[2],
            watermark_from=r[3],
            watermark_to=r[4],
            records=r[5],
            partial=bool(r[6]),
            signed=SignedBatch(payload=bytes(r[7]), signature=bytes(r[8]), key_id=r[9]),
            built_at=_time(r[10]),
            attempts=r[11],
        )

    def outbox(self, kind: BatchKind | None = None) -> list[OutboxBatch]:
        """The batches waiting, payloads and all, in (kind, sequence) order."""
        where, parameters = ("WHERE kind = ?", [kind.value]) if kind else ("", [])
        return [
            self._outbox_batch(r)
            for r in self._db.execute(
                f"SELECT {self._OUTBOX_COLUMNS} FROM outbox {where} ORDER BY kind, sequence",
                parameters,
            )
        ]

    def outbox_ids(self) -> list[tuple[BatchKind, str]]:
        """(kind, batch id) of each batch waiting, in sending order, without the payloads."""
        return [
            (BatchKind(k), b)
            for k, b in self._db.execute(
                "SELECT kind, batch_id FROM outbox ORDER BY kind, sequence"
            )
        ]

    def outbox_batch(self, batch_id: str) -> OutboxBatch | None:
        row = self._db.execute(
            f"SELECT {self._OUTBOX_COLUMNS} FROM outbox WHERE batch_id = ?", [batch_id]
        ).fetchone()
        return self._outbox_batch(row) if row else None

    def outbox_summary(self) -> OutboxSummary:
        """Counts of what waits, by SQL alone (an outage can leave hundreds of MB of payloads)."""
        by_kind = {
            BatchKind(k): (int(n), int(r))
            for k, n, r in self._db.execute(
                "SELECT kind, count(*), sum(records) FROM outbox GROUP BY kind"
            )
        }
        row = self._db.execute(
            "SELECT min(built_at), coalesce(sum(attempts), 0) FROM outbox"
        ).fetchone()
        return OutboxSummary(
            batches=sum(n for n, _ in by_kind.values()),
            records=sum(r for _, r in by_kind.values()),
            by_kind=by_kind,
            oldest_built_at=_time(row[0]) if row[0] else None,
            attempts=int(row[1]),
        )

    def resign(self, batch: OutboxBatch, signed: SignedBatch) -> OutboxBatch:
        """Keep `batch` signed anew (the same payload) with the job's current key."""
        self._db.execute(
            "UPDATE outbox SET signature = ?, key_id = ? WHERE batch_id = ?",
            [signed.signature, signed.key_id, batch.batch_id],
        )
        return dataclasses.replace(batch, signed=signed)

    def replace_outbox(
        self, kind: BatchKind, batches: Sequence[OutboxBatch], *, stream: StreamPosition | None
    ) -> None:
        """Put `batches` in place of `kind`'s outbox and move the stream's checkpoint to
        `stream` (the receiver's position), in one transaction: `sync rebase`."""
        with self.transaction() as db:
            self._replace_outbox(db, kind, batches, stream=stream)

    @classmethod
    def _replace_outbox(
        cls,
        db: sqlite3.Connection,
        kind: BatchKind,
        batches: Sequence[OutboxBatch],
        *,
        stream: StreamPosition | None,
    ) -> None:
        db.execute("DELETE FROM outbox WHERE kind = ?", [kind.value])
        cls._enqueue(db, batches)
        db.execute("DELETE FROM streams WHERE kind = ?", [kind.value])
        if stream is not None:
            db.execute(
                "INSERT INTO streams VALUES (?, ?, ?, ?, ?)",
                [
                    kind.value,
                    stream.sequence,
                    stream.watermark,
                    stream.batch_id,
                    _text(stream.acked_at),
                ],
            )

    # --- signing keys and quarantine (syncjob.verify) --------------------------------------------

    def remember_key(self, key_id: str, public_key: bytes, *, at: datetime) -> bool:
        """Record `public_key` (raw Ed25519) as a key the job signs with; whether it is new."""
        with self.transaction() as db:
            updated = db.execute(
                "UPDATE signing_keys SET last_used = ? WHERE key_id = ? AND public_key = ?",
                [_text(at), key_id, public_key],
            ).rowcount
            if not updated:
                # a row of this id with another key is no key of ours: replaced by the real one
                db.execute(
                    "INSERT OR REPLACE INTO signing_keys VALUES (?, ?, ?, ?)",
                    [key_id, public_key, _text(at), _text(at)],
                )
        return not updated

    def signing_keys(self) -> list[SigningKeyRecord]:
        return [
            SigningKeyRecord(
                key_id=r[0], public_key=bytes(r[1]), first_used=_time(r[2]), last_used=_time(r[3])
            )
            for r in self._db.execute(
                "SELECT key_id, public_key, first_used, last_used FROM signing_keys "
                "ORDER BY first_used, key_id"
            )
        ]

    def quarantine(
        self, batch: OutboxBatch, *, payload_sha256: str, reason: str, at: datetime
    ) -> bool:
        """Record `batch` as quarantined (once: a batch already held is left as it is); whether
        it was recorded now."""
        with self.transaction() as db:
            held = db.execute(
                "SELECT 1 FROM quarantine WHERE batch_id = ? AND resolved_at IS NULL",
                [batch.batch_id],
            ).fetchone()
            if held is None:
                db.execute(
                    "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL)",
                    [
                        batch.batch_id,
                        batch.kind.value,
                        batch.sequence,
                        str(batch.signed.key_id)[:100],
                        payload_sha256,
                        reason[:2000],
                        _text(at),
                    ],
                )
        return held is None

    def quarantined(
        self, kind: BatchKind | None = None, *, resolved: bool = False
    ) -> list[QuarantinedBatch]:
        """The batches held in quarantine (or, `resolved`, those released), by kind and sequence."""
        where = "resolved_at IS NOT NULL" if resolved else "resolved_at IS NULL"
        parameters: list[str] = []
        if kind is not None:
            where += " AND kind = ?"
            parameters.append(kind.value)
        return [
            QuarantinedBatch(
                batch_id=r[0],
                kind=BatchKind(r[1]),
                sequence=r[2],
                key_id=r[3],
                payload_sha256=r[4],
                reason=r[5],
                quarantined_at=_time(r[6]),
                resolved_at=_time(r[7]) if r[7] else None,
                resolution=r[8],
            )
            for r in self._db.execute(
                "SELECT batch_id, kind, sequence, key_id, payload_sha256, reason, "
                f"quarantined_at, resolved_at, resolution FROM quarantine WHERE {where} "
                "ORDER BY kind, sequence, rowid",
                parameters,
            )
        ]

    def settle_quarantine(
        self,
        kind: BatchKind,
        *,
        batches: Sequence[OutboxBatch],
        stream: StreamPosition | None,
        resolutions: Mapping[str, str],
        regather: bool,
        at: datetime,
    ) -> None:
        """`sync quarantine drop|rebuild`, in one transaction: `batches` in place of `kind`'s
        outbox, the stream's checkpoint at `stream`, each quarantined batch of `kind` released
        with its resolution (by batch id), and, `regather`, the kind's source read again from
        its start at the next run, so that what a dropped batch held comes from the nodes."""
        with self.transaction() as db:
            self._replace_outbox(db, kind, batches, stream=stream)
            for row, batch_id in db.execute(
                "SELECT rowid, batch_id FROM quarantine WHERE kind = ? AND resolved_at IS NULL",
                [kind.value],
            ).fetchall():
                db.execute(
                    "UPDATE quarantine SET resolved_at = ?, resolution = ? WHERE rowid = ?",
                    [_text(at), resolutions.get(batch_id, "no longer in the outbox"), row],
                )
            if regather:
                self._regather(db, kind)

    @staticmethod
    def _regather(db: sqlite3.Connection, kind: BatchKind) -> None:
        if kind is BatchKind.LIST_CHANGES:
            # every feed from its first event: the province hears again of what it holds
            db.execute("DELETE FROM list_cursors")
            db.execute("DELETE FROM done WHERE work = 'lists'")
        elif kind is BatchKind.GRADES:
            # every enterprise's grade goes up again, as on the first run
            db.execute("DELETE FROM grades_sent")
            db.execute("DELETE FROM done WHERE work = 'grades'")
        else:
            # every statistic is asked again (its ε is spent again)
            db.execute("DELETE FROM done WHERE work LIKE 'statistic:%'")

    def count_attempt(self, batch: OutboxBatch) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1 WHERE batch_id = ?", [batch.batch_id]
        )

    def acknowledge(self, batch: OutboxBatch, *, at: datetime) -> None:
        """The receiver holds `batch`: take it out of the outbox and move its stream on."""
        with self.transaction() as db:
            db.execute("DELETE FROM outbox WHERE batch_id = ?", [batch.batch_id])
            db.execute(
                "INSERT OR REPLACE INTO streams VALUES (?, ?, ?, ?, ?)",
                [batch.kind.value, batch.sequence, batch.watermark_to, batch.batch_id, _text(at)],
            )

    def streams(self) -> dict[BatchKind, StreamPosition]:
        return {
            BatchKind(r[0]): StreamPosition(
                kind=BatchKind(r[0]),
                sequence=r[1],
                watermark=r[2],
                batch_id=r[3],
                acked_at=_time(r[4]),
            )
            for r in self._db.execute(
                "SELECT kind, sequence, watermark, batch_id, acked_at FROM streams"
            )
        }

    # --- errors and status -----------------------------------------------------------------------

    def record_error(self, work: str, message: str, *, at: datetime) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO errors VALUES (?, ?, ?)", [_text(at), work, message[:2000]])
            db.execute(
                "DELETE FROM errors WHERE rowid NOT IN "
                "(SELECT rowid FROM errors ORDER BY rowid DESC LIMIT ?)",
                [_ERRORS_KEPT],
            )

    def last_error(self) -> tuple[datetime, str, str] | None:
        row = self._db.execute(
            "SELECT at, work, message FROM errors ORDER BY rowid DESC LIMIT 1"
        ).fetchone()
        return (_time(row[0]), row[1], row[2]) if row else None

    def runs(self, *, limit: int = 1) -> list[dict[str, Any]]:
        return [
            {
                "run": r[0],
                "tag": r[1],
                "started_at": r[2],
                "finished_at": r[3],
                "summary": json.loads(r[4]) if r[4] else None,
            }
            for r in self._db.execute(
                "SELECT run, tag, started_at, finished_at, summary FROM runs "
                "ORDER BY run DESC LIMIT ?",
                [limit],
            )
        ]

    def list_cursors(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT department, cursor FROM list_cursors ORDER BY 1"))

    def last_ok_run(self) -> datetime | None:
        """When the last run that ended with no error finished."""
        for finished, summary in self._db.execute(
            "SELECT finished_at, summary FROM runs WHERE finished_at IS NOT NULL "
            "ORDER BY run DESC LIMIT 200"
        ):
            if summary and json.loads(summary).get("exit_code") == 0:
                return _time(finished)
        return None

    def done_times(self) -> dict[str, datetime]:
        return {w: _time(a) for w, a in self._db.execute("SELECT work, at FROM done ORDER BY 1")}

    def __enter__(self) -> SyncState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
