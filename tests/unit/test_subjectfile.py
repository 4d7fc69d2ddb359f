"""A subject's file part: canonical JSON out, and only exactly the schema back in."""

from __future__ import annotations

import json
from typing import Any

import pytest

from osmanthus.core.errors import InvalidArgument
from osmanthus.core.subjectfile import (
    AuditLine,
    CaseLine,
    CaseStepLine,
    KindTotal,
    ListLine,
    RecordLine,
    SubjectFile,
    decode,
    encode,
)
from osmanthus.core.subjectseal import nonce_text

WHO = {"source": "tax", "query_id": "q-1", "subject_kind": "person", "subject_id": "S"}
NONCE = b"\x07" * 32
#: what decode is told to expect: the part's own names and the call's nonce
EXPECT = {**WHO, "nonce": NONCE}


def sample() -> SubjectFile:
    return SubjectFile(
        **WHO,
        nonce=nonce_text(NONCE),
        as_of="2026-12-07",
        generated_at="2026-12-07T10:00:00Z",
        rules_version="2026.1",
        records=(
            RecordLine(
                record_id="r1",
                kind="tax_arrears",
                description="欠税 tax arrears",
                category="deduction",
                quantity=1,
                event_start="2025-01-01",
                event_end=None,
                status="active",
                state="counts",
                validity="3y",
                points=5,
                per_quantity=1,
                counts_until="2027-12-31",
            ),
        ),
        kind_totals=(KindTotal(kind="tax_arrears", category="deduction", points=5),),
        deductions=5,
        bonuses={"qualification": 2},
        list_entries=(
            ListLine(
                entry_id="e1",
                list="tax_black",
                colour="black",
                status="in_view",
                legal_basis="basis",
                reason="reason",
                window_start="2026-01-01",
                window_end="2027-01-01",
            ),
        ),
        audit=(
            AuditLine(
                time="2026-12-07T09:00:00Z",
                query_id="q-0",
                requester="bank-a",
                purpose="loan_underwriting",
                shape="breakdown",
                consent_id="c-1",
                decision="allow",
                reason="central-loan-underwriting",
            ),
        ),
        cases=(
            CaseLine(
                case_id="case-AAAAAAAAAAAAAAAAAAAAAA",
                kind="objection",
                ground="record",
                target="record",
                target_id="r1",
                statement="这笔欠税已在2024年缴清 paid in 2024",
                status="open",
                filed_at="2026-12-07T09:30:00Z",
                decide_by="2026-12-10",
                reply_by="2026-12-21",
                overdue=False,
                decided_at=None,
                decision_reason="",
                remedy="",
                attachments=1,
                steps=(
                    CaseStepLine(
                        at="2026-12-07T09:30:00Z", event="filed", actor="subject", detail=""
                    ),
                ),
            ),
        ),
        cases_truncated=True,
        case_key="x" * 43,
    )


def test_round_trip_is_canonical() -> None:
    data = encode(sample())
    assert decode(data, **EXPECT) == sample()
    assert data == encode(decode(data, **EXPECT))
    assert "欠税".encode() in data  # RFC 8785: UTF-8, not \u escapes


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.update(extra=1), "file"),
        (lambda d: d.pop("audit"), "file"),
        (lambda d: d["records"][0].update(quantity=True), "records[0].quantity"),
        (lambda d: d["records"][0].update(quantity="1"), "records[0].quantity"),
        (lambda d: d["records"][0].update(state="counts-ish"), "records.state"),
        (lambda d: d["audit"][0].update(secret="x"), "audit[0]"),
        (lambda d: d.update(bonuses={"a": "1"}), "bonuses"),
        (lambda d: d.update(subject_id="other"), "subject_id"),
        (lambda d: d.update(source="court"), "source"),
        (lambda d: d.update(version=1), "version"),
        (lambda d: d.update(cases=[{"case_id": "case-x"}]), "cases[0]"),
        (
            lambda d: d["cases"][0]["steps"][0].update(actor=None),
            "cases['case-AAAAAAAAAAAAAAAAAAAAAA'].steps[0].actor",
        ),
        (lambda d: d["cases"][0].update(overdue="no"), "cases[0].overdue"),
        (lambda d: d.update(case_key=7), "file.case_key"),
        (lambda d: d.update(cases_truncated="yes"), "file.cases_truncated"),
        (lambda d: d.pop("cases_truncated"), "file"),
        (lambda d: d.update(nonce="replayed"), "nonce"),
    ],
)
def test_anything_but_the_schema_is_refused_naming_the_field(change: Any, field: str) -> None:
    raw = json.loads(encode(sample()))
    change(raw)
    with pytest.raises(InvalidArgument) as info:
        decode(json.dumps(raw).encode(), **EXPECT)
    assert info.value.field == field


def test_duplicate_keys_and_non_json_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="appears twice"):
        decode(b'{"source":"tax","source":"tax"}', **EXPECT)
    with pytest.raises(InvalidArgument, match="not JSON"):
        decode(b"\xff", **EXPECT)
