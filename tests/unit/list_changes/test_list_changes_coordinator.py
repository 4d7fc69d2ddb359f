"""A department's list change feed at the coordinator: its checks of a node's page (honest,
curious, or broken) before it forwards one, and its feed for the sync job."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from coordinator.list_changes import check_changes
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.lists import ListStore
from node.office import ListOffice
from osmanthus.core.audit import AuditLog
from osmanthus.core.errors import InvalidArgument, PermissionDenied, RateLimited, Unavailable
from osmanthus.core.ids import mask_subject
from osmanthus.core.lists import ListChange, ListChangesPage, WithdrawReason
from osmanthus.core.types import Role, SubjectKind
from osmanthus.core.wire.lists import CHANGE_TO_PB
from osmanthus.core.wire.lists import list_changes_page_from_proto as list_changes_page
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2
from tests.unit.list_changes.conftest import (
    CATALOGUE,
    COORDINATOR,
    COURT,
    ID_WITH_DIGIT,
    ID_WITH_X,
    OTHER,
    PERSON,
    REFERENCE,
    TWOFOLD,
    StoreNode,
    ask,
    checked,
    coordinator_feed,
    court_page,
    draft,
    entry_of,
    firm,
    publish,
    read,
    refused,
    withdraw,
    withheld_only,
)

# --- the coordinator's checks of a node's page ----------------------------------------------------


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
    if role is Role.STATISTICS_OFFICE:
        expected = "denied: forbidden by central-statistics-office-only"
    elif role in (Role.KIOSK, Role.PORTAL):
        # the subjects' devices may do nothing but self_query
        expected = "denied: forbidden by central-subject-devices-self-query-only"
    else:
        expected = 'denied: no policy permits Action::"ReadListChanges"'

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
