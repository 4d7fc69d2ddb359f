"""Enterprise credit reports: every way a tampered page or PDF is refused (as altered, with exit
4, or as malformed, with exit 3), and quickly."""

from __future__ import annotations

import base64
import io
import json
import random
import re
import time
import zlib
from collections.abc import Callable
from typing import cast

import pytest
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

from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue
from sdk.report import (
    EMBED_ID,
    MAX_ENVELOPE_BYTES,
    MAX_REPORT_BYTES,
    PDF_ATTACHMENT,
    MalformedReport,
    SignedReport,
    TamperedReport,
    build_enterprise_report,
    render_pdf,
    sign_report,
    verify_report,
    verify_report_html,
    verify_report_pdf,
)
from tests.unit.report.conftest import (
    WHEN,
    _edit_pages,
    _mark,
    _tamper_envelope,
    _with_attachments,
    bold_font,
    incremental_update,
    make_lists,
    make_restrictions,
    make_score,
    refused_as_altered,
    show_instead,
)


def _with_key_id(signature: str, kid: str) -> str:
    """The detached JWS with the key id of its protected header replaced (the signature kept)."""
    header, empty, value = signature.split(".")
    fields = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    fields["kid"] = kid
    encoded = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{encoded}.{empty}.{value}"


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


# --- PDF ------------------------------------------------------------------------------------


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


#: where the renderer draws the grade (40 pt bold) on the first page
_GRADE_AT = b"62.69 670.87"


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


# --- red and black lists --------------------------------------------------------------------


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
