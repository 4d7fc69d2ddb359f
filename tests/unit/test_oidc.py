"""ID tokens from the city's identity provider are verified per OpenID Connect Core §3.1.3.7.

Real HTTP on 127.0.0.1 against the local provider (portal.devidp); every attack token is refused
with the claim or header parameter that failed named in the error.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator

import pytest

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.ids import make_resident_id, make_uscc
from portal.devidp import JWKS_PATH, DevIdentityProvider, DevSigningKey
from portal.oidc import (
    DISCOVERY_PATH,
    IdentityProviderUnavailable,
    IdTokenRefused,
    IdTokenVerifier,
    PortalIdentity,
    ProviderKeys,
    check_provider_url,
)

RESIDENT = make_resident_id(region="320505", birth=datetime.date(1985, 3, 1), sequence=123)
ENTERPRISE = make_uscc(authority="9", category="1", region="320500", organisation="M000100Y4")


class FakeMonotonic:
    """A monotonic clock the test advances (the refresh rate limit is measured on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[DevIdentityProvider]:
    with DevIdentityProvider() as provider:
        yield provider


@pytest.fixture
def monotonic() -> FakeMonotonic:
    return FakeMonotonic()


@pytest.fixture
def verifier(idp: DevIdentityProvider, monotonic: FakeMonotonic) -> IdTokenVerifier:
    keys = ProviderKeys(issuer=idp.issuer, allow_loopback_http=True, monotonic=monotonic)
    return IdTokenVerifier(issuer=idp.issuer, audience=idp.client_id, keys=keys)


def _refused(verifier: IdTokenVerifier, token: str, field: str, **kwargs: object) -> str:
    with pytest.raises(IdTokenRefused) as info:
        verifier.verify(token, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field, info.value
    return str(info.value)


def test_a_valid_token_is_accepted(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, credit_code=ENTERPRISE, name="王芳", nonce="n-1"
    )
    identity = verifier.verify(token, nonce="n-1")
    assert isinstance(identity, PortalIdentity)
    assert identity.sub == "u-1"
    assert identity.resident_id == RESIDENT
    assert identity.credit_code == ENTERPRISE
    assert identity.name == "王芳"
    assert identity.issuer == idp.issuer
    assert identity.auth_time is not None
    assert identity.expires_at > datetime.datetime.now(tz=datetime.UTC)
    assert idp.request_count(DISCOVERY_PATH) == 1
    assert idp.request_count(JWKS_PATH) == 1


def test_a_token_signed_by_a_key_outside_the_jwks_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    forger = DevSigningKey.generate()
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, unsafe_signing_key=forger)
    assert "does not publish" in _refused(verifier, token, "kid")
    # the forger claims the provider's kid: the signature does not verify under that key
    token = idp.mint_id_token(
        subject="u-1",
        resident_id=RESIDENT,
        unsafe_signing_key=forger,
        header={"kid": idp.current_kid},
    )
    assert "does not verify" in _refused(verifier, token, "signature")


def test_an_expired_token_is_refused(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, issued_at=time.time() - 3600, lifetime_s=600
    )
    assert "expired" in _refused(verifier, token, "exp")


def test_a_token_for_another_audience_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, audience="another-client")
    assert "does not include this portal" in _refused(verifier, token, "aud")
    # us among untrusted others is refused too (Core §3.1.3.7 item 3)
    token = idp.mint_id_token(
        subject="u-1",
        resident_id=RESIDENT,
        audience=[idp.client_id, "another-client"],
        extra={"azp": idp.client_id},
    )
    assert "untrusted" in _refused(verifier, token, "aud")


