"""Every log served: TransparencyService at the nodes and the coordinator, over real mutual TLS.

A small federation signs checkpoints every CHECKPOINT_EVERY entries. Checkpoints, inclusion and
consistency proofs and entries are fetched from a node (as the coordinator and as the
department's operator), from the coordinator (as the platform operator and as an auditor's
token) and relayed by the coordinator for a node's origin, and every answer is verified with
osmanthus.core.merkle and the roster's keys, never with anything the log says about itself.
Strangers are refused and audited; junk cosignatures are refused or ignored; bounds errors name
the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from certs import PeerRole, cert_paths
from osmanthus.core import merkle
from osmanthus.core.errors import (
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
)
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import ROSTER_FILE, WITNESS_KEY_FILE, LogRoster, log_origin
from osmanthus.core.logserver import MAX_ENTRIES_PER_CALL
from osmanthus.core.signednote import (
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    open_note,
    parse_checkpoint,
)
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import Role
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import transparency_pb2, transparency_pb2_grpc
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until

DEPARTMENTS = ("psb", "court", "tax")
NODE = "court"
NODE_ORIGIN = log_origin(PeerRole.NODE, NODE)
COORDINATOR_ORIGIN = log_origin(PeerRole.COORDINATOR, "coordinator")
CHECKPOINT_EVERY = 5
#: a requester of the platform certificates that acts as an auditor in these tests
AUDITOR = "library-1"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    federation = start_federation(
        tmp_path_factory.mktemp("transparency"),
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        transparency=True,
        checkpoint_every=CHECKPOINT_EVERY,
    )
    yield federation
    stop_federation(federation)


@pytest.fixture(scope="module")
def roster(fed: Federation) -> LogRoster:
    return LogRoster.load(fed.certs / ROSTER_FILE)


def _files(fed: Federation, role: PeerRole, name: str) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(fed.certs, role=role, name=name))


def _node_stub(
    fed: Federation, tls: TlsFiles, department: str = NODE
) -> tuple[grpc.Channel, transparency_pb2_grpc.TransparencyServiceStub]:
    channel = secure_channel(
        f"127.0.0.1:{fed.nodes[department].port}", tls, server_name=node_server_name(department)
    )
    return channel, transparency_pb2_grpc.TransparencyServiceStub(channel)


def _coordinator_stub(
    fed: Federation, tls: TlsFiles
) -> tuple[grpc.Channel, transparency_pb2_grpc.TransparencyServiceStub]:
    channel = secure_channel(fed.target, tls, server_name=COORDINATOR_SERVER_NAME)
    return channel, transparency_pb2_grpc.TransparencyServiceStub(channel)


def _error(call: object) -> OsmanthusError:
    """The Osmanthus error a failed call's status carries."""
    assert isinstance(call, grpc.RpcError)
    return error_from_rpc(call)


def _refused(call: object) -> OsmanthusError:
    with pytest.raises(grpc.RpcError) as raised:
        call()  # type: ignore[operator]
    return _error(raised.value)


def _verified(
    roster: LogRoster, origin: str, signed: transparency_pb2.SignedCheckpoint
) -> Checkpoint:
    """The checkpoint of a SignedCheckpoint, opened with the roster's key for `origin` only."""
    checkpoint = parse_checkpoint(open_note(signed.note, [roster.log_verifier(origin)]).text)
    assert checkpoint.origin == origin == signed.origin
    assert (checkpoint.size, checkpoint.root_hash) == (signed.tree_size, signed.root_hash)
    return checkpoint


def _node_audit_lines(fed: Federation, department: str = NODE) -> list[dict[str, object]]:
    path = fed.state_dir / department / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _stranger_calls(fed: Federation, count: int) -> None:
    """`count` refused calls at the node by a requester's certificate: one audit entry each."""
    channel, stub = _node_stub(fed, _files(fed, PeerRole.REQUESTER, "bank-1"))
    with channel:
        for _ in range(count):
            error = _refused(lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()))
            assert isinstance(error, PermissionDenied)


def _wait_for_checkpoint(
    stub: transparency_pb2_grpc.TransparencyServiceStub,
    roster: LogRoster,
    origin: str,
    *,
    at_least: int,
    metadata: tuple[tuple[str, str], ...] = (),
) -> Checkpoint:
    found: list[Checkpoint] = []

    def signed() -> bool:
        answer = stub.GetCheckpoint(
            transparency_pb2.GetCheckpointRequest(origin=origin), metadata=metadata
        )
        found.append(_verified(roster, origin, answer))
        return found[-1].size >= at_least

    wait_until(signed, what=f"a checkpoint of {origin} of at least {at_least} entries")
    return found[-1]


