"""The kiosk: card reads and their check digits, one sign-in per placement, card removal,
the score screen, the simulator route and the loopback-only rule."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from starlette.testclient import TestClient

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.logkeys import LogRoster
from osmanthus.core.signednote import CosignatureVerifier
from portal.app import SIMULATOR_HEADER, create_app
from portal.auditlog import AUDIT_FILE
from portal.cardreader import CardPlacement, CardRefused, SimulatedCardReader, check_placement
from portal.settings import PortalMode, PortalSettings, new_simulator_secret
from tests.portal_stub import ALICE, KIOSK_URL, FakeClock, StubBackend, bad_check_digit, kiosk_app

LOOPBACK = ("127.0.0.1", 50000)


def audit_lines(state_dir: Path) -> list[dict[str, Any]]:
    text = (state_dir / AUDIT_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line]


def test_a_valid_card_reads_as_its_resident_id() -> None:
    assert check_placement(CardPlacement(1, ALICE)) == ALICE
    assert check_placement(CardPlacement(1, ALICE[:17] + ALICE[17].lower())) == ALICE


def test_a_bad_check_digit_is_refused_naming_the_rule_not_the_number() -> None:
    with pytest.raises(CardRefused) as caught:
        check_placement(CardPlacement(1, bad_check_digit(ALICE)))
    assert caught.value.rule == "check_character"
    assert ALICE[:6] not in str(caught.value) and ALICE[6:14] not in str(caught.value)


@pytest.mark.parametrize("raw", ["", "12345", "990505198503011234", "x" * 100])
def test_a_malformed_card_is_refused(raw: str) -> None:
    with pytest.raises(CardRefused) as caught:
        check_placement(CardPlacement(1, raw))
    assert caught.value.rule == "format"


def test_the_simulated_reader_wakes_waiters() -> None:
    reader = SimulatedCardReader()
    got: list[CardPlacement | None] = []
    waiter = threading.Thread(target=lambda: got.append(reader.wait_for_card(10)))
    waiter.start()
    placement = reader.place(ALICE)
    waiter.join(10)
    assert got == [placement]
    ended: list[bool] = []
    gone = threading.Thread(
        target=lambda: ended.append(reader.wait_for_removal(placement.sequence, 10))
    )
    gone.start()
    reader.remove()
    gone.join(10)
    assert ended == [True]


def test_kiosk_start_screen_then_score_with_the_four_categories(tmp_path: Path) -> None:
    app, reader, backend = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    page = client.get("/")
    assert page.status_code == 200
    assert "请将身份证放在读卡区" in page.text and "Place your ID card on the reader" in page.text
    assert client.get("/kiosk/poll").json() == {"state": "waiting"}
    reader.place(ALICE)
    assert client.get("/kiosk/poll").json() == {"state": "signed_in", "next": "/me"}
    score = client.get("/me").text
    assert 'id="score-value">106<' in score
    for zh in ("资质状况", "荣誉表彰", "献血记录", "志愿者服务"):
        assert zh in score
    assert 'id="score-base">100<' in score and 'id="score-deductions">−10<' in score
    assert '<html lang="zh-CN">' in score and 'class="skip-link"' in score
    # the masked id only: a kiosk screen is public
    assert ALICE not in score
    for path in ("/me/records", "/me/queries", "/me/consents", "/me/lists"):
        assert client.get(path).status_code == 200
    assert {subject for _, subject in backend.asked} == {ALICE}


def test_the_records_and_queries_pages_show_why_and_who(tmp_path: Path) -> None:
    app, reader, _ = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(ALICE)
    client.get("/kiosk/poll")
    records = client.get("/me/records").text
    assert 'data-state="counts"' in records and 'data-state="expired"' in records
    assert "已过有效期" in records and "市人社局" in records
    queries = client.get("/me/queries").text
    # merged by time, newest first: the coordinator's line (07:59Z) before hrss's (the day before)
    assert queries.index("kiosk-1") < queries.index("agency-1")
    assert "协调中心" in queries and "2026-01-10 15:59:00" in queries


def test_one_placement_signs_in_once(tmp_path: Path) -> None:
    app, reader, _ = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(ALICE)
    assert client.get("/kiosk/poll").json()["state"] == "signed_in"
    page = client.get("/me").text
    token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    assert client.post("/signout", data={"csrf_token": token}).status_code == 303
    # the card is still there: signing out must not sign the same placement straight back in
    assert client.get("/kiosk/poll").json() == {"state": "waiting"}
    assert client.get("/").status_code == 200
    reader.remove()
    reader.place(ALICE)
    assert client.get("/kiosk/poll").json()["state"] == "signed_in"


def test_taking_the_card_away_ends_the_session(tmp_path: Path) -> None:
    app, reader, _ = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(ALICE)
    client.get("/kiosk/poll")
    assert client.get("/kiosk/status").json()["signed_in"] is True
    reader.remove()
    assert client.get("/kiosk/status").json() == {"signed_in": False}
    response = client.get("/me")
    assert response.status_code == 303 and response.headers["location"] == "/"
    events = [line["extra"]["event"] for line in audit_lines(tmp_path)]
    assert events == ["sign_in", "sign_out"]


def test_a_card_with_a_bad_check_digit_is_refused_on_screen_and_audited(tmp_path: Path) -> None:
    app, reader, backend = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(bad_check_digit(ALICE))
    assert client.get("/kiosk/poll").json() == {"state": "refused"}
    assert client.get("/kiosk/poll").json() == {"state": "refused"}  # audited once
    page = client.get("/").text
    assert 'id="card-refused"' in page and 'data-rule="check_character"' in page
    assert "校验位" in page and "check character" in page
    assert client.get("/me").status_code == 303  # nobody signed in
    assert backend.asked == []
    lines = audit_lines(tmp_path)
    assert [(line["decision"], line["reason"]) for line in lines] == [
        ("deny", "card refused: check_character")
    ]
    assert ALICE[:17] not in (tmp_path / AUDIT_FILE).read_text()
    reader.remove()
    assert 'id="card-refused"' not in client.get("/").text


def test_without_script_the_start_page_itself_signs_in(tmp_path: Path) -> None:
    app, reader, _ = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(ALICE)
    response = client.get("/")
    assert response.status_code == 303 and response.headers["location"] == "/me"
    assert client.get("/me").status_code == 200


def test_the_kiosk_answers_its_own_screen_only(tmp_path: Path) -> None:
    app, reader, _ = kiosk_app(tmp_path)
    reader.place(ALICE)
    remote = TestClient(app, client=("192.0.2.7", 50000), base_url=KIOSK_URL)
    assert remote.get("/kiosk/poll").status_code == 403
    assert remote.get("/").status_code == 403


def test_the_simulator_route_needs_loopback_and_the_secret(tmp_path: Path) -> None:
    secret = new_simulator_secret()
    app, reader, _ = kiosk_app(tmp_path, simulator_secret=secret)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL)
    place = {"action": "place", "resident_id": ALICE}
    assert client.post("/_simulator/card", data=place).status_code == 403
    wrong = {SIMULATOR_HEADER: new_simulator_secret()}
    assert client.post("/_simulator/card", data=place, headers=wrong).status_code == 403
    assert reader.current() is None
    right = {SIMULATOR_HEADER: secret}
    assert client.post("/_simulator/card", data=place, headers=right).json() == {"card": 1}
    assert reader.current() is not None
    assert client.post("/_simulator/card", data={"action": "remove"}, headers=right).json() == {
        "card": None
    }
    assert reader.current() is None


def test_without_a_secret_there_is_no_simulator_route(tmp_path: Path) -> None:
    app, _, _ = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL)
    response = client.post("/_simulator/card", data={"action": "place", "resident_id": ALICE})
    assert response.status_code == 404


# --- review fixes: consents are not managed at a kiosk; one placement, one session ----------


def test_the_kiosk_shows_no_consents_page_and_asks_for_none(tmp_path: Path) -> None:
    app, reader, backend = kiosk_app(tmp_path)
    client = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
    reader.place(ALICE)
    client.get("/kiosk/poll")
    score = client.get("/me").text
    assert 'id="nav-consents"' not in score and 'id="nav-records"' in score
    # a typed-in URL gets a clear page, never "You have granted no consents" (a kiosk's token
    # may not list them, so that would be untrue)
    page = client.get("/me/consents")
    assert page.status_code == 200
    assert 'id="consents-online-only"' in page.text and "请在网上办理" in page.text
    assert 'id="no-consents"' not in page.text and "granted no consents" not in page.text
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    refused = client.post("/me/consents/cns_alice1/revoke", data={"csrf_token": token})
    assert refused.status_code == 403 and "Manage consents online" in refused.text
    assert [what for what, _ in backend.asked if what in ("consents", "revoke")] == []
    assert backend.consents_by_id["cns_alice1"].revoked_at is None
    line = audit_lines(tmp_path)[-1]
    assert (line["extra"]["event"], line["decision"], line["reason"]) == (
        "revoke",
        "deny",
        "consents are not managed at a kiosk",
    )


class RendezvousReader(SimulatedCardReader):
    """A reader whose first read waits (up to `wait_s`) for a second read to arrive: it plays
    the start page's reload and its script's poll reading the same card at the same moment."""

    def __init__(self, wait_s: float) -> None:
        super().__init__()
        self._barrier = threading.Barrier(2, timeout=wait_s)
        self.met = False

    def current(self) -> CardPlacement | None:
        if not self._barrier.broken:
            try:
                self._barrier.wait()
                self.met = True
            except threading.BrokenBarrierError:
                pass
        return super().current()


def test_two_simultaneous_polls_open_one_session(tmp_path: Path) -> None:
    reader = RendezvousReader(wait_s=2.0)
    app = create_app(
        settings=PortalSettings(mode=PortalMode.KIOSK, device_id="kiosk-1", state_dir=tmp_path),
        backend=StubBackend(),
        card_reader=reader,
        identity=None,
        clock=FakeClock(),
    )
    reader.place(ALICE)
    states: list[str] = []

    def poll(path: str) -> None:
        browser = TestClient(app, client=LOOPBACK, base_url=KIOSK_URL, follow_redirects=False)
        answer = browser.get(path)
        if answer.status_code == 303:
            states.append("signed_in")
        elif path == "/":
            states.append("waiting" if answer.status_code == 200 else str(answer.status_code))
        else:
            states.append(answer.json()["state"])

    # the no-script reload (GET /) and the script's poll, at once
    threads = [threading.Thread(target=poll, args=(p,)) for p in ("/", "/kiosk/poll")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # the second read waited for the first sign-in step to finish: the two never overlapped
    # (unguarded, they meet, and which of them marks the placement used first is up to the
    # scheduler: both may sign in)
    assert not reader.met
    assert len(app.state.portal.sessions) == 1
    assert sorted(states) == ["signed_in", "waiting"]
    sign_ins = [line for line in audit_lines(tmp_path) if line["extra"]["event"] == "sign_in"]
    assert len(sign_ins) == 1


def test_witnesses_the_portal_requires_are_counted_by_party(tmp_path: Path) -> None:
    """Two coordinator replicas' witness keys are one party's: a portal requiring the
    cosignatures of two witnesses needs two parties in the roster, not two keys."""
    replicas = {
        name: CosignatureVerifier(name=name, public_key=Ed25519PrivateKey.generate().public_key())
        for name in ("coordinator.osmanthus/witness", "east.coordinator.osmanthus/witness")
    }
    with pytest.raises(InvalidArgument, match=r"witnesses of 1 part\(ies\)") as raised:
        PortalSettings(
            mode=PortalMode.KIOSK, device_id="kiosk-1", state_dir=tmp_path,
            log_roster=LogRoster(witnesses=replicas), min_witnesses=2,
        )  # fmt: skip
    assert raised.value.field == "min_witnesses"
    province = "province.node.osmanthus/witness"
    witnesses = {
        **replicas,
        province: CosignatureVerifier(
            name=province, public_key=Ed25519PrivateKey.generate().public_key()
        ),
    }
    settings = PortalSettings(
        mode=PortalMode.KIOSK, device_id="kiosk-1", state_dir=tmp_path,
        log_roster=LogRoster(witnesses=witnesses), min_witnesses=2,
    )  # fmt: skip
    assert settings.min_witnesses == 2
