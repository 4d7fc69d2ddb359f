"""Deterministic synthetic records for every department node, shaped like the source's libraries."""

from __future__ import annotations

import csv
import datetime
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, TypeVar

from node.store import RecordStore
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import FailedPrecondition, InvalidArgument
from osmanthus.core.ids import (
    SUZHOU_DISTRICTS,
    make_resident_id,
    make_uscc,
    organisation_code_check_char,
)
from osmanthus.core.rules import ACTIVE, DISPUTED, Record
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

_T = TypeVar("_T")

DEFAULT_SEED = 20261126
SUBJECTS_FILE = "subjects.csv"

# How the dates of a record are drawn:
#   instant  a one-off event with no duration (a donation, a day of volunteering): no end date
#   once     a one-off offence: closed by a decision within two months
#   listing  a list entry (defaulter, abnormal operation): often still listed (no end date)
#   arrears  a debt, usually settled within a year; unsettled ones have no end date
#   title    a qualification or honour: no end date
#   yearly   a rating for a calendar year (A-level taxpayer, green credit), past years only
#   certified a certification that stays until withdrawn
Shape = Literal["instant", "once", "listing", "arrears", "title", "yearly", "certified"]


@dataclass(frozen=True)
class _Kind:
    department: str
    kind: str
    shape: Shape
    #: inclusive range of the quantity of one record
    quantity: tuple[int, int] = (1, 1)
    #: inclusive range of how many records one subject gets when it gets this kind
    count: tuple[int, int] = (1, 1)


@dataclass(frozen=True)
class _Minority:
    """A good record held by a minority: each subject gets one of `kinds` with `probability`."""

    probability: float
    kinds: tuple[tuple[_Kind, int], ...]  # (kind, relative weight)


@dataclass(frozen=True)
class _Profile:
    minorities: tuple[_Minority, ...]
    #: fraction of subjects with at least one negative record
    negative_rate: float
    negatives: tuple[tuple[_Kind, int], ...]  # (kind, relative weight)
    #: how many distinct negative kinds a negative subject has, weighted
    negative_kinds: tuple[tuple[int, int], ...]


def _k(
    dept: str,
    kind: str,
    shape: Shape,
    *,
    quantity: tuple[int, int] = (1, 1),
    count: tuple[int, int] = (1, 1),
) -> _Kind:
    return _Kind(department=dept, kind=kind, shape=shape, quantity=quantity, count=count)


# Fractions follow the brief for the demo: about 4 % of people carry a negative record; blood
# donors 8 %, volunteers 10 %, honours 3 %, qualifications 15 %.
_PERSON = _Profile(
    minorities=(
        _Minority(0.08, ((_k("blood", "blood_donation", "instant", count=(1, 6)), 1),)),
        _Minority(
            0.10,
            ((_k("volunteer", "volunteer_hours", "instant", quantity=(2, 60), count=(1, 8)), 1),),
        ),
        _Minority(
            0.03,
            (
                (_k("civility", "district_honour", "title"), 14),
                (_k("civility", "city_honour", "title"), 5),
                (_k("civility", "provincial_or_national_honour", "title"), 1),
            ),
        ),
        _Minority(
            0.15,
            (
                (_k("hrss", "vocational_certificate", "title", count=(1, 2)), 12),
                (_k("hrss", "intermediate_title", "title"), 6),
                (_k("hrss", "senior_title", "title"), 2),
            ),
        ),
    ),
    negative_rate=0.04,
    negatives=(
        (_k("transport", "fare_evasion", "once", count=(1, 4)), 20),
        (_k("psb", "public_order_penalty", "once", count=(1, 3)), 14),
        (_k("urban", "urban_management_penalty", "once", count=(1, 4)), 14),
        (_k("psb", "drunk_driving", "once"), 8),
        (_k("court", "judgement_defaulter", "listing"), 8),
        (_k("tax", "tax_arrears", "arrears"), 8),
        (_k("culture", "uncivilised_tourist", "once"), 5),
        (_k("housing", "rental_market_violation", "once"), 4),
        (_k("transport", "illegal_taxi_operation", "once"), 4),
        (_k("eco", "environmental_penalty", "once"), 3),
        (_k("hpf", "provident_fund_loan_default", "arrears"), 3),
        (_k("edu", "exam_cheating", "once"), 2),
        (_k("medins", "medical_insurance_fraud", "once"), 2),
        (_k("civil", "subsistence_allowance_fraud", "once"), 2),
        (_k("hrss", "social_insurance_fraud", "once"), 1),
        (_k("justice", "practitioner_misconduct", "once"), 1),
        (_k("samr", "serious_dishonest_list", "once"), 1),
        (_k("safety", "work_safety_violation", "once"), 1),
        (_k("stats", "statistical_fraud", "once"), 1),
        (_k("commerce", "prepaid_card_fraud", "once"), 1),
        (_k("land", "illegal_land_use", "once"), 1),
        (_k("tax", "major_tax_violation", "once"), 1),
        (_k("psb", "fraud_conviction", "once"), 1),
    ),
    negative_kinds=((1, 75), (2, 20), (3, 5)),
)

