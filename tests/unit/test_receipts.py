"""Consent receipts: signing, every refusal by name, key files, the SDK helper and the CLI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import logging
import os
import stat
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sdk
from certs import create_consent_key, init_platform
from certs.authority import restore_consent_public_key_file
from osmanthus.cli import main
from osmanthus.cli.coordinator import _DEFAULT_RECEIPT_ISSUER
from osmanthus.core.errors import ConfigError, InvalidArgument, PermissionDenied, Unauthenticated
from osmanthus.core.ids import make_resident_id, make_uscc
from osmanthus.core.receipts import (
    ENTERPRISE_RECEIPT_TYPE,
    RECEIPT_ISSUER,
    RECEIPT_TYPE,
    ConsentReceipt,
    MalformedReceipt,
    ReceiptError,
    ReceiptMismatch,
    ReceiptNotInForce,
    UntrustedReceipt,
    consent_key_id,
    generate_consent_keypair,
    issue_receipt,
    load_consent_key_pair,
    load_consent_private_key,
    load_consent_public_key,
    load_or_create_consent_key,
    restore_consent_public_key,
    verify_receipt,
)
from osmanthus.core.types import SubjectKind

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
# half a second past the minute: receipts carry whole seconds
GRANTED = datetime(2026, 11, 26, 10, 0, 0, 500_000, tzinfo=UTC)
EXPIRES = GRANTED + timedelta(days=30)
DURING = GRANTED + timedelta(days=1)
ALICE = make_resident_id(region="320505", birth=date(1990, 1, 1), sequence=1)
ACME = make_uscc(authority="9", category="1", region="320505", organisation="M000100Y4")
BOB = make_resident_id(region="320508", birth=date(1985, 6, 30), sequence=2)
CONSENT_ID = "cns_" + "Ab3_-" * 4 + "xy"


@dataclass(frozen=True)
class Facts:
    consent_id: str = CONSENT_ID
    subject_id: str = ALICE
    grantee: str = "bank-1"
    purpose: str = "loan_underwriting"
    granted_at: datetime = GRANTED
    expires_at: datetime = EXPIRES
    subject_kind: SubjectKind = SubjectKind.PERSON


def _receipt(key: Ed25519PrivateKey = KEY, **kw: Any) -> str:
    issuer = kw.pop("issuer", RECEIPT_ISSUER)
    return issue_receipt(consent=Facts(**kw), private_key=key, issuer=issuer)


def _verify(receipt: str, **kw: Any) -> ConsentReceipt:
    kw.setdefault("public_key", KEY.public_key())
    kw.setdefault("now", DURING)
    return verify_receipt(receipt, **kw)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parts(receipt: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = receipt.split(".")
    return json.loads(_unb64(header)), json.loads(_unb64(payload)), signature


def _join(header: dict[str, Any], payload: dict[str, Any], signature: str) -> str:
    encode = [_b64(json.dumps(part).encode()) for part in (header, payload)]
    return ".".join([*encode, signature])


def _signed(header: dict[str, Any], payload: dict[str, Any] | bytes) -> str:
    """A JWS with any header and payload, correctly signed with KEY."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(raw)}"
    return f"{signing_input}.{_b64(KEY.sign(signing_input.encode()))}"


def _good_header() -> dict[str, Any]:
    return {"alg": "EdDSA", "typ": RECEIPT_TYPE, "kid": consent_key_id(KEY.public_key())}


# --- round trip ---------------------------------------------------------------------------------


def test_a_receipt_round_trips_with_every_fact_and_whole_seconds() -> None:
    receipt = _receipt()
    verified = _verify(
        receipt,
        expected_grantee="bank-1",
        expected_purpose="loan_underwriting",
        expected_subject=ALICE,
    )
    assert verified == ConsentReceipt(
        consent_id=CONSENT_ID,  # type: ignore[arg-type]
        subject_id=ALICE,
        grantee="bank-1",  # type: ignore[arg-type]
        purpose="loan_underwriting",  # type: ignore[arg-type]
        granted_at=GRANTED.replace(microsecond=0),
        expires_at=EXPIRES.replace(microsecond=0),
        issuer=RECEIPT_ISSUER,
        key_id=consent_key_id(KEY.public_key()),
    )
    assert verified.masked_subject == "*" * 14 + ALICE[-4:]


def test_the_header_names_the_type_algorithm_and_key_and_the_claims_are_registered_names() -> None:
    header, payload, _ = _parts(_receipt())
    assert header == {"alg": "EdDSA", "typ": "osmanthus-consent+jwt", "kid": header["kid"]}
    assert header["kid"] == consent_key_id(KEY.public_key())
    granted = int(GRANTED.timestamp())
    assert payload == {
        "iss": RECEIPT_ISSUER,
        "jti": CONSENT_ID,
        "sub": ALICE,
        "aud": "bank-1",
        "purpose": "loan_underwriting",
        "iat": granted,
        "nbf": granted,
        "exp": int(EXPIRES.timestamp()),
    }


