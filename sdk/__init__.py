"""Osmanthus Python SDK for requesters: encrypted, policy-checked credit queries."""

from osmanthus.errors import (
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
from osmanthus.tls import TlsFiles
from osmanthus.types import DepartmentStatus, Shape
from sdk.client import Client
from sdk.keys import RequesterKeys, load_or_create_keys
from sdk.results import BatchScore, ConsentRecord, EnterpriseScore, PersonScore, ThresholdResult

__all__ = [
    "BatchScore",
    "Client",
    "ConfigError",
    "ConsentRecord",
    "CryptoError",
    "DeadlineExceeded",
    "DepartmentStatus",
    "EnterpriseScore",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "OsmanthusError",
    "PermissionDenied",
    "PersonScore",
    "RateLimited",
    "RequesterKeys",
    "Shape",
    "ThresholdResult",
    "TlsFiles",
    "Unauthenticated",
    "Unavailable",
    "load_or_create_keys",
]
