"""Play a compromised coordinator against a real node: no answer about a person without a
consent the node verified itself (the registry's receipt and its revocation feed).

The attacker holds the coordinator's certificate and a requester's genuine token and sends
ContributeRequest straight to a department node over mTLS, as a compromised coordinator would.
Where an attack needs genuine signatures (a receipt for another subject, a revoked consent, an
old revocation head) they come from a consent registry of the attacker's own that signs with
the platform's consent key: what the coordinator process holds (docs/caveats.md). Each refusal
names its reason, and the node's audit log records it with the consent id the receipt claimed;
nothing is computed (no ciphertext comes back).
"""

from __future__ import annotations

import csv
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from certs import PeerRole, cert_paths
from coordinator.config import NodeEndpoint, render_nodes
from coordinator.consent import ConsentRegistry, ConsentState
from coordinator.server import CoordinatorConfig, start_coordinator
from node.consent import REVOCATIONS_FILE, UNREADABLE_ID
from osmanthus.core.consent_feed import (
    FEED_ID_PATTERN,
    Revocation,
    SignedHead,
    Staple,
    genesis,
    new_feed_id,
    sign_head,
)
from osmanthus.core.grpc_errors import error_info
from osmanthus.core.receipts import (
    CONSENT_KEY_FILE,
    RECEIPT_ISSUER,
    consent_key_id,
    issue_receipt,
    load_consent_private_key,
)
from osmanthus.core.tls import TlsFiles, node_server_name, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import ConsentId, DepartmentId, Role, Shape, SubjectKind
from osmanthus.core.wire.coordinator import Consent
from osmanthus.core.wire.node import ContributionRequest, contribution_request_to_proto
from osmanthus.v1 import node_pb2, node_pb2_grpc
from sdk import Client, PermissionDenied
from tests.integration.conftest import Federation

DEPT = "psb"
REQUESTER = "agency-1"
PURPOSE = "loan_underwriting"
TIMEOUT_S = 30.0


def _persons(federation: Federation) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]


@dataclass
class Attacker:
    """A compromised coordinator: the coordinator's certificate, a consent registry of its own
    signing with the platform's consent key, and a requester's token."""

    federation: Federation
    stub: node_pb2_grpc.NodeServiceStub
    registry: ConsentRegistry
    consent_key: Ed25519PrivateKey
    #: the query id of the latest request sent
    last_query_id: str = ""

    def grant(self, subject: str, **kw: Any) -> Consent:
        now = kw.pop("now", datetime.now(UTC))
        return self.registry.grant(
            subject_id=subject,
            grantee=kw.pop("grantee", REQUESTER),
            purpose=kw.pop("purpose", PURPOSE),
            expires_at=kw.pop("expires_at", now + timedelta(days=1)),
            now=now,
        )

    def staple(self) -> Staple:
        return self.registry.revocation_staple(datetime.now(UTC), known=0)

    def ask(
        self,
        subject: str,
        *,
        consent_id: str = "",
        receipt: str = "",
        staple: Staple | None = None,
        head: SignedHead | None = None,
        revocations: tuple[Revocation, ...] | None = None,
        purpose: str = PURPOSE,
        requester: str = REQUESTER,
        role: Role = Role.CREDIT_AGENCY,
    ) -> tuple[str, node_pb2.ContributeResponse]:
        """(query id, the node's answer) to one TOTAL contribution request; raises RpcError."""
        keys = self.federation.keys[requester]
        token = self.federation.token(requester, role=role, purposes=[purpose])
        query_id = self.last_query_id = "q_" + uuid.uuid4().hex[:22]
        request = ContributionRequest(
            query_id=query_id,
            subject_kind=SubjectKind.PERSON,
            subject_id=subject,
            shape=Shape.TOTAL,
            purpose=purpose,
            consent_id=consent_id,
            public_key=keys.public.to_bytes(),
            slots=(),
            slot_widths=(),
            modulus_proof=keys.modulus_proof,
            consent_receipt=receipt,
            revocation_head=head if head is not None else (staple.head if staple else None),
            revocations=(
                revocations if revocations is not None else (staple.revocations if staple else ())
            ),
        )
        answer = self.stub.Contribute(
            contribution_request_to_proto(request),
            timeout=TIMEOUT_S,
            metadata=bearer_metadata(token),
        )
        return query_id, answer

    def audit(self, query_id: str) -> dict[str, Any]:
        """The node's audit entry for `query_id`."""
        path = self.federation.node_configs[DEPT].state_dir / "audit.jsonl"
        for line in path.read_text(encoding="utf-8").splitlines():
            entry: dict[str, Any] = json.loads(line)
            if entry["query_id"] == query_id:
                return entry
        raise AssertionError(f"no audit entry for {query_id}")


