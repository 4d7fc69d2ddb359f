"""STATS: noisy cohort sums under policy (k, ε per query, ε budget) and a persistent ε ledger.

The federation runs a central policy written for these tests: the sync job under tight limits
(k = 20, ε ≤ 1 per query, 3 per day), a statistics office under loose ones (k = 10, ε ≤ 10,
1000 per day) so that many accurate answers can be compared with the plaintext, and credit
agencies under a permit that sets no budget. The tests play the curious requester: every answer
carries fresh noise of at least the stated spread, so no answer is the sum itself.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import grpc
import pytest

from certs import PeerRole, cert_paths
from coordinator.epsilon import EpsilonLedger
from osmanthus.core.dp import discrete_laplace_variance
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.grpc_errors import FIELD_METADATA_KEY
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, node_server_name, secure_channel
from osmanthus.core.types import DepartmentId, Role, Shape, SubjectKind
from osmanthus.demo.seed import SeedReport
from osmanthus.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc, node_pb2, node_pb2_grpc
from sdk import (
    BudgetExhausted,
    Client,
    InvalidArgument,
    PermissionDenied,
    RequesterKeys,
    Unavailable,
)
from tests.conftest import PLATFORM_DEPARTMENTS, IssuerKeyPaths
from tests.integration.conftest import (
    Federation,
    restricted_catalogue,
    start_federation,
    stop_federation,
)
from tests.integration.test_scores_match_plaintext import Reference, subjects, utc_today

PURPOSE = "statistics"
POLICY = """
@id("register")
permit (principal, action == Action::"RegisterKey", resource == Registry::"keys");

@id("stats-sync")
@min_cohort("20")
@max_epsilon("1.0")
@epsilon_budget("3/day, 30/year")
permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "sync_job" && context.purpose == "statistics" };

@id("stats-accurate")
@min_cohort("10")
@max_epsilon("10")
@epsilon_budget("1000/day, 10000/year")
permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "statistics_office" && context.purpose == "statistics" };

@id("stats-library")
@epsilon_budget("100/day, 1000/year")
permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "library" && context.purpose == "statistics" };

// every service supplies the hour: this rule refuses the library at any hour of the day
@id("stats-library-never")
forbid (principal, action == Action::"StatsQuery", resource)
when { principal.role == "library" && context has hour && context.hour >= 0 && context.hour < 24 };

@id("stats-daily-only")
@epsilon_budget("1/day")
permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "bank" && context.purpose == "statistics" };

