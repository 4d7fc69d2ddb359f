"""Servers following a signed policy bundle file: succession, the watcher, start-up, SIGHUP.

The bundles are made with the helpers of tests/unit/test_bundle.py (the format's tests).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.cli import main
from osmanthus.core import signing
from osmanthus.core.bundle import (
    VerifiedBundle,
    generate_publisher_key,
    load_private_key,
    load_trusted_keys,
    node_scope,
    verify_bundle,
)
from osmanthus.core.bundle_watch import (
    MAX_CLOCK_AHEAD,
    STATE_FILE_NAME,
    BundleRecord,
    PolicyWatcher,
    ReloadStatus,
    active_watchers,
    check_poll_interval,
    check_succession,
    load_policy,
    wake_watchers,
)
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import write_atomically
from osmanthus.core.policy import PolicyEngine, ReloadablePolicy
from tests.unit.test_bundle import (
    ALLOW_REGISTER,
    DENY_BANKS,
    INVALID,
    NOW,
    legacy_bundle,
    payload_of,
    register_request,
    resealed,
    sign,
    tampered,
    verified,
)
from tests.waiting import EVENT_TIMEOUT_S


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {signing.key_id(key.public_key()): key.public_key()}


# --- which bundle may replace the one in force -------------------------------------------------


def test_a_rollback_and_a_second_bundle_under_one_serial_are_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    in_force = verified(sign(key, serial=5), trusted)
    older = verified(sign(key, serial=4), trusted)
    twin = verified(sign(key, serial=5, policy=DENY_BANKS), trusted)
    newer = verified(sign(key, serial=6, policy=DENY_BANKS), trusted)
    record = BundleRecord.of(in_force)
    with pytest.raises(ConfigError, match="rollback is refused"):
        check_succession(record, older)
    with pytest.raises(ConfigError, match="content differs"):
        check_succession(record, twin)
    assert check_succession(record, in_force) is False
    assert check_succession(record, newer) is True


def test_an_older_bundle_of_another_scope_is_refused_however_high_its_serial(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    tax = node_scope("tax")

    def bundle(scope: str, serial: int, days: int) -> VerifiedBundle:
        data = sign(key, scope=scope, serial=serial, now=NOW + timedelta(days=days))
        return verified(data, trusted, scope=tax)

    in_force = BundleRecord.of(bundle(tax, 3, days=300))
    # the 'node' series reached serial 7 long before tax got its own series
    with pytest.raises(ConfigError) as caught:
        check_succession(in_force, bundle("node", 7, days=0))
    assert caught.value.field == "created_at"
    message = str(caught.value)
    assert "published 2026-11-26" in message and "before the bundle in force" in message
    assert "'node:tax' serial 3" in message  # what is in force
    # a scope change needs a higher serial too, and the message says both scopes are one series
    with pytest.raises(ConfigError) as caught:
        check_succession(in_force, bundle("node", 2, days=400))
    assert caught.value.field == "serial" and "rollback" in str(caught.value)
    assert "'node:tax' and 'node' bundles as one sequence" in str(caught.value)
    with pytest.raises(ConfigError, match="content differs"):
        check_succession(in_force, bundle("node", 3, days=400))
    # newer on both counts: a legitimate move back to the policy for every node
    assert check_succession(in_force, bundle("node", 4, days=400)) is True
    # published in the same second as the bundle in force: not older
    assert check_succession(in_force, bundle(tax, 4, days=300)) is True
    # a record from before publication times were kept compares serials only
    unknown_time = dataclasses.replace(in_force, created_at=None)
    assert check_succession(unknown_time, bundle("node", 7, days=0)) is True


def test_a_bundle_dated_in_the_future_is_refused_by_a_server(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    in_force = BundleRecord.of(verified(sign(key, serial=1), trusted))
    ahead = verified(sign(key, serial=2, now=NOW + MAX_CLOCK_AHEAD + timedelta(minutes=1)), trusted)
    with pytest.raises(ConfigError) as caught:
        check_succession(in_force, ahead, now=NOW)
    assert caught.value.field == "created_at" and "after this server's clock" in str(caught.value)
    # within the allowance, or checked later by a server whose clock has caught up: accepted
    assert check_succession(in_force, ahead, now=NOW + timedelta(minutes=2)) is True
    near = verified(sign(key, serial=2, now=NOW + MAX_CLOCK_AHEAD), trusted)
    assert check_succession(in_force, near, now=NOW) is True


# --- the watcher --------------------------------------------------------------------------------


class _Publisher:
    """Publishes bundles into one file the way an officer does, with one key."""

    def __init__(self, directory: Path, *, scope: str = "central") -> None:
        private, public = generate_publisher_key(out_dir=directory / "keys", name="office")
        self.key = load_private_key(private)
        self.public = public
        self.scope = scope
        self.path = directory / "policy.bundle"

    def publish(self, policy: str, serial: int, *, scope: str | None = None) -> str:
        data = sign(self.key, policy=policy, serial=serial, scope=scope or self.scope)
        write_atomically(self.path, data)
        return signing.signature_key_id(json.loads(data)["signature"])


def _open(
    publisher: _Publisher, state_dir: Path, *, interval_s: float = 60.0, scope: str = "central"
) -> tuple[ReloadablePolicy, PolicyWatcher]:
    policy, watcher = load_policy(
        policy_file=Path("unused.cedar"),
        bundle=publisher.path,
        trust=[publisher.public],
        scope=scope,
        state_dir=state_dir,
        interval_s=interval_s,
    )
    assert watcher is not None
    return policy, watcher


def test_the_watcher_installs_good_bundles_and_keeps_the_policy_on_bad_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    policy, watcher = _open(publisher, tmp_path)
    watcher.start()
    try:
        first = policy.current()
        assert first.decide(register_request()).allowed
        state = json.loads((tmp_path / STATE_FILE_NAME).read_text())
        assert (state["serial"], state["hash"]) == (1, first.hash)

        # the same file looked at again: nothing to do
        assert watcher.check_now().status is ReloadStatus.INSTALLED
        assert policy.current() is first

        publisher.publish(DENY_BANKS, 2)
        outcome = watcher.check_now()
        assert outcome.status is ReloadStatus.INSTALLED
        second = policy.current()
        assert second is not first and second.hash == outcome.hash == watcher.bundle.hash
        assert not second.decide(register_request()).allowed
        assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["serial"] == 2

        # a bad signature: rejected, logged once however often the file is looked at
        publisher.path.write_bytes(
            tampered(sign(publisher.key, policy=ALLOW_REGISTER, serial=3), serial=4)
        )
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="osmanthus.core.bundle_watch"):
            rejected = watcher.check_now()
            assert watcher.check_now() is rejected
            assert watcher.last_outcome is rejected
        assert rejected.status is ReloadStatus.REJECTED
        assert "bad signature" in rejected.reason
        assert (rejected.serial, rejected.hash) == (2, second.hash)
        assert policy.current() is second
        assert len(caplog.records) == 1
        assert str(publisher.path) in caplog.records[0].getMessage()
        assert "bad signature" in caplog.records[0].getMessage()

        # a valid policy signed for the wrong scope, an invalid policy, a rollback, no file
        publisher.publish(ALLOW_REGISTER, 3, scope="node")
        assert "for scope 'node'" in watcher.check_now().reason
        bad = payload_of(sign(publisher.key, serial=3))
        bad.update(policy=INVALID, policy_sha256=hashlib.sha256(INVALID.encode()).hexdigest())
        publisher.path.write_bytes(resealed(bad, publisher.key))
        assert "line 3" in watcher.check_now().reason
        publisher.publish(ALLOW_REGISTER, 1)
        assert "rollback" in watcher.check_now().reason
        publisher.publish(ALLOW_REGISTER, 2)
        assert "content differs" in watcher.check_now().reason
        publisher.path.unlink()
        assert "cannot read the bundle" in watcher.check_now().reason
        assert policy.current() is second

        publisher.publish(ALLOW_REGISTER, 3)
        outcome = watcher.check_now()
        assert outcome.status is ReloadStatus.INSTALLED and outcome.serial == 3
        assert policy.current().decide(register_request()).allowed
    finally:
        watcher.close()
    assert watcher not in active_watchers()


def test_the_watcher_refuses_a_replayed_bundle_of_the_other_scope_and_keeps_the_series(
    tmp_path: Path,
) -> None:
    publisher = _Publisher(tmp_path, scope="node:tax")
    # the bundle for every node reached serial 7 a year ago; tax's own series is at 3
    old_for_every_node = sign(publisher.key, scope="node", serial=7, now=NOW - timedelta(days=300))
    publisher.publish(DENY_BANKS, 3)
    policy, watcher = _open(publisher, tmp_path, scope=node_scope("tax"))
    watcher.start()
    try:
        strict = policy.current()
        write_atomically(publisher.path, old_for_every_node)
        outcome = watcher.check_now()
        assert outcome.status is ReloadStatus.REJECTED
        assert "before the bundle in force, 'node:tax' serial 3" in outcome.reason
        assert policy.current() is strict
        assert (watcher.bundle.scope, watcher.bundle.serial) == ("node:tax", 3)

        # the office's next bundle for tax is not mistaken for a rollback
        publisher.publish(DENY_BANKS + "\n// reviewed\n", 4)
        assert watcher.check_now().status is ReloadStatus.INSTALLED
        state = json.loads((tmp_path / STATE_FILE_NAME).read_text())
        assert (state["scope"], state["serial"]) == ("node:tax", 4)
        assert datetime.fromisoformat(state["created_at"]) == NOW
    finally:
        watcher.close()


@pytest.mark.timeout(20)
def test_the_watcher_refuses_a_fifo_or_a_device_without_blocking(tmp_path: Path) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    policy, watcher = _open(publisher, tmp_path)
    first = policy.current()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    os.replace(fifo, publisher.path)
    outcome = watcher.check_now()
    assert outcome.status is ReloadStatus.REJECTED and "a FIFO" in outcome.reason
    publisher.path.unlink()
    publisher.path.symlink_to("/dev/zero")
    assert "a device" in watcher.check_now().reason
    assert policy.current() is first
    publisher.path.unlink()
    publisher.publish(DENY_BANKS, 2)
    assert watcher.check_now().status is ReloadStatus.INSTALLED


def test_the_watcher_follows_a_kubernetes_style_chain_of_symbolic_links(tmp_path: Path) -> None:
    """A ConfigMap volume: NAME -> ..data/NAME, ..data -> ..<timestamp>/, swapped on update."""
    publisher = _Publisher(tmp_path)
    mount = tmp_path / "mount"
    mount.mkdir()

    def update(serial: int, policy: str) -> None:
        version = mount / f"..2026_11_26_{serial}"
        version.mkdir()
        (version / "central.bundle").write_bytes(sign(publisher.key, serial=serial, policy=policy))
        (mount / "..data_tmp").symlink_to(version.name)
        os.replace(mount / "..data_tmp", mount / "..data")

    update(1, ALLOW_REGISTER)
    (mount / "central.bundle").symlink_to("..data/central.bundle")
    policy, watcher = load_policy(
        policy_file=Path("unused.cedar"),
        bundle=mount / "central.bundle",
        trust=[publisher.public],
        scope="central",
        state_dir=tmp_path,
        interval_s=60.0,
    )
    assert watcher is not None and watcher.bundle.serial == 1
    update(2, DENY_BANKS)
    assert watcher.check_now().status is ReloadStatus.INSTALLED
    assert not policy.current().decide(register_request()).allowed


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 1e300, 0.0, -1.0, 0.01, 3601.0])
def test_a_poll_interval_outside_a_sensible_range_is_refused(tmp_path: Path, value: float) -> None:
    with pytest.raises(ConfigError) as caught:
        check_poll_interval(value)
    assert caught.value.field == "policy_poll" and "0.05 to 3600" in str(caught.value)
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    with pytest.raises(ConfigError) as caught:
        _open(publisher, tmp_path, interval_s=value)
    assert caught.value.field == "policy_poll"


def test_poll_intervals_at_the_ends_of_the_range_are_accepted() -> None:
    assert check_poll_interval(0.05) == 0.05
    assert check_poll_interval(3600) == 3600


class _InstallFailsOnce(ReloadablePolicy):
    """A policy holder whose first installation fails, as an unforeseen fault would."""

    def __init__(self, engine: PolicyEngine) -> None:
        super().__init__(engine)
        self.failures = 0

    def install(self, engine: PolicyEngine) -> PolicyEngine:
        if self.failures == 0:
            self.failures += 1
            raise RuntimeError("an unforeseen fault")
        return super().install(engine)


def test_the_watcher_thread_survives_an_unexpected_error_and_tries_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    trusted = load_trusted_keys([publisher.public])
    bundle = verify_bundle(
        publisher.path.read_bytes(), trusted_keys=trusted, scope="central", origin="x"
    )
    policy = _InstallFailsOnce(bundle.engine)
    watcher = PolicyWatcher(
        path=publisher.path,
        policy=policy,
        bundle=bundle,
        trusted_keys=trusted,
        scope="central",
        interval_s=0.05,
    )
    with caplog.at_level(logging.ERROR, logger="osmanthus.core.bundle_watch"):
        watcher.start()
        try:
            publisher.publish(DENY_BANKS, 2)
            deadline = time.monotonic() + EVENT_TIMEOUT_S
            while watcher.bundle.serial != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watcher.bundle.serial == 2
            assert policy.failures == 1
            assert not policy.current().decide(register_request()).allowed
        finally:
            watcher.close()
    faults = [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert [str(fault) for fault in faults] == ["an unforeseen fault"]


_SIGHUP_WHILE_WAKING = """
import faulthandler, os, signal, sys, time
from pathlib import Path
from osmanthus.core.bundle_watch import install_sighup_handler, load_policy

