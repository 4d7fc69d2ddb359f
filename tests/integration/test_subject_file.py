"""A subject's own file through the real federation: the subjects' portal devices (a kiosk, role
kiosk; the online site, role portal) ask the coordinator, every department's node seals its
part to the device's key, the coordinator forwards the parts unread and adds its own audit
entries, and the SDK opens, checks and decodes them.

Played here: the file opens whole (records, list entries, the coordinator's and the nodes'
audit lines); the self-query score needs no consent for a device; a kiosk asking for a loan
check is refused by its token, and audited; a kiosk token for a loan purpose or a device token
without a sealing key is never issued, and one forged with the issuer's key is refused by the
token check; a token with another key's fingerprint gets nothing; a curious coordinator
holding every byte it forwards opens nothing and reads no resident id; two departments' parts
swapped make the SDK refuse the file naming the source; a coordinator that makes up a
department's part (sealed to the portal's public key, signed with its own certificate key), or
replays a genuine part into a new call, is caught by the SDK; the portal cannot revoke another
subject's consent; and the coordinator's audit log holds no raw resident id.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import sdk
from certs import PeerRole, cert_paths
from osmanthus.core.audited import UNAUTHENTICATED
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.subjectfile import AUDIT_SHAPE, COORDINATOR_SOURCE, SubjectFile, rfc3339
from osmanthus.core.subjectpart import PartSigner, load_trusted_cas, seal_part
from osmanthus.core.subjectseal import SealContext, open_file, public_bytes, seal_fingerprint
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import Role, Shape, SubjectKind
from osmanthus.core.wire import coordinator as wire
from osmanthus.demo.seed import DEMO_CITIZEN, DEMO_ENTERPRISE
from osmanthus.v1 import coordinator_pb2, coordinator_pb2_grpc
from sdk import Client
from sdk.subject import file_request, open_parts
from tests.forge import unsafe_forge_token
from tests.integration.conftest import Federation, consent_for

KIOSK = "kiosk-1"
PORTAL = "portal-1"
SELF = "self_query"
LOAN = "loan_underwriting"
CITIZEN = DEMO_CITIZEN.subject_id
FIRM = DEMO_ENTERPRISE.subject_id
TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def sealing_key() -> X25519PrivateKey:
    """The portal devices' sealing key (one for both here; each device has its own in use)."""
    return X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def seal_fp(sealing_key: X25519PrivateKey) -> str:
    return seal_fingerprint(public_bytes(sealing_key))