@id("stats-unbudgeted")
permit (principal, action == Action::"StatsQuery", resource)
when { principal.role == "credit_agency" && context.purpose == "statistics" };
"""


@pytest.fixture(scope="module")
def fed(
    tmp_path_factory: pytest.TempPathFactory,
    seeded: SeedReport,
    platform_certs: Path,
    issuer_keys: IssuerKeyPaths,
    requester_keys: dict[str, RequesterKeys],
) -> Iterator[Federation]:
    base = tmp_path_factory.mktemp("stats")
    policy = base / "central.cedar"
    policy.write_text(POLICY, encoding="utf-8")
    federation = start_federation(
        base,
        catalogue=restricted_catalogue(PLATFORM_DEPARTMENTS),
        data=seeded,
        certs=platform_certs,
        issuer_keys=issuer_keys,
        keys=requester_keys,
        departments=PLATFORM_DEPARTMENTS,
        central_policy=policy,
    )
    yield federation
    stop_federation(federation)


def _client(fed: Federation, requester: str, role: Role) -> Client:
    client = fed.client(requester, role=role, purposes=[PURPOSE])
    client.register_key()
    return client


@pytest.fixture(scope="module")
def sync(fed: Federation) -> Iterator[Client]:
    client = _client(fed, "sync-1", Role.SYNC_JOB)
    yield client
    client.close()


@pytest.fixture(scope="module")
def office(fed: Federation) -> Iterator[Client]:
    client = _client(fed, "registrar", Role.STATISTICS_OFFICE)
    yield client
    client.close()


@pytest.fixture(scope="module")
def reference(fed: Federation) -> Reference:
    served = {d.id: {k.value for k in d.subject_kinds} for d in fed.catalogue.departments}
    return Reference({d: fed.data.databases[DepartmentId(d)] for d in served}, served)


@pytest.fixture(scope="module")
def cohort(fed: Federation) -> list[str]:
    return subjects(fed, "person")[:40]


def _true_sums(reference: Reference, layout: SlotLayout, cohort: list[str]) -> dict[str, int]:
    results = [reference.result("person", s, utc_today()) for s in cohort]
    sums = {layout.names[0]: sum(r.deductions for r in results)}
    for name in layout.names[1:]:
        sums[name] = sum(r.bonuses[name] for r in results)
    return sums


def _layout(fed: Federation) -> SlotLayout:
    return SlotLayout.for_catalogue(fed.catalogue, SubjectKind.PERSON, Shape.BREAKDOWN)


def _node_stub(fed: Federation, dept: str) -> node_pb2_grpc.NodeServiceStub:
    """A channel to a node as the coordinator: the only peer a node answers."""
    tls = TlsFiles.from_cert_paths(
        cert_paths(fed.certs, role=PeerRole.COORDINATOR, name="coordinator")
    )
    channel = secure_channel(
        f"127.0.0.1:{fed.nodes[dept].port}", tls, server_name=node_server_name(dept)
    )
    return node_pb2_grpc.NodeServiceStub(channel)


def _node_request(
    fed: Federation, requester: str, cohort: list[str]
) -> node_pb2.ContributeStatsRequest:
    layout = _layout(fed)
    return node_pb2.ContributeStatsRequest(
        query_id="q_stats-node-test",
        subject_kind=common_pb2.SUBJECT_KIND_PERSON,
        subject_ids=cohort,
        purpose=PURPOSE,
        public_key=common_pb2.PaillierPublicKey(
            n=fed.keys[requester].public.to_bytes(),
            # the node verifies the key's proof once: this may be its first request
            modulus_proof=fed.keys[requester].modulus_proof,
        ),
        slots=list(layout.names),
        slot_widths=list(layout.widths),
        slot_bounds=[slot.sum_bound for slot in layout.slots],
    )


def test_departments_cohort_sums_add_up_to_the_plaintext_exactly(
    fed: Federation, reference: Reference, cohort: list[str]
) -> None:
    """Before any noise: each node's encrypted cohort sums, decrypted and added, are exact."""
    layout = _layout(fed)
    keys = fed.keys["registrar"]
    token = fed.token("registrar", role=Role.STATISTICS_OFFICE, purposes=[PURPOSE])
    totals = dict.fromkeys(layout.names, 0)
    for dept in fed.catalogue.departments_for(SubjectKind.PERSON):
        response = _node_stub(fed, dept.id).ContributeStats(
            _node_request(fed, "registrar", cohort),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        assert response.department == dept.id
        assert len(response.ciphertexts) == len(layout.names)
        for name, c in zip(layout.names, response.ciphertexts, strict=True):
            totals[name] += keys.private.decrypt(
                keys.public.ciphertext_from_bytes(c.value, field="c")
            )
    expected = _true_sums(reference, layout, cohort)
    assert totals == expected
    # the cohort exercises the model: something to count in the deductions and a bonus
    assert expected[layout.names[0]] > 0 and any(expected[n] for n in layout.names[1:])


def test_a_node_refuses_a_cohort_under_ten_whatever_the_coordinator_says(
    fed: Federation, cohort: list[str]
) -> None:
    token = fed.token("registrar", role=Role.STATISTICS_OFFICE, purposes=[PURPOSE])
    dept = fed.catalogue.departments_for(SubjectKind.PERSON)[0].id
    with pytest.raises(grpc.RpcError) as info:
        _node_stub(fed, dept).ContributeStats(
            _node_request(fed, "registrar", cohort[:9]),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "node-stats-min-cohort" in (info.value.details() or "")


def test_each_answer_is_the_true_sum_plus_fresh_noise_of_at_least_the_stated_spread(
    fed: Federation, office: Client, reference: Reference, cohort: list[str]
) -> None:
    """The curious requester: many answers, each off the true sum by fresh noise.

    A bonus category at ε = 10 has a small scale (its cap / 10), so the answers stay close
    to the sum and the plaintext check is meaningful; the noise must still be there, fresh
    each time, unbiased, and as wide as the scale says (not narrower).
    """
    layout = _layout(fed)
    category = layout.names[1]
    truth = _true_sums(reference, layout, cohort)[category]
    errors = []
    for _ in range(60):
        result = office.stats(
            cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="10", statistics=[category]
        )
        assert result.cohort == len(cohort) and list(result.sums) == [category]
        scale = result.noise_scales[category]
        # one statistic: its sensitivity is the category's cap, one subject's largest part
        assert scale == Fraction(layout.slots[1].sum_bound, 10)
        errors.append(result.sums[category] - truth)
    sigma = discrete_laplace_variance(scale) ** 0.5
    # a Laplace tail beyond 40 scales has probability e^-40 per answer
    assert all(abs(e) <= 40 * scale for e in errors), errors
    assert len(set(errors)) > 1, "every answer had the same noise"
    assert abs(statistics.fmean(errors)) <= 6 * sigma / len(errors) ** 0.5
    # the noise is not narrower than promised (nor absurdly wider): loose, never flaky bounds
    assert 0.2 * sigma**2 <= statistics.pvariance(errors) <= 4 * sigma**2


def test_all_statistics_split_epsilon_and_give_a_mean_score(
    fed: Federation, office: Client, reference: Reference, cohort: list[str]
) -> None:
    layout = _layout(fed)
    result = office.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="10")
    assert list(result.sums) == list(layout.names) and result.complete
    for slot in layout.slots:
        # ε is split between the statistics: each gets (number asked × its bound) / ε
        assert result.noise_scales[slot.name] == Fraction(len(layout.slots) * slot.sum_bound, 10)
    truth = _true_sums(reference, layout, cohort)
    for name in layout.names:
        assert abs(result.sums[name] - truth[name]) <= 40 * result.noise_scales[name]
    mean = result.mean_unclamped_score()
    exact = 100 + (sum(truth[n] for n in layout.names[1:]) - truth[layout.names[0]]) / len(cohort)
    assert abs(mean - exact) <= 40 * sum(result.noise_scales.values()) / len(cohort)
    assert [s.department for s in result.answered] == sorted(
        d.id for d in fed.catalogue.departments_for(SubjectKind.PERSON)
    )


def test_refusals_name_their_cause(fed: Federation, sync: Client, cohort: list[str]) -> None:
    with pytest.raises(PermissionDenied, match=r"cohort too small: 15 .*stats-sync.* 20") as small:
        sync.stats(cohort[:15], kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1")
    assert small.value.field == "cohort"
    with pytest.raises(PermissionDenied, match=r"ε 1.5 is more than .*stats-sync.*at most 1.0"):
        sync.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="1.5")
    with pytest.raises(InvalidArgument, match="more than 4 decimal places") as bad_epsilon:
        sync.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.12345")
    assert bad_epsilon.value.field == "epsilon"
    with pytest.raises(InvalidArgument, match="unknown statistic 'score'"):
        sync.stats(
            cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1", statistics=["score"]
        )
    with pytest.raises(PermissionDenied, match="not among the token's purposes"):
        sync.stats(cohort, kind=SubjectKind.PERSON, purpose="credit_rescoring", epsilon="0.1")
    agency = _client(fed, "agency-1", Role.CREDIT_AGENCY)
    with pytest.raises(PermissionDenied, match=r"stats-unbudgeted.*no @epsilon_budget"):
        agency.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1")
    agency.close()
    library = _client(fed, "library-1", Role.LIBRARY)
    with pytest.raises(PermissionDenied, match="forbidden by stats-library-never"):
        library.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1")
    library.close()
    bank = _client(fed, "bank-1", Role.BANK)
    with pytest.raises(PermissionDenied, match=r"stats-daily-only bound .* per 1/day; .* yearly"):
        bank.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1")
    bank.close()
    citizen = _client(fed, "bank-1", Role.DATA_SUBJECT)
    with pytest.raises(PermissionDenied, match="no policy permits"):
        citizen.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.1")
    citizen.close()


def test_a_repeated_subject_is_refused_by_the_coordinator_too(
    fed: Federation, cohort: list[str]
) -> None:
    """The SDK refuses it first; a hand-made request gets INVALID_ARGUMENT naming the index."""
    keys = fed.keys["registrar"]
    token = fed.token("registrar", role=Role.STATISTICS_OFFICE, purposes=[PURPOSE])
    channel = secure_channel(
        fed.target,
        fed.tls("registrar"),
        server_name=COORDINATOR_SERVER_NAME,
    )
    stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.StatsQuery(
            coordinator_pb2.StatsQueryRequest(
                subject_kind=common_pb2.SUBJECT_KIND_PERSON,
                subject_ids=[*cohort[:20], cohort[3]],
                purpose=PURPOSE,
                epsilon="0.5",
                public_key=common_pb2.PaillierPublicKey(n=keys.public.to_bytes()),
            ),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
    channel.close()
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "subject_ids[20] repeats subject_ids[3]" in (info.value.details() or "")
    assert (FIELD_METADATA_KEY, "subject_ids[20]") in tuple(info.value.trailing_metadata() or ())


def test_the_budget_runs_out_and_the_ledger_keeps_what_was_spent(
    fed: Federation, sync: Client, cohort: list[str]
) -> None:
    left = [
        sync.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="1").epsilon_left
        for _ in range(3)
    ]
    assert left == [Decimal(2), Decimal(1), Decimal(0)]
    with pytest.raises(BudgetExhausted, match=r"room for it comes back at 20\d\d-") as info:
        sync.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="0.5")
    assert "sync-1 may spend ε 3/day under rule 'stats-sync', has spent 3" in str(info.value)
    assert info.value.field is None
    assert not info.value.retryable
    # the refused query spent nothing, and the spending is on disk for the next restart
    with EpsilonLedger(fed.state_dir / "coordinator" / "epsilon.sqlite") as ledger:
        assert ledger.spent("sync-1", period_s=86_400) == Decimal(3)


