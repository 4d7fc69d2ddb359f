"""Ed25519 signing keys and the one envelope every signed Osmanthus artefact uses.

The envelope is a JSON Web Signature (RFC 7515) with a detached, unencoded payload (RFC 7515
appendix F, RFC 7797): the payload is the artefact's content as RFC 8785 canonical JSON, signed
as those bytes, and the signature is the compact serialization with its payload part left
empty, "<protected header>..<signature>". The protected header is exactly

    {"alg": "EdDSA", "b64": false, "crit": ["b64"],
     "kid": <RFC 7638 thumbprint of the signing key>, "typ": <payload type>}

so the key that signed is named inside what is signed, and the payload type (one per artefact:
policy bundle, sync batch, credit report) separates the domains: a verifier names the one type
it accepts, and a signature made over a sync batch never verifies as a policy bundle, however
the bytes are arranged. Consent receipts are JWS too (compact, with their own `typ`), so every
signature Osmanthus makes is a JWS that standard JOSE tools can check.

Artefacts kept in files (`seal` / `open_sealed`) are one JSON object, {"payload": <the content
as JSON>, "signature": <the detached JWS>}: a person can read what was signed, and the verifier
canonicalises the payload again (RFC 8785 is deterministic) to check the signature.

Why JWS and not DSSE: PyJWT already verifies our access tokens and consent receipts, so one
library and one algorithm allowlist (EdDSA only) cover every signature; and a detached payload
keeps the signed content readable in the file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import jwt
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core.errors import ConfigError, InvalidArgument, OsmanthusError, Unauthenticated
from osmanthus.core.files import write_atomically
from osmanthus.core.strictjson import unique_keys

#: payload types: the `typ` of each artefact's signatures (see the module docstring)
POLICY_BUNDLE_TYPE: Final = "osmanthus-policy-bundle+jws"
SYNC_BATCH_TYPE: Final = "osmanthus-sync-batch+jws"
CREDIT_REPORT_TYPE: Final = "osmanthus-credit-report+jws"
#: the head of the consent registry's revocation feed (osmanthus.core.revocations)
CONSENT_REVOCATIONS_TYPE: Final = "osmanthus-consent-revocations+jws"
#: the token issuer's deny list (osmanthus.core.denylist)
TOKEN_DENY_LIST_TYPE: Final = "osmanthus-token-deny-list+jws"
PAYLOAD_TYPES: Final = frozenset(
    {
        POLICY_BUNDLE_TYPE,
        SYNC_BATCH_TYPE,
        CREDIT_REPORT_TYPE,
        CONSENT_REVOCATIONS_TYPE,
        TOKEN_DENY_LIST_TYPE,
    }
)

#: the one signature algorithm: Ed25519 (RFC 8037); anything else is refused by name
ALGORITHM: Final = "EdDSA"
_HEADER_FIELDS: Final = frozenset({"alg", "b64", "crit", "kid", "typ"})
#: an RFC 7638 thumbprint: base64url of a SHA-256, unpadded
KEY_ID_LENGTH: Final = 43
#: a detached JWS with our header and an Ed25519 signature is about 220 characters
MAX_SIGNATURE_CHARS: Final = 1024
#: a key pair's name: its files are NAME.key and NAME.pub
KEY_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
#: the fields of a sealed file, and nothing else
_SEALED_FIELDS: Final = frozenset({"payload", "signature"})


class SignatureError(OsmanthusError):
    """A signature was refused; the subclass says whether it is malformed or untrusted."""


class MalformedSignature(SignatureError, InvalidArgument):
    """The text is not an envelope of ours: wrong shape, header, algorithm or payload type."""


class UntrustedSignature(SignatureError, Unauthenticated):
    """The signature does not verify, or names a key that is not trusted for this artefact."""


class LegacyFormat(SignatureError, InvalidArgument):
    """An artefact signed in a format from before the one envelope; its message says how to
    sign it again."""


# --- canonical JSON -----------------------------------------------------------------------------


def canonical_json(value: Any, *, field: str = "payload") -> bytes:
    """`value` as RFC 8785 (JSON Canonicalization Scheme) bytes: what is signed and hashed.

    Refused (InvalidArgument naming `field`): a value JSON cannot carry, or an integer beyond
    ±(2**53 - 1), which JSON readers holding numbers as doubles would read as another number.
    """
    try:
        return rfc8785.dumps(value)
    # the messages name the kind of value, never the value: it could be a resident id
    except rfc8785.IntegerDomainError:
        raise InvalidArgument(
            "holds an integer beyond ±(2**53 - 1), which JSON readers holding numbers as "
            "doubles would read as another number",
            field=field,
        ) from None
    except rfc8785.FloatDomainError:
        raise InvalidArgument(
            "holds NaN or an infinity, which JSON cannot carry", field=field
        ) from None
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise InvalidArgument(
            f"holds a value canonical JSON cannot carry ({type(exc).__name__})", field=field
        ) from None
    except RecursionError:
        raise InvalidArgument("is nested too deeply", field=field) from None


def is_canonical(data: bytes) -> bool:
    """Whether `data` is RFC 8785 canonical JSON (parsing it and encoding again gives it back)."""
    try:
        return canonical_json(_parse_json(data, what="payload")) == data
    except InvalidArgument:
        return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _shown(key: str) -> str:
    return repr(key[:40])


def _parse_json(data: bytes, *, what: str) -> Any:
    try:
        return json.loads(
            data.decode("utf-8"),
            object_pairs_hook=unique_keys("field", _shown),
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedSignature(f"is not JSON: {exc}", field=what) from None
    except RecursionError:
        raise MalformedSignature("is JSON nested too deeply", field=what) from None


# --- keys ---------------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's RFC 7638 JWK thumbprint (base64url SHA-256): the `kid` of its signatures."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    # RFC 7638 §3.2: the required members only, sorted, no whitespace
    jwk = json.dumps(
        {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}, separators=(",", ":"), sort_keys=True
    )
    return _b64url(hashlib.sha256(jwk.encode("ascii")).digest())


def generate_key_pair(
    *, private_path: Path, public_path: Path, what: str, overwrite: bool = False
) -> Ed25519PrivateKey:
    """Write a new Ed25519 key pair: the private key PEM (mode 0600) and its public half.

    Existing files are never replaced unless `overwrite`: a lost signing key is replaced by a
    new pair that every verifier is told to trust, not by overwriting the old one.
    """
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise ConfigError(
                    f"{path} already exists; refusing to replace a {what} (choose another name, "
                    "or move the old pair away first)",
                    field="out",
                )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    write_atomically(private_path, private_pem(key), mode=0o600, overwrite=overwrite)
    write_atomically(public_path, public_pem(key.public_key()), mode=0o644, overwrite=overwrite)
    return key


class KeyFiles(NamedTuple):
    """A key pair written to files, and the id its signatures name."""

    private: Path
    public: Path
    key_id: str


def write_key_pair(out_dir: Path, name: str, *, what: str) -> KeyFiles:
    """A new named key pair in `out_dir`: NAME.key (mode 0600) and NAME.pub, never replacing
    existing files."""
    if not isinstance(name, str) or not KEY_NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a key name: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
            field="name",
        )
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    key = generate_key_pair(private_path=private_path, public_path=public_path, what=what)
    return KeyFiles(private_path, public_path, key_id(key.public_key()))


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(
    path: Path, *, what: str = "signing key", field: str = "key"
) -> Ed25519PrivateKey:
    """An Ed25519 private key file (PEM), refused when other users can read it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}", field=field) from exc
    with os.fdopen(fd, "rb") as handle:
        mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
        data = handle.read(64 * 1024)
    if mode & 0o077:
        raise ConfigError(
            f"{path}: mode {mode:04o} lets other users read the {what}; it must be 0600 "
            f"(check who has read it, then run: chmod 600 {path})",
            field=field,
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key", field=field) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} is not an Ed25519 private key", field=field)
    return key


