"""SearchLists at the coordinator: the public query of red and black lists, checked entry by entry.

The coordinator asks the departments that publish lists about the subject kind for the entries
in public view today, and forwards what comes back only after checking every entry itself: it
must belong to the answering node's department and to a list that department publishes (the one
asked, when a list is asked), lie inside its publication window today (China Standard Time),
carry the published fields only, and show a person's resident id masked. A node must not be
able to leak a full resident id, or an entry out of its window, through a public query; what
fails a check is dropped, logged without its values, and its department reported as missing.

By subject, every department publishing lists about the kind is asked at once and the answers
are merged; by list, only the list's department is asked, one page at a time. The node's page
token goes back to the requester sealed (HMAC-SHA256 under a key this process draws at start),
bound to the subject kind, the list and the subject, so it cannot be forged, altered or
replayed against another list.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from coordinator.nodes import NodeFailure, NodePool, PublicEntriesAnswer
from coordinator.ratelimit import RateLimiter
from node.convert import KIND_TO_PB, kind_from_pb
from osmanthus.audit import AuditEntry, AuditLog, redacted_reason
from osmanthus.catalogue import Catalogue, ListColour, ListType
from osmanthus.errors import InvalidArgument, OsmanthusError, PermissionDenied, Unavailable
from osmanthus.ids import canonical_subject, mask_subject, validate_resident_id, validate_subject
from osmanthus.lists import (
    ENTRY_ID_PATTERN,
    MAX_LEGAL_BASIS_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAGE_SIZE,
    MAX_REASON_LENGTH,
    EntryId,
    PublicEntry,
    check_text,
    list_of,
    page_size,
    parse_date,
)
from osmanthus.policy import (
    POLICY_TIME_ZONE,
    PolicyEngine,
    PolicyRequest,
    ReloadablePolicy,
    time_facts,
)
from osmanthus.tokens import TokenClaims
from osmanthus.types import DepartmentId, DepartmentStatus, QueryId, SubjectId, SubjectKind
from osmanthus.v1 import lists_pb2

_log = logging.getLogger(__name__)

#: the audit entry's `shape` for a public list query (it releases no score)
AUDIT_SHAPE: Final = "list_search"
#: pages of one department followed for a subject query: a subject's entries come in one answer,
#: and this bounds it (300 entries a department) below gRPC's 4 MiB message limit
SUBJECT_PAGES: Final = 3
#: how long a page token stays usable; a later page starts again from the first
PAGE_TOKEN_TTL_S: Final = 3600
#: longest node page token accepted, and longest sealed token a requester may send back
MAX_NODE_TOKEN_CHARS: Final = 512
MAX_PAGE_TOKEN_CHARS: Final = 1024
_TOKEN_PREFIX: Final = "lp1"
_MAC_BYTES: Final = 16

_COLOUR_FROM_PB: Final[dict[int, ListColour]] = {
    lists_pb2.LIST_COLOUR_RED: ListColour.RED,
    lists_pb2.LIST_COLOUR_BLACK: ListColour.BLACK,
}

#: a person's id as a public list shows it: region code, ten stars, the last two characters
_MASKED_RESIDENT_ID = re.compile(r"[0-9]{6}\*{10}[0-9]{1}[0-9X]")
#: anything in a text field that could be a full resident id (checked with its check digit)
_RESIDENT_ID_LIKE = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9A-Za-z])")


def china_today(now: datetime.datetime) -> datetime.date:
    """The calendar day in China Standard Time: the day publication windows are counted in."""
    return now.astimezone(POLICY_TIME_ZONE).date()


# --- page tokens --------------------------------------------------------------------------------


class PageTokens:
    """Seals a node's page token for the requester and opens it again, for the same query only.

    The sealed token carries the kind, the list, the department, when it was issued and the
    node's token; its MAC also covers the subject (when one is asked), which the token itself
    does not carry. The key lives in this process only: after a restart, paging starts again.
    """

    def __init__(
        self,
        *,
        key: bytes | None = None,
        ttl_s: float = PAGE_TOKEN_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key is not None and len(key) < 32:
            raise InvalidArgument("a page-token key needs at least 32 bytes", field="key")
        self._key = key or secrets.token_bytes(32)
        self._ttl_s = ttl_s
        self._clock = clock

    def _mac(self, payload: bytes, subject: str) -> bytes:
        message = payload + b"\x00" + subject.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(
        self,
        *,
        kind: SubjectKind,
        list_id: str,
        subject: str,
        department: DepartmentId,
        node_token: str,
    ) -> str:
        fields = {
            "k": kind.value,
            "l": list_id,
            "d": department,
            "i": int(self._clock()),
            "t": node_token,
        }
        payload = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return ".".join(
            (_TOKEN_PREFIX, _b64encode(payload), _b64encode(self._mac(payload, subject)))
        )

    def open(
        self, token: str, *, kind: SubjectKind, list_id: str, subject: str, department: str
    ) -> str:
        """The node's token sealed in `token`, if `token` was issued for this very query."""
        if len(token) > MAX_PAGE_TOKEN_CHARS:
            raise InvalidArgument(
                f"is {len(token)} characters long; a page token this coordinator issued is at "
                f"most {MAX_PAGE_TOKEN_CHARS}",
                field="page_token",
            )
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _TOKEN_PREFIX:
            raise InvalidArgument(_NOT_OURS, field="page_token")
        try:
            payload, mac = _b64decode(parts[1]), _b64decode(parts[2])
        except ValueError:
            raise InvalidArgument(_NOT_OURS, field="page_token") from None
        try:
            fields = json.loads(payload)
        except ValueError:
            fields = None
        if not isinstance(fields, dict) or set(fields) != {"k", "l", "d", "i", "t"}:
            raise InvalidArgument(_NOT_OURS, field="page_token")
        if fields["k"] != kind.value or fields["l"] != list_id:
            raise InvalidArgument(
                f"was issued for the {str(fields['l'])[:40]} list of {str(fields['k'])[:12]}s, "
                f"not for {list_id} ({kind.value}s): a page token continues the query it came "
                "from",
                field="page_token",
            )
        if not hmac.compare_digest(mac, self._mac(payload, subject)):
            # a forgery, an altered token, one for another subject, or one from before a restart
            raise InvalidArgument(
                "was not issued by this coordinator for this query (altered, for another "
                "subject, or issued before the coordinator restarted); start again from the "
                "first page, without a page token",
                field="page_token",
            )
        issued, node_token = fields["i"], fields["t"]
        if not isinstance(issued, int) or not isinstance(node_token, str) or not node_token:
            raise InvalidArgument(_NOT_OURS, field="page_token")
        if fields["d"] != department:
            # the catalogue changed hands of the list since the token was issued
            raise InvalidArgument(
                f"was issued for {str(fields['d'])[:32]}'s list, and {department} publishes it "
                "now; start again from the first page",
                field="page_token",
            )
        if self._clock() - issued > self._ttl_s:
            raise InvalidArgument(
                f"has expired (page tokens last {self._ttl_s / 60:g} minutes); start again from "
                "the first page",
                field="page_token",
            )
        return node_token


