"""NodeService.describe (GetInfo): who learns the node's standing, and where its last ingest comes
from. Real parts: a writable DuckDB record store with real imports, a real audit log."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node.service import NodeService
from node.store import RecordStore
from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.crypto import EncryptorCache
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import ReloadablePolicy
from osmanthus.core.status import FILE_TIME, LIVE_INGEST, OFFLINE_INGEST, AuditStanding
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import ReplayCache, TokenVerifier
from osmanthus.core.wire.node import node_description_to_proto
from osmanthus.core.wire.status import (
    CoordinatorStanding,
    coordinator_status_from_proto,
    coordinator_status_to_proto,
)
from tests.unit.test_store import CATALOGUE, TAX, TAX_RULES, TODAY, good_row, write_csv

REPO = Path(__file__).resolve().parents[2]
OPERATOR = PeerIdentity(role=PeerRole.OPERATOR, name="operator")
COORDINATOR = PeerIdentity(role=PeerRole.COORDINATOR, name="coordinator")
BANK = PeerIdentity(role=PeerRole.REQUESTER, name="bank-of-suzhou")


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[NodeService, RecordStore, AuditLog]]:
    store = RecordStore(tmp_path / "tax.duckdb", department=TAX)
    audit = AuditLog(path=tmp_path / "audit.jsonl", salt=os.urandom(32), service="the node")
    encryptors = EncryptorCache()
    service = NodeService(
        department=CATALOGUE.department("tax"),
        catalogue=CATALOGUE,
        store=store,
        rules=TAX_RULES,
        policy=ReloadablePolicy.from_file(REPO / "policies" / "node.cedar"),
        verifier=TokenVerifier(
            public_key=Ed25519PrivateKey.generate().public_key(), replay_cache=ReplayCache()
        ),
        audit=audit,
        encryptors=encryptors,
    )
    try:
        yield service, store, audit
    finally:
        encryptors.close()
        audit.close()
        store.close()


def _audit_something(audit: AuditLog) -> None:
    audit.append(
        AuditEntry(
            time=datetime.now(UTC), query_id="q1", requester="bank-of-suzhou",
            purpose="loan_underwriting", consent_id="", policy_hash="ab" * 32, decision="allow",
            reason="permitted", shape="breakdown", subject_hash=audit.subject_hash("x"),
        )
    )  # fmt: skip


def test_a_requester_learns_what_the_node_is_but_not_its_standing(
    parts: tuple[NodeService, RecordStore, AuditLog], tmp_path: Path
) -> None:
    service, store, audit = parts
    store.import_file(
        write_csv(tmp_path / "a.csv", [good_row(i) for i in range(1, 11)]),
        rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY, actor="operator-li",
    )  # fmt: skip
    _audit_something(audit)
    seen = node_description_to_proto(service.describe(caller=BANK))
    # what the node is, as before
    assert seen.department == "tax" and seen.rules_version and seen.catalogue_digest
    # nothing a bank could watch the department's volume or rhythm by
    assert (seen.records_held, seen.last_ingest_at, seen.last_ingest_source) == (0, 0, "")
    assert (seen.last_ingest_actor, seen.audit_entries, seen.checkpoint_size) == ("", 0, 0)
    for caller in (OPERATOR, COORDINATOR):
        told = node_description_to_proto(service.describe(caller=caller))
        assert told.records_held == 10
        assert told.audit_entries == 1
        assert told.last_ingest_source == LIVE_INGEST


def test_the_last_ingest_is_the_store_s_last_import_with_its_actor(
    parts: tuple[NodeService, RecordStore, AuditLog], tmp_path: Path
) -> None:
    service, store, _ = parts
    # no import recorded (records put in directly, as a store built before import history)
    described = service.describe(caller=OPERATOR)
    assert described.last_ingest_source == FILE_TIME
    assert described.last_ingest_actor == ""
    assert described.last_ingest_at == pytest.approx(store.path.stat().st_mtime)
    offline = store.import_file(
        write_csv(tmp_path / "a.csv", [good_row(i) for i in range(1, 6)]),
        rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY, actor="offline:ops",
    )  # fmt: skip
    described = service.describe(caller=OPERATOR)
    assert (described.last_ingest_source, described.last_ingest_actor) == (
        OFFLINE_INGEST,
        "offline:ops",
    )
    assert offline.at is not None
    assert described.last_ingest_at == offline.at.timestamp()
    live = store.import_file(
        write_csv(tmp_path / "b.csv", [good_row(i) for i in range(6, 9)]),
        rules=TAX_RULES, catalogue=CATALOGUE, today=TODAY, actor="inbox:ops",
    )  # fmt: skip
    described = service.describe(caller=COORDINATOR)
    assert (described.last_ingest_source, described.last_ingest_actor) == (
        LIVE_INGEST,
        "inbox:ops",
    )
    assert live.at is not None
    assert described.last_ingest_at == live.at.timestamp()
    # the time is the import's, not the file's (which later writes may touch)
    info = node_description_to_proto(described)
    assert info.last_ingest_at == round(live.at.timestamp())
    assert info.last_ingest_actor == "inbox:ops"


def test_the_coordinator_s_audit_failure_crosses_the_wire() -> None:
    standing = CoordinatorStanding(
        software_version="1", catalogue_digest="c" * 64, policy_hash="p" * 64,
        audit=AuditStanding(entries=3, checkpoints=False, failure="No space left on device"),
        nodes=(), witnessing=False,
    )  # fmt: skip
    message = coordinator_status_to_proto(standing)
    assert message.audit_failure == "No space left on device"
    assert coordinator_status_from_proto(message) == standing
