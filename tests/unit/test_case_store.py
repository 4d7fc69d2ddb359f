"""The node's case store on a real DuckDB file: idempotent filing, per-subject limits, the record
overlay, deadlines on the node's calendar, retention, and attachments encrypted at rest."""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from node.casefiling import case_audit_reason
from node.casekeys import (
    CASE_KEYS_DIR,
    CASE_SEAL_KEY_FILE,
    CASES_KEY_FILE,
    AttachmentCipher,
    CaseKeyring,
    case_key_text,
    case_seal_key,
    load_or_create_key,
)
from node.caseoverlay import EMPTY_OVERLAY
from node.cases import (
    AMEND_CORRECT,
    AMEND_WITHDRAW,
    CASES_FILE,
    REASON_OBJECTION,
    Amendment,
    CaseStore,
    Filing,
)
from osmanthus.core.cases import (
    AttachmentFile,
    CaseCorrection,
    CaseDraft,
    CaseGround,
    CaseKind,
    CaseQuery,
    CaseRemedy,
    CaseStatus,
    CaseTarget,
    encode_draft,
)
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RateLimited,
)
from osmanthus.core.ids import make_resident_id
from osmanthus.core.rules import Record
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.workdays import CaseSettings, WorkCalendar
from tests.casefiles import tiny_pdf, tiny_png

PERSON = SubjectKind.PERSON
ALICE = make_resident_id(region="320505", birth=date(1981, 3, 4), sequence=151)
BOB = make_resident_id(region="320505", birth=date(1979, 7, 8), sequence=262)
#: a Friday: 3 working days on is the Wednesday after
FRIDAY = date(2026, 5, 15)


class Calendar:
    """The node's `today`, moved by the test."""

    def __init__(self, day: date) -> None:
        self.day = day

    def __call__(self) -> date:
        return self.day


@pytest.fixture
def today() -> Calendar:
    return Calendar(FRIDAY)


def _store(tmp_path: Path, today: Calendar, **settings: object) -> CaseStore:
    return CaseStore.open(
        tmp_path,
        department=DepartmentId("tax"),
        settings=CaseSettings(**settings),  # type: ignore[arg-type]
        today=today,
    )


@pytest.fixture
def store(tmp_path: Path, today: Calendar) -> Iterator[CaseStore]:
    with _store(tmp_path, today, filings_per_subject_per_day=3, open_cases_per_subject=4) as s:
        yield s


def _draft(
    target_id: str = "R-1", *, statement: str = "the arrears were paid", **kw: object
) -> CaseDraft:
    values: dict[str, object] = {
        "kind": CaseKind.OBJECTION,
        "ground": CaseGround.RECORD,
        "target": CaseTarget.RECORD,
        "target_id": target_id,
        "statement": statement,
        **kw,
    }
    return CaseDraft(**values).checked()  # type: ignore[arg-type]


def _filing(draft: CaseDraft, *, subject: str = ALICE, nonce: bytes | None = None) -> Filing:
    import hashlib

    return Filing(
        subject_kind=PERSON,
        subject_id=SubjectId(subject),
        nonce=nonce or secrets.token_bytes(32),
        draft=draft,
        body_sha256=hashlib.sha256(encode_draft(draft)).hexdigest(),
    )


def _nothing() -> None:
    pass


def _record(record_id: str = "R-1", subject: str = ALICE, **fields: object) -> Record:
    values: dict[str, object] = {
        "kind": "tax_arrears",
        "quantity": 2,
        "event_start": FRIDAY - timedelta(days=100),
        "event_end": None,
        "status": "active",
        **fields,
    }
    return Record(
        record_id=record_id,
        subject_kind=PERSON,
        subject_id=SubjectId(subject),
        **values,  # type: ignore[arg-type]
    )


# --- filing --------------------------------------------------------------------------------------


def test_a_filing_is_stored_with_its_deadlines_in_working_days(store: CaseStore) -> None:
    receipt = store.file(_filing(_draft()), check_target=_nothing)
    assert not receipt.duplicate
    assert receipt.decide_by == date(2026, 5, 20)  # Friday + 3 working days
    assert receipt.reply_by == date(2026, 5, 29)  # Friday + 10 working days
    case = store.get(receipt.case_id)
    assert case.status is CaseStatus.OPEN and case.subject_id == ALICE
    assert [e.event for e in case.events] == ["filed"]
    assert case.events[0].actor == "subject"
    assert not case.overdue


