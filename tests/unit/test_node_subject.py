"""A subject's file at a node (node.subject): states, totals, bounds, and finding the audit
entries about one subject (AuditLog.entries_about)."""

from __future__ import annotations

import dataclasses
import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from node.subject import (
    COUNTS,
    DISPUTED,
    EXPIRED,
    NOT_YET_IN_FORCE,
    build,
    kind_totals,
    record_state,
)
from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.cases import (
    MAX_DECISION_REASON_CHARS,
    MAX_STATEMENT_CHARS,
    Case,
    CaseEvent,
    CaseGround,
    CaseKind,
    CaseStatus,
    CaseTarget,
)
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.ids import make_resident_id
from osmanthus.core.rules import Record, RuleSet, Validity, load_default_rules
from osmanthus.core.subjectfile import (
    MAX_ITEMS,
    SubjectFile,
    audit_lines,
    decode,
    encode,
    fit,
)
from osmanthus.core.subjectseal import SEAL_OVERHEAD, nonce_text
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.wire.node import MAX_SEALED_PART_BYTES

AS_OF = date(2026, 3, 1)
PERSON = SubjectKind.PERSON
ALICE = make_resident_id(region="320505", birth=date(1981, 3, 4), sequence=151)
BOB = make_resident_id(region="320505", birth=date(1979, 7, 8), sequence=262)
NOW = datetime(2026, 3, 1, 4, 0, tzinfo=UTC)
NONCE = b"\x05" * 32


@pytest.fixture(scope="module")
def psb() -> RuleSet:
    return load_default_rules("psb", catalogue=load_catalogue())


