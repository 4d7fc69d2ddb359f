"""Osmanthus Python SDK for requesters: encrypted, policy-checked credit queries."""

from osmanthus.errors import (
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
from osmanthus.receipts import (
    ConsentReceipt,
    MalformedReceipt,
    ReceiptError,
    ReceiptMismatch,
    ReceiptNotInForce,
    UntrustedReceipt,
)
from osmanthus.tls import TlsFiles
from osmanthus.types import DepartmentStatus, Shape, SubjectKind
from sdk.client import Client
from sdk.keys import RequesterKeys, load_or_create_keys
from sdk.receipts import verify_consent_receipt
from sdk.report import (
    EnterpriseReport,
    MalformedReport,
    ReportError,
    SignedReport,
    TamperedReport,
    build_enterprise_report,
    render_html,
    sign_report,
    verify_report_html,
)
from sdk.results import (
    BatchScore,
    ConsentRecord,
    EnterpriseScore,
    PersonScore,
    RestrictionResult,
    StatsResult,
    ThresholdResult,
)

__all__ = [
    "BatchScore",
    "BudgetExhausted",
    "Client",
    "ConfigError",
    "ConsentReceipt",
    "ConsentRecord",
    "CryptoError",
    "DeadlineExceeded",
    "DepartmentStatus",
    "EnterpriseReport",
    "EnterpriseScore",
    "FailedPrecondition",
    "InvalidArgument",
    "MalformedReceipt",
    "MalformedReport",
    "NotFound",
    "OsmanthusError",
    "PermissionDenied",
    "PersonScore",
    "RateLimited",
    "ReceiptError",
    "ReceiptMismatch",
    "ReceiptNotInForce",
    "ReportError",
    "RequesterKeys",
    "RestrictionResult",
    "Shape",
    "SignedReport",
    "StatsResult",
    "SubjectKind",
    "TamperedReport",
    "ThresholdResult",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "UntrustedReceipt",
    "build_enterprise_report",
    "load_or_create_keys",
    "render_html",
    "sign_report",
    "verify_consent_receipt",
    "verify_report_html",
]
