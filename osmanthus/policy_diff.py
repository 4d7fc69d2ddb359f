"""What a policy change does: the requests an old and a new policy decide differently.

Cedar's analysis tools are not available from Python, so the requests are generated: every role,
every action of the policy model with its resources, and for each fact the values that matter
(every purpose, role, department and requester either policy names, plus one none of them
names, every consent state, both shapes, coverage at and around the 80 % line). Each request is
decided by both policies; those whose decision differs are reported with the deciding rules.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from osmanthus.policy import Decision, PolicyEngine, PolicyRequest
from osmanthus.policy_cases import ACTIONS, CONSENT_STATES, make_request
from osmanthus.types import Role

#: a purpose neither policy names: shows what a catch-all rule would let through
UNLISTED_PURPOSE = "unlisted_purpose"
SHAPES = ("breakdown", "total", "threshold")
#: THRESHOLD questions tried, besides every number a policy compares `threshold` with (±1)
THRESHOLDS = (1, 110, 200)
_NUMBER_COMPARED = re.compile(r"threshold\s*(?:==|!=|>=|<=|>|<)\s*(\d+)")
SUBJECT_KINDS = ("person", "enterprise")
#: (answered, expected): full, at and just below the default 80 % line, a small federation
COVERAGE = ((22, 22), (18, 22), (17, 22), (3, 4), (2, 4), (1, 1))
CHUNK_SIZES = (1, 10_000)
_RESOURCES = {
    "PersonQuery": (("Dataset", "person"), ("Dataset", "enterprise")),
    "EnterpriseQuery": (("Dataset", "enterprise"), ("Dataset", "person")),
    "AcceptPartial": (("Dataset", "person"), ("Dataset", "enterprise")),
    "BatchQuery": (("Dataset", "person"), ("Dataset", "enterprise")),
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


def requests(sources: Sequence[str]) -> Iterator[PolicyRequest]:
    """Every request of the generated matrix for policies with these texts."""
    purposes, requesters, departments = _vocabulary(sources)
    thresholds = _thresholds(sources)
    roles = [r.value for r in Role]
    for action, facts in sorted(ACTIONS.items()):
        resources = _RESOURCES.get(action) or tuple(("Department", d) for d in departments)
        domains: dict[str, Sequence[str | int]] = {
            "purpose": purposes,
            "shape": SHAPES,
            "consent": CONSENT_STATES,
            "subject_kind": SUBJECT_KINDS,
            "subjects": CHUNK_SIZES,
        }
        named = sorted(f for f in facts if f in domains)
        coverage = COVERAGE if {"answered", "expected"} <= facts else ((None, None),)
        for requester, role, resource in itertools.product(requesters, roles, resources):
            for values in itertools.product(*(domains[f] for f in named)):
                base: dict[str, str | int | bool] = dict(zip(named, values, strict=True))
                asked = (
                    thresholds if "threshold" in facts and base.get("shape") == "threshold"
                    else (None,)
                )  # fmt: skip
                for answered, expected in coverage:
                    for threshold in asked:
                        context = dict(base)
                        if answered is not None and expected is not None:
                            context["answered"], context["expected"] = answered, expected
                        if threshold is not None:
                            context["threshold"] = threshold
                        yield make_request(
                            requester=requester,
                            role=role,
                            action=action,
                            resource=resource,
                            context=context,
                        )


def diff(old: PolicyEngine, new: PolicyEngine) -> PolicyDiff:
    count = 0
    changes: list[Change] = []
    for request in requests([old.source, new.source]):
        count += 1
        before, after = old.decide(request), new.decide(request)
        if before.allowed != after.allowed:
            changes.append(Change(request, before, after))
        elif before.allowed:
            was, now = _obligations(old, before), _obligations(new, after)
            if was != now:
                changes.append(Change(request, before, after, (was, now)))
    return PolicyDiff(count, tuple(changes))


def _obligations(engine: PolicyEngine, decision: Decision) -> str:
    limits = ", ".join(f"{r.text} ({r.policy_id})" for r in engine.rate_limits(decision))
    return f"min {engine.min_departments(decision)} departments" + (
        f", rate limit {limits}" if limits else ", no rate limit"
    )


def describe(request: PolicyRequest) -> str:
    facts = ", ".join(f"{k}={v}" for k, v in sorted(request.context.items()))
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
