"""The list change feed tests' shared ground: the court's store, list office and an honest page of
its feed, and the coordinator's feed reading from them; the helpers that ask, check and read."""

from __future__ import annotations

import datetime
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from certs import PeerRole
from coordinator.context import CoordinatorContext
from coordinator.list_changes import ListChangeFeed, check_changes
from coordinator.nodes import ListChangesAnswer, NodeFailure, NodePool
from coordinator.ratelimit import RateLimiter
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.lists import LISTS_FILE, FeedEvent, ListStore
from node.office import ListOffice
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import Unavailable
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.lists import (
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    PublicEntry,
    WithdrawReason,
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
    ChangesQuery,
    EntryDraft,
    change_from_pb,
    changes_query_to_proto,
    withdraw_reason_from_pb,
)
from osmanthus.core.wire.lists import changes_query_from_proto as changes_query
from osmanthus.core.wire.lists import list_changes_page_to_proto as list_changes_response
from osmanthus.v1 import lists_pb2, node_pb2

CATALOGUE = load_catalogue()
COURT = DepartmentId("court")
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
#: valid both as a credit code and as a resident id (see osmanthus/core/syncbatch_checks.py
#: _credit_code)
TWOFOLD = "21638519571115301X"
#: a credit-repair decision number: in the officer's history, never in the feed
REFERENCE = "REPAIR-2026-0042"
PUB, WDR = ListChange.PUBLISHED, ListChange.WITHDRAWN
COORDINATOR = PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator")


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


def _node_withheld(message: lists_pb2.ListChangesResponse, position: int, words: str) -> None:
    """Event `position` as a node withholds it: no entry, its id and a withdrawal's reason."""
    event = message.events[position]
    assert not event.HasField("entry") or event.entry_id == event.entry.entry_id
    event.ClearField("entry")
    event.withheld = words


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