def test_audit_names_the_cohort_by_one_salted_hash_and_no_subject(
    fed: Federation, cohort: list[str]
) -> None:
    texts = {
        "coordinator": (fed.state_dir / "coordinator" / "audit.jsonl").read_text("utf-8"),
        **{
            d.id: (fed.state_dir / d.id / "audit.jsonl").read_text("utf-8")
            for d in fed.catalogue.departments_for(SubjectKind.PERSON)
        },
    }
    for who, text in texts.items():
        assert not any(s in text for s in cohort), who
        entries = [json.loads(line) for line in text.splitlines()]
        stats = [e for e in entries if e["shape"] == "stats" and e["decision"] == "allow"]
        assert stats, who
        # one hash for the whole cohort, the same in every entry about it
        assert len({e["subject_hash"] for e in stats if e["extra"]["cohort"] == 40}) == 1
    coordinator = [json.loads(line) for line in texts["coordinator"].splitlines()]
    spent = [e["extra"]["epsilon"] for e in coordinator if e["shape"] == "stats"]
    assert "10" in spent and "1" in spent


def test_a_node_whose_catalogue_allows_larger_parts_refuses(
    fed: Federation, cohort: list[str]
) -> None:
    """The noise is calibrated to the coordinator's bounds; a node with larger ones says so."""
    token = fed.token("registrar", role=Role.STATISTICS_OFFICE, purposes=[PURPOSE])
    dept = fed.catalogue.departments_for(SubjectKind.PERSON)[0].id
    request = _node_request(fed, "registrar", cohort)
    del request.slot_bounds[:]
    request.slot_bounds.extend(b - 1 for b in (s.sum_bound for s in _layout(fed).slots))
    with pytest.raises(grpc.RpcError) as info:
        _node_stub(fed, dept).ContributeStats(
            request, metadata=(("authorization", f"Bearer {token}"),), timeout=10
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "calibrates the noise to per-subject bounds" in (info.value.details() or "")


def test_a_failed_query_gives_its_epsilon_back(
    fed: Federation, office: Client, cohort: list[str]
) -> None:
    """Last in this module: it stops a node. Nothing left the coordinator, so nothing is spent."""
    ledger_path = fed.state_dir / "coordinator" / "epsilon.sqlite"
    with EpsilonLedger(ledger_path) as ledger:
        before = ledger.spent("registrar", period_s=86_400)
    dept = fed.catalogue.departments_for(SubjectKind.PERSON)[-1].id
    fed.nodes[dept].stop(grace=0)
    with pytest.raises(Unavailable, match=rf"{dept}: .*a statistic sums every department|{dept}"):
        office.stats(cohort, kind=SubjectKind.PERSON, purpose=PURPOSE, epsilon="5")
    with EpsilonLedger(ledger_path) as ledger:
        assert ledger.spent("registrar", period_s=86_400) == before
