"""EdDSA requester tokens: issue, verify, and every way a forged or stale token is refused."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import stat
import threading
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.tokens import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    REQUIRED_CLAIMS,
    ReplayCache,
    TokenClaims,
    TokenIssuer,
    TokenVerifier,
    generate_issuer_keypair,
)
from osmanthus.core.types import Role

FINGERPRINT = hashlib.sha256(b"a Paillier modulus").hexdigest()
HOUR = datetime.timedelta(hours=1)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segment(obj: Any) -> str:
    return _b64(json.dumps(obj).encode())


def _payload(**overrides: Any) -> dict[str, Any]:
    """A complete, currently valid claim set; `overrides` replace claims."""
    now = int(_now().timestamp())
    claims: dict[str, Any] = {
        "iss": DEFAULT_ISSUER,
        "aud": DEFAULT_AUDIENCE,
        "sub": "bank-1",
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "jti": "jti-of-a-forged-token-000",
        "purposes": ["loan_underwriting"],
        "key_fp": FINGERPRINT,
        "role": "bank",
    }
    claims.update(overrides)
    return claims


@pytest.fixture(scope="module")
def private_key(issuer_keys: Any) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(issuer_keys.private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


@pytest.fixture
def issuer(issuer_keys: Any) -> TokenIssuer:
    return TokenIssuer.from_file(issuer_keys.private)


@pytest.fixture
def verifier(issuer_keys: Any) -> TokenVerifier:
    return TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache())


def _issue(issuer: TokenIssuer, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "requester": "bank-1",
        "role": Role.BANK,
        "purposes": ["loan_underwriting"],
        "key_fingerprint": FINGERPRINT,
        "ttl": HOUR,
    }
    arguments.update(overrides)
    return issuer.issue(**arguments)


def _sign(payload: dict[str, Any], key: Ed25519PrivateKey) -> str:
    """Sign claims as they are, bypassing the claim checks jwt.encode applies."""
    return jwt.api_jws.encode(json.dumps(payload).encode(), key, algorithm="EdDSA")


def _refused(verifier: TokenVerifier, token: Any) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verifier.verify(token)
    return caught.value.message


# --- happy path ---------------------------------------------------------------------------------


def test_issued_token_verifies_and_round_trips_its_claims(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    before = _now().replace(microsecond=0)
    token = _issue(issuer, purposes=["loan_underwriting", "self_query"], role=Role.CREDIT_AGENCY)
    claims = verifier.verify(token)
    assert isinstance(claims, TokenClaims)
    assert claims.requester == "bank-1"
    assert claims.role is Role.CREDIT_AGENCY
    assert claims.purposes == frozenset({"loan_underwriting", "self_query"})
    assert claims.key_fingerprint == FINGERPRINT
    assert claims.issuer == DEFAULT_ISSUER
    assert claims.audience == DEFAULT_AUDIENCE
    assert claims.single_use is False
    assert len(claims.jti) >= 16
    assert before <= claims.issued_at <= _now()
    assert claims.not_before == claims.issued_at
    assert claims.expires_at - claims.not_before == HOUR
    assert claims.expires_at.tzinfo is not None


def test_token_header_is_eddsa_jwt(issuer: TokenIssuer) -> None:
    assert jwt.get_unverified_header(_issue(issuer)) == {"alg": "EdDSA", "typ": "JWT"}


def test_explicit_not_before_round_trips(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    start = (_now() - datetime.timedelta(minutes=10)).replace(microsecond=0)
    claims = verifier.verify(_issue(issuer, not_before=start, ttl=datetime.timedelta(minutes=30)))
    assert claims.not_before == start
    assert claims.expires_at == start + datetime.timedelta(minutes=30)


def test_every_issued_token_has_its_own_jti(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    jtis = {verifier.verify(_issue(issuer)).jti for _ in range(20)}
    assert len(jtis) == 20


def test_a_reusable_token_verifies_more_than_once(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(issuer)
    assert verifier.verify(token) == verifier.verify(token)


def test_audience_list_containing_ours_is_accepted(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    token = jwt.encode(_payload(aud=["elsewhere", DEFAULT_AUDIENCE]), private_key, "EdDSA")
    assert verifier.verify(token).audience == DEFAULT_AUDIENCE


def test_expiry_within_the_leeway_is_accepted(issuer_keys: Any, verifier: TokenVerifier) -> None:
    issued = _now() - HOUR - datetime.timedelta(seconds=2)
    past_issuer = TokenIssuer.from_file(issuer_keys.private, clock=lambda: issued)
    verifier.verify(_issue(past_issuer))


# --- single use and replay ----------------------------------------------------------------------


def test_single_use_token_is_refused_when_replayed(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(issuer, single_use=True)
    claims = verifier.verify(token)
    assert claims.single_use is True
    message = _refused(verifier, token)
    assert message == (
        f"token jti {claims.jti} was already used: single-use tokens cannot be replayed"
    )


def test_replay_cache_is_shared_between_verifiers(issuer_keys: Any, issuer: TokenIssuer) -> None:
    cache = ReplayCache()
    first = TokenVerifier.from_file(issuer_keys.public, replay_cache=cache)
    second = TokenVerifier.from_file(issuer_keys.public, replay_cache=cache)
    token = _issue(issuer, single_use=True)
    first.verify(token)
    assert "already used" in _refused(second, token)


def test_replay_cache_forgets_expired_entries() -> None:
    now = [_now()]
    cache = ReplayCache(clock=lambda: now[0])
    for i in range(100):
        cache.check_and_remember(f"jti-{i}", now[0] + datetime.timedelta(seconds=i + 1))
    assert len(cache) == 100
    now[0] += datetime.timedelta(seconds=50.5)
    assert len(cache) == 50
    with pytest.raises(Unauthenticated):
        cache.check_and_remember("jti-99", now[0] + HOUR)
    now[0] += datetime.timedelta(seconds=100)
    assert len(cache) == 0


def test_replay_cache_admits_one_of_many_concurrent_uses() -> None:
    cache = ReplayCache()
    outcomes: list[bool] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        try:
            cache.check_and_remember("same-jti", _now() + HOUR)
            outcomes.append(True)
        except Unauthenticated:
            outcomes.append(False)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False] * 7 + [True]


# --- malformed tokens and signatures ------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-token",
        "a.b",
        "a.b.c",
        "!!!.???.###",
        _segment([1, 2]) + "." + _segment({}) + ".",
        _b64(b"{not json") + "." + _segment({}) + ".",
    ],
)
def test_malformed_token_is_refused(verifier: TokenVerifier, token: str) -> None:
    assert _refused(verifier, token).startswith("malformed token")


def test_non_string_token_is_refused(verifier: TokenVerifier) -> None:
    assert _refused(verifier, b"bytes.are.not.tokens").startswith("malformed token")


def test_oversized_token_is_refused(verifier: TokenVerifier) -> None:
    assert "more than the 8192 allowed" in _refused(verifier, "a" * 9000)


def test_payload_that_is_not_a_json_object_is_refused(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    token = jwt.api_jws.encode(b"[1, 2, 3]", private_key, algorithm="EdDSA")
    assert _refused(verifier, token) == "malformed token: the payload is not a JSON object"


def test_duplicated_claim_is_refused(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    # A second "sub" after a valid payload: parsers that keep the last value would see "admin".
    body = json.dumps(_payload())[:-1] + ', "sub": "admin"}'
    token = jwt.api_jws.encode(body.encode(), private_key, algorithm="EdDSA")
    assert "claim 'sub' appears twice" in _refused(verifier, token)


def test_tampered_payload_fails_the_signature(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, _, signature = _issue(issuer).split(".")
    forged = _segment(_payload(sub="agency-1", purposes=["everything"]))
    message = _refused(verifier, f"{header}.{forged}.{signature}")
    assert message == "token signature does not verify against the platform issuer key"


def test_token_signed_by_another_ed25519_key_fails_the_signature(verifier: TokenVerifier) -> None:
    token = jwt.encode(_payload(), Ed25519PrivateKey.generate(), algorithm="EdDSA")
    assert "signature does not verify" in _refused(verifier, token)


def test_empty_signature_fails(issuer: TokenIssuer, verifier: TokenVerifier) -> None:
    header, payload, _ = _issue(issuer).split(".")
    assert "signature does not verify" in _refused(verifier, f"{header}.{payload}.")


# --- algorithm confusion ------------------------------------------------------------------------


def test_alg_none_is_refused(verifier: TokenVerifier) -> None:
    token = _segment({"alg": "none", "typ": "JWT"}) + "." + _segment(_payload()) + "."
    assert _refused(verifier, token) == "token algorithm none is not allowed; only EdDSA"


def test_missing_alg_is_refused(verifier: TokenVerifier) -> None:
    token = _segment({"typ": "JWT"}) + "." + _segment(_payload()) + "."
    assert _refused(verifier, token) == "token algorithm None is not allowed; only EdDSA"


def test_hs256_keyed_with_the_public_key_is_refused(
    issuer_keys: Any, verifier: TokenVerifier
) -> None:
    # The classic confusion attack: anyone holding the public key can compute this MAC.
    signing_input = _segment({"alg": "HS256", "typ": "JWT"}) + "." + _segment(_payload())
    mac = hmac.new(issuer_keys.public.read_bytes(), signing_input.encode(), hashlib.sha256)
    token = f"{signing_input}.{_b64(mac.digest())}"
    assert _refused(verifier, token) == "token algorithm HS256 is not allowed; only EdDSA"


def test_rs256_is_refused(verifier: TokenVerifier) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_payload(), key, algorithm="RS256")
    assert _refused(verifier, token) == "token algorithm RS256 is not allowed; only EdDSA"


def test_es256_is_refused(verifier: TokenVerifier) -> None:
    token = jwt.encode(_payload(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    assert _refused(verifier, token) == "token algorithm ES256 is not allowed; only EdDSA"


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"crit": ["exp"]}, "malformed token: Unsupported critical extension: exp"),
        ({"x5u": "https://attacker.example/cert"}, "unsupported header parameter(s) x5u"),
        ({"jku": "https://attacker.example/keys"}, "unsupported header parameter(s) jku"),
        ({"typ": "at+jwt"}, "header typ 'at+jwt' is not JWT"),
    ],
)
def test_unexpected_header_parameters_are_refused(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier, extra: dict[str, Any], expected: str
) -> None:
    token = jwt.encode(_payload(), private_key, algorithm="EdDSA", headers=extra)
    assert expected in _refused(verifier, token)


# --- time ---------------------------------------------------------------------------------------


def test_expired_token_is_refused(issuer_keys: Any, verifier: TokenVerifier) -> None:
    two_hours_ago = _now() - 2 * HOUR
    past_issuer = TokenIssuer.from_file(issuer_keys.private, clock=lambda: two_hours_ago)
    assert _refused(verifier, _issue(past_issuer)).startswith("token expired at ")


def test_token_not_yet_valid_by_nbf_is_refused(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(issuer, not_before=_now() + HOUR)
    assert _refused(verifier, token).startswith("token is not yet valid: 'nbf'")


def test_token_issued_in_the_future_is_refused(issuer_keys: Any, verifier: TokenVerifier) -> None:
    in_an_hour = _now() + HOUR
    future_issuer = TokenIssuer.from_file(issuer_keys.private, clock=lambda: in_an_hour)
    token = _issue(future_issuer, not_before=_now())
    message = _refused(verifier, token)
    assert message.startswith("token is not yet valid: 'iat'")
    assert "in the future" in message


def test_expiry_not_after_nbf_is_refused(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    now = int(_now().timestamp())
    token = jwt.encode(_payload(nbf=now, exp=now), private_key, algorithm="EdDSA")
    assert "'exp' is not later than 'nbf'" in _refused(verifier, token)


# --- issuer and audience ------------------------------------------------------------------------


def test_wrong_issuer_is_refused(issuer_keys: Any, verifier: TokenVerifier) -> None:
    other = TokenIssuer.from_file(issuer_keys.private, issuer="some-other-platform")
    message = _refused(verifier, _issue(other))
    assert message == (
        "token issuer 'some-other-platform' is not the platform issuer 'osmanthus-platform'"
    )


def test_wrong_audience_is_refused(issuer_keys: Any, verifier: TokenVerifier) -> None:
    other = TokenIssuer.from_file(issuer_keys.private, audience="another-service")
    message = _refused(verifier, _issue(other))
    assert message == "token audience 'another-service' does not include 'osmanthus'"


def test_audience_list_without_ours_is_refused(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier
) -> None:
    token = jwt.encode(_payload(aud=["a", "b"]), private_key, algorithm="EdDSA")
    assert "does not include 'osmanthus'" in _refused(verifier, token)


# --- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", REQUIRED_CLAIMS)
def test_each_missing_claim_is_named(
    private_key: Ed25519PrivateKey, verifier: TokenVerifier, claim: str
) -> None:
    payload = _payload()
    del payload[claim]
    token = jwt.encode(payload, private_key, algorithm="EdDSA")
    assert _refused(verifier, token) == f"token lacks required claim(s) '{claim}'"


@pytest.mark.parametrize(
    ("claim", "value", "expected"),
    [
        ("iss", 7, "claim 'iss' is 7: expected a string"),
        ("aud", 7, "claim 'aud' is 7: expected a string or strings"),
        ("aud", [], "claim 'aud' is []: expected a string or strings"),
        ("sub", 42, "claim 'sub' is 42: expected a string"),
        ("sub", "Bank 1", "claim 'sub' is 'Bank 1', which is not a requester id"),
        ("role", "admin", "claim 'role' is 'admin': expected one of"),
        ("role", ["bank"], "claim 'role' is ['bank']: expected a string"),
        ("purposes", [], "claim 'purposes': at least one purpose is required"),
        ("purposes", "loan", "claim 'purposes': 'loan' is not a list of purpose names"),
        ("purposes", ["Loan"], "claim 'purposes': 'Loan' is not a purpose name"),
        ("purposes", [3], "claim 'purposes': 3 is not a purpose name"),
        ("purposes", ["loan", "loan"], "claim 'purposes': 'loan' is listed twice"),
        ("key_fp", "abc", "claim 'key_fp' is 'abc': expected 64 lower-case hex digits"),
        ("key_fp", FINGERPRINT.upper(), "expected 64 lower-case hex digits"),
        ("key_fp", None, "claim 'key_fp' is None: expected a string"),
        ("jti", "", "claim 'jti' is '': expected 16 to 128 URL-safe characters"),
        ("jti", 12345, "claim 'jti' is 12345: expected a string"),
        ("exp", "tomorrow", "claim 'exp' is 'tomorrow': expected seconds since epoch"),
        ("exp", True, "claim 'exp' is True: expected seconds since epoch"),
        ("iat", None, "claim 'iat' is None: expected seconds since epoch"),
        ("nbf", 1e300, "claim 'nbf' is 1e+300: not a usable time"),
        ("single_use", "yes", "claim 'single_use' is 'yes': expected a boolean"),
    ],
)
def test_bad_claim_types_and_values_are_refused(
    private_key: Ed25519PrivateKey,
    verifier: TokenVerifier,
    claim: str,
    value: Any,
    expected: str,
) -> None:
    token = _sign(_payload(**{claim: value}), private_key)
    assert expected in _refused(verifier, token)


@settings(max_examples=200, deadline=None)
@given(
    st.text(max_size=300)
    | st.lists(st.text("abcXYZ019-_=+/", max_size=60), min_size=1, max_size=5).map(".".join)
)
def test_no_input_raises_anything_but_unauthenticated(issuer_keys: Any, token: str) -> None:
    verifier = TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache())
    with pytest.raises(Unauthenticated):
        verifier.verify(token)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(), children),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([*REQUIRED_CLAIMS, "single_use", "x"]), _JSON))
def test_signed_arbitrary_claims_verify_or_raise_unauthenticated(
    issuer_keys: Any, claims: dict[str, Any]
) -> None:
    key = serialization.load_pem_private_key(issuer_keys.private.read_bytes(), None)
    assert isinstance(key, Ed25519PrivateKey)
    verifier = TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache())
    token = _sign({**_payload(), **claims}, key)
    try:
        verified = verifier.verify(token)
    except Unauthenticated:
        return
    assert verified.requester == claims.get("sub", "bank-1")


# --- issuing refuses bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"requester": "Bank 1"}, "requester"),
        ({"requester": ""}, "requester"),
        ({"role": "bank"}, "role"),
        ({"purposes": []}, "purposes"),
        ({"purposes": "loan_underwriting"}, "purposes"),
        ({"purposes": ["Loan"]}, "purposes"),
        ({"purposes": ["loan", "loan"]}, "purposes"),
        ({"key_fingerprint": "00" * 31}, "key_fingerprint"),
        ({"key_fingerprint": FINGERPRINT.upper()}, "key_fingerprint"),
        ({"ttl": datetime.timedelta(0)}, "ttl"),
        ({"ttl": -HOUR}, "ttl"),
        ({"not_before": datetime.datetime(2030, 1, 1)}, "not_before"),
        ({"single_use": "yes"}, "single_use"),
    ],
)
def test_issue_refuses_bad_input(
    issuer: TokenIssuer, overrides: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _issue(issuer, **overrides)
    assert caught.value.field == field


# --- keys and construction ----------------------------------------------------------------------


def test_generate_issuer_keypair_modes_and_refusal_to_overwrite(tmp_path: Path) -> None:
    private, public = tmp_path / "keys" / "issuer.key", tmp_path / "keys" / "issuer.pub"
    generate_issuer_keypair(private, public)
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in private.read_bytes()
    assert b"BEGIN PUBLIC KEY" in public.read_bytes()
    token = _issue(TokenIssuer.from_file(private))
    TokenVerifier.from_file(public, replay_cache=ReplayCache()).verify(token)

    before = private.read_bytes()
    with pytest.raises(ConfigError, match="already exists") as caught:
        generate_issuer_keypair(private, public)
    assert str(private) in caught.value.message
    assert private.read_bytes() == before
    generate_issuer_keypair(private, public, overwrite=True)
    assert private.read_bytes() != before


def test_from_file_names_a_missing_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        TokenIssuer.from_file(tmp_path / "absent.key")
    with pytest.raises(ConfigError, match="does not exist"):
        TokenVerifier.from_file(tmp_path / "absent.pub", replay_cache=ReplayCache())


def test_from_file_refuses_keys_that_are_not_ed25519(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = tmp_path / "ec.key", tmp_path / "ec.pub"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with pytest.raises(ConfigError, match="not an Ed25519 private key"):
        TokenIssuer.from_file(private)
    with pytest.raises(ConfigError, match="not an Ed25519 public key"):
        TokenVerifier.from_file(public, replay_cache=ReplayCache())
    private.write_text("garbage")
    with pytest.raises(ConfigError, match="not an unencrypted PEM private key"):
        TokenIssuer.from_file(private)


@pytest.mark.parametrize("leeway", [datetime.timedelta(seconds=-1), datetime.timedelta(hours=1)])
def test_verifier_refuses_an_unreasonable_leeway(
    issuer_keys: Any, leeway: datetime.timedelta
) -> None:
    with pytest.raises(ConfigError) as caught:
        TokenVerifier.from_file(issuer_keys.public, replay_cache=ReplayCache(), leeway=leeway)
    assert caught.value.field == "leeway"


# --- the verified-payload cache -------------------------------------------------------------------


def test_a_remembered_token_is_still_refused_once_it_expires(
    issuer_keys: Any, issuer: TokenIssuer
) -> None:
    now = [_now()]
    verifier = TokenVerifier.from_file(
        issuer_keys.public, replay_cache=ReplayCache(), clock=lambda: now[0]
    )
    token = _issue(issuer)
    verifier.verify(token)
    verifier.verify(token)  # from the cache
    now[0] += HOUR + datetime.timedelta(minutes=1)
    assert "expired" in _refused(verifier, token)


def test_a_remembered_single_use_token_is_still_refused_when_replayed(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(issuer, single_use=True)
    verifier.verify(token)
    # the payload is remembered, but single use is judged on every call
    assert "already used" in _refused(verifier, token)


def test_a_tampered_twin_of_a_remembered_token_is_refused(
    issuer: TokenIssuer, verifier: TokenVerifier
) -> None:
    token = _issue(issuer)
    verifier.verify(token)
    header, _, signature = token.split(".")
    forged = _segment({**_payload(), "purposes": ["court_enforcement"]})
    assert "signature" in _refused(verifier, f"{header}.{forged}.{signature}")
    assert verifier.verify(token).purposes == frozenset({"loan_underwriting"})
