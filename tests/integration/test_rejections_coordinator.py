"""Every refusal at the coordinator's entry points, over real mTLS against a running federation."""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import secrets
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sdk
from certs import PeerRole, cert_paths, init_platform
from coordinator.config import NodeEndpoint
from osmanthus.core.crypto import generate_keypair
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.ids import resident_id_check_char, uscc_check_char
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    consent_for,
    restricted_catalogue,
    start_federation,
    stop_federation,
)

#: an RPC's deadline: only a hung call reaches it, however busy the machine
TIMEOUT_S = 30.0
AGENCY = "agency-1"
AGENCY_PURPOSES = ("loan_underwriting", "credit_report")


def _subjects(federation: Federation, kind: str) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == kind]


def _person(federation: Federation) -> str:
    return _subjects(federation, "person")[0]


def _firm(federation: Federation) -> str:
    return _subjects(federation, "enterprise")[0]


def _tls(federation: Federation, role: PeerRole, name: str) -> TlsFiles:
    return TlsFiles.from_cert_paths(cert_paths(federation.certs, role=role, name=name))


Stub = coordinator_pb2_grpc.CoordinatorServiceStub


@pytest.fixture(scope="module")
def as_agency(federation: Federation, agency: Client) -> Iterator[Stub]:
    """A raw stub holding agency-1's certificate; `agency` has registered agency-1's key."""
    tls = _tls(federation, PeerRole.REQUESTER, AGENCY)
    with secure_channel(federation.target, tls, server_name=COORDINATOR_SERVER_NAME) as channel:
        yield Stub(channel)


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _key_message(keys: RequesterKeys) -> Any:
    return common_pb2.PaillierPublicKey(n=keys.public.to_bytes())


def _enterprise_query(
    federation: Federation,
    *,
    purpose: str = "credit_report",
    keys: RequesterKeys | None = None,
    credit_code: str | None = None,
) -> Any:
    return coordinator_pb2.EnterpriseQueryRequest(
        credit_code=credit_code if credit_code is not None else _firm(federation),
        shape=common_pb2.SHAPE_TOTAL,
        purpose=purpose,
        public_key=_key_message(keys or federation.keys[AGENCY]),
    )


def _person_query(federation: Federation, resident_id: str) -> Any:
    return coordinator_pb2.PersonQueryRequest(
        resident_id=resident_id,
        shape=common_pb2.SHAPE_BREAKDOWN,
        purpose="loan_underwriting",
        public_key=_key_message(federation.keys[AGENCY]),
    )


def _refused(
    call: Callable[..., Any], request: Any, token: str, code: grpc.StatusCode
) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error


def _field(error: grpc.Call) -> str | None:
    for key, value in error.trailing_metadata() or ():
        if key == FIELD_METADATA_KEY:
            return str(value)
    return None


def _agency_token(federation: Federation, **kw: Any) -> str:
    return federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES, **kw)


# --- identifiers at the entry points -------------------------------------------------------------


def _resident_with_birth(valid: str, birth: str) -> str:
    first17 = valid[:6] + birth + valid[14:17]
    return first17 + resident_id_check_char(first17)


BAD_RESIDENT_IDS: list[tuple[str, Callable[[str], str], str]] = [
    ("length", lambda v: v[:17], "must be 18 characters, got 17"),
    (
        "check-character",
        lambda v: v[:17] + ("0" if v[17] != "0" else "1"),
        "check character (position 18) does not match",
    ),
    ("birth-date", lambda v: _resident_with_birth(v, "19990231"), "not a valid calendar date"),
    ("future-birth", lambda v: _resident_with_birth(v, "29990101"), "is in the future"),
    ("character-set", lambda v: v[:4] + "A" + v[5:], "positions 1-17 must be the digits 0-9"),
]


