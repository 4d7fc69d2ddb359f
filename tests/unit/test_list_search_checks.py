"""The coordinator's checks of a node's public-list answer, its page tokens, and list paging
against a node answering from a real list store (honest, or tampering with its answers)."""

from __future__ import annotations

import base64
import datetime
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import cast

import pytest

from coordinator.context import CoordinatorContext
from coordinator.lists import LIST_PAGES, ListSearcher, PageTokens, check_entries
from coordinator.nodes import NodeFailure, NodePool, PublicEntriesAnswer
from coordinator.ratelimit import RateLimiter
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.lists import ListStore
from osmanthus.core.audit import AuditLog
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import make_resident_id, make_uscc, mask_subject
from osmanthus.core.lists import EntryId, decode_page_token, encode_page_token, holds_resident_id
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import (
    DepartmentId,
    KeyFingerprint,
    QueryId,
    RequesterId,
    Role,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.common import KIND_TO_PB
from osmanthus.core.wire.coordinator import ListSearch, ListSearchOutcome
from osmanthus.core.wire.lists import EntryDraft, PublicQuery, public_query_to_proto
from osmanthus.core.wire.lists import public_entry_to_proto as public_entry_message
from osmanthus.core.wire.lists import public_page_to_proto as public_page_message
from osmanthus.core.wire.lists import public_query_from_proto as public_query
from osmanthus.v1 import lists_pb2

CATALOGUE = load_catalogue()
TODAY = datetime.date(2026, 3, 10)
YESTERDAY = TODAY - datetime.timedelta(days=1)
TOMORROW = TODAY + datetime.timedelta(days=1)
PERSON = make_resident_id(region="320505", birth=datetime.date(1980, 5, 17), sequence=123)
OTHER_PERSON = make_resident_id(region="320508", birth=datetime.date(1975, 1, 2), sequence=7)
FIRM = make_uscc(authority="9", category="1", region="320500", organisation="M000100Y4")
COURT = DepartmentId("court")


def court_entry(**changes: object) -> lists_pb2.PublicEntry:
    """A judgement-defaulter entry about PERSON as an honest court node sends it today."""
    fields: dict[str, object] = {
        "entry_id": "2025-SU05-ZHI-123",
        "department": "court",
        "list": "judgement_defaulters",
        "colour": lists_pb2.LIST_COLOUR_BLACK,
        "subject_kind": KIND_TO_PB[SubjectKind.PERSON],
        "subject_id": mask_subject(PERSON),
        "subject_name": "Zhang San",
        "legal_basis": "SPC Provisions (2017), art. 6",
        "reason": "failed to perform an effective judgement",
        "window_start": YESTERDAY.isoformat(),
        "window_end": TOMORROW.isoformat(),
        "facilitation_class": "",
    }
    fields.update(changes)
    return lists_pb2.PublicEntry(**fields)  # type: ignore[arg-type]


def check(
    *entries: lists_pb2.PublicEntry,
    department: str = "court",
    kind: SubjectKind = SubjectKind.PERSON,
    list_id: str | None = None,
    subject: str | None = None,
) -> tuple[list[str], list[str]]:
    kept, dropped = check_entries(
        entries,
        department=DepartmentId(department),
        kind=kind,
        list_id=list_id,
        subject=SubjectId(subject) if subject else None,
        catalogue=CATALOGUE,
        today=TODAY,
    )
    return [e.entry_id for e in kept], [d.reason for d in dropped]


def test_an_honest_entry_goes_on_with_the_published_fields() -> None:
    kept, dropped = check_entries(
        [court_entry()],
        department=COURT,
        kind=SubjectKind.PERSON,
        list_id="judgement_defaulters",
        subject=PERSON,
        catalogue=CATALOGUE,
        today=TODAY,
    )
    assert dropped == []
    (entry,) = kept
    assert entry.subject_id == "320505**********" + PERSON[-2:]
    assert (entry.window_start, entry.window_end) == (YESTERDAY, TOMORROW)
    assert entry.facilitation_class is None


def test_a_full_resident_id_is_dropped() -> None:
    kept, dropped = check(court_entry(subject_id=PERSON))
    assert kept == []
    assert dropped == ["subject_id is not a masked resident id (first 6 and last 2 shown)"]


@pytest.mark.parametrize("field", ["reason", "subject_name", "legal_basis", "entry_id"])
def test_a_resident_id_hidden_in_a_text_field_is_dropped(field: str) -> None:
    leaked = court_entry(**{field: f"{PERSON}" if field == "entry_id" else f"id {PERSON} owes"})
    kept, dropped = check(leaked)
    assert kept == []
    assert dropped == [f"{field} holds what reads as a full resident id"]
    # a letter after the id hid it from the old check
    kept, dropped = check(court_entry(**{field: f"{PERSON}J"}))
    assert dropped == [f"{field} holds what reads as a full resident id"]


FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")


@pytest.mark.parametrize(
    "text",
    [
        PERSON,
        f"owner {PERSON} failed to pay",
        f"{PERSON}J",  # a letter after
        f"J{PERSON}",  # a letter before
        f"9{PERSON}7",  # digits either side: read at every offset
        f"{PERSON[:6]} {PERSON[6:14]} {PERSON[14:]}",  # grouped as people write it
        f"{PERSON[:6]}-{PERSON[6:10]}-{PERSON[10:14]}-{PERSON[14:]}",
        f"{PERSON[:6]}.{PERSON[6:14]}/{PERSON[14:]}",
        f"{PERSON[:6]}\u00a0{PERSON[6:14]}\u3000{PERSON[14:]}",  # no-break and ideographic spaces
        f"{PERSON[:9]}\u200b{PERSON[9:]}",  # a zero-width space
        f"身份证号{PERSON.translate(FULL_WIDTH)}",  # full-width digits
    ],
)
def test_the_resident_id_detector_sees_ids_however_written(text: str) -> None:
    assert holds_resident_id(text)


def test_the_detector_reads_a_lower_case_check_character() -> None:
    with_x = next(
        rid
        for rid in (
            make_resident_id(region="320505", birth=datetime.date(1980, 5, 17), sequence=n)
            for n in range(200)
        )
        if rid.endswith("X")
    )
    assert holds_resident_id(f"id {with_x[:-1]}x.")
    assert holds_resident_id(f"id {with_x[:-1]}ｘ")


@pytest.mark.parametrize(
    "text",
    [
        mask_subject(PERSON),
        PERSON[:17] + ("0" if PERSON[17] != "0" else "1"),  # the check character is wrong
        f"{PERSON[:6]}  {PERSON[6:]}",  # two spaces keep numbers apart
        f"{PERSON[:6]}, {PERSON[6:]}",  # so does list punctuation
        "judgement (2025) Su 05 Zhi No. 123 of 2025-03-10, unpaid 1,234,567.89 yuan",
        "due 2021-02-02, 2022-03-03, 2023-04-04 and 2024-05-05",
        "call +86 512 6522 1234; account 6222 0212 3456 7890 123",
        "case 110101190001019999 is a number, not a person",  # born 1900, check fails
        FIRM,
        "",
    ],
)
def test_the_resident_id_detector_leaves_ordinary_text_alone(text: str) -> None:
    assert not holds_resident_id(text)


def test_a_number_that_is_not_a_resident_id_stays() -> None:
    # 18 digits with a wrong check character: a case number, not somebody's id
    wrong = PERSON[:17] + ("0" if PERSON[17] != "0" else "1")
    kept, _ = check(court_entry(reason=f"case {wrong}"))
    assert kept == ["2025-SU05-ZHI-123"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (TODAY - datetime.timedelta(days=30), TODAY - datetime.timedelta(days=2)),
        (TODAY + datetime.timedelta(days=2), TODAY + datetime.timedelta(days=30)),
    ],
)
def test_an_entry_out_of_its_window_is_dropped(start: datetime.date, end: datetime.date) -> None:
    kept, dropped = check(court_entry(window_start=start.isoformat(), window_end=end.isoformat()))
    assert kept == []
    assert dropped == [
        "the window does not contain today (2026-03-10, China Standard Time) or the day before "
        "or after"
    ]


