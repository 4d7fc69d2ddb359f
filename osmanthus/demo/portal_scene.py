"""The demo's portal: the kiosk and online devices, the citizen at the kiosk, what stays up.

The article's first scene: a citizen places her identity card on the service hall's kiosk and
reads "桂花分 106" with the four bonus categories. The kiosk is a registered requester device
(its own certificate, Paillier key, X25519 sealing key and a token with role kiosk and purpose
self_query bound to both keys), served by `osmanthus portal serve` as its own process like
every other service of the demo. The demo reads the kiosk's pages over HTTP, as its screen's
browser would, and prints them as text.
"""

from __future__ import annotations

import html.parser
import http.cookiejar
import os
import re
import shutil
import signal
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Final

from certs import PeerRole, issue_certificate
from osmanthus.core.files import write_atomically
from osmanthus.core.peers import CA_CERT_FILE
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles
from osmanthus.core.tokens import TokenIssuer
from osmanthus.core.types import Role
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from osmanthus.demo.seed import SCENE_SUBJECTS, SceneSubject
from portal.backend import (
    PAILLIER_FILE,
    SEALING_KEY_FILE,
    SELF_QUERY,
    TOKEN_FILE,
    create_sealing_key,
)
from portal.devidp import DemoIdentity, DevIdentityProvider
from sdk import Client, load_or_create_keys

#: the service hall's kiosk and the online self-service site, as requester devices
KIOSK: Final = "kiosk-hall-1"
ONLINE: Final = "portal-web"
#: device tokens outlive a demo left running for a working day
DEVICE_TOKEN_TTL: Final = timedelta(hours=12)
#: the simulated card reader's secret, in the kiosk's state directory
SIMULATOR_SECRET_FILE: Final = "card-simulator.secret"
#: the header the simulator route takes its secret in (portal.app.SIMULATOR_HEADER)
SIMULATOR_HEADER: Final = "x-simulator-secret"
#: a kiosk page that takes longer than this to come has failed (it asks the whole federation)
HTTP_TIMEOUT_S: Final = 120.0
#: the width of the printed kiosk screen
SCREEN_WIDTH: Final = 76


@dataclass(frozen=True)
class Device:
    """A portal device's directory, as `osmanthus portal serve --credentials` reads it."""

    name: str
    role: Role
    directory: Path

    @property
    def state_dir(self) -> Path:
        return self.directory / "state"

    @property
    def tls(self) -> TlsFiles:
        return TlsFiles(
            ca=self.directory / CA_CERT_FILE,
            cert=self.directory / "cert.pem",
            key=self.directory / "key.pem",
        )


def issue_device(
    *, workdir: Path, certs: Path, issuer: TokenIssuer, name: str, role: Role
) -> Device:
    """What the platform gives a kiosk or the online site: a requester certificate from the CA,
    a Paillier key pair, an X25519 sealing key (mode 0600) and a token with `role`, purpose
    self_query only, bound to the Paillier key (key fingerprint) and the sealing key (seal_fp)."""
    directory = workdir / "devices" / name
    issue_certificate(certs, role=PeerRole.REQUESTER, name=name, out_dir=directory)
    shutil.copyfile(certs / CA_CERT_FILE, directory / CA_CERT_FILE)
    keys = load_or_create_keys(directory / PAILLIER_FILE)
    sealing = create_sealing_key(directory / SEALING_KEY_FILE)
    token = issuer.issue(
        requester=name,
        role=role,
        purposes=[SELF_QUERY],
        key_fingerprint=keys.fingerprint,
        seal_fingerprint=seal_fingerprint(public_bytes(sealing)),
        ttl=DEVICE_TOKEN_TTL,
    )
    write_atomically(directory / TOKEN_FILE, f"{token}\n".encode(), mode=0o600, field="token")
    return Device(name=name, role=role, directory=directory)


def register_device_key(device: Device, *, target: str) -> None:
    """Register the device's Paillier key (with its proof) before its portal starts."""
    token = (device.directory / TOKEN_FILE).read_text(encoding="utf-8").strip()
    keys = load_or_create_keys(device.directory / PAILLIER_FILE)
    with Client(target, tls=device.tls, token=token, keys=keys) as client:
        client.register_key()


