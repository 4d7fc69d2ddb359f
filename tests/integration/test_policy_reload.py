"""Policy hot reload while queries run: no request fails, a bad bundle changes nothing.

A real federation (five enterprise departments over mTLS) follows signed policy bundles polled
every 0.1 s. Requesters query without pause from three threads while the privacy office publishes
a bundle that pauses credit reports, then a tampered bundle and an invalid one (both meant to
lift the pause), then a good bundle lifting it. Every call is timed and classified; the audit
logs must name the bundle each decision was made under.
"""

from __future__ import annotations

import csv
import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import sdk
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.server import DEFAULT_NODE_POLICY
from osmanthus.core import signing
from osmanthus.core.bundle import (
    FORMAT,
    generate_publisher_key,
    load_private_key,
    sign_bundle,
    verify_bundle,
)
from osmanthus.core.bundle_watch import (
    STATE_FILE_NAME,
    PolicyWatcher,
    ReloadStatus,
    active_watchers,
)
from osmanthus.core.files import write_atomically
from osmanthus.core.types import DepartmentId, Role, Shape
from osmanthus.demo.launcher import osmanthus_command, spawn
from osmanthus.demo.seed import SeedReport
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    ENTERPRISES,
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.waiting import EVENT_TIMEOUT_S

DEPARTMENTS = ("court", "tax", "samr", "eco", "customs")
POLL_S = 0.1
#: how long after publication a bundle must be in force: a few polls, with room for a busy CPU
SWITCH_WITHIN_S = 1.5
PURPOSE = "credit_report"
REQUESTERS = (
    ("bank-1", Role.BANK),
    ("agency-1", Role.CREDIT_AGENCY),
    ("registrar", Role.PLATFORM_SERVICE),
)
CENTRAL_PAUSE = "central-pause-credit-reports"
NODE_PAUSE = "customs-pause-credit-reports"
#: a policy that names a fact the entity model lacks (validation fails at its rule)
INVALID_RULE = """
@id("lift-the-pause")
permit (principal, action == Action::"EnterpriseQuery", resource)
when { context.colour == "green" };
"""


def _pause(text: str, *, rule: str, action: str) -> str:
    return text + (
        f'\n@id("{rule}")\nforbid (principal, action == Action::"{action}", resource)\n'
        f'when {{ context.purpose == "{PURPOSE}" }};\n'
    )


@dataclass
class Office:
    """The privacy office: one publisher key, publishing into the files the servers follow."""

    key: Ed25519PrivateKey
    public: Path

    def publish(
        self, path: Path, policy: str, *, scope: str, serial: int, at: datetime | None = None
    ) -> str:
        data = sign_bundle(
            policy_source=policy,
            scope=scope,
            serial=serial,
            publisher="privacy office",
            private_key=self.key,
            now=at or datetime.now(UTC),
        )
        public = self.key.public_key()
        bundle = verify_bundle(
            data, trusted_keys={signing.key_id(public): public}, scope=None, origin=str(path)
        )
        write_atomically(path, data)
        return bundle.hash

    def tampered(self, path: Path, policy: str, *, scope: str, serial: int, to: str) -> None:
        """A bundle signed for `policy`, whose policy text was then replaced by `to`."""
        self.publish(path.with_suffix(".draft"), policy, scope=scope, serial=serial)
        document = json.loads(path.with_suffix(".draft").read_bytes())
        document["payload"]["policy"] = to
        document["payload"]["policy_sha256"] = hashlib.sha256(to.encode()).hexdigest()
        write_atomically(path, json.dumps(document).encode())

    def unchecked(self, path: Path, policy: str, *, scope: str, serial: int) -> None:
        """A correctly signed bundle whose policy fails validation ('publish' refuses to make
        one; a faulty publishing tool might not)."""
        payload = {
            "format": FORMAT,
            "scope": scope,
            "serial": serial,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "publisher": "faulty tool",
            "policy": policy,
            "policy_sha256": hashlib.sha256(policy.encode()).hexdigest(),
        }
        sealed = signing.seal(
            payload, payload_type=signing.POLICY_BUNDLE_TYPE, private_key=self.key
        )
        write_atomically(path, sealed)


@pytest.fixture
def office(tmp_path: Path) -> Office:
    private, public = generate_publisher_key(out_dir=tmp_path / "keys", name="office")
    return Office(load_private_key(private), public)


