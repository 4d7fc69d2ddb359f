"""Every refusal of a department node's Contribute, over real mTLS, and its audit-log entry."""

from __future__ import annotations

import csv
import json
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths
from osmanthus.core.consent_feed import genesis, new_feed_id, sign_head
from osmanthus.core.crypto import UnsafeShortKeys
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.receipts import (
    CONSENT_KEY_FILE,
    RECEIPT_ISSUER,
    issue_receipt,
    load_consent_private_key,
)
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import (
    ConsentId,
    Purpose,
    RequesterId,
    Role,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.coordinator import Consent
from osmanthus.v1 import common_pb2, node_pb2, node_pb2_grpc
from tests.integration.conftest import Federation

#: an RPC's deadline: only a hung call reaches it, however busy the machine
TIMEOUT_S = 30.0
#: the node every test talks to; it serves persons and owns no bonus category
DEPARTMENT = "psb"
AGENCY = "agency-1"
SYNC = "sync-1"
AGENCY_PURPOSES = ("loan_underwriting", "credit_report")


def _person(federation: Federation) -> str:
    with federation.data.subjects_file.open() as f:
        return next(r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person")


def _channel(federation: Federation, role: PeerRole, name: str) -> grpc.Channel:
    port = federation.nodes[DEPARTMENT].port
    tls = TlsFiles.from_cert_paths(cert_paths(federation.certs, role=role, name=name))
    return secure_channel(f"127.0.0.1:{port}", tls, server_name=node_server_name(DEPARTMENT))


@pytest.fixture(scope="module")
def as_coordinator(federation: Federation) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    """A stub holding the coordinator's certificate: what the node trusts to ask it."""
    with _channel(federation, PeerRole.COORDINATOR, "coordinator") as channel:
        yield node_pb2_grpc.NodeServiceStub(channel)


@pytest.fixture(scope="module")
def agency_token(federation: Federation) -> str:
    return federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES)


def _layout(federation: Federation) -> SlotLayout:
    return SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.BREAKDOWN)


def _request(federation: Federation, **overrides: object) -> node_pb2.ContributeRequest:
    """A request the node answers, unless `overrides` break it; each has a fresh query id."""
    model = federation.catalogue.model(SubjectKind.PERSON)
    fields: dict[str, object] = {
        "query_id": "rej-node-" + secrets.token_hex(8),
        "subject_kind": common_pb2.SUBJECT_KIND_PERSON,
        "subject_id": _person(federation),
        "shape": common_pb2.SHAPE_BREAKDOWN,
        "purpose": "loan_underwriting",
        "consent_id": "",
        "public_key": _proven_key(federation, AGENCY),
        "slots": list(model.slot_names()),
        "slot_widths": list(_layout(federation).widths),
    }
    fields.update(_consented(federation, str(fields["subject_id"]), str(fields["purpose"])))
    fields.update(overrides)
    return node_pb2.ContributeRequest(**fields)  # type: ignore[arg-type]


def _consented(federation: Federation, subject: str, purpose: str) -> dict[str, object]:
    """A consent the node verifies: the agency's receipt for `subject` and `purpose`, signed
    with the platform's consent key as the registry signs it, and a fresh revocation head."""
    key = load_consent_private_key(federation.certs / "coordinator" / CONSENT_KEY_FILE)
    now = datetime.now(UTC)
    try:
        consent = Consent(
            consent_id=ConsentId("cns_" + secrets.token_urlsafe(16)),
            subject_id=SubjectId(subject),
            grantee=RequesterId(AGENCY),
            purpose=Purpose(purpose),
            granted_at=now - timedelta(minutes=1),
            expires_at=now + timedelta(days=1),
            revoked_at=None,
            receipt="",
        )
        feed = new_feed_id()
        receipt = issue_receipt(consent=consent, private_key=key, revocation_feed=feed)
    except InvalidArgument:
        return {}  # a request whose subject or purpose is itself the refusal tested
    head = sign_head(
        feed=feed, issuer=RECEIPT_ISSUER, size=0, root=genesis(feed), issued_at=now,
        private_key=key,
    )  # fmt: skip
    return {
        "consent_id": consent.consent_id,
        "consent_receipt": receipt,
        "revocation_head": node_pb2.ConsentRevocationHead(
            payload=head.payload, signature=head.signature
        ),
    }


