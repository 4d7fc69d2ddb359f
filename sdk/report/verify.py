"""Verifying a report file: its signed envelope, and that the file is exactly its rendering.

Rendering is byte-deterministic: a signed report renders to the same HTML page and the same PDF
in any process (a test proves it). So a file is verified by rendering its signed report again
and requiring the file to be that rendering, byte for byte. Nothing is read from the page:
whatever a file shows beyond its signed values (a figure drawn over another, invisible or
hidden text, a script, a style, a font that draws other letters, an extra page, a crop, a
note) makes it another file. The work is bounded: the file's size is checked before anything
is parsed, the embedded envelope's decoded size is capped, and only issuer-signed content is
rendered.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Mapping
from typing import AnyStr, Final, Literal, NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pypdf import Configuration, PdfReader, apply_configuration, get_configuration

from sdk.report.errors import MalformedReport, RendererMismatch, TamperedReport, UnprintableReport
from sdk.report.html import EMBED_ID, EMBED_OPEN, MAX_REPORT_CHARS, render_html
from sdk.report.model import RENDERER, EnterpriseReport
from sdk.report.pdf import MAX_REPORT_BYTES, PDF_ATTACHMENT, render_pdf
from sdk.report.signed import MAX_ENVELOPE_BYTES, SignedReport, open_envelope


def _common_prefix(a: AnyStr, b: AnyStr) -> int:
    """The length of the longest common prefix of a and b (a binary search of C compares)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _refuse_rendering(
    signed: SignedReport, kind: Literal["html", "pdf"], difference: str
) -> NoReturn:
    """Refuse a file that is not the rendering of its signed report, which is genuine: as drawn
    by another renderer if the report names one, else as altered."""
    theirs = signed.report.renderer.html if kind == "html" else signed.report.renderer.pdf
    ours = RENDERER.html if kind == "html" else RENDERER.pdf
    if theirs != ours:
        raise RendererMismatch(
            f"the report was drawn by renderer {theirs}; this is {ours}, which draws its signed "
            f"content differently ({difference}): verify it with the Osmanthus version that "
            "issued it",
            field="renderer",
        )
    raise TamperedReport(
        f"the file is not exactly what its signed report renders to ({difference}): it was "
        "altered after signing, so what it shows may not be what the issuer signed (re-saving "
        "it in an editor or a browser alters it too). Ask the issuer for the original file; if "
        "it came straight from the issuer, check it with the Osmanthus version that issued it",
        field="file",
    )


def _rendering(
    signed: SignedReport, kind: Literal["html", "pdf"], render: Callable[[SignedReport], AnyStr]
) -> AnyStr:
    """The file the signed report renders to; a genuine report that this version cannot draw in
    this format (a character without a glyph in a PDF) came as a file it did not draw."""
    try:
        return render(signed)
    except UnprintableReport as exc:
        _refuse_rendering(signed, kind, f"this version draws no such file of it: {exc.message}")


def _html_envelope(page: str) -> str:
    """The text of the page's one envelope block; a page with none or several is no report."""
    count = page.count(EMBED_OPEN)
    if count != 1:
        raise MalformedReport(
            f"the page holds {count} embedded reports "
            f'(<script type="application/json" id="{EMBED_ID}">); a report holds exactly one',
            field="page",
        )
    start = page.index(EMBED_OPEN) + len(EMBED_OPEN)
    end = page.find("</script>", start)
    if end < 0:
        raise MalformedReport("the embedded report has no closing </script>", field="page")
    return page[start:end]


