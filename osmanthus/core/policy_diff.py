"""What a policy change does: the requests an old and a new policy decide differently.

Cedar's analysis tools are not available from Python, so the requests are generated: every role,
every action of the policy model with its resources, and for each fact the values that matter
(every purpose, role, department and requester either policy names, plus one none of them
names, every consent state and shape, coverage at and around the 80 % line, and every threshold,
cohort size, ε and hour a policy compares with, one step either side). Each request is decided
by both policies; those whose decision differs are reported with the deciding rules. To take
seconds rather than minutes, `diff` decides most requests from what each rule's conditions make
of the few facts they read, and asks Cedar about whole requests only where the answers may differ.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from operator import itemgetter
from typing import Any, Final

import cedarpy

from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.policy import (
    AUDIT_LOG_METHODS,
    Decision,
    PolicyEngine,
    PolicyRequest,
    cedar_form,
    policy_order,
)
from osmanthus.core.policy_cases import ACTIONS, CONSENT_STATES, OPTIONAL_FACTS, make_request
from osmanthus.core.types import Role

#: a purpose neither policy names: shows what a catch-all rule would let through
UNLISTED_PURPOSE = "unlisted_purpose"
SHAPES = ("breakdown", "total", "threshold", "stats", "flags")
#: THRESHOLD questions tried, besides every number a policy compares `threshold` with (±1)
THRESHOLDS = (1, 110, 200)
_NUMBER_COMPARED = re.compile(r"threshold\s*(?:==|!=|>=|<=|>|<)\s*(\d+)")
#: STATS cohort sizes tried, besides every number a policy compares `cohort` with (±1)
COHORTS = (9, 10, 11, 1000)
_COHORT_COMPARED = re.compile(r"cohort\s*(?:==|!=|>=|<=|>|<)\s*(\d+)")
#: STATS ε tried, besides every decimal a policy names (± one unit of the 4th place)
EPSILONS = (Decimal("0.1"), Decimal("1"), Decimal("1.0001"), Decimal("10"))
_HOUR_COMPARED = re.compile(r"hour\s*(?:==|!=|>=|<=|>|<)\s*(\d+)")
#: a rule's action constraint (`action == Action::"X"` or `action in [...]`) and the names in it
_ACTION_SCOPE = re.compile(r"action\s*(?:==\s*Action::\"\w+\"|in\s*\[[^\]]*\])")
_ACTION_NAME = re.compile(r'Action::"(\w+)"')
_DECIMAL_NAMED = re.compile(r'decimal\(\s*"([0-9]+(?:\.[0-9]{1,4})?)"\s*\)')
_EPSILON_STEP = Decimal("0.0001")
SUBJECT_KINDS = ("person", "enterprise")
#: (answered, expected): full, at and just below the default 80 % line, a small federation
COVERAGE = ((22, 22), (18, 22), (17, 22), (3, 4), (2, 4), (1, 1))
CHUNK_SIZES = (1, 10_000)
_RESOURCES = {
    "PersonQuery": (("Dataset", "person"), ("Dataset", "enterprise")),
    "EnterpriseQuery": (("Dataset", "enterprise"), ("Dataset", "person")),
    "AcceptPartial": (("Dataset", "person"), ("Dataset", "enterprise")),
    "BatchQuery": (("Dataset", "person"), ("Dataset", "enterprise")),
    "StatsQuery": (("Dataset", "person"), ("Dataset", "enterprise")),
    "SearchLists": (("Dataset", "person"), ("Dataset", "enterprise")),
    "RegisterKey": (("Registry", "keys"),),
    "ManageConsent": (("Registry", "consent"),),
    "ReadAuditLog": (
        ("AuditLog", "coordinator.osmanthus/audit"),
        ("AuditLog", "tax.node.osmanthus/audit"),
    ),
}
_LITERAL = re.compile(r'"([a-z][a-z0-9_]{0,63})"')
_ENTITY = re.compile(r'(Requester|Department)::"([^"]+)"')
_DEFAULT_DEPARTMENT = "tax"
_COMMENT = re.compile(r"//[^\n]*")
Fact = str | int | bool | Decimal | tuple[str, ...]
#: one request of the matrix: (requester, role, action, resource, context)
_Case = tuple[str, str, str, tuple[str, str], dict[str, Fact]]


@dataclass(frozen=True)
class Change:
    request: PolicyRequest
    old: Decision
    new: Decision
    #: for a request both allow: what its obligations were and are (minimum, rate limits)
    obligations: tuple[str, str] | None = None

    @property
    def now_allowed(self) -> bool:
        return self.new.allowed


@dataclass(frozen=True)
class PolicyDiff:
    requests: int
    changes: tuple[Change, ...]

    @property
    def newly_allowed(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.obligations is None and c.new.allowed)

    @property
    def newly_denied(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if not c.new.allowed)

    @property
    def obligations_changed(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.obligations is not None)


def _vocabulary(sources: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """Purposes, requesters and departments worth trying, from what the policies name."""
    # comments name example entities ("<requester id>") that no rule uses
    sources = [_COMMENT.sub("", text) for text in sources]
    known = {r.value for r in Role} | set(SHAPES) | set(CONSENT_STATES) | set(SUBJECT_KINDS)
    literals = {m for text in sources for m in _LITERAL.findall(text)} - known
    purposes = sorted(literals | {UNLISTED_PURPOSE})
    requesters = sorted({"requester-1"} | {
        name for text in sources for kind, name in _ENTITY.findall(text) if kind == "Requester"
    })  # fmt: skip
    departments = sorted({_DEFAULT_DEPARTMENT} | {
        name for text in sources for kind, name in _ENTITY.findall(text) if kind == "Department"
    })  # fmt: skip
    return purposes, requesters, departments


def _thresholds(sources: Sequence[str]) -> list[int]:
    compared = {int(m) for text in sources for m in _NUMBER_COMPARED.findall(text)}
    near = {v + d for v in compared for d in (-1, 0, 1)}
    return sorted(v for v in set(THRESHOLDS) | near if v >= 0)


def _cohorts(sources: Sequence[str]) -> list[int]:
    compared = {int(m) for text in sources for m in _COHORT_COMPARED.findall(text)}
    near = {v + d for v in compared for d in (-1, 0, 1)}
    return sorted(v for v in set(COHORTS) | near if v >= 0)


def _hours(sources: Sequence[str]) -> tuple[list[int | None], frozenset[str] | None]:
    """The hours worth trying and the actions whose rules read the hour (None: every action).

    Services always supply the hour, so when a policy compares it each side of every boundary
    is tried (v − 1 and v); otherwise the fact is left out. Only the actions a rule about the
    hour names are varied, which keeps the matrix from growing by the hours for every action.
    """
    compared = {int(m) for text in sources for m in _HOUR_COMPARED.findall(text)}
    if not compared:
        return [None], frozenset()
    hours: list[int | None] = [*sorted({(v + d) % 24 for v in compared for d in (-1, 0)})]
    actions: set[str] = set()
    for text in sources:
        for statement in _COMMENT.sub("", text).split(";"):
            if not _HOUR_COMPARED.search(statement):
                continue
            scope = _ACTION_SCOPE.search(statement)
            if scope is None:
                return hours, None
            actions.update(_ACTION_NAME.findall(scope.group(0)))
    return hours, frozenset(actions)


def _measure_sets(sources: Sequence[str]) -> list[tuple[str, ...] | None]:
    """FLAGS measure sets worth trying: none, each default measure alone, and all of them, when
    a policy reads `context.measures`; else the fact is left out."""
    if not any("context.measures" in _COMMENT.sub("", text) for text in sources):
        return [None]
    names = [m.id for m in load_catalogue().measures]
    return [None, *((name,) for name in names), tuple(sorted(names))]


def _department_sets(sources: Sequence[str]) -> list[tuple[str, ...] | None]:
    """Department sets a query may name worth trying, when a policy reads
    `context.departments`: none, each department a policy names alone, and all of them
    together with one it does not name (which tells `== [...]` from `contains`); else the
    fact is left out."""
    texts = [_COMMENT.sub("", text) for text in sources]
    if not any("context.departments" in text for text in texts):
        return [None]
    ids = [d.id for d in load_catalogue().departments]
    named = sorted({m for text in texts for m in _LITERAL.findall(text)} & set(ids))
    unnamed = next(d for d in ids if d not in named)
    return [None, *((name,) for name in named), tuple(sorted([*named, unnamed]))]


def _epsilons(sources: Sequence[str]) -> list[Decimal]:
    named = {Decimal(m) for text in sources for m in _DECIMAL_NAMED.findall(text)}
    near = {v + d for v in named for d in (-_EPSILON_STEP, Decimal(0), _EPSILON_STEP)}
    return sorted(v for v in set(EPSILONS) | near if v > 0)


def _matrix(sources: Sequence[str]) -> Iterator[_Case]:
    """Every request of the generated matrix, as (requester, role, action, resource, context).

    Each context value is already in the form `make_request` gives it (a Decimal, a sorted
    tuple of names), and every fact has one type across the matrix, which the fast diff's keys
    rely on.
    """
    purposes, requesters, departments = _vocabulary(sources)
    thresholds = _thresholds(sources)
    cohorts = _cohorts(sources)
    hours, hour_actions = _hours(sources)
    measure_sets = _measure_sets(sources)
    department_sets = _department_sets(sources)
    roles = [r.value for r in Role]
    for action, facts in sorted(ACTIONS.items()):
        resources = _RESOURCES.get(action) or tuple(("Department", d) for d in departments)
        domains: dict[str, Sequence[str | int | Decimal]] = {
            "purpose": purposes,
            "shape": SHAPES,
            "consent": CONSENT_STATES,
            "subject_kind": SUBJECT_KINDS,
            "subjects": CHUNK_SIZES,
            "epsilon": _epsilons(sources),
            "method": AUDIT_LOG_METHODS,
        }
        if "cohort" not in OPTIONAL_FACTS[action]:
            domains["cohort"] = cohorts
        named = sorted(f for f in facts if f in domains)
        coverage = COVERAGE if {"answered", "expected"} <= facts else ((None, None),)
        for requester, role, resource in itertools.product(requesters, roles, resources):
            for values in itertools.product(*(domains[f] for f in named)):
                base: dict[str, Fact] = dict(zip(named, values, strict=True))
                asked = (
                    thresholds if "threshold" in facts and base.get("shape") == "threshold"
                    else (None,)
                )  # fmt: skip
                # an optional cohort (a node's Contribute) comes with STATS only
                sizes = (
                    cohorts if "cohort" in OPTIONAL_FACTS[action] and base.get("shape") == "stats"
                    else (None,)
                )  # fmt: skip
                varied = hour_actions is None or action in hour_actions
                # an optional measure set comes with FLAGS only
                flag_sets = (
                    measure_sets
                    if "measures" in OPTIONAL_FACTS[action] and base.get("shape") == "flags"
                    else (None,)
                )
                # a query names departments with any shape but FLAGS (the coordinator refuses it)
                named_sets = (
                    department_sets
                    if "departments" in OPTIONAL_FACTS[action] and base.get("shape") != "flags"
                    else (None,)
                )
                for answered, expected in coverage:
                    for threshold, size, hour, flag_set, asked_set in itertools.product(
                        asked, sizes, hours if varied else (None,), flag_sets, named_sets
                    ):
                        context = dict(base)
                        if answered is not None and expected is not None:
                            context["answered"], context["expected"] = answered, expected
                        if threshold is not None:
                            context["threshold"] = threshold
                        if size is not None:
                            context["cohort"] = size
                        if hour is not None:
                            context["hour"] = hour
                        if flag_set is not None:
                            context["measures"] = flag_set
                        if asked_set is not None:
                            context["departments"] = asked_set
                        yield requester, role, action, resource, context


def _request(case: _Case) -> PolicyRequest:
    requester, role, action, resource, context = case
    return make_request(
        requester=requester, role=role, action=action, resource=resource, context=context
    )


def requests(sources: Sequence[str]) -> Iterator[PolicyRequest]:
    """Every request of the generated matrix for policies with these texts."""
    return map(_request, _matrix(sources))


#: requests decided per batch: large enough that Cedar's per-call cost vanishes, small enough
#: that the matrix never sits in memory whole
_DIFF_BATCH = 4096


def diff(old: PolicyEngine, new: PolicyEngine) -> PolicyDiff:
    """The requests of the matrix that `old` and `new` decide differently.

    The same result as `diff_every_request`, some fifty times sooner. Cedar costs some 30 µs a
    request however simple the policy, and the matrix holds over a hundred thousand, so most are
    not put to Cedar whole: each rule is taken apart into the steps Cedar evaluates in turn (its
    scope, then each part of a `when {A && B}` or an `unless {A || B}`), and a step's outcome is
    remembered for the few facts that step reads. A request's rules then cost a few dictionary
    look-ups, and which rules it satisfies gives both decisions as Cedar would make them.
    Every request whose two decisions may differ, and every one on which some step fails to
    evaluate, is then decided whole by both engines, so the changes reported (and their
    reasons) are Cedar's own decisions.
    """
    try:
        rules = _Rules(old, new)
    except (ValueError, KeyError, TypeError):
        # a policy form the step analysis does not know: decide everything the slow way
        return diff_every_request(old, new)
    count = 0
    changes: list[Change] = []
    suspects: list[_Case] = []
    for case in _matrix([old.source, new.source]):
        count += 1
        if rules.may_differ(case):
            suspects.append(case)
            if len(suspects) == _DIFF_BATCH:
                changes += _changes(old, new, [_request(c) for c in suspects])
                suspects.clear()
    changes += _changes(old, new, [_request(c) for c in suspects])
    return PolicyDiff(count, tuple(changes))


def diff_every_request(old: PolicyEngine, new: PolicyEngine) -> PolicyDiff:
    """`diff` the slow way, every request of the matrix decided whole by both engines (in Cedar
    batches): what `diff` must always agree with, kept for tests and bench/policy_diff.py."""
    count = 0
    changes: list[Change] = []
    matrix = requests([old.source, new.source])
    while batch := list(itertools.islice(matrix, _DIFF_BATCH)):
        count += len(batch)
        changes += _changes(old, new, batch)
    return PolicyDiff(count, tuple(changes))


def _changes(old: PolicyEngine, new: PolicyEngine, batch: list[PolicyRequest]) -> list[Change]:
    changes: list[Change] = []
    decided = zip(batch, old.decide_many(batch), new.decide_many(batch), strict=True)
    for request, before, after in decided:
        if before.allowed != after.allowed:
            changes.append(Change(request, before, after))
        elif before.allowed:
            was = _obligations(old, before, request.action)
            now = _obligations(new, after, request.action)
            if was != now:
                changes.append(Change(request, before, after, (was, now)))
    return changes


# The outcome of one step of a rule on one request: it holds (Cedar goes on to the next step),
# it does not (the rule is not satisfied), or it fails to evaluate (Cedar skips the rule and
# reports an error, which an engine turns into a deny).
_HOLDS, _FAILS, _ERROR = 1, 0, -1
_ALL: Final[Mapping[str, str]] = {"op": "All"}
_SCOPE_PARTS: Final = ("principal", "action", "resource")


def _policy_set(policies: Mapping[str, Mapping[str, Any]]) -> cedarpy.PolicySet:
    """Cedar policies from their JSON form, through Cedar's own conversion."""
    document = {"staticPolicies": policies, "templates": {}, "templateLinks": []}
    return cedarpy.PolicySet.from_str(cedarpy.policies_from_json_str(json.dumps(document)))


