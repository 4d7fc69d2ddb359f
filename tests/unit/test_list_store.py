"""The node's list store and list office: windows, withdrawal, history, idempotence, paging."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import stat
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole
from node.lists import LISTS_FILE, ListStore
from node.office import ListOffice
from node.officer import read_publication
from node.server import STATE_DIR_MODE, prepare_state_dir
from node.service import NodeService
from node.store import RecordStore
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import Catalogue, ListColour, default_catalogue_path, load_catalogue
from osmanthus.core.crypto import EncryptorCache
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    ImportRejected,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from osmanthus.core.ids import (
    make_resident_id,
    make_uscc,
    organisation_code_check_char,
    validate_subject,
)
from osmanthus.core.lists import (
    MAX_ENTRIES_PER_PUBLISH,
    EntryId,
    EntryStatus,
    WithdrawReason,
    decode_page_token,
    encode_page_token,
)
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.rules import load_default_rules
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import ReplayCache, TokenVerifier
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.wire.lists import EntryDraft, PublicQuery

PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
COURT = DepartmentId("court")
TAX = DepartmentId("tax")
TODAY = date(2026, 3, 10)
ALICE = make_resident_id(region="320505", birth=date(1980, 4, 1), sequence=17)
BOB = make_resident_id(region="320506", birth=date(1975, 9, 30), sequence=3)
OFFICER = PeerIdentity(role=PeerRole.OPERATOR, name="court")
#: ALICE with a wrong check character
FORGED = ALICE[:-1] + ("1" if ALICE[-1] == "0" else "0")
#: valid both as a resident id and as a unified social credit code (GB 11643 and GB 32100)
TWOFOLD = SubjectId("113205198004010490")


def firm(n: int) -> SubjectId:
    first8 = f"M{n:07d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )


ACME = firm(100)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture
def store(tmp_path: Path, catalogue: Catalogue) -> Iterator[ListStore]:
    with ListStore(tmp_path / LISTS_FILE, department=COURT, catalogue=catalogue) as s:
        yield s


@pytest.fixture
def tax_store(tmp_path: Path, catalogue: Catalogue) -> Iterator[ListStore]:
    with ListStore(tmp_path / "tax-lists.duckdb", department=TAX, catalogue=catalogue) as s:
        yield s


def draft(
    entry_id: str,
    *,
    list_id: str = "judgement_defaulters",
    kind: SubjectKind = PERSON,
    subject: str = ALICE,
    start: date = TODAY,
    end: date = TODAY + timedelta(days=30),
    reason: str = "failed to pay the judgement of (2025) Su 05 Zhi 123",
    legal_basis: str = "",
    name: str = "Zhang San",
) -> EntryDraft:
    return EntryDraft(
        entry_id=entry_id,
        list=list_id,
        subject_kind=kind,
        subject_id=subject,
        subject_name=name,
        legal_basis=legal_basis,
        reason=reason,
        window_start=start.isoformat(),
        window_end=end.isoformat(),
    )


def in_view(store: ListStore, subject: str, day: date, kind: SubjectKind = PERSON) -> list[str]:
    page = store.public_entries(PublicQuery(subject_kind=kind, subject_id=subject), today=day)
    return [e.entry_id for e in page.entries]


# --- windows ---------------------------------------------------------------------------------


def test_an_entry_is_in_view_inside_its_window_only(store: ListStore) -> None:
    start, end = date(2026, 4, 1), date(2026, 4, 30)
    store.publish([draft("J-1", start=start, end=end)], actor="court", today=TODAY)
    assert in_view(store, ALICE, start - timedelta(days=1)) == []
    assert in_view(store, ALICE, start) == ["J-1"]
    assert in_view(store, ALICE, date(2026, 4, 15)) == ["J-1"]
    assert in_view(store, ALICE, end) == ["J-1"]
    assert in_view(store, ALICE, end + timedelta(days=1)) == []
    statuses = {
        day: store.entry("J-1", today=day).status
        for day in (start - timedelta(days=1), start, end, end + timedelta(days=1))
    }
    assert list(statuses.values()) == [
        EntryStatus.SCHEDULED,
        EntryStatus.IN_VIEW,
        EntryStatus.IN_VIEW,
        EntryStatus.EXPIRED,
    ]


def test_flags_follow_the_window_and_come_from_black_lists_only(
    store: ListStore, tax_store: ListStore
) -> None:
    start, end = TODAY, TODAY + timedelta(days=9)
    store.publish([draft("J-1", start=start, end=end)], actor="court", today=TODAY)
    assert store.flags_in_view(PERSON, ALICE, start - timedelta(days=1)) == frozenset()
    assert store.flags_in_view(PERSON, ALICE, start) == {"judgement_defaulter"}
    assert store.flags_in_view(PERSON, ALICE, end) == {"judgement_defaulter"}
    assert store.flags_in_view(PERSON, ALICE, end + timedelta(days=1)) == frozenset()
    # another subject: nothing
    assert store.flags_in_view(PERSON, BOB, start) == frozenset()
    # a red list's entry sets no flag
    tax_store.publish(
        [draft("A-1", list_id="a_level_taxpayers", kind=ENTERPRISE, subject=ACME)],
        actor="tax",
        today=TODAY,
    )
    assert tax_store.flags_in_view(ENTERPRISE, ACME, TODAY) == frozenset()
    tax_store.publish(
        [draft("T-1", list_id="major_tax_violators", kind=ENTERPRISE, subject=ACME)],
        actor="tax",
        today=TODAY,
    )
    assert tax_store.flags_in_view(ENTERPRISE, ACME, TODAY) == {"major_tax_violation"}


def test_an_entry_about_an_enterprise_is_not_about_a_person_with_the_same_id(
    store: ListStore,
) -> None:
    # one 18-character string can be a valid resident id and a valid credit code at once
    assert validate_subject(PERSON, TWOFOLD) == validate_subject(ENTERPRISE, TWOFOLD)
    # no one could tell such a code from a person's id, so it is no longer published ...
    with pytest.raises(InvalidArgument, match="cannot be published on a list") as caught:
        store.publish([draft("J-1", kind=ENTERPRISE, subject=TWOFOLD)], actor="court", today=TODAY)
    assert caught.value.field == "entries[0].subject_id" and TWOFOLD not in str(caught.value)
    # ... but one an older node stored stays about the enterprise only
    (entry,) = store.validate([draft("J-1")], today=TODAY)
    store._insert(
        [dataclasses.replace(entry, subject_kind=ENTERPRISE, subject_id=TWOFOLD)],
        at=datetime(2026, 3, 10),
        actor="court",
    )
    assert store.flags_in_view(ENTERPRISE, TWOFOLD, TODAY) == {"judgement_defaulter"}
    assert store.flags_in_view(PERSON, TWOFOLD, TODAY) == frozenset()
    assert in_view(store, TWOFOLD, TODAY, ENTERPRISE) == ["J-1"]
    assert in_view(store, TWOFOLD, TODAY, PERSON) == []
    assert [e.entry.entry_id for e in store.history(ENTERPRISE, TWOFOLD, today=TODAY)] == ["J-1"]
    assert store.history(PERSON, TWOFOLD, today=TODAY) == ()
    listed = store.public_entries(
        PublicQuery(subject_kind=PERSON, list="judgement_defaulters"), today=TODAY
    )
    assert listed.entries == ()


# --- withdrawal and history ------------------------------------------------------------------


def test_repair_removes_an_entry_and_the_history_shows_both_events(store: ListStore) -> None:
    store.publish([draft("J-1")], actor="court", today=TODAY)
    withdrawn = store.withdraw(
        "J-1",
        reason=WithdrawReason.REPAIRED,
        reference="Su05 repair 2026-7",
        actor="court-officer-2",
        today=TODAY,
    )
    assert withdrawn.status is EntryStatus.WITHDRAWN
    assert withdrawn.withdraw_reason is WithdrawReason.REPAIRED
    assert withdrawn.withdraw_reference == "Su05 repair 2026-7"
    assert in_view(store, ALICE, TODAY) == []
    assert store.flags_in_view(PERSON, ALICE, TODAY) == frozenset()
    (entry,) = store.history(PERSON, ALICE, today=TODAY)
    assert [(e.event, e.actor) for e in entry.events] == [
        ("published", "court"),
        ("withdrawn", "court-officer-2"),
    ]
    assert entry.events[1].detail == "repaired: Su05 repair 2026-7"
    assert entry.events[0].at <= entry.events[1].at
    assert entry.events[0].at.utcoffset() == timedelta(0)
    # the history keeps the subject id in full; it stays withdrawn after the window too
    assert entry.entry.subject_id == ALICE
    assert store.entry("J-1", today=TODAY + timedelta(days=400)).status is EntryStatus.WITHDRAWN


def test_history_shows_expired_scheduled_and_in_view_entries_in_window_order(
    store: ListStore,
) -> None:
    store.publish(
        [
            draft("J-3", start=TODAY + timedelta(days=5), end=TODAY + timedelta(days=50)),
            draft("J-1", start=TODAY - timedelta(days=100), end=TODAY - timedelta(days=1)),
            draft("J-2", start=TODAY - timedelta(days=10), end=TODAY + timedelta(days=10)),
            draft("J-9", subject=BOB),
        ],
        actor="court",
        today=TODAY,
    )
    history = store.history(PERSON, ALICE, today=TODAY)
    assert [(e.entry.entry_id, e.status) for e in history] == [
        ("J-1", EntryStatus.EXPIRED),
        ("J-2", EntryStatus.IN_VIEW),
        ("J-3", EntryStatus.SCHEDULED),
    ]
    assert all(len(e.events) == 1 and e.events[0].event == "published" for e in history)
    assert store.history(ENTERPRISE, ACME, today=TODAY) == ()


def test_withdrawal_rules(store: ListStore, tax_store: ListStore) -> None:
    store.publish(
        [
            draft("J-old", start=TODAY - timedelta(days=20), end=TODAY - timedelta(days=1)),
            draft("J-next", start=TODAY + timedelta(days=1)),
            draft("J-now"),
        ],
        actor="court",
        today=TODAY,
    )
    with pytest.raises(NotFound) as missing:
        store.withdraw(
            "J-none", reason=WithdrawReason.ERROR, reference="x", actor="court", today=TODAY
        )
    assert missing.value.field == "entry_id"
    with pytest.raises(FailedPrecondition, match="ended on") as ended:
        store.withdraw(
            "J-old", reason=WithdrawReason.REPAIRED, reference="x", actor="court", today=TODAY
        )
    assert ended.value.field == "entry_id"
    # revocation is for red lists; the black list's entry stays as it was
    with pytest.raises(InvalidArgument, match="judgement_defaulters is a black list") as wrong:
        store.withdraw(
            "J-now", reason=WithdrawReason.REVOKED, reference="x", actor="court", today=TODAY
        )
    assert wrong.value.field == "reason"
    with pytest.raises(InvalidArgument) as no_reference:
        store.withdraw(
            "J-now", reason=WithdrawReason.REPAIRED, reference="  ", actor="court", today=TODAY
        )
    assert no_reference.value.field == "reference"
    with pytest.raises(InvalidArgument) as no_reason:
        store.withdraw("J-now", reason=None, reference="x", actor="court", today=TODAY)
    assert no_reason.value.field == "reason"
    assert store.entry("J-now", today=TODAY).status is EntryStatus.IN_VIEW
    assert len(store.entry("J-now", today=TODAY).events) == 1
    # a scheduled entry may be withdrawn (published in error) before it is ever in view
    scheduled = store.withdraw(
        "J-next", reason=WithdrawReason.ERROR, reference="typo", actor="court", today=TODAY
    )
    assert scheduled.status is EntryStatus.WITHDRAWN
    store.withdraw(
        "J-now", reason=WithdrawReason.REPAIRED, reference="r-1", actor="court", today=TODAY
    )
    with pytest.raises(FailedPrecondition, match="withdrawn on"):
        store.withdraw(
            "J-now", reason=WithdrawReason.ERROR, reference="r-2", actor="court", today=TODAY
        )
    # red lists: revoked or error, never repaired
    tax_store.publish(
        [draft("A-1", list_id="a_level_taxpayers", kind=ENTERPRISE, subject=ACME)],
        actor="tax",
        today=TODAY,
    )
    with pytest.raises(InvalidArgument, match="a_level_taxpayers is a red list"):
        tax_store.withdraw(
            "A-1", reason=WithdrawReason.REPAIRED, reference="x", actor="tax", today=TODAY
        )
    revoked = tax_store.withdraw(
        "A-1", reason=WithdrawReason.REVOKED, reference="STA-9", actor="tax", today=TODAY
    )
    assert revoked.withdraw_reason is WithdrawReason.REVOKED


# --- publishing ------------------------------------------------------------------------------


def test_republishing_the_same_entries_is_harmless(store: ListStore) -> None:
    entries = [draft("J-1"), draft("J-2", subject=BOB)]
    first = store.publish(entries, actor="court", today=TODAY)
    assert (first.published, first.unchanged) == (2, 0)
    again = store.publish([*entries, draft("J-3")], actor="court", today=TODAY + timedelta(days=1))
    assert (again.published, again.unchanged) == (1, 2)
    # the retry wrote no second "published" event
    assert len(store.entry("J-1", today=TODAY).events) == 1
    # the default legal basis filled in at the first publication compares equal at the retry
    assert store.entry("J-1", today=TODAY).entry.legal_basis.startswith("Provisions of the")


def test_republishing_a_withdrawn_entry_is_refused(store: ListStore) -> None:
    store.publish([draft("J-1")], actor="court", today=TODAY)
    store.withdraw(
        "J-1", reason=WithdrawReason.REPAIRED, reference="r-1", actor="court", today=TODAY
    )
    for entries in ([draft("J-1")], [draft("J-2"), draft("J-1", reason="another judgement")]):
        with pytest.raises(FailedPrecondition) as caught:
            store.publish(entries, actor="court", today=TODAY)
        assert caught.value.field == f"entries[{len(entries) - 1}].entry_id"
        assert "'J-1' was withdrawn on 20" in caught.value.message
        assert "publish under a new id" in caught.value.message
    # still withdrawn, still out of view, and nothing of the refused publications was stored
    assert store.entry("J-1", today=TODAY).status is EntryStatus.WITHDRAWN
    assert in_view(store, ALICE, TODAY) == []
    with pytest.raises(NotFound):
        store.entry("J-2", today=TODAY)


def test_a_full_resident_id_is_refused_outside_subject_id(store: ListStore) -> None:
    grouped = f"{BOB[:6]} {BOB[6:14]} {BOB[14:]}"
    cases = {
        "entries[3].entry_id": draft(ALICE),
        "entries[3].reason": draft("J-x", reason=f"owner {ALICE} failed to pay"),
        "entries[3].subject_name": draft("J-x", name=f"Zhang San ({grouped})"),
        "entries[3].legal_basis": draft("J-x", legal_basis=f"ruling on {ALICE}J"),
    }
    good = [draft(f"J-{i}") for i in range(5)]
    for field, bad in cases.items():
        with pytest.raises(InvalidArgument) as caught:
            store.publish([*good[:3], bad, good[4]], actor="court", today=TODAY)
        assert caught.value.field == field
        assert "reads as a full resident identity number" in caught.value.message
        assert ALICE not in caught.value.message and BOB[:6] not in caught.value.message
    assert store.history(PERSON, ALICE, today=TODAY) == ()
    # the subject's own id goes where it belongs, masked in public view
    store.publish([draft("J-1", name="Zhang San")], actor="court", today=TODAY)
    # and a withdrawal's reference may not carry one either
    with pytest.raises(InvalidArgument) as reference:
        store.withdraw(
            "J-1",
            reason=WithdrawReason.REPAIRED,
            reference=f"repair of {ALICE}",
            actor="court",
            today=TODAY,
        )
    assert reference.value.field == "reference"
    assert store.entry("J-1", today=TODAY).status is EntryStatus.IN_VIEW


def test_a_conflicting_republication_is_refused_and_writes_nothing(store: ListStore) -> None:
    store.publish([draft("J-1")], actor="court", today=TODAY)
    changed = draft("J-1", end=TODAY + timedelta(days=60), reason="another judgement")
    with pytest.raises(InvalidArgument) as caught:
        store.publish([draft("J-2"), changed], actor="court", today=TODAY)
    assert caught.value.field == "entries[1].entry_id"
    assert "different reason, window_end" in caught.value.message
    assert "publish the corrected entry under a new id" in caught.value.message
    # nothing of the refused publication was stored, J-2 included
    with pytest.raises(NotFound):
        store.entry("J-2", today=TODAY)
    assert store.entry("J-1", today=TODAY).entry.window_end == TODAY + timedelta(days=30)


def test_a_bad_entry_stops_the_whole_publication(store: ListStore) -> None:
    good = [draft(f"J-{i}") for i in range(5)]
    cases = {
        "entries[3].window_end": draft("J-x", end=TODAY - timedelta(days=1)),
        "entries[3].subject_id": draft("J-x", subject=FORGED),
        "entries[3].list": draft("J-x", list_id="major_tax_violators"),
        "entries[3].entry_id": draft("J x"),
        "entries[3].reason": draft("J-x", reason=""),
        "entries[3].window_start": draft(
            "J-x", start=TODAY + timedelta(days=400), end=TODAY + timedelta(days=410)
        ),
    }
    for field, bad in cases.items():
        with pytest.raises(InvalidArgument) as caught:
            store.publish([*good[:3], bad, good[4]], actor="court", today=TODAY)
        assert caught.value.field == field, caught.value
    with pytest.raises(InvalidArgument) as twice:
        store.publish([*good, good[1]], actor="court", today=TODAY)
    assert twice.value.field == "entries[5].entry_id"
    assert "entries[1]" in twice.value.message
    no_kind = dataclasses.replace(good[0], subject_kind=None)
    with pytest.raises(InvalidArgument) as kindless:
        store.publish([no_kind], actor="court", today=TODAY)
    assert kindless.value.field == "entries[0].subject_kind"
    with pytest.raises(InvalidArgument) as empty:
        store.publish([], actor="court", today=TODAY)
    assert empty.value.field == "entries"
    assert store.history(PERSON, ALICE, today=TODAY) == ()


def test_a_publication_has_a_size_limit_and_reaches_it_in_one_transaction(
    store: ListStore,
) -> None:
    many = [
        draft(f"E-{i:05d}", kind=ENTERPRISE, subject=firm(i))
        for i in range(MAX_ENTRIES_PER_PUBLISH)
    ]
    with pytest.raises(InvalidArgument, match="at most 10000") as caught:
        store.publish([*many, draft("E-x")], actor="court", today=TODAY)
    assert caught.value.field == "entries"
    result = store.publish(many, actor="court", today=TODAY)
    assert result.published == MAX_ENTRIES_PER_PUBLISH
    assert in_view(store, firm(9_999), TODAY, ENTERPRISE) == ["E-09999"]


# --- public view -----------------------------------------------------------------------------


def test_the_public_sees_published_fields_with_a_persons_id_masked(
    store: ListStore, tax_store: ListStore
) -> None:
    store.publish(
        [draft("J-1"), draft("J-2", kind=ENTERPRISE, subject=ACME, name="Acme Ltd")],
        actor="court",
        today=TODAY,
    )
    (person,) = store.public_entries(
        PublicQuery(subject_kind=PERSON, subject_id=ALICE), today=TODAY
    ).entries
    assert person.subject_id == ALICE[:6] + "*" * 10 + ALICE[-2:]
    assert person.colour is ListColour.BLACK and person.department == "court"
    assert person.facilitation_class is None
    (enterprise,) = store.public_entries(
        PublicQuery(subject_kind=ENTERPRISE, subject_id=ACME), today=TODAY
    ).entries
    assert enterprise.subject_id == ACME and enterprise.subject_name == "Acme Ltd"
    tax_store.publish(
        [draft("A-1", list_id="a_level_taxpayers", kind=ENTERPRISE, subject=ACME)],
        actor="tax",
        today=TODAY,
    )
    (red,) = tax_store.public_entries(
        PublicQuery(subject_kind=ENTERPRISE, subject_id=ACME), today=TODAY
    ).entries
    assert red.colour is ListColour.RED and red.facilitation_class == "A-level taxpayer"


def test_a_list_pages_by_entry_id_and_the_token_continues_after_the_last(
    store: ListStore,
) -> None:
    store.publish(
        [draft(f"E-{i:02d}", kind=ENTERPRISE, subject=firm(i)) for i in range(25)]
        + [draft("E-99", kind=ENTERPRISE, subject=firm(99), start=TODAY + timedelta(days=1))],
        actor="court",
        today=TODAY,
    )
    store.withdraw("E-07", reason=WithdrawReason.ERROR, reference="dup", actor="court", today=TODAY)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = store.public_entries(
            PublicQuery(
                subject_kind=None, list="judgement_defaulters", page_size=10, page_token=token
            ),
            today=TODAY,
        )
        pages += 1
        seen += [e.entry_id for e in page.entries]
        token = page.next_page_token
        if not token:
            break
    expected = [f"E-{i:02d}" for i in range(25) if i != 7]
    assert seen == expected and pages == 3
    assert decode_page_token(encode_page_token(EntryId("E-10"))) == "E-10"
    # the default page size, and the limits
    default = store.public_entries(
        PublicQuery(subject_kind=ENTERPRISE, list="judgement_defaulters"), today=TODAY
    )
    assert len(default.entries) == 20 and default.next_page_token
    for bad in ("not-a-token", encode_page_token(EntryId("E-1"))[:-2] + "!!", "MTpF LTE"):
        with pytest.raises(InvalidArgument) as caught:
            store.public_entries(
                PublicQuery(subject_kind=None, list="judgement_defaulters", page_token=bad),
                today=TODAY,
            )
        assert caught.value.field == "page_token"
    with pytest.raises(InvalidArgument) as too_big:
        store.public_entries(
            PublicQuery(subject_kind=None, list="judgement_defaulters", page_size=101),
            today=TODAY,
        )
    assert too_big.value.field == "page_size"
    with pytest.raises(InvalidArgument, match="published by tax"):
        store.public_entries(
            PublicQuery(subject_kind=None, list="major_tax_violators"), today=TODAY
        )
    with pytest.raises(InvalidArgument) as nothing:
        store.public_entries(PublicQuery(subject_kind=PERSON), today=TODAY)
    assert nothing.value.field == "subject_id"
    with pytest.raises(InvalidArgument) as kindless:
        store.public_entries(PublicQuery(subject_kind=None, subject_id=ALICE), today=TODAY)
    assert kindless.value.field == "subject_kind"


def test_one_subjects_entries_page_too(store: ListStore) -> None:
    store.publish(
        [draft(f"J-{i}", subject=BOB) for i in (3, 1, 2)]
        + [draft("J-0", subject=BOB, start=TODAY + timedelta(days=1))],
        actor="court",
        today=TODAY,
    )
    query = PublicQuery(subject_kind=PERSON, subject_id=BOB, page_size=2)
    first = store.public_entries(query, today=TODAY)
    assert [e.entry_id for e in first.entries] == ["J-1", "J-2"]
    rest = store.public_entries(
        dataclasses.replace(query, page_token=first.next_page_token), today=TODAY
    )
    assert [e.entry_id for e in rest.entries] == ["J-3"] and rest.next_page_token == ""
    # a list named beside the subject narrows it; the subject's id as an enterprise finds none
    narrowed = dataclasses.replace(query, list="judgement_defaulters", page_size=0)
    assert len(store.public_entries(narrowed, today=TODAY).entries) == 3
    assert in_view(store, BOB, TODAY + timedelta(days=1)) == ["J-0", "J-1", "J-2", "J-3"]


# --- the file --------------------------------------------------------------------------------


def test_the_store_keeps_entries_across_restarts_and_refuses_other_departments(
    tmp_path: Path, catalogue: Catalogue
) -> None:
    path = tmp_path / LISTS_FILE
    with ListStore(path, department=COURT, catalogue=catalogue) as first:
        first.publish([draft("J-1")], actor="court", today=TODAY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with ListStore(path, department=COURT, catalogue=catalogue) as again:
        assert again.entry("J-1", today=TODAY).status is EntryStatus.IN_VIEW
    with pytest.raises(ConfigError, match="belongs to department 'court'"):
        ListStore(path, department=TAX, catalogue=catalogue)
    # a catalogue that no longer gives court its list: refuse rather than drop the entries
    without = Catalogue(
        departments=catalogue.departments,
        models=catalogue.models,
        measures=catalogue.measures,
        flags=catalogue.flags,
        lists=tuple(t for t in catalogue.lists if t.id != "judgement_defaulters"),
    )
    with pytest.raises(ConfigError, match="judgement_defaulters"):
        ListStore(path, department=COURT, catalogue=without)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_wal_is_readable_by_the_owner_only(tmp_path: Path, catalogue: Catalogue) -> None:
    path = tmp_path / LISTS_FILE
    wal = tmp_path / (LISTS_FILE + ".wal")
    previous = os.umask(0o022)
    try:
        with ListStore(path, department=COURT, catalogue=catalogue) as store:
            store.publish([draft("J-1")], actor="court", today=TODAY)
            assert ALICE.encode() in wal.read_bytes()
            assert (_mode(path), _mode(wal)) == (0o600, 0o600)
            # DuckDB deletes the WAL at a checkpoint and makes a new one at the next write
            store._conn.execute("CHECKPOINT")
            assert not wal.exists()
            store.withdraw(
                "J-1", reason=WithdrawReason.ERROR, reference="x", actor="court", today=TODAY
            )
            assert _mode(wal) == 0o600
            store._conn.execute("CHECKPOINT")
            store.publish([draft("J-2")], actor="court", today=TODAY)
            assert _mode(wal) == 0o600
        # the process's umask is as it was
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


def test_the_state_directory_is_the_node_users_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    previous = os.umask(0o022)
    try:
        made = tmp_path / "new" / "court"
        prepare_state_dir(made)
        assert _mode(made) == STATE_DIR_MODE == 0o700
        opened = tmp_path / "old"
        opened.mkdir()
        # explicitly: preparing a state directory narrowed this process's umask
        os.chmod(opened, 0o755)
        with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
            prepare_state_dir(opened)
        assert _mode(opened) == 0o700
        assert "was open to other users (mode 755)" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="osmanthus.core.files"):
            prepare_state_dir(opened)
        assert caplog.text == ""
    finally:
        os.umask(previous)


def test_reads_run_beside_a_publication(store: ListStore) -> None:
    store.publish([draft("J-0")], actor="court", today=TODAY)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(50):
                assert "J-0" in in_view(store, ALICE, TODAY)
                store.flags_in_view(PERSON, ALICE, TODAY)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for i in range(1, 20):
        store.publish([draft(f"J-{i}")], actor="court", today=TODAY)
    for t in readers:
        t.join()
    assert not errors
    assert len(store.history(PERSON, ALICE, today=TODAY)) == 20


# --- the list office -------------------------------------------------------------------------


@pytest.fixture
def office(tmp_path: Path, store: ListStore, catalogue: Catalogue) -> Iterator[ListOffice]:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as audit:
        yield ListOffice(
            department=catalogue.department("court"), store=store, audit=audit, today=lambda: TODAY
        )


def audit_lines(tmp_path: Path) -> list[dict[str, object]]:
    text = (tmp_path / "audit.jsonl").read_text("ascii")
    return [json.loads(line) for line in text.splitlines()]


def test_the_office_serves_the_departments_officer_only_and_audits_every_call(
    tmp_path: Path, office: ListOffice
) -> None:
    others = [
        PeerIdentity(role=PeerRole.OPERATOR, name="tax"),
        PeerIdentity(role=PeerRole.OPERATOR, name="operator"),
        PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator"),
        PeerIdentity(role=PeerRole.NODE, name="court"),
        PeerIdentity(role=PeerRole.REQUESTER, name="court"),
    ]
    for caller in others:
        with pytest.raises(PermissionDenied, match="an operator certificate named 'court'"):
            office.publish([draft("J-1")], caller=caller)
        with pytest.raises(PermissionDenied):
            office.withdraw("J-1", reason=WithdrawReason.ERROR, reference="x", caller=caller)
        with pytest.raises(PermissionDenied):
            office.history(PERSON, ALICE, caller=caller)
    assert office.store.history(PERSON, ALICE, today=TODAY) == ()
    office.publish([draft("J-1"), draft("J-2", subject=BOB)], caller=OFFICER)
    office.withdraw("J-1", reason=WithdrawReason.REPAIRED, reference="r-1", caller=OFFICER)
    assert len(office.history(PERSON, ALICE, caller=OFFICER)) == 1
    with pytest.raises(InvalidArgument):
        office.publish([draft("J-3", subject=FORGED)], caller=OFFICER)
    # the public query is the coordinator's
    with pytest.raises(PermissionDenied, match="only the platform coordinator"):
        office.public_entries(PublicQuery(subject_kind=PERSON, subject_id=BOB), caller=OFFICER)
    coordinator = PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator")
    page = office.public_entries(
        PublicQuery(subject_kind=PERSON, subject_id=BOB), caller=coordinator
    )
    assert [e.entry_id for e in page.entries] == ["J-2"]
    entries = audit_lines(tmp_path)
    text = (tmp_path / "audit.jsonl").read_text("ascii")
    assert ALICE not in text and BOB not in text and ALICE[:-1] not in text
    assert [e["decision"] for e in entries] == ["deny"] * 15 + ["allow"] * 3 + ["deny"] * 2 + [
        "allow"
    ]
    publish, withdraw, history, bad, public_denied, public = entries[15:]
    assert publish["purpose"] == "list_publication" and publish["requester"] == "operator:court"
    assert publish["extra"] == {"entries": 2, "published": 2, "unchanged": 0}
    assert len(publish["subject_hashes"]) == 2  # type: ignore[arg-type]
    assert withdraw["extra"] == {"entry_id": "J-1", "withdraw_reason": "repaired"}
    assert withdraw["subject_hash"] == history["subject_hash"] != ""
    assert bad["reason"] == "InvalidArgument: entries[0].subject_id failed validation"
    assert public_denied["purpose"] == public["purpose"] == "public_list_query"
    assert public["extra"] == {"entries": 1}
    assert len({e["query_id"] for e in entries}) == len(entries)
    # an entry id that reads as a resident id is withheld from the log, message and all
    with pytest.raises(NotFound):
        office.withdraw(ALICE, reason=WithdrawReason.ERROR, reference="x", caller=OFFICER)
    withheld = audit_lines(tmp_path)[-1]
    assert withheld["extra"]["entry_id"] == "(withheld: reads as a resident id)"  # type: ignore[index]
    assert withheld["reason"] == "NotFound: entry_id failed validation"
    assert ALICE not in (tmp_path / "audit.jsonl").read_text("ascii")


# --- publication files -----------------------------------------------------------------------

HEADER = "entry_id,list,subject_kind,subject_id,subject_name,reason,window_start,window_end\n"


def test_a_publication_file_is_checked_row_by_row(tmp_path: Path, catalogue: Catalogue) -> None:
    path = tmp_path / "defaulters.csv"
    path.write_text(
        HEADER
        + f"J-1,judgement_defaulters,person,{ALICE},Zhang San,unpaid,2026-03-01,2026-09-01\n"
        + f"J-2,judgement_defaulters,enterprise,{ACME},Acme,unpaid,2026-03-01,2026-09-01\n",
        encoding="utf-8",
    )
    publication = read_publication(path, catalogue=catalogue, department="court", today=TODAY)
    assert [e.entry_id for e in publication.entries] == ["J-1", "J-2"]
    assert publication.lines == (2, 3) and publication.unit == "line"
    refused = InvalidArgument("already published", field="entries[1].entry_id")
    located = publication.locate(refused)
    assert located.field == "entry_id" and str(path) + ", line 3" in located.message
    path.write_text(
        HEADER
        + f"J-1,judgement_defaulters,person,{ALICE},Zhang San,unpaid,2026-03-01,2026-09-01\n"
        + f"J-2,judgement_defaulters,alien,{ACME},Acme,unpaid,2026-03-01,2026-09-01\n"
        + f"J-1,judgement_defaulters,person,{BOB},Li Si,unpaid,2026-03-01,2026-09-01\n"
        + f"J-4,major_tax_violators,person,{BOB},Li Si,unpaid,2026-03-01,2026-09-01\n"
        + f"J-5,judgement_defaulters,person,{BOB},Li Si,unpaid,2026-03-01,2031-09-01\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportRejected) as caught:
        read_publication(path, catalogue=catalogue, department="court", today=TODAY)
    assert [(line, field) for line, field, _ in caught.value.problems] == [
        (3, "subject_kind"),
        (4, "entry_id"),
        (5, "list"),
        (6, "window_end"),
    ]
    assert "nothing was published" in caught.value.message
    path.write_text("entry_id,list\nJ-1,judgement_defaulters\n", encoding="utf-8")
    with pytest.raises(ImportRejected) as header:
        read_publication(path, catalogue=catalogue, department="court", today=TODAY)
    assert {field for _, field, _ in header.value.problems} >= {"subject_id", "window_end"}


# --- the node's start-up check -----------------------------------------------------------------

#: a court flag that no court rule sets, and a black list whose entries set it
LISTED_ONLY = """
[[flag]]
id = "court_listed"
department = "court"
name = "Listed by the court"
name_zh = "法院公示"
measures = ["high_consumption"]