@pytest.fixture(scope="module")
def portal(federation: Federation, seal_fp: str) -> Iterator[Client]:
    client = federation.client(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    yield client
    client.close()


@pytest.fixture(scope="module")
def kiosk(federation: Federation, seal_fp: str) -> Iterator[Client]:
    client = federation.client(KIOSK, role=Role.KIOSK, purposes=[SELF], seal_fingerprint=seal_fp)
    yield client
    client.close()


def _audit(federation: Federation) -> list[dict[str, object]]:
    path = federation.state_dir / "coordinator" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _raw_subject_file(
    federation: Federation, requester: str, token: str, request: wire.SubjectFileRequest
) -> coordinator_pb2.SubjectFileResponse:
    """What the coordinator sends, as bytes on the wire (no SDK in between)."""
    channel = secure_channel(
        federation.target, federation.tls(requester), server_name=COORDINATOR_SERVER_NAME
    )
    try:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        response: coordinator_pb2.SubjectFileResponse = stub.SubjectFile(
            wire.subject_file_request_to_proto(request),
            timeout=TIMEOUT_S,
            metadata=bearer_metadata(token),
        )
        return response
    finally:
        channel.close()


def _raw_refusal(
    federation: Federation, requester: str, token: str, request: wire.SubjectFileRequest
) -> sdk.OsmanthusError:
    with pytest.raises(grpc.RpcError) as caught:
        _raw_subject_file(federation, requester, token, request)
    return error_from_rpc(caught.value)


# --- the file, whole --------------------------------------------------------------------------


def test_the_portal_reads_the_subjects_whole_file(
    federation: Federation, portal: Client, sealing_key: X25519PrivateKey
) -> None:
    # the subject reads their score first: it must show up in who asked, at both ends
    card = portal.person_score(CITIZEN, purpose=SELF, shape=Shape.BREAKDOWN)
    result = portal.subject_file(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    serving = {d.id for d in federation.catalogue.departments_for(SubjectKind.PERSON)}
    assert not result.partial and result.missing == ()
    assert {p.source for p in result.departments} == serving
    assert result.parts[-1].source == COORDINATOR_SOURCE
    for part in result.parts:
        assert part.subject_id == CITIZEN and part.query_id == result.query_id
    by_source = {p.source: p for p in result.departments}
    # her records in this federation's departments, each counting today
    expected = {r.department: r.kind for r in DEMO_CITIZEN.records if r.department in by_source}
    assert expected  # hrss, civility, blood, volunteer
    for department, kind in expected.items():
        states = {(r.kind, r.state) for r in by_source[department].records}
        assert (kind, "counts") in states, (department, states)
    # the departments' parts add up to the score the kiosk shows
    bonuses = sum(sum(p.bonuses.values()) for p in result.departments)
    deductions = sum(p.deductions for p in result.departments)
    assert card.score == card.base - deductions + bonuses
    # who asked: every node lists this file's request and the score query before it
    for part in result.departments:
        asked = {(a.query_id, a.shape, a.requester, a.decision) for a in part.audit}
        assert (result.query_id, AUDIT_SHAPE, PORTAL, "allow") in asked, part.source
        assert any(a.query_id == card.query_id and a.requester == PORTAL for a in part.audit)
    own = result.coordinator
    assert own.records == () and own.list_entries == ()
    lines = {(a.query_id, a.shape, a.requester, a.decision, a.purpose) for a in own.audit}
    assert (card.query_id, "breakdown", PORTAL, "allow", SELF) in lines
    assert (result.query_id, AUDIT_SHAPE, PORTAL, "allow", SELF) in lines
    assert own.audit[-1].query_id == result.query_id


def test_a_kiosk_reads_the_score_without_a_consent(federation: Federation, kiosk: Client) -> None:
    card = kiosk.person_score(CITIZEN, purpose=SELF, shape=Shape.BREAKDOWN)
    assert not card.partial
    assert card.score == card.base - (card.deductions or 0) + (card.bonus_total or 0)
    entry = next(e for e in _audit(federation) if e["query_id"] == card.query_id)
    assert entry["decision"] == "allow" and entry["requester"] == KIOSK
    assert entry["consent_id"] == ""


def test_the_portal_reads_an_enterprises_file_and_score(
    federation: Federation, portal: Client, sealing_key: X25519PrivateKey
) -> None:
    card = portal.enterprise_score(FIRM, purpose=SELF)
    assert card.score == card.base - (card.deductions or 0) + (card.bonus_total or 0)
    result = portal.subject_file(
        subject_kind=SubjectKind.ENTERPRISE, subject_id=FIRM, sealing_key=sealing_key
    )
    serving = {d.id for d in federation.catalogue.departments_for(SubjectKind.ENTERPRISE)}
    assert {p.source for p in result.departments} == serving
    kinds = {r.kind for p in result.departments for r in p.records}
    assert {"general_certified_enterprise", "contract_honouring_enterprise"} <= kinds


def test_a_kiosk_gets_no_enterprises_file(
    federation: Federation, kiosk: Client, sealing_key: X25519PrivateKey
) -> None:
    with pytest.raises(sdk.PermissionDenied, match="central policy: ") as caught:
        kiosk.subject_file(
            subject_kind=SubjectKind.ENTERPRISE, subject_id=FIRM, sealing_key=sealing_key
        )
    assert "no policy permits Action::\"SubjectFile\" for role 'kiosk'" in caught.value.message


# --- a kiosk asking for anything else ---------------------------------------------------------


def test_a_kiosk_asking_for_a_loan_check_is_refused_by_its_token_and_audited(
    federation: Federation, kiosk: Client
) -> None:
    with pytest.raises(sdk.PermissionDenied, match="not among the token's purposes"):
        kiosk.person_score(CITIZEN, purpose=LOAN)
    refused = [
        e
        for e in _audit(federation)
        if e["requester"] == KIOSK and e["purpose"] == LOAN and e["decision"] == "deny"
    ]
    assert refused


def test_a_kiosk_token_for_a_loan_purpose_is_never_issued_and_a_forged_one_is_refused(
    federation: Federation, registrar: Client, seal_fp: str, sealing_key: X25519PrivateKey
) -> None:
    # the platform will not sign it
    with pytest.raises(InvalidArgument, match="exactly \\['self_query'\\]") as refused:
        federation.token(KIOSK, role=Role.KIOSK, purposes=[SELF, LOAN], seal_fingerprint=seal_fp)
    assert refused.value.field == "purposes"
    # a token signed with the issuer's key by some other path: the coordinator refuses it
    # before any policy or consent is looked at, even with the subject's consent in place
    consent = consent_for(registrar, CITIZEN, grantee=KIOSK, purpose=LOAN)
    forged = unsafe_forge_token(
        federation.issuer_keys.private, requester=KIOSK, role=Role.KIOSK.value,
        purposes=[SELF, LOAN], key_fingerprint=federation.keys[KIOSK].fingerprint,
        seal_fingerprint=seal_fp,
    )  # fmt: skip
    with (
        Client(
            federation.target,
            tls=federation.tls(KIOSK),
            token=forged,
            keys=federation.keys[KIOSK],
            catalogue=federation.catalogue,
        ) as kiosk,  # fmt: skip
        pytest.raises(sdk.Unauthenticated, match="token claim 'purposes': role 'kiosk'"),
    ):
        kiosk.person_score(CITIZEN, purpose=LOAN, consent_id=consent)
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    error = _raw_refusal(federation, KIOSK, forged, dataclasses.replace(request, purpose=LOAN))
    assert isinstance(error, sdk.Unauthenticated)
    assert "token claim 'purposes'" in error.message
    entries = [e for e in _audit(federation) if e["purpose"] == LOAN]
    refused_file = [e for e in entries if e["shape"] == AUDIT_SHAPE]
    assert refused_file and all(e["decision"] == "deny" for e in refused_file)
    assert all(e["requester"] == UNAUTHENTICATED for e in refused_file)


# --- the sealing key ----------------------------------------------------------------------------


def test_a_token_without_a_sealing_key_gets_no_file(
    federation: Federation, sealing_key: X25519PrivateKey
) -> None:
    with pytest.raises(InvalidArgument, match="sealing key") as refused:
        federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF])
    assert refused.value.field == "seal_fingerprint"
    forged = unsafe_forge_token(
        federation.issuer_keys.private, requester=PORTAL, role=Role.PORTAL.value,
        purposes=[SELF], key_fingerprint=federation.keys[PORTAL].fingerprint,
    )  # fmt: skip
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    error = _raw_refusal(federation, PORTAL, forged, request)
    assert isinstance(error, sdk.Unauthenticated)
    assert "token claim 'seal_fp'" in error.message


