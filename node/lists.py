"""A department node's red and black lists: their own DuckDB file, windows, withdrawal, history."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

import duckdb

from osmanthus.core.catalogue import Catalogue, ListColour, ListType
from osmanthus.core.clock import china_date_of_naive_utc
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from osmanthus.core.ids import validate_subject
from osmanthus.core.lists import (
    ENTRY_ID_PATTERN,
    MAX_CHANGE_SEQ,
    MAX_CHANGES_PAGE_SIZE,
    MAX_ENTRIES_PER_PUBLISH,
    MAX_REFERENCE_LENGTH,
    EntryId,
    EntryStatus,
    ListChange,
    ListEntry,
    ListEvent,
    NewEntry,
    PublicEntry,
    WithdrawReason,
    check_feed_id,
    check_text,
    decode_page_token,
    encode_page_token,
    list_of,
    new_feed_id,
    page_size,
    public_subject,
    reason_allowed,
    refuse_resident_id,
    status_of,
    stored_entry_withheld,
    validate_new_entry,
    withheld_entry_id,
)
from osmanthus.core.storefile import create_or_read_meta, transaction
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.wire.lists import (
    EntryDraft,
    PublicPage,
    PublicQuery,
    PublishResult,
)

_log = logging.getLogger(__name__)

#: the list store's file in the node's state directory
LISTS_FILE: Final = "lists.duckdb"
#: 2 numbers every event (events.seq), which the department's change feed pages by, and names
#: the feed (meta.feed_id)
SCHEMA_VERSION: Final = 2
PUBLISHED: Final = "published"
WITHDRAWN: Final = "withdrawn"
_FILE_MODE: Final = 0o600
#: the umask while DuckDB may create files: its WAL holds full ids, as the database does
_PRIVATE_UMASK: Final = 0o077

#: seq numbers the events in the order they were stored, from 1: the change feed's cursor. It
#: is assigned under the store's lock in the event's own transaction (max + 1), never reused
_EVENTS_SCHEMA: Final = f"""
CREATE TABLE events (
    seq BIGINT NOT NULL UNIQUE CHECK (seq BETWEEN 1 AND {MAX_CHANGE_SEQ}),
    entry_id VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    event VARCHAR NOT NULL CHECK (event IN ('published', 'withdrawn')),
    actor VARCHAR NOT NULL,
    detail VARCHAR NOT NULL
);
CREATE INDEX events_entry ON events (entry_id);
"""

#: feed_id is the change feed's identity, made at random when the store is created (a schema-1
#: store gets its own when its events are numbered)
_META_SCHEMA: Final = """
CREATE TABLE meta (
    department VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,
    feed_id VARCHAR NOT NULL
);
"""

_SCHEMA = """
CREATE TABLE entries (
    entry_id VARCHAR PRIMARY KEY,
    list VARCHAR NOT NULL,
    subject_kind VARCHAR NOT NULL CHECK (subject_kind IN ('person', 'enterprise')),
    subject_id VARCHAR NOT NULL,
    subject_name VARCHAR NOT NULL,
    legal_basis VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    window_start DATE NOT NULL,
    window_end DATE NOT NULL,
    department VARCHAR NOT NULL,
    published_at TIMESTAMP NOT NULL,
    withdrawn_at TIMESTAMP,
    withdraw_reason VARCHAR
        CHECK (withdraw_reason IS NULL OR withdraw_reason IN ('repaired', 'revoked', 'error')),
    withdraw_reference VARCHAR,
    CHECK (window_end >= window_start),
    CHECK ((withdrawn_at IS NULL) = (withdraw_reason IS NULL))
);
CREATE INDEX entries_subject ON entries (subject_id);
CREATE INDEX entries_list ON entries (list, entry_id);
"""

_ENTRY_COLUMNS = (
    "entry_id, list, subject_kind, subject_id, subject_name, legal_basis, reason, "
    "window_start, window_end, withdrawn_at, withdraw_reason, withdraw_reference"
)
# timestamps are stored as UTC without a zone: DuckDB's TIMESTAMPTZ reads back in local time
_INSERT_ENTRIES = (
    "INSERT INTO entries SELECT * FROM (SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[]), unnest(?::DATE[]), unnest(?::DATE[]), unnest(?::VARCHAR[]), "
    "unnest(?::TIMESTAMP[]), NULL, NULL, NULL)"
)
_INSERT_EVENTS = (
    'INSERT INTO events (seq, entry_id, "at", event, actor, detail) SELECT * FROM (SELECT '
    "unnest(?::BIGINT[]), unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), unnest(?::VARCHAR[]), "
    "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]))"
)
_IN_VIEW = "withdrawn_at IS NULL AND window_start <= ? AND window_end >= ?"
#: what one change feed page's events may take on the wire at most (see _feed_bytes)
MAX_FEED_PAGE_BYTES: Final = 3 << 20
_FEED_EVENT_OVERHEAD: Final = 160


class FeedEvent(NamedTuple):
    """One event of the store's change feed, numbered by the store."""

    seq: int
    #: published fields only, a person's id masked; None when withheld
    entry: PublicEntry | None
    event: ListChange
    #: when it was stored (UTC, aware)
    at: datetime
    #: WITHDRAWN only, withheld or not: the entry's withdraw reason (its reference is not
    #: published)
    withdraw_reason: WithdrawReason | None
    #: "" or the check the stored entry fails today (osmanthus.core.lists.stored_entry_withheld)
    withheld: str = ""
    #: the entry's id: `entry.entry_id`, or when withheld the id if it passes its own checks
    #: (osmanthus.core.lists.withheld_entry_id), else ""
    entry_id: str = ""


