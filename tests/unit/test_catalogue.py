"""Default catalogue content, catalogue validation errors, and the generated departments page."""

from __future__ import annotations

from pathlib import Path

import pytest

from osmanthus.core.catalogue import (
    Catalogue,
    default_catalogue_path,
    default_rules_dir,
    load_catalogue,
)
from osmanthus.core.departments_doc import render_departments_markdown
from osmanthus.core.errors import ConfigError, InvalidArgument, NotFound
from osmanthus.core.rules import DEDUCTION, load_rules_dir
from osmanthus.core.types import SubjectKind

REPO = Path(__file__).resolve().parents[2]
PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE

# catalogue.md, personal credit: department -> {record kind: signed points}
CATALOGUE_MD_PERSON = {
    "psb": {"drunk_driving": -20, "public_order_penalty": -5, "fraud_conviction": -40},
    "court": {"judgement_defaulter": -50},
    "tax": {"tax_arrears": -10, "major_tax_violation": -40},
    "hrss": {
        "vocational_certificate": 5,
        "intermediate_title": 10,
        "senior_title": 20,
        "social_insurance_fraud": -30,
    },
    "hpf": {"provident_fund_loan_default": -20},
    "civil": {"subsistence_allowance_fraud": -20},
    "blood": {"blood_donation": 5},
    "civility": {"district_honour": 10, "city_honour": 15, "provincial_or_national_honour": 25},
    "volunteer": {"volunteer_hours": 1},
    "samr": {"serious_dishonest_list": -30},
    "eco": {"environmental_penalty": -10},
    "transport": {"fare_evasion": -5, "illegal_taxi_operation": -10},
    "urban": {"urban_management_penalty": -3},
    "edu": {"exam_cheating": -15},
    "justice": {"practitioner_misconduct": -15},
    "housing": {"rental_market_violation": -10},
    "medins": {"medical_insurance_fraud": -30},
    "culture": {"uncivilised_tourist": -10},
    "land": {"illegal_land_use": -20},
    "safety": {"work_safety_violation": -20},
    "stats": {"statistical_fraud": -15},
    "commerce": {"prepaid_card_fraud": -20},
}


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return load_catalogue()


def test_default_catalogue_departments(catalogue: Catalogue) -> None:
    ids = [d.id for d in catalogue.departments]
    assert len(ids) == len(set(ids)) == 26
    assert [d.id for d in catalogue.departments_for(PERSON)] == list(CATALOGUE_MD_PERSON)
    enterprise_ids = {d.id for d in catalogue.departments_for(ENTERPRISE)}
    assert enterprise_ids == {
        "samr", "tax", "customs", "court", "hrss", "hpf", "eco", "safety", "land",
        "housing", "transport", "commerce", "stats", "medins", "nmpa", "fire", "trading",
    }  # fmt: skip
    tax = catalogue.department("tax")
    assert tax.name_zh == "市税务局"
    assert tax.subject_kinds == frozenset({PERSON, ENTERPRISE})
    assert catalogue.department("blood").subject_kinds == frozenset({PERSON})


def test_default_score_models(catalogue: Catalogue) -> None:
    person = catalogue.model(PERSON)
    assert (person.base, person.floor, person.ceiling, person.grades) == (100, 0, 200, ())
    assert [(c.name, c.owner, c.cap) for c in person.categories] == [
        ("qualifications", "hrss", 25),
        ("honours", "civility", 25),
        ("blood_donation", "blood", 25),
        ("volunteer_service", "volunteer", 25),
    ]
    assert person.slot_names() == (
        "deductions",
        "qualifications",
        "honours",
        "blood_donation",
        "volunteer_service",
    )
    enterprise = catalogue.model(ENTERPRISE)
    assert [(c.name, c.owner, c.cap) for c in enterprise.categories] == [
        ("tax_credit", "tax", 30),
        ("customs_certification", "customs", 30),
        ("environmental_credit", "eco", 20),
        ("honours_awards", "samr", 20),
    ]
    assert enterprise.grades == (("A", 110), ("B", 90), ("C", 70), ("D", 0))
    assert enterprise.bonus_cap == person.bonus_cap == 100
    assert enterprise.categories_owned_by("samr")[0].name == "honours_awards"
    assert enterprise.category("tax_credit").cap == 30
    with pytest.raises(NotFound, match="no bonus category 'honours'"):
        enterprise.category("honours")


def test_department_lookup_errors(catalogue: Catalogue) -> None:
    with pytest.raises(NotFound, match="'police' is not in the catalogue") as e:
        catalogue.department("police")
    assert e.value.field == "department"
    with pytest.raises(InvalidArgument, match=r"'\.\./etc' is not a department id"):
        catalogue.department("../etc")


