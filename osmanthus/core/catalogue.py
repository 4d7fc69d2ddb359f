"""The department catalogue and score models, loaded and validated from TOML."""

from __future__ import annotations

import enum
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.types import DepartmentId, SubjectKind

_DEFAULTS = Path(__file__).resolve().parent / "defaults"

#: department ids double as node names, rule-file names and DuckDB file names
DEPARTMENT_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}\Z")
_CATEGORY_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,63}")
#: the name of the first BREAKDOWN slot; no bonus category may use it
DEDUCTIONS_SLOT = "deductions"


@dataclass(frozen=True)
class Department:
    id: DepartmentId
    name: str
    name_zh: str
    subject_kinds: frozenset[SubjectKind]

    def serves(self, kind: SubjectKind) -> bool:
        return kind in self.subject_kinds


@dataclass(frozen=True)
class BonusCategory:
    name: str
    label: str
    owner: DepartmentId
    cap: int


@dataclass(frozen=True)
class SubjectModel:
    kind: SubjectKind
    base: int
    floor: int
    ceiling: int
    categories: tuple[BonusCategory, ...]
    #: (letter, minimum score), highest minimum first; empty when the kind is not graded
    grades: tuple[tuple[str, int], ...]

    def slot_names(self) -> tuple[str, ...]:
        """Slot order of a BREAKDOWN plaintext: total deductions, then each bonus category."""
        return (DEDUCTIONS_SLOT, *(c.name for c in self.categories))

    def category(self, name: str) -> BonusCategory:
        for c in self.categories:
            if c.name == name:
                return c
        raise NotFound(
            f"no bonus category {name!r} for {self.kind.value}s; known: "
            + ", ".join(c.name for c in self.categories),
            field="category",
        )

    def categories_owned_by(self, department: str) -> tuple[BonusCategory, ...]:
        return tuple(c for c in self.categories if c.owner == department)

    @property
    def bonus_cap(self) -> int:
        """The largest possible total bonus B (sum of category caps)."""
        return sum(c.cap for c in self.categories)


@dataclass(frozen=True)
class Measure:
    """A joint-punishment measure ("bank loans restricted"): in force while a trigger is set."""

    id: str
    name: str
    name_zh: str


@dataclass(frozen=True)
class FlagType:
    """A flag one department sets on a subject while it holds a counting record whose rule
    names the flag (the rule files' `flag`); each measure in `measures` then applies."""

    id: str
    department: DepartmentId
    name: str
    name_zh: str
    measures: frozenset[str]


class ListColour(enum.Enum):
    """Red lists name the trustworthy (incentives), black lists the seriously dishonest."""

    RED = "red"
    BLACK = "black"


#: the longest publication window any list may have; the law gives most lists 1 to 5 years
MAX_LIST_WINDOW_DAYS = 5 * 366


@dataclass(frozen=True)
class ListType:
    """A red or black list that one department publishes by law, each entry for a window."""

    id: str
    department: DepartmentId
    colour: ListColour
    name: str
    name_zh: str
    subject_kinds: frozenset[SubjectKind]
    #: the default legal basis of an entry; an entry may name a more specific one
    legal_basis: str
    #: the longest publication window of one entry, in days
    max_window_days: int
    #: black lists: the department's flag that an entry sets while it is in public view
    flag: str | None = None
    #: red lists: the facilitation class an entry grants ("AA"), shown beside the grade
    facilitation_class: str | None = None