_NOT_OURS: Final = "is not a page token of this coordinator; pass next_page_token unchanged"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(str(exc)) from None
    if _b64encode(data) != text:
        # one spelling per token: unused low bits set are not the token that was issued
        raise ValueError("not in canonical form")
    return data


# --- checking a node's answer -------------------------------------------------------------------


@dataclass(frozen=True)
class Dropped:
    """An entry a node sent that the coordinator refused to forward, and why (no values)."""

    position: int
    reason: str


def check_entries(
    entries: Sequence[lists_pb2.PublicEntry],
    *,
    department: DepartmentId,
    kind: SubjectKind,
    list_id: str | None,
    subject: SubjectId | None,
    catalogue: Catalogue,
    today: datetime.date,
) -> tuple[list[PublicEntry], list[Dropped]]:
    """The entries of one department's answer fit to forward, and those dropped with why.

    `list_id` and `subject` are what was asked (None when not asked). Every entry is rebuilt
    from the published fields, so nothing else the node may have put in its message goes on.
    """
    kept: list[PublicEntry] = []
    dropped: list[Dropped] = []
    seen: set[str] = set()
    for position, message in enumerate(entries):
        try:
            entry = _checked_entry(
                message,
                department=department,
                kind=kind,
                list_id=list_id,
                subject=subject,
                catalogue=catalogue,
                today=today,
            )
        except _Refused as exc:
            dropped.append(Dropped(position, str(exc)))
            continue
        if entry.entry_id in seen:
            dropped.append(Dropped(position, "entry_id repeats an earlier entry of the answer"))
            continue
        seen.add(entry.entry_id)
        kept.append(entry)
    return kept, dropped