def test_default_rules_match_catalogue_md(catalogue: Catalogue) -> None:
    rules = load_rules_dir(default_rules_dir(), catalogue=catalogue)
    assert set(rules) == {d.id for d in catalogue.departments}
    for dept, expected in CATALOGUE_MD_PERSON.items():
        got = {
            r.kind: (r.points if r.category != DEDUCTION else -r.points)
            for r in rules[dept].rules
            if r.subject_kind is PERSON
        }
        assert got == expected, dept
    assert rules["volunteer"].rule(PERSON, "volunteer_hours").per_quantity == 10
    assert rules["psb"].rule(PERSON, "public_order_penalty").kind_cap == 15
    assert rules["transport"].rule(PERSON, "fare_evasion").kind_cap == 15
    assert rules["urban"].rule(PERSON, "urban_management_penalty").kind_cap == 9
    assert str(rules["court"].rule(PERSON, "judgement_defaulter").validity) == "while_listed"
    flags = {
        (r.kind, r.flag) for rs in rules.values() for r in rs.rules if r.subject_kind is PERSON
    }
    assert {
        ("judgement_defaulter", "judgement_defaulter"),
        ("major_tax_violation", "major_tax_violation"),
        ("provident_fund_loan_default", "housing_fund_default"),
        ("serious_dishonest_list", "serious_dishonest"),
        ("work_safety_violation", "work_safety_dishonest"),
    } <= flags
    enterprise_flags = {r.flag for rs in rules.values() for r in rs.rules if r.flag}
    assert {"environmental_dishonest", "customs_dishonest"} <= enterprise_flags
    assert rules["tax"].rule(ENTERPRISE, "a_level_taxpayer").points == 30
    customs = rules["customs"]
    assert customs.rule(ENTERPRISE, "advanced_certified_enterprise").points == 30
    assert customs.rule(ENTERPRISE, "general_certified_enterprise").points == 15
    assert rules["eco"].rule(ENTERPRISE, "green_environmental_credit").points == 20


def test_every_department_has_rules_for_each_kind_it_serves(catalogue: Catalogue) -> None:
    rules = load_rules_dir(default_rules_dir(), catalogue=catalogue)
    for dept in catalogue.departments:
        for kind in dept.subject_kinds:
            assert rules[dept.id].kinds(kind), (dept.id, kind)
    for kind in SubjectKind:
        for category in catalogue.model(kind).categories:
            owner_rules = rules[category.owner].rules
            assert any(r.category == category.name for r in owner_rules), category.name


def test_departments_doc_is_current(catalogue: Catalogue) -> None:
    rules = load_rules_dir(default_rules_dir(), catalogue=catalogue)
    rendered = render_departments_markdown(catalogue, rules)
    on_disk = (REPO / "docs" / "departments.md").read_text(encoding="utf-8")
    assert on_disk == rendered, (
        "docs/departments.md is stale: run `python -m osmanthus.core.departments_doc > "
        "docs/departments.md`"
    )
    assert "we clamp the total, not the deductions" in rendered
    assert "A >= 110, B 90-109, C 70-89, D below 70" in rendered


# -- validation errors --------------------------------------------------------------------------


def _variant(tmp_path: Path, old: str, new: str) -> Path:
    text = default_catalogue_path().read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path = tmp_path / "catalogue.toml"
    path.write_text(text.replace(old, new), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'owner = "volunteer"\ncap = 25',
            'owner = "volunteer"\ncap = 15',
            r"model\.person\.category: caps sum to 90; they must sum to ceiling - base = 100",
        ),
        (
            'owner = "blood"',
            'owner = "bloodbank"',
            r"model\.person\.category\[3\]\.owner: department 'bloodbank' is not in the catalogue",
        ),
        (
            'owner = "customs"',
            'owner = "blood"',
            r"model\.enterprise\.category\[2\]\.owner: department 'blood' does not serve "
            r"enterprises",
        ),
        (
            'id = "edu"',
            'id = "psb"',
            r"department\[14\]\.id: department 'psb' is listed twice",
        ),
        (
            'id = "edu"',
            'id = "Edu"',
            r"department\[14\]\.id: 'Edu' is not a valid department id",
        ),
        (
            'name_zh = "市教育局"',
            'name_zh = "市教育局"\nwebsite = "x"',
            r"department\[14\]\.website: unknown key",
        ),
        (
            'subject_kinds = ["person"]\n\n[[department]]\nid = "blood"',
            'subject_kinds = ["citizen"]\n\n[[department]]\nid = "blood"',
            r"department\[6\]\.subject_kinds: 'citizen' is not a subject kind",
        ),
        (
            '[["A", 110], ["B", 90], ["C", 70], ["D", 0]]',
            '[["A", 110], ["B", 120], ["C", 70], ["D", 0]]',
            r"model\.enterprise\.grades\[2\]: grades must be listed highest minimum first",
        ),
        (
            '[["A", 110], ["B", 90], ["C", 70], ["D", 0]]',
            '[["A", 110], ["B", 90], ["C", 70]]',
            r"model\.enterprise\.grades: the last grade's minimum must be the floor 0",
        ),
        (
            "[model.person]\nbase = 100",
            '[model.person]\nbase = "100"',
            r"model\.person\.base: must be an integer",
        ),
        (
            'name = "honours"\n',
            'name = "deductions"\n',
            r"model\.person\.category\[2\]\.name: 'deductions' is not a usable category name",
        ),
    ],
)
def test_catalogue_validation_errors(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = _variant(tmp_path, old, new)
    with pytest.raises(ConfigError, match=message) as e:
        load_catalogue(path)
    assert str(path) in str(e.value)


def test_catalogue_file_problems(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="catalogue file does not exist"):
        load_catalogue(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[department]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalogue(bad)
    no_model = tmp_path / "no_model.toml"
    no_model.write_text(
        '[[department]]\nid = "a"\nname = "A"\nname_zh = "甲"\nsubject_kinds = ["person"]\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError, match=r"no_model\.toml: model: missing"):
        load_catalogue(no_model)
