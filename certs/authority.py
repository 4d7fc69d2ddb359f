"""The platform certificate authority: creates the CA and issues mutual-TLS peer certificates."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.files import write_atomically
from osmanthus.core.peers import (
    CA_CERT_FILE,
    CA_KEY_FILE,
    CERT_FILE,
    COORDINATOR_DNS_NAME,
    COORDINATOR_NAME,
    DEFAULT_OPERATOR_NAME,
    FIELD_OF_ROLE,
    KEY_FILE,
    CertPaths,
    PeerRole,
    check_coordinator_name,
    node_dns_name,
    peer_dir,
    spiffe_uri,
    validate_name,
)
from osmanthus.core.receipts import (
    CONSENT_KEY_FILE,
    CONSENT_PUBLIC_KEY_FILE,
    generate_consent_keypair,
    load_or_create_consent_key,
    restore_consent_public_key,
)


@dataclass(frozen=True)
class ConsentKeyPaths:
    """The coordinator's consent-receipt signing key (secret) and its public half (for anyone)."""

    private: Path
    public: Path


MAX_VALIDITY_DAYS = 3650
# Backdating absorbs small clock differences between the machine that issues and the peers.
_BACKDATE = datetime.timedelta(minutes=5)


def init_platform(
    out_dir: Path,
    *,
    departments: Sequence[str],
    requesters: Sequence[str],
    validity_days: int = 365,
    overwrite: bool = False,
) -> dict[str, CertPaths]:
    """Create the platform CA and every peer certificate under `out_dir`.

    Issues the coordinator certificate, one node certificate per department, one per requester and
    the operator certificate, then the CA's first CRL (crl.pem, nothing revoked; see
    certs.revocation). The result is keyed by each peer's directory relative to `out_dir`:
    "coordinator", "operator", "nodes/<department>", "requesters/<requester>".
    The coordinator's directory also gets its consent-receipt key pair (see create_consent_key)
    unless it already has one, which is kept (a missing consent.pub is written again from it).
    The coordinator and every department node get their transparency log key (log.key and
    log.pub), the coordinator its witness key (witness.key, witness.pub), each kept if it
    exists, and `logs.toml` at the root lists their public keys (certs.logkeys).
    A consent.pub without its consent.key is refused (ConfigError) before anything is written:
    receipts handed out verify only against that key, which must be restored from backup.
    An existing CA is kept (ConfigError) unless `overwrite` is true, because replacing it makes
    every certificate already deployed to departments useless.
    """
    _check_validity(validity_days)
    _check_unique([validate_name(d, field="department") for d in departments], "departments")
    _check_unique([validate_name(r, field="requester") for r in requesters], "requesters")
    ca_cert_path = out_dir / CA_CERT_FILE
    ca_key_path = out_dir / CA_KEY_FILE
    if not overwrite:
        for existing in (ca_cert_path, ca_key_path):
            if existing.exists():
                raise ConfigError(
                    f"{existing} already exists: refusing to replace the platform CA, which would"
                    " invalidate every certificate it issued (pass overwrite=True to replace it)"
                )
    out_dir.mkdir(parents=True, exist_ok=True)
    # kept if it exists: receipts already handed out must keep verifying after a new CA; first,
    # so that a lost consent key stops the run before the CA is replaced
    coordinator_dir = peer_dir(out_dir, role=PeerRole.COORDINATOR, name=COORDINATOR_NAME)
    load_or_create_consent_key(
        coordinator_dir / CONSENT_KEY_FILE, coordinator_dir / CONSENT_PUBLIC_KEY_FILE
    )
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _make_ca_certificate(ca_key, validity_days)
    # The key goes first so that a crash never leaves a CA certificate without its key.
    _write_private_key(ca_key_path, ca_key)
    _write_file(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), mode=0o644)

    issued: dict[str, CertPaths] = {}
    peers: list[tuple[PeerRole, str]] = [(PeerRole.COORDINATOR, COORDINATOR_NAME)]
    peers += [(PeerRole.NODE, d) for d in departments]
    peers += [(PeerRole.REQUESTER, r) for r in requesters]
    peers.append((PeerRole.OPERATOR, DEFAULT_OPERATOR_NAME))
    for role, name in peers:
        directory = peer_dir(out_dir, role=role, name=name)
        issued[directory.relative_to(out_dir).as_posix()] = _issue(
            ca_cert, ca_key, ca_cert_path, role=role, name=name, out=directory, days=validity_days
        )
    # imported here: certs.revocation and certs.logkeys build on this module's layout
    from certs.logkeys import init_log_keys
    from certs.revocation import start_revocations

    start_revocations(out_dir)
    init_log_keys(out_dir, departments=departments)
    return issued


def create_consent_key(certs_dir: Path, *, overwrite: bool = False) -> ConsentKeyPaths:
    """Write the coordinator's Ed25519 consent-receipt key pair into its directory under
    `certs_dir` (coordinator/consent.key, mode 0600, and coordinator/consent.pub).

    The coordinator signs a receipt for every consent it records with the private key; banks and
    citizens verify receipts with the public one. An existing pair is kept (ConfigError) unless
    `overwrite` is true: receipts signed with a replaced key no longer verify.
    """
    paths = consent_key_paths(certs_dir)
    if not overwrite and paths.public.exists() and not paths.private.exists():
        raise ConfigError(
            f"{paths.private} is missing but {paths.public} exists: restore the consent "
            "signing key from backup. A new key would leave every receipt already handed out "
            "unverifiable against the published consent.pub; to replace the pair knowingly, "
            "pass overwrite=True (--overwrite)",
            field="consent_key",
        )
    generate_consent_keypair(paths.private, paths.public, overwrite=overwrite)
    return paths