_ENTERPRISE = _Profile(
    minorities=(
        _Minority(0.12, ((_k("tax", "a_level_taxpayer", "yearly", count=(1, 5)), 1),)),
        _Minority(
            0.06,
            (
                (_k("customs", "advanced_certified_enterprise", "certified"), 1),
                (_k("customs", "general_certified_enterprise", "certified"), 2),
            ),
        ),
        _Minority(0.08, ((_k("eco", "green_environmental_credit", "yearly", count=(1, 4)), 1),)),
        _Minority(
            0.06,
            (
                (_k("samr", "contract_honouring_enterprise", "title"), 8),
                (_k("samr", "city_quality_award", "title"), 3),
                (_k("samr", "provincial_quality_award", "title"), 1),
            ),
        ),
    ),
    negative_rate=0.12,
    negatives=(
        # the abnormal operation list (missed annual report, unreachable address) is the most
        # common enterprise listing by far
        (_k("samr", "abnormal_operation_list", "listing"), 45),
        (_k("tax", "tax_arrears", "arrears"), 10),
        (_k("hrss", "social_insurance_arrears", "arrears"), 8),
        (_k("transport", "road_transport_violation", "once", count=(1, 5)), 8),
        (_k("fire", "fire_safety_violation", "once", count=(1, 3)), 8),
        (_k("eco", "environmental_penalty", "once", count=(1, 3)), 6),
        (_k("hpf", "provident_fund_contribution_arrears", "arrears"), 6),
        (_k("court", "judgement_defaulter", "listing"), 6),
        (_k("hrss", "wage_arrears", "arrears"), 4),
        (_k("housing", "construction_market_violation", "once", count=(1, 2)), 4),
        (_k("safety", "major_hazard", "listing"), 4),
        (_k("safety", "work_safety_accident", "once"), 2),
        (_k("nmpa", "drug_quality_violation", "once"), 2),
        (_k("medins", "medical_insurance_fraud", "once"), 2),
        (_k("commerce", "prepaid_card_fraud", "once"), 2),
        (_k("stats", "statistical_fraud", "once"), 2),
        (_k("land", "illegal_land_use", "once"), 2),
        (_k("trading", "bid_rigging", "once"), 2),
        (_k("tax", "major_tax_violation", "once"), 1),
        (_k("samr", "serious_dishonest_list", "listing"), 1),
        (_k("eco", "environmental_dishonest", "once"), 1),
        (_k("customs", "customs_dishonest_enterprise", "listing"), 1),
    ),
    negative_kinds=((1, 70), (2, 22), (3, 8)),
)

