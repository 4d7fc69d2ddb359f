"""Seal a subject's file to the portal's X25519 key with HPKE (RFC 9180), and open it there.

A subject's file (their records, list entries and the audit entries about them) travels from
each department's node through the coordinator to the portal. The coordinator must forward it
without reading it (ARCHITECTURE.md, "Subjects' rights"), so each node seals its part to the
portal's long-term X25519 key:

- HPKE base mode, single-shot (RFC 9180 §5.1.1 and §6.1), with the suite
  DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM (KEM 0x0020, KDF 0x0001, AEAD 0x0001),
  as implemented by `cryptography.hazmat.primitives.hpke` (pyca/cryptography >= 47);
- the wire form is enc (32 bytes) || AEAD ciphertext, what `Suite.encrypt` returns;
- `info` (RFC 9180 §5.1: the application context, bound into the key schedule) is the RFC 8785
  canonical JSON of {"domain", "query_id", "source", "subject_kind", "subject_id", "nonce"}, so
  a file sealed for one query, one department or one subject opens for no other: a coordinator
  that swaps two departments' files makes `open_file` fail. The query id is the coordinator's
  choice, so it alone would not stop a replay; the nonce is the portal's (fresh and random for
  every call, 16 to 64 bytes, base64url in the JSON), so a part sealed for an earlier call
  opens for no later one.

Base mode proves nothing about who sealed: anyone holding the portal's public key (the
coordinator among them) can seal a file. Each part is therefore also signed by the party that
made it (osmanthus.core.subjectpart), and the portal checks that signature before opening.

The portal's key is bound to its requester token: the token's `seal_fp` claim is the SHA-256
of the raw public key (`seal_fingerprint`), and a node seals only to a key whose fingerprint is
the caller's claim, so a coordinator cannot substitute a key of its own.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import rfc8785
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated

#: domain separation inside the HPKE info: a sealed subject file, version 1
SEAL_DOMAIN: Final = "osmanthus-subject-file/v1"
#: raw X25519 public key length (RFC 7748 §5)
PUBLIC_KEY_BYTES: Final = 32
#: the encapsulated key `enc` that prefixes every sealed file (Nenc for DHKEM(X25519))
ENC_BYTES: Final = 32
#: AES-128-GCM tag (Nt)
TAG_BYTES: Final = 16
#: what sealing adds to a plaintext: the encapsulated key and the AEAD tag
SEAL_OVERHEAD: Final = ENC_BYTES + TAG_BYTES
#: a sealed file larger than this is refused unopened (a subject's file is a few hundred KiB)
MAX_SEALED_BYTES: Final = 8 * 1024 * 1024
#: the portal's per-call nonce: at least 128 bits of randomness, and bounded
MIN_NONCE_BYTES: Final = 16
MAX_NONCE_BYTES: Final = 64
#: what `new_nonce` draws
NONCE_BYTES: Final = 32

_SUITE: Final = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)


@dataclass(frozen=True, kw_only=True)
class SealContext:
    """What a sealed file is bound to (the HPKE info): the query, who sealed it, about whom,
    and the portal's nonce for this one call."""

    query_id: str
    source: str
    subject_kind: str
    subject_id: str
    nonce: bytes
    #: what is sealed: a subject's file part (SEAL_DOMAIN) or a case the portal files
    #: (osmanthus.core.cases.CASE_SEAL_DOMAIN); a seal made for one never opens as the other
    domain: str = SEAL_DOMAIN

    def fields(self) -> dict[str, str]:
        """The context as JSON members (the HPKE info; the part's signature covers them too)."""
        for name in ("query_id", "source", "subject_kind", "subject_id"):
            if not getattr(self, name):
                raise InvalidArgument(f"a seal context needs a {name}", field=name)
        return {
            "domain": self.domain,
            "query_id": self.query_id,
            "source": self.source,
            "subject_kind": self.subject_kind,
            "subject_id": self.subject_id,
            "nonce": nonce_text(self.nonce),
        }

    def info(self) -> bytes:
        return rfc8785.dumps(self.fields())


def check_nonce(nonce: object) -> bytes:
    """`nonce` if it is MIN_NONCE_BYTES to MAX_NONCE_BYTES bytes; InvalidArgument naming
    `nonce` otherwise (a missing nonce is empty bytes on the wire)."""
    if not isinstance(nonce, bytes) or not MIN_NONCE_BYTES <= len(nonce) <= MAX_NONCE_BYTES:
        size = f"{len(nonce)} bytes" if isinstance(nonce, bytes) else type(nonce).__name__
        raise InvalidArgument(
            f"the nonce must be {MIN_NONCE_BYTES} to {MAX_NONCE_BYTES} random bytes chosen by "
            f"the portal for this call, got {size}",
            field="nonce",
        )
    return nonce


