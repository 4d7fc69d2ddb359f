"""STATS at the coordinator: cohort sums from every department, noised under encryption, ε charged.

The requester names a cohort of at least k distinct subjects and the ε to spend. Every
department serving the subject kind sums its own parts over the cohort; the coordinator adds the
departments' ciphertexts, then one fresh encryption of discrete-Laplace noise per sum, and
forwards only the noisy sums. It never sees a sum (it holds no key) and the requester never sees
one without the noise, which the coordinator alone knows and forgets.

Each sum asked is one statistic; one subject can move statistic i by at most its bound Δᵢ (one
subject's largest possible value of that slot over every department, the same bound the slot
widths come from). With m statistics, noise of scale m·Δᵢ/ε on statistic i makes each
ε/m-private, and the m together ε-private (basic composition).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from decimal import Decimal

from coordinator.context import CoordinatorContext
from coordinator.epsilon import EpsilonLedger
from coordinator.keys import KeyRegistry
from coordinator.nodes import NodeFailure
from osmanthus.core import metrics
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.crypto import Ciphertext, EncryptorCache, PublicKey
from osmanthus.core.dp import laplace_scale, parse_epsilon, sample_discrete_laplace
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    CryptoError,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.ids import canonical_subject
from osmanthus.core.names import validate_purpose
from osmanthus.core.policy import (
    LONG_HORIZON_S,
    PolicyEngine,
)
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import DepartmentStatus, QueryId, Shape, SubjectId, SubjectKind
from osmanthus.core.wire.coordinator import StatsOutcome, StatsQuery
from osmanthus.core.wire.node import MAX_COHORT, StatsRequest, validate_cohort, validate_statistics

_log = logging.getLogger(__name__)

#: a cohort names thousands of subjects and each node scores them all: it gets this much longer
#: than a single query's deadline per 10,000 subjects
STATS_SECONDS_PER_10K = 5.0


#: node failures that cannot depend on a cohort's records: down or unreachable, or refused by
#: policy or token checks, which see only the request
_DATA_INDEPENDENT = (Unavailable, PermissionDenied, Unauthenticated)


def refundable(failures: Sequence[NodeFailure]) -> bool:
    """Whether these department failures leave the ε unspent: each is independent of the
    records (down or unreachable, or refused on the request alone). Any other failure, a
    missed deadline or a node's error on some record, could depend on who is in the cohort."""
    return all(isinstance(f.error, _DATA_INDEPENDENT) for f in failures)


class _Refund(Exception):
    """A failure before anything was released, for reasons independent of the records."""

    def __init__(self, error: OsmanthusError) -> None:
        super().__init__(str(error))
        self.error = error


