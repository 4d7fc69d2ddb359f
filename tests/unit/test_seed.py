"""The synthetic-data seeder: determinism, realistic shape, validity of every record, speed."""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import NamedTuple

import pytest

from node.store import COLUMNS, RecordStore
from osmanthus.core.catalogue import Catalogue, default_rules_dir, load_catalogue
from osmanthus.core.errors import FailedPrecondition, InvalidArgument
from osmanthus.core.ids import validate_subject
from osmanthus.core.rules import Record, RuleSet, load_rules_dir
from osmanthus.core.score import Breakdown, grade, score
from osmanthus.core.types import DepartmentId, SubjectKind
from osmanthus.demo.seed import (
    DEMO_CITIZEN,
    DEMO_CITIZEN_SCORE,
    DEMO_ENTERPRISE,
    PROFILES,
    SCENE_SUBJECTS,
    SeedReport,
    seed,
)

AS_OF = date(2026, 11, 26)
REPO = Path(__file__).resolve().parents[2]
CATALOGUE: Catalogue = load_catalogue()
RULES: dict[str, RuleSet] = load_rules_dir(default_rules_dir(), catalogue=CATALOGUE)

_DIGEST_SCRIPT = """
import datetime, hashlib, sys
from pathlib import Path
from typing import NamedTuple
from node.store import RecordStore
from osmanthus.demo.seed import seed
out = Path(sys.argv[1])
report = seed(out, as_of=datetime.date(2026, 11, 26))
h = hashlib.sha256((out / "subjects.csv").read_bytes())
for dept, path in report.databases.items():
    with RecordStore(path, department=dept, read_only=True) as store:
        for r in store.all_records():
            h.update(repr(r).encode())
print(h.hexdigest())
"""


def load_all(report: SeedReport) -> dict[str, list[Record]]:
    out: dict[str, list[Record]] = {}
    for dept, path in report.databases.items():
        with RecordStore(path, department=dept, read_only=True) as store:
            out[dept] = list(store.all_records())
    return out


def digest(report: SeedReport, stored: dict[str, list[Record]]) -> str:
    h = hashlib.sha256(report.subjects_file.read_bytes())
    for records in stored.values():
        for r in records:
            h.update(repr(r).encode())
    return h.hexdigest()


class Demo(NamedTuple):
    report: SeedReport
    seconds: float
    stored: dict[str, list[Record]]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """The demo-sized data set (2000 persons, 300 enterprises), how long it took, its records."""
    started = time.perf_counter()
    report = seed(tmp_path_factory.mktemp("demo"), as_of=AS_OF)
    seconds = time.perf_counter() - started
    return Demo(report, seconds, load_all(report))


def test_demo_seed_is_fast_and_complete(demo: Demo) -> None:
    report, seconds, stored = demo
    # part of a demo with a 3-minute budget; about 1 s on a 2-core machine
    assert seconds < 10, f"seeding took {seconds:.1f} s"
    assert set(report.databases) == {d.id for d in CATALOGUE.departments}
    assert all(p.exists() for p in report.databases.values())
    # the synthetic subjects and, after them, the scene's citizen and enterprise
    assert report.subjects == {SubjectKind.PERSON: 2001, SubjectKind.ENTERPRISE: 301}
    assert {d: len(r) for d, r in stored.items()} == dict(report.records)
    assert report.total_records == sum(len(r) for r in stored.values())
    with report.subjects_file.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["subject_kind", "subject_id"]
    subjects = {(k, s) for k, s in rows[1:]}
    assert len(subjects) == len(rows) - 1 == 2302  # no duplicates
    for scene_subject in SCENE_SUBJECTS:  # each the last of its kind
        last = [r for r in rows if r[0] == scene_subject.kind.value][-1]
        assert last == [scene_subject.kind.value, scene_subject.subject_id]
    for kind, subject in rows[1:]:
        assert validate_subject(SubjectKind(kind), subject) == subject
    for records in stored.values():
        for r in records:
            assert (r.subject_kind.value, r.subject_id) in subjects


def test_same_seed_same_records_other_seed_other_records(demo: Demo, tmp_path: Path) -> None:
    a, _, a_stored = demo
    b = seed(tmp_path / "b", as_of=AS_OF)
    b_stored = load_all(b)
    assert a_stored == b_stored
    assert a.subjects_file.read_bytes() == b.subjects_file.read_bytes()
    c = seed(tmp_path / "c", persons=300, enterprises=60, seed=8, as_of=AS_OF)
    assert digest(a, a_stored) == digest(b, b_stored) != digest(c, load_all(c))
    # and independently of the interpreter's string-hash seed
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT, str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == digest(a, a_stored)


