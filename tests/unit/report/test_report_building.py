"""Enterprise credit reports: building one from the SDK's aggregate, what it holds and what it
refuses (a total score, a measure not asked, another enterprise's list entries)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.catalogue import Catalogue, ListColour
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.ids import make_uscc
from osmanthus.core.types import DepartmentId, Shape, SubjectKind
from sdk.report import (
    MAX_CONTENT_BYTES,
    REPORT_ID_PATTERN,
    EnterpriseReport,
    SignedReport,
    build_enterprise_report,
    sign_report,
)
from sdk.results import EnterpriseScore, ListSearchResult, RestrictionResult
from tests.unit.report.conftest import (
    DAY,
    FIRM,
    FIRM_NAME,
    WHEN,
    _status,
    list_entry,
    make_lists,
    make_restrictions,
    make_score,
)


def test_the_report_holds_the_aggregate_it_came_from(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, {"bank_loan"})
    report = build_enterprise_report(
        score=card,
        restrictions=flags,
        lists=make_lists(catalogue, ()),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    assert REPORT_ID_PATTERN.fullmatch(report.report_id)
    assert (report.subject_id, report.grade, report.score) == (FIRM, card.grade, card.score)
    assert report.base == card.base and report.deductions == card.deductions
    assert {b.name: b.points for b in report.bonuses} == dict(card.bonuses)
    model = catalogue.model(SubjectKind.ENTERPRISE)
    assert [(b.label, b.cap) for b in report.bonuses] == [
        (c.label, c.cap) for c in model.categories
    ]
    assert {r.measure: r.in_force for r in report.restrictions} == dict(flags.restricted)
    assert [r.measure for r in report.in_force] == ["bank_loan"]
    assert report.restrictions[0].name == catalogue.measure("bank_loan").name
    assert [d.department for d in report.answered] == [s.department for s in card.answered]
    assert [(d.department, d.detail) for d in report.missing] == [("eco", "deadline exceeded")]
    assert report.answered[0].name == catalogue.department("court").name
    assert (report.score_query_id, report.restrictions_query_id) == ("q-score-1", "q-flags-1")
    assert report.restrictions_answered == ("court", "tax")
    # the time of the query, in UTC to the second
    assert report.issued_at == WHEN.replace(microsecond=0)
    assert report.grade_scale == model.grades
    # a fresh id for every report
    again = build_enterprise_report(
        score=card,
        restrictions=flags,
        lists=make_lists(catalogue, ()),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    assert again.report_id != report.report_id


def test_a_report_needs_one_graded_breakdown_and_every_measure(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    flags = make_restrictions(catalogue, set())

    def build(**changes: object) -> EnterpriseReport:
        args: dict[str, object] = {
            "score": card,
            "restrictions": flags,
            "lists": make_lists(catalogue, ()),
            "catalogue": catalogue,
            "issuer": "agency",
            "issued_at": WHEN,
            **changes,
        }
        return build_enterprise_report(**args)  # type: ignore[arg-type]

    total = EnterpriseScore(**{**card.__dict__, "shape": Shape.TOTAL, "deductions": None})
    with pytest.raises(InvalidArgument, match="graded BREAKDOWN score, not total"):
        build(score=total)
    partial = RestrictionResult(
        subject_id=FIRM, restricted={"bank_loan": False}, answered=(), query_id="q"
    )
    with pytest.raises(InvalidArgument, match="every measure of the catalogue; not asked: "):
        build(restrictions=partial)
    other = make_uscc(authority="9", category="1", region="320500", organisation="M000200YX")
    with pytest.raises(InvalidArgument, match="the restrictions are for"):
        build(restrictions=RestrictionResult(**{**flags.__dict__, "subject_id": other}))
    with pytest.raises(InvalidArgument, match="time zone"):
        build(issued_at=datetime(2026, 11, 26, 9, 30))
    for bad in ("", " agency", "a\nb", "x" * 201):
        with pytest.raises(InvalidArgument) as info:
            build(issuer=bad)
        assert info.value.field == "issuer"
    # a time in another zone is stated in UTC
    east8 = timezone(timedelta(hours=8))
    assert build(issued_at=WHEN.astimezone(east8)).issued_at == WHEN.replace(microsecond=0)


def test_a_report_too_long_to_verify_is_not_signed(catalogue: Catalogue) -> None:
    card = make_score(catalogue)
    card = EnterpriseScore(
        **{**card.__dict__, "missing": (_status("eco", "x" * MAX_CONTENT_BYTES, ""),)}
    )
    report = build_enterprise_report(
        score=card,
        restrictions=make_restrictions(catalogue, set()),
        lists=make_lists(catalogue),
        catalogue=catalogue,
        issuer="agency",
        issued_at=WHEN,
    )
    with pytest.raises(InvalidArgument, match=f"a report is at most {MAX_CONTENT_BYTES}") as info:
        sign_report(report, private_key=Ed25519PrivateKey.generate())
    assert info.value.field == "report"


# --- red and black lists --------------------------------------------------------------------


def test_the_report_carries_the_list_entries_in_view(
    catalogue: Catalogue, signed: SignedReport
) -> None:
    r = signed.report
    red, black = r.list_entries
    assert (red.list, red.colour, red.department) == (
        "customs_advanced_certified",
        ListColour.RED,
        "customs",
    )
    assert (black.list, black.colour, black.department) == (
        "judgement_defaulters",
        ListColour.BLACK,
        "court",
    )
    # the names come from the catalogue, the rest from the published entry
    court_list = next(t for t in catalogue.lists if t.id == "judgement_defaulters")
    assert (black.list_name, black.list_name_zh) == (court_list.name, court_list.name_zh)
    assert black.department_name == catalogue.department("court").name
    assert black.legal_basis == court_list.legal_basis and black.subject_name == FIRM_NAME
    assert (red.facilitation_class, black.facilitation_class) == ("AA", None)
    assert r.facilitation == ("AA (customs_advanced_certified, until 2029-11-26)",)
    assert r.list_departments == catalogue.list_departments(SubjectKind.ENTERPRISE)
    assert r.lists_missing == () and r.query_day == DAY
    # in the signed content, as published
    (content_red, content_black) = json.loads(signed.content)["list_entries"]
    assert content_red["colour"] == "red" and content_red["facilitation_class"] == "AA"
    assert (
        content_black["window_start"] == "2025-11-26"
        and content_black["facilitation_class"] is None
    )


def test_a_report_takes_only_the_enterprises_entries_in_view_that_day(catalogue: Catalogue) -> None:
    card, flags = make_score(catalogue), make_restrictions(catalogue, set())

    def build(lists: ListSearchResult, when: datetime = WHEN) -> EnterpriseReport:
        return build_enterprise_report(
            score=card,
            restrictions=flags,
            lists=lists,
            catalogue=catalogue,
            issuer="agency",
            issued_at=when,
        )

    def refused(lists: ListSearchResult, words: str, field: str = "lists.entries[0]") -> None:
        with pytest.raises(InvalidArgument, match=words) as info:
            build(lists)
        assert info.value.field == field

    court = list_entry(catalogue, "judgement_defaulters", "zhi-1")
    other = make_uscc(authority="9", category="1", region="320500", organisation="M000200YX")
    # the search must be the enterprise's, on every list, in one answer
    for changes in ({"subject_id": other}, {"list_id": "judgement_defaulters"},
                    {"next_page_token": "abc"}, {"subject_kind": SubjectKind.PERSON}):  # fmt: skip
        bad = dataclasses.replace(make_lists(catalogue, (court,)), **changes)
        refused(bad, "a report needs the search of enterprise", "lists")
    refused(make_lists(catalogue, (dataclasses.replace(court, subject_id=other),)), "is about")
    # windows are counted in China Standard Time: WHEN is 17:30 there, on DAY
    assert build(make_lists(catalogue, (dataclasses.replace(court, window_start=DAY),)))
    # a node may judge by its own date near midnight: one day of slack, no more
    for start, end in ((DAY + timedelta(days=1), DAY + timedelta(days=9)),
                       (DAY - timedelta(days=9), DAY - timedelta(days=1))):  # fmt: skip
        moved = dataclasses.replace(court, window_start=start, window_end=end)
        assert build(make_lists(catalogue, (moved,))).list_entries[0].window_start == start
    for start, end in ((DAY + timedelta(days=2), DAY + timedelta(days=9)),
                       (DAY - timedelta(days=9), DAY - timedelta(days=2))):  # fmt: skip
        moved = dataclasses.replace(court, window_start=start, window_end=end)
        refused(make_lists(catalogue, (moved,)), "not on 2026-11-26, the day of the query")
    # a class on a black list, a colour or department the catalogue does not give the list
    refused(
        make_lists(catalogue, (dataclasses.replace(court, facilitation_class="AA"),)),
        "only red lists grant one",
    )
    refused(
        make_lists(catalogue, (dataclasses.replace(court, colour=ListColour.RED),)),
        "the coordinator's catalogue differs from yours",
    )
    refused(
        make_lists(catalogue, (dataclasses.replace(court, department=DepartmentId("tax")),)),
        "published by court",
    )
    # a list this catalogue lacks is shown by its id
    unknown = dataclasses.replace(court, list="new_list", department=DepartmentId("fire"))
    (entry,) = build(make_lists(catalogue, (unknown,))).list_entries
    assert (entry.list_name, entry.list_name_zh) == ("new_list", "")
    assert entry.department_name == catalogue.department("fire").name
