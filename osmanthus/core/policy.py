"""Cedar policy engine: loads, validates and evaluates access policies, denying by default."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
import threading
import types
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import cedarpy

from osmanthus.core.clock import CHINA_STANDARD_TIME
from osmanthus.core.errors import ConfigError

_log = logging.getLogger(__name__)

#: The entity model every Osmanthus policy is validated against (Cedar schema syntax).
#: policies/README.md explains it in words; a policy that names an unknown action, an attribute
#: the caller never supplies, or compares values of the wrong type is rejected at load time.
SCHEMA: Final[str] = """
entity Requester = { role: String };
entity Dataset, Registry, Department, AuditLog;

action PersonQuery, EnterpriseQuery appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: {
    purpose: String,
    shape: String,
    consent: String,
    threshold?: Long,
    measures?: Set<String>,
    departments?: Set<String>,
    hour?: Long
  }
};
action AcceptPartial appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, shape: String, answered: Long, expected: Long, hour?: Long }
};
action RegisterKey appliesTo {
  principal: [Requester],
  resource: [Registry],
  context: { hour?: Long }
};
action ManageConsent appliesTo {
  principal: [Requester],
  resource: [Registry],
  context: { operation?: String, subject_bound?: Bool, hour?: Long }
};
action Contribute, DiscloseSingleSource, ContributeWithoutConsent appliesTo {
  principal: [Requester],
  resource: [Department],
  context: {
    purpose: String,
    shape: String,
    subject_kind: String,
    cohort?: Long,
    measures?: Set<String>,
    hour?: Long
  }
};
action BatchQuery appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, shape: String, hour?: Long }
};
action ContributeBatch appliesTo {
  principal: [Requester],
  resource: [Department],
  context: { purpose: String, shape: String, subject_kind: String, subjects: Long, hour?: Long }
};
action StatsQuery appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, cohort: Long, epsilon: decimal, hour?: Long }
};
action SearchLists appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { hour?: Long }
};
action ReadListChanges appliesTo {
  principal: [Requester],
  resource: [Department],
  context: { hour?: Long }
};
action SubjectFile appliesTo {
  principal: [Requester],
  resource: [Dataset, Department],
  context: { purpose: String, subject_kind: String, hour?: Long }
};
action ReadAuditLog appliesTo {
  principal: [Requester],
  resource: [AuditLog],
  context: { method: String, hour?: Long }
};
action FileCase appliesTo {
  principal: [Requester],
  resource: [Department],
  context: { purpose: String, subject_kind: String, hour?: Long }
};
"""

#: the values of ReadAuditLog's `context.method`: the TransparencyService method called
#: (osmanthus.core.logserver.METHODS; a test keeps them equal)
AUDIT_LOG_METHODS: Final = (
    "GetCheckpoint",
    "GetInclusionProof",
    "GetConsistencyProof",
    "GetEntries",
    "AddCosignatures",
)

#: the time zone of the `hour` fact: the platform's, China Standard Time (UTC+8, no DST)
POLICY_TIME_ZONE: Final = CHINA_STANDARD_TIME


def time_facts(now: datetime | None = None) -> dict[str, int]:
    """The facts about when a request is made that every service adds: `hour`, 0–23, in
    China Standard Time. Case files and `policy explain` leave them out unless written."""
    moment = (now or datetime.now(UTC)).astimezone(POLICY_TIME_ZONE)
    return {"hour": moment.hour}


#: annotation a permit carries to demand a minimum number of departments in any sum it releases
MIN_DEPARTMENTS_ANNOTATION: Final = "min_departments"
#: annotation a permit carries to bound how often one requester may be granted by it
RATE_LIMIT_ANNOTATION: Final = "rate_limit"
_RATE = re.compile(r"([1-9][0-9]{0,8})/(second|minute|hour|day)")
#: STATS: the fewest distinct subjects a cohort may hold (k)
MIN_COHORT_ANNOTATION: Final = "min_cohort"
#: STATS: the most ε one query may spend
MAX_EPSILON_ANNOTATION: Final = "max_epsilon"
#: STATS: the most ε one requester may spend in any rolling period, e.g. "10/day"
EPSILON_BUDGET_ANNOTATION: Final = "epsilon_budget"
_BUDGET = re.compile(r"([0-9]{1,6}(?:\.[0-9]{1,4})?)/(second|minute|hour|day|week|month|year)")
#: ARCHITECTURE.md: a STATS cohort holds at least k ≥ 10 subjects; a policy may only raise it
DEFAULT_MIN_COHORT: Final = 10
_PERIOD_S: Final = {
    "second": 1.0,
    "minute": 60.0,
    "hour": 3600.0,
    "day": 86400.0,
    "week": 7 * 86400.0,
    "month": 30 * 86400.0,
    "year": 365 * 86400.0,
}
#: STATS: privacy loss adds up without end, so the allowing rules must bound it over a year
LONG_HORIZON_S: Final = _PERIOD_S["year"]


@dataclass(frozen=True)
class RateLimit:
    """At most `count` grants per `period_s` seconds to one requester under rule `policy_id`."""

    policy_id: str
    count: int
    period_s: float
    text: str


@dataclass(frozen=True)
class EpsilonBudget:
    """At most `epsilon` spent by one requester in any `period_s` seconds (rule `policy_id`)."""

    policy_id: str
    epsilon: Decimal
    period_s: float
    text: str


def parse_budget(text: str) -> tuple[Decimal, float] | None:
    """'10/day' → (Decimal('10'), 86400.0); None when the text is not a positive budget."""
    match = _BUDGET.fullmatch(text.strip())
    if match is None or Decimal(match.group(1)) <= 0:
        return None
    return Decimal(match.group(1)), _PERIOD_S[match.group(2)]


def parse_budgets(text: str) -> list[tuple[Decimal, float, str]] | None:
    """'5/day, 50/year' → one (ε, period, text) per part; None when any part is not a budget."""
    out = []
    for part in text.split(","):
        parsed = parse_budget(part)
        if parsed is None:
            return None
        out.append((parsed[0], parsed[1], part.strip()))
    return out


def parse_rate(text: str) -> tuple[int, float] | None:
    """'60/minute' → (60, 60.0); None when the text is not a rate."""
    match = _RATE.fullmatch(text.strip())
    if match is None:
        return None
    return int(match.group(1)), _PERIOD_S[match.group(2)]


#: ARCHITECTURE.md: the coordinator refuses sums of fewer departments than this unless told more
DEFAULT_MIN_DEPARTMENTS: Final = 3
#: a sum of one department is that department's contribution, governed by the node's
#: DiscloseSingleSource policy, so a central policy may not lower the minimum below two
_LOWEST_MIN_DEPARTMENTS: Final = 2

# context keys worth naming in a denial, in the order a reader expects them
_REASON_CONTEXT_KEYS: Final = (
    "shape",
    "threshold",
    "consent",
    "subject_kind",
    "cohort",
    "epsilon",
    "answered",
    "expected",
)
_INTERNAL_ID = re.compile(r"`(policy\d+)`")
#: recent decisions each policy engine remembers (a few hundred bytes each)
DECISION_CACHE_ENTRIES: Final = 4096


def _cache_key(request: PolicyRequest) -> tuple[object, ...] | None:
    """A hashable form of the request, or None when a value is not a plain scalar."""
    items = (*request.principal_attrs.items(), *request.context.items())
    if not all(
        isinstance(v, str | int | bool | Decimal)
        or (isinstance(v, tuple) and all(isinstance(x, str) for x in v))
        for _, v in items
    ):
        return None
    # a signalling NaN cannot even be hashed; no non-finite value is worth remembering
    if any(isinstance(v, Decimal) and not v.is_finite() for _, v in items):
        return None
    return (
        request.principal_type,
        request.principal_id,
        # the type is part of the key: Cedar tells the Long 1 from the Bool true
        tuple(sorted((k, type(v).__name__, v) for k, v in request.principal_attrs.items())),
        request.action,
        request.resource_type,
        request.resource_id,
        tuple(sorted((k, type(v).__name__, v) for k, v in request.context.items())),
    )


@dataclass(frozen=True)
class PolicyRequest:
    """One authorisation question: may this principal perform this action on this resource?

    `action` is the bare action id ("PersonQuery"), `principal_attrs` the principal's attributes
    (at least `role`), `context` the per-request facts listed in policies/README.md.
    """

    principal_type: str
    principal_id: str
    principal_attrs: Mapping[str, Any]
    action: str
    resource_type: str
    resource_id: str
    context: Mapping[str, Any]


@dataclass(frozen=True)
class Decision:
    """The outcome of one request; `reason` is a sentence fit for an audit log."""

    allowed: bool
    #: the deciding policies, by their @id annotation when present
    policy_ids: tuple[str, ...]
    errors: tuple[str, ...]
    reason: str


@dataclass(frozen=True)
class _Statement:
    """One policy's text as cut from the source; the lines its text and its content start on."""

    text: str
    start_line: int
    first_line: int


