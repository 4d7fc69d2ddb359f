"""Signed policy bundles: publishing, verifying and hot-reloading Ed25519-signed Cedar policies.

A bundle is one JSON file carrying a Cedar policy, the scope it is for ("central" for the
coordinator, "node" for every department node, "node:<department>" for one), a serial number that
only ever increases, who published it and when, and an Ed25519 signature over the canonical
encoding (JSON, sorted keys, no whitespace) of every other field. The bundle hash, the SHA-256 of
that signed encoding, is the policy version every audit entry records.

A server given a bundle verifies it at start (and refuses to start if it fails), then polls the
file. A new bundle is put in force only if it is signed by a trusted publisher key, is for this
server's scope, has a higher serial than the bundle in force, was not published before it, and
its policy passes validation; anything else is logged and the policy in force stays. A node reads
two scopes ("node" and its own "node:<department>") as one sequence: serials and publication
times must keep increasing across both, so an old bundle of one scope cannot be replayed over a
newer bundle of the other.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import enum
import hashlib
import json
import logging
import math
import os
import re
import signal
import stat
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core.errors import ConfigError

# re-exported: callers wrote bundles with it before it moved to osmanthus.core.files
from osmanthus.core.files import write_atomically as write_atomically
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.policy import PolicyEngine, ReloadablePolicy
from osmanthus.core.strictjson import unique_keys

_log = logging.getLogger(__name__)

FORMAT: Final = "osmanthus-policy-bundle/1"
CENTRAL_SCOPE: Final = "central"
#: a bundle for every department node; "node:<department id>" is for one department only
NODE_SCOPE: Final = "node"
#: seconds between two looks at a bundle file
DEFAULT_POLL_S: Final = 2.0
#: the poll interval allowed: often enough to be cheap, rarely enough that a change is noticed
MIN_POLL_S: Final = 0.05
MAX_POLL_S: Final = 3600.0
#: a policy is a few kilobytes; anything this large is not a bundle
MAX_BUNDLE_BYTES: Final = 4 << 20
MAX_PUBLISHER_CHARS: Final = 200
#: the largest serial: JSON readers that hold numbers as doubles (JavaScript, jq) lose
#: precision above it, and two tools must never disagree on which serial a bundle has
MAX_SERIAL: Final = 2**53 - 1
#: how far ahead of a server's clock a bundle's publication time may be; a bundle dated far in the
#: future would, once in force, make every correctly dated bundle after it look older
MAX_CLOCK_AHEAD: Final = timedelta(hours=1)
#: the scope, serial, hash and publication time of the last bundle a server put in force, kept
#: in its state directory so that a restart does not accept an older bundle (a rollback) either
STATE_FILE_NAME: Final = "policy-bundle.state"

_PAYLOAD_FIELDS: Final = (
    "created_at",
    "format",
    "key_id",
    "policy",
    "policy_sha256",
    "publisher",
    "scope",
    "serial",
)
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def node_scope(department: str) -> str:
    """The scope a department's node reads: bundles for every node, or for it alone."""
    return f"{NODE_SCOPE}:{department}"


def check_scope(value: str, *, field: str = "scope") -> str:
    """`value` if it names a scope ("central", "node" or "node:<department id>"), else an error."""
    if value in (CENTRAL_SCOPE, NODE_SCOPE):
        return value
    prefix, sep, department = value.partition(":")
    if prefix == NODE_SCOPE and sep and PEER_NAME_PATTERN.fullmatch(department):
        return value
    raise ConfigError(
        f"{_shown(value)} is not a scope: write 'central' (the coordinator), 'node' (every "
        "department node) or 'node:<department id>' (one department, e.g. node:tax)",
        field=field,
    )


def scope_accepts(reader: str, bundle_scope: str) -> bool:
    """Whether a server reading policies for `reader` may use a bundle made for `bundle_scope`.

    The coordinator ("central") reads central bundles only; the node of department d
    ("node:d") reads bundles for every node and bundles for d. A reader "node" (a check by hand)
    accepts any node bundle.
    """
    if reader == CENTRAL_SCOPE:
        return bundle_scope == CENTRAL_SCOPE
    if reader == NODE_SCOPE:
        return bundle_scope == NODE_SCOPE or bundle_scope.startswith(NODE_SCOPE + ":")
    return bundle_scope in (NODE_SCOPE, reader)


