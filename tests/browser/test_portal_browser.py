"""The subjects' portal in a real browser: headless Chromium drives the kiosk and the online
self-service site, served by uvicorn, against a real federation (seven department nodes and a
coordinator over mTLS, real Paillier and sealing keys) and a real local OpenID provider.

The kiosk: a card on the simulated reader shows the demo citizen's score (the article's 106)
and its four categories, equal to what the SDK answers; her records; who asked (an agency's
earlier query under her consent among them); sign-out by keyboard alone; the idle time-out
bringing back the start screen with nothing of her left; a card with a bad check character
refused. The online site: sign-in through the provider's page (authorization code, state,
nonce, PKCE), the same pages, a consent revoked with its button, POSTs without or with a wrong
CSRF token refused, a request about someone else refused and audited as a salted hash, forged
ID tokens refused at the callback, sign-out.

With OSMANTHUS_SCREENSHOTS=1 the tests write docs/screenshots/{kiosk,records,queries}.png.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from playwright.sync_api import Browser, BrowserContext, Page, Response

from osmanthus.core.audit import load_or_create_salt
from osmanthus.core.ids import make_resident_id, mask_subject
from osmanthus.core.logkeys import ROSTER_FILE, LogRoster
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.demo.seed import DEMO_CITIZEN, DEMO_CITIZEN_SCORE
from portal.app import SIMULATOR_HEADER, create_app
from portal.auditlog import AUDIT_FILE, SALT_FILE
from portal.backend import SubjectBackend
from portal.cardreader import SimulatedCardReader
from portal.devidp import DemoIdentity, DevIdentityProvider, DevSigningKey
from portal.oidc import IdTokenVerifier, ProviderKeys
from portal.settings import KIOSK_IDLE_S, PortalMode, PortalSettings, new_simulator_secret
from portal.signin import CALLBACK_PATH, OidcSettings
from sdk import Client, PersonScore
from tests.browser.portal_fixtures import (
    VIEWPORT,
    WAIT_MS,
    Served,
    TestClock,
    check_accessibility,
    device_backend,
    device_client,
    free_socket,
    serve,
    start_portal_federation,
    tab_to,
)
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    consent_for,
    stop_federation,
    witness_node_logs,
)

pytestmark = pytest.mark.slow

CITIZEN: Final = DEMO_CITIZEN.subject_id
#: someone else, a valid resident id, not the one signed in
OTHER: Final = make_resident_id(region="110105", birth=date(1949, 12, 31), sequence=2)
#: the four bonus categories of the article's kiosk screen
CATEGORIES: Final = ("资质状况", "荣誉表彰", "献血记录", "志愿者服务")
SCREENSHOTS: Final = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _bad_check_character(resident_id: str) -> str:
    """The same number with another check character (GB 11643 / ISO 7064 MOD 11-2)."""
    alphabet = "0123456789X"
    last = resident_id[-1]
    return resident_id[:-1] + alphabet[(alphabet.index(last) + 1) % len(alphabet)]


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save the page for the README, only when asked (CI must not dirty the tree)."""
    if os.environ.get("OSMANTHUS_SCREENSHOTS") != "1":
        return
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def read_audit(state_dir: Path) -> list[dict[str, Any]]:
    path = state_dir / AUDIT_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def salted_hash(state_dir: Path, subject_id: str) -> str:
    """What the portal's audit log records for `subject_id` (HMAC-SHA-256 under its salt)."""
    salt = load_or_create_salt(state_dir / SALT_FILE)
    return hmac.new(salt, subject_id.encode("utf-8"), hashlib.sha256).hexdigest()


def assert_no_raw_ids(state_dir: Path, *ids: str) -> None:
    """No file of the portal's state directory holds a raw identifier."""
    files = [p for p in state_dir.rglob("*") if p.is_file()]
    assert files, f"nothing in {state_dir}"
    for path in files:
        data = path.read_bytes()
        for subject_id in ids:
            assert subject_id.encode() not in data, f"{path} holds a raw resident id"


def new_page(browser: Browser) -> tuple[BrowserContext, Page]:
    """A fresh browser profile (no cookies, no cache) with the README's window size."""
    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    context.set_default_timeout(WAIT_MS)
    return context, context.new_page()


