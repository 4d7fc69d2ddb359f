"""Enterprise credit reports rendered: the HTML page and the PDF show every figure, draw fixed
bytes for each renderer revision, escape what they are given, and verify."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import reportlab
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader

from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.types import SubjectKind
from sdk.report import (
    EMBED_ID,
    PDF_ATTACHMENT,
    RENDERER,
    EnterpriseReport,
    SignedReport,
    TamperedReport,
    UnprintableReport,
    build_enterprise_report,
    canonical_content,
    render_html,
    render_pdf,
    sign_report,
    verify_report,
    verify_report_html,
    verify_report_pdf,
)
from sdk.report.model import RENDERER_REVISION
from sdk.report.signed import envelope_text
from sdk.results import EnterpriseScore, ListSearchResult
from tests.unit.report.conftest import (
    FIRM,
    WHEN,
    _envelope_of,
    _golden,
    _status,
    _with_attachments,
    list_entry,
    make_lists,
    make_restrictions,
    make_score,
)


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


# --- PDF ------------------------------------------------------------------------------------


def _lines(pdf: bytes) -> list[str]:
    """The page text as laid out, one string per line with runs of spaces made one."""
    reader = PdfReader(io.BytesIO(pdf))
    text = "\n".join(page.extract_text(extraction_mode="layout") for page in reader.pages)
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


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
        cwd=Path(__file__).resolve().parents[3],
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=60,
    ).stdout
    assert again == pdf
    # a report that differs in one value renders differently
    other = dataclasses.replace(signed.report, issuer="Gusu Credit Agency")
    assert render_pdf(sign_report(other, private_key=key)) != pdf


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


# --- red and black lists --------------------------------------------------------------------


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
