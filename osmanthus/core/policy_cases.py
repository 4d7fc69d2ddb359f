"""Policy test cases for privacy officers: read case files, run them against a policy, explain.

A case file is TOML: each `[[case]]` states one request and the decision the officer expects,

    [[case]]
    name = "a bank with the person's consent may underwrite a loan"
    requester = "bank-1"
    role = "bank"
    action = "PersonQuery"
    resource = "Dataset::person"
    context = { purpose = "loan_underwriting", shape = "breakdown", consent = "valid" }
    expect = "allow"
    by = ["central-loan-underwriting"]   # optional: exactly these rules decide
    min_departments = 3                  # optional: the sum's minimum under this permit
    rate_limits = ["600/hour"]           # optional: the @rate_limit of every allowing rule

so that a change to a policy is tested against what the office meant before it is published.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.policy import SCHEMA, Decision, PolicyEngine, PolicyRequest
from osmanthus.core.types import Role, Shape, SubjectKind

_CASE_KEYS = frozenset(
    {"name", "requester", "role", "action", "resource", "context", "expect", "by",
     "min_departments", "rate_limits"}
)  # fmt: skip
_REQUIRED_KEYS = ("name", "requester", "role", "action", "resource", "expect")
_RESOURCE = re.compile(r"([A-Z][A-Za-z]*)::\"?([^\"]+)\"?")
EXPECTATIONS = ("allow", "deny")
_ACTION_DECLARATION = re.compile(
    r"action ([\w, ]+?) appliesTo \{[^}]*?context: \{([^}]*)\}", re.DOTALL
)


def _actions() -> tuple[dict[str, frozenset[str]], dict[str, frozenset[str]], frozenset[str]]:
    """Each action of the model with every context fact it takes, the optional ones, and the
    facts of Cedar's decimal type."""
    every: dict[str, frozenset[str]] = {}
    optional: dict[str, frozenset[str]] = {}
    decimals: set[str] = set()
    for names, context in _ACTION_DECLARATION.findall(SCHEMA):
        found = re.findall(r"(\w+)(\??)\s*:\s*(\w+)", context)
        decimals.update(fact for fact, _, kind in found if kind == "decimal")
        for name in names.split(","):
            every[name.strip()] = frozenset(fact for fact, _, _ in found)
            optional[name.strip()] = frozenset(fact for fact, mark, _ in found if mark)
    return every, optional, frozenset(decimals)


#: action → every context fact it takes; OPTIONAL_FACTS: those a request may leave out;
#: DECIMAL_FACTS: facts written as numbers with up to 4 decimal places (context.epsilon)
ACTIONS, OPTIONAL_FACTS, DECIMAL_FACTS = _actions()
#: facts that are sets of names (context.measures): an array in a case file, a comma-separated
#: list on the command line
SET_FACTS: frozenset[str] = frozenset(
    fact
    for _, context in _ACTION_DECLARATION.findall(SCHEMA)
    for fact in re.findall(r"(\w+)\??\s*:\s*Set<", context)
)
#: the values of context.consent (coordinator.consent.ConsentState; a test keeps them equal)
CONSENT_STATES = (
    "valid",
    "missing",
    "revoked",
    "expired",
    "purpose_mismatch",
    "grantee_mismatch",
    "not_applicable",
)
#: resource types and their ids (None: any id, such as a department's)
_RESOURCE_IDS: dict[str, frozenset[str] | None] = {
    "Dataset": frozenset(k.value for k in SubjectKind),
    "Registry": frozenset({"keys", "consent"}),
    "Department": None,
    #: a transparency log by its origin, e.g. "tax.node.osmanthus/audit"
    "AuditLog": None,
}
_FACT_VALUES: dict[str, frozenset[str]] = {
    "shape": frozenset(s.value for s in Shape),
    "consent": frozenset(CONSENT_STATES),
    "subject_kind": frozenset(k.value for k in SubjectKind),
}


@dataclass(frozen=True)
class PolicyCase:
    name: str
    request: PolicyRequest
    expect: str
    #: the deciding rules' @id the officer expects, or None to accept any
    by: tuple[str, ...] | None
    min_departments: int | None
    #: the @rate_limit texts of the allowing rules the officer expects ("30/minute"), or None
    #: to accept any
    rate_limits: tuple[str, ...] | None
    #: where the case is written, for messages: "file, case 3"
    origin: str


@dataclass(frozen=True)
class CaseResult:
    case: PolicyCase
    decision: Decision
    #: what differs from the expectation; empty when the case passes
    problems: tuple[str, ...]
    min_departments: int | None

    @property
    def passed(self) -> bool:
        return not self.problems


def parse_resource(text: str, *, field: str = "resource") -> tuple[str, str]:
    """'Dataset::person' (or Dataset::"person") → ('Dataset', 'person')."""
    match = _RESOURCE.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument(
            f"{text!r} is not a resource; write Type::id, e.g. Dataset::person or Department::tax",
            field=field,
        )
    return match.group(1), match.group(2)


