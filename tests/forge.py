"""What an attacker or a broken sender can make that our own builders refuse to: signatures over
any bytes, JSON our canonical encoder would not write, requester tokens the issuer would not
sign. Tests use these to play them."""

from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import signing, tokens


def loose_json(document: Any) -> bytes:
    """`document` as compact JSON with sorted keys, whatever it holds (an 18-digit integer, a
    lone surrogate): RFC 8785 for what it can encode, anything for what it cannot."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def forged_signature(
    payload: bytes, key: Ed25519PrivateKey, *, payload_type: str = signing.SYNC_BATCH_TYPE
) -> bytes:
    """A JWS in our envelope over any `payload` bytes, canonical or not, signed by `key`."""
    headers = {"typ": payload_type, "kid": signing.key_id(key.public_key())}
    token = jwt.api_jws.PyJWS().encode(
        payload, key, algorithm=signing.ALGORITHM, headers=headers, is_payload_detached=True
    )
    return token.encode("ascii")


def unsafe_forge_token(
    issuer_key: Ed25519PrivateKey | Path,
    *,
    requester: str,
    role: str,
    purposes: Sequence[str],
    key_fingerprint: str,
    seal_fingerprint: str | None = None,
    ttl: datetime.timedelta = datetime.timedelta(minutes=30),
) -> str:
    """A requester token with any claims, signed with the platform's issuer key (or the key in
    the PEM file `issuer_key`) the way TokenIssuer signs, but without its checks: what a broken
    or subverted issuing path would hand out (a kiosk token good for loan underwriting, a
    portal token naming no sealing key). Verifiers must refuse these themselves."""
    if isinstance(issuer_key, Path):
        loaded = serialization.load_pem_private_key(issuer_key.read_bytes(), password=None)
        assert isinstance(loaded, Ed25519PrivateKey)
        issuer_key = loaded
    now = datetime.datetime.now(datetime.UTC)
    payload: dict[str, Any] = {
        "iss": tokens.DEFAULT_ISSUER,
        "aud": tokens.DEFAULT_AUDIENCE,
        "sub": requester,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + ttl).timestamp()),
        "jti": secrets.token_urlsafe(24),
        "purposes": list(purposes),
        "key_fp": key_fingerprint,
        "role": role,
        tokens.SINGLE_USE_CLAIM: False,
    }
    if seal_fingerprint is not None:
        payload[tokens.SEAL_FINGERPRINT_CLAIM] = seal_fingerprint
    return jwt.encode(payload, issuer_key, algorithm=tokens.TOKEN_ALGORITHM, headers={"typ": "JWT"})
