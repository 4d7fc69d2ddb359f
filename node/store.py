"""A department's record store: one DuckDB file, all-or-nothing validated imports, lookups."""

from __future__ import annotations

import csv
import datetime
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import duckdb

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    ImportRejected,
    InvalidArgument,
)
from osmanthus.core.ids import validate_subject
from osmanthus.core.rules import STATUSES, Record, RuleSet
from osmanthus.core.storefile import create_or_read_meta, transaction
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

SCHEMA_VERSION = 1

COLUMNS = (
    "record_id",
    "subject_kind",
    "subject_id",
    "kind",
    "quantity",
    "event_start",
    "event_end",
    "status",
)
REQUIRED_COLUMNS = frozenset({"record_id", "subject_kind", "subject_id", "kind", "event_start"})
#: largest quantity a single record may carry (hours, donations, ...); bounds the slot sums
MAX_QUANTITY = 1_000_000
MAX_RECORD_ID_LENGTH = 64
#: how many problems the ImportRejected message spells out; `problems` always has them all
_MESSAGE_PROBLEMS = 5

# [0-9], not \d: \d also matches other scripts' digits, which int() and dates would accept
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]{1,9}")
#: the earliest event date accepted; anything older is a typo
EARLIEST_EVENT = datetime.date(1900, 1, 1)
_RECORD_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")

