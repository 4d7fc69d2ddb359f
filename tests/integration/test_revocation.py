"""Revocation through a running federation: the platform CA's CRL and the issuer's deny list.

Each test runs its own small federation (five enterprise departments and a coordinator, mutual
TLS on loopback) that follows a CRL and a deny list in a copy of the session's platform CA, so
that what a test revokes stays in that test. Every reload is waited for on the servers' own
counters (the CRL number or deny list sequence in force, or the count of files refused), never
for a fixed time; the poll interval is short so the wait is too.
"""

from __future__ import annotations

import csv
import datetime
import logging
import queue
import shutil
import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths
from certs.revocation import revoke_certificate
from coordinator.config import NodeEndpoint
from osmanthus.core import signing
from osmanthus.core.crl import CRL_FILE
from osmanthus.core.denylist import DenyList, deny_tokens, seal_deny_list, write_deny_list
from osmanthus.core.errors import Unauthenticated
from osmanthus.core.server import RunningServer
from osmanthus.core.tls import (
    COORDINATOR_SERVER_NAME,
    TlsFiles,
    node_server_name,
    secure_channel,
    server_credentials,
)
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import DepartmentId, Role
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import (
    common_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
)
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import wait_until

#: the enterprise departments of the session's platform, one node each
DEPARTMENTS = ("court", "tax", "samr", "eco", "hrss")
AGENCY = "agency-1"
#: how often the servers look at their CRL and deny list here
POLL_S = 0.1


@pytest.fixture
def certs(tmp_path: Path, platform_certs: Path) -> Path:
    """This test's copy of the platform CA: same key and certificates, its own CRL."""
    copy = tmp_path / "certs"
    shutil.copytree(platform_certs, copy)
    return copy


@pytest.fixture
def deny_list(tmp_path: Path, issuer_keys: IssuerKeyPaths) -> Path:
    """An empty deny list signed by the session's token issuer."""
    path = tmp_path / "deny.json"
    write_deny_list(path, private_key=_issuer_key(issuer_keys), issuer="osmanthus-platform")
    return path


@pytest.fixture
def federation(
    tmp_path: Path,
    certs: Path,
    deny_list: Path,
    seeded: SeedReport,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    fed = start_federation(
        tmp_path / "federation",
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        crl=certs / CRL_FILE,
        token_deny_list=deny_list,
        revocation_poll_s=POLL_S,
    )
    yield fed
    stop_federation(fed)


@contextmanager
def _agency(federation: Federation, *, issuer: TokenIssuer | None = None) -> Iterator[Client]:
    keys = federation.keys[AGENCY]
    token = (issuer or federation.issuer).issue(
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        purposes=["credit_report"],
        key_fingerprint=keys.fingerprint,
        ttl=datetime.timedelta(minutes=30),
    )
    with Client(
        federation.target,
        tls=federation.tls(AGENCY),
        token=token,
        keys=keys,
        catalogue=federation.catalogue,
    ) as client:
        client.register_key()
        yield client


def _firm(federation: Federation, index: int) -> str:
    with federation.data.subjects_file.open() as f:
        firms = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    return firms[index]


def _servers(federation: Federation) -> list[RunningServer]:
    return [federation.coordinator.server, *federation.nodes.values()]


def _wait_for_crl(federation: Federation, number: int) -> None:
    """Until the coordinator and every node have CRL `number` in force."""

    def numbers() -> list[int]:
        return [s.revocation.status.number for s in _servers(federation) if s.revocation]

    wait_until(
        lambda: numbers() == [number] * (len(DEPARTMENTS) + 1),
        what=lambda: f"CRL number {number} in force everywhere (in force: {numbers()})",
    )


def _wait_for_crl_rejections(federation: Federation, count: int) -> None:
    def rejected() -> list[int]:
        return [s.revocation.status.rejected for s in _servers(federation) if s.revocation]

    wait_until(
        lambda: rejected() == [count] * (len(DEPARTMENTS) + 1),
        what=lambda: f"{count} CRL file(s) rejected by every server (rejected: {rejected()})",
    )


def _wait_for_deny_list(federation: Federation, *, sequence: int = 0, rejected: int = 0) -> None:
    def seen() -> list[tuple[int, int]]:
        return [
            (s.token_denial.status.sequence, s.token_denial.status.rejected)
            for s in _servers(federation)
            if s.token_denial
        ]

    def done() -> bool:
        return (
            all((sequence == 0 or seq == sequence) and rej >= rejected for seq, rej in seen())
            and len(seen()) == len(DEPARTMENTS) + 1
        )

    wait_until(done, what=lambda: f"deny list sequence {sequence} / {rejected} rejected: {seen()}")


def _issuer_key(issuer_keys: IssuerKeyPaths) -> Ed25519PrivateKey:
    return signing.load_private_key(issuer_keys.private, what="token issuer key")


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING
    ]