def test_persons_look_like_the_source(demo: Demo) -> None:
    report, _, stored = demo
    persons = [r for rs in stored.values() for r in rs if r.subject_kind is SubjectKind.PERSON]
    n = report.subjects[SubjectKind.PERSON]

    def share(predicate: str) -> float:
        kinds = {
            "negative": {
                rule.kind
                for rs in RULES.values()
                for rule in rs.rules
                if rule.is_deduction and rule.subject_kind is SubjectKind.PERSON
            },
            "blood": {"blood_donation"},
            "volunteer": {"volunteer_hours"},
            "honours": {"district_honour", "city_honour", "provincial_or_national_honour"},
            "qualifications": {"vocational_certificate", "intermediate_title", "senior_title"},
        }[predicate]
        return len({r.subject_id for r in persons if r.kind in kinds}) / n

    assert 0.025 <= share("negative") <= 0.06
    assert 0.06 <= share("blood") <= 0.10
    assert 0.075 <= share("volunteer") <= 0.125
    assert 0.015 <= share("honours") <= 0.045
    assert 0.125 <= share("qualifications") <= 0.175
    per_subject = Counter(r.subject_id for r in persons)
    at_most_two = n - sum(1 for c in per_subject.values() if c > 2)
    assert at_most_two / n > 0.85  # most people have zero, one or two records
    births = [int(s[6:10]) for s in per_subject]
    assert min(births) >= 1940 and max(births) <= 2005
    assert {s[:6] for s in per_subject} <= {
        "320505", "320506", "320507", "320508", "320509", "320581", "320582", "320583", "320585",
    }  # fmt: skip


def test_dates_statuses_and_listings(demo: Demo) -> None:
    stored = demo.stored
    everything = [r for rs in stored.values() for r in rs]
    disputed = sum(r.status == "disputed" for r in everything) / len(everything)
    assert 0.002 <= disputed <= 0.025
    assert all(r.event_start <= AS_OF for r in everything)
    assert all(r.event_end is None or r.event_start <= r.event_end <= AS_OF for r in everything)
    assert min(r.event_start for r in everything).year <= AS_OF.year - 9
    # some records have expired: they are stored but count for nothing on AS_OF
    counting = 0
    for dept, records in stored.items():
        for r in records:
            rule = RULES[dept].rule(r.subject_kind, r.kind)
            counting += rule.validity.counts(r.event_start, r.event_end, AS_OF)
    assert 0.2 < counting / len(everything) < 0.9
    still_listed = [r for r in stored["court"] if r.event_end is None]
    assert 1 <= len(still_listed) <= 30


def test_enterprises_have_ratings_for_a_minority(demo: Demo) -> None:
    report, _, stored = demo
    n = report.subjects[SubjectKind.ENTERPRISE]

    def holders(dept: str, *kinds: str) -> float:
        return len({r.subject_id for r in stored[dept] if r.kind in kinds}) / n

    assert 0.06 <= holders("tax", "a_level_taxpayer") <= 0.18
    customs = holders("customs", "advanced_certified_enterprise", "general_certified_enterprise")
    assert 0.02 <= customs <= 0.11
    assert 0.03 <= holders("eco", "green_environmental_credit") <= 0.13
    assert 0.02 <= holders("samr", "abnormal_operation_list") <= 0.10
    ratings = [r for r in stored["tax"] if r.kind == "a_level_taxpayer"]
    assert all(r.event_start.month == 1 and r.event_start.day == 1 for r in ratings)
    assert all(r.event_end is not None and r.event_end.year < AS_OF.year for r in ratings)


def test_every_seeded_record_passes_import_validation(demo: Demo, tmp_path: Path) -> None:
    for dept, records in demo.stored.items():
        if not records:
            continue
        path = tmp_path / f"{dept}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            for r in records:
                w.writerow(
                    [r.record_id, r.subject_kind.value, r.subject_id, r.kind, r.quantity,
                     r.event_start, r.event_end or "", r.status]
                )  # fmt: skip
        with RecordStore(tmp_path / f"{dept}.duckdb", department=DepartmentId(dept)) as store:
            imported = store.import_file(path, rules=RULES[dept], catalogue=CATALOGUE, today=AS_OF)
            assert imported.rows == len(records)


def test_profiles_use_only_known_rules() -> None:
    for kind, profile in PROFILES.items():
        entries = [k for m in profile.minorities for k, _ in m.kinds]
        entries += [k for k, _ in profile.negatives]
        for entry in entries:
            assert entry.kind in RULES[entry.department].kinds(kind), entry


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    first = seed(tmp_path, persons=20, enterprises=5, as_of=AS_OF)
    with pytest.raises(FailedPrecondition, match=r"psb\.duckdb already exists"):
        seed(tmp_path, persons=20, enterprises=5, as_of=AS_OF)
    messages: list[str] = []
    again = seed(
        tmp_path, persons=20, enterprises=5, as_of=AS_OF, overwrite=True, progress=messages.append
    )
    assert again.records == first.records
    assert messages[0] == "generating 20 persons and 5 enterprises"
    assert len(messages) == 1 + len(CATALOGUE.departments)
    assert messages[1] == f"psb: {first.records[DepartmentId('psb')]} records"
    with pytest.raises(InvalidArgument, match="persons: must be a whole number"):
        seed(tmp_path / "x", persons=-1, as_of=AS_OF)


