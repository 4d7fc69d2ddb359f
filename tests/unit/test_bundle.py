"""Signed policy bundles: signing, every refusal of verification, the watcher, and the CLI."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.cli import main
from osmanthus.core.bundle import (
    FORMAT,
    MAX_BUNDLE_BYTES,
    MAX_CLOCK_AHEAD,
    MAX_SERIAL,
    STATE_FILE_NAME,
    BundleRecord,
    PolicyWatcher,
    ReloadStatus,
    VerifiedBundle,
    active_watchers,
    check_poll_interval,
    check_succession,
    generate_publisher_key,
    key_id_of,
    load_policy,
    load_private_key,
    load_trusted_keys,
    node_scope,
    read_bundle_file,
    read_claims,
    read_serial,
    scope_accepts,
    sign_bundle,
    verify_bundle,
    wake_watchers,
    write_atomically,
)
from osmanthus.core.errors import ConfigError
from osmanthus.core.policy import PolicyEngine, PolicyRequest, ReloadablePolicy
from tests.waiting import EVENT_TIMEOUT_S

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
#: a policy that lets every requester register a key, and nothing else
ALLOW_REGISTER = """\
@id("allow-register")
permit (principal, action == Action::"RegisterKey", resource == Registry::"keys");
"""
#: the same, with every bank refused
DENY_BANKS = (
    ALLOW_REGISTER
    + """
