"""A subjects' portal device's token (role kiosk or portal): purpose self_query alone and a
sealing key, or the platform does not sign it and no verifier accepts it."""

from __future__ import annotations

import datetime
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.cli import main
from osmanthus.core.errors import InvalidArgument, Unauthenticated
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.tokens import ReplayCache, TokenIssuer, TokenVerifier
from osmanthus.core.types import SELF_QUERY, SUBJECT_DEVICE_ROLES, Role
from tests.forge import unsafe_forge_token

KEY_FP = hashlib.sha256(b"a Paillier modulus").hexdigest()
SEAL_FP = seal_fingerprint(public_bytes(X25519PrivateKey.generate()))
HOUR = datetime.timedelta(hours=1)
LOAN = "loan_underwriting"
DEVICES = sorted(SUBJECT_DEVICE_ROLES, key=lambda role: role.value)
#: purposes a device token must not carry: another purpose, one more, none but another
WRONG_PURPOSES = ([LOAN], [SELF_QUERY, LOAN], [LOAN, SELF_QUERY], ["credit_report"])


@pytest.fixture
def issuer(issuer_keys: Any) -> TokenIssuer:
    return TokenIssuer.from_file(issuer_keys.private)


@pytest.fixture
def verifier(issuer_keys: Any) -> TokenVerifier:
    return TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache())


def _issue(issuer: TokenIssuer, role: Role, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "requester": "kiosk-1",
        "role": role,
        "purposes": [SELF_QUERY],
        "key_fingerprint": KEY_FP,
        "ttl": HOUR,
        "seal_fingerprint": SEAL_FP,
    }
    arguments.update(overrides)
    return issuer.issue(**arguments)


def test_the_constants_name_the_two_devices_and_their_one_purpose() -> None:
    assert {Role.KIOSK, Role.PORTAL} == SUBJECT_DEVICE_ROLES
    assert SELF_QUERY == "self_query"


@pytest.mark.parametrize("role", DEVICES)
def test_a_device_token_for_self_query_with_a_sealing_key_is_issued_and_verified(
    issuer: TokenIssuer, verifier: TokenVerifier, role: Role
) -> None:
    claims = verifier.verify(_issue(issuer, role))
    assert claims.role is role and claims.purposes == {SELF_QUERY}
    assert claims.seal_fingerprint == SEAL_FP


@pytest.mark.parametrize("role", DEVICES)
@pytest.mark.parametrize("purposes", WRONG_PURPOSES)
def test_issue_refuses_a_device_token_for_any_other_purpose(
    issuer: TokenIssuer, role: Role, purposes: list[str]
) -> None:
    with pytest.raises(InvalidArgument, match="purposes must be exactly") as caught:
        _issue(issuer, role, purposes=purposes)
    assert caught.value.field == "purposes"


@pytest.mark.parametrize("role", DEVICES)
def test_issue_refuses_a_device_token_without_a_sealing_key(
    issuer: TokenIssuer, role: Role
) -> None:
    with pytest.raises(InvalidArgument, match="must name the device's sealing key") as caught:
        _issue(issuer, role, seal_fingerprint=None)
    assert caught.value.field == "seal_fingerprint"


def test_other_roles_keep_their_purposes_and_need_no_sealing_key(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(
        issuer, Role.CREDIT_AGENCY, requester="agency-1", purposes=[LOAN, SELF_QUERY],
        seal_fingerprint=None,
    )  # fmt: skip
    assert verifier.verify(token).purposes == {LOAN, SELF_QUERY}


@pytest.mark.parametrize("role", DEVICES)
@pytest.mark.parametrize("purposes", WRONG_PURPOSES)
def test_verify_refuses_a_forged_device_token_for_another_purpose(
    issuer_keys: Any, verifier: TokenVerifier, role: Role, purposes: list[str]
) -> None:
    # signed with the platform's own key, past the issuer's check: the verifier still says no
    forged = unsafe_forge_token(
        issuer_keys.private, requester="kiosk-1", role=role.value, purposes=purposes,
        key_fingerprint=KEY_FP, seal_fingerprint=SEAL_FP,
    )  # fmt: skip
    with pytest.raises(Unauthenticated, match="token claim 'purposes': role") as caught:
        verifier.verify(forged)
    assert LOAN in str(caught.value) or "credit_report" in str(caught.value)


@pytest.mark.parametrize("role", DEVICES)
def test_verify_refuses_a_forged_device_token_without_a_sealing_key(
    issuer_keys: Any, verifier: TokenVerifier, role: Role
) -> None:
    forged = unsafe_forge_token(
        issuer_keys.private, requester="kiosk-1", role=role.value, purposes=[SELF_QUERY],
        key_fingerprint=KEY_FP,
    )  # fmt: skip
    with pytest.raises(Unauthenticated, match="token claim 'seal_fp': role"):
        verifier.verify(forged)


def test_the_forge_signs_what_the_verifier_accepts_when_the_claims_are_right(
    issuer_keys: Any, verifier: TokenVerifier
) -> None:
    # so the refusals above are the device check's, not the forge's
    forged = unsafe_forge_token(
        issuer_keys.private, requester="kiosk-1", role="kiosk", purposes=[SELF_QUERY],
        key_fingerprint=KEY_FP, seal_fingerprint=SEAL_FP,
    )  # fmt: skip
    assert verifier.verify(forged).role is Role.KIOSK


def test_token_issue_refuses_a_kiosk_token_for_loan_underwriting(
    issuer_keys: Any, tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    seal = tmp_path / "seal.raw"
    seal.write_bytes(public_bytes(X25519PrivateKey.generate()))
    code = main(
        [
            "token", "issue", "--issuer-key", str(issuer_keys.private), "--requester", "kiosk-1",
            "--role", "kiosk", "--purpose", SELF_QUERY, "--purpose", LOAN,
            "--key-fingerprint", KEY_FP, "--seal-key", str(seal),
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code != 0 and captured.out == ""
    assert "purposes" in captured.err and "exactly ['self_query']" in captured.err