def key_id_of(key: Ed25519PublicKey) -> str:
    """A publisher key's short fingerprint: the first 16 hex digits of SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def read_bundle_file(path: Path, *, field: str = "policy_bundle") -> bytes:
    """The bytes of the bundle file at `path`, never more than MAX_BUNDLE_BYTES read.

    ConfigError (naming `path`) if it cannot be opened, is not a regular file (a FIFO or a
    device would block or never end) or is larger than a bundle can be. Symbolic links are
    followed: Kubernetes mounts a ConfigMap as a chain of links that it swaps on update, and the
    file the chain ends at is checked like any other.
    """
    try:
        # O_NONBLOCK: opening a FIFO with no writer returns at once instead of hanging the
        # server; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the bundle: {exc.strerror}", field=field) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(
                f"{path}: cannot read the bundle: it is {_file_kind(info.st_mode)}, not a regular "
                "file ('osmanthus policy publish' writes one)",
                field=field,
            )
        if info.st_size > MAX_BUNDLE_BYTES:
            raise ConfigError(_too_large(str(path), info.st_size), field=field)
        chunks: list[bytes] = []
        remaining = MAX_BUNDLE_BYTES + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the bundle: {exc.strerror}", field=field) from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > MAX_BUNDLE_BYTES:
        # the file grew while it was read
        raise ConfigError(_too_large(str(path), len(data)), field=field)
    return data


def _file_kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a plain file"


def _too_large(origin: str, size: int) -> str:
    return f"{origin}: {size} bytes is too large for a policy bundle (at most {MAX_BUNDLE_BYTES})"


def generate_publisher_key(*, out_dir: Path, name: str) -> tuple[Path, Path]:
    """Write a new Ed25519 publisher key pair: out_dir/NAME.key (PEM, mode 0600) and NAME.pub.

    Existing files are never replaced: a lost publisher key is replaced by a new pair that
    every server is told to trust, not by overwriting the old one.
    """
    if not _KEY_NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a key name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(
                f"{path} already exists; refusing to replace a publisher key (choose another "
                "--name, or move the old pair away first)",
                field="out_dir",
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    write_atomically(private_path, private_pem, mode=0o600, overwrite=False)
    write_atomically(public_path, public_pem, mode=0o644, overwrite=False)
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """A publisher's private key file (PEM), refused when other users can read it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise ConfigError(
            f"cannot read the publisher key {path}: {exc.strerror}", field="key"
        ) from exc
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        data = handle.read()
    if mode & 0o077:
        raise ConfigError(
            f"{path}: mode {mode:04o} lets other users read the publisher key; it must be 0600 "
            f"(check who has read it, then run: chmod 600 {path})",
            field="key",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{path} is not an unencrypted PEM private key ('osmanthus policy keygen' makes one)",
            field="key",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 key", field="key")
    return key


def load_trusted_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """The publisher public keys a server trusts, by key id; at least one is required."""
    if not paths:
        raise ConfigError(
            "no trusted publisher key: a policy bundle can only be verified against the public "
            "key of a publisher you trust (give --policy-trust NAME.pub)",
            field="policy_trust",
        )
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the publisher key {path}: {exc.strerror}", field="policy_trust"
            ) from exc
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is not a PEM public key ('osmanthus policy keygen' makes NAME.pub)",
                field="policy_trust",
            ) from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ConfigError(f"{path} is not an Ed25519 public key", field="policy_trust")
        keys[key_id_of(key)] = key
    return keys


# --- signing and verifying ----------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, scope, consistency and policy have all been checked."""

    scope: str
    serial: int
    #: SHA-256 of the signed payload: the policy version recorded in audit entries
    hash: str
    policy_source: str
    publisher: str
    created_at: datetime
    key_id: str
    #: the validated policy, whose `hash` is this bundle's hash (the fields above identify it)
    engine: PolicyEngine = dataclasses.field(compare=False, repr=False)


