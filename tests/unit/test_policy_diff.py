"""`osmanthus policy diff`: the requests a policy change newly allows or denies, and only those."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmanthus.cli import main
from osmanthus.core.policy import PolicyEngine
from osmanthus.core.policy_diff import UNLISTED_PURPOSE, diff, diff_every_request

CENTRAL = Path(__file__).resolve().parents[2] / "policies" / "central.cedar"
TEXT = CENTRAL.read_text()


def _engine(tmp_path: Path, text: str, name: str = "new.cedar") -> PolicyEngine:
    path = tmp_path / name
    path.write_text(text)
    return PolicyEngine.from_file(path)


def _edit(old: str, new: str) -> str:
    assert TEXT.count(old) == 1, old
    return TEXT.replace(old, new)


def test_the_same_policy_changes_nothing() -> None:
    engine = PolicyEngine.from_file(CENTRAL)
    result = diff(engine, engine)
    assert result.requests > 1000 and result.changes == ()


def test_a_widened_permit_shows_exactly_the_requests_it_lets_in(tmp_path: Path) -> None:
    old = PolicyEngine.from_file(CENTRAL)
    new = _engine(
        tmp_path,
        _edit(
            '["bank", "credit_agency"].contains(principal.role)',
            '["bank", "credit_agency", "library"].contains(principal.role)',
        ),
    )
    result = diff(old, new)
    assert result.newly_denied == ()
    allowed = result.newly_allowed
    assert {(c.request.principal_attrs["role"], c.request.context["shape"]) for c in allowed} == {
        ("library", "breakdown"),
        ("library", "total"),
        ("library", "threshold"),
        ("library", "flags"),
    }
    # every threshold tried: 1, 200 and either side of the 110 and 130 the policies compare with
    assert sorted(c.request.context.get("threshold", 0) for c in allowed) == [
        0, 0, 0, 1, 109, 110, 111, 129, 130, 131, 200
    ]  # fmt: skip
    for change in allowed:
        assert change.request.action == "PersonQuery"
        assert change.request.context["consent"] == "valid"
        assert change.request.context["purpose"] == "loan_underwriting"
        assert change.old.policy_ids == () and change.new.policy_ids == (
            "central-loan-underwriting",
        )


def test_a_removed_permit_shows_what_is_now_refused(tmp_path: Path) -> None:
    start = TEXT.index('@id("central-court-enforcement")')
    end = TEXT.index("};", start) + 2
    result = diff(PolicyEngine.from_file(CENTRAL), _engine(tmp_path, TEXT[:start] + TEXT[end:]))
    assert result.newly_allowed == ()
    denied = result.newly_denied
    assert denied and all(c.request.context["purpose"] == "court_enforcement" for c in denied)
    assert all(c.request.principal_attrs["role"] == "platform_service" for c in denied)
    # court enforcement needs no consent: every consent state was allowed and now is not
    assert {c.request.context["consent"] for c in denied} >= {"valid", "missing", "revoked"}


def test_a_permit_without_a_purpose_condition_lets_in_purposes_no_policy_names(
    tmp_path: Path,
) -> None:
    new = _engine(
        tmp_path,
        _edit(
            '["bank", "credit_agency", "platform_service"].contains(principal.role) &&\n'
            '  ["loan_underwriting", "credit_report", "government_procurement"]'
            ".contains(context.purpose) &&",
            '["bank", "credit_agency", "platform_service"].contains(principal.role) &&',
        ),
    )
    purposes = {
        c.request.context["purpose"]
        for c in diff(PolicyEngine.from_file(CENTRAL), new).newly_allowed
    }
    assert UNLISTED_PURPOSE in purposes and "self_query" in purposes


def test_the_command_lists_changes_and_can_signal_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "new.cedar"
    new.write_text(
        _edit(
            '["bank", "credit_agency"].contains(principal.role)',
            '["bank", "credit_agency", "library"].contains(principal.role)',
        )
    )
    assert main(["policy", "diff", str(CENTRAL), str(new)]) == 0
    out = capsys.readouterr().out
    assert "11 newly allowed, 0 newly denied" in out
    assert "library PersonQuery Dataset::person" in out
    assert "was deny by no rule; now by central-loan-underwriting" in out
    assert main(["policy", "diff", str(CENTRAL), str(new), "--exit-code"]) == 1
    assert main(["policy", "diff", str(CENTRAL), str(CENTRAL), "--exit-code"]) == 0


def test_threshold_questions_are_in_the_matrix(tmp_path: Path) -> None:
    start = TEXT.index('@id("central-library-deposit-waiver")')
    end = TEXT.index("};", start) + 2
    result = diff(PolicyEngine.from_file(CENTRAL), _engine(tmp_path, TEXT[:start] + TEXT[end:]))
    (change,) = result.newly_denied
    assert change.request.context == {
        "purpose": "deposit_waiver",
        "shape": "threshold",
        "consent": "valid",
        "threshold": 110,
    }


def test_weaker_obligations_are_reported_though_every_decision_stands(tmp_path: Path) -> None:
    text = _edit(
        '@id("central-library-deposit-waiver")\n@min_departments("3")\n@rate_limit("600/hour")\n',
        '@id("central-library-deposit-waiver")\n@min_departments("2")\n',
    )
    result = diff(PolicyEngine.from_file(CENTRAL), _engine(tmp_path, text))
    assert result.newly_allowed == () and result.newly_denied == ()
    (change,) = result.obligations_changed
    assert change.obligations == (
        "min 3 departments, rate limit 600/hour (central-library-deposit-waiver)",
        "min 2 departments, no rate limit",
    )


#: rules that reach every path of the fast diff: a step that fails to evaluate (an overflow), an
#: entity literal and a `principal in` scope, `unless {A || B}`, `like`, decimals, the action
#: read in a condition, a rule in both policies with a changed effect or annotation, and two
#: rules with the same body
_TRICKY_OLD = """
@id("partial") permit (principal, action == Action::"AcceptPartial", resource);
@id("stats") permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "statistics_office" && context.purpose == "statistics" };
@id("keys") permit (principal, action == Action::"RegisterKey", resource)
when { principal.role == "bank" };
@id("lists") permit (principal, action == Action::"SearchLists", resource)
when { principal.role == "bank" };
"""
_TRICKY_NEW = """
@id("partial") permit (principal, action == Action::"AcceptPartial", resource);
@id("overflow") forbid (principal, action == Action::"AcceptPartial", resource)
when { context.answered * 4611686018427387904 > 0 };
@id("stats") @rate_limit("60/hour") permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "statistics_office" && context.purpose == "statistics" };
@id("stats-again") permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "statistics_office" && context.purpose == "statistics" };
@id("small-epsilon") forbid (principal, action == Action::"StatsQuery", resource)
when { context.epsilon.greaterThan(decimal("0.5")) || context.cohort < 100 }
unless { principal.role == "sync_job" };
@id("keys") forbid (principal, action == Action::"RegisterKey", resource)
when { principal.role == "bank" };
@id("lists") permit (principal, action == Action::"SearchLists", resource)
when { principal.role == "bank" }
unless { principal == Requester::"bank-7" || action != Action::"SearchLists" };
@id("bank-7") forbid (
  principal in Requester::"bank-7", action == Action::"PersonQuery", resource == Dataset::"person"
) when { context.purpose like "stat*" || context.shape == "flags" };
@id("bank-7-ok") permit (
  principal == Requester::"bank-7", action == Action::"PersonQuery", resource
) when { context.shape == "total" && resource == Dataset::"person" };
"""


@pytest.mark.slow
def test_the_fast_diff_reports_what_deciding_every_request_whole_reports() -> None:
    old = PolicyEngine(source=_TRICKY_OLD, origin="old")
    new = PolicyEngine(source=_TRICKY_NEW, origin="new")
    fast = diff(old, new)
    assert fast == diff_every_request(old, new)
    # every kind of change is there, and requests on which a rule fails to evaluate
    assert fast.newly_allowed and fast.newly_denied and fast.obligations_changed
    assert any(c.new.errors for c in fast.newly_denied)
    assert {c.request.action for c in fast.changes} >= {
        "AcceptPartial", "StatsQuery", "RegisterKey", "SearchLists", "PersonQuery"
    }  # fmt: skip