def load_public_key(
    path: Path, *, what: str = "public key", field: str = "key"
) -> Ed25519PublicKey:
    """An Ed25519 public key file (PEM SubjectPublicKeyInfo)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror}", field=field) from exc
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not a PEM public key", field=field) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key", field=field)
    return key


def load_public_keys(
    paths: Sequence[Path], *, what: str = "public key", field: str = "keys"
) -> dict[str, Ed25519PublicKey]:
    """Trusted public keys by key id; at least one is required."""
    if not paths:
        raise ConfigError(f"no trusted {what} given", field=field)
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        key = load_public_key(path, what=what, field=field)
        keys[key_id(key)] = key
    return keys


# --- the envelope -------------------------------------------------------------------------------


def sign(payload: bytes, *, payload_type: str, private_key: Ed25519PrivateKey) -> str:
    """The detached JWS over `payload` (canonical JSON bytes) for an artefact of `payload_type`.

    Deterministic: Ed25519 signatures are, and the header is fixed, so the same payload, type
    and key always give the same signature.
    """
    if payload_type not in PAYLOAD_TYPES:
        raise InvalidArgument(f"{payload_type!r} is not a payload type", field="payload_type")
    if not isinstance(private_key, Ed25519PrivateKey):
        raise ConfigError(
            f"signatures are Ed25519; this key is a {type(private_key).__name__}",
            field="private_key",
        )
    if not is_canonical(payload):
        raise InvalidArgument(
            "is not RFC 8785 canonical JSON (encode it with canonical_json)", field="payload"
        )
    headers = {"typ": payload_type, "kid": key_id(private_key.public_key())}
    # is_payload_detached: RFC 7797's unencoded payload ("b64": false), left out of the token
    token: str = jwt.api_jws.PyJWS().encode(
        payload, private_key, algorithm=ALGORITHM, headers=headers, is_payload_detached=True
    )
    return token


def signature_key_id(signature: str, *, field: str = "signature") -> str:
    """The key id a signature names, unverified: for finding the key to verify it with."""
    kid: str = _header(signature, field=field)["kid"]
    return kid


def _header(signature: object, *, field: str) -> dict[str, Any]:
    if not isinstance(signature, str) or len(signature) > MAX_SIGNATURE_CHARS:
        raise MalformedSignature("is not a detached JWS (header..signature)", field=field)
    parts = signature.split(".")
    if len(parts) != 3 or parts[1] or not parts[0] or not parts[2]:
        raise MalformedSignature(
            "is not a detached JWS: expected '<header>..<signature>' with the payload part empty",
            field=field,
        )
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw, object_pairs_hook=unique_keys("header parameter", _shown))
    except (binascii.Error, ValueError) as exc:
        raise MalformedSignature(f"has an unreadable header: {exc}", field=field) from None
    if not isinstance(header, dict) or set(header) != _HEADER_FIELDS:
        names = sorted(header) if isinstance(header, dict) else []
        raise MalformedSignature(
            f"has header fields {names}; an Osmanthus signature has exactly "
            f"{sorted(_HEADER_FIELDS)}",
            field=field,
        )
    if header["alg"] != ALGORITHM:
        # before any key is touched: alg "none" or an HMAC over a public key is refused here
        raise MalformedSignature(
            f"uses algorithm {str(header['alg'])[:20]!r}; only {ALGORITHM} is accepted",
            field=field,
        )
    if header["b64"] is not False or header["crit"] != ["b64"]:
        # RFC 7797: the payload is signed as its bytes, and a verifier must understand that
        raise MalformedSignature(
            'is not over an unencoded payload ("b64": false, "crit": ["b64"])', field=field
        )
    kid = header["kid"]
    if not isinstance(kid, str) or len(kid) != KEY_ID_LENGTH:
        raise MalformedSignature("names no key id (an RFC 7638 thumbprint)", field=field)
    return header


def verify(
    payload: bytes,
    signature: str,
    *,
    payload_type: str,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    field: str = "signature",
) -> str:
    """The key id that signed `payload` as an artefact of `payload_type`; raises unless the
    signature is ours, of that type, by a trusted key, and verifies over these exact bytes."""
    header = _header(signature, field=field)
    if header["typ"] != payload_type:
        shown = str(header["typ"])[:60]
        raise MalformedSignature(
            f"was made for an artefact of type {shown!r}, not {payload_type!r}: a signature "
            "signs one kind of artefact only",
            field=field,
        )
    kid: str = header["kid"]
    key = trusted_keys.get(kid)
    if key is None:
        trusted = ", ".join(sorted(trusted_keys)) or "none"
        raise UntrustedSignature(
            f"was made with key {kid}, which is not trusted here (trusted: {trusted})",
            field=field,
        )
    try:
        jwt.api_jws.PyJWS().decode_complete(
            signature, key, algorithms=[ALGORITHM], detached_payload=payload
        )
    except jwt.InvalidSignatureError:
        raise UntrustedSignature(
            f"does not verify against key {kid}: the content was changed after it was signed",
            field=field,
        ) from None
    except jwt.PyJWTError as exc:
        raise MalformedSignature(f"cannot be checked: {exc}", field=field) from None
    return kid


# --- sealed files -------------------------------------------------------------------------------


def seal(
    document: Mapping[str, Any], *, payload_type: str, private_key: Ed25519PrivateKey
) -> bytes:
    """A signed file: {"payload": document, "signature": <detached JWS>}, indented for people
    who open it (the signature covers the canonical form of `document` only)."""
    signature = sign(canonical_json(document), payload_type=payload_type, private_key=private_key)
    sealed = {"payload": document, "signature": signature}
    return (json.dumps(sealed, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode()


def open_sealed(
    data: bytes,
    *,
    payload_type: str,
    trusted_keys: Mapping[str, Ed25519PublicKey],
    legacy: Callable[[dict[str, Any]], str | None] | None = None,
) -> tuple[dict[str, Any], str]:
    """(payload, key id) of a sealed file once its signature verifies.

    `legacy` looks at a JSON object that is not a sealed file and returns how to sign it again
    when it is an artefact of an older format (raised as LegacyFormat), None otherwise.
    """
    document = _parse_json(data, what="file")
    if not isinstance(document, dict):
        raise MalformedSignature("is not a signed Osmanthus file (a JSON object)", field="file")
    if set(document) != _SEALED_FIELDS:
        hint = legacy(document) if legacy is not None else None
        if hint is not None:
            raise LegacyFormat(hint, field="format")
        raise MalformedSignature(
            f"has fields {sorted(str(k)[:40] for k in document)[:8]}; a signed Osmanthus file "
            'has exactly "payload" and "signature"',
            field="file",
        )
    payload = document["payload"]
    if not isinstance(payload, dict):
        raise MalformedSignature("the payload is not a JSON object", field="payload")
    kid = verify(
        canonical_json(payload),
        document["signature"],
        payload_type=payload_type,
        trusted_keys=trusted_keys,
    )
    return payload, kid