def _record(n: int, kind: str, **fields: object) -> Record:
    values: dict[str, object] = {
        "quantity": 1,
        "event_start": AS_OF - timedelta(days=100),
        "event_end": None,
        "status": "active",
        **fields,
    }
    return Record(
        record_id=f"r{n:05d}",
        subject_kind=PERSON,
        subject_id=SubjectId(ALICE),
        kind=kind,
        **values,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("validity", ["1y", "5y", "while_listed", "permanent"])
def test_the_last_day_is_the_last_day_the_record_counts(validity: str) -> None:
    rule = Validity.parse(validity)
    starts = (date(2020, 2, 29), date(2021, 6, 15), date(2023, 12, 31))
    for start, end in itertools.product(starts, (None, date(2024, 2, 29), date(2025, 1, 1))):
        if end is not None and end < start:
            continue
        last = rule.last_day(start, end)
        if last is None:
            # open-ended: still counting decades on
            assert rule.counts(start, end, date(2090, 1, 1))
            continue
        assert rule.counts(start, end, last)
        assert not rule.counts(start, end, last + timedelta(days=1))


def test_each_state_is_the_one_contribution_uses(psb: RuleSet) -> None:
    counting = _record(1, "drunk_driving")
    expired = _record(2, "drunk_driving", event_start=AS_OF - timedelta(days=6 * 366))
    disputed = _record(3, "drunk_driving", status="disputed")
    ahead = _record(4, "drunk_driving", event_start=AS_OF + timedelta(days=1))
    # a record both disputed and expired is shown as disputed: what the subject contested
    old_disputed = _record(5, "drunk_driving", status="disputed", event_start=date(2000, 1, 1))
    states = [
        record_state(r, psb, as_of=AS_OF)
        for r in (counting, expired, disputed, ahead, old_disputed)
    ]
    assert states == [COUNTS, EXPIRED, DISPUTED, NOT_YET_IN_FORCE, DISPUTED]
    for record in (counting, expired, disputed, ahead, old_disputed):
        alone = psb.contribution(PERSON, [record], as_of=AS_OF).deductions
        assert (alone > 0) == (record_state(record, psb, as_of=AS_OF) == COUNTS)


def test_kind_totals_apply_the_kind_cap_and_add_up_to_the_contribution(psb: RuleSet) -> None:
    # public-order penalties are 5 points each, capped at 15 per subject
    records = [_record(n, "public_order_penalty") for n in range(4)]
    records += [_record(10, "drunk_driving"), _record(11, "fraud_conviction", status="disputed")]
    totals = {t.kind: t.points for t in kind_totals(PERSON, records, psb, as_of=AS_OF)}
    assert totals == {"public_order_penalty": 15, "drunk_driving": 20}
    assert sum(totals.values()) == psb.contribution(PERSON, records, as_of=AS_OF).deductions


def _entry(n: int, *, subject_hash: str = "", subject_hashes: tuple[str, ...] = ()) -> AuditEntry:
    return AuditEntry(
        time=NOW + timedelta(seconds=n),
        query_id=f"q-{n}",
        requester="bank-1",
        purpose="loan_underwriting",
        consent_id="",
        policy_hash="0" * 64,
        decision="allow",
        reason="contribution encrypted under the requester's key",
        shape="breakdown",
        subject_hash=subject_hash,
        subject_hashes=subject_hashes,
    )


def test_audit_lines_keep_the_newest_and_say_so() -> None:
    found = ((_entry(n, subject_hash="a" * 64), False) for n in range(MAX_ITEMS + 3))
    lines, truncated = audit_lines(found)
    assert truncated and len(lines) == MAX_ITEMS
    assert lines[0].query_id == "q-3" and lines[-1].query_id == f"q-{MAX_ITEMS + 2}"
    assert lines[-1].time.endswith("Z")
    assert audit_lines([]) == ((), False)


def _file(psb: RuleSet, records: list[Record], audit: int) -> SubjectFile:
    built = build(
        department=DepartmentId("psb"),
        query_id="sf-1",
        kind=PERSON,
        subject=ALICE,
        rules=psb,
        records=records,
        lists=(),
        audit=((_entry(n, subject_hash="a" * 64), n % 2 == 1) for n in range(audit)),
        as_of=AS_OF,
        now=NOW,
    )
    # what osmanthus.core.subjectpart.seal_part stamps on every part before fitting it
    return dataclasses.replace(built, nonce=nonce_text(NONCE))


def test_a_file_too_large_drops_its_oldest_audit_lines_first(psb: RuleSet) -> None:
    records = [_record(n, "drunk_driving") for n in range(5)]
    built = _file(psb, records, audit=2000)
    budget = 64 * 1024
    fitted, data = fit(built, max_bytes=budget)
    assert len(data) <= budget and fitted.audit_truncated and not fitted.records_truncated
    assert len(fitted.records) == 5
    assert fitted.audit[-1].query_id == "q-1999"
    # and it uses the room it has: one more line would not fit
    assert len(data) > budget - 400
    opened = decode(
        data, source="psb", query_id="sf-1", subject_kind="person", subject_id=ALICE, nonce=NONCE
    )
    assert opened == fitted


def test_then_the_records_that_count_are_kept_longest(psb: RuleSet) -> None:
    counting = [_record(n, "drunk_driving") for n in range(20)]
    expired = [
        _record(100 + n, "drunk_driving", event_start=date(2001, 1, 1) + timedelta(days=n))
        for n in range(400)
    ]
    built = _file(psb, counting + expired, audit=50)
    fitted, data = fit(built, max_bytes=32 * 1024)
    assert len(data) <= 32 * 1024
    assert fitted.audit == () and fitted.audit_truncated and fitted.records_truncated
    kept = {line.record_id for line in fitted.records}
    assert {r.record_id for r in counting} <= kept
    # of the expired, the newest stayed, and the file keeps the store's order
    kept_expired = sorted(line.record_id for line in fitted.records if line.state == EXPIRED)
    assert kept_expired and kept_expired[-1] == "r00499"
    assert [line.record_id for line in fitted.records] == sorted(kept)
    # the totals are never truncated: they are the department's whole part
    assert fitted.deductions == built.deductions == 20 * 20


def test_a_file_that_fits_is_left_as_it_is(psb: RuleSet) -> None:
    built = _file(psb, [_record(1, "drunk_driving")], audit=3)
    fitted, _ = fit(built, max_bytes=64 * 1024)
    assert fitted is built


# --- cases in the file ---------------------------------------------------------------------------


def _case(n: int, *, decided: bool) -> Case:
    """Case n, filed n hours after the first, with a statement and (decided) a reason of the
    longest length allowed, in Chinese: 3 bytes a character in the part's UTF-8 JSON."""
    filed = NOW - timedelta(days=400) + timedelta(hours=n)
    filed_step = CaseEvent(
        at=filed, event="filed", actor="subject", detail="objection about a record"
    )
    events = [filed_step]
    reason = ""
    if decided:
        reason = f"{n:04d}" + "驳" * (MAX_DECISION_REASON_CHARS - 4)
        events.append(CaseEvent(at=filed + timedelta(days=2), event="rejected", actor="officer-7",
                                detail=reason))  # fmt: skip
    return Case(
        case_id=f"case-{n:022d}", department=DepartmentId("psb"), kind=CaseKind.OBJECTION,
        ground=CaseGround.RECORD, target=CaseTarget.RECORD, target_id=f"r{n:05d}",
        subject_kind=PERSON, subject_id=ALICE,
        statement=f"{n:04d}" + "异" * (MAX_STATEMENT_CHARS - 4), commitment_letter="",
        letter_sha256="", filed_at=filed, decide_by=filed.date() + timedelta(days=5),
        reply_by=filed.date() + timedelta(days=14), overdue=False,
        status=CaseStatus.REJECTED if decided else CaseStatus.OPEN,
        decided_at=filed + timedelta(days=2) if decided else None, decision_reason=reason,
        attachments=(), events=tuple(events),
    )  # fmt: skip


def test_the_decisions_reason_is_in_the_case_line_once_not_in_its_step(psb: RuleSet) -> None:
    built = build(
        department=DepartmentId("psb"), query_id="sf-1", kind=PERSON, subject=ALICE, rules=psb,
        records=[], lists=(), audit=(), as_of=AS_OF, now=NOW, cases=[_case(1, decided=True)],
    )  # fmt: skip
    (line,) = built.cases
    assert line.decision_reason.startswith("0001驳")
    assert [(s.event, s.actor, s.detail) for s in line.steps] == [
        ("filed", "subject", "objection about a record"),
        ("rejected", "psb", ""),
    ]


def _fitted_cases(psb: RuleSet, cases: list[Case]) -> tuple[SubjectFile, SubjectFile]:
    """The file with `cases` (given oldest first) and a few records and audit lines, as built
    and as fitted to one sealed part; checks that it fits and that the portal reads it."""
    records = [_record(n, "drunk_driving") for n in range(5)]
    built = dataclasses.replace(
        build(
            department=DepartmentId("psb"), query_id="sf-1", kind=PERSON, subject=ALICE,
            rules=psb, records=records, lists=(),
            audit=((_entry(n, subject_hash="a" * 64), False) for n in range(200)),
            as_of=AS_OF, now=NOW, cases=cases[::-1],
        ),
        nonce=nonce_text(NONCE),
    )  # fmt: skip
    budget = MAX_SEALED_PART_BYTES - SEAL_OVERHEAD
    fitted, data = fit(built, max_bytes=budget)
    assert len(data) <= budget
    assert fitted.cases_truncated and fitted.audit_truncated and not fitted.records_truncated
    assert len(fitted.records) == 5
    # still newest first, and the portal reads it back
    assert [line.case_id for line in fitted.cases] == sorted(
        (line.case_id for line in fitted.cases), reverse=True
    )
    opened = decode(
        data, source="psb", query_id="sf-1", subject_kind="person", subject_id=ALICE, nonce=NONCE
    )
    assert opened == fitted
    return built, fitted


def test_long_cases_lose_the_oldest_decided_texts_first_and_open_cases_stay_whole(
    psb: RuleSet,
) -> None:
    # 40 cases of the longest statements and reasons: about 12 KB each, near twice a part;
    # the newest 10 are open (the default limit of open cases per subject)
    cases = [_case(n, decided=n < 30) for n in range(40)]
    built, fitted = _fitted_cases(psb, cases)
    assert len(encode(built)) > 1.8 * (MAX_SEALED_PART_BYTES - SEAL_OVERHEAD)
    by_id = {line.case_id: line for line in fitted.cases}
    assert len(by_id) == 40  # blanking the texts was enough: no case dropped
    for case in cases[30:]:
        assert by_id[case.case_id].statement == case.statement
    blanked = [c.case_id for c in cases if by_id[c.case_id].statement == ""]
    assert blanked and blanked == [c.case_id for c in cases[: len(blanked)]]
    assert all(by_id[c].decision_reason == "" for c in blanked)
    # the newest decided case kept its texts: only what had to go went
    assert by_id[cases[29].case_id].decision_reason == cases[29].decision_reason


def test_then_the_oldest_decided_cases_go_and_open_cases_stay_whole(psb: RuleSet) -> None:
    # years of decided cases: even without their texts they do not all fit beside 10 open
    cases = [_case(n, decided=n < 500) for n in range(510)]
    _, fitted = _fitted_cases(psb, cases)
    by_id = {line.case_id: line for line in fitted.cases}
    for case in cases[500:]:
        assert by_id[case.case_id].statement == case.statement
    dropped = [c.case_id for c in cases if c.case_id not in by_id]
    assert dropped and dropped == [c.case_id for c in cases[: len(dropped)]]
    assert all(by_id[c.case_id].statement == "" for c in cases[len(dropped) : 500])


# --- AuditLog.entries_about -----------------------------------------------------------------------


def test_entries_about_one_subject_are_found_by_its_hash_and_batches_by_membership(
    tmp_path: Path,
) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", salt=b"s" * 32)
    alice, bob = log.subject_hash(ALICE), log.subject_hash(BOB)
    log.append(_entry(1, subject_hash=alice))
    log.append(_entry(2, subject_hash=bob))
    log.append(_entry(3, subject_hashes=(bob, alice)))
    log.append(_entry(4, subject_hashes=(bob,)))
    log.append(_entry(5))
    log.append(_entry(6, subject_hash=alice))
    found = [(e.query_id, in_batch) for e, in_batch in log.entries_about(alice)]
    assert found == [("q-1", False), ("q-3", True), ("q-6", False)]
    log.close()


def test_a_torn_line_holding_the_hash_is_skipped_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path=path, salt=b"s" * 32)
    alice = log.subject_hash(ALICE)
    log.append(_entry(1, subject_hash=alice))
    log.close()
    # a crash in the middle of a write: half a line, which the next open leaves in place
    torn = _entry(2, subject_hash=alice).to_json()[:-20]
    with path.open("a", encoding="ascii") as handle:
        handle.write(torn)
    log = AuditLog(path=path, salt=b"s" * 32)
    log.append(_entry(3, subject_hash=alice))
    assert [e.query_id for e, _ in log.entries_about(alice)] == ["q-1", "q-3"]
    with pytest.raises(ConfigError, match="not a valid audit entry"):
        list(log.entries())
    log.close()


def test_entries_about_refuses_what_is_not_a_hash(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", salt=b"s" * 32)
    with pytest.raises(InvalidArgument, match="subject_hash"):
        list(log.entries_about(ALICE))
    log.close()