class _Refused(Exception):
    """An entry fails a check; the message names the field and the problem, never a value."""


def _checked_entry(
    message: lists_pb2.PublicEntry,
    *,
    department: DepartmentId,
    kind: SubjectKind,
    list_id: str | None,
    subject: SubjectId | None,
    catalogue: Catalogue,
    today: datetime.date,
) -> PublicEntry:
    if message.department != department:
        raise _Refused("department is not the answering node's department")
    list_type = next((t for t in catalogue.lists if t.id == message.list), None)
    if list_type is None or list_type.department != department:
        raise _Refused("list is not a list of the answering node's department")
    if list_id is not None and list_type.id != list_id:
        raise _Refused("list is not the list asked")
    if kind_from_pb(message.subject_kind) is not kind:
        raise _Refused("subject_kind is not the kind asked")
    if kind not in list_type.subject_kinds:
        raise _Refused(f"subject_kind: {list_type.id} does not list {kind.value}s")
    if _COLOUR_FROM_PB.get(message.colour) is not list_type.colour:
        raise _Refused(f"colour is not {list_type.id}'s colour in the catalogue")
    if not ENTRY_ID_PATTERN.fullmatch(message.entry_id):
        raise _Refused("entry_id is not an entry id")
    shown = _checked_subject(message.subject_id, kind=kind, subject=subject)
    start, end = _checked_window(message, list_type, today)
    texts = {}
    for field, limit in (
        ("subject_name", MAX_NAME_LENGTH),
        ("legal_basis", MAX_LEGAL_BASIS_LENGTH),
        ("reason", MAX_REASON_LENGTH),
    ):
        value = getattr(message, field)
        try:
            texts[field] = check_text(value, field=field, limit=limit)
        except InvalidArgument as exc:
            raise _Refused(f"{field} {exc.message}") from None
        if texts[field] != value:
            raise _Refused(f"{field} has leading or trailing space")
    if message.facilitation_class != (list_type.facilitation_class or ""):
        raise _Refused(f"facilitation_class is not {list_type.id}'s class in the catalogue")
    for field in ("entry_id", "subject_name", "legal_basis", "reason"):
        if _holds_resident_id(getattr(message, field)):
            raise _Refused(f"{field} holds what reads as a full resident id")
    return PublicEntry(
        entry_id=EntryId(message.entry_id),
        department=department,
        list=list_type.id,
        colour=list_type.colour,
        subject_kind=kind,
        subject_id=shown,
        subject_name=texts["subject_name"],
        legal_basis=texts["legal_basis"],
        reason=texts["reason"],
        window_start=start,
        window_end=end,
        facilitation_class=list_type.facilitation_class,
    )


def _checked_subject(value: str, *, kind: SubjectKind, subject: SubjectId | None) -> str:
    if kind is SubjectKind.PERSON:
        if not _MASKED_RESIDENT_ID.fullmatch(value):
            raise _Refused("subject_id is not a masked resident id (first 6 and last 2 shown)")
        if subject is not None and value != mask_subject(subject):
            raise _Refused("subject_id is not the subject asked")
        return value
    try:
        code = validate_subject(kind, value)
    except InvalidArgument:
        raise _Refused("subject_id is not a unified social credit code") from None
    if subject is not None and code != subject:
        raise _Refused("subject_id is not the subject asked")
    return code


