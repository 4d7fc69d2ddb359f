"""The Cedar policy engine and the default central and node policies, decision by decision."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import Any

import pytest

from osmanthus.core.errors import ConfigError
from osmanthus.core.policy import (
    DEFAULT_MIN_DEPARTMENTS,
    PolicyEngine,
    PolicyRequest,
    ReloadablePolicy,
)

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ALL_ROLES = ("bank", "credit_agency", "library", "sync_job", "platform_service", "data_subject")
CONSENT_STATES = (
    "valid",
    "missing",
    "revoked",
    "expired",
    "purpose_mismatch",
    "grantee_mismatch",
    "not_applicable",
)
NODE_PURPOSES = (
    "loan_underwriting",
    "self_query",
    "court_enforcement",
    "credit_report",
    "government_procurement",
)


@pytest.fixture(scope="module")
def central() -> PolicyEngine:
    return PolicyEngine.from_file(POLICIES / "central.cedar")


@pytest.fixture(scope="module")
def node() -> PolicyEngine:
    return PolicyEngine.from_file(POLICIES / "node.cedar")


def ask(
    role: str | None,
    action: str,
    resource: tuple[str, str],
    context: dict[str, Any],
    principal: str = "req-1",
) -> PolicyRequest:
    return PolicyRequest(
        principal_type="Requester",
        principal_id=principal,
        principal_attrs={} if role is None else {"role": role},
        action=action,
        resource_type=resource[0],
        resource_id=resource[1],
        context=context,
    )


def person(role: str, purpose: str, consent: str, shape: str = "breakdown") -> PolicyRequest:
    context = {"purpose": purpose, "shape": shape, "consent": consent}
    return ask(role, "PersonQuery", ("Dataset", "person"), context)


def enterprise(role: str, purpose: str, shape: str = "total") -> PolicyRequest:
    context = {"purpose": purpose, "shape": shape, "consent": "not_applicable"}
    return ask(role, "EnterpriseQuery", ("Dataset", "enterprise"), context)


def contribute(role: str, purpose: str, shape: str = "breakdown") -> PolicyRequest:
    context = {"purpose": purpose, "shape": shape, "subject_kind": "person"}
    return ask(role, "Contribute", ("Department", "tax"), context)


# --- central policy: person queries ----------------------------------------------------------


@pytest.mark.parametrize("role", ["bank", "credit_agency"])
@pytest.mark.parametrize("shape", ["breakdown", "total"])
def test_loan_underwriting_with_valid_consent_is_permitted(
    central: PolicyEngine, role: str, shape: str
) -> None:
    decision = central.decide(person(role, "loan_underwriting", "valid", shape))
    assert decision.allowed
    assert decision.policy_ids == ("central-loan-underwriting",)
    assert decision.reason == "permitted by central-loan-underwriting"
    assert decision.errors == ()


@pytest.mark.parametrize("consent", [c for c in CONSENT_STATES if c != "valid"])
def test_loan_underwriting_without_valid_consent_is_forbidden(
    central: PolicyEngine, consent: str
) -> None:
    decision = central.decide(person("bank", "loan_underwriting", consent))
    assert not decision.allowed
    assert decision.policy_ids == ("central-consent-required",)
    assert decision.reason == "denied: forbidden by central-consent-required"


@pytest.mark.parametrize("role", ["library", "sync_job", "platform_service", "data_subject"])
def test_other_roles_get_no_loan_underwriting(central: PolicyEngine, role: str) -> None:
    decision = central.decide(person(role, "loan_underwriting", "valid"))
    assert not decision.allowed
    assert decision.policy_ids == ()


def test_denial_sentence_names_action_role_and_purpose(central: PolicyEngine) -> None:
    decision = central.decide(person("library", "loan_underwriting", "valid"))
    assert decision.reason == (
        "denied: no policy permits Action::\"PersonQuery\" for role 'library' and purpose "
        "'loan_underwriting' (shape 'breakdown', consent 'valid')"
    )


def test_unknown_purpose_and_shape_are_denied(central: PolicyEngine) -> None:
    assert not central.decide(person("bank", "marketing", "valid")).allowed
    assert not central.decide(person("bank", "loan_underwriting", "valid", shape="summary")).allowed


def test_self_query_breakdown_with_consent_is_permitted(central: PolicyEngine) -> None:
    decision = central.decide(person("data_subject", "self_query", "valid"))
    assert decision.allowed
    assert decision.policy_ids == ("central-self-query",)


def test_self_query_is_breakdown_only_and_needs_consent(central: PolicyEngine) -> None:
    assert not central.decide(person("data_subject", "self_query", "valid", shape="total")).allowed
    assert not central.decide(person("data_subject", "self_query", "missing")).allowed
    assert not central.decide(person("bank", "self_query", "valid")).allowed


@pytest.mark.parametrize("consent", CONSENT_STATES)
@pytest.mark.parametrize("shape", ["breakdown", "total"])
def test_court_enforcement_is_statutory_whatever_the_consent(
    central: PolicyEngine, consent: str, shape: str
) -> None:
    decision = central.decide(person("platform_service", "court_enforcement", consent, shape))
    assert decision.allowed, decision.reason
    assert decision.policy_ids == ("central-court-enforcement",)


@pytest.mark.parametrize("role", ["bank", "credit_agency", "library", "data_subject"])
def test_court_enforcement_is_for_platform_services_only(central: PolicyEngine, role: str) -> None:
    assert not central.decide(person(role, "court_enforcement", "valid")).allowed


def test_person_query_on_the_enterprise_dataset_is_denied(central: PolicyEngine) -> None:
    request = ask(
        "bank",
        "PersonQuery",
        ("Dataset", "enterprise"),
        {"purpose": "loan_underwriting", "shape": "total", "consent": "valid"},
    )
    assert not central.decide(request).allowed


# --- central policy: enterprise queries, registries, partial answers -------------------------


@pytest.mark.parametrize("role", ["bank", "credit_agency", "platform_service"])
@pytest.mark.parametrize(
    "purpose", ["loan_underwriting", "credit_report", "government_procurement"]
)
@pytest.mark.parametrize("shape", ["breakdown", "total"])
def test_enterprise_queries_are_permitted_without_consent(
    central: PolicyEngine, role: str, purpose: str, shape: str
) -> None:
    decision = central.decide(enterprise(role, purpose, shape))
    assert decision.allowed
    assert decision.policy_ids == ("central-enterprise-query",)


@pytest.mark.parametrize("role", ["library", "sync_job", "data_subject"])
def test_enterprise_queries_refused_to_other_roles(central: PolicyEngine, role: str) -> None:
    assert not central.decide(enterprise(role, "credit_report")).allowed


def test_enterprise_query_for_other_purpose_or_dataset_is_denied(central: PolicyEngine) -> None:
    assert not central.decide(enterprise("bank", "self_query")).allowed
    wrong_dataset = ask(
        "bank",
        "EnterpriseQuery",
        ("Dataset", "person"),
        {"purpose": "credit_report", "shape": "total", "consent": "not_applicable"},
    )
    assert not central.decide(wrong_dataset).allowed


@pytest.mark.parametrize("role", ALL_ROLES)
def test_only_platform_services_manage_consent(central: PolicyEngine, role: str) -> None:
    decision = central.decide(ask(role, "ManageConsent", ("Registry", "consent"), {}))
    assert decision.allowed is (role == "platform_service")


@pytest.mark.parametrize("role", ALL_ROLES)
def test_every_role_registers_keys(central: PolicyEngine, role: str) -> None:
    # a data subject needs its own key to decrypt a self-query breakdown
    decision = central.decide(ask(role, "RegisterKey", ("Registry", "keys"), {}))
    assert decision.allowed
    assert not central.decide(ask(role, "RegisterKey", ("Registry", "consent"), {})).allowed


@pytest.mark.parametrize(
    ("answered", "expected", "allowed"),
    [
        (10, 10, True),
        (8, 10, True),
        (7, 10, False),
        (4, 5, True),
        (3, 4, False),
        (18, 22, True),
        (17, 22, False),
        (0, 0, False),
        (11, 10, False),
    ],
)
def test_partial_answers_need_eighty_percent_coverage(
    central: PolicyEngine, answered: int, expected: int, allowed: bool
) -> None:
    context = {
        "purpose": "loan_underwriting",
        "shape": "total",
        "answered": answered,
        "expected": expected,
    }
    decision = central.decide(ask("bank", "AcceptPartial", ("Dataset", "person"), context))
    assert decision.allowed is allowed
    if allowed:
        assert decision.policy_ids == ("central-accept-partial",)


# --- node policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", NODE_PURPOSES)
@pytest.mark.parametrize("shape", ["breakdown", "total"])
def test_node_contributes_for_listed_purposes(node: PolicyEngine, purpose: str, shape: str) -> None:
    decision = node.decide(contribute("bank", purpose, shape))
    assert decision.allowed
    assert decision.policy_ids == ("node-contribute",)


def test_node_refuses_unlisted_purpose_and_shape(node: PolicyEngine) -> None:
    assert not node.decide(contribute("bank", "marketing")).allowed
    assert not node.decide(contribute("bank", "loan_underwriting", shape="stats")).allowed


@pytest.mark.parametrize("purpose", NODE_PURPOSES)
def test_library_forbid_overrides_the_contribute_permit(node: PolicyEngine, purpose: str) -> None:
    # the same request from a bank is permitted, so the forbid is what decides
    assert node.decide(contribute("bank", purpose)).allowed
    decision = node.decide(contribute("library", purpose))
    assert not decision.allowed
    assert decision.policy_ids == ("node-no-library",)
    assert decision.reason == "denied: forbidden by node-no-library"


def test_single_source_disclosure_only_for_self_query(node: PolicyEngine) -> None:
    def single(role: str, purpose: str) -> bool:
        context = {"purpose": purpose, "shape": "breakdown", "subject_kind": "person"}
        return node.decide(
            ask(role, "DiscloseSingleSource", ("Department", "hrss"), context)
        ).allowed

    assert single("data_subject", "self_query")
    assert not single("bank", "self_query")
    assert not single("data_subject", "loan_underwriting")
    for purpose in NODE_PURPOSES[:1] + NODE_PURPOSES[2:]:
        assert not single("bank", purpose)


# --- deny by default on errors -------------------------------------------------------------


def test_missing_role_is_a_policy_error_and_a_deny(central: PolicyEngine) -> None:
    request = ask(None, "PersonQuery", ("Dataset", "person"), {"purpose": "x", "shape": "total"})
    decision = central.decide(request)
    assert not decision.allowed
    assert decision.errors
    assert decision.reason.startswith("denied: policy error: ")
    # errors name the policy by its @id, not by Cedar's positional id
    assert "policy0" not in decision.reason
    assert "'central-" in decision.reason


def test_missing_context_fact_is_a_deny(central: PolicyEngine) -> None:
    request = ask("bank", "PersonQuery", ("Dataset", "person"), {"purpose": "loan_underwriting"})
    decision = central.decide(request)
    assert not decision.allowed
    assert decision.errors


def test_value_cedar_cannot_represent_is_a_deny(central: PolicyEngine) -> None:
    request = ask(
        "bank",
        "AcceptPartial",
        ("Dataset", "person"),
        {"purpose": "loan_underwriting", "shape": "total", "answered": 8.5, "expected": 10},
    )
    decision = central.decide(request)
    assert not decision.allowed
    assert decision.reason.startswith("denied: policy error: ")


def test_a_forbid_that_errors_denies_even_when_a_permit_matches() -> None:
    engine = PolicyEngine(
        source=(
            '@id("keys")\n'
            'permit (principal, action == Action::"RegisterKey", resource);\n'
            '@id("guard")\n'
            'forbid (principal, action == Action::"RegisterKey", resource)\n'
            'when { principal.role == "bank" };\n'
        ),
        origin="test.cedar",
    )
    assert engine.decide(ask("library", "RegisterKey", ("Registry", "keys"), {})).allowed
    decision = engine.decide(ask(None, "RegisterKey", ("Registry", "keys"), {}))
    assert not decision.allowed
    assert decision.policy_ids == ("guard",)
    assert "'guard'" in decision.reason


# --- annotations and the minimum number of departments ---------------------------------------


def test_every_default_policy_has_an_id(central: PolicyEngine, node: PolicyEngine) -> None:
    for engine in (central, node):
        for policy_id, notes in engine.annotations().items():
            assert notes["id"] == policy_id


def test_annotations_expose_min_departments(central: PolicyEngine) -> None:
    notes = central.annotations()
    assert notes["central-loan-underwriting"]["min_departments"] == "3"
    assert "min_departments" not in notes["central-register-key"]


def test_min_departments_is_the_strictest_of_the_deciding_permits() -> None:
    engine = PolicyEngine(
        source=(
            '@id("a") @min_departments("3")\n'
            'permit (principal, action == Action::"RegisterKey", resource);\n'
            '@id("b") @min_departments("5")\n'
            'permit (principal, action == Action::"RegisterKey", resource)\n'
            'when { principal.role == "bank" };\n'
            '@id("c")\n'
            'permit (principal, action == Action::"ManageConsent", resource);\n'
        ),
        origin="test.cedar",
    )
    bank = engine.decide(ask("bank", "RegisterKey", ("Registry", "keys"), {}))
    assert set(bank.policy_ids) == {"a", "b"}
    assert engine.min_departments(bank) == 5
    library = engine.decide(ask("library", "RegisterKey", ("Registry", "keys"), {}))
    assert engine.min_departments(library) == 3
    consent = engine.decide(ask("library", "ManageConsent", ("Registry", "consent"), {}))
    assert engine.min_departments(consent) == DEFAULT_MIN_DEPARTMENTS


def test_central_queries_require_three_departments(central: PolicyEngine) -> None:
    decision = central.decide(person("bank", "loan_underwriting", "valid"))
    assert central.min_departments(decision) == 3


@pytest.mark.parametrize("value", ["1", "0", "two", "-3", ""])
def test_bad_min_departments_is_refused(value: str) -> None:
    source = f'@id("a")\n@min_departments("{value}")\npermit (principal, action, resource);\n'
    with pytest.raises(ConfigError, match=r"test\.cedar, line 1: policy 'a' has @min_departments"):
        PolicyEngine(source=source, origin="test.cedar")


# --- loading: errors name the file and the line ----------------------------------------------


def test_parse_error_names_origin_and_line() -> None:
    source = (
        '@id("ok")\n'
        'permit (principal, action == Action::"RegisterKey", resource);\n'
        "\n"
        '// a comment with a ; and a " in it\n'
        '@id("broken")\n'
        "permit (principal, action, resource)\n"
        "when {\n"
        "  principal.role ==\n"
        "};\n"
    )
    with pytest.raises(ConfigError) as caught:
        PolicyEngine(source=source, origin="policies/central.cedar")
    message = str(caught.value)
    assert message.startswith("policies/central.cedar, line 9: cannot parse the policy: ")
    assert "unexpected token" in message


def test_unterminated_policy_points_at_its_last_line() -> None:
    source = "permit (principal, action, resource);\n\npermit (principal, action,\n  resource)\n"
    with pytest.raises(ConfigError, match=r"^x\.cedar, line 4: cannot parse the policy"):
        PolicyEngine(source=source, origin="x.cedar")


def test_policy_outside_the_entity_model_is_refused_with_its_line() -> None:
    source = (
        '@id("ok")\npermit (principal, action == Action::"RegisterKey", resource);\n'
        '@id("typo")\n'
        'permit (principal, action == Action::"PersonQuery", resource)\n'
        'when { context.purpse == "loan_underwriting" };\n'
    )
    with pytest.raises(ConfigError) as caught:
        PolicyEngine(source=source, origin="c.cedar")
    message = str(caught.value)
    assert message.startswith("c.cedar: the policy does not fit the Osmanthus entity model")
    assert "line 3: for policy 'typo'" in message
    assert "purpse" in message


def test_unknown_action_is_refused() -> None:
    with pytest.raises(ConfigError, match="unrecognized action"):
        PolicyEngine(
            source='permit (principal, action == Action::"Download", resource);',
            origin="c.cedar",
        )


def test_duplicate_ids_are_refused() -> None:
    source = (
        '@id("same")\npermit (principal, action == Action::"RegisterKey", resource);\n'
        '@id("same")\npermit (principal, action == Action::"ManageConsent", resource);\n'
    )
    with pytest.raises(ConfigError, match=r"c\.cedar, line 3: policy id 'same' is used twice"):
        PolicyEngine(source=source, origin="c.cedar")


def test_line_numbers_hold_past_ten_policies() -> None:
    one = '@id("p{}")\npermit (principal, action == Action::"RegisterKey", resource);\n'
    source = "".join(one.format(i) for i in range(12)) + one.format(3)
    with pytest.raises(ConfigError, match=r"c\.cedar, line 25: policy id 'p3' is used twice"):
        PolicyEngine(source=source, origin="c.cedar")


def test_templates_are_refused() -> None:
    with pytest.raises(ConfigError, match="templates"):
        PolicyEngine(
            source='permit (principal == ?principal, action == Action::"RegisterKey", resource);',
            origin="c.cedar",
        )


def test_unreadable_files_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        PolicyEngine.from_file(tmp_path / "absent.cedar")
    latin1 = tmp_path / "latin1.cedar"
    latin1.write_bytes(b"// caf\xe9\npermit (principal, action, resource);\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        PolicyEngine.from_file(latin1)


def test_hash_is_sha256_of_the_file_bytes(central: PolicyEngine) -> None:
    data = (POLICIES / "central.cedar").read_bytes()
    assert central.hash == hashlib.sha256(data).hexdigest()
    assert PolicyEngine(source=data.decode(), origin="copy").hash == central.hash


def test_empty_policy_denies_everything() -> None:
    engine = PolicyEngine(source="// nothing is allowed\n", origin="empty.cedar")
    decision = engine.decide(ask("platform_service", "ManageConsent", ("Registry", "consent"), {}))
    assert not decision.allowed
    assert decision.reason == (
        "denied: no policy permits Action::\"ManageConsent\" for role 'platform_service'"
    )


# --- reloading -------------------------------------------------------------------------------


ONLY_KEYS = '@id("keys")\npermit (principal, action == Action::"RegisterKey", resource);\n'
ONLY_CONSENT = '@id("consent")\npermit (principal, action == Action::"ManageConsent", resource);\n'


def test_reload_puts_the_new_policy_in_force(tmp_path: Path) -> None:
    path = tmp_path / "p.cedar"
    path.write_text(ONLY_KEYS)
    holder = ReloadablePolicy.from_file(path)
    keys = ask("bank", "RegisterKey", ("Registry", "keys"), {})
    assert holder.current().decide(keys).allowed

    path.write_text(ONLY_CONSENT)
    engine = holder.reload_from(path)
    assert holder.current() is engine
    assert not holder.current().decide(keys).allowed
    assert engine.hash == hashlib.sha256(ONLY_CONSENT.encode()).hexdigest()


def test_bad_reload_keeps_the_old_policy_in_force(tmp_path: Path) -> None:
    path = tmp_path / "p.cedar"
    path.write_text(ONLY_KEYS)
    holder = ReloadablePolicy(PolicyEngine.from_file(path))
    before = holder.current()

    path.write_text(ONLY_KEYS + "permit (principal, action, resource) when { };\n")
    with pytest.raises(ConfigError, match=r"p\.cedar, line 3"):
        holder.reload_from(path)
    assert holder.current() is before
    assert holder.current().decide(ask("bank", "RegisterKey", ("Registry", "keys"), {})).allowed

    with pytest.raises(ConfigError):
        holder.reload_from(tmp_path / "missing.cedar")
    assert holder.current() is before


def test_decisions_during_reloads_come_from_one_whole_policy(tmp_path: Path) -> None:
    first, second = tmp_path / "a.cedar", tmp_path / "b.cedar"
    first.write_text(ONLY_KEYS)
    second.write_text(ONLY_CONSENT)
    holder = ReloadablePolicy.from_file(first)
    keys = ask("bank", "RegisterKey", ("Registry", "keys"), {})
    consent = ask("bank", "ManageConsent", ("Registry", "consent"), {})
    seen: list[tuple[bool, bool]] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            engine = holder.current()
            seen.append((engine.decide(keys).allowed, engine.decide(consent).allowed))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(20):
        holder.reload_from(second if i % 2 == 0 else first)
    stop.set()
    thread.join()
    assert seen
    assert set(seen) <= {(True, False), (False, True)}


# --- remembered decisions -----------------------------------------------------------------------


def test_a_repeated_request_is_answered_from_memory_with_the_same_decision(
    central: PolicyEngine,
) -> None:
    first = central.decide(person("bank", "loan_underwriting", "valid"))
    again = central.decide(person("bank", "loan_underwriting", "valid"))
    assert again is first and first.allowed
    # any fact that differs is a different question
    assert not central.decide(person("bank", "loan_underwriting", "revoked")).allowed
    assert not central.decide(person("library", "loan_underwriting", "valid")).allowed
    assert central.decide(person("bank", "loan_underwriting", "valid")) is first


def test_a_long_and_a_bool_with_equal_python_values_are_different_questions(
    central: PolicyEngine,
) -> None:
    # 1 == True in Python; to Cedar they are a Long and a Bool, and the policy must see which
    as_long = ask("sync_job", "AcceptPartial", ("Dataset", "person"), {
        "purpose": "x", "shape": "total", "answered": 1, "expected": 1})  # fmt: skip
    as_bool = ask("sync_job", "AcceptPartial", ("Dataset", "person"), {
        "purpose": "x", "shape": "total", "answered": True, "expected": 1})  # fmt: skip
    assert central.decide(as_long).allowed
    assert not central.decide(as_bool).allowed


def test_the_decision_memory_is_bounded(central: PolicyEngine) -> None:
    from osmanthus.core.policy import DECISION_CACHE_ENTRIES

    for i in range(DECISION_CACHE_ENTRIES + 10):
        central.decide(ask("bank", "PersonQuery", ("Dataset", "person"), {
            "purpose": f"p{i}", "shape": "total", "consent": "valid"}))  # fmt: skip
    assert len(central._decisions) == DECISION_CACHE_ENTRIES
