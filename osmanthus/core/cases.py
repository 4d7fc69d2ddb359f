"""Objections and credit repair as every package sees them: the case a subject files, its checks.

A subject (through the portal) files a case about one record or list entry of one department:
an objection (异议: the record, or the entry's content or period, is wrong) or a credit-repair
application (信用修复: the obligation behind a black-list entry or a published penalty is
fulfilled, with a credit commitment letter, 信用承诺书). The portal encodes the case
(`encode_draft`) and seals it to the department's case key (`seal_case`, HPKE as for subject
files, under its own domain), so that the coordinator forwards the statement and the
attachments without reading them; the node opens it (`open_case`), and `decode_draft` refuses
anything but this format, naming the field.

Attachments are checked by content, never by name or declared type (`check_attachment`): a
PDF, JPEG or PNG whose bytes are what the declared type says, within MAX_ATTACHMENT_BYTES.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from osmanthus.core.catalogue import Department
from osmanthus.core.errors import InvalidArgument, Unauthenticated
from osmanthus.core.lists import check_text
from osmanthus.core.strictjson import unique_keys
from osmanthus.core.subjectseal import SealContext, open_file, recipient_public_key, seal_file
from osmanthus.core.types import DepartmentId, SubjectKind

#: the HPKE info's domain for a sealed case (osmanthus.core.subjectseal.SealContext)
CASE_SEAL_DOMAIN: Final = "osmanthus-case/v1"
#: the encoded draft's first bytes, then a 4-byte big-endian header length
DRAFT_MAGIC: Final = b"OSMCASE1"
DRAFT_VERSION: Final = 1
#: the subject's statement, and an officer's decision reason
MAX_STATEMENT_CHARS: Final = 2_000
MAX_DECISION_REASON_CHARS: Final = 2_000
MAX_LETTER_CHARS: Final = 4_000
MAX_ATTACHMENTS: Final = 4
#: each attachment, and all of a case's attachments together: a sealed case must fit one
#: message under the servers' 1 MiB receive limit (osmanthus.core.wire.MAX_RECEIVE_BYTES)
MAX_ATTACHMENT_BYTES: Final = 900 * 1024
MAX_ATTACHMENT_NAME_CHARS: Final = 120
MEDIA_PDF: Final = "application/pdf"
MEDIA_JPEG: Final = "image/jpeg"
MEDIA_PNG: Final = "image/png"
MEDIA_TYPES: Final = (MEDIA_PDF, MEDIA_JPEG, MEDIA_PNG)
#: a case id: "case-" and 22 base64url characters (128 random bits)
CASE_ID_PATTERN: Final = re.compile(r"case-[A-Za-z0-9_-]{22}")
#: the deadlines' defaults, in working days from the day the case is filed (Credit China's
#: practice: the reply within 10 working days, the responsible department's decision within 3)
DEFAULT_REPLY_WORKING_DAYS: Final = 10
DEFAULT_DECIDE_WORKING_DAYS: Final = 3
#: how long a decided case's attachments are kept after the decision (days), by default
DEFAULT_RETENTION_DAYS: Final = 3 * 365
#: a subject's filings a node accepts per day, and its open cases at one node, by default
DEFAULT_FILINGS_PER_SUBJECT_PER_DAY: Final = 5
DEFAULT_OPEN_CASES_PER_SUBJECT: Final = 10

_E = TypeVar("_E", bound=enum.Enum)


class CaseKind(enum.Enum):
    OBJECTION = "objection"  # 异议
    REPAIR = "repair"  # 信用修复


class CaseTarget(enum.Enum):
    RECORD = "record"
    LIST_ENTRY = "list_entry"


class CaseGround(enum.Enum):
    RECORD = "record"  # objection: the record is wrong
    ENTRY_CONTENT = "entry_content"  # objection: the list entry's content is wrong
    ENTRY_PERIOD = "entry_period"  # objection: the entry's publication period is wrong
    FULFILLED = "fulfilled"  # repair: the obligation is fulfilled


class CaseStatus(enum.Enum):
    OPEN = "open"
    UPHELD = "upheld"  # objection upheld, or repair approved
    REJECTED = "rejected"


class CaseRemedy(enum.Enum):
    WITHDRAW = "withdraw"
    CORRECT = "correct"


#: which grounds go with which kind and target
GROUNDS: Final[dict[tuple[CaseKind, CaseTarget], frozenset[CaseGround]]] = {
    (CaseKind.OBJECTION, CaseTarget.RECORD): frozenset({CaseGround.RECORD}),
    (CaseKind.OBJECTION, CaseTarget.LIST_ENTRY): frozenset(
        {CaseGround.ENTRY_CONTENT, CaseGround.ENTRY_PERIOD}
    ),
    (CaseKind.REPAIR, CaseTarget.RECORD): frozenset({CaseGround.FULFILLED}),
    (CaseKind.REPAIR, CaseTarget.LIST_ENTRY): frozenset({CaseGround.FULFILLED}),
}


@dataclass(frozen=True, kw_only=True)
class AttachmentFile:
    """An attachment as filed: its content checked against its media type."""

    name: str
    media_type: str
    content: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True, kw_only=True)
class CaseDraft:
    """What the subject files (inside the seal): the department, subject and nonce are the
    seal's context, not repeated here."""

    kind: CaseKind
    ground: CaseGround
    target: CaseTarget
    target_id: str
    statement: str
    attachments: tuple[AttachmentFile, ...] = ()
    #: repair: the commitment letter's text exactly as `commitment_letter` rendered it and the
    #: subject confirmed it; empty for an objection
    commitment_letter: str = ""

    def checked(self) -> CaseDraft:
        """This draft if every field is right; InvalidArgument naming the first wrong one."""
        if self.ground not in GROUNDS[(self.kind, self.target)]:
            raise InvalidArgument(
                f"a {self.kind.value} about a {self.target.value.replace('_', ' ')} cannot rest "
                f"on the ground {self.ground.value!r}",
                field="ground",
            )
        check_text(self.target_id, field="target_id", limit=64)
        statement = check_paragraphs(self.statement, field="statement", limit=MAX_STATEMENT_CHARS)
        if len(self.attachments) > MAX_ATTACHMENTS:
            raise InvalidArgument(
                f"{len(self.attachments)} attachments; at most {MAX_ATTACHMENTS}",
                field="attachments",
            )
        total = sum(len(a.content) for a in self.attachments)
        if total > MAX_ATTACHMENT_BYTES:
            raise InvalidArgument(
                f"the attachments come to {total} bytes together; at most "
                f"{MAX_ATTACHMENT_BYTES} ({MAX_ATTACHMENT_BYTES // 1024} KiB)",
                field="attachments",
            )
        attachments = tuple(
            check_attachment(a.name, a.media_type, a.content, index=i)
            for i, a in enumerate(self.attachments)
        )
        letter = self.commitment_letter
        if self.kind is CaseKind.REPAIR:
            letter = check_paragraphs(letter, field="commitment_letter", limit=MAX_LETTER_CHARS)
        elif letter:
            raise InvalidArgument(
                "an objection carries no commitment letter", field="commitment_letter"
            )
        return CaseDraft(
            kind=self.kind,
            ground=self.ground,
            target=self.target,
            target_id=self.target_id.strip(),
            statement=statement,
            attachments=attachments,
            commitment_letter=letter,
        )


