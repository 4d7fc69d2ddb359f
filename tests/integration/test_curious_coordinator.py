"""Play the curious coordinator, and the curious requester: what can each of them learn?

The coordinator runs in its own process (tests/integration/curious_coordinator_main.py): this
test process holds the requester's private key, so scanning our own heap would find it and prove
nothing. The subprocess records every node answer it receives and every response it sends, then
scans its own heap for a private key or a factor of the requester's n, and reports. The department
nodes are the session federation's, in this process; the subprocess reaches them over mTLS.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from google.protobuf import descriptor as pb_descriptor
from google.protobuf.unknown_fields import UnknownFieldSet

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, render_nodes
from osmanthus.core.crypto import Ciphertext, PrivateKey, PublicKey
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectKind
from osmanthus.demo.launcher import Process
from osmanthus.v1 import common_pb2, coordinator_pb2
from sdk import Client, RequesterKeys
from sdk.results import PersonScore
from tests.integration.conftest import Federation, consent_for
from tests.integration.curious_coordinator_main import scan_heap

HELPER = Path(__file__).resolve().parent / "curious_coordinator_main.py"
REPO = Path(__file__).resolve().parents[2]
REQUESTER = "agency-1"
SCAN_TIMEOUT_S = 120.0
#: subjects queried per kind, those with records in the most departments first
SUBJECTS_PER_KIND = 4
QUERY_METHODS = (
    "/osmanthus.v1.CoordinatorService/PersonQuery",
    "/osmanthus.v1.CoordinatorService/EnterpriseQuery",
)


@dataclass(frozen=True)
class Query:
    """One query as the requester saw it, and what the coordinator received and forwarded."""

    query_id: str
    kind: SubjectKind
    subject: str
    shape: Shape
    card: PersonScore
    response: coordinator_pb2.QueryResponse
    response_bytes: bytes
    #: department → ciphertext bytes received from it for this query
    received: dict[str, bytes]


@dataclass(frozen=True)
class Observations:
    report: dict[str, Any]
    queries: list[Query]
    audit_text: str
    subjects: list[str]
    keys: RequesterKeys


def subjects_by_department_count(federation: Federation, kind: SubjectKind) -> list[str]:
    """Subjects with records in the most federation departments (most interesting sums)."""
    spread: Counter[str] = Counter()
    for dept in federation.catalogue.departments_for(kind):
        with duckdb.connect(str(federation.data.databases[dept.id])) as conn:
            rows = conn.execute(
                "SELECT DISTINCT subject_id FROM records WHERE subject_kind = ? "
                "AND status = 'active'",
                [kind.value],
            ).fetchall()
        spread.update(r[0] for r in rows)
    ranked = sorted(spread, key=lambda s: (-spread[s], s))
    return ranked[:SUBJECTS_PER_KIND]


def wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            err = (path.parent / "stderr.log").read_text(errors="replace")
            raise AssertionError(f"the curious coordinator exited: {err[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path.name} did not appear within {timeout:g} s")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def observations(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Observations]:
    base = tmp_path_factory.mktemp("curious")
    keys = federation.keys[REQUESTER]
    nodes_toml = base / "nodes.toml"
    nodes_toml.write_text(
        render_nodes(
            [
                NodeEndpoint(DepartmentId(d), f"127.0.0.1:{s.port}")
                for d, s in federation.nodes.items()
            ]
        )
    )
    tls = cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    state_dir = base / "state"
    ready, report_file = base / "ready", base / "report.json"
    config = base / "config.json"
    config.write_text(
        json.dumps(
            {
                "nodes": str(nodes_toml),
                "ca": str(tls.ca),
                "cert": str(tls.cert),
                "key": str(tls.key),
                "issuer_public_key": str(federation.issuer_keys.public),
                "consent_key": str(federation.certs / "coordinator" / "consent.key"),
                "state_dir": str(state_dir),
                "deadline_s": 10.0,
                "departments": [d.id for d in federation.catalogue.departments],
                # the public modulus only: the coordinator must find no factor of it
                "modulus": str(keys.public.n),
                "ready": str(ready),
                "report": str(report_file),
            }
        )
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # a file, not a pipe: nobody drains a pipe while the queries run, and a full one would block
    stderr = (base / "stderr.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, str(HELPER), str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        # ready once it has written its port, however long a busy machine makes that take
        helper = Process("curious coordinator", process, ready, base / "stderr.log")
        target = f"127.0.0.1:{helper.wait_ready()}"
        queries = run_queries(federation, target, keys)
        process.send_signal(signal.SIGUSR1)
        wait_for(report_file, process, SCAN_TIMEOUT_S)
        report = json.loads(report_file.read_text())
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()
    attach_captures(queries, report)
    subjects_file = federation.data.subjects_file
    with subjects_file.open(encoding="utf-8") as f:
        all_subjects = [r["subject_id"] for r in csv.DictReader(f)]
    yield Observations(
        report=report,
        queries=queries,
        audit_text=(state_dir / "audit.jsonl").read_text(encoding="utf-8"),
        subjects=all_subjects,
        keys=keys,
    )


def run_queries(federation: Federation, target: str, keys: RequesterKeys) -> list[Query]:
    def client(name: str, role: Role, purposes: list[str]) -> Client:
        token = federation.token(name, role=role, purposes=purposes)
        return Client(
            target,
            tls=federation.tls(name),
            token=token,
            keys=federation.keys[name],
            catalogue=federation.catalogue,
        )

    queries: list[Query] = []
    with (
        client(REQUESTER, Role.CREDIT_AGENCY, ["loan_underwriting", "credit_report"]) as agency,
        client("registrar", Role.PLATFORM_SERVICE, ["consent_management"]) as registrar,
    ):
        assert agency.key_fingerprint == keys.fingerprint
        for person in subjects_by_department_count(federation, SubjectKind.PERSON):
            consent = consent_for(registrar, person)
            for shape in (Shape.BREAKDOWN, Shape.TOTAL):
                card = agency.person_score(
                    person, purpose="loan_underwriting", consent_id=consent, shape=shape
                )
                queries.append(unobserved_query(card, SubjectKind.PERSON, person, shape))
        for firm in subjects_by_department_count(federation, SubjectKind.ENTERPRISE):
            for shape in (Shape.BREAKDOWN, Shape.TOTAL):
                card = agency.enterprise_score(firm, purpose="credit_report", shape=shape)
                queries.append(unobserved_query(card, SubjectKind.ENTERPRISE, firm, shape))
    return queries


def unobserved_query(card: PersonScore, kind: SubjectKind, subject: str, shape: Shape) -> Query:
    """The requester's side of a query; attach_captures adds what the coordinator saw."""
    return Query(
        query_id=card.query_id,
        kind=kind,
        subject=subject,
        shape=shape,
        card=card,
        response=coordinator_pb2.QueryResponse(),
        response_bytes=b"",
        received={},
    )


