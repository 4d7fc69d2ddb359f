"""The portal's sessions, cookies, CSRF tokens, security headers and the subject-only rule."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import make_resident_id
from osmanthus.core.types import SubjectKind
from portal import app as portal_app
from portal.auditlog import AUDIT_FILE
from portal.session import (
    PLAIN_SESSION_COOKIE,
    SECURITY_HEADERS,
    TLS_SESSION_COOKIE,
    SessionStore,
    Subject,
    loggable_path,
)
from portal.settings import PortalMode, PortalSettings
from tests.portal_stub import ALICE, BOB, KIOSK_URL, FakeClock, kiosk_app
from tests.waiting import wait_until

LOOPBACK = ("127.0.0.1", 50000)


def _with_check_x() -> str:
    for sequence in range(1, 1000):
        rid = make_resident_id(region="320508", birth=datetime.date(1979, 4, 2), sequence=sequence)
        if rid.endswith("X"):
            return rid
    raise AssertionError("no resident id with check character X in 1000 sequences")


#: someone else, whose check character is X (a browser may send it as 'x')
CAROL_X = _with_check_x()


def audit_lines(state_dir: Path) -> list[dict[str, Any]]:
    text = (state_dir / AUDIT_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def signed_in(tmp_path: Path, *, base_url: str = KIOSK_URL, clock: FakeClock | None = None):
    app, reader, backend = kiosk_app(tmp_path, clock=clock)
    client = TestClient(app, client=LOOPBACK, base_url=base_url, follow_redirects=False)
    reader.place(ALICE)
    answer = client.get("/kiosk/poll")
    assert answer.json()["state"] == "signed_in"
    return client, reader, backend, answer


def csrf_of(client: TestClient) -> str:
    page = client.get("/me").text
    marker = 'name="csrf_token" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]


# --- the store ---------------------------------------------------------------------------


def test_session_ids_are_256_bit_random_and_unique() -> None:
    store = SessionStore(idle_s=60)
    ids = {store.create().id for _ in range(200)}
    assert len(ids) == 200
    # token_urlsafe(32): 43 base64url characters carry 256 bits
    assert all(len(i) == 43 for i in ids)


def test_idle_sessions_expire_and_forget_the_subject() -> None:
    clock = FakeClock()
    expired: list[object] = []
    store = SessionStore(idle_s=60, clock=clock, on_expire=expired.append)
    session = store.create()
    session.subject = Subject(kind=SubjectKind.PERSON, id=ALICE)
    session.allowed = (session.subject,)
    session.cache["summary"] = "106"
    clock.advance(59)
    assert store.get(session.id) is session  # a request: counts as activity
    clock.advance(59)
    assert store.get(session.id, touch=False) is session
    clock.advance(2)  # 61 s after the last request; the untouched read did not extend it
    assert store.get(session.id) is None
    assert expired and session.cache == {} and session.subject is None


def test_a_flood_of_sessions_evicts_the_oldest() -> None:
    clock = FakeClock()
    store = SessionStore(idle_s=60, clock=clock, max_sessions=3)
    first = store.create()
    for _ in range(3):
        clock.advance(1)
        store.create()
    assert len(store) == 3 and store.get(first.id) is None


# --- cookies and headers -----------------------------------------------------------------


def test_session_cookie_flags_on_plain_loopback_http(tmp_path: Path) -> None:
    _, _, _, answer = signed_in(tmp_path)
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{PLAIN_SESSION_COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/"} <= flags
    assert "secure" not in flags and not any(f.startswith("domain") for f in flags)


def test_session_cookie_over_tls_is_host_prefixed_and_secure(tmp_path: Path) -> None:
    reader_app, reader, _ = kiosk_app(tmp_path)
    # the same app built with secure cookies
    from portal.app import create_app
    from tests.portal_stub import StubBackend

    app = create_app(
        settings=PortalSettings(
            mode=PortalMode.KIOSK,
            device_id="kiosk-1",
            state_dir=tmp_path / "tls",
            secure_cookies=True,
        ),
        backend=StubBackend(),
        card_reader=reader,
        identity=None,
    )
    del reader_app
    client = TestClient(app, client=LOOPBACK, base_url="https://127.0.0.1")
    reader.place(ALICE)
    cookie = client.get("/kiosk/poll").headers["set-cookie"]
    assert cookie.startswith(f"{TLS_SESSION_COOKIE}=")
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert {"httponly", "samesite=strict", "path=/", "secure"} <= flags
    assert client.get("/me").status_code == 200


@pytest.mark.parametrize("path", ["/", "/static/portal.css", "/no-such-page", "/me"])
def test_every_response_has_the_security_headers(tmp_path: Path, path: str) -> None:
    client, _, _, _ = signed_in(tmp_path)
    response = client.get(path)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    assert "default-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"


def test_pages_load_nothing_from_elsewhere(tmp_path: Path) -> None:
    client, _, _, _ = signed_in(tmp_path)
    for path in ("/", "/me", "/me/records", "/me/queries", "/me/consents", "/me/lists"):
        page = client.get(path).text
        assert "http://" not in page.replace(KIOSK_URL, "")
        assert "https://" not in page
        # no inline script or style (the CSP would refuse them anyway)
        assert "<script>" not in page and "style=" not in page and "onclick" not in page


# --- CSRF --------------------------------------------------------------------------------


def test_post_without_the_csrf_token_is_refused_and_audited(tmp_path: Path) -> None:
    client, _, backend, _ = signed_in(tmp_path)
    response = client.post("/signout", data={})
    assert response.status_code == 403
    assert "请求无法验证" in response.text and "could not be verified" in response.text
    # still signed in: the forged sign-out did nothing
    assert client.get("/me").status_code == 200
    response = client.post("/me/consents/cns_alice1/revoke", data={"csrf_token": "forged"})
    assert response.status_code == 403
    assert not any(what == "revoke" for what, _ in backend.asked)
    events = [line["extra"]["event"] for line in audit_lines(tmp_path)]
    assert events.count("csrf") == 2


def test_post_with_the_csrf_token_works(tmp_path: Path) -> None:
    client, _, backend, _ = signed_in(tmp_path)
    client.get("/me")
    asked = len(backend.asked)
    response = client.post("/me/refresh", data={"csrf_token": csrf_of(client), "next": "/me"})
    assert response.status_code == 303 and response.headers["location"] == "/me"
    # the refresh dropped what the session held: the score is asked for again
    client.get("/me")
    assert len(backend.asked) == asked + 1  # csrf_of's /me was answered from the session


def test_sign_out_drops_the_session_and_everything_in_it(tmp_path: Path) -> None:
    client, reader, backend, _ = signed_in(tmp_path)
    token = csrf_of(client)
    old_cookie = client.cookies.get(PLAIN_SESSION_COOKIE)
    response = client.post("/signout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/"
    # the old id is worthless: replaying it gets the start screen, and nothing is asked
    client.cookies.set(PLAIN_SESSION_COOKIE, old_cookie or "")
    asked_before = len(backend.asked)
    response = client.get("/me")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert len(backend.asked) == asked_before
    page = client.get("/").text
    assert "106" not in page and ALICE[:6] not in page
    del reader


def test_idle_expiry_signs_out_on_the_server(tmp_path: Path) -> None:
    clock = FakeClock()
    client, _, backend, _ = signed_in(tmp_path, clock=clock)
    assert client.get("/me").status_code == 200
    clock.advance(61)  # the kiosk's 60 s
    asked_before = len(backend.asked)
    response = client.get("/me")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert len(backend.asked) == asked_before
    assert "expired" in [line["extra"]["event"] for line in audit_lines(tmp_path)]


def test_an_abandoned_session_is_swept_away_without_any_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(portal_app, "SWEEP_S", 0.05)
    clock = FakeClock()
    client, _, _, _ = signed_in(tmp_path, clock=clock)
    portal = client.app.state.portal  # type: ignore[attr-defined]
    with client:  # runs the app's lifespan, and with it the sweeper
        [session] = list(portal.sessions._sessions.values())
        assert session.subject is not None
        clock.advance(61)
        # no request reaches the portal: the sweeper alone ends the session and forgets her
        wait_until(
            lambda: not portal.sessions._sessions and session.subject is None,
            what="the sweeper to end the session and forget the subject",
        )
        assert not session.cache
        wait_until(
            lambda: "expired" in [line["extra"]["event"] for line in audit_lines(tmp_path)],
            what="the expiry in the portal's audit log",
        )


def test_the_status_poll_does_not_keep_a_session_alive(tmp_path: Path) -> None:
    clock = FakeClock()
    client, _, _, _ = signed_in(tmp_path, clock=clock)
    for _ in range(7):
        clock.advance(10)
        client.get("/kiosk/status")
    assert client.get("/kiosk/status").json() == {"signed_in": False}


# --- only the subject's own record -------------------------------------------------------


@pytest.mark.parametrize(
    "path", [f"/me?subject={BOB}", f"/me/records?subject={BOB}", f"/subjects/{BOB}/score"]
)
def test_asking_about_another_subject_is_refused_and_audited(tmp_path: Path, path: str) -> None:
    client, _, backend, _ = signed_in(tmp_path)
    response = client.get(path)
    assert response.status_code == 403
    assert "只能查询本人信息" in response.text and "only your own" in response.text
    assert not any(subject == BOB for _, subject in backend.asked)
    refusal = [line for line in audit_lines(tmp_path) if line["extra"]["event"] == "other_subject"]
    assert len(refusal) == 1 and refusal[0]["decision"] == "deny"
    # salted hashes only: neither number appears in the log
    raw = (tmp_path / AUDIT_FILE).read_text()
    assert BOB not in raw and ALICE not in raw and BOB[:14] not in raw


def test_naming_oneself_is_fine(tmp_path: Path) -> None:
    client, _, _, _ = signed_in(tmp_path)
    response = client.get(f"/subjects/{ALICE}/records")
    assert response.status_code == 303 and response.headers["location"] == "/me/records"
    assert client.get(f"/me?subject={ALICE}").status_code == 200


def test_an_unexpected_failure_shows_a_plain_page_with_the_headers(tmp_path: Path) -> None:
    client, _, backend, _ = signed_in(tmp_path)

    def broken(subject: Subject) -> None:
        raise RuntimeError(f"secret detail about {subject.id}")

    backend.summary = broken  # type: ignore[assignment,method-assign]
    response = client.get("/me")
    assert response.status_code == 500
    assert "出错了" in response.text and "secret detail" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


# --- review fixes: settings, Host allowlist, logging, hashing ------------------------------


def online_settings(tmp_path: Path, **overrides: Any) -> PortalSettings:
    fields: dict[str, Any] = {
        "mode": PortalMode.ONLINE,
        "device_id": "portal-1",
        "state_dir": tmp_path,
        "public_url": "https://credit.example.gov.cn",
        "secure_cookies": True,
    }
    return PortalSettings(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"public_url": None}, "public_url", "public base URL"),
        ({"secure_cookies": False}, "secure_cookies", "must be True"),
        (
            {"public_url": "http://credit.example.gov.cn", "secure_cookies": False},
            "public_url",
            "plain http",
        ),
        ({"public_url": "http://192.0.2.7:8080", "secure_cookies": False}, "public_url", "TLS"),
        ({"public_url": "ftp://credit.example.gov.cn"}, "public_url", "http(s)"),
        ({"public_url": "https://credit.example.gov.cn/?next=x"}, "public_url", "base URL"),
        ({"allowed_hosts": ("*.example.gov.cn",)}, "allowed_hosts", "wildcards"),
        ({"allowed_hosts": ()}, "allowed_hosts", "non-empty"),
    ],
    ids=[
        "online-without-public-url",
        "https-without-secure-cookies",
        "http-to-a-name",
        "http-to-a-lan-address",
        "not-http",
        "with-a-query",
        "wildcard-host",
        "no-hosts",
    ],
)
def test_unsafe_settings_are_refused_naming_the_field(
    tmp_path: Path, overrides: dict[str, Any], field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        online_settings(tmp_path, **overrides)
    assert caught.value.field == field and words in caught.value.message


@pytest.mark.parametrize("url", ["http://127.0.0.1:8081", "http://localhost", "http://[::1]:8081"])
def test_plain_http_on_loopback_needs_no_secure_cookies(tmp_path: Path, url: str) -> None:
    settings = online_settings(tmp_path, public_url=url, secure_cookies=False)
    assert settings.hosts[1:] == ("127.0.0.1", "[::1]", "localhost")


def test_the_hosts_answered_by_mode(tmp_path: Path) -> None:
    assert online_settings(tmp_path).hosts == (
        "credit.example.gov.cn",
        "127.0.0.1",
        "[::1]",
        "localhost",
    )
    kiosk = PortalSettings(mode=PortalMode.KIOSK, device_id="kiosk-1", state_dir=tmp_path)
    assert kiosk.hosts == ("127.0.0.1", "[::1]", "localhost")
    chosen = online_settings(tmp_path, allowed_hosts=("Credit.Example.gov.cn", "::1"))
    assert chosen.hosts == ("credit.example.gov.cn", "[::1]")


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "127.0.0.1.evil.example"])
def test_a_kiosk_refuses_a_foreign_host_header(tmp_path: Path, host: str) -> None:
    # a DNS-rebinding page (evil.example resolving to 127.0.0.1) reaches the kiosk from its own
    # browser: the loopback address check passes, the Host header does not
    client, _, backend, _ = signed_in(tmp_path)
    response = client.get("/me", headers={"host": host})
    assert response.status_code == 400
    assert response.headers["cache-control"] == "no-store"
    assert "106" not in response.text
    assert client.get("/kiosk/poll", headers={"host": host}).status_code == 400
    assert backend.asked == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8080", "localhost:8080", "[::1]:8080"])
def test_a_kiosk_answers_its_loopback_names(tmp_path: Path, host: str) -> None:
    client, _, _, _ = signed_in(tmp_path)
    assert client.get("/me", headers={"host": host}).status_code == 200


def test_an_unexpected_failure_logs_no_identifier_from_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    client, _, _, _ = signed_in(tmp_path)
    portal = client.app.state.portal  # type: ignore[attr-defined]

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("the audit log's disk is full")

    portal.audit.other_subject = broken
    with caplog.at_level(logging.ERROR, logger="portal.session"):
        response = client.get(f"/subjects/{BOB}/records")
    assert response.status_code == 500
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/subjects/{subject_id}/{page}" in logged
    assert BOB not in logged and BOB[:14] not in logged and BOB[6:14] not in logged


def test_a_path_is_redacted_when_no_route_matched() -> None:
    scope = {"type": "http", "path": f"/subjects/{BOB}/nothing-here"}
    assert loggable_path(scope) == "/subjects/{redacted}/nothing-here"
    routed = {**scope, "path_params": {"subject_id": BOB, "page": "records"}}
    routed["path"] = f"/subjects/{BOB}/records"
    assert loggable_path(routed) == "/subjects/{subject_id}/{page}"
    assert loggable_path({"path": "/me/consents"}) == "/me/consents"


def test_another_subject_asked_about_is_hashed_in_its_canonical_form(tmp_path: Path) -> None:
    # a lower-case 'x' check character must not give the same person a second hash
    client, _, _, _ = signed_in(tmp_path)
    log = client.app.state.portal.audit.log  # type: ignore[attr-defined]
    upper, lower = CAROL_X, CAROL_X[:17] + "x"
    assert client.get(f"/subjects/{lower}/score").status_code == 403
    assert client.get(f"/me?subject={upper}").status_code == 403
    assert client.get("/me?subject=not-an-id").status_code == 403
    hashes = [
        line["extra"]["asked_hash"]
        for line in audit_lines(tmp_path)
        if line["extra"]["event"] == "other_subject"
    ]
    assert hashes == [log.subject_hash(upper)] * 2 + [log.subject_hash("not-an-id")]
