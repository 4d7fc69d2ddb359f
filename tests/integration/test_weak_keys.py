"""Weak requester keys and their modulus proof (issue 14, item 1), over real mTLS.

A requester who registers a weak modulus (prime, 3·q, p², a small prime times q) is refused at
RegisterKey with the reason, even with a valid Π^mod proof where one exists; a coordinator that
forwards such a key straight to a node (playing a malicious coordinator) is refused by the node
too. A registration or a node request with a missing, foreign or tampered proof is refused, and
a node that has forgotten a key (it restarted) gets the proof again from the coordinator.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from certs import PeerRole, cert_paths
from node.server import start_node
from osmanthus.core.crypto import PrivateKey, PublicKey, generate_keypair
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.keyproof import PROOF_FIELD, prove_modulus
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until
from tests.weak_keys import WeakKey, weak_moduli

#: an RPC's deadline: only a hung call reaches it, however busy the machine
TIMEOUT_S = 30.0
#: the node played against, and the requester whose certificate the attacker holds
DEPARTMENT = "psb"
AGENCY = "agency-1"
SYNC = "sync-1"
BATCH_PURPOSE = "credit_rescoring"


@pytest.fixture(scope="module")
def weak() -> list[WeakKey]:
    return weak_moduli(2048)


@pytest.fixture(scope="module")
def fresh() -> tuple[PublicKey, PrivateKey, bytes]:
    """A sound key no node has seen yet, and its proof."""
    public, private = generate_keypair(bits=2048)
    return public, private, prove_modulus(private)


@pytest.fixture(scope="module")
def raw_coordinator(
    federation: Federation,
) -> Iterator[coordinator_pb2_grpc.CoordinatorServiceStub]:
    """The coordinator as the agency reaches it, without the SDK (which would make a proof)."""
    with secure_channel(
        federation.target, federation.tls(AGENCY), server_name=COORDINATOR_SERVER_NAME
    ) as channel:
        yield coordinator_pb2_grpc.CoordinatorServiceStub(channel)


@pytest.fixture(scope="module")
def as_coordinator(federation: Federation) -> Iterator[node_pb2_grpc.NodeServiceStub]:
    """A stub holding the coordinator's certificate: a malicious coordinator's reach."""
    port = federation.nodes[DEPARTMENT].port
    tls = TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    with secure_channel(
        f"127.0.0.1:{port}", tls, server_name=node_server_name(DEPARTMENT)
    ) as channel:
        yield node_pb2_grpc.NodeServiceStub(channel)


def _token(federation: Federation, n: int, *, requester: str = AGENCY) -> str:
    """A token the platform (wrongly, or for a sound key) bound to the modulus n."""
    role, purposes = (
        (Role.SYNC_JOB, [BATCH_PURPOSE])
        if requester == SYNC
        else (Role.CREDIT_AGENCY, ["loan_underwriting", "credit_report"])
    )
    return federation.issuer.issue(
        requester=requester,
        role=role,
        purposes=purposes,
        key_fingerprint=PublicKey(n=n).fingerprint,
        ttl=timedelta(minutes=10),
    )


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _key(n: int, proof: bytes) -> common_pb2.PaillierPublicKey:
    return common_pb2.PaillierPublicKey(n=PublicKey(n=n).to_bytes(), modulus_proof=proof)


def _error_info(error: grpc.Call) -> tuple[str, str]:
    """The refusal's google.rpc.ErrorInfo: (reason, field)."""
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason, info.metadata.get("field", "")
    raise AssertionError("no ErrorInfo in the status")


def _refused(call: object, *args: object, code: grpc.StatusCode, **kwargs: object) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        call(*args, timeout=TIMEOUT_S, **kwargs)  # type: ignore[operator]
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error


def _register(
    stub: coordinator_pb2_grpc.CoordinatorServiceStub, token: str, key: common_pb2.PaillierPublicKey
) -> grpc.Call:
    return _refused(
        stub.RegisterKey,
        coordinator_pb2.RegisterKeyRequest(public_key=key),
        code=grpc.StatusCode.INVALID_ARGUMENT,
        metadata=_metadata(token),
    )


