"""Department rules as data: load and validate a rule file, and compute a subject's contribution."""

from __future__ import annotations

import calendar
import hashlib
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from osmanthus.core.catalogue import (
    DEPARTMENT_ID_PATTERN,
    BonusCategory,
    Catalogue,
    default_rules_dir,
)
from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

#: no record kind may be worth more than the whole 0-200 score range: a larger value is a typo,
#: and keeping points small keeps every contribution far inside the encodable slot range
MAX_POINTS = 200
#: the `category` of a rule whose points are taken off the base
DEDUCTION = "deduction"
#: record statuses; only active records count (a disputed record waits for its resolution)
ACTIVE = "active"
DISPUTED = "disputed"
STATUSES = (ACTIVE, DISPUTED)

_KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_FLAG_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
_YEARS_PATTERN = re.compile(r"([1-9][0-9]?)y")
_DEFAULT_DEDUCTION_VALIDITY = "5y"
_DEFAULT_BONUS_VALIDITY = "3y"
_RULE_KEYS = {
    "kind",
    "subject_kind",
    "category",
    "points",
    "per_quantity",
    "kind_cap",
    "validity",
    "flag",
    "description",
}
_REQUIRED_RULE_KEYS = {"kind", "subject_kind", "category", "points", "description"}


@dataclass(frozen=True)
class Record:
    record_id: str
    subject_kind: SubjectKind
    subject_id: SubjectId
    kind: str
    quantity: int
    event_start: date
    event_end: date | None
    status: str


@dataclass(frozen=True)
class Contribution:
    """One department's plaintext part for one subject; all values are magnitudes >= 0."""

    deductions: int
    #: every category this department owns for the subject kind, 0 when nothing counts
    bonuses: Mapping[str, int]


def _add_years(d: date, years: int) -> date:
    # 29 February + N years lands on 28 February when the target year is not a leap year
    year = d.year + years
    day = min(d.day, calendar.monthrange(year, d.month)[1])
    return d.replace(year=year, day=day)


@dataclass(frozen=True)
class Validity:
    """How long a record counts.

    `years`: from event_start until N years after the event ended (event_end, or event_start when
    the event has no end date), exclusive of the anniversary. `while_listed`: from event_start
    while event_end is empty or still ahead. `permanent`: from event_start on.
    """

    mode: Literal["years", "while_listed", "permanent"]
    years: int = 0

    @classmethod
    def parse(cls, text: str) -> Validity:
        if text == "while_listed":
            return cls("while_listed")
        if text == "permanent":
            return cls("permanent")
        m = _YEARS_PATTERN.fullmatch(text)
        if m is None:
            raise ValueError(
                f"validity {text!r} is not understood; use 'Ny' (N years, 1-99), "
                "'while_listed' or 'permanent'"
            )
        return cls("years", int(m.group(1)))

    def __str__(self) -> str:
        return f"{self.years}y" if self.mode == "years" else self.mode

    def counts(self, event_start: date, event_end: date | None, as_of: date) -> bool:
        if as_of < event_start:
            return False
        if self.mode == "permanent":
            return True
        if self.mode == "while_listed":
            return event_end is None or event_end > as_of
        anchor = event_end if event_end is not None else event_start
        return as_of < _add_years(anchor, self.years)

    def last_day(self, event_start: date, event_end: date | None) -> date | None:
        """The last day `counts` is true for (the day before the window closes), or None when
        the window has no end yet (permanent, or while listed with no end date)."""
        if self.mode == "permanent":
            return None
        if self.mode == "while_listed":
            return event_end - timedelta(days=1) if event_end is not None else None
        anchor = event_end if event_end is not None else event_start
        return _add_years(anchor, self.years) - timedelta(days=1)