def test_the_window_may_start_and_end_today() -> None:
    kept, _ = check(court_entry(window_start=TODAY.isoformat(), window_end=TODAY.isoformat()))
    assert kept == ["2025-SU05-ZHI-123"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (TOMORROW, TOMORROW + datetime.timedelta(days=30)),  # the node's midnight came first
        (TODAY - datetime.timedelta(days=30), YESTERDAY),  # ours came first
    ],
)
def test_an_entry_of_a_nodes_today_across_midnight_goes_on(
    start: datetime.date, end: datetime.date
) -> None:
    # a node a day ahead or behind ours shows entries of its own today: not a leak, and its
    # department is not reported as failing the checks
    kept, dropped = check(court_entry(window_start=start.isoformat(), window_end=end.isoformat()))
    assert (kept, dropped) == (["2025-SU05-ZHI-123"], [])


def test_the_coordinators_today_is_china_standard_time() -> None:
    # 17:00 UTC is 01:00 the next day in China (UTC+8)
    late = datetime.datetime(2026, 3, 10, 17, 0, tzinfo=datetime.UTC)
    assert china_today(late) == datetime.date(2026, 3, 11)
    assert china_today(late - datetime.timedelta(hours=1, seconds=1)) == datetime.date(2026, 3, 10)
    with pytest.raises(ValueError, match="UTC offset"):
        china_today(datetime.datetime(2026, 3, 10, 17, 0))