@pytest.fixture(scope="module")
def attacker(
    federation: Federation, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Attacker]:
    coordinator = TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    key = load_consent_private_key(federation.certs / "coordinator" / CONSENT_KEY_FILE)
    registry = ConsentRegistry(
        tmp_path_factory.mktemp("attacker") / "consents.duckdb", receipt_key=key
    )
    target = f"127.0.0.1:{federation.nodes[DEPT].port}"
    try:
        with secure_channel(target, coordinator, server_name=node_server_name(DEPT)) as channel:
            yield Attacker(federation, node_pb2_grpc.NodeServiceStub(channel), registry, key)
    finally:
        registry.close()


def _refused(
    attacker: Attacker, code: grpc.StatusCode, match: str, **kw: Any
) -> tuple[grpc.RpcError, dict[str, Any]]:
    """The node's refusal (with `code`, its message containing `match`) and its audit entry."""
    subject = kw.pop("subject")
    with pytest.raises(grpc.RpcError) as caught:
        attacker.ask(subject, **kw)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() is code, error.details()
    assert match in (error.details() or ""), error.details()
    # the refusal is in the node's audit log, with why; no ciphertext left the node
    entry = attacker.audit(attacker.last_query_id)
    assert entry["decision"] == "deny"
    return error, entry


# --- the positive controls ----------------------------------------------------------------------


