"""Mutual-TLS credentials for gRPC servers and channels, and the peer identity they authenticate."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.peers import (
    COORDINATOR_DNS_NAME,
    CertPaths,
    PeerRole,
    node_dns_name,
    parse_spiffe_uri,
)

COORDINATOR_SERVER_NAME = COORDINATOR_DNS_NAME
_TARGET_NAME_OVERRIDE = "grpc.ssl_target_name_override"
# Key of the peer's leaf certificate in a gRPC auth context (see grpc doc/server_side_auth.md).
_AUTH_PEM_CERT = "x509_pem_cert"


@dataclass(frozen=True)
class TlsFiles:
    """The three PEM files one process needs for mutual TLS: CA, own certificate, own key."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def from_cert_paths(cls, paths: CertPaths) -> TlsFiles:
        return cls(ca=paths.ca, cert=paths.cert, key=paths.key)


@dataclass(frozen=True)
class PeerIdentity:
    """Who is on the other end of a mutual-TLS connection, read from its certificate."""

    role: PeerRole
    name: str


def node_server_name(department: str) -> str:
    """The name a department node's certificate must carry, e.g. "psb.node.osmanthus"."""
    return node_dns_name(department)


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials:
    """Server credentials that demand a client certificate signed by the platform CA."""
    ca, cert, key = _read_checked(files)
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=ca, require_client_auth=True
    )


def secure_channel(
    target: str,
    files: TlsFiles,
    *,
    server_name: str,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A mutual-TLS channel to `target` whose server certificate must name `server_name`.

    The name is checked instead of the host in `target` because peers are addressed by IP or
    loopback port while certificates name departments: a node that presents a certificate for any
    other department is refused during the handshake.
    """
    if not isinstance(server_name, str) or not server_name:
        raise InvalidArgument(
            "give the name the server's certificate must carry", field="server_name"
        )
    for key, _ in options:
        if key == _TARGET_NAME_OVERRIDE:
            raise InvalidArgument(
                f"{_TARGET_NAME_OVERRIDE} is set from server_name; do not pass it in options",
                field="options",
            )
    ca, cert, key_pem = _read_checked(files)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca, private_key=key_pem, certificate_chain=cert
    )
    return grpc.secure_channel(
        target, credentials, options=[(_TARGET_NAME_OVERRIDE, server_name), *options]
    )


def peer_identity(context: grpc.ServicerContext) -> PeerIdentity:
    """The calling peer's identity from its verified client certificate; Unauthenticated if none."""
    auth = context.auth_context()
    pems = auth.get(_AUTH_PEM_CERT) if auth else None
    if not pems:
        raise Unauthenticated(
            "the call carries no client certificate: connect over mutual TLS with a certificate"
            " issued by the platform CA"
        )
    try:
        cert = x509.load_pem_x509_certificate(pems[0])
    except ValueError as exc:
        raise Unauthenticated(f"the client certificate cannot be parsed: {exc}") from exc
    identity, problem = _identity(cert)
    if identity is None:
        raise Unauthenticated(f"the client certificate {problem}")
    return identity


def peer_certificate_pem(context: grpc.ServicerContext) -> bytes | None:
    """The PEM of the client certificate the TLS handshake verified, None if there is none."""
    auth = context.auth_context()
    pems = auth.get(_AUTH_PEM_CERT) if auth else None
    return bytes(pems[0]) if pems else None


def identity_of_certificate(cert_path: Path) -> PeerIdentity:
    """The identity a certificate file names; ConfigError if it names none."""
    cert = _load_cert(cert_path, what="certificate")
    identity, problem = _identity(cert)
    if identity is None:
        raise ConfigError(f"{cert_path}: the certificate {problem}", field="cert")
    return identity


def certificate_identity(cert: x509.Certificate) -> PeerIdentity:
    """The platform peer a parsed certificate names; Unauthenticated saying what is wrong."""
    identity, problem = _identity(cert)
    if identity is None:
        raise Unauthenticated(f"the certificate {problem}")
    return identity


def check_files(files: TlsFiles) -> None:
    """Raise ConfigError, naming the file, unless the files make a usable mutual-TLS identity."""
    _read_checked(files)


def _read_checked(files: TlsFiles) -> tuple[bytes, bytes, bytes]:
    ca_pem = _read(files.ca, field="ca", what="CA certificate")
    cert_pem = _read(files.cert, field="cert", what="certificate")
    key_pem = _read(files.key, field="key", what="private key")
    ca = _parse_cert(ca_pem, files.ca, field="ca", what="CA certificate")
    cert = _parse_cert(cert_pem, files.cert, field="cert", what="certificate")
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{files.key} is not an unencrypted PEM private key: {exc}", field="key"
        ) from exc

    if not _same_public_key(key, cert):
        raise ConfigError(
            f"{files.key} is not the private key of the certificate {files.cert}", field="key"
        )
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"{files.ca} is not a CA certificate", field="ca")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise ConfigError(
            f"{files.cert} was not issued by the CA in {files.ca}"
            f" ({str(exc) or 'the signature does not verify'})",
            field="cert",
        ) from exc
    now = datetime.datetime.now(datetime.UTC)
    for path, certificate, field in ((files.ca, ca, "ca"), (files.cert, cert, "cert")):
        if now > certificate.not_valid_after_utc:
            raise ConfigError(
                f"{path} expired at {certificate.not_valid_after_utc.isoformat()}: issue a new one",
                field=field,
            )
        if now < certificate.not_valid_before_utc:
            raise ConfigError(
                f"{path} is not valid before {certificate.not_valid_before_utc.isoformat()}:"
                " check this machine's clock",
                field=field,
            )
    return ca_pem, cert_pem, key_pem


def _read(path: Path, *, field: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"{what} file {path} does not exist", field=field) from exc
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file {path}: {exc.strerror}", field=field) from exc


def _parse_cert(pem: bytes, path: Path, *, field: str, what: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM {what}: {exc}", field=field) from exc


def _load_cert(path: Path, *, what: str) -> x509.Certificate:
    return _parse_cert(_read(path, field="cert", what=what), path, field="cert", what=what)


def _same_public_key(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    try:
        mine = key.public_key().public_bytes(der, spki)
    except (AttributeError, ValueError, TypeError):
        return False
    return bool(mine == cert.public_key().public_bytes(der, spki))


def _identity(cert: x509.Certificate) -> tuple[PeerIdentity | None, str]:
    """(identity, "") or (None, what is wrong, phrased to follow "the certificate")."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None, "has no subject alternative names, so it names no platform peer"
    uris = sans.get_values_for_type(x509.UniformResourceIdentifier)
    found = [(uri, parse_spiffe_uri(uri)) for uri in uris if uri.startswith("spiffe://")]
    if not found:
        return None, "has no spiffe://osmanthus/<role>/<name> URI, so it names no platform peer"
    if len(found) > 1:
        return None, f"names several peers ({', '.join(u for u, _ in found)}); it must name one"
    uri, parsed = found[0]
    if parsed is None:
        return None, f"carries {uri!r}, which is not a spiffe://osmanthus/<role>/<name> URI"
    return PeerIdentity(role=parsed[0], name=parsed[1]), ""
