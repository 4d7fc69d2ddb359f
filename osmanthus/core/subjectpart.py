"""One party's part of a subject's file: fitted, sealed to the portal and signed by its maker;
and, at the portal, checked, opened and decoded.

HPKE base mode (osmanthus.core.subjectseal) hides a part from everyone but the portal, but it
says nothing about who sealed it: the portal's public key is no secret (the coordinator sees it
in every request), so the coordinator could seal an empty file under any department's name and
hide a bank's reads from the subject. Each part is therefore signed by the party that made it,
with the private key of its mutual-TLS certificate from the platform CA (ECDSA P-256, issued by
certs/authority.py): a department's node with its node certificate, the coordinator with its.

The signature is a JWS (RFC 7515) with algorithm ES256 (RFC 7518 §3.4: ECDSA P-256 with
SHA-256, the 64-byte R || S form) over a detached, unencoded payload (RFC 7797: "b64": false,
listed in "crit"; the compact form "<header>..<signature>"), the same envelope as
osmanthus.core.signing uses for Ed25519. The protected header is exactly

    {"alg": "ES256", "b64": false, "crit": ["b64"], "typ": "osmanthus-subject-file+jws",
     "x5t#S256": <base64url SHA-256 of the signer's certificate, DER (RFC 7515 §4.1.8)>}

and the payload is the RFC 8785 JSON of the seal context (subjectseal.SealContext.fields: the
domain, query id, source, subject kind and id, and the portal's nonce) with "sealed_sha256",
the hex SHA-256 of the sealed bytes. The signer's certificate travels beside the part (PEM).

The portal accepts a part only when the certificate was issued by a CA it trusts (its own
mutual-TLS CA file), is within its validity dates, is no CA, and names exactly the part's
source (spiffe://osmanthus/node/<department>, or the coordinator's URI for the coordinator's
part), and the signature verifies over the payload the portal rebuilds from what it asked: a
part fabricated by the coordinator, signed by another department, or made for an earlier call
(another nonce) is refused. Revocation is not checked here (docs/caveats.md).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
import rfc8785
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.peers import PeerRole
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, SubjectFile, decode, fit
from osmanthus.core.subjectseal import (
    SEAL_OVERHEAD,
    SealContext,
    check_nonce,
    nonce_text,
    open_file,
    seal_file,
)
from osmanthus.core.tls import TlsFiles, certificate_identity, check_files
from osmanthus.core.wire.node import MAX_SEALED_PART_BYTES, SealedPart

#: the `typ` of a part's signature: it signs a subject-file part and nothing else
PART_SIGNATURE_TYPE: Final = "osmanthus-subject-file+jws"
#: ECDSA P-256 with SHA-256 (RFC 7518 §3.4), the curve of every platform certificate
ALGORITHM: Final = "ES256"
_HEADER_FIELDS: Final = frozenset({"alg", "b64", "crit", "typ", "x5t#S256"})
#: a detached ES256 JWS with this header is about 300 characters
MAX_SIGNATURE_CHARS: Final = 1024
#: a platform peer certificate in PEM is under 1 KiB; anything far larger is refused unparsed
MAX_CERTIFICATE_BYTES: Final = 16 * 1024


@dataclass(frozen=True, kw_only=True)
class PartSigner:
    """The key a party signs its parts with, its certificate, and the source it signs as."""

    source: str
    private_key: ec.EllipticCurvePrivateKey
    certificate_pem: bytes

    @classmethod
    def from_tls_files(cls, files: TlsFiles) -> PartSigner:
        """The signer of a node (source: its department) or of the coordinator (source
        "coordinator") from its mutual-TLS files; ConfigError if they are not a usable
        P-256 platform identity of either."""
        check_files(files)  # readable, the key is the certificate's, issued by the CA, in date
        pem = files.cert.read_bytes()
        key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ConfigError(
                f"{files.key} is not an ECDSA P-256 key: subject-file parts are signed ES256",
                field="tls.key",
            )
        try:
            identity = certificate_identity(x509.load_pem_x509_certificate(pem))
        except Unauthenticated as exc:
            raise ConfigError(f"{files.cert}: {exc.message}", field="tls.cert") from None
        if identity.role is PeerRole.NODE:
            source = identity.name
        elif identity.role is PeerRole.COORDINATOR:
            source = COORDINATOR_SOURCE
        else:
            raise ConfigError(
                f"{files.cert} names {identity.role.value} {identity.name!r}: only a node or "
                "the coordinator signs a part of a subject's file",
                field="tls.cert",
            )
        return cls(source=source, private_key=key, certificate_pem=pem)


def seal_part(
    *,
    subject_file: SubjectFile,
    recipient_key: bytes,
    nonce: bytes,
    signer: PartSigner,
    rules_version: str = "",
    policy_hash: str = "",
) -> SealedPart:
    """`subject_file` stamped with the portal's `nonce`, fitted to MAX_SEALED_PART_BYTES (its
    oldest audit lines, then its least useful records go first), sealed to `recipient_key`
    and signed by `signer`, whose source it must be."""
    if subject_file.source != signer.source:
        raise InvalidArgument(
            f"a part from {subject_file.source!r} cannot be signed by {signer.source!r}",
            field="source",
        )
    stamped = dataclasses.replace(subject_file, nonce=nonce_text(check_nonce(nonce)))
    _, plaintext = fit(stamped, max_bytes=MAX_SEALED_PART_BYTES - SEAL_OVERHEAD)
    context = _context_of(stamped, nonce)
    sealed = seal_file(plaintext=plaintext, recipient_key=recipient_key, context=context)
    return SealedPart(
        source=signer.source,
        sealed=sealed,
        rules_version=rules_version,
        policy_hash=policy_hash,
        signature=_sign(_payload(context, sealed), signer),
        certificate=signer.certificate_pem,
    )


def open_part(
    *,
    part: SealedPart,
    expected: SealContext,
    sealing_key: X25519PrivateKey,
    trusted_cas: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> SubjectFile:
    """The part, once its signer's certificate and signature hold for `expected` (the call the
    portal made) and it opens and decodes under the same context.

    Unauthenticated when the certificate or signature does not hold or the part does not open;
    InvalidArgument when what opens is not a subject file for `expected`."""
    if part.source != expected.source:
        raise InvalidArgument(
            f"the part says it is from {part.source[:40]!r}, not {expected.source!r}",
            field="source",
        )
    public_key = _signer_key(part.certificate, expected.source, trusted_cas=trusted_cas, now=now)
    _verify(
        _payload(expected, part.sealed), part.signature, public_key, certificate=part.certificate
    )
    plaintext = open_file(sealed=part.sealed, private_key=sealing_key, context=expected)
    return decode(
        plaintext,
        source=expected.source,
        query_id=expected.query_id,
        subject_kind=expected.subject_kind,
        subject_id=expected.subject_id,
        nonce=expected.nonce,
    )


def load_trusted_cas(path: Path) -> tuple[x509.Certificate, ...]:
    """The CA certificates in a PEM file (one, or several during a CA rollover); ConfigError
    naming the file otherwise."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the CA certificate file {path}: {exc.strerror}", field="ca"
        ) from None
    try:
        cas = tuple(x509.load_pem_x509_certificates(data))
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM CA certificate: {exc}", field="ca") from None
    return cas


