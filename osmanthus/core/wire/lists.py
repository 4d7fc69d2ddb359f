"""The red and black lists' wire contract: the list office, public entries and change feeds.

ListOfficeService (a department's list officer at its node), NodeService.PublicEntries and
NodeService.ListChanges (the coordinator at a node), and the list messages CoordinatorService
forwards: their request and result types and proto conversions, for both ends of each call.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.lists import (
    MAX_ENTRIES_PER_PUBLISH,
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
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.core.wire.common import (
    KIND_TO_PB,
    capped,
    kind_from_pb,
    kind_to_pb,
    required,
    timestamp_to_proto,
)
from osmanthus.v1 import lists_pb2, node_pb2


@dataclass(frozen=True)
class EntryDraft:
    """An entry as it arrived for publication, unchecked: what validate_new_entry takes."""

    entry_id: str
    list: str
    subject_kind: SubjectKind | None
    subject_id: str
    subject_name: str
    legal_basis: str
    reason: str
    window_start: str
    window_end: str

    @classmethod
    def of(cls, entry: NewEntry) -> EntryDraft:
        """The draft that validates to `entry` (dates in ISO form)."""
        return cls(
            entry_id=entry.entry_id,
            list=entry.list,
            subject_kind=entry.subject_kind,
            subject_id=entry.subject_id,
            subject_name=entry.subject_name,
            legal_basis=entry.legal_basis,
            reason=entry.reason,
            window_start=entry.window_start.isoformat(),
            window_end=entry.window_end.isoformat(),
        )


@dataclass(frozen=True)
class PublishResult:
    #: entries stored by this publication
    published: int
    #: entries already stored with the same fields (a retried publication)
    unchanged: int


@dataclass(frozen=True)
class PublicQuery:
    """NodeService.PublicEntries: one subject's entries in view, or one list's, a page at a time."""

    subject_kind: SubjectKind | None
    subject_id: str = ""
    list: str = ""
    #: 0 means osmanthus.core.lists.DEFAULT_PAGE_SIZE
    page_size: int = 0
    page_token: str = ""


@dataclass(frozen=True)
class PublicPage:
    entries: tuple[PublicEntry, ...]
    #: "" on the last page
    next_page_token: str = ""


@dataclass(frozen=True)
class ChangesQuery:
    """NodeService.ListChanges: the department's list events after a cursor, a page at a time."""

    #: the department asked: this node's, or "" (the coordinator always names it)
    department: str
    #: a cursor of this feed ("" for the first event)
    after: str
    #: 0 means osmanthus.core.lists.DEFAULT_CHANGES_PAGE_SIZE
    page_size: int
    #: the requester the coordinator asks for, as the coordinator names it (for the audit log)
    requester: str


# --- conversions ---------------------------------------------------------------------------


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


def entry_drafts_from_proto(message: lists_pb2.PublishEntriesRequest) -> tuple[EntryDraft, ...]:
    """The drafts, refused past MAX_ENTRIES_PER_PUBLISH before one is read."""
    entries = capped(
        message.entries,
        limit=MAX_ENTRIES_PER_PUBLISH,
        field="entries",
        natural="the entries of one publication; send the rest in another",
    )
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
        for e in entries
    )


def new_entry_to_proto(entry: NewEntry) -> lists_pb2.NewEntry:
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


def publish_request_to_proto(
    entries: Sequence[lists_pb2.NewEntry],
) -> lists_pb2.PublishEntriesRequest:
    return lists_pb2.PublishEntriesRequest(entries=list(entries))


def publish_result_to_proto(result: PublishResult) -> lists_pb2.PublishEntriesResponse:
    return lists_pb2.PublishEntriesResponse(published=result.published, unchanged=result.unchanged)


def publish_result_from_proto(message: lists_pb2.PublishEntriesResponse) -> PublishResult:
    return PublishResult(published=message.published, unchanged=message.unchanged)


def withdraw_request_to_proto(
    entry_id: str, *, reason: WithdrawReason, reference: str
) -> lists_pb2.WithdrawEntryRequest:
    return lists_pb2.WithdrawEntryRequest(
        entry_id=entry_id, reason=_REASON_TO_PB[reason], reference=reference
    )


def history_request_to_proto(kind: SubjectKind, subject_id: str) -> lists_pb2.HistoryRequest:
    return lists_pb2.HistoryRequest(subject_kind=KIND_TO_PB[kind], subject_id=subject_id)


def public_entry_to_proto(entry: PublicEntry) -> lists_pb2.PublicEntry:
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


def public_entry_from_proto(message: lists_pb2.PublicEntry, *, field: str = "entry") -> PublicEntry:
    """A node's PublicEntry; InvalidArgument (naming `field`) for one no node would send."""
    colour = _COLOUR_FROM_PB.get(message.colour)
    kind = kind_from_pb(message.subject_kind)
    return PublicEntry(
        entry_id=EntryId(message.entry_id),
        department=DepartmentId(message.department),
        list=message.list,
        colour=required(colour, "list colour", f"{field}.colour"),
        subject_kind=required(kind, "subject kind", f"{field}.subject_kind"),
        subject_id=message.subject_id,
        subject_name=message.subject_name,
        legal_basis=message.legal_basis,
        reason=message.reason,
        window_start=parse_date(message.window_start, field=f"{field}.window_start"),
        window_end=parse_date(message.window_end, field=f"{field}.window_end"),
        facilitation_class=message.facilitation_class or None,
    )


