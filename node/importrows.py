"""Reading a department's import files: CSV or Parquet rows, checked against its rules.

Each row of a file adds a record, or corrects or withdraws a stored one by its record id (the
`action` column); every problem is named by line (or row) and field, and a file with any
problem is refused whole (node.store applies a good file in one transaction).
"""

from __future__ import annotations

import csv
import datetime
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb

from osmanthus.core.errors import ImportRejected, InvalidArgument
from osmanthus.core.ids import validate_subject
from osmanthus.core.rules import STATUSES, Record, RuleSet
from osmanthus.core.types import SubjectId, SubjectKind

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
#: what a row of an import file does to its record (the optional `action` column; empty: add)
ADD = "add"
CORRECT = "correct"
WITHDRAW = "withdraw"
ACTIONS = (ADD, CORRECT, WITHDRAW)
#: an import file's columns: a record's, and what to do with it and why (corrections and
#: withdrawals must say why: the record's history keeps it)
FILE_COLUMNS = (*COLUMNS, "action", "reason")
MAX_REASON_LENGTH = 500
#: largest quantity a single record may carry (hours, donations, ...); bounds the slot sums
MAX_QUANTITY = 1_000_000
MAX_RECORD_ID_LENGTH = 64
#: how many problems the ImportRejected message spells out
_MESSAGE_PROBLEMS = 5
#: how many problems an import keeps and lists (ImportRejected.problems); past them, the rest
#: are counted (ImportRejected.problem_count): the list's memory is bounded whatever the file
MAX_PROBLEMS = 1_000

# [0-9], not \d: \d also matches other scripts' digits, which int() and dates would accept
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]{1,9}")
#: the earliest event date accepted; anything older is a typo
EARLIEST_EVENT = datetime.date(1900, 1, 1)
_RECORD_ID = re.compile(r"[^\s\x00-\x1f\x7f]+")


#: the columns of an import's staging file (node.store): one row per row of the file that names
#: a record id, valid (`ok`) or not, so that duplicate ids and stored ids are found in SQL
#: rather than in memory
STAGED_COLUMNS = (
    "line",
    "action",
    "ok",
    *COLUMNS,
    "reason",
)
StagedRow = tuple[int, str, int, str, str, str, str, str, str, str, str, str]


class ProblemList(list[tuple[int, str, str]]):
    """The problems found in a file: the first `limit` kept (and listed in the rejection), the
    rest only counted, so that a file of a million bad rows does not fill the node's memory."""

    def __init__(self, limit: int = MAX_PROBLEMS) -> None:
        super().__init__()
        self.limit = limit
        #: problems found past the first `limit`, counted only
        self.more = 0

    def append(self, problem: tuple[int, str, str], /) -> None:
        if len(self) < self.limit:
            super().append(problem)
        else:
            self.more += 1

    def extend(self, problems: Iterable[tuple[int, str, str]], /) -> None:
        for problem in problems:
            self.append(problem)

    @property
    def total(self) -> int:
        return len(self) + self.more


def rows_rejected(
    path: Path, unit: str, problems: list[tuple[int, str, str]], *, outcome: str = "imported"
) -> ImportRejected:
    """ImportRejected listing `problems` by line; "nothing was <outcome>"."""
    problems.sort(key=lambda p: p[0])
    more = problems.more if isinstance(problems, ProblemList) else 0
    total = len(problems) + more
    bad_rows = len({p[0] for p in problems})
    shown = "; ".join(
        f"{unit} {line}, {field}: {problem}" if line else f"{field}: {problem}"
        for line, field, problem in problems[:_MESSAGE_PROBLEMS]
    )
    rest = total - min(len(problems), _MESSAGE_PROBLEMS)
    tail = f"; and {rest} more" if rest > 0 else ""
    if more:
        tail += f" (the first {len(problems)} are listed, {more} more were only counted)"
        where = f"in {bad_rows} or more {unit}s"
    else:
        where = f"in {bad_rows} {unit}(s)"
    return ImportRejected(
        f"{path}: {total} problem(s) {where}; nothing was {outcome}. {shown}{tail}",
        problems=list(problems),
        problem_count=total,
    )


# -- reading import files ---------------------------------------------------------------------

# A reader yields (line or row number, {column: text}), or (line, problem) for a row that cannot
# be split into columns. A header problem is raised at once, since every row would repeat it.
Row = tuple[int, dict[str, str] | str]
Problems = list[tuple[int, str, str]]