def check_paragraphs(value: str, *, field: str, limit: int) -> str:
    """`value` as text of several lines (a statement, a letter, a decision's reason): line
    breaks normalised to "\\n", the whole stripped, at most `limit` characters, no other
    control or format characters; InvalidArgument naming `field` otherwise."""
    text = value.replace("\r\n", "\n").replace("\r", "\n") if isinstance(value, str) else ""
    lines = [line.rstrip() for line in text.strip().split("\n")]
    for line in lines:
        if line:
            check_text(line, field=field, limit=limit)
    joined = "\n".join(lines)
    if not joined:
        raise InvalidArgument("is empty", field=field)
    if len(joined) > limit:
        raise InvalidArgument(f"is {len(joined)} characters long; at most {limit}", field=field)
    return joined


# --- attachments, checked by content ----------------------------------------------------------

_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
_MEDIA_NAMES: Final = {MEDIA_PDF: "a PDF", MEDIA_JPEG: "a JPEG image", MEDIA_PNG: "a PNG image"}


def sniff_media_type(content: bytes) -> str | None:
    """The media type `content` is, by its bytes (signature and structure), or None."""
    if content.startswith(b"%PDF-") and b"%%EOF" in content[-1024:]:
        return MEDIA_PDF
    if content.startswith(b"\xff\xd8\xff") and content.rstrip(b"\x00\r\n").endswith(b"\xff\xd9"):
        return MEDIA_JPEG
    if _is_png(content):
        return MEDIA_PNG
    return None


