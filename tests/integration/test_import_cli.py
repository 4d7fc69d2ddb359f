"""`osmanthus node import`: all rows or none, every bad row reported by line and field."""

from __future__ import annotations

import csv
import subprocess
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from node.store import COLUMNS, RecordStore
from osmanthus.cli import main
from osmanthus.core.clock import china_today
from osmanthus.core.ids import make_resident_id
from osmanthus.core.types import DepartmentId
from osmanthus.demo.launcher import osmanthus_command

DEPARTMENT = "psb"
#: ImportRejected is an InvalidArgument: "invalid input" in the CLI's exit-code table
EXIT_INVALID_INPUT = 3


def _person(sequence: int) -> str:
    return make_resident_id(region="320508", birth=date(1985, 6, 15), sequence=sequence)


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def _good_rows(prefix: str, count: int) -> list[list[str]]:
    kinds = ("drunk_driving", "public_order_penalty", "fraud_conviction")
    start = [f"2021-03-{i % 28 + 1:02d}" for i in range(count)]
    return [
        [f"{prefix}-{i}", "person", _person(i), kinds[i % 3], "1", start[i], "", "active"]
        for i in range(count)
    ]


def _count(db: Path) -> int:
    with RecordStore(db, department=DepartmentId(DEPARTMENT), read_only=True) as store:
        return store.count()


def _import_args(db: Path, file: Path) -> list[str]:
    return ["node", "import", "--department", DEPARTMENT, "--db", str(db), str(file)]


def _bad_csv(path: Path) -> tuple[Path, list[tuple[int, str, str]]]:
    """A CSV with two good rows among bad ones; returns it and (line, field, words) per bad row."""
    good = _person(50)
    wrong_check = good[:17] + ("0" if good[17] != "0" else "1")
    tomorrow = (china_today() + timedelta(days=1)).isoformat()
    rows = [
        ["bad-1", "person", _person(51), "drunk_driving", "1", "2021-01-01", "", "active"],
        ["bad-2", "person", wrong_check, "drunk_driving", "1", "2021-01-01", "", "active"],
        ["bad-3", "person", good, "jaywalking", "1", "2021-01-01", "", "active"],
        ["bad-4", "person", good, "drunk_driving", "1", tomorrow, "", "active"],
        ["bad-5", "person", good, "drunk_driving", "0", "2021-01-01", "", "active"],
        ["bad-6", "person", good, "drunk_driving", "1", "2021/01/01", "", "active"],
        ["bad-7", "person", good, "drunk_driving", "1", "2021-01-01", "", "closed"],
        ["bad-8", "person", _person(52), "fraud_conviction", "1", "2020-05-05", "", "active"],
    ]
    expected = [
        (3, "subject_id", "check character"),
        (4, "kind", "'jaywalking' is not a person record kind"),
        (5, "event_start", "is in the future"),
        (6, "quantity", "'0' is not a whole number"),
        (7, "event_start", "is not a date in the form YYYY-MM-DD"),
        (8, "status", "'closed' is not one of"),
    ]
    return _write_csv(path, rows), expected


def _assert_lists_every_bad_row(stderr: str, expected: list[tuple[int, str, str]]) -> None:
    assert "nothing was imported" in stderr
    listed = [line.strip() for line in stderr.splitlines() if line.startswith("  line ")]
    assert len(listed) == len(expected), stderr
    for (line, field, words), text in zip(expected, listed, strict=True):
        assert text.startswith(f"line {line}: {field}: "), text
        assert words in text
    # the good rows of the bad file are not mentioned: they were fine, just not written
    assert "line 2:" not in stderr and "line 9:" not in stderr


@pytest.fixture
def loaded_db(tmp_path: Path) -> Path:
    """A new department database holding three records, loaded through the CLI."""
    db = tmp_path / f"{DEPARTMENT}.duckdb"
    good = _write_csv(tmp_path / "good.csv", _good_rows("seed", 3))
    assert main(_import_args(db, good)) == 0
    assert _count(db) == 3
    return db


def test_a_good_csv_imports_every_row(
    loaded_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    more = _write_csv(tmp_path / "more.csv", _good_rows("more", 7))
    assert main(_import_args(loaded_db, more)) == 0
    assert f"imported 7 records from {more}" in capsys.readouterr().out
    assert _count(loaded_db) == 3 + 7


def test_a_csv_with_bad_rows_writes_nothing_and_lists_each_bad_row(
    loaded_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    bad, expected = _bad_csv(tmp_path / "bad.csv")
    assert main(_import_args(loaded_db, bad)) == EXIT_INVALID_INPUT
    _assert_lists_every_bad_row(capsys.readouterr().err, expected)
    assert _count(loaded_db) == 3


def test_reimporting_stored_record_ids_writes_nothing(
    loaded_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    again = _write_csv(tmp_path / "again.csv", _good_rows("seed", 3) + _good_rows("new", 2))
    assert main(_import_args(loaded_db, again)) == EXIT_INVALID_INPUT
    err = capsys.readouterr().err
    for line in (2, 3, 4):
        assert f"line {line}: record_id: record 'seed-{line - 2}' is already stored" in err
    assert _count(loaded_db) == 3


def test_the_command_exits_3_on_bad_rows(loaded_db: Path, tmp_path: Path) -> None:
    bad, expected = _bad_csv(tmp_path / "bad.csv")
    done = subprocess.run(
        osmanthus_command(*_import_args(loaded_db, bad)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == EXIT_INVALID_INPUT, done.stderr
    _assert_lists_every_bad_row(done.stderr, expected)
    assert done.stdout == ""
    assert _count(loaded_db) == 3


def test_a_parquet_file_imports(
    loaded_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parquet = tmp_path / "records.parquet"
    values = ", ".join(
        f"('pq-{i}', 'person', '{_person(100 + i)}', 'public_order_penalty', {i + 1}, "
        f"DATE '2022-02-0{i + 1}', CAST(NULL AS DATE), 'active')"
        for i in range(4)
    )
    with duckdb.connect() as conn:
        conn.execute(
            f"COPY (SELECT * FROM (VALUES {values}) AS t({', '.join(COLUMNS)})) "
            f"TO '{parquet}' (FORMAT parquet)"
        )
    capsys.readouterr()
    assert main(_import_args(loaded_db, parquet)) == 0
    assert f"imported 4 records from {parquet}" in capsys.readouterr().out
    assert _count(loaded_db) == 3 + 4
    with RecordStore(loaded_db, department=DepartmentId(DEPARTMENT), read_only=True) as store:
        stored = {r.record_id: r for r in store.all_records()}
    assert stored["pq-2"].quantity == 3
    assert stored["pq-2"].event_start == date(2022, 2, 3)
    assert stored["pq-2"].event_end is None
