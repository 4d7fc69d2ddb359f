"""Ingest while serving: rows/s of an upload to a running node against the offline import, and
the node's query latency before and during the upload.

Everything real and local: a platform CA, the tax department's node over mutual TLS, its
operator certificate; the file (`--rows` rows, CSV) goes up through IngestService in chunks
and is applied in one transaction on the node's own read-write connection. The offline import
of the same rows into a store of its own (the node stopped, as before) runs in the same process
first, for the ratio. The queries are what the coordinator asks the node: `--query-threads`
threads each call Contribute (an enterprise's TOTAL for a credit agency's token, its key proven,
the answer encrypted) one after another over their own mutual-TLS channel, timed before the
upload and while it runs (the upload's commit included). The last line of output is one JSON
object of the figures.

    python -m bench.ingest                # 1,000,000 rows
    python -m bench.ingest --rows 20000   # a quick run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import grpc

from bench.query import percentile, wait_until_idle
from certs import PeerRole, cert_paths, init_platform, issue_certificate
from node.importer import RecordImporter
from node.server import NodeConfig, start_node
from node.store import FILE_COLUMNS, RecordStore
from osmanthus.core.catalogue import Catalogue, load_catalogue
from osmanthus.core.clock import china_today
from osmanthus.core.crypto import DEFAULT_TABLE_AFTER_USES
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.ids import make_uscc, organisation_code_check_char
from osmanthus.core.receipts import CONSENT_PUBLIC_KEY_FILE
from osmanthus.core.rules import Record, load_default_rules
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import TokenIssuer, generate_issuer_keypair
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectId, SubjectKind
from osmanthus.core.wire.node import ContributionRequest, contribution_request_to_proto
from osmanthus.v1 import node_pb2_grpc
from sdk import RequesterKeys, load_or_create_keys

DEPARTMENT = DepartmentId("tax")
DEFAULT_ROWS = 1_000_000
#: records already held before the upload (the queries read these)
DEFAULT_HELD = 200_000
DEFAULT_QUERY_THREADS = 2
#: queries per second over all threads: a steady load that leaves the node room, not a flood
DEFAULT_QUERY_RATE = 20.0
#: queries timed before the upload starts (per thread)
_QUERIES_BEFORE = 150
AGENCY = "agency-1"
PURPOSE = "loan_underwriting"
_QUERY_TIMEOUT_S = 60.0
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


class _Queries(threading.Thread):
    """Contribute calls as the coordinator makes them, one after another, timed, until stopped."""

    def __init__(
        self,
        *,
        target: str,
        tls: TlsFiles,
        token: str,
        keys: RequesterKeys,
        catalogue: Catalogue,
        subjects: Sequence[SubjectId],
        offset: int,
    ) -> None:
        super().__init__(name="queries", daemon=True)
        self._channel = secure_channel(target, tls, server_name=node_server_name(DEPARTMENT))
        self._stub = node_pb2_grpc.NodeServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._keys = keys
        self._layout = SlotLayout.for_catalogue(catalogue, SubjectKind.ENTERPRISE, Shape.TOTAL)
        self._slots = catalogue.model(SubjectKind.ENTERPRISE).slot_names()
        self._subjects = subjects
        self._next = offset
        self.stop = threading.Event()
        #: the time between two calls' due times (set before start)
        self.interval_s = 0.0
        #: (start, seconds) of each answered query
        self.times: list[tuple[float, float]] = []
        #: (start, what went wrong) of each failed query: counted in its phase, never timed
        self.errors: list[tuple[float, str]] = []

    def query(self, scheduled: float | None = None) -> None:
        """One Contribute call, timed from `scheduled` (when it was due) if given: a call that
        starts late because the one before took long counts its wait (no coordinated
        omission)."""
        subject = self._subjects[self._next % len(self._subjects)]
        self._next += 7
        request = contribution_request_to_proto(
            ContributionRequest(
                query_id="bench-ingest-" + secrets.token_hex(8),
                subject_kind=SubjectKind.ENTERPRISE,
                subject_id=subject,
                shape=Shape.TOTAL,
                purpose=PURPOSE,
                consent_id="",
                public_key=self._keys.public.to_bytes(),
                modulus_proof=self._keys.modulus_proof,
                slots=self._slots,
                slot_widths=self._layout.widths,
            )
        )
        start = time.perf_counter() if scheduled is None else scheduled
        try:
            self._stub.Contribute(request, timeout=_QUERY_TIMEOUT_S, metadata=self._metadata)
        except grpc.RpcError as exc:
            self.errors.append((start, str(exc)))
            return
        self.times.append((start, time.perf_counter() - start))

    def run(self) -> None:
        """Calls due every `interval_s`, until stopped."""
        try:
            due = time.perf_counter()
            while not self.stop.is_set():
                pause = due - time.perf_counter()
                # pacing the load (an open loop), not waiting for an event
                if pause > 0 and self.stop.wait(pause):
                    break
                self.query(due)
                due += self.interval_s
        finally:
            self._channel.close()


def _ms(values: list[float], q: float) -> float:
    return round(percentile(sorted(values), q) * 1000, 3)


def run(
    *, rows: int, held: int, query_threads: int, query_rate: float, work: Path
) -> dict[str, object]:
    catalogue = load_catalogue()
    rules = load_default_rules(DEPARTMENT, catalogue=catalogue)
    certs = work / "certs"
    init_platform(certs, departments=[DEPARTMENT], requesters=[])
    operator = TlsFiles.from_cert_paths(
        issue_certificate(certs, role=PeerRole.OPERATOR, name=DEPARTMENT, out_dir=work / "op")
    )
    generate_issuer_keypair(work / "issuer.key", work / "issuer.pub")
    keys = load_or_create_keys(work / "agency.key")
    token = TokenIssuer.from_file(work / "issuer.key").issue(
        requester=AGENCY, role=Role.CREDIT_AGENCY, purposes=[PURPOSE],
        key_fingerprint=keys.fingerprint, ttl=timedelta(hours=6),
    )  # fmt: skip
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
        issuer_public_key=work / "issuer.pub", state_dir=work / "state",
        consent_public_key=certs / "coordinator" / CONSENT_PUBLIC_KEY_FILE,
    )  # fmt: skip
    coordinator = TlsFiles.from_cert_paths(
        cert_paths(certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    running = start_node(config, catalogue=catalogue)
    target = f"127.0.0.1:{running.port}"
    threads = [
        _Queries(
            target=target,
            tls=coordinator,
            token=token,
            keys=keys,
            catalogue=catalogue,
            subjects=firms,
            offset=i * 1_000,
        )
        for i in range(query_threads)
    ]
    try:
        for i, thread in enumerate(threads):
            # untimed: the first answers (channels, the key's proof checked) and enough for the
            # node to build its encryption table for the key, as it has for a busy requester
            for _ in range(DEFAULT_TABLE_AFTER_USES + 4 if i == 0 else 3):
                thread.query()
            if thread.errors:
                raise SystemExit(f"the node refused the benchmark's query: {thread.errors[0][1]}")
            thread.times.clear()
        wait_until_idle([os.getpid()])  # the table is built in the background
        for thread in threads:
            thread.interval_s = query_threads / query_rate
            thread.start()
        while min(len(t.times) for t in threads) < _QUERIES_BEFORE:
            time.sleep(0.05)
        with RecordImporter(target, department=DEPARTMENT, tls=operator) as importer:
            upload_start = time.perf_counter()
            outcome = importer.upload(file)
            upload_end = time.perf_counter()
        live_s = upload_end - upload_start
    finally:
        for thread in threads:
            thread.stop.set()
        for thread in threads:
            thread.join()
        running.stop(grace=1.0)
    with RecordStore(live_db, department=DEPARTMENT, read_only=True) as reader:
        assert outcome.added == rows and reader.count() == held + rows
    answered = [t for thread in threads for t in thread.times]
    before = [d for s, d in answered if s < upload_start]
    during = [d for s, d in answered if upload_start <= s <= upload_end]
    errors = [e for thread in threads for e in thread.errors]
    errors_before = [e for s, e in errors if s < upload_start]
    errors_during = [e for s, e in errors if upload_start <= s <= upload_end]
    for what in (errors_before + errors_during)[:5]:
        print(f"a query failed: {what}", file=sys.stderr)
    return {
        "rows": rows,
        "held_before": held,
        "offline_s": round(offline_s, 3),
        "offline_rows_per_s": round(rows / offline_s),
        "live_s": round(live_s, 3),
        "live_rows_per_s": round(rows / live_s),
        "live_over_offline": round(live_s / offline_s, 3),
        "query_threads": query_threads,
        "query_rate_per_s": query_rate,
        "queries_before": len(before),
        "query_before_p50_ms": _ms(before, 50),
        "query_before_p99_ms": _ms(before, 99),
        "queries_during": len(during),
        "query_during_p50_ms": _ms(during, 50) if during else None,
        "query_during_p99_ms": _ms(during, 99) if during else None,
        "query_errors_before": len(errors_before),
        "query_errors_during": len(errors_during),
        "p99_during_over_before": (
            round(percentile(sorted(during), 99) / percentile(sorted(before), 99), 3)
            if during
            else None
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ingest", description=__doc__)
    parser.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the file")
    parser.add_argument("--held", type=int, default=DEFAULT_HELD, help="records held before")
    parser.add_argument(
        "--query-threads",
        type=int,
        default=DEFAULT_QUERY_THREADS,
        help="threads asking the node (each waits for its answer before the next is due)",
    )
    parser.add_argument(
        "--query-rate",
        type=float,
        default=DEFAULT_QUERY_RATE,
        help="queries per second over all threads",
    )
    args = parser.parse_args(argv)
    if args.rows < 1 or args.held < 1 or args.query_threads < 1 or not args.query_rate > 0:
        print(
            "--rows, --held and --query-threads must be at least 1, --query-rate above 0",
            file=sys.stderr,
        )
        return 3
    with tempfile.TemporaryDirectory(prefix="osmanthus-bench-ingest-") as tmp:
        result = run(
            rows=args.rows,
            held=args.held,
            query_threads=args.query_threads,
            query_rate=args.query_rate,
            work=Path(tmp),
        )
    for key, value in result.items():
        print(f"{key:28} {value}")
    print(json.dumps(result, sort_keys=True))
    # a failed query is not a latency: a run with any is no measurement of one
    return 1 if result["query_errors_before"] or result["query_errors_during"] else 0


if __name__ == "__main__":
    sys.exit(main())