def assert_nothing_of(page: Page, card: PersonScore) -> None:
    """The page shows nothing of the person whose session ended."""
    html = page.content()
    for selector in ("#score", "#who", "#signout-form", "#records", "#queries"):
        assert page.locator(selector).count() == 0, f"{selector} is still on the page"
    assert mask_subject(CITIZEN) not in html
    assert CITIZEN not in html
    assert card.query_id not in html


# --- the federation and what was asked before -------------------------------------------------


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, issuer_keys: IssuerKeyPaths
) -> Iterator[Federation]:
    fed = start_portal_federation(
        tmp_path_factory.mktemp("portal-federation"), issuer_keys=issuer_keys
    )
    yield fed
    stop_federation(fed)


@pytest.fixture(scope="module")
def registrar(federation: Federation) -> Iterator[Client]:
    client = federation.client(
        "registrar",
        role=Role.PLATFORM_SERVICE,
        purposes=["court_enforcement", "consent_management"],
    )
    client.register_key()
    yield client
    client.close()


@dataclass(frozen=True)
class EarlierQuery:
    """An agency's query about the citizen, under her consent, before she comes to look."""

    consent_id: str
    query_id: str


@pytest.fixture(scope="module")
def earlier_query(federation: Federation, registrar: Client) -> EarlierQuery:
    agency = federation.client("agency-1", role=Role.CREDIT_AGENCY, purposes=["loan_underwriting"])
    try:
        agency.register_key()
        consent = consent_for(registrar, CITIZEN)
        card = agency.person_score(CITIZEN, purpose="loan_underwriting", consent_id=consent)
    finally:
        agency.close()
    # the departments' checkpoints over it are cosigned by the coordinator's witness before she
    # looks; the coordinator's own log has no witness here
    witness_node_logs(federation)
    return EarlierQuery(consent_id=consent, query_id=card.query_id)


def sdk_score(federation: Federation, requester: str, role: Role) -> PersonScore:
    """What the device's own SDK answers for the citizen (self_query, BREAKDOWN)."""
    client = device_client(federation, requester, role, sealing_key=X25519PrivateKey.generate())
    try:
        return client.person_score(CITIZEN, purpose="self_query", shape=Shape.BREAKDOWN)
    finally:
        client.close()


def assert_score_page(page: Page, federation: Federation, expected: PersonScore) -> None:
    """The score screen shows the SDK's figures: score, base, deductions, the four categories."""
    assert page.locator("#score-value").inner_text().strip() == str(expected.score)
    assert page.locator("#score-base").inner_text().strip() == str(expected.base)
    assert page.locator("#score-deductions").inner_text().strip() == f"−{expected.deductions}"
    model = federation.catalogue.model(SubjectKind.PERSON)
    shown: dict[str, int] = {}
    for category in model.categories:
        points = expected.bonuses[category.name]
        assert points is not None, f"{category.name}: its department did not answer"
        item = page.locator(f"#category-{category.name}")
        assert item.get_attribute("data-points") == str(points)
        assert item.locator(".category-points").inner_text().strip() == f"+{points}"
        shown[item.locator(".category-label [lang=zh-CN]").inner_text().strip()] = points
    # the article's four categories, each with points
    assert set(CATEGORIES) <= set(shown), shown
    assert all(shown[c] > 0 for c in CATEGORIES), shown


# --- the kiosk --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kiosk:
    served: Served
    reader: SimulatedCardReader
    clock: TestClock
    state_dir: Path
    simulator_secret: str

    def card(self, action: str, resident_id: str = "") -> None:
        """Put a card on the simulated reader, or take it away, through the kiosk's simulator
        route (loopback and the secret), as the demo does."""
        with httpx.Client(trust_env=False) as http:
            answer = http.post(
                f"{self.served.url}/_simulator/card",
                data={"action": action, "resident_id": resident_id},
                headers={SIMULATOR_HEADER: self.simulator_secret},
            )
        assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def kiosk(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kiosk]:
    backend: SubjectBackend = device_backend(federation, "kiosk-1", Role.KIOSK)
    reader = SimulatedCardReader()
    clock = TestClock()
    state_dir = tmp_path_factory.mktemp("kiosk-state")
    secret = new_simulator_secret()
    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.KIOSK,
            device_id="kiosk-1",
            state_dir=state_dir,
            simulator_secret=secret,
            log_roster=LogRoster.load(federation.certs / ROSTER_FILE),
        ),
        backend=backend,
        card_reader=reader,
        identity=None,
        clock=clock,
    )
    try:
        with serve(app, free_socket()) as served:
            yield Kiosk(
                served=served,
                reader=reader,
                clock=clock,
                state_dir=state_dir,
                simulator_secret=secret,
            )
    finally:
        backend.close()


