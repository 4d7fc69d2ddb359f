"""Enterprise credit reports: built from a decrypted answer, signed by their issuer, checkable.

A report is built from the federation's answers (model), signed as RFC 8785 canonical JSON with
the one signing envelope of osmanthus.core.signing (content, signed), laid out once (layout) and
drawn as an HTML page (html) or an A4 PDF/A-3b file with embedded fonts (pdf, fonts, pdfa);
a file is verified by checking its envelope and rendering the signed report again (verify).

Reports need the 'reports' extra (reportlab draws the PDF, pypdf reads it back): without it,
importing this package raises ModuleNotFoundError naming the extra.
"""

from __future__ import annotations

try:
    import pypdf  # noqa: F401
    import reportlab  # noqa: F401
except ModuleNotFoundError as exc:
    if (exc.name or "").partition(".")[0] not in {"pypdf", "reportlab"}:
        raise
    raise ModuleNotFoundError(
        f"credit reports need the 'reports' extra: pip install 'osmanthus[reports]' "
        f"(missing module: {exc.name})",
        name=exc.name,
    ) from exc

from sdk.report.content import REPORT_FORMAT, REPORT_ID_PATTERN, canonical_content
from sdk.report.errors import (
    LegacyReport,
    MalformedReport,
    RendererMismatch,
    ReportError,
    TamperedReport,
    UnprintableReport,
)
from sdk.report.html import EMBED_ID, MAX_REPORT_CHARS, render_html
from sdk.report.model import (
    MAX_ISSUER_CHARS,
    RENDERER,
    EnterpriseReport,
    ReportBonus,
    ReportDepartment,
    ReportListEntry,
    ReportRenderer,
    ReportRestriction,
    build_enterprise_report,
)
from sdk.report.pdf import MAX_REPORT_BYTES, PDF_ATTACHMENT, render_pdf
from sdk.report.signed import (
    CODE_PATTERN,
    MAX_CONTENT_BYTES,
    MAX_ENVELOPE_BYTES,
    SignedReport,
    sign_report,
    verification_code,
)
from sdk.report.verify import verify_report, verify_report_html, verify_report_pdf

__all__ = [
    "CODE_PATTERN",
    "EMBED_ID",
    "MAX_CONTENT_BYTES",
    "MAX_ENVELOPE_BYTES",
    "MAX_ISSUER_CHARS",
    "MAX_REPORT_BYTES",
    "MAX_REPORT_CHARS",
    "PDF_ATTACHMENT",
    "RENDERER",
    "REPORT_FORMAT",
    "REPORT_ID_PATTERN",
    "EnterpriseReport",
    "LegacyReport",
    "MalformedReport",
    "RendererMismatch",
    "ReportBonus",
    "ReportDepartment",
    "ReportError",
    "ReportListEntry",
    "ReportRenderer",
    "ReportRestriction",
    "SignedReport",
    "TamperedReport",
    "UnprintableReport",
    "build_enterprise_report",
    "canonical_content",
    "render_html",
    "render_pdf",
    "sign_report",
    "verification_code",
    "verify_report",
    "verify_report_html",
    "verify_report_pdf",
]
