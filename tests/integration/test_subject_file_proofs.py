"""Who asked about me, proven over mutual TLS: a real department node with its log key signs
checkpoints in the background (never on request), the coordinator's witness key cosigns one
and hands the cosignature back (AddCosignatures, as coordinator.witnessing does), and the node
sends each entry's logged line and inclusion proof to its newest witnessed checkpoint in its
sealed part. The portal's check (osmanthus.core.auditproofs.verify_part, with the roster
`certs init` wrote) marks the entries verified only then (signed by the department only
before), catches a log line edited after it was signed, and refuses a checkpoint under a key the
roster does not pin. Many requests for a subject's file sign no checkpoint.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from certs import PeerRole, cert_paths
from node.server import NodeConfig, start_node
from node.store import RecordStore
from osmanthus.core.auditproofs import EntryStatus, verify_part
from osmanthus.core.checkpoints import history_path
from osmanthus.core.clock import china_today
from osmanthus.core.ids import make_resident_id
from osmanthus.core.logkeyfiles import read_signer
from osmanthus.core.logkeys import (
    LOG_KEY_FILE,
    ROSTER_FILE,
    WITNESS_KEY_FILE,
    LogRoster,
    log_origin,
    witness_name,
)
from osmanthus.core.peers import COORDINATOR_NAME, peer_dir
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record
from osmanthus.core.server import RunningServer
from osmanthus.core.signednote import CosignatureSigner, NoteSigner, NoteVerifier
from osmanthus.core.subjectfile import SubjectFile
from osmanthus.core.subjectpart import load_trusted_cas, open_part
from osmanthus.core.subjectseal import SealContext, new_nonce, public_bytes, seal_fingerprint
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.core.wire.node import sealed_part_from_proto
from osmanthus.v1 import (
    common_pb2,
    node_pb2,
    node_pb2_grpc,
    transparency_pb2,
    transparency_pb2_grpc,
)
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import restricted_catalogue
from tests.waiting import wait_until

DEPARTMENT = "tax"
ORIGIN = log_origin(PeerRole.NODE, DEPARTMENT)
COORDINATOR_WITNESS = witness_name(PeerRole.COORDINATOR, COORDINATOR_NAME)
TIMEOUT_S = 30.0
TODAY = china_today()
ALICE = make_resident_id(region="320505", birth=date(1983, 5, 6), sequence=173)


@dataclass(frozen=True)
class Node:
    server: RunningServer
    state_dir: Path

    @property
    def audit_path(self) -> Path:
        return self.state_dir / "audit.jsonl"


@dataclass(frozen=True)
class Device:
    sealing_key: X25519PrivateKey
    token: str


def _start_node(
    base: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths, *, every: int
) -> Node:
    """The tax node, checkpointing every `every` entries (and otherwise once an hour: never
    within a test)."""
    catalogue = restricted_catalogue([DEPARTMENT, "court", "psb", "civility", "blood"])
    db = base / "tax.duckdb"
    with RecordStore(db, department=DepartmentId(DEPARTMENT)) as store:
        store.insert_records(
            [
                Record(
                    record_id="P-1",
                    subject_kind=SubjectKind.PERSON,
                    subject_id=ALICE,
                    kind="tax_arrears",
                    quantity=1,
                    event_start=TODAY - timedelta(days=100),
                    event_end=None,
                    status="active",
                )
            ]
        )
    config = NodeConfig(
        department=DEPARTMENT,
        db=db,
        tls=TlsFiles.from_cert_paths(
            cert_paths(platform_certs, role=PeerRole.NODE, name=DEPARTMENT)
        ),
        issuer_public_key=issuer_keys.public,
        state_dir=base / "state",
        table_window_bits=6,
        consent_public_key=platform_certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
        # the key `certs init` made for the tax node's log, which the roster pins
        log_key=peer_dir(platform_certs, role=PeerRole.NODE, name=DEPARTMENT) / LOG_KEY_FILE,
        log_roster=platform_certs / ROSTER_FILE,
        checkpoint_every=every,
        checkpoint_interval_s=3600.0,
    )
    server = start_node(config, catalogue=catalogue)
    return Node(server=server, state_dir=config.state_dir)


@pytest.fixture(scope="module")
def node(
    tmp_path_factory: pytest.TempPathFactory, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> Iterator[Node]:
    """The tax node, signing a checkpoint within a second of every new entry."""
    started = _start_node(
        tmp_path_factory.mktemp("subject-file-proofs"), platform_certs, issuer_keys, every=1
    )
    try:
        yield started
    finally:
        started.server.stop(grace=0.5)


@pytest.fixture(scope="module")
def device(issuer_keys: IssuerKeyPaths, requester_keys: dict[str, RequesterKeys]) -> Device:
    key = X25519PrivateKey.generate()
    token = TokenIssuer.from_file(issuer_keys.private).issue(
        requester="portal-1",
        role=Role.PORTAL,
        purposes=["self_query"],
        key_fingerprint=requester_keys["portal-1"].fingerprint,
        ttl=timedelta(minutes=30),
        seal_fingerprint=seal_fingerprint(public_bytes(key)),
    )
    return Device(sealing_key=key, token=token)


@pytest.fixture(scope="module")
def roster(platform_certs: Path) -> LogRoster:
    return LogRoster.load(platform_certs / ROSTER_FILE)


def _file(node: Node, device: Device, platform_certs: Path) -> SubjectFile:
    """Alice's part from the tax node, asked as the coordinator asks and opened as the portal
    opens it (signature, seal, strict schema)."""
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    query_id, nonce = "sf-" + secrets.token_hex(8), new_nonce()
    target = f"127.0.0.1:{node.server.port}"
    with secure_channel(target, tls, server_name=node_server_name(DEPARTMENT)) as channel:
        answer = node_pb2_grpc.NodeServiceStub(channel).SubjectFile(
            node_pb2.NodeSubjectFileRequest(
                query_id=query_id,
                subject_kind=common_pb2.SUBJECT_KIND_PERSON,
                subject_id=ALICE,
                purpose="self_query",
                recipient_key=public_bytes(device.sealing_key),
                nonce=nonce,
            ),
            timeout=TIMEOUT_S,
            metadata=(("authorization", f"Bearer {device.token}"),),
        )
    return open_part(
        part=sealed_part_from_proto(answer),
        expected=SealContext(
            query_id=query_id,
            source=DEPARTMENT,
            subject_kind="person",
            subject_id=ALICE,
            nonce=nonce,
        ),
        sealing_key=device.sealing_key,
        trusted_cas=load_trusted_cas(platform_certs / "ca.pem"),
        now=datetime.now(UTC),
    )


def _coordinator_channel(node: Node, platform_certs: Path) -> Any:
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    target = f"127.0.0.1:{node.server.port}"
    return secure_channel(target, tls, server_name=node_server_name(DEPARTMENT))


def _witness(node: Node, platform_certs: Path, *, covering: int) -> int:
    """As the coordinator's witness: wait for the node's latest checkpoint to cover `covering`
    entries, cosign it with the coordinator's witness key and hand the cosignature back. The
    size cosigned."""
    witness = read_signer(
        CosignatureSigner,
        platform_certs / "coordinator" / WITNESS_KEY_FILE,
        expected_name=COORDINATOR_WITNESS,
        field="witness_key",
    )
    with _coordinator_channel(node, platform_certs) as channel:
        logs = transparency_pb2_grpc.TransparencyServiceStub(channel)
        latest: list[transparency_pb2.SignedCheckpoint] = []

        def covered() -> bool:
            latest[:] = [
                logs.GetCheckpoint(transparency_pb2.GetCheckpointRequest(), timeout=TIMEOUT_S)
            ]
            return latest[0].tree_size >= covering

        wait_until(covered, what=f"the tax node's checkpoint to cover {covering} entries")
        logs.AddCosignatures(
            transparency_pb2.AddCosignaturesRequest(
                origin=ORIGIN, note=witness.countersign(latest[0].note)
            ),
            timeout=TIMEOUT_S,
        )
    return int(latest[0].tree_size)


def _history(node: Node) -> int:
    """Checkpoint records in the node's `<log>.checkpoints`."""
    return len(history_path(node.audit_path).read_bytes().splitlines())