def parse_context_value(text: str) -> str | int | bool:
    """A command-line context value: whole numbers and true/false are typed, the rest is text."""
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def _decimal(fact: str, value: object) -> Decimal:
    """A decimal fact from a case file or the command line: 0.5, "0.5" or 1."""
    ok = isinstance(value, str | int | float | Decimal) and not isinstance(value, bool)
    text = str(value) if ok else ""
    try:
        number = Decimal(text)
    except InvalidOperation:
        number = Decimal("NaN")
    if not number.is_finite() or number != number.quantize(Decimal("0.0001")):
        raise InvalidArgument(
            f"{fact} {value!r} is not a number with at most 4 decimal places", field="context"
        )
    return number


def _name_set(fact: str, value: object) -> tuple[str, ...]:
    """A set fact: ["a", "b"] in a case file, or "a,b" from the command line."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) and i for i in items):
        raise InvalidArgument(
            f'{fact} {value!r} is not a list of names, e.g. ["bank_loan", "land_approval"]',
            field="context",
        )
    return tuple(sorted(set(items)))


def make_request(
    *,
    requester: str,
    role: str,
    action: str,
    resource: tuple[str, str],
    context: Mapping[str, str | int | bool | float | Decimal | list[str] | tuple[str, ...]],
) -> PolicyRequest:
    """A request in the policy model's terms; a typo in any name or known value is an error.

    A typo that made a request match no rule would otherwise pass every "deny" case.
    """
    roles = sorted(r.value for r in Role)
    if role not in roles:
        raise InvalidArgument(f"{role!r} is not a role; one of {', '.join(roles)}", field="role")
    if resource[0] not in _RESOURCE_IDS:
        raise InvalidArgument(
            f"{resource[0]!r} is not a resource type; one of {', '.join(sorted(_RESOURCE_IDS))}",
            field="resource",
        )
    known = _RESOURCE_IDS[resource[0]]
    if known is not None and resource[1] not in known:
        raise InvalidArgument(
            f"{resource[0]}::{resource[1]!r} does not exist; one of "
            + ", ".join(f"{resource[0]}::{i}" for i in sorted(known)),
            field="resource",
        )
    for fact, allowed in _FACT_VALUES.items():
        if fact in context and context[fact] not in allowed:
            raise InvalidArgument(
                f"{fact} {context[fact]!r} is not one of {', '.join(sorted(allowed))}",
                field="context",
            )
    facts = ACTIONS.get(action)
    if facts is None:
        raise InvalidArgument(
            f"{action!r} is not an action of the policy model; known: {', '.join(sorted(ACTIONS))}",
            field="action",
        )
    unknown = sorted(set(context) - facts)
    missing = sorted(facts - OPTIONAL_FACTS[action] - set(context))
    if unknown or missing:
        parts = [f"unknown {', '.join(unknown)}"] if unknown else []
        parts += [f"missing {', '.join(missing)}"] if missing else []
        takes = ", ".join(sorted(facts)) or "no facts"
        raise InvalidArgument(
            f"{action} takes {takes}; this request has {'; '.join(parts)}", field="context"
        )
    typed: dict[str, object] = {
        key: _decimal(key, value)
        if key in DECIMAL_FACTS
        else _name_set(key, value)
        if key in SET_FACTS
        else value
        for key, value in context.items()
    }
    return PolicyRequest(
        principal_type="Requester",
        principal_id=requester,
        principal_attrs={"role": role},
        action=action,
        resource_type=resource[0],
        resource_id=resource[1],
        context=typed,
    )


def load_cases(path: Path) -> list[PolicyCase]:
    """Read and check a case file; ConfigError names the file, the case and the key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: case file does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the case file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(raw) - {"case"})
    if unknown:
        raise ConfigError(f"{path}: unknown top-level key {unknown[0]!r}; write [[case]] tables")
    entries = raw.get("case")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{path}: no [[case]] tables")
    return [_case(path, i, entry) for i, entry in enumerate(entries, start=1)]