def restore_consent_public_key_file(certs_dir: Path) -> ConsentKeyPaths:
    """Write coordinator/consent.pub under `certs_dir` again from coordinator/consent.key.

    Never makes a new key: for a consent.pub lost or never written (keygen stopped between the
    two files). ConfigError if consent.key is missing or unusable, or if an existing
    consent.pub is not its public half.
    """
    paths = consent_key_paths(certs_dir)
    restore_consent_public_key(paths.private, paths.public)
    return paths


def consent_key_paths(certs_dir: Path) -> ConsentKeyPaths:
    """Where the init_platform layout under `certs_dir` keeps the consent-receipt key pair."""
    directory = peer_dir(certs_dir, role=PeerRole.COORDINATOR, name=COORDINATOR_NAME)
    return ConsentKeyPaths(
        private=directory / CONSENT_KEY_FILE, public=directory / CONSENT_PUBLIC_KEY_FILE
    )


def issue_certificate(
    ca_dir: Path,
    *,
    role: PeerRole,
    name: str,
    out_dir: Path | None = None,
    validity_days: int = 365,
) -> CertPaths:
    """Issue (or re-issue, replacing the old files) one peer certificate signed by the CA.

    The files go to `out_dir`, or to the peer's place in the init_platform layout under `ca_dir`.
    The certificate never outlives the CA: its expiry is capped at the CA's.
    """
    _check_validity(validity_days)
    if not isinstance(role, PeerRole):
        raise InvalidArgument(f"{role!r} is not a PeerRole", field="role")
    directory = out_dir if out_dir is not None else peer_dir(ca_dir, role=role, name=name)
    ca_cert_path = ca_dir / CA_CERT_FILE
    ca_cert, ca_key = _load_ca(ca_cert_path, ca_dir / CA_KEY_FILE)
    return _issue(
        ca_cert, ca_key, ca_cert_path, role=role, name=name, out=directory, days=validity_days
    )


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert_path: Path,
    *,
    role: PeerRole,
    name: str,
    out: Path,
    days: int,
) -> CertPaths:
    validate_name(name, field=FIELD_OF_ROLE[role])
    if role is PeerRole.COORDINATOR:
        check_coordinator_name(name)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _make_peer_certificate(
        ca_cert, ca_key, key.public_key(), role=role, name=name, days=days
    )
    out.mkdir(parents=True, exist_ok=True)
    paths = CertPaths(cert=out / CERT_FILE, key=out / KEY_FILE, ca=ca_cert_path)
    _write_private_key(paths.key, key)
    _write_file(paths.cert, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return paths


def _make_ca_certificate(key: ec.EllipticCurvePrivateKey, days: int) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Osmanthus"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Osmanthus platform CA"),
        ]
    )
    public_key = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_peer_certificate(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    public_key: ec.EllipticCurvePublicKey,
    *,
    role: PeerRole,
    name: str,
    days: int,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = []
    if role is PeerRole.COORDINATOR:
        sans.append(x509.DNSName(COORDINATOR_DNS_NAME))
    elif role is PeerRole.NODE:
        sans.append(x509.DNSName(node_dns_name(name)))
    sans.append(x509.UniformResourceIdentifier(spiffe_uri(role, name)))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if role in (PeerRole.COORDINATOR, PeerRole.NODE):
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Osmanthus"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _load_ca(
    cert_path: Path, key_path: Path
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert_pem = cert_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA certificate {cert_path}: {exc.strerror}") from exc
    try:
        key_pem = key_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the CA private key {key_path}: {exc.strerror}") from exc
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError as exc:
        raise ConfigError(f"{cert_path} is not a PEM certificate: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_path} is not an unencrypted PEM private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{key_path} is not an ECDSA private key")
    cert_public = cert.public_key()
    if (
        not isinstance(cert_public, ec.EllipticCurvePublicKey)
        or key.public_key().public_numbers() != cert_public.public_numbers()
    ):
        raise ConfigError(f"{key_path} is not the private key of the CA certificate {cert_path}")
    try:
        cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    except x509.ExtensionNotFound as exc:
        raise ConfigError(f"{cert_path} lacks a subject key identifier: not a platform CA") from exc
    return cert, key


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_file(path, pem, mode=0o600)


def _write_file(path: Path, data: bytes, *, mode: int) -> None:
    # created with its final mode, so a private key is never briefly readable by others
    write_atomically(path, data, mode=mode)


def _check_validity(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_VALIDITY_DAYS:
        raise InvalidArgument(
            f"{days!r} is not a whole number of days between 1 and {MAX_VALIDITY_DAYS}",
            field="validity_days",
        )


def _check_unique(names: list[str], field: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise InvalidArgument(f"{name!r} is listed twice", field=field)
        seen.add(name)
