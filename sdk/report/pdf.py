"""The A4 PDF of a report (PDF/A-3b): its layout drawn with reportlab, the envelope attached."""

from __future__ import annotations

import functools
import io
from typing import Any, Final

import reportlab
from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from sdk.report import layout
from sdk.report.errors import UnprintableReport
from sdk.report.fonts import (
    MONO,
    MONO_BOLD,
    SANS,
    SANS_BOLD,
    markup,
    register_fonts,
    require_glyphs,
)
from sdk.report.pdfa import add_pdfa_entries, pdf_date, xmp_metadata
from sdk.report.signed import SignedReport, envelope_text

#: the name of the embedded file that carries the envelope in a PDF report
PDF_ATTACHMENT: Final = "osmanthus-report.json"
#: a report file, an HTML page in UTF-8 or a PDF, is at most this many bytes. A PDF embeds the
#: glyphs it shows (about 300 bytes for each distinct ideograph): 40-60 kB for a usual report,
#: some MB for content of 64 kB in ideographs that are all different
MAX_REPORT_BYTES: Final = 16 << 20
#: the marked-content tag around each signed value on a PDF page (PDF 32000-1, 14.6)
_PDF_MARK: Final = "OsmanthusValue"
_PDF_GREY: Final = colors.HexColor("#555555")
_PDF_RULE: Final = colors.HexColor("#dddddd")
_PDF_ALERT: Final = colors.HexColor("#aa0000")
#: a table sets its cells' font before it draws them: reportlab's default is Helvetica, which
#: the file would name and not embed
_PDF_TABLE_FONT: Final = ("FONTNAME", (0, 0), (-1, -1), SANS)
_PDF_NO_PADDING: Final = (
    _PDF_TABLE_FONT,
    ("LEFTPADDING", (0, 0), (-1, -1), 0),
    ("RIGHTPADDING", (0, 0), (-1, -1), 0),
)
_CREATOR: Final = "Osmanthus"
_PRODUCER: Final = f"ReportLab PDF Library {reportlab.Version}"
_FOOTER_SIZE: Final = 7.5


@functools.cache
def _pdf_styles() -> dict[str, ParagraphStyle]:
    """The paragraph styles of a PDF report, by name; registers the fonts on first use."""
    register_fonts()
    body = ParagraphStyle("body", fontName=SANS, fontSize=9.5, leading=12.5)
    note = ParagraphStyle("note", body, fontSize=8, leading=10.5, textColor=_PDF_GREY)
    return {
        "body": body,
        "note": note,
        "title": ParagraphStyle(
            "title", body, fontName=SANS_BOLD, fontSize=17, leading=22, spaceAfter=6
        ),
        "section": ParagraphStyle(
            "section",
            body,
            fontName=SANS_BOLD,
            fontSize=12,
            leading=15,
            spaceBefore=12,
            keepWithNext=1,
        ),
        "label": ParagraphStyle("label", note, fontSize=9),
        "grade": ParagraphStyle("grade", body, fontName=SANS_BOLD, fontSize=40, leading=44),
        "score": ParagraphStyle("score", body, fontSize=22, leading=26),
        "th": ParagraphStyle("th", body, fontName=SANS_BOLD),
        "th-number": ParagraphStyle("th-number", body, fontName=SANS_BOLD, alignment=TA_RIGHT),
        "number": ParagraphStyle("number", body, alignment=TA_RIGHT),
        "alert": ParagraphStyle("alert", body, fontName=SANS_BOLD, textColor=_PDF_ALERT),
        "code": ParagraphStyle("code", body, fontName=MONO_BOLD, fontSize=12, leading=15),
    }


def _paragraph(text: str, style: str) -> Paragraph:
    """A paragraph of plain text in one of the report's styles."""
    chosen = _pdf_styles()[style]
    return Paragraph(markup(text, font=chosen.fontName), chosen)


