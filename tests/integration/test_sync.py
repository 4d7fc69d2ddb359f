"""The provincial sync job as an operator runs it: `osmanthus sync run` processes against a real
federation (nodes and coordinator over mutual TLS) and a real receiver process.

The federation is this module's own (10 departments, 6 of them enterprise), so its coordinator's
ε ledger and rate limits are fresh and its node can be stopped at the end. The receiver runs as
`osmanthus province serve`; what it stored is read from its DuckDB file once it has stopped.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from certs import PeerRole, cert_paths, issue_certificate
from node.officer import ListOfficer
from osmanthus.core import signing
from osmanthus.core.catalogue import Catalogue
from osmanthus.core.ids import make_resident_id
from osmanthus.core.lists import EntryId, NewEntry, WithdrawReason
from osmanthus.core.syncbatch import BatchKind, build_batch, grade_record, sign_batch
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from osmanthus.demo.seed import SeedReport
from province.store import STORE_FILE
from sdk import RequesterKeys
from sdk.province import ProvinceClient
from tests.conftest import PLATFORM_DEPARTMENTS
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    restricted_catalogue_toml,
    start_federation,
    stop_federation,
)
from tests.waiting import EVENT_TIMEOUT_S

SENDER = "suzhou"
RUN_TIMEOUT_S = 120
#: the statistics cohort's ε: the central policy allows 5 a day per requester
EPSILON = "0.01"
ENTERPRISE_LISTS = {"court": "judgement_defaulters", "tax": "major_tax_violators"}


# --- the rig -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_federation(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: Any,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    fed = start_federation(
        tmp_path_factory.mktemp("sync-federation"),
        catalogue=restricted_catalogue(PLATFORM_DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=PLATFORM_DEPARTMENTS,
    )
    yield fed
    stop_federation(fed)


@dataclasses.dataclass
class Rig:
    """Everything an operator sets up for the job: files, a receiver, a config per job state."""

    root: Path
    federation: Federation
    certs: Path
    receiver_certs: Path
    catalogue_file: Path
    roster: Path
    enterprises: list[str]
    signing_key: Path
    token_file: Path
    paillier_keys: Path
    senders: Path
    receiver: Process | None = None
    receiver_port: int = 0

    def start_receiver(
        self, *, state: str = "province", port: int = 0, senders: Path | None = None
    ) -> int:
        args = [
            "province", "serve", "--senders", str(senders or self.senders),
            "--state-dir", str(self.root / "receivers" / state),
            "--certs-dir", str(self.receiver_certs),
            "--listen", f"127.0.0.1:{port}",
        ]  # fmt: skip
        self.receiver = spawn(f"receiver-{state}", osmanthus_command(*args), run_dir=self.root)
        self.receiver_port = self.receiver.wait_ready()
        return self.receiver_port

    def stop_receiver(self) -> None:
        if self.receiver is not None:
            assert self.receiver.stop() == 0
            self.receiver = None

    def stored(self, state: str = "province") -> list[tuple[str, dict[str, Any]]]:
        """(kind, record) of every record the receiver holds; the receiver must be stopped."""
        path = self.root / "receivers" / state / STORE_FILE
        with duckdb.connect(str(path), read_only=True) as conn:
            rows = conn.execute(
                "SELECT b.kind, r.record FROM records r JOIN batches b USING (batch_id) "
                "ORDER BY b.kind, b.sequence, r.record_no"
            ).fetchall()
        return [(kind, json.loads(record)) for kind, record in rows]

    def config(self, name: str, *, port: int, lists: bool = True, grades: bool = True,
               statistics: bool = True, retry_for: str = "60s", roster: Path | None = None,
               catalogue: Path | None = None, signing_key: Path | None = None,
               ) -> Path:  # fmt: skip
        """sync.toml for a job whose state is ROOT/NAME, delivering to 127.0.0.1:PORT."""
        text = f"""
sender = "{SENDER}"
signing_key = "{signing_key or self.signing_key}"
state_dir = "{self.root / name}"
catalogue = "{catalogue or self.catalogue_file}"