@dataclass(frozen=True)
class Rule:
    kind: str
    subject_kind: SubjectKind
    #: DEDUCTION, or the name of a bonus category the department owns for `subject_kind`
    category: str
    #: magnitude per `per_quantity` units; the category decides the sign
    points: int
    per_quantity: int
    #: largest magnitude this kind can reach for one subject; 0 means no cap
    kind_cap: int
    validity: Validity
    #: joint-punishment flag raised by a counting record, if any
    flag: str | None
    description: str

    @property
    def is_deduction(self) -> bool:
        return self.category == DEDUCTION

    def magnitude(self, quantity: int) -> int:
        """Points for `quantity` units summed over the counting records of this kind."""
        value = self.points * (quantity // self.per_quantity)
        return min(value, self.kind_cap) if self.kind_cap else value


@dataclass(frozen=True)
class RuleSet:
    department: DepartmentId
    version: str
    #: lower-case hex SHA-256 of the rule file's bytes (recorded in audit entries)
    digest: str
    rules: tuple[Rule, ...]
    #: bonus categories this department owns, per subject kind it serves
    categories: Mapping[SubjectKind, tuple[BonusCategory, ...]]

    def kinds(self, subject_kind: SubjectKind) -> frozenset[str]:
        return frozenset(r.kind for r in self.rules if r.subject_kind is subject_kind)

    def rule(self, subject_kind: SubjectKind, kind: str) -> Rule:
        for r in self.rules:
            if r.subject_kind is subject_kind and r.kind == kind:
                return r
        raise NotFound(
            f"department {self.department!r} has no rule for {subject_kind.value} record kind "
            f"{kind!r}",
            field="kind",
        )

    def owned_categories(self, subject_kind: SubjectKind) -> tuple[BonusCategory, ...]:
        return self.categories.get(subject_kind, ())

    def flags_set(
        self, subject_kind: SubjectKind, records: Iterable[Record], *, as_of: date
    ) -> frozenset[str]:
        """The joint-punishment flags one subject's records set on `as_of`: those named by the
        rules of its records that count (active, not disputed, inside the validity window)."""
        by_kind = {r.kind: r for r in self.rules if r.subject_kind is subject_kind}
        return frozenset(
            flag
            for kind in self._counting(subject_kind, records, as_of)
            if (flag := by_kind[kind].flag) is not None
        )

    def flag_ids(self) -> frozenset[str]:
        """Every flag some rule of this department sets."""
        return frozenset(r.flag for r in self.rules if r.flag is not None)

    def contribution(
        self, subject_kind: SubjectKind, records: Iterable[Record], *, as_of: date
    ) -> Contribution:
        """Sum what this department's records say about one subject, caps applied."""
        by_kind = {r.kind: r for r in self.rules if r.subject_kind is subject_kind}
        deductions = 0
        bonuses = {c.name: 0 for c in self.owned_categories(subject_kind)}
        for kind, quantity in self._counting(subject_kind, records, as_of).items():
            rule = by_kind[kind]
            value = rule.magnitude(quantity)
            if rule.is_deduction:
                deductions += value
            else:
                bonuses[rule.category] += value
        caps = {c.name: c.cap for c in self.owned_categories(subject_kind)}
        capped = {name: min(value, caps[name]) for name, value in bonuses.items()}
        return Contribution(deductions=deductions, bonuses=MappingProxyType(capped))

    def _counting(
        self, subject_kind: SubjectKind, records: Iterable[Record], as_of: date
    ) -> dict[str, int]:
        """Record kind → total quantity of the subject's records that count on `as_of`."""
        by_kind = {r.kind: r for r in self.rules if r.subject_kind is subject_kind}
        quantities: dict[str, int] = {}
        for rec in records:
            if rec.subject_kind is not subject_kind:
                raise InvalidArgument(
                    f"record {rec.record_id!r} has subject kind {rec.subject_kind.value!r}, but "
                    f"this contribution is for subject kind {subject_kind.value!r}",
                    field="subject_kind",
                )
            rule = by_kind.get(rec.kind)
            if rule is None:
                raise ConfigError(
                    f"department {self.department!r} rules {self.version} have no "
                    f"{subject_kind.value} rule for record kind {rec.kind!r} (record "
                    f"{rec.record_id!r}); the stored records and the rules disagree: restore the "
                    "rule or remove the records"
                )
            if rec.status != ACTIVE:
                continue
            if not rule.validity.counts(rec.event_start, rec.event_end, as_of):
                continue
            quantities[rec.kind] = quantities.get(rec.kind, 0) + rec.quantity
        return quantities


def load_default_rules(department: str, *, catalogue: Catalogue) -> RuleSet:
    """Load the rule file shipped with Osmanthus for `department`."""
    dept = catalogue.department(department)
    return load_rules(default_rules_dir() / f"{dept.id}.toml", catalogue=catalogue)


def load_rules_dir(directory: Path, *, catalogue: Catalogue) -> dict[str, RuleSet]:
    """Load `<department>.toml` from `directory` for every department of the catalogue."""
    out: dict[str, RuleSet] = {}
    for dept in catalogue.departments:
        out[dept.id] = load_rules(directory / f"{dept.id}.toml", catalogue=catalogue)
    return out


def load_rules(path: Path, *, catalogue: Catalogue) -> RuleSet:
    """Load and validate one department's rule file against the catalogue."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: rule file does not exist") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read rule file: {e}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: rule file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _RulesParser(path, catalogue).parse(raw, hashlib.sha256(data).hexdigest())


class _RulesParser:
    def __init__(self, path: Path, catalogue: Catalogue) -> None:
        self.path = path
        self.catalogue = catalogue

    def fail(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {problem}")

    def parse(self, raw: Mapping[str, Any], digest: str) -> RuleSet:
        unknown = sorted(set(raw) - {"department", "version", "rule"})
        if unknown:
            raise self.fail(
                f"unknown top-level key {unknown[0]!r}; allowed: department, version, [[rule]]"
            )
        dept_id = raw.get("department")
        if not isinstance(dept_id, str) or not DEPARTMENT_ID_PATTERN.fullmatch(dept_id):
            raise self.fail('department: must name a department id, e.g. department = "tax"')
        try:
            dept = self.catalogue.department(dept_id)
        except NotFound:
            raise self.fail(f"department: {dept_id!r} is not in the catalogue") from None
        if self.path.suffix == ".toml" and self.path.stem != dept.id:
            raise self.fail(
                f"department: the file says {dept.id!r} but is named {self.path.name!r}; "
                f"name it {dept.id}.toml"
            )
        version = raw.get("version")
        if not isinstance(version, str) or not version.strip():
            raise self.fail('version: missing; give the rules a version, e.g. version = "2026.1"')
        entries = raw.get("rule", [])
        if not isinstance(entries, list):
            raise self.fail("rule: must be an array of [[rule]] tables")
        categories = {
            kind: self.catalogue.model(kind).categories_owned_by(dept.id)
            for kind in sorted(dept.subject_kinds, key=lambda k: k.value)
        }
        rules: list[Rule] = []
        for i, entry in enumerate(entries, start=1):
            rule = self.rule(i, entry, dept.subject_kinds, categories)
            if any(r.kind == rule.kind and r.subject_kind is rule.subject_kind for r in rules):
                raise self.fail(
                    f"rule {i} (kind {rule.kind!r}): a {rule.subject_kind.value} rule for this "
                    "kind already exists; each kind has one rule per subject kind"
                )
            rules.append(rule)
        return RuleSet(
            department=dept.id,
            version=version,
            digest=digest,
            rules=tuple(rules),
            categories=MappingProxyType(categories),
        )

    def rule(
        self,
        index: int,
        entry: object,
        served: frozenset[SubjectKind],
        categories: Mapping[SubjectKind, tuple[BonusCategory, ...]],
    ) -> Rule:
        if not isinstance(entry, dict):
            raise self.fail(f"rule {index}: must be a table")
        kind_raw = entry.get("kind")
        label = (
            f"rule {index} (kind {kind_raw!r})" if isinstance(kind_raw, str) else f"rule {index}"
        )

        def fail(problem: str) -> ConfigError:
            return self.fail(f"{label}: {problem}")

        unknown = sorted(set(entry) - _RULE_KEYS)
        if unknown:
            raise fail(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_RULE_KEYS))}")
        missing = sorted(_REQUIRED_RULE_KEYS - set(entry))
        if missing:
            raise fail(f"missing key {missing[0]!r}")
        if not isinstance(kind_raw, str) or not _KIND_PATTERN.fullmatch(kind_raw):
            raise fail("kind: must be a lower-case identifier such as 'tax_arrears'")
        try:
            subject_kind = SubjectKind(entry["subject_kind"])
        except ValueError:
            raise fail(
                f"subject_kind: {entry['subject_kind']!r} is not 'person' or 'enterprise'"
            ) from None
        if subject_kind not in served:
            raise fail(
                f"subject_kind: the department does not serve {subject_kind.value}s "
                "(see the catalogue)"
            )
        category = entry["category"]
        owned = [c.name for c in categories.get(subject_kind, ())]
        if not isinstance(category, str) or (category != DEDUCTION and category not in owned):
            choices = ", ".join(repr(c) for c in [DEDUCTION, *owned])
            raise fail(
                f"category: {category!r} is not {DEDUCTION!r} or a bonus category this department "
                f"owns for {subject_kind.value}s; use one of {choices}"
            )
        points = self.non_negative(fail, "points", entry["points"])
        if points > MAX_POINTS:
            raise fail(
                f"points: {points} is more than the whole score range ({MAX_POINTS}); "
                "one record cannot be worth more"
            )
        per_quantity = self.non_negative(fail, "per_quantity", entry.get("per_quantity", 1))
        if per_quantity < 1:
            raise fail("per_quantity: must be at least 1")
        kind_cap = self.non_negative(fail, "kind_cap", entry.get("kind_cap", 0))
        default_validity = (
            _DEFAULT_DEDUCTION_VALIDITY if category == DEDUCTION else _DEFAULT_BONUS_VALIDITY
        )
        validity_raw = entry.get("validity", default_validity)
        if not isinstance(validity_raw, str):
            raise fail(f"validity: must be a string, got {validity_raw!r}")
        try:
            validity = Validity.parse(validity_raw)
        except ValueError as e:
            raise fail(str(e)) from None
        flag_raw = entry.get("flag", "")
        if not isinstance(flag_raw, str) or (flag_raw and not _FLAG_PATTERN.fullmatch(flag_raw)):
            raise fail(f"flag: {flag_raw!r} must be empty or a lower-case identifier")
        description = entry["description"]
        if not isinstance(description, str) or not description.strip():
            raise fail("description: must say in words what the rule does")
        return Rule(
            kind=kind_raw,
            subject_kind=subject_kind,
            category=category,
            points=points,
            per_quantity=per_quantity,
            kind_cap=kind_cap,
            validity=validity,
            flag=flag_raw or None,
            description=description.strip(),
        )

    @staticmethod
    def non_negative(fail: Callable[[str], ConfigError], key: str, value: object) -> int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail(f"{key}: must be a whole number, got {value!r}")
        if value < 0:
            raise fail(
                f"{key}: must be >= 0, got {value} (points are magnitudes; the category "
                "decides the sign)"
            )
        return value