def _canonical(payload: Mapping[str, Any]) -> bytes:
    """The bytes that are signed and hashed: JSON with sorted keys and no whitespace."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.encode("utf-8")


def sign_bundle(
    *,
    policy_source: str,
    scope: str,
    serial: int,
    publisher: str,
    private_key: Ed25519PrivateKey,
    now: datetime,
    origin: str = "policy",
) -> bytes:
    """The bytes of a signed bundle for `policy_source`; a policy that fails validation is
    refused (ConfigError naming `origin` and the line), since no server would accept it."""
    check_scope(scope)
    _check_serial(serial, field="serial")
    _check_publisher(publisher, field="publisher")
    if now.utcoffset() is None:
        raise ConfigError("the signing time must carry a time zone", field="now")
    PolicyEngine(source=policy_source, origin=origin)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "scope": scope,
        "serial": serial,
        "created_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "publisher": publisher,
        "policy": policy_source,
        "policy_sha256": hashlib.sha256(policy_source.encode("utf-8")).hexdigest(),
        "key_id": key_id_of(private_key.public_key()),
    }
    signature = private_key.sign(_canonical(payload))
    bundle = {**payload, "signature": base64.b64encode(signature).decode("ascii")}
    # indented for people who open the file; the signature covers the canonical form only
    return (json.dumps(bundle, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


def read_serial(data: bytes, *, origin: str) -> int:
    """The serial a bundle claims, unverified: for numbering the next one, never for trust."""
    return read_claims(data, origin=origin)[1]


def read_claims(data: bytes, *, origin: str) -> tuple[str, int]:
    """The scope and serial a bundle claims, unverified: for numbering the next one, never for
    trust."""
    fields = _parse(data, origin=origin)
    serial = _check_serial(fields.get("serial"), field="serial", origin=origin)
    scope = fields.get("scope")
    if not isinstance(scope, str):
        raise ConfigError(f"{origin}: the bundle names no scope", field="scope")
    try:
        return check_scope(scope), serial
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}", field="scope") from exc


def verify_bundle(
    data: bytes,
    *,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    scope: str | None,
    origin: str,
) -> VerifiedBundle:
    """Check a bundle's bytes and return its content; ConfigError names the field and problem.

    `scope` is the reader's: "central", "node:<department>" (see scope_accepts) or None to
    accept any scope (a check by hand). `origin` (the file) starts every message.
    """
    bundle = _parse(data, origin=origin)
    fmt = bundle.get("format")
    if fmt != FORMAT:
        raise ConfigError(
            f"{origin}: format is {_shown(fmt)}, not {FORMAT!r}: this is not a policy bundle "
            "this version of Osmanthus reads",
            field="format",
        )
    unknown = sorted(set(bundle) - {*_PAYLOAD_FIELDS, "signature"})
    if unknown:
        names = ", ".join(_shown(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ConfigError(f"{origin}: unknown fields {names}{more}", field=unknown[0][:40])
    for name in (*_PAYLOAD_FIELDS, "signature"):
        if name not in bundle:
            raise ConfigError(f"{origin}: the field is missing", field=name)
        value = bundle[name]
        if name == "serial":
            # bool is an int subclass; a serial of true is a forgery, not 1
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(
                    f"{origin}: expected a whole number, found {_shown(value)}", field=name
                )
        elif not isinstance(value, str):
            raise ConfigError(f"{origin}: expected text, found {_shown(value)}", field=name)

    key_id = bundle["key_id"]
    key = trusted_keys.get(key_id)
    if key is None:
        trusted = ", ".join(sorted(trusted_keys)) or "none"
        raise ConfigError(
            f"{origin}: signed by key {_shown(key_id)}, which is not a trusted publisher key "
            f"(trusted: {trusted}); add the publisher's .pub file to --policy-trust if it "
            "should be trusted",
            field="key_id",
        )
    payload = {name: bundle[name] for name in _PAYLOAD_FIELDS}
    try:
        signed = _canonical(payload)
    except UnicodeEncodeError as exc:
        raise ConfigError(
            f"{origin}: the bundle holds text that is not Unicode", field="policy"
        ) from exc
    try:
        signature = base64.b64decode(bundle["signature"], validate=True)
        key.verify(signature, signed)
    except (binascii.Error, InvalidSignature) as exc:
        raise ConfigError(
            f"{origin}: bad signature: the bundle was changed after key {key_id} signed it, or "
            "was not signed by that key; publish it again with 'osmanthus policy publish'",
            field="signature",
        ) from exc

    # signed by a trusted publisher from here on; what follows guards against its mistakes
    serial = _check_serial(bundle["serial"], field="serial", origin=origin)
    try:
        bundle_scope = check_scope(bundle["scope"])
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}", field="scope") from exc
    if scope is not None and not scope_accepts(scope, bundle_scope):
        raise ConfigError(
            f"{origin}: the bundle is for scope {bundle_scope!r}, and this server reads "
            f"{_scope_words(scope)}",
            field="scope",
        )
    source: str = bundle["policy"]
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if bundle["policy_sha256"] != digest:
        raise ConfigError(
            f"{origin}: policy_sha256 is {bundle['policy_sha256']!r} but the policy text hashes "
            f"to {digest!r}: the publisher signed an inconsistent bundle",
            field="policy_sha256",
        )
    publisher = _check_publisher(bundle["publisher"], field="publisher", origin=origin)
    try:
        created_at = datetime.fromisoformat(bundle["created_at"])
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: {_shown(bundle['created_at'])} is not a time", field="created_at"
        ) from exc
    if created_at.utcoffset() is None:
        raise ConfigError(f"{origin}: the time carries no time zone", field="created_at")
    bundle_hash = hashlib.sha256(signed).hexdigest()
    engine = PolicyEngine(source=source, origin=f"{origin} (policy)", version=bundle_hash)
    return VerifiedBundle(
        scope=bundle_scope,
        serial=serial,
        hash=bundle_hash,
        policy_source=source,
        publisher=publisher,
        created_at=created_at,
        key_id=key_id,
        engine=engine,
    )


@dataclass(frozen=True, kw_only=True)
class BundleRecord:
    """What a server remembers of the bundle in force, in memory and in its state file."""

    scope: str
    serial: int
    hash: str
    #: when it was signed; None in a state file written before publication times were kept
    created_at: datetime | None

    @classmethod
    def of(cls, bundle: VerifiedBundle) -> BundleRecord:
        return cls(
            scope=bundle.scope,
            serial=bundle.serial,
            hash=bundle.hash,
            created_at=bundle.created_at,
        )

    def describe(self) -> str:
        """e.g. "'node:tax' serial 3 (published 2026-11-26T09:30:00+00:00, hash 1f2e…)"."""
        published = f"published {self.created_at.isoformat()}, " if self.created_at else ""
        return f"{self.scope!r} serial {self.serial} ({published}hash {self.hash[:16]}…)"


def check_succession(
    in_force: BundleRecord, new: VerifiedBundle, *, now: datetime | None = None
) -> bool:
    """Whether `new` may replace the bundle in force: True to install it, False when it is that
    same bundle; ConfigError when it is not newer.

    Newer means a higher serial and a publication time no earlier than the bundle in force,
    whatever the two scopes: a node reads "node" and "node:<department>" bundles as one
    sequence, so an old bundle of one scope with a high serial must not displace a newer bundle
    of the other. With `now` (a server's clock), a bundle dated more than MAX_CLOCK_AHEAD in the
    future is refused too: once in force it would make every correctly dated bundle look older.
    """
    if new.hash == in_force.hash:
        return False
    shown = in_force.describe()
    if new.scope != in_force.scope:
        sequence = (
            f"; this server reads {in_force.scope!r} and {new.scope!r} bundles as one sequence, "
            f"so a bundle for either scope needs a serial above {in_force.serial} and a later "
            "publication time"
        )
    else:
        sequence = ""
    if new.serial < in_force.serial:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) is older than the bundle in force, "
            f"{shown}: a rollback is refused; to restore an old policy, publish it again with a "
            f"serial above {in_force.serial}{sequence}",
            field="serial",
        )
    if new.serial == in_force.serial:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) is the serial of the bundle in force, "
            f"{shown}, but the content differs (hash {new.hash[:16]}…): every new bundle needs "
            f"a higher serial{sequence}",
            field="serial",
        )
    if in_force.created_at is not None and new.created_at < in_force.created_at:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) was published "
            f"{new.created_at.isoformat()}, before the bundle in force, {shown}: an old bundle "
            "is refused even with a higher serial (it may be a superseded bundle replayed); if "
            "it is new, the clock of the machine that published it is behind: set it right and "
            f"publish again with a serial above {new.serial}",
            field="created_at",
        )
    if now is not None and new.created_at > now + MAX_CLOCK_AHEAD:
        raise ConfigError(
            f"serial {new.serial} (scope {new.scope!r}) was published "
            f"{new.created_at.isoformat()}, more than {_hours(MAX_CLOCK_AHEAD)} after this "
            f"server's clock ({now.astimezone(UTC).isoformat(timespec='seconds')}): the clock of "
            "the publishing machine or of this server is wrong; a bundle from the future would "
            "make every later, correctly dated bundle look older. Set the clock right and "
            f"publish again with a serial above {new.serial}",
            field="created_at",
        )
    return True


def _hours(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return "1 hour" if hours == 1 else f"{hours:g} hours"


def _scope_words(scope: str) -> str:
    if scope == CENTRAL_SCOPE:
        return "'central' bundles only (it is the coordinator)"
    if scope == NODE_SCOPE:
        return "node bundles only"
    return f"'node' and {scope!r} bundles only"


def _parse(data: bytes, *, origin: str) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise ConfigError(_too_large(origin, len(data)), field="bundle")
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=unique_keys("field", _shown),
            parse_constant=_no_constant,
        )
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{origin}: not UTF-8 text (bad byte at offset {exc.start}); not a policy bundle",
            field="bundle",
        ) from exc
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: not JSON ({str(exc)[:200]}); not a policy bundle", field="bundle"
        ) from exc
    except RecursionError as exc:
        raise ConfigError(
            f"{origin}: JSON nested too deeply; not a policy bundle (a bundle is one flat object)",
            field="bundle",
        ) from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{origin}: a policy bundle is a JSON object", field="bundle")
    return value


def _no_constant(name: str) -> Any:
    # Python reads NaN and Infinity, which are not JSON: other tools would refuse the bundle
    raise ValueError(f"{name} is not a JSON value")


def _check_serial(value: object, *, field: str, origin: str | None = None) -> int:
    where = f"{origin}: " if origin else ""
    # bool is an int subclass; a serial of true is a forgery, not 1
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}{_shown(value)} is not a positive whole number", field=field)
    if value > MAX_SERIAL:
        raise ConfigError(
            f"{where}serial {_shown(value)} is above the largest serial, {MAX_SERIAL} (2**53 - 1, "
            "beyond which JSON readers that keep numbers as doubles round it)",
            field=field,
        )
    return value


def _shown(value: object, limit: int = 60) -> str:
    """`value` as Python writes it, cut to about `limit` characters: what a bundle holds is
    untrusted until verified, and may be megabytes long or nested a thousand levels deep."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    try:
        text = repr(value)
    except (RecursionError, ValueError):  # ValueError: an int too long to write out
        text = f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_publisher(value: str, *, field: str, origin: str | None = None) -> str:
    where = f"{origin}: " if origin else ""
    if not value.strip() or len(value) > MAX_PUBLISHER_CHARS or _CONTROL.search(value):
        raise ConfigError(
            f"{where}{value[:40]!r} is not a publisher name (1-{MAX_PUBLISHER_CHARS} characters "
            "on one line)",
            field=field,
        )
    return value


# --- servers: start-up and hot reload -------------------------------------------------------------


class ReloadStatus(enum.StrEnum):
    """What a look at the bundle file did: put a new bundle in force, nothing, or refused it."""

    INSTALLED = "installed"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


@dataclass(frozen=True)
class ReloadOutcome:
    """What the last look at a bundle file found; `serial`/`hash` are the bundle in force."""

    status: ReloadStatus
    path: Path
    serial: int
    hash: str
    reason: str
    at: datetime


def check_poll_interval(value: float) -> float:
    """`value` if it is a usable bundle poll interval in seconds, else ConfigError."""
    if not math.isfinite(value) or not MIN_POLL_S <= value <= MAX_POLL_S:
        raise ConfigError(
            f"the bundle poll interval is {value!r} seconds; give a number of seconds from "
            f"{MIN_POLL_S:g} to {MAX_POLL_S:g} (SIGHUP makes a server look at once whatever it is)",
            field="policy_poll",
        )
    return value


def _read_record(path: Path) -> BundleRecord | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="state_dir") from exc
    damaged = (
        f"{path} is damaged: it holds the bundle last in force, which guards against rollbacks; "
        "restore it from backup, or delete it once you are sure the bundle file is the newest "
        "one published"
    )
    try:
        value = json.loads(text)
        serial, bundle_hash, scope = value["serial"], value["hash"], value["scope"]
        created_text = value.get("created_at")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise ConfigError(damaged, field="state_dir") from exc
    if isinstance(serial, bool) or not isinstance(serial, int):
        raise ConfigError(f"{damaged} (serial {_shown(serial)})", field="state_dir")
    if not isinstance(bundle_hash, str) or not _HEX64.fullmatch(bundle_hash):
        raise ConfigError(f"{damaged} (hash {_shown(bundle_hash)})", field="state_dir")
    try:
        check_scope(scope if isinstance(scope, str) else "")
    except ConfigError as exc:
        raise ConfigError(f"{damaged} (scope {_shown(scope)})", field="state_dir") from exc
    created_at: datetime | None = None
    if created_text is not None:
        try:
            created_at = datetime.fromisoformat(created_text)
        except (TypeError, ValueError) as exc:
            raise ConfigError(
                f"{damaged} (created_at {_shown(created_text)})", field="state_dir"
            ) from exc
        if created_at.utcoffset() is None:
            raise ConfigError(f"{damaged} (created_at has no time zone)", field="state_dir")
    return BundleRecord(scope=scope, serial=serial, hash=bundle_hash, created_at=created_at)


