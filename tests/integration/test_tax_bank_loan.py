"""Tax-bank loans (税银贷): with the enterprise's consent a bank asks two bits, gets a decision.

Every answer is checked against the plaintext of the taxation bureau's records (the tax part
alone, base included, against the clean A-level mark 130) and of every flagging department
(bank loans restricted). The tests also check what the bank cannot do: ask without the
enterprise's consent, under another bank's consent, about another department alone, or for the
tax part itself instead of the bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, secure_channel
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, InvalidArgument, LoanDecision, PermissionDenied
from tests.integration.conftest import Federation
from tests.integration.test_flags import expected
from tests.integration.test_scores_match_plaintext import Reference, subjects, utc_today

PURPOSE = "tax_bank_loan"
#: the taxation bureau's part of a clean A-level taxpayer: base 100 + the A-level bonus 30
COMPLIANT = 130


@pytest.fixture(scope="module")
def bank(federation: Federation) -> Iterator[Client]:
    client = federation.client("bank-1", role=Role.BANK, purposes=[PURPOSE])
    client.register_key()
    yield client
    client.close()


@pytest.fixture(scope="module")
def tax_part(federation: Federation) -> Reference:
    """The taxation bureau's part of every enterprise's record, from its DuckDB file."""
    return Reference(
        {"tax": federation.data.databases[DepartmentId("tax")]}, {"tax": {"enterprise"}}
    )


@pytest.fixture(scope="module")
def everyone(federation: Federation) -> Reference:
    served = {d.id: {k.value for k in d.subject_kinds} for d in federation.catalogue.departments}
    return Reference({d: federation.data.databases[DepartmentId(d)] for d in served}, served)


def enterprise_consent(registrar: Client, code: str, *, grantee: str = "bank-1") -> str:
    record = registrar.grant_consent(
        subject_id=code,
        grantee=grantee,
        purpose=PURPOSE,
        expires_at=datetime.now(UTC) + timedelta(days=7),
        kind=SubjectKind.ENTERPRISE,
    )
    assert record.subject_kind is SubjectKind.ENTERPRISE
    return record.consent_id


def test_every_decision_matches_the_plaintext(
    federation: Federation,
    bank: Client,
    registrar: Client,
    tax_part: Reference,
    everyone: Reference,
) -> None:
    today = utc_today()
    cases: dict[LoanDecision, list[str]] = {d: [] for d in LoanDecision}
    for code in subjects(federation, "enterprise"):
        compliant = tax_part.result("enterprise", code, today).score >= COMPLIANT
        restricted = expected(federation.catalogue, everyone, "enterprise", code, ("bank_loan",))
        if restricted["bank_loan"]:
            cases[LoanDecision.DECLINE].append(code)
        elif compliant:
            cases[LoanDecision.PRE_APPROVE].append(code)
        else:
            cases[LoanDecision.REFER].append(code)
    assert all(cases.values()), {d.value: len(c) for d, c in cases.items()}
    for decision, codes in cases.items():
        for code in codes[:2]:
            consent = enterprise_consent(registrar, code)
            check = bank.tax_bank_loan_check(code, consent_id=consent)
            assert check.decision is decision, (code, check)
            assert check.tax_compliant == (
                tax_part.result("enterprise", code, today).score >= COMPLIANT
            )
            assert check.threshold == COMPLIANT and check.consent_id == consent
            assert check.reason


def test_without_the_enterprises_consent_the_bank_learns_nothing(
    federation: Federation, bank: Client, registrar: Client
) -> None:
    code = subjects(federation, "enterprise")[0]
    with pytest.raises(PermissionDenied) as caught:
        bank.enterprise_meets_threshold(
            code, threshold=COMPLIANT, purpose=PURPOSE, departments=("tax",)
        )
    assert "central policy" in caught.value.message
    other = subjects(federation, "enterprise")[1]
    with pytest.raises(PermissionDenied) as caught:
        bank.tax_bank_loan_check(code, consent_id=enterprise_consent(registrar, other))
    assert caught.value.field == "consent_id"
    assert "given by another enterprise" in caught.value.message
    theirs = enterprise_consent(registrar, code, grantee="agency-1")
    with pytest.raises(PermissionDenied) as caught:
        bank.tax_bank_loan_check(code, consent_id=theirs)
    assert "granted to 'agency-1', not 'bank-1'" in caught.value.message
    revoked = enterprise_consent(registrar, code)
    registrar.revoke_consent(revoked)
    with pytest.raises(PermissionDenied, match="was revoked"):
        bank.tax_bank_loan_check(code, consent_id=revoked)


def test_the_consent_covers_the_tax_bit_and_nothing_else(
    federation: Federation, bank: Client, registrar: Client
) -> None:
    code = subjects(federation, "enterprise")[2]
    consent = enterprise_consent(registrar, code)
    # another department alone: the central policy names the taxation bureau only
    with pytest.raises(PermissionDenied):
        bank.enterprise_meets_threshold(
            code, threshold=COMPLIANT, purpose=PURPOSE, consent_id=consent, departments=("court",)
        )
    # the tax part itself, not the bit: refused
    with pytest.raises(PermissionDenied):
        bank.enterprise_score(code, purpose=PURPOSE, shape=Shape.BREAKDOWN)
    # another threshold would let the bank bisect the tax part
    with pytest.raises(PermissionDenied):
        bank.enterprise_meets_threshold(
            code, threshold=110, purpose=PURPOSE, consent_id=consent, departments=("tax",)
        )
    # departments that do not exist or do not serve enterprises are named as such
    with pytest.raises(InvalidArgument) as caught:
        bank.enterprise_meets_threshold(
            code, threshold=COMPLIANT, purpose=PURPOSE, consent_id=consent, departments=("blood",)
        )
    assert caught.value.field == "departments"
    assert "not a department serving enterprises" in caught.value.message


def test_the_answer_is_the_taxation_bureaus_part_alone(
    federation: Federation, bank: Client, registrar: Client
) -> None:
    code = subjects(federation, "enterprise")[3]
    consent = enterprise_consent(registrar, code)
    result = bank.enterprise_meets_threshold(
        code, threshold=COMPLIANT, purpose=PURPOSE, consent_id=consent, departments=("tax",)
    )
    assert [s.department for s in result.answered] == ["tax"]
    assert result.missing == ()


def test_departments_are_named_only_where_a_permit_says_which(
    federation: Federation, bank: Client, registrar: Client, agency: Client
) -> None:
    code = subjects(federation, "enterprise")[4]
    consent = enterprise_consent(registrar, code)
    # a credit report is a question to every department: naming three is refused
    with pytest.raises(PermissionDenied, match="central-departments-only-where-named"):
        agency.enterprise_meets_threshold(
            code, threshold=110, purpose="credit_report", departments=("court", "samr", "tax")
        )
    with pytest.raises(InvalidArgument) as caught:
        bank.enterprise_meets_threshold(
            code,
            threshold=COMPLIANT,
            purpose=PURPOSE,
            consent_id=consent,
            departments=("tax", "tax"),
        )
    assert caught.value.field == "departments" and "'tax' is named twice" in caught.value.message


def test_a_flags_question_names_measures_not_departments(
    federation: Federation, bank: Client, registrar: Client
) -> None:
    code = subjects(federation, "enterprise")[5]
    consent = enterprise_consent(registrar, code)
    channel = secure_channel(
        federation.target, federation.tls("bank-1"), server_name=COORDINATOR_SERVER_NAME
    )
    request = coordinator_pb2.EnterpriseQueryRequest(
        credit_code=code,
        shape=common_pb2.SHAPE_FLAGS,
        purpose=PURPOSE,
        public_key=common_pb2.PaillierPublicKey(n=federation.keys["bank-1"].public.to_bytes()),
        measures=["bank_loan"],
        consent_id=consent,
        departments=["tax"],
    )
    token = federation.token("bank-1", role=Role.BANK, purposes=[PURPOSE])
    try:
        with pytest.raises(grpc.RpcError) as caught:
            coordinator_pb2_grpc.CoordinatorServiceStub(channel).EnterpriseQuery(
                request, metadata=[("authorization", f"Bearer {token}")], timeout=10
            )
    finally:
        channel.close()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    metadata = dict(caught.value.trailing_metadata() or ())
    assert metadata.get(FIELD_METADATA_KEY) == "departments"
    assert "names measures, not departments" in (caught.value.details() or "")


def test_a_persons_consent_does_not_cover_an_enterprise_nor_the_reverse(
    federation: Federation, bank: Client, registrar: Client, agency: Client
) -> None:
    code = subjects(federation, "enterprise")[6]
    person = subjects(federation, "person")[0]
    persons = registrar.grant_consent(
        subject_id=person,
        grantee="bank-1",
        purpose=PURPOSE,
        expires_at=datetime.now(UTC) + timedelta(days=1),
        kind=SubjectKind.PERSON,
    )
    with pytest.raises(PermissionDenied, match="was given by a person") as caught:
        bank.tax_bank_loan_check(code, consent_id=persons.consent_id)
    assert caught.value.field == "consent_id"
    enterprises = registrar.grant_consent(
        subject_id=code,
        grantee="agency-1",
        purpose="loan_underwriting",
        expires_at=datetime.now(UTC) + timedelta(days=1),
        kind=SubjectKind.ENTERPRISE,
    )
    with pytest.raises(PermissionDenied, match="was given by an enterprise") as caught:
        agency.person_score(person, purpose="loan_underwriting", consent_id=enterprises.consent_id)
    assert caught.value.field == "consent_id"


def test_an_enterprises_consents_are_listed_by_its_credit_code(
    federation: Federation, registrar: Client
) -> None:
    code = subjects(federation, "enterprise")[7]
    consent = enterprise_consent(registrar, code)
    listed = registrar.list_consents(subject_id=code)
    assert [c.consent_id for c in listed] == [consent]
    assert listed[0].subject_kind is SubjectKind.ENTERPRISE
