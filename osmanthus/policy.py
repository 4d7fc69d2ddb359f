"""Cedar policy engine: loads, validates and evaluates access policies, denying by default."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import types
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cedarpy

from osmanthus.errors import ConfigError

_log = logging.getLogger(__name__)

#: The entity model every Osmanthus policy is validated against (Cedar schema syntax).
#: policies/README.md explains it in words; a policy that names an unknown action, an attribute
#: the caller never supplies, or compares values of the wrong type is rejected at load time.
SCHEMA: Final[str] = """
entity Requester = { role: String };
entity Dataset, Registry, Department;

action PersonQuery, EnterpriseQuery appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, shape: String, consent: String, threshold?: Long }
};
action AcceptPartial appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, shape: String, answered: Long, expected: Long }
};
action RegisterKey, ManageConsent appliesTo {
  principal: [Requester],
  resource: [Registry],
  context: {}
};
action Contribute, DiscloseSingleSource appliesTo {
  principal: [Requester],
  resource: [Department],
  context: { purpose: String, shape: String, subject_kind: String }
};
action BatchQuery appliesTo {
  principal: [Requester],
  resource: [Dataset],
  context: { purpose: String, shape: String }
};
action ContributeBatch appliesTo {
  principal: [Requester],
  resource: [Department],
  context: { purpose: String, shape: String, subject_kind: String, subjects: Long }
};
"""

#: annotation a permit carries to demand a minimum number of departments in any sum it releases
MIN_DEPARTMENTS_ANNOTATION: Final = "min_departments"
#: annotation a permit carries to bound how often one requester may be granted by it
RATE_LIMIT_ANNOTATION: Final = "rate_limit"
_RATE = re.compile(r"([1-9][0-9]{0,8})/(second|minute|hour|day)")
_PERIOD_S: Final = {"second": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0}


@dataclass(frozen=True)
class RateLimit:
    """At most `count` grants per `period_s` seconds to one requester under rule `policy_id`."""

    policy_id: str
    count: int
    period_s: float
    text: str


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
_REASON_CONTEXT_KEYS: Final = ("shape", "consent", "subject_kind", "answered", "expected")
_INTERNAL_ID = re.compile(r"`(policy\d+)`")
#: recent decisions each policy engine remembers (a few hundred bytes each)
DECISION_CACHE_ENTRIES: Final = 4096


def _cache_key(request: PolicyRequest) -> tuple[object, ...] | None:
    """A hashable form of the request, or None when a value is not a plain scalar."""
    items = (*request.principal_attrs.items(), *request.context.items())
    if not all(isinstance(v, str | int | bool) for _, v in items):
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

    def __init__(self, *, source: str, origin: str) -> None:
        self.origin = origin
        self.source = source
        # a decision is a pure function of the request and this immutable policy set, and a
        # node asks the same few questions for every query: remember the recent answers
        self._decisions: OrderedDict[tuple[object, ...], Decision] = OrderedDict()
        self._decisions_lock = threading.Lock()
        self.hash: str = hashlib.sha256(source.encode("utf-8")).hexdigest()
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
        for internal_id, policy in sorted(static.items(), key=lambda item: _policy_order(item[0])):
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

    def _evaluate(self, request: PolicyRequest) -> Decision:
        principal = {"type": request.principal_type, "id": request.principal_id}
        resource = {"type": request.resource_type, "id": request.resource_id}
        cedar_request = {
            "principal": principal,
            "action": {"type": "Action", "id": request.action},
            "resource": resource,
            "context": dict(request.context),
        }
        entities = [
            {"uid": principal, "attrs": dict(request.principal_attrs), "parents": []},
            {"uid": resource, "attrs": {}, "parents": []},
        ]
        try:
            result = cedarpy.is_authorized(cedar_request, self._policies, entities)
        except Exception as exc:  # deny by default: whatever breaks evaluation is a deny
            return Decision(
                allowed=False,
                policy_ids=(),
                errors=(str(exc),),
                reason=f"denied: policy error: {exc}",
            )

        errors = tuple(self._rename(e) for e in result.diagnostics.errors)
        deciding = tuple(self._display.get(r, r) for r in result.diagnostics.reasons)
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


def _no_permit_reason(request: PolicyRequest) -> str:
    reason = f'denied: no policy permits Action::"{request.action}"'
    role = request.principal_attrs.get("role")
    purpose = request.context.get("purpose")
    if role is not None:
        reason += f" for role '{role}'"
    if purpose is not None:
        reason += f" {'and' if role is not None else 'for'} purpose '{purpose}'"
    details = [
        f"{key} {request.context[key]!r}" for key in _REASON_CONTEXT_KEYS if key in request.context
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


def _policy_order(internal_id: str) -> tuple[int, str]:
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
