"""Every way a query is refused on policy grounds, through a running federation, one test each.

Each test asserts the gRPC status a requester receives and that the message names the cause, so
that a refusal can be acted on without reading the coordinator's log. The federation is this
module's own: five person departments, the shipped policies plus what docs/policies.md example
(c) adds at the blood station, and a central policy with two test changes (see _central_policy).
test_consent_flow.py and test_rejections_coordinator.py cover the SDK's side of consent and
every identity and transport refusal; this module is the catalogue of policy refusals.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

import sdk
from coordinator.server import DEFAULT_CENTRAL_POLICY
from node.server import DEFAULT_NODE_POLICY
from osmanthus.core.errors import RateLimited
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY, error_from_rpc
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, secure_channel
from osmanthus.core.types import Role
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    consent_for,
    restricted_catalogue,
    start_federation,
    stop_federation,
)

#: person departments only: blood owns a bonus category, the others hold deductions
DEPARTMENTS = ("psb", "court", "tax", "blood", "volunteer")
LIBRARY = "library-1"
AGENCY = "agency-1"
WAIVER = "deposit_waiver"
LOAN = "loan_underwriting"
#: the library's deposit-waiver rate, lowered from the shipped 600/hour so a test can reach it
LIBRARY_RATE = 2
TIMEOUT_S = 30.0

#: docs/policies.md example (c): the blood station keeps its records out of loan underwriting
BLOOD_FORBID = """
@id("node-blood-no-loans")
forbid (
  principal,
  action == Action::"Contribute",
  resource == Department::"blood"
)
when { context.purpose == "loan_underwriting" };
"""

#: a central permit no shipped policy has: the library may have a loan total. Every department's
#: node-no-library forbids it, which is what the test of a node's forbid needs
LIBRARY_LOAN_PERMIT = """
@id("test-library-loan-total")
permit (
  principal,
  action == Action::"PersonQuery",
  resource == Dataset::"person"
)
when {
  principal.role == "library" &&
  context.purpose == "loan_underwriting" &&
  context.shape == "total" &&
  context.consent == "valid"
};
"""


def _central_policy() -> str:
    text = DEFAULT_CENTRAL_POLICY.read_text(encoding="utf-8")
    shipped = (
        '@id("central-library-deposit-waiver")\n@min_departments("3")\n@rate_limit("600/hour")'
    )
    assert shipped in text, "central.cedar's deposit-waiver rule changed; update this module"
    lowered = shipped.replace("600/hour", f"{LIBRARY_RATE}/minute")
    return text.replace(shipped, lowered) + LIBRARY_LOAN_PERMIT


@dataclass
class Consents:
    """The library's consents for one reader, one per state the deny tests need."""

    reader: str
    valid: str
    revoked: str
    expired: str
    purpose_mismatch: str
    grantee_mismatch: str
    loan: str


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    base = tmp_path_factory.mktemp("deny-paths")
    central = base / "central.cedar"
    central.write_text(_central_policy(), encoding="utf-8")
    blood = base / "node-blood.cedar"
    blood.write_text(DEFAULT_NODE_POLICY.read_text(encoding="utf-8") + BLOOD_FORBID)
    federation = start_federation(
        base,
        catalogue=restricted_catalogue(DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=DEPARTMENTS,
        node_policies={"blood": blood},
        central_policy=central,
    )
    yield federation
    stop_federation(federation)


@pytest.fixture(scope="module")
def registrar(fed: Federation) -> Iterator[Client]:
    client = fed.client("registrar", role=Role.PLATFORM_SERVICE, purposes=["consent_management"])
    yield client
    client.close()


@pytest.fixture(scope="module")
def persons(fed: Federation) -> list[str]:
    with fed.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]