def attach_captures(queries: list[Query], report: dict[str, Any]) -> None:
    """Fill each query with the bytes the subprocess recorded for it (matched by query id)."""
    received: dict[str, dict[str, bytes]] = defaultdict(dict)
    for r in report["received"]:
        assert r["department"] not in received[r["query_id"]], "two answers from one department"
        received[r["query_id"]][r["department"]] = bytes.fromhex(r["ciphertext"])
    responses: dict[str, tuple[coordinator_pb2.QueryResponse, bytes]] = {}
    for f in report["forwarded"]:
        if f["method"] in QUERY_METHODS:
            wire = bytes.fromhex(f["response"])
            message = coordinator_pb2.QueryResponse.FromString(wire)
            responses[message.query_id] = (message, wire)
    for i, q in enumerate(queries):
        message, wire = responses[q.query_id]
        queries[i] = Query(
            query_id=q.query_id,
            kind=q.kind,
            subject=q.subject,
            shape=q.shape,
            card=q.card,
            response=message,
            response_bytes=wire,
            received=received[q.query_id],
        )


def decrypt(private: PrivateKey, public: PublicKey, data: bytes, shape: Shape) -> int:
    c: Ciphertext = public.ciphertext_from_bytes(data)
    return private.decrypt(c) if shape is Shape.BREAKDOWN else private.decrypt_signed(c)


# --- the scanner works where a key does live ---------------------------------------------------


def test_heap_scan_finds_a_private_key_where_there_is_one(federation: Federation) -> None:
    # positive control: this process holds the requester's private key (session fixture)
    keys = federation.keys[REQUESTER]
    found = scan_heap(keys.public.n)
    assert "osmanthus.core.crypto.PrivateKey" in found["private_key_objects"]
    assert found["factor_hits"], "the scan cannot see p and q even where they are"
    assert found["n_seen"]


# --- the curious coordinator -------------------------------------------------------------------


def test_coordinator_heap_holds_no_private_key_and_no_factor_of_n(
    observations: Observations,
) -> None:
    report = observations.report
    assert report["private_key_objects"] == []
    assert report["factor_hits"] == []
    # the scan did look where the keys would be: it saw the public modulus
    assert report["n_seen"] > 0
    assert report["objects_scanned"] > 10_000


def test_every_query_was_captured(observations: Observations) -> None:
    assert len(observations.queries) == 4 * SUBJECTS_PER_KIND
    for q in observations.queries:
        assert q.response.query_id == q.query_id
        answered = {s.department for s in q.response.answered}
        # the coordinator summed exactly the answers it received
        assert answered == set(q.received), q.query_id
        assert len(answered) >= 3
        assert not q.response.missing


def test_forwarded_ciphertexts_differ_from_every_received_one(observations: Observations) -> None:
    received = {c for q in observations.queries for c in q.received.values()}
    assert len(received) == sum(len(q.received) for q in observations.queries)
    for q in observations.queries:
        assert q.response.ciphertext.value not in received
        # nor is any received ciphertext hidden anywhere in the response
        for c in received:
            assert c not in q.response_bytes
    for forwarded in observations.report["forwarded"]:
        wire = bytes.fromhex(forwarded["response"])
        assert not any(c in wire for c in received), forwarded["method"]


