"""A department's list change feed end to end: the court's list officer publishes and withdraws
at its real node, and the provincial sync job reads the court's feed through the coordinator over
mutual TLS, every event checked on the way; nobody else may read it.

Every subject here is one the seed does not hold and no other module uses; the module withdraws
whatever it left in view, so the shared federation answers as before for every other test.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from coordinator.config import NodeEndpoint
from node.lists import LISTS_FILE, ListStore
from node.officer import ListOfficer
from node.server import prepare_state_dir
from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument, PermissionDenied, Unavailable
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.ids import (
    make_resident_id,
    make_uscc,
    mask_subject,
    organisation_code_check_char,
)
from osmanthus.core.lists import (
    FEED_ID_PATTERN,
    EntryId,
    EntryStatus,
    ListChange,
    NewEntry,
    WithdrawReason,
)
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.types import DepartmentId, Role, SubjectId, SubjectKind
from osmanthus.core.wire.lists import EntryDraft
from osmanthus.v1 import coordinator_pb2_grpc, lists_pb2
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.integration.test_scores_match_plaintext import subjects

COURT = "court"
PREFIX = "LC-"
#: the credit-repair decision number: in the officer's history, never in the feed
REFERENCE = "LC-REPAIR-2026-7"
PERSON = make_resident_id(region="320507", birth=date(1966, 7, 8), sequence=931)
OTHER = make_resident_id(region="320508", birth=date(1971, 2, 3), sequence=77)


def _firm(n: int) -> SubjectId:
    first8 = f"K{n:07d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )


FIRM = _firm(6101)


@pytest.fixture(scope="module", autouse=True)
def unseeded(federation: Federation) -> None:
    """Only this module's list entries can name these subjects."""
    seeded = set(subjects(federation, "person")) | set(subjects(federation, "enterprise"))
    assert not seeded & {PERSON, FIRM}


@pytest.fixture(scope="module")
def court(federation: Federation, list_officers: dict[str, TlsFiles]) -> Iterator[ListOfficer]:
    """The court's list officer at its node."""
    officer = ListOfficer(
        f"127.0.0.1:{federation.nodes[COURT].port}", department=COURT, tls=list_officers[COURT]
    )
    yield officer
    for kind, subject in ((SubjectKind.PERSON, PERSON), (SubjectKind.ENTERPRISE, FIRM)):
        for entry in officer.history(kind, subject):
            if entry.status in (EntryStatus.IN_VIEW, EntryStatus.SCHEDULED):
                officer.withdraw(
                    entry.entry.entry_id, reason=WithdrawReason.ERROR, reference="cleanup"
                )
    officer.close()


@pytest.fixture(scope="module")
def sync(federation: Federation) -> Iterator[Client]:
    """The provincial sync job."""
    with federation.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as c:
        yield c


def _entry(entry_id: str, kind: SubjectKind, subject: str, *, start: date, end: date) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(PREFIX + entry_id),
        list="judgement_defaulters",
        subject_kind=kind,
        subject_id=SubjectId(subject),
        subject_name="Feed subject",
        legal_basis="",
        reason="failed to perform an effective judgement",
        window_start=start,
        window_end=end,
    )


