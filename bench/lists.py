"""Red and black list store: publication and public reads, against bare DuckDB in the same run."""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import duckdb

from bench.query import percentile
from node.lists import ListStore
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.ids import make_uscc, organisation_code_check_char
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind
from osmanthus.core.wire.lists import EntryDraft, PublicQuery

DEPARTMENT = DepartmentId("court")
LIST = "judgement_defaulters"
#: the rows of one publication: the node's largest
PUBLICATION = 10_000


def _codes(count: int, rng: random.Random) -> list[str]:
    bodies = [f"{n:08d}" for n in rng.sample(range(10**8), count)]
    return [
        make_uscc(
            authority="9",
            category="1",
            region="320505",
            organisation=body + organisation_code_check_char(body),
        )
        for body in bodies
    ]


def _drafts(codes: list[str], today: date, prefix: str) -> list[EntryDraft]:
    return [
        EntryDraft(
            entry_id=f"{prefix}-{i:07d}",
            list=LIST,
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=code,
            subject_name=f"Example Trading Co. {i}",
            legal_basis="",
            reason="failed to perform an effective judgement",
            window_start=(today - timedelta(days=i % 300)).isoformat(),
            window_end=(today + timedelta(days=365 - i % 300)).isoformat(),
        )
        for i, code in enumerate(codes)
    ]


def _timed(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=40_000, help="entries already stored")
    parser.add_argument("--reads", type=int, default=500, help="reads timed per kind of read")
    args = parser.parse_args(argv)
    catalogue = load_catalogue()
    rng = random.Random(7)
    today = china_today()
    codes = _codes(args.entries + PUBLICATION, rng)
    with tempfile.TemporaryDirectory() as tmp:
        store = ListStore(Path(tmp) / "lists.duckdb", department=DEPARTMENT, catalogue=catalogue)
        print(f"filling the store with {args.entries} entries …", file=sys.stderr)
        filler = _drafts(codes[: args.entries], today, "old")
        for start in range(0, len(filler), PUBLICATION):
            store.publish(filler[start : start + PUBLICATION], actor="court", today=today)
        fresh = _drafts(codes[args.entries :], today, "new")
        publish_s = _timed(lambda: store.publish(fresh, actor="court", today=today), 1)[0]
        retry_s = _timed(lambda: store.publish(fresh, actor="court", today=today), 1)[0]
        wanted = [SubjectId(c) for c in rng.sample(codes, args.reads)]
        by_subject = [
            _timed(
                lambda s=s: store.public_entries(  # type: ignore[misc]
                    PublicQuery(subject_kind=SubjectKind.ENTERPRISE, subject_id=s), today=today
                ),
                1,
            )[0]
            for s in wanted
        ]
        flags = [
            _timed(lambda s=s: store.flags_in_view(SubjectKind.ENTERPRISE, s, today), 1)[0]  # type: ignore[misc]
            for s in wanted
        ]  # fmt: skip
        page = _timed(
            lambda: store.public_entries(
                PublicQuery(subject_kind=SubjectKind.ENTERPRISE, list=LIST, page_size=100),
                today=today,
            ),
            args.reads // 5,
        )
        store.close()

        # the baseline: the same rows in a bare DuckDB table, no validation, no history
        bare = duckdb.connect(str(Path(tmp) / "bare.duckdb"))
        bare.execute(
            "CREATE TABLE entries (entry_id VARCHAR PRIMARY KEY, list VARCHAR, "
            "subject_id VARCHAR, subject_name VARCHAR, reason VARCHAR, window_start DATE, "
            "window_end DATE)"
        )
        bare.execute("CREATE INDEX entries_subject ON entries (subject_id)")
        rows = [
            (d.entry_id, d.list, d.subject_id, d.subject_name, d.reason, d.window_start,
             d.window_end)
            for d in filler
        ]  # fmt: skip
        bare.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        fresh_rows = [
            (d.entry_id, d.list, d.subject_id, d.subject_name, d.reason, d.window_start,
             d.window_end)
            for d in fresh
        ]  # fmt: skip

        def bare_publish() -> None:
            # one bulk statement (columns as lists): DuckDB's fastest load from Python values,
            # where executemany goes row by row and takes ten times longer
            columns = [list(c) for c in zip(*fresh_rows, strict=True)]
            bare.execute(
                "INSERT INTO entries SELECT unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
                "unnest(?::DATE[]), unnest(?::DATE[])",
                columns,
            )

        bare_publish_s = _timed(bare_publish, 1)[0]
        bare_subject = [
            _timed(
                lambda s=s: bare.execute(  # type: ignore[misc]
                    "SELECT * FROM entries WHERE subject_id = ? AND window_start <= ? "
                    "AND window_end >= ?",
                    [s, today, today],
                ).fetchall(),
                1,
            )[0]
            for s in wanted
        ]
        bare.close()

    def ms(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(statistics.median(values) * 1000, 3),
            "p95_ms": round(percentile(sorted(values), 95) * 1000, 3),
        }

    figures = {
        "entries_stored": args.entries,
        "publication_entries": PUBLICATION,
        "publish_s": round(publish_s, 3),
        "publish_retry_s": round(retry_s, 3),
        "bare_insert_s": round(bare_publish_s, 3),
        "publish_vs_bare": round(publish_s / bare_publish_s, 2),
        "by_subject": ms(by_subject),
        "bare_by_subject": ms(bare_subject),
        "by_subject_vs_bare": round(
            statistics.median(by_subject) / statistics.median(bare_subject), 2
        ),
        "flags_in_view": ms(flags),
        "list_page_100": ms(page),
    }
    print(f"store with {args.entries} entries; one publication of {PUBLICATION} entries")
    print(f"  publish (validated, history, one transaction)  {publish_s:8.3f} s")
    print(f"  the same again (all unchanged)                 {retry_s:8.3f} s")
    print(f"  bare DuckDB bulk insert, same rows (baseline)  {bare_publish_s:8.3f} s"
          f"  → ×{figures['publish_vs_bare']}")  # fmt: skip
    for name, key in (
        ("public entries of one subject", "by_subject"),
        ("bare SELECT of one subject (baseline)", "bare_by_subject"),
        ("flags in view for one subject", "flags_in_view"),
        ("one list page of 100", "list_page_100"),
    ):
        f = figures[key]
        assert isinstance(f, dict)
        print(f"  {name:<46} p50 {f['p50_ms']:7.3f} ms  p95 {f['p95_ms']:7.3f} ms")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
