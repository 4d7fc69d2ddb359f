"""`osmanthus portal serve --mode kiosk` as its own process against a real federation: a device
issued as the demo issues one (certificate, Paillier key, sealing key, token bound to both), the
demo citizen's card on the simulated reader, her score on the screen as the plaintext score
model gives it, nothing of hers after the card is taken away, and a clean exit on SIGTERM."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import RecordStore
from osmanthus.core.rules import load_default_rules
from osmanthus.core.score import Breakdown, score
from osmanthus.core.subjectfile import today_cst
from osmanthus.core.types import Role, SubjectKind
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from osmanthus.demo.portal_scene import (
    SIMULATOR_SECRET_FILE,
    Device,
    KioskBrowser,
    issue_device,
    screen_text,
)
from osmanthus.demo.seed import DEMO_CITIZEN
from tests.conftest import PLATFORM_DEPARTMENTS
from tests.integration.conftest import Federation, restricted_catalogue_toml

pytestmark = pytest.mark.slow


def plaintext_score(federation: Federation, subject: str) -> int:
    """Her score from the seeded records with the plaintext score model, over the departments
    the test federation runs (not all of the demo's, so not necessarily 106)."""
    catalogue = federation.catalogue
    model = catalogue.model(SubjectKind.PERSON)
    deductions = 0
    bonuses: dict[str, int | None] = {c.name: 0 for c in model.categories}
    for dept in catalogue.departments_for(SubjectKind.PERSON):
        # the running node holds its store read-write: this process shares its connection
        with RecordStore(federation.data.databases[dept.id], department=dept.id) as store:
            mine = [r for r in store.all_records() if r.subject_id == subject]
        part = load_default_rules(dept.id, catalogue=catalogue).contribution(
            SubjectKind.PERSON, mine, as_of=today_cst()
        )
        deductions += part.deductions
        for name, value in part.bonuses.items():
            bonuses[name] = (bonuses[name] or 0) + value
    return score(model, Breakdown(deductions=deductions, bonuses=bonuses))


@pytest.fixture(scope="module")
def kiosk(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Process, Device]]:
    work = tmp_path_factory.mktemp("portal-cli")
    device = issue_device(
        workdir=work, certs=federation.certs, issuer=federation.issuer, name="kiosk-hall-9",
        role=Role.KIOSK,
    )  # fmt: skip
    catalogue = work / "catalogue.toml"
    catalogue.write_text(restricted_catalogue_toml(PLATFORM_DEPARTMENTS), encoding="utf-8")
    process = spawn(
        "portal-kiosk",
        osmanthus_command(
            "portal", "serve", "--mode", "kiosk", "--coordinator", federation.target,
            "--credentials", str(device.directory), "--catalogue", str(catalogue),
            "--listen", "127.0.0.1:0",
        ),
        run_dir=work / "run",
    )  # fmt: skip
    try:
        process.wait_ready(report=None)
        yield process, device
    finally:
        process.stop()


def test_the_kiosk_process_shows_her_score_and_forgets_her(
    kiosk: tuple[Process, Device], federation: Federation
) -> None:
    process, device = kiosk
    secret_file = device.state_dir / SIMULATOR_SECRET_FILE
    assert secret_file.stat().st_mode & 0o777 == 0o600
    log = process.log_path.read_text(encoding="utf-8")
    assert f"serving at http://127.0.0.1:{process.port}/" in log
    browser = KioskBrowser(
        f"http://127.0.0.1:{process.port}",
        simulator_secret=secret_file.read_text(encoding="utf-8").strip(),
    )
    assert "106" not in " ".join(screen_text(browser.get("/")))  # the start screen
    browser.card("place", DEMO_CITIZEN.subject_id)
    screen = screen_text(browser.get("/"))
    expected = plaintext_score(federation, DEMO_CITIZEN.subject_id)
    assert f"桂花分 Osmanthus score {expected}" in screen, screen
    for label in ("资质状况", "荣誉表彰", "献血记录", "志愿者服务"):
        assert any(line.startswith(label) for line in screen), label
    browser.card("remove")
    after = " ".join(screen_text(browser.get("/")))
    assert f"score {expected}" not in after
    # the portal's own audit log: her sign-in and sign-out, by salted hash only
    audit = (device.state_dir / "portal-audit.jsonl").read_text(encoding="utf-8")
    assert DEMO_CITIZEN.subject_id not in audit
    events = [json.loads(line)["extra"].get("event") for line in audit.splitlines() if line]
    assert {"sign_in", "sign_out"} <= set(events), events


def test_sigterm_stops_it_cleanly(kiosk: tuple[Process, Device]) -> None:
    process, _ = kiosk
    assert process.stop() == 0, process.log_path.read_text(encoding="utf-8")
    assert "Traceback" not in process.log_path.read_text(encoding="utf-8")


def test_a_kiosk_without_its_files_does_not_start(federation: Federation, tmp_path: Path) -> None:
    process = spawn(
        "portal-nothing",
        osmanthus_command(
            "portal", "serve", "--mode", "kiosk", "--coordinator", federation.target,
            "--credentials", str(tmp_path / "missing"), "--listen", "127.0.0.1:0",
        ),
        run_dir=tmp_path / "run",
    )  # fmt: skip
    assert process.popen.wait(timeout=120) == 3
    assert "does not exist" in process.log_path.read_text(encoding="utf-8")