def _raw(
    federation: Federation,
    request: lists_pb2.ListChangesRequest,
    *,
    requester: str,
    role: Role,
) -> tuple[lists_pb2.ListChangesResponse | None, grpc.RpcError | None]:
    """ListChanges straight on the wire, past the SDK's own checks."""
    token = federation.token(requester, role=role, purposes=["credit_rescoring"])
    with secure_channel(
        federation.target, federation.tls(requester), server_name=COORDINATOR_SERVER_NAME
    ) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        try:
            reply: lists_pb2.ListChangesResponse = stub.ListChanges(
                request, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.RpcError as exc:
            return None, exc
    return reply, None


def _audit(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_the_sync_job_reads_publications_then_only_the_new_withdrawal(
    federation: Federation, court: ListOfficer, sync: Client
) -> None:
    # where the court's feed stands now: other modules publish at the court too
    start = ""
    for event in sync.list_changes_all(COURT):
        start = event.cursor
    today = china_today()
    court.publish(
        [
            _entry("person", SubjectKind.PERSON, PERSON, start=today, end=today + timedelta(30)),
            # a window already over is in the feed too: it reports what happened
            _entry("firm-past", SubjectKind.ENTERPRISE, FIRM, start=today - timedelta(60),
                   end=today - timedelta(1)),
        ]
    )  # fmt: skip
    page = sync.list_changes(COURT, after=start)
    assert [(e.entry.entry_id if e.entry else "", e.event) for e in page.events] == [
        ("LC-person", ListChange.PUBLISHED),
        ("LC-firm-past", ListChange.PUBLISHED),
    ]
    first, second = page.events
    assert int(start or 0) < int(first.cursor) < int(second.cursor)
    assert (page.department, page.next_cursor, page.more) == (COURT, second.cursor, False)
    assert first.entry is not None and second.entry is not None
    assert first.entry.subject_id == mask_subject(PERSON) != PERSON
    assert second.entry.subject_id == FIRM and second.entry.window_end < today
    assert first.withdraw_reason is None and first.at.tzinfo is not None
    court.withdraw("LC-person", reason=WithdrawReason.REPAIRED, reference=REFERENCE)
    (withdrawn,) = sync.list_changes(COURT, after=page.next_cursor).events
    assert (withdrawn.entry, withdrawn.event) == (first.entry, ListChange.WITHDRAWN)
    assert withdrawn.withdraw_reason is WithdrawReason.REPAIRED
    assert int(withdrawn.cursor) > int(second.cursor) and withdrawn.at >= first.at
    # a page of one at a time says more follow
    one = sync.list_changes(COURT, after=start, page_size=1)
    assert [e.cursor for e in one.events] == [first.cursor] and one.more
    # on the wire: the masked id only, and never the withdrawal's reference
    reply, _ = _raw(
        federation,
        lists_pb2.ListChangesRequest(department=COURT, after=start),
        requester="sync-1",
        role=Role.SYNC_JOB,
    )
    assert reply is not None and len(reply.events) == 3
    wire = reply.SerializeToString()
    assert PERSON.encode() not in wire and REFERENCE.encode() not in wire
    # both the coordinator and the node (the data controller) audit who read the feed
    read = [
        e
        for e in _audit(federation.state_dir / "coordinator" / "audit.jsonl")
        if e["shape"] == "list_changes" and e["decision"] == "allow"
    ]
    assert read[-1]["requester"] == "sync-1"
    assert read[-1]["extra"] == {
        "department": COURT,
        "after": start,
        "events": 3,
        "withheld": 0,
        "next_cursor": withdrawn.cursor,
        "feed_id": page.feed_id,
    }
    # one feed throughout: the court's list store was made once
    assert FEED_ID_PATTERN.fullmatch(page.feed_id) and reply.feed_id == page.feed_id
    node = [
        e
        for e in _audit(federation.node_configs[COURT].state_dir / "audit.jsonl")
        if e["purpose"] == "list_change_feed"
    ]
    assert node[-1]["requester"] == "coordinator:coordinator"
    assert node[-1]["extra"]["on_behalf_of"] == "sync-1"  # type: ignore[index]
    assert node[-1]["extra"]["feed_id"] == page.feed_id  # type: ignore[index]


def test_only_the_sync_job_may_read_the_feed(federation: Federation) -> None:
    for requester, role in (("agency-1", Role.CREDIT_AGENCY), ("registrar", Role.PLATFORM_SERVICE)):
        _, error = _raw(
            federation, lists_pb2.ListChangesRequest(department=COURT), requester=requester,
            role=role,
        )  # fmt: skip
        assert error is not None and error.code() is grpc.StatusCode.PERMISSION_DENIED
        assert 'no policy permits Action::"ReadListChanges"' in str(error.details())
    with (
        federation.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"]) as c,
        pytest.raises(PermissionDenied),
    ):
        c.list_changes(COURT)


def test_a_department_without_lists_is_refused_naming_the_field(
    federation: Federation, sync: Client
) -> None:
    _, error = _raw(
        federation,
        lists_pb2.ListChangesRequest(department="psb"),
        requester="sync-1",
        role=Role.SYNC_JOB,
    )
    assert error is not None and error.code() is grpc.StatusCode.INVALID_ARGUMENT
    refused = error_from_rpc(error)
    assert refused.field == "department" and "psb publishes no red or black list" in str(refused)
    _, error = _raw(
        federation,
        lists_pb2.ListChangesRequest(department=COURT, after="x1"),
        requester="sync-1",
        role=Role.SYNC_JOB,
    )
    assert error is not None and error_from_rpc(error).field == "after"
    # the SDK says so before asking
    with pytest.raises(InvalidArgument, match="'psb' publishes no red or black list") as caught:
        sync.list_changes("psb")
    assert caught.value.field == "department"
    with pytest.raises(InvalidArgument) as caught:
        sync.list_changes(COURT, page_size=1001)
    assert caught.value.field == "page_size"


#: a text holding a full resident id, which an older node stored (today's refuse it)
OLD_REASON = f"owes since the ruling on {OTHER}"


@pytest.fixture(scope="module")
def samr_down(
    tmp_path_factory: pytest.TempPathFactory,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[tuple[Federation, str]]:
    """The court's node, and the market regulator's registered but down; and the court's
    feed id. The court's list store holds an entry, then one an older node stored whose reason
    holds a full resident id, then another entry, then the withdrawal of the second."""
    base = tmp_path_factory.mktemp("list-changes-down")
    catalogue = restricted_catalogue(("court", "samr"))
    state = base / "state" / COURT
    prepare_state_dir(state)
    with ListStore(
        state / LISTS_FILE, department=DepartmentId(COURT), catalogue=catalogue
    ) as store:
        today = china_today()
        first = _entry("old-1", SubjectKind.ENTERPRISE, FIRM, start=today, end=today + timedelta(9))
        store.publish([EntryDraft.of(first)], actor=COURT, today=today)
        store._insert(
            [dataclasses.replace(first, entry_id=EntryId("LC-old-2"), reason=OLD_REASON)],
            at=datetime(2026, 3, 1),
            actor=COURT,
        )
        last = dataclasses.replace(first, entry_id=EntryId("LC-old-3"))
        store.publish([EntryDraft.of(last)], actor=COURT, today=today)
        # the documented remedy for an entry failing today's checks: withdraw it
        store.withdraw(
            "LC-old-2",
            reason=WithdrawReason.REPAIRED,
            reference=REFERENCE,
            actor=COURT,
            today=today,
        )
        feed_id = store.feed_id
    fed = start_federation(
        base,
        catalogue=restricted_catalogue(("court", "samr")),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=("court",),
        extra_endpoints=[NodeEndpoint(DepartmentId("samr"), "127.0.0.1:1")],
        deadline_s=2.0,
    )
    yield fed, feed_id
    stop_federation(fed)


def test_a_department_down_is_unavailable_naming_it(samr_down: tuple[Federation, str]) -> None:
    fed, _ = samr_down
    with fed.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        with pytest.raises(Unavailable, match=r"^samr, asked for its list changes: ") as caught:
            sync.list_changes("samr")
        assert caught.value.retryable
        # the others answer meanwhile
        assert sync.list_changes(COURT).department == COURT


def test_an_entry_failing_todays_checks_comes_withheld_and_the_feed_goes_on(
    samr_down: tuple[Federation, str],
) -> None:
    fed, feed_id = samr_down
    with fed.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        page = sync.list_changes(COURT)
        events = list(sync.list_changes_all(COURT, page_size=1))
    assert page.feed_id == feed_id
    assert [(e.cursor, e.entry.entry_id if e.entry else None, e.withheld) for e in events] == [
        ("1", "LC-old-1", ""),
        ("2", None, "a text field reads as a resident identity number"),
        ("3", "LC-old-3", ""),
        ("4", None, "a text field reads as a resident identity number"),
    ]
    assert events == list(page.events)
    assert events[1].event is ListChange.PUBLISHED and events[1].withdraw_reason is None
    reply, _ = _raw(
        fed, lists_pb2.ListChangesRequest(department=COURT), requester="sync-1", role=Role.SYNC_JOB
    )
    assert reply is not None and reply.feed_id == feed_id
    assert not reply.events[1].HasField("entry")
    wire = reply.SerializeToString()
    assert OTHER.encode() not in wire and b"owes since" not in wire
    for log in (
        fed.state_dir / "coordinator" / "audit.jsonl",
        fed.node_configs[COURT].state_dir / "audit.jsonl",
    ):
        assert OTHER not in log.read_text("utf-8")


def test_a_withheld_withdrawal_names_the_entry_it_closes(
    samr_down: tuple[Federation, str],
) -> None:
    """The review's case: the sync job must learn which entry a withheld withdrawal closes,
    or it reports the entry expired years later."""
    fed, _ = samr_down
    with fed.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        events = list(sync.list_changes_all(COURT))
    published, withdrawn = events[1], events[3]
    assert (published.event, published.entry, published.entry_id) == (
        ListChange.PUBLISHED,
        None,
        "LC-old-2",
    )
    assert published.withdraw_reason is None
    assert (withdrawn.event, withdrawn.entry, withdrawn.entry_id) == (
        ListChange.WITHDRAWN,
        None,
        "LC-old-2",
    )
    assert withdrawn.withdraw_reason is WithdrawReason.REPAIRED
    # an event with its entry names the same id beside it
    assert [e.entry_id for e in events] == ["LC-old-1", "LC-old-2", "LC-old-3", "LC-old-2"]
    reply, _ = _raw(
        fed,
        lists_pb2.ListChangesRequest(department=COURT, after="3"),
        requester="sync-1",
        role=Role.SYNC_JOB,
    )
    assert reply is not None
    (wire,) = reply.events
    assert not wire.HasField("entry")
    assert (wire.entry_id, wire.withdraw_reason) == ("LC-old-2", lists_pb2.WITHDRAW_REASON_REPAIRED)
    # nothing else of the entry, and never the withdrawal's reference
    text = reply.SerializeToString()
    for value in (OTHER, "owes since", "Feed subject", FIRM, REFERENCE):
        assert value.encode() not in text
