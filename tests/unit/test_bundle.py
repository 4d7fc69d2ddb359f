"""Signed policy bundles: the format, signing, every refusal of verification, keys and the CLI.

Following a bundle file (the watcher, the state file, servers) is tests/unit/test_bundle_watch.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.cli import main
from osmanthus.core import signing
from osmanthus.core.bundle import (
    FORMAT,
    LEGACY_FORMAT,
    MAX_BUNDLE_BYTES,
    MAX_SERIAL,
    VerifiedBundle,
    bundle_hash,
    generate_publisher_key,
    load_private_key,
    load_trusted_keys,
    node_scope,
    read_bundle_file,
    read_claims,
    read_serial,
    scope_accepts,
    sign_bundle,
    verify_bundle,
)
from osmanthus.core.errors import ConfigError
from osmanthus.core.files import write_atomically
from osmanthus.core.policy import PolicyEngine, PolicyRequest
from tests.forge import forged_signature, loose_json

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


def register_request(role: str = "bank") -> PolicyRequest:
    return PolicyRequest(
        principal_type="Requester",
        principal_id="bank-1",
        principal_attrs={"role": role},
        action="RegisterKey",
        resource_type="Registry",
        resource_id="keys",
        context={},
    )


def sign(
    key: Ed25519PrivateKey,
    *,
    policy: str = ALLOW_REGISTER,
    scope: str = "central",
    serial: int = 1,
    publisher: str = "privacy office",
    now: datetime = NOW,
) -> bytes:
    """A bundle as 'osmanthus policy publish' makes it."""
    return sign_bundle(
        policy_source=policy,
        scope=scope,
        serial=serial,
        publisher=publisher,
        private_key=key,
        now=now,
    )


def payload_of(data: bytes) -> dict[str, Any]:
    """The payload of a sealed bundle, unverified."""
    payload: dict[str, Any] = json.loads(data)["payload"]
    return payload


def resealed(
    payload: dict[str, Any],
    key: Ed25519PrivateKey,
    *,
    payload_type: str = signing.POLICY_BUNDLE_TYPE,
) -> bytes:
    """A file of exactly `payload`, correctly signed: what a buggy or hostile publisher makes."""
    return signing.seal(payload, payload_type=payload_type, private_key=key)


def tampered(data: bytes, **changes: Any) -> bytes:
    """The sealed bundle `data` with its payload changed after it was signed."""
    document = json.loads(data)
    document["payload"].update(changes)
    return json.dumps(document).encode()


def legacy_bundle(
    key: Ed25519PrivateKey, *, policy: str = ALLOW_REGISTER, scope: str = "central", serial: int = 7
) -> bytes:
    """A bundle of format 1, written from that format's description: one flat object, signed
    with a raw Ed25519 signature over the compact sorted JSON of every other field."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fields = {
        "format": LEGACY_FORMAT,
        "scope": scope,
        "serial": serial,
        "created_at": "2026-01-05T08:00:00Z",
        "publisher": "privacy office",
        "policy": policy,
        "policy_sha256": hashlib.sha256(policy.encode()).hexdigest(),
        "key_id": hashlib.sha256(raw).hexdigest()[:16],
    }
    signed = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    signature = base64.b64encode(key.sign(signed.encode())).decode()
    return json.dumps({**fields, "signature": signature}, sort_keys=True, indent=2).encode()


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {signing.key_id(key.public_key()): key.public_key()}


def verified(
    data: bytes, trusted: dict[str, Ed25519PublicKey], *, scope: str | None = "central"
) -> VerifiedBundle:
    return verify_bundle(data, trusted_keys=trusted, scope=scope, origin="central.bundle")


