"""SearchLists at the coordinator: the public query of red and black lists, checked entry by entry.

The coordinator asks the departments that publish lists about the subject kind for the entries
in public view today, and forwards what comes back only after checking every entry itself: it
must belong to the answering node's department and to a list that department publishes (the one
asked, when a list is asked), be in its publication window (China Standard Time, give or take a
day for a node whose midnight came before or after ours), carry the published fields only, and
show a person's resident id masked. A node must not be able to leak a full resident id, or an
entry out of its window, through a public query; what fails a check is dropped, logged without
its values, and its department reported as missing.

By subject, every department publishing lists about the kind is asked at once and the answers
are merged; by list, only the list's department is asked, one page at a time. A node's own page
token never leaves the coordinator: the requester's token holds the id of the last entry
forwarded (checked like every forwarded entry), and the coordinator makes the node's token
from it when the requester comes back. The requester's token is signed (HMAC-SHA256 under a key
this process draws at start) and bound to the subject kind, the list, its department, the
subject and the requester, so it cannot be forged, altered, or replayed by another requester or
against another list.
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
from typing import Final

from coordinator.context import CoordinatorContext
from coordinator.nodes import NodeFailure, PublicEntriesAnswer
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.catalogue import Catalogue, ListColour, ListType
from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument, Unavailable
from osmanthus.core.ids import canonical_subject, mask_subject, validate_subject
from osmanthus.core.lists import (
    ENTRY_ID_PATTERN,
    MAX_LEGAL_BASIS_LENGTH,
    MAX_NAME_LENGTH,
    MAX_PAGE_SIZE,
    MAX_REASON_LENGTH,
    WITHHELD_CODE_READS_AS_ID,
    WITHHELD_COLOUR,
    WITHHELD_ENTRY_ID_MALFORMED,
    WITHHELD_ENTRY_ID_READS_AS_ID,
    WITHHELD_FACILITATION,
    WITHHELD_KIND_REFUSED,
    WITHHELD_LIST_UNKNOWN,
    WITHHELD_SUBJECT_ID_MALFORMED,
    WITHHELD_TEXT_MALFORMED,
    WITHHELD_TEXT_READS_AS_ID,
    WITHHELD_WINDOW_TOO_LONG,
    EntryId,
    PublicEntry,
    check_text,
    encode_page_token,
    holds_resident_id,
    list_of,
    page_size,
    parse_date,
)
from osmanthus.core.policy import (
    PolicyEngine,
)
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import DepartmentId, DepartmentStatus, QueryId, SubjectId, SubjectKind
from osmanthus.core.wire.common import kind_from_pb
from osmanthus.core.wire.coordinator import ListSearch, ListSearchOutcome
from osmanthus.core.wire.lists import PublicQuery
from osmanthus.v1 import lists_pb2

_log = logging.getLogger(__name__)

#: the audit entry's `shape` for a public list query (it releases no score)
AUDIT_SHAPE: Final = "list_search"
#: pages of one department followed for a subject query: a subject's entries come in one answer,
#: and this bounds it (300 entries a department) below gRPC's 4 MiB message limit
SUBJECT_PAGES: Final = 3
#: node pages one list page may follow when every entry of a node page failed the checks: the
#: requester's token can only continue after an entry forwarded, so a dropped page is skipped
#: here, within a bound, rather than sent back empty again and again
LIST_PAGES: Final = 5
#: how long a page token stays usable; a later page starts again from the first
PAGE_TOKEN_TTL_S: Final = 3600
#: longest node page token followed (to the same node, never to a requester), and longest
#: token a requester may send back
MAX_NODE_TOKEN_CHARS: Final = 512
MAX_PAGE_TOKEN_CHARS: Final = 1024
_TOKEN_PREFIX: Final = "lp2"
_TOKEN_FIELDS: Final = frozenset({"k", "l", "d", "r", "a", "e"})
_MAC_BYTES: Final = 16

_COLOUR_FROM_PB: Final[dict[int, ListColour]] = {
    lists_pb2.LIST_COLOUR_RED: ListColour.RED,
    lists_pb2.LIST_COLOUR_BLACK: ListColour.BLACK,
}

#: a person's id as a public list shows it: region code, ten stars, the last two characters
_MASKED_RESIDENT_ID = re.compile(r"[0-9]{6}\*{10}[0-9]{1}[0-9X]")
#: how far a node's date may be from ours: a node whose midnight came first (or not yet) shows
#: entries of its day, and one day of slack shows nothing a node has not published
WINDOW_SLACK: Final = datetime.timedelta(days=1)


# --- page tokens --------------------------------------------------------------------------------


class PageTokens:
    """Seals where a list's pages stand for the requester, and opens it for the same query only.

    A token is "lp2." + base64url(payload) + "." + base64url(MAC), unpadded. The payload is
    JSON: the subject kind (k), the list (l), its department (d), the requester (r), the id of
    the last entry the coordinator forwarded (a) and when the token expires (e, Unix seconds):
    nothing the requester has not seen. The MAC (HMAC-SHA256, 16 bytes) covers the payload and
    the subject asked, which the token does not carry. The node's own token is never in it: the
    coordinator makes that from `a`. The key lives in this process only: after a restart,
    paging starts again.
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
        # JSON escapes control characters, so the payload never holds the separating NUL
        message = payload + b"\x00" + subject.encode("utf-8")
        return hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]

    def seal(
        self,
        *,
        kind: SubjectKind,
        list_id: str,
        subject: str,
        department: DepartmentId,
        requester: str,
        after: EntryId,
    ) -> str:
        """The token of the page after entry `after`, which the coordinator has forwarded."""
        if not ENTRY_ID_PATTERN.fullmatch(after):
            raise ValueError("a page token continues after an entry id")
        fields = {
            "k": kind.value,
            "l": list_id,
            "d": department,
            "r": requester,
            "a": after,
            "e": int(self._clock() + self._ttl_s),
        }
        payload = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode("utf-8")
        return ".".join(
            (_TOKEN_PREFIX, _b64encode(payload), _b64encode(self._mac(payload, subject)))
        )

    def open(
        self,
        token: str,
        *,
        kind: SubjectKind,
        list_id: str,
        subject: str,
        department: str,
        requester: str,
    ) -> EntryId:
        """The entry id `token` continues after, if it was issued for this very query."""
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
        # the MAC first: nothing of a token is read, compared or quoted until it is ours
        if not hmac.compare_digest(mac, self._mac(payload, subject)):
            # a forgery, an altered token, one for another subject, or one from before a restart
            raise InvalidArgument(
                "was not issued by this coordinator for this query (altered, for another "
                "subject, or issued before the coordinator restarted); start again from the "
                "first page, without a page token",
                field="page_token",
            )
        try:
            fields = json.loads(payload)
        except ValueError:
            fields = None
        if not isinstance(fields, dict) or set(fields) != _TOKEN_FIELDS:
            raise InvalidArgument(_NOT_OURS, field="page_token")
        after, expires = fields["a"], fields["e"]
        if not (isinstance(after, str) and ENTRY_ID_PATTERN.fullmatch(after)) or not isinstance(
            expires, int
        ):
            raise InvalidArgument(_NOT_OURS, field="page_token")
        if fields["k"] != kind.value or fields["l"] != list_id:
            raise InvalidArgument(
                f"was issued for the {fields['l']} list of {fields['k']}s, not for {list_id} "
                f"({kind.value}s): a page token continues the query it came from",
                field="page_token",
            )
        if fields["r"] != requester:
            raise InvalidArgument(
                "was issued to another requester: a page token continues its own requester's "
                "query only; start again from the first page",
                field="page_token",
            )
        if fields["d"] != department:
            # the catalogue changed hands of the list since the token was issued
            raise InvalidArgument(
                f"was issued for {fields['d']}'s list, and {department} publishes it now; start "
                "again from the first page",
                field="page_token",
            )
        if self._clock() > expires:
            raise InvalidArgument(
                f"has expired (page tokens last {self._ttl_s / 60:g} minutes); start again from "
                "the first page",
                field="page_token",
            )
        return EntryId(after)


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
    after: EntryId | None = None,
) -> tuple[list[PublicEntry], list[Dropped]]:
    """The entries of one department's answer fit to forward, and those dropped with why.

    `list_id` and `subject` are what was asked (None when not asked), `after` the entry id the
    page continues after (a list's pages run in entry id order). Every entry is rebuilt from
    the published fields, so nothing else the node may have put in its message goes on.
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
                after=after,
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


class EntryRefused(Exception):
    """An entry fails a check; the message names the field and the problem, never a value."""


class ContentRefused(EntryRefused):
    """An entry fails a check on its content, one an entry stored honestly can come to fail:
    the catalogue changed (a list's windows, kinds, colour or class), a check was added since
    it was published (entry ids reading as resident ids), or a day passed (a number whose
    birth date was ahead reads as a resident id from that day). `withheld` names the check in
    the words of osmanthus.core.lists.WITHHELD_REASONS. Any other EntryRefused is a fault no
    node's code makes of a stored entry: the node is broken or altered."""

    def __init__(self, message: str, *, withheld: str) -> None:
        super().__init__(message)
        self.withheld = withheld


class _Refused(EntryRefused):
    """Raised by the checks below."""


class _Content(_Refused, ContentRefused):
    """Raised by the checks below for a fault of content."""


def check_feed_entry(
    message: lists_pb2.PublicEntry, *, department: DepartmentId, catalogue: Catalogue
) -> PublicEntry:
    """One entry of a department's change feed, checked as the public query checks an entry
    (rebuilt from the published fields) except for today: a feed reports entries withdrawn,
    expired or not yet in view too. ContentRefused (a fault of the entry's content) or
    another EntryRefused (a fault no honest node makes) says which check failed."""
    return _checked_entry(
        message,
        department=department,
        kind=None,
        list_id=None,
        subject=None,
        catalogue=catalogue,
        today=None,
        after=None,
    )


def _checked_entry(
    message: lists_pb2.PublicEntry,
    *,
    department: DepartmentId,
    kind: SubjectKind | None,
    list_id: str | None,
    subject: SubjectId | None,
    catalogue: Catalogue,
    today: datetime.date | None,
    after: EntryId | None,
) -> PublicEntry:
    """`kind` None takes any kind the list lists; `today` None skips the in-view check.

    Faults no node's code makes of a stored entry come first, so that a broken or altered
    node is refused as such whatever else its entry holds; then faults of content.
    """
    if message.department != department:
        raise _Refused("department is not the answering node's department")
    sent_kind = kind_from_pb(message.subject_kind)
    if sent_kind is None:
        raise _Refused("subject_kind is not person or enterprise")
    if kind is not None and sent_kind is not kind:
        raise _Refused("subject_kind is not the kind asked")
    kind = sent_kind
    if kind is SubjectKind.PERSON:
        # a node masks every person's id it shows: a full one is a leak, not a stored fault
        _checked_masked_id(message.subject_id, subject=subject)
    start, end = _checked_dates(message, today)
    list_type = next((t for t in catalogue.lists if t.id == message.list), None)
    if list_type is None or list_type.department != department:
        raise _Content(
            "list is not a list of the answering node's department",
            withheld=WITHHELD_LIST_UNKNOWN,
        )
    if list_id is not None and list_type.id != list_id:
        raise _Refused("list is not the list asked")
    if kind not in list_type.subject_kinds:
        raise _Content(
            f"subject_kind: {list_type.id} does not list {kind.value}s",
            withheld=WITHHELD_KIND_REFUSED[kind],
        )
    if _COLOUR_FROM_PB.get(message.colour) is not list_type.colour:
        raise _Content(
            f"colour is not {list_type.id}'s colour in the catalogue", withheld=WITHHELD_COLOUR
        )
    if not ENTRY_ID_PATTERN.fullmatch(message.entry_id):
        raise _Content("entry_id is not an entry id", withheld=WITHHELD_ENTRY_ID_MALFORMED)
    if after is not None and message.entry_id <= after:
        # what the requester had on an earlier page; forwarding it could page in circles
        raise _Refused("entry_id does not come after the page's starting point")
    shown = (
        message.subject_id
        if kind is SubjectKind.PERSON
        else _checked_code(message.subject_id, subject=subject)
    )
    if (end - start).days + 1 > list_type.max_window_days:
        raise _Content(
            f"the window is longer than {list_type.id} allows", withheld=WITHHELD_WINDOW_TOO_LONG
        )
    texts = {}
    for field, limit in (
        ("subject_name", MAX_NAME_LENGTH),
        ("legal_basis", MAX_LEGAL_BASIS_LENGTH),
        ("reason", MAX_REASON_LENGTH),
    ):
        value = getattr(message, field)
        if holds_resident_id(value):
            raise _Content(
                f"{field} holds what reads as a full resident id",
                withheld=WITHHELD_TEXT_READS_AS_ID,
            )
        try:
            texts[field] = check_text(value, field=field, limit=limit)
        except InvalidArgument as exc:
            raise _Content(f"{field} {exc.message}", withheld=WITHHELD_TEXT_MALFORMED) from None
        if texts[field] != value:
            raise _Content(
                f"{field} has leading or trailing space", withheld=WITHHELD_TEXT_MALFORMED
            )
    if holds_resident_id(message.entry_id):
        raise _Content(
            "entry_id holds what reads as a full resident id",
            withheld=WITHHELD_ENTRY_ID_READS_AS_ID,
        )
    if message.facilitation_class != (list_type.facilitation_class or ""):
        raise _Content(
            f"facilitation_class is not {list_type.id}'s class in the catalogue",
            withheld=WITHHELD_FACILITATION,
        )
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


def _checked_masked_id(value: str, *, subject: SubjectId | None) -> None:
    if not _MASKED_RESIDENT_ID.fullmatch(value):
        raise _Refused("subject_id is not a masked resident id (first 6 and last 2 shown)")
    if subject is not None and value != mask_subject(subject):
        raise _Refused("subject_id is not the subject asked")


def _checked_code(value: str, *, subject: SubjectId | None) -> str:
    if holds_resident_id(value):
        # a rare credit code also passes as a resident id: no reader could tell the two apart
        raise _Content(
            "subject_id reads as a full resident id as well as a credit code",
            withheld=WITHHELD_CODE_READS_AS_ID,
        )
    try:
        code = validate_subject(SubjectKind.ENTERPRISE, value)
    except InvalidArgument:
        raise _Content(
            "subject_id is not a unified social credit code",
            withheld=WITHHELD_SUBJECT_ID_MALFORMED,
        ) from None
    if subject is not None and code != subject:
        raise _Refused("subject_id is not the subject asked")
    return code


def _checked_dates(
    message: lists_pb2.PublicEntry, today: datetime.date | None
) -> tuple[datetime.date, datetime.date]:
    try:
        start = parse_date(message.window_start, field="window_start")
        end = parse_date(message.window_end, field="window_end")
    except InvalidArgument as exc:
        raise _Refused(f"{exc.field} is not a date") from None
    # a node judges by its own date: within seconds of midnight it may be a day ahead of ours
    # or behind, and an entry of its today is published whichever day ours is
    if today is not None and not start - WINDOW_SLACK <= today <= end + WINDOW_SLACK:
        raise _Refused(
            f"the window does not contain today ({today}, China Standard Time) or the day "
            "before or after"
        )
    if end < start:
        raise _Refused("window_end is before window_start")
    return start, end


# --- the query ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Asked:
    kind: SubjectKind
    subject: SubjectId | None
    list_type: ListType | None
    size: int
    requester: str
    #: by list: the entry the requester's page token continues after; None on the first page
    after: EntryId | None


class ListSearcher:
    """Everything after authentication for one SearchLists call; CoordinatorService delegates."""

    def __init__(self, context: CoordinatorContext, *, tokens: PageTokens | None = None) -> None:
        self._ctx = context
        self._tokens = tokens or PageTokens(clock=lambda: self._ctx.clock().timestamp())

    def search(
        self,
        query_id: QueryId,
        request: ListSearch,
        *,
        authenticate: Callable[[], TokenClaims],
    ) -> ListSearchOutcome:
        """Authenticate, validate, decide, charge the rate limit, ask and check; audit it all."""
        # one policy version decides the query and is the one the audit entry names
        engine = self._ctx.policy.current()
        subject = (
            self._ctx.audit.subject_hash(
                canonical_subject(request.subject_kind, request.subject_id)
            )
            if request.subject_id
            else ""
        )
        record = AuditedRequest(
            query_id=query_id, policy_hash=engine.hash, shape=AUDIT_SHAPE, subject_hash=subject
        )
        with self._ctx.audited(record):
            claims = record.identify(authenticate())
            outcome = self._search(query_id, request, claims, engine, record.extra)
            record.allow("partial entries forwarded" if outcome.missing else "entries forwarded")
        return outcome

    def _validate(self, request: ListSearch, requester: str) -> _Asked:
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
            list_type = list_of(self._ctx.catalogue, request.list_id, department=None, field="list")
            if kind not in list_type.subject_kinds:
                kinds = " and ".join(sorted(k.value for k in list_type.subject_kinds))
                raise InvalidArgument(
                    f"{list_type.id} lists {kinds}s, not {kind.value}s", field="list"
                )
        size = page_size(request.page_size)
        after = None
        if request.page_token:
            if list_type is None:
                raise InvalidArgument(
                    "a page token continues a list's pages; a subject's entries come in one "
                    "answer, so send it only with the list it came from",
                    field="page_token",
                )
            after = self._tokens.open(
                request.page_token,
                kind=kind,
                list_id=list_type.id,
                subject=subject or "",
                department=list_type.department,
                requester=requester,
            )
        return _Asked(kind, subject, list_type, size, requester, after)

    def _search(
        self,
        query_id: QueryId,
        request: ListSearch,
        claims: TokenClaims,
        engine: PolicyEngine,
        seen: dict[str, int | str],
    ) -> ListSearchOutcome:
        asked = self._validate(request, claims.requester)
        seen["subject_kind"] = asked.kind.value
        if asked.list_type is not None:
            seen["list"] = asked.list_type.id
        if request.page_token:
            seen["page_token"] = 1
        decision = self._ctx.require(engine, claims, "SearchLists", ("Dataset", asked.kind.value))
        today = china_today(self._ctx.clock())
        with self._ctx.rate_limited(claims.requester, engine.rate_limits(decision)):
            if asked.list_type is not None:
                outcome = self._by_list(query_id, asked, asked.list_type, today, seen)
            else:
                outcome = self._by_subject(query_id, asked, today)
        seen["entries_forwarded"] = len(outcome.entries)
        seen["departments_missing"] = len(outcome.missing)
        return outcome

    def _request(self, asked: _Asked, *, size: int, token: str) -> PublicQuery:
        return PublicQuery(
            subject_kind=asked.kind,
            subject_id=asked.subject or "",
            list=asked.list_type.id if asked.list_type else "",
            page_size=size,
            page_token=token,
        )

    def _discarded(self, answer: PublicEntriesAnswer, *, size: int) -> NodeFailure | None:
        """Why a department's whole answer is unfit to use, if it is."""
        if len(answer.entries) > size:
            return NodeFailure(
                answer.department,
                f"sent {len(answer.entries)} entries for a page of {size}; discarded",
            )
        if len(answer.next_page_token) > MAX_NODE_TOKEN_CHARS:
            return NodeFailure(
                answer.department,
                f"sent a page token longer than {MAX_NODE_TOKEN_CHARS} characters; discarded",
            )
        return None

    def _checked(
        self,
        answer: PublicEntriesAnswer,
        asked: _Asked,
        today: datetime.date,
    ) -> tuple[list[PublicEntry], list[Dropped]]:
        """One department's page, checked: the entries to forward and those dropped."""
        kept, dropped = check_entries(
            answer.entries,
            department=answer.department,
            kind=asked.kind,
            list_id=asked.list_type.id if asked.list_type else None,
            subject=asked.subject,
            catalogue=self._ctx.catalogue,
            today=today,
            after=asked.after,
        )
        for item in dropped:
            # a node leaking data or out of date: its operator must look; no values logged
            _log.warning(
                "department %s: entry %d of its public-list answer dropped: %s",
                answer.department,
                item.position,
                item.reason,
            )
        return kept, dropped

    def _by_list(
        self,
        query_id: QueryId,
        asked: _Asked,
        list_type: ListType,
        today: datetime.date,
        seen: dict[str, int | str],
    ) -> ListSearchOutcome:
        department = list_type.department
        if department not in self._ctx.nodes.departments:
            raise Unavailable(
                f"no node registered for {department}, which publishes {list_type.id}"
            )
        # the node's token is made here from the last entry forwarded, never taken from a
        # requester; a node's own token is followed below, to that node only
        node_token = encode_page_token(asked.after) if asked.after is not None else ""
        deadline_at = time.monotonic() + self._ctx.deadline_s
        entries: list[PublicEntry] = []
        dropped: list[Dropped] = []
        discarded: NodeFailure | None = None
        more = False
        for page in range(LIST_PAGES):
            left = deadline_at - time.monotonic()
            if page and left <= 0:
                break
            seen["node_pages"] = page + 1
            answers, failures = self._ctx.nodes.public_entries_each(
                [(department, self._request(asked, size=asked.size, token=node_token))],
                deadline_s=left,
            )
            if not answers:
                (refusal,) = failures
                error = refusal.error
                if page == 0 and isinstance(error, InvalidArgument) and error.field == "page_token":
                    # the node no longer takes the place it gave (a rebuilt list): say what to do
                    raise InvalidArgument(
                        f"{department} refused the page token ({error.message}); start again "
                        "from the first page",
                        field="page_token",
                    )
                raise Unavailable(f"{department}, which publishes {list_type.id}: {refusal.reason}")
            (answer,) = answers
            discarded = self._discarded(answer, size=asked.size)
            if discarded is not None:
                more = False
                break
            kept, failed = self._checked(answer, asked, today)
            entries, more = kept, bool(answer.next_page_token)
            dropped += failed
            if kept or not more:
                break
            # every entry of the page was dropped: the requester's token could only point
            # before it again, so the next page is fetched here, within LIST_PAGES
            node_token = answer.next_page_token
        token = ""
        if entries and more:
            token = self._tokens.seal(
                kind=asked.kind,
                list_id=list_type.id,
                subject=asked.subject or "",
                department=department,
                requester=asked.requester,
                after=max(e.entry_id for e in entries),
            )
        missing: tuple[DepartmentStatus, ...] = ()
        if discarded is not None:
            missing = (DepartmentStatus(department, discarded.reason),)
        elif dropped:
            reason = _dropped_reason(dropped)
            if more and not entries:
                reason += (
                    f"; {seen['node_pages']} pages in a row had no entry fit to forward, so the "
                    "list's later pages are not shown"
                )
            missing = (DepartmentStatus(department, reason),)
        return ListSearchOutcome(query_id, tuple(entries), token, missing)

    def _by_subject(
        self, query_id: QueryId, asked: _Asked, today: datetime.date
    ) -> ListSearchOutcome:
        expected = sorted(self._ctx.catalogue.list_departments(asked.kind))
        failures = [
            NodeFailure(d, "no node registered for this department")
            for d in expected
            if d not in self._ctx.nodes.departments
        ]
        pending = [(d, "") for d in expected if d in self._ctx.nodes.departments]
        entries: list[PublicEntry] = []
        answered: set[DepartmentId] = set()
        # every round shares one deadline: a department with many entries pages on within it
        deadline_at = time.monotonic() + self._ctx.deadline_s
        for _ in range(SUBJECT_PAGES):
            left = deadline_at - time.monotonic()
            if not pending or left <= 0:
                break
            # a node's own page token goes back to that node only, never to the requester
            answers, failed = self._ctx.nodes.public_entries_each(
                [(d, self._request(asked, size=MAX_PAGE_SIZE, token=t)) for d, t in pending],
                deadline_s=left,
            )
            failures += failed
            pending = []
            for answer in answers:
                discarded = self._discarded(answer, size=MAX_PAGE_SIZE)
                if discarded is not None:
                    failures.append(discarded)
                    continue
                kept, dropped = self._checked(answer, asked, today)
                known = {e.entry_id for e in entries if e.department == answer.department}
                entries += [e for e in kept if e.entry_id not in known]
                if dropped:
                    failures.append(NodeFailure(answer.department, _dropped_reason(dropped)))
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


def _dropped_reason(dropped: Sequence[Dropped]) -> str:
    return (
        f"{len(dropped)} of its entries failed the coordinator's checks and were left out "
        f"(first: {dropped[0].reason})"
    )