@pytest.fixture(scope="module")
def registered(fed: Federation) -> None:
    """Every requester of this module has registered its key, so no refusal is about the key."""
    for requester, role in ((LIBRARY, Role.LIBRARY), (AGENCY, Role.CREDIT_AGENCY),
                            ("bank-1", Role.BANK), ("sync-1", Role.SYNC_JOB)):  # fmt: skip
        with fed.client(requester, role=role, purposes=[WAIVER]) as client:
            client.register_key()


@pytest.fixture(scope="module")
def consents(fed: Federation, registrar: Client, persons: list[str]) -> Consents:
    reader = persons[30]
    # the expiring one first, so that its second has passed once the others are made
    expires_at = datetime.now(UTC) + timedelta(seconds=1)
    expiring = registrar.grant_consent(
        subject_id=reader, grantee=LIBRARY, purpose=WAIVER, expires_at=expires_at
    ).consent_id
    revoked = consent_for(registrar, reader, grantee=LIBRARY, purpose=WAIVER)
    registrar.revoke_consent(revoked)
    made = Consents(
        reader=reader,
        valid=consent_for(registrar, reader, grantee=LIBRARY, purpose=WAIVER),
        revoked=revoked,
        expired=expiring,
        purpose_mismatch=consent_for(registrar, reader, grantee=LIBRARY, purpose=LOAN),
        grantee_mismatch=consent_for(registrar, reader, grantee=AGENCY, purpose=WAIVER),
        loan=consent_for(registrar, reader, grantee=LIBRARY, purpose=LOAN),
    )
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.1)
    return made


def _person_query(
    fed: Federation,
    *,
    requester: str,
    role: Role,
    token_purposes: list[str],
    subject: str,
    purpose: str,
    shape: common_pb2.Shape,
    consent_id: str = "",
    threshold: int = 0,
) -> Any:
    """One PersonQuery over a raw stub, as `requester` with a token of `role`."""
    token = fed.token(requester, role=role, purposes=token_purposes)
    channel = secure_channel(fed.target, fed.tls(requester), server_name=COORDINATOR_SERVER_NAME)
    with channel:
        return coordinator_pb2_grpc.CoordinatorServiceStub(channel).PersonQuery(
            coordinator_pb2.PersonQueryRequest(
                resident_id=subject,
                shape=shape,
                purpose=purpose,
                consent_id=consent_id,
                public_key=common_pb2.PaillierPublicKey(n=fed.keys[requester].public.to_bytes()),
                threshold=threshold,
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=TIMEOUT_S,
        )


def _refused(code: grpc.StatusCode, **query: Any) -> grpc.Call:
    with pytest.raises(grpc.RpcError) as caught:
        _person_query(**query)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == code, error.details()
    return error


def _field(error: grpc.Call) -> str | None:
    return dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY)


def _waiver(fed: Federation, consents: Consents, *, consent_id: str, threshold: int = 110) -> Any:
    """The library's deposit-waiver question about the module's reader."""
    return {
        "fed": fed,
        "requester": LIBRARY,
        "role": Role.LIBRARY,
        "token_purposes": [WAIVER],
        "subject": consents.reader,
        "purpose": WAIVER,
        "shape": common_pb2.SHAPE_THRESHOLD,
        "consent_id": consent_id,
        "threshold": threshold,
    }


# --- who asks, and why -------------------------------------------------------------------------


WRONG_ROLES = [
    # the library may have one bit, never the total, whatever consent it holds
    ("library-total", LIBRARY, Role.LIBRARY, WAIVER, common_pb2.SHAPE_TOTAL, 0),
    # the deposit waiver is the library's: a bank with a waiver consent gets nothing
    ("bank-waiver", "bank-1", Role.BANK, WAIVER, common_pb2.SHAPE_THRESHOLD, 110),
    # the sync job batches for rescoring; it never looks up one person
    ("sync-job-loan", "sync-1", Role.SYNC_JOB, LOAN, common_pb2.SHAPE_TOTAL, 0),
]


