"""ListChanges at the coordinator: one department's list change feed, checked event by event.

The provincial sync job reports to the province every list entry published and withdrawn since
its last run. The coordinator asks that one department's node for the events after the job's
cursor and checks every event before it forwards the page.

Two kinds of fault, two answers:

* A fault of the page's frame, which no honest node makes: the department or the feed id not
  as asked or not plausible, cursors not increasing past the cursor asked, next_cursor and
  more not following the events, more events than asked, an event neither published nor
  withdrawn, a withdraw reason missing from a withdrawal (withheld or not), given with a
  publication or not one the list's colour allows, an event with both an entry and a withheld
  mark or neither, an entry_id beside an entry that is not the entry's, a person's id not
  masked, dates not dates. One such fault refuses the whole page
  (Unavailable, naming the department and the check, never a value): a page forwarded in part
  would let the job move its cursor past an event it never got, and the node's operator can
  fix the node and the job then reads the event.
* A fault of an entry's content, which a stored entry can come to have (coordinator/lists.py
  ContentRefused: a text reading as a resident id, a window longer than the catalogue now
  allows, a list that no longer takes the kind, ...). Entries never change, so refusing the
  page would stop the department's feed for good. The event goes on withheld instead: its
  cursor, kind and time, and the check it failed, none of the entry's fields; a warning without
  values names the department and the cursor. A node makes the same checks and serves such
  an event withheld itself; the coordinator forwards the node's words only if they are among
  osmanthus.core.lists.WITHHELD_REASONS.

A withheld event still names its entry, so that the sync job closes the entry a withdrawal
takes out of view: its `entry_id` goes on only if it passes the entry id's own checks
(osmanthus.core.lists.withheld_entry_id), else as "", and a withdrawal's reason goes on with it.
The reason is checked against the list's colour in the coordinator's catalogue wherever the
coordinator knows the list: an event it withholds itself, whose entry names a list of the
department and is not withheld for its colour (then the colour is what is in dispute). An event
the node withheld names no list, so any WithdrawReason is taken; the node checked it against
its own catalogue, and refuses to start if a list's colour no longer allows a stored reason.
No other field of a withheld entry goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC
from typing import Final

from coordinator.context import CoordinatorContext
from coordinator.lists import ContentRefused, EntryRefused, check_feed_entry
from coordinator.nodes import NodeFailure
from osmanthus.core.audit import redacted_reason
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.catalogue import Catalogue, ListColour, ListType
from osmanthus.core.errors import InvalidArgument, OsmanthusError, Unavailable
from osmanthus.core.lists import (
    WITHHELD_BY_NODE,
    WITHHELD_COLOUR,
    WITHHELD_REASONS,
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    WithdrawReason,
    change_cursor,
    changes_page_size,
    check_feed_id,
    holds_resident_id,
    parse_change_cursor,
    reason_allowed,
    shown_value,
    withheld_entry_id,
)
from osmanthus.core.policy import PolicyEngine
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import DepartmentId, QueryId
from osmanthus.core.wire.coordinator import ChangesRequest
from osmanthus.core.wire.lists import ChangesQuery, change_from_pb, withdraw_reason_from_pb
from osmanthus.v1 import lists_pb2

_log = logging.getLogger(__name__)

#: the central policy's action, on resource Department::"<id>"
ACTION: Final = "ReadListChanges"
#: the audit entry's `shape` for a change feed page (it releases no score)
AUDIT_SHAPE: Final = "list_changes"


class _Refused(Exception):
    """A page fails a check; the message names where and the problem, never a value."""


def check_changes(
    message: lists_pb2.ListChangesResponse,
    *,
    department: DepartmentId,
    after: str,
    page_size: int,
    catalogue: Catalogue,
) -> ListChangesPage:
    """One department's feed page fit to forward, rebuilt from the checked values only.

    `after` is the cursor asked (already checked), `page_size` the most events asked for.
    Unavailable names the department and the first check the page fails: nothing of a page
    that fails one is forwarded.
    """
    try:
        return _checked_page(
            message, department=department, after=after, page_size=page_size, catalogue=catalogue
        )
    except _Refused as exc:
        raise Unavailable(
            f"{department}: its list change feed answer failed the coordinator's checks "
            f"({exc}); nothing of it was forwarded. The department's operator must look at "
            "its node"
        ) from None


def _checked_page(
    message: lists_pb2.ListChangesResponse,
    *,
    department: DepartmentId,
    after: str,
    page_size: int,
    catalogue: Catalogue,
) -> ListChangesPage:
    if message.department != department:
        raise _Refused("department is not the department asked")
    try:
        feed_id = check_feed_id(message.feed_id)
    except InvalidArgument:
        raise _Refused("feed_id is not a feed id") from None
    if len(message.events) > page_size:
        raise _Refused(f"{len(message.events)} events for a page of {page_size}")
    previous = parse_change_cursor(after)
    seen: set[tuple[str, ListChange]] = set()
    events: list[ListChangeEvent] = []
    for position, sent in enumerate(message.events):
        where = f"events[{position}]"
        event = _checked_event(
            sent, where=where, department=department, previous=previous, catalogue=catalogue
        )
        if event.entry_id:
            # an entry is published once and withdrawn once, withheld or not
            key = (event.entry_id, event.event)
            if key in seen:
                raise _Refused(f"{where} repeats an earlier event of the page")
            seen.add(key)
        previous = parse_change_cursor(event.cursor)
        events.append(event)
    if message.more and not events:
        # a page that moves nowhere would be asked for again and again
        raise _Refused("more says further events follow, but the page holds none")
    next_cursor = events[-1].cursor if events else after
    if message.next_cursor != next_cursor:
        raise _Refused("next_cursor is not the last event's cursor (or the cursor asked)")
    return ListChangesPage(
        department=department,
        events=tuple(events),
        next_cursor=next_cursor,
        more=message.more,
        feed_id=feed_id,
    )


def _checked_event(
    sent: lists_pb2.ListChange,
    *,
    where: str,
    department: DepartmentId,
    previous: int,
    catalogue: Catalogue,
) -> ListChangeEvent:
    if not sent.cursor:
        raise _Refused(f"{where}.cursor is empty")
    try:
        seq = parse_change_cursor(sent.cursor, field="cursor")
    except InvalidArgument:
        raise _Refused(f"{where}.cursor is not a change feed cursor") from None
    if seq <= previous:
        raise _Refused(
            f"{where}.cursor does not come after the previous event's (or the cursor asked)"
        )
    cursor = change_cursor(seq)
    event = change_from_pb(sent.event)
    if event is None:
        raise _Refused(f"{where}.event is not published or withdrawn")
    if not sent.HasField("at"):
        raise _Refused(f"{where}.at is missing")
    try:
        at = sent.at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise _Refused(f"{where}.at is not a time") from None
    if sent.withheld:
        if sent.HasField("entry"):
            raise _Refused(f"{where} carries its entry and says it is withheld")
        # the node withheld the entry and names no list: any reason is taken (the node checked
        # it against its catalogue's colour)
        reason = _checked_reason(sent, event, where)
        withheld = sent.withheld if sent.withheld in WITHHELD_REASONS else WITHHELD_BY_NODE
        entry_id = withheld_entry_id(sent.entry_id)
        why = f"its node withheld the entry ({withheld})"
        if sent.entry_id and not entry_id:
            why += "; its entry_id failed the entry id's checks and is withheld too"
        _warn_withheld(department, cursor, why)
        return ListChangeEvent(
            cursor=cursor,
            entry=None,
            event=event,
            at=at,
            withdraw_reason=reason,
            withheld=withheld,
            entry_id=entry_id,
        )
    if not sent.HasField("entry"):
        raise _Refused(f"{where}.entry is missing")
    reason = _checked_reason(sent, event, where)
    if sent.entry_id != sent.entry.entry_id:
        raise _Refused(f"{where}.entry_id is not the entry_id of the entry it carries")
    try:
        entry = check_feed_entry(sent.entry, department=department, catalogue=catalogue)
    except ContentRefused as exc:
        list_type = _list_of(catalogue, department, sent.entry.list)
        if reason is not None and list_type is not None and exc.withheld != WITHHELD_COLOUR:
            _check_colour(reason, list_type.colour, where)
        entry_id = withheld_entry_id(sent.entry.entry_id)
        why = f"the entry failed the coordinator's checks ({exc})"
        if not entry_id:
            why += "; its entry_id is withheld too"
        _warn_withheld(department, cursor, why)
        return ListChangeEvent(
            cursor=cursor,
            entry=None,
            event=event,
            at=at,
            withdraw_reason=reason,
            withheld=exc.withheld,
            entry_id=entry_id,
        )
    except EntryRefused as exc:
        raise _Refused(f"{where}.entry: {exc}") from None
    if reason is not None:
        _check_colour(reason, entry.colour, where)
    return ListChangeEvent(cursor=cursor, entry=entry, event=event, at=at, withdraw_reason=reason)


def _checked_reason(
    sent: lists_pb2.ListChange, event: ListChange, where: str
) -> WithdrawReason | None:
    """A withdrawal's reason, withheld or not; None for a publication, which has none."""
    if event is ListChange.PUBLISHED:
        if sent.withdraw_reason != lists_pb2.WITHDRAW_REASON_UNSPECIFIED:
            raise _Refused(f"{where}.withdraw_reason comes with a publication")
        return None
    reason = withdraw_reason_from_pb(sent.withdraw_reason)
    if reason is None:
        raise _Refused(f"{where}.withdraw_reason is missing from a withdrawal")
    return reason