[[list]]
id = "court_special"
department = "court"
colour = "black"
name = "Special court list"
name_zh = "专项名单"
subject_kinds = ["person"]
legal_basis = "A court rule"
max_window = "1y"
flag = "court_listed"
"""


def test_a_flag_only_a_list_sets_is_set_by_something(tmp_path: Path) -> None:
    path = tmp_path / "catalogue.toml"
    path.write_text(default_catalogue_path().read_text(encoding="utf-8") + LISTED_ONLY, "utf-8")
    catalogue = load_catalogue(path)
    rules = load_default_rules("court", catalogue=catalogue)
    policy = ReloadablePolicy.from_file(Path(__file__).resolve().parents[2] / "policies/node.cedar")
    verifier = TokenVerifier(
        public_key=Ed25519PrivateKey.generate().public_key(), replay_cache=ReplayCache()
    )
    with (
        RecordStore(tmp_path / "court.duckdb", department=COURT) as records,
        ListStore(tmp_path / LISTS_FILE, department=COURT, catalogue=catalogue) as lists,
        AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as audit,
    ):
        parts = {
            "department": catalogue.department("court"),
            "catalogue": catalogue,
            "store": records,
            "rules": rules,
            "policy": policy,
            "verifier": verifier,
            "audit": audit,
        }
        encryptors = EncryptorCache()
        try:
            # without its lists the node has nothing that sets court_listed: refused
            with pytest.raises(ConfigError, match="no rule sets court_listed"):
                NodeService(**parts, encryptors=encryptors)  # type: ignore[arg-type]
            node = NodeService(**parts, encryptors=encryptors, lists=lists)  # type: ignore[arg-type]
            assert node.list_office().store is lists
        finally:
            encryptors.close()
        lists.publish([draft("S-1", list_id="court_special")], actor="court", today=TODAY)
        assert lists.flags_in_view(PERSON, ALICE, TODAY) == {"court_listed"}
