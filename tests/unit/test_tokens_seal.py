"""The token's `seal_fp` claim: issued, verified, refused when malformed, set by the CLI."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.cli import main
from osmanthus.core.errors import ConfigError, InvalidArgument, PermissionDenied, Unauthenticated
from osmanthus.core.subjectseal import public_bytes, read_public_key_file, seal_fingerprint
from osmanthus.core.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    SEAL_FINGERPRINT_CLAIM,
    ReplayCache,
    TokenIssuer,
    TokenVerifier,
)
from osmanthus.core.types import Role

KEY_FP = hashlib.sha256(b"a Paillier modulus").hexdigest()
HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def issuer(issuer_keys: Any) -> TokenIssuer:
    return TokenIssuer.from_file(issuer_keys.private)


@pytest.fixture
def verifier(issuer_keys: Any) -> TokenVerifier:
    return TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache())


def _issue(issuer: TokenIssuer, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "requester": "kiosk-1",
        "role": Role.KIOSK,
        "purposes": ["self_query"],
        "key_fingerprint": KEY_FP,
        "ttl": HOUR,
    }
    arguments.update(overrides)
    return issuer.issue(**arguments)


def _signed_with_claim(issuer_keys: Any, value: Any, *, role: str = "kiosk") -> str:
    key = serialization.load_pem_private_key(issuer_keys.private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    now = int(datetime.datetime.now(datetime.UTC).timestamp())
    payload = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "sub": "kiosk-1",
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": "jti-of-a-forged-token-000",
        "purposes": ["self_query"],
        "key_fp": KEY_FP,
        "role": role,
        SEAL_FINGERPRINT_CLAIM: value,
    }
    return jwt.api_jws.encode(json.dumps(payload).encode(), key, algorithm="EdDSA")


def test_seal_fingerprint_round_trips(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    seal_fp = seal_fingerprint(public_bytes(X25519PrivateKey.generate()))
    claims = verifier.verify(_issue(issuer, seal_fingerprint=seal_fp))
    assert claims.seal_fingerprint == seal_fp
    assert claims.role is Role.KIOSK
    claims.require_seal_key(seal_fp)


def test_a_token_without_the_claim_names_no_sealing_key(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    # only a requester that is no portal device may have a token without one
    # (test_tokens_device.py); such a token seals no subject file
    token = _issue(issuer, requester="agency-1", role=Role.CREDIT_AGENCY)
    assert SEAL_FINGERPRINT_CLAIM not in jwt.decode(token, options={"verify_signature": False})
    claims = verifier.verify(token)
    assert claims.seal_fingerprint is None
    with pytest.raises(PermissionDenied, match="names no sealing key"):
        claims.require_seal_key(seal_fingerprint(public_bytes(X25519PrivateKey.generate())))


def test_another_sealing_key_is_refused(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    ours = seal_fingerprint(public_bytes(X25519PrivateKey.generate()))
    theirs = seal_fingerprint(public_bytes(X25519PrivateKey.generate()))
    claims = verifier.verify(_issue(issuer, seal_fingerprint=ours))
    with pytest.raises(PermissionDenied, match="not the key bound to the token") as caught:
        claims.require_seal_key(theirs)
    assert caught.value.field == "recipient_key"


@pytest.mark.parametrize(
    "value", ["00" * 31, KEY_FP.upper(), "", 7, b"x".hex() * 32 + "0", ["a"], "g" * 64]
)
def test_issue_refuses_a_malformed_seal_fingerprint(issuer: TokenIssuer, value: Any) -> None:
    with pytest.raises(InvalidArgument, match="sealing key fingerprint") as caught:
        _issue(issuer, seal_fingerprint=value)
    assert caught.value.field == "seal_fingerprint"


@pytest.mark.parametrize("value", ["00" * 31, KEY_FP.upper(), "", 7, False, ["a"], {"a": 1}])
def test_verify_refuses_a_malformed_seal_fp_claim(
    issuer_keys: Any, verifier: TokenVerifier, value: Any
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(_signed_with_claim(issuer_keys, value))
    assert f"token claim 'seal_fp' is {value!r}: expected 64 lower-case hex" in str(caught.value)


def test_verify_accepts_an_explicit_null_as_absent(
    issuer_keys: Any, verifier: TokenVerifier
) -> None:
    token = _signed_with_claim(issuer_keys, None, role="credit_agency")
    assert verifier.verify(token).seal_fingerprint is None


# --- the sealing key file and `osmanthus token issue --seal-key` --------------------------------


def _write_keys(tmp_path: Path) -> tuple[bytes, Path, Path]:
    private = X25519PrivateKey.generate()
    raw = public_bytes(private)
    raw_path = tmp_path / "seal.raw"
    raw_path.write_bytes(raw)
    pem_path = tmp_path / "seal.pub.pem"
    pem_path.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return raw, raw_path, pem_path


def test_read_public_key_file_takes_raw_and_pem(tmp_path: Path) -> None:
    raw, raw_path, pem_path = _write_keys(tmp_path)
    assert read_public_key_file(raw_path) == raw
    assert read_public_key_file(pem_path) == raw


def test_read_public_key_file_refuses_what_is_not_an_x25519_public_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_public_key_file(tmp_path / "missing")
    short = tmp_path / "short"
    short.write_bytes(b"\x01" * 31)
    with pytest.raises(ConfigError, match="neither a raw 32-byte X25519 public key nor a PEM"):
        read_public_key_file(short)
    zero = tmp_path / "zero"
    zero.write_bytes(bytes(32))
    with pytest.raises(ConfigError, match="all-zero"):
        read_public_key_file(zero)
    ed = tmp_path / "ed.pem"
    ed.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ConfigError, match="not an X25519 public key"):
        read_public_key_file(ed)


def _cli_issue(issuer_keys: Any, *extra: str, role: str = "kiosk") -> int:
    return main(
        [
            "token", "issue", "--issuer-key", str(issuer_keys.private), "--requester", "kiosk-1",
            "--role", role, "--purpose", "self_query", "--key-fingerprint", KEY_FP, *extra,
        ]
    )  # fmt: skip


@pytest.mark.parametrize("form", ["raw", "pem"])
def test_token_issue_seal_key_sets_the_claim(
    tmp_path: Path, issuer_keys: Any, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    raw, raw_path, pem_path = _write_keys(tmp_path)
    path = raw_path if form == "raw" else pem_path
    assert _cli_issue(issuer_keys, "--seal-key", str(path)) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert claims[SEAL_FINGERPRINT_CLAIM] == seal_fingerprint(raw)
    assert claims["role"] == "kiosk"


def test_token_issue_without_seal_key_has_no_claim(
    issuer_keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli_issue(issuer_keys, role="data_subject") == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), options={"verify_signature": False})
    assert SEAL_FINGERPRINT_CLAIM not in claims


def test_token_issue_with_a_bad_seal_key_exits_3(
    tmp_path: Path, issuer_keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    assert _cli_issue(issuer_keys, "--seal-key", str(bad)) == 3
    err = capsys.readouterr().err
    assert "bad.pub" in err and "X25519" in err
