"""The public query of red and black lists, end to end: list officers publish at real department
nodes, requesters search through the coordinator over mutual TLS, and only entries in view today
come back, with the published fields only and a person's resident id masked.

Windows are relative to the real date in China: yesterday, today, tomorrow. Every subject here is
one the seed does not hold and no other module uses; the module withdraws whatever it left in
view, so the shared federation answers as before for every other test.
"""

from __future__ import annotations

import base64
import json
import os
import string
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import grpc
import pytest

from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.officer import ListOfficer
from osmanthus import cli
from osmanthus.core.catalogue import ListColour
from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument, RateLimited, Unavailable
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.lists import EntryId, EntryStatus, NewEntry, PublicEntry, WithdrawReason
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.types import Role, SubjectId, SubjectKind
from osmanthus.core.wire.common import KIND_TO_PB
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, lists_pb2
from sdk import Client, ListSearchResult, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.integration.test_scores_match_plaintext import subjects

PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
PREFIX = "LS-"
DEFAULTERS = "judgement_defaulters"
#: what a public entry may carry on the wire: the fields the law publishes, nothing else
BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
PUBLISHED_FIELDS = frozenset(lists_pb2.PublicEntry.DESCRIPTOR.fields_by_name)


def _firm(n: int) -> SubjectId:
    first8 = f"L{n:07d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )


SUBJECTS: dict[str, tuple[SubjectKind, SubjectId]] = {
    "firm": (ENTERPRISE, _firm(5301)),
    "paged": (ENTERPRISE, _firm(5302)),
    "small": (ENTERPRISE, _firm(5303)),
    "many": (ENTERPRISE, _firm(5304)),
    "too-many": (ENTERPRISE, _firm(5305)),
    "person": (PERSON, make_resident_id(region="320505", birth=date(1963, 4, 5), sequence=915)),
    "repaired": (PERSON, make_resident_id(region="320506", birth=date(1964, 5, 6), sequence=916)),
}


def subject(key: str) -> SubjectId:
    return SUBJECTS[key][1]


@pytest.fixture(scope="module", autouse=True)
def unseeded(federation: Federation) -> None:
    """Only this module's list entries can name these subjects."""
    seeded = set(subjects(federation, "person")) | set(subjects(federation, "enterprise"))
    assert not seeded & {s for _, s in SUBJECTS.values()}


def _node(federation: Federation, department: str) -> str:
    return f"127.0.0.1:{federation.nodes[department].port}"


@pytest.fixture(scope="module")
def officers(
    federation: Federation, list_officers: dict[str, TlsFiles]
) -> Iterator[dict[str, ListOfficer]]:
    """The court's and the tax bureau's list officers, at their nodes."""
    clients = {
        dept: ListOfficer(_node(federation, dept), department=dept, tls=list_officers[dept])
        for dept in ("court", "tax")
    }
    yield clients
    # leave nothing of this module in public view
    for officer in clients.values():
        for kind, subject_id in SUBJECTS.values():
            for entry in officer.history(kind, subject_id):
                if entry.status in (EntryStatus.IN_VIEW, EntryStatus.SCHEDULED):
                    officer.withdraw(
                        entry.entry.entry_id, reason=WithdrawReason.ERROR, reference="cleanup"
                    )
        officer.close()


def _entry(
    entry_id: str,
    key: str,
    *,
    start: date,
    end: date,
    list_id: str = DEFAULTERS,
    name: str = "Test subject",
) -> NewEntry:
    kind, subject_id = SUBJECTS[key]
    return NewEntry(
        entry_id=EntryId(PREFIX + entry_id),
        list=list_id,
        subject_kind=kind,
        subject_id=subject_id,
        subject_name=name,
        legal_basis="",
        reason="failed to perform an effective judgement",
        window_start=start,
        window_end=end,
    )


@pytest.fixture(scope="module")
def public(federation: Federation) -> Iterator[Client]:
    """A credit agency reading the lists (60 searches a minute under the default policy)."""
    with federation.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"]) as c:
        yield c


def _ids(result: ListSearchResult) -> list[str]:
    return [e.entry_id for e in result.entries]