def _check_colour(reason: WithdrawReason, colour: ListColour, where: str) -> None:
    if not reason_allowed(colour, reason):
        raise _Refused(
            f"{where}.withdraw_reason {reason.value} does not take an entry off a "
            f"{colour.value} list"
        )


def _list_of(catalogue: Catalogue, department: DepartmentId, list_id: str) -> ListType | None:
    """The catalogue's list `list_id` if `department` publishes it; None otherwise."""
    return next(
        (t for t in catalogue.lists if t.id == list_id and t.department == department), None
    )


def _warn_withheld(department: DepartmentId, cursor: str, why: str) -> None:
    # the department's operator finds the entry by the cursor (events.seq at its node); a
    # cursor has at most 16 digits, and `why` names a check, never a value
    _log.warning("%s: list change event %s forwarded withheld: %s", department, cursor, why)


def _audit_reason(error: OsmanthusError) -> str:
    """redacted_reason, and never a message quoting what reads as a resident id (the messages
    here do not, by shown_value(); this holds for any a later check may raise)."""
    if holds_resident_id(error.message):
        return f"{type(error).__name__}: {error.field or 'request'} failed validation"
    return redacted_reason(error)


class ListChangeFeed:
    """Everything after authentication for one ListChanges call; CoordinatorService delegates."""

    def __init__(self, context: CoordinatorContext) -> None:
        self._ctx = context

    def read(
        self,
        query_id: QueryId,
        request: ChangesRequest,
        *,
        authenticate: Callable[[], TokenClaims],
    ) -> ListChangesPage:
        """Authenticate, validate, decide, charge the rate limit, ask and check; audit it all."""
        # one policy version decides the request and is the one the audit entry names
        engine = self._ctx.policy.current()
        record = AuditedRequest(query_id=query_id, policy_hash=engine.hash, shape=AUDIT_SHAPE)
        with self._ctx.audited(record, redact=_audit_reason):
            claims = record.identify(authenticate())
            page = self._read(request, claims, engine, record.extra)
            record.allow("list change events forwarded")
        return page

    def _department(self, value: str) -> DepartmentId:
        """A department of the catalogue that publishes at least one list."""
        publishing = sorted({t.department for t in self._ctx.catalogue.lists})
        if not value:
            raise InvalidArgument(
                "name the department whose list changes to read; departments publishing "
                f"lists: {', '.join(publishing)}",
                field="department",
            )
        if value not in {d.id for d in self._ctx.catalogue.departments}:
            raise InvalidArgument(
                f"{shown_value(value)} is not a department of the catalogue; departments "
                f"publishing lists: {', '.join(publishing)}",
                field="department",
            )
        if value not in publishing:
            raise InvalidArgument(
                f"{value} publishes no red or black list, so it has no list changes; "
                f"departments publishing lists: {', '.join(publishing)}",
                field="department",
            )
        return DepartmentId(value)

    def _read(
        self,
        request: ChangesRequest,
        claims: TokenClaims,
        engine: PolicyEngine,
        seen: dict[str, int | str],
    ) -> ListChangesPage:
        department = self._department(request.department)
        seen["department"] = department
        parse_change_cursor(request.after, field="after")
        size = changes_page_size(request.page_size)
        decision = self._ctx.require(engine, claims, ACTION, ("Department", department))
        # recorded once the policy allowed the request: a requester who may not read the feed
        # writes nothing of its own into the audit log (a cursor cannot read as a resident id)
        seen["after"] = request.after
        with self._ctx.rate_limited(claims.requester, engine.rate_limits(decision)):
            page = self._ask(department, request.after, size, claims.requester)
        seen["events"] = len(page.events)
        seen["withheld"] = sum(1 for e in page.events if e.withheld)
        seen["next_cursor"] = page.next_cursor
        seen["feed_id"] = page.feed_id
        return page

    def _ask(
        self, department: DepartmentId, after: str, size: int, requester: str
    ) -> ListChangesPage:
        if department not in self._ctx.nodes.departments:
            raise Unavailable(f"no node registered for {department}, whose list changes were asked")
        query = ChangesQuery(
            department=department, after=after, page_size=size, requester=requester
        )
        answer = self._ctx.nodes.list_changes(department, query, deadline_s=self._ctx.deadline_s)
        if isinstance(answer, NodeFailure):
            raise Unavailable(f"{department}, asked for its list changes: {answer.reason}")
        try:
            return check_changes(
                answer.message,
                department=department,
                after=after,
                page_size=size,
                catalogue=self._ctx.catalogue,
            )
        except Unavailable as exc:
            # a node leaking data or out of date: its operator must look; no values logged
            _log.warning("%s", exc.message)
            raise