@dataclass(frozen=True)
class Call:
    requester: str
    start: float
    end: float
    #: "ok", "denied" (PermissionDenied) or "error" (anything else: always a failure)
    outcome: str
    #: the missing departments of an answer, or the error message
    detail: str


@dataclass
class Load:
    """Requesters querying without pause, each from its own thread, until stopped."""

    calls: list[Call] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, client: Client, requester: str, firms: list[str], rounds: int) -> None:
        for firm in firms * rounds:
            if self.stop.is_set():
                return
            start = time.monotonic()
            try:
                result = client.enterprise_score(firm, purpose=PURPOSE, shape=Shape.TOTAL)
                outcome, detail = "ok", ",".join(m.department for m in result.missing)
            except sdk.PermissionDenied as exc:
                outcome, detail = "denied", exc.message
            except Exception as exc:  # every other failure is recorded and fails the test
                outcome, detail = "error", f"{type(exc).__name__}: {exc}"
            with self.lock:
                self.calls.append(Call(requester, start, time.monotonic(), outcome, detail))
            # a refusal takes milliseconds: pace the loop so refusals do not starve the CPU
            time.sleep(0.005)

    def snapshot(self) -> list[Call]:
        with self.lock:
            return list(self.calls)

    def until(self, what: str, check: Callable[[Call], bool], *, since: float) -> None:
        """Wait until every requester has made a call started after `since` that passes."""
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            done = {c.requester for c in self.snapshot() if c.start > since and check(c)}
            if done >= {r for r, _ in REQUESTERS}:
                return
            errors = [c for c in self.snapshot() if c.outcome == "error"]
            assert not errors, errors[:3]
            time.sleep(0.02)
        raise AssertionError(f"not every requester saw {what}: {self.snapshot()[-6:]}")


@pytest.fixture
def load() -> Iterator[Load]:
    running = Load()
    yield running
    running.stop.set()
    for thread in running.threads:
        thread.join(timeout=30)


def _start_load(load: Load, fed: Federation, *, firms: int, rounds: int) -> list[Client]:
    """Each requester asks about `firms` firms in turn, `rounds` times over."""
    with fed.data.subjects_file.open() as f:
        ids = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    clients = []
    for requester, role in REQUESTERS:
        client = fed.client(requester, role=role, purposes=[PURPOSE])
        client.register_key()
        clients.append(client)
        thread = threading.Thread(
            target=load.run,
            args=(client, requester, ids[:firms], rounds),
            name=f"load-{requester}",
        )
        load.threads.append(thread)
        thread.start()
    return clients


def _watcher(path: Path) -> PolicyWatcher:
    return next(w for w in active_watchers() if w.path == path)


def _installed(watcher: PolicyWatcher, serial: int, *, published: float) -> float:
    """Wait for `serial` to be in force; returns when, and checks it came within a few polls."""
    while watcher.bundle.serial != serial:
        assert time.monotonic() - published < EVENT_TIMEOUT_S, watcher.last_outcome
        time.sleep(0.005)
    installed = time.monotonic()
    assert installed - published < SWITCH_WITHIN_S, (installed - published, watcher.last_outcome)
    return installed


def _rejected(watcher: PolicyWatcher, words: str, *, serial_in_force: int) -> None:
    """Wait for the watcher to reject the file on disk, then let a few more polls pass."""
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    while not (
        watcher.last_outcome.status is ReloadStatus.REJECTED
        and words in watcher.last_outcome.reason
    ):
        assert time.monotonic() < deadline, watcher.last_outcome
        time.sleep(0.005)
    time.sleep(5 * POLL_S)
    assert watcher.bundle.serial == serial_in_force
    assert watcher.last_outcome.status is ReloadStatus.REJECTED


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _between(calls: list[Call], start: float, end: float) -> list[Call]:
    """The calls made entirely within [start, end]."""
    return [c for c in calls if c.start >= start and c.end <= end]


