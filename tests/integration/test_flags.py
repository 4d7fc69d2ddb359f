"""FLAGS: one bit per joint-punishment measure, and nothing about who flagged or how often.

Every answer is checked against the plaintext: a measure applies while any department that
sets a flag triggering it holds a counting record of one of the flag's record kinds. The tests
also play the curious requester: each blinded answer decrypts to 0 or to a value spread over
[1, n) (none below 2^1000), whatever the number of flags behind it.
"""

from __future__ import annotations

import functools
import json
import tomllib
from collections.abc import Iterator

import grpc
import pytest

from osmanthus.core.catalogue import Catalogue, default_rules_dir
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, secure_channel
from osmanthus.core.types import DepartmentId, Role, SubjectKind
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, InvalidArgument, PermissionDenied
from tests.integration.conftest import Federation, consent_for
from tests.integration.test_scores_match_plaintext import Reference, counts, subjects, utc_today

LOAN = "loan_underwriting"
#: what the shipped policy lets a lender ask about a person: bank loans only, since several bits
#: together could tell which department flagged the subject
PERSON_MEASURES = ("bank_loan",)
#: a credit report lists every measure in force for an enterprise
ENTERPRISE_MEASURES = (
    "bank_loan",
    "land_approval",
    "securities_financing",
    "government_procurement",
    "high_consumption",
    "customs_facilitation",
)


@pytest.fixture(scope="module")
def plaintext(federation: Federation) -> Reference:
    served = {d.id: {k.value for k in d.subject_kinds} for d in federation.catalogue.departments}
    return Reference({d: federation.data.databases[DepartmentId(d)] for d in served}, served)


@functools.cache
def _flag_of(department: str) -> dict[tuple[str, str], str]:
    """(subject kind, record kind) → the flag its rule names, read straight from the rule file."""
    raw = tomllib.loads((default_rules_dir() / f"{department}.toml").read_text(encoding="utf-8"))
    return {(r["subject_kind"], r["kind"]): r["flag"] for r in raw["rule"] if r.get("flag")}


def expected(
    catalogue: Catalogue, plaintext: Reference, kind: str, subject: str, measures: tuple[str, ...]
) -> dict[str, bool]:
    """The measures in force from the plaintext records of the federation's departments."""
    present = {d.id for d in catalogue.departments}
    set_flags: set[str] = set()
    for dept, record_kind, _quantity, start, end, status in plaintext.records[(kind, subject)]:
        if status != "active" or dept not in present:
            continue
        if not counts(plaintext.rules[(dept, kind, record_kind)], start, end, utc_today()):
            continue
        flag = _flag_of(dept).get((kind, record_kind))
        if flag is not None:
            set_flags.add(flag)
    return {
        m: any(f.id in set_flags and m in f.measures for f in catalogue.flags) for m in measures
    }


@pytest.fixture(scope="module")
def flagged_persons(federation: Federation, plaintext: Reference) -> list[str]:
    """Persons with flags set and without, a few of each."""
    persons = subjects(federation, "person")
    answers = {p: expected(federation.catalogue, plaintext, "person", p, PERSON_MEASURES)
               for p in persons}  # fmt: skip
    restricted = [p for p, a in answers.items() if any(a.values())]
    clean = [p for p, a in answers.items() if not any(a.values())]
    assert len(restricted) >= 2 and len(clean) >= 2, "the seed must flag some persons"
    # the most interesting first: flags from more than one department behind one measure
    restricted.sort(key=lambda p: -sum(answers[p].values()))
    return restricted[:6] + clean[:2]


def test_persons_restrictions_match_the_plaintext(
    federation: Federation,
    plaintext: Reference,
    agency: Client,
    registrar: Client,
    flagged_persons: list[str],
) -> None:
    for person in flagged_persons:
        consent = consent_for(registrar, person)
        result = agency.check_restrictions(
            person, measures=PERSON_MEASURES, purpose=LOAN, consent_id=consent
        )
        assert dict(result.restricted) == expected(
            federation.catalogue, plaintext, "person", person, PERSON_MEASURES
        ), person
        # only the departments that can set a trigger were asked
        assert {s.department for s in result.answered} == set(
            federation.catalogue.flag_departments(SubjectKind.PERSON, PERSON_MEASURES)
        )


def test_enterprises_restrictions_match_the_plaintext(
    federation: Federation, plaintext: Reference, agency: Client
) -> None:
    enterprises = subjects(federation, "enterprise")
    answers = {
        e: expected(federation.catalogue, plaintext, "enterprise", e, ENTERPRISE_MEASURES)
        for e in enterprises
    }
    flagged = [e for e, a in answers.items() if any(a.values())][:4]
    clean = [e for e, a in answers.items() if not any(a.values())][:2]
    assert flagged and len(clean) == 2, "the seed must flag some enterprise"
    chosen = flagged + clean
    for enterprise in chosen:
        result = agency.check_restrictions(
            enterprise, measures=ENTERPRISE_MEASURES, purpose="credit_report"
        )
        assert dict(result.restricted) == answers[enterprise], enterprise
        assert result.any == any(answers[enterprise].values())