def _proven_key(federation: Federation, requester: str) -> common_pb2.PaillierPublicKey:
    """The requester's key with its modulus proof, as the coordinator sends it to a node that
    has not verified it yet (every test here may be the first to send it)."""
    keys = federation.keys[requester]
    return common_pb2.PaillierPublicKey(n=keys.public.to_bytes(), modulus_proof=keys.modulus_proof)


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token is not None else ()


def _refused(
    stub: node_pb2_grpc.NodeServiceStub,
    request: node_pb2.ContributeRequest,
    token: str | None,
    code: grpc.StatusCode,
) -> str:
    """Call Contribute, expect `code`, and return the status details."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error.details() or ""


def _field(error: grpc.Call) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


def _audit_lines(federation: Federation, query_id: str) -> list[str]:
    path = federation.node_configs[DEPARTMENT].state_dir / "audit.jsonl"
    return [
        line
        for line in path.read_text(encoding="ascii").splitlines()
        if line.strip() and json.loads(line)["query_id"] == query_id
    ]


def _assert_deny_audited(
    federation: Federation, request: node_pb2.ContributeRequest, *, reason: str
) -> None:
    """The node logged exactly one deny for this query, with its reason and no raw subject id."""
    lines = _audit_lines(federation, request.query_id)
    assert len(lines) == 1, lines
    entry = json.loads(lines[0])
    assert entry["decision"] == "deny"
    assert reason in entry["reason"]
    assert len(entry["subject_hash"]) == 64
    assert request.subject_id not in lines[0]


# --- baseline ------------------------------------------------------------------------------------


def test_the_coordinator_with_a_valid_token_gets_an_encrypted_breakdown(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    # the control for every refusal below: each changes one thing in this request
    request = _request(federation)
    response = as_coordinator.Contribute(
        request, timeout=TIMEOUT_S, metadata=_metadata(agency_token)
    )
    assert response.department == DEPARTMENT
    keys = federation.keys[AGENCY]
    ciphertext = keys.public.ciphertext_from_bytes(response.ciphertext.value)
    slots = len(federation.catalogue.model(SubjectKind.PERSON).slot_names())
    (values,) = _layout(federation).unpack(
        keys.private.decrypt(ciphertext), subjects=1, contributors=1
    )
    # psb owns no bonus category, so only its deductions slot can be non-zero
    assert values[1:] == (0,) * (slots - 1)
    (line,) = _audit_lines(federation, request.query_id)
    assert json.loads(line)["decision"] == "allow"
    assert request.subject_id not in line


# --- who may call --------------------------------------------------------------------------------


def test_a_requester_certificate_calling_contribute_directly_is_refused(
    federation: Federation, agency_token: str
) -> None:
    request = _request(federation)
    with _channel(federation, PeerRole.REQUESTER, AGENCY) as channel:
        details = _refused(
            node_pb2_grpc.NodeServiceStub(channel),
            request,
            agency_token,
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert "only the platform coordinator may request contributions" in details
    assert f"requester '{AGENCY}'" in details
    _assert_deny_audited(federation, request, reason="only the platform coordinator")


def test_a_call_without_a_token_is_unauthenticated(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub
) -> None:
    request = _request(federation)
    details = _refused(as_coordinator, request, None, grpc.StatusCode.UNAUTHENTICATED)
    assert "no requester token" in details
    _assert_deny_audited(federation, request, reason="no requester token")


def test_a_token_signed_by_another_issuer_key_is_unauthenticated(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub
) -> None:
    rogue = TokenIssuer(private_key=Ed25519PrivateKey.generate())
    token = rogue.issue(
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        purposes=AGENCY_PURPOSES,
        key_fingerprint=federation.keys[AGENCY].fingerprint,
        ttl=timedelta(minutes=5),
    )
    request = _request(federation)
    details = _refused(as_coordinator, request, token, grpc.StatusCode.UNAUTHENTICATED)
    assert "signature does not verify against the platform issuer key" in details
    _assert_deny_audited(federation, request, reason="signature does not verify")


# --- the requester's key -------------------------------------------------------------------------


def test_a_public_key_not_bound_to_the_token_is_refused(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    # bank-1's real 2048-bit key: well-formed, but the agency's token binds another fingerprint
    other = common_pb2.PaillierPublicKey(n=federation.keys["bank-1"].public.to_bytes())
    request = _request(federation, public_key=other)
    details = _refused(as_coordinator, request, agency_token, grpc.StatusCode.PERMISSION_DENIED)
    assert "is not the key bound to the token" in details
    assert federation.keys["bank-1"].fingerprint[:16] in details
    _assert_deny_audited(federation, request, reason="is not the key bound to the token")


def test_a_key_shorter_than_2048_bits_is_refused_even_when_the_token_binds_it(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub
) -> None:
    # A 1024-bit modulus can be factored by a determined attacker, after which every contribution
    # encrypted under it is readable; the node must refuse it even if the platform (wrongly)
    # issued a token bound to it, so the token here binds the short key's own fingerprint.
    short, _ = UnsafeShortKeys.generate(bits=1024)
    token = federation.issuer.issue(
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        purposes=AGENCY_PURPOSES,
        key_fingerprint=short.fingerprint,
        ttl=timedelta(minutes=5),
    )
    request = _request(federation, public_key=common_pb2.PaillierPublicKey(n=short.to_bytes()))
    with pytest.raises(grpc.RpcError) as caught:
        as_coordinator.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("public_key: ")
    assert "1024 bits; at least 2048 are required" in details
    assert _field(error) == "public_key"
    _assert_deny_audited(federation, request, reason="at least 2048 are required")


# --- what is asked -------------------------------------------------------------------------------


def test_a_purpose_outside_the_token_is_refused(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    request = _request(federation, purpose="government_procurement")
    details = _refused(as_coordinator, request, agency_token, grpc.StatusCode.PERMISSION_DENIED)
    assert "purpose 'government_procurement' is not among the token's purposes" in details
    _assert_deny_audited(federation, request, reason="is not among the token's purposes")


def test_the_department_policy_refuses_a_library(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub
) -> None:
    # policies/node.cedar forbids role "library" whatever the purpose, and the forbid wins over
    # the permit for loan_underwriting, which the token and request otherwise satisfy
    token = federation.issuer.issue(
        requester="library-1",
        role=Role.LIBRARY,
        purposes=["loan_underwriting"],
        key_fingerprint=federation.keys[AGENCY].fingerprint,
        ttl=timedelta(minutes=5),
    )
    request = _request(federation)
    details = _refused(as_coordinator, request, token, grpc.StatusCode.PERMISSION_DENIED)
    assert f"department {DEPARTMENT} policy" in details
    assert "node-no-library" in details
    lines = _audit_lines(federation, request.query_id)
    assert json.loads(lines[0])["requester"] == "library-1"
    _assert_deny_audited(federation, request, reason="node-no-library")


def test_a_wrong_slot_layout_is_refused(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    slots = list(federation.catalogue.model(SubjectKind.PERSON).slot_names())
    request = _request(federation, slots=list(reversed(slots)))
    with pytest.raises(grpc.RpcError) as caught:
        as_coordinator.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(agency_token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (error.details() or "").startswith("slots: slot layout")
    assert _field(error) == "slots"
    _assert_deny_audited(federation, request, reason="does not match this catalogue")


def test_slot_widths_other_than_the_catalogues_are_refused(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    # same names, the old fixed 40-bit slots: a coordinator with another catalogue
    request = _request(federation, slot_widths=[40] * 5)
    with pytest.raises(grpc.RpcError) as caught:
        as_coordinator.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(agency_token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _field(error) == "slot_widths"
    assert "[40, 40, 40, 40, 40]" in (error.details() or "")


@pytest.mark.parametrize(
    ("mangle", "rule"),
    [
        (lambda s: s[:17], "must be 18 characters, got 17"),
        (lambda s: s[:17] + ("0" if s[17] != "0" else "1"), "check character"),
        (lambda s: s[:4] + "A" + s[5:], "other than a digit at position 5"),
    ],
    ids=["length", "check-character", "character-set"],
)
def test_a_bad_subject_id_sent_straight_to_the_node_is_refused(
    federation: Federation,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    agency_token: str,
    mangle: Callable[[str], str],
    rule: str,
) -> None:
    bad = mangle(_person(federation))
    request = _request(federation, subject_id=bad)
    with pytest.raises(grpc.RpcError) as caught:
        as_coordinator.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(agency_token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.details() or ""
    assert details.startswith("subject_id: ")
    assert rule in details
    assert _field(error) == "subject_id"
    # the audit entry names the field but not the rule: rule messages quote pieces of the id
    _assert_deny_audited(federation, request, reason="subject_id failed validation")
    assert rule not in _audit_lines(federation, request.query_id)[0]


# --- batch chunks --------------------------------------------------------------------------------


def _sync_token(federation: Federation) -> str:
    return federation.token(SYNC, role=Role.SYNC_JOB, purposes=["credit_rescoring"])


def _chunk_request(federation: Federation, **overrides: object) -> node_pb2.ContributeChunkRequest:
    layout = SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.TOTAL)
    fields: dict[str, object] = {
        "query_id": "rej-chunk-" + secrets.token_hex(8),
        "chunk": 0,
        "subject_kind": common_pb2.SUBJECT_KIND_PERSON,
        "subject_ids": [_person(federation)] * 3,
        "shape": common_pb2.SHAPE_TOTAL,
        "purpose": "credit_rescoring",
        "public_key": _proven_key(federation, SYNC),
        "slots": list(layout.names),
        "slot_widths": list(layout.widths),
        "subjects_per_ciphertext": layout.capacity(2048),
    }
    fields.update(overrides)
    return node_pb2.ContributeChunkRequest(**fields)  # type: ignore[arg-type]


def _chunk_refused(
    stub: node_pb2_grpc.NodeServiceStub,
    request: node_pb2.ContributeChunkRequest,
    token: str,
    code: grpc.StatusCode,
) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ContributeChunk(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error


def test_a_well_formed_chunk_is_answered_with_one_packed_ciphertext(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub
) -> None:
    request = _chunk_request(federation)
    response = as_coordinator.ContributeChunk(
        request, timeout=TIMEOUT_S, metadata=_metadata(_sync_token(federation))
    )
    assert response.department == DEPARTMENT and response.chunk == 0
    (ciphertext,) = response.ciphertexts
    keys = federation.keys[SYNC]
    layout = SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.TOTAL)
    plain = keys.private.decrypt(keys.public.ciphertext_from_bytes(ciphertext.value))
    # one department's part for the same person three times: three equal slots
    parts = layout.unpack(plain, subjects=3, contributors=1)
    assert parts[0] == parts[1] == parts[2]
    (line,) = _audit_lines(federation, request.query_id)
    entry = json.loads(line)
    assert entry["decision"] == "allow" and len(entry["subject_hashes"]) == 3
    assert request.subject_ids[0] not in line


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"subjects_per_ciphertext": 1}, "subjects_per_ciphertext", "1 subjects per ciphertext"),
        ({"slot_widths": [40]}, "slot_widths", "[40]"),
        ({"subject_ids": []}, "subject_ids", "1..10000"),
        ({"subject_ids": ["110105194912310021"]}, "subject_ids[0]", "check character"),
    ],
)
def test_a_malformed_chunk_is_refused_with_the_field(
    federation: Federation,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    overrides: dict[str, object],
    field: str,
    words: str,
) -> None:
    request = _chunk_request(federation, **overrides)
    error = _chunk_refused(
        as_coordinator, request, _sync_token(federation), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert _field(error) == field
    assert words in (error.details() or "")
    (line,) = _audit_lines(federation, request.query_id)
    assert json.loads(line)["decision"] == "deny"


def test_a_chunk_for_a_purpose_the_department_does_not_batch_is_refused(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, agency_token: str
) -> None:
    # the agency's token is valid and names loan_underwriting, which no node batches
    request = _chunk_request(
        federation,
        purpose="loan_underwriting",
        public_key=_proven_key(federation, AGENCY),
    )
    error = _chunk_refused(as_coordinator, request, agency_token, grpc.StatusCode.PERMISSION_DENIED)
    assert "does not contribute to batches" in (error.details() or "")


def test_a_requester_calling_contribute_chunk_directly_is_refused(
    federation: Federation,
) -> None:
    stub = node_pb2_grpc.NodeServiceStub(_channel(federation, PeerRole.REQUESTER, SYNC))
    error = _chunk_refused(
        stub,
        _chunk_request(federation),
        _sync_token(federation),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "only the platform coordinator" in (error.details() or "")