def test_central_bundles_reload_while_queries_run_and_bad_bundles_change_nothing(
    seeded: SeedReport,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    office: Office,
    load: Load,
) -> None:
    allow = DEFAULT_CENTRAL_POLICY.read_text()
    pause = _pause(allow, rule=CENTRAL_PAUSE, action="EnterpriseQuery")
    bundle = tmp_path / "central.bundle"
    h1 = office.publish(bundle, allow, scope="central", serial=1)
    fed = start_federation(
        tmp_path,
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        central_policy_bundle=bundle,
        policy_trust=(office.public,),
        policy_poll_s=POLL_S,
    )
    clients: list[Client] = []
    try:
        watcher = _watcher(bundle)
        clients = _start_load(load, fed, firms=10, rounds=1000)
        load.until("an answer", lambda c: c.outcome == "ok", since=0.0)

        paused_at = time.monotonic()
        h2 = office.publish(bundle, pause, scope="central", serial=2)
        paused = _installed(watcher, 2, published=paused_at)
        load.until("the pause", lambda c: c.outcome == "denied", since=paused)

        # both try to lift the pause; neither may
        office.tampered(bundle, pause, scope="central", serial=3, to=allow)
        _rejected(watcher, "bad signature", serial_in_force=2)
        office.unchecked(bundle, allow + INVALID_RULE, scope="central", serial=3)
        _rejected(watcher, "colour", serial_in_force=2)

        lifted_at = time.monotonic()
        h3 = office.publish(bundle, allow, scope="central", serial=3)
        lifted = _installed(watcher, 3, published=lifted_at)
        load.until("the pause lifted", lambda c: c.outcome == "ok", since=lifted)
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(timeout=30)
        for client in clients:
            client.close()
        stop_federation(fed)

    calls = load.snapshot()
    assert [c for c in calls if c.outcome == "error"] == []
    assert all(c.detail == "" for c in calls if c.outcome == "ok"), "every department answers"
    denied = [c for c in calls if c.outcome == "denied"]
    assert denied and all(CENTRAL_PAUSE in c.detail for c in denied)
    assert all(c.outcome == "ok" for c in calls if c.end < paused_at)
    under_pause = _between(calls, paused, lifted_at)
    assert len(under_pause) >= 6
    assert all(c.outcome == "denied" for c in under_pause), "the bad bundles changed something"
    assert all(c.outcome == "ok" for c in calls if c.start > lifted)

    entries = [e for e in _audit(fed.state_dir / "coordinator" / "audit.jsonl") if e["purpose"]]
    assert {e["policy_hash"] for e in entries} == {h1, h2, h3}
    source_hash = hashlib.sha256(allow.encode()).hexdigest()
    assert source_hash not in {e["policy_hash"] for e in entries}
    by_hash = {h: [e for e in entries if e["policy_hash"] == h] for h in (h1, h2, h3)}
    assert {e["decision"] for e in by_hash[h1]} == {"allow"}
    assert {e["decision"] for e in by_hash[h2]} == {"deny"}
    assert all(CENTRAL_PAUSE in e["reason"] for e in by_hash[h2])
    assert len(by_hash[h2]) == len(denied)
    assert {e["decision"] for e in by_hash[h3]} == {"allow"}