@pytest.fixture
def kiosk_page(browser: Browser, kiosk: Kiosk) -> Iterator[tuple[Page, list[Response]]]:
    """The kiosk's screen on its start page, no card on the reader; every portal response
    the page received is collected (their headers are checked)."""
    kiosk.card("remove")
    context, page = new_page(browser)
    responses: list[Response] = []
    page.on(
        "response",
        lambda r: responses.append(r) if r.url.startswith(kiosk.served.url) else None,
    )
    page.goto(kiosk.served.url)
    page.wait_for_selector("#kiosk-start")
    check_accessibility(page)
    try:
        yield page, responses
    finally:
        kiosk.card("remove")
        context.close()


def place_card(page: Page, kiosk: Kiosk) -> None:
    kiosk.card("place", CITIZEN)
    page.wait_for_url(f"{kiosk.served.url}/me")
    page.wait_for_selector("#score-value")


def test_kiosk_score_records_who_asked_and_keyboard_sign_out(
    kiosk: Kiosk,
    kiosk_page: tuple[Page, list[Response]],
    federation: Federation,
    earlier_query: EarlierQuery,
) -> None:
    page, responses = kiosk_page
    place_card(page, kiosk)
    check_accessibility(page)
    expected = sdk_score(federation, "kiosk-1", Role.KIOSK)
    assert_score_page(page, federation, expected)
    # every department of her records answers: the article's scene, in full
    assert expected.score == DEMO_CITIZEN_SCORE == 106
    assert not expected.missing
    assert page.locator("#subject-masked").inner_text() == mask_subject(CITIZEN)
    assert CITIZEN not in page.content()
    screenshot(page, "kiosk.png")

    page.click("#to-records")
    page.wait_for_selector("#records-heading")
    check_accessibility(page)
    for dept in ("hrss", "civility", "blood", "volunteer", "transport", "housing"):
        assert page.locator(f"#dept-{dept} tr.record[data-state=counts]").count() >= 1, dept
    # the urban management penalty of seven years ago no longer counts, and says why
    expired = page.locator("#dept-urban tr.record[data-state=expired]")
    assert expired.count() == 1
    assert "已过有效期" in expired.inner_text()
    screenshot(page, "records.png")

    page.click("#nav-queries")
    page.wait_for_selector("#queries-heading")
    check_accessibility(page)
    asked = page.locator("tr.query[data-requester=agency-1]")
    assert asked.count() >= 1, "the agency's earlier query is not listed"
    assert earlier_query.consent_id in asked.first.inner_text()
    assert page.locator("tr.query[data-requester=kiosk-1]").count() >= 1

    # sign out with the keyboard alone: Tab to the button (the focus visible at every step),
    # Enter
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    tab_to(page, "signout-button")
    page.keyboard.press("Enter")
    page.wait_for_selector("#kiosk-start")
    assert_nothing_of(page, expected)
    # the card is still on the reader: signing out does not sign her straight back in
    assert page.locator("#kiosk-start").is_visible()
    # the browser's Back button brings back nothing of hers (no-store: the page is asked for
    # again, and her session is gone)
    page.go_back()
    page.wait_for_selector("#kiosk-start")
    assert_nothing_of(page, expected)
    events = [e["extra"]["event"] for e in read_audit(kiosk.state_dir)]
    assert "sign_in" in events and "sign_out" in events

    # nothing the kiosk sent may be cached: pages, JSON and static files alike
    assert len(responses) >= 6
    for response in responses:
        assert response.headers.get("cache-control") == "no-store", response.url


def test_kiosk_idle_time_out_leaves_nothing_of_the_person(
    kiosk: Kiosk, kiosk_page: tuple[Page, list[Response]], federation: Federation
) -> None:
    page, _ = kiosk_page
    place_card(page, kiosk)
    card = sdk_score(federation, "kiosk-1", Role.KIOSK)
    query_id = page.locator("#score-query-id").inner_text()
    # she walks away with her card on the reader; the portal's clock passes the idle time-out
    kiosk.clock.advance(KIOSK_IDLE_S + 1)
    page.wait_for_selector("#kiosk-start")
    assert_nothing_of(page, card)
    assert query_id not in page.content()
    # her pages are gone with the session
    page.goto(f"{kiosk.served.url}/me/records")
    page.wait_for_selector("#kiosk-start")
    assert_nothing_of(page, card)
    assert query_id not in page.content()
    entries = read_audit(kiosk.state_dir)
    expired = [e for e in entries if e["extra"]["event"] == "expired"]
    assert expired and expired[-1]["subject_hash"] == salted_hash(kiosk.state_dir, CITIZEN)


