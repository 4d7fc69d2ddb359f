"""Checking a consent receipt the coordinator signed, for the bank or citizen who holds it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.receipts import (
    RECEIPT_ISSUER,
    ConsentReceipt,
    ReceiptError,
    load_consent_public_key,
    verify_receipt,
)
from osmanthus.core.types import SubjectKind

# verify_receipt's parameter names, as this function's caller knows them
_PARAMETER: Final = {
    "expected_grantee": "grantee",
    "expected_purpose": "purpose",
    "expected_subject": "subject_id",
    "expected_kind": "kind",
}


def verify_consent_receipt(
    receipt: str,
    *,
    public_key: Path | Ed25519PublicKey,
    now: datetime | None = None,
    grantee: str | None = None,
    purpose: str | None = None,
    subject_id: str | None = None,
    issuer: str = RECEIPT_ISSUER,
    kind: SubjectKind | None = None,
) -> ConsentReceipt:
    """What `receipt` attests, if the platform's consent key signed it and it fits.

    `public_key` is the coordinator's consent.pub (a PEM file) or the key itself. `issuer` is
    the name the platform's coordinator signs as (`coordinator serve --consent-issuer`; the
    default is Osmanthus's). `grantee`, `purpose`, `subject_id` and `kind` (a person's consent or
    an enterprise's: their receipts have different types), when given, must be what the receipt
    names; a value that is not a requester id, purpose, resident id or credit code at all is an
    sdk.InvalidArgument naming the parameter. Raises a sdk.ReceiptError: MalformedReceipt (an
    sdk.InvalidArgument), UntrustedReceipt (an sdk.Unauthenticated: altered, another key or
    issuer), ReceiptMismatch or ReceiptNotInForce (sdk.PermissionDenied: another subject,
    grantee or purpose; expired or not yet started), each naming the problem.

    A valid receipt proves that the consent was granted, not that it is unrevoked: a revoked
    consent's receipt still verifies. Whether it stands is decided by the coordinator at each
    query, which refuses a query under a revoked consent naming it. A consent revoked before
    the coordinator signed receipts has none (its `receipt` is empty).
    """
    if isinstance(public_key, Path):
        key = load_consent_public_key(public_key)
    elif isinstance(public_key, Ed25519PublicKey):
        key = public_key
    else:
        raise ConfigError(
            f"give the consent public key as a Path to its PEM file or an Ed25519PublicKey, not "
            f"{type(public_key).__name__}",
            field="public_key",
        )
    try:
        return verify_receipt(
            receipt,
            public_key=key,
            now=now if now is not None else datetime.now(UTC),
            expected_grantee=grantee,
            expected_purpose=purpose,
            expected_subject=subject_id,
            issuer=issuer,
            expected_kind=kind,
        )
    except InvalidArgument as exc:
        if isinstance(exc, ReceiptError) or exc.field not in _PARAMETER:
            raise
        raise InvalidArgument(exc.message, field=_PARAMETER[exc.field]) from exc