bundle, trust, state, following = map(Path, sys.argv[1:])
faulthandler.dump_traceback_later(100, exit=True)
_, watcher = load_policy(policy_file=Path("x"), bundle=bundle, trust=[trust], scope="central",
                         state_dir=state, interval_s=600)
install_sighup_handler()
watcher.start()
time.sleep(0.2)
os.replace(following, bundle)
# the state of the main thread inside Event.set() (wake() or close()) when the signal comes
with watcher._wake._cond:
    os.kill(os.getpid(), signal.SIGHUP)
    print("handler returned", flush=True)
deadline = time.monotonic() + 90
while watcher.bundle.serial != 2 and time.monotonic() < deadline:
    time.sleep(0.01)
print("serial", watcher.bundle.serial, flush=True)
watcher.close()
"""


def test_sighup_while_the_main_thread_wakes_a_watcher_neither_deadlocks_nor_is_lost(
    tmp_path: Path,
) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    following = tmp_path / "following.bundle"
    following.write_bytes(sign(publisher.key, policy=DENY_BANKS, serial=2))
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", _SIGHUP_WHILE_WAKING, str(publisher.path), str(publisher.public),
         str(tmp_path), str(following)],
        cwd=root, capture_output=True, text=True, timeout=EVENT_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["handler returned", "serial 2"], done.stderr


def test_the_watcher_thread_picks_up_a_new_bundle_within_a_few_polls(tmp_path: Path) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    policy, watcher = _open(publisher, tmp_path, interval_s=0.05)
    watcher.start()
    try:
        publisher.publish(DENY_BANKS, 2)
        # polls come every 0.05 s; the bound is only there to stop a watcher that never polls
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while watcher.bundle.serial != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.bundle.serial == 2
        assert not policy.current().decide(register_request()).allowed
    finally:
        watcher.close()


def test_waking_the_watchers_checks_at_once_without_waiting_for_the_poll(tmp_path: Path) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 1)
    _, watcher = _open(publisher, tmp_path, interval_s=600.0)
    watcher.start()
    try:
        assert watcher in active_watchers()
        publisher.publish(DENY_BANKS, 2)
        assert wake_watchers() >= 1
        # far below the 600 s poll: the pick-up can only be the wake-up's
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while watcher.bundle.serial != 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert watcher.bundle.serial == 2
    finally:
        watcher.close()


def test_a_server_refuses_to_start_on_a_bad_bundle_or_an_older_one_than_it_used(
    tmp_path: Path,
) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 2)
    _, watcher = _open(publisher, tmp_path)
    watcher.start()
    watcher.close()
    # restarted on an older bundle (say, restored from an old backup): refused
    publisher.publish(DENY_BANKS, 1)
    with pytest.raises(ConfigError) as caught:
        _open(publisher, tmp_path)
    assert "rollback" in str(caught.value) and STATE_FILE_NAME in str(caught.value)
    publisher.publish(DENY_BANKS, 3, scope="node:tax")
    with pytest.raises(ConfigError, match="for scope 'node:tax'"):
        _open(publisher, tmp_path)
    # the state directory records the coordinator's bundle: a node must not share it
    with pytest.raises(ConfigError) as caught:
        _open(publisher, tmp_path, scope=node_scope("tax"))
    assert caught.value.field == "state_dir" and "its own --state-dir" in str(caught.value)
    tax_state = tmp_path / "tax"
    tax_state.mkdir()
    assert _open(publisher, tax_state, scope=node_scope("tax"))[1].bundle.serial == 3
    with pytest.raises(ConfigError) as caught:
        load_policy(
            policy_file=Path("x"),
            bundle=publisher.path,
            trust=[],
            scope="central",
            state_dir=tmp_path,
        )
    assert caught.value.field == "policy_trust"


def test_a_restarted_node_refuses_an_old_bundle_of_the_other_scope(tmp_path: Path) -> None:
    publisher = _Publisher(tmp_path, scope="node")
    archived = sign(publisher.key, scope="node", serial=7, now=NOW - timedelta(days=300))
    publisher.publish(DENY_BANKS, 3, scope="node:tax")
    _, watcher = _open(publisher, tmp_path, scope=node_scope("tax"))
    watcher.start()
    watcher.close()
    state = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert (state["scope"], state["serial"]) == ("node:tax", 3)
    assert datetime.fromisoformat(state["created_at"]) == NOW
    # the old bundle for every node is put in place while the node is down
    write_atomically(publisher.path, archived)
    with pytest.raises(ConfigError) as caught:
        _open(publisher, tmp_path, scope=node_scope("tax"))
    assert caught.value.field == "policy_bundle"
    assert "before the bundle in force" in str(caught.value)
    assert STATE_FILE_NAME in str(caught.value)


def test_a_state_file_from_before_publication_times_or_damaged(tmp_path: Path) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 2)
    state = tmp_path / STATE_FILE_NAME
    bundle_hash = "a" * 64
    # written by the previous version: scope, serial and hash, no time; serials still compared
    state.write_text(json.dumps({"serial": 5, "hash": bundle_hash, "scope": "central"}))
    with pytest.raises(ConfigError, match="rollback"):
        _open(publisher, tmp_path)
    state.write_text(json.dumps({"serial": 1, "hash": bundle_hash, "scope": "central"}))
    assert _open(publisher, tmp_path)[1].bundle.serial == 2
    for damaged in (
        {"serial": 1, "hash": bundle_hash},
        {"serial": 1, "hash": bundle_hash, "scope": "everyone"},
        {"serial": 1, "hash": bundle_hash, "scope": "central", "created_at": "yesterday"},
        {"serial": 1, "hash": bundle_hash, "scope": "central", "created_at": "2026-01-01T00:00"},
        [1, 2],
    ):
        state.write_text(json.dumps(damaged))
        with pytest.raises(ConfigError) as caught:
            _open(publisher, tmp_path)
        assert caught.value.field == "state_dir" and "damaged" in str(caught.value), damaged


def test_without_a_bundle_the_policy_file_is_used_and_nothing_is_watched(tmp_path: Path) -> None:
    path = tmp_path / "central.cedar"
    path.write_text(ALLOW_REGISTER)
    policy, watcher = load_policy(
        policy_file=path, bundle=None, trust=[], scope="central", state_dir=tmp_path
    )
    assert watcher is None
    assert policy.current().hash == hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()


# --- servers --------------------------------------------------------------------------------


def test_node_serve_refuses_to_start_on_a_tampered_or_a_format_1_bundle(
    tmp_path: Path, platform_certs: Path, issuer_keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher = _Publisher(tmp_path, scope="node")
    publisher.publish(ALLOW_REGISTER, 1)
    publisher.path.write_bytes(tampered(publisher.path.read_bytes(), policy=DENY_BANKS))
    serve = [
        "node", "serve", "--department", "psb", "--db", str(tmp_path / "none.duckdb"),
        "--certs-dir", str(platform_certs), "--issuer-public-key", str(issuer_keys.public),
        "--state-dir", str(tmp_path / "state"), "--policy-bundle", str(publisher.path),
    ]  # fmt: skip
    assert main([*serve, "--policy-trust", str(publisher.public)]) == 3
    assert "bad signature" in capsys.readouterr().err
    assert main([*serve, "--policy-trust", str(publisher.public), "--policy-poll", "nan"]) == 3
    assert "error: policy_poll:" in capsys.readouterr().err
    assert main([*serve, "--policy", str(tmp_path / "x.cedar")]) == 3
    assert "not both" in capsys.readouterr().err
    publisher.path.write_bytes(legacy_bundle(publisher.key, scope="node", serial=4))
    assert main([*serve, "--policy-trust", str(publisher.public)]) == 3
    err = capsys.readouterr().err
    assert "error: format: " in err and "'osmanthus-policy-bundle/1'" in err
    assert f"--scope node --serial 5 --key <publisher key> --out {publisher.path}" in err


# --- bundles of format 1 ------------------------------------------------------------------------


def test_a_watcher_keeps_the_policy_in_force_when_a_format_1_bundle_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publisher = _Publisher(tmp_path)
    publisher.publish(ALLOW_REGISTER, 3)
    policy, watcher = _open(publisher, tmp_path)
    watcher.start()
    try:
        in_force = policy.current()
        # an old tool, or a backup, puts a bundle of the old format in place, serial above
        write_atomically(publisher.path, legacy_bundle(publisher.key, policy=DENY_BANKS, serial=9))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="osmanthus.core.bundle_watch"):
            outcome = watcher.check_now()
            assert watcher.check_now() is outcome
        assert outcome.status is ReloadStatus.REJECTED
        assert policy.current() is in_force and outcome.serial == 3
        assert "'osmanthus-policy-bundle/1'" in outcome.reason
        assert f"--serial 10 --key <publisher key> --out {publisher.path}" in outcome.reason
        assert len(caplog.records) == 1
        logged = caplog.records[0].getMessage()
        assert "serial 3" in logged and "stays in force" in logged
        assert "osmanthus policy publish --policy" in logged
        # signed again as the message says: put in force
        publisher.publish(DENY_BANKS, 10)
        assert watcher.check_now().status is ReloadStatus.INSTALLED
        assert not policy.current().decide(register_request()).allowed
    finally:
        watcher.close()


def test_a_server_refuses_to_start_on_a_format_1_bundle_saying_how_to_sign_it_again(
    tmp_path: Path,
) -> None:
    publisher = _Publisher(tmp_path)
    write_atomically(publisher.path, legacy_bundle(publisher.key, scope="central", serial=7))
    with pytest.raises(ConfigError) as caught:
        _open(publisher, tmp_path)
    assert caught.value.field == "format"
    assert str(caught.value).endswith(
        "osmanthus policy publish --policy <the policy file> --scope central --serial 8 "
        f"--key <publisher key> --out {publisher.path}"
    )
    assert not (tmp_path / STATE_FILE_NAME).exists()