def read_table(
    path: Path, *, columns: Sequence[str], required: frozenset[str], outcome: str = "imported"
) -> tuple[Iterator[Row], str]:
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
    problems: Problems = []
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
) -> Iterator[Row]:
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
) -> Iterator[Row]:
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
    validator = RowValidator(rules=rules, served=served, today=today, unit="record")
    return validator.row(values)[1]


@dataclass(frozen=True)
class RowRules:
    """What checking a row needs of a department's rules, in a form a worker process can be
    sent (a RuleSet holds mapping proxies, which do not pickle)."""

    department: str
    #: the record kinds of each subject kind
    kinds: tuple[tuple[SubjectKind, frozenset[str]], ...]
    #: the (subject kind, record kind) pairs that count while listed: they may carry a planned
    #: end date
    while_listed: frozenset[tuple[SubjectKind, str]]

    @classmethod
    def of(cls, rules: RuleSet) -> RowRules:
        kinds = tuple((kind, frozenset(rules.kinds(kind))) for kind in SubjectKind)
        return cls(
            department=rules.department,
            kinds=kinds,
            while_listed=frozenset(
                (subject_kind, kind)
                for subject_kind, names in kinds
                for kind in names
                if rules.rule(subject_kind, kind).validity.mode == "while_listed"
            ),
        )


class RowValidator:
    """Checks rows of an import file against the rules and the store's department."""

    def __init__(
        self,
        *,
        rules: RuleSet | RowRules,
        served: frozenset[SubjectKind],
        today: datetime.date,
        unit: str,
    ) -> None:
        self.unit = unit
        self.rules = rules if isinstance(rules, RowRules) else RowRules.of(rules)
        self.served = served
        self.today = today
        self.kinds = dict(self.rules.kinds)

    def validate(
        self,
        rows: Iterable[Row],
        problems: Problems,
        stage: Callable[[StagedRow], None],
        *,
        changes: bool = True,
    ) -> None:
        """Check every row, appending each problem found to `problems`, and pass each row that
        names a record id to `stage` (STAGED_COLUMNS; `ok` 1 when the row is valid): a new
        record, or a correction or withdrawal (refused without `changes`).

        A record id appears once per file, whatever its rows do, and a new one must not be
        stored yet: both are checked on the staged rows in SQL (node.store), not here, so that
        memory holds no record id.
        """
        for line, values in rows:
            if isinstance(values, str):
                problems.append((line, "row", values))
                continue
            action = values.get("action", "") or ADD
            reason = values.get("reason", "")
            record: Record | None = None
            refused = action not in ACTIONS or (action != ADD and not changes)
            if refused:
                problems.append((line, "action", f"{action!r} is not one of {', '.join(ACTIONS)}"))
                row_problems: list[tuple[str, str]] = []
            elif action == WITHDRAW:
                row_problems = self.withdrawal(values)
            else:
                record, row_problems = self.row(values)
            if action in (CORRECT, WITHDRAW) and not reason:
                row_problems.append(("reason", f"is empty; a {action} row says why"))
            if len(reason) > MAX_REASON_LENGTH:
                row_problems.append(("reason", f"is longer than {MAX_REASON_LENGTH} characters"))
            problems.extend((line, field, problem) for field, problem in row_problems)
            rid = values.get("record_id", "")
            if not rid:
                continue
            if refused or row_problems:
                # counted for duplicates only: the row itself is refused already
                stage((line, action, 0, rid, "", "", "", "", "", "", "", ""))
            elif record is not None:
                stage(
                    (
                        line, action, 1, rid, record.subject_kind.value, record.subject_id,
                        record.kind, str(record.quantity), record.event_start.isoformat(),
                        record.event_end.isoformat() if record.event_end is not None else "",
                        record.status, reason,
                    )
                )  # fmt: skip
            else:
                subject = values.get("subject_id", "")
                stage((line, action, 1, rid, "", subject, "", "", "", "", "", reason))

    def withdrawal(self, values: Mapping[str, str]) -> list[tuple[str, str]]:
        """A withdrawal row's problems: it needs a well-formed record id (and a reason)."""
        rid = values.get("record_id", "")
        if not rid:
            return [("record_id", "is empty")]
        if len(rid) > MAX_RECORD_ID_LENGTH or not _RECORD_ID.fullmatch(rid):
            return [
                (
                    "record_id",
                    f"must be 1-{MAX_RECORD_ID_LENGTH} characters without spaces or control "
                    "characters",
                )
            ]
        return []

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
        while_listed = False
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
                while_listed = (subject_kind, kind) in self.rules.while_listed
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
        if end is not None and end > self.today and not while_listed:
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