def test_the_calendar_moves_deadlines_past_holidays(tmp_path: Path, today: Calendar) -> None:
    holidays = frozenset({date(2026, 5, 18), date(2026, 5, 19)})
    with _store(tmp_path, today, calendar=WorkCalendar(holidays=holidays)) as store:
        receipt = store.file(_filing(_draft()), check_target=_nothing)
    assert receipt.decide_by == date(2026, 5, 22)


def test_the_same_nonce_again_answers_the_same_case_and_stores_nothing_new(
    store: CaseStore,
) -> None:
    nonce = secrets.token_bytes(32)
    first = store.file(_filing(_draft(), nonce=nonce), check_target=_nothing)
    # a retry: the same content (sealed afresh by the portal, so other sealed bytes)
    again = store.file(_filing(_draft(), nonce=nonce), check_target=_nothing)
    assert again.duplicate and again.case_id == first.case_id
    assert again.decide_by == first.decide_by and again.filed_at == first.filed_at
    # the same nonce with another statement: a conflict, named
    with pytest.raises(FailedPrecondition) as caught:
        store.file(_filing(_draft(statement="other"), nonce=nonce), check_target=_nothing)
    assert caught.value.field == "case_nonce" and first.case_id in caught.value.message
    # another subject may use the same nonce: idempotency is per subject
    other = store.file(_filing(_draft("R-9"), subject=BOB, nonce=nonce), check_target=_nothing)
    assert other.case_id != first.case_id
    assert store.count() == 2


def test_a_refused_target_leaves_nothing_stored(store: CaseStore) -> None:
    def refuse() -> None:
        raise NotFound("no record 'R-1' about this subject at tax", field="target_id")

    with pytest.raises(NotFound):
        store.file(_filing(_draft(attachments=(_pdf(),))), check_target=refuse)
    assert store.count() == 0
    assert not store.overlay


def test_a_second_open_case_on_the_same_target_is_refused(store: CaseStore) -> None:
    first = store.file(_filing(_draft()), check_target=_nothing)
    with pytest.raises(FailedPrecondition) as caught:
        store.file(_filing(_draft()), check_target=_nothing)
    assert caught.value.field == "target_id" and first.case_id in caught.value.message
    store.decide(first.case_id, outcome=CaseStatus.REJECTED, reason="the record is right",
                 remedy=None, correction=None, officer="tax", amendment=None)  # fmt: skip
    # once decided, the subject may file again
    assert not store.file(_filing(_draft()), check_target=_nothing).duplicate


def test_filings_per_day_are_limited_per_subject_and_counted_on_the_nodes_calendar(
    store: CaseStore, today: Calendar
) -> None:
    for n in range(3):
        store.file(_filing(_draft(f"R-{n}")), check_target=_nothing)
    with pytest.raises(RateLimited) as caught:
        store.file(_filing(_draft("R-3")), check_target=_nothing)
    assert caught.value.field == "limits.filings_per_subject_per_day"
    assert "at most 3 a day" in caught.value.message
    assert caught.value.retry_after_s is not None and caught.value.retry_after_s >= 1
    assert store.count() == 3
    # another subject is not limited by Alice's filings
    store.file(_filing(_draft("B-1"), subject=BOB), check_target=_nothing)
    # the next day Alice may file again, until 4 cases are open at once
    today.day += timedelta(days=1)
    store.file(_filing(_draft("R-3")), check_target=_nothing)
    with pytest.raises(RateLimited) as caught:
        store.file(_filing(_draft("R-4")), check_target=_nothing)
    assert caught.value.field == "limits.open_cases_per_subject"
    assert store.count() == 5


# --- the record overlay --------------------------------------------------------------------------


def test_the_overlay_is_empty_and_returns_the_very_same_lists_without_cases(
    store: CaseStore,
) -> None:
    records = [_record()]
    many = {SubjectId(ALICE): records}
    assert not store.overlay
    assert store.overlay.records(records) is records
    assert store.overlay.records_many(many) is many
    assert EMPTY_OVERLAY.records(records) is records


