"""Typed results the SDK returns: score cards with coverage, and consent records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from osmanthus.types import ConsentId, DepartmentStatus, Shape


@dataclass(frozen=True)
class PersonScore:
    """A person's Osmanthus score. With Shape.TOTAL only `score` and coverage are known."""

    subject_id: str
    score: int
    base: int
    #: total deductions D (None for TOTAL)
    deductions: int | None
    #: bonus category → points; None when the owning department did not answer (or for TOTAL)
    bonuses: Mapping[str, int | None]
    shape: Shape
    answered: tuple[DepartmentStatus, ...]
    missing: tuple[DepartmentStatus, ...]
    query_id: str

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def bonus_total(self) -> int | None:
        if self.shape is Shape.TOTAL:
            return None
        return sum(v for v in self.bonuses.values() if v is not None)


@dataclass(frozen=True)
class EnterpriseScore(PersonScore):
    """An enterprise's credit score and grade (A ≥ 110, B ≥ 90, C ≥ 70, D below by default)."""

    grade: str | None = None


@dataclass(frozen=True)
class ThresholdResult:
    """One bit about a subject: is the score at least `threshold`? Nothing else is learnt."""

    subject_id: str
    threshold: int
    meets: bool
    answered: tuple[DepartmentStatus, ...]
    missing: tuple[DepartmentStatus, ...]
    query_id: str

    @property
    def partial(self) -> bool:
        return bool(self.missing)


@dataclass(frozen=True)
class ConsentRecord:
    consent_id: ConsentId
    subject_id: str
    grantee: str
    purpose: str
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def in_force(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at


@dataclass(frozen=True)
class BatchScore:
    """One subject's line of a batch: its score, or why it was not scored.

    Every department of the catalogue is summed for every scored subject (a batch is never
    partial). With Shape.TOTAL `deductions` is None and `bonuses` empty.
    """

    subject_id: str
    score: int | None
    grade: str | None
    deductions: int | None
    bonuses: Mapping[str, int]
    #: why the subject was not scored (an invalid id, a pinned department set); None if scored
    refused: str | None
    query_id: str

    @property
    def scored(self) -> bool:
        return self.refused is None
