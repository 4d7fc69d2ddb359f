"""Online sign-in against a real local OpenID provider: the authorization-code flow with state,
nonce and PKCE (S256), and the refusals: bad state, replayed code, forged, expired and
wrong-audience ID tokens, each with a clear page and an audit entry."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from osmanthus.core.errors import PermissionDenied
from portal.app import create_app
from portal.auditlog import AUDIT_FILE
from portal.devidp import DemoIdentity, DevIdentityProvider, DevSigningKey
from portal.oidc import IdTokenVerifier, ProviderKeys
from portal.session import PLAIN_LOGIN_COOKIE, PLAIN_SESSION_COOKIE
from portal.settings import PortalMode, PortalSettings
from portal.signin import CALLBACK_PATH, OidcSettings, pkce_challenge
from tests.portal_stub import ACME, ALICE, StubBackend

PORTAL = "http://localhost"
REDIRECT_URI = PORTAL + CALLBACK_PATH


@pytest.fixture
def idp() -> Iterator[DevIdentityProvider]:
    provider = DevIdentityProvider(
        identities=[
            DemoIdentity(label="张三 Zhang San", subject="demo-alice", resident_id=ALICE),
            DemoIdentity(
                label="ACME 法定代表人 Legal representative",
                subject="demo-rep",
                resident_id=ALICE,
                credit_code=ACME,
            ),
        ],
        redirect_uris=[REDIRECT_URI],
    )
    with provider:
        yield provider


def online_app(tmp_path: Path, idp: DevIdentityProvider) -> tuple[TestClient, StubBackend]:
    keys = ProviderKeys(issuer=idp.issuer, allow_loopback_http=True)
    verifier = IdTokenVerifier(issuer=idp.issuer, audience=idp.client_id, keys=keys)
    backend = StubBackend()
    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.ONLINE, device_id="portal-1", state_dir=tmp_path, public_url=PORTAL
        ),
        backend=backend,
        card_reader=None,
        identity=OidcSettings(
            issuer=idp.issuer,
            client_id=idp.client_id,
            redirect_uri=REDIRECT_URI,
            verifier=verifier,
            allow_loopback_http=True,
        ),
    )
    return TestClient(app, base_url=PORTAL, follow_redirects=False), backend


def audit_lines(state_dir: Path) -> list[dict[str, Any]]:
    text = (state_dir / AUDIT_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def choose_identity(authorize_url: str, index: int) -> str:
    """What a person does at the provider: open the page, press the identity's button. Returns
    the redirect back to the portal."""
    with httpx.Client(trust_env=False, follow_redirects=False) as browser:
        page = browser.get(authorize_url)
        assert page.status_code == 200, page.text
        assert f'id="idp-identity-{index}"' in page.text
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize_url).query))
        base = authorize_url.split("?", 1)[0]
        answer = browser.post(base, data={**params, "identity": str(index)})
    assert answer.status_code == 303
    return answer.headers["location"]


def begin(client: TestClient) -> str:
    response = client.get("/login")
    assert response.status_code == 303
    assert PLAIN_LOGIN_COOKIE in response.headers["set-cookie"]
    assert "samesite=lax" in response.headers["set-cookie"].lower()
    return response.headers["location"]


def test_sign_in_with_state_nonce_and_pkce(tmp_path: Path, idp: DevIdentityProvider) -> None:
    client, backend = online_app(tmp_path, idp)
    authorize = begin(client)
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["state"] and params["nonce"] and params["redirect_uri"] == REDIRECT_URI
    back = choose_identity(authorize, 0)
    assert back.startswith(REDIRECT_URI + "?")
    response = client.get(back.removeprefix(PORTAL))
    assert response.status_code == 200 and 'id="continue-link"' in response.text
    assert PLAIN_SESSION_COOKIE in response.headers["set-cookie"]
    page = client.get("/me")
    assert page.status_code == 200 and 'id="score-value">106<' in page.text
    assert backend.asked == [("summary", ALICE)]
    events = [(line["extra"]["event"], line["decision"]) for line in audit_lines(tmp_path)]
    assert events == [("sign_in", "allow")]
    # the code is single use: the same callback again signs nobody in
    replay = client.get(back.removeprefix(PORTAL))
    assert replay.status_code == 401


def test_a_legal_representative_sees_the_enterprise_and_may_switch(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = online_app(tmp_path, idp)
    back = choose_identity(begin(client), 1)
    client.get(back.removeprefix(PORTAL))
    page = client.get("/me").text
    assert 'data-kind="enterprise"' in page and 'id="score-grade">A<' in page
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert (
        client.post("/me/switch", data={"csrf_token": token, "kind": "person"}).status_code == 303
    )
    assert 'data-kind="person"' in client.get("/me").text
    assert backend.asked == [("summary", ACME), ("summary", ALICE)]


def test_a_callback_with_another_state_is_refused(tmp_path: Path, idp: DevIdentityProvider) -> None:
    client, backend = online_app(tmp_path, idp)
    back = choose_identity(begin(client), 0)
    parts = urllib.parse.urlsplit(back)
    params = dict(urllib.parse.parse_qsl(parts.query))
    params["state"] = "an-attackers-state"
    response = client.get(CALLBACK_PATH + "?" + urllib.parse.urlencode(params))
    assert response.status_code == 401
    assert "登录未通过" in response.text and "state" in response.text
    assert client.get("/me").status_code == 303
    assert backend.asked == []
    assert audit_lines(tmp_path)[-1]["reason"] == "sign-in refused: state"


def test_a_callback_without_a_sign_in_started_here_is_refused(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    # login CSRF: an attacker's code and state, pushed into a victim's browser
    attacker, _ = online_app(tmp_path / "attacker", idp)
    back = choose_identity(begin(attacker), 0)
    victim, backend = online_app(tmp_path / "victim", idp)
    response = victim.get(back.removeprefix(PORTAL))
    assert response.status_code == 401
    assert backend.asked == []


@pytest.mark.parametrize(
    ("forge", "field"),
    [
        (lambda idp, claims: idp.mint_id_token(**claims, audience="another-client"), "aud"),
        (lambda idp, claims: idp.mint_id_token(**claims, issued_at=1_000_000), "exp"),
        (
            lambda idp, claims: idp.mint_id_token(
                **claims, unsafe_signing_key=DevSigningKey.generate()
            ),
            "kid",
        ),
        (lambda idp, claims: idp.mint_id_token(**{**claims, "nonce": "replayed"}), "nonce"),
        (lambda idp, claims: idp.unsafe_mint_unsigned(**claims), "alg"),
    ],
    ids=["wrong-audience", "expired", "forged", "wrong-nonce", "unsigned"],
)
def test_bad_id_tokens_are_refused_and_audited(
    tmp_path: Path, idp: DevIdentityProvider, forge, field: str
) -> None:
    client, backend = online_app(tmp_path, idp)
    idp.unsafe_id_token = lambda claims: forge(idp, claims)
    back = choose_identity(begin(client), 0)
    response = client.get(back.removeprefix(PORTAL))
    assert response.status_code == 401
    assert "Sign-in refused" in response.text and f"{field}:" in response.text
    assert PLAIN_SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert client.get("/me").status_code == 303
    assert backend.asked == []
    line = audit_lines(tmp_path)[-1]
    assert (line["decision"], line["reason"]) == ("deny", f"sign-in refused: {field}")


def test_the_provider_checks_pkce_and_the_redirect_uri(idp: DevIdentityProvider) -> None:
    verifier = "v" * 43
    params = {
        "client_id": idp.client_id,
        "redirect_uri": REDIRECT_URI,
        "response_type": "code",
        "scope": "openid",
        "state": "s",
        "nonce": "n",
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    location = choose_identity(idp.issuer + "/authorize?" + urllib.parse.urlencode(params), 0)
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))["code"]
    token = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "client_id": idp.client_id,
        "code_verifier": "w" * 43,
    }
    with httpx.Client(trust_env=False) as http:
        refused = http.post(idp.issuer + "/token", data=token)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        # the failed attempt spent the code (RFC 6749 §4.1.2: single use)
        again = http.post(idp.issuer + "/token", data={**token, "code_verifier": verifier})
        assert again.status_code == 400
        # a redirect_uri not registered is shown an error, never redirected to
        bad = http.get(
            idp.issuer
            + "/authorize?"
            + urllib.parse.urlencode({**params, "redirect_uri": "http://evil.example/cb"})
        )
        assert bad.status_code == 400
        plain = http.get(
            idp.issuer
            + "/authorize?"
            + urllib.parse.urlencode({**params, "code_challenge_method": "plain"})
        )
        assert plain.status_code == 400


# --- review fixes: a second sign-in, the revoke notice, the revoke's audit reason ----------


def signed_in_online(client: TestClient, identity: int = 0) -> str:
    """Sign in through the provider; the new session's cookie value."""
    back = choose_identity(begin(client), identity)
    assert client.get(back.removeprefix(PORTAL)).status_code == 200
    return client.cookies[PLAIN_SESSION_COOKIE]


