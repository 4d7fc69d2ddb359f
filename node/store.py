"""A department's record store: one DuckDB file, all-or-nothing validated imports, lookups.

The running node owns the file's one read-write connection: imports (`osmanthus node import
--node`, the inbox) run inside it as one transaction per file, on a writer cursor of their own,
while every lookup reads a committed snapshot through a cursor of its own (DuckDB's MVCC), so
a query during an import sees the records before it or after it, never a mix. A file may add
records, and correct or withdraw stored ones by record id; each correction and withdrawal is
kept in `record_history` (who, when, why, before and after), each file in `imports` (by its
SHA-256, so the same file is never applied twice).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import duckdb

# the import file's rows and checks live in node.importrows; the names other modules import
# from here stay importable from here
from node.importrows import (
    ACTIONS,
    ADD,
    COLUMNS,
    CORRECT,
    FILE_COLUMNS,
    MAX_QUANTITY,
    MAX_RECORD_ID_LENGTH,
    REQUIRED_COLUMNS,
    STAGED_COLUMNS,
    WITHDRAW,
    ProblemList,
    RowRules,
    read_table,
    record_problems,
    rows_rejected,
)
from node.importworker import StageJob, StagingWorker, stage_file
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
)
from osmanthus.core.rules import Record, RuleSet
from osmanthus.core.storefile import create_or_read_meta, rollback_quietly, transaction
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

SCHEMA_VERSION = 1

# record_id and subject_id are stored uncompressed: a batch lookup scans every row of both, and
# decompressing DuckDB's default FSST encoding of these unique strings costs more than the scan
# and the join together (5,000 subjects at a million records: ~90 ms of CPU with it, ~55 without).
# Stores created before this keep their compression; they answer the same, only slower.
_SCHEMA = (
    f"""
CREATE TABLE IF NOT EXISTS meta (
    department VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    record_id VARCHAR USING COMPRESSION uncompressed PRIMARY KEY,
    subject_kind VARCHAR NOT NULL CHECK (subject_kind IN ('person', 'enterprise')),
    subject_id VARCHAR USING COMPRESSION uncompressed NOT NULL,
    kind VARCHAR NOT NULL,
    quantity INTEGER NOT NULL CHECK (quantity BETWEEN 1 AND {MAX_QUANTITY}),
    event_start DATE NOT NULL,
    event_end DATE CHECK (event_end IS NULL OR event_end >= event_start),
    status VARCHAR NOT NULL CHECK (status IN ('active', 'disputed'))
);
CREATE INDEX IF NOT EXISTS records_subject ON records (subject_id);
"""
    + """