#: one umask change at a time in this process, and only around our own DuckDB calls
_UMASK_LOCK: Final = threading.Lock()


@contextlib.contextmanager
def _private_files() -> Iterator[None]:
    """Files created meanwhile are readable and writable by the node's user only.

    DuckDB creates `lists.duckdb.wal` itself, with the process's umask, at the first write
    after every checkpoint (it deletes the WAL when it checkpoints), so a chmod after connect
    is not enough: every call that may write runs under this. The umask is process-wide: it is
    narrowed (never widened) only for the call, one call at a time, and put back after.
    """
    with _UMASK_LOCK:
        previous = os.umask(_PRIVATE_UMASK)
        if previous & ~_PRIVATE_UMASK:
            # a stricter umask stays as strict
            os.umask(previous | _PRIVATE_UMASK)
        try:
            yield
        finally:
            os.umask(previous)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def _differing_fields(old: NewEntry, new: NewEntry) -> list[str]:
    return [f.name for f in fields(NewEntry) if getattr(old, f.name) != getattr(new, f.name)]


class ListStore:
    """One department's red and black list entries and their append-only history (DuckDB).

    Only the node writes it (one process: DuckDB allows one writer). Reads run from many
    threads at once, each on its own cursor; writes are serialised by a lock and each is one
    transaction. Entries are never deleted: withdrawal and the end of a window only take an
    entry out of public view.
    """

    def __init__(self, path: Path, *, department: DepartmentId, catalogue: Catalogue) -> None:
        self.path = Path(path)
        self.department = department
        self._catalogue = catalogue
        self._types: Mapping[str, ListType] = {t.id: t for t in catalogue.lists_of(department)}
        self._lock = threading.Lock()
        created = not self.path.exists()
        try:
            with _private_files():
                self._conn = duckdb.connect(str(self.path))
        except duckdb.Error as e:
            raise ConfigError(
                f"{self.path}: cannot open the list store ({e}); is another node of "
                f"{department} using this state directory?"
            ) from None
        try:
            if created:
                # full identity numbers of listed persons: readable by the node's user only
                os.chmod(self.path, _FILE_MODE)
            with _private_files():
                self._feed_id = self._check_or_create_schema()
            self._check_lists()
            self._check_withdraw_reasons()
            self._warn_withheld()
        except BaseException:
            self._conn.close()
            raise

    @property
    def feed_id(self) -> str:
        """The change feed's identity, made when this store was created."""
        return self._feed_id

    def _check_or_create_schema(self) -> str:
        """The store's feed id, after creating the schema or checking (and migrating) it."""
        feed_id = new_feed_id()
        row = create_or_read_meta(
            self._conn,
            path=self.path,
            schema=_META_SCHEMA + _SCHEMA + _EVENTS_SCHEMA,
            meta=(self.department, SCHEMA_VERSION, feed_id),
            what="list store",
        )
        if row is None:
            return feed_id
        department, version = row[0], row[1]
        if department != self.department:
            raise ConfigError(
                f"{self.path}: this list store belongs to department {department!r}, not "
                f"{self.department!r}; check the node's department and state directory"
            )
        if version == 1 and len(row) == 2:
            self._migrate_schema_1(feed_id)
            return feed_id
        if version != SCHEMA_VERSION or len(row) != 3:
            raise ConfigError(
                f"{self.path}: list store schema version {version}, this Osmanthus reads "
                f"version {SCHEMA_VERSION}"
            )
        try:
            return check_feed_id(str(row[2]))
        except InvalidArgument:
            raise ConfigError(
                f"{self.path}: the list store's feed id is damaged; restore the file from a "
                "backup (a new feed id would tell the sync job that every event is new)"
            ) from None

    def _migrate_schema_1(self, feed_id: str) -> None:
        """Schema 1 to 2 in one transaction: the store gets its feed id, and the events their
        sequence numbers in the order they happened. A withdrawal counts from when its entry
        was published if its own time is earlier (its time was taken before the writer's lock,
        so a publication waiting for the lock could store a later one); then published before
        withdrawn, then entry id.

        DuckDB neither adds a column with constraints nor builds an index over rows updated in
        the same transaction, so the meta row and the events move to tables of the new shape:
        the file is then what a new schema-2 store is.
        """
        with transaction(self._conn):
            self._conn.execute("ALTER TABLE meta RENAME TO meta_schema_1")
            self._conn.execute(_META_SCHEMA)
            self._conn.execute(
                "INSERT INTO meta SELECT department, ?, ? FROM meta_schema_1",
                [SCHEMA_VERSION, feed_id],
            )
            self._conn.execute("DROP TABLE meta_schema_1")
            self._conn.execute("DROP INDEX events_entry")
            self._conn.execute("ALTER TABLE events RENAME TO events_schema_1")
            self._conn.execute(_EVENTS_SCHEMA)
            self._conn.execute(
                'INSERT INTO events (seq, entry_id, "at", event, actor, detail) SELECT '
                "row_number() OVER (ORDER BY CASE WHEN ev.event = 'withdrawn' THEN "
                'greatest(ev."at", en.published_at) ELSE ev."at" END, ev.event, ev.entry_id), '
                'ev.entry_id, ev."at", ev.event, ev.actor, ev.detail FROM events_schema_1 AS ev '
                "LEFT JOIN entries AS en USING (entry_id)"
            )
            self._conn.execute("DROP TABLE events_schema_1")

    def _check_lists(self) -> None:
        # an entry of a list the catalogue no longer gives this department would drop out of
        # public view and out of the flags without anyone deciding so: refuse to start instead
        stored = {r[0] for r in self._conn.execute("SELECT DISTINCT list FROM entries").fetchall()}
        unknown = sorted(stored - set(self._types))
        if unknown:
            raise ConfigError(
                f"{self.path}: holds entries of {', '.join(unknown)}, which the catalogue does "
                f"not list as {self.department}'s; restore the list in the catalogue (entries "
                "are kept for their history and cannot be dropped silently)",
                field="catalogue",
            )

    def _check_withdraw_reasons(self) -> None:
        # the change feed sends every withdrawal's reason, withheld or not, and the coordinator
        # refuses one its list's colour does not allow: a catalogue that changed a list's colour
        # after entries were withdrawn from it would stop the feed there, so refuse to start
        rows = self._conn.execute(
            "SELECT DISTINCT list, withdraw_reason FROM entries WHERE withdraw_reason IS NOT NULL "
            "ORDER BY list, withdraw_reason"
        ).fetchall()
        for list_id, reason in rows:
            list_type = self._types[list_id]
            if not reason_allowed(list_type.colour, WithdrawReason(reason)):
                raise ConfigError(
                    f"{self.path}: holds entries of {list_id} withdrawn as {reason}, which the "
                    f"catalogue's colour for {list_id} ({list_type.colour.value}) does not allow; "
                    "restore the list's colour in the catalogue (a list of the other colour is "
                    "a new list, with a new id)",
                    field="catalogue",
                )

    def _warn_withheld(self) -> None:
        """Log how many stored entries the change feed serves withheld, and why (no values).

        Checking every entry takes ~45 µs (~2 s for 50,000), so SQL first picks the entries
        that can fail the checks a catalogue change or a passing day brings: 17 or more digits
        in their texts (a resident id), a list that no longer takes their kind or windows as
        long. Entries stored malformed under older rules show as the feed reaches them.
        """
        allowed = [
            (t.id, kind.value, t.max_window_days)
            for t in self._types.values()
            for kind in t.subject_kinds
        ]
        texts = "entry_id || subject_name || legal_basis || reason"
        rows = self._conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries LEFT JOIN (SELECT unnest(?::VARCHAR[]) AS "
            "list, unnest(?::VARCHAR[]) AS subject_kind, unnest(?::INTEGER[]) AS max_days) AS "
            "allowed USING (list, subject_kind) WHERE allowed.max_days IS NULL "
            "OR window_end - window_start + 1 > allowed.max_days "
            f"OR length(regexp_replace({texts} || CASE WHEN subject_kind = 'enterprise' THEN "
            r"subject_id ELSE '' END, '[^\pN]', '', 'g')) >= 17",
            [[a[0] for a in allowed], [a[1] for a in allowed], [a[2] for a in allowed]],
        ).fetchall()
        reasons = Counter(
            reason
            for reason in (
                stored_entry_withheld(
                    _new_entry(row), catalogue=self._catalogue, department=self.department
                )
                for row in rows
            )
            if reason
        )
        if reasons:
            _log.warning(
                "%s: %d list entries fail a publication's checks today, so the change feed "
                "serves their events withheld (no fields): %s",
                self.path,
                sum(reasons.values()),
                "; ".join(f"{count} because {reason}" for reason, count in reasons.items()),
            )

    # -- publishing -------------------------------------------------------------------------------

    def validate(self, drafts: Sequence[EntryDraft], *, today: date) -> tuple[NewEntry, ...]:
        """Every draft checked; InvalidArgument names the first bad one (`entries[i].field`)."""
        if not drafts:
            raise InvalidArgument("a publication carries at least one entry", field="entries")
        if len(drafts) > MAX_ENTRIES_PER_PUBLISH:
            raise InvalidArgument(
                f"{len(drafts)} entries; one publication carries at most "
                f"{MAX_ENTRIES_PER_PUBLISH}: send the rest in another publication",
                field="entries",
            )
        checked: list[NewEntry] = []
        first: dict[str, int] = {}
        for index, draft in enumerate(drafts):
            prefix = f"entries[{index}]."
            if draft.subject_kind is None:
                raise InvalidArgument(
                    "a subject kind (person or enterprise) is required",
                    field=f"{prefix}subject_kind",
                )
            entry = validate_new_entry(
                entry_id=draft.entry_id,
                list_id=draft.list,
                subject_kind=draft.subject_kind,
                subject_id=draft.subject_id,
                subject_name=draft.subject_name,
                legal_basis=draft.legal_basis,
                reason=draft.reason,
                window_start=draft.window_start,
                window_end=draft.window_end,
                catalogue=self._catalogue,
                department=self.department,
                today=today,
                prefix=prefix,
            )
            earlier = first.setdefault(entry.entry_id, index)
            if earlier != index:
                raise InvalidArgument(
                    f"repeats the entry id of entries[{earlier}]; each entry of a publication "
                    "has its own id",
                    field=f"{prefix}entry_id",
                )
            checked.append(entry)
        return tuple(checked)

    def publish(self, drafts: Sequence[EntryDraft], *, actor: str, today: date) -> PublishResult:
        """Publish every entry or none, in one transaction.

        An entry id already stored with the same fields counts as unchanged (a retried
        publication); with other fields, or withdrawn, the whole publication is refused.
        """
        entries = self.validate(drafts, today=today)
        with self._lock, _private_files(), transaction(self._conn):
            # taken under the lock: events are numbered in the order of their times
            at = _naive_utc(_utc_now())
            stored = self._stored_entries(self._conn, [e.entry_id for e in entries])
            new: list[NewEntry] = []
            for index, entry in enumerate(entries):
                old, withdrawn_at = stored.get(entry.entry_id, (None, None))
                if old is None:
                    new.append(entry)
                elif withdrawn_at is not None:
                    # "unchanged" would tell the officer the entry is in view again
                    raise FailedPrecondition(
                        f"entry {entry.entry_id!r} was withdrawn on "
                        f"{china_date_of_naive_utc(withdrawn_at)} and stays withdrawn; "
                        "publish under a new id an entry that applies again. Nothing of "
                        "this publication was stored",
                        field=f"entries[{index}].entry_id",
                    )
                elif old != entry:
                    raise InvalidArgument(
                        f"entry {entry.entry_id!r} is already published with a different "
                        f"{', '.join(_differing_fields(old, entry))}; an entry is never "
                        "changed: withdraw it (reason error) and publish the corrected entry "
                        "under a new id. Nothing of this publication was stored",
                        field=f"entries[{index}].entry_id",
                    )
            if new:
                self._insert(new, at=at, actor=actor)
        return PublishResult(published=len(new), unchanged=len(entries) - len(new))

    def _stored_entries(
        self, conn: duckdb.DuckDBPyConnection, ids: Sequence[str]
    ) -> dict[str, tuple[NewEntry, datetime | None]]:
        """The stored entries of `ids`, each with when it was withdrawn (None: it was not)."""
        rows = conn.execute(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE entry_id IN (SELECT unnest(?::VARCHAR[]))",
            [list(ids)],
        ).fetchall()
        return {row[0]: (_new_entry(row), row[9]) for row in rows}

    def _insert(self, entries: Sequence[NewEntry], *, at: datetime, actor: str) -> None:
        count = len(entries)
        ids = [e.entry_id for e in entries]
        self._conn.execute(
            _INSERT_ENTRIES,
            [
                ids,
                [e.list for e in entries],
                [e.subject_kind.value for e in entries],
                [e.subject_id for e in entries],
                [e.subject_name for e in entries],
                [e.legal_basis for e in entries],
                [e.reason for e in entries],
                [e.window_start for e in entries],
                [e.window_end for e in entries],
                [self.department] * count,
                [at] * count,
            ],
        )
        first = self._next_seq()
        self._conn.execute(
            _INSERT_EVENTS,
            [
                list(range(first, first + count)),
                ids,
                [at] * count,
                [PUBLISHED] * count,
                [actor] * count,
                [f"window {e.window_start} to {e.window_end}" for e in entries],
            ],
        )

    def _next_seq(self) -> int:
        """The next event's sequence number; only under the lock, inside the write's transaction
        (a DuckDB SEQUENCE is not transactional: a rolled-back write would still use numbers)."""
        row = self._conn.execute("SELECT coalesce(max(seq), 0) + 1 FROM events").fetchone()
        return int(row[0]) if row else 1

    # -- withdrawing ------------------------------------------------------------------------------

    def withdraw(
        self,
        entry_id: str,
        *,
        reason: WithdrawReason | None,
        reference: str,
        actor: str,
        today: date,
    ) -> ListEntry:
        """Take an entry in view or scheduled out of public view for good; the history keeps it."""
        checked_id = _check_entry_id(entry_id)
        if reason is None:
            raise InvalidArgument(
                "say why the entry leaves public view: repaired (black lists: credit repair), "
                "revoked (red lists) or error",
                field="reason",
            )
        ref = check_text(reference, field="reference", limit=MAX_REFERENCE_LENGTH)
        # the reference goes into the history, which the officer's tools show and export
        refuse_resident_id(ref, field="reference")
        with self._lock, _private_files(), transaction(self._conn):
            # taken under the lock: events are numbered in the order of their times
            at = _naive_utc(_utc_now())
            row = self._conn.execute(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE entry_id = ?", [checked_id]
            ).fetchone()
            if row is None:
                raise NotFound(
                    f"no entry {checked_id!r} on the lists of {self.department}",
                    field="entry_id",
                )
            entry = _new_entry(row)
            withdrawn_at, withdrawn_reason = row[9], row[10]
            status = status_of(
                entry.window_start,
                entry.window_end,
                withdrawn=withdrawn_at is not None,
                today=today,
            )
            if status is EntryStatus.WITHDRAWN:
                raise FailedPrecondition(
                    f"entry {checked_id!r} was withdrawn on "
                    f"{china_date_of_naive_utc(withdrawn_at)} "
                    f"({withdrawn_reason}); it is out of public view already",
                    field="entry_id",
                )
            if status is EntryStatus.EXPIRED:
                raise FailedPrecondition(
                    f"the window of entry {checked_id!r} ended on {entry.window_end}; it "
                    "left public view then and stays in the history as expired",
                    field="entry_id",
                )
            list_type = self._types[entry.list]
            if not reason_allowed(list_type.colour, reason):
                raise InvalidArgument(_wrong_reason(list_type, reason), field="reason")
            self._conn.execute(
                "UPDATE entries SET withdrawn_at = ?, withdraw_reason = ?, "
                "withdraw_reference = ? WHERE entry_id = ?",
                [at, reason.value, ref, checked_id],
            )
            self._conn.execute(
                'INSERT INTO events (seq, entry_id, "at", event, actor, detail) '
                "VALUES (?, ?, ?, ?, ?, ?)",
                [self._next_seq(), checked_id, at, WITHDRAWN, actor, f"{reason.value}: {ref}"],
            )
        found = self._entries_where("entry_id = ?", [checked_id], today=today)
        return found[0]

    # -- reading ----------------------------------------------------------------------------------

    def entry(self, entry_id: str, *, today: date) -> ListEntry:
        """One entry with its status on `today` and its events; NotFound if there is none."""
        checked_id = _check_entry_id(entry_id)
        found = self._entries_where("entry_id = ?", [checked_id], today=today)
        if not found:
            raise NotFound(
                f"no entry {checked_id!r} on the lists of {self.department}", field="entry_id"
            )
        return found[0]

    def history(self, kind: SubjectKind, subject_id: str, *, today: date) -> tuple[ListEntry, ...]:
        """Every entry about one subject, in view or not, by window start then entry id."""
        subject = validate_subject(kind, subject_id, field="subject_id")
        # subject_id alone in the WHERE clause: DuckDB uses the index only then (see store.py)
        found = self._entries_where("subject_id = ?", [subject], today=today)
        return tuple(e for e in found if e.entry.subject_kind is kind)

    def public_entries(self, query: PublicQuery, *, today: date) -> PublicPage:
        """Entries in view on `today`, published fields only (a person's id masked).

        One subject's entries (kind and id; optionally one list's) or one list's, in entry id
        order, `page_size` at a time; the page token continues after the last entry shown.
        """
        size = page_size(query.page_size)
        after = decode_page_token(query.page_token)
        kind = query.subject_kind
        list_id = (
            list_of(self._catalogue, query.list, department=self.department).id
            if query.list
            else ""
        )
        if query.subject_id:
            if kind is None:
                raise InvalidArgument(
                    "a subject kind (person or enterprise) is required", field="subject_kind"
                )
            subject = validate_subject(kind, query.subject_id, field="subject_id")
            # subject_id alone in the WHERE clause, the rest in Python: DuckDB uses the index
            # only then (~1 ms instead of ~6 ms at 50,000 entries), and a subject has few entries
            found = sorted(
                (
                    entry
                    for entry, withdrawn in self._by_subject(subject)
                    if entry.subject_kind is kind
                    and (not list_id or entry.list == list_id)
                    and (after is None or entry.entry_id > after)
                    and status_of(
                        entry.window_start, entry.window_end, withdrawn=withdrawn, today=today
                    )
                    is EntryStatus.IN_VIEW
                ),
                key=lambda entry: entry.entry_id,
            )
            entries, more = found[:size], len(found) > size
        elif list_id:
            conditions = [_IN_VIEW, "list = ?"]
            parameters: list[object] = [today, today, list_id]
            if kind is not None:
                conditions.append("subject_kind = ?")
                parameters.append(kind.value)
            if after is not None:
                conditions.append("entry_id > ?")
                parameters.append(after)
            rows = self._read(
                f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {' AND '.join(conditions)} "
                "ORDER BY entry_id LIMIT ?",
                [*parameters, size + 1],
            )
            entries, more = [_new_entry(row) for row in rows[:size]], len(rows) > size
        else:
            raise InvalidArgument(
                "name a subject (subject_kind and subject_id) or a list to page through",
                field="subject_id",
            )
        shown = tuple(self._public(entry, masked=True) for entry in entries)
        return PublicPage(
            entries=shown,
            next_page_token=encode_page_token(shown[-1].entry_id) if more else "",
        )

    def _by_subject(self, subject: SubjectId) -> list[tuple[NewEntry, bool]]:
        """Every entry naming `subject` (any kind), and whether it was withdrawn."""
        rows = self._read(f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE subject_id = ?", [subject])
        return [(_new_entry(row), row[9] is not None) for row in rows]

    def flags_in_view(self, kind: SubjectKind, subject: SubjectId, today: date) -> frozenset[str]:
        """The catalogue flags of the black lists on which the subject has an entry in view."""
        flags: set[str] = set()
        for entry, withdrawn in self._by_subject(subject):
            flag = self._types[entry.list].flag
            if (
                flag is not None
                and entry.subject_kind is kind
                and status_of(
                    entry.window_start, entry.window_end, withdrawn=withdrawn, today=today
                )
                is EntryStatus.IN_VIEW
            ):
                flags.add(flag)
        return frozenset(flags)

    def changes_after(self, cursor: int, *, limit: int) -> tuple[list[FeedEvent], bool]:
        """The events numbered after `cursor`, oldest first, at most `limit` of them (fewer
        when their texts would pass MAX_FEED_PAGE_BYTES), and whether more follow: the
        department's change feed.

        Each event carries its entry's published fields (a person's id masked) as they are now
        (an entry's fields never change), a withdrawal its reason but not its reference. An
        entry published and later withdrawn comes twice. An entry that fails a publication's
        checks today comes withheld: its place, kind and time without any of its fields, and
        the check it failed; still its entry id, if that id passes its own checks, and a
        withdrawal's reason, so that the sync job can close the entry a withdrawal names.
        Readers see whole transactions and numbers are given in commit order, so a page never
        skips an event that a later page would show before it.
        """
        if not isinstance(cursor, int) or not 0 <= cursor <= MAX_CHANGE_SEQ:
            raise InvalidArgument(f"{cursor!r} is not an event sequence number", field="after")
        if not isinstance(limit, int) or not 0 < limit <= MAX_CHANGES_PAGE_SIZE:
            raise InvalidArgument(
                f"{limit!r} is out of range; use 1 to {MAX_CHANGES_PAGE_SIZE}", field="page_size"
            )
        # the page's events first, then their entries: the join stays as small as the page
        rows = self._read(
            f'SELECT {_ENTRY_COLUMNS}, ev.seq, ev.event, ev."at" FROM (SELECT seq, entry_id, '
            'event, "at" FROM events WHERE seq > ? ORDER BY seq LIMIT ?) AS ev '
            "JOIN entries USING (entry_id) ORDER BY ev.seq",
            [cursor, limit + 1],
        )
        found: list[FeedEvent] = []
        size = 0
        for row in rows[:limit]:
            stored = _new_entry(row)
            event = ListChange(row[13])
            at = row[14].replace(tzinfo=UTC)
            withheld = stored_entry_withheld(
                stored, catalogue=self._catalogue, department=self.department
            )
            # the stored reason fits the list's colour: _check_withdraw_reasons at start
            reason = WithdrawReason(row[10]) if event is ListChange.WITHDRAWN and row[10] else None
            if withheld:
                # the event keeps its place, so the feed moves on past it; none of the entry's
                # fields go out (a text may hold a full resident id), only its id when that
                # passes its own checks, so that a withdrawal closes the entry it names
                entry_id = withheld_entry_id(stored.entry_id)
                size += _FEED_EVENT_OVERHEAD + len(entry_id)
                feed_event = FeedEvent(row[12], None, event, at, reason, withheld, entry_id)
            else:
                entry = self._public(stored, masked=True)
                # the event names its entry's id beside the entry: counted twice
                size += _feed_bytes(entry) + len(entry.entry_id)
                feed_event = FeedEvent(row[12], entry, event, at, reason, "", entry.entry_id)
            if found and size > MAX_FEED_PAGE_BYTES:
                # texts may be long (up to ~5 KB an entry in Chinese): a page stays well below
                # gRPC's 4 MiB message limit at every hop, and the rest comes on the next page
                return found, True
            found.append(feed_event)
        return found, len(rows) > limit

    def _read(self, sql: str, parameters: Sequence[object]) -> list[tuple[Any, ...]]:
        with self._lock:
            cursor = self._conn.cursor()
        try:
            return cursor.execute(sql, parameters).fetchall()
        finally:
            cursor.close()

    def _entries_where(
        self, condition: str, parameters: Sequence[object], *, today: date
    ) -> list[ListEntry]:
        rows = self._read(
            f"SELECT {_ENTRY_COLUMNS} FROM entries WHERE {condition} "
            "ORDER BY window_start, entry_id",
            parameters,
        )
        if not rows:
            return []
        events: dict[str, list[ListEvent]] = {row[0]: [] for row in rows}
        # 'published' sorts before 'withdrawn': the order they happen in when both share a time
        for entry_id, at, event, actor, detail in self._read(
            'SELECT entry_id, "at", event, actor, detail FROM events WHERE entry_id IN '
            '(SELECT unnest(?::VARCHAR[])) ORDER BY entry_id, "at", event',
            [list(events)],
        ):
            events[entry_id].append(
                ListEvent(at=at.replace(tzinfo=UTC), event=event, actor=actor, detail=detail)
            )
        found: list[ListEntry] = []
        for row in rows:
            entry = _new_entry(row)
            withdrawn_at, reason, reference = row[9], row[10], row[11]
            found.append(
                ListEntry(
                    entry=self._public(entry, masked=False),
                    status=status_of(
                        entry.window_start,
                        entry.window_end,
                        withdrawn=withdrawn_at is not None,
                        today=today,
                    ),
                    withdraw_reason=WithdrawReason(reason) if reason is not None else None,
                    withdraw_reference=reference or "",
                    events=tuple(events[entry.entry_id]),
                )
            )
        return found

    def _public(self, entry: NewEntry, *, masked: bool) -> PublicEntry:
        list_type = self._types[entry.list]
        return PublicEntry(
            entry_id=entry.entry_id,
            department=self.department,
            list=entry.list,
            colour=list_type.colour,
            subject_kind=entry.subject_kind,
            subject_id=(
                public_subject(entry.subject_kind, entry.subject_id) if masked else entry.subject_id
            ),
            subject_name=entry.subject_name,
            legal_basis=entry.legal_basis,
            reason=entry.reason,
            window_start=entry.window_start,
            window_end=entry.window_end,
            facilitation_class=(
                list_type.facilitation_class if list_type.colour is ListColour.RED else None
            ),
        )

    # -- lifetime ---------------------------------------------------------------------------------

    def close(self) -> None:
        # closing checkpoints, which may write
        with self._lock, _private_files():
            self._conn.close()

    def __enter__(self) -> ListStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _feed_bytes(entry: PublicEntry) -> int:
    """An upper bound of what one event of `entry` takes on the wire: its texts in UTF-8 and
    a generous allowance for tags, lengths, dates, enums, the time and the cursor."""
    texts = (
        entry.entry_id,
        entry.department,
        entry.list,
        entry.subject_id,
        entry.subject_name,
        entry.legal_basis,
        entry.reason,
        entry.facilitation_class or "",
    )
    return _FEED_EVENT_OVERHEAD + sum(len(t.encode("utf-8")) for t in texts)


def _new_entry(row: Sequence[Any]) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(row[0]),
        list=row[1],
        subject_kind=SubjectKind(row[2]),
        subject_id=SubjectId(row[3]),
        subject_name=row[4],
        legal_basis=row[5],
        reason=row[6],
        window_start=row[7],
        window_end=row[8],
    )


def _check_entry_id(entry_id: str) -> EntryId:
    if not isinstance(entry_id, str) or not ENTRY_ID_PATTERN.fullmatch(entry_id):
        raise InvalidArgument(
            f"{str(entry_id)[:70]!r} is not an entry id: 1 to 64 letters, digits or . _ : / -, "
            "starting with a letter or digit",
            field="entry_id",
        )
    return EntryId(entry_id)


def _wrong_reason(list_type: ListType, reason: WithdrawReason) -> str:
    if reason is WithdrawReason.REPAIRED:
        return (
            f"credit repair takes entries off black lists; {list_type.id} is a red list: "
            "use revoked (the honour or certification was revoked) or error"
        )
    return (
        f"revocation takes entries off red lists; {list_type.id} is a black list: use "
        "repaired (the subject completed credit repair) or error"
    )