# --- certificates ---------------------------------------------------------------------------


def test_a_revoked_requester_is_refused_on_its_next_call_without_a_restart(
    federation: Federation, certs: Path
) -> None:
    agency_cert = cert_paths(certs, role=PeerRole.REQUESTER, name=AGENCY).cert
    with _agency(federation) as client:
        assert client.enterprise_score(_firm(federation, 0), purpose="credit_report").grade

        entry, crl = revoke_certificate(certs, cert=agency_cert, reason="key_compromise")
        _wait_for_crl(federation, crl.number)

        # the same client, on its open connection: refused at its next call
        with pytest.raises(Unauthenticated) as refused:
            client.enterprise_score(_firm(federation, 1), purpose="credit_report")
    message = str(refused.value)
    assert f"requester '{AGENCY}'" in message and "revoked" in message
    assert f"0x{entry.serial:x}" in message and "key_compromise" in message

    # a node refuses the revoked certificate too, before it looks at what is asked
    channel = secure_channel(
        f"127.0.0.1:{federation.nodes['tax'].port}",
        federation.tls(AGENCY),
        server_name=node_server_name("tax"),
    )
    with channel, pytest.raises(grpc.RpcError) as at_node:
        node_pb2_grpc.NodeServiceStub(channel).Contribute(node_pb2.ContributeRequest(), timeout=30)
    assert at_node.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "revoked" in (at_node.value.details() or "")


def test_a_revoked_node_is_refused_by_the_coordinator_with_the_reason(
    federation: Federation, certs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    node_cert = cert_paths(certs, role=PeerRole.NODE, name="tax").cert
    with _agency(federation) as client:
        # a full answer first: the coordinator holds an open connection to every node
        full = client.enterprise_score(_firm(federation, 0), purpose="credit_report")
        assert {s.department for s in full.answered} == set(DEPARTMENTS)

        with caplog.at_level(logging.WARNING, logger="coordinator.nodes"):
            entry, crl = revoke_certificate(certs, cert=node_cert, reason="key_compromise")
            _wait_for_crl(federation, crl.number)
            # another firm: a partial answer about the first would be refused as a difference
            partial = client.enterprise_score(_firm(federation, 1), purpose="credit_report")

    assert {s.department for s in partial.answered} == set(DEPARTMENTS) - {"tax"}
    [missing] = partial.missing
    assert missing.department == "tax"
    assert "revoked" in missing.detail and f"0x{entry.serial:x}" in missing.detail
    assert any("department tax not asked" in w for w in _warnings(caplog, "coordinator.nodes"))


def test_a_node_revoked_before_the_coordinator_first_connects_is_never_asked(
    federation: Federation, certs: Path
) -> None:
    # the coordinator has not connected to any node yet: it connects, sees the certificate and
    # sends nothing over that connection
    _, crl = revoke_certificate(certs, cert=cert_paths(certs, role=PeerRole.NODE, name="tax").cert)
    _wait_for_crl(federation, crl.number)
    audit = federation.state_dir / "tax" / "audit.jsonl"
    before = audit.read_bytes() if audit.exists() else b""
    with _agency(federation) as client:
        partial = client.enterprise_score(_firm(federation, 0), purpose="credit_report")
    assert [m.department for m in partial.missing] == ["tax"]
    assert "revoked" in partial.missing[0].detail
    # tax never saw the request: it would have written its decision to its audit log
    assert (audit.read_bytes() if audit.exists() else b"") == before


def test_an_open_stream_of_a_revoked_requester_ends_at_its_next_message(
    federation: Federation, certs: Path
) -> None:
    # the attack: a batch stream opened before the revocation keeps being served after it
    sync = "sync-1"
    client = federation.client(sync, role=Role.SYNC_JOB, purposes=["credit_rescoring"])
    client.register_key()
    token = federation.token(sync, role=Role.SYNC_JOB, purposes=["credit_rescoring"])
    chunks: queue.Queue[coordinator_pb2.BatchQueryRequest | None] = queue.Queue()

    def requests() -> Iterator[coordinator_pb2.BatchQueryRequest]:
        yield coordinator_pb2.BatchQueryRequest(
            header=coordinator_pb2.BatchHeader(
                subject_kind=common_pb2.SUBJECT_KIND_ENTERPRISE,
                shape=common_pb2.SHAPE_TOTAL,
                purpose="credit_rescoring",
                public_key=common_pb2.PaillierPublicKey(n=federation.keys[sync].public.to_bytes()),
            )
        )
        while (chunk := chunks.get(timeout=60)) is not None:
            yield chunk

    def chunk(number: int) -> coordinator_pb2.BatchQueryRequest:
        ids = [_firm(federation, 2 * number), _firm(federation, 2 * number + 1)]
        return coordinator_pb2.BatchQueryRequest(
            chunk=coordinator_pb2.SubjectChunk(chunk=number, subject_ids=ids)
        )

    channel = secure_channel(
        federation.target, federation.tls(sync), server_name=COORDINATOR_SERVER_NAME
    )
    try:
        stream = coordinator_pb2_grpc.CoordinatorServiceStub(channel).BatchQuery(
            requests(), metadata=(("authorization", f"Bearer {token}"),), timeout=60
        )
        # admitted and answering: the batch holds its place and waits for chunks
        assert next(stream).WhichOneof("item") == "layout"

        sync_cert = cert_paths(certs, role=PeerRole.REQUESTER, name=sync).cert
        _, crl = revoke_certificate(certs, cert=sync_cert, reason="key_compromise")
        _wait_for_crl(federation, crl.number)
        # the next chunk, and the end of the stream: without the check, its sums would come back
        chunks.put(chunk(0))
        chunks.put(None)
        with pytest.raises(grpc.RpcError) as refused:
            next(stream)
    finally:
        chunks.put(None)
        client.close()
        channel.close()
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert f"requester '{sync}'" in (refused.value.details() or "")
    assert "revoked" in (refused.value.details() or "")


class _ClosingNode:
    """A revoked node that hides its certificate: it presents the tax node's certificate, closes
    every connection straight after the handshake (gRPC's max connection age, near zero), and
    counts the requests that reach it."""

    def __init__(self, certs: Path) -> None:
        self.requests = 0
        self._lock = threading.Lock()
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            options=[("grpc.max_connection_age_ms", 1), ("grpc.max_connection_age_grace_ms", 1)],
        )
        self.server.add_generic_rpc_handlers([_CountingHandler(self)])
        tls = TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.NODE, name="tax"))
        self.port = self.server.add_secure_port("127.0.0.1:0", server_credentials(tls))
        self.server.start()

    def count(self) -> None:
        with self._lock:
            self.requests += 1


