"""The department record store: schema ownership, all-or-nothing imports, bulk inserts, lookups."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from node.store import FILE_COLUMNS, ImportReport, RecordStore
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.errors import ConfigError, FailedPrecondition, ImportRejected, InvalidArgument
from osmanthus.core.ids import make_resident_id, make_uscc, organisation_code_check_char
from osmanthus.core.rules import Record, RuleSet, load_default_rules
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

PERSON = SubjectKind.PERSON
ENTERPRISE = SubjectKind.ENTERPRISE
TODAY = date(2026, 11, 26)
HEADER = ["record_id", "subject_kind", "subject_id", "kind", "quantity", "event_start",
          "event_end", "status"]  # fmt: skip
CATALOGUE: Catalogue = load_catalogue()
TAX = DepartmentId("tax")
TAX_RULES: RuleSet = load_default_rules("tax", catalogue=CATALOGUE)


def pid(i: int) -> SubjectId:
    return make_resident_id(
        region="320508", birth=date(1970, 1, 1) + timedelta(days=i), sequence=i % 1000
    )


def eid(i: int) -> SubjectId:
    body = f"{i:08d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320583",
        organisation=body + organisation_code_check_char(body),
    )


def good_row(i: int) -> list[str]:
    if i % 3 == 0:
        return [f"T-{i}", "enterprise", eid(i), "a_level_taxpayer", "", "2025-01-01",
                "2025-12-31", ""]  # fmt: skip
    return [f"T-{i}", "person", pid(i), "tax_arrears", "1", "2024-03-01", "", "active"]


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture
def store(tmp_path: Path) -> Iterator[RecordStore]:
    with RecordStore(tmp_path / "tax.duckdb", department=TAX) as s:
        yield s


def do_import(store: RecordStore, path: Path) -> ImportReport:
    return store.import_file(path, rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY)


def test_import_valid_csv_and_look_up(store: RecordStore, tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(1, 101)]
    report = do_import(store, write_csv(tmp_path / "in.csv", rows))
    assert (report.path, report.rows, report.corrected, report.withdrawn, report.duplicate) == (
        tmp_path / "in.csv",
        100,
        0,
        0,
        False,
    )
    assert store.count() == 100
    assert store.records_for(PERSON, pid(1)) == [
        Record(
            record_id="T-1",
            subject_kind=PERSON,
            subject_id=pid(1),
            kind="tax_arrears",
            quantity=1,
            event_start=date(2024, 3, 1),
            event_end=None,
            status="active",
        )
    ]
    [rating] = store.records_for(ENTERPRISE, eid(3))
    assert (rating.kind, rating.quantity, rating.status) == ("a_level_taxpayer", 1, "active")
    assert rating.event_end == date(2025, 12, 31)
    # the same id string under the other subject kind is another subject
    assert store.records_for(ENTERPRISE, pid(1)) == []
    assert {r.record_id for r in store.all_records()} == {f"T-{i}" for i in range(1, 101)}


def test_one_bad_row_in_a_hundred_writes_nothing(store: RecordStore, tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(1, 101)]
    rows[55][2] = rows[55][2][:17] + ("0" if rows[55][2][17] != "0" else "1")  # break check char
    with pytest.raises(ImportRejected) as e:
        do_import(store, write_csv(tmp_path / "in.csv", rows))
    assert store.count() == 0
    [(line, field, problem)] = e.value.problems
    assert (line, field) == (57, "subject_id")  # header is line 1, rows[0] is line 2
    assert "check character" in problem
    assert "line 57, subject_id" in str(e.value)
    assert "nothing was imported" in str(e.value)


def test_every_problem_is_reported_with_line_and_field(store: RecordStore, tmp_path: Path) -> None:
    ok = good_row(1)
    rows = [
        ok,
        ["", "person", pid(2), "tax_arrears", "1", "2024-03-01", "", "active"],
        ["T-3", "citizen", pid(3), "tax_arrears", "1", "2024-03-01", "", "active"],
        ["T-4", "person", pid(4), "jaywalking", "1", "2024-03-01", "", "active"],
        ["T-5", "person", pid(5), "tax_arrears", "0", "2024-03-01", "", "active"],
        ["T-6", "person", pid(6), "tax_arrears", "1", "2024/03/01", "", "active"],
        ["T-7", "person", pid(7), "tax_arrears", "1", "2024-02-30", "", "active"],
        ["T-8", "person", pid(8), "tax_arrears", "1", "2024-03-01", "2024-02-01", "active"],
        ["T-9", "person", pid(9), "tax_arrears", "1", "2026-11-27", "", "active"],
        ["T-10", "person", pid(10), "tax_arrears", "1", "2024-03-01", "2027-01-01", "active"],
        ["T-11", "person", pid(11), "tax_arrears", "1", "2024-03-01", "", "closed"],
        ["T-1", "person", pid(12), "tax_arrears", "1", "2024-03-01", "", "active"],
        ["T-13", "enterprise", pid(13), "tax_arrears", "1", "2024-03-01", "", "active"],
        ["T 14", "person", pid(14), "tax_arrears", "1", "", "", "active"],
        ["T-15", "person", pid(15), "a_level_taxpayer", "1", "2024-03-01", "", "active"],
        ["T-16", "person"],
    ]
    with pytest.raises(ImportRejected) as e:
        do_import(store, write_csv(tmp_path / "in.csv", rows))
    assert store.count() == 0
    got = {(line, field) for line, field, _ in e.value.problems}
    assert got == {
        (3, "record_id"),
        (4, "subject_kind"),
        (5, "kind"),
        (6, "quantity"),
        (7, "event_start"),
        (8, "event_start"),
        (9, "event_end"),
        (10, "event_start"),
        (11, "event_end"),
        (12, "status"),
        (13, "record_id"),
        (14, "subject_id"),
        (15, "record_id"),
        (15, "event_start"),
        (16, "kind"),
        (17, "row"),
    }
    text = {(line, field): problem for line, field, problem in e.value.problems}
    assert "'jaywalking' is not a person record kind of department 'tax'" in text[(5, "kind")]
    assert "not a real calendar date" in text[(8, "event_start")]
    assert "is in the future" in text[(10, "event_start")]
    assert "only listings that count while listed" in text[(11, "event_end")]
    assert "duplicate record id 'T-1' (first on line 2)" in text[(13, "record_id")]
    assert "probably 'person'" in text[(14, "subject_id")]
    assert "has 2 fields, the header has 8" in text[(17, "row")]
    assert "16 problem(s) in 15 line(s)" in str(e.value)


def test_records_of_a_kind_the_department_does_not_serve(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "blood.duckdb", department=DepartmentId("blood")) as blood:
        rows = [["B-1", "enterprise", eid(1), "blood_donation", "1", "2024-03-01", "", ""]]
        with pytest.raises(ImportRejected) as e:
            blood.import_file(
                write_csv(tmp_path / "b.csv", rows),
                rules=load_default_rules("blood", catalogue=CATALOGUE),
                catalogue=CATALOGUE,
                today=TODAY,
            )
    assert e.value.problems == [
        (
            2,
            "subject_kind",
            "department 'blood' does not hold enterprise records (see the catalogue)",
        )
    ]


def test_while_listed_records_may_carry_a_planned_end(store: RecordStore, tmp_path: Path) -> None:
    court_rules = load_default_rules("court", catalogue=CATALOGUE)
    with RecordStore(tmp_path / "court.duckdb", department=DepartmentId("court")) as court:
        rows = [
            ["C-1", "person", pid(1), "judgement_defaulter", "", "2026-01-01", "2027-01-01", ""]
        ]
        report = court.import_file(
            write_csv(tmp_path / "c.csv", rows), rules=court_rules, catalogue=CATALOGUE, today=TODAY
        )
        assert report.rows == 1


def test_ids_already_stored_are_rejected_and_nothing_written(
    store: RecordStore, tmp_path: Path
) -> None:
    do_import(store, write_csv(tmp_path / "a.csv", [good_row(i) for i in range(1, 11)]))
    second = [good_row(i) for i in range(10, 20)]  # T-10 is already stored
    with pytest.raises(ImportRejected) as e:
        do_import(store, write_csv(tmp_path / "b.csv", second))
    assert e.value.problems == [
        (2, "record_id", "record 'T-10' is already stored; record ids must be new")
    ]
    assert store.count() == 10
    do_import(store, write_csv(tmp_path / "c.csv", second[1:]))
    assert store.count() == 19


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            [*HEADER, "note"],
            [(1, "note", "unknown column; expected columns: " + ", ".join(FILE_COLUMNS))],
        ),
        (
            [h for h in HEADER if h != "subject_id"],
            [(1, "subject_id", "required column is missing")],
        ),
        (
            [*HEADER[:-1], "kind"],
            [(1, "kind", "column appears twice in the header")],
        ),
    ],
)
def test_wrong_columns(
    store: RecordStore, tmp_path: Path, header: list[str], expected: list[tuple[int, str, str]]
) -> None:
    rows = [good_row(1)[: len(header)] + [""] * max(0, len(header) - 8)]
    with pytest.raises(ImportRejected) as e:
        do_import(store, write_csv(tmp_path / "in.csv", rows, header=header))
    assert e.value.problems == expected
    assert store.count() == 0


def test_optional_columns_take_defaults(store: RecordStore, tmp_path: Path) -> None:
    header = ["subject_id", "record_id", "kind", "subject_kind", "event_start"]
    rows = [[pid(1), "T-1", "tax_arrears", "person", "2020-05-05"]]
    path = tmp_path / "in.csv"
    # a byte-order mark and padded cells, as spreadsheets write them
    with path.open("w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows([[f" {c} " for c in r] for r in rows])
        w.writerow([])
    assert do_import(store, path).rows == 1
    [r] = store.records_for(PERSON, pid(1))
    assert (r.quantity, r.event_end, r.status, r.event_start) == (
        1,
        None,
        "active",
        date(2020, 5, 5),
    )


def test_unusual_record_ids_round_trip(store: RecordStore, tmp_path: Path) -> None:
    rows = [[rid, "person", pid(i), "tax_arrears", "", "2024-01-01", "", ""]
            for i, rid in enumerate(['A,1', 'B"2', "税-3", "x" * 64], start=1)]  # fmt: skip
    do_import(store, write_csv(tmp_path / "in.csv", rows))
    assert sorted(r.record_id for r in store.all_records()) == sorted(r[0] for r in rows)
    too_long = [["y" * 65, "person", pid(9), "tax_arrears", "", "2024-01-01", "", ""]]
    with pytest.raises(ImportRejected, match="line 2, record_id: must be 1-64 characters"):
        do_import(store, write_csv(tmp_path / "long.csv", too_long))


def _to_parquet(csv_path: Path, parquet_path: Path) -> Path:
    con = duckdb.connect()
    try:
        con.execute(
            f"COPY (SELECT * FROM read_csv('{csv_path}', all_varchar = true)) "
            f"TO '{parquet_path}' (FORMAT parquet)"
        )
        return parquet_path
    finally:
        con.close()


def test_parquet_import_and_row_numbers(store: RecordStore, tmp_path: Path) -> None:
    rows = [good_row(i) for i in range(1, 21)]
    good = _to_parquet(write_csv(tmp_path / "g.csv", rows), tmp_path / "g.parquet")
    assert do_import(store, good).rows == 20
    bad_rows = [good_row(i) for i in range(21, 41)]
    bad_rows[4][5] = "yesterday"
    bad = _to_parquet(write_csv(tmp_path / "b.csv", bad_rows), tmp_path / "b.parquet")
    with pytest.raises(ImportRejected, match="row 5, event_start") as e:
        do_import(store, bad)
    assert [(p[0], p[1]) for p in e.value.problems] == [(5, "event_start")]
    assert store.count() == 20


def test_parquet_with_typed_columns(store: RecordStore, tmp_path: Path) -> None:
    path = tmp_path / "typed.parquet"
    con = duckdb.connect()
    con.execute(
        f"COPY (SELECT 'T-1' AS record_id, 'person' AS subject_kind, '{pid(1)}' AS subject_id, "
        "'tax_arrears' AS kind, 2 AS quantity, DATE '2024-01-02' AS event_start, "
        "NULL::DATE AS event_end) "
        f"TO '{path}' (FORMAT parquet)"
    )
    con.close()
    assert do_import(store, path).rows == 1
    [r] = store.records_for(PERSON, pid(1))
    assert (r.quantity, r.event_start, r.event_end) == (2, date(2024, 1, 2), None)


def test_unsupported_or_missing_files(store: RecordStore, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"use \.csv or \.parquet"):
        do_import(store, tmp_path / "records.xlsx")
    with pytest.raises(InvalidArgument, match="file does not exist"):
        do_import(store, tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(ImportRejected, match="the file is empty"):
        do_import(store, empty)
    with pytest.raises(InvalidArgument, match="rules are for department 'psb'"):
        store.import_file(
            empty, rules=load_default_rules("psb", catalogue=CATALOGUE), catalogue=CATALOGUE
        )


def _records(n: int, prefix: str = "S") -> list[Record]:
    return [
        Record(
            record_id=f"{prefix}-{i:06d}",
            subject_kind=PERSON,
            subject_id=pid(i % 500),
            kind="tax_arrears",
            quantity=1 + i % 3,
            event_start=date(2020, 1, 1) + timedelta(days=i % 1000),
            event_end=None if i % 2 else date(2023, 1, 1) + timedelta(days=i % 300),
            status="disputed" if i % 50 == 0 else "active",
        )
        for i in range(n)
    ]


def test_insert_records_bulk_and_rollback(store: RecordStore) -> None:
    records = _records(20_000)
    assert store.insert_records(records) == 20_000
    assert store.count() == 20_000
    assert list(store.all_records()) == sorted(records, key=lambda r: r.record_id)
    clash = [*_records(5, prefix="new"), records[7]]  # one id already stored
    with pytest.raises(InvalidArgument, match="none were written"):
        store.insert_records(clash)
    assert store.count() == 20_000  # the whole batch was rolled back
    assert store.insert_records([]) == 0
    assert not list(store.path.parent.glob(".import-*"))  # temporary files removed


def test_concurrent_lookups(store: RecordStore) -> None:
    store.insert_records(_records(5_000))
    expected = {i: store.records_for(PERSON, pid(i)) for i in range(40)}
    assert all(len(v) == 10 for v in expected.values())
    failures: list[str] = []

    def worker(offset: int) -> None:
        for i in range(40):
            j = (i + offset) % 40
            if store.records_for(PERSON, pid(j)) != expected[j]:
                failures.append(f"subject {j}")

    threads = [threading.Thread(target=worker, args=(k * 10,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def _mixed_records() -> list[Record]:
    """Persons and enterprises, several records per subject inserted out of record_id order,
    unusual record ids, and one id string stored under both subject kinds."""
    records: list[Record] = []
    for i in range(300):
        kind, subject = (ENTERPRISE, eid(i)) if i % 4 == 0 else (PERSON, pid(i))
        for j in reversed(range(i % 5)):  # 0 to 4 records, the highest record_id first
            records.append(
                Record(
                    record_id=f"M-{i:03d}-{j}" if j != 2 else f"税-{i:03d}",
                    subject_kind=kind,
                    subject_id=subject,
                    kind="tax_arrears",
                    quantity=1 + j,
                    event_start=date(2021, 1, 1) + timedelta(days=i),
                    event_end=None if j else date(2024, 1, 1),
                    status="disputed" if i % 7 == 0 else "active",
                )
            )
    shared = pid(1)  # also an id string of a person above, here under the enterprise kind
    records.append(
        Record(
            record_id="M-shared",
            subject_kind=ENTERPRISE,
            subject_id=shared,
            kind="a_level_taxpayer",
            quantity=1,
            event_start=date(2025, 1, 1),
            event_end=None,
            status="active",
        )
    )
    return records


def test_records_for_many_equals_records_for(store: RecordStore) -> None:
    store.insert_records(_mixed_records())
    for kind, ids in (
        (PERSON, [pid(i) for i in range(320)] + [eid(i) for i in range(0, 40, 4)]),
        (ENTERPRISE, [eid(i) for i in range(320)] + [pid(i) for i in range(40)]),
    ):
        expected = {s: found for s in ids if (found := store.records_for(kind, s))}
        assert store.records_for_many(kind, ids) == expected
        # each subject's records in record_id order, whatever the insertion order was
        assert all(
            [r.record_id for r in found] == sorted(r.record_id for r in found)
            for found in expected.values()
        )
        # a handful of ids takes DuckDB's index path rather than the scan: same answer
        few = ids[:5]
        assert store.records_for_many(kind, few) == {s: expected[s] for s in few if s in expected}
    # one id string, two subjects: each kind sees only its own records
    assert [r.record_id for r in store.records_for_many(ENTERPRISE, [pid(1)])[pid(1)]] == [
        "M-shared"
    ]
    assert [r.record_id for r in store.records_for_many(PERSON, [pid(1)])[pid(1)]] == ["M-001-0"]


def test_records_for_many_edge_cases(store: RecordStore) -> None:
    store.insert_records(_mixed_records())
    assert store.records_for_many(PERSON, []) == {}
    once = store.records_for_many(PERSON, [pid(2), pid(3)])
    assert [len(once[pid(2)]), len(once[pid(3)])] == [2, 3]
    assert store.records_for_many(PERSON, [pid(3), pid(2), pid(3), pid(3), pid(2)]) == once
    # subjects without records are absent, not mapped to an empty list
    assert store.records_for_many(PERSON, [pid(4), pid(5), pid(6), pid(999)]) == {
        pid(6): store.records_for(PERSON, pid(6))
    }
    # ids of the other kind: enterprises asked for as persons find nothing
    assert store.records_for_many(PERSON, [eid(4), eid(8)]) == {}
    assert store.records_for_many(ENTERPRISE, [pid(2), pid(3)]) == {}


def test_concurrent_batch_lookups(store: RecordStore) -> None:
    store.insert_records(_records(5_000))
    ids = [pid(i) for i in range(600)]
    expected = store.records_for_many(PERSON, ids)
    assert len(expected) == 500 and all(len(v) == 10 for v in expected.values())
    failures: list[str] = []

    def worker(offset: int) -> None:
        for _ in range(5):
            if store.records_for_many(PERSON, ids[offset:] + ids[:offset]) != expected:
                failures.append(f"offset {offset}")

    threads = [threading.Thread(target=worker, args=(k * 100,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_lookup_columns_are_stored_uncompressed(store: RecordStore) -> None:
    # the batch lookup's speed depends on it (see _SCHEMA): a schema edit must not drop it
    store.insert_records(_records(3_000))
    store._conn.execute("CHECKPOINT")
    rows = store._conn.execute(
        "SELECT DISTINCT column_name, compression FROM pragma_storage_info('records') "
        "WHERE segment_type = 'VARCHAR' AND column_name IN ('record_id', 'subject_id')"
    ).fetchall()
    assert sorted(rows) == [("record_id", "Uncompressed"), ("subject_id", "Uncompressed")]


def test_a_store_with_the_earlier_layout_still_answers(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE meta (department VARCHAR NOT NULL, schema_version INTEGER NOT NULL);"
        "INSERT INTO meta VALUES ('tax', 1);"
        "CREATE TABLE records (record_id VARCHAR PRIMARY KEY, subject_kind VARCHAR NOT NULL, "
        "subject_id VARCHAR NOT NULL, kind VARCHAR NOT NULL, quantity INTEGER NOT NULL, "
        "event_start DATE NOT NULL, event_end DATE, status VARCHAR NOT NULL);"
        "CREATE INDEX records_subject ON records (subject_id);"
    )
    con.close()
    records = _records(1_000)
    with RecordStore(path, department=TAX) as writable:
        writable.insert_records(records)
    with RecordStore(path, department=TAX, read_only=True) as old:
        found = old.records_for_many(PERSON, [pid(7), pid(8)])
        assert found[pid(7)] == old.records_for(PERSON, pid(7))
        assert found[pid(7)] == sorted(
            (r for r in records if r.subject_id == pid(7)), key=lambda r: r.record_id
        )


def test_store_belongs_to_one_department(tmp_path: Path) -> None:
    path = tmp_path / "tax.duckdb"
    with RecordStore(path, department=TAX) as s:
        s.insert_records(_records(3))
    with pytest.raises(ConfigError, match="belongs to department 'tax', not 'psb'"):
        RecordStore(path, department=DepartmentId("psb"))
    with RecordStore(path, department=TAX, read_only=True) as ro:
        assert ro.count() == 3
        with pytest.raises(FailedPrecondition, match="open read-only"):
            ro.insert_records(_records(1, prefix="x"))
    with pytest.raises(ConfigError, match="record store does not exist"):
        RecordStore(tmp_path / "nope.duckdb", department=TAX, read_only=True)
    foreign = tmp_path / "foreign.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE people (name VARCHAR)")
    con.close()
    with pytest.raises(ConfigError, match="no Osmanthus meta table"):
        RecordStore(foreign, department=TAX)
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET schema_version = 99")
    con.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        RecordStore(path, department=TAX)


def test_line_numbers_follow_the_file_and_odd_values_are_refused(
    store: RecordStore, tmp_path: Path
) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        ",".join(HEADER) + "\n"
        f'T-1,person,{pid(1)},"tax\narrears",1,2024-03-01,,active\n'  # one row on lines 2-3
        f"T-2,person,{pid(2)},tax_arrears,\u00b2,2024-03-01,,active\n"  # superscript two
        f"T-3,person,{pid(3)},tax_arrears,\u0663,2024-03-01,,active\n"  # Arabic-Indic three
        f"T-4,person,{pid(4)},tax_arrears,1,1899-12-31,,active\n"
        f"T-5,person,{pid(5)},tax_arrears,1,\u0662\u0660\u0662\u0664-01-01,,active\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportRejected) as e:
        do_import(store, path)
    assert [(line, field) for line, field, _ in e.value.problems] == [
        (2, "kind"),
        (4, "quantity"),
        (5, "quantity"),
        (6, "event_start"),
        (7, "event_start"),
    ]
    assert "is before 1900-01-01" in e.value.problems[3][2]
