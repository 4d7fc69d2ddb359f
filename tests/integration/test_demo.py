"""The README's demo, `osmanthus demo --keep-running`, end to end: the kiosk scene prints
"桂花分 106" with the four bonus categories, the citizen's records (one expired) and who asked
about her; she objects online to her housing record, the housing bureau's officer upholds it
with `osmanthus disputes` and her score is 116; the scene enterprise's credit repair of its
black-list entry is approved, the entry leaves public view and the province receives the
withdrawal (reason repaired). Then everything stays up: the online site signs her in at the
demo's identity provider and shows 116, the printed SDK snippet runs, and Ctrl-C stops every
process cleanly; the housing bureau's desk signs its officer in and lists her case."""

from __future__ import annotations

import html
import http.cookiejar
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from osmanthus.demo.portal_scene import screen_text
from osmanthus.demo.seed import DEMO_CITIZEN
from tests.waiting import wait_until

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
#: the whole demo (29 processes) on a busy 2-core machine
DEMO_TIMEOUT_S = 600.0


class Output:
    """A process's stdout, read as it comes."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.text = ""
        self._lock = threading.Lock()
        assert popen.stdout is not None
        self._thread = threading.Thread(target=self._read, args=(popen.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            with self._lock:
                self.text += line

    def now(self) -> str:
        with self._lock:
            return self.text

    def rest(self) -> str:
        self._thread.join(timeout=60)
        return self.now()


def sign_in_online(url: str, *, label: str, path: str = "/me") -> str:
    """Sign in at the online site (or a department desk) through the demo identity provider's
    page; then the page at `path` (the score page by default)."""
    opener = urllib.request.build_opener(
        urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
    )
    with opener.open(url + "/login", timeout=120) as response:
        page, at = response.read().decode(), response.geturl()
    # the provider's sign-in page: one form per demo identity
    forms = re.findall(r'<form[^>]*action="([^"]+)"[^>]*>(.*?)</form>', page, re.S)
    action, body = next((a, b) for a, b in forms if html.escape(label) in b or label in b)
    fields = {k: html.unescape(v) for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', body)}
    target = urllib.parse.urljoin(at, html.unescape(action))
    with opener.open(target, data=urllib.parse.urlencode(fields).encode(), timeout=120) as done:
        done.read()
    with opener.open(url + path, timeout=120) as response:
        return str(response.read().decode())


def test_the_demo_shows_the_kiosk_scene_stays_up_and_stops_cleanly(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMANTHUS_")}
    popen = subprocess.Popen(
        [sys.executable, "-m", "osmanthus.cli", "demo", "--workdir", str(tmp_path / "demo"),
         "--persons", "200", "--enterprises", "40", "--keep-running"],
        cwd=REPO, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    output = Output(popen)
    try:
        wait_until(
            lambda: "stay up until Ctrl-C" in output.now() or popen.poll() is not None,
            what=lambda: f"the demo to come up:\n{output.now()[-3000:]}",
            timeout_s=DEMO_TIMEOUT_S,
            poll_s=0.5,
        )
        wait_until(
            lambda: "--server-name" in output.now() or popen.poll() is not None,
            what="the demo's instructions",
            poll_s=0.2,
        )
        text = output.now()
        assert popen.poll() is None, text[-3000:]
        screen = text.split("桂花分 kiosk screen", 1)[1].split("└", 1)[0]
        assert "桂花分 Osmanthus score 106" in screen
        for category, points in (
            ("资质状况 Qualifications", 5),
            ("荣誉表彰 Honours", 10),
            ("献血记录 Blood donation", 5),
            ("志愿者服务 Volunteer service", 1),
        ):
            assert f"{category} +{points}" in screen, category
        records = text.split("┌─ 我的记录 My records", 1)[1].split("└", 1)[0]
        assert "已过有效期 Expired" in records and "urban_management_penalty" in records
        asked = text.split("┌─ 谁查询了我 Who asked about me", 1)[1].split("└", 1)[0]
        assert "agency-1" in asked and "kiosk-hall-1" in asked and "rescoring" in asked
        # the kiosk verified the agency's query against every department's checkpoint, which
        # the demo waited for the coordinator's witness to cosign. The coordinator's own line
        # may be pending: its log is witnessed by the province when the sync job runs, which
        # was before this query, so every row but the coordinator's must be verified
        assert "every department's log is witnessed up to this query" in text, text[-3000:]
        flat = " ".join(line.removeprefix("│").strip() for line in asked.splitlines())
        marks = re.findall(
            r"agency-1 · .*?(✔ 已核验 Verified|(\d+) of (\d+) 已核验 verified)", flat
        )
        assert any(
            mark == "✔ 已核验 Verified" or int(shown) + 1 == int(total)
            for mark, shown, total in marks
        ), asked
        assert "nothing of hers is left" in text
        # every audit log replays against its checkpoints, cosigned by both witnesses, and an
        # entry edited in a copy of a log is caught
        replay = re.search(r"audit verify \(exit 0\): (\d+) of (\d+) audit logs replay", text)
        assert replay is not None and replay.group(1) == replay.group(2), text[-3000:]
        assert "cosigned by the witness province.node.osmanthus/witness" in text
        assert "cosigned by the witness coordinator.osmanthus/witness" in text
        edited = text.split("changed from allow to deny: audit verify exits ", 1)[1]
        assert edited.startswith("8: ") and "differs from what checkpoint" in edited.split("\n")[0]
        assert "check character" in text.split("a card whose check digit is wrong", 1)[1]
        # her objection, filed online and upheld by the housing bureau's officer
        objection = text.split("objects to one of her records", 1)[1].split("Credit repair", 1)[0]
        filed = re.search(
            r"receipt: case (case-[A-Za-z0-9_-]{22}), filed .* at the housing", objection
        )
        assert filed is not None, objection
        case_id = filed.group(1)
        assert "status disputed · disputed" in objection
        assert "her score: 106 → 116" in objection
        decided = objection.split("disputes decide " + case_id, 1)[1]
        assert "upheld" in decided.split("$", 1)[0]
        assert "the kiosk's screen: 桂花分 Osmanthus score 116" in objection
        mine = objection.split("┌─ 我的异议与修复 My cases", 1)[1].split("└", 1)[0]
        assert case_id in mine and "Upheld" in mine, mine
        # the enterprise's credit repair: approved, out of public view, reported upward
        repair = text.split("Credit repair", 1)[1].split("The volunteers' node goes down", 1)[0]
        applied = re.search(
            r"receipt: case (case-[A-Za-z0-9_-]{22}), filed .* at the court", repair
        )
        assert applied is not None, repair
        assert "finds 0 entries in view" in repair
        assert re.search(
            r"the province received: list_changes #\d+: 2026-su05-zhi-0123 withdrawn .*, reason "
            r"repaired",
            repair,
        ), repair
        # the online site, through the demo's identity provider
        online = re.search(r"Online self-service.*\n  (http://127\.0\.0\.1:\d+)/", text)
        assert online is not None, text[-3000:]
        page = sign_in_online(online.group(1), label="Shen Guifang")
        assert "桂花分 Osmanthus score 116" in screen_text(page)
        # the housing bureau's desk (the portal's department face), through the same provider
        desk = re.search(r"department face\):\n  (http://127\.0\.0\.1:\d+)/", text)
        assert desk is not None, text[-3000:]
        queue = sign_in_online(desk.group(1), label="Li Min", path="/dept/cases?show=all")
        assert case_id in queue, screen_text(queue)
        # the printed SDK snippet runs as printed
        snippet = text.split("The SDK, as agency-1", 1)[1].split("\n", 1)[1]
        snippet = snippet.split("\n\nThe command line", 1)[0]
        code = "\n".join(line[2:] for line in snippet.splitlines())
        ran = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
        )
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.splitlines()[0].startswith("116 5 "), ran.stdout
        assert ran.stdout.splitlines()[1] == "120 A", ran.stdout
    finally:
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT)  # Ctrl-C
    assert popen.wait(timeout=DEMO_TIMEOUT_S) == 0
    rest = output.rest()
    shut = re.search(r"Shut down: (\d+) of (\d+) processes exited cleanly", rest)
    assert shut is not None and shut.group(1) == shut.group(2), rest[-2000:]
    assert DEMO_CITIZEN.subject_id not in (
        tmp_path / "demo" / "run" / "state" / "coordinator" / "audit.jsonl"
    ).read_text(encoding="utf-8")