def test_kiosk_refuses_a_card_with_a_bad_check_character(
    kiosk: Kiosk, kiosk_page: tuple[Page, list[Response]]
) -> None:
    page, _ = kiosk_page
    bad = _bad_check_character(CITIZEN)
    kiosk.card("place", bad)
    refused = page.wait_for_selector("#card-refused")
    assert refused is not None
    assert refused.get_attribute("data-rule") == "check_character"
    text = refused.inner_text()
    assert "校验位" in text and "check character" in text
    assert bad not in page.content()
    check_accessibility(page)
    # nobody is signed in
    page.goto(f"{kiosk.served.url}/me")
    page.wait_for_selector("#kiosk-start")
    assert page.locator("#score").count() == 0
    # the card taken away, the refusal goes
    kiosk.card("remove")
    page.wait_for_selector("#card-refused", state="detached")
    denied = [
        e
        for e in read_audit(kiosk.state_dir)
        if e["extra"]["event"] == "sign_in" and e["decision"] == "deny"
    ]
    assert denied and denied[-1]["reason"] == "card refused: check_character"
    assert_no_raw_ids(kiosk.state_dir, CITIZEN, bad)


# --- the online self-service site -------------------------------------------------------------


@dataclass(frozen=True)
class Online:
    served: Served
    provider: DevIdentityProvider
    state_dir: Path


@pytest.fixture(scope="module")
def online(federation: Federation, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Online]:
    backend = device_backend(federation, "portal-1", Role.PORTAL)
    sock = free_socket()
    site = f"http://127.0.0.1:{sock.getsockname()[1]}"
    state_dir = tmp_path_factory.mktemp("portal-state")
    provider = DevIdentityProvider(
        identities=[
            DemoIdentity(label="沈桂芳 Shen Guifang", subject="demo-citizen", resident_id=CITIZEN)
        ],
        redirect_uris=[site + CALLBACK_PATH],
    )
    try:
        with provider:
            keys = ProviderKeys(issuer=provider.issuer, allow_loopback_http=True)
            app = create_app(
                settings=PortalSettings(
                    mode=PortalMode.ONLINE,
                    device_id="portal-1",
                    state_dir=state_dir,
                    public_url=site,
                    log_roster=LogRoster.load(federation.certs / ROSTER_FILE),
                ),
                backend=backend,
                card_reader=None,
                identity=OidcSettings(
                    issuer=provider.issuer,
                    client_id=provider.client_id,
                    redirect_uri=site + CALLBACK_PATH,
                    verifier=IdTokenVerifier(
                        issuer=provider.issuer, audience=provider.client_id, keys=keys
                    ),
                    allow_loopback_http=True,
                ),
            )
            with serve(app, sock) as served:
                assert served.url == site
                yield Online(served=served, provider=provider, state_dir=state_dir)
    finally:
        backend.close()


@pytest.fixture
def online_page(browser: Browser, online: Online) -> Iterator[Page]:
    context, page = new_page(browser)
    try:
        yield page
    finally:
        context.close()


def start_sign_in(page: Page, online: Online) -> None:
    """From the site's start page through the provider's demo sign-in page and back."""
    page.goto(online.served.url)
    page.wait_for_selector("#online-start")
    check_accessibility(page)
    page.click("#signin-button")
    # the provider's page: the authorization request carries state, nonce and PKCE (S256)
    page.wait_for_selector("#idp-identity-0")
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(page.url).query))
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["state"] and query["nonce"] and query["response_type"] == "code"
    page.click("#idp-identity-0")


def sign_in(page: Page, online: Online) -> None:
    start_sign_in(page, online)
    page.wait_for_selector("#score-value")
    assert page.url == f"{online.served.url}/me"


def consent_state(registrar: Client, consent_id: str) -> datetime | None:
    """When the federation says the consent was revoked (None: it was not)."""
    (record,) = [
        c for c in registrar.list_consents(subject_id=CITIZEN) if c.consent_id == consent_id
    ]
    return record.revoked_at


