"""The sync job's pieces: its config file, its state file's transactions, list expiries, packing."""

from __future__ import annotations

import dataclasses
import datetime
import os
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.catalogue import ListColour
from osmanthus.core.durations import parse_duration
from osmanthus.core.errors import ConfigError, FailedPrecondition, InvalidArgument
from osmanthus.core.ids import make_resident_id, mask_subject
from osmanthus.core.lists import EntryId, ListChange, ListChangeEvent, PublicEntry, WithdrawReason
from osmanthus.core.syncbatch import (
    MAX_RECORDS_BYTES,
    BatchKind,
    build_batch,
    grade_record,
    list_change_record,
    record_size,
    sign_batch,
)
from osmanthus.core.types import DepartmentId, SubjectKind
from syncjob.config import load_config
from syncjob.job import RunSummary, _packed, build_batches, is_due, list_change_records
from syncjob.metrics import SyncMetrics
from syncjob.roster import read_roster, shown_refusal
from syncjob.state import (
    ORIGIN,
    OpenEntry,
    OutboxBatch,
    StagedGrade,
    SyncState,
    exclusive,
    running_job,
)

KEY = Ed25519PrivateKey.generate()
NOW = datetime.datetime(2026, 11, 26, 2, 0, 0, tzinfo=datetime.UTC)
TODAY = datetime.date(2026, 11, 26)
RESIDENT = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=17)


# --- the config file ------------------------------------------------------------------------------


def _platform(tmp_path: Path) -> Path:
    """A certs directory holding the files a requester named sync-1 needs (content unread)."""
    certs = tmp_path / "certs"
    (certs / "requesters" / "sync-1").mkdir(parents=True)
    (certs / "ca.pem").write_text("ca")
    for name in ("cert.pem", "key.pem"):
        (certs / "requesters" / "sync-1" / name).write_text(name)
    return certs


FULL = """
sender = "suzhou"
signing_key = "keys/suzhou-sync.key"
state_dir = "state/sync"

[coordinator]
target = "127.0.0.1:50050"
requester = "sync-1"
token_file = "sync-1.jwt"
paillier_keys = "sync-1.paillier"
certs_dir = "certs"

[province]
target = "127.0.0.1:50060"

[grades]
enterprises = "rosters/enterprises.csv"
every = "12h"

[[statistics]]
name = "enterprises.all"
subject_kind = "enterprise"
subjects = "rosters/enterprises.csv"
epsilon = "0.05"
statistics = ["deductions"]

[delivery]
retry_for = "2m"
backoff_initial = "500s"
backoff_max = "600s"
"""


def test_a_full_config_loads_with_paths_relative_to_its_file(tmp_path: Path) -> None:
    _platform(tmp_path)
    path = tmp_path / "sync.toml"
    path.write_text(FULL)
    config = load_config(path)
    assert config.sender == "suzhou" and config.requester == "sync-1"
    assert config.state_dir == tmp_path / "state" / "sync"
    assert config.coordinator.tls.cert == tmp_path / "certs" / "requesters" / "sync-1" / "cert.pem"
    # the province knows the job by the same certificate unless told otherwise
    assert config.province.tls == config.coordinator.tls
    assert config.province.server_name == "province.node.osmanthus"
    assert config.lists_enabled and config.lists_every == datetime.timedelta(0)
    assert config.grades_every == datetime.timedelta(hours=12)
    (spec,) = config.statistics
    assert spec.statistics == ("deductions",) and spec.epsilon == Decimal("0.05")
    assert spec.every == datetime.timedelta(days=1)
    assert config.delivery.retry_for == datetime.timedelta(minutes=2)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (("[province]", "[province]\nretries = 3"), "province.retries", "unknown setting"),
        (('sender = "suzhou"', 'sender = "Suzhou City"'), "sender", "not a sender id"),
        (('every = "12h"', 'every = "half a day"'), "grades.every", "not a duration"),
        (('epsilon = "0.05"', 'epsilon = "-1"'), "statistics[0].epsilon", "positive"),
        (('epsilon = "0.05"', 'epsilon = "0.00001"'), "statistics[0].epsilon", "4 decimal"),
        (
            ('subject_kind = "enterprise"', 'subject_kind = "firm"'),
            "statistics[0].subject_kind",
            "",
        ),
        (('certs_dir = "certs"', 'certs_dir = "nowhere"'), "coordinator.certs_dir", "exist"),
        (('backoff_initial = "500s"', 'backoff_initial = "700s"'), "delivery.backoff_initial", ""),
        (('target = "127.0.0.1:50060"', ""), "province.target", "required"),
    ],
)
def test_a_bad_setting_is_refused_naming_it(
    tmp_path: Path, change: tuple[str, str], field: str, words: str
) -> None:
    _platform(tmp_path)
    path = tmp_path / "sync.toml"
    assert change[0] in FULL
    path.write_text(FULL.replace(change[0], change[1], 1))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == field
    assert words in info.value.message and str(path) in info.value.message


