"""A department's list change feed: the node store's numbered events, the node's list office, and
the coordinator's checks of a node's page (honest, curious, or broken) before it forwards one."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import duckdb
import pytest

from certs import PeerRole
from coordinator.context import CoordinatorContext
from coordinator.list_changes import ListChangeFeed, check_changes
from coordinator.nodes import ListChangesAnswer, NodeFailure, NodePool
from coordinator.ratelimit import RateLimiter
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.lists import LISTS_FILE, MAX_FEED_PAGE_BYTES, SCHEMA_VERSION, FeedEvent, ListStore
from node.office import ListOffice
from osmanthus.core import ids
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import ListColour, load_catalogue
from osmanthus.core.errors import (
    ConfigError,
    CryptoError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unavailable,
)
from osmanthus.core.ids import (
    make_resident_id,
    make_uscc,
    mask_subject,
    organisation_code_check_char,
    resident_id_check_char,
)
from osmanthus.core.lists import (
    FEED_ID_PATTERN,
    MAX_CHANGE_SEQ,
    WITHHELD_BY_NODE,
    WITHHELD_OTHER,
    WITHHELD_REASONS,
    EntryId,
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    PublicEntry,
    WithdrawReason,
    change_cursor,
    changes_page_size,
    check_feed_id,
    new_feed_id,
    parse_change_cursor,
    withheld_entry_id,
)
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import (
    DepartmentId,
    KeyFingerprint,
    QueryId,
    RequesterId,
    Role,
    SubjectKind,
)
from osmanthus.core.wire.coordinator import ChangesRequest
from osmanthus.core.wire.lists import (
    CHANGE_TO_PB,
    ChangesQuery,
    EntryDraft,
    change_from_pb,
    changes_query_to_proto,
    withdraw_reason_from_pb,
)
from osmanthus.core.wire.lists import changes_query_from_proto as changes_query
from osmanthus.core.wire.lists import list_changes_page_from_proto as list_changes_page
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2, node_pb2

CATALOGUE = load_catalogue()
COURT = DepartmentId("court")
TAX = DepartmentId("tax")
TODAY = datetime.date(2026, 3, 10)
NOW = datetime.datetime(2026, 3, 10, 4, 0, tzinfo=datetime.UTC)
PERSON = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=17)
OTHER = make_resident_id(region="320506", birth=datetime.date(1975, 9, 30), sequence=3)
_IDS = [
    make_resident_id(region="110105", birth=datetime.date(1949, 12, 31), sequence=s)
    for s in range(1, 40)
]
#: resident ids ending in X and in a digit: the latter is 18 digits, a cursor's shape
ID_WITH_X = next(i for i in _IDS if i.endswith("X"))
ID_WITH_DIGIT = next(i for i in _IDS if not i.endswith("X"))
#: valid both as a credit code and as a resident id (see /osmanthus/core/syncbatch.py _credit_code)
TWOFOLD = "21638519571115301X"
#: a credit-repair decision number: in the officer's history, never in the feed
REFERENCE = "REPAIR-2026-0042"
PUB, WDR = ListChange.PUBLISHED, ListChange.WITHDRAWN
COORDINATOR = PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator")
OFFICER = PeerIdentity(role=PeerRole.OPERATOR, name="court")


def firm(n: int) -> str:
    first8 = f"F{n:07d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )


def draft(
    entry_id: str,
    subject: str = PERSON,
    *,
    kind: SubjectKind = SubjectKind.PERSON,
    start: datetime.date = TODAY,
    end: datetime.date = TODAY + datetime.timedelta(days=30),
    list_id: str = "judgement_defaulters",
) -> EntryDraft:
    return EntryDraft(
        entry_id=entry_id,
        list=list_id,
        subject_kind=kind,
        subject_id=subject,
        subject_name="Zhang San",
        legal_basis="",
        reason="failed to perform an effective judgement",
        window_start=start.isoformat(),
        window_end=end.isoformat(),
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ListStore]:
    with ListStore(tmp_path / LISTS_FILE, department=COURT, catalogue=CATALOGUE) as s:
        yield s


def publish(store: ListStore, *drafts: EntryDraft) -> None:
    store.publish(list(drafts), actor="court", today=TODAY)


def withdraw(
    store: ListStore, entry_id: str, reason: WithdrawReason = WithdrawReason.REPAIRED
) -> None:
    store.withdraw(entry_id, reason=reason, reference=REFERENCE, actor="court", today=TODAY)


def entry_of(event: FeedEvent | ListChangeEvent) -> PublicEntry:
    """The entry of an event that is not withheld."""
    assert event.entry is not None, event.withheld
    return event.entry


def feed(store: ListStore, after: int = 0, limit: int = 1000) -> list[tuple[int, str, ListChange]]:
    events, _ = store.changes_after(after, limit=limit)
    return [(e.seq, entry_of(e).entry_id, e.event) for e in events]


# --- the store ------------------------------------------------------------------------------------


def test_every_event_is_numbered_in_the_order_it_was_stored(store: ListStore) -> None:
    publish(store, draft("C-2"), draft("C-1", OTHER))
    withdraw(store, "C-2")
    publish(store, draft("C-3"))
    # a retried publication stores nothing, so it numbers nothing
    publish(store, draft("C-3"))
    withdraw(store, "C-1", WithdrawReason.ERROR)
    assert feed(store) == [
        (1, "C-2", PUB),
        (2, "C-1", PUB),
        (3, "C-2", WDR),
        (4, "C-3", PUB),
        (5, "C-1", WDR),
    ]
    assert feed(store, after=3) == [(4, "C-3", PUB), (5, "C-1", WDR)]
    assert feed(store, after=5) == []
    events, more = store.changes_after(0, limit=1000)
    assert not more
    # an entry published then withdrawn comes twice, the withdrawal with its reason only
    published, withdrawn = events[0], events[2]
    assert published.entry == withdrawn.entry
    assert (
        published.withdraw_reason is None and withdrawn.withdraw_reason is WithdrawReason.REPAIRED
    )
    assert events[4].withdraw_reason is WithdrawReason.ERROR
    assert all(e.at.tzinfo is datetime.UTC for e in events)
    assert published.at <= withdrawn.at <= datetime.datetime.now(datetime.UTC)


def test_a_refused_write_takes_no_number_and_numbers_never_repeat(store: ListStore) -> None:
    publish(store, draft("C-1"))
    with pytest.raises(InvalidArgument):
        publish(store, draft("C-2"), draft("C-1", OTHER))  # C-1 differs: nothing stored
    withdraw(store, "C-1")
    with pytest.raises(FailedPrecondition):
        withdraw(store, "C-1")
    publish(store, draft("C-2"))
    assert [seq for seq, _, _ in feed(store)] == [1, 2, 3]
    rows = store._conn.execute("SELECT count(*), count(DISTINCT seq) FROM events").fetchone()
    assert rows == (3, 3)


def test_writers_on_many_threads_never_share_a_number(store: ListStore) -> None:
    def publish_some(thread: int) -> None:
        for i in range(5):
            publish(
                store, draft(f"T{thread}-{i}", firm(10 * thread + i), kind=SubjectKind.ENTERPRISE)
            )

    workers = [threading.Thread(target=publish_some, args=(t,)) for t in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    numbered = feed(store)
    assert [seq for seq, _, _ in numbered] == list(range(1, 21))
    # each thread's publications in the order it made them
    for t in range(4):
        assert [e for _, e, _ in numbered if e.startswith(f"T{t}-")] == [
            f"T{t}-{i}" for i in range(5)
        ]


def test_the_feed_pages_and_says_whether_more_follow(store: ListStore) -> None:
    publish(store, *(draft(f"C-{i:02d}", firm(i), kind=SubjectKind.ENTERPRISE) for i in range(7)))
    seen: list[int] = []
    cursor, pages = 0, 0
    while True:
        events, more = store.changes_after(cursor, limit=3)
        pages += 1
        seen += [e.seq for e in events]
        if not more:
            break
        cursor = events[-1].seq
    assert seen == list(range(1, 8)) and pages == 3
    # exactly a page's worth left: no more after it
    assert store.changes_after(4, limit=3)[1] is False


def test_a_page_of_long_texts_stays_well_below_grpcs_message_limit(
    store: ListStore, office: ListOffice
) -> None:
    # every text at its longest, in Chinese: about 5 KB an entry on the wire
    long = [
        dataclasses.replace(
            draft(f"L-{i:03d}", firm(i), kind=SubjectKind.ENTERPRISE),
            subject_name="信" * 200,
            legal_basis="法" * 500,
            reason="失" * 1000,
        )
        for i in range(700)
    ]
    publish(store, *long)
    events, more = store.changes_after(0, limit=1000)
    assert more and 500 < len(events) < 700
    wire = list_changes_response(office.list_changes(ask(size=1000), caller=COORDINATOR))
    assert len(wire.events) == len(events) and wire.more
    # the bound is an upper one, and not a loose one
    assert 0.95 * MAX_FEED_PAGE_BYTES < wire.ByteSize() <= MAX_FEED_PAGE_BYTES < 4 << 20
    rest, more = store.changes_after(events[-1].seq, limit=1000)
    assert len(events) + len(rest) == 700 and not more


def test_the_feed_shows_published_fields_with_a_persons_id_masked_and_no_reference(
    store: ListStore,
) -> None:
    past = TODAY - datetime.timedelta(days=400)
    publish(
        store,
        draft("C-1"),
        draft("C-2", firm(1), kind=SubjectKind.ENTERPRISE),
        # withdrawn, expired and scheduled entries are in the feed: it says what happened
        draft("C-3", start=past, end=past + datetime.timedelta(days=30)),
        draft("C-4", start=TODAY + datetime.timedelta(days=3)),
    )
    withdraw(store, "C-1")
    events, _ = store.changes_after(0, limit=100)
    assert [entry_of(e).entry_id for e in events] == ["C-1", "C-2", "C-3", "C-4", "C-1"]
    person, enterprise = entry_of(events[0]), entry_of(events[1])
    assert person.subject_id == mask_subject(PERSON) != PERSON
    assert enterprise.subject_id == firm(1)
    assert (person.department, person.list, person.colour.value) == (
        "court",
        "judgement_defaulters",
        "black",
    )
    shown = repr(events)
    assert PERSON not in shown and REFERENCE not in shown
    assert REFERENCE in repr(store.entry("C-1", today=TODAY))  # the officer sees it


def test_a_red_list_event_carries_its_facilitation_class(tmp_path: Path) -> None:
    with ListStore(tmp_path / LISTS_FILE, department=TAX, catalogue=CATALOGUE) as tax:
        tax.publish(
            [draft("T-1", firm(2), kind=SubjectKind.ENTERPRISE, list_id="a_level_taxpayers")],
            actor="tax",
            today=TODAY,
        )
        tax.withdraw(
            "T-1", reason=WithdrawReason.REVOKED, reference="R-1", actor="tax", today=TODAY
        )
        events, _ = tax.changes_after(0, limit=10)
    assert [entry_of(e).facilitation_class for e in events] == ["A-level taxpayer"] * 2
    assert events[1].withdraw_reason is WithdrawReason.REVOKED


@pytest.mark.parametrize(
    "cursor",
    ["abc", "-1", "01", " 1", "1 ", "1.0", "+1", "１", "0x10", str(10**16), "9" * 20, PERSON],
)
def test_a_cursor_is_a_plain_decimal_sequence_number(cursor: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a change feed cursor") as caught:
        parse_change_cursor(cursor)
    assert caught.value.field == "after"


def test_no_cursor_reads_as_a_resident_id_and_a_message_never_quotes_one() -> None:
    # 16 digits at most: a resident id has 17 and a check character
    assert MAX_CHANGE_SEQ == 10**16 - 1 and len(str(MAX_CHANGE_SEQ)) == 16
    assert parse_change_cursor(str(MAX_CHANGE_SEQ)) == MAX_CHANGE_SEQ
    with pytest.raises(ValueError):
        change_cursor(MAX_CHANGE_SEQ + 1)
    digits_only = next(p for p in (PERSON, OTHER, ID_WITH_DIGIT) if p[-1] != "X")
    for value in (ID_WITH_X, digits_only, f"7{digits_only}"):
        with pytest.raises(InvalidArgument) as caught:
            parse_change_cursor(value)
        assert value not in str(caught.value) and digits_only not in str(caught.value)
        assert "a value that reads as a resident identity number is not a change feed cursor" in (
            str(caught.value)
        )
    with pytest.raises(InvalidArgument, match="'x1' is not a change feed cursor"):
        parse_change_cursor("x1")


def test_cursors_and_page_sizes_the_feed_takes() -> None:
    assert parse_change_cursor("") == 0
    assert parse_change_cursor("0") == 0
    assert parse_change_cursor("17") == 17
    assert parse_change_cursor(str(10**16 - 1)) == 10**16 - 1
    assert change_cursor(17) == "17"
    assert changes_page_size(0) == 500 and changes_page_size(1000) == 1000
    for size in (-1, 1001):
        with pytest.raises(InvalidArgument, match="use 1 to 1000") as caught:
            changes_page_size(size)
        assert caught.value.field == "page_size"


def test_the_store_refuses_a_bad_cursor_or_limit(store: ListStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        store.changes_after(-1, limit=10)
    assert caught.value.field == "after"
    for limit in (0, 1001):
        with pytest.raises(InvalidArgument) as caught:
            store.changes_after(0, limit=limit)
        assert caught.value.field == "page_size"


#: the list store's schema 1, as Osmanthus created it before events were numbered
SCHEMA_1 = """
CREATE TABLE meta (department VARCHAR NOT NULL, schema_version INTEGER NOT NULL);
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
CREATE TABLE events (
    entry_id VARCHAR NOT NULL,
    "at" TIMESTAMP NOT NULL,
    event VARCHAR NOT NULL CHECK (event IN ('published', 'withdrawn')),
    actor VARCHAR NOT NULL,
    detail VARCHAR NOT NULL
);
CREATE INDEX entries_subject ON entries (subject_id);
CREATE INDEX entries_list ON entries (list, entry_id);
CREATE INDEX events_entry ON events (entry_id);
"""


def _schema_1_file(path: Path) -> None:
    t1, t2, t3 = (datetime.datetime(2026, 3, d, 2, 0) for d in (1, 2, 3))
    with duckdb.connect(str(path)) as conn:
        conn.execute(SCHEMA_1)
        conn.execute("INSERT INTO meta VALUES ('court', 1)")
        for entry_id, subject, published, withdrawn in (
            ("C-b", PERSON, t1, t3),
            ("C-a", OTHER, t1, None),
            ("C-c", PERSON, t2, None),
        ):
            conn.execute(
                "INSERT INTO entries VALUES (?, 'judgement_defaulters', 'person', ?, 'Zhang San', "
                "'basis', 'reason', DATE '2026-03-01', DATE '2026-06-01', 'court', ?, ?, ?, ?)",
                [
                    entry_id,
                    subject,
                    published,
                    withdrawn,
                    "repaired" if withdrawn else None,
                    REFERENCE if withdrawn else None,
                ],
            )
        # stored out of order: numbering follows time, then entry id, then the event
        conn.execute(
            "INSERT INTO events VALUES ('C-c', ?, 'published', 'court', 'w'), "
            "('C-b', ?, 'withdrawn', 'court', 'w'), ('C-b', ?, 'published', 'court', 'w'), "
            "('C-a', ?, 'published', 'court', 'w')",
            [t2, t3, t1, t1],
        )


def test_a_schema_1_store_gets_its_events_numbered_on_open(tmp_path: Path) -> None:
    path = tmp_path / LISTS_FILE
    _schema_1_file(path)
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        assert feed(store) == [(1, "C-a", PUB), (2, "C-b", PUB), (3, "C-c", PUB), (4, "C-b", WDR)]
        events, _ = store.changes_after(3, limit=10)
        assert events[0].withdraw_reason is WithdrawReason.REPAIRED
        assert events[0].at == datetime.datetime(2026, 3, 3, 2, 0, tzinfo=datetime.UTC)
        # the history is as it was, and new events number on
        assert [e.event for e in store.entry("C-b", today=TODAY).events] == [
            "published",
            "withdrawn",
        ]
        publish(store, draft("C-d"))
        assert feed(store, after=4) == [(5, "C-d", PUB)]
        with pytest.raises(duckdb.ConstraintException):
            store._conn.execute(
                "INSERT INTO events VALUES (5, 'C-x', now(), 'published', 'a', 'd')"
            )
        feed_id = store.feed_id
    with duckdb.connect(str(path), read_only=True) as conn:
        assert conn.execute("SELECT * FROM meta").fetchall() == [("court", SCHEMA_VERSION, feed_id)]
        assert SCHEMA_VERSION == 2 and FEED_ID_PATTERN.fullmatch(feed_id)
    # and it opens as a schema-2 store from then on, the same feed
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        assert len(feed(store)) == 5 and store.feed_id == feed_id


# --- the node's list office -----------------------------------------------------------------------


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as log:
        yield log


@pytest.fixture
def office(store: ListStore, audit: AuditLog) -> ListOffice:
    return ListOffice(
        department=CATALOGUE.department(COURT), store=store, audit=audit, today=lambda: TODAY
    )


def ask(
    after: str = "", *, size: int = 0, requester: str = "sync-1", dept: str = "court"
) -> ChangesQuery:
    return ChangesQuery(department=dept, after=after, page_size=size, requester=requester)


def audit_lines(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "audit.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_office_serves_the_feed_to_the_coordinator_and_audits_for_whom(
    office: ListOffice, store: ListStore, tmp_path: Path
) -> None:
    publish(store, draft("C-1"), draft("C-2", OTHER))
    withdraw(store, "C-1")
    page = office.list_changes(ask(size=2), caller=COORDINATOR)
    assert [(e.cursor, entry_of(e).entry_id, e.event) for e in page.events] == [
        ("1", "C-1", ListChange.PUBLISHED),
        ("2", "C-2", ListChange.PUBLISHED),
    ]
    assert (page.department, page.next_cursor, page.more) == ("court", "2", True)
    last = office.list_changes(ask(page.next_cursor, size=2), caller=COORDINATOR)
    assert [(e.cursor, e.event) for e in last.events] == [("3", ListChange.WITHDRAWN)]
    assert (last.next_cursor, last.more) == ("3", False)
    # nothing new: the cursor asked comes back
    assert office.list_changes(ask("3"), caller=COORDINATOR) == ListChangesPage(
        department=COURT, events=(), next_cursor="3", more=False, feed_id=store.feed_id
    )
    assert office.list_changes(ask(""), caller=COORDINATOR).next_cursor == "3"
    feeds = [e for e in audit_lines(tmp_path) if e["purpose"] == "list_change_feed"]
    assert [e["decision"] for e in feeds] == ["allow"] * 4
    assert feeds[0]["requester"] == "coordinator:coordinator"
    assert feeds[0]["extra"] == {
        "on_behalf_of": "sync-1",
        "after": "",
        "events": 2,
        "withheld": 0,
        "next_cursor": "2",
        "feed_id": store.feed_id,
    }
    assert PERSON not in json.dumps(feeds)


def test_the_office_refuses_others_and_bad_questions(
    office: ListOffice, store: ListStore, tmp_path: Path
) -> None:
    publish(store, draft("C-1"))
    with pytest.raises(PermissionDenied, match="only the platform coordinator reads"):
        office.list_changes(ask(), caller=OFFICER)
    with pytest.raises(InvalidArgument, match="serves court's lists, not 'tax'") as caught:
        office.list_changes(ask(dept="tax"), caller=COORDINATOR)
    assert caught.value.field == "department"
    with pytest.raises(InvalidArgument) as caught:
        office.list_changes(ask(requester=""), caller=COORDINATOR)
    assert caught.value.field == "requester"
    with pytest.raises(InvalidArgument) as caught:
        office.list_changes(ask(after=PERSON + "x"), caller=COORDINATOR)
    assert caught.value.field == "after"
    with pytest.raises(InvalidArgument) as caught:
        office.list_changes(ask(size=1001), caller=COORDINATOR)
    assert caught.value.field == "page_size"
    # an empty department is this node's (the coordinator always names it)
    assert len(office.list_changes(ask(dept=""), caller=COORDINATOR).events) == 1
    denied = [
        e
        for e in audit_lines(tmp_path)
        if e["purpose"] == "list_change_feed" and e["decision"] == "deny"
    ]
    assert len(denied) == 5
    assert denied[0]["requester"] == "operator:court"
    assert PERSON not in json.dumps(denied)


def test_the_wire_form_round_trips(office: ListOffice, store: ListStore) -> None:
    publish(store, draft("C-1"))
    withdraw(store, "C-1")
    page = office.list_changes(ask(), caller=COORDINATOR)
    assert list_changes_page(list_changes_response(page)) == page
    message = node_pb2.NodeListChangesRequest(
        request=lists_pb2.ListChangesRequest(department="court", after="4", page_size=9),
        requester="sync-1",
    )
    assert changes_query(message) == ask("4", size=9)


# --- the coordinator's checks of a node's page ----------------------------------------------------


def court_page(office: ListOffice, after: str = "") -> lists_pb2.ListChangesResponse:
    """The court node's honest answer, as its servicer sends it."""
    return list_changes_response(office.list_changes(ask(after), caller=COORDINATOR))


