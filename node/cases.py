"""A department node's objection and credit-repair cases: their own DuckDB file, keys, history.

`cases.duckdb` in the node's state directory (mode 0600, as lists.duckdb) holds the cases the
department's subjects filed, every step of each (events), their attachments, and the record
history (amendments) that upheld cases wrote. Every write is one transaction under the store's
lock, so a filing or a decision is stored whole or not at all.

The keys live beside it (node.casekeys): each case's own attachments key in
`case-keys/<case id>.key`, wrapped under `cases.key` and deleted with the attachments at the end
of the retention period (crypto-shredding), and `case-seal.key`, the X25519 key the portal seals
each case to.

The store never touches the record store (read-only while the node runs): what the cases do
to records is the overlay (node.caseoverlay) it rebuilds after every write.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import duckdb

from node.casekeys import CaseKeyring
from node.caseoverlay import RecordChange, RecordOverlay
from node.subject import SUBJECT_ACTOR
from osmanthus.core.cases import (
    CASE_ID_PATTERN,
    AttachmentInfo,
    Case,
    CaseCorrection,
    CaseDraft,
    CaseEvent,
    CaseGround,
    CaseKind,
    CasePage,
    CaseQuery,
    CaseReceipt,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
)
from osmanthus.core.clock import CHINA_STANDARD_TIME
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
)
from osmanthus.core.storefile import create_or_read_meta, transaction
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.workdays import CaseSettings

#: the files in the node's state directory
CASES_FILE: Final = "cases.duckdb"
SCHEMA_VERSION: Final = 1
_FILE_MODE: Final = 0o600
#: the events a case's steps are named by
FILED: Final = "filed"
ATTACHMENTS_DELETED: Final = "attachments_deleted"
#: what an amendment in the record history does
AMEND_WITHDRAW: Final = "withdraw"
AMEND_CORRECT: Final = "correct"
#: why a record was withdrawn or corrected
REASON_OBJECTION: Final = "objection upheld"
REASON_REPAIRED: Final = "repaired"
#: the filing step's note on an objection filed again after a rejection (CaseStore._disputes)
REPEAT_NOTE: Final = (
    "filed again after an objection about this record was rejected: the record counts until "
    "the department decides"
)

_log = logging.getLogger(__name__)

_SCHEMA: Final = """
CREATE TABLE meta (
    department VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE cases (
    case_id VARCHAR PRIMARY KEY,
    subject_kind VARCHAR NOT NULL CHECK (subject_kind IN ('person', 'enterprise')),
    subject_id VARCHAR NOT NULL,
    nonce_sha256 VARCHAR NOT NULL,
    body_sha256 VARCHAR NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN ('objection', 'repair')),
    -- an open objection about a record disputes it (node.caseoverlay); a repair never does,
    -- nor an objection filed again after one about the same record was rejected
    disputes BOOLEAN NOT NULL,
    ground VARCHAR NOT NULL,
    target VARCHAR NOT NULL CHECK (target IN ('record', 'list_entry')),
    target_id VARCHAR NOT NULL,
    statement VARCHAR NOT NULL,
    commitment_letter VARCHAR NOT NULL,
    letter_sha256 VARCHAR NOT NULL,
    filed_at TIMESTAMP NOT NULL,
    filed_day DATE NOT NULL,
    decide_by DATE NOT NULL,
    reply_by DATE NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('open', 'upheld', 'rejected')),
    decided_at TIMESTAMP,
    decided_day DATE,
    decided_by VARCHAR,
    decision_reason VARCHAR NOT NULL DEFAULT '',
    remedy VARCHAR CHECK (remedy IS NULL OR remedy IN ('withdraw', 'correct')),
    correction VARCHAR,
    UNIQUE (subject_kind, subject_id, nonce_sha256)
);
CREATE INDEX cases_subject ON cases (subject_id);
CREATE TABLE case_events (
    case_id VARCHAR NOT NULL,
    seq INTEGER NOT NULL,
    "at" TIMESTAMP NOT NULL,
    event VARCHAR NOT NULL,
    actor VARCHAR NOT NULL,
    detail VARCHAR NOT NULL,
    PRIMARY KEY (case_id, seq)
);
CREATE TABLE attachments (
    case_id VARCHAR NOT NULL,
    idx INTEGER NOT NULL,
    name VARCHAR NOT NULL,
    media_type VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    sha256 VARCHAR NOT NULL,
    sealed BLOB,
    PRIMARY KEY (case_id, idx)
);
CREATE TABLE amendments (
    seq BIGINT PRIMARY KEY,
    record_id VARCHAR NOT NULL,
    subject_kind VARCHAR NOT NULL CHECK (subject_kind IN ('person', 'enterprise')),
    subject_id VARCHAR NOT NULL,
    case_id VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    officer VARCHAR NOT NULL,
    action VARCHAR NOT NULL CHECK (action IN ('withdraw', 'correct')),
    reason VARCHAR NOT NULL,
    before VARCHAR NOT NULL,
    after VARCHAR NOT NULL
);
"""

_CASE_COLUMNS: Final = (
    "case_id, subject_kind, subject_id, kind, ground, target, target_id, statement, "
    "commitment_letter, letter_sha256, filed_at, decide_by, reply_by, status, decided_at, "
    "decision_reason, remedy, correction"
)


# --- values the store answers with -------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Filing:
    """A checked filing, as the node stores it."""

    subject_kind: SubjectKind
    subject_id: SubjectId
    nonce: bytes
    draft: CaseDraft
    #: SHA-256 of the encoded draft: the same nonce with another body is a conflict
    body_sha256: str


@dataclass(frozen=True, kw_only=True)
class Amendment:
    """One entry of the record history: what an upheld case did to a record."""

    record_id: str
    subject_kind: SubjectKind
    subject_id: SubjectId
    action: str  # AMEND_WITHDRAW or AMEND_CORRECT
    reason: str  # REASON_OBJECTION or REASON_REPAIRED
    before: dict[str, object]
    after: dict[str, object]


@dataclass(frozen=True, kw_only=True)
class AmendmentLine:
    """An amendment as stored (the record history)."""

    seq: int
    record_id: str
    case_id: str
    at: datetime.datetime
    officer: str
    action: str
    reason: str
    before: dict[str, Any]
    after: dict[str, Any]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _naive_utc(moment: datetime.datetime) -> datetime.datetime:
    return moment.astimezone(datetime.UTC).replace(tzinfo=None)


def _aware(stored: datetime.datetime) -> datetime.datetime:
    return stored.replace(tzinfo=datetime.UTC)


def new_case_id() -> str:
    """A new case id: "case-" and 22 base64url characters (128 random bits)."""
    case_id = "case-" + secrets.token_urlsafe(16)
    assert CASE_ID_PATTERN.fullmatch(case_id)
    return case_id


def check_case_id(case_id: str) -> str:
    if not isinstance(case_id, str) or not CASE_ID_PATTERN.fullmatch(case_id):
        raise InvalidArgument(
            f"{str(case_id)[:40]!r} is not a case id (case- and 22 letters, digits, - or _)",
            field="case_id",
        )
    return case_id


def _correction_json(correction: CaseCorrection | None) -> str | None:
    if correction is None or correction.empty:
        return None
    values = {
        "quantity": correction.quantity,
        "event_start": correction.event_start.isoformat() if correction.event_start else None,
        "event_end": correction.event_end.isoformat() if correction.event_end else None,
        "window_end": correction.window_end.isoformat() if correction.window_end else None,
    }
    return json.dumps(values, sort_keys=True)


def _correction_of(text: str | None) -> CaseCorrection | None:
    if not text:
        return None
    values = json.loads(text)

    def day(name: str) -> datetime.date | None:
        return datetime.date.fromisoformat(values[name]) if values.get(name) else None

    return CaseCorrection(
        quantity=values.get("quantity"),
        event_start=day("event_start"),
        event_end=day("event_end"),
        window_end=day("window_end"),
    )


# --- the store ---------------------------------------------------------------------------------


class CaseStore:
    """One department's cases in one DuckDB file (see the module docstring).

    Reads run from many threads, each on its own cursor; writes are serialised by a lock and
    each is one transaction. `today` is asked wherever a day matters (filings per day,
    deadlines, overdue, retention), so tests can move the node's calendar."""

    def __init__(
        self,
        path: Path,
        *,
        department: DepartmentId,
        keys: CaseKeyring,
        settings: CaseSettings | None = None,
        today: Callable[[], datetime.date],
        now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    ) -> None:
        self.path = Path(path)
        self.department = department
        self.settings = settings or CaseSettings()
        self._keys = keys
        self._today = today
        self._now = now
        self._lock = threading.RLock()
        created = not self.path.exists()
        try:
            self._conn = duckdb.connect(str(self.path))
        except duckdb.Error as e:
            raise ConfigError(
                f"{self.path}: cannot open the case store ({e}); is another node of "
                f"{department} using this state directory?"
            ) from None
        try:
            if created:
                # statements, full subject ids and (encrypted) attachments: the node's user's only
                os.chmod(self.path, _FILE_MODE)
            row = create_or_read_meta(
                self._conn,
                path=self.path,
                schema=_SCHEMA,
                meta=(department, SCHEMA_VERSION),
                what="case store",
            )
            if row is not None:
                if row[0] != department:
                    raise ConfigError(
                        f"{self.path}: this case store belongs to department {row[0]!r}, not "
                        f"{department!r}; check the node's department and state directory"
                    )
                if row[1] != SCHEMA_VERSION:
                    raise ConfigError(
                        f"{self.path}: case store schema version {row[1]}, this Osmanthus "
                        f"reads version {SCHEMA_VERSION}"
                    )
            self._overlay = self._build_overlay()
            self._sweep_keys()
        except BaseException:
            self._conn.close()
            raise

    @classmethod
    def open(
        cls,
        state_dir: Path,
        *,
        department: DepartmentId,
        settings: CaseSettings | None = None,
        today: Callable[[], datetime.date],
    ) -> CaseStore:
        """The store in `state_dir`, its keys (node.casekeys) created with it on first start."""
        return cls(
            state_dir / CASES_FILE,
            department=department,
            keys=CaseKeyring.open(state_dir),
            settings=settings,
            today=today,
        )

    @property
    def overlay(self) -> RecordOverlay:
        """What the cases do to the department's records now (node.caseoverlay)."""
        return self._overlay

    # -- filing ---------------------------------------------------------------------------------

    def file(self, filing: Filing, *, check_target: Callable[[], None]) -> CaseReceipt:
        """Store a new case, or answer a duplicate filing with the case filed before.

        In one transaction under the lock: the same subject and nonce filed before returns
        that case's receipt (duplicate), or FailedPrecondition when its body differs; then
        `check_target` (the target exists and is the subject's, and the kind may be filed on
        it: it raises otherwise); no other open case on the same target; the per-subject
        limits (RateLimited naming the limit); then the case, its "filed" step and its
        attachments, encrypted under a new key of the case's own (written before the commit,
        removed if the case is not stored). A record under a new objection is disputed from
        the commit on (unless an objection about it was rejected before: `_disputes`)."""
        with self._lock:
            created_key: str | None = None
            try:
                with transaction(self._conn) as conn:
                    found = self._filed_before(conn, filing)
                    if found is not None:
                        return found
                    check_target()
                    self._require_no_open_case(conn, filing.draft)
                    today = self._today()
                    self._require_within_limits(conn, filing, today)
                    case_id = new_case_id()
                    receipt = self._insert(conn, case_id, filing, today)
                    if filing.draft.attachments:
                        cipher = self._keys.create(case_id)
                        created_key = case_id
                        for index, attachment in enumerate(filing.draft.attachments):
                            conn.execute(
                                "INSERT INTO attachments VALUES (?, ?, ?, ?, ?, ?, ?)",
                                [
                                    case_id,
                                    index,
                                    attachment.name,
                                    attachment.media_type,
                                    len(attachment.content),
                                    attachment.sha256,
                                    cipher.seal(case_id, index, attachment.content),
                                ],
                            )
                    overlay = self._build_overlay(conn)
            except BaseException:
                if created_key is not None:
                    self._forget_key(created_key)
                raise
            # published before the lock is released: a writer after this one starts from it,
            # so an older overlay never replaces a newer one
            self._overlay = overlay
        return receipt

    def _filed_before(self, conn: duckdb.DuckDBPyConnection, filing: Filing) -> CaseReceipt | None:
        found = conn.execute(
            "SELECT case_id, body_sha256, filed_at, decide_by, reply_by FROM cases WHERE "
            "subject_kind = ? AND subject_id = ? AND nonce_sha256 = ?",
            [filing.subject_kind.value, filing.subject_id, _sha256(filing.nonce)],
        ).fetchone()
        if found is None:
            return None
        if found[1] != filing.body_sha256:
            raise FailedPrecondition(
                f"case {found[0]} was filed with this nonce and another content; a new case "
                "needs a new nonce",
                field="case_nonce",
            )
        return CaseReceipt(
            case_id=found[0],
            department=self.department,
            filed_at=_aware(found[2]),
            decide_by=found[3],
            reply_by=found[4],
            duplicate=True,
        )

    def _insert(
        self,
        conn: duckdb.DuckDBPyConnection,
        case_id: str,
        filing: Filing,
        today: datetime.date,
    ) -> CaseReceipt:
        draft = filing.draft
        now = self._now()
        decide_by = self.settings.decide_by(today)
        reply_by = self.settings.reply_by(today)
        disputes = self._disputes(conn, filing)
        letter = draft.commitment_letter
        letter_sha256 = _sha256(letter.encode("utf-8")) if letter else ""
        conn.execute(
            "INSERT INTO cases (case_id, subject_kind, subject_id, nonce_sha256, body_sha256, "
            "kind, disputes, ground, target, target_id, statement, commitment_letter, "
            "letter_sha256, filed_at, filed_day, decide_by, reply_by, status) VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open')",
            [
                case_id,
                filing.subject_kind.value,
                filing.subject_id,
                _sha256(filing.nonce),
                filing.body_sha256,
                draft.kind.value,
                disputes,
                draft.ground.value,
                draft.target.value,
                draft.target_id,
                draft.statement,
                draft.commitment_letter,
                letter_sha256,
                _naive_utc(now),
                today,
                decide_by,
                reply_by,
            ],
        )
        what = "a record" if draft.target is CaseTarget.RECORD else "a list entry"
        detail = f"{draft.kind.value} about {what}"
        if draft.kind is CaseKind.OBJECTION and draft.target is CaseTarget.RECORD and not disputes:
            detail += f"; {REPEAT_NOTE}"
        self._event(conn, case_id, FILED, SUBJECT_ACTOR, detail, now)
        return CaseReceipt(
            case_id=case_id,
            department=self.department,
            filed_at=now,
            decide_by=decide_by,
            reply_by=reply_by,
        )

    @staticmethod
    def _disputes(conn: duckdb.DuckDBPyConnection, filing: Filing) -> bool:
        """Whether the new case disputes its record while it is open: an objection about a
        record does, once. A repair never does (the penalty counts until the repair is
        approved), and neither does an objection about a record whose earlier objection the
        department rejected: it is decided like any other, but the record counts meanwhile,
        so that filing the same objection again and again cannot keep a record from
        counting."""
        draft = filing.draft
        if draft.kind is not CaseKind.OBJECTION or draft.target is not CaseTarget.RECORD:
            return False
        # subject_id alone in the WHERE clause: DuckDB uses the index only then (node.store)
        rows = conn.execute(
            "SELECT subject_kind, kind, target, target_id, status FROM cases WHERE subject_id = ?",
            [filing.subject_id],
        ).fetchall()
        rejected = (filing.subject_kind.value, "objection", "record", draft.target_id, "rejected")
        return rejected not in rows

    def _forget_key(self, case_id: str) -> None:
        """Remove the key of a case that was not stored after all (the start's sweep removes
        it if this fails too)."""
        try:
            self._keys.shred(case_id)
        except (OSError, ConfigError) as exc:
            _log.warning("%s: the key of case %s, not stored, stays until the next start: %s",
                         self.department, case_id, exc)  # fmt: skip

    def _sweep_keys(self) -> None:
        """At start: remove the keys no stored attachment needs (a filing a crash interrupted
        before its commit, a retention purge interrupted after its commit)."""
        held = self._keys.case_ids()
        if not held:
            return
        live = {
            row[0]
            for row in self._conn.execute(
                "SELECT DISTINCT case_id FROM attachments WHERE sealed IS NOT NULL"
            ).fetchall()
        }
        for case_id in sorted(held - live):
            self._keys.shred(case_id)

    def _require_no_open_case(self, conn: duckdb.DuckDBPyConnection, draft: CaseDraft) -> None:
        row = conn.execute(
            "SELECT case_id, kind FROM cases WHERE status = 'open' AND target = ? AND "
            "target_id = ?",
            [draft.target.value, draft.target_id],
        ).fetchone()
        if row is not None:
            raise FailedPrecondition(
                f"case {row[0]} ({row[1]}) about this {draft.target.value.replace('_', ' ')} "
                "is open; the department decides it first, and a new case may follow",
                field="target_id",
            )

    def _require_within_limits(
        self, conn: duckdb.DuckDBPyConnection, filing: Filing, today: datetime.date
    ) -> None:
        filed_today, still_open = self._counts(conn, filing.subject_kind, filing.subject_id, today)
        per_day = self.settings.filings_per_subject_per_day
        if filed_today >= per_day:
            midnight = datetime.datetime.combine(
                today + datetime.timedelta(days=1), datetime.time(), tzinfo=CHINA_STANDARD_TIME
            )
            retry = max(1.0, (midnight - self._now()).total_seconds())
            raise RateLimited(
                f"this subject filed {filed_today} cases at {self.department} today; the "
                f"department takes at most {per_day} a day (limits.filings_per_subject_per_day):"
                " file again tomorrow",
                field="limits.filings_per_subject_per_day",
                retry_after_s=retry,
            )
        most_open = self.settings.open_cases_per_subject
        if still_open >= most_open:
            raise RateLimited(
                f"this subject has {still_open} open cases at {self.department}; at most "
                f"{most_open} may be open at once (limits.open_cases_per_subject): wait for "
                "the department's decisions",
                field="limits.open_cases_per_subject",
            )

    @staticmethod
    def _counts(
        conn: duckdb.DuckDBPyConnection, kind: SubjectKind, subject: str, today: datetime.date
    ) -> tuple[int, int]:
        # subject_id alone in the WHERE clause: DuckDB uses the index only then (node.store)
        rows = conn.execute(
            "SELECT subject_kind, filed_day, status FROM cases WHERE subject_id = ?", [subject]
        ).fetchall()
        mine = [r for r in rows if r[0] == kind.value]
        return sum(1 for r in mine if r[1] == today), sum(1 for r in mine if r[2] == "open")

    def _event(
        self,
        conn: duckdb.DuckDBPyConnection,
        case_id: str,
        event: str,
        actor: str,
        detail: str,
        at: datetime.datetime,
    ) -> None:
        row = conn.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM case_events WHERE case_id = ?", [case_id]
        ).fetchone()
        conn.execute(
            'INSERT INTO case_events (case_id, seq, "at", event, actor, detail) '
            "VALUES (?, ?, ?, ?, ?, ?)",
            [case_id, int(row[0]) if row else 1, _naive_utc(at), event, actor, detail],
        )

    # -- deciding -------------------------------------------------------------------------------

    def decide(
        self,
        case_id: str,
        *,
        outcome: CaseStatus,
        reason: str,
        remedy: CaseRemedy | None,
        correction: CaseCorrection | None,
        officer: str,
        amendment: Amendment | None,
    ) -> Case:
        """Record a decision on an open case (FailedPrecondition when it is not open), its
        step and its amendment of a record, in one transaction; the overlay follows."""
        now = self._now()
        today = self._today()
        with self._lock:
            with transaction(self._conn) as conn:
                row = conn.execute(
                    "SELECT status FROM cases WHERE case_id = ?", [case_id]
                ).fetchone()
                if row is None:
                    raise NotFound(f"no case {case_id} at {self.department}", field="case_id")
                if row[0] != CaseStatus.OPEN.value:
                    raise FailedPrecondition(
                        f"case {case_id} was decided already ({row[0]}); a decision is final",
                        field="case_id",
                    )
                conn.execute(
                    "UPDATE cases SET status = ?, decided_at = ?, decided_day = ?, decided_by = ?, "
                    "decision_reason = ?, remedy = ?, correction = ? WHERE case_id = ?",
                    [
                        outcome.value,
                        _naive_utc(now),
                        today,
                        officer,
                        reason,
                        remedy.value if remedy else None,
                        _correction_json(correction),
                        case_id,
                    ],
                )
                self._event(conn, case_id, outcome.value, officer, reason, now)
                if amendment is not None:
                    seq_row = conn.execute(
                        "SELECT coalesce(max(seq), 0) + 1 FROM amendments"
                    ).fetchone()
                    conn.execute(
                        "INSERT INTO amendments (seq, record_id, subject_kind, subject_id, "
                        'case_id, "at", officer, action, reason, before, after) VALUES '
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [
                            int(seq_row[0]) if seq_row else 1,
                            amendment.record_id,
                            amendment.subject_kind.value,
                            amendment.subject_id,
                            case_id,
                            _naive_utc(now),
                            officer,
                            amendment.action,
                            amendment.reason,
                            json.dumps(amendment.before, sort_keys=True, default=str),
                            json.dumps(amendment.after, sort_keys=True, default=str),
                        ],
                    )
                overlay = self._build_overlay(conn)
            # inside the lock, after the commit (as in `file`)
            self._overlay = overlay
        return self.get(case_id)

    # -- retention ------------------------------------------------------------------------------

    def purge(self) -> int:
        """Delete the attachments' content of every case decided more than the retention
        period ago (the descriptions stay, marked deleted, with an "attachments_deleted" step);
        how many cases lost theirs.

        The ciphertexts are set to NULL, then each case's key file is deleted (node.casekeys,
        crypto-shredding): whatever DuckDB keeps of a ciphertext in freed blocks, and any
        backup of the database, no longer decrypts. A crash between the two leaves key files
        that the next start removes (`_sweep_keys`)."""
        cutoff = self._today() - datetime.timedelta(days=self.settings.retention_days)
        with self._lock:
            due = self._read(
                "SELECT DISTINCT a.case_id FROM attachments a JOIN cases c USING (case_id) "
                "WHERE a.sealed IS NOT NULL AND c.decided_day IS NOT NULL AND c.decided_day < ?",
                [cutoff],
            )
            if not due:
                return 0
            now = self._now()
            with transaction(self._conn) as conn:
                for (case_id,) in due:
                    conn.execute(
                        "UPDATE attachments SET sealed = NULL WHERE case_id = ?", [case_id]
                    )
                    self._event(
                        conn,
                        case_id,
                        ATTACHMENTS_DELETED,
                        self.department,
                        f"retention period of {self.settings.retention_days} days after the "
                        "decision ended",
                        now,
                    )
            for (case_id,) in due:
                self._keys.shred(case_id)
            # give the freed blocks back (what is left of the ciphertexts decrypts no more)
            self._conn.execute("CHECKPOINT")
        return len(due)

    # -- reading --------------------------------------------------------------------------------

    def _read(self, sql: str, parameters: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._conn.cursor()
        try:
            return cursor.execute(sql, parameters).fetchall()
        finally:
            cursor.close()

    def get(self, case_id: str) -> Case:
        """One case with its attachments' descriptions and every step; NotFound naming it."""
        check_case_id(case_id)
        rows = self._read(f"SELECT {_CASE_COLUMNS} FROM cases WHERE case_id = ?", [case_id])
        if not rows:
            raise NotFound(f"no case {case_id} at {self.department}", field="case_id")
        (case,) = self._cases(rows, full=True)
        return case

    def cases_of(self, kind: SubjectKind, subject_id: str) -> tuple[Case, ...]:
        """Every case of one subject at this department, newest first, with every step."""
        rows = self._read(f"SELECT {_CASE_COLUMNS} FROM cases WHERE subject_id = ?", [subject_id])
        mine = [r for r in rows if r[1] == kind.value]
        mine.sort(key=lambda r: (r[10], r[0]), reverse=True)
        return self._cases(mine, full=True)

    def open_case_on(self, target: CaseTarget, target_id: str) -> str | None:
        rows = self._read(
            "SELECT case_id FROM cases WHERE status = 'open' AND target = ? AND target_id = ?",
            [target.value, target_id],
        )
        return rows[0][0] if rows else None

    def list(self, query: CaseQuery) -> CasePage:
        """The department's cases newest first, a page at a time (events and letters left
        out); `overdue_only`: open past decide_by on the node's today."""
        conditions: list[str] = []
        parameters: list[object] = []
        if query.status is not None:
            conditions.append("status = ?")
            parameters.append(query.status.value)
        if query.overdue_only:
            conditions.append("status = 'open' AND decide_by < ?")
            parameters.append(self._today())
        if query.page_token:
            filed_at, case_id = _page_position(query.page_token)
            conditions.append("(filed_at < ? OR (filed_at = ? AND case_id < ?))")
            parameters.extend([filed_at, filed_at, case_id])
        where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
        rows = self._read(
            f"SELECT {_CASE_COLUMNS} FROM cases {where} ORDER BY filed_at DESC, case_id DESC "
            "LIMIT ?",
            [*parameters, query.page_size + 1],
        )
        shown = rows[: query.page_size]
        cases = self._cases(shown, full=False)
        token = _page_token(shown[-1][10], shown[-1][0]) if len(rows) > query.page_size else ""
        return CasePage(cases=cases, next_page_token=token)

    def attachment(self, case_id: str, index: int) -> tuple[AttachmentInfo, bytes]:
        """One attachment decrypted; NotFound naming it, FailedPrecondition once deleted."""
        check_case_id(case_id)
        rows = self._read(
            "SELECT idx, media_type, name, size, sha256, sealed FROM attachments WHERE "
            "case_id = ? AND idx = ?",
            [case_id, index],
        )
        if not rows:
            self.get(case_id)  # NotFound naming the case when there is none
            raise NotFound(f"case {case_id} has no attachment {index}", field="index")
        idx, media_type, name, size, sha256, sealed = rows[0]
        info = AttachmentInfo(
            index=idx, media_type=media_type, name=name, size=size, sha256=sha256,
            deleted=sealed is None,
        )  # fmt: skip
        if sealed is None:
            raise FailedPrecondition(
                f"attachment {index} of case {case_id} was deleted when the case's retention "
                f"period ended ({self.settings.retention_days} days after the decision)",
                field="index",
            )
        content = self._keys.cipher(case_id).open(case_id, idx, bytes(sealed))
        if _sha256(content) != sha256:
            raise ConfigError(f"attachment {index} of case {case_id} does not match its SHA-256")
        return info, content

    def amendments(self, record_id: str | None = None) -> tuple[AmendmentLine, ...]:
        """The record history (one record's, or all), oldest first."""
        sql = (
            'SELECT seq, record_id, case_id, "at", officer, action, reason, before, after '
            "FROM amendments"
        )
        rows = (
            self._read(sql + " WHERE record_id = ? ORDER BY seq", [record_id])
            if record_id is not None
            else self._read(sql + " ORDER BY seq", [])
        )
        return tuple(
            AmendmentLine(
                seq=r[0], record_id=r[1], case_id=r[2], at=_aware(r[3]), officer=r[4],
                action=r[5], reason=r[6], before=json.loads(r[7]), after=json.loads(r[8]),
            )
            for r in rows
        )  # fmt: skip

    def count(self) -> int:
        rows = self._read("SELECT count(*) FROM cases", [])
        return int(rows[0][0])

    def _cases(self, rows: Sequence[tuple[Any, ...]], *, full: bool) -> tuple[Case, ...]:
        if not rows:
            return ()
        ids = [r[0] for r in rows]
        attachments: dict[str, list[AttachmentInfo]] = {i: [] for i in ids}
        for case_id, idx, media_type, name, size, sha256, deleted in self._read(
            "SELECT case_id, idx, media_type, name, size, sha256, sealed IS NULL FROM "
            "attachments WHERE case_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY case_id, idx",
            [ids],
        ):
            attachments[case_id].append(
                AttachmentInfo(
                    index=idx, media_type=media_type, name=name, size=size, sha256=sha256,
                    deleted=bool(deleted),
                )
            )  # fmt: skip
        events: dict[str, list[CaseEvent]] = {i: [] for i in ids}
        if full:
            for case_id, at, event, actor, detail in self._read(
                'SELECT case_id, "at", event, actor, detail FROM case_events WHERE case_id IN '
                "(SELECT unnest(?::VARCHAR[])) ORDER BY case_id, seq",
                [ids],
            ):
                events[case_id].append(
                    CaseEvent(at=_aware(at), event=event, actor=actor, detail=detail)
                )
        today = self._today()
        out: list[Case] = []
        for r in rows:
            (case_id, skind, sid, kind, ground, target, target_id, statement, letter,
             letter_sha, filed_at, decide_by, reply_by, status, decided_at, reason, remedy,
             correction) = r  # fmt: skip
            case_status = CaseStatus(status)
            out.append(
                Case(
                    case_id=case_id,
                    department=self.department,
                    kind=CaseKind(kind),
                    ground=CaseGround(ground),
                    target=CaseTarget(target),
                    target_id=target_id,
                    subject_kind=SubjectKind(skind),
                    subject_id=sid,
                    statement=statement,
                    commitment_letter=letter if full else "",
                    letter_sha256=letter_sha,
                    filed_at=_aware(filed_at),
                    decide_by=decide_by,
                    reply_by=reply_by,
                    overdue=case_status is CaseStatus.OPEN and today > decide_by,
                    status=case_status,
                    decided_at=_aware(decided_at) if decided_at is not None else None,
                    decision_reason=reason,
                    remedy=CaseRemedy(remedy) if remedy else None,
                    correction=_correction_of(correction),
                    attachments=tuple(attachments[case_id]),
                    events=tuple(events[case_id]),
                )
            )
        return tuple(out)

    def _build_overlay(self, conn: duckdb.DuckDBPyConnection | None = None) -> RecordOverlay:
        """The record overlay from the record history and the open objections about records."""
        db = conn if conn is not None else self._conn
        folded: dict[str, dict[str, Any]] = {}
        history = db.execute(
            "SELECT record_id, subject_kind, subject_id, action, after FROM amendments ORDER BY seq"
        ).fetchall()
        for record_id, subject_kind, subject_id, action, after in history:
            state = folded.setdefault(
                record_id, {"subject_kind": subject_kind, "subject_id": subject_id}
            )
            if action == AMEND_WITHDRAW:
                state["dropped"] = True
            else:
                for name, value in json.loads(after).items():
                    if value is None:
                        continue
                    state[name] = (
                        datetime.date.fromisoformat(value) if name != "quantity" else int(value)
                    )
        # only an open objection disputes its record: a repair leaves the penalty counting until
        # it is approved (else filing one would switch a penalty off), and so does an objection
        # filed again after a rejection (`disputes` false: CaseStore._disputes)
        for record_id, subject_kind, subject_id in db.execute(
            "SELECT target_id, subject_kind, subject_id FROM cases WHERE status = 'open' AND "
            "target = 'record' AND kind = 'objection' AND disputes"
        ).fetchall():
            state = folded.setdefault(
                record_id, {"subject_kind": subject_kind, "subject_id": subject_id}
            )
            state["disputed"] = True
        return RecordOverlay(
            {
                record_id: RecordChange(
                    subject_kind=SubjectKind(state.pop("subject_kind")),
                    subject_id=SubjectId(state.pop("subject_id")),
                    **{k: v for k, v in state.items() if k in _CHANGE_FIELDS},
                )
                for record_id, state in folded.items()
            }
        )

    # -- lifetime -------------------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the writer's lock (a decision that withdraws a list entry first holds it, so
        that two officers do not decide the same case at once)."""
        with self._lock:
            yield

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> CaseStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


_CHANGE_FIELDS: Final = frozenset({"dropped", "disputed", "quantity", "event_start", "event_end"})


_EPOCH: Final = datetime.datetime(1970, 1, 1)


def _page_token(filed_at: datetime.datetime, case_id: str) -> str:
    micros = (filed_at - _EPOCH) // datetime.timedelta(microseconds=1)
    return f"{micros}.{case_id}"


def _page_position(token: str) -> tuple[datetime.datetime, str]:
    micros, _, case_id = token.partition(".")
    if not micros.isdigit() or len(micros) > 20 or not CASE_ID_PATTERN.fullmatch(case_id):
        raise InvalidArgument(
            "is not a page token this node gave; start again without one", field="page_token"
        )
    return _EPOCH + datetime.timedelta(microseconds=int(micros)), case_id
