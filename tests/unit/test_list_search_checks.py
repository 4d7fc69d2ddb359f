"""The coordinator's checks of a node's public-list answer, and its sealed page tokens."""

from __future__ import annotations

import base64
import datetime
import json

import pytest

from coordinator.lists import PageTokens, check_entries
from node.convert import KIND_TO_PB, public_entry_message
from osmanthus.catalogue import load_catalogue
from osmanthus.errors import InvalidArgument
from osmanthus.ids import make_resident_id, make_uscc, mask_subject
from osmanthus.types import DepartmentId, SubjectId, SubjectKind
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


def test_a_number_that_is_not_a_resident_id_stays() -> None:
    # 18 digits with a wrong check character: a case number, not somebody's id
    wrong = PERSON[:17] + ("0" if PERSON[17] != "0" else "1")
    kept, _ = check(court_entry(reason=f"case {wrong}"))
    assert kept == ["2025-SU05-ZHI-123"]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (TODAY - datetime.timedelta(days=30), YESTERDAY),  # ended yesterday
        (TOMORROW, TOMORROW + datetime.timedelta(days=30)),  # starts tomorrow
    ],
)
def test_an_entry_out_of_its_window_is_dropped(start: datetime.date, end: datetime.date) -> None:
    kept, dropped = check(court_entry(window_start=start.isoformat(), window_end=end.isoformat()))
    assert kept == []
    assert dropped == ["the window does not contain today (2026-03-10, China Standard Time)"]


def test_the_window_may_start_and_end_today() -> None:
    kept, _ = check(court_entry(window_start=TODAY.isoformat(), window_end=TODAY.isoformat()))
    assert kept == ["2025-SU05-ZHI-123"]


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


def sealed(tokens: PageTokens, *, subject: str = "", list_id: str = "judgement_defaulters") -> str:
    return tokens.seal(
        kind=SubjectKind.PERSON,
        list_id=list_id,
        subject=subject,
        department=COURT,
        node_token="MTpBLTE",
    )


def open_token(tokens: PageTokens, token: str, **changes: object) -> str:
    asked: dict[str, object] = {
        "kind": SubjectKind.PERSON,
        "list_id": "judgement_defaulters",
        "subject": "",
        "department": "court",
    }
    asked.update(changes)
    return tokens.open(token, **asked)  # type: ignore[arg-type]


def test_a_page_token_opens_for_its_own_query() -> None:
    tokens = PageTokens(clock=Clock())
    assert open_token(tokens, sealed(tokens)) == "MTpBLTE"
    assert open_token(tokens, sealed(tokens, subject=PERSON), subject=PERSON) == "MTpBLTE"


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


@pytest.mark.parametrize(
    "token",
    ["", "x", "lp1.e30.AAAA", "lp1.!!.AA", "lp2.abc.def", "lp1." + "A" * 2000 + ".AA"],
)
def test_a_malformed_page_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        open_token(PageTokens(clock=Clock()), token)
    assert info.value.field == "page_token"


def test_an_altered_or_foreign_page_token_is_refused() -> None:
    clock = Clock()
    tokens = PageTokens(clock=clock)
    prefix, payload, mac = sealed(tokens).split(".")
    # the payload re-encoded with another node token, the MAC kept
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["t"] = "MTpaWlo"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidArgument, match="not issued by this coordinator"):
        open_token(tokens, f"{prefix}.{forged}.{mac}")
    # a restarted coordinator draws a new key
    with pytest.raises(InvalidArgument, match="not issued by this coordinator"):
        open_token(PageTokens(clock=clock), sealed(tokens))


def test_a_page_token_expires() -> None:
    clock = Clock()
    tokens = PageTokens(clock=clock, ttl_s=60)
    token = sealed(tokens)
    clock.now += 61
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