def test_a_node_signs_a_checkpoint_every_n_entries_and_proves_them_to_the_coordinator(
    fed: Federation, roster: LogRoster
) -> None:
    channel, stub = _node_stub(fed, _files(fed, PeerRole.COORDINATOR, "coordinator"))
    with channel:
        first = _verified(
            roster, NODE_ORIGIN, stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest())
        )
        _stranger_calls(fed, CHECKPOINT_EVERY)
        second = _wait_for_checkpoint(
            stub, roster, NODE_ORIGIN, at_least=first.size + CHECKPOINT_EVERY
        )
        lines = _node_audit_lines(fed)
        assert len(lines) >= second.size
        # every entry of the checkpoint is included in it, with the line the log holds
        for index in range(second.size):
            proof = stub.GetInclusionProof(
                transparency_pb2.GetInclusionProofRequest(leaf_index=index, tree_size=second.size)
            )
            assert proof.tree_size == second.size
            merkle.verify_inclusion(
                index, second.size, merkle.leaf_hash(proof.entry), proof.hashes, second.root_hash
            )
            assert json.loads(proof.entry) == lines[index]
        # tree_size 0: the latest checkpoint's
        latest = stub.GetInclusionProof(transparency_pb2.GetInclusionProofRequest(leaf_index=0))
        assert latest.tree_size >= second.size
        if first.size:
            consistency = stub.GetConsistencyProof(
                transparency_pb2.GetConsistencyProofRequest(
                    first_size=first.size, second_size=second.size
                )
            )
            merkle.verify_consistency(
                first.size, second.size, first.root_hash, second.root_hash, consistency.hashes
            )
        entries = stub.GetEntries(transparency_pb2.GetEntriesRequest(start=0, end=second.size))
        assert entries.start == 0 and entries.tree_size >= second.size
        assert merkle.root_of(list(entries.entries)) == second.root_hash


def test_consistency_between_two_checkpoints_of_a_node_verifies(
    fed: Federation, roster: LogRoster
) -> None:
    channel, stub = _node_stub(fed, _files(fed, PeerRole.COORDINATOR, "coordinator"))
    with channel:
        _stranger_calls(fed, 1)
        old = _wait_for_checkpoint(stub, roster, NODE_ORIGIN, at_least=1)
        _stranger_calls(fed, CHECKPOINT_EVERY)
        new = _wait_for_checkpoint(stub, roster, NODE_ORIGIN, at_least=old.size + CHECKPOINT_EVERY)
        proof = stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=old.size, second_size=new.size)
        )
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof.hashes)
        # and a proof for other sizes does not pass for these two checkpoints
        wrong = stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=1, second_size=new.size)
        )
        if old.size != 1:
            with pytest.raises(merkle.ProofError):
                merkle.verify_consistency(
                    old.size, new.size, old.root_hash, new.root_hash, wrong.hashes
                )


def test_the_departments_operator_reads_its_nodes_log(
    fed: Federation, roster: LogRoster, list_officers: dict[str, TlsFiles]
) -> None:
    channel, stub = _node_stub(fed, list_officers[NODE])
    with channel:
        _verified(roster, NODE_ORIGIN, stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()))
    # another department's officer is a stranger here
    channel, stub = _node_stub(fed, list_officers["tax"])
    with channel:
        error = _refused(lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()))
    assert isinstance(error, PermissionDenied)


@pytest.mark.parametrize(
    ("role", "name"),
    [(PeerRole.REQUESTER, "bank-1"), (PeerRole.NODE, "tax"), (PeerRole.OPERATOR, "operator")],
)
def test_a_stranger_is_refused_at_the_node_and_the_refusal_is_audited(
    fed: Federation, role: PeerRole, name: str
) -> None:
    before = len(_node_audit_lines(fed))
    channel, stub = _node_stub(fed, _files(fed, role, name))
    with channel:
        for call in (
            lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()),
            lambda: stub.GetEntries(transparency_pb2.GetEntriesRequest(start=0, end=1)),
            lambda: stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=b"x")),
        ):
            error = _refused(call)
            assert isinstance(error, PermissionDenied), error
            assert "coordinator" in error.message and name in error.message
    refusals = _node_audit_lines(fed)[before:]
    assert len(refusals) == 3
    for entry in refusals:
        assert entry["decision"] == "deny"
        assert entry["requester"] == f"{role.value}:{name}"
        assert entry["purpose"] == "transparency_log"


