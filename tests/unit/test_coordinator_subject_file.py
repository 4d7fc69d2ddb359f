"""The coordinator's own part of a subject's file: its audit entries about the subject, the
newest kept when they do not all fit the budget every part keeps to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.subjectfile import AuditLine, SubjectFile, audit_lines, decode, fit
from osmanthus.core.subjectseal import SEAL_OVERHEAD, nonce_text
from osmanthus.core.wire.node import MAX_SEALED_PART_BYTES

AT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
NONCE = b"n" * 32


def _fitted(part: SubjectFile) -> bytes:
    """What osmanthus.core.subjectpart.seal_part seals: the part fitted to the budget."""
    _, data = fit(part, max_bytes=MAX_SEALED_PART_BYTES - SEAL_OVERHEAD)
    return data


def _line(i: int) -> AuditLine:
    return AuditLine(
        time=(AT + timedelta(seconds=i)).isoformat(),
        query_id=f"q_{i:08d}",
        requester="bank-1",
        purpose="loan_underwriting",
        shape="total",
        consent_id="",
        decision="deny",
        reason="central policy: denied " + "x" * 200,
    )


def _file(lines: int) -> SubjectFile:
    return SubjectFile(
        source="coordinator",
        query_id="q_this",
        subject_kind="person",
        subject_id="11010519491231002X",
        as_of="2026-12-07",
        generated_at="2026-12-07T02:00:00Z",
        audit=tuple(_line(i) for i in range(lines)),
        nonce=nonce_text(NONCE),
    )


def _decoded(data: bytes) -> SubjectFile:
    return decode(
        data,
        source="coordinator",
        query_id="q_this",
        subject_kind="person",
        subject_id="11010519491231002X",
        nonce=NONCE,
    )


def test_a_small_part_is_kept_whole() -> None:
    part = _decoded(_fitted(_file(3)))
    assert len(part.audit) == 3 and not part.audit_truncated


def test_a_part_over_the_budget_loses_its_oldest_lines_first() -> None:
    data = _fitted(_file(3000))
    assert len(data) <= MAX_SEALED_PART_BYTES - SEAL_OVERHEAD
    part = _decoded(data)
    assert part.audit_truncated
    assert 0 < len(part.audit) < 3000
    # the newest (this request's own line comes last) always stays
    assert part.audit[-1].query_id == "q_00002999"
    assert [a.query_id for a in part.audit] == sorted(a.query_id for a in part.audit)


def test_entries_about_the_subject_become_lines_batches_marked(tmp_path: Path) -> None:
    log = AuditLog(path=tmp_path / "audit.jsonl", salt=b"s" * 32)
    mine, other = log.subject_hash("A"), log.subject_hash("B")

    def entry(i: int, **subject: object) -> AuditEntry:
        return AuditEntry(
            time=AT + timedelta(seconds=i),
            query_id=f"q_{i}",
            requester="bank-1",
            purpose="loan_underwriting",
            consent_id="",
            policy_hash="",
            decision="allow",
            reason="ok",
            shape="total",
            **subject,  # type: ignore[arg-type]
        )

    log.append(entry(1, subject_hash=mine))
    log.append(entry(2, subject_hash=other))
    log.append(entry(3, subject_hash="", subject_hashes=(other, mine)))
    log.append(entry(4, subject_hash=mine))
    lines, truncated = audit_lines(log.entries_about(mine), keep=10)
    assert [(a.query_id, a.in_batch) for a in lines] == [
        ("q_1", False),
        ("q_3", True),
        ("q_4", False),
    ]
    assert not truncated
    lines, truncated = audit_lines(log.entries_about(mine), keep=2)
    assert [a.query_id for a in lines] == ["q_3", "q_4"] and truncated
    log.close()