# record_id and subject_id are stored uncompressed: a batch lookup scans every row of both, and
# decompressing DuckDB's default FSST encoding of these unique strings costs more than the scan
# and the join together (5,000 subjects at a million records: ~90 ms of CPU with it, ~55 without).
# Stores created before this keep their compression; they answer the same, only slower.
_SCHEMA = f"""
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


@dataclass(frozen=True)
class ImportReport:
    path: Path
    rows: int


class RecordStore:
    """One department's records in one DuckDB file.

    Lookups may run from many threads at once (each uses its own cursor); writes are serialised.
    """

    def __init__(self, path: Path, *, department: DepartmentId, read_only: bool = False) -> None:
        self.path = Path(path)
        self.department = department
        self.read_only = read_only
        self._lock = threading.Lock()
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

    def records_for(self, subject_kind: SubjectKind, subject_id: SubjectId) -> list[Record]:
        """Every stored record about one subject, in record_id order."""
        with self._lock:
            cursor = self._conn.cursor()
        try:
            # subject_id alone: DuckDB uses the ART index only when the indexed column is the
            # whole filter; adding "AND subject_kind = ?" turns the lookup into a table scan
            # (~13 ms instead of ~0.7 ms at a million records)
            rows = cursor.execute(_SELECT_ONE, [subject_id]).fetchall()
        finally:
            cursor.close()
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
        with self._lock:
            cursor = self._conn.cursor()
        try:
            rows = cursor.execute(query, parameters).fetchall()
        finally:
            cursor.close()
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
        with self._lock:
            cursor = self._conn.cursor()
        try:
            row = cursor.execute("SELECT count(*) FROM records").fetchone()
        finally:
            cursor.close()
        assert row is not None
        return int(row[0])

    # -- writing --------------------------------------------------------------------------------

    def _require_writable(self) -> None:
        if self.read_only:
            raise FailedPrecondition(
                f"{self.path}: the record store is open read-only; stop the node or open it "
                "writable to import"
            )

    def insert_records(self, records: Iterable[Record]) -> int:
        """Insert trusted, already-valid records in one transaction; returns how many."""
        self._require_writable()
        with _Staging(self.path.parent) as staging:
            for r in records:
                staging.add(r)
            staging.finish()
            with self._lock:
                try:
                    with transaction(self._conn):
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
    ) -> ImportReport:
        """Validate every row of a CSV or Parquet file, then insert all of them or none.

        Raises ImportRejected listing (line, field, problem) for every bad row; nothing is
        written then. `today` (default: today in China) is the date "not in the future" means.
        Rows stream through a staging file, so memory holds only the record ids.
        """
        self._require_writable()
        path = Path(path)
        if rules.department != self.department:
            raise InvalidArgument(
                f"rules are for department {rules.department!r}, this store is {self.department!r}",
                field="rules",
            )
        served = catalogue.department(self.department).subject_kinds
        rows, unit = read_table(path, columns=COLUMNS, required=REQUIRED_COLUMNS)
        validator = _RowValidator(
            rules=rules,
            served=served,
            today=today if today is not None else china_today(),
            unit=unit,
        )
        problems: _Problems = []
        with _Staging(self.path.parent) as staging:
            lines = validator.validate(rows, problems, staging.add)
            staging.finish()
            with self._lock, transaction(self._conn):
                for rid in self._stored_ids(staging):
                    problems.append(
                        (
                            lines[rid],
                            "record_id",
                            f"record {rid!r} is already stored; record ids must be new",
                        )
                    )
                if problems:
                    raise rows_rejected(path, unit, problems)
                self._insert_staged(staging)
        return ImportReport(path=path, rows=staging.count)

    def _stored_ids(self, staging: _Staging) -> list[str]:
        if staging.count == 0:
            return []
        rows = self._conn.execute(
            f"SELECT s.record_id FROM {_READ_STAGED} s JOIN records r USING (record_id)",
            [str(staging.path)],
        ).fetchall()
        return [r[0] for r in rows]

    def _insert_staged(self, staging: _Staging) -> None:
        if staging.count:
            self._conn.execute(
                f"INSERT INTO records SELECT * FROM {_READ_STAGED}", [str(staging.path)]
            )

    # -- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        with self._lock:
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


def rows_rejected(
    path: Path, unit: str, problems: list[tuple[int, str, str]], *, outcome: str = "imported"
) -> ImportRejected:
    """ImportRejected listing `problems` by line; "nothing was <outcome>"."""
    problems.sort(key=lambda p: p[0])
    bad_rows = len({p[0] for p in problems})
    shown = "; ".join(
        f"{unit} {line}, {field}: {problem}" if line else f"{field}: {problem}"
        for line, field, problem in problems[:_MESSAGE_PROBLEMS]
    )
    more = len(problems) - _MESSAGE_PROBLEMS
    tail = f"; and {more} more" if more > 0 else ""
    return ImportRejected(
        f"{path}: {len(problems)} problem(s) in {bad_rows} {unit}(s); nothing was {outcome}. "
        f"{shown}{tail}",
        problems=problems,
    )


class _Staging:
    """A temporary CSV of validated records that DuckDB reads back in one statement.

    Reading a CSV is an order of magnitude faster than binding parameters row by row. The file
    lives next to the database (mode 0600, from mkstemp) so personal data does not spread to a
    shared temp directory, and it is removed whatever happens.
    """

    def __init__(self, directory: Path) -> None:
        fd, name = tempfile.mkstemp(prefix=".import-", suffix=".csv", dir=directory)
        self.path = Path(name)
        self.count = 0
        self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._file, lineterminator="\n")
        self._writer.writerow(COLUMNS)

    def add(self, r: Record) -> None:
        self._writer.writerow(
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


# -- reading import files ---------------------------------------------------------------------

# A reader yields (line or row number, {column: text}), or (line, problem) for a row that cannot
# be split into columns. A header problem is raised at once, since every row would repeat it.
_Row = tuple[int, dict[str, str] | str]
_Problems = list[tuple[int, str, str]]


def read_table(
    path: Path, *, columns: Sequence[str], required: frozenset[str], outcome: str = "imported"
) -> tuple[Iterator[_Row], str]:
    """The rows of a CSV or Parquet file with these columns, and what a row is called there.

    Each row comes as (line or row number, {column: text}), or (line, problem) for a CSV line
    that cannot be split into columns. A bad header is raised as ImportRejected at once.
    `outcome` completes the rejection's "nothing was ..." (imported, published).
    """
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, columns=columns, required=required, outcome=outcome), "line"
    if suffix == ".parquet":
        return _read_parquet(path, columns=columns, required=required, outcome=outcome), "row"
    raise InvalidArgument(
        f"{path}: cannot tell the format from the extension {path.suffix!r}; use .csv or .parquet",
        field="path",
    )


def _check_header(
    path: Path,
    header: list[str],
    line: int,
    unit: str,
    *,
    columns: Sequence[str],
    required: frozenset[str],
    outcome: str,
) -> None:
    problems: _Problems = []
    seen: set[str] = set()
    for name in header:
        if name in seen:
            problems.append((line, name, "column appears twice in the header"))
        seen.add(name)
        if name not in columns:
            problems.append(
                (line, name or "(empty)", f"unknown column; expected columns: {', '.join(columns)}")
            )
    for name in columns:
        if name in required and name not in seen:
            problems.append((line, name, "required column is missing"))
    if problems:
        raise rows_rejected(path, unit, problems, outcome=outcome)


def _read_csv(
    path: Path, *, columns: Sequence[str], required: frozenset[str], outcome: str
) -> Iterator[_Row]:
    try:
        # utf-8-sig: spreadsheet exports often start with a byte-order mark
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise ImportRejected(
                    f"{path}: the file is empty; expected a header line",
                    problems=[(1, "header", "file is empty")],
                )
            header = [h.strip() for h in header]
            _check_header(
                path,
                header,
                1,
                "line",
                columns=columns,
                required=required,
                outcome=outcome,
            )
            last_line = reader.line_num
            for values in reader:
                # a quoted field may span lines: a row starts on the line after the last one
                line = last_line + 1
                last_line = reader.line_num
                if not values or all(not v.strip() for v in values):
                    continue
                if len(values) != len(header):
                    yield line, f"has {len(values)} fields, the header has {len(header)}"
                    continue
                yield line, {h: v.strip() for h, v in zip(header, values, strict=True)}
    except FileNotFoundError:
        raise InvalidArgument(f"{path}: file does not exist", field="path") from None
    except UnicodeDecodeError as e:
        raise InvalidArgument(
            f"{path}: not UTF-8 text (byte {e.start}); save the CSV as UTF-8", field="path"
        ) from None
    except csv.Error as e:
        raise InvalidArgument(f"{path}: malformed CSV: {e}", field="path") from None


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    # a timestamp where a date belongs keeps its time, so validation names the problem
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value).strip()


def _read_parquet(
    path: Path, *, columns: Sequence[str], required: frozenset[str], outcome: str
) -> Iterator[_Row]:
    if not path.exists():
        raise InvalidArgument(f"{path}: file does not exist", field="path")
    conn = duckdb.connect()
    try:
        try:
            cursor = conn.execute("SELECT * FROM read_parquet(?)", [str(path)])
        except duckdb.Error as e:
            raise InvalidArgument(
                f"{path}: not a readable Parquet file: {e}", field="path"
            ) from None
        header = [d[0] for d in cursor.description or []]
        _check_header(path, header, 0, "row", columns=columns, required=required, outcome=outcome)
        row_number = 0
        while batch := cursor.fetchmany(10_000):
            for values in batch:
                row_number += 1
                yield row_number, {h: _cell_text(v) for h, v in zip(header, values, strict=True)}
    finally:
        conn.close()


def record_problems(
    record: Record, *, rules: RuleSet, served: frozenset[SubjectKind], today: datetime.date
) -> list[tuple[str, str]]:
    """The (field, problem) pairs an import would find in `record`, none when it is valid: a
    record corrected by an upheld objection (node.caseoffice) is checked as an imported one."""
    values = {
        "record_id": record.record_id,
        "subject_kind": record.subject_kind.value,
        "subject_id": record.subject_id,
        "kind": record.kind,
        "quantity": str(record.quantity),
        "event_start": record.event_start.isoformat(),
        "event_end": record.event_end.isoformat() if record.event_end is not None else "",
        "status": record.status,
    }
    validator = _RowValidator(rules=rules, served=served, today=today, unit="record")
    return validator.row(values)[1]


class _RowValidator:
    """Checks rows of an import file against the rules and the store's department."""

    def __init__(
        self,
        *,
        rules: RuleSet,
        served: frozenset[SubjectKind],
        today: datetime.date,
        unit: str,
    ) -> None:
        self.unit = unit
        self.rules = rules
        self.served = served
        self.today = today
        self.kinds = {kind: rules.kinds(kind) for kind in SubjectKind}

    def validate(
        self, rows: Iterable[_Row], problems: _Problems, accept: Callable[[Record], None]
    ) -> dict[str, int]:
        """Pass each valid record to `accept` and append every problem found to `problems`.

        Returns the line of each record id, to place problems found later (ids already stored).
        """
        first_line: dict[str, int] = {}
        for line, values in rows:
            if isinstance(values, str):
                problems.append((line, "row", values))
                continue
            record, row_problems = self.row(values)
            problems.extend((line, field, problem) for field, problem in row_problems)
            rid = values.get("record_id", "")
            if rid in first_line:
                problems.append(
                    (
                        line,
                        "record_id",
                        f"duplicate record id {rid!r} (first on {self.unit} {first_line[rid]})",
                    )
                )
            elif rid:
                first_line[rid] = line
                if record is not None:
                    accept(record)
        return first_line

    def row(self, values: Mapping[str, str]) -> tuple[Record | None, list[tuple[str, str]]]:
        problems: list[tuple[str, str]] = []
        rid = values.get("record_id", "")
        if not rid:
            problems.append(("record_id", "is empty"))
        elif len(rid) > MAX_RECORD_ID_LENGTH or not _RECORD_ID.fullmatch(rid):
            problems.append(
                (
                    "record_id",
                    f"must be 1-{MAX_RECORD_ID_LENGTH} characters without spaces or control "
                    "characters",
                )
            )
        subject_kind: SubjectKind | None = None
        skind_text = values.get("subject_kind", "")
        try:
            subject_kind = SubjectKind(skind_text)
        except ValueError:
            problems.append(("subject_kind", f"{skind_text!r} is not 'person' or 'enterprise'"))
        if subject_kind is not None and subject_kind not in self.served:
            problems.append(
                (
                    "subject_kind",
                    f"department {self.rules.department!r} does not hold {subject_kind.value} "
                    "records (see the catalogue)",
                )
            )
            subject_kind = None
        subject_id: SubjectId | None = None
        if subject_kind is not None:
            try:
                subject_id = validate_subject(
                    subject_kind, values.get("subject_id", ""), field="subject_id"
                )
            except InvalidArgument as e:
                problems.append(("subject_id", e.message))
        kind = values.get("kind", "")
        rule = None
        if subject_kind is not None:
            if kind not in self.kinds[subject_kind]:
                known = ", ".join(sorted(self.kinds[subject_kind])) or "none"
                problems.append(
                    (
                        "kind",
                        f"{kind!r} is not a {subject_kind.value} record kind of department "
                        f"{self.rules.department!r} (known: {known})",
                    )
                )
            else:
                rule = self.rules.rule(subject_kind, kind)
        quantity_text = values.get("quantity", "") or "1"
        quantity: int | None = None
        if not _DIGITS.fullmatch(quantity_text) or not 1 <= int(quantity_text) <= MAX_QUANTITY:
            problems.append(
                ("quantity", f"{quantity_text!r} is not a whole number from 1 to {MAX_QUANTITY}")
            )
        else:
            quantity = int(quantity_text)
        start = self.date(values.get("event_start", ""), "event_start", problems, required=True)
        end = self.date(values.get("event_end", ""), "event_end", problems, required=False)
        if start is not None and start > self.today:
            problems.append(("event_start", f"{start} is in the future (today is {self.today})"))
        if start is not None and end is not None and end < start:
            problems.append(("event_end", f"{end} is before event_start {start}"))
        if (
            end is not None
            and end > self.today
            and not (rule is not None and rule.validity.mode == "while_listed")
        ):
            problems.append(
                (
                    "event_end",
                    f"{end} is in the future (today is {self.today}); only listings that "
                    "count while listed may carry a planned end date",
                )
            )
        status = values.get("status", "") or "active"
        if status not in STATUSES:
            problems.append(("status", f"{status!r} is not one of {', '.join(STATUSES)}"))
        if problems:
            return None, problems
        assert subject_kind is not None and subject_id is not None
        assert quantity is not None and start is not None
        return (
            Record(
                record_id=rid,
                subject_kind=subject_kind,
                subject_id=subject_id,
                kind=kind,
                quantity=quantity,
                event_start=start,
                event_end=end,
                status=status,
            ),
            [],
        )

    @staticmethod
    def date(
        text: str, field: str, problems: list[tuple[str, str]], *, required: bool
    ) -> datetime.date | None:
        if not text:
            if required:
                problems.append((field, "is empty; give the date as YYYY-MM-DD"))
            return None
        if not _ISO_DATE.fullmatch(text):
            problems.append((field, f"{text!r} is not a date in the form YYYY-MM-DD"))
            return None
        try:
            value = datetime.date.fromisoformat(text)
        except ValueError:
            problems.append((field, f"{text!r} is not a real calendar date"))
            return None
        if value < EARLIEST_EVENT:
            problems.append((field, f"{value} is before {EARLIEST_EVENT}; check the year"))
            return None
        return value