def checked(
    message: lists_pb2.ListChangesResponse, *, after: str = "", size: int = 1000
) -> ListChangesPage:
    return check_changes(
        message, department=COURT, after=after, page_size=size, catalogue=CATALOGUE
    )


@pytest.fixture
def honest(store: ListStore, office: ListOffice) -> lists_pb2.ListChangesResponse:
    """C-1 about PERSON published then repaired, C-2 about a firm published long ago."""
    past = TODAY - datetime.timedelta(days=800)
    publish(
        store,
        draft("C-1"),
        draft("C-2", firm(3), kind=SubjectKind.ENTERPRISE, start=past, end=past),
    )
    withdraw(store, "C-1")
    return court_page(office)


def refused(message: lists_pb2.ListChangesResponse, **asked: object) -> str:
    with pytest.raises(Unavailable) as caught:
        checked(message, **asked)  # type: ignore[arg-type]
    text = caught.value.message
    assert text.startswith("court: its list change feed answer failed the coordinator's checks (")
    assert "nothing of it was forwarded" in text
    assert PERSON not in text
    return text


def test_an_honest_page_goes_on_whatever_the_windows(honest: lists_pb2.ListChangesResponse) -> None:
    page = checked(honest)
    assert [(e.cursor, entry_of(e).entry_id, e.event) for e in page.events] == [
        ("1", "C-1", ListChange.PUBLISHED),
        ("2", "C-2", ListChange.PUBLISHED),
        ("3", "C-1", ListChange.WITHDRAWN),
    ]
    assert entry_of(page.events[0]).subject_id == mask_subject(PERSON)
    assert page.events[2].withdraw_reason is WithdrawReason.REPAIRED
    assert (page.next_cursor, page.more) == ("3", False)
    assert page == list_changes_page(honest)