def test_a_node_bundle_reloads_while_queries_run_and_the_node_stops_contributing(
    seeded: SeedReport,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    office: Office,
    load: Load,
) -> None:
    allow = DEFAULT_NODE_POLICY.read_text()
    pause = _pause(allow, rule=NODE_PAUSE, action="Contribute")
    customs = tmp_path / "customs.bundle"
    every_node = tmp_path / "node.bundle"
    # a superseded bundle for every node, from when that series had reached serial 9
    archived = tmp_path / "node-archived.bundle"
    office.publish(
        archived, allow, scope="node", serial=9, at=datetime.now(UTC) - timedelta(days=1)
    )
    h1 = office.publish(customs, allow, scope="node:customs", serial=1)
    office.publish(every_node, allow, scope="node", serial=1)
    fed = start_federation(
        tmp_path,
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        node_policy_bundles={"customs": customs, "tax": every_node},
        policy_trust=(office.public,),
        policy_poll_s=POLL_S,
    )
    clients: list[Client] = []
    try:
        watcher = _watcher(customs)
        # every call asks about a firm new to its requester: a firm once answered by all five
        # departments is never answered by four (coordinator/disclosure.py)
        clients = _start_load(load, fed, firms=ENTERPRISES, rounds=1)
        load.until("a full answer", lambda c: c.outcome == "ok" and c.detail == "", since=0.0)

        paused_at = time.monotonic()
        h2 = office.publish(customs, pause, scope="node:customs", serial=2)
        paused = _installed(watcher, 2, published=paused_at)
        load.until("customs missing", lambda c: c.detail == "customs", since=paused)

        # signed by the trusted key, but for another department; then a tampered one; then an
        # old bundle for every node replayed, whose serial is higher but which is older
        office.publish(customs, allow, scope="node:tax", serial=3)
        _rejected(watcher, "for scope 'node:tax'", serial_in_force=2)
        write_atomically(customs, archived.read_bytes())
        _rejected(watcher, "before the bundle in force", serial_in_force=2)
        office.tampered(customs, pause, scope="node:customs", serial=3, to=allow)
        _rejected(watcher, "bad signature", serial_in_force=2)

        lifted_at = time.monotonic()
        h3 = office.publish(customs, allow, scope="node:customs", serial=3)
        lifted = _installed(watcher, 3, published=lifted_at)
        load.until("a full answer again", lambda c: c.detail == "", since=lifted)
    finally:
        load.stop.set()
        for thread in load.threads:
            thread.join(timeout=30)
        for client in clients:
            client.close()
        stop_federation(fed)

    calls = load.snapshot()
    # the coordinator accepts 4 of 5 departments (the central policy's 80 % rule)
    assert [c for c in calls if c.outcome != "ok"] == []
    assert all(c.detail == "" for c in calls if c.end < paused_at)
    under_pause = _between(calls, paused, lifted_at)
    assert len(under_pause) >= 6
    assert all(c.detail == "customs" for c in under_pause), "the bad bundles changed something"
    assert all(c.detail == "" for c in calls if c.start > lifted)

    entries = [e for e in _audit(fed.state_dir / "customs" / "audit.jsonl") if e["purpose"]]
    assert {e["policy_hash"] for e in entries} == {h1, h2, h3}
    by_hash = {h: [e for e in entries if e["policy_hash"] == h] for h in (h1, h2, h3)}
    assert {e["decision"] for e in by_hash[h1]} == {"allow"}
    assert {e["decision"] for e in by_hash[h2]} == {"deny"}
    assert all(NODE_PAUSE in e["reason"] for e in by_hash[h2])
    assert {e["decision"] for e in by_hash[h3]} == {"allow"}
    # tax follows the bundle for every node, and was never asked to change
    tax = {e["policy_hash"] for e in _audit(fed.state_dir / "tax" / "audit.jsonl")}
    assert len(tax) == 1 and tax.isdisjoint({h1, h2, h3})


def test_sighup_makes_a_serving_node_check_its_bundle_at_once(
    seeded: SeedReport,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    office: Office,
) -> None:
    allow = DEFAULT_NODE_POLICY.read_text()
    bundle = tmp_path / "customs.bundle"
    office.publish(bundle, allow, scope="node:customs", serial=1)
    state = tmp_path / "state"
    node = spawn(
        "node-customs",
        osmanthus_command(
            "node", "serve",
            "--department", "customs",
            "--db", str(seeded.databases[DepartmentId("customs")]),
            "--issuer-public-key", str(issuer_keys.public),
            "--state-dir", str(state),
            "--certs-dir", str(platform_certs),
            "--listen", "127.0.0.1:0",
            "--policy-bundle", str(bundle),
            "--policy-trust", str(office.public),
            # never polled within the test: only SIGHUP makes it look
            "--policy-poll", "600",
        ),
        run_dir=tmp_path / "run",
    )  # fmt: skip

    def serial_in_force() -> int:
        record: dict[str, Any] = json.loads((state / STATE_FILE_NAME).read_text())
        return int(record["serial"])

    try:
        node.wait_ready()
        assert serial_in_force() == 1
        h2 = office.publish(
            bundle, _pause(allow, rule=NODE_PAUSE, action="Contribute"), scope="node", serial=2
        )
        node.popen.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while serial_in_force() != 2:
            assert time.monotonic() < deadline, node.log_path.read_text()
            time.sleep(0.02)
        assert json.loads((state / STATE_FILE_NAME).read_text())["hash"] == h2

        office.tampered(bundle, allow, scope="node", serial=3, to=allow + "\n// changed\n")
        node.popen.send_signal(signal.SIGHUP)
        while "bad signature" not in node.log_path.read_text():
            assert time.monotonic() < deadline + EVENT_TIMEOUT_S, node.log_path.read_text()
            time.sleep(0.02)
        assert serial_in_force() == 2
    finally:
        code = node.stop()
    assert code == 0, node.log_path.read_text()
    log = node.log_path.read_text()
    assert str(bundle) in log and "serial 2" in log and "stays in force" in log