def _begin_mark(field: str) -> str:
    # the field name as a hex string: any name, no escaping rules
    return f"/{_PDF_MARK} <</Field <{field.encode('utf-8').hex()}>>> BDC"


class _Marked(Flowable):
    """A flowable drawn inside a marked-content sequence that names the signed value it shows."""

    def __init__(self, field: str, inner: Flowable) -> None:
        super().__init__()
        self.field = field
        self.inner = inner

    def wrap(self, availWidth: float, availHeight: float) -> tuple[float, float]:  # noqa: N803
        self.width, self.height = self.inner.wrap(availWidth, availHeight)
        return self.width, self.height

    def draw(self) -> None:
        self.canv.addLiteral(_begin_mark(self.field))
        self.inner.drawOn(self.canv, 0, 0)
        self.canv.addLiteral("EMC")


def _pdf_headline(block: layout.Headline, width: float) -> list[Flowable]:
    styles = _pdf_styles()
    score_size = styles["score"].fontSize
    score_width = pdfmetrics.stringWidth(block.score.text, SANS, score_size)
    # the score and "of 200" side by side, on one baseline
    score = Table(
        [
            [
                _Marked(block.score.field, _paragraph(block.score.text, "score")),
                _paragraph(block.out_of, "label"),
            ]
        ],
        colWidths=[score_width + 6, width * 0.3],
        hAlign="LEFT",
    )
    score.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "BOTTOM"), *_PDF_NO_PADDING]))
    headline = Table(
        [
            [
                [
                    _paragraph("Grade", "label"),
                    _Marked(block.grade.field, _paragraph(block.grade.text, "grade")),
                ],
                [_paragraph("Score", "label"), score],
            ]
        ],
        colWidths=[width * 0.2, width * 0.8],
        hAlign="LEFT",
    )
    headline.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *_PDF_NO_PADDING]))
    return [Spacer(1, 8), headline, Spacer(1, 6)]