def test_a_window_longer_than_the_list_allows_is_dropped() -> None:
    start = TODAY - datetime.timedelta(days=5 * 366 + 1)
    kept, dropped = check(court_entry(window_start=start.isoformat()))
    assert kept == []
    assert dropped == ["the window is longer than judgement_defaulters allows"]


def test_another_departments_list_is_dropped() -> None:
    # the court node sends an entry of the market regulator's list
    entry = court_entry(
        list="serious_dishonest",
        subject_kind=KIND_TO_PB[SubjectKind.ENTERPRISE],
        subject_id=FIRM,
    )
    kept, dropped = check(entry, kind=SubjectKind.ENTERPRISE)
    assert kept == []
    assert dropped == ["list is not a list of the answering node's department"]


def test_an_enterprise_code_that_reads_as_a_resident_id_is_dropped() -> None:
    # valid as a credit code and as a resident id: no reader could tell it from a person's
    twofold = "21638519571115301X"
    assert holds_resident_id(twofold)
    entry = court_entry(subject_kind=KIND_TO_PB[SubjectKind.ENTERPRISE], subject_id=twofold)
    kept, dropped = check(entry, kind=SubjectKind.ENTERPRISE)
    assert kept == []
    assert dropped == ["subject_id reads as a full resident id as well as a credit code"]


def test_an_entry_naming_another_department_is_dropped() -> None:
    kept, dropped = check(court_entry(department="samr"))
    assert (kept, dropped) == ([], ["department is not the answering node's department"])


def test_an_entry_of_a_list_not_asked_is_dropped() -> None:
    tax = court_entry(department="tax", list="major_tax_violators")
    kept, dropped = check(tax, department="tax", list_id="a_level_taxpayers")
    assert (kept, dropped) == ([], ["list is not the list asked"])


def test_an_entry_about_another_subject_is_dropped() -> None:
    other = court_entry(subject_id=mask_subject(OTHER_PERSON))
    kept, dropped = check(court_entry(entry_id="A-1"), other, subject=PERSON)
    assert kept == ["A-1"]
    assert dropped == ["subject_id is not the subject asked"]


def test_an_entry_of_another_kind_is_dropped() -> None:
    kept, dropped = check(court_entry(), kind=SubjectKind.ENTERPRISE)
    assert (kept, dropped) == ([], ["subject_kind is not the kind asked"])


def test_a_wrong_colour_or_class_is_dropped() -> None:
    kept, dropped = check(
        court_entry(entry_id="A-1", colour=lists_pb2.LIST_COLOUR_RED),
        court_entry(entry_id="A-2", facilitation_class="AA"),
    )
    assert kept == []
    assert dropped == [
        "colour is not judgement_defaulters's colour in the catalogue",
        "facilitation_class is not judgement_defaulters's class in the catalogue",
    ]