def test_the_key_id_is_the_rfc_7638_thumbprint() -> None:
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"' + _b64(raw) + '"}'
    assert consent_key_id(KEY.public_key()) == _b64(hashlib.sha256(jwk.encode()).digest())
    assert consent_key_id(KEY.public_key()) != consent_key_id(OTHER_KEY.public_key())


def test_the_same_consent_always_gets_the_same_receipt() -> None:
    # Ed25519 is deterministic: a receipt signed again on read equals the one stored
    assert _receipt() == _receipt()


# --- tampering, keys and algorithms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("purpose", "credit_report"),
        ("aud", "agency-1"),
        ("sub", BOB),
        ("exp", int((EXPIRES + timedelta(days=365)).timestamp())),
        ("jti", "cns_" + "B" * 22),
    ],
)
def test_a_changed_claim_breaks_the_signature(claim: str, value: object) -> None:
    header, payload, signature = _parts(_receipt())
    payload[claim] = value
    with pytest.raises(UntrustedReceipt, match="signature does not verify against consent key"):
        _verify(_join(header, payload, signature))


def test_a_receipt_of_another_key_names_both_keys() -> None:
    receipt = _receipt(OTHER_KEY)
    with pytest.raises(UntrustedReceipt) as caught:
        _verify(receipt)
    message = caught.value.message
    assert consent_key_id(OTHER_KEY.public_key()) in message
    assert consent_key_id(KEY.public_key()) in message
    assert "not by the key given" in message


def test_a_receipt_of_another_key_without_kid_fails_on_the_signature() -> None:
    _, payload, _ = _parts(_receipt(OTHER_KEY))
    forged = jwt.encode(payload, OTHER_KEY, algorithm="EdDSA", headers={"typ": RECEIPT_TYPE})
    with pytest.raises(UntrustedReceipt, match="signature does not verify"):
        _verify(forged)


def test_a_persons_receipt_carries_no_subject_kind_claim() -> None:
    _, payload, _ = _parts(_receipt())
    assert "sub_kind" not in payload
    assert _verify(_receipt()).subject_kind is SubjectKind.PERSON


def test_an_enterprises_receipt_names_its_kind_and_verifies_against_its_code() -> None:
    receipt = _receipt(subject_id=ACME, subject_kind=SubjectKind.ENTERPRISE)
    header, payload, _ = _parts(receipt)
    # a type of its own: a verifier that knows only persons' receipts refuses it by type
    assert header["typ"] == ENTERPRISE_RECEIPT_TYPE != RECEIPT_TYPE
    assert payload["sub"] == ACME and payload["sub_kind"] == "enterprise"
    verified = _verify(receipt, expected_subject=ACME, expected_kind=SubjectKind.ENTERPRISE)
    assert verified.subject_kind is SubjectKind.ENTERPRISE and verified.subject_id == ACME
    with pytest.raises(ReceiptMismatch):
        _verify(receipt, expected_subject=ALICE)
    with pytest.raises(ReceiptMismatch) as caught:
        _verify(receipt, expected_kind=SubjectKind.PERSON)
    assert caught.value.field == "subject_kind"
    with pytest.raises(ReceiptMismatch) as caught:
        _verify(_receipt(), expected_kind=SubjectKind.ENTERPRISE)
    assert caught.value.field == "subject_kind"


def test_an_id_valid_as_both_kinds_cannot_pass_an_enterprises_consent_off_as_a_persons() -> None:
    both = "513130200309013727"  # a valid resident id and a valid credit code
    receipt = _receipt(subject_id=both, subject_kind=SubjectKind.ENTERPRISE)
    with pytest.raises(ReceiptMismatch):
        _verify(receipt, expected_subject=both, expected_kind=SubjectKind.PERSON)
    # the type and the claim must agree, so neither can be changed alone
    header, payload, _ = _parts(receipt)
    person_typed = _signed({**header, "typ": RECEIPT_TYPE}, payload)
    with pytest.raises(MalformedReceipt, match="a person's receipt has no such claim"):
        _verify(person_typed)
    no_claim = {k: v for k, v in payload.items() if k != "sub_kind"}
    with pytest.raises(MalformedReceipt, match="not 'enterprise' as its type says"):
        _verify(_signed(header, no_claim))


def test_a_credit_code_is_not_accepted_as_a_persons_subject() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _receipt(subject_id=ACME)
    assert caught.value.field == "consent.subject_id"


@pytest.mark.parametrize("kind", ["person", "ENTERPRISE", 1, None])
def test_a_subject_kind_claim_other_than_enterprise_is_malformed(kind: object) -> None:
    _, payload, _ = _parts(_receipt())
    forged = _signed({"alg": "EdDSA", "typ": RECEIPT_TYPE, "kid": consent_key_id(KEY.public_key())},
                     {**payload, "sub_kind": kind})  # fmt: skip
    with pytest.raises(MalformedReceipt, match="sub_kind"):
        _verify(forged)


