"""GetEntries pages stop at a byte budget, so a log of long batch lines replays through the relay.

Real components: a department node's log (a real AuditLog whose lines are batch chunks naming
10,000 salted subject hashes each, as the node writes them), served by TransparencyServicer over
mutual TLS with the node's certificate; the coordinator's relay to it through a real NodePool
(the coordinator's certificate and channel options); the coordinator-side TransparencyServicer
relaying by origin; and sdk.transparency.TransparencyClient reading every entry through it.

The attack: a page of batch lines is megabytes (1,000 lines of ~680 KB would be 680 MB, built in
memory); past gRPC's default 4 MiB the coordinator's relay could not receive it, so an auditor
could not replay a node's log through the coordinator. Now a page ends at
MAX_ENTRIES_RESPONSE_BYTES and the reader continues from where it stopped.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint
from coordinator.nodes import NodePool
from osmanthus.core import logserver, merkle
from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.errors import FailedPrecondition
from osmanthus.core.logkeys import log_origin
from osmanthus.core.logserver import (
    TRANSPARENCY_SERVICE_NAME,
    LocalLog,
    TransparencyServicer,
    open_local_log,
)
from osmanthus.core.policy import AUDIT_LOG_METHODS
from osmanthus.core.server import Caller, RunningServer, start_server
from osmanthus.core.signednote import NoteSigner
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import DepartmentId
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire.node import MAX_CHUNK_SUBJECTS
from osmanthus.core.wire.transparency import MAX_ENTRIES_RESPONSE_BYTES
from osmanthus.v1 import transparency_pb2, transparency_pb2_grpc
from sdk.transparency import TransparencyClient

pytestmark = pytest.mark.slow

NODE = "court"
ORIGIN = log_origin(PeerRole.NODE, NODE)
#: batch chunk lines in the log: together several times gRPC's default 4 MiB
CHUNKS = 8


def _allow(caller: Caller, method: str, origin: str) -> None:
    """These tests are about pages, not about who may read (test_transparency_service.py)."""


def _chunk_entry(log: AuditLog, number: int, subjects: int = MAX_CHUNK_SUBJECTS) -> AuditEntry:
    ids = [f"9132050{number:03d}{i:08d}" for i in range(subjects)]
    return AuditEntry(
        time=datetime(2026, 12, 7, 10, 0, tzinfo=UTC),
        query_id=f"q_batch_{number}",
        requester="bank-1",
        purpose="credit_rescoring",
        consent_id="",
        policy_hash="ab" * 32,
        decision="allow",
        reason="permitted by central-batch-rescoring",
        shape="total",
        subject_hash="",
        subject_hashes=tuple(log.subject_hashes(ids)),
        extra={"chunk": number},
    )


@dataclass
class Relay:
    node: RunningServer
    coordinator: RunningServer
    pool: NodePool
    local: LocalLog
    lines: list[bytes]
    certs: Path

    def client(self) -> TransparencyClient:
        tls = TlsFiles.from_cert_paths(
            cert_paths(self.certs, role=PeerRole.OPERATOR, name="operator")
        )
        return TransparencyClient.connect(
            f"127.0.0.1:{self.coordinator.port}", tls=tls, server_name=COORDINATOR_SERVER_NAME
        )


def _files(certs: Path, role: PeerRole, name: str) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(certs, role=role, name=name))


def _serve(servicer: TransparencyServicer, tls: TlsFiles) -> RunningServer:
    return start_server(
        register=[
            lambda server: transparency_pb2_grpc.add_TransparencyServiceServicer_to_server(
                servicer, server
            )
        ],
        service_names=[TRANSPARENCY_SERVICE_NAME],
        listen="127.0.0.1:0",
        tls=tls,
    )


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, platform_certs: Path) -> Iterator[Relay]:
    state = tmp_path_factory.mktemp("pages")
    audit = AuditLog(path=state / "audit.jsonl", salt=secrets.token_bytes(32))
    for number in range(CHUNKS):
        audit.append(_chunk_entry(audit, number))
    lines = (state / "audit.jsonl").read_bytes().splitlines()
    signer = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
    local = open_local_log(log=audit, signer=signer, origin=ORIGIN, roster=None)
    node = _serve(
        TransparencyServicer(local=local, authorize=_allow),
        _files(platform_certs, PeerRole.NODE, NODE),
    )
    pool = NodePool(
        [NodeEndpoint(DepartmentId(NODE), f"127.0.0.1:{node.port}")],
        tls=_files(platform_certs, PeerRole.COORDINATOR, "coordinator"),
    )

    def forward(origin: str, method: str, request: Any) -> Any:
        assert origin == ORIGIN
        return pool.transparency_call(DepartmentId(NODE), method, request, deadline_s=30)

    coordinator = _serve(
        TransparencyServicer(local=None, authorize=_allow, relay=forward),
        _files(platform_certs, PeerRole.COORDINATOR, "coordinator"),
    )
    yield Relay(node, coordinator, pool, local, lines, platform_certs)
    coordinator.stop(grace=0.5)
    pool.close()
    node.stop(grace=0.5)
    local.close()
    audit.close()


def test_the_transparency_methods_are_the_policys(relay: Relay) -> None:
    """context.method takes exactly the servicer's method names: a permit written for them
    covers every call, and no call goes undecided."""
    assert AUDIT_LOG_METHODS == logserver.METHODS


def test_a_log_of_batch_lines_replays_through_the_relay_a_page_at_a_time(relay: Relay) -> None:
    total = sum(len(line) for line in relay.lines)
    # the attack's premise: one page of these lines is past every limit on the way
    assert len(relay.lines[0]) > 600_000 and total > 4 * (1 << 20)
    with relay.client() as client:
        served = list(client.entries(0, CHUNKS, origin=ORIGIN))
    assert served == relay.lines
    assert merkle.root_of(served) == relay.local.latest().signed.checkpoint.root_hash


def test_every_page_fits_under_the_servers_receive_limit(relay: Relay) -> None:
    channel = secure_channel(
        f"127.0.0.1:{relay.coordinator.port}",
        _files(relay.certs, PeerRole.OPERATOR, "operator"),
        server_name=COORDINATOR_SERVER_NAME,
    )
    with channel:
        stub = transparency_pb2_grpc.TransparencyServiceStub(channel)
        position = 0
        while position < CHUNKS:
            page = stub.GetEntries(
                transparency_pb2.GetEntriesRequest(origin=ORIGIN, start=position, end=CHUNKS),
                timeout=30,
            )
            assert page.start == position and len(page.entries) >= 1
            assert page.ByteSize() <= MAX_ENTRIES_RESPONSE_BYTES <= MAX_RECEIVE_BYTES
            assert list(page.entries) == relay.lines[position : position + len(page.entries)]
            position += len(page.entries)
    # short lines still come many to a page
    lines, _ = relay.local.entries(0, CHUNKS, max_bytes=10 * MAX_ENTRIES_RESPONSE_BYTES)
    assert lines == relay.lines


def test_a_line_longer_than_a_response_is_refused_naming_the_entry(relay: Relay) -> None:
    """A line no response can carry fails clearly (the reader learns which entry), and the
    entries around it are still served."""
    first = len(relay.lines[0])
    with pytest.raises(FailedPrecondition, match=r"entry 2 \(line 3 of the log\) is longer"):
        relay.local.entries(2, CHUNKS, max_bytes=first // 2)
    # through the relay, the node's refusal comes back as it is
    channel = secure_channel(
        f"127.0.0.1:{relay.node.port}",
        _files(relay.certs, PeerRole.COORDINATOR, "coordinator"),
        server_name=node_server_name(NODE),
    )
    with channel:
        stub = transparency_pb2_grpc.TransparencyServiceStub(channel)
        page = stub.GetEntries(transparency_pb2.GetEntriesRequest(start=3, end=5), timeout=30)
    assert list(page.entries)[:1] == relay.lines[3:4]


def test_a_huge_line_is_refused_not_read_whole(tmp_path: Path) -> None:
    """A line of many megabytes (written by a misbehaving log holder) is refused by entry,
    read no further than the budget."""
    audit = AuditLog(path=tmp_path / "audit.jsonl", salt=secrets.token_bytes(32))
    try:
        audit.append(_chunk_entry(audit, 0, subjects=3))
        audit.append(_chunk_entry(audit, 1, subjects=MAX_CHUNK_SUBJECTS))
        audit.append(_chunk_entry(audit, 2, subjects=3))
        signer = NoteSigner(name=ORIGIN, private_key=Ed25519PrivateKey.generate())
        local = open_local_log(log=audit, signer=signer, origin=ORIGIN, roster=None)
        try:
            small = 100_000
            # the page before the long line ends early
            lines, size = local.entries(0, 3, max_bytes=small)
            assert len(lines) == 1 and size == 3
            with pytest.raises(FailedPrecondition, match=r"entry 1 \(line 2") as refused:
                local.entries(1, 3, max_bytes=small)
            assert refused.value.field == "start"
            # the entry after it is served
            assert len(local.entries(2, 3, max_bytes=small)[0]) == 1
        finally:
            local.close()
    finally:
        audit.close()
