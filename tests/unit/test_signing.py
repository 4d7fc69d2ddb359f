"""The one signing envelope: a detached, unencoded-payload JWS over RFC 8785 JSON, one type each."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key

from osmanthus.core import signing
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.receipts import consent_key_id
from osmanthus.core.signing import (
    CREDIT_REPORT_TYPE,
    POLICY_BUNDLE_TYPE,
    SYNC_BATCH_TYPE,
    LegacyFormat,
    MalformedSignature,
    UntrustedSignature,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
TRUSTED = {signing.key_id(KEY.public_key()): KEY.public_key()}
DOCUMENT = {"serial": 7, "scope": "central", "policy": "permit (principal, action, resource);"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_canonical_json_is_rfc_8785() -> None:
    # RFC 8785 §3.2.3: members sorted by their UTF-16 code units, not by UTF-8 bytes
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    order = [k for k in json.loads(signing.canonical_json(value))]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert signing.canonical_json({"b": [1, "é"], "a": None}) == '{"a":null,"b":[1,"é"]}'.encode()


def test_canonical_json_refuses_numbers_other_readers_would_change() -> None:
    with pytest.raises(InvalidArgument) as caught:
        signing.canonical_json({"serial": 2**53}, field="bundle")
    assert caught.value.field == "bundle"
    assert signing.canonical_json({"serial": 2**53 - 1}) == b'{"serial":9007199254740991}'


def test_a_signature_is_a_detached_rfc_7797_jws_naming_its_type_and_key() -> None:
    payload = signing.canonical_json(DOCUMENT)
    token = signing.sign(payload, payload_type=POLICY_BUNDLE_TYPE, private_key=KEY)
    header_b64, empty, signature_b64 = token.split(".")
    assert empty == ""
    header = json.loads(_unb64(header_b64))
    assert header == {
        "alg": "EdDSA",
        "b64": False,
        "crit": ["b64"],
        "kid": signing.key_id(KEY.public_key()),
        "typ": POLICY_BUNDLE_TYPE,
    }
    # any JOSE implementation checks it: RFC 7797 §3 signs ASCII(header) || "." || payload
    KEY.public_key().verify(_unb64(signature_b64), header_b64.encode() + b"." + payload)
    # and PyJWT reads it as the standard says, with the payload handed in
    decoded = jwt.api_jws.PyJWS().decode_complete(
        token, KEY.public_key(), algorithms=["EdDSA"], detached_payload=payload
    )
    assert decoded["payload"] == payload
    # deterministic: Ed25519 and a fixed header
    assert signing.sign(payload, payload_type=POLICY_BUNDLE_TYPE, private_key=KEY) == token


def test_the_key_id_is_the_rfc_7638_thumbprint_receipts_use_too() -> None:
    assert signing.key_id(KEY.public_key()) == consent_key_id(KEY.public_key())
    assert len(signing.key_id(KEY.public_key())) == signing.KEY_ID_LENGTH
    assert signing.key_id(KEY.public_key()) != signing.key_id(OTHER.public_key())


def test_verify_returns_the_key_that_signed() -> None:
    payload = signing.canonical_json(DOCUMENT)
    token = signing.sign(payload, payload_type=SYNC_BATCH_TYPE, private_key=KEY)
    kid = signing.verify(payload, token, payload_type=SYNC_BATCH_TYPE, trusted_keys=TRUSTED)
    assert kid == signing.key_id(KEY.public_key()) == signing.signature_key_id(token)


def test_a_signature_over_one_artefact_never_verifies_as_another() -> None:
    payload = signing.canonical_json(DOCUMENT)
    batch_signature = signing.sign(payload, payload_type=SYNC_BATCH_TYPE, private_key=KEY)
    for other in (POLICY_BUNDLE_TYPE, CREDIT_REPORT_TYPE):
        with pytest.raises(MalformedSignature, match="signs one kind of artefact only"):
            signing.verify(payload, batch_signature, payload_type=other, trusted_keys=TRUSTED)


def test_a_changed_payload_or_an_untrusted_key_is_refused() -> None:
    payload = signing.canonical_json(DOCUMENT)
    token = signing.sign(payload, payload_type=POLICY_BUNDLE_TYPE, private_key=KEY)
    changed = signing.canonical_json({**DOCUMENT, "serial": 8})
    with pytest.raises(UntrustedSignature, match="changed after it was signed"):
        signing.verify(changed, token, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED)
    foreign = signing.sign(payload, payload_type=POLICY_BUNDLE_TYPE, private_key=OTHER)
    with pytest.raises(UntrustedSignature, match="not trusted here"):
        signing.verify(payload, foreign, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED)
    # the other key's signature under the trusted key's id: the signature is what counts
    header, _, sig = foreign.split(".")
    trusted_header = token.split(".")[0]
    with pytest.raises(UntrustedSignature):
        signing.verify(
            payload,
            f"{trusted_header}..{sig}",
            payload_type=POLICY_BUNDLE_TYPE,
            trusted_keys=TRUSTED,
        )
    assert header != trusted_header


@pytest.mark.parametrize(
    "header",
    [
        # alg none and HMAC keyed with the public key: refused before any key is touched
        {"alg": "none", "b64": False, "crit": ["b64"], "kid": "k" * 43, "typ": SYNC_BATCH_TYPE},
        {"alg": "HS256", "b64": False, "crit": ["b64"], "kid": "k" * 43, "typ": SYNC_BATCH_TYPE},
        # an encoded payload, or one a verifier need not understand
        {"alg": "EdDSA", "b64": True, "crit": ["b64"], "kid": "k" * 43, "typ": SYNC_BATCH_TYPE},
        {"alg": "EdDSA", "b64": False, "crit": [], "kid": "k" * 43, "typ": SYNC_BATCH_TYPE},
        # a header parameter we do not know (jku, x5u would fetch keys)
        {
            "alg": "EdDSA",
            "b64": False,
            "crit": ["b64"],
            "kid": "k" * 43,
            "typ": SYNC_BATCH_TYPE,
            "jku": "https://example.invalid/keys",
        },
        {"alg": "EdDSA", "b64": False, "crit": ["b64"], "typ": SYNC_BATCH_TYPE},
    ],
)
def test_headers_of_other_shapes_are_refused(header: dict[str, object]) -> None:
    token = _b64(json.dumps(header).encode()) + ".." + _b64(b"\0" * 64)
    with pytest.raises(MalformedSignature):
        signing.verify(b"{}", token, payload_type=SYNC_BATCH_TYPE, trusted_keys=TRUSTED)


@pytest.mark.parametrize(
    "token",
    ["", "a.b.c", "a..", "..sig", "not a jws", "x" * 2000, "a.b.c.d"],
)
def test_text_that_is_no_detached_jws_is_refused(token: str) -> None:
    with pytest.raises(MalformedSignature) as caught:
        signing.verify(b"{}", token, payload_type=SYNC_BATCH_TYPE, trusted_keys=TRUSTED)
    assert caught.value.field == "signature"


def test_only_canonical_payloads_and_known_types_and_ed25519_keys_are_signed() -> None:
    with pytest.raises(InvalidArgument, match="canonical"):
        signing.sign(b'{"b":1, "a":2}', payload_type=SYNC_BATCH_TYPE, private_key=KEY)
    with pytest.raises(InvalidArgument) as caught:
        signing.sign(b"{}", payload_type="osmanthus-anything+jws", private_key=KEY)
    assert caught.value.field == "payload_type"
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(ConfigError, match="Ed25519"):
        signing.sign(b"{}", payload_type=SYNC_BATCH_TYPE, private_key=rsa)  # type: ignore[arg-type]


def test_a_sealed_file_shows_what_was_signed_and_opens_only_unchanged() -> None:
    data = signing.seal(DOCUMENT, payload_type=POLICY_BUNDLE_TYPE, private_key=KEY)
    document = json.loads(data)
    assert set(document) == {"payload", "signature"}
    assert document["payload"] == DOCUMENT  # readable, not base64
    payload, kid = signing.open_sealed(data, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED)
    assert payload == DOCUMENT and kid == signing.key_id(KEY.public_key())
    # whitespace and key order of the file do not matter: the payload is canonicalised again
    reordered = json.dumps(
        {"signature": document["signature"], "payload": dict(reversed(DOCUMENT.items()))}
    ).encode()
    assert signing.open_sealed(reordered, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED)
    document["payload"]["serial"] = 8
    with pytest.raises(UntrustedSignature):
        signing.open_sealed(
            json.dumps(document).encode(), payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED
        )
    with pytest.raises(MalformedSignature, match="appears twice"):
        signing.open_sealed(
            b'{"payload": {}, "payload": {}, "signature": ""}',
            payload_type=POLICY_BUNDLE_TYPE,
            trusted_keys=TRUSTED,
        )


def test_an_old_format_is_refused_with_how_to_sign_it_again() -> None:
    old = json.dumps({"format": "example/1", "signature": "AAAA"}).encode()

    def legacy(document: dict[str, object]) -> str | None:
        if document.get("format") == "example/1":
            return "is an example/1 file: sign it again with 'osmanthus example publish'"
        return None

    with pytest.raises(LegacyFormat, match="sign it again") as caught:
        signing.open_sealed(
            old, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED, legacy=legacy
        )
    assert caught.value.field == "format"
    with pytest.raises(MalformedSignature, match='exactly "payload" and "signature"'):
        signing.open_sealed(
            json.dumps({"format": "else"}).encode(),
            payload_type=POLICY_BUNDLE_TYPE,
            trusted_keys=TRUSTED,
            legacy=legacy,
        )


def test_key_files_round_trip_and_a_readable_private_key_is_refused(tmp_path: Path) -> None:
    private, public = tmp_path / "office.key", tmp_path / "office.pub"
    key = signing.generate_key_pair(private_path=private, public_path=public, what="test key")
    assert private.stat().st_mode & 0o777 == 0o600
    assert signing.key_id(signing.load_private_key(private).public_key()) == signing.key_id(
        key.public_key()
    )
    assert set(signing.load_public_keys([public])) == {signing.key_id(key.public_key())}
    with pytest.raises(ConfigError, match="already exists"):
        signing.generate_key_pair(private_path=private, public_path=public, what="test key")
    os.chmod(private, 0o644)
    with pytest.raises(ConfigError, match="0644"):
        signing.load_private_key(private)
    with pytest.raises(ConfigError, match="not a PEM public key"):
        signing.load_public_key(private)


def test_the_raw_signature_is_ed25519_over_the_signing_input() -> None:
    payload = signing.canonical_json(DOCUMENT)
    token = signing.sign(payload, payload_type=CREDIT_REPORT_TYPE, private_key=KEY)
    _, _, signature_b64 = token.split(".")
    with pytest.raises(InvalidSignature):
        # the payload alone, without the header, is not what was signed
        KEY.public_key().verify(_unb64(signature_b64), payload)


def test_a_file_nested_too_deeply_is_refused_not_crashed_on() -> None:
    deep = b'{"payload": ' + b"[" * 100_000 + b"]" * 100_000 + b', "signature": ""}'
    with pytest.raises(MalformedSignature, match="nested too deeply"):
        signing.open_sealed(deep, payload_type=POLICY_BUNDLE_TYPE, trusted_keys=TRUSTED)
