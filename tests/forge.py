"""What an attacker or a broken sender can make that our own builders refuse to: signatures over
any bytes, JSON our canonical encoder would not write. Tests use these to play them."""

from __future__ import annotations

import json
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core import signing


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
