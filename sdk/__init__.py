"""Osmanthus Python SDK for requesters: encrypted, policy-checked credit queries.

Credit reports (sdk.report) need the 'reports' extra: their names are importable from here, and
load sdk.report on first use, so `import sdk` needs only the base install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from osmanthus.core.cases import (
    AttachmentFile,
    AttachmentInfo,
    Case,
    CaseCorrection,
    CaseDraft,
    CaseEvent,
    CaseGround,
    CaseKind,
    CasePage,
    CaseQuery,
    CaseReceipt,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    Decision,
    check_attachment,
    commitment_letter,
)
from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import (
    BudgetExhausted,
    ConfigError,
    CryptoError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OsmanthusError,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.lists import (
    ListChange,
    ListChangeEvent,
    ListChangesPage,
    PublicEntry,
    WithdrawReason,
)
from osmanthus.core.receipts import (
    ConsentReceipt,
    MalformedReceipt,
    ReceiptError,
    ReceiptMismatch,
    ReceiptNotInForce,
    UntrustedReceipt,
)
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import DepartmentStatus, Shape, SubjectKind
from sdk.caseoffice import CaseOffice
from sdk.cases import case_key_bytes, file_case
from sdk.client import Client
from sdk.keys import RequesterKeys, load_or_create_keys
from sdk.receipts import verify_consent_receipt
from sdk.results import (
    BatchScore,
    ConsentRecord,
    EnterpriseScore,
    ListSearchResult,
    LoanDecision,
    PersonScore,
    RestrictionResult,
    StatsResult,
    TaxLoanCheck,
    ThresholdResult,
)
from sdk.subject import SubjectFileResult

if TYPE_CHECKING:
    from sdk.report import (
        EnterpriseReport,
        MalformedReport,
        RendererMismatch,
        ReportError,
        ReportListEntry,
        ReportRenderer,
        SignedReport,
        TamperedReport,
        build_enterprise_report,
        render_html,
        render_pdf,
        sign_report,
        verify_report,
        verify_report_html,
        verify_report_pdf,
    )

__all__ = [
    "AttachmentFile",
    "AttachmentInfo",
    "BatchScore",
    "BudgetExhausted",
    "Case",
    "CaseCorrection",
    "CaseDraft",
    "CaseEvent",
    "CaseGround",
    "CaseKind",
    "CaseOffice",
    "CasePage",
    "CaseQuery",
    "CaseReceipt",
    "CaseRemedy",
    "CaseStatus",
    "CaseTarget",
    "Client",
    "ConfigError",
    "ConsentReceipt",
    "ConsentRecord",
    "CryptoError",
    "DeadlineExceeded",
    "Decision",
    "DepartmentStatus",
    "EnterpriseReport",
    "EnterpriseScore",
    "FailedPrecondition",
    "InvalidArgument",
    "ListChange",
    "ListChangeEvent",
    "ListChangesPage",
    "ListColour",
    "ListSearchResult",
    "LoanDecision",
    "MalformedReceipt",
    "MalformedReport",
    "NotFound",
    "OsmanthusError",
    "PermissionDenied",
    "PersonScore",
    "PublicEntry",
    "RateLimited",
    "ReceiptError",
    "ReceiptMismatch",
    "ReceiptNotInForce",
    "RendererMismatch",
    "ReportError",
    "ReportListEntry",
    "ReportRenderer",
    "RequesterKeys",
    "RestrictionResult",
    "Shape",
    "SignedReport",
    "StatsResult",
    "SubjectFileResult",
    "SubjectKind",
    "TamperedReport",
    "TaxLoanCheck",
    "ThresholdResult",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "UntrustedReceipt",
    "WithdrawReason",
    "build_enterprise_report",
    "case_key_bytes",
    "check_attachment",
    "commitment_letter",
    "file_case",
    "load_or_create_keys",
    "render_html",
    "render_pdf",
    "sign_report",
    "verify_consent_receipt",
    "verify_report",
    "verify_report_html",
    "verify_report_pdf",
]

#: the names of sdk.report, loaded on first use: credit reports need the 'reports' extra
#: (reportlab, pypdf), and `import sdk` works on the base install (PEP 562)
_REPORT_NAMES = frozenset(
    {
        "EnterpriseReport",
        "MalformedReport",
        "RendererMismatch",
        "ReportError",
        "ReportListEntry",
        "ReportRenderer",
        "SignedReport",
        "TamperedReport",
        "build_enterprise_report",
        "render_html",
        "render_pdf",
        "sign_report",
        "verify_report",
        "verify_report_html",
        "verify_report_pdf",
    }
)


def __getattr__(name: str) -> Any:
    if name in _REPORT_NAMES:
        # without the extra, ModuleNotFoundError names it: pip install 'osmanthus[reports]'
        value = getattr(importlib.import_module("sdk.report"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sdk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_REPORT_NAMES})