def csrf_of(client: TestClient, path: str = "/me") -> str:
    page = client.get(path).text
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


def test_signing_in_again_ends_the_earlier_session(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = online_app(tmp_path, idp)
    first = signed_in_online(client)
    assert client.get("/me").status_code == 200
    # /login drops the session the browser brings, whatever happens next
    response = client.get("/login")
    assert response.status_code == 303
    assert f'{PLAIN_SESSION_COOKIE}=""' in response.headers["set-cookie"]
    portal = client.app.state.portal  # type: ignore[attr-defined]
    assert len(portal.sessions) == 0
    replayed = TestClient(client.app, base_url=PORTAL, follow_redirects=False)
    replayed.cookies.set(PLAIN_SESSION_COOKIE, first)
    assert replayed.get("/me").status_code == 303
    second = signed_in_online(client)
    assert second != first and len(portal.sessions) == 1
    events = [(line["extra"]["event"], line["reason"]) for line in audit_lines(tmp_path)]
    assert ("sign_out", "signed in again") in events
    del backend


def test_the_callback_ends_the_session_the_browser_brings(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, _ = online_app(tmp_path, idp)
    portal = client.app.state.portal  # type: ignore[attr-defined]
    pending_back = choose_identity(begin(client), 0)
    # meanwhile this browser got a session by another sign-in (another tab)
    other = TestClient(client.app, base_url=PORTAL, follow_redirects=False)
    planted = signed_in_online(other)
    client.cookies.set(PLAIN_SESSION_COOKIE, planted)
    answer = client.get(pending_back.removeprefix(PORTAL))
    assert answer.status_code == 200
    fresh = answer.cookies[PLAIN_SESSION_COOKIE]
    assert fresh != planted and len(portal.sessions) == 1
    assert other.get("/me").status_code == 303
    # a refused callback ends it too and tells the browser to forget it
    client.cookies.delete(PLAIN_SESSION_COOKIE)
    client.cookies.set(PLAIN_SESSION_COOKIE, fresh)
    refused = client.get(CALLBACK_PATH + "?state=forged&code=x")
    assert refused.status_code == 401 and len(portal.sessions) == 0
    assert f'{PLAIN_SESSION_COOKIE}=""' in refused.headers["set-cookie"]


def test_the_revoke_notice_comes_from_the_session_not_the_url(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = online_app(tmp_path, idp)
    signed_in_online(client)
    # a crafted link cannot make the page announce anything
    crafted = client.get("/me/consents?revoked=请致电+400-000-0000+恢复授权")
    assert crafted.status_code == 200
    assert 'id="revoked-notice"' not in crafted.text and "400-000-0000" not in crafted.text
    token = csrf_of(client, "/me/consents")
    response = client.post("/me/consents/cns_alice1/revoke", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/me/consents"
    page = client.get("/me/consents").text
    assert 'id="revoked-notice"' in page and "cns_alice1" in page and "已撤回" in page
    assert backend.consents_by_id["cns_alice1"].revoked_at is not None
    # shown once
    assert 'id="revoked-notice"' not in client.get("/me/consents").text


def test_revoking_someone_elses_consent_is_refused_and_audited(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = online_app(tmp_path, idp)
    signed_in_online(client)
    response = client.post("/me/consents/cns_bob1/revoke", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 403
    assert backend.consents_by_id["cns_bob1"].revoked_at is None
    line = audit_lines(tmp_path)[-1]
    assert (line["extra"]["event"], line["decision"], line["reason"]) == (
        "revoke",
        "deny",
        "the consent is not this subject's",
    )


def test_a_policy_refusal_of_the_revoke_is_audited_as_one(
    tmp_path: Path, idp: DevIdentityProvider
) -> None:
    client, backend = online_app(tmp_path, idp)
    signed_in_online(client)

    def policy_refuses(subject: object, consent_id: str) -> None:
        # what the coordinator raises when central policy refuses the device (no field)
        raise PermissionDenied("central policy: no rule allows ManageConsent for role portal")

    backend.revoke = policy_refuses  # type: ignore[assignment,method-assign]
    response = client.post("/me/consents/cns_alice1/revoke", data={"csrf_token": csrf_of(client)})
    assert response.status_code == 403
    line = audit_lines(tmp_path)[-1]
    assert (line["decision"], line["reason"]) == (
        "deny",
        "central policy refused this device the revoke",
    )
