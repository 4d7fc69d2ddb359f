"""STATS in the policy engine: @min_cohort, @max_epsilon, @epsilon_budget and Cedar decimals."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from osmanthus.core.dp import parse_epsilon
from osmanthus.core.errors import ConfigError
from osmanthus.core.policy import (
    DEFAULT_MIN_COHORT,
    EpsilonBudget,
    PolicyEngine,
    PolicyRequest,
    parse_budget,
    time_facts,
)
from osmanthus.core.policy_diff import diff

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def central() -> PolicyEngine:
    return PolicyEngine.from_file(POLICIES / "central.cedar")


@pytest.fixture(scope="module")
def node() -> PolicyEngine:
    return PolicyEngine.from_file(POLICIES / "node.cedar")


def ask(
    role: str, action: str, resource: tuple[str, str], context: dict[str, Any]
) -> PolicyRequest:
    return PolicyRequest(
        principal_type="Requester",
        principal_id="req-1",
        principal_attrs={"role": role},
        action=action,
        resource_type=resource[0],
        resource_id=resource[1],
        context=context,
    )


def stats(
    role: str = "sync_job",
    purpose: str = "statistics",
    cohort: int = 10,
    epsilon: Decimal = Decimal("0.5"),
    dataset: str = "person",
) -> PolicyRequest:
    context = {"purpose": purpose, "cohort": cohort, "epsilon": epsilon}
    return ask(role, "StatsQuery", ("Dataset", dataset), context)


def contribute_stats(
    role: str = "sync_job", purpose: str = "statistics", cohort: int | None = 10
) -> PolicyRequest:
    context: dict[str, Any] = {"purpose": purpose, "shape": "stats", "subject_kind": "person"}
    if cohort is not None:
        context["cohort"] = cohort
    return ask(role, "Contribute", ("Department", "tax"), context)


# --- annotations are checked when the policy is loaded ------------------------------------------

_ALLOWED_FORM = {
    "min_cohort": "it must be a whole number of at least 10",
    "max_epsilon": "write a positive number with at most 4 decimal places, "
    'e.g. @max_epsilon("1.0")',
    "epsilon_budget": 'write positive ε per period, e.g. @epsilon_budget("5/day, 50/year")',
}


def stats_policy(annotation: str, value: str) -> str:
    return (
        '@id("register")\n'
        'permit (principal, action == Action::"RegisterKey", resource);\n'
        "// the rule under test starts on the next line\n"
        '@id("stats")\n'
        f'@{annotation}("{value}")\n'
        'permit (principal, action == Action::"StatsQuery", resource);\n'
    )


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("min_cohort", "9"),
        ("min_cohort", "x"),
        ("min_cohort", "0"),
        ("min_cohort", "-10"),
        ("min_cohort", "10.5"),
        ("min_cohort", ""),
        ("max_epsilon", "0"),
        ("max_epsilon", "-0.5"),
        ("max_epsilon", "1.00001"),
        ("max_epsilon", "one"),
        ("max_epsilon", "NaN"),
        ("max_epsilon", "Infinity"),
        ("max_epsilon", "1e30"),
        ("max_epsilon", ""),
        ("epsilon_budget", "10"),
        ("epsilon_budget", "-1/day"),
        ("epsilon_budget", "0/day"),
        ("epsilon_budget", "0.0000/day"),
        ("epsilon_budget", "1/fortnight"),
        ("epsilon_budget", "0.00001/day"),
        ("epsilon_budget", "ten/day"),
        ("epsilon_budget", ""),
    ],
)
def test_a_bad_stats_annotation_is_refused_naming_file_line_rule_and_form(
    annotation: str, value: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        PolicyEngine(source=stats_policy(annotation, value), origin="policies/stats.cedar")
    message = str(caught.value)
    assert message.startswith(
        f"policies/stats.cedar, line 4: policy 'stats' has @{annotation}(\"{value}\"); "
    ), message
    assert _ALLOWED_FORM[annotation] in message


@pytest.mark.parametrize(
    ("annotation", "value"),
    [
        ("min_cohort", "10"),
        ("min_cohort", "250"),
        ("max_epsilon", "1.0"),
        ("max_epsilon", "0.0001"),
        ("max_epsilon", "10"),
        ("epsilon_budget", "10/day"),
        ("epsilon_budget", "0.5/hour"),
        ("epsilon_budget", "1.2345/minute"),
        ("epsilon_budget", "3/second"),
    ],
)
def test_good_stats_annotations_load(annotation: str, value: str) -> None:
    engine = PolicyEngine(source=stats_policy(annotation, value), origin="stats.cedar")
    assert engine.annotations()["stats"][annotation] == value


def test_parse_budget() -> None:
    assert parse_budget("10/day") == (Decimal(10), 86400.0)
    assert parse_budget(" 0.5/hour ") == (Decimal("0.5"), 3600.0)
    assert parse_budget("1.2345/minute") == (Decimal("1.2345"), 60.0)
    assert parse_budget("2/second") == (Decimal(2), 1.0)
    for bad in ("10", "0/day", "-1/day", "1/fortnight", "0.00001/day", "10 / day", "1e1/day", ""):
        assert parse_budget(bad) is None, bad


# --- what the deciding rules demand --------------------------------------------------------------

_OBLIGATIONS = (
    '@id("a") @min_cohort("20") @max_epsilon("2") @epsilon_budget("10/day")\n'
    'permit (principal, action == Action::"StatsQuery", resource);\n'
    '@id("b") @min_cohort("50") @max_epsilon("0.5") @epsilon_budget("1/hour")\n'
    'permit (principal, action == Action::"StatsQuery", resource)\n'
    'when { principal.role == "bank" };\n'
    '@id("c")\n'
    'permit (principal, action == Action::"StatsQuery", resource)\n'
    'when { principal.role == "library" };\n'
    '@id("d") @min_cohort("99") @max_epsilon("0.1") @epsilon_budget("0.1/day")\n'
    'forbid (principal, action == Action::"StatsQuery", resource)\n'
    'when { context.purpose == "marketing" };\n'
    '@id("e")\n'
    'permit (principal, action == Action::"RegisterKey", resource);\n'
)


@pytest.fixture(scope="module")
def obligations() -> PolicyEngine:
    return PolicyEngine(source=_OBLIGATIONS, origin="obligations.cedar")


def test_min_cohort_is_the_largest_of_the_deciding_permits(obligations: PolicyEngine) -> None:
    bank = obligations.decide(stats(role="bank"))
    assert bank.allowed and set(bank.policy_ids) == {"a", "b"}
    assert obligations.min_cohort(bank) == 50
    library = obligations.decide(stats(role="library"))
    assert set(library.policy_ids) == {"a", "c"}
    assert obligations.min_cohort(library) == 20
    register = obligations.decide(ask("bank", "RegisterKey", ("Registry", "keys"), {}))
    assert register.allowed
    assert obligations.min_cohort(register) == DEFAULT_MIN_COHORT == 10


def test_max_epsilon_is_the_smallest_of_the_deciding_permits(obligations: PolicyEngine) -> None:
    assert obligations.max_epsilon(obligations.decide(stats(role="bank"))) == Decimal("0.5")
    assert obligations.max_epsilon(obligations.decide(stats(role="library"))) == 2
    register = obligations.decide(ask("bank", "RegisterKey", ("Registry", "keys"), {}))
    assert obligations.max_epsilon(register) is None


def test_epsilon_budgets_lists_every_deciding_permit(obligations: PolicyEngine) -> None:
    bank = obligations.epsilon_budgets(obligations.decide(stats(role="bank")))
    assert sorted(bank, key=lambda b: b.policy_id) == [
        EpsilonBudget(policy_id="a", epsilon=Decimal(10), period_s=86400.0, text="10/day"),
        EpsilonBudget(policy_id="b", epsilon=Decimal(1), period_s=3600.0, text="1/hour"),
    ]
    library = obligations.epsilon_budgets(obligations.decide(stats(role="library")))
    assert [b.policy_id for b in library] == ["a"]
    register = obligations.decide(ask("bank", "RegisterKey", ("Registry", "keys"), {}))
    assert obligations.epsilon_budgets(register) == ()


def test_a_denied_decision_grants_no_budget(obligations: PolicyEngine) -> None:
    # forbidden by "d", which carries a budget of its own: a forbid grants nothing to spend
    forbidden = obligations.decide(stats(role="bank", purpose="marketing"))
    assert not forbidden.allowed and forbidden.policy_ids == ("d",)
    assert obligations.epsilon_budgets(forbidden) == ()
    no_permit = obligations.decide(ask("bank", "ManageConsent", ("Registry", "consent"), {}))
    assert not no_permit.allowed
    assert obligations.epsilon_budgets(no_permit) == ()


# --- ε reaches Cedar as a decimal ----------------------------------------------------------------

_EPSILON_CEILING = (
    '@id("stats-small-epsilon")\n'
    'permit (principal, action == Action::"StatsQuery", resource)\n'
    'when { context.epsilon.lessThanOrEqual(decimal("1.0")) && context.cohort >= 10 };\n'
)


def ceiling_engine() -> PolicyEngine:
    # a fresh engine per use: its decision memory must not carry answers from other tests
    return PolicyEngine(source=_EPSILON_CEILING, origin="ceiling.cedar")


def test_a_policy_compares_epsilon_as_a_cedar_decimal() -> None:
    engine = ceiling_engine()
    allowed = engine.decide(stats(epsilon=Decimal("0.5")))
    assert allowed.allowed and allowed.policy_ids == ("stats-small-epsilon",)
    assert engine.decide(stats(epsilon=Decimal("1.0"))).allowed
    denied = engine.decide(stats(epsilon=Decimal("1.5")))
    assert not denied.allowed and denied.errors == ()
    assert not engine.decide(stats(epsilon=Decimal("1.0001"))).allowed
    assert not engine.decide(stats(epsilon=Decimal("0.5"), cohort=9)).allowed


@pytest.mark.parametrize(
    ("epsilon", "allowed"),
    [
        (parse_epsilon("0.5"), True),
        (parse_epsilon("1"), True),
        (parse_epsilon("10"), False),
        (Decimal("1"), True),
        (Decimal("0"), True),
        (Decimal("2"), False),
        (Decimal("1E+1"), False),
        (Decimal("0.50000"), True),
    ],
)
def test_every_form_of_a_decimal_reaches_cedar(epsilon: Decimal, allowed: bool) -> None:
    # Cedar's decimal wants a point and at most four places: "1" and "0.50000" are not decimals
    # to it, though they are to Python
    decision = ceiling_engine().decide(stats(epsilon=epsilon))
    assert decision.errors == ()
    assert decision.allowed is allowed


def test_equal_decimals_get_one_decision_whichever_comes_first() -> None:
    # 1 == 1.0000 in Python, so the decision memory holds them as one question: Cedar must
    # answer it the same way for both
    for first, second in ((Decimal("1"), Decimal("1.0000")), (Decimal("1.0000"), Decimal("1"))):
        engine = ceiling_engine()
        assert engine.decide(stats(epsilon=first)).allowed
        assert engine.decide(stats(epsilon=second)).allowed


@pytest.mark.parametrize("epsilon", ["0.50001", "1E+30", "NaN", "sNaN", "Infinity", "-Infinity"])
def test_a_decimal_cedar_cannot_hold_is_a_deny_not_a_crash(epsilon: str) -> None:
    decision = ceiling_engine().decide(stats(epsilon=Decimal(epsilon)))
    assert not decision.allowed
    assert decision.errors and decision.reason.startswith("denied: policy error")


def test_the_decision_memory_tells_requests_apart_by_epsilon() -> None:
    engine = ceiling_engine()
    small = engine.decide(stats(epsilon=Decimal("0.5")))
    large = engine.decide(stats(epsilon=Decimal("1.5")))
    assert small.allowed and not large.allowed
    assert engine.decide(stats(epsilon=Decimal("0.5"))) is small
    assert engine.decide(stats(epsilon=Decimal("1.5"))) is large


# --- the shipped policies -------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["sync_job", "statistics_office"])
@pytest.mark.parametrize("dataset", ["person", "enterprise"])
def test_central_allows_statistics_to_the_platform(
    central: PolicyEngine, role: str, dataset: str
) -> None:
    decision = central.decide(stats(role=role, dataset=dataset))
    assert decision.allowed and decision.policy_ids == ("central-statistics",)
    assert central.min_cohort(decision) == 10
    assert central.max_epsilon(decision) == Decimal("1.0")
    assert central.epsilon_budgets(decision) == (
        EpsilonBudget(
            policy_id="central-statistics", epsilon=Decimal(5), period_s=86400.0, text="5/day"
        ),
        EpsilonBudget(
            policy_id="central-statistics",
            epsilon=Decimal(50),
            period_s=365 * 86400.0,
            text="50/year",
        ),
    )


@pytest.mark.parametrize(
    "role", ["bank", "credit_agency", "library", "data_subject", "platform_service"]
)
def test_central_refuses_statistics_to_others(central: PolicyEngine, role: str) -> None:
    decision = central.decide(stats(role=role))
    assert not decision.allowed
    assert central.epsilon_budgets(decision) == ()


def test_central_refuses_statistics_for_another_purpose(central: PolicyEngine) -> None:
    assert not central.decide(stats(purpose="marketing")).allowed
    assert not central.decide(stats(purpose="loan_underwriting")).allowed


def test_node_contributes_to_statistics_over_ten_or_more(node: PolicyEngine) -> None:
    decision = node.decide(contribute_stats(cohort=10))
    assert decision.allowed and decision.policy_ids == ("node-statistics",)
    assert node.decide(contribute_stats(cohort=5000)).allowed
    assert node.decide(contribute_stats(role="statistics_office")).allowed
    assert not node.decide(contribute_stats(role="platform_service")).allowed


@pytest.mark.parametrize("cohort", [9, 1, 0, None])
def test_node_refuses_statistics_over_fewer_than_ten(
    node: PolicyEngine, cohort: int | None
) -> None:
    decision = node.decide(contribute_stats(cohort=cohort))
    assert not decision.allowed
    assert decision.policy_ids == ("node-stats-min-cohort",)
    assert decision.reason == "denied: forbidden by node-stats-min-cohort"


def test_node_refuses_statistics_to_others_and_other_purposes(node: PolicyEngine) -> None:
    assert not node.decide(contribute_stats(role="bank")).allowed
    assert not node.decide(contribute_stats(role="library")).allowed
    assert not node.decide(contribute_stats(purpose="loan_underwriting")).allowed


def test_node_contributions_without_a_cohort_are_unchanged(node: PolicyEngine) -> None:
    # the optional `cohort` fact does not disturb the per-subject shapes
    context: dict[str, Any] = {
        "purpose": "loan_underwriting",
        "shape": "total",
        "subject_kind": "person",
    }
    assert node.decide(ask("bank", "Contribute", ("Department", "tax"), context)).allowed
    context["cohort"] = 3
    assert node.decide(ask("bank", "Contribute", ("Department", "tax"), context)).allowed


def test_time_facts_give_the_hour_in_china_standard_time() -> None:
    assert time_facts(datetime(2026, 11, 26, 15, 59, tzinfo=UTC)) == {"hour": 23}
    assert time_facts(datetime(2026, 11, 26, 16, 0, tzinfo=UTC)) == {"hour": 0}
    assert 0 <= time_facts()["hour"] <= 23


def test_a_rule_can_read_the_hour_and_diff_tries_both_sides_of_its_boundaries() -> None:
    base = (
        '@id("batch") permit (principal, action == Action::"BatchQuery", resource) '
        'when { principal.role == "sync_job" };'
    )
    night = base + (
        '\n@id("night-only") forbid (principal, action == Action::"BatchQuery", resource) '
        "when { context has hour && context.hour >= 8 && context.hour < 20 };"
    )
    old, new = PolicyEngine(source=base, origin="old"), PolicyEngine(source=night, origin="new")
    result = diff(old, new)
    denied_hours = {c.request.context["hour"] for c in result.newly_denied}
    # each side of both boundaries is tried: 7 and 20 stay allowed, 8 and 19 are refused
    assert denied_hours == {8, 19}
    assert all(c.new.policy_ids == ("night-only",) for c in result.newly_denied)
    # only the action a rule about the hour names is varied by hour
    assert {c.request.action for c in result.newly_denied} == {"BatchQuery"}


def test_several_budgets_in_one_annotation_each_bind() -> None:
    engine = PolicyEngine(
        source=(
            '@id("s") @epsilon_budget("5/day, 50/year") '
            'permit (principal, action == Action::"StatsQuery", resource);'
        ),
        origin="p",
    )
    decision = engine.decide(
        PolicyRequest(
            "Requester", "r", {"role": "sync_job"}, "StatsQuery", "Dataset", "person",
            {"purpose": "statistics", "cohort": 10, "epsilon": Decimal("1")},
        )
    )  # fmt: skip
    budgets = engine.epsilon_budgets(decision)
    assert [(b.epsilon, b.period_s, b.text) for b in budgets] == [
        (Decimal(5), 86400.0, "5/day"),
        (Decimal(50), 365 * 86400.0, "50/year"),
    ]
    with pytest.raises(ConfigError, match="several budgets separated by commas"):
        PolicyEngine(
            source='@epsilon_budget("5/day, x") permit (principal, action, resource);', origin="p"
        )


def test_absurdly_deep_brackets_are_refused_before_cedar_parses_them() -> None:
    # cedarpy's parser recurses natively: ~2000 levels crash the process instead of raising
    deep = "permit (principal, action, resource) when { " + "(" * 2000 + "true" + ")" * 2000 + " };"
    with pytest.raises(ConfigError, match=r"deep\.cedar, line 1: brackets nested more than 64"):
        PolicyEngine(source=deep, origin="deep.cedar")
    # brackets inside strings and comments do not count, and ordinary nesting is fine
    fine = (
        '@id("a(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((") '
        "permit (principal, action, resource) when { " + "(" * 30 + "true" + ")" * 30 + " };"
        " // " + "(" * 100
    )
    PolicyEngine(source=fine, origin="fine.cedar")