@pytest.mark.parametrize(
    ("requester", "role", "purpose", "shape", "threshold"),
    [w[1:] for w in WRONG_ROLES],
    ids=[w[0] for w in WRONG_ROLES],
)
def test_a_role_the_policy_does_not_grant_is_refused_naming_role_and_purpose(
    fed: Federation,
    registrar: Client,
    registered: None,
    persons: list[str],
    requester: str,
    role: Role,
    purpose: str,
    shape: common_pb2.Shape,
    threshold: int,
) -> None:
    subject = persons[31]
    # with a valid consent, so that only the role can be the cause
    consent = consent_for(registrar, subject, grantee=requester, purpose=purpose)
    error = _refused(
        grpc.StatusCode.PERMISSION_DENIED,
        fed=fed,
        requester=requester,
        role=role,
        token_purposes=[purpose],
        subject=subject,
        purpose=purpose,
        shape=shape,
        consent_id=consent,
        threshold=threshold,
    )
    details = error.details() or ""
    assert details.startswith('central policy: denied: no policy permits Action::"PersonQuery"')
    assert f"for role '{role.value}' and purpose '{purpose}'" in details
    assert "consent 'valid'" in details


def test_a_purpose_no_rule_permits_is_refused_naming_the_purpose(
    fed: Federation, registrar: Client, registered: None, persons: list[str]
) -> None:
    subject = persons[32]
    consent = consent_for(registrar, subject, grantee=AGENCY, purpose="marketing")
    error = _refused(
        grpc.StatusCode.PERMISSION_DENIED,
        fed=fed,
        requester=AGENCY,
        role=Role.CREDIT_AGENCY,
        token_purposes=["marketing"],
        subject=subject,
        purpose="marketing",
        shape=common_pb2.SHAPE_TOTAL,
        consent_id=consent,
    )
    details = error.details() or ""
    assert details.startswith("central policy: denied: no policy permits")
    assert "purpose 'marketing'" in details


def test_a_purpose_missing_from_the_token_is_refused_before_the_policy_is_asked(
    fed: Federation, consents: Consents, registered: None
) -> None:
    query = _waiver(fed, consents, consent_id=consents.valid)
    query["token_purposes"] = [LOAN]
    error = _refused(grpc.StatusCode.PERMISSION_DENIED, **query)
    assert f"purpose '{WAIVER}' is not among the token's purposes ({LOAN})" in (
        error.details() or ""
    )


# --- consent -----------------------------------------------------------------------------------


CONSENT_STATES = [
    ("missing", None, "no consent id given"),
    ("revoked", "revoked", "was revoked at"),
    ("expired", "expired", "expired at"),
    ("purpose-mismatch", "purpose_mismatch", f"is for purpose '{LOAN}', not '{WAIVER}'"),
    ("grantee-mismatch", "grantee_mismatch", f"was granted to '{AGENCY}', not '{LIBRARY}'"),
]


@pytest.mark.parametrize(
    ("which", "cause"), [c[1:] for c in CONSENT_STATES], ids=[c[0] for c in CONSENT_STATES]
)
def test_a_consent_that_is_not_valid_is_refused_naming_the_consent_and_why(
    fed: Federation, consents: Consents, registered: None, which: str | None, cause: str
) -> None:
    consent_id = getattr(consents, which) if which else ""
    error = _refused(
        grpc.StatusCode.PERMISSION_DENIED, **_waiver(fed, consents, consent_id=consent_id)
    )
    details = error.details() or ""
    assert details.startswith("consent_id: no valid consent: "), details
    if consent_id:
        assert f"consent {consent_id} " in details
    assert cause in details
    assert _field(error) == "consent_id"


# --- what is asked -----------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [100, 109, 111, 200])
def test_a_waiver_threshold_other_than_the_pinned_110_is_refused(
    fed: Federation, consents: Consents, registered: None, threshold: int
) -> None:
    error = _refused(
        grpc.StatusCode.PERMISSION_DENIED,
        **_waiver(fed, consents, consent_id=consents.valid, threshold=threshold),
    )
    details = error.details() or ""
    assert details.startswith("central policy: denied: no policy permits")
    assert (
        f"role 'library' and purpose '{WAIVER}' (shape 'threshold', threshold {threshold}, "
        "consent 'valid')"
    ) in details


