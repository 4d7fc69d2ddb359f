"""Consent end to end: a person's record is answered only under a matching, live consent."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import sdk
from osmanthus.core.types import Role, Shape, SubjectKind
from sdk import Client, PersonScore, RequesterKeys
from tests.conftest import IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    consent_for,
    restricted_catalogue,
    start_federation,
    stop_federation,
)

AGENCY = "agency-1"


def _persons(federation: Federation) -> list[str]:
    with federation.data.subjects_file.open() as f:
        return [r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "person"]


def _assert_full_answer(federation: Federation, card: PersonScore) -> None:
    assert not card.partial
    expected = {d.id for d in federation.catalogue.departments_for(SubjectKind.PERSON)}
    assert {s.department for s in card.answered} == expected
    assert 0 <= card.score <= 200


def _consent_refusal(agency: Client, person: str, consent_id: str | None) -> sdk.PermissionDenied:
    with pytest.raises(sdk.PermissionDenied) as caught:
        agency.person_score(person, purpose="loan_underwriting", consent_id=consent_id)
    assert caught.value.field == "consent_id"
    assert caught.value.message.startswith("no valid consent: ")
    return caught.value


def test_a_person_query_without_consent_is_refused_naming_consent(
    federation: Federation, agency: Client
) -> None:
    error = _consent_refusal(agency, _persons(federation)[10], None)
    assert "no consent id given" in error.message


def test_a_consent_id_that_does_not_exist_is_refused(
    federation: Federation, agency: Client
) -> None:
    unknown = "cns_" + "A" * 22
    error = _consent_refusal(agency, _persons(federation)[10], unknown)
    assert f"consent {unknown} does not exist" in error.message


def test_a_granted_consent_gets_an_answer(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[11]
    consent = consent_for(registrar, person)
    card = agency.person_score(person, purpose="loan_underwriting", consent_id=consent)
    _assert_full_answer(federation, card)
    assert card.subject_id == person


def test_a_consent_for_another_purpose_is_refused(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[12]
    consent = consent_for(registrar, person, purpose="credit_report")
    error = _consent_refusal(agency, person, consent)
    assert f"consent {consent} is for purpose 'credit_report', not 'loan_underwriting'" in (
        error.message
    )


def test_a_consent_granted_to_another_requester_is_refused(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[13]
    consent = consent_for(registrar, person, grantee="bank-1")
    error = _consent_refusal(agency, person, consent)
    assert f"consent {consent} was granted to 'bank-1', not '{AGENCY}'" in error.message


def test_a_consent_of_another_person_is_refused_without_naming_that_person(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    giver, other = _persons(federation)[14:16]
    consent = consent_for(registrar, giver)
    error = _consent_refusal(agency, other, consent)
    assert f"consent {consent} was given by another person" in error.message
    assert giver not in error.message


def test_an_expired_consent_is_refused_naming_the_expiry(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[16]
    expires_at = datetime.now(UTC) + timedelta(seconds=2)
    record = registrar.grant_consent(
        subject_id=person, grantee=AGENCY, purpose="loan_underwriting", expires_at=expires_at
    )
    # in force until its expiry...
    card = agency.person_score(person, purpose="loan_underwriting", consent_id=record.consent_id)
    _assert_full_answer(federation, card)
    # ...and refused once it has passed
    time.sleep(max(0.0, (expires_at - datetime.now(UTC)).total_seconds()) + 0.3)
    error = _consent_refusal(agency, person, record.consent_id)
    assert f"consent {record.consent_id} expired at" in error.message


def test_a_revocation_takes_effect_on_the_very_next_query(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[17]
    consent = consent_for(registrar, person)
    _assert_full_answer(
        federation, agency.person_score(person, purpose="loan_underwriting", consent_id=consent)
    )
    revoked = registrar.revoke_consent(consent)
    assert revoked.revoked_at is not None
    error = _consent_refusal(agency, person, consent)
    assert f"consent {consent} was revoked at" in error.message


def test_court_enforcement_by_a_platform_service_needs_no_consent(
    federation: Federation, registrar: Client
) -> None:
    card = registrar.person_score(_persons(federation)[18], purpose="court_enforcement")
    _assert_full_answer(federation, card)


def test_court_enforcement_is_statutory_only_for_platform_services(
    federation: Federation, agency: Client
) -> None:
    # the same purpose in a credit agency's token: no policy gives it to agencies at all, so the
    # refusal names the central policy, not a missing consent
    with (
        federation.client(
            AGENCY, role=Role.CREDIT_AGENCY, purposes=["court_enforcement"]
        ) as client,
        pytest.raises(sdk.PermissionDenied) as caught,
    ):
        client.person_score(_persons(federation)[18], purpose="court_enforcement")
    message = caught.value.message
    assert message.startswith("central policy: ")
    assert "role 'credit_agency'" in message
    assert "purpose 'court_enforcement'" in message


def test_only_platform_services_may_grant_or_revoke_consent(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[19]
    with pytest.raises(sdk.PermissionDenied) as caught:
        agency.grant_consent(
            subject_id=person,
            grantee=AGENCY,
            purpose="loan_underwriting",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    assert caught.value.message.startswith("central policy: ")
    assert 'Action::"ManageConsent"' in caught.value.message
    assert "role 'credit_agency'" in caught.value.message
    # nor may it revoke one it was given
    consent = consent_for(registrar, person)
    with pytest.raises(sdk.PermissionDenied) as caught:
        agency.revoke_consent(consent)
    assert 'Action::"ManageConsent"' in caught.value.message
    assert all(c.revoked_at is None for c in registrar.list_consents(subject_id=person))


def test_a_requester_lists_only_the_consents_granted_to_itself(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[20]
    mine = consent_for(registrar, person)
    theirs = consent_for(registrar, person, grantee="bank-1")

    listed = agency.list_consents()
    assert mine in {c.consent_id for c in listed}
    assert {c.grantee for c in listed} == {AGENCY}

    by_subject = agency.list_consents(subject_id=person)
    assert [c.consent_id for c in by_subject] == [mine]

    with pytest.raises(sdk.PermissionDenied) as caught:
        agency.list_consents(grantee="bank-1")
    assert "only consents granted to themselves" in caught.value.message

    # the platform service that records consents sees every grantee's
    assert {c.consent_id for c in registrar.list_consents(subject_id=person)} == {mine, theirs}


def test_a_permits_rate_limit_refuses_the_next_query_with_resource_exhausted(
    federation: Federation,
    tmp_path: Path,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> None:
    from coordinator.server import DEFAULT_CENTRAL_POLICY

    text = DEFAULT_CENTRAL_POLICY.read_text()
    marker = '@id("central-enterprise-query")\n'
    policy = tmp_path / "central.cedar"
    policy.write_text(text.replace(marker, marker + '@rate_limit("3/minute")\n'))
    departments = ("court", "tax", "samr", "eco", "customs")
    small = start_federation(
        tmp_path,
        catalogue=restricted_catalogue(departments),
        data=federation.data,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=departments,
        central_policy=policy,
    )
    try:
        with small.client("bank-1", role=Role.BANK, purposes=["credit_report"]) as bank:
            bank.register_key()
            with federation.data.subjects_file.open() as f:
                firm = next(
                    r["subject_id"] for r in csv.DictReader(f) if r["subject_kind"] == "enterprise"
                )
            for _ in range(3):
                bank.enterprise_score(firm, purpose="credit_report", shape=Shape.TOTAL)
            with pytest.raises(sdk.RateLimited) as caught:
                bank.enterprise_score(firm, purpose="credit_report", shape=Shape.TOTAL)
    finally:
        stop_federation(small)
    assert "3/minute under rule 'central-enterprise-query'" in caught.value.message
    assert "retry in" in caught.value.message


def test_consent_decisions_are_audited_under_the_subject_they_concern(
    federation: Federation, agency: Client, registrar: Client
) -> None:
    person = _persons(federation)[19]
    consent = consent_for(registrar, person)
    card = agency.person_score(person, purpose="loan_underwriting", consent_id=consent)
    registrar.revoke_consent(consent)
    text = (federation.state_dir / "coordinator" / "audit.jsonl").read_text("utf-8")
    assert person not in text
    entries = [json.loads(line) for line in text.splitlines()]
    (query,) = [e for e in entries if e["query_id"] == card.query_id]
    grant, revoke = (
        [e for e in entries if e["shape"] == shape and e["consent_id"] == consent]
        for shape in ("consent_grant", "consent_revocation")
    )
    assert [e["decision"] for e in grant + revoke] == ["allow", "allow"]
    # who a consent is about is recorded as every decision about them is: one salted hash
    assert grant[0]["subject_hash"] == revoke[0]["subject_hash"] == query["subject_hash"]
    assert grant[0]["requester"] == revoke[0]["requester"] == "registrar"
    assert grant[0]["extra"] == {"consent_purpose": "loan_underwriting", "grantee": AGENCY}
    # a requester that may not manage consents is refused, and the refusal audited
    with pytest.raises(sdk.PermissionDenied):
        agency.grant_consent(
            subject_id=person,
            grantee=AGENCY,
            purpose="loan_underwriting",
            expires_at=datetime.now(UTC) + timedelta(days=1),
        )
    text = (federation.state_dir / "coordinator" / "audit.jsonl").read_text("utf-8")
    refused = [
        e
        for e in map(json.loads, text.splitlines())
        if e["shape"] == "consent_grant" and e["decision"] == "deny"
    ]
    assert refused[-1]["requester"] == AGENCY
    assert refused[-1]["subject_hash"] == query["subject_hash"]
