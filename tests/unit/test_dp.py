"""ε parsing and the exact discrete-Laplace sampler, checked against the exact distribution."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from fractions import Fraction

import pytest

from osmanthus.core.dp import (
    _bernoulli_exp,
    discrete_laplace_variance,
    epsilon_units,
    from_units,
    laplace_scale,
    parse_epsilon,
    sample_discrete_laplace,
)
from osmanthus.core.errors import InvalidArgument

# Every statistical check below fails by chance with probability below 1e-7 (a normal deviation
# beyond 5.5 σ is 3.8e-8; a χ² p-value below 1e-7): the whole file below 1e-6.
SIGMAS = 5.5
CHI2_ALPHA = 1e-7


def chi2_sf(x: float, df: int) -> float:
    """P(χ²_df ≥ x), exactly for whole df: Q(a + 1, y) = Q(a, y) + y^a e^(−y) / Γ(a + 1)."""
    y = x / 2
    if df % 2 == 0:
        a, q = 1.0, math.exp(-y)
    else:
        a, q = 0.5, math.erfc(math.sqrt(y))
    while a < df / 2:
        q += math.exp(a * math.log(y) - y - math.lgamma(a + 1)) if y > 0 else 0.0
        a += 1
    return q


def test_chi2_sf_matches_tabulated_critical_values() -> None:
    # the 5 % and 0.1 % points of the χ² table
    for x, df, p in ((3.841, 1, 0.05), (5.991, 2, 0.05), (18.307, 10, 0.05), (31.410, 20, 0.05)):
        assert chi2_sf(x, df) == pytest.approx(p, rel=2e-3)
    for x, df, p in ((10.828, 1, 0.001), (16.266, 3, 0.001), (45.315, 20, 0.001)):
        assert chi2_sf(x, df) == pytest.approx(p, rel=2e-3)


def pmf(scale: Fraction, z: int) -> float:
    q = math.exp(-1 / float(scale))
    return (1 - q) / (1 + q) * q ** abs(z)


def tail(scale: Fraction, k: int) -> float:
    """P(Z ≥ k) = P(Z ≤ −k) = q^k / (1 + q) for k ≥ 1."""
    q = math.exp(-1 / float(scale))
    return q**k / (1 + q)


def chi2_against_exact(scale: Fraction, samples: list[int], edge: int) -> tuple[float, int]:
    """χ² statistic and df over bins (≤ −edge), −edge+1 … edge−1, (≥ edge)."""
    n = len(samples)
    counts = Counter(max(-edge, min(edge, z)) for z in samples)
    expected = {z: n * pmf(scale, z) for z in range(-edge + 1, edge)}
    expected[-edge] = expected[edge] = n * tail(scale, edge)
    assert math.isclose(sum(expected.values()), n)
    # the χ² approximation holds in the far tail only with well-filled bins
    assert min(expected.values()) >= 40
    stat = sum((counts.get(z, 0) - e) ** 2 / e for z, e in expected.items())
    return stat, len(expected) - 1


@pytest.mark.parametrize(
    ("scale", "n", "edge"),
    [(Fraction(3, 2), 30_000, 9), (Fraction(1, 3), 20_000, 2), (Fraction(7), 30_000, 21)],
)
def test_samples_follow_the_exact_discrete_laplace_distribution(
    scale: Fraction, n: int, edge: int
) -> None:
    samples = [sample_discrete_laplace(scale) for _ in range(n)]
    assert all(type(z) is int for z in samples)
    stat, df = chi2_against_exact(scale, samples, edge)
    assert chi2_sf(stat, df) > CHI2_ALPHA, f"χ² {stat:.1f} on {df} df for scale {scale}"

    # symmetric: given Z ≠ 0, its sign is a fair coin
    positive = sum(1 for z in samples if z > 0)
    nonzero = sum(1 for z in samples if z != 0)
    assert abs(positive - nonzero / 2) <= SIGMAS * math.sqrt(nonzero / 4)
    # centred on zero
    variance = discrete_laplace_variance(scale)
    assert abs(sum(samples) / n) <= SIGMAS * math.sqrt(variance / n)


def test_the_chi_square_check_would_catch_a_wrong_scale() -> None:
    # the same check, fed draws of scale 3/2 but judged as scale 7/4, must fail: the test above
    # has the power to see a mistake of this size
    samples = [sample_discrete_laplace(Fraction(3, 2)) for _ in range(15_000)]
    stat, df = chi2_against_exact(Fraction(7, 4), samples, 9)
    assert chi2_sf(stat, df) < CHI2_ALPHA


def test_variance_at_a_production_scale_matches_the_formula() -> None:
    # a sum with sensitivity 22000 at ε 0.5, as a STATS query over scores would draw
    scale = laplace_scale(sensitivity=22_000, epsilon=Decimal("0.5"))
    assert scale == 44_000
    n = 20_000
    samples = [sample_discrete_laplace(scale) for _ in range(n)]
    variance = discrete_laplace_variance(scale)
    # the continuous Laplace variance 2b², to which the discrete one is close at this scale
    assert variance == pytest.approx(2 * 44_000**2, rel=1e-6)
    # mean of Z² has relative σ √(5/n) = 1.6 % (Laplace kurtosis 6): 10 % is over 6 σ
    assert sum(z * z for z in samples) / n == pytest.approx(variance, rel=0.10)
    assert abs(sum(samples) / n) <= SIGMAS * math.sqrt(variance / n)


def test_discrete_laplace_variance_matches_the_pmf() -> None:
    scale = Fraction(3, 2)
    direct = sum(z * z * pmf(scale, z) for z in range(-200, 201))
    assert discrete_laplace_variance(scale) == pytest.approx(direct, rel=1e-12)


@pytest.mark.parametrize(
    "gamma", [Fraction(0), Fraction(1, 2), Fraction(1), Fraction(2), Fraction(5, 2)]
)
def test_bernoulli_exp_is_true_with_probability_exp_minus_gamma(gamma: Fraction) -> None:
    n = 30_000
    hits = sum(1 for _ in range(n) if _bernoulli_exp(gamma))
    p = math.exp(-float(gamma))
    if gamma == 0:
        assert hits == n
        return
    assert abs(hits - n * p) <= SIGMAS * math.sqrt(n * p * (1 - p))


@pytest.mark.parametrize("scale", [Fraction(0), Fraction(-3, 2)])
def test_non_positive_scale_is_refused(scale: Fraction) -> None:
    with pytest.raises(InvalidArgument) as caught:
        sample_discrete_laplace(scale)
    assert caught.value.field == "scale"


def test_laplace_scale_is_sensitivity_over_epsilon_exactly() -> None:
    assert laplace_scale(sensitivity=22_000, epsilon=Decimal("0.3")) == Fraction(220_000, 3)
    assert laplace_scale(sensitivity=1, epsilon=Decimal("0.0001")) == 10_000
    with pytest.raises(InvalidArgument) as caught:
        laplace_scale(sensitivity=0, epsilon=Decimal("1"))
    assert caught.value.field == "sensitivity"


@pytest.mark.parametrize(
    ("text", "value"),
    [("0.5", "0.5"), ("1", "1"), ("0.0001", "0.0001"), ("10", "10"), (" 2.25 ", "2.25")],
)
def test_parse_epsilon_accepts_positive_numbers_up_to_ten(text: str, value: str) -> None:
    parsed = parse_epsilon(text)
    assert parsed == Decimal(value)
    # four places exactly, the form Cedar's decimal type takes
    assert parsed.as_tuple().exponent == -4


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0", "positive"),
        ("0.0000", "positive"),
        ("-0.5", "positive"),
        ("-0", "positive"),
        ("nan", "positive"),
        ("sNaN", "positive"),
        ("inf", "positive"),
        ("-Infinity", "positive"),
        ("abc", "not a number"),
        ("0.5.1", "not a number"),
        ("0.00001", "4 decimal places"),
        ("0.12345", "4 decimal places"),
        ("10.0001", "above 10"),
        ("11", "above 10"),
        ("1e400", "above 10"),
        ("", "required"),
        ("   ", "required"),
    ],
)
def test_parse_epsilon_refuses_with_the_field_named(text: str, problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_epsilon(text)
    assert caught.value.field == "epsilon"
    assert problem in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        parse_epsilon(text, field="stats.epsilon")
    assert caught.value.field == "stats.epsilon"


def test_epsilon_units_round_trip() -> None:
    assert epsilon_units(Decimal("0.5")) == 5000
    assert epsilon_units(parse_epsilon("0.0001")) == 1
    assert epsilon_units(parse_epsilon("10")) == 100_000
    for units in (1, 5000, 12_345, 100_000, 1_000_000):
        assert epsilon_units(from_units(units)) == units


def test_from_units_reads_as_a_plain_number() -> None:
    # operators read these in refusal messages: "10", not "1E+1"
    assert str(from_units(100_000)) == "10"
    assert str(from_units(1_000_000)) == "100"
    assert str(from_units(5000)) == "0.5"
    assert str(from_units(1)) == "0.0001"
    assert str(from_units(0)) == "0"


@pytest.mark.parametrize("value", ["0.00015", "0.00001", "NaN", "Infinity"])
def test_epsilon_units_refuses_what_is_not_a_whole_number_of_units(value: str) -> None:
    # truncating 0.00015 to one unit would charge the ledger less than the noise was made for
    with pytest.raises(InvalidArgument) as caught:
        epsilon_units(Decimal(value))
    assert caught.value.field == "epsilon"