def test_an_open_case_disputes_its_record_at_once_and_a_rejection_restores_it(
    store: CaseStore,
) -> None:
    records = [_record(), _record("R-2")]
    receipt = store.file(_filing(_draft()), check_target=_nothing)
    read = store.overlay.records(records)
    assert [r.status for r in read] == ["disputed", "active"]
    many = store.overlay.records_many({SubjectId(ALICE): records, SubjectId(BOB): []})
    assert [r.status for r in many[SubjectId(ALICE)]] == ["disputed", "active"]
    store.decide(receipt.case_id, outcome=CaseStatus.REJECTED, reason="the arrears stand",
                 remedy=None, correction=None, officer="tax", amendment=None)  # fmt: skip
    assert store.overlay.records(records) is records


def test_upheld_cases_withdraw_or_correct_records_through_the_record_history(
    store: CaseStore,
) -> None:
    one, two = _record(), _record("R-2", quantity=5)
    withdrawn = store.file(_filing(_draft()), check_target=_nothing)
    store.decide(
        withdrawn.case_id, outcome=CaseStatus.UPHELD, reason="recorded in error",
        remedy=CaseRemedy.WITHDRAW, correction=None, officer="tax",
        amendment=Amendment(record_id="R-1", subject_kind=PERSON, subject_id=SubjectId(ALICE),
                            action=AMEND_WITHDRAW, reason=REASON_OBJECTION,
                            before={"quantity": 2}, after={}),
    )  # fmt: skip
    corrected = store.file(_filing(_draft("R-2")), check_target=_nothing)
    new_start = FRIDAY - timedelta(days=50)
    store.decide(
        corrected.case_id, outcome=CaseStatus.UPHELD, reason="only 3 months were late",
        remedy=CaseRemedy.CORRECT,
        correction=CaseCorrection(quantity=3, event_start=new_start), officer="tax",
        amendment=Amendment(record_id="R-2", subject_kind=PERSON, subject_id=SubjectId(ALICE),
                            action=AMEND_CORRECT, reason=REASON_OBJECTION,
                            before={"quantity": 5, "event_start": two.event_start.isoformat()},
                            after={"quantity": 3, "event_start": new_start.isoformat()}),
    )  # fmt: skip
    (read,) = store.overlay.records([one, two])
    assert read == dataclasses.replace(two, quantity=3, event_start=new_start)
    assert store.overlay.records_many({SubjectId(ALICE): [one]}) == {}
    history = store.amendments()
    assert [(a.record_id, a.action, a.officer) for a in history] == [
        ("R-1", "withdraw", "tax"),
        ("R-2", "correct", "tax"),
    ]
    assert history[1].before["quantity"] == 5 and history[1].after["quantity"] == 3
    case = store.get(corrected.case_id)
    assert case.correction == CaseCorrection(quantity=3, event_start=new_start)
    assert [e.event for e in case.events] == ["filed", "upheld"]
    # a decided case is final
    with pytest.raises(FailedPrecondition):
        store.decide(corrected.case_id, outcome=CaseStatus.REJECTED, reason="no",
                     remedy=None, correction=None, officer="tax", amendment=None)  # fmt: skip


def test_the_overlay_survives_a_restart(tmp_path: Path, today: Calendar) -> None:
    with _store(tmp_path, today) as store:
        store.file(_filing(_draft()), check_target=_nothing)
    with _store(tmp_path, today) as store:
        assert [r.status for r in store.overlay.records([_record()])] == ["disputed"]


# --- deadlines, lists, retention -----------------------------------------------------------------


def test_overdue_is_computed_on_the_nodes_today(store: CaseStore, today: Calendar) -> None:
    receipt = store.file(_filing(_draft()), check_target=_nothing)
    today.day = receipt.decide_by
    assert not store.get(receipt.case_id).overdue
    assert store.list(CaseQuery(overdue_only=True)).cases == ()
    today.day = receipt.decide_by + timedelta(days=1)
    assert store.get(receipt.case_id).overdue
    (listed,) = store.list(CaseQuery(overdue_only=True)).cases
    assert listed.case_id == receipt.case_id and listed.events == ()


def test_cases_are_listed_newest_first_a_page_at_a_time(store: CaseStore, today: Calendar) -> None:
    ids = []
    for n in range(3):
        today.day += timedelta(days=1)
        ids.append(store.file(_filing(_draft(f"R-{n}")), check_target=_nothing).case_id)
    first = store.list(CaseQuery(page_size=2))
    assert [c.case_id for c in first.cases] == ids[::-1][:2] and first.next_page_token
    second = store.list(CaseQuery(page_size=2, page_token=first.next_page_token))
    assert [c.case_id for c in second.cases] == [ids[0]] and not second.next_page_token
    assert store.list(CaseQuery(status=CaseStatus.UPHELD)).cases == ()
    with pytest.raises(InvalidArgument) as caught:
        store.list(CaseQuery(page_token="nonsense"))
    assert caught.value.field == "page_token"