# --- the signature -----------------------------------------------------------------------------


def _context_of(subject_file: SubjectFile, nonce: bytes) -> SealContext:
    return SealContext(
        query_id=subject_file.query_id,
        source=subject_file.source,
        subject_kind=subject_file.subject_kind,
        subject_id=subject_file.subject_id,
        nonce=nonce,
    )


def _payload(context: SealContext, sealed: bytes) -> bytes:
    return rfc8785.dumps({**context.fields(), "sealed_sha256": hashlib.sha256(sealed).hexdigest()})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _thumbprint(certificate_pem: bytes) -> str:
    """RFC 7515 §4.1.8: base64url of the SHA-256 of the certificate's DER encoding."""
    der = x509.load_pem_x509_certificate(certificate_pem).public_bytes(serialization.Encoding.DER)
    return _b64url(hashlib.sha256(der).digest())


def _sign(payload: bytes, signer: PartSigner) -> str:
    headers = {"typ": PART_SIGNATURE_TYPE, "x5t#S256": _thumbprint(signer.certificate_pem)}
    # is_payload_detached: RFC 7797's unencoded payload ("b64": false, in "crit"), left out
    token: str = jwt.api_jws.PyJWS().encode(
        payload, signer.private_key, algorithm=ALGORITHM, headers=headers, is_payload_detached=True
    )
    return token