def test_bounds_errors_name_the_field(fed: Federation) -> None:
    channel, stub = _node_stub(fed, _files(fed, PeerRole.COORDINATOR, "coordinator"))
    with channel:
        size = _verified(
            LogRoster.load(fed.certs / ROSTER_FILE),
            NODE_ORIGIN,
            stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()),
        ).size
        beyond = 10**9
        cases = [
            (
                lambda: stub.GetInclusionProof(
                    transparency_pb2.GetInclusionProofRequest(leaf_index=0, tree_size=beyond)
                ),
                "tree_size",
            ),
            (
                lambda: stub.GetInclusionProof(
                    transparency_pb2.GetInclusionProofRequest(leaf_index=size, tree_size=size)
                ),
                "leaf_index",
            ),
            (
                lambda: stub.GetConsistencyProof(
                    transparency_pb2.GetConsistencyProofRequest(first_size=1, second_size=beyond)
                ),
                "second_size",
            ),
            (
                lambda: stub.GetConsistencyProof(
                    transparency_pb2.GetConsistencyProofRequest(
                        first_size=size + 1, second_size=size
                    )
                ),
                "first_size",
            ),
            (
                lambda: stub.GetEntries(
                    transparency_pb2.GetEntriesRequest(start=0, end=MAX_ENTRIES_PER_CALL + 1)
                ),
                "end",
            ),
            (
                lambda: stub.GetEntries(transparency_pb2.GetEntriesRequest(start=0, end=beyond)),
                "end",
            ),
            (lambda: stub.GetEntries(transparency_pb2.GetEntriesRequest(start=3, end=3)), "end"),
        ]
        # from the empty tree the proof is empty (C2SP tlog-witness, old size 0)
        empty = stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(first_size=0, second_size=size)
        )
        assert (empty.first_size, empty.second_size, list(empty.hashes)) == (0, size, [])
        for call, field in cases:
            error = _refused(call)
            assert isinstance(error, InvalidArgument), (field, error)
            assert error.field == field, (field, error)
            assert field in error.message


def _witness(fed: Federation) -> CosignatureSigner:
    return read_signer(
        CosignatureSigner,
        fed.certs / "coordinator" / WITNESS_KEY_FILE,
        expected_name="coordinator.osmanthus/witness",
        field="witness_key",
    )


def test_add_cosignatures_keeps_a_valid_cosignature_and_refuses_junk(
    fed: Federation, roster: LogRoster
) -> None:
    witness = _witness(fed)
    channel, stub = _node_stub(fed, _files(fed, PeerRole.COORDINATOR, "coordinator"))
    with channel:
        signed = stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest())
        checkpoint = _verified(roster, NODE_ORIGIN, signed)
        # a witness outside the roster: its line is ignored, so nothing verifies
        stranger = CosignatureSigner.from_key_text(
            CosignatureSigner(
                name="coordinator.osmanthus/witness", private_key=_new_key()
            ).signer_key_text()
        )
        forged = stranger.countersign(signed.note, timestamp=1_700_000_000)
        error = _refused(
            lambda: stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=forged))
        )
        assert isinstance(error, PermissionDenied) and error.field == "note"
        # no cosignature at all
        error = _refused(
            lambda: stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=signed.note))
        )
        assert isinstance(error, InvalidArgument) and error.field == "note"
        # a checkpoint the log never signed, cosigned by the real witness
        other = Checkpoint(origin=NODE_ORIGIN, size=checkpoint.size + 7, root_hash=bytes(32))
        error = _refused(
            lambda: stub.AddCosignatures(
                transparency_pb2.AddCosignaturesRequest(note=witness.sign(other.body()))
            )
        )
        assert isinstance(error, InvalidArgument) and "signed no checkpoint" in error.message
        # garbage
        error = _refused(
            lambda: stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=b"\xff\n\n"))
        )
        assert isinstance(error, InvalidArgument) and error.field is not None
        # the real witness's cosignature is kept, with the log's own signature and a junk line
        good = witness.countersign(signed.note)
        answer = stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=good))
        held = [line for line in answer.note.decode().split("\n") if "/witness " in line]
        assert len(held) == 1
        again = stub.AddCosignatures(transparency_pb2.AddCosignaturesRequest(note=good))
        assert again.note == answer.note  # idempotent
        # served with the checkpoint (until a newer one is signed) and verifiable by anyone
        # holding the roster
        verifiers = [roster.log_verifier(NODE_ORIGIN), *roster.witness_verifiers()]
        opened = open_note(answer.note, verifiers)
        assert set(opened.signatures) == {NODE_ORIGIN, witness.name}
        assert isinstance(roster.witnesses[witness.name], CosignatureVerifier)
    # stored beside the log, private
    stored = fed.state_dir / NODE / "audit.jsonl.cosignatures"
    assert stored.stat().st_mode & 0o777 == 0o600
    records = [json.loads(line) for line in stored.read_text().splitlines()]
    assert len(records) == 1 and records[0]["size"] == checkpoint.size


