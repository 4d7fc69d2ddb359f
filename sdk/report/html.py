"""The HTML page of a report: self-contained, printable, the signed envelope embedded."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Final

from sdk.report import layout
from sdk.report.errors import UnprintableReport
from sdk.report.signed import SignedReport, envelope_text

#: the id of the <script> element carrying the envelope
EMBED_ID: Final = "osmanthus-report"
#: a report page is about 10 kB; anything far larger is refused before parsing
MAX_REPORT_CHARS: Final = 1 << 20

_STYLE = """
body { font-family: "Noto Sans", "PingFang SC", "Microsoft YaHei", sans-serif; color: #111;
       max-width: 52rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.1rem; border-bottom: 1px solid #888; margin-top: 1.6rem; }
.headline { display: flex; gap: 2rem; align-items: baseline; margin: 1rem 0; }
.grade { font-size: 4rem; font-weight: bold; }
.score { font-size: 2rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 0.25rem 0.5rem; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.in-force { font-weight: bold; color: #a00; }
.code { font-family: monospace; font-size: 1.3rem; letter-spacing: 0.1rem; }
.meta td:first-child { color: #555; width: 14rem; }
.note { color: #555; font-size: 0.85rem; }
@media print { body { margin: 0; max-width: none; } h2 { break-after: avoid; }
               table { break-inside: avoid; } }
"""

#: the opening tag of the block that carries the envelope; no escaped value can contain it
EMBED_OPEN: Final = f'<script type="application/json" id="{EMBED_ID}">'

_HTML_CLASS: Final[Mapping[str, str]] = {
    "plain": "",
    "number": "num",
    "alert": "in-force",
    "code": "code",
}


def _html_value(value: layout.Value, css: str = "") -> str:
    klass = f' class="{css}"' if css else ""
    return f'<span{klass} data-field="{html.escape(value.field)}">{html.escape(value.text)}</span>'


def _html_cell(cell: layout.Text | layout.Value, tag: str) -> str:
    css = _HTML_CLASS[cell.style]
    klass = f' class="{css}"' if css else ""
    inner = _html_value(cell) if isinstance(cell, layout.Value) else html.escape(cell.text)
    return f"<{tag}{klass}>{inner}</{tag}>"


def _html_block(block: layout.Block) -> str:
    e = html.escape
    if isinstance(block, layout.Headline):
        return (
            '<div class="headline">\n'
            f"<div>Grade<br>{_html_value(block.grade, 'grade')}</div>\n"
            f"<div>Score<br>{_html_value(block.score, 'score')} "
            f'<span class="note">{e(block.out_of)}</span></div>\n'
            "</div>"
        )
    if isinstance(block, layout.Paragraph):
        parts = "".join(
            f"<code>{e(p.text)}</code>" if p.style == "code" else e(p.text) for p in block.parts
        )
        return f'<p class="note">{parts}</p>' if block.note else f"<p>{parts}</p>"
    rows = "\n".join(
        "<tr>"
        + "".join(
            _html_cell(cell, "th" if row.total and i == 0 else "td")
            for i, cell in enumerate(row.cells)
        )
        + "</tr>"
        for row in block.rows
    )
    if block.header is None:
        return f'<table class="meta">\n{rows}\n</table>'
    head = "".join(f"<th>{e(h)}</th>" for h in block.header)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def render_html(signed: SignedReport) -> str:
    """A self-contained, printable HTML page of the report, with the signed content embedded.

    Every value is escaped. The envelope (sdk.report.signed) travels in a JSON <script> block
    with "<", ">" and "&" written as JSON escapes, so no value, however hostile, can end the
    block early. The same signed report renders to the same page, character for character:
    verification relies on it. UnprintableReport if the page would be longer than a verifier
    reads (MAX_REPORT_CHARS).
    """
    shown = layout.lay_out(signed)
    e = html.escape
    body = "\n".join(
        [
            f"<h1>{e(shown.heading)}</h1>",
            *(_html_block(b) for b in shown.intro),
            *(
                f"\n<h2>{e(s.title)}</h2>\n" + "\n".join(_html_block(b) for b in s.blocks)
                for s in shown.sections
            ),
        ]
    )
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{e(shown.title)}</title>
<style>{_STYLE}</style>
</head>
<body>
{body}
{EMBED_OPEN}
{embedded_envelope(signed)}
</script>
</body>
</html>
"""
    if len(page) > MAX_REPORT_CHARS:
        raise UnprintableReport(
            f"the page would be {len(page)} characters; a report is at most {MAX_REPORT_CHARS} "
            "(the departments' details or the list entries are too long to print)",
            field="report",
        )
    return page


def embedded_envelope(signed: SignedReport) -> str:
    """The envelope as the page embeds it: the JSON with "<", ">" and "&" as JSON escapes (the
    same JSON value, and no "</script>" or "<!--" in it)."""
    return (
        envelope_text(signed)
        .replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
    )