def start_portal(
    device: Device,
    *,
    target: str,
    run_dir: Path,
    logs: Path | None = None,
    extra: Sequence[str] = (),
) -> Process:
    """`osmanthus portal serve` for `device` on a free loopback port, as its own process;
    `logs`: the roster of log keys (CERTS_DIR/logs.toml) "who asked" is verified with."""
    mode = "kiosk" if device.role is Role.KIOSK else "online"
    roster = ("--logs", str(logs)) if logs is not None else ()
    return spawn(
        f"portal-{mode}",
        osmanthus_command(
            "portal", "serve", "--mode", mode, "--coordinator", target,
            "--credentials", str(device.directory), "--listen", "127.0.0.1:0", *roster, *extra,
        ),
        run_dir=run_dir,
        own_session=True,
    )  # fmt: skip


# --- reading the kiosk's screen ---------------------------------------------------------------

#: elements that start a new line of text
_BLOCKS: Final = frozenset(
    {
        "address", "article", "aside", "blockquote", "caption", "details", "div", "dl",
        "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
        "hr", "li", "main", "nav", "ol", "p", "section", "summary", "table", "tbody", "tfoot",
        "ul",
    }
)  # fmt: skip
#: elements nobody sees on the screen: a screen reader's captions and headings included
_HIDDEN: Final = frozenset({"script", "style", "head", "template", "noscript", "thead", "caption"})
_VOID: Final = frozenset({"br", "hr", "img", "input", "meta", "link", "source", "wbr"})


@dataclass
class Block:
    """The text of one element of a page: its lines, and each table row as its cells."""

    lines: list[str]
    rows: list[list[str]]