def _new_key():  # type: ignore[no-untyped-def]
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate()


def _auditor_metadata(fed: Federation, role: Role = Role.AUDITOR) -> tuple[tuple[str, str], ...]:
    token = fed.token(AUDITOR, role=role, purposes=["audit"])
    return tuple(bearer_metadata(token))


def test_an_auditor_reads_the_coordinators_log_and_a_nodes_log_relayed(
    fed: Federation, roster: LogRoster
) -> None:
    metadata = _auditor_metadata(fed)
    channel, stub = _coordinator_stub(fed, _files(fed, PeerRole.REQUESTER, AUDITOR))
    with channel:
        # every allowed read of the auditor is an audited decision in the coordinator's log:
        # enough of them make the coordinator sign a checkpoint
        own = _wait_for_checkpoint(
            stub, roster, COORDINATOR_ORIGIN, at_least=CHECKPOINT_EVERY, metadata=metadata
        )
        proof = stub.GetInclusionProof(
            transparency_pb2.GetInclusionProofRequest(
                origin=COORDINATOR_ORIGIN, leaf_index=own.size - 1, tree_size=own.size
            ),
            metadata=metadata,
        )
        merkle.verify_inclusion(
            own.size - 1, own.size, merkle.leaf_hash(proof.entry), proof.hashes, own.root_hash
        )
        entry = json.loads(proof.entry)
        assert entry["requester"] == AUDITOR and entry["purpose"] == "transparency_log"
        # a node's log, relayed by origin
        _stranger_calls(fed, 1)
        node = _wait_for_checkpoint(stub, roster, NODE_ORIGIN, at_least=1, metadata=metadata)
        entries = stub.GetEntries(
            transparency_pb2.GetEntriesRequest(origin=NODE_ORIGIN, start=0, end=node.size),
            metadata=metadata,
        )
        assert merkle.root_of(list(entries.entries)) == node.root_hash
        relayed = stub.GetInclusionProof(
            transparency_pb2.GetInclusionProofRequest(
                origin=NODE_ORIGIN, leaf_index=0, tree_size=node.size
            ),
            metadata=metadata,
        )
        merkle.verify_inclusion(
            0, node.size, merkle.leaf_hash(relayed.entry), relayed.hashes, node.root_hash
        )
        # a node's bounds error comes back through the relay, naming the field
        error = _refused(
            lambda: stub.GetEntries(
                transparency_pb2.GetEntriesRequest(origin=NODE_ORIGIN, start=0, end=10**9),
                metadata=metadata,
            )
        )
        assert isinstance(error, InvalidArgument) and error.field == "end"
        # an origin the coordinator does not know
        error = _refused(
            lambda: stub.GetCheckpoint(
                transparency_pb2.GetCheckpointRequest(origin="samr.node.osmanthus/audit"),
                metadata=metadata,
            )
        )
        assert isinstance(error, NotFound) and error.field == "origin"


def test_the_platform_operator_reads_the_coordinators_own_log_only(
    fed: Federation, roster: LogRoster, list_officers: dict[str, TlsFiles]
) -> None:
    channel, stub = _coordinator_stub(fed, _files(fed, PeerRole.OPERATOR, "operator"))
    with channel:
        _verified(
            roster, COORDINATOR_ORIGIN, stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest())
        )
        error = _refused(
            lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest(origin=NODE_ORIGIN))
        )
        assert isinstance(error, PermissionDenied)
    # a department's officer holds an operator certificate too, but reads its node's log there
    channel, stub = _coordinator_stub(fed, list_officers[NODE])
    with channel:
        error = _refused(lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()))
        assert isinstance(error, PermissionDenied)