def test_a_receipt_verified_against_the_wrong_public_key_is_refused() -> None:
    with pytest.raises(UntrustedReceipt):
        _verify(_receipt(), public_key=OTHER_KEY.public_key())


def test_hs256_keyed_with_the_public_key_bytes_is_refused_before_any_key_is_used() -> None:
    pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _, payload, _ = _parts(_receipt())
    header = {"alg": "HS256", "typ": RECEIPT_TYPE}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(UntrustedReceipt, match="algorithm 'HS256' is not allowed"):
        _verify(f"{signing_input}.{_b64(mac)}")


def test_alg_none_is_refused() -> None:
    _, payload, _ = _parts(_receipt())
    unsigned = _join({"alg": "none", "typ": RECEIPT_TYPE}, payload, "")
    with pytest.raises(UntrustedReceipt, match="algorithm 'none' is not allowed"):
        _verify(unsigned)


def test_a_receipt_of_another_issuer_is_refused_even_with_the_right_key() -> None:
    with pytest.raises(UntrustedReceipt, match="issuer 'somebody' is not the consent registry"):
        _verify(_receipt(issuer="somebody"))


def test_a_deployments_own_issuer_verifies_only_where_it_is_pinned() -> None:
    receipt = _receipt(issuer="https://credit.suzhou.example/consents")
    verified = _verify(receipt, issuer="https://credit.suzhou.example/consents")
    assert verified.issuer == "https://credit.suzhou.example/consents"
    with pytest.raises(UntrustedReceipt, match="is not the consent registry") as caught:
        _verify(receipt)
    assert caught.value.field == "receipt"


@pytest.mark.parametrize("issuer", ["", "two words", "x" * 256, "tab\there", 7])
def test_an_issuer_that_no_receipt_can_carry_is_the_callers_error(issuer: object) -> None:
    with pytest.raises(InvalidArgument, match="not an issuer name") as caught:
        _verify(_receipt(), issuer=issuer)
    assert caught.value.field == "issuer" and not isinstance(caught.value, ReceiptError)
    with pytest.raises(InvalidArgument, match="not an issuer name"):
        _receipt(issuer=issuer)


def test_an_access_token_signed_with_the_same_key_is_not_a_receipt() -> None:
    token = jwt.encode({"sub": "bank-1"}, KEY, algorithm="EdDSA", headers={"typ": "JWT"})
    with pytest.raises(MalformedReceipt, match="not a consent receipt"):
        _verify(token)


# --- time ---------------------------------------------------------------------------------------


def test_an_expired_receipt_says_when_it_expired() -> None:
    receipt = _receipt()
    with pytest.raises(ReceiptNotInForce) as caught:
        _verify(receipt, now=EXPIRES + timedelta(hours=1))
    message = caught.value.message
    assert f"receipt for consent {CONSENT_ID} expired at 2026-12-26T10:00:00Z" in message
    assert "(now 2026-12-26T11:00:00Z)" in message


def test_the_expiry_second_itself_is_already_expired() -> None:
    with pytest.raises(ReceiptNotInForce, match="expired at"):
        _verify(_receipt(), now=EXPIRES.replace(microsecond=0))
    _verify(_receipt(), now=EXPIRES.replace(microsecond=0) - timedelta(seconds=1))


def test_a_receipt_before_its_grant_is_not_yet_valid() -> None:
    with pytest.raises(ReceiptNotInForce) as caught:
        _verify(_receipt(), now=GRANTED - timedelta(minutes=1))
    assert "is not yet valid: the consent starts at 2026-11-26T10:00:00Z" in caught.value.message


def test_a_few_seconds_of_clock_skew_at_the_start_are_tolerated() -> None:
    _verify(_receipt(), now=GRANTED - timedelta(seconds=4))
    with pytest.raises(ReceiptNotInForce):
        _verify(_receipt(), now=GRANTED - timedelta(seconds=4), leeway=timedelta(0))


def test_now_must_be_timezone_aware() -> None:
    with pytest.raises(InvalidArgument, match="timezone-aware") as caught:
        _verify(_receipt(), now=DURING.replace(tzinfo=None))
    assert caught.value.field == "now"


# --- expectations -------------------------------------------------------------------------------


def test_a_receipt_for_another_purpose_names_both() -> None:
    with pytest.raises(ReceiptMismatch) as caught:
        _verify(_receipt(purpose="credit_report"), expected_purpose="loan_underwriting")
    assert caught.value.field == "purpose"
    assert caught.value.message == (
        f"receipt for consent {CONSENT_ID} is for purpose 'credit_report', not 'loan_underwriting'"
    )