@pytest.mark.parametrize(
    ("mangle", "rule"),
    [(m, r) for _, m, r in BAD_RESIDENT_IDS],
    ids=[i for i, _, _ in BAD_RESIDENT_IDS],
)
def test_a_bad_resident_id_is_refused_naming_the_field_and_rule(
    federation: Federation, as_agency: Stub, mangle: Callable[[str], str], rule: str
) -> None:
    bad = mangle(_person(federation))
    error = _refused(
        as_agency.PersonQuery,
        _person_query(federation, bad),
        _agency_token(federation),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    details = error.details() or ""
    assert details.startswith("resident_id: "), details
    assert rule in details
    assert _field(error) == "resident_id"


def _uscc_with(valid: str, position: int, char: str) -> str:
    """`valid` with the character at 1-based `position` replaced, check character recomputed."""
    first17 = valid[: position - 1] + char + valid[position:17]
    return first17 + uscc_check_char(first17)


BAD_CREDIT_CODES: list[tuple[str, Callable[[str], str], str]] = [
    ("length", lambda v: v + "1", "must be 18 characters, got 19"),
    (
        "check-character",
        lambda v: v[:17] + ("0" if v[17] != "0" else "1"),
        "does not match the GB 32100-2015 mod-31 check",
    ),
    # 'I' is excluded from the GB 32100-2015 set so it cannot be misread as '1'
    ("character-set", lambda v: v[:10] + "I" + v[11:], "not in the GB 32100-2015 character set"),
    ("lower-case", lambda v: v[:10] + "a" + v[11:], "letters must be upper case"),
    ("province", lambda v: _uscc_with(v, 3, "9"), "does not start with a province-level code"),
]


@pytest.mark.parametrize(
    ("mangle", "rule"),
    [(m, r) for _, m, r in BAD_CREDIT_CODES],
    ids=[i for i, _, _ in BAD_CREDIT_CODES],
)
def test_a_bad_credit_code_is_refused_naming_the_field_and_rule(
    federation: Federation, as_agency: Stub, mangle: Callable[[str], str], rule: str
) -> None:
    bad = mangle(_firm(federation))
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation, credit_code=bad),
        _agency_token(federation),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    details = error.details() or ""
    assert details.startswith("credit_code: "), details
    assert rule in details
    assert _field(error) == "credit_code"