# Edge personas: the first subjects of each kind also get these records, dated recently so they
# count, so that every seeded data set exercises kind caps, category caps and both clamps.
# (department, kind, quantity, count, still listed); one tuple list per persona.
_Edge = tuple[tuple[str, str, int, int, bool], ...]
_EDGE_PERSONAS: Mapping[SubjectKind, tuple[_Edge, ...]] = MappingProxyType(
    {
        SubjectKind.PERSON: (
            # kind cap (public-order penalties 5 each, capped at 15) and category cap (blood 25)
            (
                ("psb", "public_order_penalty", 1, 5, False),
                ("blood", "blood_donation", 1, 7, False),
            ),
            # deductions beyond the base: the score clamps at 0
            (
                ("court", "judgement_defaulter", 1, 1, True),
                ("psb", "fraud_conviction", 1, 1, False),
                ("tax", "major_tax_violation", 1, 1, False),
                ("psb", "drunk_driving", 1, 1, False),
            ),
            # every bonus category over its cap: B = 100, the score reaches the ceiling 200
            (
                ("hrss", "senior_title", 1, 1, False),
                ("hrss", "intermediate_title", 1, 1, False),
                ("civility", "provincial_or_national_honour", 1, 1, False),
                ("civility", "city_honour", 1, 1, False),
                ("blood", "blood_donation", 1, 6, False),
                ("volunteer", "volunteer_hours", 100, 3, False),
            ),
        ),
        SubjectKind.ENTERPRISE: (
            (
                ("tax", "a_level_taxpayer", 1, 1, False),
                ("customs", "advanced_certified_enterprise", 1, 1, True),
                ("eco", "green_environmental_credit", 1, 1, False),
                ("samr", "provincial_quality_award", 1, 1, False),
                ("samr", "city_quality_award", 1, 1, False),
            ),
            (
                ("court", "judgement_defaulter", 1, 1, True),
                ("samr", "serious_dishonest_list", 1, 1, True),
                ("tax", "major_tax_violation", 1, 1, False),
                ("customs", "customs_dishonest_enterprise", 1, 1, True),
            ),
        ),
    }
)


@dataclass(frozen=True)
class SceneRecord:
    """One record of a scene subject, dated relative to the day the data is seeded for."""

    department: str
    kind: str
    quantity: int
    #: the event began this many days before as_of
    days_ago: int
    #: it ended this many days after it began (None: no end date, e.g. a title or a donation)
    lasted_days: int | None


@dataclass(frozen=True)
class ScenePerson:
    """Someone who signs in at the demo's identity provider (a scene subject's face online)."""

    resident_id: SubjectId
    name: str


@dataclass(frozen=True)
class SceneSubject:
    """A named subject the demo's scenes show: fixed id, fixed records, no random draws."""

    kind: SubjectKind
    subject_id: SubjectId
    name: str
    records: tuple[SceneRecord, ...]
    #: an enterprise's legal representative, who signs in for it online (None for a person)
    representative: ScenePerson | None = None


def _scene_record(
    dept: str, kind: str, *, days_ago: int, lasted_days: int | None = None, quantity: int = 1
) -> SceneRecord:
    return SceneRecord(dept, kind, quantity, days_ago, lasted_days)


# The article's first scene: a citizen reads "桂花分 106" at the service hall's kiosk, with a
# record in each of the four bonus categories. Her records give, with the default rules:
#   base 100 − deductions (fare evasion 5 + rental-market violation 10)
#   + bonuses (vocational certificate 5 + district honour 10 + one donation 5 + 16 hours 1) = 106,
# and one record that no longer counts: an urban-management penalty whose 5 years have passed.
# Every date sits well inside (or, for the expired one, well outside) its validity window, so
# the score is the same whichever of UTC's and China's dates is "today".
DEMO_CITIZEN = SceneSubject(
    kind=SubjectKind.PERSON,
    # Gusu district 姑苏区, born 1988-10-06, sequence 128 (an even digit: a woman, GB 11643)
    subject_id=make_resident_id(region="320508", birth=datetime.date(1988, 10, 6), sequence=128),
    name="沈桂芳 Shen Guifang",
    records=(
        _scene_record("hrss", "vocational_certificate", days_ago=400),
        _scene_record("civility", "district_honour", days_ago=200),
        _scene_record("blood", "blood_donation", days_ago=90),
        _scene_record("volunteer", "volunteer_hours", days_ago=60, quantity=16),
        _scene_record("transport", "fare_evasion", days_ago=150, lasted_days=0),
        _scene_record("housing", "rental_market_violation", days_ago=300, lasted_days=20),
        # about 7 years ago: past the 5 years a negative record counts
        _scene_record("urban", "urban_management_penalty", days_ago=2600, lasted_days=10),
    ),
)
#: what the demo citizen's records give on the day they are seeded for (the kiosk shows it)
DEMO_CITIZEN_SCORE = 106

