"""The portal's web app against a real federation: a kiosk (role kiosk) reads the demo
citizen's card and shows her score, records and who asked; the online site (role portal) signs
her in at a real local OpenID provider (authorization code, state, nonce, PKCE), shows her
consents and revokes one with its CSRF token; a consent of someone else's is not revoked; and
asking about another subject reaches no federation server at all."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from starlette.testclient import TestClient

from osmanthus.core.ids import make_resident_id
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.types import Role, Shape
from osmanthus.demo.seed import DEMO_CITIZEN
from portal.app import create_app
from portal.auditlog import AUDIT_FILE
from portal.backend import SubjectBackend
from portal.cardreader import SimulatedCardReader
from portal.devidp import DemoIdentity, DevIdentityProvider
from portal.oidc import IdTokenVerifier, ProviderKeys
from portal.settings import PortalMode, PortalSettings
from portal.signin import CALLBACK_PATH, OidcSettings
from sdk import Client
from tests.integration.conftest import Federation

CITIZEN = DEMO_CITIZEN.subject_id
#: another person, valid but not the one signed in
OTHER = make_resident_id(region="110105", birth=date(1949, 12, 31), sequence=2)
LOOPBACK = ("127.0.0.1", 50000)
SITE = "http://localhost"
pytestmark = pytest.mark.slow


def device_backend(federation: Federation, requester: str, role: Role) -> SubjectBackend:
    """A portal device as the platform registers it: its own certificate, Paillier key and
    sealing key, and a token (role kiosk or portal, self_query only) bound to both."""
    sealing_key = X25519PrivateKey.generate()
    token = federation.token(
        requester,
        role=role,
        purposes=["self_query"],
        seal_fingerprint=seal_fingerprint(public_bytes(sealing_key)),
    )
    client = Client(
        federation.target,
        tls=federation.tls(requester),
        token=token,
        keys=federation.keys[requester],
        catalogue=federation.catalogue,
    )
    return SubjectBackend(client=client, sealing_key=sealing_key, catalogue=federation.catalogue)


def coordinator_audit(federation: Federation) -> list[dict[str, object]]:
    path = federation.state_dir / "coordinator" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def csrf_of(page: str) -> str:
    return page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]


@pytest.fixture(scope="module")
def kiosk(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, SimulatedCardReader, SubjectBackend]]:
    backend = device_backend(federation, "kiosk-1", Role.KIOSK)
    reader = SimulatedCardReader()
    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.KIOSK,
            device_id="kiosk-1",
            state_dir=tmp_path_factory.mktemp("kiosk-state"),
        ),
        backend=backend,
        card_reader=reader,
        identity=None,
    )
    with TestClient(
        app, client=LOOPBACK, base_url="http://127.0.0.1", follow_redirects=False
    ) as client:
        yield client, reader, backend
    backend.close()


def test_the_kiosk_shows_the_citizens_score_records_and_who_asked(
    kiosk: tuple[TestClient, SimulatedCardReader, SubjectBackend], federation: Federation
) -> None:
    client, reader, _ = kiosk
    reader.place(CITIZEN)
    assert client.get("/kiosk/poll").json()["state"] == "signed_in"
    page = client.get("/me")
    assert page.status_code == 200, page.text
    # the same figure the device's own SDK query gives (the federation runs a subset of the
    # catalogue's departments, so not necessarily the demo's 106)
    expected = device_backend(federation, "kiosk-1", Role.KIOSK)
    try:
        card = expected._client.person_score(CITIZEN, purpose="self_query", shape=Shape.BREAKDOWN)
    finally:
        expected.close()
    assert f'id="score-value">{card.score}<' in page.text
    for zh in ("资质状况", "荣誉表彰", "献血记录", "志愿者服务"):
        assert zh in page.text
    records = client.get("/me/records").text
    assert 'id="dept-hrss"' in records and 'data-state="counts"' in records
    queries = client.get("/me/queries").text
    # the kiosk's own self-queries, recorded by the coordinator and by the nodes
    assert 'data-requester="kiosk-1"' in queries
    assert "协调中心" in queries and "市人社局" in queries
    assert client.get("/me/lists").status_code == 200
    assert CITIZEN not in page.text + records + queries
    reader.remove()
    assert client.get("/kiosk/status").json() == {"signed_in": False}


def test_asking_about_someone_else_reaches_no_server(
    kiosk: tuple[TestClient, SimulatedCardReader, SubjectBackend], federation: Federation
) -> None:
    client, reader, _ = kiosk
    reader.place(CITIZEN)
    assert client.get("/kiosk/poll").json()["state"] == "signed_in"
    client.get("/me")
    before = len(coordinator_audit(federation))
    assert client.get(f"/subjects/{OTHER}/records").status_code == 403
    assert client.get(f"/me?subject={OTHER}").status_code == 403
    assert len(coordinator_audit(federation)) == before
    reader.remove()


@pytest.fixture(scope="module")
def online(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, DevIdentityProvider]]:
    backend = device_backend(federation, "portal-1", Role.PORTAL)
    provider = DevIdentityProvider(
        identities=[DemoIdentity(label="沈桂芳", subject="demo-citizen", resident_id=CITIZEN)],
        redirect_uris=[SITE + CALLBACK_PATH],
    )
    with provider:
        keys = ProviderKeys(issuer=provider.issuer, allow_loopback_http=True)
        app = create_app(
            settings=PortalSettings(
                mode=PortalMode.ONLINE,
                device_id="portal-1",
                state_dir=tmp_path_factory.mktemp("portal-state"),
                public_url=SITE,
            ),
            backend=backend,
            card_reader=None,
            identity=OidcSettings(
                issuer=provider.issuer,
                client_id=provider.client_id,
                redirect_uri=SITE + CALLBACK_PATH,
                verifier=IdTokenVerifier(
                    issuer=provider.issuer, audience=provider.client_id, keys=keys
                ),
                allow_loopback_http=True,
            ),
        )
        with TestClient(app, base_url=SITE, follow_redirects=False) as client:
            yield client, provider
    backend.close()


def sign_in(client: TestClient) -> None:
    authorize = client.get("/login").headers["location"]
    params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(authorize).query))
    with httpx.Client(trust_env=False, follow_redirects=False) as browser:
        assert browser.get(authorize).status_code == 200
        back = browser.post(authorize.split("?", 1)[0], data={**params, "identity": "0"})
    assert back.status_code == 303
    assert client.get(back.headers["location"].removeprefix(SITE)).status_code == 200


def test_online_sign_in_consents_and_revocation(
    online: tuple[TestClient, DevIdentityProvider], federation: Federation, registrar: Client
) -> None:
    client, _ = online
    expires = datetime.now(UTC) + timedelta(days=1)
    mine = registrar.grant_consent(
        subject_id=CITIZEN, grantee="agency-1", purpose="loan_underwriting", expires_at=expires
    )
    someone = registrar.grant_consent(
        subject_id=OTHER,
        grantee="agency-1",
        purpose="loan_underwriting",
        expires_at=expires,
    )
    sign_in(client)
    page = client.get("/me/consents").text
    assert f'id="consent-{mine.consent_id}"' in page
    assert someone.consent_id not in page
    token = csrf_of(page)
    # someone else's consent, by its id: the coordinator refuses, nothing is revoked
    refused = client.post(f"/me/consents/{someone.consent_id}/revoke", data={"csrf_token": token})
    assert refused.status_code == 403
    # the portal's audit says why, from the coordinator's refusal (field consent_id)
    state_dir = client.app.state.portal.settings.state_dir  # type: ignore[attr-defined]
    last = json.loads((state_dir / AUDIT_FILE).read_text().splitlines()[-1])
    assert (last["decision"], last["reason"]) == ("deny", "the consent is not this subject's")
    # without the CSRF token: refused before the federation is asked
    assert client.post(f"/me/consents/{mine.consent_id}/revoke").status_code == 403
    done = client.post(f"/me/consents/{mine.consent_id}/revoke", data={"csrf_token": token})
    assert done.status_code == 303
    state = {c.consent_id: c for c in registrar.list_consents(subject_id=CITIZEN)}
    assert state[mine.consent_id].revoked_at is not None
    others = {c.consent_id: c for c in registrar.list_consents(subject_id=OTHER)}
    assert others[someone.consent_id].revoked_at is None
    after = client.get(done.headers["location"]).text
    assert 'id="revoked-notice"' in after