def test_a_statistic_named_twice_and_a_missing_table_are_refused(tmp_path: Path) -> None:
    _platform(tmp_path)
    path = tmp_path / "sync.toml"
    block = FULL[FULL.index("[[statistics]]") : FULL.index("[delivery]")]
    path.write_text(FULL.replace(block, block + block))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "statistics[1].name"
    path.write_text(FULL.replace("[coordinator]", "[coordinatorr]"))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.field == "coordinatorr"


# --- the state file -------------------------------------------------------------------------------


def _batch(state: SyncState, kind: BatchKind, end: str, records: int = 1) -> OutboxBatch:
    sequence, start = state.next_position(kind)
    made = build_batch(
        sender="suzhou",
        kind=kind,
        sequence=sequence,
        watermark_from=start,
        watermark_to=end,
        records=[
            grade_record(
                credit_code=_code(i),
                grade="A",
                score=150,
                as_of=TODAY,
                departments_answered=17,
            )
            for i in range(records)
        ],
        created_at=NOW,
    )
    return OutboxBatch(
        kind=kind,
        sequence=sequence,
        batch_id=made.batch_id,
        watermark_from=start,
        watermark_to=end,
        records=records,
        partial=False,
        signed=sign_batch(made, private_key=KEY),
        built_at=NOW,
        attempts=0,
    )


def _code(number: int) -> str:
    from osmanthus.core.ids import make_uscc, organisation_code_check_char

    organisation = f"MA{number:06d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=organisation + organisation_code_check_char(organisation),
    )


def _state(tmp_path: Path, sender: str = "suzhou") -> SyncState:
    return SyncState(tmp_path / "state", sender=sender, key_id="k")


def test_the_state_is_owner_only_and_bound_to_its_sender(tmp_path: Path) -> None:
    with _state(tmp_path):
        pass
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    with pytest.raises(ConfigError) as info:
        _state(tmp_path, sender="wuxi")
    assert info.value.field == "sender" and "suzhou" in info.value.message
    os.chmod(tmp_path / "state", 0o755)
    with pytest.raises(ConfigError) as opened:
        _state(tmp_path)
    assert "chmod 700" in opened.value.message
    with pytest.raises(FailedPrecondition):
        SyncState(tmp_path / "never-ran", sender="suzhou", key_id=None)


def test_a_stream_continues_after_the_outbox_then_after_the_last_acknowledged_batch(
    tmp_path: Path,
) -> None:
    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        assert state.next_position(BatchKind.GRADES) == (1, ORIGIN)
        first = _batch(state, BatchKind.GRADES, "r1.1")
        state.commit_grades(run, batches=[first], sent=[])
        # an unacknowledged batch is still where the next one continues from
        assert state.next_position(BatchKind.GRADES) == (2, "r1.1")
        assert state.next_position(BatchKind.STATISTICS) == (1, ORIGIN)
        second = _batch(state, BatchKind.GRADES, "r1.2")
        state.commit_grades(run, batches=[second], sent=[])
        assert [b.sequence for b in state.outbox()] == [1, 2]
        assert state.outbox()[0].signed == first.signed  # the same signed bytes, never rebuilt
        state.acknowledge(first, at=NOW)
        state.acknowledge(second, at=NOW)
        assert state.outbox() == []
        assert state.next_position(BatchKind.GRADES) == (3, "r1.2")
        position = state.streams()[BatchKind.GRADES]
        assert (position.sequence, position.watermark) == (2, "r1.2")