@dataclass(frozen=True)
class Catalogue:
    departments: tuple[Department, ...]
    models: Mapping[SubjectKind, SubjectModel]
    measures: tuple[Measure, ...] = ()
    flags: tuple[FlagType, ...] = ()
    lists: tuple[ListType, ...] = ()

    def lists_of(self, department: str) -> tuple[ListType, ...]:
        """The lists `department` publishes."""
        return tuple(t for t in self.lists if t.department == department)

    def list_departments(self, kind: SubjectKind) -> tuple[DepartmentId, ...]:
        """The departments serving `kind` that publish a list about `kind`s."""
        holders = {t.department for t in self.lists if kind in t.subject_kinds}
        return tuple(d.id for d in self.departments if d.id in holders and d.serves(kind))

    def measure(self, id: str) -> Measure:
        for m in self.measures:
            if m.id == id:
                return m
        raise NotFound(
            f"{id[:40]!r} is not a joint-punishment measure; known: "
            + ", ".join(m.id for m in self.measures),
            field="measures",
        )

    def flags_of(self, department: str) -> tuple[FlagType, ...]:
        """The flag types `department` sets."""
        return tuple(f for f in self.flags if f.department == department)

    def flag_departments(
        self, kind: SubjectKind, measures: Iterable[str]
    ) -> tuple[DepartmentId, ...]:
        """The departments serving `kind` that set a flag triggering any of `measures`."""
        wanted = set(measures)
        holders = {f.department for f in self.flags if f.measures & wanted}
        return tuple(d.id for d in self.departments if d.id in holders and d.serves(kind))

    def restricted_to(self, departments: Iterable[str]) -> Catalogue:
        """This catalogue with only `departments`, and only their flags."""
        keep = set(departments)
        return Catalogue(
            departments=tuple(d for d in self.departments if d.id in keep),
            models=self.models,
            measures=self.measures,
            flags=tuple(f for f in self.flags if f.department in keep),
            lists=tuple(t for t in self.lists if t.department in keep),
        )

    def department(self, id: str) -> Department:
        if not isinstance(id, str) or not DEPARTMENT_ID_PATTERN.fullmatch(id):
            raise InvalidArgument(
                f"{id!r} is not a department id (lower-case letters, digits and '_', "
                "starting with a letter, at most 32 characters)",
                field="department",
            )
        for d in self.departments:
            if d.id == id:
                return d
        raise NotFound(
            f"department {id!r} is not in the catalogue; known: "
            + ", ".join(d.id for d in self.departments),
            field="department",
        )

    def departments_for(self, kind: SubjectKind) -> tuple[Department, ...]:
        return tuple(d for d in self.departments if kind in d.subject_kinds)

    def model(self, kind: SubjectKind) -> SubjectModel:
        try:
            return self.models[kind]
        except KeyError:
            raise NotFound(f"no score model for {kind.value}s", field="subject_kind") from None


def default_catalogue_path() -> Path:
    return _DEFAULTS / "catalogue.toml"