def test_a_red_list_entry_carries_its_class() -> None:
    entry = court_entry(
        department="customs",
        list="customs_advanced_certified",
        colour=lists_pb2.LIST_COLOUR_RED,
        subject_kind=KIND_TO_PB[SubjectKind.ENTERPRISE],
        subject_id=FIRM,
        facilitation_class="AA",
    )
    kept, dropped = check_entries(
        [entry],
        department=DepartmentId("customs"),
        kind=SubjectKind.ENTERPRISE,
        list_id=None,
        subject=FIRM,
        catalogue=CATALOGUE,
        today=TODAY,
    )
    assert dropped == []
    assert kept[0].facilitation_class == "AA"
    assert kept[0].subject_id == FIRM


def test_control_characters_and_repeats_are_dropped() -> None:
    kept, dropped = check(
        court_entry(entry_id="A-1"),
        court_entry(entry_id="A-1"),
        court_entry(entry_id="A-2", reason="owes\u202emoney"),
    )
    assert kept == ["A-1"]
    assert dropped == [
        "entry_id repeats an earlier entry of the answer",
        "reason contains control or format characters",
    ]


def test_fields_a_node_adds_do_not_go_on() -> None:
    # a node could append a field the coordinator's schema does not know (number 99 here);
    # protobuf keeps unknown fields when a message is passed on as it is
    unknown = b"\x9a\x06" + bytes([len(PERSON)]) + PERSON.encode()  # field 99, length-delimited
    smuggled = court_entry().SerializeToString() + unknown
    received = lists_pb2.PublicEntry.FromString(smuggled)
    assert PERSON.encode() in received.SerializeToString()
    kept, dropped = check_entries(
        [received],
        department=COURT,
        kind=SubjectKind.PERSON,
        list_id=None,
        subject=None,
        catalogue=CATALOGUE,
        today=TODAY,
    )
    assert dropped == []
    assert PERSON.encode() not in public_entry_message(kept[0]).SerializeToString()


# --- page tokens ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def sealed(
    tokens: PageTokens,
    *,
    subject: str = "",
    list_id: str = "judgement_defaulters",
    requester: str = "agency-1",
    after: str = "A-1",
) -> str:
    return tokens.seal(
        kind=SubjectKind.PERSON,
        list_id=list_id,
        subject=subject,
        department=COURT,
        requester=requester,
        after=EntryId(after),
    )


def open_token(tokens: PageTokens, token: str, **changes: object) -> str:
    asked: dict[str, object] = {
        "kind": SubjectKind.PERSON,
        "list_id": "judgement_defaulters",
        "subject": "",
        "department": "court",
        "requester": "agency-1",
    }
    asked.update(changes)
    return tokens.open(token, **asked)  # type: ignore[arg-type]


def payload_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    fields: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return fields


def reseal_payload(token: str, **changes: object) -> str:
    """`token` with fields of its payload changed and its MAC kept."""
    prefix, _, mac = token.split(".")
    fields = {**payload_of(token), **changes}
    text = json.dumps(fields, separators=(",", ":"), sort_keys=True).encode()
    return f"{prefix}.{base64.urlsafe_b64encode(text).rstrip(b'=').decode()}.{mac}"


def test_a_page_token_opens_for_its_own_query() -> None:
    tokens = PageTokens(clock=Clock())
    assert open_token(tokens, sealed(tokens)) == "A-1"
    assert open_token(tokens, sealed(tokens, subject=PERSON), subject=PERSON) == "A-1"


def test_a_page_token_carries_only_what_the_requester_has_seen() -> None:
    token = sealed(PageTokens(clock=Clock()), subject=PERSON, after="2025-SU05-ZHI-123")
    assert token.startswith("lp2.")
    assert payload_of(token) == {
        "k": "person",
        "l": "judgement_defaulters",
        "d": "court",
        "r": "agency-1",
        "a": "2025-SU05-ZHI-123",
        "e": 1_800_000_000 + 3600,
    }
    assert PERSON not in token


def test_a_page_token_of_another_list_or_kind_is_refused() -> None:
    tokens = PageTokens(clock=Clock())
    token = sealed(tokens)
    with pytest.raises(InvalidArgument, match="issued for the judgement_defaulters list") as info:
        open_token(tokens, token, list_id="major_tax_violators", department="tax")
    assert info.value.field == "page_token"
    with pytest.raises(InvalidArgument, match="of persons, not for judgement_defaulters"):
        open_token(tokens, token, kind=SubjectKind.ENTERPRISE)


