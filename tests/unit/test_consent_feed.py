"""The consent registry's revocation feed: what the registry appends and signs, and what a
node's view accepts, keeps and refuses."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import cast

import duckdb
import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import ConsentRegistry
from coordinator.nodes import NodePool
from osmanthus.core.consent_feed import (
    MAX_HEAD_AGE,
    MAX_PENDING_REVOCATIONS,
    MAX_STAPLED_REVOCATIONS,
    Revocation,
    RevocationFeedRefused,
    RevocationsBehind,
    RevocationsStale,
    RevocationView,
    SignedHead,
    chain,
    genesis,
    sign_head,
    verify_head,
)
from osmanthus.core.errors import ConfigError, OsmanthusError
from osmanthus.core.grpc_errors import rich_status, status_of
from osmanthus.core.ids import make_resident_id
from osmanthus.core.receipts import RECEIPT_ISSUER, issue_receipt, verify_receipt
from osmanthus.core.tls import TlsFiles
from osmanthus.core.types import ConsentId, DepartmentId, Shape, SubjectKind
from osmanthus.core.wire.coordinator import Consent
from osmanthus.core.wire.node import ContributionRequest
from osmanthus.v1 import node_pb2
from osmanthus.v1.node_pb2_grpc import NodeServiceStub

KEY = Ed25519PrivateKey.generate()
NOW = datetime.now(UTC).replace(microsecond=0)
PERSONS = [make_resident_id(region="320505", birth=date(1990, 1, 1), sequence=i) for i in range(8)]


@pytest.fixture
def registry(tmp_path: Path) -> ConsentRegistry:
    return ConsentRegistry(tmp_path / "consents.duckdb", receipt_key=KEY)


def _grant(registry: ConsentRegistry, person: str) -> Consent:
    return registry.grant(
        subject_id=person,
        grantee="bank-1",
        purpose="loan_underwriting",
        expires_at=NOW + timedelta(days=30),
        now=NOW,
    )


def _view(tmp_path: Path, **kw: timedelta) -> RevocationView:
    return RevocationView(
        tmp_path / "revocations.json", public_key=KEY.public_key(), issuer=RECEIPT_ISSUER, **kw
    )


def test_each_revocation_is_appended_chained_and_covered_by_a_signed_head(
    registry: ConsentRegistry,
) -> None:
    consents = [_grant(registry, p) for p in PERSONS[:3]]
    for consent in consents[:2]:
        registry.revoke(consent.consent_id, now=NOW)
    # revoking again appends nothing
    registry.revoke(consents[0].consent_id, now=NOW)
    staple = registry.revocation_staple(NOW, known=0)
    assert staple.size == 2
    assert [e.consent_id for e in staple.revocations] == [c.consent_id for c in consents[:2]]
    assert [e.sequence for e in staple.revocations] == [1, 2]
    head = verify_head(staple.head, public_key=KEY.public_key(), issuer=RECEIPT_ISSUER)
    root = genesis(registry.feed_id)
    for entry in staple.revocations:
        root = chain(root, entry)
    assert (head.size, head.root, head.feed) == (2, root, registry.feed_id)
    assert registry.revocation_staple(NOW, known=1).revocations == staple.revocations[1:]
    # the head is re-signed only when it aged or the feed grew
    assert registry.revocation_staple(NOW + timedelta(seconds=1), known=2).head == staple.head
    later = registry.revocation_staple(NOW + MAX_HEAD_AGE, known=2).head
    assert later != staple.head


def test_a_registry_from_before_the_feed_appends_its_revocations_when_it_opens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consents.duckdb"
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        consent = _grant(registry, PERSONS[0])
        registry.revoke(consent.consent_id, now=NOW)
        feed = registry.feed_id
    with duckdb.connect(str(path)) as db:
        db.execute("DROP TABLE revocations")
        db.execute("DROP TABLE revocation_feed")
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        staple = registry.revocation_staple(NOW, known=0)
        assert [e.consent_id for e in staple.revocations] == [consent.consent_id]
        assert registry.feed_id != feed
    # and the feed id and its entries stay across openings
    with ConsentRegistry(path, receipt_key=KEY) as again:
        assert again.revocation_staple(NOW, known=0).revocations == staple.revocations


def test_a_view_learns_the_feed_keeps_it_across_restarts_and_checks_freshness(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    consents = [_grant(registry, p) for p in PERSONS[:3]]
    registry.revoke(consents[0].consent_id, now=NOW)
    view = _view(tmp_path)
    staple = registry.revocation_staple(NOW, known=0)
    head = view.learn(staple.head, staple.revocations, now=NOW)
    assert view.check(consents[0].consent_id, head=head, now=NOW) is not None
    assert view.check(consents[1].consent_id, head=head, now=NOW) is None
    assert (tmp_path / "revocations.json").stat().st_mode & 0o777 == 0o600
    # a restarted node still knows the revocation, and the newest head it verified
    restarted = _view(tmp_path)
    assert restarted.sequence(registry.feed_id) == 1
    assert restarted.check(consents[0].consent_id, head=head, now=NOW) is not None
    head = restarted.learn(staple.head, (), now=NOW)
    assert restarted.check(consents[0].consent_id, head=head, now=NOW) is not None
    # a minute later without a newer head: stale
    with pytest.raises(RevocationsStale, match="more than 60 s before now"):
        restarted.check(consents[1].consent_id, head=head, now=NOW + timedelta(seconds=61))


def test_a_view_catches_up_over_several_requests_and_refuses_what_does_not_chain(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    consents = [_grant(registry, p) for p in PERSONS[:4]]
    for consent in consents:
        registry.revoke(consent.consent_id, now=NOW)
    staple = registry.revocation_staple(NOW, known=0)
    view = _view(tmp_path)
    with pytest.raises(RevocationsBehind) as behind:
        view.learn(staple.head, staple.revocations[:1], now=NOW)
    assert behind.value.sequence == 1
    assert behind.value.info_metadata == {"feed": registry.feed_id, "sequence": "1"}
    # the rest (overlapping what it has) completes the chain
    view.learn(staple.head, staple.revocations, now=NOW)
    assert view.sequence(registry.feed_id) == 4
    # a gap (the coordinator thought the node held more: it was restored) is no evidence:
    # the node says what it holds
    other = _view(tmp_path / "other")
    (tmp_path / "other").mkdir()
    with pytest.raises(RevocationsBehind) as gap:
        other.learn(staple.head, staple.revocations[1:], now=NOW)
    assert gap.value.sequence == 0
    # an altered entry: refused
    altered = (replace(staple.revocations[0], revoked_at=0), *staple.revocations[1:])
    with pytest.raises(RevocationFeedRefused, match="do not chain"):
        other.learn(staple.head, altered, now=NOW)
    assert other.sequence(registry.feed_id) == 0


def test_a_feed_that_goes_backwards_or_forks_is_refused(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    consent = _grant(registry, PERSONS[0])
    registry.revoke(consent.consent_id, now=NOW)
    staple = registry.revocation_staple(NOW, known=0)
    view = _view(tmp_path)
    view.learn(staple.head, staple.revocations, now=NOW)
    feed = registry.feed_id
    # an older head than one verified: requests crossed, nothing new
    older = sign_head(
        feed=feed, issuer=RECEIPT_ISSUER, size=0, root=genesis(feed),
        issued_at=NOW - timedelta(seconds=5), private_key=KEY,
    )  # fmt: skip
    view.learn(older, (), now=NOW)
    # a newer head of a shorter feed: the registry lost a revocation
    shorter = sign_head(
        feed=feed, issuer=RECEIPT_ISSUER, size=0, root=genesis(feed),
        issued_at=NOW + timedelta(seconds=1), private_key=KEY,
    )  # fmt: skip
    with pytest.raises(RevocationFeedRefused, match="went backwards"):
        view.learn(shorter, (), now=NOW + timedelta(seconds=1))
    forked = sign_head(
        feed=feed, issuer=RECEIPT_ISSUER, size=1, root=b"\0" * 32,
        issued_at=NOW + timedelta(seconds=1), private_key=KEY,
    )  # fmt: skip
    with pytest.raises(RevocationFeedRefused, match="forked"):
        view.learn(forked, (), now=NOW + timedelta(seconds=1))


def test_a_head_from_another_issuer_or_the_future_is_refused(tmp_path: Path) -> None:
    feed = "rvf_" + "A" * 22
    view = _view(tmp_path)
    other_issuer = sign_head(
        feed=feed, issuer="someone-else", size=0, root=genesis(feed), issued_at=NOW,
        private_key=KEY,
    )  # fmt: skip
    with pytest.raises(RevocationFeedRefused, match="not the consent registry"):
        view.learn(other_issuer, (), now=NOW)
    future = sign_head(
        feed=feed, issuer=RECEIPT_ISSUER, size=0, root=genesis(feed),
        issued_at=NOW + timedelta(minutes=5), private_key=KEY,
    )  # fmt: skip
    with pytest.raises(RevocationFeedRefused, match="after now"):
        view.learn(future, (), now=NOW)


def test_a_revocation_is_forgotten_once_its_consent_expired(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    consent = _grant(registry, PERSONS[0])
    registry.revoke(consent.consent_id, now=NOW)
    staple = registry.revocation_staple(NOW, known=0)
    view = _view(tmp_path)
    view.learn(staple.head, staple.revocations, now=NOW)
    state = json.loads((tmp_path / "revocations.json").read_text())
    assert [r[0] for r in state["revoked"]] == [consent.consent_id]
    # the next revocation saves the view again, after the first consent's expiry
    second = registry.grant(
        subject_id=PERSONS[1],
        grantee="bank-1",
        purpose="loan_underwriting",
        expires_at=NOW + timedelta(days=90),
        now=NOW,
    )
    registry.revoke(second.consent_id, now=NOW)
    later = NOW + timedelta(days=31)
    staple = registry.revocation_staple(later, known=1)
    view.learn(staple.head, staple.revocations, now=later)
    state = json.loads((tmp_path / "revocations.json").read_text())
    assert [r[0] for r in state["revoked"]] == [second.consent_id]


def test_a_state_file_the_node_did_not_write_stops_it(tmp_path: Path) -> None:
    (tmp_path / "revocations.json").write_text('{"version": 1, "feeds": []}')
    with pytest.raises(ConfigError, match="not a revocation state this node wrote"):
        _view(tmp_path)


def test_a_staleness_out_of_bounds_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="between"):
        _view(tmp_path, max_staleness=timedelta(hours=2))


# --- regressions: crossed requests, rollback after restart, checkpoints, feed binding ---------

MANY = [make_resident_id(region="320505", birth=date(1991, 1, 1), sequence=i) for i in range(30)]


def _revoked_feed(registry: ConsentRegistry, count: int) -> list[Consent]:
    consents = [_grant(registry, p) for p in MANY[:count]]
    for consent in consents:
        registry.revoke(consent.consent_id, now=NOW)
    return consents


def _head_at(registry: ConsentRegistry, size: int, *, issued_at: datetime) -> SignedHead:
    """A genuine head of `registry`'s feed as it was at `size` entries, as a request prepared
    then would carry it."""
    root = genesis(registry.feed_id)
    for entry in registry.revocation_staple(NOW, known=0).revocations[:size]:
        root = chain(root, entry)
    return sign_head(
        feed=registry.feed_id, issuer=RECEIPT_ISSUER, size=size, root=root,
        issued_at=issued_at, private_key=KEY,
    )  # fmt: skip


def test_requests_that_cross_during_a_catch_up_are_not_taken_for_tampering(
    registry: ConsentRegistry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _revoked_feed(registry, 30)
    staple = registry.revocation_staple(NOW, known=0)
    view = _view(tmp_path)
    with pytest.raises(RevocationsBehind) as behind:
        view.learn(staple.head, staple.revocations[:20], now=NOW)
    assert behind.value.sequence == 20
    # a request prepared when the feed held 10 entries arrives now: the first 10 entries held
    # verify against it and are kept; the other 10 stay pending for the newer head
    with caplog.at_level(logging.WARNING):
        crossed = view.learn(
            _head_at(registry, 10, issued_at=NOW - timedelta(seconds=2)), (), now=NOW
        )
        assert crossed.size == 10 and view.sequence(registry.feed_id) == 10
        # one at the size verified (0 entries ago) leaves what is pending alone too
        view.learn(_head_at(registry, 10, issued_at=NOW - timedelta(seconds=1)), (), now=NOW)
        view.learn(staple.head, staple.revocations[20:], now=NOW)
    assert view.sequence(registry.feed_id) == 30
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    # entries that were pending and altered are still refused against the head that covers them
    other = _view(tmp_path / "other")
    (tmp_path / "other").mkdir()
    altered = (*staple.revocations[:5], replace(staple.revocations[5], revoked_at=0))
    with pytest.raises(RevocationsBehind):
        other.learn(staple.head, (*altered, *staple.revocations[6:20]), now=NOW)
    with pytest.raises(RevocationFeedRefused, match="do not chain"):
        other.learn(_head_at(registry, 10, issued_at=NOW), (), now=NOW)


def test_a_rolled_back_registry_is_refused_after_the_node_restarts(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    _revoked_feed(registry, 2)
    staple = registry.revocation_staple(NOW, known=0)
    _view(tmp_path).learn(staple.head, staple.revocations, now=NOW)
    restarted = _view(tmp_path)
    # the registry restored from a backup that has one of the two revocations signs heads
    # of one entry from now on
    rolled_back = _head_at(registry, 1, issued_at=NOW + timedelta(seconds=30))
    with pytest.raises(RevocationFeedRefused, match="went backwards"):
        restarted.learn(rolled_back, (), now=NOW + timedelta(seconds=30))
    # a state file from before heads' dates were kept: a shorter head is refused too
    state = json.loads((tmp_path / "revocations.json").read_text())
    for feed in state["feeds"].values():
        del feed["latest"]
    (tmp_path / "revocations.json").write_text(json.dumps(state))
    with pytest.raises(RevocationFeedRefused, match="went backwards"):
        _view(tmp_path).learn(rolled_back, (), now=NOW + timedelta(seconds=30))


def test_the_state_file_is_written_once_per_request_and_only_when_the_view_grew(
    registry: ConsentRegistry, tmp_path: Path
) -> None:
    _revoked_feed(registry, 3)
    staple = registry.revocation_staple(NOW, known=0)
    view = _view(tmp_path)
    view.learn(staple.head, staple.revocations, now=NOW)
    path = tmp_path / "revocations.json"
    written = path.stat().st_ino, path.read_bytes()
    # every request carries a head: one that adds nothing does not rewrite the file
    for seconds in range(3):
        view.learn(_head_at(registry, 3, issued_at=NOW + timedelta(seconds=seconds)), (), now=NOW)
    assert (path.stat().st_ino, path.read_bytes()) == written
    state = json.loads(written[1])
    assert state["feeds"][registry.feed_id]["size"] == 3 and len(state["revoked"]) == 3


def _bulk_registry(path: Path, count: int) -> ConsentRegistry:
    """A registry whose feed holds `count` revocations, written in bulk (revoking them one by
    one would take minutes)."""
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        feed = registry.feed_id
    root = genesis(feed)
    rows: list[list[object]] = [[], [], [], [], []]
    for sequence in range(1, count + 1):
        entry = Revocation(
            sequence=sequence,
            consent_id=ConsentId(f"cns_{sequence:022d}"),
            revoked_at=int(NOW.timestamp()),
            expires_at=int((NOW + timedelta(days=30)).timestamp()),
        )
        root = chain(root, entry)
        for column, value in zip(rows, (*vars(entry).values(), root), strict=True):
            column.append(value)
    with duckdb.connect(str(path)) as db:
        db.execute(
            "INSERT INTO revocations SELECT unnest(?::BIGINT[]), unnest(?::VARCHAR[]), "
            "unnest(?::BIGINT[]), unnest(?::BIGINT[]), unnest(?::BLOB[])",
            rows,
        )
    return ConsentRegistry(path, receipt_key=KEY)


def test_a_node_far_behind_catches_up_page_by_page_under_checkpoints(tmp_path: Path) -> None:
    size = MAX_STAPLED_REVOCATIONS + 5
    assert MAX_PENDING_REVOCATIONS == MAX_STAPLED_REVOCATIONS
    with _bulk_registry(tmp_path / "consents.duckdb", size) as registry:
        view = _view(tmp_path)
        page = registry.revocation_staple(NOW, known=0)
        assert page.size == MAX_STAPLED_REVOCATIONS
        assert len(page.revocations) == MAX_STAPLED_REVOCATIONS
        checkpoint = verify_head(page.head, public_key=KEY.public_key(), issuer=RECEIPT_ISSUER)
        assert checkpoint.checkpoint and checkpoint.size == MAX_STAPLED_REVOCATIONS
        # the page is verified and kept (on disk too), and the node asks for the rest
        with pytest.raises(RevocationsBehind) as behind:
            view.learn(page.head, page.revocations, now=NOW)
        assert behind.value.sequence == MAX_STAPLED_REVOCATIONS
        assert _view(tmp_path).sequence(registry.feed_id) == MAX_STAPLED_REVOCATIONS
        # a checkpoint never makes the view fresh: it is not a statement of the whole feed
        with pytest.raises(RevocationsStale):
            view.check("cns_" + "0" * 22, head=checkpoint, now=NOW)
        rest = registry.revocation_staple(NOW, known=behind.value.sequence)
        assert len(rest.revocations) == 5
        head = view.learn(rest.head, rest.revocations, now=NOW)
        assert not head.checkpoint and view.sequence(registry.feed_id) == size
        assert view.check(f"cns_{size:022d}", head=head, now=NOW) is not None
        # an old checkpoint (a shorter prefix) after that is no rollback
        with pytest.raises(RevocationsBehind):
            view.learn(page.head, (), now=NOW + timedelta(seconds=1))
        # more than a page unverified (an old coordinator's partial staples) is dropped and
        # the node starts again from what it verified, without calling it tampering
        fresh = _view(tmp_path / "fresh")
        (tmp_path / "fresh").mkdir()
        entries = registry.revocation_staple(NOW, known=0).revocations
        with pytest.raises(RevocationsBehind):
            fresh.learn(rest.head, entries, now=NOW)
        with pytest.raises(RevocationsBehind) as again:
            fresh.learn(rest.head, rest.revocations, now=NOW)
        assert again.value.sequence == 0


def test_receipts_are_bound_to_the_registrys_feed_and_old_ones_signed_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consents.duckdb"
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        consent = _grant(registry, PERSONS[0])
        other_key = _grant(registry, PERSONS[1])
        feed = registry.feed_id
    verified = verify_receipt(consent.receipt, public_key=KEY.public_key(), now=NOW)
    assert verified.revocation_feed == feed
    # a file from before receipts named the feed: its receipts carry no claim
    unbound = issue_receipt(consent=consent, private_key=KEY)
    foreign = issue_receipt(consent=other_key, private_key=Ed25519PrivateKey.generate())
    with duckdb.connect(str(path)) as db:
        db.execute(
            "UPDATE consents SET receipt = CASE consent_id WHEN ? THEN ? ELSE ? END, "
            "receipt_feed = NULL",
            [consent.consent_id, unbound, foreign],
        )
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        again = registry.get(consent.consent_id).receipt
        assert verify_receipt(again, public_key=KEY.public_key(), now=NOW).revocation_feed == feed
        # another key's receipt is kept as it was (and warned about)
        assert registry.get(other_key.consent_id).receipt == foreign


def test_the_coordinator_stops_serving_a_node_that_creeps_forward(
    registry: ConsentRegistry,
) -> None:
    _revoked_feed(registry, 30)
    node = _HostileNode(registry.feed_id)
    stub = cast(NodeServiceStub, node)
    pool = NodePool([], tls=TlsFiles(ca=Path("-"), cert=Path("-"), key=Path("-")))
    request = ContributionRequest(
        query_id="q_1", subject_kind=SubjectKind.PERSON, subject_id=PERSONS[0],
        shape=Shape.TOTAL, purpose="loan_underwriting", consent_id="", public_key=b"\1",
        slots=(), slot_widths=(),
    )  # fmt: skip
    with pytest.raises(grpc.RpcError):
        pool._contribute_stapled(
            DepartmentId("psb"), stub, request, registry, lambda: NOW, metadata=(), deadline_s=30
        )
    # a node that takes one more entry each time is asked at most MAX_SLOW_CATCH_UP_ROUNDS + 1
    # times, not once per entry
    assert node.asked == [0, 1, 2]
    # the next query starts from what the node said it holds
    assert pool._acknowledged[DepartmentId("psb"), registry.feed_id] == 2
    # one that claims more entries than the feed has is asked once
    node = _HostileNode(registry.feed_id, claim=lambda known, size: size + 1)
    stub = cast(NodeServiceStub, node)
    with pytest.raises(grpc.RpcError):
        pool._contribute_stapled(
            DepartmentId("psb"), stub, request, registry, lambda: NOW, metadata=(), deadline_s=30
        )
    assert node.asked == [2]
    pool.close()


class _Refusal(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A node's refusal as grpc raises it: the status and its ErrorInfo in the trailers."""

    def __init__(self, error: OsmanthusError) -> None:
        self._code = status_of(error)
        self._status = rich_status(error)

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return str(self._status.message)

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return (("grpc-status-details-bin", self._status.SerializeToString()),)

    def initial_metadata(self) -> tuple[()]:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: object) -> bool:
        return False


class _HostileNode:
    """A department node (the attacker here) that answers every request REVOCATIONS_BEHIND,
    claiming what `claim` says it holds (by default one more entry than it was sent from)."""

    def __init__(self, feed: str, claim: Callable[[int, int], int] | None = None) -> None:
        self.feed = feed
        self.claim = claim or (lambda known, size: known + 1)
        #: the entry after which each request's revocations started
        self.asked: list[int] = []

    def Contribute(self, message: node_pb2.ContributeRequest, **_: object) -> None:  # noqa: N802
        known = message.revocations[0].sequence - 1 if message.revocations else -1
        self.asked.append(known)
        head = json.loads(message.revocation_head.payload)
        raise _Refusal(
            RevocationsBehind("behind", feed=self.feed, sequence=self.claim(known, head["size"]))
        )