def test_entries_are_verified_once_a_witness_cosigned_the_nodes_checkpoint(
    node: Node, device: Device, platform_certs: Path, roster: LogRoster
) -> None:
    first = _file(node, device, platform_certs)
    assert first.audit[-1].leaf_index is not None
    newest = first.audit[-1].leaf_index + 1
    # signed by the node only (its key, no witness yet): shown, never as verified
    wait_until(
        lambda: history_path(node.audit_path).exists() and _history(node) >= 2,
        what="the tax node's background checkpoint",
    )
    part = _file(node, device, platform_certs)
    check = verify_part(part, roster=roster)
    assert check.problem is None, check.problem
    assert EntryStatus.VERIFIED not in check.statuses and EntryStatus.SIGNED in check.statuses
    assert part.subject_hash and len(part.subject_hash) == 64
    cosigned = _witness(node, platform_certs, covering=newest)
    part = _file(node, device, platform_certs)
    assert part.checkpoint.startswith(ORIGIN + "\n")
    assert COORDINATOR_WITNESS in part.checkpoint
    check = verify_part(part, roster=roster)
    assert check.problem is None, check.problem
    assert check.witnesses == (COORDINATOR_WITNESS,) and check.witnessed
    assert check.checkpoint is not None and check.checkpoint.size == cosigned
    for line, status in zip(part.audit, check.statuses, strict=True):
        assert line.leaf_index is not None
        expected = EntryStatus.VERIFIED if line.leaf_index < cosigned else EntryStatus.PENDING
        assert status is expected, (line.leaf_index, cosigned, status)
    # this very request is newer than any checkpoint a witness saw: pending
    assert check.statuses[-1] is EntryStatus.PENDING
    assert check.statuses[: len(first.audit)] == (EntryStatus.VERIFIED,) * len(first.audit)