def _reads(node: object, out: set[tuple[str, str | None]]) -> None:
    """What an expression (Cedar's JSON form) reads: (variable, attribute) for `v.attr` and
    `v has attr`, (variable, None) for a variable used whole, ("entity", None) for an entity
    literal (whose attributes come from the entity store). A misreading only adds reads, which
    costs speed, never correctness."""
    if isinstance(node, dict):
        for op in (".", "has"):
            inner = node.get(op)
            if isinstance(inner, dict):
                left = inner.get("left")
                if isinstance(left, dict) and isinstance(left.get("Var"), str) and len(left) == 1:
                    out.add((left["Var"], str(inner.get("attr"))))
                    return
        if isinstance(node.get("Var"), str):
            out.add((node["Var"], None))
        if "__entity" in node:
            out.add(("entity", None))
        for value in node.values():
            _reads(value, out)
    elif isinstance(node, list):
        for value in node:
            _reads(value, out)


def _parts(expression: Any, op: str) -> list[Any]:
    """`A op B op C` → [A, B, C], the order Cedar evaluates them in (left to right)."""
    if isinstance(expression, dict) and len(expression) == 1 and op in expression:
        return _parts(expression[op]["left"], op) + _parts(expression[op]["right"], op)
    return [expression]


class _Step:
    """One step of a rule: Cedar goes on to the next only when this one holds.

    `A && B` holds when A does and then B does; A false stops it without B being evaluated,
    and a non-Boolean or failing A is an error either way; so `when {A && B}` is the steps
    `when {A}`, `when {B}`, and likewise `unless {A || B}` is `unless {A}`, `unless {B}`.
    Each step is a policy of its own that Cedar evaluates, and its outcome is remembered by
    the values of the facts it reads.
    """

    def __init__(self, kind: str, body: Any) -> None:
        self.policies = _policy_set({
            "step": {"effect": "permit", "principal": _ALL, "action": _ALL, "resource": _ALL,
                     "conditions": [{"kind": kind, "body": body}]}
        })  # fmt: skip
        reads: set[tuple[str, str | None]] = set()
        _reads(body, reads)
        self.key = _key_function(reads)
        self.outcomes: dict[Hashable, int] = {}

    def evaluate(self, case: _Case) -> int:
        """This step's outcome on this request, from Cedar."""
        try:
            request, entities = cedar_form(_request(case))
            result = cedarpy.is_authorized(request, self.policies, entities)
        except Exception:  # whatever Cedar refuses is an error, which sends the request to Cedar
            return _ERROR
        if result.diagnostics.errors:
            return _ERROR
        return _HOLDS if result.decision is cedarpy.Decision.Allow else _FAILS


