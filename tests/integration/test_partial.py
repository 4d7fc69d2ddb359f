"""Partial answers: a department node that dies, hangs or is absent, seen through the SDK."""

from __future__ import annotations

import csv
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import sdk
from coordinator.config import NodeEndpoint
from osmanthus.core.types import DepartmentId, Role
from osmanthus.demo.launcher import Process, osmanthus_command, spawn
from sdk import Client, EnterpriseScore, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    restricted_catalogue_toml,
    start_federation,
    stop_federation,
)
from tests.waiting import EVENT_TIMEOUT_S, wait_until

#: the coordinator's per-node deadline in these federations; short, so a hung node costs little
DEADLINE_S = 2.0
#: how late after the deadline an answer may still arrive (fan-out, sums, decryption, scheduling)
#: on an idle machine; on a busy one, up to twice what a full answer took there (_margin)
MARGIN_S = 1.5
#: runs as its own process so it can be killed or frozen; it owns customs_certification
SUBPROCESS_DEPARTMENT = "customs"
IN_PROCESS_DEPARTMENTS = ("court", "tax", "samr", "eco", "hrss")
#: owners of the person categories: without them the catalogue file the subprocess node reads
#: would not be valid; they serve persons only, so enterprise queries never ask them
PERSON_CATEGORY_OWNERS = ("civility", "blood", "volunteer")
AGENCY = "agency-1"


