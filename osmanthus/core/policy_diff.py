"""What a policy change does: the requests an old and a new policy decide differently.

Cedar's analysis tools are not available from Python, so the requests are generated: every role,
every action of the policy model with its resources, and for each fact the values that matter
(every purpose, role, department and requester either policy names, plus one none of them
names, every consent state and shape, coverage at and around the 80 % line, and every threshold,
cohort size, ε and hour a policy compares with, one step either side). Each request is decided
by both policies; those whose decision differs are reported with the deciding rules.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.policy import Decision, PolicyEngine, PolicyRequest
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
}
_LITERAL = re.compile(r'"([a-z][a-z0-9_]{0,63})"')
_ENTITY = re.compile(r'(Requester|Department)::"([^"]+)"')
_DEFAULT_DEPARTMENT = "tax"
_COMMENT = re.compile(r"//[^\n]*")


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


def requests(sources: Sequence[str]) -> Iterator[PolicyRequest]:
    """Every request of the generated matrix for policies with these texts."""
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
        }
        if "cohort" not in OPTIONAL_FACTS[action]:
            domains["cohort"] = cohorts
        named = sorted(f for f in facts if f in domains)
        coverage = COVERAGE if {"answered", "expected"} <= facts else ((None, None),)
        for requester, role, resource in itertools.product(requesters, roles, resources):
            for values in itertools.product(*(domains[f] for f in named)):
                base: dict[str, str | int | bool | Decimal] = dict(zip(named, values, strict=True))
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
                        context: dict[str, str | int | bool | Decimal | tuple[str, ...]] = dict(
                            base
                        )
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
                        yield make_request(
                            requester=requester,
                            role=role,
                            action=action,
                            resource=resource,
                            context=context,
                        )


#: requests decided per batch: large enough that Cedar's per-call cost vanishes, small enough
#: that the matrix never sits in memory whole
_DIFF_BATCH = 4096


def diff(old: PolicyEngine, new: PolicyEngine) -> PolicyDiff:
    count = 0
    changes: list[Change] = []
    matrix = requests([old.source, new.source])
    while batch := list(itertools.islice(matrix, _DIFF_BATCH)):
        count += len(batch)
        decided = zip(batch, old.decide_many(batch), new.decide_many(batch), strict=True)
        for request, before, after in decided:
            if before.allowed != after.allowed:
                changes.append(Change(request, before, after))
            elif before.allowed:
                was = _obligations(old, before, request.action)
                now = _obligations(new, after, request.action)
                if was != now:
                    changes.append(Change(request, before, after, (was, now)))
    return PolicyDiff(count, tuple(changes))


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
