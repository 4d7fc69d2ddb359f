"""The wire contract: what one end writes with `x_to_proto`, the other reads back unchanged.

Both ends of every call use these functions, so a value that survives the round trip through
bytes is a value both ends agree on; a field added to a message on one side only would fail here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from google.protobuf.message import Message

from osmanthus.core.catalogue import ListColour, load_catalogue
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.lists import (
    EntryId,
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    PublicEntry,
    WithdrawReason,
)
from osmanthus.core.syncbatch import BatchKind
from osmanthus.core.types import (
    ConsentId,
    DepartmentId,
    DepartmentStatus,
    Purpose,
    QueryId,
    RequesterId,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire import coordinator as coord
from osmanthus.core.wire import decoded, lists, node, province
from osmanthus.core.wire.common import RequestLimits
from osmanthus.v1 import coordinator_pb2

AT = datetime(2026, 12, 7, 8, 30, 15, tzinfo=UTC)
#: the shipped catalogue's natural sizes, which a server caps repeated request fields at
LIMITS = RequestLimits.for_catalogue(load_catalogue())
KEY = (2**2047 + 12345).to_bytes(256, "big")
ENTRY = PublicEntry(
    entry_id=EntryId("2026-su05-zhi-0123"),
    department=DepartmentId("court"),
    list="judgement_defaulters",
    colour=ListColour.BLACK,
    subject_kind=SubjectKind.ENTERPRISE,
    subject_id="91350100M000100Y43",
    subject_name="苏州某某有限公司",
    legal_basis="",
    reason="failed to perform an effective judgement",
    window_start=date(2026, 1, 1),
    window_end=date(2028, 12, 31),
    facilitation_class=None,
)
ANSWERED = (DepartmentStatus(DepartmentId("tax"), "answered", "tax-2026.1"),)
MISSING = (DepartmentStatus(DepartmentId("psb"), "no answer within the 5 s deadline"),)


STATS_OUTCOME = coord.StatsOutcome(
    query_id=QueryId("q_abcdefgh"),
    statistics=("deductions",),
    ciphertexts=(b"\x04" * 512,),
    noise_scales=(Fraction(7, 3),),
    cohort=40,
    epsilon=Decimal("0.5"),
    epsilon_left=Decimal("4.5"),
    base=100,
    answered=ANSWERED,
)


def _through_bytes(message: Message) -> Message:
    """The message as the other end parses it off the wire."""
    return type(message).FromString(message.SerializeToString())


ROUND_TRIPS: list[tuple[str, Any, Callable[[Any], Message], Callable[[Any], Any]]] = [
    (
        "contribution request",
        node.ContributionRequest(
            query_id="q_12345678",
            subject_kind=SubjectKind.PERSON,
            subject_id="11010519491231002X",
            shape=Shape.FLAGS,
            purpose="loan_underwriting",
            consent_id="cns_" + "A" * 22,
            public_key=KEY,
            slots=("deductions",),
            slot_widths=(16,),
            measures=("bank_loan",),
        ),
        node.contribution_request_to_proto,
        functools.partial(node.contribution_request_from_proto, limits=LIMITS),
    ),
    (
        "contribution result",
        node.ContributionResult(
            department=DepartmentId("tax"),
            ciphertext=b"\x01" * 512,
            single_source_allowed=True,
            rules_version="tax-2026.1",
            policy_hash="p" * 64,
            flag_counts=(b"\x02" * 512,),
        ),
        node.contribution_result_to_proto,
        node.contribution_result_from_proto,
    ),
    (
        "chunk request",
        node.ChunkRequest(
            query_id="q_12345678",
            chunk=3,
            subject_kind=SubjectKind.PERSON,
            subject_ids=("11010519491231002X",),
            shape=Shape.TOTAL,
            purpose="credit_rescoring",
            public_key=KEY,
            slots=("total",),
            slot_widths=(12,),
            subjects_per_ciphertext=136,
        ),
        node.chunk_request_to_proto,
        functools.partial(node.chunk_request_from_proto, limits=LIMITS),
    ),
    (
        "stats request",
        node.StatsRequest(
            query_id="q_12345678",
            subject_kind=SubjectKind.ENTERPRISE,
            subject_ids=("91350100M000100Y43",),
            purpose="statistics",
            public_key=KEY,
            statistics=("deductions",),
            slots=("deductions",),
            slot_widths=(20,),
            slot_bounds=(300,),
        ),
        node.stats_request_to_proto,
        functools.partial(node.stats_request_from_proto, limits=LIMITS),
    ),
    (
        "public query",
        lists.PublicQuery(
            subject_kind=SubjectKind.PERSON, subject_id="", list="x", page_size=5, page_token="t"
        ),
        lists.public_query_to_proto,
        lists.public_query_from_proto,
    ),
    (
        "public page",
        lists.PublicPage(entries=(ENTRY,), next_page_token="n"),
        lists.public_page_to_proto,
        lists.public_page_from_proto,
    ),
    (
        "changes query",
        lists.ChangesQuery(department="court", after="7", page_size=100, requester="sync-1"),
        lists.changes_query_to_proto,
        lists.changes_query_from_proto,
    ),
    (
        "list change page",
        ListChangesPage(
            department=DepartmentId("court"),
            events=(
                ListChangeEvent(
                    cursor="8",
                    entry=ENTRY,
                    event=ListChange.WITHDRAWN,
                    at=AT,
                    withdraw_reason=WithdrawReason.REPAIRED,
                    entry_id=ENTRY.entry_id,
                ),
            ),
            next_cursor="8",
            more=False,
            feed_id="f" * 22,
        ),
        lists.list_changes_page_to_proto,
        lists.list_changes_page_from_proto,
    ),
    (
        "person query",
        coord.QueryRequest(
            subject_kind=SubjectKind.PERSON,
            subject_id="11010519491231002X",
            shape=Shape.THRESHOLD,
            purpose="deposit_waiver",
            public_key=KEY,
            consent_id="cns_" + "B" * 22,
            threshold=110,
        ),
        coord.person_query_to_proto,
        functools.partial(coord.person_query_from_proto, limits=LIMITS),
    ),
    (
        "enterprise query",
        coord.QueryRequest(
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id="91350100M000100Y43",
            shape=Shape.BREAKDOWN,
            purpose="tax_bank_loan",
            public_key=KEY,
            departments=("tax",),
        ),
        coord.enterprise_query_to_proto,
        functools.partial(coord.enterprise_query_from_proto, limits=LIMITS),
    ),
    (
        "query outcome",
        coord.QueryOutcome(
            query_id=QueryId("q_abcdefgh"),
            shape=Shape.BREAKDOWN,
            ciphertext=b"\x03" * 512,
            slots=("deductions", "honours"),
            slot_widths=(16, 8),
            base=100,
            answered=ANSWERED,
            missing=MISSING,
        ),
        coord.query_outcome_to_proto,
        coord.query_outcome_from_proto,
    ),
    (
        "stats query",
        coord.StatsQuery(
            subject_kind=SubjectKind.PERSON,
            subject_ids=("11010519491231002X",),
            purpose="statistics",
            epsilon="0.5",
            statistics=(),
            public_key=KEY,
        ),
        coord.stats_query_to_proto,
        functools.partial(coord.stats_query_from_proto, limits=LIMITS),
    ),
    (
        "stats outcome",
        STATS_OUTCOME,
        coord.stats_outcome_to_proto,
        coord.stats_outcome_from_proto,
    ),
    (
        "list search",
        coord.ListSearch(
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id="91350100M000100Y43",
            list_id="",
            page_size=0,
            page_token="",
        ),
        coord.list_search_to_proto,
        coord.list_search_from_proto,
    ),
    (
        "list search outcome",
        coord.ListSearchOutcome(
            query_id=QueryId(""), entries=(ENTRY,), next_page_token="", missing=MISSING
        ),
        coord.list_search_outcome_to_proto,
        coord.list_search_outcome_from_proto,
    ),
    (
        "changes request",
        coord.ChangesRequest(department="court", after="", page_size=0),
        coord.changes_request_to_proto,
        coord.changes_request_from_proto,
    ),
    (
        "batch header",
        coord.BatchHeader(
            subject_kind=SubjectKind.PERSON,
            shape=Shape.TOTAL,
            purpose="credit_rescoring",
            public_key=KEY,
        ),
        coord.batch_header_to_proto,
        coord.batch_header_from_proto,
    ),
    (
        "batch plan",
        coord.BatchPlan(
            query_id=QueryId("q_abcdefgh"),
            shape=Shape.TOTAL,
            slots=("total",),
            slot_widths=(12,),
            subjects_per_ciphertext=136,
            base=100,
            offset=300,
            departments=(DepartmentStatus(DepartmentId("tax"), "summed in every chunk"),),
        ),
        coord.batch_plan_to_proto,
        coord.batch_answer_from_proto,
    ),
    (
        "chunk outcome",
        coord.ChunkOutcome(
            chunk=2,
            subject_ids=("11010519491231002X",),
            ciphertexts=(b"\x05" * 512,),
            refused=(coord.RefusedSubject("x", "invalid: not an id"),),
        ),
        coord.chunk_outcome_to_proto,
        coord.batch_answer_from_proto,
    ),
    (
        "consent grant",
        coord.ConsentGrant(
            subject_id="91350100M000100Y43",
            grantee="bank-1",
            purpose="tax_bank_loan",
            expires_at=AT,
            subject_kind=SubjectKind.ENTERPRISE,
        ),
        coord.consent_grant_to_proto,
        coord.consent_grant_from_proto,
    ),
    (
        "consent",
        coord.Consent(
            consent_id=ConsentId("cns_" + "C" * 22),
            subject_id=SubjectId("11010519491231002X"),
            grantee=RequesterId("agency-1"),
            purpose=Purpose("loan_underwriting"),
            granted_at=AT,
            expires_at=AT,
            revoked_at=AT,
            receipt="eyJ.x.y",
        ),
        coord.consent_to_proto,
        coord.consent_from_proto,
    ),
    (
        "subject file request",
        coord.SubjectFileRequest(
            subject_kind=SubjectKind.PERSON,
            subject_id="11010519491231002X",
            purpose="self_query",
            recipient_key=b"\x09" * 32,
            nonce=b"\x0a" * 32,
        ),
        coord.subject_file_request_to_proto,
        coord.subject_file_request_from_proto,
    ),
    (
        "subject file outcome",
        coord.SubjectFileOutcome(
            query_id=QueryId("q_abcdefgh"),
            parts=(
                node.SealedPart(
                    source="tax",
                    sealed=b"\x01" * 64,
                    rules_version="2026.1",
                    signature="eyJ..sig",
                    certificate=b"-----BEGIN CERTIFICATE-----",
                ),
                node.SealedPart(source="coordinator", sealed=b"\x02" * 64, policy_hash="ab" * 32),
            ),
            missing=(DepartmentStatus(DepartmentId("psb"), "no answer within the 5 s deadline"),),
            partial=True,
        ),
        coord.subject_file_outcome_to_proto,
        coord.subject_file_outcome_from_proto,
    ),
    (
        "delivery",
        province.Delivery(
            batch_id="sb-" + "0" * 32,
            duplicate=True,
            records=300,
            received_at=AT,
            sequence=4,
            watermark_to="2026-12-07T08:30:15Z",
        ),
        province.delivery_to_proto,
        province.delivery_from_proto,
    ),
    (
        "batch query",
        province.BatchQuery(sender="suzhou", kind=BatchKind.GRADES, page_size=1),
        province.batch_query_to_proto,
        province.batch_query_from_proto,
    ),
]


@pytest.mark.parametrize(
    ("value", "to_proto", "from_proto"),
    [case[1:] for case in ROUND_TRIPS],
    ids=[case[0] for case in ROUND_TRIPS],
)
def test_what_one_end_writes_the_other_reads_back(
    value: Any, to_proto: Callable[[Any], Message], from_proto: Callable[[Any], Any]
) -> None:
    assert from_proto(_through_bytes(to_proto(value))) == value


def test_an_answer_no_honest_coordinator_sends_is_refused_naming_the_field() -> None:
    unknown_shape = coordinator_pb2.QueryResponse(query_id="q_abcdefgh", shape=99)
    with pytest.raises(InvalidArgument) as caught:
        coord.query_outcome_from_proto(unknown_shape)
    assert caught.value.field == "shape"
    bad_scale = coord.stats_outcome_to_proto(STATS_OUTCOME)
    bad_scale.noise_scales[0] = "-1/2"
    with pytest.raises(InvalidArgument) as caught:
        coord.stats_outcome_from_proto(bad_scale)
    assert caught.value.field == "noise_scales[0]"
    with pytest.raises(InvalidArgument) as caught:
        coord.batch_answer_from_proto(coordinator_pb2.BatchQueryResponse())
    assert caught.value.field == "item"


def test_a_subject_file_answer_names_each_source_once() -> None:
    twice = coordinator_pb2.SubjectFileResponse(query_id="q_abcdefgh")
    twice.files.add(source="tax", sealed=b"x")
    twice.files.add(source="tax", sealed=b"y")
    with pytest.raises(InvalidArgument) as caught:
        coord.subject_file_outcome_from_proto(twice)
    assert caught.value.field == "files[1].source"
    nameless = coordinator_pb2.SubjectFileResponse(query_id="q_abcdefgh")
    nameless.files.add(source="", sealed=b"x")
    with pytest.raises(InvalidArgument) as caught:
        coord.subject_file_outcome_from_proto(nameless)
    assert caught.value.field == "files[0].source"
    with pytest.raises(InvalidArgument) as caught:
        coord.subject_file_outcome_from_proto(coordinator_pb2.SubjectFileResponse())
    assert caught.value.field == "query_id"


def test_a_person_query_cannot_name_departments() -> None:
    request = coord.QueryRequest(
        subject_kind=SubjectKind.PERSON,
        subject_id="11010519491231002X",
        shape=Shape.TOTAL,
        purpose="loan_underwriting",
        public_key=KEY,
        departments=("tax",),
    )
    with pytest.raises(InvalidArgument) as caught:
        coord.person_query_to_proto(request)
    assert caught.value.field == "departments"


def test_a_repeated_field_past_its_natural_size_is_refused_naming_it_and_the_cap() -> None:
    # one more than the catalogue has: refused before any entry is read
    departments = [f"d{i}" for i in range(LIMITS.departments + 1)]
    message = coordinator_pb2.EnterpriseQueryRequest(departments=departments)
    with pytest.raises(InvalidArgument) as caught:
        coord.enterprise_query_from_proto(message, limits=LIMITS)
    assert caught.value.field == "departments"
    assert f"at most {LIMITS.departments}" in caught.value.message
    chunk = coordinator_pb2.BatchQueryRequest(
        chunk=coordinator_pb2.SubjectChunk(
            chunk=0, subject_ids=["x"] * (node.MAX_CHUNK_SUBJECTS + 1)
        )
    )
    with pytest.raises(InvalidArgument) as caught:
        list(coord.subject_chunks_from_proto([chunk]))
    assert caught.value.field == "subject_ids"
    assert f"at most {node.MAX_CHUNK_SUBJECTS}" in caught.value.message
    # at the cap, it reads
    at_cap = coordinator_pb2.EnterpriseQueryRequest(departments=departments[:-1])
    assert len(coord.enterprise_query_from_proto(at_cap, limits=LIMITS).departments) == len(
        departments[:-1]
    )


def test_bytes_that_are_not_the_message_are_an_invalid_argument_naming_the_type() -> None:
    # field 1 (resident_id, a string) announced 100 bytes long, with 2 sent
    with pytest.raises(InvalidArgument) as caught:
        decoded(b"\x0a\x64ab", coordinator_pb2.PersonQueryRequest.FromString)
    assert caught.value.field == "request"
    assert "osmanthus.v1.PersonQueryRequest" in caught.value.message
    assert decoded(b"", None) == b""
