"""Filing a subject's objection or credit-repair application, as the online portal does it.

The portal has the subject's file (Client.subject_file): each department's part, signed by that
department's node, publishes the department's case key (SubjectFile.case_key, base64url). The
subject picks one of their records or list entries there and writes a case
(osmanthus.core.cases.CaseDraft: an objection, 异议, or a credit-repair application, 信用修复,
with the commitment letter osmanthus.core.cases.commitment_letter renders). `file_case` checks
the draft, seals it to that key (HPKE, bound to the department, the subject and this filing's
nonce: osmanthus.core.cases.seal_case) and files it through the coordinator, which forwards it
unread to the department's node alone. The node answers with a receipt: the case id and the
deadlines in working days.

    part = next(p for p in file.departments if p.source == "housing")
    receipt = file_case(client, subject_kind=SubjectKind.PERSON, subject_id=resident_id,
                        department="housing", draft=draft, case_key=case_key_bytes(part.case_key),
                        sender_key=device_sealing_key)

`sender_key` is the portal device's X25519 sealing key, the one its token names in `seal_fp`
(the key that opens the subject's file). With it the portal proves to the node that it made
this very seal (osmanthus.core.cases.sender_proof): the case key is public and the coordinator
sees the portal's token, so without the proof the coordinator could file cases of its own.

Filing the same case again with the same nonce (after a timeout, say) returns the receipt of
the case filed the first time, marked `duplicate`: keep the nonce until a receipt comes back.
Only a portal device may file (role portal, purpose self_query); refusals come as the SDK's
errors, with the node's message and field (NotFound: no such record of the subject's;
FailedPrecondition: a case already open on it; RateLimited: too many filings).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.cases import (
    CASE_ID_PATTERN,
    CaseDraft,
    CaseReceipt,
    case_context,
    seal_case,
    sender_proof,
)
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.ids import validate_subject
from osmanthus.core.subjectseal import check_nonce, new_nonce, public_bytes
from osmanthus.core.types import SELF_QUERY, DepartmentId, SubjectKind
from osmanthus.core.wire.cases import (
    FileCaseRequest,
    file_case_request_to_proto,
    receipt_from_proto,
)
from sdk.client import Client

#: an X25519 public key, raw
CASE_KEY_BYTES: Final = 32
_BASE64URL: Final = re.compile(r"[A-Za-z0-9_-]{43}")
#: a department id as the catalogue spells it (osmanthus.core.catalogue.DEPARTMENT_ID_PATTERN)
_DEPARTMENT: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")


def case_key_bytes(text: str) -> bytes:
    """The raw 32-byte case key from the base64url text (no padding) a department's part of
    the subject's file carries as `case_key`; InvalidArgument naming `case_key` otherwise."""
    if not isinstance(text, str) or not _BASE64URL.fullmatch(text):
        raise InvalidArgument(
            "a department's case key is 43 base64url characters (32 bytes, no padding), as "
            "its part of the subject's file gives it (the coordinator's own part has none)",
            field="case_key",
        )
    try:
        key = base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only base64url
        raise InvalidArgument("is not base64url", field="case_key") from None
    return key


def file_case(
    client: Client,
    *,
    subject_kind: SubjectKind,
    subject_id: str,
    department: str,
    draft: CaseDraft,
    case_key: bytes,
    sender_key: X25519PrivateKey,
    nonce: bytes | None = None,
) -> CaseReceipt:
    """File `draft` about the subject with `department`, sealed to its `case_key` (raw 32
    bytes: `case_key_bytes(part.case_key)`), and return the department's receipt.

    `sender_key` is the portal device's X25519 sealing key, whose public half's SHA-256 its
    token carries as `seal_fp`: the node files the case only if the proof made with it
    (osmanthus.core.cases.sender_proof) verifies, so nobody else holding the token can.

    `nonce` (16 to 64 random bytes; a fresh 32 unless given) names this filing: file again
    with the same nonce to learn whether an earlier attempt went through. Nothing is sent
    unless the draft passes every check the node will make of its own fields
    (CaseDraft.checked: InvalidArgument naming the field, an attachment by its index).
    """
    if not isinstance(subject_kind, SubjectKind):
        raise InvalidArgument(
            f"{subject_kind!r} is not a SubjectKind (PERSON or ENTERPRISE)", field="subject_kind"
        )
    subject = validate_subject(subject_kind, subject_id, field=subject_kind.id_field)
    if not isinstance(department, str) or not _DEPARTMENT.fullmatch(department):
        raise InvalidArgument(
            f"{str(department)[:40]!r} is not a department id (lower-case letters, digits and "
            "'_', starting with a letter)",
            field="department",
        )
    if not isinstance(case_key, bytes) or len(case_key) != CASE_KEY_BYTES:
        raise InvalidArgument(
            f"the department's case key is {CASE_KEY_BYTES} raw bytes; turn the text its part "
            "of the subject's file carries into them with case_key_bytes(part.case_key)",
            field="case_key",
        )
    if not isinstance(sender_key, X25519PrivateKey):
        raise InvalidArgument(
            f"the portal's sealing key is an X25519 private key, not {type(sender_key).__name__}"
            " (the key its token names in seal_fp)",
            field="sender_key",
        )
    chosen = new_nonce() if nonce is None else check_nonce(nonce)
    dept = DepartmentId(department)
    sealed = seal_case(
        draft.checked(),
        case_key=case_key,
        department=dept,
        subject_kind=subject_kind,
        subject_id=subject,
        nonce=chosen,
    )
    proof = sender_proof(
        sealed=sealed,
        sender_key=sender_key,
        case_key=case_key,
        context=case_context(
            department=dept, subject_kind=subject_kind, subject_id=subject, nonce=chosen
        ),
    )
    request = FileCaseRequest(
        subject_kind=subject_kind,
        subject_id=subject,
        purpose=SELF_QUERY,
        department=dept,
        case_nonce=chosen,
        sealed_case=sealed,
        sender_key=public_bytes(sender_key),
        sender_proof=proof,
    )
    message = client.call_coordinator("FileCase", file_case_request_to_proto(request))
    try:
        receipt = receipt_from_proto(message)
    except InvalidArgument as exc:
        raise CryptoError(
            f"the coordinator sent a malformed receipt: {exc.message}", field=exc.field
        ) from None
    if receipt.department != dept or not CASE_ID_PATTERN.fullmatch(receipt.case_id):
        raise CryptoError(
            f"the coordinator sent a receipt of {receipt.department[:40]!r} (case id "
            f"{receipt.case_id[:40]!r}), not one of {dept}'s",
            field="department",
        )
    return receipt