@id("no-banks")
forbid (principal, action == Action::"RegisterKey", resource)
when { principal.role == "bank" };
"""
)
#: names an attribute the entity model does not have: fails validation at its rule, line 3
INVALID = """\
// every requester may register a key
// (a mistake: requesters have no colour)
@id("allow-register")
permit (principal, action == Action::"RegisterKey", resource)
when { principal.colour == "red" };
"""


def _register(role: str = "bank") -> PolicyRequest:
    return PolicyRequest(
        principal_type="Requester",
        principal_id="bank-1",
        principal_attrs={"role": role},
        action="RegisterKey",
        resource_type="Registry",
        resource_id="keys",
        context={},
    )


def _sign(
    key: Ed25519PrivateKey,
    *,
    policy: str = ALLOW_REGISTER,
    scope: str = "central",
    serial: int = 1,
    publisher: str = "privacy office",
    now: datetime = NOW,
) -> bytes:
    return sign_bundle(
        policy_source=policy,
        scope=scope,
        serial=serial,
        publisher=publisher,
        private_key=key,
        now=now,
    )


def _canonical(payload: dict[str, Any]) -> bytes:
    # written from the format's description, independently of the module under test
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _resign(fields: dict[str, Any], key: Ed25519PrivateKey) -> bytes:
    """A bundle of exactly `fields`, correctly signed: what a buggy or hostile publisher makes."""
    payload = {k: v for k, v in fields.items() if k != "signature"}
    signature = base64.b64encode(key.sign(_canonical(payload))).decode()
    return json.dumps({**payload, "signature": signature}).encode()


def _fields(data: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(data)
    return value


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {key_id_of(key.public_key()): key.public_key()}


def _verify(
    data: bytes, trusted: dict[str, Ed25519PublicKey], *, scope: str | None = "central"
) -> VerifiedBundle:
    return verify_bundle(data, trusted_keys=trusted, scope=scope, origin="central.bundle")


def _refusal(data: bytes, trusted: dict[str, Ed25519PublicKey], **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        _verify(data, trusted, **kw)
    return caught.value


# --- signing and verifying --------------------------------------------------------------------


def test_a_signed_bundle_verifies_and_its_hash_is_what_audits_record(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    data = _sign(key, serial=7, publisher="Wang Fang, privacy office")
    bundle = _verify(data, trusted)
    fields = _fields(data)
    assert fields["format"] == FORMAT
    assert set(fields) == {
        "format", "scope", "serial", "created_at", "publisher", "policy", "policy_sha256",
        "key_id", "signature",
    }  # fmt: skip
    payload = {k: v for k, v in fields.items() if k != "signature"}
    assert bundle.hash == hashlib.sha256(_canonical(payload)).hexdigest()
    assert (bundle.scope, bundle.serial, bundle.publisher) == (
        "central",
        7,
        "Wang Fang, privacy office",
    )
    assert bundle.created_at == NOW
    assert bundle.key_id == key_id_of(key.public_key()) == fields["key_id"]
    assert len(bundle.key_id) == 16
    assert bundle.policy_source == ALLOW_REGISTER
    assert fields["policy_sha256"] == hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()
    # the engine names the bundle, not the bare source, in every decision it records
    assert bundle.engine.hash == bundle.hash
    assert bundle.engine.hash != PolicyEngine(source=ALLOW_REGISTER, origin="x").hash
    assert bundle.engine.decide(_register()).allowed


def test_a_policy_engine_without_a_version_is_named_by_its_source_hash() -> None:
    engine = PolicyEngine(source=ALLOW_REGISTER, origin="x")
    assert engine.hash == hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()
    assert PolicyEngine(source=ALLOW_REGISTER, origin="x", version="v" * 64).hash == "v" * 64


def test_a_changed_policy_text_breaks_the_signature(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key, policy=DENY_BANKS))
    fields["policy"] = ALLOW_REGISTER
    fields["policy_sha256"] = hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()
    error = _refusal(json.dumps(fields).encode(), trusted)
    assert error.field == "signature"
    assert "central.bundle" in str(error) and "bad signature" in str(error)


def test_a_changed_serial_breaks_the_signature(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key, serial=3))
    fields["serial"] = 30
    assert _refusal(json.dumps(fields).encode(), trusted).field == "signature"


def test_a_signature_that_is_not_base64_is_a_bad_signature(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key))
    fields["signature"] = "not base64!"
    assert _refusal(json.dumps(fields).encode(), trusted).field == "signature"


def test_a_bundle_from_an_untrusted_key_is_refused_naming_the_key(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    error = _refusal(_sign(stranger), trusted)
    assert error.field == "key_id"
    assert key_id_of(stranger.public_key()) in str(error)
    assert "not a trusted publisher key" in str(error)
    assert key_id_of(key.public_key()) in str(error)


def test_a_bundle_claiming_a_trusted_key_id_but_signed_by_another_key_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    fields = _fields(_sign(stranger))
    fields["key_id"] = key_id_of(key.public_key())
    assert _refusal(_resign(fields, stranger), trusted).field == "signature"


def test_scopes_central_node_and_one_department() -> None:
    assert scope_accepts("central", "central")
    assert not scope_accepts("central", "node")
    assert not scope_accepts("central", "node:tax")
    assert scope_accepts(node_scope("tax"), "node")
    assert scope_accepts(node_scope("tax"), "node:tax")
    assert not scope_accepts(node_scope("tax"), "node:customs")
    assert not scope_accepts(node_scope("tax"), "central")
    assert scope_accepts("node", "node:customs")


@pytest.mark.parametrize(
    ("bundle_scope", "reader", "accepted"),
    [
        ("central", "central", True),
        ("central", "node:tax", False),
        ("node", "central", False),
        ("node", "node:tax", True),
        ("node:tax", "node:tax", True),
        ("node:customs", "node:tax", False),
        ("node:tax", "central", False),
    ],
)
def test_a_server_reads_only_bundles_for_its_scope(
    key: Ed25519PrivateKey,
    trusted: dict[str, Ed25519PublicKey],
    bundle_scope: str,
    reader: str,
    accepted: bool,
) -> None:
    data = _sign(key, scope=bundle_scope)
    if accepted:
        assert _verify(data, trusted, scope=reader).scope == bundle_scope
    else:
        error = _refusal(data, trusted, scope=reader)
        assert error.field == "scope"
        assert f"for scope {bundle_scope!r}" in str(error)


def test_a_policy_hash_that_does_not_match_the_policy_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key))
    fields["policy_sha256"] = "0" * 64
    error = _refusal(_resign(fields, key), trusted)
    assert error.field == "policy_sha256"
    assert "inconsistent" in str(error)


def test_publishing_refuses_a_policy_that_fails_validation_with_its_line(
    key: Ed25519PrivateKey,
) -> None:
    with pytest.raises(ConfigError) as caught:
        sign_bundle(
            policy_source=INVALID,
            scope="central",
            serial=1,
            publisher="office",
            private_key=key,
            now=NOW,
            origin="proposed.cedar",
        )
    assert "proposed.cedar" in str(caught.value) and "line 3" in str(caught.value)


def test_a_signed_bundle_with_an_invalid_policy_is_refused_with_its_line(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key))
    fields["policy"] = INVALID
    fields["policy_sha256"] = hashlib.sha256(INVALID.encode()).hexdigest()
    message = str(_refusal(_resign(fields, key), trusted))
    assert "central.bundle (policy)" in message
    assert "line 3" in message and "colour" in message


@pytest.mark.parametrize(
    ("data", "field", "words"),
    [
        (b"\xff\xfe", "bundle", "not UTF-8"),
        (b"{not json", "bundle", "not JSON"),
        (b"[1, 2]", "bundle", "JSON object"),
        (b'{"format": "a", "format": "b"}', "bundle", "appears twice"),
        (json.dumps({"format": "osmanthus-policy-bundle/2"}).encode(), "format", "not a policy"),
        (json.dumps({"format": FORMAT}).encode(), "created_at", "missing"),
    ],
)
def test_what_is_not_a_bundle_is_refused_naming_the_problem(
    trusted: dict[str, Ed25519PublicKey], data: bytes, field: str, words: str
) -> None:
    error = _refusal(data, trusted)
    assert error.field == field
    assert words in str(error)


def test_unknown_and_mistyped_fields_are_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key))
    error = _refusal(json.dumps({**fields, "comment": "hi"}).encode(), trusted)
    assert error.field == "comment" and "unknown" in str(error)
    error = _refusal(json.dumps({**fields, "publisher": 5}).encode(), trusted)
    assert error.field == "publisher" and "expected text" in str(error)
    for serial in (True, 0, -1, "2"):
        error = _refusal(_resign({**fields, "serial": serial}, key), trusted)
        assert error.field == "serial", serial


def test_signing_checks_its_arguments(key: Ed25519PrivateKey) -> None:
    for kw, field in (
        ({"scope": "everyone"}, "scope"),
        ({"scope": "node:"}, "scope"),
        ({"serial": 0}, "serial"),
        ({"publisher": " "}, "publisher"),
        ({"publisher": "two\nlines"}, "publisher"),
    ):
        with pytest.raises(ConfigError) as caught:
            _sign(key, **kw)
        assert caught.value.field == field
    with pytest.raises(ConfigError, match="time zone"):
        sign_bundle(
            policy_source=ALLOW_REGISTER,
            scope="central",
            serial=1,
            publisher="office",
            private_key=key,
            now=datetime(2026, 1, 1),
        )


def test_a_rollback_and_a_second_bundle_under_one_serial_are_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    in_force = _verify(_sign(key, serial=5), trusted)
    older = _verify(_sign(key, serial=4), trusted)
    twin = _verify(_sign(key, serial=5, policy=DENY_BANKS), trusted)
    newer = _verify(_sign(key, serial=6, policy=DENY_BANKS), trusted)
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
        data = _sign(key, scope=scope, serial=serial, now=NOW + timedelta(days=days))
        return _verify(data, trusted, scope=tax)

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
    in_force = BundleRecord.of(_verify(_sign(key, serial=1), trusted))
    ahead = _verify(_sign(key, serial=2, now=NOW + MAX_CLOCK_AHEAD + timedelta(minutes=1)), trusted)
    with pytest.raises(ConfigError) as caught:
        check_succession(in_force, ahead, now=NOW)
    assert caught.value.field == "created_at" and "after this server's clock" in str(caught.value)
    # within the allowance, or checked later by a server whose clock has caught up: accepted
    assert check_succession(in_force, ahead, now=NOW + timedelta(minutes=2)) is True
    near = _verify(_sign(key, serial=2, now=NOW + MAX_CLOCK_AHEAD), trusted)
    assert check_succession(in_force, near, now=NOW) is True


def test_serials_stop_below_two_to_the_53(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    assert _verify(_sign(key, serial=MAX_SERIAL), trusted).serial == 2**53 - 1
    with pytest.raises(ConfigError) as caught:
        _sign(key, serial=MAX_SERIAL + 1)
    assert caught.value.field == "serial" and "largest serial" in str(caught.value)
    fields = _fields(_sign(key, serial=5))
    error = _refusal(_resign({**fields, "serial": 2**53}, key), trusted)
    assert error.field == "serial" and str(MAX_SERIAL) in str(error)


def test_read_serial_reads_the_claimed_serial_without_trusting_it(key: Ed25519PrivateKey) -> None:
    assert read_serial(_sign(key, serial=41), origin="x") == 41
    assert read_claims(_sign(key, serial=41, scope="node:tax"), origin="x") == ("node:tax", 41)
    with pytest.raises(ConfigError):
        read_serial(b"{}", origin="x")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"serial": NaN}', "NaN is not a JSON value"),
        (b'{"serial": ' + b"9" * 5000 + b"}", "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),
    ],
)
def test_hostile_json_is_refused_as_not_a_bundle(
    trusted: dict[str, Ed25519PublicKey], data: bytes, words: str
) -> None:
    error = _refusal(data, trusted)
    assert error.field == "bundle"
    assert words in str(error)


def test_what_an_unverified_bundle_holds_is_shown_short_in_messages(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    fields = _fields(_sign(key))
    huge = "k" * 1_000_000
    nested: Any = "deep"
    for _ in range(800):
        nested = [nested]
    for bad, field in (
        ({**fields, "format": huge}, "format"),
        ({**fields, "key_id": huge}, "key_id"),
        ({**fields, huge: 1}, "k" * 40),
        ({**fields, "publisher": nested}, "publisher"),
        ({**fields, "serial": nested}, "serial"),
        ({**fields, "serial": 10**4000}, "signature"),
    ):
        error = _refusal(json.dumps(bad).encode(), trusted)
        assert error.field == field
        assert len(str(error)) < 600


# --- files ------------------------------------------------------------------------------------


def test_an_atomic_write_shows_readers_the_old_file_or_the_new_one_never_a_mix(
    tmp_path: Path,
) -> None:
    path = tmp_path / "central.bundle"
    old, new = b"a" * 200_000, b"b" * 300_000
    write_atomically(path, old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(60):
            write_atomically(path, new if i % 2 == 0 else old)
    finally:
        stop.set()
        reader.join()
    assert seen <= {old, new}
    assert path.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["central.bundle"]  # no temp left
    with pytest.raises(ConfigError, match="already exists"):
        write_atomically(path, new, overwrite=False)
    assert path.read_bytes() == old


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path,
) -> None:
    private, public = generate_publisher_key(out_dir=tmp_path / "keys", name="office")
    assert (private.name, public.name) == ("office.key", "office.pub")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    key = load_private_key(private)
    assert list(load_trusted_keys([public])) == [key_id_of(key.public_key())]
    before = private.read_bytes()
    with pytest.raises(ConfigError, match="refusing to replace"):
        generate_publisher_key(out_dir=tmp_path / "keys", name="office")
    assert private.read_bytes() == before
    with pytest.raises(ConfigError) as caught:
        generate_publisher_key(out_dir=tmp_path, name="../escape")
    assert caught.value.field == "name"


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    private, _ = generate_publisher_key(out_dir=tmp_path, name="office")
    os.chmod(private, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_private_key(private)


def test_trusted_keys_must_be_given_and_be_ed25519_public_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_trusted_keys([])
    assert caught.value.field == "policy_trust"
    private, _ = generate_publisher_key(out_dir=tmp_path, name="office")
    with pytest.raises(ConfigError, match="not a PEM public key"):
        load_trusted_keys([private])
    with pytest.raises(ConfigError, match="cannot read"):
        load_trusted_keys([tmp_path / "missing.pub"])


def _race_to_create(
    path: Path, data: bytes, start: threading.Barrier, won: list[bytes], refused: list[str]
) -> None:
    start.wait()
    try:
        write_atomically(path, data, mode=0o600, overwrite=False)
        won.append(data)
    except ConfigError as exc:
        refused.append(str(exc))


def test_a_write_that_must_not_replace_lets_exactly_one_of_many_racing_writers_win(
    tmp_path: Path,
) -> None:
    writers = 8
    for round_ in range(10):
        path = tmp_path / f"office-{round_}.key"
        start = threading.Barrier(writers)
        won: list[bytes] = []
        refused: list[str] = []
        threads = [
            threading.Thread(
                target=_race_to_create,
                args=(path, f"writer {i}".encode(), start, won, refused),
            )
            for i in range(writers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(won) == 1, (round_, won)
        assert len(refused) == writers - 1
        assert all("already exists" in reason for reason in refused)
        assert path.read_bytes() == won[0]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert all(not p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.timeout(20)
def test_a_bundle_is_read_from_a_regular_file_only_and_never_past_the_size_limit(
    tmp_path: Path,
) -> None:
    plain = tmp_path / "plain.bundle"
    plain.write_bytes(b"{}")
    assert read_bundle_file(plain) == b"{}"

    fifo = tmp_path / "fifo.bundle"
    os.mkfifo(fifo)  # no writer: a blocking open or read would hang here
    sparse = tmp_path / "sparse.bundle"
    with sparse.open("wb") as handle:
        handle.truncate(1 << 30)
    limit = tmp_path / "limit.bundle"
    limit.write_bytes(b" " * MAX_BUNDLE_BYTES)
    assert len(read_bundle_file(limit)) == MAX_BUNDLE_BYTES
    with limit.open("ab") as handle:
        handle.write(b" ")
    cases = {
        fifo: "a FIFO",
        Path("/dev/zero"): "a device",
        tmp_path: "a directory",
        sparse: f"{1 << 30} bytes is too large",
        limit: f"{MAX_BUNDLE_BYTES + 1} bytes is too large",
        tmp_path / "missing.bundle": "cannot read the bundle: No such file",
    }
    link = tmp_path / "zero.bundle"
    link.symlink_to("/dev/zero")
    cases[link] = "a device"
    for path, words in cases.items():
        with pytest.raises(ConfigError) as caught:
            read_bundle_file(path, field="bundle")
        assert caught.value.field == "bundle"
        assert str(path) in str(caught.value) and words in str(caught.value), path


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
        data = _sign(self.key, policy=policy, serial=serial, scope=scope or self.scope)
        write_atomically(self.path, data)
        return str(_fields(data)["key_id"])


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
        assert first.decide(_register()).allowed
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
        assert not second.decide(_register()).allowed
        assert json.loads((tmp_path / STATE_FILE_NAME).read_text())["serial"] == 2

        # a bad signature: rejected, logged once however often the file is looked at
        fields = _fields(_sign(publisher.key, policy=ALLOW_REGISTER, serial=3))
        fields["serial"] = 4
        publisher.path.write_text(json.dumps(fields))
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="osmanthus.core.bundle"):
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
        bad = _fields(_sign(publisher.key, serial=3))
        bad.update(policy=INVALID, policy_sha256=hashlib.sha256(INVALID.encode()).hexdigest())
        publisher.path.write_bytes(_resign(bad, publisher.key))
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
        assert policy.current().decide(_register()).allowed
    finally:
        watcher.close()
    assert watcher not in active_watchers()


def test_the_watcher_refuses_a_replayed_bundle_of_the_other_scope_and_keeps_the_series(
    tmp_path: Path,
) -> None:
    publisher = _Publisher(tmp_path, scope="node:tax")
    # the bundle for every node reached serial 7 a year ago; tax's own series is at 3
    old_for_every_node = _sign(publisher.key, scope="node", serial=7, now=NOW - timedelta(days=300))
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
        (version / "central.bundle").write_bytes(_sign(publisher.key, serial=serial, policy=policy))
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
    assert not policy.current().decide(_register()).allowed


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
    with caplog.at_level(logging.ERROR, logger="osmanthus.core.bundle"):
        watcher.start()
        try:
            publisher.publish(DENY_BANKS, 2)
            deadline = time.monotonic() + EVENT_TIMEOUT_S
            while watcher.bundle.serial != 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert watcher.bundle.serial == 2
            assert policy.failures == 1
            assert not policy.current().decide(_register()).allowed
        finally:
            watcher.close()
    faults = [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1]]
    assert [str(fault) for fault in faults] == ["an unforeseen fault"]


_SIGHUP_WHILE_WAKING = """
import faulthandler, os, signal, sys, time
from pathlib import Path
from osmanthus.core.bundle import install_sighup_handler, load_policy

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
    following.write_bytes(_sign(publisher.key, policy=DENY_BANKS, serial=2))
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
        assert not policy.current().decide(_register()).allowed
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
    archived = _sign(publisher.key, scope="node", serial=7, now=NOW - timedelta(days=300))
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


