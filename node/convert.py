"""Conversion between node protobuf messages and the node's typed Python values."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import TypeVar

from google.protobuf import timestamp_pb2

from node.lists import ChangesQuery, EntryDraft, PublicPage, PublicQuery, PublishResult
from node.service import (
    ChunkRequest,
    ChunkResult,
    ContributionRequest,
    ContributionResult,
    NodeDescription,
    StatsRequest,
    StatsResult,
)
from osmanthus.catalogue import ListColour
from osmanthus.errors import InvalidArgument
from osmanthus.lists import (
    EntryId,
    EntryStatus,
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    ListEntry,
    ListEvent,
    NewEntry,
    PublicEntry,
    WithdrawReason,
    parse_date,
)
from osmanthus.types import DepartmentId, Shape, SubjectKind
from osmanthus.v1 import common_pb2, lists_pb2, node_pb2

T = TypeVar("T")

_KIND_FROM_PB: dict[int, SubjectKind] = {
    common_pb2.SUBJECT_KIND_PERSON: SubjectKind.PERSON,
    common_pb2.SUBJECT_KIND_ENTERPRISE: SubjectKind.ENTERPRISE,
}
KIND_TO_PB: dict[SubjectKind, common_pb2.SubjectKind] = {
    SubjectKind.PERSON: common_pb2.SUBJECT_KIND_PERSON,
    SubjectKind.ENTERPRISE: common_pb2.SUBJECT_KIND_ENTERPRISE,
}
_SHAPE_FROM_PB: dict[int, Shape] = {
    common_pb2.SHAPE_BREAKDOWN: Shape.BREAKDOWN,
    common_pb2.SHAPE_TOTAL: Shape.TOTAL,
    common_pb2.SHAPE_THRESHOLD: Shape.THRESHOLD,
    common_pb2.SHAPE_FLAGS: Shape.FLAGS,
}
SHAPE_TO_PB: dict[Shape, common_pb2.Shape] = {
    Shape.BREAKDOWN: common_pb2.SHAPE_BREAKDOWN,
    Shape.TOTAL: common_pb2.SHAPE_TOTAL,
    Shape.THRESHOLD: common_pb2.SHAPE_THRESHOLD,
    Shape.FLAGS: common_pb2.SHAPE_FLAGS,
}


def kind_from_pb(value: int) -> SubjectKind | None:
    return _KIND_FROM_PB.get(value)


def consent_kind_from_pb(value: int) -> SubjectKind | None:
    """A consent's subject kind, None if unknown: unspecified is a person, since consents
    were persons' only before enterprises could give one (a tax-bank loan's)."""
    if value == common_pb2.SUBJECT_KIND_UNSPECIFIED:
        return SubjectKind.PERSON
    return _KIND_FROM_PB.get(value)


def shape_from_pb(value: int) -> Shape | None:
    return _SHAPE_FROM_PB.get(value)


def contribution_request(message: node_pb2.ContributeRequest) -> ContributionRequest:
    return ContributionRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        consent_id=message.consent_id,
        public_key=message.public_key.n,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        measures=tuple(message.measures),
    )


def contribute_request_message(request: ContributionRequest) -> node_pb2.ContributeRequest:
    return node_pb2.ContributeRequest(
        query_id=request.query_id,
        subject_kind=(
            KIND_TO_PB[request.subject_kind]
            if request.subject_kind
            else common_pb2.SUBJECT_KIND_UNSPECIFIED
        ),
        subject_id=request.subject_id,
        shape=SHAPE_TO_PB[request.shape] if request.shape else common_pb2.SHAPE_UNSPECIFIED,
        purpose=request.purpose,
        consent_id=request.consent_id,
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        measures=list(request.measures),
    )


def contribution_response(result: ContributionResult) -> node_pb2.ContributeResponse:
    return node_pb2.ContributeResponse(
        department=result.department,
        ciphertext=common_pb2.Ciphertext(value=result.ciphertext),
        single_source_allowed=result.single_source_allowed,
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
        flag_counts=[common_pb2.Ciphertext(value=c) for c in result.flag_counts],
    )


def contribution_result(message: node_pb2.ContributeResponse) -> ContributionResult:
    return ContributionResult(
        department=DepartmentId(message.department),
        ciphertext=message.ciphertext.value,
        single_source_allowed=message.single_source_allowed,
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
        flag_counts=tuple(c.value for c in message.flag_counts),
    )


def _kind_pb(kind: SubjectKind | None) -> common_pb2.SubjectKind:
    return KIND_TO_PB[kind] if kind else common_pb2.SUBJECT_KIND_UNSPECIFIED


def _shape_pb(shape: Shape | None) -> common_pb2.Shape:
    return SHAPE_TO_PB[shape] if shape else common_pb2.SHAPE_UNSPECIFIED


def chunk_request(message: node_pb2.ContributeChunkRequest) -> ChunkRequest:
    return ChunkRequest(
        query_id=message.query_id,
        chunk=message.chunk,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=tuple(message.subject_ids),
        shape=shape_from_pb(message.shape),
        purpose=message.purpose,
        public_key=message.public_key.n,
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        subjects_per_ciphertext=message.subjects_per_ciphertext,
    )


def chunk_request_message(request: ChunkRequest) -> node_pb2.ContributeChunkRequest:
    return node_pb2.ContributeChunkRequest(
        query_id=request.query_id,
        chunk=request.chunk,
        subject_kind=_kind_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        shape=_shape_pb(request.shape),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        subjects_per_ciphertext=request.subjects_per_ciphertext,
    )


def chunk_response(result: ChunkResult) -> node_pb2.ContributeChunkResponse:
    return node_pb2.ContributeChunkResponse(
        department=result.department,
        chunk=result.chunk,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def chunk_result(message: node_pb2.ContributeChunkResponse) -> ChunkResult:
    return ChunkResult(
        department=DepartmentId(message.department),
        chunk=message.chunk,
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def stats_request(message: node_pb2.ContributeStatsRequest) -> StatsRequest:
    return StatsRequest(
        query_id=message.query_id,
        subject_kind=kind_from_pb(message.subject_kind),
        subject_ids=tuple(message.subject_ids),
        purpose=message.purpose,
        public_key=message.public_key.n,
        statistics=tuple(message.statistics),
        slots=tuple(message.slots),
        slot_widths=tuple(message.slot_widths),
        slot_bounds=tuple(message.slot_bounds),
    )


def stats_request_message(request: StatsRequest) -> node_pb2.ContributeStatsRequest:
    return node_pb2.ContributeStatsRequest(
        query_id=request.query_id,
        subject_kind=_kind_pb(request.subject_kind),
        subject_ids=list(request.subject_ids),
        purpose=request.purpose,
        public_key=common_pb2.PaillierPublicKey(n=request.public_key),
        statistics=list(request.statistics),
        slots=list(request.slots),
        slot_widths=list(request.slot_widths),
        slot_bounds=list(request.slot_bounds),
    )


def stats_response(result: StatsResult) -> node_pb2.ContributeStatsResponse:
    return node_pb2.ContributeStatsResponse(
        department=result.department,
        ciphertexts=[common_pb2.Ciphertext(value=c) for c in result.ciphertexts],
        rules_version=result.rules_version,
        policy_hash=result.policy_hash,
    )


def stats_result(message: node_pb2.ContributeStatsResponse) -> StatsResult:
    return StatsResult(
        department=DepartmentId(message.department),
        ciphertexts=tuple(c.value for c in message.ciphertexts),
        rules_version=message.rules_version,
        policy_hash=message.policy_hash,
    )


def node_info(description: NodeDescription) -> node_pb2.NodeInfo:
    dept = description.department
    return node_pb2.NodeInfo(
        department=dept.id,
        name=f"{dept.name} {dept.name_zh}",
        subject_kinds=[KIND_TO_PB[k] for k in sorted(dept.subject_kinds, key=lambda k: k.value)],
        rules_version=description.rules_version,
        rules_digest=description.rules_digest,
        policy_hash=description.policy_hash,
        owned_categories=list(description.owned_categories),
        software_version=description.software_version,
    )


# --- red and black lists ----------------------------------------------------------------------

_COLOUR_TO_PB: dict[ListColour, lists_pb2.ListColour] = {
    ListColour.RED: lists_pb2.LIST_COLOUR_RED,
    ListColour.BLACK: lists_pb2.LIST_COLOUR_BLACK,
}
_COLOUR_FROM_PB: dict[int, ListColour] = {v: k for k, v in _COLOUR_TO_PB.items()}
_REASON_TO_PB: dict[WithdrawReason, lists_pb2.WithdrawReason] = {
    WithdrawReason.REPAIRED: lists_pb2.WITHDRAW_REASON_REPAIRED,
    WithdrawReason.REVOKED: lists_pb2.WITHDRAW_REASON_REVOKED,
    WithdrawReason.ERROR: lists_pb2.WITHDRAW_REASON_ERROR,
}
_REASON_FROM_PB: dict[int, WithdrawReason] = {v: k for k, v in _REASON_TO_PB.items()}
_STATUS_TO_PB: dict[EntryStatus, lists_pb2.EntryStatus] = {
    EntryStatus.SCHEDULED: lists_pb2.ENTRY_STATUS_SCHEDULED,
    EntryStatus.IN_VIEW: lists_pb2.ENTRY_STATUS_IN_VIEW,
    EntryStatus.EXPIRED: lists_pb2.ENTRY_STATUS_EXPIRED,
    EntryStatus.WITHDRAWN: lists_pb2.ENTRY_STATUS_WITHDRAWN,
}
_STATUS_FROM_PB: dict[int, EntryStatus] = {v: k for k, v in _STATUS_TO_PB.items()}


def withdraw_reason_from_pb(value: int) -> WithdrawReason | None:
    return _REASON_FROM_PB.get(value)


def entry_drafts(message: lists_pb2.PublishEntriesRequest) -> tuple[EntryDraft, ...]:
    return tuple(
        EntryDraft(
            entry_id=e.entry_id,
            list=e.list,
            subject_kind=kind_from_pb(e.subject_kind),
            subject_id=e.subject_id,
            subject_name=e.subject_name,
            legal_basis=e.legal_basis,
            reason=e.reason,
            window_start=e.window_start,
            window_end=e.window_end,
        )
        for e in message.entries
    )


def new_entry_message(entry: NewEntry) -> lists_pb2.NewEntry:
    return lists_pb2.NewEntry(
        entry_id=entry.entry_id,
        list=entry.list,
        subject_kind=KIND_TO_PB[entry.subject_kind],
        subject_id=entry.subject_id,
        subject_name=entry.subject_name,
        legal_basis=entry.legal_basis,
        reason=entry.reason,
        window_start=entry.window_start.isoformat(),
        window_end=entry.window_end.isoformat(),
    )


def publish_request(entries: Sequence[lists_pb2.NewEntry]) -> lists_pb2.PublishEntriesRequest:
    return lists_pb2.PublishEntriesRequest(entries=list(entries))


def publish_response(result: PublishResult) -> lists_pb2.PublishEntriesResponse:
    return lists_pb2.PublishEntriesResponse(published=result.published, unchanged=result.unchanged)


def publish_result(message: lists_pb2.PublishEntriesResponse) -> PublishResult:
    return PublishResult(published=message.published, unchanged=message.unchanged)


def withdraw_request(
    entry_id: str, *, reason: WithdrawReason, reference: str
) -> lists_pb2.WithdrawEntryRequest:
    return lists_pb2.WithdrawEntryRequest(
        entry_id=entry_id, reason=_REASON_TO_PB[reason], reference=reference
    )


def history_request(kind: SubjectKind, subject_id: str) -> lists_pb2.HistoryRequest:
    return lists_pb2.HistoryRequest(subject_kind=KIND_TO_PB[kind], subject_id=subject_id)


def public_entry_message(entry: PublicEntry) -> lists_pb2.PublicEntry:
    return lists_pb2.PublicEntry(
        entry_id=entry.entry_id,
        department=entry.department,
        list=entry.list,
        colour=_COLOUR_TO_PB[entry.colour],
        subject_kind=KIND_TO_PB[entry.subject_kind],
        subject_id=entry.subject_id,
        subject_name=entry.subject_name,
        legal_basis=entry.legal_basis,
        reason=entry.reason,
        window_start=entry.window_start.isoformat(),
        window_end=entry.window_end.isoformat(),
        facilitation_class=entry.facilitation_class or "",
    )


def _required(value: T | None, what: str, field: str) -> T:
    if value is None:
        raise InvalidArgument(f"the node sent no {what}", field=field)
    return value


def public_entry(message: lists_pb2.PublicEntry, *, field: str = "entry") -> PublicEntry:
    """A node's PublicEntry; InvalidArgument (naming `field`) for one no node would send."""
    colour = _COLOUR_FROM_PB.get(message.colour)
    kind = kind_from_pb(message.subject_kind)
    return PublicEntry(
        entry_id=EntryId(message.entry_id),
        department=DepartmentId(message.department),
        list=message.list,
        colour=_required(colour, "list colour", f"{field}.colour"),
        subject_kind=_required(kind, "subject kind", f"{field}.subject_kind"),
        subject_id=message.subject_id,
        subject_name=message.subject_name,
        legal_basis=message.legal_basis,
        reason=message.reason,
        window_start=parse_date(message.window_start, field=f"{field}.window_start"),
        window_end=parse_date(message.window_end, field=f"{field}.window_end"),
        facilitation_class=message.facilitation_class or None,
    )