def test_a_page_token_of_another_subject_is_refused() -> None:
    tokens = PageTokens(clock=Clock())
    with pytest.raises(InvalidArgument, match="for another subject") as info:
        open_token(tokens, sealed(tokens, subject=PERSON), subject=OTHER_PERSON)
    assert info.value.field == "page_token"


def test_a_page_token_of_another_requester_is_refused() -> None:
    tokens = PageTokens(clock=Clock())
    with pytest.raises(InvalidArgument, match="issued to another requester") as info:
        open_token(tokens, sealed(tokens, requester="agency-1"), requester="bank-1")
    assert info.value.field == "page_token"
    assert "agency-1" not in info.value.message


@pytest.mark.parametrize(
    "token",
    ["", "x", "lp2.e30.AAAA", "lp2.!!.AA", "lp1.abc.def", "lp2." + "A" * 2000 + ".AA"],
)
def test_a_malformed_page_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        open_token(PageTokens(clock=Clock()), token)
    assert info.value.field == "page_token"


def test_an_altered_or_foreign_page_token_is_refused() -> None:
    clock = Clock()
    tokens = PageTokens(clock=clock)
    token = sealed(tokens)
    # the payload re-encoded with another place in the list, the MAC kept
    with pytest.raises(InvalidArgument, match="not issued by this coordinator"):
        open_token(tokens, reseal_payload(token, a="Z-9"))
    # a restarted coordinator draws a new key
    with pytest.raises(InvalidArgument, match="not issued by this coordinator"):
        open_token(PageTokens(clock=clock), token)


def test_the_mac_is_checked_before_any_field_is_compared_or_quoted() -> None:
    tokens = PageTokens(clock=Clock())
    marker = "NOT-A-LIST-" + PERSON
    for changes in ({"l": marker}, {"k": marker}, {"d": marker}, {"r": "bank-1"}, {"e": 0}):
        with pytest.raises(InvalidArgument) as info:
            open_token(tokens, reseal_payload(sealed(tokens), **changes))
        assert "not issued by this coordinator" in info.value.message, changes
        assert marker not in info.value.message


def test_a_page_token_expires() -> None:
    clock = Clock()
    tokens = PageTokens(clock=clock, ttl_s=60)
    token = sealed(tokens)
    clock.now += 60
    assert open_token(tokens, token) == "A-1"
    clock.now += 1
    with pytest.raises(InvalidArgument, match="has expired") as info:
        open_token(tokens, token)
    assert info.value.field == "page_token"


def test_a_page_token_spelt_another_way_is_refused() -> None:
    # the last character of the MAC carries unused low bits: the same bytes, another token
    tokens = PageTokens(clock=Clock())
    prefix, payload, mac = sealed(tokens).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelt = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(respelt + "==") == base64.urlsafe_b64decode(mac + "==")
    with pytest.raises(InvalidArgument, match="not a page token of this coordinator"):
        open_token(tokens, f"{prefix}.{payload}.{respelt}")


def test_the_node_page_token_is_shared_by_node_and_coordinator() -> None:
    token = encode_page_token(EntryId("2025-SU05-ZHI-123"))
    assert base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)) == b"1:2025-SU05-ZHI-123"
    assert decode_page_token(token) == "2025-SU05-ZHI-123"
    assert decode_page_token("") is None


# --- paging a list through the coordinator ---------------------------------------------------

NOW = datetime.datetime(2026, 3, 10, 4, 0, tzinfo=datetime.UTC)  # noon in China, on TODAY
LEAKED = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=17)
#: what a node may do to its answer before sending it: (request, answer) -> None
Tamper = Callable[[lists_pb2.PublicEntriesRequest, lists_pb2.PublicEntriesResponse], None]