def _is_png(content: bytes) -> bool:
    """A PNG signature, then an IHDR chunk whose CRC is right, and an IEND chunk at the end
    (PNG, ISO/IEC 15948 §5.3 and §11.2.2)."""
    if not content.startswith(_PNG_SIGNATURE) or len(content) < 8 + 25 + 12:
        return False
    length, kind = struct.unpack(">I4s", content[8:16])
    if kind != b"IHDR" or length != 13:
        return False
    (crc,) = struct.unpack(">I", content[29:33])
    if zlib.crc32(content[12:29]) != crc:
        return False
    return content[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82"


def check_attachment(name: str, media_type: str, content: bytes, *, index: int) -> AttachmentFile:
    """The attachment if its content is the declared media type (one of MEDIA_TYPES) and
    within MAX_ATTACHMENT_BYTES; InvalidArgument naming `attachments[index]` otherwise."""
    field = f"attachments[{index}]"
    shown = check_text(name, field=f"{field}.name", limit=MAX_ATTACHMENT_NAME_CHARS)
    if media_type not in MEDIA_TYPES:
        raise InvalidArgument(
            f"{shown!r} is declared {media_type or 'without a type'}; only PDF, JPEG and PNG "
            "files are accepted",
            field=f"{field}.media_type",
        )
    if not content:
        raise InvalidArgument(f"{shown!r} is empty", field=field)
    if len(content) > MAX_ATTACHMENT_BYTES:
        raise InvalidArgument(
            f"{shown!r} is {len(content)} bytes; at most {MAX_ATTACHMENT_BYTES} "
            f"({MAX_ATTACHMENT_BYTES // 1024} KiB)",
            field=field,
        )
    found = sniff_media_type(content)
    if found is None:
        raise InvalidArgument(
            f"{shown!r} is not a PDF, JPEG or PNG file by its content (whatever its name says)",
            field=field,
        )
    if found != media_type:
        raise InvalidArgument(
            f"{shown!r} is declared {_MEDIA_NAMES[media_type]} but its content is "
            f"{_MEDIA_NAMES[found]}",
            field=f"{field}.media_type",
        )
    return AttachmentFile(name=shown, media_type=media_type, content=content)


# --- the credit commitment letter --------------------------------------------------------------


def commitment_letter(
    *,
    subject_kind: SubjectKind,
    subject_id: str,
    department: Department,
    target: CaseTarget,
    target_id: str,
) -> str:
    """The credit commitment letter (信用承诺书) for a repair application, Chinese then English.

    The portal shows it and the subject confirms it; the node renders it again from the case
    and refuses an application whose letter differs, so every stored letter is this text."""
    what_zh = "失信名单条目" if target is CaseTarget.LIST_ENTRY else "行政处罚信息"
    what_en = "list entry" if target is CaseTarget.LIST_ENTRY else "published penalty"
    who_zh = "本人" if subject_kind is SubjectKind.PERSON else "本单位"
    who_en = "I" if subject_kind is SubjectKind.PERSON else "We"
    return (
        "信用承诺书\n"
        f"{who_zh}（{subject_id}）就{department.name_zh}（{department.id}）{what_zh}"
        f"（编号 {target_id}）申请信用修复，"
        "郑重承诺：\n"
        "一、已全面履行相关法定义务和约定义务，所提交的材料真实、合法、有效；\n"
        "二、今后严格遵守法律法规，诚信经营、诚信履约；\n"
        "三、如有虚假承诺或违反承诺，自愿接受有关部门依法依规作出的处理，"
        "并同意将违诺情况记入信用记录。\n"
        "\n"
        "Credit commitment letter\n"
        f"{who_en} ({subject_id}) apply for credit repair of the {what_en} {target_id} of "
        f"{department.name} ({department.id}), and solemnly undertake:\n"
        "1. that every legal and contractual obligation concerned has been fulfilled, and the "
        "material filed is true, lawful and valid;\n"
        "2. to abide by the law and keep faith in business and contracts from now on;\n"
        "3. that a false or broken undertaking may be dealt with by the authorities according "
        "to law, and recorded in the credit record."
    )


# --- the encoded draft: magic, header length, RFC 8785 header, attachment bytes ---------------


def encode_draft(draft: CaseDraft) -> bytes:
    """The draft as the portal seals it: DRAFT_MAGIC, the header's length (4 bytes, big
    endian), the header as RFC 8785 JSON, then each attachment's bytes in order."""
    checked = draft.checked()
    header = rfc8785.dumps(
        {
            "version": DRAFT_VERSION,
            "kind": checked.kind.value,
            "ground": checked.ground.value,
            "target": checked.target.value,
            "target_id": checked.target_id,
            "statement": checked.statement,
            "commitment_letter": checked.commitment_letter,
            "attachments": [
                {
                    "name": a.name,
                    "media_type": a.media_type,
                    "size": len(a.content),
                    "sha256": a.sha256,
                }
                for a in checked.attachments
            ],
        }
    )
    return b"".join(
        [DRAFT_MAGIC, struct.pack(">I", len(header)), header]
        + [a.content for a in checked.attachments]
    )


_DRAFT_FIELDS: Final = frozenset(
    {"version", "kind", "ground", "target", "target_id", "statement", "commitment_letter",
     "attachments"}
)  # fmt: skip
_ATTACHMENT_FIELDS: Final = frozenset({"name", "media_type", "size", "sha256"})


def decode_draft(data: bytes) -> CaseDraft:
    """Read what `encode_draft` made, refusing anything else (naming the field), and check
    every field again (CaseDraft.checked): the node trusts nothing the portal checked."""
    head = len(DRAFT_MAGIC) + 4
    if len(data) < head or not data.startswith(DRAFT_MAGIC):
        raise InvalidArgument("the sealed case is not an Osmanthus case draft", field="case")
    (header_length,) = struct.unpack(">I", data[len(DRAFT_MAGIC) : head])
    if header_length > len(data) - head:
        raise InvalidArgument("the case draft's header is cut short", field="case")
    try:
        raw = json.loads(
            data[head : head + header_length].decode("utf-8"), object_pairs_hook=unique_keys("key")
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"the case draft's header is not JSON: {exc}", field="case") from exc
    header = _object(raw, "case", _DRAFT_FIELDS)
    if header["version"] != DRAFT_VERSION:
        raise InvalidArgument(
            f"case draft version {header['version']!r}; this node reads {DRAFT_VERSION}",
            field="version",
        )
    kind = _enum(CaseKind, header["kind"], "kind")
    ground = _enum(CaseGround, header["ground"], "ground")
    target = _enum(CaseTarget, header["target"], "target")
    for name in ("target_id", "statement", "commitment_letter"):
        if not isinstance(header[name], str):
            raise InvalidArgument("must be a string", field=name)
    described = header["attachments"]
    if not isinstance(described, list) or len(described) > MAX_ATTACHMENTS:
        raise InvalidArgument(
            f"must be a list of at most {MAX_ATTACHMENTS} attachments", field="attachments"
        )
    attachments = []
    offset = head + header_length
    for index, item in enumerate(described):
        field = f"attachments[{index}]"
        meta = _object(item, field, _ATTACHMENT_FIELDS)
        size = meta["size"]
        if type(size) is not int or not 0 < size <= MAX_ATTACHMENT_BYTES:
            raise InvalidArgument(
                f"size must be 1 to {MAX_ATTACHMENT_BYTES} bytes", field=f"{field}.size"
            )
        content = data[offset : offset + size]
        offset += size
        if len(content) != size:
            raise InvalidArgument("the attachment's bytes are cut short", field=field)
        if (
            not isinstance(meta["sha256"], str)
            or hashlib.sha256(content).hexdigest() != meta["sha256"]
        ):
            raise InvalidArgument("the attachment's SHA-256 does not match", field=field)
        if not isinstance(meta["name"], str) or not isinstance(meta["media_type"], str):
            raise InvalidArgument("name and media_type must be strings", field=field)
        attachments.append(
            AttachmentFile(name=meta["name"], media_type=meta["media_type"], content=content)
        )
    if offset != len(data):
        raise InvalidArgument(
            f"{len(data) - offset} bytes follow the last attachment", field="attachments"
        )
    return CaseDraft(
        kind=kind,
        ground=ground,
        target=target,
        target_id=header["target_id"],
        statement=header["statement"],
        attachments=tuple(attachments),
        commitment_letter=header["commitment_letter"],
    ).checked()


def _object(raw: object, field: str, expected: frozenset[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidArgument("must be a JSON object", field=field)
    missing = sorted(expected - raw.keys())
    unknown = sorted(raw.keys() - expected)
    if missing or unknown:
        raise InvalidArgument(
            f"fields missing: {missing or 'none'}; unknown: {unknown or 'none'}", field=field
        )
    return raw


def _enum(kind: type[_E], value: object, field: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(m.value) for m in kind)
        raise InvalidArgument(f"is {value!r}; expected one of {allowed}", field=field) from None


# --- sealing to the department's case key -----------------------------------------------------


def case_context(
    *, department: DepartmentId, subject_kind: SubjectKind, subject_id: str, nonce: bytes
) -> SealContext:
    """The HPKE info a case is sealed under: a case sealed for one department, subject or
    filing (nonce) opens for no other, and never as a subject-file part."""
    return SealContext(
        domain=CASE_SEAL_DOMAIN,
        query_id="case",
        source=department,
        subject_kind=subject_kind.value,
        subject_id=subject_id,
        nonce=nonce,
    )


def seal_case(
    draft: CaseDraft,
    *,
    case_key: bytes,
    department: DepartmentId,
    subject_kind: SubjectKind,
    subject_id: str,
    nonce: bytes,
) -> bytes:
    """`draft` encoded and sealed to `case_key` (the department's raw X25519 case key)."""
    return seal_file(
        plaintext=encode_draft(draft),
        recipient_key=case_key,
        context=case_context(
            department=department, subject_kind=subject_kind, subject_id=subject_id, nonce=nonce
        ),
    )


def open_case(
    sealed: bytes,
    *,
    private_key: X25519PrivateKey,
    department: DepartmentId,
    subject_kind: SubjectKind,
    subject_id: str,
    nonce: bytes,
) -> CaseDraft:
    """Open and decode what `seal_case` made; Unauthenticated when it was sealed to another
    key or context, InvalidArgument (naming the field) when the draft inside is wrong."""
    plaintext = open_file(
        sealed=sealed,
        private_key=private_key,
        context=case_context(
            department=department, subject_kind=subject_kind, subject_id=subject_id, nonce=nonce
        ),
    )
    return decode_draft(plaintext)


# --- who sealed it: the portal's proof of origin ---------------------------------------------
#
# The seal (HPKE base mode) hides a case from the coordinator but names no sender: the case key
# is public, so whoever holds a portal's token (the coordinator sees it on every call) could seal
# a case of its own. The portal therefore also proves that it made this very seal, with the
# static-static X25519 agreement between its sealing key (pinned by the token's `seal_fp` claim,
# which the issuer signed) and the department's case key, as HPKE's AuthEncap does (RFC 9180
# §4.1, DH(skS, pkR)): HKDF-SHA256 (RFC 5869) turns the shared secret into a MAC key bound to
# the case's context, and HMAC-SHA256 (RFC 2104) covers the sealed bytes' SHA-256. Only the
# portal and the node can compute it; the node checks it before it opens anything.

#: the HKDF info's prefix for the proof's MAC key (then the case context's RFC 8785 JSON)
SENDER_PROOF_DOMAIN: Final = b"osmanthus-case-sender/v1"
SENDER_PROOF_BYTES: Final = 32


def _proof_key(shared: bytes, context: SealContext) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=SENDER_PROOF_DOMAIN + b"\x00" + context.info(),
    ).derive(shared)


def sender_proof(
    *, sealed: bytes, sender_key: X25519PrivateKey, case_key: bytes, context: SealContext
) -> bytes:
    """The portal's proof that it sealed `sealed` under `context` for the holder of `case_key`."""
    shared = sender_key.exchange(recipient_public_key(case_key, field="case_key"))
    mac = hmac.HMAC(_proof_key(shared, context), hashes.SHA256())
    mac.update(hashlib.sha256(sealed).digest())
    return mac.finalize()


def verify_sender_proof(
    *,
    sealed: bytes,
    proof: bytes,
    sender_public_key: bytes,
    private_key: X25519PrivateKey,
    context: SealContext,
) -> None:
    """Unauthenticated unless `proof` is `sender_proof` of `sealed` by the holder of the
    private half of `sender_public_key` (which the caller has matched against the token's
    `seal_fp`) for this node's case key and `context`."""
    if len(proof) != SENDER_PROOF_BYTES:
        raise InvalidArgument(
            f"the sender's proof is {SENDER_PROOF_BYTES} bytes, got {len(proof)}",
            field="sender_proof",
        )
    sender = recipient_public_key(sender_public_key, field="sender_key")
    try:
        shared = private_key.exchange(sender)
    except ValueError:
        raise Unauthenticated("the sender's key agrees on no secret with the case key") from None
    mac = hmac.HMAC(_proof_key(shared, context), hashes.SHA256())
    mac.update(hashlib.sha256(sealed).digest())
    try:
        mac.verify(proof)
    except InvalidSignature:
        raise Unauthenticated(
            "the case was not sealed by the portal whose token it came with (the sender's "
            "proof does not verify)"
        ) from None


# --- what the node keeps and answers ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CaseCorrection:
    """An upheld objection's correction: the fields that change (None: unchanged)."""

    quantity: int | None = None
    event_start: datetime.date | None = None
    event_end: datetime.date | None = None
    window_end: datetime.date | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.quantity, self.event_start, self.event_end,
                                         self.window_end))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class CaseEvent:
    at: datetime.datetime  # UTC
    event: str  # "filed", "upheld", "rejected", "attachments_deleted"
    actor: str  # "subject" or the officer's certificate name
    detail: str = ""


