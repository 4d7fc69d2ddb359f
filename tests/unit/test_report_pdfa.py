"""A PDF report reads the same in every viewer: its fonts are embedded and draw real glyphs (the
Chinese title is checked on a rendering of page 1), and the file carries what PDF/A-3b asks."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from PIL import Image, ImageDraw, ImageFont, ImageOps
from pypdf import PdfReader
from pypdf.generic import ArrayObject, DictionaryObject, IndirectObject, PdfObject, StreamObject

from sdk.report import PDF_ATTACHMENT, SignedReport, render_pdf
from sdk.report.fonts import FACES, FONT_DIR, SANS, SANS_BOLD, face_for
from tests.unit.report.conftest import _golden

#: the resolution page 1 is rendered at, and points to pixels
DPI = 150
PX = DPI / 72
#: the title's Chinese, as the layout sets it (17 pt bold, each ideograph one em wide)
TITLE_ZH = "企业信用报告"
TITLE_SIZE = 17
#: how alike a drawn character and the font's own glyph must be (Pearson correlation of their
#: ink, each cropped to its ink and scaled to one grid); an empty box scores far lower
ALIKE = 0.8
NS = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "pdfaid": "http://www.aiim.org/pdfa/ns/id/",
    "dc": "http://purl.org/dc/elements/1.1/",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "pdf": "http://ns.adobe.com/pdf/1.3/",
}


@pytest.fixture(scope="module")
def signed() -> SignedReport:
    return _golden()


@pytest.fixture(scope="module")
def pdf(signed: SignedReport) -> bytes:
    return render_pdf(signed)


def _objects(reader: PdfReader) -> Iterator[PdfObject]:
    """Every indirect object of the file."""
    size = int(cast(int, reader.trailer["/Size"]))
    for number in range(1, size):
        found = reader.get_object(number)
        if found is not None:
            yield found


def _fonts(reader: PdfReader) -> list[DictionaryObject]:
    return [
        o for o in _objects(reader) if isinstance(o, DictionaryObject) and o.get("/Type") == "/Font"
    ]


def test_every_font_is_embedded_and_none_is_a_standard_one(pdf: bytes) -> None:
    """What `pdffonts` shows as "emb yes" for each font: a font program in its descriptor."""
    reader = PdfReader(io.BytesIO(pdf))
    fonts = _fonts(reader)
    assert fonts
    names = set()
    for font in fonts:
        assert font["/Subtype"] == "/TrueType", font
        descriptor = cast(DictionaryObject, font["/FontDescriptor"].get_object())
        # FontFile2: an embedded TrueType program (FontFile, FontFile3 for the others)
        program = descriptor.get("/FontFile2")
        assert program is not None, font["/BaseFont"]
        assert len(cast(StreamObject, program.get_object()).get_data()) > 1000
        # a subset: six capitals and a plus before the font's name
        base = str(font["/BaseFont"])
        assert re.fullmatch(r"/[A-Z]{6}\+NotoSans(Mono)?CJKsc-(Regular|Bold)", base), base
        names.add(base.split("+")[1])
    assert names == {
        "NotoSansCJKsc-Regular",
        "NotoSansCJKsc-Bold",
        "NotoSansMonoCJKsc-Regular",
        "NotoSansMonoCJKsc-Bold",
    }
    # and no page names a font the file does not embed (the standard 14 are never embedded)
    for page in reader.pages:
        resources = cast(DictionaryObject, page["/Resources"])
        for ref in cast(DictionaryObject, resources["/Font"]).values():
            assert ref.get_object() in fonts
    assert b"/Helvetica" not in pdf and b"/Courier" not in pdf and b"STSong" not in pdf


def _advances(program: bytes) -> dict[int, float]:
    """Code -> advance width in thousandths of an em, read from an embedded TrueType subset:
    its one (1, 0) cmap subtable (format 6, as reportlab writes it) and its hmtx."""
    tables = {}
    for i in range(struct.unpack(">H", program[4:6])[0]):
        tag, _, offset, length = struct.unpack(">4sIII", program[12 + 16 * i : 28 + 16 * i])
        tables[tag] = program[offset : offset + length]
    units = struct.unpack(">H", tables[b"head"][18:20])[0]
    metrics = struct.unpack(">H", tables[b"hhea"][34:36])[0]
    hmtx = tables[b"hmtx"]
    widths = [struct.unpack(">H", hmtx[4 * g : 4 * g + 2])[0] for g in range(metrics)]
    cmap = tables[b"cmap"]
    version, count = struct.unpack(">HH", cmap[:4])
    assert count == 1, "a symbolic TrueType font of PDF/A has one cmap subtable, or (3, 0)"
    platform, encoding, offset = struct.unpack(">HHI", cmap[4:12])
    assert (version, platform, encoding) == (0, 1, 0)
    form, _, _, first, entries = struct.unpack(">HHHHH", cmap[offset : offset + 10])
    assert form == 6
    glyphs = struct.unpack(f">{entries}H", cmap[offset + 10 : offset + 10 + 2 * entries])
    return {
        first + code: widths[min(glyph, metrics - 1)] * 1000 / units
        for code, glyph in enumerate(glyphs)
    }


def test_every_fonts_widths_are_its_programs(pdf: bytes) -> None:
    """ISO 19005-2 6.2.11.5: the widths a font dictionary states are the embedded glyphs'."""
    reader = PdfReader(io.BytesIO(pdf))
    for font in _fonts(reader):
        descriptor = cast(DictionaryObject, font["/FontDescriptor"].get_object())
        assert "/Encoding" not in font  # a symbolic TrueType font names no encoding
        program = cast(StreamObject, descriptor["/FontFile2"].get_object()).get_data()
        advances = _advances(program)
        first = int(cast(int, font["/FirstChar"]))
        for i, width in enumerate(cast(ArrayObject, font["/Widths"])):
            assert float(width) == pytest.approx(advances[first + i], abs=1), (font, i)