def _plaintext(
    stored: dict[str, list[Record]], kind: SubjectKind, subject: str, as_of: date
) -> tuple[Breakdown, int]:
    """The score model in plaintext over every department's seeded records of one subject."""
    model = CATALOGUE.model(kind)
    deductions = 0
    bonuses: dict[str, int | None] = {c.name: 0 for c in model.categories}
    for dept, records in stored.items():
        mine = [r for r in records if r.subject_kind is kind and r.subject_id == subject]
        part = RULES[dept].contribution(kind, mine, as_of=as_of)
        deductions += part.deductions
        for name, value in part.bonuses.items():
            bonuses[name] = (bonuses[name] or 0) + value
    breakdown = Breakdown(deductions=deductions, bonuses=bonuses)
    return breakdown, score(model, breakdown)


def test_the_kiosk_citizen_scores_106_with_all_four_bonus_categories(demo: Demo) -> None:
    subject = DEMO_CITIZEN.subject_id
    assert validate_subject(SubjectKind.PERSON, subject) == subject
    assert int(subject[16]) % 2 == 0  # a woman (GB 11643: the 17th digit is even)
    breakdown, total = _plaintext(demo.stored, SubjectKind.PERSON, subject, AS_OF)
    assert total == DEMO_CITIZEN_SCORE == 106
    assert breakdown.deductions == 15
    assert breakdown.bonuses == {
        "qualifications": 5,  # 资质状况
        "honours": 10,  # 荣誉表彰
        "blood_donation": 5,  # 献血记录
        "volunteer_service": 1,  # 志愿者服务
    }
    # one record that no longer counts: it is stored, and expired on the day
    hers = [(dept, r) for dept, rs in demo.stored.items() for r in rs if r.subject_id == subject]
    assert len(hers) == len(DEMO_CITIZEN.records) == 7
    rules = [(RULES[dept].rule(r.subject_kind, r.kind), r) for dept, r in hers]
    expired = [
        r for rule, r in rules if not rule.validity.counts(r.event_start, r.event_end, AS_OF)
    ]
    assert [r.kind for r in expired] == ["urban_management_penalty"]
    # the same on the day before and after (UTC's and China's "today" differ by up to a day)
    for day in (date(2026, 11, 25), date(2026, 11, 27)):
        assert _plaintext(demo.stored, SubjectKind.PERSON, subject, day)[1] == 106


def test_the_kiosk_citizen_scores_106_whatever_the_seeding_day(tmp_path: Path) -> None:
    for as_of in (date(2025, 1, 1), date(2028, 2, 29)):
        report = seed(tmp_path / as_of.isoformat(), persons=5, enterprises=2, as_of=as_of)
        _, total = _plaintext(load_all(report), SubjectKind.PERSON, DEMO_CITIZEN.subject_id, as_of)
        assert total == 106


def test_the_scene_enterprise_and_its_representative(demo: Demo) -> None:
    code = DEMO_ENTERPRISE.subject_id
    assert validate_subject(SubjectKind.ENTERPRISE, code) == code
    assert DEMO_ENTERPRISE.representative is not None
    representative = DEMO_ENTERPRISE.representative.resident_id
    assert validate_subject(SubjectKind.PERSON, representative) == representative
    _, total = _plaintext(demo.stored, SubjectKind.ENTERPRISE, code, AS_OF)
    assert total == 120
    assert grade(CATALOGUE.model(SubjectKind.ENTERPRISE), total) == "A"


def test_scene_subjects_are_left_out_on_request_and_for_kinds_not_seeded(tmp_path: Path) -> None:
    without = seed(tmp_path / "without", persons=20, enterprises=5, as_of=AS_OF, scene=False)
    assert without.subjects == {SubjectKind.PERSON: 20, SubjectKind.ENTERPRISE: 5}
    no_firms = seed(tmp_path / "no-firms", persons=20, enterprises=0, as_of=AS_OF)
    assert no_firms.subjects == {SubjectKind.PERSON: 21, SubjectKind.ENTERPRISE: 0}
    stored = load_all(no_firms)
    assert not any(r.subject_id == DEMO_ENTERPRISE.subject_id for rs in stored.values() for r in rs)
    # the synthetic records are the same with the scene or without it
    scene = {s.subject_id for s in SCENE_SUBJECTS}
    with_scene = seed(tmp_path / "with", persons=20, enterprises=5, as_of=AS_OF)
    synthetic = {
        dept: [r for r in rs if r.subject_id not in scene]
        for dept, rs in load_all(with_scene).items()
    }
    assert synthetic == load_all(without)
