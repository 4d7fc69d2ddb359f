"""Corrections, withdrawals and repeated files in the record store: history, all or nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.store import FILE_COLUMNS, ImportReport, RecordStore
from osmanthus.core.errors import ImportRejected
from tests.unit.test_store import CATALOGUE, PERSON, TAX, TAX_RULES, TODAY, good_row, pid, write_csv


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore(tmp_path / "tax.duckdb", department=TAX) as s:
        s.import_file(
            write_csv(tmp_path / "base.csv", [good_row(i) for i in range(1, 4)]),
            rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY,
        )  # fmt: skip
        yield s


def _file(path: Path, rows: list[list[str]]) -> Path:
    return write_csv(path, rows, header=list(FILE_COLUMNS))


def _import(store: RecordStore, path: Path, actor: str = "operator:tax") -> ImportReport:
    return store.import_file(path, rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY, actor=actor)


def test_a_correction_and_a_withdrawal_keep_who_when_why(
    store: RecordStore, tmp_path: Path
) -> None:
    corrected = good_row(1)
    corrected[4] = "3"
    report = _import(
        store,
        _file(tmp_path / "c.csv", [
            [*corrected, "correct", "quantity was mistyped"],
            ["T-2", "", "", "", "", "", "", "", "withdraw", "entered for the wrong person"],
            [*good_row(9), "", ""],
        ]),
    )  # fmt: skip
    assert (report.rows, report.corrected, report.withdrawn) == (1, 1, 1)
    assert [r.quantity for r in store.records_for(PERSON, pid(1))] == [3]
    assert store.records_for(PERSON, pid(2)) == []
    (fix,) = store.history("T-1")
    assert (fix.action, fix.actor, fix.reason) == (
        "correct",
        "operator:tax",
        "quantity was mistyped",
    )
    assert (fix.before["quantity"], fix.after["quantity"]) == (1, 3)
    (gone,) = store.history("T-2")
    assert gone.action == "withdraw" and gone.after == {}


def test_a_bad_change_refuses_the_whole_file(store: RecordStore, tmp_path: Path) -> None:
    moved = good_row(1)
    moved[2] = pid(7)
    with pytest.raises(ImportRejected) as e:
        _import(
            store,
            _file(tmp_path / "bad.csv", [
                [*good_row(8), "", ""],
                [*moved, "correct", "wrong subject"],
                ["T-3", "", "", "", "", "", "", "", "withdraw", ""],
                ["T-404", "", "", "", "", "", "", "", "withdraw", "never stored"],
            ]),
        )  # fmt: skip
    assert [(line, field) for line, field, _ in e.value.problems] == [
        (3, "subject_id"), (4, "reason"), (5, "record_id"),
    ]  # fmt: skip
    assert store.count() == 3 and store.history("T-1") == ()


def test_the_same_file_is_applied_once(store: RecordStore, tmp_path: Path) -> None:
    path = _file(tmp_path / "new.csv", [[*good_row(5), "", ""]])
    first = _import(store, path)
    again = _import(store, path, actor="someone else")
    assert again.duplicate and again.actor == "operator:tax"
    assert again.at == first.at
    assert store.count() == 4


def test_a_snapshot_reads_one_state_across_lookups(store: RecordStore, tmp_path: Path) -> None:
    with store.snapshot():
        before = store.count()
        writer = threading.Thread(
            target=_import, args=(store, _file(tmp_path / "more.csv", [[*good_row(6), "", ""]]))
        )
        writer.start()
        writer.join()
        assert store.count() == before
    assert store.count() == before + 1