# --- the departments' own policies ---------------------------------------------------------------


def test_every_departments_node_no_library_refuses_what_the_central_policy_let_through(
    fed: Federation, consents: Consents, registered: None
) -> None:
    # test-library-loan-total permits this at the coordinator; node-no-library, a forbid in
    # every department's policy, wins at each node. The coordinator reports a refusal (not an
    # outage to retry) with each department's refusal and its rule
    error = _refused(
        grpc.StatusCode.PERMISSION_DENIED,
        fed=fed,
        requester=LIBRARY,
        role=Role.LIBRARY,
        token_purposes=[LOAN],
        subject=consents.reader,
        purpose=LOAN,
        shape=common_pb2.SHAPE_TOTAL,
        consent_id=consents.loan,
    )
    details = error.details() or ""
    assert details.startswith("every department refused: ")
    for department in DEPARTMENTS:
        assert f"{department}: refused by the department: department {department} policy" in details
    assert details.count("forbidden by") == len(DEPARTMENTS)
    assert details.count("node-no-library") == len(DEPARTMENTS)
    # the blood station's own forbid is named beside the shared one
    assert "node-blood-no-loans" in details


def test_one_departments_forbid_leaves_its_part_out_and_the_answer_says_so(
    fed: Federation, registrar: Client, registered: None, persons: list[str]
) -> None:
    subject = persons[33]
    consent = consent_for(registrar, subject, grantee=AGENCY, purpose=LOAN)
    with fed.client(AGENCY, role=Role.CREDIT_AGENCY, purposes=[LOAN]) as agency:
        card = agency.person_score(subject, purpose=LOAN, consent_id=consent)
    # four of five departments is the 80 % central-accept-partial releases
    assert card.partial
    assert {s.department for s in card.answered} == set(DEPARTMENTS) - {"blood"}
    (missing,) = card.missing
    assert missing.department == "blood"
    assert "refused by the department: department blood policy" in missing.detail
    assert "forbidden by node-blood-no-loans" in missing.detail
    # the station's category is unknown, not zero
    assert card.bonuses["blood_donation"] is None


# --- how often -----------------------------------------------------------------------------------


def test_the_rate_limit_refuses_the_next_answer_with_a_retryable_resource_exhausted(
    fed: Federation, consents: Consents, registered: None
) -> None:
    query = _waiver(fed, consents, consent_id=consents.valid)
    for _ in range(LIBRARY_RATE):
        answer = _person_query(**query)
        assert len(answer.candidates) == 200 - 110 + 1
    error = _refused(grpc.StatusCode.RESOURCE_EXHAUSTED, **query)
    details = error.details() or ""
    assert (
        f"{LIBRARY} may be granted {LIBRARY_RATE}/minute under rule "
        "'central-library-deposit-waiver' and has reached it; retry in "
    ) in details
    converted = error_from_rpc(error)
    assert isinstance(converted, RateLimited)
    assert converted.retryable
    # the SDK raises it as its own retryable error
    with (
        fed.client(LIBRARY, role=Role.LIBRARY, purposes=[WAIVER]) as library,
        pytest.raises(sdk.RateLimited) as caught,
    ):
        library.person_meets_threshold(
            consents.reader, threshold=110, purpose=WAIVER, consent_id=consents.valid
        )
    assert caught.value.retryable
    assert "'central-library-deposit-waiver'" in caught.value.message
    # a request refused on other grounds is refused on those grounds, not as over the limit
    again = _refused(
        grpc.StatusCode.PERMISSION_DENIED, **_waiver(fed, consents, consent_id=consents.revoked)
    )
    assert "was revoked at" in (again.details() or "")