def test_a_genuine_receipt_with_a_fresh_head_is_answered(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[60]
    consent = attacker.grant(person)
    query_id, answer = attacker.ask(
        person, consent_id=consent.consent_id, receipt=consent.receipt, staple=attacker.staple()
    )
    assert answer.department == DEPT and answer.ciphertext.value
    entry = attacker.audit(query_id)
    assert entry["decision"] == "allow"
    assert entry["extra"]["consent"] == "valid"
    assert entry["extra"]["receipt"] == consent.consent_id
    assert entry["extra"]["receipt_key"] == consent_key_id(attacker.consent_key.public_key())


def test_a_statutory_purpose_is_answered_without_a_receipt(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[61]
    query_id, answer = attacker.ask(
        person, purpose="court_enforcement", requester="registrar", role=Role.PLATFORM_SERVICE
    )
    assert answer.ciphertext.value
    entry = attacker.audit(query_id)
    assert entry["decision"] == "allow"
    assert entry["extra"]["consent"] == "missing" and entry["extra"]["consent_needed"] == 0


# --- what a compromised coordinator tries --------------------------------------------------------


def test_no_receipt_is_refused(attacker: Attacker, federation: Federation) -> None:
    person = _persons(federation)[62]
    consent = attacker.grant(person)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "the request carries no consent receipt",
        subject=person,
        consent_id=consent.consent_id,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "missing"
    assert "no consent" in entry["reason"]


def test_the_coordinators_word_for_a_statutory_purpose_is_not_taken(
    attacker: Attacker, federation: Federation
) -> None:
    # court enforcement is statutory when a platform service asks (the node's own policy); a
    # bank naming it in its token gets nothing without a consent
    person = _persons(federation)[63]
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "no consent receipt",
        subject=person,
        purpose="court_enforcement",
        requester="bank-1",
        role=Role.BANK,
    )
    assert entry["extra"]["consent"] == "missing"


def test_a_receipt_signed_by_another_key_is_refused_and_logged_as_evidence(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[64]
    genuine = attacker.grant(person)
    forger = Ed25519PrivateKey.generate()
    forged = issue_receipt(consent=genuine, private_key=forger)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "was signed by consent key",
        subject=person,
        consent_id=genuine.consent_id,
        receipt=forged,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "untrusted"
    # the forgery is named in the department's log: the consent id and the key it claims
    assert entry["extra"]["receipt"] == genuine.consent_id
    assert entry["extra"]["receipt_key"] == consent_key_id(forger.public_key())


@pytest.mark.parametrize(
    ("grant", "match", "state"),
    [
        ({"subject": 1}, "was given by subject", "subject_mismatch"),
        ({"grantee": "bank-1"}, "is for grantee 'bank-1', not 'agency-1'", "grantee_mismatch"),
        ({"purpose": "credit_report"}, "is for purpose 'credit_report'", "purpose_mismatch"),
    ],
    ids=["another-subject", "another-grantee", "another-purpose"],
)
def test_a_genuine_receipt_for_something_else_is_refused(
    attacker: Attacker, federation: Federation, grant: dict[str, Any], match: str, state: str
) -> None:
    persons = _persons(federation)
    person = persons[65]
    subject = persons[66] if grant.pop("subject", None) else person
    consent = attacker.grant(subject, **grant)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        match,
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == state


def test_a_receipt_for_another_consent_id_is_refused(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[67]
    consent, other = attacker.grant(person), attacker.grant(person)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        f"the receipt is for consent {consent.consent_id}",
        subject=person,
        consent_id=other.consent_id,
        receipt=consent.receipt,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "consent_id_mismatch"


def test_an_expired_receipt_is_refused(attacker: Attacker, federation: Federation) -> None:
    person = _persons(federation)[68]
    then = datetime.now(UTC) - timedelta(days=2)
    consent = attacker.grant(person, now=then, expires_at=then + timedelta(days=1))
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "the consent has ended",
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "not_in_force"


def test_a_revoked_consent_is_refused_and_stays_revoked(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[69]
    consent = attacker.grant(person)
    before = attacker.staple()
    attacker.ask(person, consent_id=consent.consent_id, receipt=consent.receipt, staple=before)
    attacker.registry.revoke(consent.consent_id, now=datetime.now(UTC))
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        f"consent {consent.consent_id} was revoked at",
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "revoked"
    # the head from before the revocation, replayed: the node knows better now
    _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "was revoked at",
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
        staple=before,
    )
    # nor does a new, empty feed signed with the consent key take the revocation back, even
    # with the receipt signed again bound to it (what only the consent key can do)
    feed = new_feed_id()
    empty = sign_head(
        feed=feed,
        issuer=RECEIPT_ISSUER,
        size=0,
        root=genesis(feed),
        issued_at=datetime.now(UTC),
        private_key=attacker.consent_key,
    )
    _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "was revoked at",
        subject=person,
        consent_id=consent.consent_id,
        receipt=_bound(attacker, consent, feed),
        head=empty,
        revocations=(),
    )
    # the node keeps what it learnt in its state directory, owner-only
    state = federation.node_configs[DEPT].state_dir / REVOCATIONS_FILE
    assert consent.consent_id in state.read_text(encoding="utf-8")
    assert state.stat().st_mode & 0o777 == 0o600


def test_a_withheld_revocation_head_is_refused(attacker: Attacker, federation: Federation) -> None:
    person = _persons(federation)[70]
    consent = attacker.grant(person)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.FAILED_PRECONDITION,
        "no revocation head came with this request",
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
    )
    assert entry["extra"]["consent"] == "revocations_stale"


def test_an_old_head_is_refused_as_stale(attacker: Attacker, federation: Federation) -> None:
    # what a coordinator replays to hide a revocation made since: a genuine head, but old
    person = _persons(federation)[71]
    consent = attacker.grant(person)
    head, feed = _fresh_feed_head(attacker, minutes_old=2)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.FAILED_PRECONDITION,
        "more than 60 s before now",
        subject=person,
        consent_id=consent.consent_id,
        receipt=_bound(attacker, consent, feed),
        head=head,
        revocations=(),
    )
    assert entry["extra"]["consent"] == "revocations_stale"


def _fresh_feed_head(attacker: Attacker, *, minutes_old: int) -> tuple[SignedHead, str]:
    """A genuine head of a feed the node has never seen, issued `minutes_old` minutes ago, and
    the feed's id."""
    feed = new_feed_id()
    head = sign_head(
        feed=feed,
        issuer=RECEIPT_ISSUER,
        size=0,
        root=genesis(feed),
        issued_at=datetime.now(UTC) - timedelta(minutes=minutes_old),
        private_key=attacker.consent_key,
    )
    return head, feed


def _bound(attacker: Attacker, consent: Consent, feed: str | None) -> str:
    """`consent`'s receipt, signed with the platform's consent key, bound to `feed`."""
    return issue_receipt(consent=consent, private_key=attacker.consent_key, revocation_feed=feed)


def test_a_head_of_another_feed_than_the_receipts_is_refused(
    attacker: Attacker, federation: Federation, tmp_path: Path
) -> None:
    # a registry started afresh (or a staging copy) with the same consent key: a live feed of
    # its own that lacks the revocation, stapled with a genuine receipt of the real registry
    persons = _persons(federation)
    consent = attacker.grant(persons[76])
    attacker.registry.revoke(consent.consent_id, now=datetime.now(UTC))
    afresh = ConsentRegistry(tmp_path / "afresh.duckdb", receipt_key=attacker.consent_key)
    try:
        _, entry = _refused(
            attacker,
            grpc.StatusCode.PERMISSION_DENIED,
            f"is bound to feed {attacker.registry.feed_id}",
            subject=persons[76],
            consent_id=consent.consent_id,
            receipt=consent.receipt,
            staple=afresh.revocation_staple(datetime.now(UTC), known=0),
        )
        assert entry["extra"]["consent"] == "feed_refused"
    finally:
        afresh.close()


