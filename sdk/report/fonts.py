"""The fonts a PDF report embeds, and setting text in them without an empty box for any character.

Every font is embedded (subset by reportlab), so a report reads the same in every viewer: no
standard font and no CID font that the viewer must supply. The faces are subsets of Noto Sans
CJK SC and Noto Sans Mono CJK SC (SIL Open Font License 1.1, fonts/OFL.txt), with TrueType
outlines, which reportlab embeds (fonts/README.md says how they were made):

- the regular face has every character a report can print: Latin, Greek, Cyrillic, common
  punctuation and symbols, CJK punctuation, kana and bopomofo, every CJK Unified Ideograph
  (U+4E00-U+9FFF) and compatibility ideograph: every character of GB2312, and of GBK but one;
- the bold face has the Latin and the ideographs of the report's own headings; any other
  character of a bold run is set in the regular face;
- the monospaced faces have ASCII, for the verification code and the command line.

A printable character none of them has (an emoji, an ideograph of the extension blocks) is
refused with UnprintableReport rather than drawn as an empty box; a character that is neither
printable nor white space (a control or format character) is shown as its code point.
"""

from __future__ import annotations

import functools
import itertools
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape as xml_escape

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from osmanthus.core.errors import ConfigError
from sdk.report.errors import UnprintableReport

FONT_DIR: Final = Path(__file__).resolve().parent / "fonts"
#: the faces by the name the renderer registers them under, and their files
SANS: Final = "OsmanthusSans"
SANS_BOLD: Final = "OsmanthusSans-Bold"
MONO: Final = "OsmanthusMono"
MONO_BOLD: Final = "OsmanthusMono-Bold"
FACES: Final = {
    SANS: "NotoSansCJKsc-Regular.subset.ttf",
    SANS_BOLD: "NotoSansCJKsc-Bold.subset.ttf",
    MONO: "NotoSansMonoCJKsc-Regular.subset.ttf",
    MONO_BOLD: "NotoSansMonoCJKsc-Bold.subset.ttf",
}
#: the face that sets whatever another face lacks: it has every character a report prints
FALLBACK: Final = SANS
#: how many characters without a glyph an error names
_SHOWN_MISSING: Final = 5


@functools.cache
def register_fonts() -> None:
    """Register the report's faces with reportlab, once per process."""
    for name, file in FACES.items():
        path = FONT_DIR / file
        if not path.is_file():
            raise ConfigError(
                f"{path} is missing: the PDF report's fonts ship in the package "
                "(sdk/report/fonts); reinstall osmanthus with its 'reports' extra",
                field="fonts",
            )
        # asciiReadable pins reportlab's default; no shaping (uharfbuzz, where installed, would
        # make the bytes depend on the machine), and none is needed for Latin and Chinese
        pdfmetrics.registerFont(TTFont(name, str(path), asciiReadable=True, shapable=False))


@functools.cache
def _glyphs(face: str) -> frozenset[int]:
    """The code points `face` has a glyph for."""
    register_fonts()
    font = pdfmetrics.getFont(face)
    if not isinstance(font, TTFont):
        raise TypeError(f"{face} is not one of the report's fonts")
    return frozenset(font.face.charToGlyph)


def shown(text: str) -> str:
    """`text` as a PDF report draws it: white space as a space (reportlab breaks lines there),
    and every other character that is not printable (a control or format character, a
    private-use or unassigned code point) as its code point, "<U+200B>", to be seen rather
    than drawn as nothing or as an empty box."""
    return "".join(
        " " if c.isspace() else c if c.isprintable() else f"<U+{ord(c):04X}>" for c in text
    )


def face_for(char: str, face: str) -> str | None:
    """The face that draws `char` in a run set in `face`: `face` itself, else the regular face;
    None when neither has a glyph for it."""
    code = ord(char)
    if code in _glyphs(face):
        return face
    if code in _glyphs(FALLBACK):
        return FALLBACK
    return None


def _refuse(text: str, missing: list[str]) -> UnprintableReport:
    names = ", ".join(f"U+{ord(c):04X} {c!r}" for c in missing[:_SHOWN_MISSING])
    more = f" and {len(missing) - _SHOWN_MISSING} more" if len(missing) > _SHOWN_MISSING else ""
    return UnprintableReport(
        f"{names}{more} in {text[:60]!r} cannot be printed: the PDF report's embedded fonts "
        "have no glyph for it (they have Latin, Greek, Cyrillic, CJK punctuation and every "
        "character of GBK, the CJK Unified Ideographs U+4E00-U+9FFF among them). Issue the "
        "report as an HTML page (--format html), which the reader's own fonts draw",
        field="report",
    )


def require_glyphs(text: str, face: str) -> str:
    """`text`, after checking that `face` has a glyph for each of its characters (for text
    drawn directly on the canvas, in one face)."""
    missing = [c for c in dict.fromkeys(text) if ord(c) not in _glyphs(face)]
    if missing:
        raise _refuse(text, missing)
    return text


def markup(text: str, *, font: str, face: str | None = None) -> str:
    """Paragraph markup for plain text in a paragraph set in `font`: escaped, in `face` (by
    default the paragraph's font), each character `face` lacks in the regular face.

    Raises UnprintableReport when no face has a character: it would print as an empty box.
    """
    wanted = face or font
    text = shown(text)
    faces = [face_for(c, wanted) for c in text]
    missing = [c for c, f in zip(text, faces, strict=True) if f is None]
    if missing:
        raise _refuse(text, list(dict.fromkeys(missing)))
    out = []
    for run_face, run in itertools.groupby(zip(text, faces, strict=True), key=lambda p: p[1]):
        chunk = xml_escape("".join(c for c, _ in run))
        out.append(chunk if run_face == font else f'<font face="{run_face}">{chunk}</font>')
    return "".join(out)
