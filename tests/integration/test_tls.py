"""mTLS on a real gRPC server on 127.0.0.1: who gets in, who is refused, who the server sees."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from certs import PeerRole, cert_paths, init_platform
from osmanthus.core.errors import Unauthenticated
from osmanthus.core.tls import (
    COORDINATOR_SERVER_NAME,
    TlsFiles,
    node_server_name,
    peer_identity,
    secure_channel,
    server_credentials,
)

TIMEOUT = 3.0
WHOAMI = "/osmanthus.test.WhoAmI/Get"


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    try:
        identity = peer_identity(context)
    except Unauthenticated as exc:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
    return f"{identity.role.value}/{identity.name}".encode()


def _start_server(credentials: grpc.ServerCredentials | None) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "osmanthus.test.WhoAmI", {"Get": grpc.unary_unary_rpc_method_handler(_whoami)}
            ),
        )
    )
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, f"127.0.0.1:{port}"


def _files(certs_dir: Path, role: PeerRole, name: str) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(certs_dir, role=role, name=name))


def _health(channel: grpc.Channel) -> int:
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        return int(response.status)


def _assert_refused(channel: grpc.Channel, *, detail: str = "") -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _health(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert detail in (caught.value.details() or "")


@pytest.fixture(scope="module")
def psb_node(platform_certs: Path) -> Iterator[str]:
    """Address of a server holding the psb node certificate and demanding client certificates."""
    node_files = _files(platform_certs, PeerRole.NODE, "psb")
    server, address = _start_server(server_credentials(node_files))
    yield address
    server.stop(grace=None)


def test_coordinator_client_with_node_name_is_served(psb_node: str, platform_certs: Path) -> None:
    files = _files(platform_certs, PeerRole.COORDINATOR, "coordinator")
    channel = secure_channel(psb_node, files, server_name=node_server_name("psb"))
    assert _health(channel) == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_is_refused(psb_node: str) -> None:
    _assert_refused(grpc.insecure_channel(psb_node))


def test_client_certificate_from_another_ca_is_refused(
    psb_node: str, platform_certs: Path, tmp_path: Path
) -> None:
    rogue = init_platform(tmp_path / "rogue", departments=[], requesters=["bank-1"])
    rogue_bank = rogue["requesters/bank-1"]
    # The client trusts the real CA, so only the server's check of the client certificate can fail.
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(platform_certs / "ca.pem").read_bytes(),
        private_key=rogue_bank.key.read_bytes(),
        certificate_chain=rogue_bank.cert.read_bytes(),
    )
    channel = grpc.secure_channel(
        psb_node,
        credentials,
        options=[("grpc.ssl_target_name_override", node_server_name("psb"))],
    )
    _assert_refused(channel)


def test_client_without_certificate_is_refused(psb_node: str, platform_certs: Path) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(platform_certs / "ca.pem").read_bytes()
    )
    channel = grpc.secure_channel(
        psb_node,
        credentials,
        options=[("grpc.ssl_target_name_override", node_server_name("psb"))],
    )
    _assert_refused(channel)


def test_client_expecting_another_department_refuses_the_node(
    psb_node: str, platform_certs: Path
) -> None:
    files = _files(platform_certs, PeerRole.COORDINATOR, "coordinator")
    channel = secure_channel(psb_node, files, server_name=node_server_name("tax"))
    _assert_refused(channel, detail="Hostname Verification Check failed")


def test_client_expecting_the_coordinator_refuses_a_node(
    psb_node: str, platform_certs: Path
) -> None:
    files = _files(platform_certs, PeerRole.REQUESTER, "bank-1")
    channel = secure_channel(psb_node, files, server_name=COORDINATOR_SERVER_NAME)
    _assert_refused(channel, detail="Hostname Verification Check failed")


@pytest.mark.parametrize(
    ("role", "name", "expected"),
    [
        (PeerRole.COORDINATOR, "coordinator", b"coordinator/coordinator"),
        (PeerRole.REQUESTER, "bank-1", b"requester/bank-1"),
        (PeerRole.NODE, "tax", b"node/tax"),
        (PeerRole.OPERATOR, "operator", b"operator/operator"),
    ],
)
def test_server_sees_the_client_identity(
    psb_node: str, platform_certs: Path, role: PeerRole, name: str, expected: bytes
) -> None:
    files = _files(platform_certs, role, name)
    with secure_channel(psb_node, files, server_name=node_server_name("psb")) as channel:
        assert channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT) == expected


def test_peer_identity_refuses_a_call_without_client_certificate() -> None:
    server, address = _start_server(None)
    try:
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as caught:
            channel.unary_unary(WHOAMI)(b"", timeout=TIMEOUT)
    finally:
        server.stop(grace=None)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no client certificate" in (caught.value.details() or "")
