"""A department's list office: its list officer publishes and withdraws, the coordinator reads.

ListOfficeService (publish, withdraw, history: the department's list officer only, by an operator
certificate named after the department) and the coordinator's two list calls to the node (the
public entries in view, the change feed) on typed values, over the node's ListStore. Every call
is one audited decision in the node's log, subjects as salted hashes.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import date

from node.lists import FeedEvent, ListStore
from osmanthus.core.audit import AuditLog, redacted_reason
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.catalogue import Department
from osmanthus.core.clock import china_today
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError, PermissionDenied
from osmanthus.core.ids import canonical_subject
from osmanthus.core.lists import (
    MAX_ENTRIES_PER_PUBLISH,
    ListChangeEvent,
    ListChangesPage,
    ListEntry,
    WithdrawReason,
    change_cursor,
    changes_page_size,
    holds_resident_id,
    parse_change_cursor,
    shown_value,
)
from osmanthus.core.names import validate_requester_id
from osmanthus.core.peers import PeerRole
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.types import SubjectId, SubjectKind
from osmanthus.core.wire.lists import (
    ChangesQuery,
    EntryDraft,
    PublicPage,
    PublicQuery,
    PublishResult,
)

_log = logging.getLogger(__name__)


def _audit_reason(error: OsmanthusError) -> str:
    """redacted_reason, also for an entry's subject id (`entries[3].subject_id`) and for a
    message that quotes an entry id reading as a resident id (one stored before they were
    refused, named in a withdrawal)."""
    last = (error.field or "").rsplit(".", 1)[-1]
    if last == "subject_id" or holds_resident_id(error.message):
        return f"{type(error).__name__}: {error.field} failed validation"
    return redacted_reason(error)


def _audited_entry_id(entry_id: str) -> str:
    """The entry id as the audit log records it: withheld if it reads as a resident id."""
    text = str(entry_id)[:64]
    return "(withheld: reads as a resident id)" if holds_resident_id(text) else text


class ListOffice:
    """The node's ListOfficeService and public list query on typed values.

    The list office answers the department's list officer only: an operator certificate whose
    name is the department id. The public query answers the coordinator only. Every call is
    written to the node's audit log, subjects as salted hashes.
    """

    def __init__(
        self,
        *,
        department: Department,
        store: ListStore,
        audit: AuditLog,
        today: Callable[[], date] = china_today,
    ) -> None:
        if store.department != department.id:
            raise ConfigError(
                f"the list store is {store.department}'s, this node is {department.id}'s",
                field="state_dir",
            )
        self._department = department
        self._store = store
        self._audit = audit
        self._today = today

    @property
    def store(self) -> ListStore:
        return self._store

    def _is_officer(self, caller: PeerIdentity) -> bool:
        return caller.role is PeerRole.OPERATOR and caller.name == self._department.id

    def _require_officer(self, caller: PeerIdentity) -> None:
        dept = self._department.id
        if not self._is_officer(caller):
            raise PermissionDenied(
                f"the list office of {dept} serves its list officer only: an operator "
                f"certificate named {dept!r} (osmanthus certs issue --role operator --name "
                f"{dept}); the caller's certificate names {caller.role.value} {caller.name!r}"
            )

    def publish(self, drafts: Sequence[EntryDraft], *, caller: PeerIdentity) -> PublishResult:
        # a caller who is not the list officer is refused before any entry is read, so its
        # refusal names no subjects (nor costs a hash per entry)
        subjects = (
            [
                canonical_subject(d.subject_kind, d.subject_id)
                for d in drafts[:MAX_ENTRIES_PER_PUBLISH]
            ]
            if self._is_officer(caller)
            else []
        )
        with self._audited(
            caller, "list_publication", subjects=subjects, extra={"entries": len(drafts)}
        ) as record:
            self._require_officer(caller)
            result = self._store.publish(drafts, actor=caller.name, today=self._today())
            record.allow(
                f"{result.published} entries published, {result.unchanged} unchanged",
                published=result.published,
                unchanged=result.unchanged,
            )
        return result

    def withdraw(
        self,
        entry_id: str,
        *,
        reason: WithdrawReason | None,
        reference: str,
        caller: PeerIdentity,
    ) -> ListEntry:
        extra: dict[str, int | str] = {
            "entry_id": _audited_entry_id(entry_id),
            "withdraw_reason": reason.value if reason else "",
        }
        with self._audited(caller, "list_withdrawal", extra=extra) as record:
            self._require_officer(caller)
            entry = self._store.withdraw(
                entry_id,
                reason=reason,
                reference=reference,
                actor=caller.name,
                today=self._today(),
            )
            # the subject is known once the entry is found; a refusal names none
            record.subject_hash = self._audit.subject_hash(entry.entry.subject_id)
            record.allow("entry withdrawn from public view")
        return entry

    def history(
        self, kind: SubjectKind | None, subject_id: str, *, caller: PeerIdentity
    ) -> tuple[ListEntry, ...]:
        subjects = [canonical_subject(kind, subject_id)]
        with self._audited(caller, "list_history", subjects=subjects) as record:
            self._require_officer(caller)
            if kind is None:
                raise InvalidArgument(
                    "a subject kind (person or enterprise) is required", field="subject_kind"
                )
            entries = self._store.history(kind, subject_id, today=self._today())
            record.allow("history read", entries=len(entries))
        return entries

    def public_entries(self, query: PublicQuery, *, caller: PeerIdentity) -> PublicPage:
        subjects = (
            [canonical_subject(query.subject_kind, query.subject_id)] if query.subject_id else []
        )
        extra: dict[str, int | str] = {"list": query.list[:40]} if query.list else {}
        with self._audited(caller, "public_list_query", subjects=subjects, extra=extra) as record:
            if caller.role is not PeerRole.COORDINATOR:
                raise PermissionDenied(
                    "only the platform coordinator asks for public list entries (it serves "
                    f"the public query); the caller's certificate names {caller.role.value} "
                    f"{caller.name!r}"
                )
            page = self._store.public_entries(query, today=self._today())
            record.allow("entries in public view listed", entries=len(page.entries))
        return page

    def list_changes(self, query: ChangesQuery, *, caller: PeerIdentity) -> ListChangesPage:
        """NodeService.ListChanges: the department's change feed, to the coordinator only."""
        with self._audited(caller, "list_change_feed") as record:
            if caller.role is not PeerRole.COORDINATOR:
                raise PermissionDenied(
                    "only the platform coordinator reads the list change feed (it serves the "
                    f"provincial sync job); the caller's certificate names {caller.role.value} "
                    f"{caller.name!r}"
                )
            # the coordinator has verified the requester's token; recorded as it names them
            record.extra["on_behalf_of"] = validate_requester_id(query.requester, field="requester")
            dept = self._department.id
            if query.department and query.department != dept:
                raise InvalidArgument(
                    f"this node serves {dept}'s lists, not {shown_value(query.department)}",
                    field="department",
                )
            cursor = parse_change_cursor(query.after, field="after")
            # a cursor has at most 16 digits: it cannot read as a resident id
            record.extra["after"] = query.after
            found, more = self._store.changes_after(
                cursor, limit=changes_page_size(query.page_size)
            )
            page = self._page(found, more=more, after=query.after)
            record.allow(
                "list change events listed",
                events=len(page.events),
                withheld=sum(1 for e in page.events if e.withheld),
                next_cursor=page.next_cursor,
                feed_id=page.feed_id,
            )
        return page

    def _page(self, found: Sequence[FeedEvent], *, more: bool, after: str) -> ListChangesPage:
        events = tuple(
            ListChangeEvent(
                cursor=change_cursor(e.seq),
                entry=e.entry,
                event=e.event,
                at=e.at,
                withdraw_reason=e.withdraw_reason,
                withheld=e.withheld,
                entry_id=e.entry_id,
            )
            for e in found
        )
        for event in events:
            if event.withheld:
                # the operator finds the entry by its cursor (events.seq); no value is logged
                _log.warning(
                    "%s: list change event %s served withheld: %s",
                    self._department.id,
                    event.cursor,
                    event.withheld,
                )
        return ListChangesPage(
            department=self._department.id,
            events=events,
            next_cursor=events[-1].cursor if events else after,
            more=more,
            feed_id=self._store.feed_id,
        )

    def flags_in_view(self, kind: SubjectKind, subject: SubjectId, today: date) -> frozenset[str]:
        return self._store.flags_in_view(kind, subject, today)

    def _audited(
        self,
        caller: PeerIdentity,
        purpose: str,
        *,
        subjects: Sequence[str] = (),
        extra: Mapping[str, int | str] | None = None,
    ) -> AbstractContextManager[AuditedRequest]:
        """One list-office call's audit entry; certificates, not the Cedar policy, decide who
        uses the list office, so it names the certificate and no policy version."""
        hashes = self._audit.subject_hashes(list(dict.fromkeys(subjects)))
        record = AuditedRequest(
            query_id=f"lst_{secrets.token_hex(8)}",
            requester=f"{caller.role.value}:{caller.name}",
            purpose=purpose,
            subject_hash=hashes[0] if len(hashes) == 1 else "",
            subject_hashes=tuple(hashes) if len(hashes) > 1 else (),
            extra=dict(extra or {}),
        )
        return audited(self._audit, record, redact=_audit_reason)
