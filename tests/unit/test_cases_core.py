"""The case a subject files (osmanthus.core.cases) and the working-day calendar (workdays)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.cases import (
    DRAFT_MAGIC,
    MAX_ATTACHMENT_BYTES,
    MEDIA_JPEG,
    MEDIA_PDF,
    MEDIA_PNG,
    AttachmentFile,
    CaseCorrection,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
    case_context,
    check_attachment,
    commitment_letter,
    decode_draft,
    encode_draft,
    open_case,
    seal_case,
    sender_proof,
    sniff_media_type,
    verify_sender_proof,
)
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.subjectseal import SealContext, open_file, public_bytes, seal_file
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.core.workdays import CaseSettings, WorkCalendar
from tests.casefiles import tiny_jpeg, tiny_pdf, tiny_png

SUBJECT = "320508198810061286"
HOUSING = DepartmentId("housing")
NONCE = b"n" * 32


def draft(**changes: object) -> CaseDraft:
    base = CaseDraft(
        kind=CaseKind.OBJECTION,
        ground=CaseGround.RECORD,
        target=CaseTarget.RECORD,
        target_id="HS-2025-0117",
        statement="租赁登记已办理，记录针对的是前一位租户 The tenancy was registered",
        attachments=(
            AttachmentFile(name="登记证明.pdf", media_type=MEDIA_PDF, content=tiny_pdf()),
        ),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_content_decides_the_type_not_the_name() -> None:
    assert sniff_media_type(tiny_pdf()) == MEDIA_PDF
    assert sniff_media_type(tiny_png()) == MEDIA_PNG
    assert sniff_media_type(tiny_jpeg()) == MEDIA_JPEG
    assert sniff_media_type(b"just some text, named proof.pdf") is None
    # a PDF header without its end, a PNG whose header chunk is corrupt
    assert sniff_media_type(b"%PDF-1.4\n1 0 obj\n") is None
    png = bytearray(tiny_png())
    png[20] ^= 0xFF
    assert sniff_media_type(bytes(png)) is None


@pytest.mark.parametrize(
    ("name", "media_type", "content", "field", "words"),
    [
        ("proof.pdf", MEDIA_PDF, tiny_png(), "attachments[0].media_type", "its content is a PNG"),
        ("proof.pdf", MEDIA_PDF, b"hello, I am text", "attachments[0]", "not a PDF, JPEG or PNG"),
        ("proof.exe", "application/x-msdownload", tiny_pdf(), "attachments[0].media_type", "only"),
        ("empty.pdf", MEDIA_PDF, b"", "attachments[0]", "is empty"),
        ("big.pdf", MEDIA_PDF, b"%PDF-1.4" + b" " * MAX_ATTACHMENT_BYTES + b"%%EOF",
         "attachments[0]", f"at most {MAX_ATTACHMENT_BYTES}"),
        ("", MEDIA_PDF, tiny_pdf(), "attachments[0].name", "is empty"),
    ],
)  # fmt: skip
def test_bad_attachments_are_refused_naming_the_field(
    name: str, media_type: str, content: bytes, field: str, words: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_attachment(name, media_type, content, index=0)
    assert info.value.field == field
    assert words in str(info.value)


def test_a_draft_round_trips_and_the_node_checks_it_again() -> None:
    data = encode_draft(draft())
    assert data.startswith(DRAFT_MAGIC)
    assert decode_draft(data) == draft().checked()
    # the attachment travels as bytes, not base64: the draft is barely larger than its parts
    assert len(data) < len(tiny_pdf()) + 600


def _rebuilt(data: bytes, change: object) -> bytes:
    head = len(DRAFT_MAGIC) + 4
    (length,) = struct.unpack(">I", data[len(DRAFT_MAGIC) : head])
    header = json.loads(data[head : head + length])
    change(header)  # type: ignore[operator]
    raw = json.dumps(header).encode()
    return DRAFT_MAGIC + struct.pack(">I", len(raw)) + raw + data[head + length :]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda h: h.update(extra=1), "case"),
        (lambda h: h.update(kind="complaint"), "kind"),
        (lambda h: h.update(ground="entry_period"), "ground"),
        (lambda h: h.update(statement=""), "statement"),
        (lambda h: h["attachments"][0].update(sha256="0" * 64), "attachments[0]"),
        (lambda h: h["attachments"][0].update(media_type=MEDIA_PNG), "attachments[0].media_type"),
        (lambda h: h["attachments"][0].update(size=10), "attachments[0]"),
        (lambda h: h.update(commitment_letter="I promise"), "commitment_letter"),
        (lambda h: h.update(version=2), "version"),
    ],
)
def test_anything_but_a_well_formed_draft_is_refused(change: object, field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        decode_draft(_rebuilt(encode_draft(draft()), change))
    assert info.value.field == field


def test_trailing_bytes_and_foreign_data_are_refused() -> None:
    with pytest.raises(InvalidArgument):
        decode_draft(encode_draft(draft()) + b"x")
    with pytest.raises(InvalidArgument):
        decode_draft(b"%PDF-1.4 not a case")


def test_grounds_must_fit_the_kind_and_target() -> None:
    with pytest.raises(InvalidArgument) as info:
        draft(kind=CaseKind.REPAIR).checked()
    assert info.value.field == "ground"
    with pytest.raises(InvalidArgument) as info:
        draft(target=CaseTarget.LIST_ENTRY).checked()
    assert info.value.field == "ground"
    # a repair needs its letter
    with pytest.raises(InvalidArgument) as info:
        draft(kind=CaseKind.REPAIR, ground=CaseGround.FULFILLED).checked()
    assert info.value.field == "commitment_letter"
    with pytest.raises(InvalidArgument) as info:
        draft(attachments=tuple(draft().attachments * 5)).checked()
    assert info.value.field == "attachments"


def test_the_commitment_letter_names_the_subject_and_the_entry() -> None:
    letter = commitment_letter(
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id="91320508MA1GH2028W",
        department=load_catalogue().department(DepartmentId("samr")),
        target=CaseTarget.LIST_ENTRY,
        target_id="MK-2026-0042",
    )
    assert letter.startswith("信用承诺书")
    assert "91320508MA1GH2028W" in letter and "MK-2026-0042" in letter and "本单位" in letter
    assert "Credit commitment letter" in letter
    assert "市市场监管局（samr）" in letter and "Market Regulation Bureau (samr)" in letter
    repair = draft(
        kind=CaseKind.REPAIR,
        ground=CaseGround.FULFILLED,
        target=CaseTarget.LIST_ENTRY,
        commitment_letter=letter,
    )
    assert decode_draft(encode_draft(repair)).commitment_letter == letter


def test_a_sealed_case_opens_only_for_its_department_subject_and_nonce() -> None:
    key = X25519PrivateKey.generate()
    where = {"department": HOUSING, "subject_kind": SubjectKind.PERSON, "subject_id": SUBJECT}
    sealed = seal_case(draft(), case_key=public_bytes(key), nonce=NONCE, **where)  # type: ignore[arg-type]
    assert open_case(sealed, private_key=key, nonce=NONCE, **where) == draft().checked()  # type: ignore[arg-type]
    for other in (
        {**where, "department": DepartmentId("transport")},
        {**where, "subject_id": "32050619790315517X"},
    ):
        with pytest.raises(Unauthenticated):
            open_case(sealed, private_key=key, nonce=NONCE, **other)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        open_case(sealed, private_key=key, nonce=b"m" * 32, **where)  # type: ignore[arg-type]
    with pytest.raises(Unauthenticated):
        open_case(sealed, private_key=X25519PrivateKey.generate(), nonce=NONCE, **where)  # type: ignore[arg-type]


def test_a_case_seal_never_opens_as_a_subject_file_part() -> None:
    key = X25519PrivateKey.generate()
    plain = b"{}"
    context = SealContext(
        query_id="case", source=HOUSING, subject_kind="person", subject_id=SUBJECT, nonce=NONCE
    )
    sealed = seal_file(
        plaintext=plain,
        recipient_key=public_bytes(key),
        context=dataclasses.replace(context, domain="osmanthus-case/v1"),
    )
    with pytest.raises(Unauthenticated):
        open_file(sealed=sealed, private_key=key, context=context)


def test_decisions_are_checked_in_themselves() -> None:
    case_id = "case-" + "A" * 22
    upheld = Decision(
        case_id=case_id, outcome=CaseStatus.UPHELD, reason="核实有误", remedy=CaseRemedy.WITHDRAW
    )
    assert upheld.checked() == upheld
    for bad, field in [
        (dataclasses.replace(upheld, case_id="case-1"), "case_id"),
        (dataclasses.replace(upheld, reason=" "), "reason"),
        (dataclasses.replace(upheld, remedy=None), "remedy"),
        (dataclasses.replace(upheld, remedy=CaseRemedy.CORRECT), "correction"),
        (
            dataclasses.replace(upheld, correction=CaseCorrection(quantity=2)),
            "correction",
        ),
        (dataclasses.replace(upheld, outcome=CaseStatus.REJECTED), "remedy"),
        (dataclasses.replace(upheld, outcome=CaseStatus.OPEN), "outcome"),
        (
            dataclasses.replace(
                upheld, remedy=CaseRemedy.CORRECT, correction=CaseCorrection(quantity=0)
            ),
            "correction.quantity",
        ),
    ]:
        with pytest.raises(InvalidArgument) as info:
            bad.checked()
        assert info.value.field == field, bad


# --- working days ------------------------------------------------------------------------------

FRIDAY = datetime.date(2026, 12, 4)


def test_deadlines_count_working_days_from_the_day_after_filing() -> None:
    settings = CaseSettings()
    assert settings.decide_by(FRIDAY) == datetime.date(2026, 12, 9)  # Mon, Tue, Wed
    assert settings.reply_by(FRIDAY) == datetime.date(2026, 12, 18)  # two weeks of workdays
    calendar = WorkCalendar(
        holidays=frozenset({datetime.date(2026, 12, 7)}),
        working_weekend_days=frozenset({datetime.date(2026, 12, 5)}),
    )
    # Saturday 5th worked in exchange for Monday 7th: Sat, Tue, Wed
    assert calendar.add_working_days(FRIDAY, 3) == datetime.date(2026, 12, 9)
    assert calendar.add_working_days(FRIDAY, 0) == FRIDAY


def test_the_case_settings_file_is_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "cases.toml"
    path.write_text(
        "[deadlines]\nreply_working_days = 15\ndecide_working_days = 5\n"
        "[retention]\ndays = 30\n"
        "[limits]\nfilings_per_subject_per_day = 2\n"
        '[calendar]\nholidays = ["2026-12-07", 2026-12-08]\n'
        'working_weekend_days = ["2026-12-05"]\n'
    )
    settings = CaseSettings.load(path)
    assert (settings.reply_working_days, settings.decide_working_days) == (15, 5)
    assert settings.retention_days == 30
    assert settings.filings_per_subject_per_day == 2
    assert settings.open_cases_per_subject == CaseSettings().open_cases_per_subject
    assert settings.calendar.holidays == {datetime.date(2026, 12, 7), datetime.date(2026, 12, 8)}


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[deadline]\n", "unknown section"),
        ("[deadlines]\nreply_days = 3\n", "unknown key"),
        ("[deadlines]\ndecide_working_days = 0\n", "deadlines.decide_working_days"),
        ("[deadlines]\ndecide_working_days = '3'\n", "deadlines.decide_working_days"),
        ('[calendar]\nholidays = ["2026-13-01"]\n', "calendar.holidays"),
        ('[calendar]\nworking_weekend_days = ["2026-12-07"]\n', "Monday"),
        ("[deadlines\n", "not a TOML file"),
    ],
)
def test_a_bad_settings_file_is_refused_naming_the_key(
    tmp_path: Path, text: str, words: str
) -> None:
    path = tmp_path / "cases.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        CaseSettings.load(path)
    assert words in str(info.value)
    assert str(path) in str(info.value)


def test_a_statement_may_run_over_several_lines_but_holds_no_control_characters() -> None:
    several = draft(statement="第一段 First\r\n\r\n第二段 Second  \n").checked()
    assert several.statement == "第一段 First\n\n第二段 Second"
    with pytest.raises(InvalidArgument) as info:
        draft(statement="hidden\x1b[2Jescape").checked()
    assert info.value.field == "statement"
    with pytest.raises(InvalidArgument) as info:
        draft(statement="\n \r\n").checked()
    assert info.value.field == "statement"


def test_only_the_portal_holding_its_sealing_key_can_prove_it_sealed_a_case() -> None:
    node_key, portal_key, coordinator_key = (X25519PrivateKey.generate() for _ in range(3))
    context = case_context(
        department=HOUSING, subject_kind=SubjectKind.PERSON, subject_id=SUBJECT, nonce=NONCE
    )
    sealed = seal_case(
        draft(), case_key=public_bytes(node_key), department=HOUSING,
        subject_kind=SubjectKind.PERSON, subject_id=SUBJECT, nonce=NONCE,
    )  # fmt: skip
    proof = sender_proof(
        sealed=sealed, sender_key=portal_key, case_key=public_bytes(node_key), context=context
    )
    check = {"private_key": node_key, "context": context}
    verify_sender_proof(
        sealed=sealed, proof=proof, sender_public_key=public_bytes(portal_key), **check
    )
    # a coordinator that seals its own case has the case key and the portal's token, not the
    # portal's private key: its proof (with its own key) fails against the portal's public key
    forged = sender_proof(
        sealed=sealed, sender_key=coordinator_key, case_key=public_bytes(node_key),
        context=context,
    )  # fmt: skip
    with pytest.raises(Unauthenticated):
        verify_sender_proof(
            sealed=sealed, proof=forged, sender_public_key=public_bytes(portal_key), **check
        )
    # the proof covers the sealed bytes and the context
    with pytest.raises(Unauthenticated):
        verify_sender_proof(
            sealed=sealed + b"x", proof=proof, sender_public_key=public_bytes(portal_key), **check
        )
    other = dataclasses.replace(context, subject_id="32050619790315517X")
    with pytest.raises(Unauthenticated):
        verify_sender_proof(
            sealed=sealed, proof=proof, sender_public_key=public_bytes(portal_key),
            private_key=node_key, context=other,
        )  # fmt: skip
    with pytest.raises(InvalidArgument) as info:
        verify_sender_proof(
            sealed=sealed, proof=proof[:16], sender_public_key=public_bytes(portal_key), **check
        )
    assert info.value.field == "sender_proof"