def test_a_requester_the_policy_does_not_grant_is_refused_and_audited(fed: Federation) -> None:
    log = fed.state_dir / "coordinator" / "audit.jsonl"
    before = len(log.read_text().splitlines())
    metadata = _auditor_metadata(fed, Role.BANK)
    channel, stub = _coordinator_stub(fed, _files(fed, PeerRole.REQUESTER, AUDITOR))
    with channel:
        error = _refused(
            lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest(), metadata=metadata)
        )
        assert isinstance(error, PermissionDenied)
        assert "ReadAuditLog" in error.message
        # no token at all
        error = _refused(lambda: stub.GetCheckpoint(transparency_pb2.GetCheckpointRequest()))
        assert error.__class__.__name__ == "Unauthenticated"
    refusals = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    assert [e["decision"] for e in refusals] == ["deny", "deny"]
    assert refusals[0]["requester"] == AUDITOR
    assert all(e["purpose"] == "transparency_log" for e in refusals)


def test_the_sync_job_carries_checkpoints_but_reads_no_entries(
    fed: Federation, roster: LogRoster
) -> None:
    """The attack: the sync job's token, granted ReadAuditLog to carry checkpoints, replays
    every department's log (who asked about whom across the city); an auditor's read grant
    writes cosignatures. The policy decides per method (context.method)."""
    log = fed.state_dir / "coordinator" / "audit.jsonl"
    sync = _auditor_metadata(fed, Role.SYNC_JOB)
    auditor = _auditor_metadata(fed)
    channel, stub = _coordinator_stub(fed, _files(fed, PeerRole.REQUESTER, AUDITOR))
    with channel:
        # what carrying checkpoints takes is allowed
        head = _verified(
            roster,
            NODE_ORIGIN,
            stub.GetCheckpoint(
                transparency_pb2.GetCheckpointRequest(origin=NODE_ORIGIN), metadata=sync
            ),
        )
        stub.GetConsistencyProof(
            transparency_pb2.GetConsistencyProofRequest(
                origin=NODE_ORIGIN, first_size=0, second_size=head.size
            ),
            metadata=sync,
        )
        before = len(log.read_text().splitlines())
        for origin in (NODE_ORIGIN, COORDINATOR_ORIGIN):
            error = _refused(
                lambda origin=origin: stub.GetEntries(
                    transparency_pb2.GetEntriesRequest(origin=origin, start=0, end=1),
                    metadata=sync,
                )
            )
            assert isinstance(error, PermissionDenied), error
            assert "ReadAuditLog" in error.message
        error = _refused(
            lambda: stub.GetInclusionProof(
                transparency_pb2.GetInclusionProofRequest(
                    origin=NODE_ORIGIN, leaf_index=0, tree_size=head.size
                ),
                metadata=sync,
            )
        )
        assert isinstance(error, PermissionDenied), error
        # an auditor reads entries but writes no cosignatures (not even junk reaches the log)
        stub.GetEntries(
            transparency_pb2.GetEntriesRequest(origin=NODE_ORIGIN, start=0, end=1),
            metadata=auditor,
        )
        error = _refused(
            lambda: stub.AddCosignatures(
                transparency_pb2.AddCosignaturesRequest(origin=NODE_ORIGIN, note=b"x"),
                metadata=auditor,
            )
        )
        assert isinstance(error, PermissionDenied), error
        # the sync job's hand-back reaches the node (which refuses junk on its own grounds)
        error = _refused(
            lambda: stub.AddCosignatures(
                transparency_pb2.AddCosignaturesRequest(origin=NODE_ORIGIN, note=b"x"),
                metadata=sync,
            )
        )
        assert not isinstance(error, PermissionDenied), error
    decided = [json.loads(line) for line in log.read_text().splitlines()[before:]]
    denied = [(e["extra"]["method"], e["decision"]) for e in decided if e["decision"] == "deny"]
    assert denied == [
        ("GetEntries", "deny"),
        ("GetEntries", "deny"),
        ("GetInclusionProof", "deny"),
        ("AddCosignatures", "deny"),
    ]
