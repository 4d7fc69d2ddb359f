"""Batch scoring through the real federation: every row equals the plaintext reference.

A platform sync job streams every seeded subject through BatchQuery; each department scores whole
chunks, packs many subjects into each ciphertext and encrypts; the coordinator sums chunk by chunk;
the SDK decrypts on every core and unpacks. The result is checked subject by subject against the
independent plaintext reference of test_scores_match_plaintext, and against single queries.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import grpc
import pytest

from node.server import DEFAULT_NODE_POLICY
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, FailedPrecondition, PermissionDenied, RequesterKeys, Unavailable
from sdk.results import BatchScore
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.integration.test_scores_match_plaintext import (
    Reference,
    RefResult,
    subjects,
    utc_today,
)
from tests.waiting import EVENT_TIMEOUT_S

SYNC = "sync-1"
PURPOSE = "credit_rescoring"
#: a valid-looking id with a wrong check character: refused, not fatal to the batch
BAD_CHECKSUM = "110105194912310021"


@pytest.fixture(scope="module")
def plaintext(federation: Federation) -> Reference:
    served = {d.id: {k.value for k in d.subject_kinds} for d in federation.catalogue.departments}
    return Reference({d: federation.data.databases[DepartmentId(d)] for d in served}, served)


@pytest.fixture(scope="module")
def sync(federation: Federation) -> Iterator[Client]:
    client = federation.client(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE])
    client.register_key()
    yield client
    client.close()


def _expected(reference: Reference, kind: str, subject: str, days: list[date]) -> list[RefResult]:
    return [reference.result(kind, subject, d) for d in days]


def _check_rows(
    rows: list[BatchScore],
    asked: list[str],
    reference: Reference,
    kind: SubjectKind,
    shape: Shape,
    days: list[date],
) -> None:
    assert [r.subject_id for r in rows] == asked  # one row per input id, in input order
    for row in rows:
        assert row.refused is None, (row.subject_id, row.refused)
        candidates = _expected(reference, kind.value, row.subject_id, days)
        ok = [
            c
            for c in candidates
            if c.score == row.score
            and c.grade == row.grade
            and (
                shape is Shape.TOTAL
                or (row.deductions == c.deductions and dict(row.bonuses) == c.bonuses)
            )
        ]
        assert ok, (row, candidates)


@pytest.mark.parametrize("shape", [Shape.TOTAL, Shape.BREAKDOWN])
def test_every_person_of_the_seed_scores_as_the_plaintext_reference(
    federation: Federation, sync: Client, plaintext: Reference, shape: Shape
) -> None:
    persons = subjects(federation, "person")
    before = utc_today()
    # a small chunk size spreads the 400 persons over many chunks and partly filled ciphertexts
    rows = list(sync.batch_scores(persons, purpose=PURPOSE, shape=shape, chunk_size=61))
    days = sorted({before, utc_today()})
    _check_rows(rows, persons, plaintext, SubjectKind.PERSON, shape, days)
    assert len({r.query_id for r in rows}) == 1
    # the data must exercise the model, or agreement would prove little
    features = set().union(*(plaintext.result("person", p, days[0]).features for p in persons))
    assert {"deductions", "bonus", "clamped", "category_cap"} <= features


def test_enterprises_batch_like_their_single_queries(
    federation: Federation, sync: Client, plaintext: Reference, agency: Client
) -> None:
    enterprises = subjects(federation, "enterprise")
    before = utc_today()
    rows = list(
        sync.batch_scores(
            enterprises, purpose=PURPOSE, kind=SubjectKind.ENTERPRISE, shape=Shape.BREAKDOWN
        )
    )
    days = sorted({before, utc_today()})
    _check_rows(rows, enterprises, plaintext, SubjectKind.ENTERPRISE, Shape.BREAKDOWN, days)
    for row in rows[:5]:
        card = agency.enterprise_score(row.subject_id, purpose="credit_report")
        assert (card.score, card.grade, card.deductions) == (row.score, row.grade, row.deductions)
        assert dict(card.bonuses) == dict(row.bonuses)


def test_invalid_ids_are_refused_in_place_and_the_rest_is_scored(
    federation: Federation, sync: Client
) -> None:
    persons = subjects(federation, "person")[:30]
    lower_x = next((p for p in persons if p.endswith("X")), None)
    asked = [*persons[:10], BAD_CHECKSUM, *persons[10:20], "not-an-id", *persons[20:]]
    if lower_x:
        asked.append(lower_x.lower())
    rows = list(sync.batch_scores(asked, purpose=PURPOSE, chunk_size=7))
    assert len(rows) == len(asked)
    by_input = dict(zip(asked, rows, strict=True))
    assert by_input[BAD_CHECKSUM].refused is not None
    assert "check character" in by_input[BAD_CHECKSUM].refused
    assert by_input[BAD_CHECKSUM].score is None
    assert by_input["not-an-id"].refused is not None
    for person in persons:
        assert by_input[person].refused is None and by_input[person].score is not None
    if lower_x:
        # the lower-case check character is the same person, reported in canonical form
        assert by_input[lower_x.lower()].subject_id == lower_x


def test_an_empty_batch_yields_nothing(sync: Client) -> None:
    assert list(sync.batch_scores([], purpose=PURPOSE)) == []


def test_credit_agencies_may_not_batch(federation: Federation) -> None:
    with federation.client(
        "agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting", PURPOSE]
    ) as agency:
        agency.register_key()
        with pytest.raises(PermissionDenied, match="central policy"):
            list(agency.batch_scores(subjects(federation, "person")[:3], purpose=PURPOSE))


def test_persons_are_batched_only_for_the_statutory_purpose(federation: Federation) -> None:
    # a platform service may look persons up for court enforcement one by one, with the law's
    # leave; a batch carries no consent, and the central policy forbids it for that purpose
    with (
        federation.client(
            "registrar", role=Role.PLATFORM_SERVICE, purposes=["court_enforcement"]
        ) as registrar,
        pytest.raises(PermissionDenied, match="central-batch-statutory-only"),
    ):
        list(
            registrar.batch_scores(subjects(federation, "person")[:3], purpose="court_enforcement")
        )


def test_a_batch_with_an_unregistered_key_is_refused(federation: Federation) -> None:
    from osmanthus.core.crypto import generate_keypair

    public, private = generate_keypair()
    keys = RequesterKeys(public=public, private=private)
    token = federation.token(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE], keys=keys)
    with Client(
        federation.target,
        tls=federation.tls(SYNC),
        token=token,
        keys=keys,
        catalogue=federation.catalogue,
    ) as client:
        client._auto_register = False  # the point of the test: no registration
        with pytest.raises(FailedPrecondition, match="RegisterKey"):
            list(client.batch_scores(subjects(federation, "person")[:2], purpose=PURPOSE))


# --- the wire, spoken directly -----------------------------------------------------------------


def _stub(federation: Federation) -> coordinator_pb2_grpc.CoordinatorServiceStub:
    from osmanthus.core.tls import COORDINATOR_SERVER_NAME, secure_channel

    channel = secure_channel(
        federation.target, federation.tls(SYNC), server_name=COORDINATOR_SERVER_NAME
    )
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)


def _header(federation: Federation) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        header=coordinator_pb2.BatchHeader(
            subject_kind=common_pb2.SUBJECT_KIND_PERSON,
            shape=common_pb2.SHAPE_TOTAL,
            purpose=PURPOSE,
            public_key=common_pb2.PaillierPublicKey(n=federation.keys[SYNC].public.to_bytes()),
        )
    )


def _chunk(number: int, ids: list[str]) -> coordinator_pb2.BatchQueryRequest:
    return coordinator_pb2.BatchQueryRequest(
        chunk=coordinator_pb2.SubjectChunk(chunk=number, subject_ids=ids)
    )


def _call(
    federation: Federation, sync: Client, messages: list[coordinator_pb2.BatchQueryRequest]
) -> tuple[list[coordinator_pb2.BatchQueryResponse], grpc.Call | None]:
    token = federation.token(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE])
    responses: list[coordinator_pb2.BatchQueryResponse] = []
    try:
        for r in _stub(federation).BatchQuery(
            iter(messages), metadata=(("authorization", f"Bearer {token}"),), timeout=30
        ):
            responses.append(r)
    except grpc.RpcError as exc:
        assert isinstance(exc, grpc.Call)
        return responses, exc
    return responses, None


def _field(error: grpc.Call) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


def test_the_layout_comes_first_and_names_every_department(
    federation: Federation, sync: Client
) -> None:
    persons = subjects(federation, "person")
    responses, error = _call(federation, sync, [_header(federation), _chunk(0, persons[:5])])
    assert error is None
    layout = responses[0].layout
    expected = SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.TOTAL)
    assert list(layout.slots) == list(expected.names)
    assert list(layout.slot_widths) == list(expected.widths)
    assert layout.subjects_per_ciphertext == expected.capacity(2048)
    assert {d.department for d in layout.departments} == {
        d.id for d in federation.catalogue.departments_for(SubjectKind.PERSON)
    }
    (chunk,) = (r.chunk for r in responses[1:])
    assert list(chunk.subject_ids) == persons[:5]
    # five subjects fit one ciphertext: the requester gets one sum, never a part per department
    assert len(chunk.ciphertexts) == 1


@pytest.mark.parametrize(
    ("messages", "field", "words"),
    [
        (lambda f, p: [_chunk(0, p[:2])], "header", "starts with its header"),
        (lambda f, p: [_header(f), _chunk(1, p[:2])], "chunk", "chunk 0 was due"),
        (lambda f, p: [_header(f), _chunk(0, p[:2]), _header(f)], "chunk", "first message"),
        (lambda f, p: [_header(f), _chunk(0, [])], "subject_ids", "1..10000"),
        (lambda f, p: [_header(f), _chunk(0, p[:1] * 10_001)], "subject_ids", "at most 10000"),
    ],
)
def test_malformed_streams_are_refused_with_the_field(
    federation: Federation, sync: Client, messages: object, field: str, words: str
) -> None:
    persons = subjects(federation, "person")
    _, error = _call(federation, sync, messages(federation, persons))  # type: ignore[operator]
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == field
    assert words in (error.details() or "")


def test_the_coordinators_audit_names_chunks_by_subject_hashes_only(
    federation: Federation, sync: Client
) -> None:
    persons = subjects(federation, "person")[:12]
    rows = list(sync.batch_scores(persons, purpose=PURPOSE, chunk_size=5))
    query_id = rows[0].query_id
    audit = federation.state_dir / "coordinator" / "audit.jsonl"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [e for e in entries if e["query_id"] == query_id]
    chunks = [e for e in mine if e.get("subject_hashes")]
    assert len(chunks) == 3 and all(e["decision"] == "allow" for e in chunks)
    assert sum(len(e["subject_hashes"]) for e in chunks) == 12
    text = "\n".join(json.dumps(e) for e in mine)
    assert not any(p in text for p in persons)
    for dept in federation.catalogue.departments_for(SubjectKind.PERSON):
        node_audit = federation.state_dir / dept.id / "audit.jsonl"
        lines = [json.loads(x) for x in node_audit.read_text().splitlines()]
        at_node = [e for e in lines if e["query_id"] == query_id]
        assert len(at_node) == 3, dept.id
        assert not any(p in node_audit.read_text() for p in persons)


def test_at_most_two_batches_run_at_once_and_a_cancelled_one_frees_its_place(
    federation: Federation, sync: Client
) -> None:
    import threading
    import time

    token = federation.token(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE])
    metadata = (("authorization", f"Bearer {token}"),)
    release = threading.Event()

    def held_open() -> Iterator[coordinator_pb2.BatchQueryRequest]:
        yield _header(federation)
        release.wait(30)  # the client sends no chunk and does not end its stream

    stub = _stub(federation)
    running = [stub.BatchQuery(held_open(), metadata=metadata, timeout=30) for _ in range(2)]
    for call in running:
        assert next(call).WhichOneof("item") == "layout"  # admitted
    third = stub.BatchQuery(
        iter([_header(federation), _chunk(0, subjects(federation, "person")[:2])]),
        metadata=metadata,
        timeout=30,
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(third)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "maximum of 2 batches" in (error.details() or "")
    # a client that goes away mid-batch frees its place
    running[0].cancel()
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while True:
        try:
            rows = list(sync.batch_scores(subjects(federation, "person")[:3], purpose=PURPOSE))
            break
        except Unavailable:
            assert time.monotonic() < deadline, "the cancelled batch kept its place"
            time.sleep(0.1)
    assert [r.refused for r in rows] == [None] * 3
    release.set()
    running[1].cancel()


def test_a_subject_pinned_to_fewer_departments_is_refused_in_place_as_typed(
    federation: Federation, sync: Client
) -> None:
    from datetime import UTC, date, datetime

    from osmanthus.core.ids import make_resident_id
    from osmanthus.core.types import RequesterId

    persons = subjects(federation, "person")
    # a person no earlier test has batched (every seeded person has been): no records anywhere
    pinned = next(
        p
        for n in range(1, 999)
        if (p := make_resident_id(region="320505", birth=date(1990, 5, 17), sequence=n)).endswith(
            "X"
        )
        and p not in persons
    )
    others = persons[:4]
    # sync-1 heard about this person once from all departments but one (a partial answer):
    # a batch, which sums every department, would disclose that one by subtraction
    service = federation.coordinator.service
    everyone = frozenset(d.id for d in federation.catalogue.departments_for(SubjectKind.PERSON))
    service._ledger.settle(
        requester=RequesterId(SYNC),
        subject_kind=SubjectKind.PERSON,
        subject_hash=service._ctx.audit.subject_hash(pinned),
        answered=everyone - {"volunteer"},
        release=lambda departments: None,
        now=datetime.now(UTC),
    )
    # typed with a lower-case check character, as a clerk might
    asked = [others[0], pinned.lower(), *others[1:]]
    rows = list(sync.batch_scores(asked, purpose=PURPOSE))
    assert [r.subject_id for r in rows] == asked
    assert rows[1].refused is not None and "query it singly" in rows[1].refused
    assert rows[1].score is None
    assert all(r.refused is None and r.score is not None for i, r in enumerate(rows) if i != 1)


def test_an_error_reading_the_ids_comes_after_the_rows_of_the_chunks_before_it(
    federation: Federation, sync: Client
) -> None:
    persons = subjects(federation, "person")

    def ids() -> Iterator[str]:
        yield from persons[:12]
        raise ValueError("the id source broke at its 13th id")

    rows: list[BatchScore] = []
    with pytest.raises(ValueError, match="13th id"):
        for row in sync.batch_scores(ids(), purpose=PURPOSE, chunk_size=5):
            rows.append(row)
    # the two whole chunks read before the failure were answered; the broken third was not sent
    assert [r.subject_id for r in rows] == persons[:10]


def test_a_department_that_does_not_batch_stops_the_batch_as_a_refusal_not_an_outage(
    federation: Federation,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    departments = ("court", "tax", "samr", "eco", "customs")
    # customs keeps the default policy but without its batch rule: it has not opted in
    policy = tmp_path / "customs.cedar"
    text = DEFAULT_NODE_POLICY.read_text()
    start = text.index('@id("node-batch-rescoring")')
    end = text.index("};", start) + 2
    policy.write_text(text[:start] + text[end:])
    small = start_federation(
        tmp_path,
        catalogue=restricted_catalogue(departments),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=departments,
        node_policies={"customs": policy},
    )
    try:
        with small.client(SYNC, role=Role.SYNC_JOB, purposes=[PURPOSE]) as client:
            client.register_key()
            firms = subjects(federation, "enterprise")[:4]
            with pytest.raises(PermissionDenied) as caught:
                list(client.batch_scores(firms, purpose=PURPOSE, kind=SubjectKind.ENTERPRISE))
    finally:
        stop_federation(small)
    message = caught.value.message
    assert "customs" in message and "does not contribute to batches" in message
    assert "not a passing fault" in message and "resume" not in message