def test_a_failed_commit_leaves_nothing_behind(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        batch = _batch(state, BatchKind.LIST_CHANGES, "r1.1", records=0)
        state.commit_list_changes(
            run, batches=[batch], cursors={"court": ("f1", "7")}, opened=[], closed=[],
            complete=True,
        )  # fmt: skip
        # the same batch id again: the insert fails, and the cursor must not move either
        with pytest.raises(Exception, match="UNIQUE"):
            state.commit_list_changes(
                run, batches=[batch], cursors={"court": ("f1", "9")}, opened=[], closed=[],
                complete=True,
            )  # fmt: skip
        assert state.list_cursor("court") == ("f1", "7") and len(state.outbox()) == 1


def test_an_unfinished_run_is_resumed_and_a_new_run_gets_a_new_tag(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        first = state.begin_run(NOW)
        again = state.begin_run(NOW + datetime.timedelta(hours=1))
        assert again.resumed and again.tag == first.tag == "20261126T020000Z.r1"
        state.finish_run(again, now=NOW, summary={})
        # work a resumed run completes is dated by the resumption, so the fresh run that
        # follows does not find it due again
        assert again.stamp == NOW + datetime.timedelta(hours=1) and first.stamp == NOW
        # even at the same second (a clock set back), the run number keeps tags apart
        second = state.begin_run(NOW)
        assert not second.resumed and second.tag == "20261126T020000Z.r2"


def test_only_changed_grades_go_up_and_staged_grades_survive_a_failed_run(
    tmp_path: Path,
) -> None:
    def staged(position: int, code: str, grade: str, score: int) -> StagedGrade:
        return StagedGrade(position, code, grade, score, 17, "2026-11-26", None)

    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        rows = [staged(0, _code(0), "A", 150), staged(1, _code(1), "B", 110)]
        state.stage_grades(run, rows, roster="v1")
        assert [g.credit_code for g in state.changed_grades(run)] == [_code(0), _code(1)]
        state.commit_grades(run, batches=[], sent=list(state.changed_grades(run)))
        state.finish_run(run, now=NOW, summary={})
        nxt = state.begin_run(NOW)
        state.stage_grades(
            nxt,
            [
                staged(0, _code(0), "A", 150),  # unchanged
                staged(1, _code(1), "B", 111),  # score moved, same grade
                StagedGrade(2, "", None, None, None, "2026-11-26", "invalid code"),
            ],
            roster="v1",
        )
        # the run fails here; the next one takes its staged grades over
        state.finish_run(nxt, now=NOW, summary={})
        third = state.begin_run(NOW)
        assert state.adopt_staged_grades(third, roster="v1") == 3
        assert [(g.credit_code, g.score) for g in state.changed_grades(third)] == [(_code(1), 111)]
        assert [g.refused for g in state.refused_grades(third)] == ["invalid code"]
        # the roster changed since: positions mean nothing now, so scoring starts over
        state.finish_run(third, now=NOW, summary={})
        fourth = state.begin_run(NOW)
        assert state.adopt_staged_grades(fourth, roster="v2") == 0
        assert list(state.changed_grades(fourth)) == []


def test_one_job_per_state_directory_and_status_sees_who_holds_it(tmp_path: Path) -> None:
    with exclusive(tmp_path / "state"):
        assert running_job(tmp_path / "state") == os.getpid()
        with pytest.raises(FailedPrecondition) as info, exclusive(tmp_path / "state"):
            pass
        assert "another sync job" in info.value.message
    # the file still names this process, but nobody holds the lock: no job is running
    assert running_job(tmp_path / "state") is None
    with exclusive(tmp_path / "state"):  # released with its holder
        pass


# --- list changes and their expiries --------------------------------------------------------------


def _entry(entry_id: str, *, end: datetime.date, **changes: Any) -> PublicEntry:
    entry = PublicEntry(
        entry_id=EntryId(entry_id),
        department=DepartmentId("court"),
        list="judgement_defaulters",
        colour=ListColour.BLACK,
        subject_kind=SubjectKind.PERSON,
        subject_id=mask_subject(RESIDENT),
        subject_name="张三",
        legal_basis="最高人民法院关于公布失信被执行人名单信息的若干规定",
        reason="拒不履行生效判决确定的给付义务",
        window_start=datetime.date(2026, 1, 1),
        window_end=end,
    )
    return dataclasses.replace(entry, **changes)


def _event(
    entry: PublicEntry, event: ListChange, cursor: str, reason: WithdrawReason | None = None
) -> ListChangeEvent:
    return ListChangeEvent(cursor=cursor, entry=entry, event=event, at=NOW, withdraw_reason=reason)


def test_published_entries_stay_open_until_withdrawn_or_expired() -> None:
    lasting = _entry("a-1", end=datetime.date(2028, 12, 31))
    ended = _entry("a-2", end=datetime.date(2026, 11, 25))  # ended yesterday
    withdrawn = _entry("a-3", end=datetime.date(2028, 12, 31))
    records, opened, closed = list_change_records(
        [
            _event(lasting, ListChange.PUBLISHED, "1"),
            _event(ended, ListChange.PUBLISHED, "2"),
            _event(withdrawn, ListChange.PUBLISHED, "3"),
            _event(withdrawn, ListChange.WITHDRAWN, "4", WithdrawReason.REPAIRED),
        ],
        open_entries=[],
        today=TODAY,
    )
    assert [(r["entry_id"], r["event"]) for r in records] == [
        ("a-1", "published"),
        ("a-2", "published"),
        ("a-3", "published"),
        ("a-3", "withdrawn"),
        ("a-2", "expired"),
    ]
    # it left view at the first moment of the 26th, China time (16:00 UTC on the 25th), but
    # it is reported no earlier than its publication, which came after
    assert records[-1]["event_at"] == "2026-11-26T02:00:00Z"
    assert records[-1]["withdraw_reason"] is None and records[3]["withdraw_reason"] == "repaired"
    assert [e.entry_id for e in opened] == ["a-1"] and closed == []


def test_an_entry_reported_in_an_earlier_run_expires_or_closes_later() -> None:
    old = _entry("b-1", end=datetime.date(2026, 11, 30))
    gone = _entry("b-2", end=datetime.date(2027, 1, 1))
    published = {
        e.entry_id: list_change_record(e, event=ListChange.PUBLISHED, at=NOW) for e in (old, gone)
    }
    known = [
        OpenEntry("court", e.entry_id, e.window_end.isoformat(), published[e.entry_id])
        for e in (old, gone)
    ]
    # before the window ends: nothing to report
    records, opened, closed = list_change_records([], open_entries=known, today=TODAY)
    assert records == [] and opened == [] and closed == []
    records, opened, closed = list_change_records(
        [_event(gone, ListChange.WITHDRAWN, "9", WithdrawReason.ERROR)],
        open_entries=known,
        today=datetime.date(2026, 12, 1),
    )
    assert [(r["entry_id"], r["event"]) for r in records] == [
        ("b-2", "withdrawn"),
        ("b-1", "expired"),
    ]
    # its last day was the 30th: it left view at midnight China time, 16:00 UTC
    assert records[1]["event_at"] == "2026-11-30T16:00:00Z"
    assert closed == [("court", "b-1"), ("court", "b-2")] and opened == []
    # a department whose feed was not read to its end may hold the entry's withdrawal: no
    # expiry is derived for it
    late, _, _ = list_change_records(
        [], open_entries=known, today=datetime.date(2026, 12, 1), complete=frozenset({"tax"})
    )
    assert late == []
    # the expiry record is the published one with the event changed: a batch takes it
    build_batch(
        sender="suzhou", kind=BatchKind.LIST_CHANGES, sequence=1, watermark_from=ORIGIN,
        watermark_to="r1.1", records=records, created_at=NOW,
    )  # fmt: skip


# --- packing and metrics --------------------------------------------------------------------------


def test_records_are_packed_under_the_size_limit_and_a_repeated_record_starts_a_batch() -> None:
    record = list_change_record(
        _entry("c-1", end=datetime.date(2028, 1, 1), reason="理由" * 200),
        event=ListChange.PUBLISHED,
        at=NOW,
    )
    records = [{**record, "entry_id": f"c-{i}"} for i in range(2000)]
    groups = list(_packed(records))
    assert sum(len(g) for g in groups) == 2000 and len(groups) > 1
    for group in groups:
        assert sum(record_size(r) + 1 for r in group) <= MAX_RECORDS_BYTES
    assert [r for g in groups for r in g] == records  # in order, none lost
    repeated = [record, {**record, "event": "withdrawn", "withdraw_reason": "error"}, record]
    assert [len(g) for g in _packed(repeated)] == [2, 1]


def test_metrics_are_written_as_a_prometheus_textfile(tmp_path: Path) -> None:
    metrics = SyncMetrics()
    with _state(tmp_path) as state:
        batch = _batch(state, BatchKind.GRADES, "r1.1", records=3)
    metrics.delivered(batch, duplicate=True)
    metrics.retry()
    metrics.error("deliver grades #4")
    # a process that has just started reads the times back from the state
    with _state(tmp_path) as state:
        state.acknowledge(batch, at=NOW)
        metrics.observe_run(
            RunSummary(run="r1", resumed=False, started_at=NOW),
            outbox=state.outbox_summary(),
            streams=state.streams(),
            last_ok_run=NOW,
            finished=True,
        )
    out = tmp_path / "sync.prom"
    metrics.write_textfile(out)
    text = out.read_text()
    assert 'osmanthus_sync_records_delivered_total{kind="grades"} 3.0' in text
    assert 'osmanthus_sync_duplicate_acks_total{kind="grades"} 1.0' in text
    assert "osmanthus_sync_delivery_retries_total 1.0" in text
    assert 'osmanthus_sync_errors_total{work="deliver grades"} 1.0' in text
    stamp = "1.7956584e+09"  # NOW, as the exposition format writes it
    assert f'osmanthus_sync_last_delivery_timestamp_seconds{{kind="grades"}} {stamp}' in text
    assert f"osmanthus_sync_last_ok_run_timestamp_seconds {stamp}" in text
    assert 'osmanthus_sync_runs_total{outcome="ok"} 1.0' in text
    assert "osmanthus_sync_outbox_batches 0.0" in text


def test_work_is_due_again_one_period_after_the_run_that_did_it_with_a_little_slack() -> None:
    day = datetime.timedelta(days=1)
    assert is_due(None, day, NOW)
    # a daily cron started a few seconds early the next day still finds it due
    assert is_due(NOW, day, NOW + day - datetime.timedelta(seconds=30))
    assert not is_due(NOW, day, NOW + datetime.timedelta(hours=12))
    hourly = datetime.timedelta(hours=1)
    assert is_due(NOW, hourly, NOW + datetime.timedelta(minutes=55))
    assert not is_due(NOW, hourly, NOW + datetime.timedelta(minutes=50))
    assert is_due(NOW, datetime.timedelta(0), NOW)


def test_a_record_the_format_refuses_is_left_out_and_returned_never_holding_the_stream() -> None:
    good = grade_record(
        credit_code=_code(1), grade="A", score=150, as_of=TODAY, departments_answered=17
    )
    bad = {**good, "credit_code": _code(2), "grade": "B+"}
    batches, dropped = build_batches(
        sender="suzhou", kind=BatchKind.GRADES, key=KEY, tag="t.r1", sequence=4, start="t0",
        records=[good, bad], now=NOW,
    )  # fmt: skip
    (batch,) = batches
    assert batch.records == 1 and (batch.sequence, batch.watermark_from) == (4, "t0")
    assert [d["credit_code"] for d in dropped] == [_code(2)]
    assert "records[1].grade" in dropped[0]["_why"]


def test_statistics_staged_by_a_failed_run_are_taken_over_not_lost(tmp_path: Path) -> None:
    with _state(tmp_path) as state:
        run = state.begin_run(NOW)
        state.stage_statistic(run, "all", [{"name": "all.deductions"}], complete=True)
        # the phase failed before its batch was committed; the run still finishes
        state.finish_run(run, now=NOW, summary={})
        nxt = state.begin_run(NOW)
        assert state.staged_statistics(nxt) == {"all": ([{"name": "all.deductions"}], True)}


def test_a_state_that_is_not_a_sync_state_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "sync.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(ConfigError) as info:
        _state(tmp_path)
    assert info.value.field == "state_dir" and "backup" in info.value.message
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as info:
        SyncState(tmp_path / "file", sender="suzhou", key_id="k")
    assert "not a directory" in info.value.message


def test_rosters_are_read_as_excel_writes_them_and_refused_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "roster.csv"
    path.write_text("\ufeffname,subject_id\nA,X1\nB,X2\n\nC,X1\n", encoding="utf-8")
    roster = read_roster(path, field="grades.enterprises")
    assert roster.ids == ("X1", "X2") and roster.lines == (2, 3)
    path.write_bytes("subject_id\n企业\n".encode("gbk"))
    with pytest.raises(ConfigError) as info:
        read_roster(path, field="grades.enterprises")
    assert info.value.field == "grades.enterprises" and "UTF-8" in info.value.message
    path.write_text("subject_id,name\n,A\n")
    with pytest.raises(ConfigError) as info:
        read_roster(path, field="grades.enterprises")
    assert "line 2" in info.value.message
    # a refusal about a value that reads as a person's id never repeats any of it
    shown = shown_refusal(RESIDENT, f"not a credit code: {RESIDENT[2:8]} is not an authority")
    assert RESIDENT[2:8] not in shown


def test_durations_are_capped() -> None:
    with pytest.raises(InvalidArgument):
        parse_duration("999999999d", field="every")
    assert parse_duration("3650d", field="every") == datetime.timedelta(days=3650)


def test_a_withheld_withdrawal_naming_its_entry_closes_the_entry_the_job_reported() -> None:
    entry = _entry("d-1", end=datetime.date(2027, 6, 30))
    published = list_change_record(entry, event=ListChange.PUBLISHED, at=NOW)
    known = [OpenEntry("court", "d-1", "2027-06-30", published)]

    def withheld(entry_id: str) -> ListChangeEvent:
        return ListChangeEvent(
            cursor="12",
            entry=None,
            event=ListChange.WITHDRAWN,
            at=NOW + datetime.timedelta(days=3),
            withdraw_reason=WithdrawReason.ERROR,
            withheld="a text field reads as a resident identity number",
            entry_id=entry_id,
        )

    records, opened, closed = list_change_records(
        [],
        open_entries=known,
        today=TODAY,
        closing=[("court", withheld("d-1")), ("court", withheld("never-reported"))],
    )
    # the withdrawal goes up with the fields the province was sent at publication
    (record,) = records
    assert record == {
        **published,
        "event": "withdrawn",
        "event_at": "2026-11-29T02:00:00Z",
        "withdraw_reason": "error",
    }
    assert closed == [("court", "d-1")] and opened == []
    # and it is not reported expired later
    later, _, _ = list_change_records([], open_entries=[], today=datetime.date(2027, 7, 5))
    assert later == []