def _write_record(path: Path, bundle: VerifiedBundle) -> None:
    data = json.dumps(
        {
            "scope": bundle.scope,
            "serial": bundle.serial,
            "hash": bundle.hash,
            "created_at": bundle.created_at.isoformat(),
        }
    )
    write_atomically(path, (data + "\n").encode(), mode=0o644, field="state_dir")


# every started watcher, for SIGHUP
_ACTIVE: set[PolicyWatcher] = set()
_ACTIVE_LOCK = threading.Lock()


def wake_watchers() -> int:
    """Ask every running watcher of this process to look at its bundle now; returns how many
    were woken. Not for a signal handler (it takes locks): see install_sighup_handler."""
    with _ACTIVE_LOCK:
        watchers = tuple(_ACTIVE)
    for watcher in watchers:
        watcher.wake()
    return len(watchers)


def active_watchers() -> tuple[PolicyWatcher, ...]:
    """The watchers running in this process (for status and tests)."""
    with _ACTIVE_LOCK:
        return tuple(_ACTIVE)


# SIGHUP: the handler writes one byte to a pipe and a relay thread wakes the watchers. A Python
# signal handler runs in the main thread between two bytecodes, possibly while that thread holds
# an Event's lock (in wake() or close()); setting the Event from the handler would then wait
# forever for a lock its own thread holds. Writing to a pipe takes no lock.
_RELAY_LOCK = threading.Lock()
_relay_write_fd: int | None = None


