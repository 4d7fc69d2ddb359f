"""Signing a report with the one envelope (a detached JWS), its verification code, and opening it.

The issuer signs the report's canonical content (RFC 8785 JSON, sdk.report.content) with
`osmanthus.core.signing.sign` as an artefact of type CREDIT_REPORT_TYPE: a JWS (RFC 7515) with a
detached, unencoded payload (RFC 7797), whose header names the key by its RFC 7638 thumbprint.
The HTML page embeds, and the PDF attaches, the envelope in the shape of a sealed Osmanthus file
(`signing.open_sealed` reads it): {"payload": <the content>, "signature": <the detached JWS>}.
The verification code printed on the report is derived from the signed content alone.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from osmanthus.core import signing
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.strictjson import unique_keys
from sdk.report.content import canonical_content, from_content
from sdk.report.errors import LegacyReport, MalformedReport, TamperedReport
from sdk.report.model import EnterpriseReport

#: the verification code: 80 bits of SHA-256 of the content, base32 in four groups of four
CODE_PATTERN: Final = re.compile(r"[A-Z2-7]{4}(?:-[A-Z2-7]{4}){3}")
_CODE_BYTES: Final = 10
#: the signed content of a report is about 3 kB (20 kB with 65 departments); far larger content
#: is not signed, so that every signed report's page fits in MAX_REPORT_CHARS (it embeds the
#: content with "<", ">" and "&" escaped, 6 characters each, and shows it escaped, up to 6
#: characters a character) and a verifier renders any signed report again in seconds
#: (reportlab's time grows faster than the text: a 60 kB paragraph takes 2-5 s)
MAX_CONTENT_BYTES: Final = 64 * 1024
#: the envelope (the content, the signature, JSON) is at most this many bytes once decoded: a
#: verifier stops decoding an embedded file there
MAX_ENVELOPE_BYTES: Final = 2 * MAX_CONTENT_BYTES
#: the envelope's fields: those of a sealed file (osmanthus.core.signing.seal)
_ENVELOPE_FIELDS: Final = frozenset({"payload", "signature"})
#: the `format` of the envelope of reports signed before the one envelope (a raw Ed25519
#: signature in base64 and a 16-hex key id): refused with LegacyReport
LEGACY_ENVELOPE_PREFIX: Final = "osmanthus-signed-report/"


@dataclass(frozen=True, kw_only=True)
class SignedReport:
    """A report with its canonical content, the issuer's signature over it and the short
    verification code derived from the content."""

    report: EnterpriseReport
    #: RFC 8785 canonical JSON: the JWS payload
    content: bytes
    #: the detached JWS over `content` ("<header>..<signature>"), of type CREDIT_REPORT_TYPE
    signature: str
    #: the signing key's RFC 7638 thumbprint, as the signature's header names it
    key_id: str
    verification_code: str


def verification_code(content: bytes) -> str:
    """The first 80 bits of SHA-256 of the content in base32, as XXXX-XXXX-XXXX-XXXX."""
    text = base64.b32encode(hashlib.sha256(content).digest()[:_CODE_BYTES]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def sign_report(report: EnterpriseReport, *, private_key: Ed25519PrivateKey) -> SignedReport:
    """Sign the report's canonical content with the issuer's Ed25519 key (a detached JWS)."""
    content = canonical_content(report)
    if len(content) > MAX_CONTENT_BYTES:
        raise InvalidArgument(
            f"the report's content is {len(content)} bytes; a report is at most "
            f"{MAX_CONTENT_BYTES} (the departments' details or the list entries are too long "
            "to print)",
            field="report",
        )
    return SignedReport(
        report=report,
        content=content,
        signature=signing.sign(
            content, payload_type=signing.CREDIT_REPORT_TYPE, private_key=private_key
        ),
        key_id=signing.key_id(private_key.public_key()),
        verification_code=verification_code(content),
    )


def envelope_text(signed: SignedReport) -> str:
    """The envelope as the PDF attaches it: {"payload": ..., "signature": ...} on one line.

    The content goes in as the signed bytes themselves, so the envelope is RFC 8785 canonical
    JSON too, and as readable as the content.
    """
    signature = json.dumps(signed.signature)
    return '{"payload":' + signed.content.decode("utf-8") + ',"signature":' + signature + "}"


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _legacy(envelope: dict[str, Any]) -> bool:
    version = envelope.get("format")
    return isinstance(version, str) and version.startswith(LEGACY_ENVELOPE_PREFIX)


def open_envelope(text: str, *, public_key: Ed25519PublicKey) -> SignedReport:
    """The signed report an embedded envelope carries, after checking that its signature names
    this key and verifies over the canonical content, and that the content is a well-formed
    report in the form Osmanthus signs. Raises MalformedReport (LegacyReport for a report in the
    format before the one envelope) or TamperedReport."""
    try:
        envelope = json.loads(
            text, object_pairs_hook=unique_keys("key"), parse_constant=_no_constant
        )
    except (ValueError, RecursionError) as exc:
        raise MalformedReport(
            f"the embedded report is not JSON: {str(exc)[:120]}", field="envelope"
        ) from None
    if not isinstance(envelope, dict):
        raise MalformedReport("the embedded report is not a JSON object", field="envelope")
    if set(envelope) != _ENVELOPE_FIELDS:
        if _legacy(envelope):
            raise LegacyReport(
                f"the report was issued in the earlier format {str(envelope['format'])[:40]!r} "
                "(a raw Ed25519 signature and a 16-hex key id), which this version of Osmanthus "
                "no longer verifies: ask the issuer to issue it again (the issuer runs "
                "'osmanthus report enterprise CODE --out FILE --signing-key KEY ...' again, with "
                "the same key), or check it with the Osmanthus version that issued it",
                field="format",
            )
        names = sorted(str(name)[:40] for name in envelope)[:8]
        raise MalformedReport(
            f"the embedded report has fields {names}; a signed report has exactly "
            '"payload" and "signature"',
            field="envelope",
        )
    payload, signature = envelope["payload"], envelope["signature"]
    try:
        # unverified: to tell another issuer's report from an altered one
        signed_by = signing.signature_key_id(signature)
    except signing.MalformedSignature as exc:
        raise MalformedReport(f"the signature {exc.message}", field="signature") from None
    expected = signing.key_id(public_key)
    if signed_by != expected:
        raise TamperedReport(
            f"the report was signed with key {signed_by}, not with the key given "
            f"({expected}): ask the issuer for its public key",
            field="key",
        )
    if not isinstance(payload, dict):
        raise MalformedReport("the signed content is not a JSON object", field="content")
    try:
        content = signing.canonical_json(payload, field="content")
    except InvalidArgument as exc:
        raise MalformedReport(f"the signed content {exc.message}", field="content") from None
    try:
        signing.verify(
            content,
            signature,
            payload_type=signing.CREDIT_REPORT_TYPE,
            trusted_keys={expected: public_key},
        )
    except signing.UntrustedSignature:
        raise TamperedReport(
            "the signature does not match the content: the embedded report was altered, "
            "or not signed by this key",
            field="signature",
        ) from None
    except signing.MalformedSignature as exc:
        raise MalformedReport(f"the signature {exc.message}", field="signature") from None
    report = from_content(payload)
    # the values printed, and the code derived from them, must be those of the signed bytes
    if canonical_content(report) != content:
        raise MalformedReport(
            "the signed content is not in the form Osmanthus signs: the verification code "
            "printed for it would not be its own",
            field="content",
        )
    return SignedReport(
        report=report,
        content=content,
        signature=signature,
        key_id=signed_by,
        verification_code=verification_code(content),
    )
