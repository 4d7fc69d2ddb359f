"""One audited decision per request: exactly one entry, allow with its reason or deny with why."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import INTERNAL_ERROR, AuditedRequest, audited
from osmanthus.core.errors import InvalidArgument, PermissionDenied
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import KeyFingerprint, RequesterId, Role

NOW = datetime(2026, 12, 7, 8, 0, tzinfo=UTC)
RESIDENT_ID = "11010519491231002X"


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    with AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32)) as audit_log:
        yield audit_log


def lines(log: AuditLog) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.path.read_text().splitlines()]


def claims(requester: str) -> TokenClaims:
    return TokenClaims(
        requester=RequesterId(requester),
        role=Role.BANK,
        purposes=frozenset(),
        key_fingerprint=KeyFingerprint("0" * 64),
        jti="j",
        issued_at=NOW,
        not_before=NOW,
        expires_at=NOW,
        single_use=False,
        issuer="test",
        audience="test",
    )


def test_an_answered_request_is_one_allow_with_its_reason_and_facts(log: AuditLog) -> None:
    record = AuditedRequest(query_id="q_1", purpose="loan_underwriting", policy_hash="p" * 64)
    with audited(log, record, clock=lambda: NOW) as r:
        r.identify(claims("bank-1"))
        r.allow("sum forwarded", ciphertexts_forwarded=1)
    (entry,) = lines(log)
    assert entry["decision"] == "allow" and entry["reason"] == "sum forwarded"
    assert entry["requester"] == "bank-1" and entry["query_id"] == "q_1"
    assert entry["extra"] == {"ciphertexts_forwarded": 1}
    assert entry["time"] == "2026-12-07T08:00:00Z"


def test_a_refusal_is_one_deny_whose_reason_names_no_part_of_the_subject(log: AuditLog) -> None:
    record = AuditedRequest(query_id="q_2")
    with pytest.raises(InvalidArgument), audited(log, record):
        # a validation message quotes the birth date of the id: the entry must not
        raise InvalidArgument(f"{RESIDENT_ID[6:14]} is not a birth date", field="resident_id")
    (entry,) = lines(log)
    assert entry["decision"] == "deny" and entry["requester"] == "unauthenticated"
    assert RESIDENT_ID[6:14] not in json.dumps(entry)
    assert entry["reason"] == "InvalidArgument: resident_id failed validation"


def test_a_refusal_after_authentication_names_the_requester_and_keeps_its_reason(
    log: AuditLog,
) -> None:
    with pytest.raises(PermissionDenied), audited(log, AuditedRequest(query_id="q_3")) as r:
        r.identify(claims("agency-1"))
        raise PermissionDenied("central policy: no permit for purpose marketing")
    (entry,) = lines(log)
    assert entry["requester"] == "agency-1"
    assert entry["reason"] == "central policy: no permit for purpose marketing"


def test_a_fault_is_recorded_as_an_internal_error_without_its_text(log: AuditLog) -> None:
    with pytest.raises(KeyError), audited(log, AuditedRequest(query_id="q_4")):
        raise KeyError(RESIDENT_ID)
    (entry,) = lines(log)
    assert entry["decision"] == "deny" and entry["reason"] == INTERNAL_ERROR
    assert RESIDENT_ID not in json.dumps(entry)


def test_a_handler_that_answers_without_saying_why_is_a_fault(log: AuditLog) -> None:
    with (
        pytest.raises(AssertionError, match="without recording why"),
        audited(log, AuditedRequest(query_id="q_5")),
    ):
        pass
    assert [e["decision"] for e in lines(log)] == ["deny"]


def test_what_only_a_refusal_needs_is_filled_in_only_for_a_refusal(log: AuditLog) -> None:
    named: list[str] = []

    def name(record: AuditedRequest) -> None:
        named.append(record.query_id)
        record.subject_hash = log.subject_hash(RESIDENT_ID)

    with audited(log, AuditedRequest(query_id="ok", on_refusal=name)) as r:
        r.allow("answered")
    with (
        pytest.raises(PermissionDenied),
        audited(log, AuditedRequest(query_id="no", on_refusal=name)),
    ):
        raise PermissionDenied("refused")
    assert named == ["no"]
    allowed, denied = lines(log)
    assert allowed["subject_hash"] == "" and denied["subject_hash"] == log.subject_hash(RESIDENT_ID)


def test_allow_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="why"):
        AuditedRequest(query_id="q").allow("")
