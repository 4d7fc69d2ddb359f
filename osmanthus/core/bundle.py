"""Signed policy bundles: the file format, publishing a bundle and verifying one.

A bundle carries a Cedar policy, the scope it is for ("central" for the coordinator, "node" for
every department node, "node:<department>" for one), a serial number that only ever increases,
who published it and when. It is a file sealed with the one signing envelope of Osmanthus
(osmanthus.core.signing): {"payload": <those fields>, "signature": <detached JWS>}, where the
signature is a JWS (RFC 7515) of type `signing.POLICY_BUNDLE_TYPE` with an unencoded, detached
payload (RFC 7797) over the payload's RFC 8785 canonical JSON, naming the publisher key by its
RFC 7638 thumbprint (`kid`). The payload is exactly

    {"format": "osmanthus-policy-bundle/2", "scope", "serial", "created_at", "publisher",
     "policy", "policy_sha256"}

The bundle hash, the SHA-256 of that canonical payload (the bytes the signature covers), is the
policy version every audit entry records.

Verifying a bundle is `signing.open_sealed` with the trusted publisher keys, then the checks that
guard against a trusted publisher's mistakes: the fields and their types, the serial's range, the
scope, the policy's own hash, the publisher's name, a publication time with a zone, and a policy
that passes validation. Every refusal is a ConfigError naming the file and the field.

Bundles of format 1 (one flat object with a raw Ed25519 signature and a 16-hex-digit key id, from
before the one envelope) are refused with the command that signs the policy again; the scope
and serial they claim are still read to number the next bundle above them (`read_claims`).

How servers follow a bundle file (the watcher, the state file, SIGHUP) is
osmanthus.core.bundle_watch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shlex
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError
from osmanthus.core.names import PEER_NAME_PATTERN
from osmanthus.core.policy import PolicyEngine

# re-exported: the sync job and its tests load their signing keys from here
from osmanthus.core.signing import load_private_key as load_private_key
from osmanthus.core.strictjson import unique_keys

FORMAT: Final = "osmanthus-policy-bundle/2"
#: the flat, raw-Ed25519 format before the one envelope: refused, with how to sign it again
LEGACY_FORMAT: Final = "osmanthus-policy-bundle/1"
CENTRAL_SCOPE: Final = "central"
#: a bundle for every department node; "node:<department id>" is for one department only
NODE_SCOPE: Final = "node"
#: seconds between two looks at a bundle file (osmanthus.core.bundle_watch)
DEFAULT_POLL_S: Final = 2.0
#: a policy is a few kilobytes; anything this large is not a bundle
MAX_BUNDLE_BYTES: Final = 4 << 20
MAX_PUBLISHER_CHARS: Final = 200
#: the largest serial: JSON readers that hold numbers as doubles (JavaScript, jq) lose
#: precision above it, and two tools must never disagree on which serial a bundle has
MAX_SERIAL: Final = 2**53 - 1

#: the payload's fields, and nothing else
_PAYLOAD_FIELDS: Final = (
    "created_at",
    "format",
    "policy",
    "policy_sha256",
    "publisher",
    "scope",
    "serial",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: what a signing error's field names in a bundle refusal
_REFUSED_PART: Final = {"file": "bundle", "payload": "payload", "signature": "signature"}


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
        f"{short_repr(value)} is not a scope: write 'central' (the coordinator), 'node' (every "
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


def reader_scopes(scope: str) -> str:
    """The bundles a server reading `scope` accepts, in words, for refusals."""
    if scope == CENTRAL_SCOPE:
        return "'central' bundles only (it is the coordinator)"
    if scope == NODE_SCOPE:
        return "node bundles only"
    return f"'node' and {scope!r} bundles only"


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


# --- publisher keys: files of osmanthus.core.signing ----------------------------------------------


def generate_publisher_key(*, out_dir: Path, name: str) -> tuple[Path, Path]:
    """A publisher's key pair: out_dir/NAME.key (PEM, mode 0600) and NAME.pub, never replacing
    existing files (signing.write_key_pair)."""
    files = signing.write_key_pair(out_dir, name, what="publisher key")
    return files.private, files.public


def load_trusted_keys(paths: Sequence[Path]) -> dict[str, Ed25519PublicKey]:
    """The publisher public keys a server trusts, by key id (RFC 7638 thumbprint); at least one
    is required."""
    if not paths:
        raise ConfigError(
            "no trusted publisher key: a policy bundle can only be verified against the public "
            "key of a publisher you trust (give --policy-trust NAME.pub)",
            field="policy_trust",
        )
    return signing.load_public_keys(paths, what="publisher key", field="policy_trust")


# --- signing and verifying ------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle whose signature, scope, consistency and policy have all been checked."""

    scope: str
    serial: int
    #: SHA-256 of the canonical payload: the policy version recorded in audit entries
    hash: str
    policy_source: str
    publisher: str
    created_at: datetime
    #: the RFC 7638 thumbprint of the publisher key that signed it (the JWS `kid`)
    key_id: str
    #: the validated policy, whose `hash` is this bundle's hash (the fields above identify it)
    engine: PolicyEngine = dataclasses.field(compare=False, repr=False)