def _firm(federation: Federation, index: int = 0) -> str:
    with federation.data.subjects_file.open() as f:
        firms = [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"]
    return firms[index]


#: answered in full before each fault; the faults are then observed on another firm, since the
#: coordinator refuses a partial answer that differs by one department from an earlier full one
WARM_FIRM = 1


@dataclass
class SplitFederation:
    federation: Federation
    node: Process
    client: Client
    #: how long a full answer took before the fault: the work any answer takes on this machine
    full_answer_s: float


def _margin(split: SplitFederation) -> float:
    """How late after the deadline an answer may come: the fan-out, sums and decryption take as
    long as a full answer's, which a busy machine makes slower."""
    return max(MARGIN_S, 2 * split.full_answer_s)


def _bytes_waiting(port: int) -> int | None:
    """Bytes received but not yet read on the established connections to a local port (from
    /proc/net/tcp*); None where that cannot be read."""
    waiting, found = 0, False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            local, state, queues = fields[1], fields[3], fields[4]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":  # ESTABLISHED
                waiting += int(queues.split(":")[1], 16)
    return waiting if found else None


@pytest.fixture
def split_federation(
    tmp_path: Path,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[SplitFederation]:
    """Six enterprise departments: five in this process, customs as a real `node serve`."""
    # its own copy: the session's federation serves (and holds) its own
    served = federation.data.databases[DepartmentId(SUBPROCESS_DEPARTMENT)]
    db = Path(shutil.copy2(served, tmp_path / served.name))
    departments = (*IN_PROCESS_DEPARTMENTS, SUBPROCESS_DEPARTMENT, *PERSON_CATEGORY_OWNERS)
    catalogue_file = tmp_path / "catalogue.toml"
    catalogue_file.write_text(restricted_catalogue_toml(departments))
    node = spawn(
        f"node-{SUBPROCESS_DEPARTMENT}",
        osmanthus_command(
            "node", "serve",
            "--department", SUBPROCESS_DEPARTMENT,
            "--db", str(db),
            "--catalogue", str(catalogue_file),
            "--issuer-public-key", str(issuer_keys.public),
            "--state-dir", str(tmp_path / "state" / SUBPROCESS_DEPARTMENT),
            "--certs-dir", str(platform_certs),
            "--listen", "127.0.0.1:0",
        ),
        run_dir=tmp_path / "run",
    )  # fmt: skip
    try:
        port = node.wait_ready()
        fed = start_federation(
            tmp_path,
            catalogue=restricted_catalogue(departments),
            data=federation.data,
            certs=platform_certs,
            issuer_keys=issuer_keys,
            keys=requester_keys,
            departments=IN_PROCESS_DEPARTMENTS,
            deadline_s=DEADLINE_S,
            extra_endpoints=[
                NodeEndpoint(DepartmentId(SUBPROCESS_DEPARTMENT), f"127.0.0.1:{port}")
            ],
        )
        try:
            client = fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"])
            with client:
                client.register_key()
                # every node answers before the fault is injected, so the channel to the
                # subprocess is connected and a later failure is the fault, not the start-up
                started = time.monotonic()
                warm = client.enterprise_score(_firm(fed, WARM_FIRM), purpose="credit_report")
                assert not warm.partial, warm.missing
                yield SplitFederation(fed, node, client, time.monotonic() - started)
        finally:
            stop_federation(fed)
    finally:
        if node.popen.poll() is None:
            node.popen.send_signal(signal.SIGCONT)
            node.popen.kill()
        node.popen.wait(timeout=EVENT_TIMEOUT_S)


def _query_in_thread(
    split: SplitFederation,
) -> tuple[threading.Thread, dict[str, EnterpriseScore | BaseException | float]]:
    outcome: dict[str, EnterpriseScore | BaseException | float] = {}

    def run() -> None:
        start = time.monotonic()
        try:
            outcome["result"] = split.client.enterprise_score(
                _firm(split.federation), purpose="credit_report"
            )
        except BaseException as exc:  # handed to the test thread, which re-raises it
            outcome["result"] = exc
        outcome["elapsed"] = time.monotonic() - start

    thread = threading.Thread(target=run, name="query-in-flight")
    thread.start()
    return thread, outcome


def _finished(
    thread: threading.Thread, outcome: dict[str, EnterpriseScore | BaseException | float]
) -> tuple[EnterpriseScore, float]:
    thread.join(DEADLINE_S + EVENT_TIMEOUT_S)
    assert not thread.is_alive(), "the query did not return"
    result, elapsed = outcome["result"], outcome["elapsed"]
    if isinstance(result, BaseException):
        raise result
    assert isinstance(result, EnterpriseScore) and isinstance(elapsed, float)
    return result, elapsed


def _assert_only_customs_missing(report: EnterpriseScore) -> str:
    assert report.partial
    assert {s.department for s in report.answered} == set(IN_PROCESS_DEPARTMENTS)
    (missing,) = report.missing
    assert missing.department == SUBPROCESS_DEPARTMENT
    # customs owns this category: with customs absent it is unknown, not zero
    assert report.bonuses["customs_certification"] is None
    assert report.bonuses["tax_credit"] is not None
    return missing.detail


def test_a_node_killed_while_a_query_is_in_flight_leaves_a_partial_answer(
    split_federation: SplitFederation,
) -> None:
    node = split_federation.node
    # Freeze the node first so the query is certainly waiting on it when it dies; a live node
    # answers in milliseconds and a plain kill would race the answer.
    node.popen.send_signal(signal.SIGSTOP)
    thread, outcome = _query_in_thread(split_federation)
    # the query is in flight once its request waits, unread, at the frozen node
    if _bytes_waiting(node.port) is None:
        time.sleep(0.5)  # no /proc: give the query time to get there
    else:
        wait_until(lambda: _bytes_waiting(node.port), what="the query never reached the node")
    node.popen.send_signal(signal.SIGKILL)
    report, elapsed = _finished(thread, outcome)
    detail = _assert_only_customs_missing(report)
    assert detail.startswith("unavailable: "), detail
    assert elapsed < DEADLINE_S + _margin(split_federation)
    assert node.popen.wait(timeout=EVENT_TIMEOUT_S) == -signal.SIGKILL
    # the firm answered in full before: its partial answer now would disclose customs alone
    with pytest.raises(sdk.FailedPrecondition) as caught:
        split_federation.client.enterprise_score(
            _firm(split_federation.federation, WARM_FIRM), purpose="credit_report"
        )
    assert caught.value.message.startswith(
        "customs did not answer, but earlier answers to agency-1"
    )
    assert "disclose their contribution by subtraction" in caught.value.message


def test_a_hung_node_is_reported_after_the_deadline(split_federation: SplitFederation) -> None:
    node = split_federation.node
    node.popen.send_signal(signal.SIGSTOP)
    try:
        thread, outcome = _query_in_thread(split_federation)
        report, elapsed = _finished(thread, outcome)
    finally:
        node.popen.send_signal(signal.SIGCONT)
    detail = _assert_only_customs_missing(report)
    assert detail == f"no answer within the {DEADLINE_S:g} s deadline"
    # the coordinator waited for the deadline, and not much longer
    assert DEADLINE_S - 0.1 <= elapsed < DEADLINE_S + _margin(split_federation)
    # customs is back, but the first answer about this firm was pinned without it: adding it
    # now would disclose its contribution, so it is left out and said to be
    again = split_federation.client.enterprise_score(
        _firm(split_federation.federation), purpose="credit_report"
    )
    left_out = _assert_only_customs_missing(again)
    assert left_out.startswith("left out: earlier answers to you about this subject")
    assert again.score == report.score


#: the enterprise departments of the short-lived federations below
FIVE_ENTERPRISE_DEPARTMENTS = ("court", "tax", "samr", "eco", "customs")


def _five_department_federation(
    tmp_path: Path,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
    *,
    running: tuple[str, ...],
    extra_endpoints: tuple[NodeEndpoint, ...] = (),
) -> Federation:
    """Five enterprise departments in the catalogue, only `running` of them with a node."""
    return start_federation(
        tmp_path,
        catalogue=restricted_catalogue(FIVE_ENTERPRISE_DEPARTMENTS),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=running,
        deadline_s=DEADLINE_S,
        extra_endpoints=extra_endpoints,
    )


def test_fewer_departments_than_the_policy_minimum_is_refused(
    tmp_path: Path,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # two of five enterprise departments have a node; the enterprise permit's
    # @min_departments("3") applies and neither node allows single-source disclosure
    fed = _five_department_federation(
        tmp_path,
        federation,
        platform_certs,
        issuer_keys,
        requester_keys,
        running=("court", "tax"),
    )
    try:
        client = fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"])
        with client, pytest.raises(sdk.FailedPrecondition) as caught:
            client.enterprise_score(_firm(fed), purpose="credit_report")
    finally:
        stop_federation(fed)
    message = caught.value.message
    assert "only 2 department(s) answered (court, tax)" in message
    assert "the policy requires at least 3" in message
    assert "single-source disclosure" in message


def test_partial_answer_below_the_policys_coverage_is_refused(
    tmp_path: Path,
    federation: Federation,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    # three of five departments answer: enough for the minimum of 3, but 60 % is below the
    # central policy's 80 % coverage for releasing a partial answer (central-accept-partial)
    fed = _five_department_federation(
        tmp_path,
        federation,
        platform_certs,
        issuer_keys,
        requester_keys,
        running=("court", "tax", "samr"),
        # eco's node is registered but nothing listens there; customs has no node at all
        extra_endpoints=(NodeEndpoint(DepartmentId("eco"), "127.0.0.1:1"),),
    )
    try:
        client = fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=["credit_report"])
        with client, pytest.raises(sdk.Unavailable) as caught:
            client.enterprise_score(_firm(fed), purpose="credit_report")
    finally:
        stop_federation(fed)
    message = caught.value.message
    assert "would be partial (3 of 5 departments" in message
    assert "customs (no node registered for this department)" in message
    assert "eco (unavailable: " in message
    assert "central-accept-partial" in message or "refuses partial answers" in message