def _pdf() -> AttachmentFile:
    return AttachmentFile(name="receipt.pdf", media_type="application/pdf", content=tiny_pdf())


def test_attachments_are_encrypted_at_rest_and_deleted_with_the_retention_period(
    tmp_path: Path, today: Calendar
) -> None:
    secret = "Tax clearance certificate 4711 for Alice"
    pdf = AttachmentFile(name="clearance.pdf", media_type="application/pdf",
                         content=tiny_pdf(secret))  # fmt: skip
    png = AttachmentFile(name="photo.png", media_type="image/png", content=tiny_png(64, 64))
    with _store(tmp_path, today, retention_days=30) as store:
        receipt = store.file(_filing(_draft(attachments=(pdf, png))), check_target=_nothing)
        info, content = store.attachment(receipt.case_id, 0)
        assert content == pdf.content and info.name == "clearance.pdf" and not info.deleted
        with pytest.raises(NotFound):
            store.attachment(receipt.case_id, 2)
        store._conn.execute("CHECKPOINT")
        raw = (tmp_path / CASES_FILE).read_bytes()
        assert secret.encode() not in raw and pdf.content[:200] not in raw
        assert png.content[16:64] not in raw
        # decided; the period runs from the decision
        store.decide(receipt.case_id, outcome=CaseStatus.REJECTED, reason="no proof",
                     remedy=None, correction=None, officer="tax", amendment=None)  # fmt: skip
        today.day += timedelta(days=30)
        assert store.purge() == 0
        today.day += timedelta(days=1)
        assert store.purge() == 1
        assert store.purge() == 0
        case = store.get(receipt.case_id)
        assert all(a.deleted for a in case.attachments) and len(case.attachments) == 2
        assert case.events[-1].event == "attachments_deleted"
        with pytest.raises(FailedPrecondition) as caught:
            store.attachment(receipt.case_id, 0)
        assert "retention period" in caught.value.message
        # an open case keeps its attachments, whatever the date
        kept = store.file(_filing(_draft("R-2", attachments=(png,))), check_target=_nothing)
        today.day += timedelta(days=400)
        assert store.purge() == 0
        assert store.attachment(kept.case_id, 0)[1] == png.content


def test_an_attachment_moved_to_another_case_does_not_decrypt(
    tmp_path: Path, today: Calendar
) -> None:
    with _store(tmp_path, today) as store:
        one = store.file(_filing(_draft(attachments=(_pdf(),))), check_target=_nothing)
        two = store.file(_filing(_draft("R-2", attachments=(_pdf(),))), check_target=_nothing)
        store._conn.execute(
            "UPDATE attachments SET sealed = (SELECT sealed FROM attachments WHERE case_id = ?) "
            "WHERE case_id = ?",
            [one.case_id, two.case_id],
        )
        with pytest.raises(ConfigError, match="does not decrypt"):
            store.attachment(two.case_id, 0)


