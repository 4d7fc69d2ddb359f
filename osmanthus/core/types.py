"""Typed identifiers and small enums used across Osmanthus instead of bare strings."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final, NewType

DepartmentId = NewType("DepartmentId", str)
RequesterId = NewType("RequesterId", str)
QueryId = NewType("QueryId", str)
ConsentId = NewType("ConsentId", str)
Purpose = NewType("Purpose", str)
#: a validated 18-character resident identity number or unified social credit code
SubjectId = NewType("SubjectId", str)
#: lower-case hex SHA-256 of a Paillier modulus n (big-endian, minimal length)
KeyFingerprint = NewType("KeyFingerprint", str)


class SubjectKind(enum.Enum):
    PERSON = "person"
    ENTERPRISE = "enterprise"

    @property
    def id_field(self) -> str:
        """The name of the field that carries this kind's identifier in requests and errors."""
        return "resident_id" if self is SubjectKind.PERSON else "credit_code"


class Shape(enum.Enum):
    """Disclosure shapes of ARCHITECTURE.md implemented so far."""

    BREAKDOWN = "breakdown"
    TOTAL = "total"
    #: one bit: score ≥ a threshold (zero tests over every score from the threshold up)
    THRESHOLD = "threshold"
    #: noisy sums over a cohort of subjects (its own RPC, never a per-subject answer)
    STATS = "stats"
    #: one bit per joint-punishment measure: is any flag that triggers it set?
    FLAGS = "flags"


#: the shapes a packed layout and a batch carry (THRESHOLD is derived from TOTAL per query)
PACKED_SHAPES = (Shape.BREAKDOWN, Shape.TOTAL)


class Role(enum.Enum):
    """Requester roles carried in tokens and used by Cedar policies."""

    BANK = "bank"
    CREDIT_AGENCY = "credit_agency"
    LIBRARY = "library"
    SYNC_JOB = "sync_job"
    PLATFORM_SERVICE = "platform_service"
    DATA_SUBJECT = "data_subject"
    #: a statistics bureau or research body: noisy statistics only, never a subject's record
    STATISTICS_OFFICE = "statistics_office"
    #: a self-service machine in the service hall: self_query for the person whose card it read
    KIOSK = "kiosk"
    #: the online self-service site: self_query for the subject signed in at the city's provider
    PORTAL = "portal"
    #: a privacy officer or auditor: reads the transparency logs (checkpoints, proofs, entries)
    AUDITOR = "auditor"


#: the purpose of a subject asking about themselves through a subjects' portal device
SELF_QUERY: Final = Purpose("self_query")
#: the subjects' portal devices: tokens for these roles carry purpose SELF_QUERY only and name a
#: sealing key (osmanthus.core.tokens refuses any other at issue and at verification)
SUBJECT_DEVICE_ROLES: Final = frozenset({Role.KIOSK, Role.PORTAL})


@dataclass(frozen=True)
class DepartmentStatus:
    """One department's part in an answer: answered (and under which rules) or why missing."""

    department: DepartmentId
    detail: str
    rules_version: str = ""