def _timestamp(value: datetime.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(datetime.UTC))
    return ts


def list_entry_message(entry: ListEntry) -> lists_pb2.ListEntry:
    return lists_pb2.ListEntry(
        entry=public_entry_message(entry.entry),
        status=_STATUS_TO_PB[entry.status],
        withdraw_reason=(
            _REASON_TO_PB[entry.withdraw_reason]
            if entry.withdraw_reason is not None
            else lists_pb2.WITHDRAW_REASON_UNSPECIFIED
        ),
        withdraw_reference=entry.withdraw_reference,
        events=[
            lists_pb2.ListEvent(at=_timestamp(e.at), event=e.event, actor=e.actor, detail=e.detail)
            for e in entry.events
        ],
    )


def list_entry(message: lists_pb2.ListEntry, *, field: str = "entry") -> ListEntry:
    status = _STATUS_FROM_PB.get(message.status)
    entry = public_entry(message.entry, field=f"{field}.entry")
    return ListEntry(
        # the list officer sees the entry as stored: the subject id in full
        entry=entry,
        status=_required(status, "entry status", f"{field}.status"),
        withdraw_reason=withdraw_reason_from_pb(message.withdraw_reason),
        withdraw_reference=message.withdraw_reference,
        events=tuple(
            ListEvent(
                at=e.at.ToDatetime(tzinfo=datetime.UTC),
                event=e.event,
                actor=e.actor,
                detail=e.detail,
            )
            for e in message.events
        ),
    )