def default_rules_dir() -> Path:
    """The directory holding the default `<department>.toml` rule files."""
    return _DEFAULTS / "rules"


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load and validate a catalogue file (default: the one shipped with Osmanthus)."""
    path = path if path is not None else default_catalogue_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: catalogue file does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read catalogue file: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _CatalogueParser(path).parse(raw)


class _CatalogueParser:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}", field=None)

    def check_keys(self, key: str, table: Mapping[str, Any], allowed: set[str]) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(
                f"{key}.{unknown[0]}" if key else unknown[0],
                f"unknown key; allowed keys here: {', '.join(sorted(allowed))}",
            )
        missing = sorted(allowed - set(table))
        if missing:
            raise self.fail(f"{key}.{missing[0]}" if key else missing[0], "missing")

    def text(self, key: str, value: object) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value

    def integer(self, key: str, value: object) -> int:
        # bool is an int subclass in Python but `true` is never a meaningful score
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(key, f"must be an integer, got {value!r}")
        return value

    def parse(self, raw: Mapping[str, Any]) -> Catalogue:
        self.check_keys(
            "",
            {k: v for k, v in raw.items() if k not in ("measure", "flag", "list")},
            {"department", "model"},
        )
        departments = self.departments(raw["department"])
        by_id: dict[str, Department] = {d.id: d for d in departments}
        models_raw = raw["model"]
        if not isinstance(models_raw, dict):
            raise self.fail("model", "must be a table with one sub-table per subject kind")
        self.check_keys("model", models_raw, {k.value for k in SubjectKind})
        models = {
            kind: self.model(f"model.{kind.value}", kind, models_raw[kind.value], by_id)
            for kind in SubjectKind
        }
        for d in departments:
            for kind in sorted(d.subject_kinds, key=lambda k: k.value):
                if kind not in models:
                    raise self.fail(f"department {d.id!r}", f"serves {kind.value}s: no model")
        measures = self.measures(raw.get("measure", []))
        flags = self.flags(raw.get("flag", []), by_id, {m.id for m in measures})
        lists = self.lists(raw.get("list", []), by_id, flags)
        return Catalogue(
            departments=tuple(departments),
            models=MappingProxyType(models),
            measures=measures,
            flags=flags,
            lists=lists,
        )

    def identifier(self, key: str, value: object, what: str) -> str:
        text = self.text(key, value)
        if not _CATEGORY_NAME_PATTERN.fullmatch(text):
            raise self.fail(key, f"{text!r} is not a {what} id (a lower-case identifier)")
        return text

    def measures(self, value: object) -> tuple[Measure, ...]:
        if not isinstance(value, list):
            raise self.fail("measure", "must be an array of [[measure]] tables")
        out: list[Measure] = []
        for i, entry in enumerate(value, start=1):
            key = f"measure[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(key, "must be a table")
            self.check_keys(key, entry, {"id", "name", "name_zh"})
            measure_id = self.identifier(f"{key}.id", entry["id"], "measure")
            if any(m.id == measure_id for m in out):
                raise self.fail(f"{key}.id", f"measure {measure_id!r} is listed twice")
            out.append(
                Measure(
                    id=measure_id,
                    name=self.text(f"{key}.name", entry["name"]),
                    name_zh=self.text(f"{key}.name_zh", entry["name_zh"]),
                )
            )
        return tuple(out)

    def flags(
        self, value: object, by_id: Mapping[str, Department], measures: set[str]
    ) -> tuple[FlagType, ...]:
        if not isinstance(value, list):
            raise self.fail("flag", "must be an array of [[flag]] tables")
        out: list[FlagType] = []
        for i, entry in enumerate(value, start=1):
            key = f"flag[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(key, "must be a table")
            self.check_keys(key, entry, {"id", "department", "name", "name_zh", "measures"})
            flag_id = self.identifier(f"{key}.id", entry["id"], "flag")
            if any(f.id == flag_id for f in out):
                raise self.fail(f"{key}.id", f"flag {flag_id!r} is listed twice")
            department = self.text(f"{key}.department", entry["department"])
            if department not in by_id:
                raise self.fail(
                    f"{key}.department", f"department {department!r} is not in the catalogue"
                )
            triggers = self.identifiers(f"{key}.measures", entry["measures"], "measure")
            unknown = sorted(triggers - measures)
            if unknown:
                raise self.fail(
                    f"{key}.measures",
                    f"{unknown[0]!r} is not a [[measure]] of this catalogue; known: "
                    + ", ".join(sorted(measures)),
                )
            out.append(
                FlagType(
                    id=flag_id,
                    department=DepartmentId(department),
                    name=self.text(f"{key}.name", entry["name"]),
                    name_zh=self.text(f"{key}.name_zh", entry["name_zh"]),
                    measures=triggers,
                )
            )
        return tuple(out)

    def lists(
        self, value: object, by_id: Mapping[str, Department], flags: tuple[FlagType, ...]
    ) -> tuple[ListType, ...]:
        if not isinstance(value, list):
            raise self.fail("list", "must be an array of [[list]] tables")
        required = {
            "id",
            "department",
            "colour",
            "name",
            "name_zh",
            "subject_kinds",
            "legal_basis",
            "max_window",
        }
        out: list[ListType] = []
        for i, entry in enumerate(value, start=1):
            key = f"list[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(key, "must be a table")
            optional = {k: entry[k] for k in ("flag", "facilitation_class") if k in entry}
            self.check_keys(key, {k: v for k, v in entry.items() if k not in optional}, required)
            list_id = self.identifier(f"{key}.id", entry["id"], "list")
            if any(t.id == list_id for t in out):
                raise self.fail(f"{key}.id", f"list {list_id!r} is listed twice")
            department = self.text(f"{key}.department", entry["department"])
            if department not in by_id:
                raise self.fail(
                    f"{key}.department", f"department {department!r} is not in the catalogue"
                )
            try:
                colour = ListColour(entry["colour"])
            except ValueError:
                raise self.fail(
                    f"{key}.colour", f"{entry['colour']!r} is not a colour; use 'red' or 'black'"
                ) from None
            kinds = self.subject_kinds(f"{key}.subject_kinds", entry["subject_kinds"])
            served = by_id[department].subject_kinds
            if not kinds <= served:
                extra = sorted(k.value for k in kinds - served)
                raise self.fail(f"{key}.subject_kinds", f"{department} does not serve {extra[0]}s")
            flag = facilitation = None
            if "flag" in optional:
                if colour is not ListColour.BLACK:
                    raise self.fail(f"{key}.flag", "only a black list sets a flag")
                flag = self.identifier(f"{key}.flag", optional["flag"], "flag")
                owner = next((f.department for f in flags if f.id == flag), None)
                if owner != department:
                    raise self.fail(
                        f"{key}.flag",
                        f"{flag!r} is not a [[flag]] of {department}; a list sets only its "
                        "own department's flags",
                    )
            if "facilitation_class" in optional:
                if colour is not ListColour.RED:
                    raise self.fail(
                        f"{key}.facilitation_class", "only a red list grants a facilitation class"
                    )
                facilitation = self.text(
                    f"{key}.facilitation_class", optional["facilitation_class"]
                )
            out.append(
                ListType(
                    id=list_id,
                    department=DepartmentId(department),
                    colour=colour,
                    name=self.text(f"{key}.name", entry["name"]),
                    name_zh=self.text(f"{key}.name_zh", entry["name_zh"]),
                    subject_kinds=kinds,
                    legal_basis=self.text(f"{key}.legal_basis", entry["legal_basis"]),
                    max_window_days=self.window(f"{key}.max_window", entry["max_window"]),
                    flag=flag,
                    facilitation_class=facilitation,
                )
            )
        return tuple(out)

    def window(self, key: str, value: object) -> int:
        text = self.text(key, value)
        match = re.fullmatch(r"([1-9][0-9]{0,3})([yd])", text)
        if match is None:
            raise self.fail(key, f"{text!r} is not a window; use 'Ny' (years) or 'Nd' (days)")
        days = int(match[1]) * (366 if match[2] == "y" else 1)
        if days > MAX_LIST_WINDOW_DAYS:
            raise self.fail(key, f"{text!r} is longer than 5 years")
        return days

    def subject_kinds(self, key: str, value: object) -> frozenset[SubjectKind]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty array")
        kinds: set[SubjectKind] = set()
        for k in value:
            try:
                kinds.add(SubjectKind(k))
            except ValueError:
                raise self.fail(
                    key,
                    f"{k!r} is not a subject kind; use "
                    + " or ".join(repr(s.value) for s in SubjectKind),
                ) from None
        return frozenset(kinds)

    def identifiers(self, key: str, value: object, what: str) -> frozenset[str]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, f"must be a non-empty array of {what} ids")
        items = [self.identifier(key, v, what) for v in value]
        if len(set(items)) != len(items):
            raise self.fail(key, f"a {what} is listed twice")
        return frozenset(items)

    def departments(self, value: object) -> list[Department]:
        if not isinstance(value, list) or not value:
            raise self.fail("department", "must be a non-empty array of [[department]] tables")
        out: list[Department] = []
        seen: set[str] = set()
        for i, entry in enumerate(value, start=1):
            key = f"department[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(key, "must be a table")
            self.check_keys(key, entry, {"id", "name", "name_zh", "subject_kinds"})
            dept_id = self.text(f"{key}.id", entry["id"])
            if not DEPARTMENT_ID_PATTERN.fullmatch(dept_id):
                raise self.fail(
                    f"{key}.id",
                    f"{dept_id!r} is not a valid department id (lower-case letters, digits and "
                    "'_', starting with a letter, at most 32 characters)",
                )
            if dept_id in seen:
                raise self.fail(f"{key}.id", f"department {dept_id!r} is listed twice")
            seen.add(dept_id)
            kinds = self.subject_kinds(f"{key}.subject_kinds", entry["subject_kinds"])
            out.append(
                Department(
                    id=DepartmentId(dept_id),
                    name=self.text(f"{key}.name", entry["name"]),
                    name_zh=self.text(f"{key}.name_zh", entry["name_zh"]),
                    subject_kinds=kinds,
                )
            )
        return out

    def model(
        self, key: str, kind: SubjectKind, value: object, by_id: Mapping[str, Department]
    ) -> SubjectModel:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        self.check_keys(key, value, {"base", "floor", "ceiling", "grades", "category"})
        base = self.integer(f"{key}.base", value["base"])
        floor = self.integer(f"{key}.floor", value["floor"])
        ceiling = self.integer(f"{key}.ceiling", value["ceiling"])
        if floor < 0:
            raise self.fail(f"{key}.floor", "must be >= 0 (scores are non-negative)")
        if not floor <= base <= ceiling:
            raise self.fail(f"{key}.base", f"{base} is not between floor {floor} and {ceiling}")
        categories = self.categories(f"{key}.category", kind, value["category"], by_id)
        total = sum(c.cap for c in categories)
        if total != ceiling - base:
            raise self.fail(
                f"{key}.category",
                f"caps sum to {total}; they must sum to ceiling - base = {ceiling - base} "
                "so that the largest bonus reaches the ceiling exactly",
            )
        grades = self.grades(f"{key}.grades", value["grades"], floor, ceiling)
        return SubjectModel(
            kind=kind,
            base=base,
            floor=floor,
            ceiling=ceiling,
            categories=categories,
            grades=grades,
        )

    def categories(
        self, key: str, kind: SubjectKind, value: object, by_id: Mapping[str, Department]
    ) -> tuple[BonusCategory, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty array of tables")
        out: list[BonusCategory] = []
        for i, entry in enumerate(value, start=1):
            ckey = f"{key}[{i}]"
            if not isinstance(entry, dict):
                raise self.fail(ckey, "must be a table")
            self.check_keys(ckey, entry, {"name", "label", "owner", "cap"})
            name = self.text(f"{ckey}.name", entry["name"])
            if not _CATEGORY_NAME_PATTERN.fullmatch(name) or name in {DEDUCTIONS_SLOT, "deduction"}:
                raise self.fail(
                    f"{ckey}.name",
                    f"{name!r} is not a usable category name (lower-case identifier, "
                    "not 'deduction' or 'deductions')",
                )
            if any(c.name == name for c in out):
                raise self.fail(f"{ckey}.name", f"category {name!r} is listed twice")
            owner = self.text(f"{ckey}.owner", entry["owner"])
            if owner not in by_id:
                raise self.fail(f"{ckey}.owner", f"department {owner!r} is not in the catalogue")
            if kind not in by_id[owner].subject_kinds:
                raise self.fail(
                    f"{ckey}.owner", f"department {owner!r} does not serve {kind.value}s"
                )
            cap = self.integer(f"{ckey}.cap", entry["cap"])
            if cap <= 0:
                raise self.fail(f"{ckey}.cap", f"must be positive, got {cap}")
            out.append(
                BonusCategory(
                    name=name,
                    label=self.text(f"{ckey}.label", entry["label"]),
                    owner=DepartmentId(owner),
                    cap=cap,
                )
            )
        return tuple(out)

    def grades(
        self, key: str, value: object, floor: int, ceiling: int
    ) -> tuple[tuple[str, int], ...]:
        if not isinstance(value, list):
            raise self.fail(key, "must be an array of [letter, minimum] pairs (may be empty)")
        out: list[tuple[str, int]] = []
        for i, entry in enumerate(value, start=1):
            gkey = f"{key}[{i}]"
            if not isinstance(entry, list) or len(entry) != 2:
                raise self.fail(gkey, "must be a [letter, minimum] pair")
            letter = self.text(gkey, entry[0])
            minimum = self.integer(gkey, entry[1])
            if any(letter == g for g, _ in out):
                raise self.fail(gkey, f"grade {letter!r} is listed twice")
            if not floor <= minimum <= ceiling:
                raise self.fail(gkey, f"minimum {minimum} is outside [{floor}, {ceiling}]")
            if out and minimum >= out[-1][1]:
                raise self.fail(gkey, "grades must be listed highest minimum first")
            out.append((letter, minimum))
        if out and out[-1][1] != floor:
            raise self.fail(
                key, f"the last grade's minimum must be the floor {floor} so every score has one"
            )
        return tuple(out)
