"""The platform CA: layout, names, usages and key modes of issued certificates; TLS file checks."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from certs import (
    CertPaths,
    PeerRole,
    cert_paths,
    init_platform,
    issue_certificate,
)
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.tls import (
    PeerIdentity,
    TlsFiles,
    check_files,
    identity_of_certificate,
    node_server_name,
)
from tests.conftest import PLATFORM_DEPARTMENTS, PLATFORM_REQUESTERS

SERVER_AND_CLIENT = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
CLIENT_ONLY = [ExtendedKeyUsageOID.CLIENT_AUTH]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[list[str], list[str]]:
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return (
        sans.get_values_for_type(x509.DNSName),
        sans.get_values_for_type(x509.UniformResourceIdentifier),
    )


def _ekus(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _small_platform(directory: Path) -> dict[str, CertPaths]:
    return init_platform(directory, departments=["psb", "tax"], requesters=["bank-1"])


def _files(certs_dir: Path, role: PeerRole, name: str) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(certs_dir, role=role, name=name))


def _sign_with_ca(
    certs_dir: Path,
    *,
    not_before: datetime.datetime,
    not_after: datetime.datetime,
    uris: list[str],
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate signed by the platform CA with arbitrary validity and URIs."""
    ca = _cert(certs_dir / "ca.pem")
    ca_key = serialization.load_pem_private_key((certs_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hand-made")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


def _write_pair(
    directory: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


# --- layout and CA ------------------------------------------------------------------------------


def test_init_platform_returns_every_peer_keyed_by_directory(tmp_path: Path) -> None:
    issued = _small_platform(tmp_path)
    assert set(issued) == {
        "coordinator",
        "operator",
        "nodes/psb",
        "nodes/tax",
        "requesters/bank-1",
    }
    assert issued["nodes/psb"] == CertPaths(
        cert=tmp_path / "nodes/psb/cert.pem",
        key=tmp_path / "nodes/psb/key.pem",
        ca=tmp_path / "ca.pem",
    )
    for paths in issued.values():
        assert paths.cert.is_file() and paths.key.is_file()
        check_files(TlsFiles.from_cert_paths(paths))


def test_private_keys_are_owner_only(platform_certs: Path) -> None:
    keys = [platform_certs / "ca.key", *platform_certs.glob("**/key.pem")]
    # CA + coordinator + operator + one per department + one per requester
    assert len(keys) == 3 + len(PLATFORM_DEPARTMENTS) + len(PLATFORM_REQUESTERS)
    for key in keys:
        assert _mode(key) == 0o600, key
    assert _mode(platform_certs / "ca.pem") & 0o044 == 0o044


def test_ca_is_a_p256_path_length_zero_signing_ca(platform_certs: Path) -> None:
    ca = _cert(platform_certs / "ca.pem")
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert constraints.value.ca is True and constraints.value.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    public_key = ca.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert public_key.curve.name == "secp256r1"
    assert isinstance(ca.signature_hash_algorithm, hashes.SHA256)
    ca.verify_directly_issued_by(ca)


def test_init_platform_refuses_to_replace_an_existing_ca(tmp_path: Path) -> None:
    _small_platform(tmp_path)
    before = (tmp_path / "ca.pem").read_bytes()
    with pytest.raises(ConfigError) as caught:
        _small_platform(tmp_path)
    assert str(tmp_path / "ca.pem") in caught.value.message
    assert "overwrite=True" in caught.value.message
    assert (tmp_path / "ca.pem").read_bytes() == before


def test_init_platform_with_overwrite_makes_a_new_ca(tmp_path: Path) -> None:
    _small_platform(tmp_path)
    before = (tmp_path / "ca.pem").read_bytes()
    init_platform(tmp_path, departments=["psb"], requesters=[], overwrite=True)
    assert (tmp_path / "ca.pem").read_bytes() != before
    check_files(_files(tmp_path, PeerRole.NODE, "psb"))
    # tax was not re-issued, so its certificate belongs to the replaced CA
    with pytest.raises(ConfigError, match="was not issued by the CA"):
        check_files(_files(tmp_path, PeerRole.NODE, "tax"))


# --- names, SANs and usages ---------------------------------------------------------------------


@pytest.mark.parametrize("department", ["psb", "court", "customs"])
def test_node_certificate_names_its_department(platform_certs: Path, department: str) -> None:
    cert = _cert(cert_paths(platform_certs, role=PeerRole.NODE, name=department).cert)
    assert _sans(cert) == (
        [f"{department}.node.osmanthus"],
        [f"spiffe://osmanthus/node/{department}"],
    )
    assert _common_name(cert) == department
    assert _ekus(cert) == SERVER_AND_CLIENT
    assert node_server_name(department) == f"{department}.node.osmanthus"


def test_coordinator_certificate(platform_certs: Path) -> None:
    cert = _cert(platform_certs / "coordinator" / "cert.pem")
    assert _sans(cert) == (["coordinator.osmanthus"], ["spiffe://osmanthus/coordinator"])
    assert _ekus(cert) == SERVER_AND_CLIENT


def test_requester_certificate_is_client_only(platform_certs: Path) -> None:
    cert = _cert(platform_certs / "requesters" / "agency-1" / "cert.pem")
    assert _sans(cert) == ([], ["spiffe://osmanthus/requester/agency-1"])
    assert _common_name(cert) == "agency-1"
    assert _ekus(cert) == CLIENT_ONLY


def test_operator_certificate_is_client_only(platform_certs: Path) -> None:
    cert = _cert(platform_certs / "operator" / "cert.pem")
    assert _sans(cert) == ([], ["spiffe://osmanthus/operator/operator"])
    assert _ekus(cert) == CLIENT_ONLY


def test_peer_certificates_are_leaves_signed_by_the_ca(platform_certs: Path) -> None:
    ca = _cert(platform_certs / "ca.pem")
    for cert_path in platform_certs.glob("**/cert.pem"):
        cert = _cert(cert_path)
        cert.verify_directly_issued_by(ca)
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
        public_key = cert.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert public_key.curve.name == "secp256r1"


@pytest.mark.parametrize("bad", ["PSB", "psb.node", "a/b", "", "x" * 64, "税务"])
def test_bad_department_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        init_platform(tmp_path, departments=["psb", bad], requesters=[])
    assert caught.value.field == "department"
    assert not (tmp_path / "ca.pem").exists()


@pytest.mark.parametrize("bad", ["Bank-1", "bank 1", "../bank"])
def test_bad_requester_names_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        init_platform(tmp_path, departments=["psb"], requesters=[bad])
    assert caught.value.field == "requester"


def test_duplicate_department_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="listed twice") as caught:
        init_platform(tmp_path, departments=["psb", "tax", "psb"], requesters=[])
    assert caught.value.field == "departments"


def test_names_of_63_characters_are_allowed(tmp_path: Path) -> None:
    name = "d" * 63
    issued = init_platform(tmp_path, departments=[name], requesters=["r_" + "q" * 61])
    assert identity_of_certificate(issued[f"nodes/{name}"].cert) == PeerIdentity(
        role=PeerRole.NODE, name=name
    )


# --- issue_certificate and cert_paths -----------------------------------------------------------


def test_issue_certificate_adds_a_requester_to_the_layout(tmp_path: Path) -> None:
    _small_platform(tmp_path)
    issued = issue_certificate(tmp_path, role=PeerRole.REQUESTER, name="library-2")
    assert issued == cert_paths(tmp_path, role=PeerRole.REQUESTER, name="library-2")
    assert issued.cert == tmp_path / "requesters" / "library-2" / "cert.pem"
    assert _mode(issued.key) == 0o600
    check_files(TlsFiles.from_cert_paths(issued))
    assert _ekus(_cert(issued.cert)) == CLIENT_ONLY


def test_issue_certificate_to_another_directory_with_its_validity(tmp_path: Path) -> None:
    _small_platform(tmp_path / "ca")
    issued = issue_certificate(
        tmp_path / "ca",
        role=PeerRole.NODE,
        name="hrss",
        out_dir=tmp_path / "elsewhere",
        validity_days=30,
    )
    assert issued.cert == tmp_path / "elsewhere" / "cert.pem"
    assert issued.ca == tmp_path / "ca" / "ca.pem"
    cert = _cert(issued.cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=30) <= lifetime <= datetime.timedelta(days=30, minutes=10)
    assert identity_of_certificate(issued.cert) == PeerIdentity(role=PeerRole.NODE, name="hrss")


def test_issue_certificate_never_outlives_the_ca(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=[], requesters=[], validity_days=10)
    issued = issue_certificate(tmp_path, role=PeerRole.NODE, name="psb", validity_days=365)
    ca = _cert(tmp_path / "ca.pem")
    assert _cert(issued.cert).not_valid_after_utc == ca.not_valid_after_utc


def test_issue_certificate_reissues_in_place(tmp_path: Path) -> None:
    issued = _small_platform(tmp_path)["nodes/psb"]
    before = issued.cert.read_bytes()
    again = issue_certificate(tmp_path, role=PeerRole.NODE, name="psb")
    assert again == issued
    assert issued.cert.read_bytes() != before
    check_files(TlsFiles.from_cert_paths(again))


def test_issue_certificate_for_another_operator(tmp_path: Path) -> None:
    _small_platform(tmp_path)
    issued = issue_certificate(tmp_path, role=PeerRole.OPERATOR, name="alice")
    assert issued.cert == tmp_path / "operators" / "alice" / "cert.pem"
    assert identity_of_certificate(issued.cert) == PeerIdentity(
        role=PeerRole.OPERATOR, name="alice"
    )


def test_issue_certificate_without_a_ca_names_the_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"ca\.pem"):
        issue_certificate(tmp_path, role=PeerRole.NODE, name="psb")


def test_the_coordinator_has_one_name(tmp_path: Path) -> None:
    _small_platform(tmp_path)
    with pytest.raises(InvalidArgument) as caught:
        issue_certificate(tmp_path, role=PeerRole.COORDINATOR, name="coordinator-2")
    assert caught.value.field == "coordinator"


@pytest.mark.parametrize("days", [0, -1, 3651])
def test_validity_days_out_of_range_is_refused(tmp_path: Path, days: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        init_platform(tmp_path, departments=["psb"], requesters=[], validity_days=days)
    assert caught.value.field == "validity_days"


def test_cert_paths_of_an_unknown_peer_names_the_missing_file(platform_certs: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        cert_paths(platform_certs, role=PeerRole.NODE, name="edu")
    assert str(platform_certs / "nodes" / "edu" / "cert.pem") in caught.value.message


# --- identity_of_certificate --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "name"),
    [
        (PeerRole.COORDINATOR, "coordinator"),
        (PeerRole.NODE, "psb"),
        (PeerRole.REQUESTER, "registrar"),
        (PeerRole.OPERATOR, "operator"),
    ],
)
def test_identity_of_certificate(platform_certs: Path, role: PeerRole, name: str) -> None:
    paths = cert_paths(platform_certs, role=role, name=name)
    assert identity_of_certificate(paths.cert) == PeerIdentity(role=role, name=name)


def test_identity_of_the_ca_certificate_is_refused(platform_certs: Path) -> None:
    with pytest.raises(ConfigError, match="no subject alternative names"):
        identity_of_certificate(platform_certs / "ca.pem")


@pytest.mark.parametrize(
    ("uris", "problem"),
    [
        (["https://example.org/node/psb"], "no spiffe://osmanthus/<role>/<name> URI"),
        (["spiffe://other-domain/node/psb"], "not a spiffe://osmanthus/<role>/<name> URI"),
        (["spiffe://osmanthus/admin/root"], "not a spiffe://osmanthus/<role>/<name> URI"),
        (["spiffe://osmanthus/node/psb/extra"], "not a spiffe://osmanthus/<role>/<name> URI"),
        (["spiffe://osmanthus/node/PSB"], "not a spiffe://osmanthus/<role>/<name> URI"),
        (["spiffe://osmanthus/node/psb", "spiffe://osmanthus/node/tax"], "names several peers"),
    ],
)
def test_identity_of_a_certificate_without_one_platform_name_is_refused(
    platform_certs: Path, tmp_path: Path, uris: list[str], problem: str
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = _sign_with_ca(
        platform_certs, not_before=now, not_after=now + datetime.timedelta(days=1), uris=uris
    )
    cert_path, _ = _write_pair(tmp_path, cert, key)
    with pytest.raises(ConfigError) as caught:
        identity_of_certificate(cert_path)
    assert problem in caught.value.message


def test_identity_of_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        identity_of_certificate(tmp_path / "absent.pem")
    assert str(tmp_path / "absent.pem") in caught.value.message


# --- check_files --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["ca", "cert", "key"])
def test_check_files_names_a_missing_file(platform_certs: Path, tmp_path: Path, field: str) -> None:
    good = _files(platform_certs, PeerRole.NODE, "psb")
    files = TlsFiles(**{**good.__dict__, field: tmp_path / "missing.pem"})
    with pytest.raises(ConfigError, match="does not exist") as caught:
        check_files(files)
    assert caught.value.field == field
    assert str(tmp_path / "missing.pem") in caught.value.message


def test_check_files_names_an_unreadable_file(platform_certs: Path, tmp_path: Path) -> None:
    good = _files(platform_certs, PeerRole.NODE, "psb")
    with pytest.raises(ConfigError, match="cannot read") as caught:
        check_files(TlsFiles(ca=good.ca, cert=tmp_path, key=good.key))
    assert caught.value.field == "cert"


@pytest.mark.parametrize("field", ["ca", "cert", "key"])
def test_check_files_names_an_unparseable_file(
    platform_certs: Path, tmp_path: Path, field: str
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    good = _files(platform_certs, PeerRole.NODE, "psb")
    with pytest.raises(ConfigError, match="is not") as caught:
        check_files(TlsFiles(**{**good.__dict__, field: garbage}))
    assert caught.value.field == field
    assert str(garbage) in caught.value.message


def test_check_files_refuses_a_key_of_another_certificate(platform_certs: Path) -> None:
    psb = _files(platform_certs, PeerRole.NODE, "psb")
    tax = _files(platform_certs, PeerRole.NODE, "tax")
    with pytest.raises(ConfigError, match="is not the private key of the certificate") as caught:
        check_files(TlsFiles(ca=psb.ca, cert=psb.cert, key=tax.key))
    assert caught.value.field == "key"


def test_check_files_refuses_a_certificate_of_another_ca(
    platform_certs: Path, tmp_path: Path
) -> None:
    rogue = _small_platform(tmp_path)["nodes/psb"]
    with pytest.raises(ConfigError, match="was not issued by the CA") as caught:
        check_files(TlsFiles(ca=platform_certs / "ca.pem", cert=rogue.cert, key=rogue.key))
    assert caught.value.field == "cert"


def test_check_files_refuses_a_leaf_as_the_ca(platform_certs: Path) -> None:
    psb = _files(platform_certs, PeerRole.NODE, "psb")
    with pytest.raises(ConfigError, match="is not a CA certificate") as caught:
        check_files(TlsFiles(ca=psb.cert, cert=psb.cert, key=psb.key))
    assert caught.value.field == "ca"


def test_check_files_refuses_an_expired_certificate(platform_certs: Path, tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = _sign_with_ca(
        platform_certs,
        not_before=now - datetime.timedelta(days=30),
        not_after=now - datetime.timedelta(days=1),
        uris=["spiffe://osmanthus/node/psb"],
    )
    cert_path, key_path = _write_pair(tmp_path, cert, key)
    with pytest.raises(ConfigError, match="expired at") as caught:
        check_files(TlsFiles(ca=platform_certs / "ca.pem", cert=cert_path, key=key_path))
    assert caught.value.field == "cert"
    assert str(cert_path) in caught.value.message


def test_check_files_refuses_a_certificate_not_yet_valid(
    platform_certs: Path, tmp_path: Path
) -> None:
    now = datetime.datetime.now(datetime.UTC)
    cert, key = _sign_with_ca(
        platform_certs,
        not_before=now + datetime.timedelta(days=1),
        not_after=now + datetime.timedelta(days=30),
        uris=["spiffe://osmanthus/node/psb"],
    )
    cert_path, key_path = _write_pair(tmp_path, cert, key)
    with pytest.raises(ConfigError, match="is not valid before"):
        check_files(TlsFiles(ca=platform_certs / "ca.pem", cert=cert_path, key=key_path))