def test_online_sign_in_pages_revoke_a_consent_and_sign_out(
    online: Online,
    online_page: Page,
    federation: Federation,
    registrar: Client,
    earlier_query: EarlierQuery,
) -> None:
    page = online_page
    consent = registrar.grant_consent(
        subject_id=CITIZEN,
        grantee="agency-1",
        purpose="credit_report",
        expires_at=datetime.now(UTC) + timedelta(days=30),
    ).consent_id
    sign_in(page, online)
    check_accessibility(page)
    assert_score_page(page, federation, sdk_score(federation, "portal-1", Role.PORTAL))

    page.click("#nav-records")
    page.wait_for_selector("#records-heading")
    check_accessibility(page)
    assert page.locator("#dept-hrss tr.record[data-state=counts]").count() >= 1
    assert page.locator("#dept-urban tr.record[data-state=expired]").count() == 1

    page.click("#nav-queries")
    page.wait_for_selector("#queries-heading")
    check_accessibility(page)
    asked = page.locator("tr.query[data-requester=agency-1]")
    assert asked.count() >= 1
    assert earlier_query.consent_id in page.locator("#queries-table").inner_text()
    assert page.locator("tr.query[data-requester=portal-1]").count() >= 1
    # every department proved the agency's query to its log's checkpoint, cosigned by the
    # coordinator's witness; the coordinator's own line is proven to a checkpoint nobody
    # witnessed: shown, in words that say whose word it is; and its line for this very visit
    # waits for a witnessed checkpoint
    verified = page.locator("tr.query[data-requester=agency-1][data-proof=verified]")
    signed = page.locator("tr.query[data-requester=agency-1][data-proof=signed]")
    assert verified.count() == asked.count() - 1 >= 1 and signed.count() == 1
    assert "已核验" in verified.first.inner_text() and "Verified" in verified.first.inner_text()
    mark = signed.first.locator("td.proof").inner_text()
    assert "Signed by the coordinator only" in mark and "not yet witnessed" in mark
    assert "未经见证" in mark and "Verified" not in mark and "已核验" not in mark
    assert page.locator("tr.query[data-proof=pending]").count() >= 1
    assert page.locator(".log-problem").count() == 0
    assert page.locator("#queries-proof-note").count() == 1
    screenshot(page, "queries.png")

    page.click("#nav-consents")
    page.wait_for_selector("#consents-heading")
    check_accessibility(page)
    row = page.locator(f"#consent-{consent}")
    assert row.get_attribute("data-in-force") == "true"
    assert consent_state(registrar, consent) is None
    page.click(f"#revoke-{consent}")
    page.wait_for_selector("#revoked-notice")
    assert consent in page.locator("#revoked-notice").inner_text()
    row = page.locator(f"#consent-{consent}")
    assert row.get_attribute("data-in-force") == "false"
    assert "已撤回" in row.locator(".consent-state").inner_text()
    assert page.locator(f"#revoke-{consent}").count() == 0
    # the federation agrees
    assert consent_state(registrar, consent) is not None
    revokes = [e for e in read_audit(online.state_dir) if e["extra"]["event"] == "revoke"]
    assert revokes[-1]["decision"] == "allow" and revokes[-1]["extra"]["consent_id"] == consent

    page.click("#signout-button")
    page.wait_for_selector("#online-start")
    assert page.locator("#who").count() == 0
    assert CITIZEN not in page.content()
    page.goto(f"{online.served.url}/me/consents")
    page.wait_for_selector("#online-start")
    assert page.locator("#consents").count() == 0