def test_another_keys_fingerprint_gets_no_file(
    federation: Federation, sealing_key: X25519PrivateKey
) -> None:
    other = seal_fingerprint(public_bytes(X25519PrivateKey.generate()))
    with (
        federation.client(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=other) as p,
        pytest.raises(sdk.PermissionDenied, match="not the key bound to the token") as caught,
    ):
        p.subject_file(subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key)
    assert caught.value.field == "recipient_key"


def test_a_requester_that_is_no_portal_device_gets_no_file(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    token = federation.token(
        "agency-1", role=Role.CREDIT_AGENCY, purposes=[SELF], seal_fingerprint=seal_fp
    )
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    error = _raw_refusal(federation, "agency-1", token, request)
    assert isinstance(error, sdk.PermissionDenied)
    assert "role kiosk or portal" in error.message


# --- the curious coordinator --------------------------------------------------------------------


def test_a_curious_coordinator_opens_no_part_and_reads_no_resident_id(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    token = federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    # every byte the coordinator forwards (it holds no more of a part than this)
    response = _raw_subject_file(federation, PORTAL, token, request)
    forwarded = response.SerializeToString()
    assert CITIZEN.encode() not in forwarded
    assert len(response.files) == len(federation.catalogue.departments_for(SubjectKind.PERSON)) + 1
    for part in response.files:
        assert CITIZEN.encode() not in part.sealed
        context = SealContext(
            query_id=response.query_id,
            source=part.source,
            subject_kind="person",
            subject_id=CITIZEN,
            nonce=request.nonce,
        )
        # any key but the portal's opens nothing, even knowing every field of the context
        with pytest.raises(sdk.Unauthenticated, match="does not open"):
            open_file(sealed=part.sealed, private_key=X25519PrivateKey.generate(), context=context)
        open_file(sealed=part.sealed, private_key=sealing_key, context=context)


def test_a_coordinator_that_puts_its_own_key_in_is_refused(
    federation: Federation, seal_fp: str
) -> None:
    token = federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    theirs = file_request(
        subject_kind=SubjectKind.PERSON,
        subject_id=CITIZEN,
        sealing_key=X25519PrivateKey.generate(),
    )
    error = _raw_refusal(federation, PORTAL, token, theirs)
    assert isinstance(error, sdk.PermissionDenied)
    assert error.field == "recipient_key"


def test_two_departments_parts_swapped_fail_the_file_naming_the_source(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    token = federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    outcome = wire.subject_file_outcome_from_proto(
        _raw_subject_file(federation, PORTAL, token, request)
    )
    # untouched, it opens
    _open_parts(federation, outcome, request, sealing_key)
    first, second = outcome.parts[0], outcome.parts[1]
    swapped = dataclasses.replace(
        outcome,
        parts=(
            dataclasses.replace(first, sealed=second.sealed),
            dataclasses.replace(second, sealed=first.sealed),
            *outcome.parts[2:],
        ),
    )
    with pytest.raises(sdk.CryptoError, match=repr(first.source)):
        _open_parts(federation, swapped, request, sealing_key)
    # a department's part dropped without a word: refused too
    dropped = dataclasses.replace(outcome, parts=outcome.parts[1:])
    with pytest.raises(sdk.CryptoError, match="neither holds nor explains"):
        _open_parts(federation, dropped, request, sealing_key)


def _open_parts(
    federation: Federation,
    outcome: wire.SubjectFileOutcome,
    request: wire.SubjectFileRequest,
    sealing_key: X25519PrivateKey,
) -> sdk.SubjectFileResult:
    """What Client.subject_file does with an answer, trusting the CA the portal's TLS trusts."""
    return open_parts(
        outcome,
        request=request,
        sealing_key=sealing_key,
        catalogue=federation.catalogue,
        trusted_cas=load_trusted_cas(federation.tls(PORTAL).ca),
    )


def _genuine(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> tuple[wire.SubjectFileRequest, wire.SubjectFileOutcome]:
    """A request and the federation's real answer to it, as the coordinator holds them."""
    token = federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    outcome = wire.subject_file_outcome_from_proto(
        _raw_subject_file(federation, PORTAL, token, request)
    )
    return request, outcome


def test_a_coordinator_that_makes_up_a_departments_part_is_caught(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    # the coordinator holds the request (subject, nonce, the portal's public key), chose the
    # query id, and has its own TLS key and certificate: it drops a department's genuine part
    # (a bank's reads in its audit lines) and puts an empty one in its place
    request, outcome = _genuine(federation, sealing_key, seal_fp)
    victim = outcome.parts[0]
    own_tls = TlsFiles.from_cert_paths(
        cert_paths(federation.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    coordinator_key = PartSigner.from_tls_files(own_tls)
    empty = SubjectFile(
        source=victim.source,
        query_id=outcome.query_id,
        subject_kind="person",
        subject_id=CITIZEN,
        as_of=datetime.now(UTC).date().isoformat(),
        generated_at=rfc3339(datetime.now(UTC)),
    )
    forged = seal_part(
        subject_file=empty,
        recipient_key=request.recipient_key,
        nonce=request.nonce,
        signer=dataclasses.replace(coordinator_key, source=victim.source),
    )
    fabricated = dataclasses.replace(outcome, parts=(forged, *outcome.parts[1:]))
    with pytest.raises(sdk.CryptoError, match=f"the part from {victim.source!r}") as caught:
        _open_parts(federation, fabricated, request, sealing_key)
    assert "names coordinator" in caught.value.message
    # signed with the coordinator's key but carrying the department's certificate: no better
    disguised = dataclasses.replace(forged, certificate=victim.certificate)
    with pytest.raises(sdk.CryptoError, match=f"the part from {victim.source!r}"):
        _open_parts(
            federation,
            dataclasses.replace(outcome, parts=(disguised, *outcome.parts[1:])),
            request,
            sealing_key,
        )
    # the department's part signed by another department's node (its genuine part relabelled)
    other = outcome.parts[1]
    relabelled = dataclasses.replace(other, source=victim.source)
    with pytest.raises(sdk.CryptoError, match=f"names node {other.source!r}"):
        _open_parts(
            federation,
            dataclasses.replace(outcome, parts=(relabelled, *outcome.parts[1:])),
            request,
            sealing_key,
        )
    # the genuine answer opens
    _open_parts(federation, outcome, request, sealing_key)


def test_a_genuine_part_replayed_into_a_new_call_is_caught(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    # an earlier call's genuine answer, and the portal's next call: the coordinator answers
    # the new call with the old parts (same query id: it chooses the ids) within minutes
    _, old = _genuine(federation, sealing_key, seal_fp)
    again = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    with pytest.raises(sdk.CryptoError, match=f"the part from {old.parts[0].source!r}") as caught:
        _open_parts(federation, old, again, sealing_key)
    assert "does not verify" in caught.value.message


def test_a_request_without_a_nonce_is_refused_naming_it(
    federation: Federation, sealing_key: X25519PrivateKey, seal_fp: str
) -> None:
    token = federation.token(PORTAL, role=Role.PORTAL, purposes=[SELF], seal_fingerprint=seal_fp)
    request = file_request(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    for nonce in (b"", b"\x01" * 8, b"\x01" * 65):
        error = _raw_refusal(federation, PORTAL, token, dataclasses.replace(request, nonce=nonce))
        assert isinstance(error, sdk.InvalidArgument)
        assert error.field == "nonce" and "16 to 64 random bytes" in error.message


# --- consents through the portal ----------------------------------------------------------------


def test_the_portal_revokes_the_subjects_own_consent_and_no_one_elses(
    federation: Federation, registrar: Client, portal: Client
) -> None:
    other = DEMO_ENTERPRISE.representative
    assert other is not None
    theirs = consent_for(registrar, other.resident_id)
    mine = consent_for(registrar, CITIZEN)
    with pytest.raises(sdk.PermissionDenied, match="not the named subject's") as caught:
        portal.revoke_consent(theirs, subject_id=CITIZEN)
    assert caught.value.field == "consent_id"
    refused = next(
        e for e in _audit(federation) if e["consent_id"] == theirs and e["requester"] == PORTAL
    )
    assert refused["decision"] == "deny" and refused["shape"] == "consent_revocation"
    still = registrar.list_consents(subject_id=other.resident_id)
    assert next(c for c in still if c.consent_id == theirs).revoked_at is None
    # without naming the subject: refused
    with pytest.raises(sdk.PermissionDenied, match="subject it names"):
        portal.revoke_consent(mine)
    # listing needs the subject too, and then shows every grantee's consents of theirs
    with pytest.raises(sdk.PermissionDenied, match="subject it names"):
        portal.list_consents()
    listed = portal.list_consents(subject_id=CITIZEN)
    assert mine in {c.consent_id for c in listed}
    assert all(c.subject_id == CITIZEN for c in listed)
    revoked = portal.revoke_consent(mine, subject_id=CITIZEN)
    assert revoked.consent_id == mine and revoked.revoked_at is not None


def test_a_kiosk_manages_no_consents(
    federation: Federation, registrar: Client, kiosk: Client
) -> None:
    mine = consent_for(registrar, CITIZEN)
    with pytest.raises(sdk.PermissionDenied):
        kiosk.revoke_consent(mine, subject_id=CITIZEN)


# --- the coordinator's log ----------------------------------------------------------------------


def test_the_coordinators_audit_log_holds_no_raw_resident_id(
    federation: Federation, portal: Client, sealing_key: X25519PrivateKey
) -> None:
    portal.subject_file(
        subject_kind=SubjectKind.PERSON, subject_id=CITIZEN, sealing_key=sealing_key
    )
    text = (federation.state_dir / "coordinator" / "audit.jsonl").read_text(encoding="utf-8")
    assert AUDIT_SHAPE in text
    for subject in (CITIZEN, FIRM, CITIZEN.lower()):
        assert subject not in text