# The online face for an enterprise: its legal representative signs in and sees its credit.
# Customs certification 15 + contract-honouring title 10 − a road-transport penalty 5: 120, A.
DEMO_ENTERPRISE = SceneSubject(
    kind=SubjectKind.ENTERPRISE,
    subject_id=make_uscc(
        authority="9",
        category="1",
        region="320508",
        # letters in the organisation code (as in codes issued since 2015, "MA…"): no random
        # enterprise (eight digits) can have the same code
        organisation="MA1GH202" + organisation_code_check_char("MA1GH202"),
    ),
    name="苏州桂园织造有限公司 Suzhou Guiyuan Weaving Co., Ltd.",
    records=(
        _scene_record("customs", "general_certified_enterprise", days_ago=500),
        _scene_record("samr", "contract_honouring_enterprise", days_ago=250),
        _scene_record("transport", "road_transport_violation", days_ago=120, lasted_days=5),
    ),
    representative=ScenePerson(
        # Wuzhong district 吴中区, born 1979-03-15, sequence 517
        resident_id=make_resident_id(
            region="320506", birth=datetime.date(1979, 3, 15), sequence=517
        ),
        name="顾建华 Gu Jianhua",
    ),
)
#: the scene's subjects, appended to the synthetic ones (the kiosk's citizen first)
SCENE_SUBJECTS: tuple[SceneSubject, ...] = (DEMO_CITIZEN, DEMO_ENTERPRISE)

PROFILES: Mapping[SubjectKind, _Profile] = MappingProxyType(
    {SubjectKind.PERSON: _PERSON, SubjectKind.ENTERPRISE: _ENTERPRISE}
)

#: records are dated within this many days before `as_of`, so a good share has expired
_HISTORY_DAYS = 3652
_DISPUTED_RATE = 0.01
#: share of list entries (defaulters, abnormal operation, ...) not yet lifted
_STILL_LISTED_RATE = 0.5
_EARLIEST_BIRTH = datetime.date(1940, 1, 1)
_LATEST_BIRTH = datetime.date(2005, 12, 31)


@dataclass(frozen=True)
class SeedReport:
    out_dir: Path
    #: the DuckDB file of every department of the catalogue
    databases: Mapping[DepartmentId, Path]
    #: CSV listing (subject_kind, subject_id) of every synthetic subject
    subjects_file: Path
    records: Mapping[DepartmentId, int]
    subjects: Mapping[SubjectKind, int]

    @property
    def total_records(self) -> int:
        return sum(self.records.values())