@pytest.fixture
def silent_listener() -> Iterator[socket.socket]:
    """A listening TCP socket that never answers: any connection attempt to it is visible."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        yield listener


def _assert_never_connected(listener: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        connection, _ = listener.accept()
        connection.close()


def test_the_sdk_refuses_bad_identifiers_before_any_call(
    federation: Federation, silent_listener: socket.socket
) -> None:
    # the client points at a socket that accepts nothing: had the SDK called out, the listener
    # would hold a pending connection (and the call would time out instead of failing at once)
    port = silent_listener.getsockname()[1]
    client = Client(
        f"127.0.0.1:{port}",
        tls=federation.tls(AGENCY),
        token=_agency_token(federation),
        keys=federation.keys[AGENCY],
        catalogue=federation.catalogue,
        timeout_s=2.0,
    )
    with client:
        person = _person(federation)
        with pytest.raises(sdk.InvalidArgument) as caught:
            client.person_score(person[:17] + "Y", purpose="loan_underwriting")
        assert caught.value.field == "resident_id"
        assert "it must be a digit 0-9 or 'X'" in caught.value.message
        assert person[:17] not in caught.value.message  # the rule is named, never the number
        with pytest.raises(sdk.InvalidArgument) as caught:
            firm = _firm(federation)
            client.enterprise_score(firm[:10] + "a" + firm[11:], purpose="credit_report")
        assert caught.value.field == "credit_code"
        assert "letters must be upper case" in caught.value.message
        with pytest.raises(sdk.InvalidArgument) as caught:
            client.grant_consent(
                subject_id=person[:10],
                grantee=AGENCY,
                purpose="loan_underwriting",
                expires_at=datetime.now(UTC) + timedelta(days=1),
            )
        assert caught.value.field == "subject_id"
    _assert_never_connected(silent_listener)


# --- transport: who may connect ------------------------------------------------------------------


def _assert_connection_refused(channel: grpc.Channel, federation: Federation) -> None:
    with channel, pytest.raises(grpc.RpcError) as caught:
        Stub(channel).EnterpriseQuery(
            _enterprise_query(federation),
            timeout=TIMEOUT_S,
            metadata=_metadata(_agency_token(federation)),
        )
    assert isinstance(caught.value, grpc.Call)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_plaintext_connection_to_the_coordinator_is_refused(federation: Federation) -> None:
    _assert_connection_refused(grpc.insecure_channel(federation.target), federation)


def test_a_client_certificate_from_another_ca_is_refused(
    federation: Federation, tmp_path: Path
) -> None:
    rogue = init_platform(tmp_path / "rogue", departments=[], requesters=[AGENCY])[
        f"requesters/{AGENCY}"
    ]
    # the client trusts the real CA, so only the coordinator's check of the client cert can fail
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(federation.certs / "ca.pem").read_bytes(),
        private_key=rogue.key.read_bytes(),
        certificate_chain=rogue.cert.read_bytes(),
    )
    channel = grpc.secure_channel(
        federation.target,
        credentials,
        options=[("grpc.ssl_target_name_override", COORDINATOR_SERVER_NAME)],
    )
    _assert_connection_refused(channel, federation)


def test_a_connection_without_a_client_certificate_is_refused(federation: Federation) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(federation.certs / "ca.pem").read_bytes()
    )
    channel = grpc.secure_channel(
        federation.target,
        credentials,
        options=[("grpc.ssl_target_name_override", COORDINATOR_SERVER_NAME)],
    )
    _assert_connection_refused(channel, federation)


def test_a_node_certificate_may_not_query_the_coordinator(federation: Federation) -> None:
    tls = _tls(federation, PeerRole.NODE, "psb")
    with secure_channel(federation.target, tls, server_name=COORDINATOR_SERVER_NAME) as channel:
        error = _refused(
            Stub(channel).EnterpriseQuery,
            _enterprise_query(federation),
            _agency_token(federation),
            grpc.StatusCode.PERMISSION_DENIED,
        )
    assert "only requesters may call the coordinator" in (error.details() or "")
    assert "node 'psb'" in (error.details() or "")


@pytest.fixture(scope="module")
def misrouted_federation(
    tmp_path_factory: pytest.TempPathFactory,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    """Four enterprise nodes of their own, and nodes.toml sending customs to a tax node."""
    departments = ("court", "tax", "samr", "eco")
    tax_port = federation.nodes["tax"].port
    fed = start_federation(
        tmp_path_factory.mktemp("misrouted"),
        catalogue=restricted_catalogue((*departments, "customs")),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=departments,
        deadline_s=2.0,
        extra_endpoints=[NodeEndpoint(DepartmentId("customs"), f"127.0.0.1:{tax_port}")],
    )
    yield fed
    stop_federation(fed)


def test_a_node_presenting_another_departments_certificate_is_reported_missing(
    misrouted_federation: Federation,
) -> None:
    fed = misrouted_federation
    with fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES) as client:
        client.register_key()
        report = client.enterprise_score(_firm(fed), purpose="credit_report")
    assert report.partial
    assert {s.department for s in report.answered} == {"court", "tax", "samr", "eco"}
    (missing,) = report.missing
    assert missing.department == "customs"
    assert "TLS identity check" in missing.detail
    # grpc's own words: the handshake failed on the name, not on reachability
    assert "Hostname Verification Check failed" in missing.detail
    # customs owns the customs_certification category: unknown, not zero
    assert report.bonuses["customs_certification"] is None


# --- tokens over the wire ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Any) -> str:
    return _b64(json.dumps(obj).encode())


def _claims(federation: Federation, **overrides: Any) -> dict[str, Any]:
    """A complete, currently valid claim set for agency-1; `overrides` replace claims, and an
    override of None removes the claim."""
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, Any] = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "sub": AGENCY,
        "exp": now + 600,
        "iat": now,
        "nbf": now,
        "jti": "forged-" + secrets.token_urlsafe(16),
        "purposes": list(AGENCY_PURPOSES),
        "key_fp": federation.keys[AGENCY].fingerprint,
        "role": Role.CREDIT_AGENCY.value,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


@pytest.fixture(scope="module")
def issuer_private_key(issuer_keys: IssuerKeyPaths) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(issuer_keys.private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def _sign(claims: dict[str, Any], key: Ed25519PrivateKey) -> str:
    """Sign claims as they are, bypassing the claim checks jwt.encode applies."""
    return jwt.api_jws.encode(json.dumps(claims).encode(), key, algorithm="EdDSA")


def test_a_forged_token_with_valid_claims_is_accepted(
    federation: Federation, as_agency: Stub, issuer_private_key: Ed25519PrivateKey
) -> None:
    # the control for the forgeries below: each changes one thing in this token
    token = _sign(_claims(federation), issuer_private_key)
    response = as_agency.EnterpriseQuery(
        _enterprise_query(federation), timeout=TIMEOUT_S, metadata=_metadata(token)
    )
    assert len(response.answered) == len(
        federation.catalogue.departments_for(SubjectKind.ENTERPRISE)
    )


def _tampered(federation: Federation, key: Ed25519PrivateKey) -> str:
    header, _, signature = _sign(_claims(federation), key).split(".")
    payload = _segment(_claims(federation, purposes=["credit_report", "government_procurement"]))
    return f"{header}.{payload}.{signature}"


def _alg_none(federation: Federation, key: Ed25519PrivateKey) -> str:
    return _segment({"alg": "none", "typ": "JWT"}) + "." + _segment(_claims(federation)) + "."


def _hs256_with_public_key(federation: Federation, key: Ed25519PrivateKey) -> str:
    # the classic confusion attack: an HMAC keyed with the verifier's public key bytes
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = _segment({"alg": "HS256", "typ": "JWT"}) + "." + _segment(_claims(federation))
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(mac)


def _now() -> int:
    return int(datetime.now(UTC).timestamp())


FORGERIES: list[tuple[str, Callable[[Federation, Ed25519PrivateKey], str], str]] = [
    (
        "other-signing-key",
        lambda f, k: _sign(_claims(f), Ed25519PrivateKey.generate()),
        "signature does not verify against the platform issuer key",
    ),
    (
        "tampered-payload",
        _tampered,
        "signature does not verify against the platform issuer key",
    ),
    ("alg-none", _alg_none, "token algorithm none is not allowed; only EdDSA"),
    ("hs256-public-key", _hs256_with_public_key, "token algorithm HS256 is not allowed"),
    (
        "expired",
        lambda f, k: _sign(_claims(f, iat=_now() - 1200, nbf=_now() - 1200, exp=_now() - 600), k),
        "token expired at",
    ),
    (
        "not-yet-valid",
        lambda f, k: _sign(_claims(f, nbf=_now() + 600, exp=_now() + 1200), k),
        "token is not yet valid: 'nbf'",
    ),
    (
        "wrong-issuer",
        lambda f, k: _sign(_claims(f, iss="someone-else"), k),
        "token issuer 'someone-else' is not the platform issuer",
    ),
    (
        "wrong-audience",
        lambda f, k: _sign(_claims(f, aud="another-service"), k),
        "token audience 'another-service' does not include 'osmanthus'",
    ),
    (
        "missing-claim",
        lambda f, k: _sign(_claims(f, key_fp=None), k),
        "token lacks required claim(s) 'key_fp'",
    ),
]


@pytest.mark.parametrize(
    ("forge", "cause"), [(f, c) for _, f, c in FORGERIES], ids=[i for i, _, _ in FORGERIES]
)
def test_a_bad_token_is_unauthenticated_naming_the_cause(
    federation: Federation,
    as_agency: Stub,
    issuer_private_key: Ed25519PrivateKey,
    forge: Callable[[Federation, Ed25519PrivateKey], str],
    cause: str,
) -> None:
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation),
        forge(federation, issuer_private_key),
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert cause in (error.details() or "")


def test_a_single_use_token_works_once_and_its_replay_is_refused(
    federation: Federation, as_agency: Stub
) -> None:
    token = _agency_token(federation, single_use=True)
    request = _enterprise_query(federation)
    first = as_agency.EnterpriseQuery(request, timeout=TIMEOUT_S, metadata=_metadata(token))
    assert first.answered
    error = _refused(as_agency.EnterpriseQuery, request, token, grpc.StatusCode.UNAUTHENTICATED)
    details = error.details() or ""
    assert "was already used" in details
    assert "cannot be replayed" in details


def test_a_token_for_another_requester_than_the_certificate_is_unauthenticated(
    federation: Federation, as_agency: Stub
) -> None:
    token = federation.token("bank-1", role=Role.BANK, purposes=["credit_report"])
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation, keys=federation.keys["bank-1"]),
        token,
        grpc.StatusCode.UNAUTHENTICATED,
    )
    assert f"token subject 'bank-1' does not match the client certificate ('{AGENCY}')" in (
        error.details() or ""
    )


def test_a_key_not_bound_to_the_token_is_refused(federation: Federation, as_agency: Stub) -> None:
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation, keys=federation.keys["bank-1"]),
        _agency_token(federation),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "is not the key bound to the token" in (error.details() or "")


def test_an_unregistered_key_is_a_failed_precondition(
    federation: Federation, as_agency: Stub
) -> None:
    # a brand-new key, so no other test can have registered it; the token binds it correctly
    public, private = generate_keypair()
    fresh = RequesterKeys(public, private)
    token = _agency_token(federation, keys=fresh)
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation, keys=fresh),
        token,
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    details = error.details() or ""
    assert f"is not registered for {AGENCY}" in details
    assert "call RegisterKey first" in details


def test_a_purpose_not_in_the_token_is_refused(federation: Federation, as_agency: Stub) -> None:
    error = _refused(
        as_agency.EnterpriseQuery,
        _enterprise_query(federation, purpose="government_procurement"),
        _agency_token(federation),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "purpose 'government_procurement' is not among the token's purposes" in (
        error.details() or ""
    )


@pytest.fixture(scope="module")
def bank(federation: Federation) -> Iterator[Client]:
    """A bank holding a token for credit reports: a purpose the central policy does not give
    banks for persons."""
    client = federation.client("bank-1", role=Role.BANK, purposes=["credit_report"])
    client.register_key()
    yield client
    client.close()


def test_the_central_policy_refuses_a_bank_credit_report_on_a_person(
    federation: Federation, bank: Client, registrar: Client
) -> None:
    person = _person(federation)
    # with the person's valid consent, so the refusal can only come from the policy itself
    consent = consent_for(registrar, person, grantee="bank-1", purpose="credit_report")
    with pytest.raises(sdk.PermissionDenied) as caught:
        bank.person_score(person, purpose="credit_report", consent_id=consent)
    message = caught.value.message
    assert message.startswith("central policy: ")
    assert "no policy permits" in message
    assert "role 'bank'" in message
    assert "purpose 'credit_report'" in message
    # the same bank's enterprise credit report is permitted: the refusal is about persons
    report = bank.enterprise_score(_firm(federation), purpose="credit_report")
    assert not report.partial


def test_the_sdk_surfaces_a_refusal_as_its_exception_type(
    federation: Federation, agency: Client
) -> None:
    with pytest.raises(sdk.PermissionDenied) as caught:
        agency.enterprise_score(_firm(federation), purpose="government_procurement")
    assert "is not among the token's purposes" in caught.value.message
    assert isinstance(caught.value, sdk.OsmanthusError)