def list_entry_to_proto(entry: ListEntry) -> lists_pb2.ListEntry:
    return lists_pb2.ListEntry(
        entry=public_entry_to_proto(entry.entry),
        status=_STATUS_TO_PB[entry.status],
        withdraw_reason=(
            _REASON_TO_PB[entry.withdraw_reason]
            if entry.withdraw_reason is not None
            else lists_pb2.WITHDRAW_REASON_UNSPECIFIED
        ),
        withdraw_reference=entry.withdraw_reference,
        events=[
            lists_pb2.ListEvent(
                at=timestamp_to_proto(e.at), event=e.event, actor=e.actor, detail=e.detail
            )
            for e in entry.events
        ],
    )


def list_entry_from_proto(message: lists_pb2.ListEntry, *, field: str = "entry") -> ListEntry:
    status = _STATUS_FROM_PB.get(message.status)
    entry = public_entry_from_proto(message.entry, field=f"{field}.entry")
    return ListEntry(
        # the list officer sees the entry as stored: the subject id in full
        entry=entry,
        status=required(status, "entry status", f"{field}.status"),
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


def history_to_proto(entries: Sequence[ListEntry]) -> lists_pb2.HistoryResponse:
    return lists_pb2.HistoryResponse(entries=[list_entry_to_proto(e) for e in entries])


def history_from_proto(message: lists_pb2.HistoryResponse) -> tuple[ListEntry, ...]:
    return tuple(
        list_entry_from_proto(e, field=f"entries[{i}]") for i, e in enumerate(message.entries)
    )


def public_query_from_proto(message: lists_pb2.PublicEntriesRequest) -> PublicQuery:
    return PublicQuery(
        subject_kind=kind_from_pb(message.subject_kind),
        subject_id=message.subject_id,
        list=message.list,
        page_size=message.page_size,
        page_token=message.page_token,
    )


def public_query_to_proto(query: PublicQuery) -> lists_pb2.PublicEntriesRequest:
    return lists_pb2.PublicEntriesRequest(
        subject_kind=kind_to_pb(query.subject_kind),
        subject_id=query.subject_id,
        list=query.list,
        page_size=query.page_size,
        page_token=query.page_token,
    )


def public_page_to_proto(page: PublicPage) -> lists_pb2.PublicEntriesResponse:
    return lists_pb2.PublicEntriesResponse(
        entries=[public_entry_to_proto(e) for e in page.entries],
        next_page_token=page.next_page_token,
    )


def public_page_from_proto(message: lists_pb2.PublicEntriesResponse) -> PublicPage:
    return PublicPage(
        entries=tuple(
            public_entry_from_proto(e, field=f"entries[{i}]") for i, e in enumerate(message.entries)
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


def changes_query_from_proto(message: node_pb2.NodeListChangesRequest) -> ChangesQuery:
    return ChangesQuery(
        department=message.request.department,
        after=message.request.after,
        page_size=message.request.page_size,
        requester=message.requester,
    )


def changes_query_to_proto(query: ChangesQuery) -> node_pb2.NodeListChangesRequest:
    return node_pb2.NodeListChangesRequest(
        request=lists_pb2.ListChangesRequest(
            department=query.department, after=query.after, page_size=query.page_size
        ),
        requester=query.requester,
    )


def list_change_to_proto(event: ListChangeEvent) -> lists_pb2.ListChange:
    message = lists_pb2.ListChange(
        cursor=event.cursor,
        event=CHANGE_TO_PB[event.event],
        at=timestamp_to_proto(event.at),
        withdraw_reason=(
            _REASON_TO_PB[event.withdraw_reason]
            if event.withdraw_reason is not None
            else lists_pb2.WITHDRAW_REASON_UNSPECIFIED
        ),
        withheld=event.withheld,
        entry_id=event.entry_id,
    )
    if event.entry is not None:
        message.entry.CopyFrom(public_entry_to_proto(event.entry))
    return message


def list_changes_page_to_proto(page: ListChangesPage) -> lists_pb2.ListChangesResponse:
    return lists_pb2.ListChangesResponse(
        department=page.department,
        events=[list_change_to_proto(e) for e in page.events],
        next_cursor=page.next_cursor,
        more=page.more,
        feed_id=page.feed_id,
    )


def list_changes_page_from_proto(message: lists_pb2.ListChangesResponse) -> ListChangesPage:
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
                    public_entry_from_proto(e.entry, field=f"{field}.entry")
                    if e.HasField("entry")
                    else None
                ),
                event=required(change_from_pb(e.event), "event", f"{field}.event"),
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