def _raw(
    federation: Federation,
    request: coordinator_pb2.SearchListsRequest,
    *,
    requester: str = "agency-1",
    role: Role = Role.CREDIT_AGENCY,
) -> coordinator_pb2.SearchListsResponse:
    """SearchLists straight on the wire, past the SDK's own checks."""
    token = federation.token(requester, role=role, purposes=["credit_report"])
    with secure_channel(
        federation.target, federation.tls(requester), server_name=COORDINATOR_SERVER_NAME
    ) as channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        try:
            reply: coordinator_pb2.SearchListsResponse = stub.SearchLists(
                request, timeout=10, metadata=(("authorization", f"Bearer {token}"),)
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
    return reply


def _request(kind: SubjectKind | None, **fields: object) -> coordinator_pb2.SearchListsRequest:
    return coordinator_pb2.SearchListsRequest(
        subject_kind=KIND_TO_PB[kind] if kind else common_pb2.SUBJECT_KIND_UNSPECIFIED,
        **fields,  # type: ignore[arg-type]
    )


def test_an_entry_is_in_public_view_only_inside_its_window(
    officers: dict[str, ListOfficer], public: Client
) -> None:
    today = china_today()
    yesterday, tomorrow = today - timedelta(days=1), today + timedelta(days=1)
    officers["court"].publish(
        [
            _entry("window-now", "firm", start=yesterday, end=tomorrow),
            _entry("window-past", "firm", start=today - timedelta(days=30), end=yesterday),
            _entry("window-next", "firm", start=tomorrow, end=tomorrow + timedelta(days=30)),
        ]
    )
    officers["tax"].publish(
        [
            _entry("tax-black", "firm", start=today, end=tomorrow, list_id="major_tax_violators"),
            _entry("tax-red", "firm", start=today, end=today, list_id="a_level_taxpayers"),
        ]
    )
    found = public.search_lists(kind=ENTERPRISE, subject=subject("firm"))
    # by window start, then department, then entry id
    assert _ids(found) == ["LS-window-now", "LS-tax-black", "LS-tax-red"]
    assert found.missing == () and not found.partial and not found.more
    court, black, red = found.entries
    assert (court.department, court.list, court.colour) == ("court", DEFAULTERS, ListColour.BLACK)
    assert (court.window_start, court.window_end) == (yesterday, tomorrow)
    assert court.subject_id == subject("firm") and court.subject_name == "Test subject"
    assert court.legal_basis.startswith("Provisions of the Supreme People's Court")
    assert court.facilitation_class is None and black.facilitation_class is None
    assert (red.colour, red.facilitation_class) == (ListColour.RED, "A-level taxpayer")
    # one list: only that department is asked
    on_list = public.search_lists(kind=ENTERPRISE, subject=subject("firm"), list_id=DEFAULTERS)
    assert _ids(on_list) == ["LS-window-now"]


def test_a_withdrawn_entry_leaves_the_public_view(
    officers: dict[str, ListOfficer], public: Client
) -> None:
    today = china_today()
    officers["court"].publish(
        [_entry("repair", "repaired", start=today - timedelta(days=3), end=today + timedelta(3))]
    )
    (shown,) = public.search_lists(kind=PERSON, subject=subject("repaired")).entries
    assert shown.entry_id == "LS-repair"
    officers["court"].withdraw(
        "LS-repair", reason=WithdrawReason.REPAIRED, reference="(2026) Su05 credit repair 12"
    )
    gone = public.search_lists(kind=PERSON, subject=subject("repaired"))
    assert gone.entries == () and gone.missing == ()
    # the node keeps the history
    (kept,) = officers["court"].history(PERSON, subject("repaired"))
    assert kept.status is EntryStatus.WITHDRAWN


def test_only_published_fields_come_back_and_a_person_is_masked(
    federation: Federation, officers: dict[str, ListOfficer], public: Client
) -> None:
    today = china_today()
    person = subject("person")
    officers["court"].publish([_entry("masked", "person", start=today, end=today, name="张三")])
    reply = _raw(federation, _request(PERSON, subject_id=person))
    (message,) = reply.entries
    assert {f.name for f, _ in message.ListFields()} <= PUBLISHED_FIELDS
    assert message.subject_id == person[:6] + "*" * 10 + person[-2:]
    assert person.encode() not in reply.SerializeToString()
    (entry,) = public.search_lists(kind=PERSON, subject=person).entries
    assert entry == PublicEntry(
        entry_id=EntryId("LS-masked"),
        department=entry.department,
        list=DEFAULTERS,
        colour=ListColour.BLACK,
        subject_kind=PERSON,
        subject_id=message.subject_id,
        subject_name="张三",
        legal_basis=entry.legal_basis,
        reason="failed to perform an effective judgement",
        window_start=today,
        window_end=today,
        facilitation_class=None,
    )


def test_a_list_is_read_page_by_page(officers: dict[str, ListOfficer], registrar: Client) -> None:
    today = china_today()
    officers["court"].publish(
        [_entry(f"page-{i}", "paged", start=today, end=today + timedelta(days=i)) for i in range(5)]
    )
    # the whole list (other tests' entries too), two a page
    pages = list(registrar.search_lists_pages(kind=ENTERPRISE, list_id=DEFAULTERS, page_size=2))
    assert len(pages) >= 3
    assert all(len(p.entries) == 2 and p.missing == () for p in pages[:-1])
    ids = [e.entry_id for p in pages for e in p.entries]
    assert len(ids) == len(set(ids))
    assert {f"LS-page-{i}" for i in range(5)} <= set(ids)
    assert all(e.list == DEFAULTERS for p in pages for e in p.entries)
    assert all(p.next_page_token.startswith("lp2.") for p in pages[:-1])
    assert pages[-1].next_page_token == ""
    # a token holds what the requester has seen: never the node's own token
    for p in pages[:-1]:
        _, payload, _ = p.next_page_token.split(".")
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        assert set(fields) == {"k", "l", "d", "r", "a", "e"}
        assert (fields["r"], fields["a"]) == ("registrar", p.entries[-1].entry_id)
    # one subject on one list, two a page: resumable from any page's token
    first = registrar.search_lists(
        kind=ENTERPRISE, subject=subject("paged"), list_id=DEFAULTERS, page_size=2
    )
    assert _ids(first) == ["LS-page-0", "LS-page-1"] and first.more
    rest = list(
        registrar.search_lists_pages(
            kind=ENTERPRISE,
            subject=subject("paged"),
            list_id=DEFAULTERS,
            page_size=2,
            page_token=first.next_page_token,
        )
    )
    assert [_ids(p) for p in rest] == [["LS-page-2", "LS-page-3"], ["LS-page-4"]]


def test_a_page_token_is_bound_to_its_list_kind_subject_and_requester(
    officers: dict[str, ListOfficer], registrar: Client, public: Client
) -> None:
    today = china_today()
    officers["court"].publish(
        [_entry(f"bound-{i}", "small", start=today, end=today) for i in range(2)]
    )
    token = registrar.search_lists(
        kind=ENTERPRISE, subject=subject("small"), list_id=DEFAULTERS, page_size=1
    ).next_page_token
    assert token
    refusals = {
        "another list": dict(
            kind=ENTERPRISE, subject=subject("small"), list_id="serious_dishonest"
        ),
        "another kind": dict(kind=PERSON, list_id=DEFAULTERS),
        "another subject": dict(kind=ENTERPRISE, subject=subject("firm"), list_id=DEFAULTERS),
        "no subject": dict(kind=ENTERPRISE, list_id=DEFAULTERS),
    }
    for why, asked in refusals.items():
        with pytest.raises(InvalidArgument) as caught:
            registrar.search_lists(**asked, page_token=token)  # type: ignore[arg-type]
        assert caught.value.field == "page_token", why
    with pytest.raises(InvalidArgument, match="issued for the judgement_defaulters list"):
        registrar.search_lists(
            kind=ENTERPRISE,
            subject=subject("small"),
            list_id="serious_dishonest",
            page_token=token,
        )
    # another requester may not continue it
    with pytest.raises(InvalidArgument, match="issued to another requester") as caught:
        public.search_lists(
            kind=ENTERPRISE, subject=subject("small"), list_id=DEFAULTERS, page_token=token
        )
    assert caught.value.field == "page_token"
    # forged: the node's own token; ours with a MAC character changed, or with the last one
    # changed in its unused low bits only (the same bytes, spelt differently)
    prefix, payload, mac = token.split(".")
    flipped = mac[:5] + ("A" if mac[5] != "A" else "B") + mac[6:]
    respelt = mac[:-1] + BASE64URL[BASE64URL.index(mac[-1]) ^ 1]
    for forged in (
        "MTpMUy1ib3VuZC0w",
        f"{prefix}.{payload}.{flipped}",
        f"{prefix}.{payload}.{respelt}",
    ):
        with pytest.raises(InvalidArgument) as caught:
            registrar.search_lists(
                kind=ENTERPRISE, subject=subject("small"), list_id=DEFAULTERS, page_token=forged
            )
        assert caught.value.field == "page_token"
    # the token itself still works for the query it came from
    (second,) = registrar.search_lists(
        kind=ENTERPRISE, subject=subject("small"), list_id=DEFAULTERS, page_size=1,
        page_token=token,
    ).entries  # fmt: skip
    assert second.entry_id == "LS-bound-1"


@pytest.mark.parametrize(
    ("kind", "fields", "field", "words"),
    [
        (ENTERPRISE, {"list": "no_such_list"}, "list", "is not a list; known: judgement_"),
        (ENTERPRISE, {"subject_id": "91320505L0005301XX"}, "subject_id", "credit code"),
        (PERSON, {"subject_id": "320505196304050000"}, "subject_id", "check character"),
        (PERSON, {"list": "a_level_taxpayers"}, "list", "lists enterprises, not persons"),
        (ENTERPRISE, {"subject_id": _firm(5301), "page_token": "abc"}, "page_token", "with the"),
        (ENTERPRISE, {"list": DEFAULTERS, "page_token": "lp1.e30.AAAA"}, "page_token", "not a"),
        (ENTERPRISE, {"list": DEFAULTERS, "page_size": 101}, "page_size", "use 1 to 100"),
        (None, {"list": DEFAULTERS}, "subject_kind", "is required"),
        (ENTERPRISE, {}, "subject_id", "name a subject"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    federation: Federation,
    kind: SubjectKind | None,
    fields: dict[str, object],
    field: str,
    words: str,
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _raw(federation, _request(kind, **fields))
    assert caught.value.field == field
    assert words in caught.value.message


def test_the_sdk_checks_its_arguments_before_asking(public: Client) -> None:
    cases = [
        (dict(kind=ENTERPRISE), "subject"),
        (dict(kind=ENTERPRISE, list_id="no_such_list"), "list_id"),
        (dict(kind=PERSON, subject="not-an-id"), "subject"),
        (dict(kind=ENTERPRISE, subject=subject("firm"), page_token="x"), "page_token"),
        (dict(kind=ENTERPRISE, list_id=DEFAULTERS, page_size=0 - 1), "page_size"),
        (dict(kind="enterprise", list_id=DEFAULTERS), "kind"),
    ]
    for arguments, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            public.search_lists(**arguments)  # type: ignore[arg-type]
        assert caught.value.field == field, arguments


def test_every_search_is_audited_with_the_subject_hashed(
    federation: Federation, public: Client
) -> None:
    firm = subject("firm")
    public.search_lists(kind=ENTERPRISE, subject=firm)
    with pytest.raises(InvalidArgument):
        _raw(federation, _request(ENTERPRISE, list="no_such_list"))
    text = (federation.state_dir / "coordinator" / "audit.jsonl").read_text("utf-8")
    assert firm not in text and subject("person") not in text
    searches = [e for e in map(json.loads, text.splitlines()) if e["shape"] == "list_search"]
    allowed = [e for e in searches if e["decision"] == "allow" and e["subject_hash"]]
    assert allowed and allowed[-1]["requester"] == "agency-1"
    assert allowed[-1]["extra"]["subject_kind"] == "enterprise"
    assert len(allowed[-1]["subject_hash"]) == 64
    denied = [e for e in searches if e["decision"] == "deny"]
    assert "no_such_list" in denied[-1]["reason"]


def test_the_cli_prints_a_table_or_json(
    federation: Federation, public: Client, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    tls = federation.tls("agency-1")
    token = tmp_path / "agency.jwt"
    token.write_text(
        federation.token("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"])
    )
    # the key the token is bound to, as the requester keeps it (owner-only)
    key_file = tmp_path / "agency.key"
    with os.fdopen(os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(federation.keys["agency-1"].private.to_json())
    connection = [
        "--coordinator", federation.target, "--requester", "agency-1",
        "--token-file", str(token), "--keys", str(key_file),
        "--ca", str(tls.ca), "--cert", str(tls.cert), "--key", str(tls.key),
    ]  # fmt: skip
    firm = subject("firm")
    assert (
        cli.main(["lists", "search", "--kind", "enterprise", "--subject", firm, *connection]) == 0
    )
    out = capsys.readouterr().out
    assert "3 entries in public view today" in out
    lines = out.splitlines()
    assert lines[1].split() == ["ENTRY", "LIST", "COLOUR", "SUBJECT", "ID", "IN", "VIEW", "CLASS"]
    assert any(
        line.startswith("LS-tax-red") and "A-level taxpayer" in line and "red" in line
        for line in lines
    )
    assert "    legal basis  Provisions of the Supreme People's Court" in out
    argv = ["lists", "search", "--kind", "person", "--subject", subject("person"), "--json"]
    assert cli.main([*argv, *connection]) == 0
    document = json.loads(capsys.readouterr().out)
    (entry,) = document["entries"]
    assert entry["subject_name"] == "张三" and "**********" in entry["subject_id"]
    assert document["missing"] == [] and document["next_page_token"] == ""
    argv = ["lists", "search", "--kind", "person", "--list", "a_level_taxpayers"]
    assert cli.main([*argv, *connection]) == 3
    assert "a_level_taxpayers lists enterprises, not persons" in capsys.readouterr().err


# --- a small federation of its own: a tight rate limit, and a node that goes down ------------


@pytest.fixture(scope="module")
def small(
    tmp_path_factory: pytest.TempPathFactory,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """court, samr and eco (every enterprise list there), 3 searches a minute per requester."""
    base = tmp_path_factory.mktemp("lists-small")
    text = DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8")
    limited = text.replace(
        '@id("central-list-search")\n@rate_limit("60/minute")',
        '@id("central-list-search")\n@rate_limit("3/minute")',
    )
    assert limited != text
    policy = base / "central.cedar"
    policy.write_text(limited, encoding="utf-8")
    departments = ("court", "samr", "eco")
    fed = start_federation(
        base,
        catalogue=restricted_catalogue(departments),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=departments,
        central_policy=policy,
        deadline_s=2.0,
    )
    yield fed
    stop_federation(fed)


def test_the_rate_limit_refuses_with_when_to_retry(small: Federation) -> None:
    with small.client("bank-1", role=Role.BANK, purposes=["credit_report"]) as bank:
        for _ in range(3):
            bank.search_lists(kind=ENTERPRISE, list_id="serious_dishonest")
        with pytest.raises(RateLimited) as caught:
            bank.search_lists(kind=ENTERPRISE, list_id="serious_dishonest")
    message = caught.value.message
    assert "bank-1 may be granted 3/minute under rule 'central-list-search'" in message
    assert "retry in" in message
    token = small.token("bank-1", role=Role.BANK, purposes=["credit_report"])
    with (
        secure_channel(
            small.target, small.tls("bank-1"), server_name=COORDINATOR_SERVER_NAME
        ) as channel,
        pytest.raises(grpc.RpcError) as raw,
    ):
        coordinator_pb2_grpc.CoordinatorServiceStub(channel).SearchLists(
            _request(ENTERPRISE, list="serious_dishonest"),
            timeout=10,
            metadata=(("authorization", f"Bearer {token}"),),
        )
    assert raw.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # a refused request counts for nothing: agency-1's three searches all go through after one
    with pytest.raises(InvalidArgument):
        _raw(small, _request(ENTERPRISE, list="serious_dishonest", page_size=101))
    with small.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"]) as agency:
        for _ in range(3):
            agency.search_lists(kind=ENTERPRISE, list_id="serious_dishonest")


def test_a_subjects_entries_come_in_one_answer_up_to_a_bound(
    small: Federation, list_officers: dict[str, TlsFiles]
) -> None:
    today = china_today()
    with ListOfficer(
        _node(small, "court"), department="court", tls=list_officers["court"]
    ) as court:
        court.publish(
            [_entry(f"many-{i:03d}", "many", start=today, end=today) for i in range(105)]
            + [_entry(f"too-many-{i:03d}", "too-many", start=today, end=today) for i in range(301)]
        )
    with small.client("registrar", role=Role.PLATFORM_SERVICE, purposes=["credit_report"]) as c:
        # past one node page (100): the coordinator follows the court's pages itself
        many = c.search_lists(kind=ENTERPRISE, subject=subject("many"))
        assert _ids(many) == [f"LS-many-{i:03d}" for i in range(105)]
        assert many.missing == () and not many.more
        # past three pages a department is named as missing: page by list and subject instead
        too_many = c.search_lists(kind=ENTERPRISE, subject=subject("too-many"))
    assert len(too_many.entries) == 300
    ((department, detail),) = [(m.department, m.detail) for m in too_many.missing]
    assert department == "court" and "ask by list and subject" in detail


def test_a_node_that_is_down_is_listed_as_missing(
    small: Federation, list_officers: dict[str, TlsFiles]
) -> None:
    today = china_today()
    firm = subject("small")
    with ListOfficer(
        _node(small, "court"), department="court", tls=list_officers["court"]
    ) as court:
        court.publish([_entry("small-fed", "small", start=today, end=today)])
    small.nodes["eco"].stop(grace=0)
    with small.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        found = sync.search_lists(kind=ENTERPRISE, subject=firm)
        assert _ids(found) == ["LS-small-fed"] and found.partial
        ((department, detail),) = [(m.department, m.detail) for m in found.missing]
        assert department == "eco" and detail.startswith("unavailable: node down")
        # a list of the department that is down: nothing to show, and it says why
        with pytest.raises(Unavailable, match="eco, which publishes environmental_dishonest"):
            sync.search_lists(kind=ENTERPRISE, list_id="environmental_dishonest")
