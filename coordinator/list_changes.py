"""ListChanges at the coordinator: one department's list change feed, checked event by event.

The provincial sync job reports to the province every list entry published and withdrawn since
its last run. The coordinator asks that one department's node for the events after the job's
cursor and forwards the page only if every event passes its checks: the entry as the public
query checks one (a list of that department in the catalogue, the catalogue's colour and
facilitation class, a person's id masked, no full resident id in any text field), though not
whether it is in view today, since withdrawn and past entries are what a feed reports; the
event published or withdrawn, with a withdraw reason exactly when withdrawn and one the list's
colour allows; cursors increasing, each after the cursor asked; no more events than asked. One
failure refuses the whole page (Unavailable, naming the department and the check, never a
value): a page forwarded in part would let the job move its cursor past an event it never got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from coordinator.lists import EntryRefused, check_feed_entry
from coordinator.nodes import NodeFailure, NodePool
from coordinator.ratelimit import RateLimiter
from node.convert import change_from_pb, changes_query_message, withdraw_reason_from_pb
from node.lists import ChangesQuery
from osmanthus.audit import AuditEntry, AuditLog, redacted_reason
from osmanthus.catalogue import Catalogue
from osmanthus.errors import InvalidArgument, OsmanthusError, PermissionDenied, Unavailable
from osmanthus.lists import (
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    change_cursor,
    changes_page_size,
    parse_change_cursor,
    reason_allowed,
)
from osmanthus.policy import PolicyEngine, PolicyRequest, ReloadablePolicy, time_facts
from osmanthus.tokens import TokenClaims
from osmanthus.types import DepartmentId, QueryId
from osmanthus.v1 import lists_pb2

_log = logging.getLogger(__name__)

#: the central policy's action, on resource Department::"<id>"
ACTION: Final = "ReadListChanges"
#: the audit entry's `shape` for a change feed page (it releases no score)
AUDIT_SHAPE: Final = "list_changes"


@dataclass(frozen=True)
class ChangesRequest:
    """CoordinatorService.ListChanges as received."""

    department: str
    #: a cursor of the department's feed; "" for its first event
    after: str
    #: 0 means osmanthus.lists.DEFAULT_CHANGES_PAGE_SIZE
    page_size: int


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
    if len(message.events) > page_size:
        raise _Refused(f"{len(message.events)} events for a page of {page_size}")
    previous = parse_change_cursor(after)
    seen: set[tuple[str, ListChange]] = set()
    events: list[ListChangeEvent] = []
    for position, sent in enumerate(message.events):
        event = _checked_event(
            sent,
            where=f"events[{position}]",
            department=department,
            previous=previous,
            catalogue=catalogue,
        )
        key = (event.entry.entry_id, event.event)
        if key in seen:
            raise _Refused(f"events[{position}] repeats an earlier event of the page")
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
        department=department, events=tuple(events), next_cursor=next_cursor, more=message.more
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
    event = change_from_pb(sent.event)
    if event is None:
        raise _Refused(f"{where}.event is not published or withdrawn")
    if not sent.HasField("entry"):
        raise _Refused(f"{where}.entry is missing")
    try:
        entry = check_feed_entry(sent.entry, department=department, catalogue=catalogue)
    except EntryRefused as exc:
        raise _Refused(f"{where}.entry: {exc}") from None
    reason = withdraw_reason_from_pb(sent.withdraw_reason)
    if event is ListChange.WITHDRAWN:
        if reason is None:
            raise _Refused(f"{where}.withdraw_reason is missing from a withdrawal")
        if not reason_allowed(entry.colour, reason):
            raise _Refused(
                f"{where}.withdraw_reason {reason.value} does not take an entry off a "
                f"{entry.colour.value} list"
            )
    elif sent.withdraw_reason != lists_pb2.WITHDRAW_REASON_UNSPECIFIED:
        raise _Refused(f"{where}.withdraw_reason comes with a publication")
    if not sent.HasField("at"):
        raise _Refused(f"{where}.at is missing")
    try:
        at = sent.at.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise _Refused(f"{where}.at is not a time") from None
    return ListChangeEvent(
        cursor=change_cursor(seq), entry=entry, event=event, at=at, withdraw_reason=reason
    )


class ListChangeFeed:
    """Everything after authentication for one ListChanges call; CoordinatorService delegates."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        nodes: NodePool,
        policy: ReloadablePolicy,
        audit: AuditLog,
        rate_limiter: RateLimiter,
        deadline_s: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._catalogue = catalogue
        self._nodes = nodes
        self._policy = policy
        self._audit = audit
        self._rate_limiter = rate_limiter
        self._deadline_s = deadline_s
        self._clock = clock

    def read(
        self,
        query_id: QueryId,
        request: ChangesRequest,
        *,
        authenticate: Callable[[], TokenClaims],
    ) -> ListChangesPage:
        """Authenticate, validate, decide, charge the rate limit, ask and check; audit it all."""
        # one policy version decides the request and is the one the audit entry names
        engine = self._policy.current()
        seen: dict[str, int | str] = {}
        claims: TokenClaims | None = None
        try:
            claims = authenticate()
            page = self._read(request, claims, engine, seen)
        except OsmanthusError as exc:
            self._record(query_id, claims, engine, "deny", redacted_reason(exc), seen)
            raise
        except Exception:
            self._record(query_id, claims, engine, "deny", "internal error", seen)
            raise
        self._record(query_id, claims, engine, "allow", "list change events forwarded", seen)
        return page

    def _department(self, value: str) -> DepartmentId:
        """A department of the catalogue that publishes at least one list."""
        publishing = sorted({t.department for t in self._catalogue.lists})
        if not value:
            raise InvalidArgument(
                "name the department whose list changes to read; departments publishing "
                f"lists: {', '.join(publishing)}",
                field="department",
            )
        if value not in {d.id for d in self._catalogue.departments}:
            raise InvalidArgument(
                f"{value[:40]!r} is not a department of the catalogue; departments publishing "
                f"lists: {', '.join(publishing)}",
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
        seen["after"] = request.after
        size = changes_page_size(request.page_size)
        decision = engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs={"role": claims.role.value},
                action=ACTION,
                resource_type="Department",
                resource_id=department,
                context=time_facts(self._clock()),
            )
        )
        if not decision.allowed:
            raise PermissionDenied(f"central policy: {decision.reason}")
        limits = engine.rate_limits(decision)
        stamp = self._rate_limiter.charge(claims.requester, limits)
        try:
            page = self._ask(department, request.after, size, claims.requester)
        except BaseException:
            # nothing was forwarded: only pages forwarded count against the limit
            self._rate_limiter.refund(claims.requester, limits, stamp)
            raise
        seen["events"] = len(page.events)
        seen["next_cursor"] = page.next_cursor
        return page

    def _ask(
        self, department: DepartmentId, after: str, size: int, requester: str
    ) -> ListChangesPage:
        if department not in self._nodes.departments:
            raise Unavailable(f"no node registered for {department}, whose list changes were asked")
        query = ChangesQuery(
            department=department, after=after, page_size=size, requester=requester
        )
        answer = self._nodes.list_changes(
            department, changes_query_message(query), deadline_s=self._deadline_s
        )
        if isinstance(answer, NodeFailure):
            raise Unavailable(f"{department}, asked for its list changes: {answer.reason}")
        try:
            return check_changes(
                answer.message,
                department=department,
                after=after,
                page_size=size,
                catalogue=self._catalogue,
            )
        except Unavailable as exc:
            # a node leaking data or out of date: its operator must look; no values logged
            _log.warning("%s", exc.message)
            raise

    def _record(
        self,
        query_id: QueryId,
        claims: TokenClaims | None,
        engine: PolicyEngine,
        decision: str,
        reason: str,
        extra: dict[str, int | str],
    ) -> None:
        self._audit.append(
            AuditEntry(
                time=self._clock(),
                query_id=query_id,
                requester=claims.requester if claims else "unauthenticated",
                purpose="",
                consent_id="",
                policy_hash=engine.hash,
                decision=decision,
                reason=reason,
                shape=AUDIT_SHAPE,
                subject_hash="",
                extra=extra,
            )
        )