def seed(
    out_dir: Path,
    *,
    persons: int = 2000,
    enterprises: int = 300,
    seed: int = DEFAULT_SEED,
    as_of: datetime.date,
    catalogue: Catalogue | None = None,
    progress: Callable[[str], None] | None = None,
    overwrite: bool = False,
    scene: bool = True,
) -> SeedReport:
    """Write `<out_dir>/<dept>.duckdb` for every department and `<out_dir>/subjects.csv`.

    The same seed and as_of always give the same subjects and records, ids included. Existing
    department files are refused unless `overwrite` is set, so real data is never replaced.
    With `scene`, the demo's named subjects (SCENE_SUBJECTS) of each kind seeded (a count above
    zero) are added after the synthetic ones, with their fixed records: they draw nothing from
    the random generator, so the synthetic subjects and records stay the same.
    """
    for name, value in (("persons", persons), ("enterprises", enterprises)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10_000_000:
            raise InvalidArgument(
                f"must be a whole number from 0 to 10000000, got {value!r}", field=name
            )
    catalogue = catalogue if catalogue is not None else load_catalogue()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    databases = {d.id: out_dir / f"{d.id}.duckdb" for d in catalogue.departments}
    for path in databases.values():
        if path.exists():
            if not overwrite:
                raise FailedPrecondition(
                    f"{path} already exists; seed into an empty directory or pass overwrite"
                )
            path.unlink()
            Path(f"{path}.wal").unlink(missing_ok=True)

    rng = random.Random(seed)
    report = progress or (lambda _msg: None)
    generator = _Generator(rng=rng, as_of=as_of, catalogue=catalogue)
    report(f"generating {persons} persons and {enterprises} enterprises")
    person_ids = generator.persons(persons)
    enterprise_ids = generator.enterprises(enterprises)
    generator.edge_personas(SubjectKind.PERSON, person_ids)
    generator.edge_personas(SubjectKind.ENTERPRISE, enterprise_ids)
    if scene:
        for subject in SCENE_SUBJECTS:
            ids = person_ids if subject.kind is SubjectKind.PERSON else enterprise_ids
            if ids:
                generator.scene_subject(subject)
                ids.append(subject.subject_id)

    subjects_file = out_dir / SUBJECTS_FILE
    with subjects_file.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(("subject_kind", "subject_id"))
        writer.writerows((SubjectKind.PERSON.value, s) for s in person_ids)
        writer.writerows((SubjectKind.ENTERPRISE.value, s) for s in enterprise_ids)

    counts: dict[DepartmentId, int] = {}
    for dept in catalogue.departments:
        with RecordStore(databases[dept.id], department=dept.id) as store:
            counts[dept.id] = store.insert_records(generator.records.get(dept.id, []))
        report(f"{dept.id}: {counts[dept.id]} records")
    return SeedReport(
        out_dir=out_dir,
        databases=MappingProxyType(databases),
        subjects_file=subjects_file,
        records=MappingProxyType(counts),
        subjects=MappingProxyType(
            {SubjectKind.PERSON: len(person_ids), SubjectKind.ENTERPRISE: len(enterprise_ids)}
        ),
    )


class _Generator:
    def __init__(self, *, rng: random.Random, as_of: datetime.date, catalogue: Catalogue) -> None:
        self.rng = rng
        self.as_of = as_of
        self.catalogue = catalogue
        self.records: dict[str, list[Record]] = {}
        self._next_id: dict[str, int] = {}

    def persons(self, n: int) -> list[SubjectId]:
        span = (_LATEST_BIRTH - _EARLIEST_BIRTH).days + 1
        # the scene's persons are never drawn (a draw of one is drawn again)
        seen: set[tuple[str, int, int]] = {
            (p[:6], (_birth_of(p) - _EARLIEST_BIRTH).days, int(p[14:17])) for p in _SCENE_PERSONS
        }
        ids: list[SubjectId] = []
        while len(ids) < n:
            region = self.rng.choice(SUZHOU_DISTRICTS)
            day = self.rng.randrange(span)
            sequence = self.rng.randrange(1000)
            if (region, day, sequence) in seen:
                continue
            seen.add((region, day, sequence))
            birth = _EARLIEST_BIRTH + datetime.timedelta(days=day)
            subject = make_resident_id(region=region, birth=birth, sequence=sequence)
            ids.append(subject)
            self.subject_records(SubjectKind.PERSON, subject)
        return ids

    def enterprises(self, n: int) -> list[SubjectId]:
        seen: set[int] = set()
        ids: list[SubjectId] = []
        while len(ids) < n:
            number = self.rng.randrange(10**8)
            if number in seen:
                continue
            seen.add(number)
            body = f"{number:08d}"
            subject = make_uscc(
                authority="9",
                category="1",
                region=self.rng.choice(SUZHOU_DISTRICTS),
                organisation=body + organisation_code_check_char(body),
            )
            ids.append(subject)
            self.subject_records(SubjectKind.ENTERPRISE, subject)
        return ids

    def edge_personas(self, kind: SubjectKind, subjects: Sequence[SubjectId]) -> None:
        """Extra records for the first subjects (no random draws, so the rest stays the same)."""
        for subject, persona in zip(subjects, _EDGE_PERSONAS[kind], strict=False):
            for dept, kind_name, quantity, count, listed in persona:
                if not self.served(_k(dept, kind_name, "once"), kind):
                    continue
                for i in range(count):
                    # a few weeks ago, so every validity window still holds on as_of
                    start = self.as_of - datetime.timedelta(days=30 + i)
                    end = None if listed else start
                    if kind_name in {"a_level_taxpayer", "green_environmental_credit"}:
                        # yearly ratings are for last calendar year
                        year = self.as_of.year - 1
                        start, end = datetime.date(year, 1, 1), datetime.date(year, 12, 31)
                    self.records.setdefault(dept, []).append(
                        Record(
                            record_id=self.record_id(dept),
                            subject_kind=kind,
                            subject_id=subject,
                            kind=kind_name,
                            quantity=quantity,
                            event_start=start,
                            event_end=end,
                            status=ACTIVE,
                        )
                    )

    def scene_subject(self, subject: SceneSubject) -> None:
        """The fixed records of a scene subject (those of departments the catalogue has)."""
        for r in subject.records:
            if not self.served(_k(r.department, r.kind, "once"), subject.kind):
                continue
            start = self.as_of - datetime.timedelta(days=r.days_ago)
            end = None if r.lasted_days is None else start + datetime.timedelta(days=r.lasted_days)
            self.records.setdefault(r.department, []).append(
                Record(
                    record_id=self.record_id(r.department),
                    subject_kind=subject.kind,
                    subject_id=subject.subject_id,
                    kind=r.kind,
                    quantity=r.quantity,
                    event_start=start,
                    event_end=end,
                    status=ACTIVE,
                )
            )

    def subject_records(self, kind: SubjectKind, subject: SubjectId) -> None:
        profile = PROFILES[kind]
        rng = self.rng
        for minority in profile.minorities:
            if rng.random() < minority.probability:
                self.emit(kind, subject, _weighted(rng, minority.kinds))
        if rng.random() < profile.negative_rate:
            how_many = _weighted(rng, profile.negative_kinds)
            chosen: list[_Kind] = []
            while len(chosen) < how_many:
                k = _weighted(rng, profile.negatives)
                if k not in chosen:
                    chosen.append(k)
            for k in chosen:
                self.emit(kind, subject, k)

    def emit(self, subject_kind: SubjectKind, subject: SubjectId, k: _Kind) -> None:
        rng = self.rng
        count = rng.randint(*k.count)
        if k.shape == "yearly":
            # consecutive rating years ending last year or a little earlier
            last = self.as_of.year - 1 - (rng.randrange(3) if rng.random() < 0.3 else 0)
            spans: list[tuple[datetime.date, datetime.date | None]] = [
                (datetime.date(y, 1, 1), datetime.date(y, 12, 31))
                for y in range(last - count + 1, last + 1)
            ]
        else:
            spans = [self.dates(k.shape) for _ in range(count)]
        drawn = [
            (start, end, rng.randint(*k.quantity), rng.random() < _DISPUTED_RATE)
            for start, end in spans
        ]
        # A custom catalogue may lack a department of the profile: its records are dropped only
        # after the random draws, so every other department's data stays the same.
        if not self.served(k, subject_kind):
            return
        for start, end, quantity, disputed in drawn:
            self.records.setdefault(k.department, []).append(
                Record(
                    record_id=self.record_id(k.department),
                    subject_kind=subject_kind,
                    subject_id=subject,
                    kind=k.kind,
                    quantity=quantity,
                    event_start=start,
                    event_end=end,
                    status=DISPUTED if disputed else ACTIVE,
                )
            )

    def served(self, k: _Kind, subject_kind: SubjectKind) -> bool:
        return any(
            d.id == k.department and d.serves(subject_kind) for d in self.catalogue.departments
        )

    def dates(self, shape: Shape) -> tuple[datetime.date, datetime.date | None]:
        rng = self.rng
        start = self.as_of - datetime.timedelta(days=rng.randrange(_HISTORY_DAYS))
        end: datetime.date | None
        if shape == "instant":
            end = None
        elif shape == "once":
            end = start + datetime.timedelta(days=rng.randrange(60))
        elif shape == "listing":
            lifted = rng.random() >= _STILL_LISTED_RATE
            end = start + datetime.timedelta(days=rng.randrange(30, 900)) if lifted else None
        elif shape == "arrears":
            end = start + datetime.timedelta(days=rng.randrange(30, 400))
        elif shape == "certified":
            withdrawn = rng.random() < 0.15
            end = start + datetime.timedelta(days=rng.randrange(180, 2000)) if withdrawn else None
        else:  # title
            end = None
        if end is not None and end > self.as_of:
            # not closed yet on as_of: an open event has no end date
            end = None
        return start, end

    def record_id(self, department: str) -> str:
        n = self._next_id.get(department, 0) + 1
        self._next_id[department] = n
        return f"{department.upper()}-{n:08d}"


def _birth_of(resident_id: str) -> datetime.date:
    return datetime.date(int(resident_id[6:10]), int(resident_id[10:12]), int(resident_id[12:14]))


#: every person id the scene uses (subjects and representatives)
_SCENE_PERSONS: tuple[SubjectId, ...] = tuple(
    s.subject_id for s in SCENE_SUBJECTS if s.kind is SubjectKind.PERSON
) + tuple(s.representative.resident_id for s in SCENE_SUBJECTS if s.representative)


def _weighted(rng: random.Random, choices: Sequence[tuple[_T, int]]) -> _T:
    return rng.choices([c for c, _ in choices], weights=[w for _, w in choices])[0]