def test_several_audiences_need_azp_to_be_us(
    idp: DevIdentityProvider, monotonic: FakeMonotonic
) -> None:
    keys = ProviderKeys(issuer=idp.issuer, allow_loopback_http=True, monotonic=monotonic)
    verifier = IdTokenVerifier(
        issuer=idp.issuer, audience=idp.client_id, keys=keys, also_trusted_audiences=["gateway"]
    )
    both = [idp.client_id, "gateway"]
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, audience=both)
    _refused(verifier, token, "azp")
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, audience=both, extra={"azp": "gateway"}
    )
    _refused(verifier, token, "azp")
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, audience=both, extra={"azp": idp.client_id}
    )
    assert verifier.verify(token).sub == "u-1"


def test_a_token_from_another_issuer_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, extra={"iss": "https://idp.example.org"}
    )
    assert "not the configured" in _refused(verifier, token, "iss")


def test_alg_none_is_refused(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    token = idp.unsafe_mint_unsigned(subject="u-1", resident_id=RESIDENT)
    assert "'none' is not accepted" in _refused(verifier, token, "alg")


def test_hs256_keyed_with_the_public_key_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.unsafe_mint_hs256_with_public_key(subject="u-1", resident_id=RESIDENT)
    assert "'HS256' is not accepted" in _refused(verifier, token, "alg")


def test_hmac_and_none_cannot_be_configured(idp: DevIdentityProvider) -> None:
    keys = ProviderKeys(issuer=idp.issuer, allow_loopback_http=True)
    for algorithms in (["ES256", "HS256"], ["none"], []):
        with pytest.raises(InvalidArgument) as info:
            IdTokenVerifier(issuer=idp.issuer, audience="c", keys=keys, algorithms=algorithms)
        assert info.value.field == "algorithms"
    with pytest.raises(InvalidArgument) as info:
        IdTokenVerifier(issuer=idp.issuer, audience="c", keys=keys, leeway_s=3600)
    assert info.value.field == "leeway_s"


def test_a_token_without_kid_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, header={"kid": None})
    assert "no key id" in _refused(verifier, token, "kid")


def test_a_nonce_mismatch_is_refused(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, nonce="replayed")
    _refused(verifier, token, "nonce", nonce="sent-by-this-session")
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT)
    _refused(verifier, token, "nonce", nonce="sent-by-this-session")


def test_a_token_issued_in_the_future_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, issued_at=time.time() + 3600)
    assert "future" in _refused(verifier, token, "iat")


def test_not_before_is_honoured(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, extra={"nbf": int(time.time()) + 3600}
    )
    _refused(verifier, token, "nbf")


def test_max_age_needs_a_recent_sign_in(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    token = idp.mint_id_token(
        subject="u-1", resident_id=RESIDENT, extra={"auth_time": int(time.time()) - 7200}
    )
    _refused(verifier, token, "auth_time", max_age_s=600)
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, omit=("auth_time",))
    _refused(verifier, token, "auth_time", max_age_s=600)


def test_missing_claims_are_refused(idp: DevIdentityProvider, verifier: IdTokenVerifier) -> None:
    for claim in ("sub", "exp", "iat", "resident_id"):
        token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, omit=(claim,))
        _refused(verifier, token, claim)