def _person(federation: Federation) -> str:
    with federation.data.subjects_file.open() as f:
        return next(r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person")


def _chunk(
    federation: Federation, key: common_pb2.PaillierPublicKey
) -> node_pb2.ContributeChunkRequest:
    """A batch chunk the node answers for the sync job (no consent involved), under `key`."""
    layout = SlotLayout.for_catalogue(federation.catalogue, SubjectKind.PERSON, Shape.TOTAL)
    return node_pb2.ContributeChunkRequest(
        query_id="weak-key-" + secrets.token_hex(8),
        chunk=0,
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        subject_ids=[_person(federation)],
        shape=common_pb2.SHAPE_TOTAL,
        purpose=BATCH_PURPOSE,
        public_key=key,
        slots=list(layout.names),
        slot_widths=list(layout.widths),
        subjects_per_ciphertext=layout.capacity(2048),
    )


def _audit(state_dir: Path, query_id: str) -> list[dict[str, object]]:
    lines = (state_dir / "audit.jsonl").read_text(encoding="ascii").splitlines()
    entries = [json.loads(line) for line in lines if line.strip()]
    return [e for e in entries if e["query_id"] == query_id]


# --- at RegisterKey --------------------------------------------------------------------------


def test_each_weak_key_is_refused_at_register_key_with_the_reason(
    federation: Federation,
    raw_coordinator: coordinator_pb2_grpc.CoordinatorServiceStub,
    weak: list[WeakKey],
) -> None:
    for key in weak:
        # the token binds the weak key (a platform that issued it wrongly), and 3·q and 1019·q
        # come with a valid Π^mod proof: only the small-factor check stands in the way
        error = _register(raw_coordinator, _token(federation, key.n), _key(key.n, key.proof))
        details = error.details() or ""
        assert details == f"public_key: the Paillier modulus n {key.reason}", key.name
        assert _error_info(error) == ("INVALID_ARGUMENT", "public_key")


def test_register_key_requires_a_valid_proof(
    federation: Federation,
    raw_coordinator: coordinator_pb2_grpc.CoordinatorServiceStub,
    fresh: tuple[PublicKey, PrivateKey, bytes],
) -> None:
    public, _, proof = fresh
    token = _token(federation, public.n)
    _, other = generate_keypair(bits=2048)
    tampered = bytearray(proof)
    tampered[-1] ^= 1
    for bad, words in [
        (b"", "is required"),
        (prove_modulus(other), "outside [1, n)|not an n-th root|Jacobi|fourth root"),
        (bytes(tampered), "z_4 is not an n-th root"),
        (proof[:100], "100 bytes; 21781 expected"),
    ]:
        error = _register(raw_coordinator, token, _key(public.n, bad))
        details = error.details() or ""
        assert details.startswith(f"{PROOF_FIELD}: "), details
        assert any(w in details for w in words.split("|")), details
        assert _error_info(error) == ("INVALID_ARGUMENT", PROOF_FIELD)
    answer = raw_coordinator.RegisterKey(
        coordinator_pb2.RegisterKeyRequest(public_key=_key(public.n, proof)),
        timeout=TIMEOUT_S,
        metadata=_metadata(token),
    )
    assert answer.key_fingerprint == public.fingerprint


# --- at the node, from a malicious coordinator --------------------------------------------------


def test_each_weak_key_is_refused_by_the_node_itself(
    federation: Federation, as_coordinator: node_pb2_grpc.NodeServiceStub, weak: list[WeakKey]
) -> None:
    state_dir = federation.node_configs[DEPARTMENT].state_dir
    for key in weak:
        request = _chunk(federation, _key(key.n, key.proof))
        error = _refused(
            as_coordinator.ContributeChunk,
            request,
            code=grpc.StatusCode.INVALID_ARGUMENT,
            metadata=_metadata(_token(federation, key.n, requester=SYNC)),
        )
        assert error.details() == f"public_key: the Paillier modulus n {key.reason}", key.name
        assert _error_info(error) == ("INVALID_ARGUMENT", "public_key")
        (entry,) = _audit(state_dir, request.query_id)
        assert entry["decision"] == "deny"
        assert key.reason in str(entry["reason"])


def test_the_node_verifies_the_proof_of_a_key_it_has_not_seen_once(
    federation: Federation,
    as_coordinator: node_pb2_grpc.NodeServiceStub,
    fresh: tuple[PublicKey, PrivateKey, bytes],
) -> None:
    public, _, proof = fresh
    token = _token(federation, public.n, requester=SYNC)
    metadata = _metadata(token)
    # no proof: FAILED_PRECONDITION, reason KEY_PROOF_REQUIRED (the coordinator's cue to resend)
    missing = _refused(
        as_coordinator.ContributeChunk,
        _chunk(federation, _key(public.n, b"")),
        code=grpc.StatusCode.FAILED_PRECONDITION,
        metadata=metadata,
    )
    assert _error_info(missing) == ("KEY_PROOF_REQUIRED", PROOF_FIELD)
    assert "has not verified key" in (missing.details() or "")
    _, other = generate_keypair(bits=2048)
    tampered = bytearray(proof)
    tampered[1 + 256 + 20 + 5] ^= 1  # inside x_1
    for bad in (prove_modulus(other), bytes(tampered)):
        error = _refused(
            as_coordinator.ContributeChunk,
            _chunk(federation, _key(public.n, bad)),
            code=grpc.StatusCode.INVALID_ARGUMENT,
            metadata=metadata,
        )
        assert _error_info(error) == ("INVALID_ARGUMENT", PROOF_FIELD)
    answered = as_coordinator.ContributeChunk(
        _chunk(federation, _key(public.n, proof)), timeout=TIMEOUT_S, metadata=metadata
    )
    assert answered.department == DEPARTMENT and len(answered.ciphertexts) == 1
    # verified once: the node now answers under this key without the proof
    again = as_coordinator.ContributeChunk(
        _chunk(federation, _key(public.n, b"")), timeout=TIMEOUT_S, metadata=metadata
    )
    assert len(again.ciphertexts) == 1


# --- the coordinator sends the proof to each node once, and again after a restart ---------------


#: a short-lived federation of its own: one of its nodes is restarted
FIVE_ENTERPRISE_DEPARTMENTS = ("court", "tax", "samr", "eco", "customs")
RESTARTED = "customs"


def _firms(federation: Federation) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]


