"""The enterprise credit report tests' shared ground: a report built from a fixed aggregate,
signed with a module's key and rendered once as a page and a PDF, and the helpers that alter those
files as a forger would (tests/integration/test_report.py and test_report_pdfa.py use them too)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pypdf import PdfReader, PdfWriter
from pypdf.generic import ArrayObject, DecodedStreamObject, NameObject

from osmanthus.core.catalogue import Catalogue, ListColour, load_catalogue
from osmanthus.core.ids import make_uscc
from osmanthus.core.lists import EntryId, PublicEntry
from osmanthus.core.score import Breakdown, grade, score
from osmanthus.core.types import DepartmentId, DepartmentStatus, Shape, SubjectKind
from sdk.report import (
    EMBED_ID,
    PDF_ATTACHMENT,
    EnterpriseReport,
    ReportBonus,
    ReportDepartment,
    ReportListEntry,
    ReportRenderer,
    ReportRestriction,
    SignedReport,
    TamperedReport,
    build_enterprise_report,
    render_html,
    render_pdf,
    sign_report,
)
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


@pytest.fixture(scope="module")
def pdf(signed: SignedReport) -> bytes:
    return render_pdf(signed)


# --- altering a page ------------------------------------------------------------------------


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


# --- altering a PDF -------------------------------------------------------------------------


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


def bold_font(pdf: bytes) -> str:
    """The resource name of the first subset of the bold face, as the grade is drawn in it."""
    found = re.search(rb"/(F\d+\+0) 40 Tf 44 TL \([A-Z]\) Tj", pdf)
    assert found is not None
    return found.group(1).decode()


# --- the golden report ----------------------------------------------------------------------


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