def install_sighup_handler() -> Callable[[int, FrameType | None], Any] | int | None:
    """Make SIGHUP wake every watcher of this process; returns the handler it replaces.

    Call it from the main thread, before the server starts: until then SIGHUP's default action
    ends the process. A SIGHUP that comes before the watchers start is not lost: a watcher
    looks at its file as soon as it starts.
    """
    global _relay_write_fd
    with _RELAY_LOCK:
        if _relay_write_fd is None:
            read_fd, write_fd = os.pipe()
            # a full pipe already holds a pending wake-up: the handler must never block on it
            os.set_blocking(write_fd, False)
            threading.Thread(
                target=_relay_sighup, args=(read_fd,), name="policy-sighup", daemon=True
            ).start()
            _relay_write_fd = write_fd
    return signal.signal(signal.SIGHUP, _on_sighup)


def _on_sighup(_signum: int, _frame: FrameType | None) -> None:
    fd = _relay_write_fd
    if fd is None:
        return
    # a full pipe: the relay has not read the earlier bytes yet, and will wake the watchers
    with contextlib.suppress(BlockingIOError):
        os.write(fd, b"\x01")


def _relay_sighup(read_fd: int) -> None:
    while True:
        try:
            if not os.read(read_fd, 512):
                return
            woken = wake_watchers()
            _log.info("SIGHUP: %d policy bundle watcher(s) looking at their file now", woken)
        except Exception:  # the relay must outlive any one failure, or SIGHUP stops working
            _log.exception("SIGHUP: could not wake the policy bundle watchers")


