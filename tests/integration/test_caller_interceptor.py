"""CallerInterceptor: every call's caller read once, before any handler, over real mutual TLS."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc

from osmanthus.core.errors import ConfigError
from osmanthus.core.peers import PeerRole, cert_paths, node_dns_name
from osmanthus.core.server import RunningServer, current_caller, start_server
from osmanthus.core.tls import TlsFiles, secure_channel
from osmanthus.core.tokens import bearer_metadata

SERVICE = "osmanthus.test.Echo"
SERVER = "psb"


def _who(request: bytes, context: grpc.ServicerContext) -> bytes:
    caller = current_caller()
    return f"{caller.peer.role.value}:{caller.peer.name}:{caller.token}".encode()


def _who_each(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    # the caller is there at every step of a response stream, not only at its start
    for step in range(3):
        yield f"{step}:{current_caller().peer.name}".encode()


def _register(server: grpc.Server) -> None:
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Who": grpc.unary_unary_rpc_method_handler(_who),
                    "WhoEach": grpc.unary_stream_rpc_method_handler(_who_each),
                },
            )
        ]
    )


@pytest.fixture(scope="module")
def server(platform_certs: Path) -> Iterator[RunningServer]:
    tls = TlsFiles.from_cert_paths(cert_paths(platform_certs, role=PeerRole.NODE, name=SERVER))
    running = start_server(
        register=[_register], service_names=[SERVICE], listen="127.0.0.1:0", tls=tls
    )
    yield running
    running.stop(grace=0)


def _channel(server: RunningServer, tls: TlsFiles) -> grpc.Channel:
    return secure_channel(f"127.0.0.1:{server.port}", tls, server_name=node_dns_name(SERVER))


def test_a_handler_reads_the_certificate_peer_and_the_bearer_token(
    server: RunningServer, platform_certs: Path
) -> None:
    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.REQUESTER, name="bank-1")
    )
    with _channel(server, tls) as channel:
        who = channel.unary_unary(f"/{SERVICE}/Who")
        assert who(b"", timeout=30) == b"requester:bank-1:None"
        answer = who(b"", metadata=bearer_metadata("the.jwt.here"), timeout=30)
        assert answer == b"requester:bank-1:the.jwt.here"
        steps = list(channel.unary_stream(f"/{SERVICE}/WhoEach")(b"", timeout=30))
        assert steps == [b"0:bank-1", b"1:bank-1", b"2:bank-1"]


def test_a_certificate_naming_no_platform_peer_is_refused_before_the_handler(
    server: RunningServer, platform_certs: Path, tmp_path: Path
) -> None:
    # signed by the platform CA, so the TLS handshake admits it, but it carries no
    # spiffe://osmanthus/<role>/<name> URI: it names no platform peer
    ca_cert = x509.load_pem_x509_certificate((platform_certs / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key(
        (platform_certs / "ca.key").read_bytes(), password=None
    )
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nobody")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("nobody.example")]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    tls = TlsFiles(
        ca=platform_certs / "ca.pem", cert=tmp_path / "cert.pem", key=tmp_path / "key.pem"
    )
    with _channel(server, tls) as channel, pytest.raises(grpc.RpcError) as caught:
        channel.unary_unary(f"/{SERVICE}/Who")(b"", timeout=30)
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe" in (caught.value.details() or "")


def test_the_health_service_answers_any_admitted_client(
    server: RunningServer, platform_certs: Path
) -> None:

    tls = TlsFiles.from_cert_paths(
        cert_paths(platform_certs, role=PeerRole.OPERATOR, name="operator")
    )
    with _channel(server, tls) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=30
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_a_handler_run_without_the_interceptor_has_no_caller() -> None:
    # deny by default: outside a call the interceptor admitted, nobody is calling
    with pytest.raises(ConfigError, match="CallerInterceptor"):
        current_caller()