def _checked_window(
    message: lists_pb2.PublicEntry, list_type: ListType, today: datetime.date
) -> tuple[datetime.date, datetime.date]:
    try:
        start = parse_date(message.window_start, field="window_start")
        end = parse_date(message.window_end, field="window_end")
    except InvalidArgument as exc:
        raise _Refused(f"{exc.field} is not a date") from None
    if not start <= today <= end:
        raise _Refused(f"the window does not contain today ({today}, China Standard Time)")
    if (end - start).days + 1 > list_type.max_window_days:
        raise _Refused(f"the window is longer than {list_type.id} allows")
    return start, end


def _holds_resident_id(text: str) -> bool:
    for match in _RESIDENT_ID_LIKE.finditer(text):
        try:
            validate_resident_id(match.group(0))
        except InvalidArgument:
            continue
        return True
    return False


# --- the query ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListSearch:
    """A public list query as received: by subject, by list, or a subject on one list."""

    subject_kind: SubjectKind | None
    subject_id: str
    list_id: str
    page_size: int
    page_token: str


@dataclass(frozen=True)
class ListSearchOutcome:
    query_id: QueryId
    entries: tuple[PublicEntry, ...]
    #: by list: the next page's token; "" on the last page and for a subject's entries
    next_page_token: str
    #: departments whose entries the answer may lack, with why
    missing: tuple[DepartmentStatus, ...]


@dataclass(frozen=True)
class _Asked:
    kind: SubjectKind
    subject: SubjectId | None
    list_type: ListType | None
    size: int
    node_token: str