def test_a_malformed_resident_id_is_refused(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    bad_check = RESIDENT[:17] + ("0" if RESIDENT[17] != "0" else "1")
    token = idp.mint_id_token(subject="u-1", resident_id=bad_check)
    message = _refused(verifier, token, "resident_id")
    assert "check character" in message
    assert RESIDENT[:17] not in message  # the error never repeats the identifier
    token = idp.mint_id_token(subject="u-1", resident_id=RESIDENT, credit_code="91320500XXXX")
    _refused(verifier, token, "credit_code")


def test_key_rotation_is_followed_with_one_refresh(
    idp: DevIdentityProvider, verifier: IdTokenVerifier, monotonic: FakeMonotonic
) -> None:
    old = idp.mint_id_token(subject="u-1", resident_id=RESIDENT)
    verifier.verify(old)
    assert idp.request_count(JWKS_PATH) == 1
    idp.rotate()
    monotonic.now += 61
    new = idp.mint_id_token(subject="u-2", resident_id=RESIDENT)
    assert verifier.verify(new).sub == "u-2"
    assert idp.request_count(JWKS_PATH) == 2
    # the old key is still published for tokens already out
    assert verifier.verify(old).sub == "u-1"
    assert idp.request_count(JWKS_PATH) == 2
    assert idp.request_count(DISCOVERY_PATH) == 1


def test_a_withdrawn_key_stops_being_accepted(
    idp: DevIdentityProvider, verifier: IdTokenVerifier, monotonic: FakeMonotonic
) -> None:
    old_kid = idp.current_kid
    old = idp.mint_id_token(subject="u-1", resident_id=RESIDENT)
    verifier.verify(old)
    idp.rotate()
    idp.retire(old_kid)
    monotonic.now += 3601  # the key set's maximum age
    _refused(verifier, old, "kid")


def test_unknown_kids_do_not_hammer_the_jwks_endpoint(
    idp: DevIdentityProvider, verifier: IdTokenVerifier, monotonic: FakeMonotonic
) -> None:
    verifier.verify(idp.mint_id_token(subject="u-1", resident_id=RESIDENT))
    assert idp.request_count(JWKS_PATH) == 1
    for i in range(20):
        token = idp.mint_id_token(
            subject="u-1", resident_id=RESIDENT, header={"kid": f"made-up-{i}"}
        )
        _refused(verifier, token, "kid")
    assert idp.request_count(JWKS_PATH) == 1
    monotonic.now += 61
    for i in range(20):
        token = idp.mint_id_token(
            subject="u-1", resident_id=RESIDENT, header={"kid": f"made-up-again-{i}"}
        )
        _refused(verifier, token, "kid")
    assert idp.request_count(JWKS_PATH) == 2


def test_https_is_required_for_a_provider(idp: DevIdentityProvider) -> None:
    for url in ("http://idp.example.org", "http://10.0.0.1:8080", "ftp://idp.example.org"):
        with pytest.raises(ConfigError) as info:
            ProviderKeys(issuer=url, allow_loopback_http=True)
        assert info.value.field == "issuer"
        assert "https" in str(info.value)
    # loopback http only on explicit request
    with pytest.raises(ConfigError, match="allow_loopback_http"):
        ProviderKeys(issuer=idp.issuer)
    for url in ("http://localhost:1", "http://[::1]:1", "https://idp.example.org/realm"):
        assert check_provider_url(url, allow_loopback_http=True, field="issuer") == url


def test_a_discovery_document_naming_another_issuer_is_refused(
    idp: DevIdentityProvider, monotonic: FakeMonotonic
) -> None:
    # the same server under another spelling of the issuer (Discovery 1.0 §4.3)
    spelled = idp.issuer.replace("127.0.0.1", "localhost")
    keys = ProviderKeys(issuer=spelled, allow_loopback_http=True, monotonic=monotonic)
    with pytest.raises(ConfigError) as info:
        keys.key(idp.current_kid)
    assert info.value.field == "issuer"


def test_a_failed_fetch_is_not_retried_per_token(monotonic: FakeMonotonic) -> None:
    with DevIdentityProvider() as provider:
        issuer = provider.issuer
    keys = ProviderKeys(issuer=issuer, allow_loopback_http=True, monotonic=monotonic)
    with pytest.raises(IdentityProviderUnavailable, match="unreachable"):
        keys.key("any")
    # within the refresh interval the outage is reported without another connection attempt
    with pytest.raises(IdentityProviderUnavailable, match="next attempt"):
        keys.key("any")


def test_the_identity_repr_hides_the_resident_id(
    idp: DevIdentityProvider, verifier: IdTokenVerifier
) -> None:
    identity = verifier.verify(idp.mint_id_token(subject="u-1", resident_id=RESIDENT))
    assert RESIDENT not in repr(identity)