class _ScreenText(html.parser.HTMLParser):
    """The visible text of the elements `match` picks, a line per block element and per table
    row (a row's cells also kept apart)."""

    def __init__(
        self, match: Callable[[str, dict[str, str | None]], bool], *, hidden_classes: frozenset[str]
    ) -> None:
        super().__init__(convert_charrefs=True)
        self.match = match
        self.hidden_classes = hidden_classes
        self.blocks: list[Block] = []
        self.depth = 0  # > 0 inside a matched element
        self.hidden = 0  # > 0 inside an element not shown
        self.line: list[str] = []
        self.cells: list[str] | None = None  # inside a table row

    def _text(self) -> str:
        text = re.sub(r"\s+", " ", "".join(self.line)).strip()
        self.line = []
        return text

    def _break(self) -> None:
        if self.cells is not None:
            return  # a row is one line
        text = self._text()
        if text:
            self.blocks[-1].lines.append(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if self.depth == 0:
            if self.match(tag, attributes):
                self.blocks.append(Block(lines=[], rows=[]))
                self.depth = 1
            return
        if tag in _VOID:
            if tag == "br":
                self.line.append(" ")
            return
        self.depth += 1
        classes = set((attributes.get("class") or "").split())
        if self.hidden or tag in _HIDDEN or classes & self.hidden_classes:
            self.hidden += 1
        elif tag == "tr":
            self._break()
            self.cells = []
        elif tag in ("td", "th"):
            self.line = []
        elif tag in ("dt", "dd"):
            self.line.append(" ")  # a term and its value on one line, apart
        elif tag in _BLOCKS:
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if self.depth == 0 or tag in _VOID:
            return
        self.depth -= 1
        if self.hidden:
            self.hidden -= 1
        elif tag in ("td", "th") and self.cells is not None:
            self.cells.append(self._text())
        elif tag == "tr" and self.cells is not None:
            if any(self.cells):
                self.blocks[-1].rows.append(self.cells)
                self.blocks[-1].lines.append(" · ".join(c for c in self.cells if c))
            self.cells = None
        elif tag in _BLOCKS or self.depth == 0:
            self._break()

    def handle_data(self, data: str) -> None:
        if self.depth and not self.hidden:
            self.line.append(data)


def page_blocks(
    page: str,
    match: Callable[[str, dict[str, str | None]], bool],
    *,
    hidden_classes: frozenset[str] = frozenset(),
) -> list[Block]:
    """The text of every element of `page` that `match(tag, attributes)` picks, leaving out
    elements of the `hidden_classes` too."""
    parser = _ScreenText(match, hidden_classes=hidden_classes | {"visually-hidden"})
    parser.feed(page)
    parser.close()
    return parser.blocks


def screen_text(page: str, *, element_id: str = "main") -> list[str]:
    """The lines of text a page shows in its element `element_id` (the kiosk's main area)."""
    blocks = page_blocks(page, lambda _tag, attributes: attributes.get("id") == element_id)
    return blocks[0].lines if blocks else []


def records_text(page: str) -> list[str]:
    """The departments that hold records about the subject, each record on a line."""
    lines: list[str] = []
    sections = page_blocks(
        page, lambda tag, a: tag == "section" and "department" in (a.get("class") or "")
    )
    for section in sections:
        if section.rows:
            lines += section.lines
    return lines


def queries_text(page: str) -> list[str]:
    """Who asked, one line per question, newest first: the coordinator and each department it
    asked record the same question in their own audit logs (rows next to each other with the
    same requester, purpose, disclosure, consent and decision), so those rows are counted, with
    how many of them the portal verified against their log's signed checkpoint."""
    blocks = page_blocks(
        page,
        lambda _tag, attributes: attributes.get("id") == "queries-table",
        hidden_classes=frozenset({"reason"}),  # each party words its own reason
    )
    if not blocks:
        return screen_text(page)
    groups: list[tuple[list[str], list[str]]] = []
    for row in blocks[0].rows:
        if groups and len(row) == 8 and groups[-1][0][2:7] == row[2:7]:
            groups[-1][1].append(row[7])
        else:
            groups.append((row, [row[7]] if len(row) == 8 else []))
    lines = []
    for row, proofs in groups:
        if len(row) != 8:
            lines.append(" · ".join(row))
            continue
        time_, source, requester, purpose, shape, consent, decision, _ = row
        consent = f"consent {consent}" if consent not in ("—", "") else "no consent"
        by = f"{len(proofs)} parties recorded it" if len(proofs) > 1 else f"recorded by {source}"
        lines.append(
            f"{time_} {requester} · {purpose} · {shape} · {consent} · {decision} · {by} · "
            f"{_proof_summary(proofs)}"
        )
    return lines


def _proof_summary(proofs: Sequence[str]) -> str:
    """The proof marks of one question's rows: "✔ 已核验 Verified" when all are, else counts."""
    others = [p for p in proofs if "Verified" not in p]
    if not others or len(proofs) == 1:
        return proofs[0]
    verified = len(proofs) - len(others)
    return f"{verified} of {len(proofs)} 已核验 verified (the rest: {others[0]})"


def framed(title: str, lines: Sequence[str], *, width: int = SCREEN_WIDTH) -> str:
    """`lines` in a box, as the kiosk's screen (long lines wrapped)."""
    body: list[str] = []
    for line in lines:
        while len(line) > width:
            cut = line.rfind(" ", 0, width)
            cut = cut if cut > width // 2 else width
            body.append(line[:cut])
            line = line[cut:].lstrip()
        body.append(line)
    top = f"┌─ {title} " + "─" * max(0, width - len(title) - 2)
    return "\n".join([top, *(f"│ {line}" for line in body), "└" + "─" * (width + 2)])


class KioskBrowser:
    """The kiosk's screen, as its browser sees the portal: one cookie jar, pages over HTTP."""

    def __init__(self, base_url: str, *, simulator_secret: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = simulator_secret
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())
        )

    def get(self, path: str) -> str:
        """The page at `path` (redirects followed), as text."""
        with self._opener.open(self.base_url + path, timeout=HTTP_TIMEOUT_S) as response:
            body: bytes = response.read()
        return body.decode("utf-8")

    def card(self, action: str, resident_id: str = "") -> None:
        """Put a card on the simulated reader ("place") or take it away ("remove")."""
        form = {"action": action, **({"resident_id": resident_id} if resident_id else {})}
        request = urllib.request.Request(
            self.base_url + "/_simulator/card",
            data=urllib.parse.urlencode(form).encode(),
            headers={SIMULATOR_HEADER: self._secret},
            method="POST",
        )
        with self._opener.open(request, timeout=HTTP_TIMEOUT_S) as response:
            response.read()