class ListSearcher:
    """Everything after authentication for one SearchLists call; CoordinatorService delegates."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        nodes: NodePool,
        policy: ReloadablePolicy,
        audit: AuditLog,
        rate_limiter: RateLimiter,
        deadline_s: float,
        clock: Callable[[], datetime.datetime],
        tokens: PageTokens | None = None,
    ) -> None:
        self._catalogue = catalogue
        self._nodes = nodes
        self._policy = policy
        self._audit = audit
        self._rate_limiter = rate_limiter
        self._deadline_s = deadline_s
        self._clock = clock
        self._tokens = tokens or PageTokens(clock=lambda: self._clock().timestamp())

    def search(
        self,
        query_id: QueryId,
        request: ListSearch,
        *,
        authenticate: Callable[[], TokenClaims],
    ) -> ListSearchOutcome:
        """Authenticate, validate, decide, charge the rate limit, ask and check; audit it all."""
        # one policy version decides the query and is the one the audit entry names
        engine = self._policy.current()
        seen: dict[str, int | str] = {}
        claims: TokenClaims | None = None
        try:
            claims = authenticate()
            outcome = self._search(query_id, request, claims, engine, seen)
        except OsmanthusError as exc:
            self._record(query_id, request, claims, engine, "deny", redacted_reason(exc), seen)
            raise
        except Exception:
            self._record(query_id, request, claims, engine, "deny", "internal error", seen)
            raise
        reason = "partial entries forwarded" if outcome.missing else "entries forwarded"
        self._record(query_id, request, claims, engine, "allow", reason, seen)
        return outcome

    def _validate(self, request: ListSearch) -> _Asked:
        """The request checked field by field; InvalidArgument names the field."""
        kind = request.subject_kind
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="subject_kind"
            )
        if not request.subject_id and not request.list_id:
            raise InvalidArgument(
                "name a subject (subject_id), a list (list), or both", field="subject_id"
            )
        subject = validate_subject(kind, request.subject_id) if request.subject_id else None
        list_type = None
        if request.list_id:
            list_type = list_of(self._catalogue, request.list_id, department=None, field="list")
            if kind not in list_type.subject_kinds:
                kinds = " and ".join(sorted(k.value for k in list_type.subject_kinds))
                raise InvalidArgument(
                    f"{list_type.id} lists {kinds}s, not {kind.value}s", field="list"
                )
        size = page_size(request.page_size)
        node_token = ""
        if request.page_token:
            if list_type is None:
                raise InvalidArgument(
                    "a page token continues a list's pages; a subject's entries come in one "
                    "answer, so send it only with the list it came from",
                    field="page_token",
                )
            node_token = self._tokens.open(
                request.page_token,
                kind=kind,
                list_id=list_type.id,
                subject=subject or "",
                department=list_type.department,
            )
        return _Asked(kind, subject, list_type, size, node_token)

    def _search(
        self,
        query_id: QueryId,
        request: ListSearch,
        claims: TokenClaims,
        engine: PolicyEngine,
        seen: dict[str, int | str],
    ) -> ListSearchOutcome:
        asked = self._validate(request)
        seen["subject_kind"] = asked.kind.value
        if asked.list_type is not None:
            seen["list"] = asked.list_type.id
        if request.page_token:
            seen["page_token"] = 1
        now = self._clock()
        decision = engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs={"role": claims.role.value},
                action="SearchLists",
                resource_type="Dataset",
                resource_id=asked.kind.value,
                context=time_facts(now),
            )
        )
        if not decision.allowed:
            raise PermissionDenied(f"central policy: {decision.reason}")
        limits = engine.rate_limits(decision)
        stamp = self._rate_limiter.charge(claims.requester, limits)
        try:
            if asked.list_type is not None:
                outcome = self._by_list(query_id, asked, asked.list_type, china_today(now))
            else:
                outcome = self._by_subject(query_id, asked, china_today(now))
        except BaseException:
            # nothing was answered: only answers count against the limit
            self._rate_limiter.refund(claims.requester, limits, stamp)
            raise
        seen["entries_forwarded"] = len(outcome.entries)
        seen["departments_missing"] = len(outcome.missing)
        return outcome

    def _request(self, asked: _Asked, *, size: int, token: str) -> lists_pb2.PublicEntriesRequest:
        return lists_pb2.PublicEntriesRequest(
            subject_kind=KIND_TO_PB[asked.kind],
            subject_id=asked.subject or "",
            list=asked.list_type.id if asked.list_type else "",
            page_size=size,
            page_token=token,
        )

    def _checked(
        self,
        answer: PublicEntriesAnswer,
        asked: _Asked,
        today: datetime.date,
        *,
        size: int,
    ) -> tuple[list[PublicEntry], NodeFailure | None]:
        """One department's page, checked; a failure when anything of it was not forwarded."""
        if len(answer.entries) > size:
            return [], NodeFailure(
                answer.department,
                f"sent {len(answer.entries)} entries for a page of {size}; discarded",
            )
        if len(answer.next_page_token) > MAX_NODE_TOKEN_CHARS:
            return [], NodeFailure(
                answer.department,
                f"sent a page token longer than {MAX_NODE_TOKEN_CHARS} characters; discarded",
            )
        kept, dropped = check_entries(
            answer.entries,
            department=answer.department,
            kind=asked.kind,
            list_id=asked.list_type.id if asked.list_type else None,
            subject=asked.subject,
            catalogue=self._catalogue,
            today=today,
        )
        for item in dropped:
            # a node leaking data or out of date: its operator must look; no values logged
            _log.warning(
                "department %s: entry %d of its public-list answer dropped: %s",
                answer.department,
                item.position,
                item.reason,
            )
        if not dropped:
            return kept, None
        return kept, NodeFailure(
            answer.department,
            f"{len(dropped)} of its entries failed the coordinator's checks and were left out "
            f"(first: {dropped[0].reason})",
        )

    def _by_list(
        self, query_id: QueryId, asked: _Asked, list_type: ListType, today: datetime.date
    ) -> ListSearchOutcome:
        department = list_type.department
        if department not in self._nodes.departments:
            raise Unavailable(
                f"no node registered for {department}, which publishes {list_type.id}"
            )
        answers, failures = self._nodes.public_entries_each(
            [(department, self._request(asked, size=asked.size, token=asked.node_token))],
            deadline_s=self._deadline_s,
        )
        if not answers:
            (refusal,) = failures
            if isinstance(refusal.error, InvalidArgument) and refusal.error.field == "page_token":
                # the node no longer takes its own token (a rebuilt list): say what to do
                raise InvalidArgument(
                    f"{department} refused the page token ({refusal.error.message}); start "
                    "again from the first page",
                    field="page_token",
                )
            raise Unavailable(f"{department}, which publishes {list_type.id}: {refusal.reason}")
        (answer,) = answers
        entries, failure = self._checked(answer, asked, today, size=asked.size)
        token = ""
        if answer.next_page_token and (failure is None or entries):
            token = self._tokens.seal(
                kind=asked.kind,
                list_id=list_type.id,
                subject=asked.subject or "",
                department=department,
                node_token=answer.next_page_token,
            )
        missing = () if failure is None else (DepartmentStatus(department, failure.reason),)
        return ListSearchOutcome(query_id, tuple(entries), token, missing)

    def _by_subject(
        self, query_id: QueryId, asked: _Asked, today: datetime.date
    ) -> ListSearchOutcome:
        expected = sorted(self._catalogue.list_departments(asked.kind))
        failures = [
            NodeFailure(d, "no node registered for this department")
            for d in expected
            if d not in self._nodes.departments
        ]
        pending = [(d, "") for d in expected if d in self._nodes.departments]
        entries: list[PublicEntry] = []
        answered: set[DepartmentId] = set()
        # every round shares one deadline: a department with many entries pages on within it
        deadline_at = time.monotonic() + self._deadline_s
        for _ in range(SUBJECT_PAGES):
            left = deadline_at - time.monotonic()
            if not pending or left <= 0:
                break
            answers, failed = self._nodes.public_entries_each(
                [(d, self._request(asked, size=MAX_PAGE_SIZE, token=t)) for d, t in pending],
                deadline_s=left,
            )
            failures += failed
            pending = []
            for answer in answers:
                kept, failure = self._checked(answer, asked, today, size=MAX_PAGE_SIZE)
                known = {e.entry_id for e in entries if e.department == answer.department}
                entries += [e for e in kept if e.entry_id not in known]
                if failure is not None:
                    failures.append(failure)
                    continue
                answered.add(answer.department)
                if answer.next_page_token:
                    pending.append((answer.department, answer.next_page_token))
        for department, _ in pending:
            answered.discard(department)
            failures.append(
                NodeFailure(
                    department,
                    f"holds more entries in view for this subject than one answer carries "
                    f"({SUBJECT_PAGES * MAX_PAGE_SIZE} a department): ask by list and subject "
                    "to page through them",
                )
            )
        if not answered and not entries and failures:
            raise Unavailable(
                "no department publishing lists about "
                f"{asked.kind.value}s answered: "
                + "; ".join(f"{f.department}: {f.reason}" for f in failures)
            )
        entries.sort(key=lambda e: (e.window_start, e.department, e.entry_id))
        missing = tuple(
            DepartmentStatus(f.department, f.reason)
            for f in sorted(failures, key=lambda f: f.department)
        )
        return ListSearchOutcome(query_id, tuple(entries), "", missing)

    def _record(
        self,
        query_id: QueryId,
        request: ListSearch,
        claims: TokenClaims | None,
        engine: PolicyEngine,
        decision: str,
        reason: str,
        extra: dict[str, Any],
    ) -> None:
        subject = (
            self._audit.subject_hash(canonical_subject(request.subject_kind, request.subject_id))
            if request.subject_id
            else ""
        )
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
                subject_hash=subject,
                extra=extra,
            )
        )