def test_forwarded_value_is_the_sum_of_the_received_parts(
    observations: Observations, federation: Federation
) -> None:
    public, private = observations.keys.public, observations.keys.private
    several_nonzero = 0
    for q in observations.queries:
        parts = {d: decrypt(private, public, c, q.shape) for d, c in sorted(q.received.items())}
        forwarded = decrypt(private, public, q.response.ciphertext.value, q.shape)
        if q.shape is Shape.BREAKDOWN:
            assert forwarded == sum(parts.values())
            layout = SlotLayout.for_catalogue(federation.catalogue, q.kind, Shape.BREAKDOWN)
            (slots,) = layout.unpack(forwarded, subjects=1, contributors=len(parts))
            assert slots[0] == q.card.deductions
            assert list(slots[1:]) == list(q.card.bonuses.values())
        else:
            assert forwarded == q.response.base + sum(parts.values())
        nonzero = [v for v in parts.values() if v]
        # BREAKDOWN parts are non-negative, so a sum of two or more non-zero parts exceeds each
        # of them: no part was passed on. Signed TOTAL parts can equal their sum by arithmetic
        # (-50 - 60 - 40 + base 100 = -50); ciphertexts are compared for every shape above.
        if q.shape is Shape.BREAKDOWN and len(nonzero) >= 2:
            several_nonzero += 1
            assert all(forwarded != v for v in parts.values()), q.query_id
    # the subjects were chosen for spread; without such a sum the check above proved nothing
    assert several_nonzero >= 2


def test_coordinator_audit_log_holds_no_raw_subject_id(observations: Observations) -> None:
    text = observations.audit_text
    entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    logged = {e["query_id"] for e in entries if e["decision"] == "allow"}
    assert {q.query_id for q in observations.queries} <= logged
    for subject in observations.subjects:
        assert subject not in text
        assert subject.lower() not in text.lower()
    queried = {q.query_id for q in observations.queries}
    for e in entries:
        if e["query_id"] in queried:
            # every answer about a subject names it, salted and hashed
            assert len(e["subject_hash"]) == 64
        elif e["shape"] == "key_registration":
            # a key registration is about the requester's key, not about anybody's record
            assert e["subject_hash"] == "" and len(e["extra"]["key_fingerprint"]) == 64


# --- the curious requester ---------------------------------------------------------------------


def bytes_fields(message: Any, path: str = "") -> list[str]:
    """Dotted names of every bytes field reachable in a message type."""
    found: list[str] = []
    for f in message.fields:
        name = f"{path}{f.name}"
        if f.type == pb_descriptor.FieldDescriptor.TYPE_BYTES:
            found.append(name)
        elif f.type == pb_descriptor.FieldDescriptor.TYPE_MESSAGE:
            if f.message_type.full_name.startswith("google.protobuf."):
                continue
            found += bytes_fields(f.message_type, f"{name}.")
    return found


def test_query_response_type_has_one_ciphertext_and_coverage_only() -> None:
    response = coordinator_pb2.QueryResponse.DESCRIPTOR
    # one sum, or for THRESHOLD the zero tests made from it (test_threshold.py decrypts them),
    # or for FLAGS one blinded count per measure (test_flags.py decrypts them)
    assert bytes_fields(response) == ["ciphertext.value", "candidates.value", "flags.value"]
    ciphertext = response.fields_by_name["ciphertext"]
    assert ciphertext.message_type is common_pb2.Ciphertext.DESCRIPTOR
    assert not ciphertext.is_repeated
    candidates = response.fields_by_name["candidates"]
    assert candidates.message_type is common_pb2.Ciphertext.DESCRIPTOR
    assert {f.name for f in response.fields} == {
        "query_id",
        "shape",
        "ciphertext",
        "slots",
        "slot_widths",
        "base",
        "answered",
        "missing",
        "partial",
        "candidates",
        "threshold",
        "measures",
        "flags",
    }
    assert response.fields_by_name["flags"].message_type is common_pb2.Ciphertext.DESCRIPTOR
    status: Any = response.fields_by_name["answered"].message_type
    assert {f.name for f in status.fields} == {"department", "detail", "rules_version"}


def test_requester_receives_one_ciphertext_and_coverage_metadata(
    observations: Observations,
) -> None:
    public, private = observations.keys.public, observations.keys.private
    for q in observations.queries:
        r = q.response
        assert len(UnknownFieldSet(r)) == 0
        assert len(r.ciphertext.value) == public.ciphertext_size
        # one ciphertext plus a little text: no room for a second ciphertext anywhere
        assert len(q.response_bytes) < 2 * public.ciphertext_size
        for status in r.answered:
            assert status.detail == "answered"
        if q.shape is Shape.BREAKDOWN:
            assert len(r.slot_widths) == len(r.slots) == 5
        else:
            assert list(r.slots) == [] and list(r.slot_widths) == []
        # what the requester can decrypt is the sum, and for BREAKDOWN that is per-slot sums
        value = decrypt(private, public, r.ciphertext.value, q.shape)
        parts = [decrypt(private, public, c, q.shape) for c in q.received.values()]
        assert value == sum(parts) + (r.base if q.shape is Shape.TOTAL else 0)