@pytest.fixture(scope="module")
def raw_stub(federation: Federation) -> Iterator[coordinator_pb2_grpc.CoordinatorServiceStub]:
    channel = secure_channel(
        federation.target, federation.tls("agency-1"), server_name=COORDINATOR_SERVER_NAME
    )
    yield coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    channel.close()


def test_curious_requester_learns_one_bit_per_measure_and_no_count(
    federation: Federation,
    plaintext: Reference,
    raw_stub: coordinator_pb2_grpc.CoordinatorServiceStub,
) -> None:
    """Decrypt every blinded answer: 0, or a full-size value unrelated to how many flags."""
    keys = federation.keys["agency-1"]
    token = federation.token("agency-1", role=Role.CREDIT_AGENCY, purposes=["credit_report"])
    enterprise, truth = next(
        (e, answer)
        for e in subjects(federation, "enterprise")
        if any(
            (
                answer := expected(
                    federation.catalogue, plaintext, "enterprise", e, ENTERPRISE_MEASURES
                )
            ).values()
        )
    )
    seen: dict[str, set[int]] = {m: set() for m in ENTERPRISE_MEASURES}
    for _ in range(5):
        response = raw_stub.EnterpriseQuery(
            coordinator_pb2.EnterpriseQueryRequest(
                credit_code=enterprise,
                shape=common_pb2.SHAPE_FLAGS,
                purpose="credit_report",
                public_key=common_pb2.PaillierPublicKey(n=keys.public.to_bytes()),
                measures=list(ENTERPRISE_MEASURES),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert list(response.measures) == list(ENTERPRISE_MEASURES)
        for measure, blinded in zip(response.measures, response.flags, strict=True):
            value = keys.private.decrypt(
                keys.public.ciphertext_from_bytes(blinded.value, field="f")
            )
            if truth[measure]:
                # r · count mod n with r uniform in [1, n): no trace of the count
                assert value >= 1 << 1000, (measure, value.bit_length())
            else:
                assert value == 0
            seen[measure].add(value)
    for measure, values in seen.items():
        # a fresh r every time: the same restriction never decrypts to the same value twice
        assert len(values) == (5 if truth[measure] else 1), measure


def test_a_lender_may_ask_about_bank_loans_only(
    agency: Client, registrar: Client, flagged_persons: list[str]
) -> None:
    """Several bits about one person could tell which department flagged them."""
    person = flagged_persons[0]
    consent = consent_for(registrar, person)
    with pytest.raises(PermissionDenied, match="central policy: denied: no policy permits"):
        agency.check_restrictions(
            person,
            measures=["bank_loan", "land_approval"],
            purpose=LOAN,
            consent_id=consent,
        )


def test_the_audit_names_the_measures_asked(federation: Federation) -> None:
    for who in ("coordinator", "court"):
        text = (federation.state_dir / who / "audit.jsonl").read_text("utf-8")
        entries = [json.loads(line) for line in text.splitlines()]
        flags = [e for e in entries if e["shape"] == "flags"]
        assert flags and all("measures" in e["extra"] for e in flags), who


def test_refusals_name_their_cause(
    federation: Federation,
    agency: Client,
    registrar: Client,
    raw_stub: coordinator_pb2_grpc.CoordinatorServiceStub,
    flagged_persons: list[str],
) -> None:
    person = flagged_persons[0]
    with pytest.raises(InvalidArgument, match="'parking' is not a joint-punishment measure"):
        agency.check_restrictions(person, measures=["parking"], purpose=LOAN)
    with pytest.raises(InvalidArgument, match="a measure is asked twice"):
        agency.check_restrictions(person, measures=["bank_loan", "bank_loan"], purpose=LOAN)
    # a person's flags need the person's consent, as a score does
    with pytest.raises(PermissionDenied, match="no valid consent"):
        agency.check_restrictions(person, measures=["bank_loan"], purpose=LOAN)
    keys = federation.keys["agency-1"]
    token = federation.token("agency-1", role=Role.CREDIT_AGENCY, purposes=[LOAN])
    with pytest.raises(grpc.RpcError) as info:
        raw_stub.PersonQuery(
            coordinator_pb2.PersonQueryRequest(
                resident_id=person,
                shape=common_pb2.SHAPE_TOTAL,
                purpose=LOAN,
                consent_id=consent_for(registrar, person),
                public_key=common_pb2.PaillierPublicKey(n=keys.public.to_bytes()),
                measures=["bank_loan"],
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "measures belong to FLAGS queries" in (info.value.details() or "")
    assert (FIELD_METADATA_KEY, "measures") in tuple(info.value.trailing_metadata() or ())