def bundle_hash(payload: Mapping[str, Any]) -> str:
    """The hash that names a bundle: SHA-256 of its payload as RFC 8785 canonical JSON, the
    bytes its signature covers."""
    return hashlib.sha256(signing.canonical_json(payload)).hexdigest()


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
    """The bytes of a sealed bundle for `policy_source`; a policy that fails validation is
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
    }
    try:
        return signing.seal(
            payload, payload_type=signing.POLICY_BUNDLE_TYPE, private_key=private_key
        )
    except InvalidArgument as exc:  # text JSON cannot carry, e.g. a lone surrogate
        raise ConfigError(f"{origin}: {exc.message}", field="policy") from exc


def read_serial(data: bytes, *, origin: str) -> int:
    """The serial a bundle claims, unverified: for numbering the next one, never for trust."""
    return read_claims(data, origin=origin)[1]


def read_claims(data: bytes, *, origin: str) -> tuple[str, int]:
    """The scope and serial a bundle of either format claims, unverified: for numbering the next
    one above it (a format 1 bundle too), never for trust."""
    return _claims(_parse(data, origin=origin), origin=origin)


def _claims(document: Mapping[str, Any], *, origin: str) -> tuple[str, int]:
    # format 2 keeps them in the payload; format 1 was one flat object
    fields = document.get("payload") if set(document) == {"payload", "signature"} else document
    if not isinstance(fields, dict):
        raise ConfigError(f"{origin}: the bundle's payload is not a JSON object", field="payload")
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
    # read here first so that a file that is not a bundle is refused in the words below, and the
    # key an untrusted signature names can be shown; open_sealed reads it again to verify it
    document = _parse(data, origin=origin)
    try:
        payload, key_id = signing.open_sealed(
            data,
            payload_type=signing.POLICY_BUNDLE_TYPE,
            trusted_keys=trusted_keys,
            legacy=lambda old: _legacy_hint(old, origin=origin),
        )
    except signing.LegacyFormat as exc:
        raise ConfigError(f"{origin}: {exc.message}", field="format") from exc
    except signing.UntrustedSignature as exc:
        raise _untrusted(document, trusted_keys, origin=origin) from exc
    except InvalidArgument as exc:  # a MalformedSignature, or a payload not canonical JSON
        raise _malformed(exc, origin=origin) from exc
    except RecursionError as exc:  # read, but too deep to encode again on this thread's stack
        raise ConfigError(
            f"{origin}: JSON nested too deeply; not a policy bundle", field="bundle"
        ) from exc
    # signed by a trusted publisher from here on; what follows guards against its mistakes
    return _checked(payload, key_id=key_id, scope=scope, origin=origin)


def _checked(
    payload: dict[str, Any], *, key_id: str, scope: str | None, origin: str
) -> VerifiedBundle:
    fmt = payload.get("format")
    if fmt != FORMAT:
        raise ConfigError(
            f"{origin}: format is {short_repr(fmt)}, not {FORMAT!r}: this is not a policy bundle "
            "this version of Osmanthus reads",
            field="format",
        )
    unknown = sorted(set(payload) - set(_PAYLOAD_FIELDS))
    if unknown:
        names = ", ".join(short_repr(name) for name in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ConfigError(f"{origin}: unknown fields {names}{more}", field=unknown[0][:40])
    for name in _PAYLOAD_FIELDS:
        if name not in payload:
            raise ConfigError(f"{origin}: the field is missing", field=name)
        value = payload[name]
        if name == "serial":
            # bool is an int subclass; a serial of true is a forgery, not 1
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(
                    f"{origin}: expected a whole number, found {short_repr(value)}", field=name
                )
        elif not isinstance(value, str):
            raise ConfigError(f"{origin}: expected text, found {short_repr(value)}", field=name)
    serial = _check_serial(payload["serial"], field="serial", origin=origin)
    try:
        bundle_scope = check_scope(payload["scope"])
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}", field="scope") from exc
    if scope is not None and not scope_accepts(scope, bundle_scope):
        raise ConfigError(
            f"{origin}: the bundle is for scope {bundle_scope!r}, and this server reads "
            f"{reader_scopes(scope)}",
            field="scope",
        )
    source: str = payload["policy"]
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    if payload["policy_sha256"] != digest:
        raise ConfigError(
            f"{origin}: policy_sha256 is {short_repr(payload['policy_sha256'], 80)} but the policy "
            f"text hashes to {digest!r}: the publisher signed an inconsistent bundle",
            field="policy_sha256",
        )
    publisher = _check_publisher(payload["publisher"], field="publisher", origin=origin)
    try:
        created_at = datetime.fromisoformat(payload["created_at"])
    except ValueError as exc:
        raise ConfigError(
            f"{origin}: {short_repr(payload['created_at'])} is not a time", field="created_at"
        ) from exc
    if created_at.utcoffset() is None:
        raise ConfigError(f"{origin}: the time carries no time zone", field="created_at")
    version = bundle_hash(payload)
    engine = PolicyEngine(source=source, origin=f"{origin} (policy)", version=version)
    return VerifiedBundle(
        scope=bundle_scope,
        serial=serial,
        hash=version,
        policy_source=source,
        publisher=publisher,
        created_at=created_at,
        key_id=key_id,
        engine=engine,
    )


def _untrusted(
    document: Mapping[str, Any], trusted_keys: Mapping[str, Ed25519PublicKey], *, origin: str
) -> ConfigError:
    """The refusal of a signature open_sealed did not trust: by a key not trusted (`key_id`),
    or one that does not verify (`signature`)."""
    try:
        key_id = signing.signature_key_id(document.get("signature", ""))
    except signing.SignatureError:  # open_sealed read the header before it looked for the key
        key_id = "?"
    if key_id not in trusted_keys:
        trusted = ", ".join(sorted(trusted_keys)) or "none"
        return ConfigError(
            f"{origin}: signed by key {short_repr(key_id)}, which is not a trusted publisher key "
            f"(trusted: {trusted}); add the publisher's .pub file to --policy-trust if it "
            "should be trusted",
            field="key_id",
        )
    return ConfigError(
        f"{origin}: bad signature: the bundle was changed after key {key_id} signed it, or was "
        "not signed by that key; publish it again with 'osmanthus policy publish'",
        field="signature",
    )


def _malformed(exc: OsmanthusError, *, origin: str) -> ConfigError:
    """A refusal of the envelope (osmanthus.core.signing) in a bundle's words."""
    part = exc.field or "file"
    message = exc.message if exc.message.startswith("the ") else f"the {part} {exc.message}"
    if part == "file":
        message += "; not a policy bundle ('osmanthus policy publish' writes one)"
    return ConfigError(f"{origin}: {message}", field=_REFUSED_PART.get(part, part))