def test_subject_file_requests_sign_no_checkpoint(
    tmp_path: Path, platform_certs: Path, issuer_keys: IssuerKeyPaths, device: Device
) -> None:
    """Regression: each request for a subject's file used to sign a checkpoint covering it (an
    Ed25519 signature and fsyncs per request, per department). N requests now add no record to
    `<log>.checkpoints`; the entries stay pending until the node's own cadence signs one."""
    quiet = _start_node(tmp_path, platform_certs, issuer_keys, every=10_000)
    try:
        before = _history(quiet)
        for _ in range(5):
            part = _file(quiet, device, platform_certs)
        assert _history(quiet) == before == 1
        assert len(part.audit) == 5
        check = verify_part(part, roster=LogRoster.load(platform_certs / ROSTER_FILE))
        assert set(check.statuses) == {EntryStatus.PENDING}
    finally:
        quiet.server.stop(grace=0.5)


def test_a_checkpoint_under_a_key_the_roster_does_not_pin_is_refused(
    node: Node, device: Device, platform_certs: Path, roster: LogRoster
) -> None:
    part = _file(node, device, platform_certs)
    other = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    wrong = roster.with_log(NoteVerifier.from_key_text(other.verifier_key))
    check = verify_part(part, roster=wrong)
    assert set(check.statuses) == {EntryStatus.FAILED}
    assert check.problem is not None and "checkpoint does not verify" in check.problem


def test_a_log_line_edited_after_signing_is_caught(
    node: Node, device: Device, platform_certs: Path, roster: LogRoster
) -> None:
    """The attack: the department rewrites, in its own log, who asked (same length, so the
    rest of the log stays in place) after a checkpoint signed it. Its next part shows the
    edited line, with the proof from its tree: the portal does not show it as verified."""
    first = _file(node, device, platform_certs)
    target = first.audit[0]
    assert target.leaf_index is not None and '"portal-1"' in target.leaf
    last = first.audit[-1].leaf_index
    assert last is not None and last > target.leaf_index
    _witness(node, platform_certs, covering=last + 1)
    data = node.audit_path.read_bytes()
    lines = data.split(b"\n")
    original = lines[target.leaf_index]
    assert original == target.leaf.encode()
    edited = original.replace(b'"portal-1"', b'"portal-9"', 1)
    offset = sum(len(line) + 1 for line in lines[: target.leaf_index])
    with node.audit_path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(edited)
    try:
        part = _file(node, device, platform_certs)
        shown = part.audit[0]
        assert shown.leaf_index == target.leaf_index and shown.requester == "portal-9"
        check = verify_part(part, roster=roster)
        assert check.statuses[0] is EntryStatus.FAILED
        assert check.problem is not None and f"leaf {target.leaf_index}" in check.problem
        assert ALICE not in check.problem
        # the other entries are still proven: only the edited one is refused
        assert EntryStatus.VERIFIED in check.statuses[1:]
        assert set(check.statuses[1:]) <= {EntryStatus.VERIFIED, EntryStatus.PENDING}
    finally:
        with node.audit_path.open("r+b") as handle:
            handle.seek(offset)
            handle.write(original)