def test_a_full_resident_id_refuses_the_whole_page(honest: lists_pb2.ListChangesResponse) -> None:
    honest.events[2].entry.subject_id = PERSON
    assert "events[2].entry: subject_id is not a masked resident id" in refused(honest)


def withheld_only(
    message: lists_pb2.ListChangesResponse, position: int, caplog: pytest.LogCaptureFixture
) -> str:
    """The coordinator forwards the page with event `position` withheld; what it says."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coordinator.list_changes"):
        page = checked(message)
    assert [e.cursor for e in page.events] == [e.cursor for e in message.events]
    event = page.events[position]
    sent = message.events[position]
    assert event.entry is None and event.withheld
    assert event.event is change_from_pb(sent.event)
    # a withdrawal keeps its reason, and the event its entry id when that passes its checks
    assert event.withdraw_reason is withdraw_reason_from_pb(sent.withdraw_reason)
    sent_id = sent.entry.entry_id if sent.HasField("entry") else sent.entry_id
    assert event.entry_id == (sent_id if withheld_entry_id(sent_id) else "")
    assert [e.withheld for e in page.events if e is not event] == [""] * (len(page.events) - 1)
    # none of the entry's fields go on, and the log names the department and cursor only
    wire = list_changes_response(page)
    assert not wire.events[position].HasField("entry")
    assert wire.events[position].withheld == event.withheld
    (record,) = caplog.records
    assert record.getMessage().startswith(f"court: list change event {event.cursor} forwarded")
    for value in (PERSON, OTHER, "owes", "Acme"):
        assert value not in record.getMessage() and value.encode() not in wire.SerializeToString()
    return event.withheld


@pytest.mark.parametrize("field", ["reason", "subject_name", "legal_basis"])
def test_a_resident_id_in_any_text_withholds_that_event_only(
    honest: lists_pb2.ListChangesResponse, field: str, caplog: pytest.LogCaptureFixture
) -> None:
    setattr(honest.events[1].entry, field, f"owner {OTHER} owes")
    assert withheld_only(honest, 1, caplog) == "a text field reads as a resident identity number"


def test_content_the_catalogue_no_longer_takes_withholds_the_event(
    honest: lists_pb2.ListChangesResponse, caplog: pytest.LogCaptureFixture
) -> None:
    withdrawal = honest.events[2]
    withdrawal.entry.list = "serious_dishonest"
    assert withheld_only(honest, 2, caplog) == (
        "the list is not one of the department's lists in the catalogue"
    )
    withdrawal.entry.list = "judgement_defaulters"
    withdrawal.entry.colour = lists_pb2.LIST_COLOUR_RED
    assert withheld_only(honest, 2, caplog) == (
        "the list's colour in the catalogue is not the entry's"
    )
    withdrawal.entry.colour = lists_pb2.LIST_COLOUR_BLACK
    withdrawal.entry.window_end = "2036-03-10"
    assert withheld_only(honest, 2, caplog) == "the window is longer than the list allows"
    withdrawal.entry.window_end = honest.events[0].entry.window_end
    withdrawal.entry.subject_name = " Zhang San"
    assert withheld_only(honest, 2, caplog) == (
        "a text field is empty, too long, padded with spaces or holds control characters"
    )
    withdrawal.entry.subject_name = "Zhang San"
    withdrawal.entry.entry_id = withdrawal.entry_id = ID_WITH_DIGIT
    assert withheld_only(honest, 2, caplog) == "the entry id reads as a resident identity number"
    firm_event = honest.events[1].entry
    firm_event.subject_id = TWOFOLD
    withdrawal.entry.entry_id = withdrawal.entry_id = "C-1"
    assert withheld_only(honest, 1, caplog) == (
        "the enterprise's credit code also reads as a resident identity number"
    )


def test_a_list_no_longer_taking_the_kind_withholds_the_event(
    store: ListStore, office: ListOffice, caplog: pytest.LogCaptureFixture
) -> None:
    publish(store, draft("C-1", firm(5), kind=SubjectKind.ENTERPRISE), draft("C-2"))
    page = court_page(office)
    persons_only = dataclasses.replace(
        CATALOGUE,
        lists=tuple(
            dataclasses.replace(t, subject_kinds=frozenset({SubjectKind.PERSON}))
            if t.id == "judgement_defaulters"
            else t
            for t in CATALOGUE.lists
        ),
    )
    forwarded = check_changes(
        page, department=COURT, after="", page_size=10, catalogue=persons_only
    )
    assert [e.withheld for e in forwarded.events] == ["the list no longer takes enterprises", ""]


def test_a_frame_fault_or_a_leak_still_refuses_the_whole_page(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    honest.events[1].entry.department = "samr"
    assert "events[1].entry: department is not the answering node's department" in refused(honest)
    honest.events[1].entry.department = "court"
    honest.events[0].entry.window_end = "2020-01-01"
    assert "events[0].entry: window_end is before window_start" in refused(honest)
    honest.events[0].entry.window_end = honest.events[2].entry.window_end
    # a full id beside a content fault: refused as the leak it is, not withheld
    honest.events[0].entry.subject_id = PERSON
    honest.events[0].entry.reason = f"owner {OTHER} owes"
    assert "events[0].entry: subject_id is not a masked resident id" in refused(honest)
    assert OTHER not in refused(honest)


@pytest.mark.parametrize(
    ("cursors", "after", "problem"),
    [
        (["1", "1", "3"], "", "events[1].cursor does not come after the previous event's"),
        (["1", "3", "2"], "", "events[2].cursor does not come after the previous event's"),
        (["1", "2", "3"], "1", "events[0].cursor does not come after the previous event's"),
        (["1", "02", "3"], "", "events[1].cursor is not a change feed cursor"),
        (["1", "", "3"], "", "events[1].cursor is empty"),
    ],
)
def test_cursors_must_increase_past_the_one_asked(
    honest: lists_pb2.ListChangesResponse, cursors: list[str], after: str, problem: str
) -> None:
    for event, cursor in zip(honest.events, cursors, strict=True):
        event.cursor = cursor
    assert problem in refused(honest, after=after)


def test_events_must_be_publications_or_withdrawals_with_fitting_reasons(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    honest.events[0].event = lists_pb2.LIST_CHANGE_KIND_UNSPECIFIED
    assert "events[0].event is not published or withdrawn" in refused(honest)
    honest.events[0].event = CHANGE_TO_PB[ListChange.PUBLISHED]
    honest.events[0].withdraw_reason = lists_pb2.WITHDRAW_REASON_ERROR
    assert "events[0].withdraw_reason comes with a publication" in refused(honest)
    honest.events[0].withdraw_reason = lists_pb2.WITHDRAW_REASON_UNSPECIFIED
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_UNSPECIFIED
    assert "events[2].withdraw_reason is missing from a withdrawal" in refused(honest)
    # revocation takes entries off red lists; judgement_defaulters is black
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_REVOKED
    assert "events[2].withdraw_reason revoked does not take an entry off a black list" in refused(
        honest
    )
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_REPAIRED
    honest.events[2].event = CHANGE_TO_PB[ListChange.PUBLISHED]
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_UNSPECIFIED
    assert "events[2] repeats an earlier event of the page" in refused(honest)
    honest.events[2].event = CHANGE_TO_PB[ListChange.WITHDRAWN]
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_REPAIRED
    honest.events[2].ClearField("at")
    assert "events[2].at is missing" in refused(honest)


def test_the_page_must_fit_what_was_asked(honest: lists_pb2.ListChangesResponse) -> None:
    assert "3 events for a page of 2" in refused(honest, size=2)
    honest.next_cursor = "2"
    assert "next_cursor is not the last event's cursor" in refused(honest)
    honest.next_cursor = "3"
    honest.department = "tax"
    assert "department is not the department asked" in refused(honest)
    empty = lists_pb2.ListChangesResponse(
        department="court", next_cursor="7", more=True, feed_id=honest.feed_id
    )
    assert "more says further events follow, but the page holds none" in refused(empty, after="7")
    empty.more = False
    assert checked(empty, after="7") == ListChangesPage(COURT, (), "7", False, honest.feed_id)


def test_fields_a_node_adds_do_not_go_on(honest: lists_pb2.ListChangesResponse) -> None:
    # a node may append fields the coordinator's schema does not know: field 99 of the event and
    # of its entry, holding a full resident id and the withdrawal's reference
    smuggled = b"".join(
        b"\x9a\x06" + bytes([len(v)]) + v for v in (PERSON.encode(), REFERENCE.encode())
    )
    event = lists_pb2.ListChange.FromString(honest.events[2].SerializeToString() + smuggled)
    event.entry.MergeFromString(smuggled)
    honest.events[2].CopyFrom(event)
    assert PERSON.encode() in honest.SerializeToString()
    forwarded = list_changes_response(checked(honest)).SerializeToString()
    assert PERSON.encode() not in forwarded and REFERENCE.encode() not in forwarded


# --- the coordinator's feed, against a node answering from a real store ---------------------------


class StoreNode:
    """The court's node as the coordinator's pool reaches it: its real list office answering
    as its servicer does (without the network); `tamper` plays a node altering its answer."""

    def __init__(
        self,
        office: ListOffice,
        *,
        tamper: Callable[[lists_pb2.ListChangesResponse], None] | None = None,
        down: bool = False,
    ) -> None:
        self.departments = frozenset({COURT, DepartmentId("tax")})
        self.asked: list[node_pb2.NodeListChangesRequest] = []
        self._office = office
        self._tamper = tamper
        self._down = down

    def list_changes(
        self,
        department: DepartmentId,
        query: ChangesQuery,
        *,
        deadline_s: float,
    ) -> ListChangesAnswer | NodeFailure:
        # on the wire, as the pool sends it and the node's servicer reads it
        request = changes_query_to_proto(query)
        self.asked.append(request)
        if self._down or department != COURT:
            return NodeFailure(department, "unavailable: node down, unreachable or failed the TLS")
        message = list_changes_response(
            self._office.list_changes(changes_query(request), caller=COORDINATOR)
        )
        if self._tamper is not None:
            self._tamper(message)
        return ListChangesAnswer(DepartmentId(message.department), message)


def claims(requester: str, role: Role) -> TokenClaims:
    return TokenClaims(
        requester=RequesterId(requester),
        role=role,
        purposes=frozenset(),
        key_fingerprint=KeyFingerprint("0" * 64),
        jti=requester,
        issued_at=NOW,
        not_before=NOW,
        expires_at=NOW + datetime.timedelta(hours=1),
        single_use=False,
        issuer="test",
        audience="test",
    )


def coordinator_feed(
    node: StoreNode, audit: AuditLog, policy: Path = DEFAULT_CENTRAL_POLICY
) -> ListChangeFeed:
    return ListChangeFeed(
        CoordinatorContext(
            catalogue=CATALOGUE,
            nodes=cast(NodePool, node),
            policy=ReloadablePolicy.from_file(policy),
            audit=audit,
            rate_limiter=RateLimiter(),
            deadline_s=5.0,
            clock=lambda: NOW,
        )
    )


def read(
    lists: ListChangeFeed,
    department: str = "court",
    after: str = "",
    *,
    size: int = 0,
    requester: str = "sync-1",
    role: Role = Role.SYNC_JOB,
) -> ListChangesPage:
    return lists.read(
        QueryId("q_feed"),
        ChangesRequest(department=department, after=after, page_size=size),
        authenticate=lambda: claims(requester, role),
    )


@pytest.fixture
def coordinator_audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(path=tmp_path / "coordinator-audit.jsonl", salt=os.urandom(32)) as log:
        yield log


def coordinator_lines(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "coordinator-audit.jsonl").read_text("utf-8")
    return [json.loads(line) for line in text.splitlines()]


def test_the_sync_job_pages_through_a_departments_feed(
    office: ListOffice, store: ListStore, coordinator_audit: AuditLog, tmp_path: Path
) -> None:
    publish(store, *(draft(f"C-{i}", firm(i), kind=SubjectKind.ENTERPRISE) for i in range(5)))
    node = StoreNode(office)
    lists = coordinator_feed(node, coordinator_audit)
    first = read(lists, size=3)
    assert [e.cursor for e in first.events] == ["1", "2", "3"] and first.more
    rest = read(lists, after=first.next_cursor, size=3)
    assert [e.cursor for e in rest.events] == ["4", "5"] and not rest.more
    withdraw(store, "C-0", WithdrawReason.ERROR)
    (event,) = read(lists, after=rest.next_cursor).events
    assert (event.cursor, entry_of(event).entry_id, event.event) == (
        "6",
        "C-0",
        ListChange.WITHDRAWN,
    )
    # the coordinator asks for the job: the node's audit names it
    assert [r.requester for r in node.asked] == ["sync-1"] * 3
    assert [r.request.after for r in node.asked] == ["", "3", "5"]
    entries = [e for e in coordinator_lines(tmp_path) if e["shape"] == "list_changes"]
    assert [e["decision"] for e in entries] == ["allow"] * 3
    assert entries[0]["requester"] == "sync-1"
    assert entries[0]["extra"] == {
        "department": "court",
        "after": "",
        "events": 3,
        "withheld": 0,
        "next_cursor": "3",
        "feed_id": store.feed_id,
    }


@pytest.mark.parametrize("role", [r for r in Role if r is not Role.SYNC_JOB])
def test_only_the_sync_job_reads_the_feed(
    office: ListOffice, coordinator_audit: AuditLog, role: Role
) -> None:
    node = StoreNode(office)
    expected = (
        "denied: forbidden by central-statistics-office-only"
        if role is Role.STATISTICS_OFFICE
        else 'denied: no policy permits Action::"ReadListChanges"'
    )
    with pytest.raises(PermissionDenied, match=re.escape(f"central policy: {expected}")):
        read(coordinator_feed(node, coordinator_audit), requester="someone", role=role)
    assert node.asked == []


def test_the_department_must_publish_lists(office: ListOffice, coordinator_audit: AuditLog) -> None:
    lists = coordinator_feed(StoreNode(office), coordinator_audit)
    for department, problem in (
        ("psb", "psb publishes no red or black list"),
        ("nowhere", "'nowhere' is not a department of the catalogue"),
        ("", "name the department whose list changes to read"),
    ):
        with pytest.raises(InvalidArgument, match=problem) as caught:
            read(lists, department)
        assert caught.value.field == "department"
    with pytest.raises(InvalidArgument) as caught:
        read(lists, after="x")
    assert caught.value.field == "after"


def test_a_department_down_or_unregistered_is_unavailable_and_costs_nothing(
    office: ListOffice, store: ListStore, coordinator_audit: AuditLog, tmp_path: Path
) -> None:
    publish(store, draft("C-1"))
    source = DEFAULT_CENTRAL_POLICY.read_text("utf-8")
    one = source.replace(
        '@id("central-list-changes")\n@rate_limit("600/minute")',
        '@id("central-list-changes")\n@rate_limit("1/minute")',
    )
    assert one != source
    policy = tmp_path / "central.cedar"
    policy.write_text(one, "utf-8")
    down = coordinator_feed(StoreNode(office, down=True), coordinator_audit, policy)
    for _ in range(2):
        with pytest.raises(
            Unavailable, match=r"^court, asked for its list changes: unavailable"
        ) as caught:
            read(down)
        assert caught.value.retryable
    with pytest.raises(Unavailable, match="no node registered for samr"):
        read(down, "samr")
    # refused pages were given back to the limit; a forwarded one counts
    up = coordinator_feed(StoreNode(office), coordinator_audit, policy)
    assert len(read(up).events) == 1
    with pytest.raises(RateLimited):
        read(up)


def test_a_curious_node_gets_nothing_forwarded(
    office: ListOffice, store: ListStore, coordinator_audit: AuditLog, tmp_path: Path
) -> None:
    publish(store, draft("C-1"), draft("C-2", OTHER))

    def leak(message: lists_pb2.ListChangesResponse) -> None:
        message.events[1].entry.subject_id = OTHER

    with pytest.raises(
        Unavailable, match=r"events\[1\]\.entry: subject_id is not a masked"
    ) as caught:
        read(coordinator_feed(StoreNode(office, tamper=leak), coordinator_audit))
    assert OTHER not in caught.value.message
    text = (tmp_path / "coordinator-audit.jsonl").read_text("utf-8")
    assert OTHER not in text and PERSON not in text
    (denied,) = [json.loads(line) for line in text.splitlines()]
    assert denied["decision"] == "deny" and "court" in denied["reason"]


def test_the_feed_carries_the_public_querys_entry_message_and_no_reference() -> None:
    # one published shape for the public query and the feed; nowhere for a withdraw reference
    fields = {f.name for f in lists_pb2.ListChange.DESCRIPTOR.fields}
    assert fields == {"cursor", "entry", "event", "at", "withdraw_reason", "withheld", "entry_id"}
    entry = lists_pb2.ListChange.DESCRIPTOR.fields_by_name["entry"].message_type
    assert entry is lists_pb2.PublicEntry.DESCRIPTOR


# --- the feed's identity --------------------------------------------------------------------------


def test_a_store_names_its_feed_for_life_and_a_new_store_starts_another(tmp_path: Path) -> None:
    path = tmp_path / LISTS_FILE
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as first:
        feed_id = first.feed_id
        publish(first, draft("C-1"))
    assert FEED_ID_PATTERN.fullmatch(feed_id) and check_feed_id(feed_id) == feed_id
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as again:
        assert again.feed_id == feed_id
    # the store lost and made again: its events number from 1 again, in another feed
    for stale in tmp_path.glob(LISTS_FILE + "*"):
        stale.unlink()
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as remade:
        publish(remade, draft("C-2"))
        assert feed(remade) == [(1, "C-2", PUB)]
        assert remade.feed_id != feed_id and FEED_ID_PATTERN.fullmatch(remade.feed_id)
    assert len({new_feed_id() for _ in range(100)}) == 100


@pytest.mark.parametrize("damaged", ["", "short", "x" * 21 + "!", ID_WITH_DIGIT + "abcd"])
def test_a_damaged_feed_id_stops_the_store_from_opening(tmp_path: Path, damaged: str) -> None:
    path = tmp_path / LISTS_FILE
    ListStore(path, department=COURT, catalogue=CATALOGUE).close()
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE meta SET feed_id = ?", [damaged])
    with pytest.raises(ConfigError, match="the list store's feed id is damaged"):
        ListStore(path, department=COURT, catalogue=CATALOGUE)


def test_the_coordinator_forwards_the_feed_id_and_refuses_a_page_without_a_plausible_one(
    honest: lists_pb2.ListChangesResponse, store: ListStore
) -> None:
    assert honest.feed_id == store.feed_id
    assert checked(honest).feed_id == store.feed_id
    assert list_changes_response(checked(honest)).feed_id == store.feed_id
    for bad in ("", "not a feed id", store.feed_id + "A", ID_WITH_DIGIT + "abcd"):
        honest.feed_id = bad
        text = refused(honest)
        assert "(feed_id is not a feed id)" in text and ID_WITH_DIGIT not in text


# --- the 1 to 2 migration -------------------------------------------------------------------------


def _shape(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """What a list store file is made of, without its rows."""
    with duckdb.connect(str(path), read_only=True) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
                "column_default FROM information_schema.columns ORDER BY ALL"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT table_name, constraint_type, constraint_text, constraint_column_names "
                "FROM duckdb_constraints() ORDER BY ALL"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT table_name, index_name, is_unique, sql FROM duckdb_indexes() ORDER BY ALL"
            ).fetchall(),
            "tables": conn.execute(
                "SELECT table_name, sql FROM duckdb_tables() ORDER BY ALL"
            ).fetchall(),
            "meta": conn.execute("SELECT department, schema_version FROM meta").fetchall(),
        }


def test_a_migrated_store_is_what_a_new_schema_2_store_is(tmp_path: Path) -> None:
    migrated, fresh = tmp_path / "migrated.duckdb", tmp_path / "fresh.duckdb"
    _schema_1_file(migrated)
    ListStore(migrated, department=COURT, catalogue=CATALOGUE).close()
    ListStore(fresh, department=COURT, catalogue=CATALOGUE).close()
    assert _shape(migrated) == _shape(fresh)
    assert {c[1] for c in _shape(fresh)["columns"] if c[0] == "meta"} == {
        "department",
        "schema_version",
        "feed_id",
    }


def test_the_migration_numbers_a_withdrawal_after_its_publication(tmp_path: Path) -> None:
    path = tmp_path / LISTS_FILE
    t1, t2, t3 = (datetime.datetime(2026, 3, 1, 2, 0, s) for s in (0, 1, 2))
    with duckdb.connect(str(path)) as conn:
        conn.execute(SCHEMA_1)
        conn.execute("INSERT INTO meta VALUES ('court', 1)")
        for entry_id, published, withdrawn in (
            ("C-a", t1, t3),
            # schema 1 took a withdrawal's time before the writer's lock: C-z's withdrawal
            # has a time before its publication's, which waited for the lock with a later one
            ("C-z", t3, t2),
            ("C-m", t3, None),
        ):
            conn.execute(
                "INSERT INTO entries VALUES (?, 'judgement_defaulters', 'person', ?, 'Zhang San', "
                "'basis', 'reason', DATE '2026-03-01', DATE '2026-06-01', 'court', ?, ?, ?, ?)",
                [
                    entry_id,
                    PERSON,
                    published,
                    withdrawn,
                    "repaired" if withdrawn else None,
                    REFERENCE if withdrawn else None,
                ],
            )
            conn.execute(
                "INSERT INTO events VALUES (?, ?, 'published', 'court', 'w')", [entry_id, published]
            )
            if withdrawn:
                conn.execute(
                    "INSERT INTO events VALUES (?, ?, 'withdrawn', 'court', 'r')",
                    [entry_id, withdrawn],
                )
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        # by time (a withdrawal's at least its publication's), published before withdrawn,
        # then entry id
        assert feed(store) == [
            (1, "C-a", PUB),
            (2, "C-m", PUB),
            (3, "C-z", PUB),
            (4, "C-a", WDR),
            (5, "C-z", WDR),
        ]
        # the times stay as they were stored
        events, _ = store.changes_after(0, limit=10)
        assert events[4].at == t2.replace(tzinfo=datetime.UTC)


def test_event_times_follow_the_feed_order_whatever_the_writers(store: ListStore) -> None:
    published: list[str] = []
    lock = threading.Lock()
    done = threading.Event()

    def publisher(thread: int) -> None:
        for i in range(30):
            entry_id = f"P{thread}-{i}"
            publish(store, draft(entry_id, firm(100 * thread + i), kind=SubjectKind.ENTERPRISE))
            with lock:
                published.append(entry_id)

    def withdrawer() -> None:
        while not done.is_set() or published:
            with lock:
                entry_id = published.pop() if published else None
            if entry_id is not None:
                withdraw(store, entry_id, WithdrawReason.ERROR)

    publishers = [threading.Thread(target=publisher, args=(t,)) for t in range(3)]
    withdrawers = [threading.Thread(target=withdrawer) for _ in range(2)]
    for worker in publishers + withdrawers:
        worker.start()
    for worker in publishers:
        worker.join()
    done.set()
    for worker in withdrawers:
        worker.join()
    events, more = store.changes_after(0, limit=1000)
    assert len(events) == 180 and not more
    assert [e.seq for e in events] == list(range(1, 181))
    times = [e.at for e in events]
    assert times == sorted(times)
    back = store._conn.execute(
        "SELECT count(*) FROM entries WHERE withdrawn_at < published_at"
    ).fetchone()
    assert back == (0,)


# --- entries a publication would refuse today: withheld by the node -------------------------------


def _stored_as_before(store: ListStore, entry_id: str, **changes: object) -> None:
    """An entry stored as an older node stored it, before today's checks refused it."""
    (entry,) = store.validate([draft("C-template")], today=TODAY)
    fields = {"entry_id": entry_id, **changes}
    store._insert(
        [dataclasses.replace(entry, **fields)],  # type: ignore[arg-type]
        at=datetime.datetime(2026, 3, 10, 1, 0),
        actor="court",
    )


