"""THRESHOLD: a library learns one bit, "score >= t", and nothing else about the score.

The coordinator turns the encrypted total T into zero tests E(r_v · (T − v)) for every v from t to
the ceiling, shuffled, each with a fresh full-size r_v. These tests play the curious requester:
they decrypt every zero test and check that exactly one is zero when the score reaches t, and
that every other is a full-size value that says nothing about T − v.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, secure_channel
from osmanthus.core.types import DepartmentId, Role, Shape
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc
from sdk import Client, InvalidArgument, PermissionDenied
from tests.integration.conftest import Federation, consent_for
from tests.integration.test_scores_match_plaintext import Reference, subjects, utc_today

LIBRARY = "library-1"
WAIVER = "deposit_waiver"


@pytest.fixture(scope="module")
def plaintext(federation: Federation) -> Reference:
    served = {d.id: {k.value for k in d.subject_kinds} for d in federation.catalogue.departments}
    return Reference({d: federation.data.databases[DepartmentId(d)] for d in served}, served)


@pytest.fixture(scope="module")
def library(federation: Federation) -> Iterator[Client]:
    client = federation.client(LIBRARY, role=Role.LIBRARY, purposes=[WAIVER])
    client.register_key()
    yield client
    client.close()


def _scores(plaintext: Reference, persons: list[str]) -> dict[str, int]:
    return {p: plaintext.result("person", p, utc_today()).score for p in persons}


@pytest.fixture(scope="module")
def readers(
    federation: Federation, plaintext: Reference, registrar: Client
) -> dict[str, tuple[str, int]]:
    """Persons around the waiver line of 110 and at both ends, each with a consent."""
    scores = _scores(plaintext, subjects(federation, "person"))
    by_score: dict[int, str] = {}
    for person, score in scores.items():
        by_score.setdefault(score, person)
    ordered = sorted(by_score)
    # both ends, and the scores just around the waiver line
    wanted = ordered[:2] + [s for s in ordered if 108 <= s <= 112] + ordered[-2:]
    return {
        by_score[s]: (consent_for(registrar, by_score[s], grantee=LIBRARY, purpose=WAIVER), s)
        for s in dict.fromkeys(wanted)
    }


def test_the_bit_is_the_truth_of_score_at_least_the_waiver_line(
    library: Client, readers: dict[str, tuple[str, int]]
) -> None:
    seen = set()
    for person, (consent_id, score) in readers.items():
        result = library.person_meets_threshold(
            person, threshold=110, purpose=WAIVER, consent_id=consent_id
        )
        assert result.meets == (score >= 110), (person, score)
        assert not result.partial and result.threshold == 110
        seen.add(result.meets)
    assert seen == {True, False}


def test_the_bit_is_right_on_either_side_of_a_score(
    agency: Client, registrar: Client, readers: dict[str, tuple[str, int]]
) -> None:
    # a credit agency with a loan consent may ask any threshold (it may have the total too)
    for person, (_, score) in readers.items():
        consent_id = consent_for(registrar, person)
        for threshold in {score, score + 1} & set(range(100, 201)):
            result = agency.person_meets_threshold(
                person, threshold=threshold, purpose="loan_underwriting", consent_id=consent_id
            )
            assert result.meets == (score >= threshold), (person, score, threshold)


def test_the_library_asks_only_at_the_waiver_line(
    library: Client, readers: dict[str, tuple[str, int]]
) -> None:
    # any threshold it liked would let it bisect the score in about eight questions
    person, (consent_id, _) = next(iter(readers.items()))
    for threshold in (100, 109, 111, 200):
        with pytest.raises(PermissionDenied, match="central policy"):
            library.person_meets_threshold(
                person, threshold=threshold, purpose=WAIVER, consent_id=consent_id
            )


def _raw(
    federation: Federation,
    person: str,
    consent_id: str,
    threshold: int,
    shape: int,
    *,
    requester: str = LIBRARY,
    role: Role = Role.LIBRARY,
    purpose: str = WAIVER,
) -> coordinator_pb2.QueryResponse:
    token = federation.token(requester, role=role, purposes=[purpose])
    channel = secure_channel(
        federation.target, federation.tls(requester), server_name=COORDINATOR_SERVER_NAME
    )
    with channel:
        stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
        return stub.PersonQuery(
            coordinator_pb2.PersonQueryRequest(
                resident_id=person,
                shape=shape,
                purpose=purpose,
                consent_id=consent_id,
                public_key=common_pb2.PaillierPublicKey(
                    n=federation.keys[requester].public.to_bytes()
                ),
                threshold=threshold,
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=30,
        )


def test_the_curious_library_decrypts_every_zero_test_and_learns_one_bit(
    federation: Federation, readers: dict[str, tuple[str, int]]
) -> None:
    keys = federation.keys[LIBRARY]
    n = keys.public.n
    positions = set()
    for person, (consent_id, score) in readers.items():
        response = _raw(federation, person, consent_id, 110, common_pb2.SHAPE_THRESHOLD)
        assert not response.ciphertext.value  # no total travels, only the zero tests
        assert len(response.candidates) == 200 - 110 + 1
        values = [
            keys.private.decrypt(keys.public.ciphertext_from_bytes(c.value))
            for c in response.candidates
        ]
        zeros = [i for i, v in enumerate(values) if v == 0]
        assert len(zeros) == (1 if score >= 110 else 0), (score, zeros)
        positions.update(zeros)
        others = [v for v in values if v]
        # r_v is uniform in [1, n): r_v·(T − v) mod n is uniform, so a small value (which a
        # short r would give: T − v is at most 200 in size) would betray T
        assert all(v.bit_length() > 1000 for v in others)
        assert all(v < n for v in others)
        assert len(set(others)) == len(others)
    # the zero sits wherever the shuffle put it, not at T − threshold
    assert len(positions) > 1 or len([s for _, s in readers.values() if s >= 110]) <= 1


def test_the_library_never_gets_the_score_or_the_breakdown(
    federation: Federation, library: Client, readers: dict[str, tuple[str, int]]
) -> None:
    person, (consent_id, _) = next(iter(readers.items()))
    for shape in (Shape.TOTAL, Shape.BREAKDOWN):
        with pytest.raises(PermissionDenied, match="central policy"):
            library.person_score(person, purpose=WAIVER, consent_id=consent_id, shape=shape)


def test_no_bit_without_the_readers_consent(
    federation: Federation, library: Client, plaintext: Reference
) -> None:
    person = subjects(federation, "person")[-1]
    with pytest.raises(PermissionDenied, match="consent"):
        library.person_meets_threshold(person, threshold=110, purpose=WAIVER)


@pytest.mark.parametrize(("threshold", "words"), [(0, "1..200"), (201, "1..200")])
def test_a_threshold_outside_the_score_range_is_refused(
    federation: Federation,
    library: Client,
    readers: dict[str, tuple[str, int]],
    threshold: int,
    words: str,
) -> None:
    person, (consent_id, _) = next(iter(readers.items()))
    with pytest.raises(InvalidArgument, match=words) as caught:
        library.person_meets_threshold(
            person, threshold=threshold, purpose=WAIVER, consent_id=consent_id
        )
    assert caught.value.field == "threshold"


def test_a_threshold_on_another_shape_is_refused(
    federation: Federation, readers: dict[str, tuple[str, int]]
) -> None:
    person, (consent_id, _) = next(iter(readers.items()))
    with pytest.raises(grpc.RpcError) as caught:
        _raw(federation, person, consent_id, 110, common_pb2.SHAPE_TOTAL)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(error.trailing_metadata() or ()).get(FIELD_METADATA_KEY) == "threshold"


def test_grade_a_for_an_enterprise_is_one_bit_too(
    federation: Federation, agency: Client, plaintext: Reference
) -> None:
    for firm in subjects(federation, "enterprise")[:6]:
        expected = plaintext.result("enterprise", firm, utc_today())
        bit = agency.enterprise_meets_threshold(firm, threshold=110, purpose="credit_report")
        assert bit.meets == (expected.grade == "A") == (expected.score >= 110)


def test_batches_do_not_answer_thresholds(federation: Federation) -> None:
    with federation.client("sync-1", role=Role.SYNC_JOB, purposes=["credit_rescoring"]) as sync:
        sync.register_key()
        with pytest.raises(InvalidArgument, match="breakdowns or totals") as caught:
            list(
                sync.batch_scores(
                    subjects(federation, "person")[:2],
                    purpose="credit_rescoring",
                    shape=Shape.THRESHOLD,
                )
            )
    assert caught.value.field == "header.shape"


def test_no_two_zero_tests_can_be_related_through_their_randomness(
    federation: Federation,
    agency: Client,
    registrar: Client,
    readers: dict[str, tuple[str, int]],
) -> None:
    """The attack found in review: with ρ_v = ρ^r_v, ρ_i^r_j = ρ_j^r_i for the true r = m/(T − v).

    The requester can compute every candidate's plaintext m_v and randomness ρ_v (it holds p
    and q). Without fresh randomness per candidate, trying the few possible T − v values would
    find the true pair and with it T. Each candidate must carry its own fresh E(0).
    """
    import gmpy2

    keys = federation.keys["agency-1"]
    n = keys.public.n
    phi = (int(keys.private._p) - 1) * (int(keys.private._q) - 1)
    n_inverse = gmpy2.invert(n, phi)
    # a score inside the range, so that it is T itself and not T clamped
    person, (_, score) = next((p, r) for p, r in readers.items() if 0 < r[1] < 190)
    response = _raw(
        federation,
        person,
        consent_for(registrar, person),
        190,  # eleven zero tests: few candidate differences to try
        common_pb2.SHAPE_THRESHOLD,
        requester="agency-1",
        role=Role.CREDIT_AGENCY,
        purpose="loan_underwriting",
    )

    def plaintext_and_randomness(raw: bytes) -> tuple[int, int]:
        c = keys.public.ciphertext_from_bytes(raw)
        m = keys.private.decrypt(c)
        rho_n = c.value * gmpy2.invert(1 + m * n, n * n) % (n * n)
        return m, int(gmpy2.powmod(rho_n % n, n_inverse, n))

    (m_i, rho_i), (m_j, rho_j) = (
        plaintext_and_randomness(c.value) for c in response.candidates[:2]
    )
    differences = [score - v for v in range(190, 201)]  # T − v for every v asked about
    related = [
        (d_i, d_j)
        for d_i in differences
        for d_j in differences
        if gmpy2.powmod(rho_i, m_j * gmpy2.invert(d_j % n, n) % n, n)
        == gmpy2.powmod(rho_j, m_i * gmpy2.invert(d_i % n, n) % n, n)
    ]
    assert related == []
