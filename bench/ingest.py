"""Ingest while serving: rows/s of an upload to a running node against the offline import, and
record-store lookup latency before and during the upload.

Everything real and local: a platform CA, the tax department's node over mutual TLS, its
operator certificate; the file (`--rows` rows, CSV) goes up through IngestService in chunks
and is applied in one transaction on the node's own read-write connection. The offline import
of the same rows into a store of its own (the node stopped, as before) runs in the same process
first, for the ratio. The lookups are the node's batch read path (RecordStore.records_for_many
of `--lookup-subjects` subjects, in the node's process and DuckDB instance, on a thread of its
own), timed before the upload and while it runs; they do not go through gRPC, tokens or Paillier
(bench/query.py measures those). The last line of output is one JSON object of the figures.

    python -m bench.ingest                # 1,000,000 rows
    python -m bench.ingest --rows 20000   # a quick run
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from bench.query import percentile
from certs import PeerRole, cert_paths, init_platform, issue_certificate
from node.importer import RecordImporter
from node.server import NodeConfig, start_node
from node.store import FILE_COLUMNS, RecordStore
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.ids import make_uscc, organisation_code_check_char
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record, load_default_rules
from osmanthus.core.tls import TlsFiles
from osmanthus.core.tokens import generate_issuer_keypair
from osmanthus.core.types import DepartmentId, SubjectId, SubjectKind

DEPARTMENT = DepartmentId("tax")
DEFAULT_ROWS = 1_000_000
#: records already held before the upload (lookups read these)
DEFAULT_HELD = 200_000
DEFAULT_LOOKUP_SUBJECTS = 100
#: distinct firms the rows are about
_FIRMS = 50_000
_KINDS = ("tax_arrears", "a_level_taxpayer")


def _firm(n: int) -> SubjectId:
    first8 = f"B{n:07d}"
    return make_uscc(
        authority="9", category="1", region="320505",
        organisation=first8 + organisation_code_check_char(first8),
    )  # fmt: skip


def _records(prefix: str, count: int, firms: Sequence[SubjectId]) -> list[Record]:
    today = china_today()
    return [
        Record(
            record_id=f"{prefix}{i}",
            subject_kind=SubjectKind.ENTERPRISE,
            subject_id=firms[i % len(firms)],
            kind=_KINDS[i % 2],
            quantity=1,
            event_start=today - timedelta(days=1 + i % 300),
            event_end=None,
            status="active",
        )
        for i in range(count)
    ]


def _write_file(path: Path, records: Sequence[Record]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(FILE_COLUMNS)
        for r in records:
            writer.writerow(
                [r.record_id, r.subject_kind.value, r.subject_id, r.kind, r.quantity,
                 r.event_start.isoformat(), "", r.status, "", ""]
            )  # fmt: skip
    return path


class _Lookups(threading.Thread):
    """Batch lookups, one after another, timed, until stopped."""

    def __init__(self, store: RecordStore, subjects: Sequence[SubjectId], size: int) -> None:
        super().__init__(name="lookups", daemon=True)
        self._size = size
        self._store = store
        self._subjects = subjects
        self.stop = threading.Event()
        self.times_s: list[float] = []

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            chunk = [self._subjects[(i + k * 37) % len(self._subjects)] for k in range(self._size)]
            i += 1
            start = time.perf_counter()
            self._store.records_for_many(SubjectKind.ENTERPRISE, chunk)
            self.times_s.append(time.perf_counter() - start)


def _ms(values: list[float], q: float) -> float:
    return round(percentile(sorted(values), q) * 1000, 3)


def run(*, rows: int, held: int, lookup_subjects: int, work: Path) -> dict[str, object]:
    catalogue = load_catalogue()
    rules = load_default_rules(DEPARTMENT, catalogue=catalogue)
    certs = work / "certs"
    init_platform(certs, departments=[DEPARTMENT], requesters=[])
    operator = TlsFiles.from_cert_paths(
        issue_certificate(certs, role=PeerRole.OPERATOR, name=DEPARTMENT, out_dir=work / "op")
    )
    generate_issuer_keypair(work / "issuer.key", work / "issuer.pub")
    firms = [_firm(n) for n in range(_FIRMS)]
    file = _write_file(work / "rows.csv", _records("N", rows, firms))
    # the same held records in both stores
    base = work / "base.duckdb"
    with RecordStore(base, department=DEPARTMENT) as store:
        store.insert_records(_records("H", held, firms))
    offline_db, live_db = work / "offline.duckdb", work / "live.duckdb"
    shutil.copy(base, offline_db)
    shutil.copy(base, live_db)

    with RecordStore(offline_db, department=DEPARTMENT) as store:
        start = time.perf_counter()
        offline = store.import_file(file, rules=rules, catalogue=catalogue)
        offline_s = time.perf_counter() - start
    assert offline.rows == rows

    config = NodeConfig(
        department=DEPARTMENT, db=live_db,
        tls=TlsFiles.from_cert_paths(cert_paths(certs, role=PeerRole.NODE, name=DEPARTMENT)),
        issuer_public_key=work / "issuer.pub", state_dir=work / "state", table_cache_bytes=0,
        consent_public_key=certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
    )  # fmt: skip
    running = start_node(config, catalogue=catalogue)
    try:
        # the node's DuckDB instance, shared in this process: the same snapshots its queries read
        with RecordStore(live_db, department=DEPARTMENT) as reader:
            subjects = firms[: max(1, min(lookup_subjects * 10, len(firms)))]
            before = _Lookups(reader, subjects, lookup_subjects)
            before.start()
            while len(before.times_s) < 200:
                time.sleep(0.01)
            before.stop.set()
            before.join()
            during = _Lookups(reader, subjects, lookup_subjects)
            target = f"127.0.0.1:{running.port}"
            with RecordImporter(target, department=DEPARTMENT, tls=operator) as importer:
                during.start()
                start = time.perf_counter()
                outcome = importer.upload(file)
                live_s = time.perf_counter() - start
                during.stop.set()
                during.join()
            assert outcome.added == rows and reader.count() == held + rows
    finally:
        running.stop(grace=1.0)
    return {
        "rows": rows,
        "held_before": held,
        "offline_s": round(offline_s, 3),
        "offline_rows_per_s": round(rows / offline_s),
        "live_s": round(live_s, 3),
        "live_rows_per_s": round(rows / live_s),
        "live_over_offline": round(live_s / offline_s, 3),
        "lookups_before": len(before.times_s),
        "lookup_before_p50_ms": _ms(before.times_s, 50),
        "lookup_before_p99_ms": _ms(before.times_s, 99),
        "lookups_during": len(during.times_s),
        "lookup_during_p50_ms": _ms(during.times_s, 50) if during.times_s else None,
        "lookup_during_p99_ms": _ms(during.times_s, 99) if during.times_s else None,
        "p99_during_over_before": (
            round(
                percentile(sorted(during.times_s), 99) / percentile(sorted(before.times_s), 99), 3
            )
            if during.times_s
            else None
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the file")
    parser.add_argument("--held", type=int, default=DEFAULT_HELD, help="records held before")
    parser.add_argument(
        "--lookup-subjects",
        type=int,
        default=DEFAULT_LOOKUP_SUBJECTS,
        help="subjects a lookup asks",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.held < 1:
        print("--rows and --held must be at least 1", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-ingest-") as tmp:
        result = run(
            rows=args.rows, held=args.held, lookup_subjects=args.lookup_subjects, work=Path(tmp)
        )
    for key, value in result.items():
        print(f"{key:28} {value}")
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
