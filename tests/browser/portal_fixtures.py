"""What the portal's browser tests run against: a real federation whose departments hold every
record of the demo citizen (so the kiosk shows the article's 106), the portal served by uvicorn
on 127.0.0.1, a clock the tests move forward, and the accessibility checks every page passes.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvicorn
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from playwright.sync_api import Page, ViewportSize
from starlette.applications import Starlette

from certs import init_platform
from osmanthus.core.subjectseal import public_bytes, seal_fingerprint
from osmanthus.core.types import Role
from osmanthus.demo.seed import seed
from portal.backend import SubjectBackend
from sdk import Client
from sdk.keys import load_or_create_keys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    AS_OF,
    Federation,
    restricted_catalogue,
    start_federation,
)
from tests.waiting import EVENT_TIMEOUT_S, wait_until

#: the departments holding the demo citizen's records (hrss, civility, blood and volunteer give
#: the four bonus categories; transport and housing deduct; urban's record has expired), so her
#: score is the whole 106 of the article, not a part of it
DEPARTMENTS: Final = ("hrss", "civility", "blood", "volunteer", "transport", "housing", "urban")
#: the portal devices, the platform service that records consents, an agency that asks
REQUESTERS: Final = ("kiosk-1", "portal-1", "registrar", "agency-1")
#: a few synthetic subjects besides the scene's: the tests only look at the demo citizen
PERSONS: Final = 40
ENTERPRISES: Final = 8
#: the browser's window: what the README's screenshots show
VIEWPORT: Final = ViewportSize(width=1280, height=800)
#: Playwright's waits, in milliseconds: the same bound as tests/waiting.py (an event, not a time)
WAIT_MS: Final = EVENT_TIMEOUT_S * 1000


def start_portal_federation(base: Path, *, issuer_keys: IssuerKeyPaths) -> Federation:
    """Seven department nodes and a coordinator over mTLS, with their own platform CA."""
    certs = base / "certs"
    init_platform(certs, departments=DEPARTMENTS, requesters=REQUESTERS)
    keys = {name: load_or_create_keys(base / "keys" / f"{name}.key") for name in REQUESTERS}
    data = seed(base / "seed", persons=PERSONS, enterprises=ENTERPRISES, as_of=AS_OF)
    return start_federation(
        base / "federation",
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=data,
        certs=certs,
        issuer_keys=issuer_keys,
        keys=keys,
        departments=DEPARTMENTS,
        # "who asked about me" is proven: every log signs checkpoints with its certs-init key
        # (a second after each new entry), and the coordinator witnesses the nodes' logs in the
        # rounds a test drives (witness_node_logs)
        transparency=True,
        checkpoint_every=1,
        witness=True,
    )


def device_backend(federation: Federation, requester: str, role: Role) -> SubjectBackend:
    """A kiosk or the online site as the platform registers it: its certificate, Paillier key,
    a sealing key of its own and a token (purpose self_query) bound to both."""
    sealing_key = X25519PrivateKey.generate()
    client = device_client(federation, requester, role, sealing_key=sealing_key)
    return SubjectBackend(client=client, sealing_key=sealing_key, catalogue=federation.catalogue)


def device_client(
    federation: Federation, requester: str, role: Role, *, sealing_key: X25519PrivateKey
) -> Client:
    token = federation.token(
        requester,
        role=role,
        purposes=["self_query"],
        seal_fingerprint=seal_fingerprint(public_bytes(sealing_key)),
    )
    return Client(
        federation.target,
        tls=federation.tls(requester),
        token=token,
        keys=federation.keys[requester],
        catalogue=federation.catalogue,
    )


class TestClock:
    """A monotonic clock the tests can move forward (the portal's session idle time-out)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._offset = 0.0

    def __call__(self) -> float:
        with self._lock:
            return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._offset += seconds


@dataclass(frozen=True)
class Served:
    """An app served by uvicorn on 127.0.0.1."""

    url: str
    port: int


def free_socket() -> socket.socket:
    """A listening-ready socket on 127.0.0.1 and a free port (bound now, so the port is known
    before the app is built: the online site's redirect URI names it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve(app: Starlette, sock: socket.socket) -> Iterator[Served]:
    """Serve `app` with uvicorn in a thread on `sock` until the block ends."""
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="portal-uvicorn", daemon=True
    )
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), what="the portal's server to start"
        )
        assert server.started, "uvicorn stopped before it started serving"
        port = sock.getsockname()[1]
        yield Served(url=f"http://127.0.0.1:{port}", port=port)
    finally:
        server.should_exit = True
        thread.join(timeout=EVENT_TIMEOUT_S)
        sock.close()


# --- accessibility ----------------------------------------------------------------------------

#: the basics every page must have: the page's language, one main landmark, a title, and a
#: label for every form control (its <label>, aria-label or aria-labelledby; a button its text)
_A11Y_PROBLEMS: Final = """() => {
  const problems = [];
  const lang = document.documentElement.getAttribute('lang');
  if (lang !== 'zh-CN') problems.push('html lang is ' + lang);
  const mains = document.querySelectorAll('main, [role=main]');
  if (mains.length !== 1) problems.push(mains.length + ' main landmarks');
  if (!document.title.trim()) problems.push('no title');
  for (const el of document.querySelectorAll('input, select, textarea, button')) {
    if (el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length > 0)
      || (el.getAttribute('aria-label') || '').trim()
      || (el.getAttribute('aria-labelledby') || '').trim()
      || (el.tagName === 'BUTTON' && el.textContent.trim());
    if (!named) problems.push('no label: ' + el.outerHTML.slice(0, 120));
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('no alt: ' + img.outerHTML.slice(0, 120));
  }
  return problems;
}"""

#: the focused element shows it: :focus-visible matches and draws an outline (or a shadow)
_FOCUS_SHOWN: Final = """() => {
  const el = document.activeElement;
  if (!el || el === document.body) return {id: '', shown: false, why: 'nothing focused'};
  const style = getComputedStyle(el);
  const outline = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0;
  const shadow = style.boxShadow && style.boxShadow !== 'none';
  return {
    id: el.id || el.tagName,
    shown: el.matches(':focus-visible') && Boolean(outline || shadow),
    why: 'focus-visible=' + el.matches(':focus-visible') + ' outline=' + style.outlineStyle
      + ' ' + style.outlineWidth + ' shadow=' + style.boxShadow,
  };
}"""


def check_accessibility(page: Page) -> None:
    """Fail naming every accessibility basic the page lacks."""
    problems = page.evaluate(_A11Y_PROBLEMS)
    assert problems == [], f"{page.url}: {problems}"


def tab_to(page: Page, element_id: str, *, max_steps: int = 40) -> int:
    """Press Tab until the element `element_id` has the focus, checking at each step that the
    focus is visible; the number of Tab presses it took."""
    for step in range(1, max_steps + 1):
        page.keyboard.press("Tab")
        focus = page.evaluate(_FOCUS_SHOWN)
        assert focus["shown"], f"focus on {focus['id']} is not visible: {focus['why']}"
        if focus["id"] == element_id:
            return step
    raise AssertionError(f"#{element_id} not reached with {max_steps} presses of Tab")