[coordinator]
target = "{self.federation.target}"
requester = "sync-1"
token_file = "{self.token_file}"
paillier_keys = "{self.paillier_keys}"
certs_dir = "{self.certs}"

[province]
target = "127.0.0.1:{port}"

[lists]
enabled = {str(lists).lower()}

[delivery]
retry_for = "{retry_for}"
backoff_initial = "1s"
backoff_max = "2s"
"""
        if grades:
            text += f'\n[grades]\nenterprises = "{roster or self.roster}"\n'
        if statistics:
            text += (
                f'\n[[statistics]]\nname = "enterprises.all"\nsubject_kind = "enterprise"\n'
                f'subjects = "{self.roster}"\nepsilon = "{EPSILON}"\n'
                'statistics = ["deductions"]\n'
            )
        path = self.root / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    def run(self, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            osmanthus_command("sync", "run", "--config", str(config), *args),
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )

    def start(self, config: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            osmanthus_command("sync", "run", "--config", str(config)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def status(self, config: Path) -> dict[str, Any]:
        done = subprocess.run(
            osmanthus_command("sync", "status", "--config", str(config), "--json"),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))


@pytest.fixture(scope="module")
def rig(
    tmp_path_factory: pytest.TempPathFactory,
    sync_federation: Federation,
    platform_certs: Path,
) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("sync")
    fed = sync_federation
    # the receiver's node certificate, beside the platform's (its operator lists batches)
    receiver_certs = root / "receiver-certs"
    issue_certificate(platform_certs, role=PeerRole.NODE, name="province",
                      out_dir=receiver_certs / "nodes" / "province")  # fmt: skip
    # the CRL too: a server refuses to start on a --certs-dir without one
    for part in ("ca.pem", "crl.pem", "operator"):
        source = platform_certs / part
        target = receiver_certs / part
        if source.is_dir():
            target.mkdir()
            for child in source.rglob("*"):
                if child.is_file():
                    dest = target / child.relative_to(source)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(child.read_bytes())
        else:
            target.write_bytes(source.read_bytes())
    (root / "keys").mkdir()
    private, public, _ = signing.write_key_pair(root / "keys", "suzhou-sync", what="sender key")
    senders = root / "senders.toml"
    senders.write_text(
        f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["{public}"]\ncertificates = ["sync-1"]\n'
    )
    catalogue_file = root / "catalogue.toml"
    catalogue_file.write_text(restricted_catalogue_toml(PLATFORM_DEPARTMENTS), encoding="utf-8")
    with fed.data.subjects_file.open(encoding="utf-8") as f:
        enterprises = [
            r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"
        ]
    roster = root / "enterprises.csv"
    roster.write_text("subject_id\n" + "".join(f"{e}\n" for e in enterprises))
    keys = fed.keys["sync-1"]
    paillier = root / "sync-1.paillier"
    fd = os.open(paillier, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(keys.private.to_json())
    token = root / "sync-1.jwt"
    token.write_text(
        fed.token(
            "sync-1",
            role=Role.SYNC_JOB,
            purposes=["credit_rescoring", "statistics"],
            ttl=datetime.timedelta(hours=2),
        )
    )
    made = Rig(
        root=root, federation=fed, certs=platform_certs, receiver_certs=receiver_certs,
        catalogue_file=catalogue_file, roster=roster, enterprises=enterprises,
        signing_key=private, token_file=token, paillier_keys=paillier, senders=senders,
    )  # fmt: skip
    yield made
    made.stop_receiver()


@pytest.fixture(scope="module")
def officers(rig: Rig, list_officers: dict[str, TlsFiles]) -> Iterator[dict[str, ListOfficer]]:
    fed = rig.federation
    clients = {
        dept: ListOfficer(f"127.0.0.1:{fed.nodes[dept].port}", department=dept, tls=tls)
        for dept, tls in list_officers.items()
    }
    yield clients
    for client in clients.values():
        client.close()


def _entry(rig: Rig, department: str, number: int, *, end: datetime.date) -> NewEntry:
    return NewEntry(
        entry_id=EntryId(f"sync-{department}-{number:05d}"),
        list=ENTERPRISE_LISTS[department],
        subject_kind=SubjectKind.ENTERPRISE,
        subject_id=rig.enterprises[number % len(rig.enterprises)],  # type: ignore[arg-type]
        subject_name=f"测试企业{number}",
        legal_basis="",
        reason="synthetic entry for the sync job's tests",
        window_start=datetime.date(2026, 1, 1),
        window_end=end,
    )


def _expected_grades(rig: Rig) -> dict[str, tuple[str, int]]:
    """The grade of every roster enterprise, asked by an in-process client in the same way."""
    fed = rig.federation
    with fed.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as client:
        rows = client.batch_scores(
            rig.enterprises, purpose="credit_rescoring", kind=SubjectKind.ENTERPRISE,
            shape=Shape.TOTAL,
        )  # fmt: skip
        return {r.subject_id: (str(r.grade), int(r.score or 0)) for r in rows if r.scored}


def _by_kind(stored: list[tuple[str, dict[str, Any]]], kind: BatchKind) -> list[dict[str, Any]]:
    return [r for k, r in stored if k == kind.value]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the tests ------------------------------------------------------------------------------------


def test_a_run_reports_list_changes_grades_and_statistics_and_the_next_only_what_changed(
    rig: Rig, officers: dict[str, ListOfficer]
) -> None:
    lasting = datetime.date(2028, 6, 30)
    officers["court"].publish([_entry(rig, "court", n, end=lasting) for n in range(3)])
    officers["tax"].publish([_entry(rig, "tax", n, end=lasting) for n in range(2)])
    port = rig.start_receiver(state="first")
    config = rig.config("first", port=port)
    done = rig.run(config)
    assert done.returncode == 0, done.stderr
    assert "run " in done.stdout and "0 duplicates" in done.stdout
    status = rig.status(config)
    assert status["backlog"]["batches"] == 0 and status["last_error"] is None
    assert {k for k, v in status["streams"].items() if v} == {
        "list_changes", "grades", "statistics"
    }  # fmt: skip
    # the next run: nothing changed, grades and statistics are not due again for a day
    officers["court"].withdraw(
        "sync-court-00001", reason=WithdrawReason.REPAIRED, reference="repair 2026-17"
    )
    again = rig.run(config)
    assert again.returncode == 0, again.stderr
    rig.stop_receiver()
    stored = rig.stored("first")
    changes = _by_kind(stored, BatchKind.LIST_CHANGES)
    assert Counter((r["entry_id"], r["event"]) for r in changes) == Counter(
        [(f"sync-court-{n:05d}", "published") for n in range(3)]
        + [(f"sync-tax-{n:05d}", "published") for n in range(2)]
        + [("sync-court-00001", "withdrawn")]
    )
    withdrawn = next(r for r in changes if r["event"] == "withdrawn")
    # published fields only: the withdrawal's reference stays at the court
    assert withdrawn["withdraw_reason"] == "repaired" and "repair 2026-17" not in str(changes)
    grades = _by_kind(stored, BatchKind.GRADES)
    expected = _expected_grades(rig)
    assert {r["credit_code"]: (r["grade"], r["score"]) for r in grades} == expected
    assert len(grades) == len(expected)  # each once
    (statistic,) = _by_kind(stored, BatchKind.STATISTICS)
    assert statistic["name"] == "enterprises.all.deductions"
    assert statistic["cohort_size"] == len(rig.enterprises) and statistic["epsilon"] == EPSILON
    assert statistic["partial"] is False and isinstance(statistic["value"], int)


def test_the_job_waits_for_a_receiver_that_is_down_and_delivers_everything(rig: Rig) -> None:
    port = _free_port()
    # retry_for far beyond the wait below: a slow machine must not make the job give up first
    config = rig.config("down", port=port, statistics=False, retry_for="600s")
    job = rig.start(config)
    try:
        # let it find the receiver down and retry a few times
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:
            state = rig.root / "down" / "sync.sqlite"
            if state.exists() and rig.status(config)["backlog"]["attempts"] >= 2:
                assert rig.status(config)["running"] == job.pid
                break
            assert job.poll() is None, job.communicate()
            time.sleep(0.5)
        else:
            raise AssertionError("the job never retried")
        rig.start_receiver(state="down", port=port)
        out, err = job.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, err
    assert "retry" in err and " 0 duplicates" in out
    retries = int(out.split(" retries")[0].rsplit(" ", 1)[1])
    assert retries >= 2
    rig.stop_receiver()
    stored = rig.stored("down")
    grades = _by_kind(stored, BatchKind.GRADES)
    assert sorted(r["credit_code"] for r in grades) == sorted(_expected_grades(rig))


@pytest.mark.slow
def test_kill_9_at_random_points_then_a_rerun_leaves_every_record_exactly_once(
    rig: Rig, officers: dict[str, ListOfficer]
) -> None:
    lasting = datetime.date(2028, 6, 30)
    # enough list changes for several batches, so that kills land between deliveries too
    officers["tax"].publish([_entry(rig, "tax", n, end=lasting) for n in range(100, 1100)])
    # how many steps a whole first run reports (a line on stderr each), on a state of its own
    port = rig.start_receiver(state="calibration")
    started = time.monotonic()
    calibration = rig.run(rig.config("calibration", port=port))
    assert calibration.returncode == 0, calibration.stderr
    whole = time.monotonic() - started
    steps = len(calibration.stderr.strip().splitlines())
    assert steps >= 3, calibration.stderr
    rig.stop_receiver()
    port = rig.start_receiver(state="killed")
    config = rig.config("killed", port=port)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # each round brings new list changes and starts a job that is killed right after it reports
    # a step chosen at random, anywhere from its start to its last delivery (unless it finished
    # first); a killed job leaves its run to the next. The kill follows the job's progress, not
    # the clock, so that it lands mid-run on a busy machine as on an idle one.
    killed_after: list[str] = []
    published = 1100
    for _ in range(6):
        officers["tax"].publish(
            [_entry(rig, "tax", n, end=lasting) for n in range(published, published + 150)]
        )
        published += 150
        job = rig.start(config)
        assert job.stderr is not None
        # at least one step of a whole run still to come
        printed = [job.stderr.readline() for _ in range(rng.randrange(1, steps))]
        if job.poll() is None:
            os.kill(job.pid, signal.SIGKILL)
            _, err = job.communicate(timeout=RUN_TIMEOUT_S)
            lines = "".join([*printed, err]).strip().splitlines()
            killed_after.append(lines[-1] if lines else "(nothing printed yet)")
        else:
            job.communicate(timeout=RUN_TIMEOUT_S)
    done = rig.run(config)
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    assert rig.status(config)["backlog"]["batches"] == 0
    rig.stop_receiver()
    stored = rig.stored("killed")
    changes = Counter(
        (r["department"], r["entry_id"], r["event"])
        for r in _by_kind(stored, BatchKind.LIST_CHANGES)
    )
    assert all(n == 1 for n in changes.values()), f"seed {seed}: {changes.most_common(3)}"
    tax_published = {e for d, e, ev in changes if d == "tax" and ev == "published"}
    assert {f"sync-tax-{n:05d}" for n in range(100, published)} <= tax_published, f"seed {seed}"
    grades = Counter(r["credit_code"] for r in _by_kind(stored, BatchKind.GRADES))
    assert set(grades) == set(_expected_grades(rig)) and set(grades.values()) == {1}, seed
    statistics = Counter(r["name"] for r in _by_kind(stored, BatchKind.STATISTICS))
    assert statistics == Counter({"enterprises.all.deductions": 1}), f"seed {seed}"
    assert killed_after, f"seed {seed}: every job finished before its kill"
    print(f"seed {seed}; a whole run {whole:.1f} s, {steps} steps; killed after: {killed_after}")


def test_a_batch_delivered_whose_answer_was_lost_is_acknowledged_as_held_not_stored_twice(
    rig: Rig,
) -> None:
    # the roster holds a person's resident id by mistake: it is refused and never repeated
    resident = make_resident_id(region="320505", birth=datetime.date(1979, 3, 4), sequence=41)
    roster = rig.root / "with-a-person.csv"
    roster.write_text(rig.roster.read_text() + f"{resident}\n")
    # the receiver is down: the job builds its batches and leaves them in the outbox
    closed = _free_port()
    config = rig.config("lost", port=closed, lists=False, retry_for="2s", roster=roster)
    first = rig.run(config)
    assert first.returncode == 5, first.stderr
    from syncjob.state import SyncState

    with SyncState(rig.root / "lost", sender=SENDER, key_id=None) as state:
        pending = state.outbox()
    # one deadline for the whole run: once the receiver stayed down for retry_for, the run
    # stopped trying (the statistics batch was never attempted, nor anything a second time)
    assert {b.kind for b in pending} == {BatchKind.GRADES, BatchKind.STATISTICS}
    assert [b.attempts > 0 for b in pending] == [True, False]
    # the refused roster line is named by its line, never by its value
    assert f"line {len(rig.enterprises) + 2}:" in first.stdout
    # the first batch did reach the receiver, but its answer never came back to the job
    port = rig.start_receiver(state="lost")
    tls = TlsFiles.from_cert_paths(cert_paths(rig.certs, role=PeerRole.REQUESTER, name="sync-1"))
    with ProvinceClient(f"127.0.0.1:{port}", tls=tls) as province:
        assert not province.deliver(pending[0].signed).duplicate
    # renumbering now would store the held batch's records a second time: refused
    config = rig.config("lost", port=port, lists=False, roster=roster)
    rebase = subprocess.run(
        osmanthus_command("sync", "rebase", "--config", str(config), "--kind", "grades"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rebase.returncode == 4 and "already holds" in rebase.stderr, rebase.stderr
    done = rig.run(config)
    assert done.returncode == 0, done.stderr
    assert " 1 duplicates" in done.stdout
    status = rig.status(config)
    rig.stop_receiver()
    grades = Counter(r["credit_code"] for r in _by_kind(rig.stored("lost"), BatchKind.GRADES))
    assert set(grades.values()) == {1}
    assert len(grades) == sum(b.records for b in pending if b.kind is BatchKind.GRADES)
    # no trace of the person's id (nor of its digits) in what the job printed or kept
    kept = "".join(
        p.read_bytes().decode("latin-1") for p in (rig.root / "lost").iterdir() if p.is_file()
    )
    for text in (first.stdout, first.stderr, done.stdout, done.stderr, json.dumps(status), kept):
        assert resident not in text and resident[6:14] not in text


def test_a_roster_the_job_cannot_read_fails_its_phase_not_the_run_nor_later_runs(
    rig: Rig, officers: dict[str, ListOfficer]
) -> None:
    roster = rig.root / "gbk.csv"
    roster.write_bytes("subject_id,名称\n".encode("gbk"))  # Excel on a Chinese Windows
    port = rig.start_receiver(state="gbk")
    config = rig.config("gbk", port=port, statistics=False, roster=roster)
    done = rig.run(config)
    assert done.returncode == 3, done.stderr
    assert "grades.enterprises" in done.stdout and "UTF-8" in done.stdout
    status = rig.status(config)
    assert status["last_run"]["finished_at"] is not None  # finished: nothing holds the next
    officers["court"].publish([_entry(rig, "court", 700, end=datetime.date(2028, 6, 30))])
    again = rig.run(config)
    assert again.returncode == 3
    rig.stop_receiver()
    changes = {
        (r["entry_id"], r["event"]) for r in _by_kind(rig.stored("gbk"), BatchKind.LIST_CHANGES)
    }
    assert ("sync-court-00700", "published") in changes


def test_a_department_the_coordinator_refuses_does_not_hold_back_the_others(
    rig: Rig, officers: dict[str, ListOfficer]
) -> None:
    # the job's catalogue names list departments this federation's coordinator does not serve
    from osmanthus.core.catalogue import default_catalogue_path, load_catalogue

    officers["court"].publish([_entry(rig, "court", 800, end=datetime.date(2028, 6, 30))])
    port = rig.start_receiver(state="refused-department")
    config = rig.config(
        "refused-department", port=port, grades=False, statistics=False,
        catalogue=default_catalogue_path(),
    )  # fmt: skip
    done = rig.run(config)
    served = {str(t.department) for t in rig.federation.catalogue.lists}
    assert done.returncode == 3, done.stderr
    refused = {str(t.department) for t in load_catalogue().lists} - served
    assert refused  # the default catalogue has list departments this federation lacks
    for department in refused:
        assert f"lists {department}: " in done.stdout  # refused, named
    rig.stop_receiver()
    stored = _by_kind(rig.stored("refused-department"), BatchKind.LIST_CHANGES)
    assert ("court", "sync-court-00800") in {(r["department"], r["entry_id"]) for r in stored}
    assert {r["department"] for r in stored} <= served


def test_batches_signed_before_a_key_change_go_up_signed_with_the_new_key(rig: Rig) -> None:
    # built and signed with the old key while the receiver was down
    closed = _free_port()
    done = rig.run(
        rig.config("rotated", port=closed, lists=False, statistics=False, retry_for="1s")
    )
    assert done.returncode == 5
    # the city changed keys, and the province knows only the new one
    new_key, new_public, _ = signing.write_key_pair(
        rig.root / "rotated-key", "new", what="sender key"
    )
    senders = rig.root / "rotated-senders.toml"
    senders.write_text(
        f'[[sender]]\nid = "{SENDER}"\npublic_keys = ["{new_public}"]\ncertificates = ["sync-1"]\n'
    )
    port = rig.start_receiver(state="rotated", senders=senders)
    config = rig.config("rotated", port=port, lists=False, statistics=False, signing_key=new_key)
    again = rig.run(config)
    assert again.returncode == 0, again.stderr
    rig.stop_receiver()
    assert len(_by_kind(rig.stored("rotated"), BatchKind.GRADES)) == len(_expected_grades(rig))


def test_batches_waiting_in_the_earlier_signature_format_go_up_in_the_envelope(rig: Rig) -> None:
    # built while the receiver was down; then the job's state is put back as an earlier
    # release left it: each waiting batch signed with a bare Ed25519 signature
    closed = _free_port()
    config = rig.config("legacy", port=closed, lists=False, statistics=False, retry_for="1s")
    assert rig.run(config).returncode == 5
    key = signing.load_private_key(rig.signing_key)
    with sqlite3.connect(rig.root / "legacy" / "sync.sqlite") as db:
        waiting = db.execute("SELECT batch_id, payload FROM outbox").fetchall()
        assert waiting
        for batch_id, payload in waiting:
            legacy = key.sign(b"osmanthus-sync-batch/1\n" + bytes(payload))
            db.execute("UPDATE outbox SET signature = ? WHERE batch_id = ?", (legacy, batch_id))
    port = rig.start_receiver(state="legacy")
    config = rig.config("legacy", port=port, lists=False, statistics=False)
    done = rig.run(config)
    assert done.returncode == 0, done.stderr
    rig.stop_receiver()
    # signed anew before delivery: the receiver, which reads the envelope only, stored them all
    assert len(_by_kind(rig.stored("legacy"), BatchKind.GRADES)) == len(_expected_grades(rig))
    path = rig.root / "receivers" / "legacy" / STORE_FILE
    with duckdb.connect(str(path), read_only=True) as conn:
        signatures = [bytes(r[0]) for r in conn.execute("SELECT signature FROM batches").fetchall()]
    assert signatures and all(b".." in s and len(s) > 64 for s in signatures)


def test_after_a_receiver_reset_rebase_renumbers_the_waiting_batches_to_follow_it(
    rig: Rig, officers: dict[str, ListOfficer]
) -> None:
    port = rig.start_receiver(state="before-reset")
    config = rig.config("reset", port=port, grades=False, statistics=False)
    assert rig.run(config).returncode == 0
    rig.stop_receiver()
    # the province lost its store; the job's next batch continues a stream it no longer has
    officers["tax"].publish([_entry(rig, "tax", 2500, end=datetime.date(2028, 6, 30))])
    port = rig.start_receiver(state="after-reset")
    config = rig.config("reset", port=port, grades=False, statistics=False)
    gap = rig.run(config)
    assert gap.returncode == 4 and "gap" in gap.stdout, gap.stdout + gap.stderr
    assert "gap" in rig.status(config)["last_error"]["message"]
    rebased = subprocess.run(
        osmanthus_command("sync", "rebase", "--config", str(config), "--kind", "list_changes"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert rebased.returncode == 0, rebased.stderr
    assert "renumbered #1" in rebased.stdout and "start of the receiver" in rebased.stdout
    done = rig.run(config)
    assert done.returncode == 0, done.stderr
    rig.stop_receiver()
    stored = _by_kind(rig.stored("after-reset"), BatchKind.LIST_CHANGES)
    assert ("sync-tax-02500", "published") in {(r["entry_id"], r["event"]) for r in stored}


def test_a_job_whose_key_the_province_does_not_know_is_refused_and_says_so(rig: Rig) -> None:
    port = rig.start_receiver(state="unknown")
    stranger, _, _ = signing.write_key_pair(rig.root / "stranger", "stranger", what="sender key")
    text = rig.config("unknown", port=port, lists=False, statistics=False).read_text()
    config = rig.root / "unknown-key.toml"
    config.write_text(text.replace(str(rig.signing_key), str(stranger)))
    done = rig.run(config)
    assert done.returncode == 4, done.stderr
    status = rig.status(config)
    assert "unknown sender" in status["last_error"]["message"]
    assert status["backlog"]["batches"] >= 1  # kept for when the key is registered
    # a tampered batch from the registered sender is refused too, and both are on record
    made = build_batch(
        sender=SENDER, kind=BatchKind.GRADES, sequence=1, watermark_from="origin",
        watermark_to="x.1", created_at=datetime.datetime.now(datetime.UTC),
        records=[grade_record(credit_code=rig.enterprises[0], grade="A", score=150,
                              as_of=datetime.date.today(), departments_answered=6)],
    )  # fmt: skip
    signed = sign_batch(made, private_key=signing.load_private_key(rig.signing_key))
    forged = dataclasses.replace(signed, payload=signed.payload.replace(b'"A"', b'"D"'))
    tls = TlsFiles.from_cert_paths(cert_paths(rig.certs, role=PeerRole.REQUESTER, name="sync-1"))
    with ProvinceClient(f"127.0.0.1:{port}", tls=tls) as province:
        from osmanthus.core.errors import Unauthenticated

        with pytest.raises(Unauthenticated) as info:
            province.deliver(forged)
        assert info.value.field == "signature"
        reasons = [r.reason for r in province.rejections().rejections]
    assert any("signature" in r for r in reasons) and any("unknown sender" in r for r in reasons)
    listed = subprocess.run(
        osmanthus_command("province", "batches", "--target", f"127.0.0.1:{port}",
                          "--certs-dir", str(rig.receiver_certs)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and "requester/sync-1" in listed.stdout
    rig.stop_receiver()
    assert rig.stored("unknown") == []


def test_a_department_down_during_statistics_marks_the_statistic_partial(rig: Rig) -> None:
    # runs last: it stops a node of this module's federation for good
    catalogue: Catalogue = rig.federation.catalogue
    down = sorted(d.id for d in catalogue.departments_for(SubjectKind.ENTERPRISE))[-1]
    rig.federation.nodes[down].stop(grace=0.5)
    port = rig.start_receiver(state="partial")
    config = rig.config("partial", port=port, lists=False, grades=False)
    done = rig.run(config)
    assert done.returncode == 0, done.stderr
    assert f"partial: statistics enterprises.all: no value, {down} did not answer" in done.stdout
    rig.stop_receiver()
    (statistic,) = _by_kind(rig.stored("partial"), BatchKind.STATISTICS)
    assert statistic["partial"] is True and statistic["missing_departments"] == [down]
    assert statistic["value"] is None and statistic["noise_scale"] is None
    # still owed: the statistic is due again at the next run
    assert rig.status(config)["next_due"]["statistics enterprises.all"] == "now"