def test_the_file_says_it_is_pdf_a_3b_and_carries_what_that_asks(
    signed: SignedReport, pdf: bytes
) -> None:
    reader = PdfReader(io.BytesIO(pdf))
    # a binary comment after the header, an id, no encryption
    assert pdf.startswith(b"%PDF-1.4\n%") and all(b > 127 for b in pdf[10:14])
    assert "/ID" in reader.trailer and "/Encrypt" not in reader.trailer
    catalog = cast(DictionaryObject, reader.trailer["/Root"].get_object())
    # XMP metadata, unfiltered, naming the conformance and repeating the information dictionary
    stream = cast(StreamObject, catalog["/Metadata"].get_object())
    assert (stream["/Type"], stream["/Subtype"]) == ("/Metadata", "/XML")
    assert "/Filter" not in stream
    xmp = stream.get_data()
    assert xmp.startswith('<?xpacket begin="\ufeff"'.encode()) and xmp.endswith(b'end="w"?>')
    root = ElementTree.fromstring(xmp.split(b"?>", 1)[1].rsplit(b"<?xpacket", 1)[0])

    def one(path: str) -> str:
        (element,) = root.findall(f".//{path}", NS)
        return element.text or ""

    assert (one("pdfaid:part"), one("pdfaid:conformance")) == ("3", "B")
    info = reader.metadata
    assert info is not None
    assert one("dc:title/rdf:Alt/rdf:li") == info.title == signed_title(signed)
    assert one("dc:creator/rdf:Seq/rdf:li") == info.author == signed.report.issuer
    assert one("dc:description/rdf:Alt/rdf:li") == info.subject
    assert signed.verification_code in (info.subject or "")
    assert one("xmp:CreatorTool") == info.creator == "Osmanthus"
    assert one("pdf:Producer") == info.producer
    assert one("pdf:Keywords") == info["/Keywords"]
    assert one("pdf:Trapped") == "False" and info["/Trapped"] == "/False"
    when = "2026-11-26T09:30:15+00:00"
    assert one("xmp:CreateDate") == one("xmp:ModifyDate") == when
    assert info["/CreationDate"] == info["/ModDate"] == "D:20261126093015+00'00'"
    # an sRGB output intent, with its ICC profile (a display profile of RGB, version 2)
    (intent,) = cast(ArrayObject, catalog["/OutputIntents"])
    intent = cast(DictionaryObject, intent.get_object())
    assert intent["/S"] == "/GTS_PDFA1"
    assert intent["/OutputConditionIdentifier"] == "sRGB IEC61966-2.1"
    profile = cast(StreamObject, intent["/DestOutputProfile"].get_object())
    assert profile["/N"] == 3
    icc = profile.get_data()
    assert int.from_bytes(icc[:4], "big") == len(icc)
    assert (icc[8], icc[12:16], icc[16:20], icc[36:40]) == (2, b"mntr", b"RGB ", b"acsp")
    # the envelope: an embedded file and an associated file (ISO 19005-3, 6.8)
    (spec_ref,) = cast(ArrayObject, catalog["/AF"])
    names = cast(
        ArrayObject,
        cast(DictionaryObject, cast(DictionaryObject, catalog["/Names"])["/EmbeddedFiles"])[
            "/Names"
        ],
    )
    assert names[0] == PDF_ATTACHMENT
    assert isinstance(spec_ref, IndirectObject) and names[1] == spec_ref
    spec = cast(DictionaryObject, spec_ref.get_object())
    assert spec["/AFRelationship"] == "/Data"
    assert spec["/F"] == spec["/UF"] == PDF_ATTACHMENT
    embedded = cast(StreamObject, cast(DictionaryObject, spec["/EF"])["/F"].get_object())
    assert embedded["/Subtype"] == "/application/json"
    params = cast(DictionaryObject, embedded["/Params"])
    assert params["/ModDate"] == "D:20261126093015+00'00'"
    assert params["/Size"] == len(embedded.get_data())
    # nothing transparent: no soft mask, constant alpha or blend mode, no transparency group
    for obj in _objects(reader):
        if isinstance(obj, DictionaryObject):
            assert "/SMask" not in obj and "/BM" not in obj, obj
            assert obj.get("/CA", 1) == 1 and obj.get("/ca", 1) == 1, obj
    for page in reader.pages:
        assert "/Group" not in page


