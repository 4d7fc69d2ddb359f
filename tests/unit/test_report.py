"""Enterprise credit reports: building, rendering (HTML and PDF), and every way a tampered report
is refused."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import json
import os
import random
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import jwt
import pytest
import reportlab
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader, PdfWriter
from pypdf.annotations import FreeText
from pypdf.generic import (
    ArrayObject,
    DecodedStreamObject,
    DictionaryObject,
    NameObject,
    NumberObject,
    RectangleObject,
    StreamObject,
)
from reportlab.platypus import Paragraph, SimpleDocTemplate

from osmanthus.cli import main
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue, ListColour, load_catalogue
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import make_uscc
from osmanthus.core.lists import EntryId, PublicEntry
from osmanthus.core.score import Breakdown, grade, score
from osmanthus.core.types import DepartmentId, DepartmentStatus, Shape, SubjectKind
from sdk.report import (
    CODE_PATTERN,
    EMBED_ID,
    MAX_CONTENT_BYTES,
    MAX_ENVELOPE_BYTES,
    MAX_REPORT_BYTES,
    PDF_ATTACHMENT,
    RENDERER,
    REPORT_ID_PATTERN,
    EnterpriseReport,
    LegacyReport,
    MalformedReport,
    RendererMismatch,
    ReportBonus,
    ReportDepartment,
    ReportListEntry,
    ReportRenderer,
    ReportRestriction,
    SignedReport,
    TamperedReport,
    UnprintableReport,
    build_enterprise_report,
    canonical_content,
    render_html,
    render_pdf,
    sign_report,
    verification_code,
    verify_report,
    verify_report_html,
    verify_report_pdf,
)
from sdk.report.model import RENDERER_REVISION
from sdk.report.signed import envelope_text
from sdk.results import EnterpriseScore, ListSearchResult, RestrictionResult

FIRM = make_uscc(authority="9", category="1", region="320500", organisation="M000100Y4")
WHEN = datetime(2026, 11, 26, 9, 30, 15, 123456, tzinfo=UTC)
#: the day of WHEN in China Standard Time, the day list windows are counted in
DAY = date(2026, 11, 26)
FIRM_NAME = "Suzhou Osmanthus Trading Co., Ltd. 苏州桂花贸易有限公司"


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def _status(department: str, detail: str = "answered", rules: str = "2026.1") -> DepartmentStatus:
    return DepartmentStatus(department=DepartmentId(department), detail=detail, rules_version=rules)


def make_score(
    catalogue: Catalogue, *, deductions: int = 25, owner_missing: bool = True
) -> EnterpriseScore:
    model = catalogue.model(SubjectKind.ENTERPRISE)
    bonuses: dict[str, int | None] = {c.name: min(7, c.cap) for c in model.categories}
    missing: tuple[DepartmentStatus, ...] = ()
    if owner_missing:
        # the environmental credit's owner did not answer: its category is unknown
        bonuses["environmental_credit"] = None
        missing = (_status("eco", "deadline exceeded", ""),)
    value = score(model, Breakdown(deductions=deductions, bonuses=bonuses))
    return EnterpriseScore(
        subject_id=FIRM,
        score=value,
        base=model.base,
        deductions=deductions,
        bonuses=bonuses,
        shape=Shape.BREAKDOWN,
        answered=tuple(_status(d) for d in ("court", "tax", "hrss", "samr", "customs")),
        missing=missing,
        query_id="q-score-1",
        grade=grade(model, value),
    )


def make_restrictions(catalogue: Catalogue, in_force: set[str]) -> RestrictionResult:
    return RestrictionResult(
        subject_id=FIRM,
        restricted={m.id: m.id in in_force for m in catalogue.measures},
        answered=(_status("court"), _status("tax")),
        query_id="q-flags-1",
    )


def list_entry(
    catalogue: Catalogue,
    list_id: str,
    entry_id: str,
    *,
    start: date = DAY - timedelta(days=365),
    end: date = DAY + timedelta(days=730),
    reason: str = "failed to perform an effective judgement (2025) Su 05 Zhi 123",
) -> PublicEntry:
    """An entry of the catalogue's list `list_id` about FIRM, as the public search returns it."""
    (list_type,) = [t for t in catalogue.lists if t.id == list_id]
    return PublicEntry(
        entry_id=EntryId(entry_id),
        department=list_type.department,
        list=list_type.id,
        colour=list_type.colour,
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=FIRM,
        subject_name=FIRM_NAME,
        legal_basis=list_type.legal_basis,
        reason=reason,
        window_start=start,
        window_end=end,
        facilitation_class=list_type.facilitation_class,
    )


def make_lists(
    catalogue: Catalogue,
    entries: tuple[PublicEntry, ...] | None = None,
    missing: tuple[DepartmentStatus, ...] = (),
) -> ListSearchResult:
    """The answer of search_lists(kind=ENTERPRISE, subject=FIRM); by default a red AA entry of
    customs and a black entry of the court."""
    if entries is None:
        entries = (
            list_entry(
                catalogue,
                "customs_advanced_certified",
                "AEO-2026-0042",
                start=DAY - timedelta(days=30),
                end=date(2029, 11, 26),
                reason="certified under the advanced standard after the 2026 audit",
            ),
            list_entry(catalogue, "judgement_defaulters", "2025-su05-zhi-0123"),
        )
    return ListSearchResult(
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=FIRM,
        list_id=None,
        entries=entries,
        missing=missing,
    )


@pytest.fixture(scope="module")
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def signed(catalogue: Catalogue, key: Ed25519PrivateKey) -> SignedReport:
    report = build_enterprise_report(
        score=make_score(catalogue),
        restrictions=make_restrictions(catalogue, {"bank_loan", "government_procurement"}),
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer="Gusu Credit Agency 姑苏征信",
        issued_at=WHEN,
    )
    return sign_report(report, private_key=key)


@pytest.fixture(scope="module")
def page(signed: SignedReport) -> str:
    return render_html(signed)