def _key_function(reads: set[tuple[str, str | None]]) -> Callable[[_Case], Hashable]:
    """What a step's outcome depends on, out of a request of the matrix.

    The entities are the principal (its id and its one attribute, the role) and the resource;
    they have no parents. Context values need no type in the key: every fact has one type in
    the matrix.
    """
    variables = {variable for variable, _ in reads}
    entity = "entity" in variables
    whole = {variable for variable, attr in reads if attr is None}
    fields = tuple(
        index
        for index, wanted in (
            (0, entity or "principal" in whole),  # the requester's id
            (1, entity or "principal" in variables),  # the role
            (2, "action" in variables),
            (3, entity or "resource" in variables),
        )
        if wanted
    )
    # the key is built for every step of every request: a plain itemgetter where one will do
    pick = itemgetter(*fields) if fields else None
    if "context" in whole:
        return lambda case: (pick and pick(case), tuple(sorted(case[4].items())))
    attrs = tuple(sorted(str(attr) for variable, attr in reads if variable == "context"))
    if not attrs:
        return pick or (lambda case: ())
    if pick is None:
        if len(attrs) == 1:
            (attr,) = attrs
            return lambda case: case[4].get(attr)
        return lambda case: tuple(map(case[4].get, attrs))
    return lambda case: (pick(case), *map(case[4].get, attrs))