class StatsAnswerer:
    """Everything after authentication for one STATS query; CoordinatorService delegates here."""

    def __init__(
        self,
        context: CoordinatorContext,
        *,
        keys: KeyRegistry,
        ledger: EpsilonLedger,
        encryptors: EncryptorCache,
    ) -> None:
        self._ctx = context
        self._keys = keys
        self._ledger = ledger
        self._encryptors = encryptors

    def close(self) -> None:
        self._ledger.close()

    def answer(
        self,
        query_id: QueryId,
        request: StatsQuery,
        *,
        authenticate: Callable[[], TokenClaims],
        token: str | None,
    ) -> StatsOutcome:
        """Authenticate, decide, charge ε, sum and noise; every outcome is audited."""
        # one policy version decides the whole query and is the one the audit entry names
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=query_id,
            purpose=request.purpose,
            policy_hash=engine.hash,
            shape=Shape.STATS.value,
            extra={"cohort": len(request.subject_ids)},
        )
        with self._ctx.audited(record):
            claims = record.identify(authenticate())
            assert token is not None  # authenticate() refuses a missing token
            outcome, cohort = self._answer(query_id, request, claims, token, engine, record)
            record.subject_hash = self._ctx.audit.cohort_hash(cohort)
            record.allow("noisy sums forwarded")
        return outcome

    def _name_refused_cohort(self, record: AuditedRequest, request: StatsQuery) -> None:
        # a refused request's ids as far as they are ids at all
        named = [
            canonical_subject(request.subject_kind, s) for s in request.subject_ids[:MAX_COHORT]
        ]
        record.subject_hash = self._ctx.audit.cohort_hash(named)

    def _answer(
        self,
        query_id: QueryId,
        request: StatsQuery,
        claims: TokenClaims,
        token: str,
        engine: PolicyEngine,
        record: AuditedRequest,
    ) -> tuple[StatsOutcome, tuple[SubjectId, ...]]:
        seen = record.extra
        kind = request.subject_kind
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="subject_kind"
            )
        purpose = validate_purpose(request.purpose)
        epsilon = parse_epsilon(request.epsilon)
        seen["epsilon"] = format(epsilon.normalize(), "f")
        layout = SlotLayout.for_catalogue(self._ctx.catalogue, kind, Shape.BREAKDOWN)
        statistics = validate_statistics(layout, request.statistics)
        seen["statistics"] = ",".join(statistics)
        claims.require_purpose(purpose)
        size = len(request.subject_ids)
        if not 0 < size <= MAX_COHORT:
            raise InvalidArgument(
                f"a cohort names 1..{MAX_COHORT} subjects, this one {size}", field="subject_ids"
            )
        key = self._keys.registered_key(claims, request.public_key, field="public_key")
        # the policy decides on the cohort's size before any id is read: validate_cohort
        # refuses a cohort whose ids are not `size` distinct subjects, so the size is exact
        decision = self._ctx.require(
            engine,
            claims,
            "StatsQuery",
            ("Dataset", kind.value),
            {"purpose": purpose, "cohort": size, "epsilon": epsilon},
        )
        # from here a refusal names the cohort (one hash of its ids, as far as they are ids):
        # it costs a hash per id, which a request the policy refused does not get
        record.on_refusal = lambda r: self._name_refused_cohort(r, request)
        cohort = validate_cohort(kind, request.subject_ids)
        rules = ", ".join(decision.policy_ids)
        k = engine.min_cohort(decision)
        if len(cohort) < k:
            raise PermissionDenied(
                f"cohort too small: {len(cohort)} distinct subjects, and rule(s) {rules} "
                f"require at least {k}",
                field="cohort",
            )
        ceiling = engine.max_epsilon(decision)
        if ceiling is not None and epsilon > ceiling:
            raise PermissionDenied(
                f"ε {seen['epsilon']} is more than one query may spend under rule(s) {rules} "
                f"(at most {ceiling})",
                field="epsilon",
            )
        budgets = engine.epsilon_budgets(decision)
        if not budgets:
            # deny by default: a permit that sets no budget grants no spending
            raise PermissionDenied(
                f"rule(s) {rules} allow STATS but set no @epsilon_budget; without one nothing "
                "may be spent (ask the privacy officer)"
            )
        if not any(budget.period_s >= LONG_HORIZON_S for budget in budgets):
            # answers add up without end: a daily budget alone lets a requester average the
            # noise away over the months
            raise PermissionDenied(
                f"rule(s) {rules} bound STATS spending only per "
                f"{', '.join(b.text for b in budgets)}; privacy loss adds up over time, so a "
                'yearly budget is required too, e.g. @epsilon_budget("5/day, 50/year")'
            )
        limits = engine.rate_limits(decision)
        stamp = self._ctx.rate_limiter.charge(claims.requester, limits)
        try:
            reservation = self._ledger.reserve(
                query_id=query_id, requester=claims.requester, epsilon=epsilon, budgets=budgets
            )
        except BaseException:
            self._ctx.rate_limiter.refund(claims.requester, limits, stamp)
            raise
        try:
            outcome = self._sum_and_noise(
                query_id, kind, cohort, purpose, statistics, epsilon, layout, key, token, seen
            )
        except _Refund as refund:
            # nothing left the coordinator, and why cannot depend on the cohort's records
            self._ledger.release(reservation)
            self._ctx.rate_limiter.refund(claims.requester, limits, stamp)
            raise refund.error from None
        except BaseException:
            # a failure that may depend on the records (a node failing on one member) stays
            # charged: refunded, a failing query would be a free, repeatable membership test
            self._ledger.commit(reservation)
            metrics.epsilon_spent(float(epsilon), purpose=purpose)
            raise
        self._ledger.commit(reservation)
        metrics.epsilon_spent(float(epsilon), purpose=purpose)
        left = min(
            budget.epsilon - self._ledger.spent(claims.requester, period_s=budget.period_s)
            for budget in budgets
        )
        return dataclasses.replace(outcome, epsilon_left=max(left, Decimal(0))), cohort

    def _sum_and_noise(
        self,
        query_id: QueryId,
        kind: SubjectKind,
        cohort: tuple[str, ...],
        purpose: str,
        statistics: tuple[str, ...],
        epsilon: Decimal,
        layout: SlotLayout,
        key: PublicKey,
        token: str,
        seen: dict[str, int | str],
    ) -> StatsOutcome:
        expected = sorted(d.id for d in self._ctx.catalogue.departments_for(kind))
        unregistered = [d for d in expected if d not in self._ctx.nodes.departments]
        if unregistered:
            raise _Refund(
                Unavailable(
                    f"no node registered for department(s) {', '.join(unregistered)}: a "
                    "statistic sums every department",
                    departments=tuple(unregistered),
                )
            )
        deadline = self._ctx.deadline_s + STATS_SECONDS_PER_10K * len(cohort) / 10_000
        answers, failures = self._ctx.nodes.contribute_stats_all(
            expected,
            StatsRequest(
                query_id=query_id,
                subject_kind=kind,
                subject_ids=cohort,
                purpose=purpose,
                public_key=key.to_bytes(),
                statistics=statistics,
                slots=layout.names,
                slot_widths=layout.widths,
                slot_bounds=tuple(slot.sum_bound for slot in layout.slots),
            ),
            token=token,
            deadline_s=deadline,
        )
        seen["departments_answered"] = len(answers)
        if failures:
            # a sum without a department is biased by what it holds, and which departments a
            # statistic covers must not depend on who happened to be up
            missing = tuple(sorted(f.department for f in failures))
            error = Unavailable(
                f"{len(failures)} of {len(expected)} departments did not answer, and a "
                "statistic sums every department: "
                + "; ".join(f"{f.department}: {f.reason}" for f in failures),
                departments=missing,
            )
            if refundable(failures):
                raise _Refund(error)
            raise Unavailable(
                f"{error.message}; the ε of this query stays spent, since a department's "
                "failure may depend on the cohort's records",
                departments=missing,
            )
        sums: list[Ciphertext] = []
        for index in range(len(statistics)):
            parts = []
            for answer in answers:
                if len(answer.ciphertexts) != len(statistics):
                    raise Unavailable(
                        f"department {answer.department} sent {len(answer.ciphertexts)} sums "
                        f"for {len(statistics)} statistics"
                    )
                try:
                    parts.append(
                        key.ciphertext_from_bytes(answer.ciphertexts[index], field="ciphertext")
                    )
                except CryptoError as exc:
                    raise Unavailable(
                        f"department {answer.department} sent an invalid ciphertext ({exc})"
                    ) from exc
            sums.append(key.add(*parts))
        scales = tuple(
            laplace_scale(
                sensitivity=len(statistics) * layout.slots[layout.names.index(name)].sum_bound,
                epsilon=epsilon,
            )
            for name in statistics
        )
        # the fresh encryption of the noise also re-randomises the sum it joins
        noisy = tuple(
            key.add(total, self._encryptors.encrypt_signed(key, sample_discrete_laplace(scale)))
            for total, scale in zip(sums, scales, strict=True)
        )
        seen["ciphertexts_forwarded"] = len(noisy)
        return StatsOutcome(
            query_id=query_id,
            statistics=statistics,
            ciphertexts=tuple(c.to_bytes() for c in noisy),
            noise_scales=scales,
            cohort=len(cohort),
            epsilon=epsilon,
            epsilon_left=Decimal(0),
            base=layout.model.base,
            answered=tuple(
                DepartmentStatus(a.department, "answered", a.rules_version)
                for a in sorted(answers, key=lambda a: a.department)
            ),
        )