class StoreNode:
    """The court's node as the coordinator's pool reaches it, answering from a real list store
    as its servicer does (without the network); `tamper` plays a node that alters its answer."""

    def __init__(self, store: ListStore, *, tamper: Tamper | None = None) -> None:
        self.departments = frozenset({store.department})
        self.asked: list[lists_pb2.PublicEntriesRequest] = []
        self._store = store
        self._tamper = tamper

    def public_entries_each(
        self,
        requests: Sequence[tuple[DepartmentId, PublicQuery]],
        *,
        deadline_s: float,
    ) -> tuple[list[PublicEntriesAnswer], list[NodeFailure]]:
        answers = []
        for department, query in requests:
            # on the wire, as the pool sends it and the node's servicer reads it
            request = public_query_to_proto(query)
            self.asked.append(request)
            page = self._store.public_entries(public_query(request), today=TODAY)
            message = public_page_message(page)
            if self._tamper is not None:
                self._tamper(request, message)
            answers.append(
                PublicEntriesAnswer(department, tuple(message.entries), message.next_page_token)
            )
        return answers, []


@pytest.fixture
def court(tmp_path: Path) -> Iterator[ListStore]:
    """The court's list with entries C-00 to C-11 in view today."""
    with ListStore(tmp_path / "lists.duckdb", department=COURT, catalogue=CATALOGUE) as store:
        store.publish(
            [
                EntryDraft(
                    entry_id=f"C-{i:02d}",
                    list="judgement_defaulters",
                    subject_kind=SubjectKind.PERSON,
                    subject_id=PERSON if i % 2 else OTHER_PERSON,
                    subject_name="Zhang San",
                    legal_basis="",
                    reason="failed to perform an effective judgement",
                    window_start=YESTERDAY.isoformat(),
                    window_end=TOMORROW.isoformat(),
                )
                for i in range(12)
            ],
            actor="court",
            today=TODAY,
        )
        yield store


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as log:
        yield log


def searcher(node: StoreNode, audit: AuditLog) -> ListSearcher:
    return ListSearcher(
        CoordinatorContext(
            catalogue=CATALOGUE,
            # the pool's one call a list search makes, answered by the node's real list store
            nodes=cast(NodePool, node),
            policy=ReloadablePolicy.from_file(DEFAULT_CENTRAL_POLICY),
            audit=audit,
            rate_limiter=RateLimiter(),
            deadline_s=5.0,
            clock=lambda: NOW,
        )
    )


