"""`osmanthus portal serve`: its help, its checks of the device's files and options (each refused
with exit 3 naming what is wrong), and the demo's text rendering of the portal's pages."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from osmanthus.cli import main
from osmanthus.cli.portal import parse_listen, simulator_secret, url_of
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import Role
from osmanthus.demo.portal_scene import (
    Device,
    framed,
    issue_device,
    queries_text,
    records_text,
    screen_text,
)
from tests.conftest import IssuerKeyPaths


@pytest.fixture(scope="module")
def devices(
    tmp_path_factory: pytest.TempPathFactory, platform_certs: Path, issuer_keys: IssuerKeyPaths
) -> dict[Role, Device]:
    """A kiosk and an online device, issued as the demo issues them."""
    workdir = tmp_path_factory.mktemp("devices")
    issuer = TokenIssuer.from_file(issuer_keys.private)
    return {
        role: issue_device(
            workdir=workdir, certs=platform_certs, issuer=issuer, name=name, role=role
        )
        for role, name in ((Role.KIOSK, "kiosk-hall-1"), (Role.PORTAL, "portal-web"))
    }


def test_help_tells_an_operator_what_to_give(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["portal", "serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for needed in (
        "--mode {kiosk,online,department}",
        "--coordinator",
        "--credentials DIR",
        "--listen",
        "--state-dir",
        "--issuer",
        "--client-id",
        "--public-url",
        "--simulator-secret-file",
        "cert.pem, key.pem, token.jwt",
        "paillier.key",
        "sealing.key",
        "role 'kiosk'",
        "self_query",
        "/auth/callback",
        "/_simulator/card",
        "exit codes:",
        "4    refused",
    ):
        assert needed in out, needed
    with pytest.raises(SystemExit):
        main(["portal", "--help"])
    assert "serve" in capsys.readouterr().out


def test_the_device_files_are_as_the_portal_reads_them(devices: dict[Role, Device]) -> None:
    from portal.backend import DeviceCredentials

    for role, device in devices.items():
        credentials = DeviceCredentials.load(device.directory)
        assert credentials.role is role
        assert credentials.device_id == device.name
        for private in ("key.pem", "token.jwt", "paillier.key", "sealing.key"):
            mode = stat.S_IMODE((device.directory / private).stat().st_mode)
            assert mode == 0o600, private


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        ("[::1]:443", ("::1", 443)),
        ("portal.example:8443", ("portal.example", 8443)),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8080", ":8080", "127.0.0.1:", "127.0.0.1:http", "h:70000"])
def test_a_bad_listen_address_names_the_option(text: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_listen(text)
    assert refused.value.field == "listen"


def test_urls_of_bound_addresses() -> None:
    assert url_of("127.0.0.1", 8080) == "http://127.0.0.1:8080"
    assert url_of("0.0.0.0", 80) == "http://127.0.0.1:80"
    assert url_of("::1", 8080) == "http://[::1]:8080"
    assert url_of("::", 8080) == "http://[::1]:8080"


def test_the_simulator_secret_is_made_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "card-simulator.secret"
    made = simulator_secret(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert simulator_secret(path) == made and len(made) >= 32
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        simulator_secret(path)
    path.chmod(0o600)
    path.write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 32"):
        simulator_secret(path)


def _serve(*args: str) -> list[str]:
    return ["portal", "serve", "--coordinator", "127.0.0.1:9", "--listen", "127.0.0.1:0", *args]


def test_bad_configurations_are_refused_with_exit_3_before_serving(
    devices: dict[Role, Device], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kiosk, online = str(devices[Role.KIOSK].directory), str(devices[Role.PORTAL].directory)
    cases = [
        # a kiosk's token cannot serve the online site, nor the online site's a kiosk
        (_serve("--mode", "online", "--credentials", kiosk, "--issuer", "https://idp.example",
                "--client-id", "c"), "--mode online needs a token with role 'portal'"),
        (_serve("--mode", "kiosk", "--credentials", online), "--mode kiosk needs a token"),
        # online without its identity provider
        (_serve("--mode", "online", "--credentials", online), "--mode online needs --issuer"),
        # a kiosk signs in by card only
        (_serve("--mode", "kiosk", "--credentials", kiosk, "--issuer", "https://idp.example"),
         "a kiosk signs people in by card"),
        # no such directory
        (_serve("--mode", "kiosk", "--credentials", str(tmp_path / "nowhere")), "does not exist"),
        (["portal", "serve", "--mode", "kiosk", "--coordinator", "c:1", "--credentials", kiosk,
          "--listen", "nowhere"], "is not host:port"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 3, argv
        assert message in capsys.readouterr().err, argv


def test_a_device_file_others_can_read_is_refused(
    devices: dict[Role, Device], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "kiosk"
    shutil.copytree(devices[Role.KIOSK].directory, copy)
    (copy / "sealing.key").chmod(0o644)
    assert main(_serve("--mode", "kiosk", "--credentials", str(copy))) == 3
    assert "readable by others" in capsys.readouterr().err


_SCORE_PAGE = """<html><head><title>t</title><script>var x = 1;</script></head><body>
<header><p>诚信苏州</p></header>
<main id="main"><section>
<h1>桂花分 Osmanthus score <span>106</span></h1>
<h2 class="visually-hidden">加分项 Bonus categories</h2>
<ul><li><span>资质状况 Qualifications</span> <span>+5</span></li>
<li><span>献血记录 Blood donation</span> <span>+5</span></li></ul>
<dl><div><dt>基础分 Base</dt><dd>100</dd></div></dl>
<p>a&amp;b<br>next</p></section></main></body></html>"""


def test_the_screen_is_the_main_areas_visible_text() -> None:
    lines = screen_text(_SCORE_PAGE)
    assert lines == [
        "桂花分 Osmanthus score 106",
        "资质状况 Qualifications +5",
        "献血记录 Blood donation +5",
        "基础分 Base 100",
        "a&b next",
    ]
    box = framed("kiosk", lines, width=20).splitlines()
    assert box[0].startswith("┌─ kiosk ") and box[-1].startswith("└")
    assert all(len(line) <= 22 for line in box[1:-1])


_RECORDS_PAGE = """<main id="main">
<section class="department" id="dept-blood"><h2>市中心血站 Central Blood Station</h2>
<table><caption class="visually-hidden">hidden</caption><thead><tr><th>Record</th></tr></thead>
<tbody><tr class="record"><td>Donation</td><td>+5</td><td>计入 Counts</td></tr></tbody></table>
</section>
<section class="department" id="dept-civil"><h2>市民政局 Civil Affairs Bureau</h2>
<p>无记录。 No records.</p></section></main>"""

_QUERIES_PAGE = """<table id="queries-table"><thead><tr><th>Time</th></tr></thead><tbody>
<tr><td>10:02</td><td>Coordinator</td><td>kiosk-1</td><td>Self-query</td><td>Breakdown</td>
<td>—</td><td>Allowed<br><span class="reason">coordinator's words</span></td>
<td>未核验 Pending</td></tr>
<tr><td>10:02</td><td>Blood</td><td>kiosk-1</td><td>Self-query</td><td>Breakdown</td>
<td>—</td><td>Allowed<br><span class="reason">node's words</span></td>
<td>✔ 已核验 Verified</td></tr>
<tr><td>10:01</td><td>Coordinator</td><td>agency-1</td><td>Loan</td><td>Breakdown</td>
<td>cns_1</td><td>Refused</td><td>✔ 已核验 Verified</td></tr>
<tr><td>10:00</td><td>Coordinator</td><td>kiosk-1</td><td>Self-query</td><td>Breakdown</td>
<td>—</td><td>Allowed</td><td>✔ 已核验 Verified</td></tr>
</tbody></table>"""


def test_records_show_only_departments_holding_some() -> None:
    assert records_text(_RECORDS_PAGE) == [
        "市中心血站 Central Blood Station",
        "Donation · +5 · 计入 Counts",
    ]


def test_who_asked_counts_one_question_once_however_many_parties_recorded_it() -> None:
    assert queries_text(_QUERIES_PAGE) == [
        "10:02 kiosk-1 · Self-query · Breakdown · no consent · Allowed · 2 parties recorded it · "
        "1 of 2 已核验 verified (the rest: 未核验 Pending)",
        "10:01 agency-1 · Loan · Breakdown · consent cns_1 · Refused · recorded by Coordinator · "
        "✔ 已核验 Verified",
        # the same question asked again earlier is a question of its own
        "10:00 kiosk-1 · Self-query · Breakdown · no consent · Allowed · recorded by Coordinator "
        "· ✔ 已核验 Verified",
    ]


def test_the_department_desk_refuses_what_it_does_not_use_and_needs_what_it_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    desk = ["portal", "serve", "--mode", "department", "--listen", "127.0.0.1:0"]
    state = ["--state-dir", str(tmp_path / "state")]
    cases = [
        (desk + state + ["--node", "n:1"], "--mode department needs --department"),
        (desk + state + ["--department", "hrss"], "--mode department needs --node"),
        ([*desk, "--department", "hrss", "--node", "n:1"], "needs --state-dir"),
        (desk + state + ["--department", "hrss", "--node", "n:1", "--coordinator", "c:1"],
         "drop --coordinator and --credentials"),
        (desk + state + ["--department", "nope", "--node", "n:1"], "'nope'"),
        # no operator certificate given
        (desk + state + ["--department", "hrss", "--node", "n:1"], "--certs-dir"),
        # the desk's options are not the kiosk's
        (_serve("--mode", "kiosk", "--credentials", str(tmp_path), "--department", "hrss"),
         "are for --mode department"),
        (["portal", "serve", "--mode", "online", "--listen", "127.0.0.1:0"],
         "--mode online needs --coordinator"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 3, argv
        assert message in capsys.readouterr().err, argv