def verify_report_html(page: str, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """The report a page carries, after checking it is exactly what the key's holder signed.

    Checks, in order: the page holds one embedded envelope; its signature (a detached JWS)
    names this key and verifies over the canonical content; the content is a well-formed report
    in the form Osmanthus signs; and the page is, character for character, what that signed
    report renders to. Raises MalformedReport (not a report this version can check;
    RendererMismatch for one drawn by another version, LegacyReport for one signed in the
    format before the one envelope) or TamperedReport (not what the issuer signed).
    """
    if len(page) > MAX_REPORT_CHARS:
        raise MalformedReport(
            f"{len(page)} characters; a report is at most {MAX_REPORT_CHARS}", field="page"
        )
    signed = open_envelope(_html_envelope(page), public_key=public_key)
    expected = _rendering(signed, "html", render_html)
    if page != expected:
        at = _common_prefix(page, expected)
        if at == len(expected):
            difference = f"{len(page) - at} characters were added at its end"
        else:
            difference = f"it differs from line {expected.count(chr(10), 0, at) + 1} on"
        _refuse_rendering(signed, "html", difference)
    return signed.report


#: pypdf's limits while it looks for the envelope. The renderer compresses nothing, so a report
#: needs no decoding at all; a file that needs more than one envelope's worth from any stream
#: is refused rather than decoded (a few kB of zlib can decode to gigabytes)
_PDF_LIMITS: Final[Mapping[str, object]] = {
    "maximum_declared_stream_length": MAX_REPORT_BYTES,
    "array_based_stream_maximum_output_length": MAX_ENVELOPE_BYTES,
    "zlib_maximum_output_length": MAX_ENVELOPE_BYTES,
    # pypdf's recovery of a broken zlib stream is a Python loop over its bytes
    "zlib_maximum_recovery_input_length": 1,
    "lzw_maximum_output_length": MAX_ENVELOPE_BYTES,
    "run_length_maximum_output_length": MAX_ENVELOPE_BYTES,
    "brotli_maximum_output_length": MAX_ENVELOPE_BYTES,
    "jbig2_maximum_output_length": MAX_ENVELOPE_BYTES,
    "jbig2dec_binary": None,
    "stream_filters_maximum_length": 4,
    "stream_decoding_work_maximum_length": 4 * MAX_ENVELOPE_BYTES,
}
#: a report has about 60 objects (each font subset is four); an editor's rewrite, a few more
_PDF_MAX_XREF_ENTRIES: Final = 100_000


def _pdf_envelope(data: bytes) -> str:
    """The text of the PDF's one embedded `osmanthus-report.json`, decoded within the limits."""
    # the limits this pypdf knows (one older than the newest skips the limits it lacks)
    known = {f.name for f in dataclasses.fields(Configuration)}
    limits = get_configuration().with_overwrites(
        **{name: value for name, value in _PDF_LIMITS.items() if name in known}
    )
    encrypted = False
    count = 0
    envelope = b""
    try:
        with apply_configuration(limits):
            reader = PdfReader(io.BytesIO(data), xref_stream_maximum_entries=_PDF_MAX_XREF_ENTRIES)
            encrypted = reader.is_encrypted
            if not encrypted:
                entries = [e for e in reader.attachment_list if e.name == PDF_ATTACHMENT]
                count = len(entries)
                # counted first: no more than one embedded file is ever decoded
                if count == 1:
                    envelope = entries[0].content
    # pypdf parses hostile input: whatever it raises (its errors, ValueError, RecursionError,
    # NotImplementedError for a filter it lacks, a limit reached) means the file cannot be read
    except Exception as exc:
        raise MalformedReport(
            f"the PDF cannot be read: {type(exc).__name__}: {str(exc)[:120]}", field="file"
        ) from None
    if encrypted:
        raise MalformedReport("the PDF is encrypted; a report never is", field="file")
    if count != 1:
        raise MalformedReport(
            f"the PDF holds {count} embedded reports ({PDF_ATTACHMENT}); a report holds "
            "exactly one",
            field="file",
        )
    if len(envelope) > MAX_ENVELOPE_BYTES:
        raise MalformedReport(
            f"{PDF_ATTACHMENT} is {len(envelope)} bytes; a report's is at most "
            f"{MAX_ENVELOPE_BYTES}",
            field="envelope",
        )
    try:
        return envelope.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReport(f"{PDF_ATTACHMENT} is not UTF-8 text", field="envelope") from None


def verify_report_pdf(data: bytes, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """The report a PDF carries, after checking it is exactly what the key's holder signed.

    The same checks as verify_report_html, on the one embedded file `osmanthus-report.json`
    (read with pypdf, its decoded size capped at MAX_ENVELOPE_BYTES); then the file must be,
    byte for byte, what the signed report renders to. An annotation, an incremental update, an
    extra page or any edit of a page makes another file. Raises MalformedReport (not a report
    this version can check; RendererMismatch for one drawn by another version) or
    TamperedReport (not what the issuer signed).
    """
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedReport(
            f"{len(data)} bytes; a report is at most {MAX_REPORT_BYTES}", field="file"
        )
    if not data.startswith(b"%PDF-"):
        raise MalformedReport("the file is not a PDF (it does not start with %PDF-)", field="file")
    signed = open_envelope(_pdf_envelope(data), public_key=public_key)
    expected = _rendering(signed, "pdf", render_pdf)
    if data != expected:
        at = _common_prefix(data, expected)
        if at == len(expected):
            # what a PDF editor saves: the original untouched, the changes after it
            difference = (
                f"{len(data) - at} bytes were appended to it, as a PDF editor appends a page, a "
                "note or a drawing over a page"
            )
        elif at == len(data):
            difference = f"it is cut short after {at} of {len(expected)} bytes"
        else:
            difference = f"it differs from byte {at} on"
        _refuse_rendering(signed, "pdf", difference)
    return signed.report


def verify_report(data: bytes, *, public_key: Ed25519PublicKey) -> EnterpriseReport:
    """A report file's content, verified: a PDF by verify_report_pdf, anything else as an HTML
    page (UTF-8) by verify_report_html."""
    if data.startswith(b"%PDF-"):
        return verify_report_pdf(data, public_key=public_key)
    if len(data) > MAX_REPORT_BYTES:
        raise MalformedReport(
            f"{len(data)} bytes; a report is at most {MAX_REPORT_BYTES}", field="file"
        )
    try:
        page = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedReport(
            "the file is neither a PDF nor UTF-8 text (an HTML report)", field="file"
        ) from None
    return verify_report_html(page, public_key=public_key)