class _Rule:
    """A rule's scope and conditions (its effect and annotations aside): one for every rule of
    either policy, shared when both have it, so that an unchanged rule is evaluated once."""

    def __init__(self, index: int, policy: Mapping[str, Any], steps: dict[str, _Step]) -> None:
        self.index = index
        self.steps: list[_Step] = []
        for condition in policy.get("conditions", ()):
            kind = condition["kind"]
            for part in _parts(condition["body"], "&&" if kind == "when" else "||"):
                text = json.dumps([kind, part], sort_keys=True)
                if text not in steps:  # the same step in several rules is evaluated once
                    steps[text] = _Step(kind, part)
                self.steps.append(steps[text])

    def outcome(self, case: _Case) -> int:
        """Whether the rule holds on this request, as Cedar would find: step by step, stopping
        at the first step that does not hold."""
        for step in self.steps:
            key = step.key(case)
            found = step.outcomes.get(key)
            if found is None:
                found = step.outcomes[key] = step.evaluate(case)
            if found != _HOLDS:
                return found
        return _HOLDS


@dataclass(frozen=True)
class _EngineRule:
    order: tuple[int, str]  # the rule's place in its file: an engine names rules in this order
    name: str  # its @id, else Cedar's positional id, as the engine names it
    forbid: bool
    rule: int  # index into _Rules.rules