def signed_title(signed: SignedReport) -> str:
    return f"Enterprise credit report {signed.report.subject_id} ({signed.report.report_id})"


# --- what a viewer draws -------------------------------------------------------------------


def _poppler(tool: str) -> str:
    found = shutil.which(tool)
    if found is None:
        message = f"{tool} is missing: install poppler-utils (apt-get install poppler-utils)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def _ink(image: Image.Image) -> Image.Image:
    """The image cropped to its ink (dark pixels), as ink on black: 255 is full ink."""
    inverted = ImageOps.invert(image.convert("L"))
    box = inverted.point(lambda v: 255 if v > 96 else 0).getbbox()
    assert box is not None, "no ink where a character is drawn"
    return inverted.crop(box)


def _alike(a: Image.Image, b: Image.Image) -> float:
    """Pearson correlation of two ink images scaled to one 24 x 24 grid."""
    grid = (24, 24)
    xs = list(a.resize(grid, Image.Resampling.BILINEAR).tobytes())
    ys = list(b.resize(grid, Image.Resampling.BILINEAR).tobytes())
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    vx = sum((x - mx) ** 2 for x in xs)
    vy = sum((y - my) ** 2 for y in ys)
    return cov / (vx * vy) ** 0.5 if vx and vy else 0.0


def _glyph(char: str, face: str, size_pt: float) -> Image.Image:
    """`char` drawn by the font file that the report draws it with, straight from the file."""
    drawn_by = face_for(char, face)
    assert drawn_by is not None
    font = ImageFont.truetype(str(FONT_DIR / FACES[drawn_by]), round(size_pt * PX))
    side = round(size_pt * PX * 3)
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).text((side // 3, side // 3), char, font=font, fill=0)
    return _ink(image)


def _empty_box(size_pt: float) -> Image.Image:
    """What a viewer without the font draws instead: an empty box (a "tofu")."""
    side = round(size_pt * PX)
    image = Image.new("L", (side, side), 255)
    ImageDraw.Draw(image).rectangle((2, 2, side - 3, side - 3), outline=0, width=2)
    return _ink(image)


@pytest.fixture(scope="module")
def page_one(pdf: bytes, tmp_path_factory: pytest.TempPathFactory) -> tuple[Image.Image, str]:
    """Page 1 as poppler draws it (grey, DPI), and its words with their boxes in points."""
    work = tmp_path_factory.mktemp("report-render")
    (work / "report.pdf").write_bytes(pdf)
    subprocess.run(
        [_poppler("pdftoppm"), "-r", str(DPI), "-gray", "-f", "1", "-l", "1", "-png",
         str(work / "report.pdf"), str(work / "page")],
        check=True,
        timeout=60,
    )  # fmt: skip
    (png,) = work.glob("page*.png")
    subprocess.run(
        [_poppler("pdftotext"), "-bbox", "-f", "1", "-l", "1", str(work / "report.pdf"),
         str(work / "words.html")],
        check=True,
        timeout=60,
    )  # fmt: skip
    return Image.open(png).convert("L"), (work / "words.html").read_text(encoding="utf-8")


def _word_box(words: str, text: str) -> tuple[float, float, float, float]:
    found = re.search(
        r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">'
        + re.escape(text)
        + "</word>",
        words,
    )
    assert found is not None, f"{text!r} is not a word of page 1"
    x0, y0, x1, y1 = (float(v) for v in found.groups())
    return x0, y0, x1, y1


def test_the_chinese_title_is_drawn_in_real_glyphs_on_page_one(
    page_one: tuple[Image.Image, str],
) -> None:
    """Each ideograph of the title, where poppler draws it, has the ink of the embedded font's
    glyph for that ideograph: not an empty box, not another character, not nothing."""
    image, words = page_one
    x0, y0, x1, y1 = _word_box(words, TITLE_ZH)
    # one em per ideograph
    assert x1 - x0 == pytest.approx(TITLE_SIZE * len(TITLE_ZH), abs=0.5)
    references = [_glyph(c, SANS_BOLD, TITLE_SIZE) for c in TITLE_ZH]
    tofu = _empty_box(TITLE_SIZE)
    for i, char in enumerate(TITLE_ZH):
        left = x0 + i * TITLE_SIZE
        cell = _ink(image.crop((round(left * PX), round(y0 * PX), round((left + TITLE_SIZE) * PX),
                                round(y1 * PX))))  # fmt: skip
        scores = [_alike(cell, reference) for reference in references]
        assert scores[i] > ALIKE, (char, scores)
        # the glyph of this ideograph, no other's, and nothing like an empty box
        assert max(range(len(scores)), key=scores.__getitem__) == i, (char, scores)
        assert _alike(cell, tofu) < scores[i] - 0.2, char


def test_the_grade_scale_draws_its_greater_or_equal_sign(
    page_one: tuple[Image.Image, str],
) -> None:
    """The "≥" of the grade line (a character the standard fonts lack) is drawn as itself."""
    image, words = page_one
    x0, y0, x1, y1 = _word_box(words, "≥")
    cell = _ink(image.crop((round(x0 * PX), round(y0 * PX), round(x1 * PX), round(y1 * PX))))
    size = 8  # the grade line is a note
    assert _alike(cell, _glyph("≥", SANS, size)) > ALIKE
    assert _alike(cell, _glyph("=", SANS, size)) < ALIKE


def test_the_embedded_fonts_ship_with_their_licence() -> None:
    licence = (FONT_DIR / "OFL.txt").read_text(encoding="utf-8")
    assert "SIL OPEN FONT LICENSE Version 1.1" in licence and "Adobe" in licence
    for file in FACES.values():
        data = (FONT_DIR / file).read_bytes()
        # TrueType outlines (reportlab embeds no CFF), and a font that allows embedding
        assert data[:4] == b"\x00\x01\x00\x00" and b"glyf" in data[:400]
    assert SANS in FACES and len((Path(FONT_DIR) / FACES[SANS]).read_bytes()) < 8 << 20


def test_the_text_face_has_every_character_of_gbk_but_one() -> None:
    """GB2312 and GBK: the character sets of Chinese text before Unicode (GB2312 the 6,763
    common ideographs, GBK every CJK Unified Ideograph of Unicode 1.1), all printable."""
    gbk = set()
    for lead in range(0x81, 0xFF):
        for trail in range(0x40, 0xFF):
            with contextlib.suppress(UnicodeDecodeError):
                gbk.add(bytes([lead, trail]).decode("gbk"))
    assert len(gbk) > 21_000
    assert [c for c in sorted(gbk) if face_for(c, SANS) is None] == ["≒"]
    assert all(face_for(chr(c), SANS) for c in range(0x4E00, 0x9FA6))
    # and what none has is refused, not drawn as an empty box
    assert face_for("😀", SANS) is None and face_for("\U00020000", SANS) is None
