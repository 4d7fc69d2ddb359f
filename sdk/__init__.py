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
    "EnterpriseScore",
    "FailedPrecondition",
    "InvalidArgument",
    "MalformedReceipt",
    "NotFound",
    "OsmanthusError",
    "PermissionDenied",
    "PersonScore",
    "RateLimited",
    "ReceiptError",
    "ReceiptMismatch",
    "ReceiptNotInForce",
    "RequesterKeys",
    "RestrictionResult",
    "Shape",
    "StatsResult",
    "SubjectKind",
    "ThresholdResult",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "UntrustedReceipt",
    "load_or_create_keys",
    "verify_consent_receipt",
]