class PolicyEngine:
    """An immutable, validated Cedar policy set with its version hash."""

    def __init__(self, *, source: str, origin: str, version: str | None = None) -> None:
        """`version` names the policy in audit entries instead of its source's SHA-256 (a signed
        bundle's hash, so that an entry names the bundle the decision was made under)."""
        self.origin = origin
        self.source = source
        # a decision is a pure function of the request and this immutable policy set, and a
        # node asks the same few questions for every query: remember the recent answers
        self._decisions: OrderedDict[tuple[object, ...], Decision] = OrderedDict()
        self._decisions_lock = threading.Lock()
        self.hash: str = version or hashlib.sha256(source.encode("utf-8")).hexdigest()
        _check_nesting(source, origin=origin)
        statements = _split_statements(source)
        try:
            self._policies = cedarpy.PolicySet.from_str(source)
        except ValueError as exc:
            line = _locate_parse_error(statements)
            raise ConfigError(f"{origin}, line {line}: cannot parse the policy: {exc}") from exc

        est = json.loads(cedarpy.policies_to_json_str(source))
        if est.get("templates"):
            raise ConfigError(
                f"{origin}: policy templates (?principal, ?resource) are not supported; "
                "write each policy out in full"
            )
        static: dict[str, Any] = est.get("staticPolicies", {})
        self._display: dict[str, str] = {}
        annotations: dict[str, Mapping[str, str]] = {}
        # in source order: the JSON form need not keep it ("policy10" may sort before "policy2")
        for internal_id, policy in sorted(static.items(), key=lambda item: policy_order(item[0])):
            notes: dict[str, str] = dict(policy.get("annotations") or {})
            display = notes.get("id") or internal_id
            line = _line_of(statements, _policy_index(internal_id))
            if display in annotations:
                raise ConfigError(
                    f"{origin}, line {line}: policy id '{display}' is used twice; "
                    "every @id must be unique so that decisions name one policy"
                )
            _check_min_departments(notes, origin=origin, line=line, policy=display)
            rate = notes.get(RATE_LIMIT_ANNOTATION)
            if rate is not None and parse_rate(rate) is None:
                raise ConfigError(
                    f"{origin}, line {line}: policy '{display}' has @{RATE_LIMIT_ANNOTATION}"
                    f'("{rate}"); write a count per period, e.g. @{RATE_LIMIT_ANNOTATION}'
                    '("60/minute") (second, minute, hour or day)'
                )
            _check_stats_obligations(notes, origin=origin, line=line, policy=display)
            self._display[internal_id] = display
            annotations[display] = types.MappingProxyType(notes)
        self._annotations = types.MappingProxyType(annotations)

        validation = cedarpy.validate_policies(source, SCHEMA)
        if not validation.validation_passed:
            problems = []
            for error in validation.errors:
                position = _policy_index(error.policy_id)
                where = (
                    f"line {_line_of(statements, position)}" if position is not None else "policy"
                )
                problems.append(f"{where}: {self._rename(error.error)}")
            raise ConfigError(
                f"{origin}: the policy does not fit the Osmanthus entity model "
                f"(see policies/README.md): {'; '.join(problems)}"
            )

    @classmethod
    def from_file(cls, path: Path) -> PolicyEngine:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the policy file: {exc.strerror}") from exc
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: the policy file is not UTF-8 text (bad byte at offset {exc.start})"
            ) from exc
        return cls(source=source, origin=str(path))

    def annotations(self) -> Mapping[str, Mapping[str, str]]:
        """Policy id (its @id, else Cedar's positional id) to that policy's annotations."""
        return self._annotations

    def min_departments(self, decision: Decision) -> int:
        """The fewest departments a sum released under `decision` may hold.

        The strictest @min_departments among the permits that allowed the request, or
        DEFAULT_MIN_DEPARTMENTS when none sets one. Pass a decision made by this same engine.
        """
        values = [
            int(notes[MIN_DEPARTMENTS_ANNOTATION])
            for pid in decision.policy_ids
            if (notes := self._annotations.get(pid)) is not None
            and MIN_DEPARTMENTS_ANNOTATION in notes
        ]
        return max(values, default=DEFAULT_MIN_DEPARTMENTS)

    def rate_limits(self, decision: Decision) -> tuple[RateLimit, ...]:
        """The @rate_limit of every rule that allowed `decision`: each must have room."""
        out = []
        for pid in decision.policy_ids if decision.allowed else ():
            text = (self._annotations.get(pid) or {}).get(RATE_LIMIT_ANNOTATION)
            parsed = parse_rate(text) if text is not None else None
            if parsed is not None and text is not None:
                out.append(RateLimit(pid, parsed[0], parsed[1], text))
        return tuple(out)

    def min_cohort(self, decision: Decision) -> int:
        """k for a STATS query: the largest @min_cohort of the allowing rules, else the default."""
        values = [
            int(text)
            for pid in decision.policy_ids
            if (text := (self._annotations.get(pid) or {}).get(MIN_COHORT_ANNOTATION)) is not None
        ]
        return max(values, default=DEFAULT_MIN_COHORT)

    def max_epsilon(self, decision: Decision) -> Decimal | None:
        """The smallest @max_epsilon of the allowing rules; None when no rule sets one."""
        values = [
            Decimal(text)
            for pid in decision.policy_ids
            if (text := (self._annotations.get(pid) or {}).get(MAX_EPSILON_ANNOTATION)) is not None
        ]
        return min(values, default=None)

    def epsilon_budgets(self, decision: Decision) -> tuple[EpsilonBudget, ...]:
        """The @epsilon_budget of every rule that allowed `decision`: each must have room."""
        out = []
        for pid in decision.policy_ids if decision.allowed else ():
            text = (self._annotations.get(pid) or {}).get(EPSILON_BUDGET_ANNOTATION)
            for epsilon, period_s, part in (parse_budgets(text) or []) if text else []:
                out.append(EpsilonBudget(pid, epsilon, period_s, part))
        return tuple(out)

    def decide(self, request: PolicyRequest) -> Decision:
        key = _cache_key(request)
        if key is not None:
            with self._decisions_lock:
                cached = self._decisions.get(key)
                if cached is not None:
                    self._decisions.move_to_end(key)
                    return cached
        decision = self._evaluate(request)
        if key is not None:
            with self._decisions_lock:
                self._decisions[key] = decision
                if len(self._decisions) > DECISION_CACHE_ENTRIES:
                    self._decisions.popitem(last=False)
        return decision

    def decide_many(self, requests: Sequence[PolicyRequest]) -> list[Decision]:
        """Decisions for many requests, in order, as `decide` would make them one by one.

        Requests about the same principal and resource in a row are evaluated in one Cedar
        batch, which parses their entities once: `policy diff` decides a hundred thousand
        requests this way several times faster. The decision cache is neither read nor filled.
        """
        decisions: list[Decision] = []
        for _, group in itertools.groupby(requests, key=_entity_key):
            batch = list(group)
            principal, resource, entities = _entities(batch[0])
            try:
                results = cedarpy.is_authorized_batch(
                    [_cedar_request(r, principal, resource) for r in batch],
                    self._policies,
                    entities,
                )
            except Exception:  # one bad request must not sink the others: decide each alone
                decisions.extend(self._evaluate(r) for r in batch)
                continue
            decisions.extend(self._decision(r, res) for r, res in zip(batch, results, strict=True))
        return decisions

    def _evaluate(self, request: PolicyRequest) -> Decision:
        principal, resource, entities = _entities(request)
        try:
            result = cedarpy.is_authorized(
                _cedar_request(request, principal, resource), self._policies, entities
            )
        except Exception as exc:  # deny by default: whatever breaks evaluation is a deny
            return Decision(
                allowed=False,
                policy_ids=(),
                errors=(str(exc),),
                reason=f"denied: policy error: {exc}",
            )
        return self._decision(request, result)

    def _decision(self, request: PolicyRequest, result: cedarpy.AuthzResult) -> Decision:
        errors = tuple(self._rename(e) for e in result.diagnostics.errors)
        # cedarpy returns the deciding rules as a set: name them in file order, so that reasons,
        # audit entries and `policy explain` read the same on every run
        deciding = tuple(
            self._display.get(r, r) for r in sorted(result.diagnostics.reasons, key=policy_order)
        )
        if errors:
            # Fail closed: a policy that could not be evaluated might have been a forbid.
            failed = tuple(
                dict.fromkeys(
                    self._display.get(m, m)
                    for e in result.diagnostics.errors
                    for m in _INTERNAL_ID.findall(e)
                )
            )
            return Decision(
                allowed=False,
                policy_ids=failed,
                errors=errors,
                reason=f"denied: policy error: {'; '.join(errors)}",
            )
        if result.decision is cedarpy.Decision.Allow:
            return Decision(
                allowed=True,
                policy_ids=deciding,
                errors=(),
                reason=f"permitted by {', '.join(deciding)}",
            )
        if deciding:
            return Decision(
                allowed=False,
                policy_ids=deciding,
                errors=(),
                reason=f"denied: forbidden by {', '.join(deciding)}",
            )
        return Decision(allowed=False, policy_ids=(), errors=(), reason=_no_permit_reason(request))

    def _rename(self, message: str) -> str:
        """Replace Cedar's positional policy ids in a message with the policies' @id."""
        return _INTERNAL_ID.sub(lambda m: f"'{self._display.get(m.group(1), m.group(1))}'", message)