@dataclass(frozen=True, kw_only=True)
class AttachmentInfo:
    index: int
    media_type: str
    name: str
    size: int
    sha256: str
    deleted: bool = False


@dataclass(frozen=True, kw_only=True)
class Case:
    case_id: str
    department: DepartmentId
    kind: CaseKind
    ground: CaseGround
    target: CaseTarget
    target_id: str
    subject_kind: SubjectKind
    subject_id: str
    statement: str
    commitment_letter: str
    letter_sha256: str
    filed_at: datetime.datetime  # UTC
    decide_by: datetime.date
    reply_by: datetime.date
    #: open past decide_by on the node's today
    overdue: bool
    status: CaseStatus
    decided_at: datetime.datetime | None = None
    decision_reason: str = ""
    remedy: CaseRemedy | None = None
    correction: CaseCorrection | None = None
    attachments: tuple[AttachmentInfo, ...] = ()
    events: tuple[CaseEvent, ...] = ()


@dataclass(frozen=True, kw_only=True)
class CaseReceipt:
    case_id: str
    department: DepartmentId
    filed_at: datetime.datetime
    decide_by: datetime.date
    reply_by: datetime.date
    duplicate: bool = False


@dataclass(frozen=True, kw_only=True)
class Decision:
    """An officer's decision on an open case."""

    case_id: str
    outcome: CaseStatus  # UPHELD or REJECTED
    reason: str
    remedy: CaseRemedy | None = None
    correction: CaseCorrection | None = None

    def checked(self) -> Decision:
        """This decision if it is complete and consistent in itself (the node checks it
        against the case); InvalidArgument naming the field otherwise."""
        if not CASE_ID_PATTERN.fullmatch(self.case_id):
            raise InvalidArgument("is not a case id (case-...)", field="case_id")
        reason = check_paragraphs(self.reason, field="reason", limit=MAX_DECISION_REASON_CHARS)
        if self.outcome is CaseStatus.OPEN:
            raise InvalidArgument("must be upheld or rejected", field="outcome")
        if self.outcome is CaseStatus.REJECTED:
            if self.remedy is not None or (self.correction and not self.correction.empty):
                raise InvalidArgument("a rejection changes nothing: no remedy", field="remedy")
            return Decision(case_id=self.case_id, outcome=self.outcome, reason=reason)
        if self.remedy is None:
            raise InvalidArgument(
                "an upheld case needs a remedy: withdraw or correct", field="remedy"
            )
        correction = self.correction if self.remedy is CaseRemedy.CORRECT else None
        if self.remedy is CaseRemedy.CORRECT and (correction is None or correction.empty):
            raise InvalidArgument("say what the correction changes", field="correction")
        if self.remedy is CaseRemedy.WITHDRAW and self.correction and not self.correction.empty:
            raise InvalidArgument("a withdrawal takes no correction", field="correction")
        if correction is not None and correction.quantity is not None and correction.quantity < 1:
            raise InvalidArgument("must be at least 1", field="correction.quantity")
        return Decision(
            case_id=self.case_id,
            outcome=self.outcome,
            reason=reason,
            remedy=self.remedy,
            correction=correction,
        )


@dataclass(frozen=True, kw_only=True)
class CaseQuery:
    status: CaseStatus | None = None
    overdue_only: bool = False
    page_size: int = 50
    page_token: str = ""


@dataclass(frozen=True, kw_only=True)
class CasePage:
    cases: tuple[Case, ...]
    next_page_token: str = ""