def _pdf_table(block: layout.Table, width: float) -> list[Flowable]:
    numeric = {
        i for row in block.rows for i, cell in enumerate(row.cells) if cell.style == "number"
    }
    rows: list[list[Flowable]] = []
    if block.header is not None:
        rows.append(
            [
                _paragraph(h, "th-number" if i in numeric else "th")
                for i, h in enumerate(block.header)
            ]
        )
    for row in block.rows:
        cells: list[Flowable] = []
        for i, cell in enumerate(row.cells):
            style: str
            if cell.style != "plain":
                style = cell.style
            elif i == 0 and row.total:
                style = "th"
            elif i == 0 and block.header is None:
                style = "label"
            else:
                style = "body"
            paragraph = _paragraph(cell.text, style)
            cells.append(
                _Marked(cell.field, paragraph) if isinstance(cell, layout.Value) else paragraph
            )
        rows.append(cells)
    unit = width / sum(block.widths)
    table = Table(
        rows,
        colWidths=[w * unit for w in block.widths],
        repeatRows=1 if block.header else 0,
        splitInRow=1,
    )
    commands: list[tuple[Any, ...]] = [
        _PDF_TABLE_FONT,
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LINEBELOW", (0, 0), (-1, -1), 0.5, _PDF_RULE),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    if block.header is not None:
        commands.append(("LINEBELOW", (0, 0), (-1, 0), 0.8, _PDF_GREY))
    table.setStyle(TableStyle(commands))
    return [table, Spacer(1, 6)]


def _pdf_block(block: layout.Block, width: float) -> list[Flowable]:
    if isinstance(block, layout.Headline):
        return _pdf_headline(block, width)
    if isinstance(block, layout.Table):
        return _pdf_table(block, width)
    style = _pdf_styles()["note" if block.note else "body"]
    text = "".join(
        markup(p.text, font=style.fontName, face=MONO if p.style == "code" else None)
        for p in block.parts
    )
    return [Paragraph(text, style), Spacer(1, 4)]


def render_pdf(signed: SignedReport) -> bytes:
    """An A4 PDF/A-3b file of the report: the content of the HTML page, the report id and
    verification code on every page, and the envelope attached as `osmanthus-report.json`.

    Every font is embedded (sdk.report.fonts): UnprintableReport for a report with a character
    none of them has, which would print as an empty box. The same signed report renders to the
    same bytes, in any process on any machine with the same reportlab: the document's dates are
    the time of the query, its id is a digest of its content, the fonts ship with Osmanthus,
    and nothing is compressed (zlib builds differ in what they write). Verification relies on
    it.
    """
    shown = layout.lay_out(signed)
    r = signed.report
    when = r.issued_at
    subject = f"Enterprise credit report, verification code {signed.verification_code}"
    keywords = f"enterprise credit report; {r.subject_id}; {r.report_id}"
    buffer = io.BytesIO()
    document = SimpleDocTemplate(
        buffer,
        pagesize=A4,
        leftMargin=20 * mm,
        rightMargin=20 * mm,
        topMargin=18 * mm,
        bottomMargin=22 * mm,
        title=shown.title,
        author=r.issuer,
        subject=subject,
        keywords=[keywords],
        creator=_CREATOR,
        producer=_PRODUCER,
        lang="en",
        invariant=1,
        pageCompression=0,
        # an embedded face from the first page on: reportlab's default is Helvetica, which
        # would be named on every page and embedded nowhere
        initialFontName=SANS,
    )
    width = document.width
    story: list[Flowable] = [_paragraph(shown.heading, "title")]
    for block in shown.intro:
        story += _pdf_block(block, width)
    for section in shown.sections:
        rule = HRFlowable(width="100%", thickness=0.8, color=_PDF_GREY, spaceAfter=4)
        # a heading and its rule never end a page: they move on with what they head
        rule.keepWithNext = 1
        story += [_paragraph(section.title, "section"), rule]
        for block in section.blocks:
            story += _pdf_block(block, width)

    def footer(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        # every page names its report and code, so a page cannot pass for another report's
        canvas.saveState()
        canvas.setFont(SANS, _FOOTER_SIZE)
        canvas.setFillColor(_PDF_GREY)
        x, y = doc.leftMargin, 12 * mm
        for text, field in (
            ("Report ", None),
            (r.report_id, "report_id"),
            ("   Verification code ", None),
            (signed.verification_code, "verification_code"),
            (f"   Page {doc.page}", None),
        ):
            if field:
                canvas.addLiteral(_begin_mark(field))
            canvas.drawString(x, y, require_glyphs(text, SANS))
            if field:
                canvas.addLiteral("EMC")
            x += pdfmetrics.stringWidth(text, SANS, _FOOTER_SIZE)
        canvas.restoreState()

    def first_page(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.setDateFormatter(lambda *_: pdf_date(when))
        add_pdfa_entries(
            # reportlab's PDFDocument, which the canvas's type stubs do not name
            vars(canvas)["_doc"],
            metadata=xmp_metadata(
                title=shown.title,
                author=r.issuer,
                subject=subject,
                keywords=keywords,
                creator=_CREATOR,
                producer=_PRODUCER,
                when=when,
            ),
            attachment=envelope_text(signed).encode("utf-8"),
            attachment_name=PDF_ATTACHMENT,
            description="the signed report; check it with 'osmanthus report verify'",
            when=when,
        )
        footer(canvas, doc)

    document.build(story, onFirstPage=first_page, onLaterPages=footer)
    data = buffer.getvalue()
    if len(data) > MAX_REPORT_BYTES:
        raise UnprintableReport(
            f"the PDF would be {len(data)} bytes; a report is at most {MAX_REPORT_BYTES} (it "
            "embeds a glyph for each character it prints: print the report as an HTML page)",
            field="report",
        )
    return data