class _Rules:
    """Every rule of two policies, taken apart into steps, and what the engines make of them."""

    def __init__(self, old: PolicyEngine, new: PolicyEngine) -> None:
        self._engines = (old, new)
        self.rules: list[_Rule] = []
        by_text: dict[str, int] = {}
        steps: dict[str, _Step] = {}
        scopes: dict[str, dict[str, Any]] = {}
        self._of: list[list[_EngineRule]] = []
        for engine in (old, new):
            est = json.loads(cedarpy.policies_to_json_str(engine.source))
            if est.get("templates") or est.get("templateLinks"):
                raise ValueError("templates")
            mine: list[_EngineRule] = []
            for internal, policy in est["staticPolicies"].items():
                body = {k: policy[k] for k in (*_SCOPE_PARTS, "conditions") if k in policy}
                text = json.dumps(body, sort_keys=True)
                if text not in by_text:
                    by_text[text] = len(self.rules)
                    self.rules.append(_Rule(len(self.rules), policy, steps))
                    scopes[f"r{by_text[text]}"] = {
                        "effect": "permit",
                        **{part: policy[part] for part in _SCOPE_PARTS},
                        "conditions": [],
                        "annotations": {"id": str(by_text[text])},
                    }
                name = (policy.get("annotations") or {}).get("id") or internal
                forbid = {"forbid": True, "permit": False}[policy["effect"]]
                mine.append(_EngineRule(policy_order(internal), name, forbid, by_text[text]))
            self._of.append(sorted(mine, key=lambda r: r.order))
        # every rule's scope alone, in one set: which rules apply to a principal, action and
        # resource is one Cedar call
        self._scope_set = _policy_set(scopes)
        self._in_scope: dict[tuple[str, str, tuple[str, str]], tuple[_Rule, ...] | None] = {}
        self._verdicts: dict[tuple[str, tuple[int, ...]], bool] = {}

    def may_differ(self, case: _Case) -> bool:
        """Whether the engines may decide this request differently (or, when some step fails
        to evaluate, whether it cannot be told without asking them)."""
        scope = (case[0], case[2], case[3])
        try:
            rules = self._in_scope[scope]
        except KeyError:
            rules = self._in_scope[scope] = self._scoped(case)
        if rules is None:
            return True
        satisfied = []
        for rule in rules:
            outcome = rule.outcome(case)
            if outcome == _ERROR:
                return True
            if outcome == _HOLDS:
                satisfied.append(rule.index)
        signature = (case[2], tuple(satisfied))
        verdict = self._verdicts.get(signature)
        if verdict is None:
            verdict = self._verdicts[signature] = self._differ(case[2], set(satisfied))
        return verdict

    def _scoped(self, case: _Case) -> tuple[_Rule, ...] | None:
        """The rules whose scope takes in this principal, action and resource; None when Cedar
        cannot say."""
        try:
            request, entities = cedar_form(_request(case))
            result = cedarpy.is_authorized(request, self._scope_set, entities)
        except Exception:  # the request then goes to Cedar whole, which says what is wrong
            return None
        if result.diagnostics.errors:
            return None
        named = result.diagnostics.id_annotations_by_reason
        return tuple(
            self.rules[i] for i in sorted(int(named[r]) for r in result.diagnostics.reasons)
        )

    def _differ(self, action: str, satisfied: set[int]) -> bool:
        """Whether two engines decide differently a request satisfying exactly these rules.

        As Cedar decides: a satisfied forbid denies, naming the satisfied forbids; else a
        satisfied permit allows, naming the satisfied permits; else nothing permits it."""
        decisions = []
        for rules in self._of:
            forbids = tuple(r.name for r in rules if r.forbid and r.rule in satisfied)
            permits = tuple(r.name for r in rules if not r.forbid and r.rule in satisfied)
            decisions.append(Decision(not forbids and bool(permits), forbids or permits, (), ""))
        before, after = decisions
        if before.allowed != after.allowed:
            return True
        if not before.allowed:
            return False
        old, new = self._engines
        return _obligations(old, before, action) != _obligations(new, after, action)


