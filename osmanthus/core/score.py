"""The score model after decryption: clamp base - deductions + bonuses, and grade the result."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from osmanthus.core.catalogue import SubjectModel
from osmanthus.core.errors import InvalidArgument


@dataclass(frozen=True)
class Breakdown:
    """Decrypted sums for one subject: total deductions and each bonus category."""

    deductions: int
    #: category name -> sum; None when the owning department did not answer
    bonuses: Mapping[str, int | None]

    def missing(self) -> tuple[str, ...]:
        """Bonus categories whose owning department did not answer."""
        return tuple(name for name, value in self.bonuses.items() if value is None)


def _check(model: SubjectModel, breakdown: Breakdown) -> None:
    if isinstance(breakdown.deductions, bool) or not isinstance(breakdown.deductions, int):
        raise InvalidArgument("deductions must be an integer", field="deductions")
    if breakdown.deductions < 0:
        raise InvalidArgument(
            f"deductions must be >= 0 (a magnitude), got {breakdown.deductions}",
            field="deductions",
        )
    expected = [c.name for c in model.categories]
    unknown = sorted(set(breakdown.bonuses) - set(expected))
    if unknown:
        raise InvalidArgument(
            f"{unknown[0]!r} is not a {model.kind.value} bonus category; expected "
            + ", ".join(expected),
            field="bonuses",
        )
    for c in model.categories:
        if c.name not in breakdown.bonuses:
            raise InvalidArgument(
                f"bonus category {c.name!r} is missing (use None when {c.owner!r} did not answer)",
                field="bonuses",
            )
        value = breakdown.bonuses[c.name]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= c.cap:
            # The owner caps its category before encrypting, so anything else is a corrupt
            # sum or a misbehaving node, not a score to be silently clamped.
            raise InvalidArgument(
                f"bonus category {c.name!r} is {value!r}, outside 0..{c.cap} (its cap); "
                f"the contribution of {c.owner!r} is inconsistent",
                field="bonuses",
            )


def clamp_total(model: SubjectModel, total: int) -> int:
    """Clamp an unclamped total base - D + B (the TOTAL disclosure) into the score range."""
    return max(model.floor, min(model.ceiling, total))


def score(model: SubjectModel, breakdown: Breakdown) -> int:
    """clamp(base - D + known bonuses, floor, ceiling).

    The clamp applies to the total, not to base - D alone, so bonus points are set against the
    full deductions and cannot hide a heavy defaulter (documented in docs/departments.md).
    """
    _check(model, breakdown)
    bonus = sum(v for v in breakdown.bonuses.values() if v is not None)
    return clamp_total(model, model.base - breakdown.deductions + bonus)


def grade(model: SubjectModel, score: int) -> str | None:
    """The grade letter for a score, or None when the subject kind is not graded."""
    if isinstance(score, bool) or not isinstance(score, int):
        raise InvalidArgument("score must be an integer", field="score")
    if not model.floor <= score <= model.ceiling:
        raise InvalidArgument(
            f"score {score} is outside {model.floor}..{model.ceiling}", field="score"
        )
    for letter, minimum in model.grades:
        if score >= minimum:
            return letter
    return None