# --- the command line ---------------------------------------------------------------------------


def test_cli_keygen_publish_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys"
    assert main(["policy", "keygen", "--out-dir", str(keys), "--name", "office"]) == 0
    assert "office.key" in capsys.readouterr().out
    assert main(["policy", "keygen", "--out-dir", str(keys), "--name", "office"]) == 3
    assert "already exists" in capsys.readouterr().err

    policy = tmp_path / "central.cedar"
    policy.write_text(ALLOW_REGISTER)
    out = tmp_path / "central.bundle"
    publish = ["policy", "publish", "--policy", str(policy), "--scope", "central",
               "--key", str(keys / "office.key"), "--out", str(out)]  # fmt: skip
    assert main([*publish, "--publisher", "Wang Fang"]) == 0
    printed = capsys.readouterr().out
    first = _verify(out.read_bytes(), load_trusted_keys([keys / "office.pub"]))
    assert first.serial == 1 and first.publisher == "Wang Fang"
    assert first.hash in printed and "serial     1" in printed

    # the next serial follows the bundle already at --out; the publisher defaults to the key
    policy.write_text(DENY_BANKS)
    assert main(publish) == 0
    second = _verify(out.read_bytes(), load_trusted_keys([keys / "office.pub"]))
    assert (second.serial, second.publisher) == (2, "office")
    capsys.readouterr()

    assert main([*publish, "--serial", "2"]) == 3
    assert "not above serial 2" in capsys.readouterr().err
    policy.write_text(INVALID)
    assert main(publish) == 3
    err = capsys.readouterr().err
    assert "central.cedar" in err and "line 3" in err
    assert _verify(out.read_bytes(), load_trusted_keys([keys / "office.pub"])) == second

    verify = ["policy", "verify", str(out), "--trust", str(keys / "office.pub")]
    assert main(verify) == 0
    printed = capsys.readouterr().out
    assert second.hash in printed and "serial     2" in printed and "central" in printed
    assert main([*verify, "--scope", "central"]) == 0
    assert main([*verify, "--scope", "node:tax"]) == 3
    assert "for scope 'central'" in capsys.readouterr().err
    other = tmp_path / "other"
    assert main(["policy", "keygen", "--out-dir", str(other)]) == 0
    assert main(["policy", "verify", str(out), "--trust", str(other / "policy-publisher.pub")]) == 3
    assert "not a trusted publisher key" in capsys.readouterr().err
    assert main(["policy", "publish", "--policy", str(policy), "--scope", "all",
                 "--key", str(keys / "office.key"), "--out", str(out)]) == 3  # fmt: skip
    assert "is not a scope" in capsys.readouterr().err