def test_the_report_holds_the_aggregate_it_came_from(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, {"bank_loan"})
    report = build_enterprise_report(
        score=card,
        restrictions=flags,
        lists=make_lists(catalogue, ()),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    assert REPORT_ID_PATTERN.fullmatch(report.report_id)
    assert (report.subject_id, report.grade, report.score) == (FIRM, card.grade, card.score)
    assert report.base == card.base and report.deductions == card.deductions
    assert {b.name: b.points for b in report.bonuses} == dict(card.bonuses)
    model = catalogue.model(SubjectKind.ENTERPRISE)
    assert [(b.label, b.cap) for b in report.bonuses] == [
        (c.label, c.cap) for c in model.categories
    ]
    assert {r.measure: r.in_force for r in report.restrictions} == dict(flags.restricted)
    assert [r.measure for r in report.in_force] == ["bank_loan"]
    assert report.restrictions[0].name == catalogue.measure("bank_loan").name
    assert [d.department for d in report.answered] == [s.department for s in card.answered]
    assert [(d.department, d.detail) for d in report.missing] == [("eco", "deadline exceeded")]
    assert report.answered[0].name == catalogue.department("court").name
    assert (report.score_query_id, report.restrictions_query_id) == ("q-score-1", "q-flags-1")
    assert report.restrictions_answered == ("court", "tax")
    # the time of the query, in UTC to the second
    assert report.issued_at == WHEN.replace(microsecond=0)
    assert report.grade_scale == model.grades
    # a fresh id for every report
    again = build_enterprise_report(
        score=card,
        restrictions=flags,
        lists=make_lists(catalogue, ()),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    assert again.report_id != report.report_id


def test_a_report_needs_one_graded_breakdown_and_every_measure(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, set())

    def build(**changes: object) -> EnterpriseReport:
        args: dict[str, object] = {
            "score": card,
            "restrictions": flags,
            "lists": make_lists(catalogue, ()),
            "catalogue": catalogue,
            "issuer": "agency",
            "issued_at": WHEN,
            **changes,
        }
        return build_enterprise_report(**args)  # type: ignore[arg-type]

    total = EnterpriseScore(**{**card.__dict__, "shape": Shape.TOTAL, "deductions": None})
    with pytest.raises(InvalidArgument, match="graded BREAKDOWN score, not total"):
        build(score=total)
    partial = RestrictionResult(
        subject_id=FIRM, restricted={"bank_loan": False}, answered=(), query_id="q"
    )
    with pytest.raises(InvalidArgument, match="every measure of the catalogue; not asked: "):
        build(restrictions=partial)
    other = make_uscc(authority="9", category="1", region="320500", organisation="M000200YX")
    with pytest.raises(InvalidArgument, match="the restrictions are for"):
        build(restrictions=RestrictionResult(**{**flags.__dict__, "subject_id": other}))
    with pytest.raises(InvalidArgument, match="time zone"):
        build(issued_at=datetime(2026, 11, 26, 9, 30))
    for bad in ("", " agency", "a\nb", "x" * 201):
        with pytest.raises(InvalidArgument) as info:
            build(issuer=bad)
        assert info.value.field == "issuer"
    # a time in another zone is stated in UTC
    east8 = timezone(timedelta(hours=8))
    assert build(issued_at=WHEN.astimezone(east8)).issued_at == WHEN.replace(microsecond=0)


def test_the_signature_covers_canonical_content_and_the_code_derives_from_it(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    content = canonical_content(signed.report)
    assert signed.content == content
    # RFC 8785: sorted keys, no spaces, UTF-8 (the Chinese name is not \\u-escaped)
    assert content == signing.canonical_json(json.loads(content))
    assert (
        content
        == json.dumps(
            json.loads(content), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    )
    assert "姑苏征信".encode() in content
    # the one envelope: a detached JWS of the credit report type, naming the key's thumbprint
    public = key.public_key()
    assert signed.key_id == signing.key_id(public)
    assert signing.signature_key_id(signed.signature) == signed.key_id
    assert (
        signing.verify(
            content,
            signed.signature,
            payload_type=signing.CREDIT_REPORT_TYPE,
            trusted_keys={signed.key_id: public},
        )
        == signed.key_id
    )
    # a report's signature is no policy bundle's, however its bytes are arranged
    with pytest.raises(signing.MalformedSignature, match="type"):
        signing.verify(
            content,
            signed.signature,
            payload_type=signing.POLICY_BUNDLE_TYPE,
            trusted_keys={signed.key_id: public},
        )
    assert CODE_PATTERN.fullmatch(signed.verification_code)
    assert signed.verification_code == verification_code(content)
    assert verification_code(content + b" ") != signed.verification_code


def test_the_page_shows_the_report_and_verifies(
    signed: SignedReport, page: str, key: Ed25519PrivateKey
) -> None:
    r = signed.report
    assert f'data-field="grade">{r.grade}<' in page
    assert f'data-field="score">{r.score}<' in page
    assert r.report_id in page and signed.verification_code in page
    assert "2026-11-26T09:30:15Z" in page
    assert "not answered" in page  # the category whose owner was missing
    assert "IN FORCE" in page and "deadline exceeded" in page
    assert "<script" not in page.replace(f'<script type="application/json" id="{EMBED_ID}">', "")
    verified = verify_report_html(page, public_key=key.public_key())
    assert verified == r
    # the content read back is byte for byte what was signed
    assert canonical_content(verified) == signed.content


def _envelope_of(page: str) -> dict[str, object]:
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    envelope: dict[str, object] = json.loads(page[start : page.index("</script>", start)])
    return envelope


def _tamper_envelope(page: str, change: dict[str, object]) -> str:
    """The page with its envelope's fields changed, written as JSON the way a page embeds it
    ("<" escaped, so that no value ends the block)."""
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    end = page.index("</script>", start)
    envelope = json.loads(page[start:end])
    envelope.update(change)
    return page[:start] + json.dumps(envelope).replace("<", "\\u003c") + page[end:]


def _with_key_id(signature: str, kid: str) -> str:
    """The detached JWS with the key id of its protected header replaced (the signature kept)."""
    header, empty, value = signature.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{encoded}.{empty}.{value}"


#: the start of every refusal of a file that is not the rendering of its signed report
ALTERED = "the file is not exactly what its signed report renders to"


def refused_as_altered(
    verify: Callable[..., object], tampered: str | bytes, key: Ed25519PrivateKey, where: str = ""
) -> TamperedReport:
    """Check that `verify` refuses the file as altered (exit 4), saying `where` it differs."""
    with pytest.raises(TamperedReport, match=ALTERED) as info:
        verify(tampered, public_key=key.public_key())
    assert info.value.field == "file"
    assert info.value.exit_code == 4
    assert where in info.value.message
    return info.value


def test_every_tampering_fails(signed: SignedReport, page: str, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    r = signed.report
    other = "B" if r.grade != "B" else "A"

    def altered(old: str, new: str, count: int = 1) -> str:
        assert page.count(old) >= count, old
        return page.replace(old, new, count)

    # a value shown on the page
    refused_as_altered(
        verify_report_html,
        altered(f'data-field="grade">{r.grade}<', f'data-field="grade">{other}<'),
        key,
        "it differs from line",
    )
    refused_as_altered(
        verify_report_html,
        altered(f'data-field="score">{r.score}<', f'data-field="score">{r.score + 30}<'),
        key,
    )
    refused_as_altered(verify_report_html, altered(">IN FORCE<", ">not in force<"), key)
    refused_as_altered(
        verify_report_html, altered(r.report_id + "</span>", "rpt_" + "A" * 22 + "</span>"), key
    )
    code = signed.verification_code
    fake_code = ("A" if code[0] != "A" else "B") + code[1:]
    refused_as_altered(verify_report_html, altered(f">{code}<", f">{fake_code}<"), key)
    # an unmarked text, a second copy of a value, one space, the line ends, a byte at the end
    refused_as_altered(verify_report_html, altered("Breakdown", "Breakdown (verified)"), key)
    refused_as_altered(
        verify_report_html,
        altered("<h2>Breakdown", f'<p><span data-field="grade">{other}</span></p><h2>Breakdown'),
        key,
    )
    refused_as_altered(verify_report_html, altered("<h1>", "<h1> "), key)
    refused_as_altered(verify_report_html, page.replace("\n", "\r\n"), key)
    refused_as_altered(
        verify_report_html, page + "<p>Grade A</p>", key, "characters were added at its end"
    )
    # the embedded content, edited
    content = json.loads(signed.content)
    content["grade"] = other

    def refused(tampered: str, field: str, words: str) -> None:
        assert tampered != page
        with pytest.raises(TamperedReport, match=words) as info:
            verify_report_html(tampered, public_key=public)
        assert info.value.field == field
        assert info.value.exit_code == 4

    refused(_tamper_envelope(page, {"payload": content}), "signature", "signature does not match")
    # one character of the signature (the first bits of the Ed25519 signature's last part)
    head, _, value = signed.signature.partition("..")
    flipped = f"{head}..{'B' if value[0] != 'B' else 'C'}{value[1:]}"
    refused(_tamper_envelope(page, {"signature": flipped}), "signature", "signature does not match")
    # the envelope carries no verification code: the code is the signed content's, and a
    # second copy of it (or any other field) makes the envelope no report's
    with pytest.raises(MalformedReport, match='exactly "payload" and "signature"') as malformed:
        verify_report_html(
            _tamper_envelope(page, {"verification_code": fake_code}), public_key=public
        )
    assert malformed.value.field == "envelope" and malformed.value.exit_code == 3
    # the envelope re-serialised with the same values: not the file the issuer's renderer wrote
    refused_as_altered(verify_report_html, _tamper_envelope(page, {}), key)
    # another key: named by id, and also when the id in the signature's header is rewritten
    stranger = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(TamperedReport, match="signed with key") as info:
        verify_report_html(page, public_key=stranger)
    assert info.value.field == "key"
    assert signed.key_id in info.value.message and signing.key_id(stranger) in info.value.message
    rewritten = _with_key_id(signed.signature, signing.key_id(stranger))
    with pytest.raises(TamperedReport, match="signature does not match"):
        verify_report_html(_tamper_envelope(page, {"signature": rewritten}), public_key=stranger)


def test_a_page_that_shows_other_values_than_it_marks_fails(
    signed: SignedReport, page: str, key: Ed25519PrivateKey
) -> None:
    """The reviewer's attacks: the marked values stay the signed ones, the reader sees others."""
    r = signed.report
    other = "A" if r.grade != "A" else "B"
    grade = f'<span class="grade" data-field="grade">{r.grade}</span>'
    in_force = '<td class="in-force"><span data-field="restriction.bank_loan">IN FORCE</span>'
    for old, new in (
        # the mark removed, the value changed: no marked value is missing any more
        (in_force, "<td>not in force"),
        ('<span data-field="deductions">', "<span>"),
        # the marked grade hidden, another shown beside it
        (grade, f'<span data-field="grade" hidden>{r.grade}</span><b class="grade">{other}</b>'),
        # the marked grade inside a <template>, which a browser does not show
        (grade, f'<template>{grade}</template><span class="grade">{other}</span>'),
        # a script that rewrites the score once the page is shown
        ("</body>", "<script>document.querySelector('[data-field=score]').textContent='199'"
                    "</script></body>"),
        # a style that hides the grade and draws another after it
        ("</style>", f".grade{{font-size:0}}.grade::after{{content:'{other}';font-size:4rem}}"
                     "</style>"),
        # a comment: invisible, but the file is not the issuer's
        ("<h1>", "<!-- edited --><h1>"),
    ):  # fmt: skip
        assert page.count(old) == 1, old
        refused_as_altered(verify_report_html, page.replace(old, new), key)
        refused_as_altered(verify_report, page.replace(old, new).encode(), key)


def test_hostile_structure_is_refused_quickly(page: str, key: Ed25519PrivateKey) -> None:
    """Deep nesting of elements (once quadratic to parse) and of the envelope's JSON (once a
    RecursionError, exit 1): refused in well under a second, with exit 4 and 3."""
    at = page.index("<h1>")
    started = time.monotonic()
    refused_as_altered(verify_report_html, page[:at] + "<b>x" * 40_000 + page[at:], key)
    assert time.monotonic() - started < 2
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    end = page.index("</script>", start)
    for nested in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        with pytest.raises(MalformedReport, match="the embedded report is not JSON") as info:
            verify_report_html(page[:start] + nested + page[end:], public_key=key.public_key())
        assert info.value.exit_code == 3


def test_a_report_signed_by_another_key_with_its_content_fails(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """A forger re-signs altered content with its own key: the issuer's key refuses it."""
    forger = Ed25519PrivateKey.generate()
    forged = sign_report(signed.report, private_key=forger)
    with pytest.raises(TamperedReport, match="signed with key"):
        verify_report_html(render_html(forged), public_key=key.public_key())


def test_not_a_report_is_malformed(page: str, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    (header, _, value) = cast(str, _envelope_of(page)["signature"]).split(".")
    policy_header = base64.urlsafe_b64encode(
        json.dumps({**json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4))),
                    "typ": signing.POLICY_BUNDLE_TYPE}).encode()
    ).rstrip(b"=").decode()  # fmt: skip
    for text, words in (
        ("<html><body>hello</body></html>", "holds 0 embedded reports"),
        (page.replace("</body>", page[page.index("<script") :]), "holds 2 embedded reports"),
        (_tamper_envelope(page, {"format": "other/1"}), 'exactly "payload" and "signature"'),
        (_tamper_envelope(page, {"signature": "not base64!"}), "is not a detached JWS"),
        (_tamper_envelope(page, {"signature": f"{header}.x.{value}"}), "payload part empty"),
        (_tamper_envelope(page, {"payload": [1]}), "signed content is not a JSON object"),
        (_tamper_envelope(page, {"payload": {"n": 2**60}}), "integer beyond"),
        # a signature over a policy bundle is none over a report
        (_tamper_envelope(page, {"signature": f"{policy_header}..{value}"}), "type"),
    ):
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_html(text, public_key=public)
        assert info.value.exit_code == 3
        assert not isinstance(info.value, TamperedReport)


#: the envelope of a report signed before the one envelope: the content in base64, a raw
#: Ed25519 signature over it in base64, and a 16-hex key id
def _legacy_envelope(signed: SignedReport, key: Ed25519PrivateKey) -> dict[str, object]:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return {
        "format": "osmanthus-signed-report/1",
        "content": base64.b64encode(signed.content).decode(),
        "signature": base64.b64encode(key.sign(signed.content)).decode(),
        "key_id": hashlib.sha256(raw).hexdigest()[:16],
        "verification_code": signed.verification_code,
    }


def test_a_report_in_the_earlier_format_is_refused_with_how_to_reissue_it(
    signed: SignedReport,
    page: str,
    pdf: bytes,
    key: Ed25519PrivateKey,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Reports signed before the one envelope (raw Ed25519, 16-hex key ids) are not verified:
    the refusal says so and how to have the report issued again, for a page and a PDF alike."""
    old = _legacy_envelope(signed, key)
    old_page = page[: page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')]
    old_page += "\n" + json.dumps(old, sort_keys=True, indent=1) + "\n</script>\n</body>\n</html>\n"
    old_pdf = _with_attachments(pdf, json.dumps(old).encode())
    for verify, data in ((verify_report_html, old_page), (verify_report_pdf, old_pdf),
                         (verify_report, old_page.encode()), (verify_report, old_pdf)):  # fmt: skip
        with pytest.raises(LegacyReport, match="issued in the earlier format") as info:
            verify(data, public_key=key.public_key())
        assert isinstance(info.value, signing.LegacyFormat)
        assert isinstance(info.value, MalformedReport)
        assert "'osmanthus report enterprise" in info.value.message
        assert info.value.field == "format" and info.value.exit_code == 3
    (tmp_path / "issuer.pub").write_bytes(signing.public_pem(key.public_key()))
    (tmp_path / "old.html").write_text(old_page, encoding="utf-8")
    argv = ["report", "verify", str(tmp_path / "old.html"), "--key", str(tmp_path / "issuer.pub")]
    assert main(argv) == 3
    error = capsys.readouterr().err
    assert "format: the report was issued in the earlier format" in error
    assert "ask the issuer to issue it again" in error


def test_signed_but_inconsistent_content_is_malformed(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """An issuer whose software signs a grade that its score does not earn is not believed."""
    content = json.loads(signed.content)
    content["grade"] = "A" if content["grade"] != "A" else "D"
    page = _resigned(render_html(signed), content, key)
    with pytest.raises(MalformedReport, match="is not the grade of score") as info:
        verify_report_html(page, public_key=key.public_key())
    assert info.value.field == "grade"


def _resigned(page: str, content: bytes | dict[str, object], key: Ed25519PrivateKey) -> str:
    """The page with its envelope carrying `content` (JSON), genuinely signed by `key`."""
    payload = json.loads(content) if isinstance(content, bytes) else content
    signature = signing.sign(
        signing.canonical_json(payload),
        payload_type=signing.CREDIT_REPORT_TYPE,
        private_key=key,
    )
    return _tamper_envelope(page, {"payload": payload, "signature": signature})


def _jws_over(data: bytes, key: Ed25519PrivateKey) -> str:
    """A detached JWS of the report type over `data` as given: what signing.sign, which signs
    canonical JSON only, would not make."""
    token: str = jwt.api_jws.PyJWS().encode(
        data,
        key,
        algorithm="EdDSA",
        headers={"typ": signing.CREDIT_REPORT_TYPE, "kid": signing.key_id(key.public_key())},
        is_payload_detached=True,
    )
    return token


def test_signed_content_must_be_canonical(signed: SignedReport, key: Ed25519PrivateKey) -> None:
    """The code printed is the signed bytes' only if those bytes are what Osmanthus signs: the
    content's RFC 8785 form, which the verifier computes itself."""
    page = render_html(signed)
    content = json.loads(signed.content)
    for other in (
        json.dumps(content, sort_keys=True).encode(),  # spaces
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode(),  # \\u escapes
        json.dumps(  # key order
            dict(reversed(content.items())), separators=(",", ":"), ensure_ascii=False
        ).encode(),
    ):
        assert other != signed.content and json.loads(other) == content
        # a signature over another serialisation of the same content does not verify
        tampered = _tamper_envelope(page, {"signature": _jws_over(other, key)})
        with pytest.raises(TamperedReport, match="signature does not match") as info:
            verify_report_html(tampered, public_key=key.public_key())
        assert info.value.field == "signature" and info.value.exit_code == 4
    # signed content whose values this version writes otherwise (a time without zero padding):
    # its report's canonical content, and so its code, would not be the signed bytes'
    content["issued_at"] = content["issued_at"].replace("T09:", "T9:")
    with pytest.raises(MalformedReport, match="not in the form Osmanthus signs") as malformed:
        verify_report_html(_resigned(page, content, key), public_key=key.public_key())
    assert malformed.value.field == "content" and malformed.value.exit_code == 3


def test_a_report_of_another_renderer_is_told_apart_from_an_altered_one(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    old = ReportRenderer(html="osmanthus-report-html/0", pdf="osmanthus-report-pdf/0 reportlab/4.0")
    assert RENDERER.html.startswith("osmanthus-report-html/")
    assert RENDERER.pdf.endswith(f" reportlab/{reportlab.Version}")
    assert signed.report.renderer == RENDERER
    assert json.loads(signed.content)["renderer"] == {"html": RENDERER.html, "pdf": RENDERER.pdf}
    earlier = sign_report(dataclasses.replace(signed.report, renderer=old), private_key=key)
    page, pdf = render_html(earlier), render_pdf(earlier)
    # drawn the same way by this version: nothing to tell apart, the file is the rendering
    assert verify_report_html(page, public_key=key.public_key()) == earlier.report
    assert verify_report_pdf(pdf, public_key=key.public_key()) == earlier.report
    # drawn differently: the version that issued it must check it (exit 3, not 4)
    drawn_otherwise = page.replace("<h2>", "<h2 class='section'>")
    with pytest.raises(RendererMismatch, match="drawn by renderer osmanthus-report-html/0; this "
                       f"is {re.escape(RENDERER.html)}") as info:  # fmt: skip
        verify_report_html(drawn_otherwise, public_key=key.public_key())
    assert info.value.field == "renderer" and info.value.exit_code == 3
    with pytest.raises(RendererMismatch, match=re.escape(f"this is {RENDERER.pdf}")):
        verify_report_pdf(pdf + b"%\n", public_key=key.public_key())
    # the same change to a report that names this renderer is an alteration
    refused_as_altered(
        verify_report_html, render_html(signed).replace("<h2>", "<h2 class='s'>"), key
    )
    # a report in an earlier content format (which named no renderer)
    content = json.loads(signed.content)
    content["format"] = "osmanthus-enterprise-report/1"
    del content["renderer"]
    first = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    with pytest.raises(RendererMismatch, match="verify it with the version that issued it") as info:
        verify_report_html(_resigned(page, first, key), public_key=key.public_key())
    assert info.value.field == "format" and info.value.exit_code == 3
    # a renderer field that names no renderer is malformed
    content = json.loads(signed.content)
    for bad, field in (({"html": "x"}, "renderer.pdf"), ({**content["renderer"], "svg": "x"},
                       "renderer.svg"), ({"html": "", "pdf": "x"}, "renderer.html")):  # fmt: skip
        content["renderer"] = bad
        wrong = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with pytest.raises(MalformedReport) as malformed:
            verify_report_html(_resigned(page, wrong.encode(), key), public_key=key.public_key())
        assert malformed.value.field == field
        assert not isinstance(malformed.value, RendererMismatch)


def _golden() -> SignedReport:
    """A report with fixed values, signed with a fixed key (Ed25519 signs deterministically):
    its files depend on the rendering code alone (and, for the PDF, reportlab)."""
    report = EnterpriseReport(
        report_id="rpt_" + "G0lden" * 3 + "ABCD",
        subject_id=FIRM,
        grade="A",
        score=93,
        base=100,
        floor=0,
        ceiling=200,
        grade_scale=(("A", 90), ("B", 70), ("C", 50), ("D", 0)),
        deductions=12,
        bonuses=(
            ReportBonus(name="tax_credit", label="Tax credit 纳税信用", cap=20, points=5),
            ReportBonus(name="eco", label="Environmental credit", cap=10, points=None),
        ),
        restrictions=(
            ReportRestriction(measure="bank_loan", name="Bank loans", name_zh="银行贷款",
                              in_force=True),
            ReportRestriction(measure="bidding", name="Bidding", name_zh="招投标", in_force=False),
        ),
        answered=(ReportDepartment("tax", "Tax Bureau 税务局", "answered", "2026.1"),),
        missing=(ReportDepartment("eco", "Ecology & <Environment>", "deadline exceeded", ""),),
        restrictions_answered=("tax",),
        list_entries=(
            ReportListEntry(entry_id="AEO-1", department="customs", department_name="Customs",
                            list="customs_advanced_certified", list_name="Advanced certified",
                            list_name_zh="高级认证企业", colour=ListColour.RED,
                            subject_name="Golden Co. 金公司", legal_basis="GACC Order 251",
                            reason="audit <passed> & certified", window_start=date(2026, 1, 1),
                            window_end=date(2028, 12, 31), facilitation_class="AA"),
            ReportListEntry(entry_id="zhi-7", department="court", department_name="Court 法院",
                            list="judgement_defaulters", list_name="Defaulters",
                            list_name_zh="失信被执行人名单", colour=ListColour.BLACK,
                            subject_name="Golden Co. 金公司", legal_basis="",
                            reason="did not pay", window_start=date(2026, 11, 26),
                            window_end=date(2026, 11, 26), facilitation_class=None),
        ),
        list_departments=("court", "customs", "safety"),
        lists_missing=(ReportDepartment("safety", "Safety", "unavailable", ""),),
        score_query_id="q-score-golden",
        restrictions_query_id="q-flags-golden",
        issued_at=datetime(2026, 11, 26, 9, 30, 15, tzinfo=UTC),
        issuer="Gusu Credit 姑苏征信",
        # fixed, so that the digests do not move with the renderer's own name
        renderer=ReportRenderer(html="golden", pdf="golden"),
    )  # fmt: skip
    return sign_report(report, private_key=Ed25519PrivateKey.from_private_bytes(bytes(range(32))))


#: SHA-256 of the golden report's page, by renderer revision. A verifier re-renders reports, so
#: the bytes a revision draws must never change: a change to the rendering bumps
#: sdk.report.model.RENDERER_REVISION and adds its digest here; a recorded digest is never edited.
GOLDEN_HTML: dict[int, str] = {
    1: "6eff129c08b06dae5736b002556b1fbb694ad1e1cc59c14cfcbed9ecca7350ef",
    # the public list entries and the facilitation classes (content format 3; the golden
    # report gained its list fields then, so revision 1's digest is of the report without them)
    2: "4c27346d65938028f29fab0da769746de2e55fbfec2a2a104e89903505a16dfd",
    # the one signing envelope: the content as RFC 8785 JSON under a detached JWS
    3: "45a8248338e50ce211fbbb058c84f09f9069027829911cd5420009eb02c630a9",
}
#: the same for the PDF, by renderer revision and reportlab version
GOLDEN_PDF: dict[tuple[int, str], str] = {
    (1, "5.1.0"): "0ae217db51a033ca979639a92f19e3dfa903480b742e7228285097d738f88fa6",
    (2, "5.1.0"): "e720f41d8b4d7b3593ee0d836497312feaf9153bd55e3a5b91e18ef138c29f79",
    # the one signing envelope; embedded Noto Sans CJK SC subsets; PDF/A-3b
    (3, "5.1.0"): "a7d1740858504ee4599eb4d1e55b91ab6ac466d220b4504e776f915f3a4f4ebe",
}


def test_each_renderer_revision_draws_fixed_bytes() -> None:
    revision = int(RENDERER.html.rsplit("/", 1)[1])
    assert revision == RENDERER_REVISION
    golden = _golden()
    public = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    page = render_html(golden)
    assert verify_report_html(page, public_key=public) == golden.report
    digest = hashlib.sha256(page.encode()).hexdigest()
    assert GOLDEN_HTML.get(revision) == digest, (
        f"the HTML rendering changed (digest {digest}): bump RENDERER_REVISION in "
        "sdk/report/model.py and record the new digest under it"
    )
    version = (revision, reportlab.Version)
    if version not in GOLDEN_PDF:
        pytest.skip(f"no golden PDF recorded for reportlab {reportlab.Version}: record one")
    pdf = render_pdf(golden)
    assert verify_report_pdf(pdf, public_key=public) == golden.report
    digest = hashlib.sha256(pdf).hexdigest()
    assert GOLDEN_PDF[version] == digest, (
        f"the PDF rendering changed (digest {digest}): bump RENDERER_REVISION in "
        "sdk/report/model.py and record the new digest under it"
    )


def test_hostile_strings_are_escaped_and_still_verify(catalogue: Catalogue) -> None:
    hostile = '<script>alert("x")</script>&amp;</script><img src=x onerror=1>'
    card = make_score(catalogue)
    card = EnterpriseScore(
        **{
            **card.__dict__,
            "answered": (*card.answered, _status("court", rules='"><b>x</b>')),
            "missing": (_status("eco", hostile, ""),),
        }
    )
    report = build_enterprise_report(
        score=card,
        restrictions=make_restrictions(catalogue, set()),
        lists=make_lists(
            catalogue,
            (
                dataclasses.replace(
                    list_entry(catalogue, "judgement_defaulters", "x-1", reason=hostile),
                    subject_name=hostile,
                    legal_basis=hostile,
                ),
            ),
        ),
        catalogue=catalogue,
        issuer="Agency </script><script>alert(1)</script>",
        issued_at=WHEN,
    )
    key = Ed25519PrivateKey.generate()
    page = render_html(sign_report(report, private_key=key))
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert page.count("</script>") == 1
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    verified = verify_report_html(page, public_key=key.public_key())
    assert verified.issuer == report.issuer and verified.missing[0].detail == hostile
    assert verified.list_entries[0].reason == hostile


def test_cli_keygen_and_verify(
    tmp_path: Path, page: str, key: Ed25519PrivateKey, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", "keygen", "--out-dir", str(tmp_path), "--name", "issuer"]) == 0
    assert (tmp_path / "issuer.key").stat().st_mode & 0o777 == 0o600
    assert "issuer.pub" in capsys.readouterr().out
    # a page signed by the fixture key does not verify against the new key
    report = tmp_path / "report.html"
    report.write_text(page, encoding="utf-8")
    argv = ["report", "verify", str(report), "--key", str(tmp_path / "issuer.pub")]
    assert main(argv) == 4
    assert "signed with key" in capsys.readouterr().err
    # with the right key it does, and the values printed come from the signed content
    (tmp_path / "fixture.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    argv[-1] = str(tmp_path / "fixture.pub")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "verified" in out and FIRM in out and "姑苏征信" in out
    assert re.search(r"code\s+[A-Z2-7]{4}-", out)
    assert (
        "list entries  customs_advanced_certified (red), judgement_defaulters (black); "
        "facilitation AA (customs_advanced_certified, until 2029-11-26)\n"
    ) in out
    report.write_text(page.replace('data-field="grade">', 'data-field="grade">Z'), encoding="utf-8")
    assert main(argv) == 4
    assert ALTERED in capsys.readouterr().err
    report.write_text("<html></html>", encoding="utf-8")
    assert main(argv) == 3
    # an envelope nested too deep for Python's JSON parser: refused, not a crash (exit 1)
    start = page.index(f'id="{EMBED_ID}">') + len(f'id="{EMBED_ID}">')
    end = page.index("</script>", start)
    report.write_text(page[:start] + "[" * 100_000 + "]" * 100_000 + page[end:], encoding="utf-8")
    assert main(argv) == 3
    assert "not JSON" in capsys.readouterr().err
    assert main(["report", "verify", str(tmp_path / "absent.html"), "--key", argv[-1]]) == 3


# --- PDF ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pdf(signed: SignedReport) -> bytes:
    return render_pdf(signed)


def _lines(pdf: bytes) -> list[str]:
    """The page text as laid out, one string per line with runs of spaces made one."""
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text(extraction_mode="layout") for page in reader.pages)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _mark(field: str) -> bytes:
    return f"/OsmanthusValue <</Field <{field.encode().hex()}>>> BDC".encode()


def _edit_pages(pdf: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """The PDF with every page's content stream passed through `edit`, written by pypdf as a
    PDF editor would write it (the attachment kept)."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    for page in writer.pages:
        contents = page.get_contents()
        assert contents is not None
        contents.set_data(edit(contents.get_data()))
        page.replace_contents(contents)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def show_instead(pdf: bytes, field: str, old: str, new: str) -> bytes:
    """The PDF with the text drawn for the first marked `field` changed from `old` to `new`:
    the tampering a PDF editor makes when it changes a figure on the page."""
    changed = 0

    def edit(data: bytes) -> bytes:
        nonlocal changed
        start = data.find(_mark(field))
        if start < 0 or changed:
            return data
        end = data.index(b"EMC", start)
        shown = f"({old}) Tj".encode()
        assert data.count(shown, start, end) == 1, data[start:end]
        changed += 1
        return data[:start] + data[start:end].replace(shown, f"({new}) Tj".encode()) + data[end:]

    tampered = _edit_pages(pdf, edit)
    assert changed == 1
    return tampered


def _with_attachments(pdf: bytes, *envelopes: bytes) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    del writer.root_object["/Names"]
    for envelope in envelopes:
        writer.add_attachment(PDF_ATTACHMENT, envelope)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_the_pdf_shows_every_figure_of_the_aggregate_and_verifies(
    catalogue: Catalogue, key: Ed25519PrivateKey
) -> None:
    card = make_score(catalogue, deductions=38)
    flags = make_restrictions(catalogue, {"bank_loan", "high_consumption"})
    report = build_enterprise_report(
        score=card,
        restrictions=flags,
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer="Gusu Credit Agency 姑苏征信",
        issued_at=WHEN,
    )
    signed = sign_report(report, private_key=key)
    pdf = render_pdf(signed)
    assert pdf.startswith(b"%PDF-")
    lines = _lines(pdf)
    text = "\n".join(lines)
    model = catalogue.model(SubjectKind.ENTERPRISE)
    # the figures of the SDK's aggregate, each on its row
    assert "Enterprise credit report 企业信用报告" in lines
    assert f"Unified social credit code {FIRM}" in lines
    assert f"{card.grade} {card.score} of {model.ceiling}" in lines
    assert f"Base {card.base}" in lines
    assert f"Deductions (dishonest records, all departments) {card.deductions}" in lines
    for category in model.categories:
        points = card.bonuses[category.name]
        shown = "not answered" if points is None else str(points)
        assert f"{category.label} {shown} {category.cap}" in lines
    total = sum(p for p in card.bonuses.values() if p is not None)
    assert f"Bonuses in total {total}" in lines
    for measure in catalogue.measures:
        state = "IN FORCE" if flags.restricted[measure.id] else "not in force"
        assert f"{measure.name} {measure.name_zh} {state}" in lines
    # the data coverage: who answered under which rules, who was missing and why
    for status in card.answered:
        name = catalogue.department(status.department).name
        assert re.search(
            rf"^{re.escape(name.split()[0])}.* {status.department} answered \(rules 2026\.1\)$",
            text,
            re.MULTILINE,
        ), name
    eco = catalogue.department("eco").name
    assert f"{eco} eco missing: deadline exceeded" in lines
    assert "Restrictions were answered by: court, tax." in lines
    # the time of the query, the report id, the issuer and the code
    assert "Time of query (UTC) 2026-11-26T09:30:15Z" in lines
    assert f"Report id {report.report_id}" in lines
    assert "Issued by Gusu Credit Agency 姑苏征信" in lines
    assert f"Verification code {signed.verification_code}" in lines
    assert f"Signing key {signed.key_id}" in lines
    assert "osmanthus report verify FILE --key ISSUER.pub" in text
    # every page names the report and its code
    pages = PdfReader(io.BytesIO(pdf)).pages
    footers = [
        line for line in lines if line.startswith(f"Report {report.report_id} Verification code")
    ]
    assert footers == [
        f"Report {report.report_id} Verification code {signed.verification_code} Page {n}"
        for n in range(1, len(pages) + 1)
    ]
    # and what verification reads back is the report
    assert verify_report_pdf(pdf, public_key=key.public_key()) == report
    assert verify_report(pdf, public_key=key.public_key()) == report


def test_the_pdf_carries_the_signed_content_and_the_time_of_the_query(
    signed: SignedReport, pdf: bytes, page: str, key: Ed25519PrivateKey
) -> None:
    reader = PdfReader(io.BytesIO(pdf))
    (attached,) = reader.attachments[PDF_ATTACHMENT]
    envelope = json.loads(attached)
    # the signed content itself, and the detached JWS over it: the canonical bytes are the
    # attachment's own
    assert set(envelope) == {"payload", "signature"}
    assert signing.canonical_json(envelope["payload"]) == signed.content
    assert signed.content in attached
    assert envelope["signature"] == signed.signature
    # a sealed Osmanthus file: the one envelope's reader opens it
    trusted = {signed.key_id: key.public_key()}
    payload, kid = signing.open_sealed(
        attached, payload_type=signing.CREDIT_REPORT_TYPE, trusted_keys=trusted
    )
    assert (payload, kid) == (envelope["payload"], signed.key_id)
    # the same envelope as the HTML page's
    assert _envelope_of(page) == envelope
    assert "<" not in page[page.index(f'id="{EMBED_ID}">') + 30 : page.index("</script>")]
    meta = reader.metadata
    assert meta is not None
    assert meta.creation_date == WHEN.replace(microsecond=0)
    assert meta.modification_date == WHEN.replace(microsecond=0)
    assert meta.author == signed.report.issuer
    assert meta.title == f"Enterprise credit report {FIRM} ({signed.report.report_id})"
    assert signed.verification_code in (meta.subject or "")
    box = reader.pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (595, 842)  # A4


#: renders, in a fresh interpreter, the report of an HTML page signed with a PEM key:
#: Ed25519 signatures are deterministic, so this is the same signed report
_RENDER_AGAIN = """
import sys
from pathlib import Path
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sdk.report import render_pdf, sign_report, verify_report_html
key = load_pem_private_key(Path(sys.argv[1]).read_bytes(), password=None)
report = verify_report_html(Path(sys.argv[2]).read_text("utf-8"), public_key=key.public_key())
sys.stdout.buffer.write(render_pdf(sign_report(report, private_key=key)))
"""


def test_the_same_report_renders_to_the_same_bytes(
    signed: SignedReport, key: Ed25519PrivateKey, pdf: bytes, page: str, tmp_path: Path
) -> None:
    assert render_pdf(signed) == pdf
    # in another process too, with another hash seed: nothing depends on the run
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    (tmp_path / "issuer.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    again = subprocess.run(
        [
            sys.executable,
            "-c",
            _RENDER_AGAIN,
            str(tmp_path / "issuer.key"),
            str(tmp_path / "report.html"),
        ],
        capture_output=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=60,
    ).stdout
    assert again == pdf
    # a report that differs in one value renders differently
    other = dataclasses.replace(signed.report, issuer="Gusu Credit Agency")
    assert render_pdf(sign_report(other, private_key=key)) != pdf


def test_every_tampering_of_a_pdf_fails(
    catalogue: Catalogue, signed: SignedReport, pdf: bytes, key: Ed25519PrivateKey
) -> None:
    public = key.public_key()
    r = signed.report

    def refused(tampered: bytes, field: str, words: str) -> None:
        assert tampered != pdf
        with pytest.raises(TamperedReport, match=words) as info:
            verify_report_pdf(tampered, public_key=public)
        assert info.value.field == field
        assert info.value.exit_code == 4

    # a figure on the page, one digit flipped in the content stream
    score = str(r.score)
    flipped = str((int(score[0]) + 1) % 10) + score[1:]
    refused_as_altered(verify_report_pdf, show_instead(pdf, "score", score, flipped), key)
    other = "A" if r.grade != "A" else "B"
    refused_as_altered(verify_report_pdf, show_instead(pdf, "grade", r.grade, other), key)
    refused_as_altered(
        verify_report_pdf, show_instead(pdf, "deductions", str(r.deductions), "5"), key
    )
    refused_as_altered(
        verify_report_pdf,
        show_instead(pdf, "restriction.bank_loan", "IN FORCE", "not in force"),
        key,
    )
    code = signed.verification_code
    fake_code = ("A" if code[0] != "A" else "B") + code[1:]
    refused_as_altered(
        verify_report_pdf, show_instead(pdf, "verification_code", code, fake_code), key
    )
    # a figure left on the page but no longer marked as the signed value
    unmarked = _edit_pages(
        pdf, lambda data: data.replace(_mark("deductions"), b"/Span <</Lang (en)>> BDC")
    )
    refused_as_altered(verify_report_pdf, unmarked, key)
    # the file rewritten unchanged by a PDF library: the same page, another file
    refused_as_altered(verify_report_pdf, _edit_pages(pdf, lambda data: data), key)
    # one byte of the file's trailer, and the file cut short
    comment = b"ReportLab Generated PDF document"
    assert pdf.count(comment) == 1
    refused_as_altered(
        verify_report_pdf, pdf.replace(comment, comment.upper()), key, "differs from byte"
    )
    refused_as_altered(verify_report_pdf, pdf[:-1], key, "cut short")
    # a note stuck over the grade: drawn by every viewer, outside the page's text
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.add_annotation(0, FreeText(text="Grade A", rect=(60, 700, 160, 740)))
    annotated = io.BytesIO()
    writer.write(annotated)
    refused_as_altered(verify_report_pdf, annotated.getvalue(), key)
    # the attachment swapped for another genuine report of the same issuer
    other_report = build_enterprise_report(
        score=make_score(catalogue, deductions=5),
        restrictions=make_restrictions(catalogue, set()),
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer=r.issuer,
        issued_at=WHEN,
    )
    other_pdf = render_pdf(sign_report(other_report, private_key=key))
    (other_envelope,) = PdfReader(io.BytesIO(other_pdf)).attachments[PDF_ATTACHMENT]
    refused_as_altered(verify_report_pdf, _with_attachments(pdf, other_envelope), key)
    # the attached content, edited
    (envelope,) = PdfReader(io.BytesIO(pdf)).attachments[PDF_ATTACHMENT]
    edited = json.loads(envelope)
    edited["payload"]["score"] += 10
    refused(
        _with_attachments(pdf, json.dumps(edited).encode()), "signature", "signature does not match"
    )
    # another key
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(TamperedReport, match="signed with key") as info:
        verify_report_pdf(pdf, public_key=stranger.public_key())
    assert info.value.field == "key"
    forged = render_pdf(sign_report(r, private_key=stranger))
    with pytest.raises(TamperedReport, match="signed with key"):
        verify_report_pdf(forged, public_key=public)


def incremental_update(pdf: bytes, drawing: bytes) -> bytes:
    """The PDF with `drawing` added to the first page's content by an incremental update: the
    original bytes untouched, the change appended, as PDF editors save."""
    writer = PdfWriter(io.BytesIO(pdf), incremental=True)
    page = writer.pages[0]
    stream = DecodedStreamObject()
    stream.set_data(drawing)
    contents = page.raw_get("/Contents")
    page[NameObject("/Contents")] = ArrayObject([contents, writer._add_object(stream)])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


#: where the renderer draws the grade (40 pt bold) on the first page
_GRADE_AT = b"62.69 670.87"


def bold_font(pdf: bytes) -> str:
    """The resource name of the first subset of the bold face, as the grade is drawn in it."""
    found = re.search(rb"/(F\d+\+0) 40 Tf 44 TL \([A-Z]\) Tj", pdf)
    assert found is not None
    return found.group(1).decode()


def test_a_pdf_that_shows_other_values_than_it_marks_fails(
    signed: SignedReport, pdf: bytes, key: Ed25519PrivateKey
) -> None:
    """The reviewer's attacks: each leaves every marked value, as text extraction reads it, the
    signed one, while a viewer shows another grade. Each is refused as altered (exit 4)."""
    grade = signed.report.grade
    other = "A" if grade != "A" else "B"
    bold = bold_font(pdf)
    drawn = f"/{bold} 40 Tf 44 TL ({grade}) Tj".encode()

    # a white box over the grade and another grade on it, by an incremental update
    overlay = (
        f"q 1 1 1 rg 60 660 40 45 re f Q BT 0 0 0 rg /{bold} 40 Tf ".encode() + _GRADE_AT
        + f" Td ({other}) Tj ET".encode()
    )  # fmt: skip
    updated = incremental_update(pdf, overlay)
    assert updated.startswith(pdf)
    refused_as_altered(verify_report_pdf, updated, key, "bytes were appended")

    # the marked grade set in invisible text (render mode 3), another drawn unmarked
    def invisible(data: bytes) -> bytes:
        if drawn not in data:  # a page without the headline
            return data
        data = data.replace(drawn, f"/{bold} 40 Tf 3 Tr 44 TL ({grade}) Tj".encode())
        return (
            data + f"\nBT 0 0 0 rg /{bold} 40 Tf ".encode() + _GRADE_AT
            + f" Td ({other}) Tj ET".encode()
        )  # fmt: skip

    hidden = _edit_pages(pdf, invisible)
    assert b" 3 Tr " in hidden
    refused_as_altered(verify_report_pdf, hidden, key)

    # a font whose /Differences draw the other letter's glyph for the grade's code, with a
    # /ToUnicode map that still reads the signed letter
    def font_trick(writer: PdfWriter) -> None:
        page = writer.pages[0]
        fonts = cast(DictionaryObject, cast(DictionaryObject, page["/Resources"])["/Font"])
        font = DictionaryObject(dict(cast(DictionaryObject, fonts[f"/{bold}"]).items()))
        differences = ArrayObject([NumberObject(ord(grade)), NameObject(f"/{other}")])
        font[NameObject("/Encoding")] = DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Encoding"),
                NameObject("/BaseEncoding"): NameObject("/WinAnsiEncoding"),
                NameObject("/Differences"): differences,
            }
        )
        cmap = DecodedStreamObject()
        cmap.set_data(
            b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
            b"1 begincodespacerange <00> <FF> endcodespacerange 1 beginbfrange <20> <7E> <0020> "
            b"endbfrange endcmap CMapName currentdict /CMap defineresource pop end end"
        )
        font[NameObject("/ToUnicode")] = writer._add_object(cmap)
        fonts[NameObject("/FX")] = writer._add_object(font)
        contents = page.get_contents()
        assert contents is not None
        data = contents.get_data()
        assert data.count(drawn) == 1
        contents.set_data(data.replace(drawn, f"/FX 40 Tf 44 TL ({grade}) Tj".encode()))
        page.replace_contents(contents)

    refused_as_altered(verify_report_pdf, _rewritten(pdf, font_trick), key)
    # an extra page, which can say anything
    refused_as_altered(verify_report_pdf, _rewritten(pdf, lambda w: w.add_blank_page()), key)
    # a crop box that cuts the headline (the grade and the score) off the page

    def crop(writer: PdfWriter) -> None:
        writer.pages[0].cropbox = RectangleObject([0, 0, 595, 650])

    refused_as_altered(verify_report_pdf, _rewritten(pdf, crop), key)


def _rewritten(pdf: bytes, change: Callable[[PdfWriter], object]) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    change(writer)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_a_hostile_pdf_is_refused_quickly(pdf: bytes, key: Ed25519PrivateKey) -> None:
    """Decompression bombs, a deep envelope and random damage: each refused with exit 3 or 4,
    none with another exception, all in seconds."""
    public = key.public_key()
    started = time.monotonic()
    # 50 pages drawing a stream that inflates to 10 MB each: no page is ever decoded
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    bomb = StreamObject()
    bomb._data = zlib.compress(b"BT /F1 1 Tf (a) Tj ET\n" * 500_000, 9)
    bomb[NameObject("/Filter")] = NameObject("/FlateDecode")
    reference = writer._add_object(bomb)
    for page in writer.pages:
        page[NameObject("/Contents")] = ArrayObject([page.raw_get("/Contents"), reference])
    while len(writer.pages) < 50:
        writer.add_page(writer.pages[-1])
    out = io.BytesIO()
    writer.write(out)
    assert len(out.getvalue()) < 200_000
    refused_as_altered(verify_report_pdf, out.getvalue(), key)
    # the embedded file itself a bomb: 100 MB of zeros in 100 kB, stopped at the cap
    zeros = zlib.compress(b"\0" * 100_000_000, 9)
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    del writer.root_object["/Names"]
    attachment = writer.add_attachment(PDF_ATTACHMENT, b"")
    stream = cast(StreamObject, cast(DictionaryObject, attachment.pdf_object["/EF"])["/F"])
    stream._data = zeros
    stream[NameObject("/Filter")] = NameObject("/FlateDecode")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(MalformedReport, match=r"cannot be read.*[Ll]imit") as info:
        verify_report_pdf(out.getvalue(), public_key=public)
    assert info.value.exit_code == 3
    # a filter pypdf does not implement
    stream._data = b"x" * 100
    stream[NameObject("/Filter")] = NameObject("/NoSuchDecode")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(MalformedReport, match="cannot be read: NotImplementedError"):
        verify_report_pdf(out.getvalue(), public_key=public)
    # an attachment above the cap, uncompressed
    with pytest.raises(MalformedReport, match=f"a report's is at most {MAX_ENVELOPE_BYTES}"):
        verify_report_pdf(
            _with_attachments(pdf, b" " * (MAX_ENVELOPE_BYTES + 1)), public_key=public
        )
    # an envelope nested beyond Python's recursion limit
    with pytest.raises(MalformedReport, match="not JSON") as info:
        verify_report_pdf(_with_attachments(pdf, b"[" * 60_000 + b"]" * 60_000), public_key=public)
    assert info.value.exit_code == 3
    # random damage: every outcome is a refusal that names its kind
    rng = random.Random(1)
    for _ in range(60):
        damaged = bytearray(pdf)
        for _ in range(rng.randint(1, 20)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        with pytest.raises((MalformedReport, TamperedReport)):
            verify_report(bytes(damaged), public_key=public)
    assert time.monotonic() - started < 10


def test_a_pdf_without_one_report_is_malformed(pdf: bytes, key: Ed25519PrivateKey) -> None:
    public = key.public_key()
    (envelope,) = PdfReader(io.BytesIO(pdf)).attachments[PDF_ATTACHMENT]
    plain = io.BytesIO()
    SimpleDocTemplate(plain).build([Paragraph("An enterprise credit report, honestly")])
    for data, words in (
        (_with_attachments(pdf), "holds 0 embedded reports"),
        (_with_attachments(pdf, envelope, envelope), "holds 2 embedded reports"),
        (plain.getvalue(), "holds 0 embedded reports"),
        (pdf[: len(pdf) // 2], "cannot be read|holds 0 embedded reports"),
        (b"%PDF-1.4\n" + bytes(range(256)) * 8, "cannot be read"),
        (_with_attachments(pdf, b"{not json"), "is not JSON"),
        (_with_attachments(pdf, b"\xff\xfe"), "is not UTF-8"),
        (pdf + b" " * MAX_REPORT_BYTES, "a report is at most"),
        (b"<html></html>", "not a PDF"),
        (_rewritten(pdf, lambda w: w.encrypt("secret")), "is encrypted"),
    ):
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_pdf(data, public_key=public)
        assert info.value.exit_code == 3
    # told apart from an HTML page by content
    with pytest.raises(MalformedReport, match="neither a PDF nor UTF-8 text"):
        verify_report(b"\xff\xfe<html>", public_key=public)


def test_a_report_too_long_to_verify_is_not_signed(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    card = EnterpriseScore(
        **{**card.__dict__, "missing": (_status("eco", "x" * MAX_CONTENT_BYTES, ""),)}
    )
    report = build_enterprise_report(
        score=card,
        restrictions=make_restrictions(catalogue, set()),
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    with pytest.raises(InvalidArgument, match=f"a report is at most {MAX_CONTENT_BYTES}") as info:
        sign_report(report, private_key=Ed25519PrivateKey.generate())
    assert info.value.field == "report"


def test_hostile_and_long_strings_render_and_verify_in_a_pdf(catalogue: Catalogue) -> None:
    hostile = '<para><font name="x">&amp;</font></para> ) \\ ( \x00\x1b' + "姑苏" * 10
    card = make_score(catalogue)
    card = EnterpriseScore(
        **{
            **card.__dict__,
            "answered": (*card.answered, _status("court", rules=hostile)),
            # a coordinator's long excuse runs over a page break
            "missing": (_status("eco", "deadline exceeded; " * 300, ""),),
        }
    )
    # list entries at the lengths a node allows, a reason of 1,000 characters among them
    long_entry = dataclasses.replace(
        list_entry(catalogue, "judgement_defaulters", "zhi-long", reason="失信" * 250 + hostile),
        subject_name="苏" * 200,
        legal_basis=hostile + "x" * 400,
    )
    lists = make_lists(catalogue, (*make_lists(catalogue).entries, long_entry))
    key = Ed25519PrivateKey.generate()
    # an issuer name of 200 Chinese characters wraps inside one word
    # (and a run of spaces, which neither a browser nor a PDF shows as typed)
    for issuer in ("Agency ) \\ ( <b>x</b> &amp; 姑苏 ☆", "姑" * 200, "Gusu  Credit   Agency"):
        report = build_enterprise_report(
            score=card,
            restrictions=make_restrictions(catalogue, set()),
            lists=lists,
            catalogue=catalogue,
            issuer=issuer,
            issued_at=WHEN,
        )
        signed = sign_report(report, private_key=key)
        pdf = render_pdf(signed)
        assert verify_report_pdf(pdf, public_key=key.public_key()) == report
        assert verify_report_html(render_html(signed), public_key=key.public_key()) == report
    assert len(PdfReader(io.BytesIO(pdf)).pages) >= 3
    # the control characters are shown by their code points, not drawn as nothing or as boxes
    # (wrapped where the column ends: read without the line breaks)
    assert "(<U+0000><U+001B>姑苏" in "".join(_lines(pdf)).replace(" ", "")


def test_a_character_without_a_glyph_is_refused_not_drawn_as_a_box(
    catalogue: Catalogue, key: Ed25519PrivateKey, tmp_path: Path
) -> None:
    """An emoji (or an ideograph of an extension block) has no glyph in the embedded fonts: the
    PDF is refused with the character named; the HTML page, which the reader's fonts draw, is
    written and verifies. A PDF that carries such a report was drawn by no renderer of ours."""
    report = build_enterprise_report(
        score=make_score(catalogue),
        restrictions=make_restrictions(catalogue, set()),
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer="Gusu Credit 姑苏征信 😀 𠀀",
        issued_at=WHEN,
    )
    signed = sign_report(report, private_key=key)
    with pytest.raises(UnprintableReport, match="U\\+1F600 '😀', U\\+20000 '𠀀' in") as info:
        render_pdf(signed)
    assert info.value.field == "report" and info.value.exit_code == 3
    assert "--format html" in info.value.message
    assert verify_report_html(render_html(signed), public_key=key.public_key()) == report
    # its envelope in another report's PDF: not what this renderer draws of it
    other = render_pdf(dataclasses.replace(signed, report=dataclasses.replace(report, issuer="x")))
    carried = _with_attachments(other, envelope_text(signed).encode())
    with pytest.raises(TamperedReport, match="this version draws no such file of it") as refused:
        verify_report_pdf(carried, public_key=key.public_key())
    assert refused.value.field == "file"


def test_cli_verifies_pdf_and_html_and_checks_the_format(
    tmp_path: Path,
    signed: SignedReport,
    pdf: bytes,
    page: str,
    key: Ed25519PrivateKey,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "issuer.pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    key_args = ["--key", str(tmp_path / "issuer.pub")]
    # the file's content decides, not its name
    (tmp_path / "report.bin").write_bytes(pdf)
    (tmp_path / "report.pdf").write_text(page, encoding="utf-8")
    for name in ("report.bin", "report.pdf"):
        assert main(["report", "verify", str(tmp_path / name), *key_args]) == 0
        out = capsys.readouterr().out
        assert "verified" in out and FIRM in out and "姑苏征信" in out
    score = signed.report.score
    tampered = show_instead(pdf, "score", str(score), str(score + 1))
    (tmp_path / "tampered.pdf").write_bytes(tampered)
    assert main(["report", "verify", str(tmp_path / "tampered.pdf"), *key_args]) == 4
    assert ALTERED in capsys.readouterr().err
    # a note drawn over the grade by an incremental update
    drawing = f"BT /{bold_font(pdf)} 40 Tf (A) Tj ET".encode()
    (tmp_path / "updated.pdf").write_bytes(incremental_update(pdf, drawing))
    assert main(["report", "verify", str(tmp_path / "updated.pdf"), *key_args]) == 4
    assert "bytes were appended" in capsys.readouterr().err
    # the code printed is the signed content's
    assert main(["report", "verify", str(tmp_path / "report.bin"), *key_args]) == 0
    assert f"code          {signed.verification_code}" in capsys.readouterr().out
    (tmp_path / "garbage.pdf").write_bytes(b"\x00\xff" * 10)
    assert main(["report", "verify", str(tmp_path / "garbage.pdf"), *key_args]) == 3
    # --format against --out's suffix: a usage error before anything is read or asked
    enterprise = ["report", "enterprise", FIRM, "--signing-key", "absent.key", "--coordinator",
                  "127.0.0.1:1", "--requester", "agency-1", "--keys", "absent"]  # fmt: skip
    for out, fmt in (("r.html", "pdf"), ("r.pdf", "html"), ("r.HTM", "pdf")):
        with pytest.raises(SystemExit) as exit_info:
            main([*enterprise, "--out", str(tmp_path / out), "--format", fmt])
        assert exit_info.value.code == 2
        assert f"--format {fmt} does not match --out {out}" in capsys.readouterr().err


# --- red and black lists --------------------------------------------------------------------


def test_the_report_carries_the_list_entries_in_view(
    catalogue: Catalogue, signed: SignedReport
) -> None:
    r = signed.report
    red, black = r.list_entries
    assert (red.list, red.colour, red.department) == (
        "customs_advanced_certified",
        ListColour.RED,
        "customs",
    )
    assert (black.list, black.colour, black.department) == (
        "judgement_defaulters",
        ListColour.BLACK,
        "court",
    )
    # the names come from the catalogue, the rest from the published entry
    court_list = next(t for t in catalogue.lists if t.id == "judgement_defaulters")
    assert (black.list_name, black.list_name_zh) == (court_list.name, court_list.name_zh)
    assert black.department_name == catalogue.department("court").name
    assert black.legal_basis == court_list.legal_basis and black.subject_name == FIRM_NAME
    assert (red.facilitation_class, black.facilitation_class) == ("AA", None)
    assert r.facilitation == ("AA (customs_advanced_certified, until 2029-11-26)",)
    assert r.list_departments == catalogue.list_departments(SubjectKind.ENTERPRISE)
    assert r.lists_missing == () and r.query_day == DAY
    # in the signed content, as published
    (content_red, content_black) = json.loads(signed.content)["list_entries"]
    assert content_red["colour"] == "red" and content_red["facilitation_class"] == "AA"
    assert (
        content_black["window_start"] == "2025-11-26"
        and content_black["facilitation_class"] is None
    )


def test_a_report_takes_only_the_enterprises_entries_in_view_that_day(catalogue: Catalogue) -> None:
    card, flags = make_score(catalogue), make_restrictions(catalogue, set())

    def build(lists: ListSearchResult, when: datetime = WHEN) -> EnterpriseReport:
        return build_enterprise_report(
            score=card,
            restrictions=flags,
            lists=lists,
            catalogue=catalogue,
            issuer="agency",
            issued_at=when,
        )

    def refused(lists: ListSearchResult, words: str, field: str = "lists.entries[0]") -> None:
        with pytest.raises(InvalidArgument, match=words) as info:
            build(lists)
        assert info.value.field == field

    court = list_entry(catalogue, "judgement_defaulters", "zhi-1")
    other = make_uscc(authority="9", category="1", region="320500", organisation="M000200YX")
    # the search must be the enterprise's, on every list, in one answer
    for changes in ({"subject_id": other}, {"list_id": "judgement_defaulters"},
                    {"next_page_token": "abc"}, {"subject_kind": SubjectKind.PERSON}):  # fmt: skip
        bad = dataclasses.replace(make_lists(catalogue, (court,)), **changes)
        refused(bad, "a report needs the search of enterprise", "lists")
    refused(make_lists(catalogue, (dataclasses.replace(court, subject_id=other),)), "is about")
    # windows are counted in China Standard Time: WHEN is 17:30 there, on DAY
    assert build(make_lists(catalogue, (dataclasses.replace(court, window_start=DAY),)))
    # a node may judge by its own date near midnight: one day of slack, no more
    for start, end in ((DAY + timedelta(days=1), DAY + timedelta(days=9)),
                       (DAY - timedelta(days=9), DAY - timedelta(days=1))):  # fmt: skip
        moved = dataclasses.replace(court, window_start=start, window_end=end)
        assert build(make_lists(catalogue, (moved,))).list_entries[0].window_start == start
    for start, end in ((DAY + timedelta(days=2), DAY + timedelta(days=9)),
                       (DAY - timedelta(days=9), DAY - timedelta(days=2))):  # fmt: skip
        moved = dataclasses.replace(court, window_start=start, window_end=end)
        refused(make_lists(catalogue, (moved,)), "not on 2026-11-26, the day of the query")
    # a class on a black list, a colour or department the catalogue does not give the list
    refused(
        make_lists(catalogue, (dataclasses.replace(court, facilitation_class="AA"),)),
        "only red lists grant one",
    )
    refused(
        make_lists(catalogue, (dataclasses.replace(court, colour=ListColour.RED),)),
        "the coordinator's catalogue differs from yours",
    )
    refused(
        make_lists(catalogue, (dataclasses.replace(court, department=DepartmentId("tax")),)),
        "published by court",
    )
    # a list this catalogue lacks is shown by its id
    unknown = dataclasses.replace(court, list="new_list", department=DepartmentId("fire"))
    (entry,) = build(make_lists(catalogue, (unknown,))).list_entries
    assert (entry.list_name, entry.list_name_zh) == ("new_list", "")
    assert entry.department_name == catalogue.department("fire").name


def test_both_entries_show_in_html_and_pdf_and_verify(
    catalogue: Catalogue, signed: SignedReport, page: str, pdf: bytes, key: Ed25519PrivateKey
) -> None:
    black = signed.report.list_entries[1]
    # the page: each entry's list, colour and window marked, department, reason, legal basis
    assert "<h2>Public list entries in force 红黑名单</h2>" in page
    assert (
        '<span data-field="list_entry.0.list">Advanced certified enterprises (AEO, formerly AA) '
        "高级认证企业</span>"
    ) in page
    assert '<td class="in-force"><span data-field="list_entry.1.colour">BLACK</span>' in page
    assert '<td><span data-field="list_entry.0.colour">RED</span>' in page
    assert '<span data-field="list_entry.1.window">2025-11-26 – 2028-11-25</span>' in page
    assert html.escape(black.reason) in page and html.escape(black.legal_basis) in page
    assert f"<td>{html.escape(black.department_name)}</td>" in page
    assert "in public view on 2026-11-26 (China Standard Time), the day of the query" in page
    # the facilitation class, under the grade
    facilitation = (
        '<span data-field="facilitation">AA (customs_advanced_certified, until 2029-11-26)</span>'
    )
    assert page.index('data-field="grade"') < page.index(facilitation) < page.index("Breakdown")
    assert verify_report_html(page, public_key=key.public_key()) == signed.report
    # the PDF: the same rows, read back from the page's text
    text = " ".join(_lines(pdf))
    for words in ("Facilitation classes (red lists) AA (customs_advanced_certified, until "
                  "2029-11-26)", "Public list entries in force 红黑名单", "BLACK", "RED",
                  "2025-11-26 –", "Grants facilitation class AA.", "高级认证企业",
                  "失信被执行人名单",
                  "Entry 2025-su05-zhi-0123 of judgement_defaulters."):  # fmt: skip
        assert words in text, words
    assert text.index("Facilitation classes") < text.index("Breakdown")
    assert verify_report_pdf(pdf, public_key=key.public_key()) == signed.report


def test_tampering_with_the_entries_is_refused(
    signed: SignedReport, page: str, pdf: bytes, key: Ed25519PrivateKey
) -> None:
    public = key.public_key()
    # on the page: a colour, a window, a class, a whole row gone
    refused_as_altered(verify_report_html, page.replace(">BLACK<", ">RED<"), key)
    refused_as_altered(
        verify_report_html, page.replace("2028-11-25</span>", "2026-11-25</span>"), key
    )
    refused_as_altered(
        verify_report_html, page.replace("until 2029-11-26", "until 2039-11-26"), key
    )
    row = re.search(r'<tr><td><span data-field="list_entry\.1\.list">.*?</tr>\n', page)
    assert row is not None
    refused_as_altered(verify_report_html, page.replace(row.group(0), ""), key)
    # in the PDF: the colour and the window drawn otherwise
    refused_as_altered(
        verify_report_pdf, show_instead(pdf, "list_entry.1.colour", "BLACK", "RED"), key
    )
    # (a PDF string escapes its parentheses)
    shown = r"AA \(customs_advanced_certified, until 2029-11-26\)"
    refused_as_altered(verify_report_pdf, show_instead(pdf, "facilitation", shown, "none"), key)
    # the signed content without the black entry: the signature no longer matches
    content = json.loads(signed.content)
    del content["list_entries"][1]
    with pytest.raises(TamperedReport, match="signature does not match") as info:
        verify_report_html(_tamper_envelope(page, {"payload": content}), public_key=public)
    assert info.value.exit_code == 4


def test_signed_list_entries_are_parsed_strictly(
    signed: SignedReport, key: Ed25519PrivateKey
) -> None:
    """Content that the issuer's key signed but that is not a well-formed report: unknown
    fields, wrong types, impossible entries. Each refused as malformed, naming the field."""
    page = render_html(signed)

    def malformed(change: Callable[[dict[str, object]], object], field: str, words: str) -> None:
        content = json.loads(signed.content)
        change(content)
        data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        with pytest.raises(MalformedReport, match=words) as info:
            verify_report_html(_resigned(page, data.encode(), key), public_key=key.public_key())
        assert info.value.field == field and info.value.exit_code == 3
        assert not isinstance(info.value, RendererMismatch)

    def entry(i: int, **values: object) -> Callable[[dict[str, object]], object]:
        return lambda c: cast(list[dict[str, object]], c["list_entries"])[i].update(values)

    malformed(entry(0, note="x"), "list_entries[0].note", "is not a field of it")
    malformed(entry(1, colour="green"), "list_entries[1].colour", "is not red or black")
    malformed(entry(1, colour=None), "list_entries[1].colour", "not of the expected type")
    malformed(entry(0, window_end=20291126), "list_entries[0].window_end", "expected type")
    malformed(entry(0, window_end="2029-11-31"), "list_entries[0].window_end", "is not a date")
    malformed(entry(0, window_end="29-11-26"), "list_entries[0].window_end", "is not a date")
    malformed(entry(0, facilitation_class=1), "list_entries[0].facilitation_class", "type")
    malformed(entry(0, facilitation_class=""), "list_entries[0].facilitation_class", "class name")
    malformed(entry(1, facilitation_class="AA"), "list_entries[1].colour", "grants no facilitation")
    malformed(
        entry(1, window_start="2026-11-20", window_end="2026-11-10"),
        "list_entries[1].window_end",
        "before it starts",
    )
    malformed(
        entry(1, window_start="2020-01-01", window_end="2021-01-01"),
        "list_entries[1]",
        "not on 2026-11-26, the day of the query",
    )
    malformed(lambda c: c.pop("list_entries"), "list_entries", "missing from the signed content")
    malformed(lambda c: c.update(list_entries={}), "list_entries", "expected type")
    malformed(lambda c: c.update(list_entries=["x"]), "list_entries[0]", "is not an object")
    malformed(lambda c: c.update(list_departments=[1]), "list_departments", "department ids")
    malformed(
        lambda c: c.update(lists_missing=[{"department": "eco"}]),
        "lists_missing[0].name",
        "missing from the signed content",
    )
    malformed(
        lambda c: c.update(lists_missing=[{**dict.fromkeys(
            ("department", "name", "detail", "rules_version"), "x"), "extra": 1}]),
        "lists_missing[0].extra",
        "is not a field of it",
    )  # fmt: skip
    malformed(lambda c: c.update(lists_found=[]), "lists_found", "is not a field of an enterprise")
    # a report in the previous content format, which had no lists: another version's
    content = json.loads(signed.content)
    content["format"] = "osmanthus-enterprise-report/2"
    for name in ("list_entries", "list_departments", "lists_missing"):
        del content[name]
    data = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    with pytest.raises(RendererMismatch, match="verify it with the version that issued it"):
        verify_report_html(_resigned(page, data.encode(), key), public_key=key.public_key())


def test_an_empty_list_section_says_none_and_names_who_did_not_answer(
    catalogue: Catalogue, key: Ed25519PrivateKey
) -> None:
    def rendered(lists: ListSearchResult) -> tuple[EnterpriseReport, str, str]:
        report = build_enterprise_report(
            score=make_score(catalogue),
            restrictions=make_restrictions(catalogue, set()),
            lists=lists,
            catalogue=catalogue,
            issuer="agency",
            issued_at=WHEN,
        )
        signed = sign_report(report, private_key=key)
        page, pdf = render_html(signed), render_pdf(signed)
        assert verify_report_html(page, public_key=key.public_key()) == report
        assert verify_report_pdf(pdf, public_key=key.public_key()) == report
        return report, page, " ".join(_lines(pdf))

    # every department answered, none lists the enterprise
    report, page, text = rendered(make_lists(catalogue, ()))
    assert report.list_entries == () and report.facilitation == ()
    none = "None: this enterprise is on no red or black list in public view on 2026-11-26"
    for shown in (page, text):
        assert none in shown
        assert "did not answer the list search" not in shown
    assert '<span data-field="facilitation">none</span>' in page
    assert "Facilitation classes (red lists) none" in text
    # customs did not answer: "none" is not claimed, customs is named, and so is the gap in the
    # facilitation classes (customs grants AA)
    report, page, text = rendered(
        make_lists(catalogue, (), (_status("customs", "deadline exceeded", ""),))
    )
    assert [(d.department, d.detail) for d in report.lists_missing] == [
        ("customs", "deadline exceeded")
    ]
    customs = catalogue.department("customs").name
    for shown in (page, text):
        assert none not in shown
        assert "None found: no department that answered lists this enterprise" in shown
        assert "so this is not proof that it is on none" in shown
        assert "1 department(s) publishing lists did not answer the list search" in shown
    assert (
        f'<tr><td>{customs}</td><td>customs</td><td class="in-force">did not answer: deadline '
        "exceeded</td></tr>"
    ) in page
    assert f"{customs} customs did not answer: deadline exceeded" in text
    assert "Facilitation classes (red lists) none; incomplete: customs did not answer" in text
    # entries found while a department did not answer: both shown
    report, page, text = rendered(
        make_lists(catalogue, missing=(_status("safety", "unavailable", ""),))
    )
    assert len(report.list_entries) == 2
    assert "did not answer: unavailable" in page and "did not answer: unavailable" in text
    assert (
        "AA (customs_advanced_certified, until 2029-11-26); incomplete: safety did not answer"
        in page
    )