def test_a_receipt_bound_to_no_feed_is_refused(attacker: Attacker, federation: Federation) -> None:
    # a receipt signed before receipts named their feed: which feed's revocations apply is
    # unknown, so the node does not answer under it (the registry signs such rows again)
    person = _persons(federation)[77]
    consent = attacker.grant(person)
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "names no revocation feed",
        subject=person,
        consent_id=consent.consent_id,
        receipt=_bound(attacker, consent, None),
        staple=attacker.staple(),
    )
    assert entry["extra"]["consent"] == "unbound_receipt"


def test_unverified_ids_that_could_forge_log_lines_are_not_logged(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[78]
    forged = jwt.encode(
        {"jti": "cns_x\nWARNING forged line", "sub": person},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"typ": "osmanthus-consent+jwt", "kid": "k\x1b[2J"},
    )
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "no consent: the consent receipt was refused",
        subject=person,
        consent_id="cns_" + "a" * 22,
        receipt=forged,
        staple=attacker.staple(),
    )
    assert entry["extra"]["receipt"] == UNREADABLE_ID
    assert entry["extra"]["receipt_key"] == UNREADABLE_ID


def test_a_head_signed_by_another_key_is_refused(
    attacker: Attacker, federation: Federation
) -> None:
    person = _persons(federation)[72]
    consent = attacker.grant(person)
    feed = new_feed_id()
    forged = sign_head(
        feed=feed,
        issuer=RECEIPT_ISSUER,
        size=0,
        root=genesis(feed),
        issued_at=datetime.now(UTC),
        private_key=Ed25519PrivateKey.generate(),
    )
    _, entry = _refused(
        attacker,
        grpc.StatusCode.PERMISSION_DENIED,
        "the revocation head's signature was refused",
        subject=person,
        consent_id=consent.consent_id,
        receipt=consent.receipt,
        head=forged,
        revocations=(),
    )
    assert entry["extra"]["consent"] == "feed_refused"


def test_a_node_behind_the_feed_says_how_far_it_is_and_altered_entries_are_refused(
    federation: Federation, attacker: Attacker, tmp_path: Path
) -> None:
    # a registry of its own: a feed this node has never seen, with two revocations
    registry = ConsentRegistry(tmp_path / "consents.duckdb", receipt_key=attacker.consent_key)
    try:
        persons = _persons(federation)
        revoked = [registry.grant(
            subject_id=p, grantee=REQUESTER, purpose=PURPOSE,
            expires_at=datetime.now(UTC) + timedelta(days=1), now=datetime.now(UTC),
        ) for p in persons[73:75]]  # fmt: skip
        for consent in revoked:
            registry.revoke(consent.consent_id, now=datetime.now(UTC))
        person = persons[75]
        consent = registry.grant(
            subject_id=person, grantee=REQUESTER, purpose=PURPOSE,
            expires_at=datetime.now(UTC) + timedelta(days=1), now=datetime.now(UTC),
        )  # fmt: skip
        staple = registry.revocation_staple(datetime.now(UTC), known=0)
        # the head alone: the node lacks both entries, and says which feed and how many it has
        error, entry = _refused(
            attacker,
            grpc.StatusCode.FAILED_PRECONDITION,
            "this node has 0 of the 2 entries",
            subject=person,
            consent_id=consent.consent_id,
            receipt=consent.receipt,
            head=staple.head,
            revocations=(),
        )
        reason, metadata = error_info(error)
        assert reason == "REVOCATIONS_BEHIND"
        assert metadata["sequence"] == "0" and FEED_ID_PATTERN.fullmatch(metadata["feed"])
        assert metadata["feed"] == registry.feed_id
        assert entry["extra"]["consent"] == "revocations_behind"
        # the entries with one revocation swapped for another consent: the chain breaks
        altered = (
            replace(staple.revocations[0], consent_id=ConsentId(consent.consent_id)),
            staple.revocations[1],
        )
        _, entry = _refused(
            attacker,
            grpc.StatusCode.PERMISSION_DENIED,
            "do not chain to the signed head",
            subject=person,
            consent_id=consent.consent_id,
            receipt=consent.receipt,
            head=staple.head,
            revocations=altered,
        )
        assert entry["extra"]["consent"] == "feed_refused"
        # the genuine entries: learnt, and the consent (not among them) is answered
        attacker.ask(person, consent_id=consent.consent_id, receipt=consent.receipt, staple=staple)
        for gone in revoked:
            _refused(
                attacker,
                grpc.StatusCode.PERMISSION_DENIED,
                "was revoked at",
                subject=persons[persons.index(gone.subject_id)],
                consent_id=gone.consent_id,
                receipt=gone.receipt,
                staple=registry.revocation_staple(datetime.now(UTC), known=0),
            )
    finally:
        registry.close()