class PolicyWatcher:
    """Polls a bundle file and puts each newer valid bundle in force; a bad one changes nothing.

    A rejected file is logged once, with the reason, and not checked again until its content
    changes. `last_outcome` tells what the last look found.
    """

    def __init__(
        self,
        *,
        path: Path,
        policy: ReloadablePolicy,
        bundle: VerifiedBundle,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        scope: str,
        interval_s: float = DEFAULT_POLL_S,
        state_file: Path | None = None,
        loaded_digest: str = "",
    ) -> None:
        """`loaded_digest` is the SHA-256 of the file content `bundle` was verified from, so
        that the first poll does not verify it again."""
        self.path = path
        self._policy = policy
        self._bundle = bundle
        self._trusted = dict(trusted_keys)
        self._scope = scope
        self._interval_s = check_poll_interval(interval_s)
        self._state_file = state_file
        self._check_lock = threading.Lock()
        # the content of the file last looked at (its SHA-256), or the read error it gave
        self._seen: str = loaded_digest
        self._last = ReloadOutcome(
            status=ReloadStatus.INSTALLED,
            path=path,
            serial=bundle.serial,
            hash=bundle.hash,
            reason=f"serial {bundle.serial} in force since start-up",
            at=datetime.now(UTC),
        )
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    @property
    def bundle(self) -> VerifiedBundle:
        """The bundle in force."""
        with self._check_lock:
            return self._bundle

    @property
    def last_outcome(self) -> ReloadOutcome:
        with self._check_lock:
            return self._last

    def start(self) -> PolicyWatcher:
        """Record the bundle in force in the state file and start polling in a daemon thread;
        the first look at the file is at once."""
        if self._thread is not None:
            return self
        self._record(self._bundle)
        self._thread = threading.Thread(
            target=self._run, name=f"policy-watcher-{self.path.name}", daemon=True
        )
        self._thread.start()
        with _ACTIVE_LOCK:
            _ACTIVE.add(self)
        return self

    def wake(self) -> None:
        """Look at the file now rather than at the next poll (from any thread, not from a
        signal handler: install_sighup_handler does that safely)."""
        self._wake.set()

    def close(self) -> None:
        """Stop polling; the policy in force stays in force."""
        with _ACTIVE_LOCK:
            _ACTIVE.discard(self)
        self._stopping = True
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def check_now(self) -> ReloadOutcome:
        """Look at the bundle file once and act on it; returns (and remembers) the outcome."""
        with self._check_lock:
            try:
                data = read_bundle_file(self.path)
            except ConfigError as exc:
                seen = f"unreadable: {exc.message}"
                if seen != self._seen:
                    self._seen = seen
                    self._reject(exc.message)
                return self._last
            seen = hashlib.sha256(data).hexdigest()
            if seen == self._seen:
                return self._last
            self._seen = seen
            try:
                new = verify_bundle(
                    data, trusted_keys=self._trusted, scope=self._scope, origin=str(self.path)
                )
                install = check_succession(
                    BundleRecord.of(self._bundle), new, now=datetime.now(UTC)
                )
            except ConfigError as exc:
                self._reject(str(exc))
                return self._last
            except Exception as exc:  # a fault while checking must never install the bundle
                _log.exception("policy bundle %s: unexpected error while checking", self.path)
                self._reject(f"{self.path}: unexpected error while checking: {exc!r}")
                return self._last
            if not install:
                self._last = self._outcome(
                    ReloadStatus.UNCHANGED, f"serial {new.serial} is the bundle already in force"
                )
                return self._last
            previous = self._bundle
            try:
                self._policy.install(new.engine)
            except BaseException:
                # not in force: look at this same content again at the next poll
                self._seen = ""
                raise
            self._bundle = new
            _log.info(
                "policy bundle %s: serial %d (hash %s, published by %r with key %s at %s) now "
                "in force; it replaces serial %d (hash %s)",
                self.path, new.serial, new.hash, new.publisher, new.key_id,
                new.created_at.isoformat(), previous.serial, previous.hash,
            )  # fmt: skip
            self._record(new)
            self._last = self._outcome(ReloadStatus.INSTALLED, f"serial {new.serial} installed")
            return self._last

    def _record(self, bundle: VerifiedBundle) -> None:
        if self._state_file is None:
            return
        try:
            _write_record(self._state_file, bundle)
        except ConfigError as exc:
            # the verified policy is in force either way; only the rollback check at the next
            # start is weaker, so the server keeps serving and says so loudly
            _log.error("cannot record the policy bundle in force: %s", exc)

    def _reject(self, reason: str) -> None:
        _log.error(
            "policy bundle %s rejected; serial %d (hash %s) stays in force: %s",
            self.path, self._bundle.serial, self._bundle.hash, reason,
        )  # fmt: skip
        self._last = self._outcome(ReloadStatus.REJECTED, reason)

    def _outcome(self, status: ReloadStatus, reason: str) -> ReloadOutcome:
        return ReloadOutcome(
            status=status,
            path=self.path,
            serial=self._bundle.serial,
            hash=self._bundle.hash,
            reason=reason,
            at=datetime.now(UTC),
        )

    def _run(self) -> None:
        # look first, then wait: the file may have changed since the server read it at start,
        # and a SIGHUP sent before this thread existed woke nobody
        while not self._stopping:
            try:
                self.check_now()
                self._wake.wait(self._interval_s)
                self._wake.clear()
            except Exception:  # the watcher must outlive anything: log it and keep polling
                _log.exception("policy bundle %s: unexpected error while checking", self.path)
                # never spin on an error that repeats at once
                self._wake.wait(self._interval_s)
                self._wake.clear()