def test_a_receipt_for_another_grantee_names_both() -> None:
    with pytest.raises(ReceiptMismatch) as caught:
        _verify(_receipt(), expected_grantee="agency-1")
    assert caught.value.field == "grantee"
    assert "is for grantee 'bank-1', not 'agency-1'" in caught.value.message


def test_a_receipt_of_another_subject_masks_both_ids() -> None:
    with pytest.raises(ReceiptMismatch) as caught:
        _verify(_receipt(), expected_subject=BOB)
    message = caught.value.message
    assert caught.value.field == "subject"
    assert f"was given by subject {'*' * 14}{ALICE[-4:]}, not {'*' * 14}{BOB[-4:]}" in message
    assert ALICE not in message and BOB not in message


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("expected_subject", "12345"),
        ("expected_grantee", "NOT A NAME!"),
        ("expected_grantee", ""),
        ("expected_purpose", "Bad Purpose"),
    ],
)
def test_an_expected_value_no_receipt_can_name_is_the_callers_error(
    parameter: str, value: str
) -> None:
    # a mismatch (exit 4) would tell the holder the receipt is wrong; it is the question
    with pytest.raises(InvalidArgument) as caught:
        _verify(_receipt(), **{parameter: value})
    assert caught.value.field == parameter
    assert not isinstance(caught.value, ReceiptError)


def test_mismatches_are_reported_before_expiry_as_the_registry_does() -> None:
    with pytest.raises(ReceiptMismatch):
        _verify(_receipt(), expected_purpose="credit_report", now=EXPIRES + timedelta(days=1))


# --- malformed ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "non-empty compact JWS"),
        ("not a receipt", "not a compact JWS"),
        ("a.b", "not a compact JWS"),
        ("x" * 5000, "more than the 4096"),
        ("eyJhbGciOiJFZERTQSJ9.e30.!!", "not a compact JWS"),
        ("bm90IGpzb24.e30.c2ln", "unreadable header"),
    ],
)
def test_text_that_is_not_a_receipt_is_malformed(text: str, problem: str) -> None:
    with pytest.raises(MalformedReceipt, match=problem):
        _verify(text)


def test_missing_claims_are_named() -> None:
    _, payload, _ = _parts(_receipt())
    del payload["purpose"], payload["exp"]
    with pytest.raises(MalformedReceipt, match="lacks claim\\(s\\) 'purpose', 'exp'"):
        _verify(_signed(_good_header(), payload))


@pytest.mark.parametrize(
    ("claim", "value", "problem"),
    [
        ("exp", True, "expected whole seconds"),
        ("nbf", "yesterday", "expected whole seconds"),
        ("iat", 1.5, "expected whole seconds"),
        ("aud", ["bank-1"], "expected a string"),
        ("aud", "Bank One", "not a requester id"),
        ("purpose", "Loan", "not a purpose"),
        ("sub", "320505199001010000", "not a resident id"),
        ("jti", "cns/../x", "not a consent id"),
        # the registry's ids only: "cns_" and 22 base64url characters
        ("jti", "cns_" + "A" * 21, "not a consent id"),
        ("jti", "abc_" + "A" * 22, "not a consent id"),
        ("jti", "A" * 128, "not a consent id"),
        ("exp", 10**20, "not a usable time"),
    ],
)
def test_a_signed_receipt_with_a_bad_claim_is_malformed(
    claim: str, value: object, problem: str
) -> None:
    _, payload, _ = _parts(_receipt())
    payload[claim] = value
    with pytest.raises(MalformedReceipt, match=problem):
        _verify(_signed(_good_header(), payload))


def test_an_expiry_before_the_grant_is_inconsistent() -> None:
    _, payload, _ = _parts(_receipt())
    payload["exp"] = payload["nbf"] - 1
    with pytest.raises(MalformedReceipt, match="'exp' is before 'nbf'"):
        _verify(_signed(_good_header(), payload))


def test_an_issue_time_after_the_grant_is_inconsistent() -> None:
    _, payload, _ = _parts(_receipt())
    payload["iat"] = payload["nbf"] + 1
    with pytest.raises(MalformedReceipt, match="'iat' is after 'nbf'"):
        _verify(_signed(_good_header(), payload))
    payload["iat"] = payload["nbf"] - 1  # issued before the consent starts: sane
    assert _verify(_signed(_good_header(), payload)).consent_id == CONSENT_ID


def test_duplicate_claims_are_ambiguous() -> None:
    raw = json.dumps(_parts(_receipt())[1])[:-1] + ', "purpose": "credit_report"}'
    with pytest.raises(MalformedReceipt, match="'purpose' appears twice"):
        _verify(_signed(_good_header(), raw.encode()))


def test_a_payload_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedReceipt, match="not a JSON object"):
        _verify(_signed(_good_header(), b"[1, 2]"))