def _header(signature: object) -> dict[str, Any]:
    if not isinstance(signature, str) or not signature:
        raise Unauthenticated("the part carries no signature")
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise Unauthenticated(f"the part's signature is over {MAX_SIGNATURE_CHARS} characters")
    pieces = signature.split(".")
    if len(pieces) != 3 or pieces[1] or not pieces[0] or not pieces[2]:
        raise Unauthenticated(
            "the part's signature is not a detached JWS ('<header>..<signature>')"
        )
    try:
        raw = base64.urlsafe_b64decode(pieces[0] + "=" * (-len(pieces[0]) % 4))
        header = json.loads(raw, object_pairs_hook=unique_keys("header parameter"))
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated(f"the part's signature has an unreadable header: {exc}") from None
    if not isinstance(header, dict) or set(header) != _HEADER_FIELDS:
        names = sorted(header) if isinstance(header, dict) else []
        raise Unauthenticated(
            f"the part's signature has header fields {names}, not {sorted(_HEADER_FIELDS)}"
        )
    if header["alg"] != ALGORITHM:
        # before any key is used: "none", an HMAC over the public key, anything else
        raise Unauthenticated(
            f"the part's signature uses {str(header['alg'])[:20]!r}; only {ALGORITHM} is accepted"
        )
    if header["b64"] is not False or header["crit"] != ["b64"]:
        raise Unauthenticated("the part's signature is not over an unencoded payload (RFC 7797)")
    if header["typ"] != PART_SIGNATURE_TYPE:
        raise Unauthenticated(
            f"the signature was made for {str(header['typ'])[:60]!r}, not a subject-file part"
        )
    return header


def _verify(
    payload: bytes, signature: str, public_key: ec.EllipticCurvePublicKey, *, certificate: bytes
) -> None:
    header = _header(signature)
    if header["x5t#S256"] != _thumbprint(certificate):
        raise Unauthenticated("the part's signature names another certificate than it carries")
    try:
        jwt.api_jws.PyJWS().decode_complete(
            signature, public_key, algorithms=[ALGORITHM], detached_payload=payload
        )
    except jwt.InvalidSignatureError:
        raise Unauthenticated(
            "the part's signature does not verify for this call: it was made for another "
            "query, subject or nonce (a replay), over other bytes, or by another key"
        ) from None
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"the part's signature cannot be checked: {exc}") from None


# --- the signer's certificate ------------------------------------------------------------------


def _signer_key(
    certificate: bytes,
    source: str,
    *,
    trusted_cas: Sequence[x509.Certificate],
    now: datetime.datetime,
) -> ec.EllipticCurvePublicKey:
    """The public key of the certificate that must have signed `source`'s part."""
    if not certificate:
        raise Unauthenticated("the part carries no signer certificate")
    if len(certificate) > MAX_CERTIFICATE_BYTES:
        raise Unauthenticated(f"the part's certificate is over {MAX_CERTIFICATE_BYTES} bytes")
    try:
        found = x509.load_pem_x509_certificates(certificate)
    except ValueError as exc:
        raise Unauthenticated(f"the part's certificate is not PEM: {exc}") from None
    if len(found) != 1:
        raise Unauthenticated(f"the part carries {len(found)} certificates, not its signer's")
    cert = found[0]
    issuer = next((ca for ca in trusted_cas if _issued_by(cert, ca)), None)
    if issuer is None:
        raise Unauthenticated("the part's certificate was not issued by the platform CA")
    for what, checked in (("certificate", cert), ("CA certificate", issuer)):
        if not checked.not_valid_before_utc <= now <= checked.not_valid_after_utc:
            raise Unauthenticated(
                f"the part's {what} is valid from {checked.not_valid_before_utc.isoformat()} "
                f"to {checked.not_valid_after_utc.isoformat()}, not now ({now.isoformat()})"
            )
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        is_ca = constraints.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if is_ca:
        raise Unauthenticated("the part is signed by a CA certificate, not a platform peer's")
    identity = certificate_identity(cert)
    if source == COORDINATOR_SOURCE:
        wanted, named = PeerRole.COORDINATOR, identity.role is PeerRole.COORDINATOR
    else:
        wanted = PeerRole.NODE
        named = identity.role is PeerRole.NODE and identity.name == source
    if not named:
        raise Unauthenticated(
            f"the part's certificate names {identity.role.value} {identity.name!r}, not the "
            f"{wanted.value} of {source[:40]!r}: a part is signed by its own source"
        )
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise Unauthenticated("the part's certificate holds no ECDSA P-256 key")
    return key


def _issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