def test_the_node_serves_an_entry_failing_todays_checks_withheld(
    store: ListStore, office: ListOffice, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(store, draft("C-1"))
    _stored_as_before(store, ID_WITH_DIGIT)  # an entry id that reads as a resident id
    _stored_as_before(store, "C-3", reason=f"owner {OTHER} owes")
    _stored_as_before(store, "C-4", subject_kind=SubjectKind.ENTERPRISE, subject_id=TWOFOLD)
    withdraw(store, ID_WITH_DIGIT)
    publish(store, draft("C-5"))
    with caplog.at_level(logging.WARNING, logger="node.office"):
        page = office.list_changes(ask(), caller=COORDINATOR)
    assert [(e.cursor, e.event, e.withheld) for e in page.events] == [
        ("1", PUB, ""),
        ("2", PUB, "the entry id reads as a resident identity number"),
        ("3", PUB, "a text field reads as a resident identity number"),
        ("4", PUB, "the enterprise's credit code also reads as a resident identity number"),
        ("5", WDR, "the entry id reads as a resident identity number"),
        ("6", PUB, ""),
    ]
    for event in page.events[1:5]:
        assert event.entry is None
    # none of a withheld entry's fields, but its id when that passes its checks, and a
    # withdrawal's reason: the sync job closes the entry a withdrawal names
    assert [(e.entry_id, e.withdraw_reason) for e in page.events] == [
        ("C-1", None),
        ("", None),
        ("C-3", None),
        ("C-4", None),
        ("", WithdrawReason.REPAIRED),
        ("C-5", None),
    ]
    assert page.events[0].entry is not None and page.events[5].entry is not None
    wire = list_changes_response(page).SerializeToString()
    for value in (ID_WITH_DIGIT, OTHER, TWOFOLD, PERSON, REFERENCE):
        assert value.encode() not in wire
    logged = [r.getMessage() for r in caplog.records]
    assert logged[0] == (
        "court: list change event 2 served withheld: the entry id reads as a resident identity "
        "number"
    )
    assert len(logged) == 4 and not any(v in "".join(logged) for v in (ID_WITH_DIGIT, OTHER))
    (last,) = [e for e in audit_lines(tmp_path) if e["purpose"] == "list_change_feed"]
    assert last["extra"]["withheld"] == 4  # type: ignore[index]


def test_a_stored_entry_the_catalogue_now_refuses_is_withheld_and_the_feed_goes_on(
    tmp_path: Path, coordinator_audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    """The review's stuck feed: an entry stored before a check, then entries after it."""
    path = tmp_path / LISTS_FILE
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        publish(store, draft("C-1"))
        publish(store, draft("C-long", end=TODAY + datetime.timedelta(days=1500)))
        _stored_as_before(store, ID_WITH_X)
        publish(store, draft("C-3"), draft("C-4"))
    # the catalogue shortens the list's windows; older entries keep theirs
    shorter = dataclasses.replace(
        CATALOGUE,
        lists=tuple(
            dataclasses.replace(t, max_window_days=1098) if t.id == "judgement_defaulters" else t
            for t in CATALOGUE.lists
        ),
    )
    with caplog.at_level(logging.WARNING, logger="node.lists"):
        store = ListStore(path, department=COURT, catalogue=shorter)
    # at start the node says how many entries go out withheld, and why, without values
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "2 list entries fail a publication's checks today" in warning
    assert "1 because the window is longer than the list allows" in warning
    assert "1 because the entry id reads as a resident identity number" in warning
    assert ID_WITH_X not in warning
    with store, AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as audit:
        office = ListOffice(
            department=shorter.department(COURT), store=store, audit=audit, today=lambda: TODAY
        )
        lists = coordinator_feed(StoreNode(office), coordinator_audit)
        cursor, seen = "", []
        while True:
            page = read(lists, after=cursor, size=1)
            seen += [(e.entry.entry_id if e.entry else e.withheld) for e in page.events]
            cursor = page.next_cursor
            if not page.more:
                break
    assert seen == [
        "C-1",
        "the window is longer than the list allows",
        "the entry id reads as a resident identity number",
        "C-3",
        "C-4",
    ]
    assert ID_WITH_X not in (tmp_path / "coordinator-audit.jsonl").read_text("utf-8")
    assert ID_WITH_X not in (tmp_path / "audit.jsonl").read_text("utf-8")


def test_a_number_that_reads_as_a_resident_id_from_a_later_day_is_withheld_from_then(
    store: ListStore, office: ListOffice, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The review's time_dependent_id: a birth date ahead does not count until it comes."""
    ahead = ids._china_today() + datetime.timedelta(days=5)
    first17 = f"320505{ahead:%Y%m%d}001"
    number = first17 + resident_id_check_char(first17)
    publish(store, dataclasses.replace(draft("C-1"), reason=f"court case no. {number}"))
    assert [e.withheld for e in office.list_changes(ask(), caller=COORDINATOR).events] == [""]
    monkeypatch.setattr(ids, "_china_today", lambda: ahead)
    page = office.list_changes(ask(), caller=COORDINATOR)
    assert [e.withheld for e in page.events] == ["a text field reads as a resident identity number"]
    assert number.encode() not in list_changes_response(page).SerializeToString()


def test_a_store_with_nothing_to_withhold_opens_without_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / LISTS_FILE
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        # 17 digits and more in a text, but no resident id: looked at, and found fine
        publish(store, dataclasses.replace(draft("C-1"), reason="case 12345678901234567890"))
    with caplog.at_level(logging.WARNING, logger="node.lists"):
        ListStore(path, department=COURT, catalogue=CATALOGUE).close()
    assert caplog.records == []


# --- withheld events from the node, at the coordinator --------------------------------------------


def _node_withheld(message: lists_pb2.ListChangesResponse, position: int, words: str) -> None:
    """Event `position` as a node withholds it: no entry, its id and a withdrawal's reason."""
    event = message.events[position]
    assert not event.HasField("entry") or event.entry_id == event.entry.entry_id
    event.ClearField("entry")
    event.withheld = words


def test_the_coordinator_forwards_a_nodes_withheld_event_in_known_words_only(
    honest: lists_pb2.ListChangesResponse, caplog: pytest.LogCaptureFixture
) -> None:
    _node_withheld(honest, 2, "the window is longer than the list allows")
    assert withheld_only(honest, 2, caplog) == "the window is longer than the list allows"
    assert "the window is longer than the list allows" in WITHHELD_REASONS
    # words the coordinator does not know (a name, an id, anything) are not forwarded
    _node_withheld(honest, 2, f"Zhang San {OTHER} owes")
    assert withheld_only(honest, 2, caplog) == WITHHELD_BY_NODE


def test_a_withheld_event_carrying_anything_of_its_entry_refuses_the_page(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    honest.events[2].withheld = "a text field reads as a resident identity number"
    assert "events[2] carries its entry and says it is withheld" in refused(honest)
    honest.events[2].ClearField("entry")
    honest.events[2].withheld = ""
    assert "events[2].entry is missing" in refused(honest)


# --- values that read as resident ids in the request: in no message, no audit log -----------------


def test_no_resident_id_a_requester_sends_reaches_a_message_or_an_audit_log(
    office: ListOffice, store: ListStore, coordinator_audit: AuditLog, tmp_path: Path
) -> None:
    """The review's repro_audit_echo: any requester, the feed's request fields."""
    publish(store, draft("C-1"))
    lists = coordinator_feed(StoreNode(office), coordinator_audit)
    asked = [
        {"after": ID_WITH_X, "role": Role.BANK},
        {"department": ID_WITH_DIGIT, "role": Role.BANK},
        {"after": ID_WITH_DIGIT, "role": Role.BANK},
        {"after": ID_WITH_DIGIT, "role": Role.SYNC_JOB},
        {"department": f"x{ID_WITH_X}", "role": Role.SYNC_JOB},
    ]
    for kwargs in asked:
        with pytest.raises(InvalidArgument) as caught:
            read(lists, requester="r-1", **kwargs)  # type: ignore[arg-type]
        assert "a value that reads as a resident identity number" in caught.value.message
    # a valid cursor from a requester the policy refuses is not recorded at all
    with pytest.raises(PermissionDenied):
        read(lists, after="5", requester="r-1", role=Role.BANK)
    # the node, asked directly, quotes neither
    with pytest.raises(InvalidArgument) as caught:
        office.list_changes(ask(dept=ID_WITH_DIGIT), caller=COORDINATOR)
    assert ID_WITH_DIGIT not in str(caught.value)
    with pytest.raises(InvalidArgument) as caught:
        office.list_changes(ask(after=ID_WITH_X), caller=COORDINATOR)
    assert ID_WITH_X not in str(caught.value)
    coordinator = coordinator_lines(tmp_path)
    assert [e["decision"] for e in coordinator] == ["deny"] * 6
    assert all("after" not in e["extra"] for e in coordinator)  # type: ignore[operator]
    for name in ("coordinator-audit.jsonl", "audit.jsonl"):
        text = (tmp_path / name).read_text("utf-8")
        for value in (ID_WITH_X, ID_WITH_DIGIT):
            assert value not in text


def test_the_coordinators_audit_reason_never_holds_a_resident_id() -> None:
    from coordinator.list_changes import _audit_reason

    leaked = InvalidArgument(f"something quoting {ID_WITH_X}", field="after")
    assert _audit_reason(leaked) == "InvalidArgument: after failed validation"
    plain = InvalidArgument("'x1' is not a change feed cursor", field="after")
    assert _audit_reason(plain) == str(plain)


# --- the SDK's check of the coordinator's page ----------------------------------------------------


def test_the_sdk_takes_withheld_events_and_refuses_one_carrying_its_entry(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    from osmanthus.core.wire.lists import list_changes_page_from_proto
    from sdk.client import _check_changes, _from_coordinator

    sdk_page = functools.partial(_from_coordinator, list_changes_page_from_proto)

    _node_withheld(honest, 2, "a text field reads as a resident identity number")
    good = checked(honest)
    _check_changes(good, department="court", after="", size=10)
    assert sdk_page(list_changes_response(good)) == good
    withheld = good.events[2]

    def page_with(event: ListChangeEvent, feed_id: str = good.feed_id) -> ListChangesPage:
        return dataclasses.replace(good, events=(*good.events[:2], event), feed_id=feed_id)

    assert (withheld.entry_id, withheld.withdraw_reason) == ("C-1", WithdrawReason.REPAIRED)
    # the SDK does not know a withheld entry's list: a withdrawal's reason of any colour goes
    red_reason = dataclasses.replace(withheld, withdraw_reason=WithdrawReason.REVOKED)
    _check_changes(page_with(red_reason), department="court", after="", size=10)
    no_id = dataclasses.replace(withheld, entry_id="")
    _check_changes(page_with(no_id), department="court", after="", size=10)
    for bad, field in (
        # a withheld withdrawal without its reason, a withheld publication with one
        (dataclasses.replace(withheld, withdraw_reason=None), "events[2]"),
        (dataclasses.replace(withheld, event=ListChange.PUBLISHED), "events[2]"),
        (dataclasses.replace(withheld, entry=good.events[0].entry), "events[2]"),
        (dataclasses.replace(good.events[0], cursor="3", withheld="x"), "events[2]"),
        (dataclasses.replace(withheld, withheld=f"see {OTHER}"), "events[2].withheld"),
        (dataclasses.replace(withheld, withheld=" padded"), "events[2].withheld"),
        # an entry id the coordinator would have withheld as ""
        (dataclasses.replace(withheld, entry_id=ID_WITH_DIGIT), "events[2].entry_id"),
        (dataclasses.replace(withheld, entry_id=f"C-{OTHER}"), "events[2].entry_id"),
        (dataclasses.replace(withheld, entry_id="C 1"), "events[2].entry_id"),
        # revocation does not take an entry off a black list
        (
            dataclasses.replace(
                good.events[0],
                cursor="3",
                event=ListChange.WITHDRAWN,
                withdraw_reason=WithdrawReason.REVOKED,
            ),
            "events[2]",
        ),
    ):
        with pytest.raises(CryptoError) as caught:
            _check_changes(page_with(bad), department="court", after="", size=10)
        assert caught.value.field == field and OTHER not in str(caught.value)
    with pytest.raises(CryptoError) as caught:
        _check_changes(page_with(withheld, "nope"), department="court", after="", size=10)
    assert caught.value.field == "feed_id"
    # on the wire an event has its entry or the withheld mark, never both nor neither
    message = list_changes_response(good)
    message.events[2].CopyFrom(list_changes_response(good).events[0])
    message.events[2].withheld = "x"
    with pytest.raises(CryptoError, match="either its entry or"):
        sdk_page(message)
    # and an entry_id beside an entry is that entry's
    message.events[2].withheld = ""
    message.events[2].entry_id = "C-2"
    with pytest.raises(CryptoError, match="is not the entry_id of the entry") as caught:
        sdk_page(message)
    assert caught.value.field == "events[2].entry_id"


# --- a withheld event names its entry: a withdrawal closes it -------------------------------------


def test_an_event_carrying_its_entry_has_its_entry_id() -> None:
    entry = PublicEntry(
        entry_id=EntryId("C-1"),
        department=COURT,
        list="judgement_defaulters",
        colour=ListColour.BLACK,
        subject_kind=SubjectKind.PERSON,
        subject_id=mask_subject(PERSON),
        subject_name="Zhang San",
        legal_basis="",
        reason="owes",
        window_start=TODAY,
        window_end=TODAY,
    )
    assert ListChangeEvent("1", entry, PUB, NOW).entry_id == "C-1"
    assert ListChangeEvent("1", entry, PUB, NOW, entry_id="C-1").entry_id == "C-1"
    with pytest.raises(ValueError, match="that entry's entry_id"):
        ListChangeEvent("1", entry, PUB, NOW, entry_id="C-2")
    withheld = ListChangeEvent("1", None, PUB, NOW, withheld=WITHHELD_OTHER, entry_id="C-9")
    assert withheld.entry_id == "C-9"


def test_an_entry_id_passes_its_own_checks_or_is_withheld() -> None:
    assert withheld_entry_id("C-2026/07:1") == "C-2026/07:1"
    for bad in (ID_WITH_DIGIT, ID_WITH_X, f"case-{OTHER}", "C 1", "", "-C1", "x" * 65):
        assert withheld_entry_id(bad) == ""


def _withdrawn_after_the_catalogue_changed(path: Path, reason: WithdrawReason) -> ListStore:
    """The review's case: C-long went up cleanly, the catalogue then shortened the list's
    windows (so C-long fails today's checks), and the court withdrew it."""
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        publish(store, draft("C-1"), draft("C-long", end=TODAY + datetime.timedelta(days=1500)))
    store = ListStore(path, department=COURT, catalogue=SHORTER)
    store.withdraw("C-long", reason=reason, reference=REFERENCE, actor="court", today=TODAY)
    return store


#: the catalogue with judgement_defaulters' windows shortened to three years
SHORTER = dataclasses.replace(
    CATALOGUE,
    lists=tuple(
        dataclasses.replace(t, max_window_days=1098) if t.id == "judgement_defaulters" else t
        for t in CATALOGUE.lists
    ),
)


def test_a_withheld_withdrawal_names_its_entry_and_reason_at_every_hop(
    tmp_path: Path, coordinator_audit: AuditLog
) -> None:
    from osmanthus.core.wire.lists import list_changes_page_from_proto
    from sdk.client import _check_changes, _from_coordinator

    sdk_page = functools.partial(_from_coordinator, list_changes_page_from_proto)

    with (
        _withdrawn_after_the_catalogue_changed(
            tmp_path / LISTS_FILE, WithdrawReason.ERROR
        ) as store,
        AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as audit,
    ):
        office = ListOffice(
            department=SHORTER.department(COURT), store=store, audit=audit, today=lambda: TODAY
        )
        served = office.list_changes(ask(), caller=COORDINATOR)
        lists = coordinator_feed(StoreNode(office), coordinator_audit)
        forwarded = read(lists)
    too_long = "the window is longer than the list allows"
    expected = [
        ("1", PUB, "", "C-1", None),
        ("2", PUB, too_long, "C-long", None),
        ("3", WDR, too_long, "C-long", WithdrawReason.ERROR),
    ]
    for page in (served, forwarded):
        assert [
            (e.cursor, e.event, e.withheld, e.entry_id, e.withdraw_reason) for e in page.events
        ] == expected
        assert page.events[1].entry is None and page.events[2].entry is None
    # on the wire: the id and the reason, nothing else of the entry
    wire = list_changes_response(forwarded)
    assert not wire.events[2].HasField("entry")
    assert (wire.events[2].entry_id, wire.events[2].withdraw_reason) == (
        "C-long",
        lists_pb2.WITHDRAW_REASON_ERROR,
    )
    assert b"Zhang San" not in wire.events[2].SerializeToString()
    assert REFERENCE.encode() not in wire.SerializeToString()
    assert sdk_page(wire) == forwarded
    _check_changes(sdk_page(wire), department="court", after="", size=500)


def test_a_withheld_event_whose_entry_id_reads_as_a_resident_id_names_no_entry(
    store: ListStore, office: ListOffice, caplog: pytest.LogCaptureFixture
) -> None:
    _stored_as_before(store, ID_WITH_X)
    withdraw(store, ID_WITH_X, WithdrawReason.ERROR)
    with caplog.at_level(logging.WARNING):
        page = office.list_changes(ask(), caller=COORDINATOR)
        forwarded = checked(list_changes_response(page))
    for events in (page.events, forwarded.events):
        assert [(e.entry_id, e.withdraw_reason) for e in events] == [
            ("", None),
            ("", WithdrawReason.ERROR),
        ]
    assert ID_WITH_X.encode() not in list_changes_response(forwarded).SerializeToString()
    assert ID_WITH_X not in caplog.text


def test_the_coordinator_forwards_a_withheld_events_entry_id_only_if_it_passes(
    honest: lists_pb2.ListChangesResponse, caplog: pytest.LogCaptureFixture
) -> None:
    _node_withheld(honest, 2, "a text field reads as a resident identity number")
    assert checked(honest).events[2].entry_id == "C-1"
    for bad in (ID_WITH_DIGIT, f"C-{OTHER}", "C 1", "Zhang San owes", "x" * 65):
        honest.events[2].entry_id = bad
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="coordinator.list_changes"):
            event = checked(honest).events[2]
        assert (event.entry_id, event.entry, event.withdraw_reason) == (
            "",
            None,
            WithdrawReason.REPAIRED,
        )
        assert "its entry_id failed the entry id's checks and is withheld too" in caplog.text
        assert OTHER not in caplog.text and ID_WITH_DIGIT not in caplog.text
    # an entry id the coordinator withholds itself goes as "" too
    honest.events[2].entry_id = ""
    honest.events[1].entry.entry_id = honest.events[1].entry_id = ID_WITH_DIGIT
    firm_event = checked(honest).events[1]
    assert (firm_event.withheld, firm_event.entry_id) == (
        "the entry id reads as a resident identity number",
        "",
    )
    # a withheld event naming an entry another event of the page has for the same kind
    honest.events[1].entry.entry_id = honest.events[1].entry_id = "C-2"
    _node_withheld(honest, 1, "a text field reads as a resident identity number")
    honest.events[1].entry_id = "C-1"
    assert "events[1] repeats an earlier event of the page" in refused(honest)


def test_the_coordinator_checks_a_withheld_events_withdraw_reason(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    # a withheld publication says no reason; a withheld withdrawal says one
    _node_withheld(honest, 0, "a text field reads as a resident identity number")
    honest.events[0].withdraw_reason = lists_pb2.WITHDRAW_REASON_ERROR
    assert "events[0].withdraw_reason comes with a publication" in refused(honest)
    honest.events[0].withdraw_reason = lists_pb2.WITHDRAW_REASON_UNSPECIFIED
    _node_withheld(honest, 2, "a text field reads as a resident identity number")
    for missing in (lists_pb2.WITHDRAW_REASON_UNSPECIFIED, 9):
        honest.events[2].withdraw_reason = missing  # type: ignore[assignment]
        assert "events[2].withdraw_reason is missing from a withdrawal" in refused(honest)
    # the node withheld it: the coordinator does not know the list, and takes any reason
    honest.events[2].withdraw_reason = lists_pb2.WITHDRAW_REASON_REVOKED
    assert checked(honest).events[2].withdraw_reason is WithdrawReason.REVOKED


def test_a_withdrawal_the_coordinator_withholds_keeps_a_reason_its_list_allows(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    withdrawal = honest.events[2]
    withdrawal.entry.reason = f"owner {OTHER} owes"
    event = checked(honest).events[2]
    assert (event.withheld, event.entry_id, event.withdraw_reason) == (
        "a text field reads as a resident identity number",
        "C-1",
        WithdrawReason.REPAIRED,
    )
    # the list is known: revocation does not take an entry off a black list
    withdrawal.withdraw_reason = lists_pb2.WITHDRAW_REASON_REVOKED
    assert "events[2].withdraw_reason revoked does not take an entry off a black list" in (
        refused(honest)
    )
    # a list not the department's, or a colour in dispute: any reason goes on
    withdrawal.entry.list = "serious_dishonest"
    assert checked(honest).events[2].withdraw_reason is WithdrawReason.REVOKED
    withdrawal.entry.list = "judgement_defaulters"
    withdrawal.entry.colour = lists_pb2.LIST_COLOUR_RED
    event = checked(honest).events[2]
    assert (event.withheld, event.withdraw_reason) == (
        "the list's colour in the catalogue is not the entry's",
        WithdrawReason.REVOKED,
    )


def test_an_entry_id_beside_an_entry_must_be_the_entrys(
    honest: lists_pb2.ListChangesResponse,
) -> None:
    honest.events[2].entry_id = "C-2"
    assert "events[2].entry_id is not the entry_id of the entry it carries" in refused(honest)
    honest.events[2].entry_id = ""
    assert "events[2].entry_id is not the entry_id of the entry it carries" in refused(honest)


def test_a_store_whose_catalogue_no_longer_allows_a_withdrawal_does_not_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / LISTS_FILE
    with ListStore(path, department=COURT, catalogue=CATALOGUE) as store:
        publish(store, draft("C-1"), draft("C-2", OTHER))
        withdraw(store, "C-1", WithdrawReason.REPAIRED)
        withdraw(store, "C-2", WithdrawReason.ERROR)
    red = dataclasses.replace(
        CATALOGUE,
        lists=tuple(
            dataclasses.replace(t, colour=ListColour.RED) if t.id == "judgement_defaulters" else t
            for t in CATALOGUE.lists
        ),
    )
    with pytest.raises(ConfigError, match="withdrawn as repaired") as caught:
        ListStore(path, department=COURT, catalogue=red)
    assert caught.value.field == "catalogue"
    assert "judgement_defaulters (red) does not allow" in caught.value.message
    # the same catalogue as before opens it
    ListStore(path, department=COURT, catalogue=CATALOGUE).close()