@pytest.mark.parametrize(
    "header",
    [
        # a parser keeping the first typ would see an access token, one keeping the last a receipt
        '{"alg":"EdDSA","typ":"JWT","typ":"osmanthus-consent+jwt"}',
        '{"alg":"HS256","alg":"EdDSA","typ":"osmanthus-consent+jwt"}',
    ],
)
def test_a_header_parameter_given_twice_is_refused(header: str) -> None:
    _, payload, _ = _parts(_receipt())
    signing_input = f"{_b64(header.encode())}.{_b64(json.dumps(payload).encode())}"
    forged = f"{signing_input}.{_b64(KEY.sign(signing_input.encode()))}"
    with pytest.raises(MalformedReceipt, match=r"header parameter '(typ|alg)' appears twice"):
        _verify(forged)


def test_a_header_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedReceipt, match="unreadable header: it is not a JSON object"):
        _verify(f"{_b64(b'[1]')}.e30.c2ln")


def test_unknown_header_parameters_are_refused() -> None:
    _, payload, _ = _parts(_receipt())
    header = {**_good_header(), "jku": "https://attacker.example/keys"}
    with pytest.raises(MalformedReceipt, match="unsupported header parameter\\(s\\) 'jku'"):
        _verify(_signed(header, payload))


# --- errors -------------------------------------------------------------------------------------


def test_receipt_errors_belong_to_the_shared_hierarchy_with_cli_exit_codes() -> None:
    assert issubclass(MalformedReceipt, InvalidArgument) and MalformedReceipt.exit_code == 3
    assert issubclass(UntrustedReceipt, Unauthenticated) and UntrustedReceipt.exit_code == 4
    assert issubclass(ReceiptMismatch, PermissionDenied) and ReceiptMismatch.exit_code == 4
    assert issubclass(ReceiptNotInForce, PermissionDenied) and ReceiptNotInForce.exit_code == 4
    for cls in (MalformedReceipt, UntrustedReceipt, ReceiptMismatch, ReceiptNotInForce):
        assert issubclass(cls, ReceiptError)


@pytest.mark.parametrize(
    ("receipt", "kw", "error"),
    [
        ("not a receipt", {}, MalformedReceipt),
        (_receipt(OTHER_KEY), {}, UntrustedReceipt),
        (_receipt(), {"issuer": "elsewhere"}, UntrustedReceipt),
        (_receipt(), {"now": EXPIRES + timedelta(days=1)}, ReceiptNotInForce),
    ],
)
def test_refusals_of_the_receipt_itself_name_the_receipt_field(
    receipt: str, kw: dict[str, Any], error: type[ReceiptError]
) -> None:
    with pytest.raises(error) as caught:
        _verify(receipt, **kw)
    assert caught.value.field == "receipt"
    assert str(caught.value).startswith("receipt: ")


def test_issuing_needs_an_ed25519_key_and_aware_times() -> None:
    with pytest.raises(ConfigError, match="Ed25519 private key"):
        issue_receipt(
            consent=Facts(),
            private_key=ec.generate_private_key(ec.SECP256R1()),  # type: ignore[arg-type]
        )
    with pytest.raises(InvalidArgument) as caught:
        issue_receipt(consent=Facts(granted_at=GRANTED.replace(tzinfo=None)), private_key=KEY)
    assert caught.value.field == "consent.granted_at"
    with pytest.raises(InvalidArgument) as caught:
        issue_receipt(consent=Facts(grantee="Bank One"), private_key=KEY)
    assert caught.value.field == "consent.grantee"


# --- key files ----------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_generated_key_pair_loads_and_the_private_half_is_owner_only(tmp_path: Path) -> None:
    private, public = tmp_path / "k" / "consent.key", tmp_path / "k" / "consent.pub"
    key = generate_consent_keypair(private, public)
    assert _mode(private) == 0o600 and _mode(public) == 0o644
    loaded = load_consent_private_key(private)
    assert consent_key_id(loaded.public_key()) == consent_key_id(key.public_key())
    receipt = issue_receipt(consent=Facts(), private_key=loaded)
    _verify(receipt, public_key=load_consent_public_key(public))


def test_an_existing_key_is_not_replaced_unless_asked(tmp_path: Path) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    generate_consent_keypair(private, public)
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="refusing to replace the consent key"):
        generate_consent_keypair(private, public)
    assert private.read_bytes() == before
    generate_consent_keypair(private, public, overwrite=True)
    assert private.read_bytes() != before


def test_unusable_key_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"consent private key file .* does not exist"):
        load_consent_private_key(tmp_path / "absent.key")
    ec_key = tmp_path / "ec.key"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519 private key"):
        load_consent_private_key(ec_key)
    garbage = tmp_path / "garbage.pub"
    garbage.write_text("hello")
    with pytest.raises(ConfigError, match="is not a PEM public key"):
        load_consent_public_key(garbage)


