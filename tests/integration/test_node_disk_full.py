"""A node whose state directory's disk is full answers nothing (UNAVAILABLE) until it has room.

Real components: the psb node over mTLS, its state directory on a small tmpfs the test mounts
(tests/smalldisk.py) and fills; the coordinator's certificate asks it for contributions, as
the coordinator does. While no entry fits, every request, answerable or not, is refused with
UNAVAILABLE naming no path, and nothing of it is in the log; once the filler is deleted the
next request is answered and audited, without a restart, and the log verifies against the
checkpoints the node signed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from certs import PeerRole
from osmanthus.core.checkpoints import latest_path, verify_log
from osmanthus.core.logkeys import ROSTER_FILE, LogRoster
from osmanthus.core.types import Role
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import node_pb2_grpc
from sdk import RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.integration.test_rejections_node import (
    AGENCY,
    AGENCY_PURPOSES,
    DEPARTMENT,
    TIMEOUT_S,
    _channel,
    _metadata,
    _request,
)
from tests.smalldisk import fill, small_disk
from tests.waiting import wait_until

#: room for the node's databases and a few thousand entries; filled by the test
DISK_BYTES = 64 * 1024 * 1024
#: a full disk still takes a few entries into the log's last page
PAGE_SLACK_ENTRIES = 64
REFUSAL = (
    "the node cannot write its audit log: No space left on device; it answers nothing until it can"
)


@pytest.fixture
def small_node(
    tmp_path: Path,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[tuple[Federation, Path]]:
    state = tmp_path / "state" / DEPARTMENT
    with small_disk(state, size_bytes=DISK_BYTES):
        federation = start_federation(
            tmp_path,
            catalogue=restricted_catalogue([DEPARTMENT]),
            data=seeded,
            certs=platform_certs,
            issuer_keys=issuer_keys,
            keys=requester_keys,
            departments=[DEPARTMENT],
            transparency=True,
            checkpoint_every=1,
        )
        try:
            yield federation, state
        finally:
            stop_federation(federation)


def _lines(log: Path) -> list[dict[str, object]]:
    data = log.read_bytes()
    assert data.endswith(b"\n")  # never a torn line
    return [json.loads(line) for line in data.splitlines()]


def test_a_full_disk_refuses_every_request_until_space_is_freed(
    small_node: tuple[Federation, Path],
) -> None:
    federation, state = small_node
    log = state / "audit.jsonl"
    token = federation.token(AGENCY, role=Role.CREDIT_AGENCY, purposes=AGENCY_PURPOSES)
    with _channel(federation, PeerRole.COORDINATOR, "coordinator") as channel:
        node = node_pb2_grpc.NodeServiceStub(channel)

        def ask() -> tuple[str, grpc.Call | None]:
            request = _request(federation)
            try:
                node.Contribute(request, timeout=TIMEOUT_S, metadata=_metadata(token))
            except grpc.RpcError as exc:
                assert isinstance(exc, grpc.Call)
                return request.query_id, exc
            return request.query_id, None

        answered = [ask()]
        assert answered[0][1] is None
        filler = fill(state)
        refused: tuple[str, grpc.Call] | None = None
        for _ in range(PAGE_SLACK_ENTRIES):
            query_id, error = ask()
            if error is not None:
                refused = query_id, error
                break
            answered.append((query_id, None))
        assert refused is not None, f"{PAGE_SLACK_ENTRIES} answers on a full disk"
        refused_id, error = refused
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert error.details() == REFUSAL
        assert str(state) not in (error.details() or "")
        # still full: the same request again is refused the same way
        again_id, again = ask()
        assert again is not None and again.code() == grpc.StatusCode.UNAVAILABLE
        entries = _lines(log)
        ids = [entry["query_id"] for entry in entries]
        # every answer that went out has its entry; the refused request has none
        assert all(query_id in ids for query_id, _ in answered)
        assert refused_id not in ids and again_id not in ids
        # space again: the next request is answered and audited, with no restart
        filler.unlink()
        query_id, error = ask()
        assert error is None, error and error.details()
        after = _lines(log)
        assert after[: len(entries)] == entries
        assert [e["query_id"] for e in after[len(entries) :]] == [query_id]
        assert after[-1]["decision"] == "allow"
    # the node signs a checkpoint of everything (checkpoint_every=1), and the log verifies
    size = len(after)
    wait_until(
        lambda: int(latest_path(log).read_text().split("\n")[1]) >= size,
        what=f"the node to sign a checkpoint of its {size} entries",
        poll_s=0.1,
    )
    roster = LogRoster.load(federation.certs / ROSTER_FILE)
    report = verify_log(log, list(roster.logs.values()))
    assert report.ok, report.problem
    assert report.entries == size