def _case(path: Path, index: int, entry: Any) -> PolicyCase:
    origin = f"{path}, case {index}"

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{origin}: {key}: {problem}", field=key)

    if not isinstance(entry, dict):
        raise ConfigError(f"{origin}: must be a table")
    unknown = sorted(set(entry) - _CASE_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(_CASE_KEYS))}")
    for key in _REQUIRED_KEYS:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise fail(key, "missing, or not a non-empty string")
    if entry["expect"] not in EXPECTATIONS:
        raise fail("expect", f"{entry['expect']!r} is not 'allow' or 'deny'")
    context = entry.get("context", {})
    if not isinstance(context, dict) or not all(
        isinstance(v, str | int | bool | float)
        or (isinstance(v, list) and all(isinstance(i, str) for i in v))
        for v in context.values()
    ):
        raise fail(
            "context", "must be an inline table of text, numbers, true/false and lists of names"
        )
    by = entry.get("by")
    if by is not None and (not isinstance(by, list) or not all(isinstance(b, str) for b in by)):
        raise fail("by", 'must be a list of rule ids, e.g. by = ["central-loan-underwriting"]')
    minimum = entry.get("min_departments")
    if minimum is not None and (not isinstance(minimum, int) or isinstance(minimum, bool)):
        raise fail("min_departments", "must be a whole number")
    limits = entry.get("rate_limits")
    if limits is not None and (
        not isinstance(limits, list) or not all(isinstance(v, str) for v in limits)
    ):
        raise fail("rate_limits", 'must be a list of limits, e.g. rate_limits = ["30/minute"]')
    try:
        resource = parse_resource(entry["resource"])
        request = make_request(
            requester=entry["requester"],
            role=entry["role"],
            action=entry["action"],
            resource=resource,
            context=context,
        )
    except InvalidArgument as exc:
        raise fail(exc.field or "case", exc.message) from None
    return PolicyCase(
        name=entry["name"],
        request=request,
        expect=entry["expect"],
        by=tuple(by) if by is not None else None,
        min_departments=minimum,
        rate_limits=tuple(limits) if limits is not None else None,
        origin=origin,
    )


def run_case(engine: PolicyEngine, case: PolicyCase) -> CaseResult:
    decision = engine.decide(case.request)
    got = "allow" if decision.allowed else "deny"
    problems: list[str] = []
    if got != case.expect:
        problems.append(f"expected {case.expect}, got {got} ({decision.reason})")
    if case.by is not None and set(case.by) != set(decision.policy_ids):
        problems.append(
            f"expected it decided by {', '.join(case.by) or 'no rule'}, decided by "
            f"{', '.join(decision.policy_ids) or 'no rule'}"
        )
    minimum = engine.min_departments(decision) if decision.allowed else None
    if case.min_departments is not None and minimum != case.min_departments:
        problems.append(f"expected a minimum of {case.min_departments} departments, got {minimum}")
    if case.rate_limits is not None:
        limits = sorted(limit.text for limit in engine.rate_limits(decision))
        if limits != sorted(case.rate_limits):
            problems.append(
                f"expected the rate limits {', '.join(sorted(case.rate_limits)) or 'none'}, "
                f"got {', '.join(limits) or 'none'}"
            )
    if decision.errors:
        problems.append("the policy could not be evaluated: " + "; ".join(decision.errors))
    return CaseResult(case, decision, tuple(problems), minimum)


def run_cases(engine: PolicyEngine, cases: Sequence[PolicyCase]) -> list[CaseResult]:
    return [run_case(engine, case) for case in cases]


def _shown(value: object) -> str:
    """A context value as a privacy officer writes it: 0.5, ['bank_loan'], 'text'."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, tuple):
        return repr(list(value))
    return repr(value)


def explain(engine: PolicyEngine, request: PolicyRequest) -> str:
    """The decision on one request, in words: verdict, deciding rules, reason, minimum."""
    decision = engine.decide(request)
    lines = [
        f"decision: {'ALLOW' if decision.allowed else 'DENY'}",
        f"  request: Requester::{request.principal_id!r} (role "
        f"{request.principal_attrs.get('role')!r}) {request.action} "
        f"{request.resource_type}::{request.resource_id!r}",
        "  context: "
        + (", ".join(f"{k}={_shown(v)}" for k, v in sorted(request.context.items())) or "(none)"),
        f"  decided by: {', '.join(decision.policy_ids) or 'no rule (nothing permits it)'}",
        f"  reason: {decision.reason}",
    ]
    if decision.allowed:
        if request.action == "StatsQuery":
            lines.append("  departments in a sum: every one (a statistic is never partial)")
        else:
            lines.append(f"  minimum departments in a sum: {engine.min_departments(decision)}")
        for limit in engine.rate_limits(decision):
            lines.append(f"  rate limit: {limit.text} per requester (rule {limit.policy_id})")
        if request.action == "StatsQuery":
            lines.append(f"  smallest cohort (k): {engine.min_cohort(decision)}")
            ceiling = engine.max_epsilon(decision)
            lines.append(f"  most ε per query: {ceiling if ceiling is not None else 'no limit'}")
            budgets = engine.epsilon_budgets(decision)
            for budget in budgets:
                lines.append(f"  ε budget: {budget.text} per requester (rule {budget.policy_id})")
            if not budgets:
                lines.append("  ε budget: none, so the query is refused (a permit must set one)")
    for error in decision.errors:
        lines.append(f"  error: {error}")
    lines.append(f"  policy: {engine.origin} (sha256 {engine.hash[:16]}…)")
    return "\n".join(lines)