def history_response(entries: Sequence[ListEntry]) -> lists_pb2.HistoryResponse:
    return lists_pb2.HistoryResponse(entries=[list_entry_message(e) for e in entries])


def history_entries(message: lists_pb2.HistoryResponse) -> tuple[ListEntry, ...]:
    return tuple(list_entry(e, field=f"entries[{i}]") for i, e in enumerate(message.entries))


def public_query(message: lists_pb2.PublicEntriesRequest) -> PublicQuery:
    return PublicQuery(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        list=message.list,
        page_size=message.page_size,
        page_token=message.page_token,
    )


def public_query_message(query: PublicQuery) -> lists_pb2.PublicEntriesRequest:
    return lists_pb2.PublicEntriesRequest(
        subject_kind=_kind_pb(query.subject_kind),
        subject_id=query.subject_id,
        list=query.list,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def public_page_message(page: PublicPage) -> lists_pb2.PublicEntriesResponse:
    return lists_pb2.PublicEntriesResponse(
        entries=[public_entry_message(e) for e in page.entries],
        next_page_token=page.next_page_token,
    )


def public_page(message: lists_pb2.PublicEntriesResponse) -> PublicPage:
    return PublicPage(
        entries=tuple(
            public_entry(e, field=f"entries[{i}]") for i, e in enumerate(message.entries)
        ),
        next_page_token=message.next_page_token,
    )


# --- a department's change feed ----------------------------------------------------------------

CHANGE_TO_PB: dict[ListChange, lists_pb2.ListChangeKind] = {
    ListChange.PUBLISHED: lists_pb2.LIST_CHANGE_KIND_PUBLISHED,
    ListChange.WITHDRAWN: lists_pb2.LIST_CHANGE_KIND_WITHDRAWN,
}
_CHANGE_FROM_PB: dict[int, ListChange] = {v: k for k, v in CHANGE_TO_PB.items()}


def change_from_pb(value: int) -> ListChange | None:
    """PUBLISHED or WITHDRAWN; None for anything else (a node never reports EXPIRED)."""
    return _CHANGE_FROM_PB.get(value)


def changes_query(message: node_pb2.NodeListChangesRequest) -> ChangesQuery:
    return ChangesQuery(
        department=message.request.department,
        after=message.request.after,
        page_size=message.request.page_size,
        requester=message.requester,
    )


def changes_query_message(query: ChangesQuery) -> node_pb2.NodeListChangesRequest:
    return node_pb2.NodeListChangesRequest(
        request=lists_pb2.ListChangesRequest(
            department=query.department, after=query.after, page_size=query.page_size
        ),
        requester=query.requester,
    )


def list_change_message(event: ListChangeEvent) -> lists_pb2.ListChange:
    message = lists_pb2.ListChange(
        cursor=event.cursor,
        event=CHANGE_TO_PB[event.event],
        at=_timestamp(event.at),
        withdraw_reason=(
            _REASON_TO_PB[event.withdraw_reason]
            if event.withdraw_reason is not None
            else lists_pb2.WITHDRAW_REASON_UNSPECIFIED
        ),
        withheld=event.withheld,
        entry_id=event.entry_id,
    )
    if event.entry is not None:
        message.entry.CopyFrom(public_entry_message(event.entry))
    return message


def list_changes_response(page: ListChangesPage) -> lists_pb2.ListChangesResponse:
    return lists_pb2.ListChangesResponse(
        department=page.department,
        events=[list_change_message(e) for e in page.events],
        next_cursor=page.next_cursor,
        more=page.more,
        feed_id=page.feed_id,
    )


def list_changes_page(message: lists_pb2.ListChangesResponse) -> ListChangesPage:
    """A feed page as typed values; InvalidArgument (naming the field) for one no node sends."""
    events = []
    for i, e in enumerate(message.events):
        field = f"events[{i}]"
        if not e.HasField("at"):
            raise InvalidArgument("the node sent no time", field=f"{field}.at")
        try:
            at = e.at.ToDatetime(tzinfo=datetime.UTC)
        except (ValueError, OverflowError):
            raise InvalidArgument("is not a time", field=f"{field}.at") from None
        if e.HasField("entry") == bool(e.withheld):
            raise InvalidArgument(
                "an event carries either its entry or, withheld, the check the entry failed",
                field=f"{field}.entry",
            )
        if e.HasField("entry") and e.entry_id != e.entry.entry_id:
            raise InvalidArgument(
                "is not the entry_id of the entry the event carries", field=f"{field}.entry_id"
            )
        events.append(
            ListChangeEvent(
                cursor=e.cursor,
                entry=(
                    public_entry(e.entry, field=f"{field}.entry") if e.HasField("entry") else None
                ),
                event=_required(change_from_pb(e.event), "event", f"{field}.event"),
                at=at,
                withdraw_reason=withdraw_reason_from_pb(e.withdraw_reason),
                withheld=e.withheld,
                entry_id=e.entry_id,
            )
        )
    return ListChangesPage(
        department=DepartmentId(message.department),
        events=tuple(events),
        next_cursor=message.next_cursor,
        more=message.more,
        feed_id=message.feed_id,
    )
