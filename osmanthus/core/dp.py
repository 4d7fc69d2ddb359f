"""Differential privacy for STATS: ε values, exact discrete-Laplace sampling, noise scales.

Noise is sampled exactly, with integer arithmetic only (Canonne, Kamath and Steinke, "The Discrete
Gaussian for Differential Privacy", NeurIPS 2020, algorithms 1 and 2): a floating-point sampler
leaks through the gaps in its output (Mironov, CCS 2012), and the noise is added to an integer
plaintext under encryption anyway. Randomness comes from the operating system (`secrets`).
"""

from __future__ import annotations

import math
import secrets
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Final

from osmanthus.core.errors import InvalidArgument

#: Cedar's decimal type holds four places, and the ledger counts ε in these units
EPSILON_PLACES: Final = 4
EPSILON_UNIT: Final = Decimal(1).scaleb(-EPSILON_PLACES)
#: no single query may ask for more than this, whatever a policy says: beyond it the noise is
#: negligible and the "statistic" is close to exact
MAX_EPSILON: Final = Decimal(10)


def parse_epsilon(text: str, *, field: str = "epsilon") -> Decimal:
    """'0.5' → Decimal('0.5'); refuses anything but a positive number with ≤ 4 decimal places."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgument("the privacy budget ε to spend is required, e.g. '0.5'", field=field)
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidArgument(f"{text[:40]!r} is not a number", field=field) from None
    if not value.is_finite() or value <= 0:
        raise InvalidArgument(f"ε must be a positive number, got {text[:40]!r}", field=field)
    if value > MAX_EPSILON:
        raise InvalidArgument(
            f"ε {value} is above {MAX_EPSILON}, the most one query may spend", field=field
        )
    if value != value.quantize(EPSILON_UNIT):
        raise InvalidArgument(
            f"ε {text[:40]!r} has more than {EPSILON_PLACES} decimal places", field=field
        )
    return value.quantize(EPSILON_UNIT)


def epsilon_units(value: Decimal) -> int:
    """ε as a whole number of EPSILON_UNITs, the ledger's exact currency."""
    units = value.scaleb(EPSILON_PLACES)
    # truncating would charge the ledger less ε than the noise was calibrated for
    if not units.is_finite() or units != units.to_integral_value():
        raise InvalidArgument(
            f"ε {value} is not a whole number of {EPSILON_UNIT} (at most {EPSILON_PLACES} "
            "decimal places)",
            field="epsilon",
        )
    return int(units)


def from_units(units: int) -> Decimal:
    value = Decimal(units).scaleb(-EPSILON_PLACES).normalize()
    # normalize() writes ten as 1E+1; operators read these figures in refusal messages
    return value.quantize(Decimal(1)) if value == value.to_integral_value() else value


def laplace_scale(*, sensitivity: int, epsilon: Decimal) -> Fraction:
    """The discrete-Laplace scale b = Δ/ε that makes a sum of sensitivity Δ ε-private."""
    if sensitivity < 1:
        raise InvalidArgument(f"sensitivity {sensitivity} must be at least 1", field="sensitivity")
    return Fraction(sensitivity) / Fraction(epsilon)


def sample_discrete_laplace(scale: Fraction) -> int:
    """One draw Z with P(Z = z) ∝ exp(−|z| / scale), exactly (CKS20 algorithm 2)."""
    if scale <= 0:
        raise InvalidArgument(f"scale {scale} must be positive", field="scale")
    # the algorithm samples Lap_Z(t/s) for whole numbers t, s
    t, s = scale.numerator, scale.denominator
    while True:
        u = secrets.randbelow(t)
        if not _bernoulli_exp(Fraction(u, t)):
            continue
        v = 0
        while _bernoulli_exp(Fraction(1)):
            v += 1
        y = (u + t * v) // s
        negative = secrets.randbelow(2) == 1
        if negative and y == 0:
            continue
        return -y if negative else y


def discrete_laplace_variance(scale: Fraction) -> float:
    """Var(Z) = 2e^(−1/b) / (1 − e^(−1/b))², for error bars and tests."""
    q = math.exp(-1 / float(scale))
    return 2 * q / (1 - q) ** 2


def _bernoulli(p: Fraction) -> bool:
    return secrets.randbelow(p.denominator) < p.numerator


def _bernoulli_exp(gamma: Fraction) -> bool:
    """True with probability exp(−gamma), gamma ≥ 0, exactly (CKS20 algorithm 1)."""
    while gamma > 1:
        # exp(−γ) = exp(−1)^⌊γ⌋ · exp(−(γ − ⌊γ⌋))
        if not _bernoulli_exp(Fraction(1)):
            return False
        gamma -= 1
    k = 1
    while _bernoulli(gamma / k):
        k += 1
    return k % 2 == 1