def test_the_files_and_keys_are_the_nodes_users_only(tmp_path: Path, today: Calendar) -> None:
    with _store(tmp_path, today):
        pass
    key = case_seal_key(tmp_path)
    for name in (CASES_FILE, CASES_KEY_FILE, CASE_SEAL_KEY_FILE):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
    # created once: the next start reads the same keys
    assert case_key_text(case_seal_key(tmp_path)) == case_key_text(key)
    assert len(case_key_text(key)) == 43 and "=" not in case_key_text(key)
    os.chmod(tmp_path / CASES_KEY_FILE, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_or_create_key(tmp_path / CASES_KEY_FILE, what="the attachments key")
    (tmp_path / CASE_SEAL_KEY_FILE).write_bytes(b"short")
    with pytest.raises(ConfigError, match="holds 5 bytes"):
        case_seal_key(tmp_path)


def test_a_store_of_another_department_is_refused(tmp_path: Path, today: Calendar) -> None:
    with _store(tmp_path, today):
        pass
    with pytest.raises(ConfigError, match="belongs to department 'tax'"):
        CaseStore.open(tmp_path, department=DepartmentId("court"), today=today)


# --- what a case does to its record: objections only, and once -----------------------------------


def _repair_draft(target_id: str = "R-1") -> CaseDraft:
    return _draft(
        target_id,
        kind=CaseKind.REPAIR,
        ground=CaseGround.FULFILLED,
        commitment_letter="本人承诺 I commit",
    )


def _reject(store: CaseStore, case_id: str) -> None:
    store.decide(case_id, outcome=CaseStatus.REJECTED, reason="the record is right",
                 remedy=None, correction=None, officer="tax", amendment=None)  # fmt: skip


def test_a_repair_never_disputes_its_record(store: CaseStore) -> None:
    records = [_record()]
    store.file(_filing(_repair_draft()), check_target=_nothing)
    # the penalty counts until the repair is approved: filing one switches nothing off
    assert store.overlay.records(records) is records
    assert not store.overlay


def test_an_objection_filed_again_after_a_rejection_leaves_the_record_counting(
    store: CaseStore,
) -> None:
    records = [_record(), _record("R-2")]
    first = store.file(_filing(_draft()), check_target=_nothing)
    assert [r.status for r in store.overlay.records(records)] == ["disputed", "active"]
    _reject(store, first.case_id)
    again = store.file(_filing(_draft()), check_target=_nothing)
    # stored and queued like any case, but the record counts while it is open
    assert store.get(again.case_id).status is CaseStatus.OPEN
    assert store.overlay.records(records) is records
    assert "counts until the department decides" in store.get(again.case_id).events[0].detail
    # another record's first objection still disputes it
    store.file(_filing(_draft("R-2")), check_target=_nothing)
    assert [r.status for r in store.overlay.records(records)] == ["active", "disputed"]


def test_a_change_applies_only_to_the_record_of_the_cases_subject(store: CaseStore) -> None:
    store.file(_filing(_draft()), check_target=_nothing)
    # the same record id about another subject (a later import reused it): read as stored
    bobs = [_record(subject=BOB)]
    assert store.overlay.records(bobs) == bobs
    assert store.overlay.records_many({SubjectId(BOB): bobs}) == {SubjectId(BOB): bobs}
    enterprise = dataclasses.replace(_record(), subject_kind=SubjectKind.ENTERPRISE)
    assert store.overlay.records([enterprise]) == [enterprise]
    assert [r.status for r in store.overlay.records([_record()])] == ["disputed"]


# --- the overlay is published before the writer's lock is released ------------------------------


class _WatchedLock:
    """The store's writer lock, noting at each outermost release what a reader sees of R-1:
    a writer waiting for the lock then starts from that overlay."""

    def __init__(self, store: CaseStore) -> None:
        self._lock = threading.RLock()
        self._store = store
        self._depth = 0
        self.seen: list[bool | None] = []

    def __enter__(self) -> _WatchedLock:
        self._lock.acquire()
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            change = self._store.overlay.change("R-1")
            self.seen.append(None if change is None else change.disputed)
        self._lock.release()


def test_each_write_publishes_its_overlay_before_it_releases_the_lock(store: CaseStore) -> None:
    # were the overlay swapped in after the release, a filing and a decision racing on the same
    # record could leave the filing's older overlay (disputed) in place after the decision's
    watched = _WatchedLock(store)
    store._lock = watched  # type: ignore[assignment]
    receipt = store.file(_filing(_draft()), check_target=_nothing)
    assert watched.seen[-1] is True
    watched.seen.clear()
    _reject(store, receipt.case_id)
    assert watched.seen[0] is None


def test_a_filing_and_a_decision_from_two_threads_leave_the_newest_overlay(
    store: CaseStore,
) -> None:
    # a smoke test of two writers at once (no deadlock, no error, the last state wins); the
    # interleaving that lost a newer overlay is played deterministically by the test above
    first = store.file(_filing(_draft()), check_target=_nothing)
    ready = threading.Barrier(2)
    errors: list[BaseException] = []

    def run(work: Callable[[], object]) -> None:
        try:
            ready.wait()
            work()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(lambda: _reject(store, first.case_id),)),
        threading.Thread(
            target=run,
            args=(lambda: store.file(_filing(_draft("R-2")), check_target=_nothing),),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # whichever ran last, the overlay is what the store holds: R-1 counts, R-2 is disputed
    read = store.overlay.records([_record(), _record("R-2")])
    assert [r.status for r in read] == ["active", "disputed"]


# --- crypto-shredding of attachments -------------------------------------------------------------


def _key_files(state_dir: Path) -> list[str]:
    return sorted(p.name for p in (state_dir / CASE_KEYS_DIR).iterdir())


def test_each_case_has_its_own_key_outside_the_database_and_purging_shreds_it(
    tmp_path: Path, today: Calendar
) -> None:
    with _store(tmp_path, today, retention_days=30) as store:
        receipt = store.file(_filing(_draft(attachments=(_pdf(),))), check_target=_nothing)
        plain = store.file(_filing(_draft("R-2")), check_target=_nothing)
        # one key, for the case with attachments only: a private file in a private directory
        assert _key_files(tmp_path) == [f"{receipt.case_id}.key"]
        assert stat.S_IMODE(os.stat(tmp_path / CASE_KEYS_DIR).st_mode) == 0o700
        key_file = tmp_path / CASE_KEYS_DIR / f"{receipt.case_id}.key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        # the database alone and cases.key do not decrypt an attachment: its key is wrapped
        ((sealed,),) = store._conn.execute(
            "SELECT sealed FROM attachments WHERE case_id = ?", [receipt.case_id]
        ).fetchall()
        with pytest.raises(ConfigError):
            AttachmentCipher((tmp_path / CASES_KEY_FILE).read_bytes()).open(
                receipt.case_id, 0, bytes(sealed)
            )
        _reject(store, receipt.case_id)
        _reject(store, plain.case_id)
        today.day += timedelta(days=31)
        assert store.purge() == 1
        # the key is gone: whatever DuckDB or a backup kept of the ciphertext is noise now
        assert _key_files(tmp_path) == []
        keyring = CaseKeyring.open(tmp_path)
        with pytest.raises(ConfigError, match="missing"):
            keyring.cipher(receipt.case_id)
        with pytest.raises(FailedPrecondition, match="retention period"):
            store.attachment(receipt.case_id, 0)


def test_a_filing_that_fails_after_its_key_was_written_leaves_no_key(
    tmp_path: Path, today: Calendar, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _store(tmp_path, today) as store:

        def broken(conn: object = None) -> None:
            raise RuntimeError("the disk filled up")

        monkeypatch.setattr(store, "_build_overlay", broken)
        with pytest.raises(RuntimeError):
            store.file(_filing(_draft(attachments=(_pdf(),))), check_target=_nothing)
        assert store.count() == 0 and _key_files(tmp_path) == []


def test_the_start_removes_keys_no_stored_attachment_needs(tmp_path: Path, today: Calendar) -> None:
    with _store(tmp_path, today) as store:
        kept = store.file(_filing(_draft(attachments=(_pdf(),))), check_target=_nothing)
    keyring = CaseKeyring.open(tmp_path)
    # a filing a crash interrupted before its commit, and a write cut short
    keyring.create("case-" + "A" * 22)
    (tmp_path / CASE_KEYS_DIR / ".case-x.key.0123456789ab.tmp").write_bytes(b"half")
    with _store(tmp_path, today) as store:
        assert _key_files(tmp_path) == [f"{kept.case_id}.key"]
        assert store.attachment(kept.case_id, 0)[1] == _pdf().content


def test_a_key_file_is_never_left_half_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / CASE_SEAL_KEY_FILE

    def crash(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    # the process dies (here: the write fails) before the key is on disk: no key file is left,
    # so the next start makes a whole one instead of refusing a short one
    with monkeypatch.context() as patch:
        patch.setattr(os, "fsync", crash)
        with pytest.raises(ConfigError):
            load_or_create_key(path, what="the case key")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    key = load_or_create_key(path, what="the case key")
    assert len(key) == 32 and path.read_bytes() == key
    assert load_or_create_key(path, what="the case key") == key


# --- what a refusal's audit entry says ----------------------------------------------------------


def test_only_a_refused_target_is_audited_as_no_such_target() -> None:
    target = NotFound("no record with this id about this subject at tax", field="target_id")
    assert case_audit_reason(target) == "NotFound: no such target about this subject"
    case = NotFound("no case case-AAAAAAAAAAAAAAAAAAAAAA at tax", field="case_id")
    assert "no case case-AAAAAAAAAAAAAAAAAAAAAA" in case_audit_reason(case)
