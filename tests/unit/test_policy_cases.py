"""`osmanthus policy test` and `policy explain`: the privacy office's checks of a policy change."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmanthus.cli import main
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.policy import PolicyEngine
from osmanthus.core.policy_cases import (
    ACTIONS,
    DECIMAL_FACTS,
    OPTIONAL_FACTS,
    explain,
    load_cases,
    make_request,
    parse_context_value,
    parse_resource,
    run_cases,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
CASE = """
[[case]]
name = "{name}"
requester = "bank-1"
role = "bank"
action = "PersonQuery"
resource = "Dataset::person"
context = {{ purpose = "loan_underwriting", shape = "total", consent = "{consent}" }}
expect = "{expect}"
"""


@pytest.mark.parametrize("name", ["central", "node"])
def test_the_default_policies_decide_as_their_case_files_say(name: str) -> None:
    engine = PolicyEngine.from_file(POLICIES / f"{name}.cedar")
    results = run_cases(engine, load_cases(POLICIES / "cases" / f"{name}.toml"))
    assert results and all(r.passed for r in results), [r.problems for r in results]
    # the cases exercise every rule of the policy at least once
    deciders = {pid for r in results for pid in r.decision.policy_ids}
    assert deciders == set(engine.annotations())


def test_a_policy_change_that_breaks_an_expectation_fails_with_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a careless edit: libraries slip into the loan-underwriting permit
    text = (POLICIES / "central.cedar").read_text()
    old = '["bank", "credit_agency"].contains(principal.role)'
    assert text.count(old) == 1
    changed = tmp_path / "central.cedar"
    changed.write_text(text.replace(old, '["bank", "credit_agency", "library"]'
                                         ".contains(principal.role)"))  # fmt: skip
    cases = tmp_path / "cases.toml"
    cases.write_text(
        CASE.format(name="no loan checks for libraries", consent="valid", expect="deny").replace(
            'role = "bank"', 'role = "library"'
        )
        + CASE.format(name="with consent", consent="valid", expect="allow")
    )
    code = main(["policy", "test", "--policy", str(changed), str(cases)])
    out = capsys.readouterr().out
    assert code == 6
    assert "FAIL  no loan checks for libraries" in out
    assert "case 1" in out and "expected deny, got allow" in out
    assert "PASS  with consent" in out
    assert "1 passed, 1 failed" in out


def test_expected_deciding_rules_and_minimum_are_checked(tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(
        CASE.format(name="c", consent="valid", expect="allow")
        + 'by = ["central-self-query"]\nmin_departments = 5\n'
    )
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    (result,) = run_cases(engine, load_cases(cases))
    assert not result.passed
    assert any("decided by central-loan-underwriting" in p for p in result.problems)
    assert any("minimum of 5 departments, got 3" in p for p in result.problems)


def test_expected_rate_limits_are_checked(tmp_path: Path) -> None:
    # a kiosk's self-query is held to 30 a minute; a case expecting the online site's 3000
    # (or none at all) fails, naming what the rules say
    kiosk = CASE.format(name="k", consent="missing", expect="allow").replace(
        'role = "bank"', 'role = "kiosk"'
    ).replace('purpose = "loan_underwriting", shape = "total"', 'purpose = "self_query", '
              'shape = "breakdown"')  # fmt: skip
    cases = tmp_path / "cases.toml"
    cases.write_text(
        kiosk + 'rate_limits = ["30/minute"]\n'
        + kiosk + 'rate_limits = ["3000/minute"]\n'
        + CASE.format(name="loan", consent="valid", expect="allow") + 'rate_limits = ["1/day"]\n'
    )  # fmt: skip
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    passed, wrong, unlimited = run_cases(engine, load_cases(cases))
    assert passed.passed, passed.problems
    assert wrong.problems == ("expected the rate limits 3000/minute, got 30/minute",)
    assert unlimited.problems == ("expected the rate limits 1/day, got none",)


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('colour = "red"\n', "colour", "unknown key"),
        ('by = "central-self-query"\n', "by", "list of rule ids"),
        ("min_departments = true\n", "min_departments", "whole number"),
        ('rate_limits = "30/minute"\n', "rate_limits", "list of limits"),
    ],
)
def test_a_malformed_case_names_file_case_and_key(
    tmp_path: Path, extra: str, key: str, words: str
) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(CASE.format(name="fine", consent="valid", expect="allow") * 2 + extra)
    with pytest.raises(ConfigError) as caught:
        load_cases(cases)
    assert caught.value.field == key
    assert f"{cases}, case 2: {key}:" in str(caught.value) and words in str(caught.value)


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ('expect = "allow"', 'expect = "maybe"', "expect", "'allow' or 'deny'"),
        ('action = "PersonQuery"', 'action = "PersonQueery"', "action", "known: AcceptPartial"),
        ('resource = "Dataset::person"', 'resource = "person"', "resource", "Type::id"),
        (', consent = "valid"', "", "context", "missing consent"),
        ('shape = "total"', 'shape = "total", colour = "red"', "context", "unknown colour"),
    ],
)
def test_a_case_in_terms_the_policy_model_lacks_is_refused(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(CASE.format(name="n", consent="valid", expect="allow").replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_cases(cases)
    assert caught.value.field == key
    assert words in str(caught.value)


def test_a_case_file_without_cases_or_not_toml_is_refused(tmp_path: Path) -> None:
    for text, words in (("", r"no \[\[case\]\] tables"), ("[[case]\n", "not valid TOML")):
        path = tmp_path / "c.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            load_cases(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_cases(tmp_path / "absent.toml")


def test_explain_gives_verdict_rules_reason_and_minimum(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([
        "policy", "explain", "--policy", str(POLICIES / "central.cedar"),
        "--requester", "bank-1", "--role", "bank", "--action", "PersonQuery",
        "--resource", "Dataset::person",
        "--context", "purpose=loan_underwriting", "shape=total", "consent=valid",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("decision: ALLOW")
    assert "decided by: central-loan-underwriting" in out
    assert "minimum departments in a sum: 3" in out
    engine = PolicyEngine.from_file(POLICIES / "central.cedar")
    denied = explain(
        engine,
        make_request(
            requester="bank-1",
            role="bank",
            action="PersonQuery",
            resource=("Dataset", "person"),
            context={"purpose": "loan_underwriting", "shape": "total", "consent": "revoked"},
        ),
    )
    assert "decision: DENY" in denied and "central-consent-required" in denied
    assert "minimum departments" not in denied


def test_explain_refuses_a_request_outside_the_policy_model(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main([
        "policy", "explain", "--policy", str(POLICIES / "central.cedar"),
        "--requester", "bank-1", "--role", "bank", "--action", "PersonQuery",
        "--resource", "Dataset::person", "--context", "purpose=loan_underwriting",
    ])  # fmt: skip
    assert code == 3
    assert "missing consent, shape" in capsys.readouterr().err


def test_values_and_resources_are_read_as_an_officer_writes_them() -> None:
    assert parse_context_value("18") == 18 and parse_context_value("-2") == -2
    assert parse_context_value("true") is True and parse_context_value("false") is False
    assert parse_context_value("loan_underwriting") == "loan_underwriting"
    assert parse_resource("Dataset::person") == ("Dataset", "person")
    assert parse_resource('Department::"tax"') == ("Department", "tax")
    with pytest.raises(InvalidArgument):
        parse_resource("Dataset:person")
    # the hour is every action's optional fact: a case may leave it out
    assert ACTIONS["RegisterKey"] == frozenset({"hour"}) == OPTIONAL_FACTS["RegisterKey"]
    assert frozenset({"epsilon"}) == DECIMAL_FACTS
    assert ACTIONS["ContributeBatch"] >= {"subjects", "subject_kind"}


def test_the_consent_states_are_the_coordinators() -> None:
    from coordinator.consent import ConsentState
    from osmanthus.core.policy_cases import CONSENT_STATES

    assert set(CONSENT_STATES) == {s.value for s in ConsentState}


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ('role = "bank"', 'role = "libary"', "role", "not a role"),
        ('resource = "Dataset::person"', 'resource = "Dataset::persons"', "resource", "exist"),
        ('resource = "Dataset::person"', 'resource = "Datset::person"', "resource", "type"),
        ('shape = "total"', 'shape = "treshold"', "context", "shape 'treshold'"),
        ('consent = "valid"', 'consent = "vaild"', "context", "consent 'vaild'"),
    ],
)
def test_a_typo_cannot_pass_a_deny_case(
    tmp_path: Path, old: str, new: str, key: str, words: str
) -> None:
    # with the typo the request would match no rule and every "deny" expectation would pass
    cases = tmp_path / "cases.toml"
    cases.write_text(CASE.format(name="n", consent="valid", expect="deny").replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_cases(cases)
    assert caught.value.field == key
    assert words in str(caught.value)