def test_load_or_create_keeps_a_key_and_restores_a_missing_public_half(tmp_path: Path) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    first = load_or_create_consent_key(private, public)
    assert private.is_file() and public.is_file()
    public.unlink()
    again = load_or_create_consent_key(private, public)
    assert consent_key_id(again.public_key()) == consent_key_id(first.public_key())
    assert consent_key_id(load_consent_public_key(public)) == consent_key_id(first.public_key())


def test_a_lost_private_key_is_never_replaced_silently(tmp_path: Path) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    load_or_create_consent_key(private, public)
    published = public.read_bytes()
    private.unlink()
    with pytest.raises(ConfigError) as caught:
        load_or_create_consent_key(private, public)
    message = caught.value.message
    assert f"{private} is missing but {public} exists: restore the consent signing key" in message
    assert not private.exists() and public.read_bytes() == published


def _other_public(path: Path) -> Path:
    path.write_bytes(
        OTHER_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def test_a_public_key_that_is_not_the_private_keys_half_is_refused_naming_both(
    tmp_path: Path,
) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    key = generate_consent_keypair(private, public)
    assert load_consent_key_pair(private, public).public_key() == key.public_key()
    assert load_consent_key_pair(private, tmp_path / "absent.pub").public_key() == key.public_key()
    _other_public(public)
    for load in (load_consent_key_pair, load_or_create_consent_key, restore_consent_public_key):
        with pytest.raises(ConfigError) as caught:
            load(private, public)
        message = caught.value.message
        assert (
            f"{public} (key {consent_key_id(OTHER_KEY.public_key())}) is not the public" in message
        )
        assert f"half of {private} (key {consent_key_id(key.public_key())})" in message


def test_restoring_the_public_half_never_makes_a_key(tmp_path: Path) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    with pytest.raises(ConfigError, match=r"consent private key file .* does not exist"):
        restore_consent_public_key(private, public)
    assert not private.exists() and not public.exists()
    key = generate_consent_keypair(private, public)
    public.unlink()
    restore_consent_public_key(private, public)
    assert load_consent_public_key(public).public_bytes_raw() == key.public_key().public_bytes_raw()
    assert _mode(public) == 0o644


def test_a_private_key_others_may_read_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    generate_consent_keypair(private, public)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.receipts"):
        load_consent_private_key(private)
    assert not caplog.records
    private.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.receipts"):
        load_consent_private_key(private)
    [warning] = caplog.records
    assert f"{private}: mode 0640 lets other users read the consent signing key" in (
        warning.getMessage()
    )
    assert f"chmod 600 {private}" in warning.getMessage()


def test_a_new_key_never_replaces_a_file_that_appears_after_the_check(tmp_path: Path) -> None:
    # a dangling link is not there for exists(), as a file made by another process a moment
    # after the check would not be; creating with a hard link still refuses to replace it
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    os.symlink(tmp_path / "elsewhere", public)
    with pytest.raises(ConfigError, match=f"{public} already exists; refusing to replace it"):
        generate_consent_keypair(private, public)
    assert public.is_symlink() and not private.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["consent.pub"]  # no temporary file left


def test_a_key_that_cannot_be_written_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    private = blocker / "consent.key"
    with pytest.raises(ConfigError, match=f"cannot write {private}") as caught:
        generate_consent_keypair(private, blocker / "consent.pub")
    assert caught.value.exit_code == 3


def test_a_new_ca_is_not_made_over_a_lost_consent_key(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    ca = (tmp_path / "ca.pem").read_bytes()
    (tmp_path / "coordinator" / "consent.key").unlink()
    with pytest.raises(ConfigError, match="restore the consent signing key from backup"):
        init_platform(tmp_path, departments=["psb"], requesters=[], overwrite=True)
    assert (tmp_path / "ca.pem").read_bytes() == ca
    with pytest.raises(ConfigError, match="restore the consent signing key from backup"):
        create_consent_key(tmp_path)
    assert not (tmp_path / "coordinator" / "consent.key").exists()


def test_the_platform_tooling_writes_a_lost_public_half_again_from_the_key(tmp_path: Path) -> None:
    paths = create_consent_key(tmp_path)
    published, private = paths.public.read_bytes(), paths.private.read_bytes()
    paths.public.unlink()
    assert restore_consent_public_key_file(tmp_path) == paths
    assert paths.public.read_bytes() == published and paths.private.read_bytes() == private


def test_the_platform_tooling_makes_the_consent_key_and_a_new_ca_keeps_it(tmp_path: Path) -> None:
    init_platform(tmp_path, departments=["psb"], requesters=[])
    private, public = (
        tmp_path / "coordinator" / "consent.key",
        tmp_path / "coordinator" / "consent.pub",
    )
    assert _mode(private) == 0o600
    before = private.read_bytes()
    init_platform(tmp_path, departments=["psb"], requesters=[], overwrite=True)
    assert private.read_bytes() == before
    with pytest.raises(ConfigError, match="refusing to replace the consent key"):
        create_consent_key(tmp_path)
    paths = create_consent_key(tmp_path, overwrite=True)
    assert (paths.private, paths.public) == (private, public)
    assert private.read_bytes() != before


# --- SDK ----------------------------------------------------------------------------------------


def test_the_sdk_verifies_with_a_key_file_or_a_key(tmp_path: Path) -> None:
    public = tmp_path / "consent.pub"
    public.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    receipt = _receipt()
    by_file = sdk.verify_consent_receipt(
        receipt, public_key=public, now=DURING, grantee="bank-1", subject_id=ALICE
    )
    by_key = sdk.verify_consent_receipt(receipt, public_key=KEY.public_key(), now=DURING)
    assert by_file == by_key
    assert by_file.consent_id == CONSENT_ID


def test_the_sdk_raises_its_own_exported_exceptions() -> None:
    receipt = _receipt()
    with pytest.raises(sdk.PermissionDenied) as caught:
        sdk.verify_consent_receipt(
            receipt, public_key=KEY.public_key(), now=DURING, purpose="credit_report"
        )
    assert isinstance(caught.value, sdk.ReceiptMismatch)
    with pytest.raises(sdk.Unauthenticated):
        sdk.verify_consent_receipt(receipt, public_key=OTHER_KEY.public_key(), now=DURING)
    now = datetime.now(UTC)
    ended = _receipt(granted_at=now - timedelta(days=10), expires_at=now - timedelta(days=1))
    with pytest.raises(sdk.ReceiptNotInForce):
        sdk.verify_consent_receipt(ended, public_key=KEY.public_key())  # now: the clock's
    with pytest.raises(sdk.ConfigError, match="Ed25519PublicKey"):
        sdk.verify_consent_receipt(receipt, public_key="consent.pub")  # type: ignore[arg-type]


def test_the_sdk_pins_the_issuer_and_names_its_own_parameters() -> None:
    receipt = _receipt(issuer="suzhou-credit")
    pinned = sdk.verify_consent_receipt(
        receipt, public_key=KEY.public_key(), now=DURING, issuer="suzhou-credit"
    )
    assert pinned.issuer == "suzhou-credit"
    with pytest.raises(sdk.UntrustedReceipt):
        sdk.verify_consent_receipt(receipt, public_key=KEY.public_key(), now=DURING)
    for parameter, value in (("grantee", "Bank One"), ("purpose", "Loan"), ("subject_id", "1")):
        with pytest.raises(sdk.InvalidArgument) as caught:
            sdk.verify_consent_receipt(
                receipt, public_key=KEY.public_key(), now=DURING, **{parameter: value}
            )
        assert caught.value.field == parameter
        assert not isinstance(caught.value, sdk.ReceiptError)


# --- CLI ----------------------------------------------------------------------------------------


@pytest.fixture
def live(tmp_path: Path) -> tuple[Path, Path]:
    """A receipt valid now in a file, and the public key that verifies it."""
    private, public = tmp_path / "consent.key", tmp_path / "consent.pub"
    key = generate_consent_keypair(private, public)
    now = datetime.now(UTC)
    path = tmp_path / "receipt.jws"
    receipt = issue_receipt(
        consent=Facts(granted_at=now, expires_at=now + timedelta(days=1)), private_key=key
    )
    path.write_text(receipt + "\n")
    return path, public


def test_cli_prints_the_facts_with_the_subject_masked(
    live: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    path, public = live
    code = main(["consent", "verify", str(path), "--key", str(public), "--grantee", "bank-1"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"receipt verifies: consent {CONSENT_ID}" in out
    assert f"subject     {'*' * 14}{ALICE[-4:]}" in out
    assert ALICE not in out
    assert "purpose     loan_underwriting" in out
    assert "not that it still stands" in out


def test_cli_reads_stdin(
    live: tuple[Path, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, public = live
    monkeypatch.setattr("sys.stdin", io.StringIO(path.read_text()))
    assert main(["consent", "verify", "-", "--key", str(public)]) == 0
    assert "receipt verifies" in capsys.readouterr().out


def test_cli_exits_4_naming_a_mismatch_and_3_for_what_is_not_a_receipt(
    live: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, public = live
    code = main(["consent", "verify", str(path), "--key", str(public), "--purpose", "x_y"])
    assert code == 4
    assert "is for purpose 'loan_underwriting', not 'x_y'" in capsys.readouterr().err
    other = tmp_path / "other.pub"
    other.write_bytes(
        OTHER_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert main(["consent", "verify", str(path), "--key", str(other)]) == 4
    assert "not by the key given" in capsys.readouterr().err
    junk = tmp_path / "junk"
    junk.write_text("hello")
    assert main(["consent", "verify", str(junk), "--key", str(public)]) == 3
    assert "not a compact JWS" in capsys.readouterr().err
    assert main(["consent", "verify", str(tmp_path / "absent"), "--key", str(public)]) == 3
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "value"),
    [("--grantee", "Bank One"), ("--purpose", "Loan-Underwriting"), ("--subject", "12345")],
)
def test_cli_an_option_no_receipt_could_match_is_a_bad_argument_named_by_the_option(
    live: tuple[Path, Path], capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    path, public = live
    assert main(["consent", "verify", str(path), "--key", str(public), option, value]) == 3
    assert capsys.readouterr().err.startswith(f"error: {option}: ")


def test_cli_pins_the_issuer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], live: tuple[Path, Path]
) -> None:
    assert _DEFAULT_RECEIPT_ISSUER == RECEIPT_ISSUER
    _, public = live
    now = datetime.now(UTC)
    receipt = tmp_path / "city.jws"
    receipt.write_text(
        issue_receipt(
            consent=Facts(granted_at=now, expires_at=now + timedelta(days=1)),
            private_key=load_consent_private_key(tmp_path / "consent.key"),
            issuer="suzhou-credit",
        )
    )
    assert main(["consent", "verify", str(receipt), "--key", str(public)]) == 4
    assert "issuer 'suzhou-credit' is not the consent registry" in capsys.readouterr().err
    verify = ["consent", "verify", str(receipt), "--key", str(public)]
    assert main([*verify, "--issuer", "suzhou-credit"]) == 0
    assert "issuer      suzhou-credit" in capsys.readouterr().out
    assert main([*verify, "--issuer", "two words"]) == 3
    assert capsys.readouterr().err.startswith("error: --issuer: ")


def test_cli_makes_the_consent_key_for_an_existing_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "consent-key", "--ca-dir", str(tmp_path)]) == 0
    assert (tmp_path / "coordinator" / "consent.pub").is_file()
    assert main(["certs", "consent-key", "--ca-dir", str(tmp_path)]) == 3
    assert "refusing to replace the consent key" in capsys.readouterr().err


def test_cli_writes_a_lost_public_key_again_and_refuses_to_replace_a_lost_private_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["certs", "consent-key", "--ca-dir", str(tmp_path)]) == 0
    private, public = (
        tmp_path / "coordinator" / "consent.key",
        tmp_path / "coordinator" / "consent.pub",
    )
    published = public.read_bytes()
    public.unlink()
    restore = ["certs", "consent-key", "--ca-dir", str(tmp_path), "--restore-public"]
    assert main(restore) == 0
    assert public.read_bytes() == published
    assert main(restore) == 0  # already there and the key's half: nothing to do
    assert main([*restore, "--overwrite"]) == 3
    capsys.readouterr()
    private.unlink()
    assert main(restore) == 3
    assert f"consent private key file {private} does not exist" in capsys.readouterr().err
    assert main(["certs", "consent-key", "--ca-dir", str(tmp_path)]) == 3
    assert "restore the consent signing key from backup" in capsys.readouterr().err
    assert public.read_bytes() == published and not private.exists()


def test_cli_a_key_directory_that_cannot_be_made_is_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    assert main(["certs", "consent-key", "--ca-dir", str(blocker)]) == 3
    assert f"cannot write {blocker}/coordinator/consent.key" in capsys.readouterr().err


def test_coordinator_serve_finds_the_consent_key_in_the_certs_dir(tmp_path: Path) -> None:
    from osmanthus.cli import build_parser
    from osmanthus.cli.coordinator import _consent_key

    def resolved(*extra: str) -> Path | None:
        serve = ["coordinator", "serve", "--nodes", "n.toml", "--issuer-public-key", "i.pub"]
        args = build_parser().parse_args([*serve, "--state-dir", "state", *extra])
        return _consent_key(args)

    assert resolved("--certs-dir", str(tmp_path)) is None  # none there: STATE_DIR's
    paths = create_consent_key(tmp_path)
    assert resolved("--certs-dir", str(tmp_path)) == paths.private
    assert resolved("--certs-dir", str(tmp_path), "--consent-key", "mine.key") == Path("mine.key")
    assert resolved("--ca", "ca.pem", "--cert", "c.pem", "--key", "k.pem") is None


def test_coordinator_serve_refuses_to_choose_between_two_consent_keys(tmp_path: Path) -> None:
    from osmanthus.cli import build_parser
    from osmanthus.cli.coordinator import _consent_key

    certs, state = tmp_path / "certs", tmp_path / "state"
    paths = create_consent_key(certs)
    generate_consent_keypair(state / "consent.key", state / "consent.pub")
    serve = ["coordinator", "serve", "--nodes", "n.toml", "--issuer-public-key", "i.pub"]
    args = build_parser().parse_args([*serve, "--state-dir", str(state), "--certs-dir", str(certs)])
    with pytest.raises(ConfigError) as caught:
        _consent_key(args)
    assert caught.value.field == "--consent-key"
    assert f"two consent signing keys: {paths.private} and {state / 'consent.key'}" in (
        caught.value.message
    )
    args.consent_key = paths.private
    assert _consent_key(args) == paths.private