def test_online_posts_without_the_csrf_token_are_refused(
    online: Online, online_page: Page, registrar: Client
) -> None:
    page = online_page
    consent = registrar.grant_consent(
        subject_id=CITIZEN,
        grantee="agency-1",
        purpose="loan_underwriting",
        expires_at=datetime.now(UTC) + timedelta(days=30),
    ).consent_id
    sign_in(page, online)
    page.goto(f"{online.served.url}/me/consents")
    page.wait_for_selector(f"#revoke-{consent}")
    before = sum(1 for e in read_audit(online.state_dir) if e["extra"]["event"] == "csrf")

    # the browser submits the form with its token taken out
    page.evaluate(
        """(id) => document.getElementById('revoke-' + id).form
             .querySelector('input[name=csrf_token]').remove()""",
        consent,
    )
    page.click(f"#revoke-{consent}")
    error = page.wait_for_selector("#error")
    assert error is not None and error.get_attribute("data-status") == "403"
    assert "请求无法验证" in page.locator("#error-title").inner_text()
    assert "nothing was done" in page.locator("#error-text").inner_text()

    revoke_url = f"{online.served.url}/me/consents/{consent}/revoke"
    # the same POST with a wrong token, and with none, from the signed-in browser's cookies
    wrong = page.request.post(revoke_url, form={"csrf_token": "x" * 43}, max_redirects=0)
    assert wrong.status == 403
    empty = page.request.post(revoke_url, form={}, max_redirects=0)
    assert empty.status == 403
    # sign-out is a POST too: without the token it does nothing
    signout = page.request.post(f"{online.served.url}/signout", form={}, max_redirects=0)
    assert signout.status == 403

    assert consent_state(registrar, consent) is None, "a refused POST revoked the consent"
    after = sum(1 for e in read_audit(online.state_dir) if e["extra"]["event"] == "csrf")
    assert after - before == 4
    # still signed in: the refusals changed nothing
    page.goto(f"{online.served.url}/me/consents")
    assert page.locator(f"#consent-{consent}").get_attribute("data-in-force") == "true"


def test_online_request_about_someone_else_is_refused_and_audited_as_a_hash(
    online: Online, online_page: Page, federation: Federation
) -> None:
    page = online_page
    sign_in(page, online)
    coordinator_log = federation.state_dir / "coordinator" / "audit.jsonl"
    asked_before = coordinator_log.read_bytes().count(b"\n")
    for path in (f"/subjects/{OTHER}/records", f"/me/queries?subject={OTHER}"):
        response = page.goto(online.served.url + path)
        assert response is not None and response.status == 403, path
        assert "只能查询本人信息" in page.locator("#error-title").inner_text()
        assert "someone else" in page.locator("#error-text").inner_text()
        assert OTHER not in page.content()
        check_accessibility(page)
    # refused by the portal: the federation was not asked
    assert coordinator_log.read_bytes().count(b"\n") == asked_before

    refusals = [e for e in read_audit(online.state_dir) if e["extra"]["event"] == "other_subject"]
    assert len(refusals) >= 2
    for entry in refusals[-2:]:
        assert entry["decision"] == "deny"
        assert entry["extra"]["asked_hash"] == salted_hash(online.state_dir, OTHER)
        assert entry["subject_hash"] == salted_hash(online.state_dir, CITIZEN)
    assert_no_raw_ids(online.state_dir, CITIZEN, OTHER)


def test_online_forged_id_tokens_are_refused_at_the_callback(
    online: Online, browser: Browser
) -> None:
    provider = online.provider
    forgeries = {
        # signed by a key the provider does not publish
        "unpublished key": lambda claims: provider.mint_id_token(
            unsafe_signing_key=DevSigningKey.generate(),
            subject=claims["subject"],
            resident_id=claims["resident_id"],
            nonce=claims["nonce"],
        ),
        # alg "none"
        "unsigned": lambda claims: provider.unsafe_mint_unsigned(
            subject=claims["subject"], resident_id=claims["resident_id"], nonce=claims["nonce"]
        ),
        # someone else's number, in a token for another client
        "other audience": lambda claims: provider.mint_id_token(
            subject=claims["subject"],
            resident_id=OTHER,
            nonce=claims["nonce"],
            audience="another-client",
        ),
    }
    for name, forge in forgeries.items():
        before = len(read_audit(online.state_dir))
        provider.unsafe_id_token = forge
        context, page = new_page(browser)
        try:
            start_sign_in(page, online)
            error = page.wait_for_selector("#error")
            assert error is not None and error.get_attribute("data-status") == "401", name
            assert "登录未通过" in page.locator("#error-title").inner_text(), name
            assert page.locator("#signout-form").count() == 0, name
            check_accessibility(page)
            page.goto(f"{online.served.url}/me")
            page.wait_for_selector("#online-start")
            assert page.locator("#score").count() == 0, name
        finally:
            provider.unsafe_id_token = None
            context.close()
        new = read_audit(online.state_dir)[before:]
        assert [(e["extra"]["event"], e["decision"]) for e in new] == [("sign_in", "deny")], name
    assert_no_raw_ids(online.state_dir, CITIZEN, OTHER)
