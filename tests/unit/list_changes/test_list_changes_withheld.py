"""Withheld list change events: entries a publication would refuse today, served withheld by
the node and forwarded by the coordinator, naming their entry so a withdrawal still closes it."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import logging
import os
from pathlib import Path

import pytest

from node.lists import LISTS_FILE, ListStore
from node.office import ListOffice
from osmanthus.core import ids
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import ConfigError
from osmanthus.core.ids import mask_subject, resident_id_check_char
from osmanthus.core.lists import (
    WITHHELD_BY_NODE,
    WITHHELD_OTHER,
    WITHHELD_REASONS,
    EntryId,
    ListChangeEvent,
    PublicEntry,
    WithdrawReason,
    withheld_entry_id,
)
from osmanthus.core.types import SubjectKind
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2
from tests.unit.list_changes.conftest import (
    CATALOGUE,
    COORDINATOR,
    COURT,
    ID_WITH_DIGIT,
    ID_WITH_X,
    NOW,
    OTHER,
    PERSON,
    PUB,
    REFERENCE,
    TODAY,
    TWOFOLD,
    WDR,
    StoreNode,
    _node_withheld,
    ask,
    audit_lines,
    checked,
    coordinator_feed,
    draft,
    publish,
    read,
    refused,
    withdraw,
    withheld_only,
)

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
    from sdk.client import _from_coordinator
    from sdk.listfeed import check_changes_page as _check_changes

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