def test_cli_publish_asks_for_a_serial_when_the_scope_changes_and_caps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["policy", "keygen", "--out-dir", str(keys), "--name", "office"]) == 0
    policy = tmp_path / "node.cedar"
    policy.write_text(ALLOW_REGISTER)
    out = tmp_path / "tax.bundle"
    publish = ["policy", "publish", "--policy", str(policy), "--key", str(keys / "office.key"),
               "--out", str(out)]  # fmt: skip
    assert main([*publish, "--scope", "node", "--serial", "7"]) == 0
    capsys.readouterr()
    assert main([*publish, "--scope", "node:tax"]) == 3
    err = capsys.readouterr().err
    assert "error: serial:" in err and "for scope 'node' (serial 7)" in err
    assert "give --serial" in err
    assert read_claims(out.read_bytes(), origin="x") == ("node", 7)
    assert main([*publish, "--scope", "node:tax", "--serial", "8"]) == 0
    assert read_claims(out.read_bytes(), origin="x") == ("node:tax", 8)
    capsys.readouterr()
    assert main([*publish, "--scope", "node:tax", "--serial", str(2**53)]) == 3
    assert "largest serial" in capsys.readouterr().err


@pytest.mark.timeout(20)
def test_cli_verify_refuses_what_is_not_a_bundle_file_without_blocking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys"
    assert main(["policy", "keygen", "--out-dir", str(keys), "--name", "office"]) == 0
    fifo = tmp_path / "central.bundle"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["policy", "verify", str(fifo), "--trust", str(keys / "office.pub")]) == 3
    assert "a FIFO" in capsys.readouterr().err
    deep = tmp_path / "deep.bundle"
    deep.write_bytes(b"[" * 100_000 + b"]" * 100_000)
    assert main(["policy", "verify", str(deep), "--trust", str(keys / "office.pub")]) == 3
    assert "error: bundle:" in capsys.readouterr().err


def test_node_serve_refuses_to_start_on_a_tampered_bundle(
    tmp_path: Path, platform_certs: Path, issuer_keys: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher = _Publisher(tmp_path, scope="node")
    publisher.publish(ALLOW_REGISTER, 1)
    fields = _fields(publisher.path.read_bytes())
    fields["policy"] = DENY_BANKS
    publisher.path.write_text(json.dumps(fields))
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