CREATE TABLE IF NOT EXISTS record_history (
    seq BIGINT PRIMARY KEY,
    record_id VARCHAR NOT NULL,
    subject_kind VARCHAR NOT NULL,
    subject_id VARCHAR NOT NULL,
    import_sha256 VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    action VARCHAR NOT NULL CHECK (action IN ('correct', 'withdraw')),
    reason VARCHAR NOT NULL,
    before VARCHAR NOT NULL,
    after VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS imports (
    sha256 VARCHAR PRIMARY KEY,
    "at" TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    added BIGINT NOT NULL,
    corrected BIGINT NOT NULL,
    withdrawn BIGINT NOT NULL
);
"""
)
#: the tables a store created before live imports lacks; created when it is opened writable
_HISTORY_TABLES = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS record_history") :]

_SELECT_ONE = (
    "SELECT record_id, kind, quantity, event_start, event_end, status, subject_kind FROM records "
    "WHERE subject_id = ?"
)
# A chunk of ids travels as one list parameter and meets the table in a hash semi-join: one scan
# of the table, ~40 ms for 5,000 ids at a million records. Up to _INDEX_LOOKUP_MAX ids are spelled
# out as an IN list instead, which DuckDB answers with index lookups (~3 ms for 100 ids, where
# the scan costs its full price); past a few hundred ids the lookups, each fetching its row from
# a storage segment, cost more than the scan. Either way the subject kind is checked in Python:
# any other condition in the WHERE clause makes DuckDB give up the index.
_INDEX_LOOKUP_MAX = 256
_SELECT_MANY_COLUMNS = (
    "SELECT subject_id, record_id, kind, quantity, event_start, event_end, status, subject_kind "
    "FROM records WHERE subject_id IN "
)
_SELECT_MANY_ORDER = " ORDER BY subject_id, record_id"
_SELECT_MANY = _SELECT_MANY_COLUMNS + "(SELECT unnest(?::VARCHAR[]))" + _SELECT_MANY_ORDER

# how a staging file is read back: every column typed, nothing guessed, empty means NULL
_READ_STAGED = (
    "read_csv(?, header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
    "nullstr = '', columns = {'record_id': 'VARCHAR', 'subject_kind': 'VARCHAR', "
    "'subject_id': 'VARCHAR', 'kind': 'VARCHAR', 'quantity': 'INTEGER', 'event_start': 'DATE', "
    "'event_end': 'DATE', 'status': 'VARCHAR'})"
)

# an import's staged rows (node.importrows.STAGED_COLUMNS), read into a temporary table of the
# writer's transaction: duplicate ids, stored ids and the records changes name are found there
_READ_STAGED_ROWS = (
    "read_csv(?, header = true, auto_detect = false, delim = ',', quote = '\"', escape = '\"', "
    "nullstr = '', columns = {'line': 'BIGINT', 'action': 'VARCHAR', 'ok': 'BOOLEAN', "
    "'record_id': 'VARCHAR', 'subject_kind': 'VARCHAR', 'subject_id': 'VARCHAR', "
    "'kind': 'VARCHAR', 'quantity': 'INTEGER', 'event_start': 'DATE', 'event_end': 'DATE', "
    "'status': 'VARCHAR', 'reason': 'VARCHAR'})"
)
_STAGED = "temp.import_rows"
# a record's fields as record_history keeps them (keys sorted, as json.dumps(sort_keys) wrote)
_RECORD_JSON = (
    "json_object('event_end', {t}.event_end, 'event_start', {t}.event_start, 'kind', {t}.kind, "
    "'quantity', {t}.quantity, 'status', {t}.status)::VARCHAR"
)
# DuckDB holds its transaction lock for the whole of a commit, and a statement that starts a
# transaction waits for it: a million-row import's commit (appending to both indexes) stalled
# every lookup that arrived meanwhile for as long (~0.5 s per 500,000 rows). So just before a
# write commits, the store opens a few read transactions of its own (a snapshot of the state
# before the commit) and lookups arriving during the commit read those instead of starting
# one: they see the records before the import, as they would have a moment earlier.
#: how many pre-commit snapshots a commit leaves for the lookups that arrive while it runs
FROZEN_READERS = 4
#: a write that leaves the WAL this large is followed by a checkpoint (DuckDB's own default
#: threshold, 16 MiB): see RecordStore._checkpoint_if_due
CHECKPOINT_WAL_BYTES = 16 * 1024 * 1024
# DuckDB begins a transaction lazily, at its first statement that reads the database: this
# one takes the snapshot without reading anything
_TAKE_SNAPSHOT = "SELECT 1 FROM meta LIMIT 0"

#: what an import calls, inside its transaction just before the commit, with what it did: the
#: node appends the import's audit entry there, so that an entry it cannot write rolls it back
BeforeCommit = Callable[["ImportReport"], None]


@dataclass(frozen=True)
class ImportReport:
    """What one import file did: `rows` records added, `corrected`, `withdrawn`; `duplicate`
    when a file with the same SHA-256 was applied before (nothing was done this time, and the
    counts and `at`/`actor` are the first application's)."""

    path: Path
    rows: int
    corrected: int = 0
    withdrawn: int = 0
    sha256: str = ""
    duplicate: bool = False
    at: datetime.datetime | None = None
    actor: str = ""


@dataclass(frozen=True, kw_only=True)
class HistoryLine:
    """One correction or withdrawal of a stored record, as `record_history` keeps it."""

    seq: int
    record_id: str
    import_sha256: str
    at: datetime.datetime
    actor: str
    action: str
    reason: str
    before: dict[str, object] = field(default_factory=dict)
    after: dict[str, object] = field(default_factory=dict)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes (an import file's identity: the same file is applied once)."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: file does not exist", field="path") from None
    return digest.hexdigest()


class RecordStore:
    """One department's records in one DuckDB file.

    Lookups may run from many threads at once (each in a read transaction of its own, reading
    the last committed state); writes are serialised on a writer cursor of their own, so a
    long import never holds up a lookup, nor does its commit (lookups during a commit read a
    snapshot taken just before it: FROZEN_READERS). `_lock` is held while a lookup starts its
    transaction (a statement on `meta`), not while it reads.
    """

    def __init__(
        self,
        path: Path,
        *,
        department: DepartmentId,
        read_only: bool = False,
        read_only_reason: str | None = None,
        staging_dir: Path | None = None,
        checkpoint_wal_bytes: int = CHECKPOINT_WAL_BYTES,
    ) -> None:
        self.path = Path(path)
        self._checkpoint_wal_bytes = checkpoint_wal_bytes
        self.department = department
        self.read_only = read_only
        #: why the store is open read-only (its file cannot be written, say), if known
        self.read_only_reason = read_only_reason
        # where imports stage their rows: a running node's state directory (node.server), so
        # that the database's directory need not take other files; offline, beside the file
        self._staging_dir = Path(staging_dir) if staging_dir is not None else self.path.parent
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pinned = threading.local()
        # while a write commits: read transactions begun just before it, for lookups to share
        self._frozen: _Frozen | None = None
        # notified when a frozen snapshot is handed back, and when a commit ends
        self._returned = threading.Condition(self._lock)
        if read_only and not self.path.exists():
            raise ConfigError(f"{self.path}: record store does not exist")
        try:
            self._conn = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as e:
            raise ConfigError(
                f"{self.path}: cannot open the record store ({e}); is another process using it?"
            ) from None
        try:
            self._check_or_create_schema()
            if not read_only:
                with transaction(self._conn):
                    self._conn.execute(_HISTORY_TABLES)
            self._writer = self._conn.cursor()
        except BaseException:
            self._conn.close()
            raise

    def _check_or_create_schema(self) -> None:
        row = create_or_read_meta(
            self._conn,
            path=self.path,
            schema=_SCHEMA,
            meta=(self.department, SCHEMA_VERSION),
            what="record store",
            writable=not self.read_only,
        )
        if row is None:
            return
        department, version = row
        if department != self.department:
            raise ConfigError(
                f"{self.path}: this record store belongs to department {department!r}, "
                f"not {self.department!r}; check the node's department and data path"
            )
        if version != SCHEMA_VERSION:
            raise ConfigError(
                f"{self.path}: schema version {version}, this Osmanthus reads version "
                f"{SCHEMA_VERSION}"
            )

    # -- reading --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Every lookup this thread makes inside the block reads one snapshot: an answer built
        from several lookups (a cohort read part by part) sees an import whole or not at all."""
        if getattr(self._pinned, "cursor", None) is not None:
            yield
            return
        cursor, frozen = self._open_reader()
        ok = False
        try:
            self._pinned.cursor = cursor
            yield
            ok = True
        finally:
            self._pinned.cursor = None
            self._close_reader(cursor, frozen, reuse=ok)

    def _read(self, sql: str, parameters: Sequence[object]) -> list[tuple[Any, ...]]:
        pinned = getattr(self._pinned, "cursor", None)
        if pinned is not None:
            return pinned.execute(sql, parameters).fetchall()  # type: ignore[no-any-return]
        cursor, frozen = self._open_reader()
        ok = False
        try:
            rows = cursor.execute(sql, parameters).fetchall()
            ok = True
            return rows
        finally:
            self._close_reader(cursor, frozen, reuse=ok)

    def _open_reader(self) -> tuple[duckdb.DuckDBPyConnection, _Frozen | None]:
        """A cursor in a read transaction of its own, and the frozen set it came from (None for
        a fresh one): while a write commits, one of the snapshots taken just before it."""
        with self._lock:
            while (frozen := self._frozen) is not None and not frozen.free and frozen.out:
                # every snapshot is in use: wait for one back, or for the commit to end
                self._returned.wait()
            if frozen is not None and frozen.free:
                frozen.out += 1
                return frozen.free.pop(), frozen
            # taken under the lock: a writer freezing the readers waits for it, so this snapshot
            # is taken before its commit starts and never waits for it (but if every frozen
            # snapshot was given up after a failed lookup, it waits for the commit to end)
            cursor = self._conn.cursor()
            try:
                cursor.begin()
                cursor.execute(_TAKE_SNAPSHOT)
            except BaseException:
                cursor.close()
                raise
            return cursor, None

    def _close_reader(
        self, cursor: duckdb.DuckDBPyConnection, frozen: _Frozen | None, *, reuse: bool
    ) -> None:
        """Done with a reader; a frozen one goes back for the next lookup if `reuse` (its
        statements succeeded: a failed one may have aborted its transaction)."""
        if frozen is not None:
            with self._lock:
                if self._frozen is frozen:
                    frozen.out -= 1
                    if reuse:
                        # the commit still runs: the next lookup reads the same snapshot
                        frozen.free.append(cursor)
                        self._returned.notify()
                        return
                    # one snapshot fewer: a lookup waiting for one may start its own now
                    self._returned.notify_all()
        rollback_quietly(cursor)
        cursor.close()

    @contextlib.contextmanager
    def _readers_frozen(self) -> Iterator[None]:
        """While the block runs (a commit), lookups read snapshots taken as it starts."""
        frozen = _Frozen()
        with self._lock:
            try:
                for _ in range(FROZEN_READERS):
                    cursor = self._conn.cursor()
                    frozen.free.append(cursor)
                    cursor.begin()
                    cursor.execute(_TAKE_SNAPSHOT)
            except BaseException:
                _close_all(frozen.free)
                raise
            self._frozen = frozen
        try:
            yield
        finally:
            with self._lock:
                self._frozen = None
                free, frozen.free = frozen.free, []
                # lookups waiting for a snapshot start transactions of their own now
                self._returned.notify_all()
            # the snapshots in use are closed by their lookups (_close_reader)
            _close_all(free)

    @contextlib.contextmanager
    def _write_transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One write transaction on the writer cursor, committed (or rolled back) with the
        lookups frozen on the state before it (see FROZEN_READERS)."""
        with self._write_lock:
            self._writer.begin()
            try:
                yield self._writer
                with self._readers_frozen():
                    self._writer.commit()
            except BaseException:
                with contextlib.ExitStack() as stack:
                    # frozen if it can be; rolled back whatever happens
                    with contextlib.suppress(Exception):
                        stack.enter_context(self._readers_frozen())
                    rollback_quietly(self._writer)
                raise
            self._checkpoint_if_due()

    def _checkpoint_if_due(self) -> None:
        """Checkpoint once the WAL is past `checkpoint_wal_bytes`: DuckDB skips its own
        checkpoint at a commit that changed rows while other transactions were open, which
        the frozen readers always are, so the WAL (replayed at every start) would grow."""
        try:
            size = self.path.with_name(self.path.name + ".wal").stat().st_size
        except FileNotFoundError:
            return
        if size >= self._checkpoint_wal_bytes:
            # refused while another transaction writes; the next write tries again
            with contextlib.suppress(duckdb.Error):
                self._writer.execute("CHECKPOINT")

    def records_for(self, subject_kind: SubjectKind, subject_id: SubjectId) -> list[Record]:
        """Every stored record about one subject, in record_id order."""
        # subject_id alone: DuckDB uses the ART index only when the indexed column is the
        # whole filter; adding "AND subject_kind = ?" turns the lookup into a table scan
        # (~13 ms instead of ~0.7 ms at a million records)
        rows = self._read(_SELECT_ONE, [subject_id])
        kind_value = subject_kind.value
        return [
            Record(
                record_id=record_id,
                subject_kind=subject_kind,
                subject_id=subject_id,
                kind=kind,
                quantity=quantity,
                event_start=event_start,
                event_end=event_end,
                status=status,
            )
            for record_id, kind, quantity, event_start, event_end, status, skind in sorted(rows)
            if skind == kind_value
        ]

    def records_for_many(
        self, subject_kind: SubjectKind, subject_ids: Sequence[SubjectId]
    ) -> dict[SubjectId, list[Record]]:
        """Every stored record about each of many subjects (a batch chunk) in one statement.

        Each subject's records are in record_id order, as records_for gives them; subjects
        without records are absent. Duplicates in `subject_ids` are looked up once. Past a few
        hundred ids the statement scans the whole table once, a fixed cost (~15 ms at a million
        records) that the whole chunk shares: pass chunks, not single subjects.
        """
        wanted = list(dict.fromkeys(subject_ids))
        if not wanted:
            return {}
        parameters: list[object]
        if len(wanted) <= _INDEX_LOOKUP_MAX:
            marks = ", ".join("?" * len(wanted))
            query, parameters = f"{_SELECT_MANY_COLUMNS}({marks}){_SELECT_MANY_ORDER}", [*wanted]
        else:
            query, parameters = _SELECT_MANY, [wanted]
        rows = self._read(query, parameters)
        kind_value = subject_kind.value
        found: dict[SubjectId, list[Record]] = {}
        current: list[Record] = []
        previous = None
        # rows arrive ordered by subject, then record_id: one list per run of equal subjects
        for subject_id, record_id, kind, quantity, event_start, event_end, status, skind in rows:
            if skind != kind_value:
                continue
            if subject_id != previous:
                previous = subject_id
                current = found[subject_id] = []
            current.append(
                Record(
                    record_id=record_id,
                    subject_kind=subject_kind,
                    subject_id=subject_id,
                    kind=kind,
                    quantity=quantity,
                    event_start=event_start,
                    event_end=event_end,
                    status=status,
                )
            )
        return found

    def all_records(self) -> Iterator[Record]:
        """Every stored record, in record_id order (for export, checks and tests)."""
        with self._lock:
            cursor = self._conn.cursor()
        try:
            cursor.execute(
                "SELECT record_id, subject_kind, subject_id, kind, quantity, event_start, "
                "event_end, status FROM records ORDER BY record_id"
            )
            while batch := cursor.fetchmany(10_000):
                for rid, skind, sid, kind, quantity, start, end, status in batch:
                    yield Record(
                        record_id=rid,
                        subject_kind=SubjectKind(skind),
                        subject_id=SubjectId(sid),
                        kind=kind,
                        quantity=quantity,
                        event_start=start,
                        event_end=end,
                        status=status,
                    )
        finally:
            cursor.close()

    def count(self) -> int:
        return int(self._read("SELECT count(*) FROM records", [])[0][0])

    def _has_history(self) -> bool:
        # a store created before live imports, opened read-only, has no history tables
        return bool(
            self._read(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = 'main' AND "
                "table_name = 'imports'",
                [],
            )
        )

    def last_import(self) -> ImportReport | None:
        """The newest file applied (by either import path), or None."""
        if not self._has_history():
            return None
        rows = self._read(
            'SELECT sha256, "at", actor, source, added, corrected, withdrawn FROM imports '
            'ORDER BY "at" DESC LIMIT 1',
            [],
        )
        return _import_report(rows[0]) if rows else None

    def history(self, record_id: str) -> tuple[HistoryLine, ...]:
        """The corrections and withdrawals of one record, oldest first."""
        if not self._has_history():
            return ()
        rows = self._read(
            'SELECT seq, record_id, import_sha256, "at", actor, action, reason, before, after '
            "FROM record_history WHERE record_id = ? ORDER BY seq",
            [record_id],
        )
        return tuple(
            HistoryLine(
                seq=int(r[0]), record_id=str(r[1]), import_sha256=str(r[2]),
                at=_aware(r[3]), actor=str(r[4]), action=str(r[5]), reason=str(r[6]),
                before=json.loads(str(r[7])), after=json.loads(str(r[8])),
            )
            for r in rows
        )  # fmt: skip

    # -- writing --------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if self.read_only:
            raise FailedPrecondition(
                f"{self.path}: the record store is open read-only"
                + (f" ({self.read_only_reason})" if self.read_only_reason else "")
                + "; stop the node or open it writable to import"
            )

    def insert_records(self, records: Iterable[Record]) -> int:
        """Insert trusted, already-valid records in one transaction; returns how many."""
        self._require_writable()
        with _Staging(self._staging_dir) as staging:
            for r in records:
                staging.add(r)
            staging.finish()
            try:
                with self._write_transaction():
                    self._insert_staged(staging)
            except duckdb.ConstraintException as e:
                raise InvalidArgument(
                    f"records were refused by the store and none were written: {e}",
                    field="record_id",
                ) from None
            return staging.count

    def import_file(
        self,
        path: Path,
        *,
        rules: RuleSet,
        catalogue: Catalogue,
        today: datetime.date | None = None,
        actor: str = "offline import",
        sha256: str | None = None,
        source: str | None = None,
        check_change: Callable[[str], str | None] | None = None,
        progress: Callable[[int], None] | None = None,
        before_commit: BeforeCommit | None = None,
        worker: StagingWorker | None = None,
    ) -> ImportReport:
        """Validate every row of a CSV or Parquet file, then apply all of them or none.

        A row adds a record (action empty or `add`), or corrects (`correct`: the whole record
        again, same subject) or withdraws (`withdraw`: record_id and reason) a stored one by
        its record id. Raises ImportRejected listing (line, field, problem) for the bad rows
        (the first thousand; `problem_count` says how many in all); nothing is written then.
        `today` (default: today in China) is the date "not in the future" means. Rows stream
        through a staging file into a temporary table of the transaction, where duplicate ids,
        stored ids and the records the changes name are checked in SQL: Python's memory holds
        no record id. A file whose SHA-256 (`sha256`, default: read from the file) was applied
        before is not applied again: the report says `duplicate`. `actor` is who imports, kept
        with the file and in the history of each record it changes; `check_change(record_id)`
        names why a record may not be changed (an open case about it), None when it may;
        `progress(rows)` hears of the rows read so far; `before_commit(report)` runs inside the
        transaction just before its commit (an exception from it rolls the import back).
        `worker` reads and checks the rows in a process of its own (node.importworker; a
        running node's imports), else this process does.
        """
        self._require_writable()
        path = Path(path)
        if rules.department != self.department:
            raise InvalidArgument(
                f"rules are for department {rules.department!r}, this store is {self.department!r}",
                field="rules",
            )
        # the format is checked before anything is read
        read_table(path, columns=FILE_COLUMNS, required=REQUIRED_COLUMNS)
        digest = sha256 if sha256 is not None else file_sha256(path)
        before = self.applied(digest)
        if before is not None:
            return before
        with _Staging(self._staging_dir, STAGED_COLUMNS) as staging:
            staging.finish()
            job = StageJob(
                path=path,
                staging=staging.path,
                rules=RowRules.of(rules),
                served=catalogue.department(self.department).subject_kinds,
                today=today if today is not None else china_today(),
            )
            staged = (
                worker.stage(job, progress) if worker is not None else stage_file(job, progress)
            )
            problems, unit = staged.problem_list(), staged.unit
            with self._write_transaction() as conn, _one_thread(conn):
                # checked again inside the transaction: two uploads of one file race here
                before = self.applied(digest, conn)
                if before is not None:
                    return before
                conn.execute(
                    "CREATE OR REPLACE TEMP TABLE import_rows AS SELECT * FROM "
                    + _READ_STAGED_ROWS,
                    [str(staging.path)],
                )
                _check_staged(conn, problems, unit=unit, check_change=check_change)
                if problems:
                    raise rows_rejected(path, unit, problems)
                now = datetime.datetime.now(datetime.UTC)
                added, corrected, withdrawn = _apply_staged(conn, digest=digest, actor=actor,
                                                            now=now)  # fmt: skip
                conn.execute(
                    'INSERT INTO imports (sha256, "at", actor, source, added, corrected, '
                    "withdrawn) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        digest,
                        now.replace(tzinfo=None),
                        actor,
                        (source if source is not None else path.name)[:200],
                        added,
                        corrected,
                        withdrawn,
                    ],
                )
                # gone with the transaction either way; dropped here so that none outlives it
                conn.execute(f"DROP TABLE {_STAGED}")
                report = ImportReport(
                    path=path, rows=added, corrected=corrected, withdrawn=withdrawn,
                    sha256=digest, at=now, actor=actor,
                )  # fmt: skip
                if before_commit is not None:
                    before_commit(report)
        return report

    def applied(
        self, digest: str, conn: duckdb.DuckDBPyConnection | None = None
    ) -> ImportReport | None:
        """The file with this SHA-256 as first applied (`duplicate` set), None if never."""
        sql = (
            'SELECT sha256, "at", actor, source, added, corrected, withdrawn FROM imports '
            "WHERE sha256 = ?"
        )
        rows = (
            conn.execute(sql, [digest]).fetchall()
            if conn is not None
            else self._read(sql, [digest])
        )
        if not rows:
            return None
        return dataclasses.replace(_import_report(rows[0]), duplicate=True)

    def _insert_staged(
        self, staging: _Staging, conn: duckdb.DuckDBPyConnection | None = None
    ) -> None:
        if staging.count:
            (conn or self._writer).execute(
                f"INSERT INTO records SELECT * FROM {_READ_STAGED}", [str(staging.path)]
            )

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._write_lock, self._lock:
            self._writer.close()
            self._conn.close()

    def __enter__(self) -> RecordStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Frozen:
    """The snapshots taken just before one commit that are free for a lookup to read."""

    def __init__(self) -> None:
        self.free: list[duckdb.DuckDBPyConnection] = []
        #: how many are being read now (they come back to `free`, or are given up)
        self.out = 0


@contextlib.contextmanager
def _one_thread(conn: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """DuckDB on one thread while the block runs (an import's statements), as set before after.

    The staged rows' read, the checks and the insert into both indexes otherwise take every
    core for a few seconds, and the queries answered meanwhile wait for one: with one thread
    the import leaves a core to them (bench/ingest.py: query p99 during a million-row import
    went from 2.2x its value before to about 1x, the import's time unchanged). The setting is
    the database's, so lookups during the import run on one thread too; they use an index.
    """
    row = conn.execute("SELECT current_setting('threads')").fetchone()
    threads = int(row[0]) if row is not None else None
    conn.execute("SET threads = 1")
    try:
        yield
    finally:
        if threads is not None:
            conn.execute(f"SET threads = {threads}")


def _close_all(cursors: list[duckdb.DuckDBPyConnection]) -> None:
    for cursor in cursors:
        rollback_quietly(cursor)
        cursor.close()


def _aware(stored: object) -> datetime.datetime:
    assert isinstance(stored, datetime.datetime)
    return stored.replace(tzinfo=datetime.UTC)


def _import_report(row: Sequence[Any]) -> ImportReport:
    sha256, at, actor, source, added, corrected, withdrawn = row
    return ImportReport(
        path=Path(str(source)),
        rows=int(added),
        corrected=int(corrected),
        withdrawn=int(withdrawn),
        sha256=str(sha256),
        at=_aware(at),
        actor=str(actor),
    )


def _record_json(record: Record) -> str:
    return json.dumps(
        {
            "kind": record.kind,
            "quantity": record.quantity,
            "event_start": record.event_start.isoformat(),
            "event_end": record.event_end.isoformat() if record.event_end else None,
            "status": record.status,
        },
        sort_keys=True,
    )


def _check_staged(
    conn: duckdb.DuckDBPyConnection,
    problems: ProblemList,
    *,
    unit: str,
    check_change: Callable[[str], str | None] | None,
) -> None:
    """The problems of the staged rows that need the whole file or the stored records: an id
    twice in the file, a new record whose id is stored, a change of no stored record or of
    another subject's, a change a case forbids. Rows stream from DuckDB in batches."""
    duplicates = conn.execute(
        f"SELECT line, record_id, first FROM (SELECT line, record_id, min(line) OVER "
        f"(PARTITION BY record_id) AS first FROM {_STAGED}) WHERE line > first ORDER BY line"
    )
    for line, rid, first in _batches(duplicates):
        problems.append(
            (line, "record_id", f"duplicate record id {rid!r} (first on {unit} {first})")
        )
    stored = conn.execute(
        f"SELECT s.line, s.record_id FROM {_STAGED} s JOIN records r USING (record_id) "
        f"WHERE s.action = '{ADD}' AND s.ok ORDER BY s.line"
    )
    for line, rid in _batches(stored):
        problems.append(
            (line, "record_id", f"record {rid!r} is already stored; record ids must be new")
        )
    changes = conn.execute(
        f"SELECT s.line, s.action, s.record_id, s.subject_kind, s.subject_id, r.subject_kind, "
        f"r.subject_id FROM {_STAGED} s LEFT JOIN records r USING (record_id) "
        f"WHERE s.action <> '{ADD}' AND s.ok ORDER BY s.line"
    )
    for line, action, rid, kind, subject, old_kind, old_subject in _batches(changes):
        if old_subject is None:
            problems.append((line, "record_id", f"no stored record {rid!r} to {action}"))
        elif action == CORRECT and (kind, subject) != (old_kind, old_subject):
            problems.append(
                (
                    line,
                    "subject_id",
                    f"record {rid!r} is about another subject; a correction keeps the subject "
                    "(withdraw it and add a new record instead)",
                )
            )
        elif action == WITHDRAW and subject and subject != old_subject:
            problems.append((line, "subject_id", f"record {rid!r} is about another subject"))
        elif check_change is not None and (why := check_change(rid)):
            problems.append((line, "record_id", why))


def _apply_staged(
    conn: duckdb.DuckDBPyConnection, *, digest: str, actor: str, now: datetime.datetime
) -> tuple[int, int, int]:
    """Apply checked staged rows: add the new records, keep each change's history (before and
    after), correct and withdraw. Returns how many were added, corrected and withdrawn."""
    row = conn.execute(
        f"SELECT count(*) FILTER (WHERE action = '{ADD}'), "
        f"count(*) FILTER (WHERE action = '{CORRECT}'), "
        f"count(*) FILTER (WHERE action = '{WITHDRAW}') FROM {_STAGED}"
    ).fetchone()
    assert row is not None
    added, corrected, withdrawn = (int(n) for n in row)
    if added:
        conn.execute(
            "INSERT INTO records SELECT record_id, subject_kind, subject_id, kind, quantity, "
            f"event_start, event_end, status FROM {_STAGED} WHERE action = '{ADD}'"
        )
    if corrected or withdrawn:
        last = conn.execute("SELECT coalesce(max(seq), 0) FROM record_history").fetchone()
        first = int(last[0]) + 1 if last else 1
        # the history first, while the records still hold what the changes replace
        conn.execute(
            "INSERT INTO record_history (seq, record_id, subject_kind, subject_id, "
            'import_sha256, "at", actor, action, reason, before, after) '
            "SELECT ? - 1 + row_number() OVER (ORDER BY s.line), s.record_id, r.subject_kind, "
            "r.subject_id, ?, ?, ?, s.action, s.reason, "
            f"{_RECORD_JSON.format(t='r')}, CASE WHEN s.action = '{CORRECT}' THEN "
            f"{_RECORD_JSON.format(t='s')} ELSE '{{}}' END "
            f"FROM {_STAGED} s JOIN records r USING (record_id) WHERE s.action <> '{ADD}'",
            [first, digest, now.replace(tzinfo=None), actor],
        )
    if corrected:
        conn.execute(
            "UPDATE records SET kind = s.kind, quantity = s.quantity, event_start = s.event_start, "
            f"event_end = s.event_end, status = s.status FROM {_STAGED} s "
            f"WHERE records.record_id = s.record_id AND s.action = '{CORRECT}'"
        )
    if withdrawn:
        conn.execute(
            "DELETE FROM records WHERE record_id IN "
            f"(SELECT record_id FROM {_STAGED} WHERE action = '{WITHDRAW}')"
        )
    return added, corrected, withdrawn


def _batches(cursor: duckdb.DuckDBPyConnection) -> Iterator[tuple[Any, ...]]:
    while batch := cursor.fetchmany(10_000):
        yield from batch


class _Staging:
    """A temporary CSV of checked rows that DuckDB reads back in one statement.

    Reading a CSV is an order of magnitude faster than binding parameters row by row. The file
    lives in the node's state directory (or, offline, next to the database), mode 0600 from
    mkstemp, so personal data does not spread to a shared temp directory; it is removed
    whatever happens.
    """

    def __init__(self, directory: Path, columns: Sequence[str] = COLUMNS) -> None:
        fd, name = tempfile.mkstemp(prefix=".import-", suffix=".csv", dir=directory)
        self.path = Path(name)
        self.count = 0
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(columns)

    def add(self, r: Record) -> None:
        self.add_row(
            (
                r.record_id,
                r.subject_kind.value,
                r.subject_id,
                r.kind,
                r.quantity,
                r.event_start.isoformat(),
                r.event_end.isoformat() if r.event_end is not None else "",
                r.status,
            )
        )

    def add_row(self, values: Sequence[object]) -> None:
        self._writer.writerow(values)
        self.count += 1

    def finish(self) -> None:
        self._file.close()

    def __enter__(self) -> _Staging:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)


__all__ = [
    "ACTIONS",
    "ADD",
    "COLUMNS",
    "CORRECT",
    "FILE_COLUMNS",
    "MAX_QUANTITY",
    "MAX_RECORD_ID_LENGTH",
    "REQUIRED_COLUMNS",
    "WITHDRAW",
    "HistoryLine",
    "ImportReport",
    "RecordStore",
    "file_sha256",
    "read_table",
    "record_problems",
    "rows_rejected",
]