def _entity_key(request: PolicyRequest) -> tuple[object, ...]:
    """What a request's entities depend on: requests sharing it can share one Cedar batch."""
    return (
        request.principal_type,
        request.principal_id,
        repr(sorted(request.principal_attrs.items())),
        request.resource_type,
        request.resource_id,
    )


def _entities(
    request: PolicyRequest,
) -> tuple[dict[str, str], dict[str, str], list[dict[str, Any]]]:
    principal = {"type": request.principal_type, "id": request.principal_id}
    resource = {"type": request.resource_type, "id": request.resource_id}
    entities = [
        {"uid": principal, "attrs": dict(request.principal_attrs), "parents": []},
        {"uid": resource, "attrs": {}, "parents": []},
    ]
    return principal, resource, entities


def cedar_form(request: PolicyRequest) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The request and its entities exactly as an engine hands them to Cedar.

    For evaluating a request against policy sets other than an engine's own: `policy diff`
    decides one rule's conditions at a time and must ask Cedar the very same question.
    """
    principal, resource, entities = _entities(request)
    return _cedar_request(request, principal, resource), entities


def _cedar_request(
    request: PolicyRequest, principal: dict[str, str], resource: dict[str, str]
) -> dict[str, Any]:
    return {
        "principal": principal,
        "action": {"type": "Action", "id": request.action},
        "resource": resource,
        "context": {k: _cedar_value(v) for k, v in request.context.items()},
    }


class ReloadablePolicy:
    """Thread-safe holder of the policy in force; a failed reload leaves the old one in force."""

    def __init__(self, engine: PolicyEngine) -> None:
        self._lock = threading.Lock()
        self._engine = engine

    @classmethod
    def from_file(cls, path: Path) -> ReloadablePolicy:
        return cls(PolicyEngine.from_file(path))

    def current(self) -> PolicyEngine:
        with self._lock:
            return self._engine

    def reload_from(self, path: Path) -> PolicyEngine:
        """Load `path` and put it in force; raises ConfigError and keeps the old policy if bad."""
        engine = PolicyEngine.from_file(path)
        with self._lock:
            previous, self._engine = self._engine, engine
        _log.info("policy %s now in force (hash %s, was %s)", path, engine.hash, previous.hash)
        return engine

    def install(self, engine: PolicyEngine) -> PolicyEngine:
        """Put an already validated policy in force (a verified bundle's); returns the old one."""
        with self._lock:
            previous, self._engine = self._engine, engine
        return previous


def _cedar_value(value: Any) -> Any:
    """A context value in Cedar's JSON form: a Decimal becomes Cedar's decimal extension type,
    a tuple a Cedar set."""
    if isinstance(value, tuple | list | frozenset):
        return sorted(value)
    if isinstance(value, Decimal):
        return {"__extn": {"fn": "decimal", "arg": _cedar_decimal_text(value)}}
    return value


def _cedar_decimal_text(value: Decimal) -> str:
    """Cedar's text for a Decimal: a point and four places, so that 1 and 1.0000 read alike.

    Equal Decimals share one remembered decision, so they must reach Cedar as one text; a value
    Cedar cannot hold (0.50001, 1E+30, NaN) keeps its own text, which Cedar refuses: a deny.
    """
    try:
        exact = value.quantize(Decimal("0.0001"))
        if exact == value:
            return format(exact, "f")
    except InvalidOperation:
        pass
    return format(value, "f")


def _no_permit_reason(request: PolicyRequest) -> str:
    reason = f'denied: no policy permits Action::"{request.action}"'
    role = request.principal_attrs.get("role")
    purpose = request.context.get("purpose")
    if role is not None:
        reason += f" for role '{role}'"
    if purpose is not None:
        reason += f" {'and' if role is not None else 'for'} purpose '{purpose}'"
    details = [
        f"{key} {value if isinstance(value, Decimal) else repr(value)}"
        for key in _REASON_CONTEXT_KEYS
        if (value := request.context.get(key)) is not None
    ]
    if details:
        reason += f" ({', '.join(details)})"
    return reason


def _check_min_departments(
    notes: Mapping[str, str], *, origin: str, line: int, policy: str
) -> None:
    value = notes.get(MIN_DEPARTMENTS_ANNOTATION)
    if value is None:
        return
    if not value.isdecimal() or int(value) < _LOWEST_MIN_DEPARTMENTS:
        raise ConfigError(
            f"{origin}, line {line}: policy '{policy}' has @{MIN_DEPARTMENTS_ANNOTATION}"
            f'("{value}"); it must be a whole number of at least {_LOWEST_MIN_DEPARTMENTS}'
        )


def _check_stats_obligations(
    notes: Mapping[str, str], *, origin: str, line: int, policy: str
) -> None:
    cohort = notes.get(MIN_COHORT_ANNOTATION)
    if cohort is not None and (not cohort.isdecimal() or int(cohort) < DEFAULT_MIN_COHORT):
        raise ConfigError(
            f"{origin}, line {line}: policy '{policy}' has @{MIN_COHORT_ANNOTATION}"
            f'("{cohort}"); it must be a whole number of at least {DEFAULT_MIN_COHORT}: a '
            "smaller cohort lets noise hide too few people"
        )
    ceiling = notes.get(MAX_EPSILON_ANNOTATION)
    if ceiling is not None:
        try:
            value = Decimal(ceiling)
            # quantize raises for a value too large to hold four places (1e30)
            good = value.is_finite() and value > 0 and value == value.quantize(Decimal("0.0001"))
        except InvalidOperation:
            good = False
        if not good:
            raise ConfigError(
                f"{origin}, line {line}: policy '{policy}' has @{MAX_EPSILON_ANNOTATION}"
                f'("{ceiling}"); write a positive number with at most 4 decimal places, '
                f'e.g. @{MAX_EPSILON_ANNOTATION}("1.0")'
            )
    budget = notes.get(EPSILON_BUDGET_ANNOTATION)
    if budget is not None and parse_budgets(budget) is None:
        raise ConfigError(
            f"{origin}, line {line}: policy '{policy}' has @{EPSILON_BUDGET_ANNOTATION}"
            f'("{budget}"); write positive ε per period, e.g. @{EPSILON_BUDGET_ANNOTATION}'
            '("5/day, 50/year") (second, minute, hour, day, week, month or year; up to 4 '
            "decimal places; several budgets separated by commas)"
        )


#: deepest bracket nesting a policy may use: cedarpy's recursive parser overflows the native
#: stack (a crash of the whole process, not an error) somewhere past a thousand levels
MAX_NESTING: Final = 64


def _check_nesting(source: str, *, origin: str) -> None:
    """Refuse absurdly deep brackets before cedarpy sees them (outside strings and comments)."""
    depth, line = 0, 1
    in_string = in_comment = escaped = False
    for pos, char in enumerate(source):
        if char == "\n":
            line += 1
            in_comment = False
        elif in_comment:
            continue
        elif in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "/" and source.startswith("//", pos):
            in_comment = True
        elif char in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise ConfigError(
                    f"{origin}, line {line}: brackets nested more than {MAX_NESTING} deep; "
                    "split the condition into simpler ones"
                )
        elif char in ")]}":
            depth = max(depth - 1, 0)


def _split_statements(source: str) -> list[_Statement]:
    """Cut the source at every `;` outside strings and comments (Cedar has only // comments)."""
    statements: list[_Statement] = []
    start, start_line, line, first_line = 0, 1, 1, 0
    in_string = in_comment = escaped = False
    for pos, char in enumerate(source):
        if char == "\n":
            line += 1
            in_comment = False
            continue
        if in_comment:
            continue
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            continue
        if char == "/" and source.startswith("//", pos):
            in_comment = True
            continue
        if not char.isspace() and first_line == 0:
            first_line = line
        if char == '"':
            in_string = True
        elif char == ";":
            statements.append(_Statement(source[start : pos + 1], start_line, first_line))
            start, start_line, first_line = pos + 1, line, 0
    if first_line:
        statements.append(_Statement(source[start:], start_line, first_line))
    return statements


def _line_of(statements: list[_Statement], index: int | None) -> int:
    if index is None or not statements:
        return 1
    return statements[min(index, len(statements) - 1)].first_line


def _policy_index(internal_id: str) -> int | None:
    match = re.fullmatch(r"policy(\d+)", internal_id)
    return int(match.group(1)) if match else None


def policy_order(internal_id: str) -> tuple[int, str]:
    """Where a rule stands in its file, from Cedar's internal id ("policy3"): rules are named in
    this order wherever several decide a request."""
    index = _policy_index(internal_id)
    return (index if index is not None else -1, internal_id)


def _parse_error(text: str) -> str | None:
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        return str(exc)
    return None


def _locate_parse_error(statements: list[_Statement]) -> int:
    """The line of a Cedar parse error; cedarpy reports the problem but not where it is."""
    for statement in statements:
        error = _parse_error(statement.text)
        if error is None:
            continue
        last_line = statement.start_line + statement.text.rstrip().count("\n")
        if "end of input" in error:
            return last_line
        # Truncating can only remove tokens, so the shortest prefix that already fails with the
        # same message ends on the line holding the offending token.
        for offset, char in enumerate(statement.text):
            if char == "\n" and _parse_error(statement.text[:offset]) == error:
                return statement.start_line + statement.text[:offset].count("\n")
        return last_line
    return statements[-1].first_line if statements else 1