class _CountingHandler(grpc.GenericRpcHandler):  # type: ignore[misc]
    def __init__(self, node: _ClosingNode) -> None:
        self._node = node

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        def answer(request: bytes, context: grpc.ServicerContext) -> bytes:
            self._node.count()
            return b""  # an empty message of any type: the request having arrived is the attack

        return grpc.unary_unary_rpc_method_handler(answer)


def test_a_revoked_node_that_closes_every_connection_is_never_asked(
    tmp_path: Path,
    certs: Path,
    seeded: SeedReport,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # channelz only shows live connections: a node that closes each one at once would show no
    # certificate at all, and an unseen certificate must not count as an unrevoked one
    fake = _ClosingNode(certs)
    _, crl = revoke_certificate(certs, cert=cert_paths(certs, role=PeerRole.NODE, name="tax").cert)
    others = tuple(d for d in DEPARTMENTS if d != "tax")
    fed = start_federation(
        tmp_path / "federation",
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=others,
        extra_endpoints=[NodeEndpoint(DepartmentId("tax"), f"127.0.0.1:{fake.port}")],
        crl=certs / CRL_FILE,
        revocation_poll_s=POLL_S,
    )
    try:
        wait_until(
            lambda: (
                fed.coordinator.server.revocation is not None
                and fed.coordinator.server.revocation.status.number == crl.number
            ),
            what="the coordinator's CRL in force",
        )
        with _agency(fed) as client:
            for index in range(3):
                partial = client.enterprise_score(_firm(fed, index), purpose="credit_report")
                assert [m.department for m in partial.missing] == ["tax"]
                assert "revoked" in partial.missing[0].detail
    finally:
        stop_federation(fed)
        fake.server.stop(None).wait()
    assert fake.requests == 0


def test_a_crl_with_a_bad_signature_changes_nothing_and_is_logged(
    federation: Federation, certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agency_serial = _serial(cert_paths(certs, role=PeerRole.REQUESTER, name=AGENCY).cert)
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    # another CA's key with the platform CA's name and a far higher number: only the signature
    # tells it apart
    forged = _crl(ec.generate_private_key(ec.SECP256R1()), ca.subject, [agency_serial], 1000)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        _replace(certs / CRL_FILE, forged, tmp_path)
        _wait_for_crl_rejections(federation, 1)
    warnings = _warnings(caplog, "osmanthus.core.crl")
    assert len(warnings) == len(DEPARTMENTS) + 1
    assert all("signature does not verify" in w and "stays in force" in w for w in warnings)
    assert all(s.revocation and s.revocation.status.number == 1 for s in _servers(federation))
    with _agency(federation) as client:
        assert client.enterprise_score(_firm(federation, 0), purpose="credit_report").grade


def test_a_crl_with_a_lower_number_is_ignored(
    federation: Federation, certs: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = (certs / CRL_FILE).read_bytes()  # number 1: nothing revoked
    agency_cert = cert_paths(certs, role=PeerRole.REQUESTER, name=AGENCY).cert
    _, crl = revoke_certificate(certs, cert=agency_cert)
    _wait_for_crl(federation, crl.number)

    # the old CRL, validly signed, put back: a replay that would re-admit the agency
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crl"):
        _replace(certs / CRL_FILE, before, tmp_path)
        _wait_for_crl_rejections(federation, 1)
    assert all(
        "not above the number in force" in w for w in _warnings(caplog, "osmanthus.core.crl")
    )
    with pytest.raises(Unauthenticated, match="revoked"), _agency(federation):
        pass


# --- tokens ---------------------------------------------------------------------------------


def test_a_requester_whose_tokens_are_denied_is_refused_on_its_next_call(
    federation: Federation, deny_list: Path, issuer_keys: IssuerKeyPaths
) -> None:
    with _agency(federation) as client:
        assert client.enterprise_score(_firm(federation, 0), purpose="credit_report").grade

        deny = deny_tokens(
            deny_list,
            private_key=_issuer_key(issuer_keys),
            issuer="osmanthus-platform",
            requester=AGENCY,
            reason="contract ended",
        )
        _wait_for_deny_list(federation, sequence=deny.sequence)

        with pytest.raises(Unauthenticated) as refused:
            client.enterprise_score(_firm(federation, 1), purpose="credit_report")
    message = str(refused.value)
    assert f"requester '{AGENCY}'" in message and "withdrawn by the issuer" in message
    assert "contract ended" in message

    # a token issued after the cut-off works: the requester is not banned, its old tokens are
    cutoff = deny.requesters[AGENCY].issued_before
    later = TokenIssuer(
        private_key=_issuer_key(issuer_keys), clock=lambda: cutoff + datetime.timedelta(seconds=1)
    )
    with _agency(federation, issuer=later) as client:
        assert client.enterprise_score(_firm(federation, 1), purpose="credit_report").grade


def test_a_deny_list_with_a_bad_signature_or_a_lower_sequence_changes_nothing(
    federation: Federation,
    deny_list: Path,
    issuer_keys: IssuerKeyPaths,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = deny_list.read_bytes()
    key = _issuer_key(issuer_keys)
    deny = write_deny_list(deny_list, private_key=key, issuer="osmanthus-platform")
    _wait_for_deny_list(federation, sequence=deny.sequence)

    forged = DenyList(
        issuer="osmanthus-platform",
        sequence=99,
        issued_at=deny.issued_at,
        requesters={},
        tokens={},
    )
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.denylist"):
        # signed by a key that is not the issuer's
        _replace(
            deny_list, seal_deny_list(forged, private_key=Ed25519PrivateKey.generate()), tmp_path
        )
        _wait_for_deny_list(federation, sequence=deny.sequence, rejected=1)
        # the issuer's own, older list put back
        _replace(deny_list, first, tmp_path)
        _wait_for_deny_list(federation, sequence=deny.sequence, rejected=2)
    warnings = _warnings(caplog, "osmanthus.core.denylist")
    assert sum("not trusted here" in w for w in warnings) == len(DEPARTMENTS) + 1
    assert sum("not above the list in force" in w for w in warnings) == len(DEPARTMENTS) + 1
    with _agency(federation) as client:
        assert client.enterprise_score(_firm(federation, 0), purpose="credit_report").grade


# --- helpers --------------------------------------------------------------------------------


def _crl(
    key: ec.EllipticCurvePrivateKey, issuer: x509.Name, serials: list[int], number: int
) -> bytes:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer)
        .last_update(now)
        .next_update(now + datetime.timedelta(days=1))
        .add_extension(x509.CRLNumber(number), critical=False)
    )
    for serial in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build()
        )
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _replace(path: Path, data: bytes, tmp_path: Path) -> None:
    """Put `data` in place of `path` as an operator's copy would: whole, by rename."""
    staged = tmp_path / f".{path.name}.staged"
    staged.write_bytes(data)
    staged.replace(path)