def _legacy_hint(document: Mapping[str, Any], *, origin: str) -> str | None:
    """How to sign a format 1 bundle again (signing.open_sealed's `legacy`); None for any other
    object. The scope and serial it claims are unverified: they only fill in the command."""
    if document.get("format") != LEGACY_FORMAT:
        return None
    try:
        scope, serial = _claims(document, origin=origin)
    except ConfigError:
        claimed, above = "Its scope and serial cannot be read", "the serial in force"
        scope_arg, serial_arg = "<scope>", "<serial>"
    else:
        claimed, above = f"It claims scope {scope!r} and serial {serial} (unverified)", str(serial)
        scope_arg, serial_arg = scope, str(serial + 1)
    command = (
        f"osmanthus policy publish --policy <the policy file> --scope {scope_arg} "
        f"--serial {serial_arg} --key <publisher key> --out {shlex.quote(origin)}"
    )
    return (
        f"format is {LEGACY_FORMAT!r}, from before bundles were signed as JWS (RFC 7515, RFC "
        f"7797): this version of Osmanthus reads {FORMAT!r} only and refuses the old file, "
        f"whatever its signature. {claimed}. Sign the policy again, with a serial above "
        f"{above} (the same publisher key pair and .pub files serve): {command}"
    )


def _parse(data: bytes, *, origin: str) -> dict[str, Any]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise ConfigError(_too_large(origin, len(data)), field="bundle")
    try:
        value = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=unique_keys("field", short_repr),
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
            f"{origin}: JSON nested too deeply; not a policy bundle", field="bundle"
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
        raise ConfigError(f"{where}{short_repr(value)} is not a positive whole number", field=field)
    if value > MAX_SERIAL:
        raise ConfigError(
            f"{where}serial {short_repr(value)} is above the largest serial, {MAX_SERIAL} "
            "(2**53 - 1, beyond which JSON readers that keep numbers as doubles round it)",
            field=field,
        )
    return value


def short_repr(value: object, limit: int = 60) -> str:
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