# --- the whole flow, with the coordinator's own check skipped -------------------------------------


@pytest.fixture
def own_coordinator(federation: Federation, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A coordinator of its own on the session federation's nodes, signing with the platform's
    consent key (so the nodes trust its receipts); yields its target and service."""
    nodes_toml = tmp_path / "nodes.toml"
    nodes_toml.write_text(
        render_nodes(
            [
                NodeEndpoint(DepartmentId(d), f"127.0.0.1:{s.port}")
                for d, s in federation.nodes.items()
            ]
        )
    )
    running = start_coordinator(
        CoordinatorConfig(
            nodes=nodes_toml,
            tls=TlsFiles.from_cert_paths(
                cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
            ),
            issuer_public_key=federation.issuer_keys.public,
            state_dir=tmp_path / "state",
            consent_key=federation.certs / "coordinator" / CONSENT_KEY_FILE,
        ),
        catalogue=federation.catalogue,
    )
    try:
        yield f"127.0.0.1:{running.port}", running.service
    finally:
        running.stop()


def test_a_revocation_stops_the_nodes_even_if_the_coordinators_check_is_skipped(
    federation: Federation, own_coordinator: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    target, service = own_coordinator

    def client(name: str, role: Role, purposes: list[str]) -> Client:
        return Client(
            target,
            tls=federation.tls(name),
            token=federation.token(name, role=role, purposes=purposes),
            keys=federation.keys[name],
            catalogue=federation.catalogue,
        )

    person = _persons(federation)[80]
    with (
        client("registrar", Role.PLATFORM_SERVICE, ["consent_management"]) as registrar,
        client(REQUESTER, Role.CREDIT_AGENCY, [PURPOSE]) as agency,
    ):
        registrar.register_key()
        agency.register_key()
        consent = registrar.grant_consent(
            subject_id=person,
            grantee=REQUESTER,
            purpose=PURPOSE,
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        earlier = registrar.grant_consent(
            subject_id=_persons(federation)[81],
            grantee=REQUESTER,
            purpose=PURPOSE,
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
        registrar.revoke_consent(earlier.consent_id)
        # as if every node had acknowledged that revocation already (a node restored from an
        # older backup): each says how far it is, and the coordinator sends the rest
        pool = service._ctx.nodes
        for dept in federation.nodes:
            pool._acknowledged[DepartmentId(dept), service._consents.feed_id] = 1
        card = agency.person_score(person, purpose=PURPOSE, consent_id=consent.consent_id)
        assert card.subject_id == person and not card.partial
        audit = federation.node_configs[DEPT].state_dir / "audit.jsonl"
        entries = [
            json.loads(line)
            for line in audit.read_text(encoding="utf-8").splitlines()
            if json.loads(line)["query_id"] == card.query_id
        ]
        assert [(e["decision"], e["extra"]["consent"]) for e in entries] == [
            ("deny", "revocations_behind"),
            ("allow", "valid"),
        ]
        registrar.revoke_consent(consent.consent_id)
        # the coordinator's own check would refuse...
        with pytest.raises(PermissionDenied, match="was revoked at"):
            agency.person_score(person, purpose=PURPOSE, consent_id=consent.consent_id)
        # ...and with it skipped (a compromised coordinator), every node refuses by itself:
        # the revocation reached them in the feed stapled to the very request
        registry = service._consents  # the coordinator's registry, as its own code holds it
        monkeypatch.setattr(
            registry, "check", lambda *a, **kw: (ConsentState.VALID, "check skipped")
        )
        with pytest.raises(PermissionDenied) as caught:
            agency.person_score(person, purpose=PURPOSE, consent_id=consent.consent_id)
    message = caught.value.message
    assert message.startswith("every department refused")
    assert message.count(f"consent {consent.consent_id} was revoked at") == len(
        federation.catalogue.departments_for(SubjectKind.PERSON)
    )