@dataclass(frozen=True)
class KioskScene:
    """What the kiosk scene printed, for the demo's tests and for --keep-running."""

    url: str
    screen: tuple[str, ...]
    records: tuple[str, ...]
    queries: tuple[str, ...]
    simulator_secret_file: Path


def kiosk_scene(
    *, kiosk: Process, device: Device, citizen: SceneSubject, say: Callable[[str], None]
) -> KioskScene:
    """Place the citizen's card on the kiosk's reader and print its screen, her records and
    who asked about her; then take the card away and show that nothing of hers stays."""
    url = f"http://127.0.0.1:{kiosk.port}"
    secret_file = device.state_dir / SIMULATOR_SECRET_FILE
    browser = KioskBrowser(url, simulator_secret=secret_file.read_text(encoding="utf-8").strip())
    say(f"  kiosk {device.name} serves {url}/ (its screen's browser; loopback only)")
    say(f"  she places her identity card on the reader ({citizen.name})")
    browser.card("place", citizen.subject_id)
    screen = screen_text(browser.get("/"))
    say(framed("桂花分 kiosk screen", screen))
    records = records_text(browser.get("/me/records"))
    say(
        framed(
            "我的记录 My records (departments holding any; each part sealed to the kiosk)", records
        )
    )
    queries = queries_text(browser.get("/me/queries"))
    say(
        framed(
            "谁查询了我 Who asked about me (the coordinator's and departments' audit logs)", queries
        )
    )
    browser.card("remove")
    after = screen_text(browser.get("/"))
    left = "106" in " ".join(after) or citizen.subject_id in " ".join(after)
    say(f"  she takes her card away: the kiosk signs her out and shows its start screen "
        f"({'her score is still on it!' if left else 'nothing of hers is left'})")  # fmt: skip
    bad = citizen.subject_id[:17] + ("0" if citizen.subject_id[17] != "0" else "1")
    browser.card("place", bad)
    refused = screen_text(browser.get("/"))
    browser.card("remove")
    shown = next((line for line in refused if "校验" in line or "check" in line), refused[:1])
    say(f"  a card whose check digit is wrong is refused on screen: {''.join(shown)}")
    return KioskScene(
        url=url,
        screen=tuple(screen),
        records=tuple(records),
        queries=tuple(queries),
        simulator_secret_file=secret_file,
    )


# --- keeping the demo up ------------------------------------------------------------------------


def demo_identities() -> list[DemoIdentity]:
    """Whom the demo's sign-in page offers: the kiosk's citizen, and the scene enterprise's
    legal representative (who signs in for it)."""
    identities: list[DemoIdentity] = []
    for subject in SCENE_SUBJECTS:
        if subject.representative is None:
            identities.append(
                DemoIdentity(
                    label=f"{subject.name}（市民 citizen）",
                    subject=f"demo-{subject.subject_id[-6:]}",
                    resident_id=subject.subject_id,
                    name=subject.name,
                )
            )
        else:
            person = subject.representative
            identities.append(
                DemoIdentity(
                    label=f"{person.name}（{subject.name} 法定代表人 legal representative）",
                    subject=f"demo-{person.resident_id[-6:]}",
                    resident_id=person.resident_id,
                    name=person.name,
                    credit_code=subject.subject_id,
                )
            )
    return identities


def start_online(
    device: Device,
    *,
    target: str,
    run_dir: Path,
    provider: DevIdentityProvider,
    logs: Path | None = None,
) -> tuple[Process, str]:
    """The online self-service site, signing people in at `provider`; (process, its URL)."""
    process = start_portal(
        device,
        target=target,
        run_dir=run_dir,
        logs=logs,
        extra=(
            "--issuer", provider.issuer, "--client-id", provider.client_id,
            "--allow-loopback-http",
        ),
    )  # fmt: skip
    port = process.wait_ready(report=None)
    url = f"http://127.0.0.1:{port}"
    provider.register_redirect_uri(f"{url}/auth/callback")
    return process, url