@pytest.mark.parametrize("single_use", [False, True], ids=["token", "single-use-token"])
def test_a_restarted_node_asks_for_the_proof_and_the_coordinator_resends_it(
    single_use: bool,
    tmp_path: Path,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    fed = start_federation(
        tmp_path,
        catalogue=restricted_catalogue(FIVE_ENTERPRISE_DEPARTMENTS),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=FIVE_ENTERPRISE_DEPARTMENTS,
    )
    try:
        firms = iter(_firms(fed))
        with fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"]) as client:
            # the SDK registers the key with its proof; the pool sends the proof to every node
            first = client.enterprise_score(next(firms), purpose="credit_report")
            assert not first.partial
            assert {s.department for s in first.answered} == set(FIVE_ENTERPRISE_DEPARTMENTS)
            config = dataclasses.replace(
                fed.node_configs[RESTARTED], listen=f"127.0.0.1:{fed.nodes[RESTARTED].port}"
            )
            fed.nodes[RESTARTED].stop(grace=0.5)
            fed.nodes[RESTARTED] = start_node(config, catalogue=fed.catalogue)
            answers = []

            def answered_by_all() -> bool:
                # a fresh firm each time: a partial answer pins nothing for the next one
                if not single_use:
                    report = client.enterprise_score(next(firms), purpose="credit_report")
                else:
                    # the node refuses the token's first showing for want of the proof; the
                    # coordinator's second showing of the same single-use token must pass
                    with fed.client(
                        AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"],
                        single_use=True,
                    ) as once:  # fmt: skip
                        report = once.enterprise_score(next(firms), purpose="credit_report")
                answers.append(report)
                return not report.partial

            # the pool believes customs verified the key; customs has forgotten it
            wait_until(answered_by_all, what=lambda: f"a full answer; last: {answers[-1:]}")
        entries = _audit(config.state_dir, answers[-1].query_id)
        assert [e["decision"] for e in entries] == ["deny", "allow"], entries
        assert "has not verified key" in str(entries[0]["reason"])
    finally:
        stop_federation(fed)
