"""Typed results the SDK returns: score cards with coverage, and consent records."""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

from osmanthus.core.dp import discrete_laplace_variance
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.lists import PublicEntry
from osmanthus.core.types import DepartmentStatus, Shape, SubjectKind
from osmanthus.core.wire.coordinator import Consent


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
class RestrictionResult:
    """Joint-punishment measures in force for one subject: one bit each, nothing else.

    Which department flagged the subject, and how many did, is not learnt: each measure's
    answer is E(r · count) with r uniform, which decrypts to 0 or to a uniform value.
    """

    subject_id: str
    #: measure id → True when a flag that triggers it is set
    restricted: Mapping[str, bool]
    answered: tuple[DepartmentStatus, ...]
    query_id: str

    @property
    def any(self) -> bool:
        return any(self.restricted.values())


class LoanDecision(enum.Enum):
    """What a tax-bank loan check advises (TaxLoanCheck.decision)."""

    #: a clean A-level taxpayer, not restricted from bank loans: the bank may pre-approve
    PRE_APPROVE = "pre_approve"
    #: not restricted, but the tax record is not clean A-level: an underwriter decides
    REFER = "refer"
    #: bank loans are restricted under joint punishment: no loan may be granted
    DECLINE = "decline"


@dataclass(frozen=True)
class TaxLoanCheck:
    """A tax-bank loan (税银贷) check: two bits and the decision they support, nothing more.

    `tax_compliant` is "the taxation bureau's part of the record scores at least
    `threshold`" (an A-level taxpayer with no tax arrears or violations); `restricted` is
    "bank loans are restricted" over every department that can flag the enterprise. The bank
    never learns the tax rating, the arrears or which department flagged the enterprise.
    """

    subject_id: str
    consent_id: str
    tax_compliant: bool
    restricted: bool
    decision: LoanDecision
    #: one sentence an underwriter can file with the decision
    reason: str
    threshold: int
    #: the compliance question's query id, then the restriction question's
    query_ids: tuple[str, str]


@dataclass(frozen=True)
class StatsResult:
    """Noisy sums over a cohort: each is the true sum over every department and subject plus
    discrete-Laplace noise of the scale given, so no member's record can be read off it.

    A statistic is a BREAKDOWN slot: "deductions" (deductions saturated per department, as in a
    score) or a bonus category. Sums can come out negative: that is the noise.
    """

    subject_kind: SubjectKind
    cohort: int
    #: statistic → noisy sum over the cohort
    sums: Mapping[str, int]
    #: statistic → the noise's scale b (P(z) ∝ exp(−|z|/b))
    noise_scales: Mapping[str, Fraction]
    epsilon: Decimal
    #: the least ε left under the requester's budgets after this query
    epsilon_left: Decimal
    base: int
    answered: tuple[DepartmentStatus, ...]
    query_id: str
    #: every statistic of the layout was asked for (deductions first)
    complete: bool

    def mean(self, statistic: str) -> float:
        """The noisy per-subject mean of one statistic."""
        return self.sums[statistic] / self.cohort

    def standard_error(self, statistic: str) -> float:
        """The noise's standard deviation on the sum of `statistic` (its only error)."""
        return math.sqrt(discrete_laplace_variance(self.noise_scales[statistic]))

    def mean_unclamped_score(self) -> float:
        """base − mean deductions + mean bonuses, before the clamp; needs every statistic.

        The clamp to the score range is not linear, so a sum over subjects cannot apply it:
        subjects below the floor pull this mean below the mean of their scores.
        """
        if not self.complete:
            raise InvalidArgument(
                "the mean score needs every statistic; ask without naming statistics",
                field="statistics",
            )
        deductions, *bonuses = self.sums
        total = sum(self.sums[b] for b in bonuses) - self.sums[deductions]
        return self.base + total / self.cohort


#: a recorded consent as the coordinator answers it (osmanthus.core.wire.coordinator.Consent)
ConsentRecord = Consent


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


@dataclass(frozen=True)
class ListSearchResult:
    """One answer of the public red and black list query: entries in public view today.

    Only the published fields come back, a person's resident id masked. By subject, every
    entry of the subject comes in one answer; by list, one page, and `next_page_token` asks for
    the next ("" on the last page; Client.search_lists_pages follows it for you).
    """

    subject_kind: SubjectKind
    #: the subject asked about, as given; None when a list was browsed
    subject_id: str | None
    #: the list asked; None for every list
    list_id: str | None
    #: by window start, then department, then entry id (a subject's); in the list's order (a list)
    entries: tuple[PublicEntry, ...]
    #: departments whose entries this answer may lack, and why (down, too slow, or an answer
    #: the coordinator refused to forward)
    missing: tuple[DepartmentStatus, ...]
    next_page_token: str = ""

    @property
    def partial(self) -> bool:
        return bool(self.missing)

    @property
    def more(self) -> bool:
        """Whether a further page follows (list browsing)."""
        return bool(self.next_page_token)