def load_policy(
    *,
    policy_file: Path,
    bundle: Path | None,
    trust: Sequence[Path],
    scope: str,
    state_dir: Path,
    interval_s: float = DEFAULT_POLL_S,
) -> tuple[ReloadablePolicy, PolicyWatcher | None]:
    """The policy a server starts with: `policy_file`, or the verified `bundle` with a watcher
    (not yet started: start it once the server is up, close it when it stops).

    ConfigError, and no start, when the bundle fails any check, is not newer than the last
    bundle this server put in force (recorded in state_dir; see check_succession) or the poll
    interval is unusable.
    """
    if bundle is None:
        return ReloadablePolicy.from_file(policy_file), None
    check_poll_interval(interval_s)
    trusted = load_trusted_keys(trust)
    data = read_bundle_file(bundle, field="policy_bundle")
    verified = verify_bundle(data, trusted_keys=trusted, scope=scope, origin=str(bundle))
    state_file = state_dir / STATE_FILE_NAME
    record = _read_record(state_file)
    if record is not None:
        if not scope_accepts(scope, record.scope):
            raise ConfigError(
                f"{state_file} records a bundle for scope {record.scope!r} in force, and this "
                f"server reads {_scope_words(scope)}: the state directory belongs to another "
                "server; give each server its own --state-dir",
                field="state_dir",
            )
        try:
            check_succession(record, verified, now=datetime.now(UTC))
        except ConfigError as exc:
            raise ConfigError(
                f"{bundle}: {exc.message} (the last bundle this server used is recorded in "
                f"{state_file})",
                field="policy_bundle",
            ) from exc
    policy = ReloadablePolicy(verified.engine)
    watcher = PolicyWatcher(
        path=bundle,
        policy=policy,
        bundle=verified,
        trusted_keys=trusted,
        scope=scope,
        interval_s=interval_s,
        state_file=state_file,
        loaded_digest=hashlib.sha256(data).hexdigest(),
    )
    return policy, watcher