def refusal(data: bytes, trusted: dict[str, Ed25519PublicKey], **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        verified(data, trusted, **kw)
    return caught.value


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the format -------------------------------------------------------------------------------


def test_a_bundle_is_a_sealed_jws_over_the_canonical_payload(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    data = sign(key, serial=7, publisher="Wang Fang, privacy office")
    document = json.loads(data)
    assert set(document) == {"payload", "signature"}
    payload = document["payload"]
    assert set(payload) == {
        "format", "scope", "serial", "created_at", "publisher", "policy", "policy_sha256",
    }  # fmt: skip
    assert payload["format"] == FORMAT == "osmanthus-policy-bundle/2"
    assert payload["created_at"] == "2026-11-26T09:30:00Z"
    assert payload["policy_sha256"] == hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()
    # RFC 7515 / 7797, checked from the standards: the protected header names the type and the
    # key (its RFC 7638 thumbprint), and the signing input is header "." canonical payload
    header_b64, empty, signature_b64 = document["signature"].split(".")
    assert empty == ""
    assert json.loads(_unb64(header_b64)) == {
        "alg": "EdDSA",
        "b64": False,
        "crit": ["b64"],
        "kid": signing.key_id(key.public_key()),
        "typ": "osmanthus-policy-bundle+jws",
    }
    key.public_key().verify(
        _unb64(signature_b64), header_b64.encode() + b"." + rfc8785.dumps(payload)
    )

    bundle = verified(data, trusted)
    assert (bundle.scope, bundle.serial, bundle.publisher) == (
        "central",
        7,
        "Wang Fang, privacy office",
    )
    assert bundle.created_at == NOW
    assert bundle.key_id == signing.key_id(key.public_key())
    assert len(bundle.key_id) == 43
    assert bundle.policy_source == ALLOW_REGISTER
    assert bundle.engine.decide(register_request()).allowed


def test_the_bundle_hash_is_the_sha256_of_the_canonical_payload(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    data = sign(key, serial=7)
    payload = payload_of(data)
    bundle = verified(data, trusted)
    # RFC 8785 from the library, independently of the module under test
    expected = hashlib.sha256(rfc8785.dumps(payload)).hexdigest()
    assert bundle.hash == bundle_hash(payload) == expected
    # not the hash of the file, whose layout is for people
    assert bundle.hash != hashlib.sha256(data).hexdigest()
    # the engine names the bundle, not the bare source, in every decision it records
    assert bundle.engine.hash == bundle.hash
    assert bundle.engine.hash != PolicyEngine(source=ALLOW_REGISTER, origin="x").hash
    # the same file laid out otherwise is the same bundle; another publisher is another
    relaid = json.dumps(json.loads(data), separators=(",", ":")).encode()
    assert verified(relaid, trusted).hash == bundle.hash
    assert verified(sign(key, serial=7, publisher="office 2"), trusted).hash != bundle.hash


def test_a_policy_engine_without_a_version_is_named_by_its_source_hash() -> None:
    engine = PolicyEngine(source=ALLOW_REGISTER, origin="x")
    assert engine.hash == hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest()
    assert PolicyEngine(source=ALLOW_REGISTER, origin="x", version="v" * 64).hash == "v" * 64


# --- refusals ---------------------------------------------------------------------------------


def test_a_changed_policy_text_breaks_the_signature(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    data = tampered(
        sign(key, policy=DENY_BANKS),
        policy=ALLOW_REGISTER,
        policy_sha256=hashlib.sha256(ALLOW_REGISTER.encode()).hexdigest(),
    )
    error = refusal(data, trusted)
    assert error.field == "signature"
    assert "central.bundle" in str(error) and "bad signature" in str(error)
    assert signing.key_id(key.public_key()) in str(error)


def test_a_changed_serial_breaks_the_signature(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    assert refusal(tampered(sign(key, serial=3), serial=30), trusted).field == "signature"


def test_a_signature_that_is_not_a_detached_jws_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    document = json.loads(sign(key))
    for signature in ("not base64!", 5, "a.b.c", "x" * 5000):
        document["signature"] = signature
        error = refusal(json.dumps(document).encode(), trusted)
        assert error.field == "signature", signature
        assert "central.bundle: the signature" in str(error) and "JWS" in str(error)


def test_a_bundle_from_an_untrusted_key_is_refused_naming_the_key(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    error = refusal(sign(stranger), trusted)
    assert error.field == "key_id"
    assert signing.key_id(stranger.public_key()) in str(error)
    assert "not a trusted publisher key" in str(error)
    assert f"(trusted: {signing.key_id(key.public_key())})" in str(error)
    assert "add the publisher's .pub file to --policy-trust" in str(error)


def test_a_bundle_claiming_a_trusted_key_id_but_signed_by_another_key_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    stranger = Ed25519PrivateKey.generate()
    document = json.loads(sign(stranger))
    trusted_header = json.loads(sign(key))["signature"].split(".")[0]
    document["signature"] = trusted_header + ".." + document["signature"].split(".")[2]
    error = refusal(json.dumps(document).encode(), trusted)
    assert error.field == "signature" and "bad signature" in str(error)


@pytest.mark.parametrize(
    "payload_type", [signing.CREDIT_REPORT_TYPE, signing.SYNC_BATCH_TYPE], ids=["report", "batch"]
)
def test_a_signature_made_for_another_artefact_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey], payload_type: str
) -> None:
    """The publisher key signs reports too, say: its report signature is never a bundle's."""
    data = resealed(payload_of(sign(key)), key, payload_type=payload_type)
    error = refusal(data, trusted)
    assert error.field == "signature"
    assert f"type {payload_type!r}, not 'osmanthus-policy-bundle+jws'" in str(error)
    assert "signs one kind of artefact only" in str(error)


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
    data = sign(key, scope=bundle_scope)
    if accepted:
        assert verified(data, trusted, scope=reader).scope == bundle_scope
    else:
        error = refusal(data, trusted, scope=reader)
        assert error.field == "scope"
        assert f"for scope {bundle_scope!r}" in str(error)


def test_a_policy_hash_that_does_not_match_the_policy_is_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    error = refusal(resealed({**payload_of(sign(key)), "policy_sha256": "0" * 64}, key), trusted)
    assert error.field == "policy_sha256"
    assert "inconsistent" in str(error) and "0" * 64 in str(error)


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
    payload = payload_of(sign(key))
    payload.update(policy=INVALID, policy_sha256=hashlib.sha256(INVALID.encode()).hexdigest())
    message = str(refusal(resealed(payload, key), trusted))
    assert "central.bundle (policy)" in message
    assert "line 3" in message and "colour" in message


@pytest.mark.parametrize(
    ("document", "field", "words"),
    [
        (b"\xff\xfe", "bundle", "not UTF-8"),
        (b"{not json", "bundle", "not JSON"),
        (b"[1, 2]", "bundle", "JSON object"),
        (b'{"format": "a", "format": "b"}', "bundle", "appears twice"),
        (b'{"payload": {}, "payload": {}, "signature": ""}', "bundle", "appears twice"),
        ({"format": "osmanthus-policy-bundle/3"}, "bundle", 'exactly "payload" and "signature"'),
        ({"payload": {}, "signature": "", "comment": "hi"}, "bundle", "has fields"),
        ({"payload": [], "signature": ""}, "payload", "not a JSON object"),
        ({"payload": {}}, "bundle", "not a policy bundle"),
    ],
)
def test_what_is_not_a_bundle_is_refused_naming_the_problem(
    trusted: dict[str, Ed25519PublicKey], document: bytes | dict[str, Any], field: str, words: str
) -> None:
    data = document if isinstance(document, bytes) else json.dumps(document).encode()
    error = refusal(data, trusted)
    assert error.field == field
    assert words in str(error) and str(error).startswith(f"{field}: central.bundle: ")


def test_unknown_missing_and_mistyped_fields_of_a_signed_payload_are_refused(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    payload = payload_of(sign(key))
    error = refusal(resealed({**payload, "comment": "hi"}, key), trusted)
    assert error.field == "comment" and "unknown" in str(error)
    # the key id of format 1 is the signature's kid now: a payload carrying one is refused
    error = refusal(resealed({**payload, "key_id": "0123456789abcdef"}, key), trusted)
    assert error.field == "key_id" and "unknown" in str(error)
    error = refusal(resealed({**payload, "publisher": 5}, key), trusted)
    assert error.field == "publisher" and "expected text" in str(error)
    missing = {k: v for k, v in payload.items() if k != "created_at"}
    error = refusal(resealed(missing, key), trusted)
    assert error.field == "created_at" and "missing" in str(error)
    error = refusal(resealed({**payload, "format": "osmanthus-policy-bundle/3"}, key), trusted)
    assert error.field == "format" and "not 'osmanthus-policy-bundle/2'" in str(error)
    for serial in (True, 0, -1, "2", 1.0):
        error = refusal(resealed({**payload, "serial": serial}, key), trusted)
        assert error.field == "serial", serial
    for created_at in ("yesterday", "2026-11-26T09:30:00"):
        error = refusal(resealed({**payload, "created_at": created_at}, key), trusted)
        assert error.field == "created_at", created_at
    error = refusal(resealed({**payload, "scope": "everyone"}, key), trusted)
    assert error.field == "scope" and "is not a scope" in str(error)


def test_signing_checks_its_arguments(key: Ed25519PrivateKey) -> None:
    for kw, field in (
        ({"scope": "everyone"}, "scope"),
        ({"scope": "node:"}, "scope"),
        ({"serial": 0}, "serial"),
        ({"publisher": " "}, "publisher"),
        ({"publisher": "two\nlines"}, "publisher"),
    ):
        with pytest.raises(ConfigError) as caught:
            sign(key, **kw)
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


def test_serials_stop_below_two_to_the_53(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    assert verified(sign(key, serial=MAX_SERIAL), trusted).serial == 2**53 - 1
    with pytest.raises(ConfigError) as caught:
        sign(key, serial=MAX_SERIAL + 1)
    assert caught.value.field == "serial" and "largest serial" in str(caught.value)
    # RFC 8785 cannot carry it, so no envelope signs it: a forged signature over the loose JSON
    payload = {**payload_of(sign(key, serial=5)), "serial": 2**53}
    signature = forged_signature(
        loose_json(payload), key, payload_type=signing.POLICY_BUNDLE_TYPE
    ).decode()
    error = refusal(json.dumps({"payload": payload, "signature": signature}).encode(), trusted)
    assert error.field == "payload" and "2**53 - 1" in str(error)


# --- bundles of format 1 ----------------------------------------------------------------------


def test_a_format_1_bundle_is_refused_with_the_command_that_signs_it_again(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    # signed by the trusted publisher key, and still refused: the format is what is refused
    error = refusal(legacy_bundle(key, scope="node:tax", serial=7), trusted, scope="node:tax")
    assert error.field == "format"
    message = str(error)
    assert message.startswith("format: central.bundle: format is 'osmanthus-policy-bundle/1'")
    assert "reads 'osmanthus-policy-bundle/2' only" in message
    assert "claims scope 'node:tax' and serial 7 (unverified)" in message
    assert message.endswith(
        "osmanthus policy publish --policy <the policy file> --scope node:tax --serial 8 "
        "--key <publisher key> --out central.bundle"
    )
    # claims that cannot be read leave blanks to fill in, never a wrong number
    fields = json.loads(legacy_bundle(key))
    for damaged in ({**fields, "serial": "seven"}, {**fields, "scope": None}):
        message = str(refusal(json.dumps(damaged).encode(), trusted))
        assert "cannot be read" in message and "--scope <scope> --serial <serial>" in message


def test_the_re_sign_command_quotes_the_file_name() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ConfigError) as caught:
        verify_bundle(
            legacy_bundle(key),
            trusted_keys={signing.key_id(key.public_key()): key.public_key()},
            scope="central",
            origin="/srv/policy bundles/central.bundle",
        )
    assert str(caught.value).endswith("--out '/srv/policy bundles/central.bundle'")


def test_read_claims_reads_the_claimed_scope_and_serial_of_either_format_without_trusting_them(
    key: Ed25519PrivateKey,
) -> None:
    assert read_serial(sign(key, serial=41), origin="x") == 41
    assert read_claims(sign(key, serial=41, scope="node:tax"), origin="x") == ("node:tax", 41)
    # a forgery is read just the same: numbering only, never trust
    assert read_claims(tampered(sign(key), serial=42), origin="x") == ("central", 42)
    assert read_claims(legacy_bundle(key, scope="node", serial=7), origin="x") == ("node", 7)
    for data in (b"{}", b'{"payload": [], "signature": ""}', b'{"serial": 3}'):
        with pytest.raises(ConfigError):
            read_serial(data, origin="x")


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
        (b'{"payload": {"serial": NaN}, "signature": ""}', "NaN is not a JSON value"),
        (b'{"serial": ' + b"9" * 5000 + b"}", "not JSON"),
        (b"\xef\xbb\xbf{}", "not JSON"),
    ],
)
def test_hostile_json_is_refused_as_not_a_bundle(
    trusted: dict[str, Ed25519PublicKey], data: bytes, words: str
) -> None:
    error = refusal(data, trusted)
    assert error.field == "bundle"
    assert words in str(error)


def test_what_an_unverified_bundle_holds_is_shown_short_in_messages(
    key: Ed25519PrivateKey, trusted: dict[str, Ed25519PublicKey]
) -> None:
    data = sign(key)
    document = json.loads(data)
    payload = document["payload"]
    huge = "k" * 1_000_000
    nested: Any = "deep"
    for _ in range(800):
        nested = [nested]
    legacy = json.loads(legacy_bundle(key))
    for bad, field in (
        (json.dumps({**document, huge: 1}).encode(), "bundle"),
        (json.dumps({**document, "signature": huge}).encode(), "signature"),
        (tampered(data, publisher=huge), "signature"),
        (json.dumps({**legacy, "scope": huge}).encode(), "format"),
        (json.dumps({**legacy, "serial": nested}).encode(), "format"),
        (resealed({**payload, "format": huge}, key), "format"),
        (resealed({**payload, huge: 1}, key), "k" * 40),
        (resealed({**payload, "publisher": nested}, key), "publisher"),
        (resealed({**payload, "serial": nested}, key), "serial"),
        (resealed({**payload, "created_at": huge}, key), "created_at"),
        (resealed({**payload, "policy_sha256": huge}, key), "policy_sha256"),
    ):
        error = refusal(bad, trusted)
        assert error.field == field
        assert len(str(error)) < 700, str(error)[:200]


# --- files and keys ----------------------------------------------------------------------------


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
    # the key id every bundle it signs names: the RFC 7638 thumbprint of the envelope
    assert list(load_trusted_keys([public])) == [signing.key_id(key.public_key())]
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


# --- the command line ---------------------------------------------------------------------------


def test_cli_keygen_publishverify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
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
    first = verified(out.read_bytes(), load_trusted_keys([keys / "office.pub"]))
    assert first.serial == 1 and first.publisher == "Wang Fang"
    assert first.hash in printed and "serial     1" in printed

    # the next serial follows the bundle already at --out; the publisher defaults to the key
    policy.write_text(DENY_BANKS)
    assert main(publish) == 0
    second = verified(out.read_bytes(), load_trusted_keys([keys / "office.pub"]))
    assert (second.serial, second.publisher) == (2, "office")
    capsys.readouterr()

    assert main([*publish, "--serial", "2"]) == 3
    assert "not above serial 2" in capsys.readouterr().err
    policy.write_text(INVALID)
    assert main(publish) == 3
    err = capsys.readouterr().err
    assert "central.cedar" in err and "line 3" in err
    assert verified(out.read_bytes(), load_trusted_keys([keys / "office.pub"])) == second

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


def test_cli_verify_refuses_a_format_1_bundle_saying_how_to_sign_it_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = generate_publisher_key(out_dir=tmp_path / "keys", name="office")
    old = tmp_path / "central.bundle"
    old.write_bytes(legacy_bundle(load_private_key(private), serial=7))
    assert main(["policy", "verify", str(old), "--trust", str(public)]) == 3
    err = capsys.readouterr().err
    assert "error: format: " in err and "'osmanthus-policy-bundle/1'" in err
    assert f"--scope central --serial 8 --key <publisher key> --out {old}" in err


def test_cli_publish_over_a_format_1_bundle_numbers_above_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = generate_publisher_key(out_dir=tmp_path / "keys", name="office")
    out = tmp_path / "central.bundle"
    out.write_bytes(legacy_bundle(load_private_key(private), scope="central", serial=7))
    policy = tmp_path / "central.cedar"
    policy.write_text(ALLOW_REGISTER)
    publish = ["policy", "publish", "--policy", str(policy), "--key", str(private),
               "--out", str(out)]  # fmt: skip
    # the numbering of the old file is kept: a rollback below it is refused, as for any bundle
    assert main([*publish, "--scope", "central", "--serial", "7"]) == 3
    assert "not above serial 7" in capsys.readouterr().err
    # another scope: the serial must be chosen, as over any bundle of another scope
    assert main([*publish, "--scope", "node"]) == 3
    assert "for scope 'central' (serial 7)" in capsys.readouterr().err
    assert main([*publish, "--scope", "central"]) == 0
    assert "serial     8" in capsys.readouterr().out
    bundle = verified(out.read_bytes(), load_trusted_keys([public]))
    assert (bundle.scope, bundle.serial) == ("central", 8)
    assert payload_of(out.read_bytes())["format"] == FORMAT
