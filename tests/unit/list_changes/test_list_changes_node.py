"""A department's list change feed at its node: the store's numbered events, the node's list
office serving them, the feed's identity, and the store's migration from schema 1."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from pathlib import Path

import duckdb
import pytest

from certs import PeerRole
from node.lists import LISTS_FILE, MAX_FEED_PAGE_BYTES, SCHEMA_VERSION, ListStore
from node.office import ListOffice
from osmanthus.core.errors import ConfigError, FailedPrecondition, InvalidArgument, PermissionDenied
from osmanthus.core.ids import mask_subject
from osmanthus.core.lists import (
    FEED_ID_PATTERN,
    MAX_CHANGE_SEQ,
    ListChange,
    ListChangesPage,
    WithdrawReason,
    change_cursor,
    changes_page_size,
    check_feed_id,
    new_feed_id,
    parse_change_cursor,
)
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.core.wire.lists import changes_query_from_proto as changes_query
from osmanthus.core.wire.lists import list_changes_page_from_proto as list_changes_page
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2, node_pb2
from tests.unit.list_changes.conftest import (
    CATALOGUE,
    COORDINATOR,
    COURT,
    ID_WITH_DIGIT,
    ID_WITH_X,
    OTHER,
    PERSON,
    PUB,
    REFERENCE,
    TODAY,
    WDR,
    ask,
    audit_lines,
    checked,
    draft,
    entry_of,
    feed,
    firm,
    publish,
    refused,
    withdraw,
)

TAX = DepartmentId("tax")
OFFICER = PeerIdentity(role=PeerRole.OPERATOR, name="court")


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