def nonce_text(nonce: bytes) -> str:
    """The nonce as it appears in JSON: base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(check_nonce(nonce)).rstrip(b"=").decode("ascii")


def new_nonce() -> bytes:
    """A fresh nonce for one call (NONCE_BYTES from the operating system's CSPRNG)."""
    return secrets.token_bytes(NONCE_BYTES)


def seal_fingerprint(public_key: bytes) -> str:
    """The `seal_fp` token claim: lower-case hex SHA-256 of the raw 32-byte public key."""
    return hashlib.sha256(_checked_public_bytes(public_key)).hexdigest()


def recipient_public_key(public_key: bytes, *, field: str = "recipient_key") -> X25519PublicKey:
    """Parse a raw X25519 public key, refusing a wrong length and any point of small order
    (the all-zero point among them)."""
    raw = _checked_public_bytes(public_key, field=field)
    return X25519PublicKey.from_public_bytes(raw)


def seal_file(*, plaintext: bytes, recipient_key: bytes, context: SealContext) -> bytes:
    """HPKE-seal `plaintext` to `recipient_key` (raw X25519) under `context`; enc || ct."""
    key = recipient_public_key(recipient_key)
    return _SUITE.encrypt(plaintext, key, info=context.info())


def open_file(*, sealed: bytes, private_key: X25519PrivateKey, context: SealContext) -> bytes:
    """Open what `seal_file` made; raises Unauthenticated when it was not sealed to this key
    under exactly this context, or was altered on the way."""
    if len(sealed) < ENC_BYTES + TAG_BYTES:
        raise InvalidArgument(
            f"a sealed file is at least {ENC_BYTES + TAG_BYTES} bytes, got {len(sealed)}",
            field="sealed",
        )
    if len(sealed) > MAX_SEALED_BYTES:
        raise InvalidArgument(
            f"a sealed file is at most {MAX_SEALED_BYTES} bytes, got {len(sealed)}",
            field="sealed",
        )
    try:
        return _SUITE.decrypt(sealed, private_key, info=context.info())
    except (InvalidTag, ValueError) as exc:
        raise Unauthenticated(
            f"the file from {context.source!r} does not open: it was sealed to another key, for "
            "another query or subject, or altered in transit",
        ) from exc


def public_bytes(private_key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of `private_key` (what the token's seal_fp hashes)."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _checked_public_bytes(public_key: bytes, *, field: str = "recipient_key") -> bytes:
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
        size = len(public_key) if isinstance(public_key, bytes) else type(public_key).__name__
        raise InvalidArgument(
            f"an X25519 public key is {PUBLIC_KEY_BYTES} raw bytes (RFC 7748), got {size}",
            field=field,
        )
    if public_key == bytes(PUBLIC_KEY_BYTES):
        # the all-zero point gives an all-zero shared secret (RFC 7748 §6.1): anyone could open
        raise InvalidArgument("the X25519 public key is the all-zero point", field=field)
    if _small_order(public_key):
        raise InvalidArgument(
            "the X25519 public key is a point of small order: every exchange with it gives the "
            "all-zero shared secret (RFC 7748 §6.1), so anyone could open what is sealed to it",
            field=field,
        )
    return public_key


def _small_order(public_key: bytes) -> bool:
    """True for the points whose every X25519 exchange is all zeros (RFC 7748 §6.1; RFC 9180
    §7.1.4 says DHKEM must then abort): found by one exchange with a throwaway key, which
    OpenSSL refuses for exactly these, before any node's decision is built on the key."""
    try:
        X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        return True
    return False


def read_public_key_file(path: Path) -> bytes:
    """The raw 32-byte X25519 public key in `path`: either the 32 raw bytes themselves or a PEM
    SubjectPublicKeyInfo (what `openssl pkey -pubout` writes); ConfigError naming the file
    otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(f"sealing key file {path} does not exist", field="seal_key") from exc
    except OSError as exc:
        raise ConfigError(
            f"cannot read sealing key file {path}: {exc.strerror}", field="seal_key"
        ) from exc
    if len(data) == PUBLIC_KEY_BYTES:
        raw = data
    else:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{path} is neither a raw {PUBLIC_KEY_BYTES}-byte X25519 public key nor a PEM"
                f" public key ({len(data)} bytes)",
                field="seal_key",
            ) from exc
        if not isinstance(key, X25519PublicKey):
            raise ConfigError(
                f"{path} holds a {type(key).__name__}, not an X25519 public key", field="seal_key"
            )
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        return _checked_public_bytes(raw)
    except InvalidArgument as exc:
        # the all-zero or a small-order point: a key no node would seal to, refused when the
        # file is read (as this function's other faults are), not at the first request
        raise ConfigError(f"{path}: {exc.message}", field="seal_key") from None