def wait_until_interrupted() -> None:
    """Block until Ctrl-C (SIGINT) or SIGTERM."""
    done = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        done.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        # a timeout, so that the handler runs promptly whatever the platform's lock waits do
        while not done.wait(0.5):
            pass
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def osmanthus_program() -> str:
    """How to call the `osmanthus` command of this installation (the .venv's, in full)."""
    beside = Path(sys.executable).parent / "osmanthus"
    return str(beside) if beside.exists() and os.access(beside, os.X_OK) else "osmanthus"


@dataclass(frozen=True)
class TryIt:
    """What a new user needs to try every face of the running demo."""

    workdir: Path
    certs: Path
    target: str
    kiosk: KioskScene
    online_url: str
    provider: DevIdentityProvider
    #: the citizen's consent for agency-1 (loan_underwriting) the scene recorded
    consent_id: str
    #: agency-1's requester id, token file and Paillier key
    requester: str
    token_file: Path
    keys_file: Path
    signing_key: Path
    #: how to try a department's desk (objections and credit repair), if one runs
    desk: str = ""


def how_to_try(t: TryIt) -> str:
    """The kiosk URL, the self-service URL with the demo sign-in, an SDK snippet and CLI commands,
    with the demo's certificate, token and key paths filled in."""
    citizen, firm = SCENE_SUBJECTS[0], SCENE_SUBJECTS[1]
    assert firm.representative is not None
    cert_dir = t.certs / "requesters" / t.requester
    ca, cert, key = t.certs / CA_CERT_FILE, cert_dir / "cert.pem", cert_dir / "key.pem"
    report = t.workdir / "report.pdf"
    secret = t.kiosk.simulator_secret_file
    program = osmanthus_program()
    desk = f"\n{t.desk}" if t.desk else ""
    faces = (
        "the kiosk, the online self-service site and a department's desk"
        if t.desk
        else "the kiosk and the online self-service site"
    )
    connection = (
        f"--coordinator {t.target} --requester {t.requester} --certs-dir {t.certs} \\\n"
        f"      --token-file {t.token_file} --keys {t.keys_file}"
    )
    card = (
        f'curl -X POST -H "x-simulator-secret: $(cat {secret})" \\\n'
        f"      -d action=place -d resident_id={citizen.subject_id} {t.kiosk.url}/_simulator/card"
    )
    return f"""\
The federation, {faces} stay up until Ctrl-C.

Kiosk (the service hall's self-service machine; it answers this machine only):
  {t.kiosk.url}/
  place {citizen.name}'s card on its simulated reader (take it away with action=remove):
    {card}

Online self-service (诚信苏州), signing in at the demo's identity provider ({t.provider.issuer}):
  {t.online_url}/
  click 登录 Sign in, then choose {citizen.name} (the citizen) or {firm.representative.name}
  (legal representative of {firm.name}: the enterprise's credit and his own).
  Under 我的授权 My consents she can revoke the consent agency-1 holds ({t.consent_id}).
  Under 我的记录 My records she can object to a record (异议); he can apply for credit repair.
{desk}
The SDK, as agency-1 (run with {sys.executable}):
  from pathlib import Path
  from sdk import Client, TlsFiles, load_or_create_keys

  client = Client(
      "{t.target}",
      tls=TlsFiles(ca=Path("{ca}"), cert=Path("{cert}"), key=Path("{key}")),
      token=Path("{t.token_file}").read_text().strip(),
      keys=load_or_create_keys(Path("{t.keys_file}")),
  )
  card = client.person_score("{citizen.subject_id}", purpose="loan_underwriting",
                             consent_id="{t.consent_id}")
  print(card.score, card.deductions, dict(card.bonuses))  # 116 5 ... (objection upheld)
  report = client.enterprise_score("{firm.subject_id}", purpose="credit_report")
  print(report.score, report.grade)

The command line, as agency-1:
  {program} lists search --kind enterprise --subject {firm.subject_id} \\
      {connection}
  {program} report enterprise {firm.subject_id} --out {report} \\
      --signing-key {t.signing_key} {connection}
  {program} health --target {t.target} --server-name {COORDINATOR_SERVER_NAME} --certs-dir {t.certs}
"""
