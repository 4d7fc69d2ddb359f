"""A node's own check of the consent a request rests on: the registry's signed receipt and its
revocation feed, verified here rather than taken on the coordinator's word.

The coordinator forwards, with every request under a consent, the receipt the consent registry
signed when the consent was recorded, and staples the registry's signed revocation head with the
feed entries this node lacks (osmanthus.core.consent_feed). The node checks the receipt against
the consent public key it was configured with (signature, issuer, subject kind, subject,
grantee = the token's requester, purpose, validity, consent id), then that the stapled head is
of the revocation feed the receipt is bound to (a receipt without that claim is refused), that
its view of that feed is fresh, and that the consent is not revoked in any feed it verified.
Whether a purpose needs a consent at all is this node's own policy's to say
(`ContributeWithoutConsent`), never the coordinator's.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from osmanthus.core.consent_feed import (
    RevocationFeedRefused,
    RevocationsBehind,
    RevocationsStale,
    RevocationView,
)
from osmanthus.core.errors import (
    FailedPrecondition,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
)
from osmanthus.core.receipts import (
    CONSENT_ID_PATTERN,
    DEFAULT_LEEWAY,
    MAX_RECEIPT_CHARS,
    REVOCATION_FEED_CLAIM,
    MalformedReceipt,
    ReceiptError,
    ReceiptMismatch,
    ReceiptNotInForce,
    UntrustedReceipt,
    verify_receipt,
)
from osmanthus.core.types import SubjectKind
from osmanthus.core.wire.node import ContributionRequest

_log = logging.getLogger(__name__)

#: the file in the node's state directory that keeps its verified view of the revocation feed
REVOCATIONS_FILE = "consent_revocations.json"
#: a key id as signing.key_id makes them (an RFC 7638 thumbprint, base64url), for the audit log
_KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
#: what the audit log and warnings show for an unverified id that is not one
UNREADABLE_ID = "(unreadable)"


@dataclass(frozen=True)
class ConsentVerdict:
    """What the node found: `state` for its audit log ("valid", "missing", "untrusted",
    "revoked", ...), the sentence saying why, and the error to refuse with when the consent is
    needed. `receipt_id` is the consent id the receipt claims (read before it is verified, so
    that a forged receipt is named in the audit log too) and `receipt_key` the key id it names.
    """

    state: str
    reason: str
    error: OsmanthusError | None = None
    receipt_id: str = ""
    receipt_key: str = ""

    @property
    def valid(self) -> bool:
        return self.error is None


class ReceiptConsentCheck:
    """Verifies receipts against the consent key `public_key` (named `issuer`) and revocations
    against `view`. Deny by default: anything it cannot verify is not a valid consent."""

    def __init__(
        self,
        *,
        public_key: Ed25519PublicKey,
        issuer: str,
        view: RevocationView,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> None:
        self._public_key = public_key
        self._issuer = issuer
        self._view = view
        self._clock = clock
        self._leeway = leeway

    def verdict(
        self,
        request: ContributionRequest,
        *,
        kind: SubjectKind,
        subject: str,
        grantee: str,
        purpose: str,
    ) -> ConsentVerdict:
        """Whether `request` carries a consent this node verified itself (see the module)."""
        receipt = request.consent_receipt
        if not receipt:
            return ConsentVerdict(
                state="missing",
                reason="no consent receipt came with the request",
                error=PermissionDenied(
                    "no consent: the request carries no consent receipt, and this department "
                    "answers under a consent only with the registry's signed receipt",
                    field="consent_receipt",
                ),
            )
        claimed_id, claimed_key = _unverified_ids(receipt)
        now = self._clock()
        try:
            verified = verify_receipt(
                receipt,
                public_key=self._public_key,
                now=now,
                expected_grantee=grantee,
                expected_purpose=purpose,
                expected_subject=subject,
                issuer=self._issuer,
                leeway=self._leeway,
                expected_kind=kind,
            )
        except ReceiptError as exc:
            return ConsentVerdict(
                state=_receipt_state(exc),
                reason=exc.message,
                error=PermissionDenied(
                    f"no consent: the consent receipt was refused: {exc.message}",
                    field="consent_receipt",
                ),
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        if verified.revocation_feed is None:
            # a receipt signed before receipts named their feed: which feed's revocations
            # apply is unknown, so none can be shown to be absent (the registry re-signs such
            # receipts when it opens)
            return ConsentVerdict(
                state="unbound_receipt",
                reason=f"the receipt for consent {verified.consent_id} names no revocation feed",
                error=PermissionDenied(
                    f"no consent: the receipt for consent {verified.consent_id} names no "
                    f"revocation feed (claim {REVOCATION_FEED_CLAIM!r}); the consent registry "
                    "signs receipts bound to its feed",
                    field="consent_receipt",
                ),
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        if verified.consent_id != request.consent_id:
            return ConsentVerdict(
                state="consent_id_mismatch",
                reason=f"the receipt is for consent {verified.consent_id}, not "
                f"{request.consent_id[:40]!r}",
                error=PermissionDenied(
                    f"no consent: the receipt is for consent {verified.consent_id}, not the "
                    f"consent {request.consent_id[:40]!r} the request names",
                    field="consent_id",
                ),
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        try:
            head = self._view.learn(request.revocation_head, request.revocations, now=now)
            if head.feed != verified.revocation_feed:
                # another feed the consent key signed (a registry started afresh, a staging
                # copy) may lack this consent's revocation
                raise RevocationFeedRefused(
                    f"the revocation head is of feed {head.feed}, but the receipt for consent "
                    f"{verified.consent_id} is bound to feed {verified.revocation_feed}",
                    field="revocation_head",
                )
            revoked = self._view.check(verified.consent_id, head=head, now=now)
        except RevocationsBehind as exc:
            # the coordinator sends the missing entries and asks again
            return ConsentVerdict(
                state="revocations_behind",
                reason=exc.message,
                error=exc,
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        except (RevocationsStale, RevocationFeedRefused, InvalidArgument) as exc:
            state = "revocations_stale" if isinstance(exc, RevocationsStale) else "feed_refused"
            return ConsentVerdict(
                state=state,
                reason=exc.message,
                error=FailedPrecondition(
                    f"no consent answered: the revocation feed is not verified: {exc.message}",
                    field=exc.field,
                )
                if isinstance(exc, RevocationsStale)
                else PermissionDenied(
                    f"no consent answered: the revocation feed was refused: {exc.message}",
                    field=exc.field,
                ),
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        if revoked is not None:
            when = datetime.fromtimestamp(revoked.revoked_at, UTC).isoformat(timespec="seconds")
            return ConsentVerdict(
                state="revoked",
                reason=f"consent {verified.consent_id} was revoked at {when}",
                error=PermissionDenied(
                    f"no consent: consent {verified.consent_id} was revoked at "
                    f"{when.replace('+00:00', 'Z')} (revocation feed entry {revoked.sequence})",
                    field="consent_id",
                ),
                receipt_id=claimed_id,
                receipt_key=claimed_key,
            )
        return ConsentVerdict(
            state="valid",
            reason=f"receipt for consent {verified.consent_id} verified; not revoked",
            receipt_id=verified.consent_id,
            receipt_key=verified.key_id,
        )


class NoConsentCheck:
    """A node without a consent public key: no consent is ever valid (deny by default)."""

    def verdict(
        self,
        request: ContributionRequest,
        *,
        kind: SubjectKind,
        subject: str,
        grantee: str,
        purpose: str,
    ) -> ConsentVerdict:
        """Always refused: this node cannot verify receipts."""
        return ConsentVerdict(
            state="unverifiable",
            reason="this node has no consent public key",
            error=PermissionDenied(
                "no consent: this node is configured without the consent registry's public "
                "key and answers no query that needs a consent",
                field="consent_receipt",
            ),
        )


class UnsafeTrustCoordinatorConsent:
    """Takes the coordinator's word for every consent, as nodes did before receipts travelled
    (`node serve --unsafe-trust-coordinator-consent`): for tests and migrations only."""

    def verdict(
        self,
        request: ContributionRequest,
        *,
        kind: SubjectKind,
        subject: str,
        grantee: str,
        purpose: str,
    ) -> ConsentVerdict:
        """Always valid: the coordinator said so."""
        return ConsentVerdict(
            state="unchecked",
            reason="consent not checked by this node (unsafe: the coordinator's word)",
            receipt_id=_unverified_ids(request.consent_receipt)[0]
            if request.consent_receipt
            else "",
        )


ConsentCheck = ReceiptConsentCheck | NoConsentCheck | UnsafeTrustCoordinatorConsent


def _receipt_state(exc: ReceiptError) -> str:
    if isinstance(exc, UntrustedReceipt):
        return "untrusted"
    if isinstance(exc, MalformedReceipt):
        return "malformed"
    if isinstance(exc, ReceiptNotInForce):
        return "not_in_force"
    if isinstance(exc, ReceiptMismatch):
        return f"{exc.field or 'receipt'}_mismatch"
    return "refused"


def _unverified_ids(receipt: str) -> tuple[str, str]:
    """(jti, kid) a receipt claims, unverified and bounded, for the audit log; "" if unreadable.

    Consent ids and key ids are not personal data; the subject is never read here.
    """
    if len(receipt) > MAX_RECEIPT_CHARS:
        return "", ""
    try:
        header, payload = receipt.split(".")[:2]
        kid = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))).get("kid")
        jti = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))).get("jti")
    except (ValueError, AttributeError, binascii.Error, RecursionError):
        return "", ""
    # unverified and logged: only what a consent id or a key id can be, nothing that could
    # forge a log line (a newline, a terminal escape) or stand in for another field
    return (
        (jti if CONSENT_ID_PATTERN.fullmatch(jti) else UNREADABLE_ID)
        if isinstance(jti, str)
        else "",
        (kid if _KEY_ID_PATTERN.fullmatch(kid) else UNREADABLE_ID) if isinstance(kid, str) else "",
    )