def _obligations(engine: PolicyEngine, decision: Decision, action: str) -> str:
    limits = ", ".join(f"{r.text} ({r.policy_id})" for r in engine.rate_limits(decision))
    text = f"min {engine.min_departments(decision)} departments" + (
        f", rate limit {limits}" if limits else ", no rate limit"
    )
    if action == "StatsQuery":
        budgets = ", ".join(f"{b.text} ({b.policy_id})" for b in engine.epsilon_budgets(decision))
        ceiling = engine.max_epsilon(decision)
        text += (
            f", min cohort {engine.min_cohort(decision)}"
            f", max ε per query {ceiling if ceiling is not None else 'none'}"
            f", ε budget {budgets or 'none'}"
        )
    return text


def describe(request: PolicyRequest) -> str:
    facts = ", ".join(
        f"{k}=[{', '.join(v)}]" if isinstance(v, tuple) else f"{k}={v}"
        for k, v in sorted(request.context.items())
    )
    role = request.principal_attrs.get("role")
    who = f"{role} {request.principal_id}" if request.principal_id != "requester-1" else role
    return f"{who} {request.action} {request.resource_type}::{request.resource_id}" + (
        f" ({facts})" if facts else ""
    )


def render(result: PolicyDiff, *, limit: int, old_name: str, new_name: str) -> str:
    lines = [
        f"{result.requests} requests decided by both {old_name} and {new_name}; "
        f"{len(result.newly_allowed)} newly allowed, {len(result.newly_denied)} newly denied, "
        f"{len(result.obligations_changed)} with changed obligations"
    ]
    for title, changes in (
        ("newly ALLOWED", result.newly_allowed),
        ("newly DENIED", result.newly_denied),
        ("allowed by both, OBLIGATIONS changed", result.obligations_changed),
    ):
        if not changes:
            continue
        lines.append(f"{title} ({len(changes)}):")
        for change in changes[:limit]:
            was = ", ".join(change.old.policy_ids) or "no rule"
            now = ", ".join(change.new.policy_ids) or "no rule"
            lines.append(f"  {describe(change.request)}")
            if change.obligations is not None:
                lines.append(f"      was {change.obligations[0]}; now {change.obligations[1]}")
                continue
            verdict = "allow" if change.old.allowed else "deny"
            lines.append(f"      was {verdict} by {was}; now by {now}")
        if len(changes) > limit:
            lines.append(f"  … and {len(changes) - limit} more (raise --limit to see them)")
    return "\n".join(lines)