def claims(requester: str) -> TokenClaims:
    return TokenClaims(
        requester=RequesterId(requester),
        role=Role.CREDIT_AGENCY,
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


def page(
    lists: ListSearcher, *, size: int, token: str = "", requester: str = "agency-1"
) -> ListSearchOutcome:
    return lists.search(
        QueryId("q"),
        ListSearch(
            subject_kind=SubjectKind.PERSON,
            subject_id="",
            list_id="judgement_defaulters",
            page_size=size,
            page_token=token,
        ),
        authenticate=lambda: claims(requester),
    )


def ids(outcome: ListSearchOutcome) -> list[str]:
    return [e.entry_id for e in outcome.entries]


def test_a_list_pages_through_the_coordinator_on_tokens_it_makes_itself(
    court: ListStore, audit: AuditLog
) -> None:
    node = StoreNode(court)
    lists = searcher(node, audit)
    seen: list[str] = []
    token = ""
    while True:
        outcome = page(lists, size=5, token=token)
        assert outcome.missing == ()
        seen += ids(outcome)
        token = outcome.next_page_token
        if not token:
            break
        assert payload_of(token)["a"] == seen[-1]
    assert seen == [f"C-{i:02d}" for i in range(12)]
    # the coordinator made each node token from the last entry it forwarded
    assert [r.page_token for r in node.asked] == [
        "",
        encode_page_token(EntryId("C-04")),
        encode_page_token(EntryId("C-09")),
    ]


def test_a_nodes_page_token_never_reaches_the_requester(court: ListStore, audit: AuditLog) -> None:
    # the node hides a full resident id in its page token (512 characters go unchecked)
    leaky = base64.urlsafe_b64encode(f"1:{LEAKED}".encode()).decode().rstrip("=")

    def leak(
        request: lists_pb2.PublicEntriesRequest, answer: lists_pb2.PublicEntriesResponse
    ) -> None:
        if answer.next_page_token:
            answer.next_page_token = leaky

    node = StoreNode(court, tamper=leak)
    lists = searcher(node, audit)
    first = page(lists, size=3)
    assert ids(first) == ["C-00", "C-01", "C-02"] and first.missing == ()
    assert leaky not in first.next_page_token
    assert LEAKED not in json.dumps(payload_of(first.next_page_token))
    assert payload_of(first.next_page_token)["a"] == "C-02"
    # the next page continues where the coordinator says, not where the node's token pointed
    second = page(lists, size=3, token=first.next_page_token)
    assert ids(second) == ["C-03", "C-04", "C-05"]
    assert node.asked[-1].page_token == encode_page_token(EntryId("C-02"))
    assert leaky not in [r.page_token for r in node.asked]


def test_a_page_token_is_the_requesters_own(court: ListStore, audit: AuditLog) -> None:
    lists = searcher(StoreNode(court), audit)
    token = page(lists, size=3, requester="agency-1").next_page_token
    with pytest.raises(InvalidArgument, match="issued to another requester") as info:
        page(lists, size=3, token=token, requester="agency-2")
    assert info.value.field == "page_token"
    assert ids(page(lists, size=3, token=token, requester="agency-1")) == ["C-03", "C-04", "C-05"]


def _leak_ids_on(first_entries: Sequence[str]) -> Tamper:
    """A node that shows the full id of every entry of pages starting at `first_entries`."""

    def leak(
        request: lists_pb2.PublicEntriesRequest, answer: lists_pb2.PublicEntriesResponse
    ) -> None:
        if answer.entries and answer.entries[0].entry_id in first_entries:
            for entry in answer.entries:
                entry.subject_id = LEAKED

    return leak


def test_a_page_dropped_whole_is_skipped_by_the_coordinator(
    court: ListStore, audit: AuditLog
) -> None:
    # the first two node pages of three fail the checks entirely
    node = StoreNode(court, tamper=_leak_ids_on(["C-00", "C-03"]))
    lists = searcher(node, audit)
    outcome = page(lists, size=3)
    assert ids(outcome) == ["C-06", "C-07", "C-08"]
    assert len(node.asked) == 3
    ((department, detail),) = [(m.department, m.detail) for m in outcome.missing]
    assert department == "court"
    assert detail.startswith("6 of its entries failed the coordinator's checks")
    assert "subject_id is not a masked resident id" in detail
    # the requester's token points after the last entry forwarded
    assert payload_of(outcome.next_page_token)["a"] == "C-08"
    rest = page(lists, size=3, token=outcome.next_page_token)
    assert ids(rest) == ["C-09", "C-10", "C-11"] and rest.missing == ()
    assert rest.next_page_token == ""


def test_skipping_dropped_pages_is_bounded(court: ListStore, audit: AuditLog) -> None:
    node = StoreNode(court, tamper=_leak_ids_on([f"C-{i:02d}" for i in range(12)]))
    outcome = page(searcher(node, audit), size=2)
    assert len(node.asked) == LIST_PAGES == 5
    assert outcome.entries == () and outcome.next_page_token == ""
    ((_, detail),) = [(m.department, m.detail) for m in outcome.missing]
    assert detail.startswith("10 of its entries failed")
    assert "5 pages in a row had no entry fit to forward" in detail


def test_a_node_repeating_an_earlier_page_is_not_forwarded(
    court: ListStore, audit: AuditLog
) -> None:
    def repeat(
        request: lists_pb2.PublicEntriesRequest, answer: lists_pb2.PublicEntriesResponse
    ) -> None:
        # the node ignores the token and sends the first page again
        first = court.public_entries(
            public_query(
                lists_pb2.PublicEntriesRequest(
                    subject_kind=request.subject_kind,
                    list=request.list,
                    page_size=request.page_size,
                )
            ),
            today=TODAY,
        )
        del answer.entries[:]
        answer.entries.extend(public_entry_message(e) for e in first.entries)

    lists = searcher(StoreNode(court, tamper=repeat), audit)
    first = page(lists, size=3)
    assert ids(first) == ["C-00", "C-01", "C-02"]
    again = page(lists, size=3, token=first.next_page_token)
    assert again.entries == () and again.next_page_token == ""
    ((_, detail),) = [(m.department, m.detail) for m in again.missing]
    assert "entry_id does not come after the page's starting point" in detail
