"""The coordinator's decision path: authenticate, check policy and consent, fan out, sum blindly."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from coordinator.batch import BatchRun, BatchScorer
from coordinator.cases import CaseForwarder
from coordinator.consent import ConsentRegistry, ConsentState
from coordinator.context import DEFAULT_DEADLINE_S, CoordinatorContext
from coordinator.disclosure import DisclosureLedger
from coordinator.epsilon import EpsilonLedger
from coordinator.keys import KeyRegistry
from coordinator.list_changes import ListChangeFeed
from coordinator.lists import ListSearcher
from coordinator.nodes import NodeFailure, NodePool
from coordinator.ratelimit import RateLimiter
from coordinator.stats import StatsAnswerer
from coordinator.subject_file import SubjectFileGatherer
from osmanthus.core import metrics
from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.auditproofs import CheckpointSource
from osmanthus.core.cases import CaseReceipt
from osmanthus.core.catalogue import Catalogue, SubjectModel
from osmanthus.core.crypto import Ciphertext, EncryptorCache, PublicKey
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    CryptoError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from osmanthus.core.ids import canonical_subject, validate_any_subject, validate_subject
from osmanthus.core.lists import ListChangesPage
from osmanthus.core.names import validate_purpose, validate_requester_id
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import (
    Decision,
    PolicyEngine,
    ReloadablePolicy,
)
from osmanthus.core.subjectpart import PartSigner
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims, TokenVerifier
from osmanthus.core.types import (
    SUBJECT_DEVICE_ROLES,
    ConsentId,
    DepartmentStatus,
    KeyFingerprint,
    QueryId,
    RequesterId,
    Shape,
    SubjectKind,
)
from osmanthus.core.wire.cases import FileCaseRequest
from osmanthus.core.wire.common import RequestLimits
from osmanthus.core.wire.coordinator import (
    BatchHeader,
    BatchPlan,
    ChangesRequest,
    Consent,
    ListSearch,
    ListSearchOutcome,
    QueryOutcome,
    QueryRequest,
    StatsOutcome,
    StatsQuery,
    SubjectChunk,
    SubjectFileOutcome,
    SubjectFileRequest,
)
from osmanthus.core.wire.node import (
    ContributionRequest,
    ContributionResult,
    validate_measures,
    validate_query_fields,
)
from osmanthus.core.workers import ZeroTestPool

_log = logging.getLogger(__name__)

#: why an answering department is left out of a sum (see coordinator/disclosure.py)
EXCLUDED_REASON = (
    "left out: earlier answers to you about this subject did not include this department, and "
    "including it now would disclose its contribution by subtraction"
)


#: the audit `shape` of the coordinator's registry decisions (they disclose no score)
KEY_REGISTRATION = "key_registration"
CONSENT_GRANT = "consent_grant"
CONSENT_REVOCATION = "consent_revocation"
CONSENT_LIST = "consent_list"


def new_query_id() -> QueryId:
    return QueryId("q_" + secrets.token_urlsafe(16))


class CoordinatorService:
    """Blind combiner. It holds public keys only; it never decrypts and never forwards one part."""

    def __init__(
        self,
        *,
        catalogue: Catalogue,
        nodes: NodePool,
        policy: ReloadablePolicy,
        verifier: TokenVerifier,
        consents: ConsentRegistry,
        keys: KeyRegistry,
        ledger: DisclosureLedger,
        epsilon_ledger: EpsilonLedger,
        audit: AuditLog,
        encryptors: EncryptorCache,
        deadline_s: float = DEFAULT_DEADLINE_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        part_signer: PartSigner | None = None,
        transparency: CheckpointSource | None = None,
        rate_limiter: RateLimiter | None = None,
    ) -> None:
        """`part_signer`: the coordinator certificate's key that signs its part of a subject's
        file (osmanthus.core.subjectpart); without one, SubjectFile is refused. `transparency`:
        the audit log's checkpointer, which the part's audit lines are proven against."""
        self._ctx = CoordinatorContext(
            catalogue=catalogue,
            nodes=nodes,
            policy=policy,
            audit=audit,
            # None: windows in this process's memory (coordinator.storage shares them)
            rate_limiter=rate_limiter if rate_limiter is not None else RateLimiter(),
            clock=clock,
            deadline_s=deadline_s,
            transparency=transparency,
        )
        self._verifier = verifier
        self._consents = consents
        self._keys = keys
        self._ledger = ledger
        # the fresh E(0) that re-randomises each forwarded sum costs one r^n on the plain path
        self._encryptors = encryptors
        # THRESHOLD's zero tests are the one heavy step here: while they run the nodes are idle
        self._zero_tests = ZeroTestPool()
        self._batches = BatchScorer(self._ctx, keys=keys, ledger=ledger, encryptors=encryptors)
        self._stats = StatsAnswerer(
            self._ctx, keys=keys, ledger=epsilon_ledger, encryptors=encryptors
        )
        self._lists = ListSearcher(self._ctx)
        self._list_changes = ListChangeFeed(self._ctx)
        self._subject_files = SubjectFileGatherer(self._ctx, signer=part_signer)
        self._cases = CaseForwarder(self._ctx)
        self._limits = RequestLimits.for_catalogue(catalogue)

    @property
    def request_limits(self) -> RequestLimits:
        """The natural size of each repeated request field, which the servicer caps them at."""
        return self._limits

    @property
    def context(self) -> CoordinatorContext:
        """What the coordinator decides with (TransparencyService decides with it too)."""
        return self._ctx

    def close(self) -> None:
        self._zero_tests.close()
        self._batches.close()
        self._stats.close()
        self._ctx.nodes.close()
        self._consents.close()
        self._keys.close()
        self._ledger.close()
        self._ctx.audit.close()
        self._encryptors.close()

    # --- authentication and policy -------------------------------------------------------------

    def authenticate(self, caller: PeerIdentity, token: str | None) -> TokenClaims:
        """The token must verify and name the same requester as the client certificate."""
        if caller.role is not PeerRole.REQUESTER:
            raise PermissionDenied(
                f"only requesters may call the coordinator; the client certificate names "
                f"{caller.role.value} {caller.name!r}"
            )
        if not token:
            raise Unauthenticated("no requester token in the 'authorization' metadata")
        claims = self._verifier.verify(token)
        if claims.requester != caller.name:
            raise Unauthenticated(
                f"token subject {claims.requester!r} does not match the client certificate "
                f"({caller.name!r})"
            )
        return claims

    # --- keys ----------------------------------------------------------------------------------

    def register_key(
        self,
        public_key: bytes,
        *,
        modulus_proof: bytes,
        caller: PeerIdentity,
        token: str | None,
    ) -> KeyFingerprint:
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=new_query_id(), policy_hash=engine.hash, shape=KEY_REGISTRATION
        )
        with self._ctx.audited(record):
            claims = record.identify(self.authenticate(caller, token))
            key = PublicKey.from_bytes(public_key, field="public_key")
            record.extra["key_fingerprint"] = key.fingerprint
            if key.fingerprint != claims.key_fingerprint:
                raise PermissionDenied(
                    f"key {key.fingerprint[:16]}… is not the key bound to the token "
                    f"({claims.key_fingerprint[:16]}…); ask the platform for a token for this key"
                )
            self._ctx.require(engine, claims, "RegisterKey", ("Registry", "keys"))
            fingerprint = self._keys.register(
                requester=claims.requester,
                n=key.n,
                modulus_proof=modulus_proof,
                now=self._ctx.clock(),
            )
            record.allow("key registered")
        return fingerprint

    # --- queries -------------------------------------------------------------------------------

    def query(
        self, request: QueryRequest, *, caller: PeerIdentity, token: str | None
    ) -> QueryOutcome:
        # one policy version decides the whole query and is the one the audit entry names
        engine = self._ctx.policy.current()
        subject = canonical_subject(request.subject_kind, request.subject_id)
        record = AuditedRequest(
            query_id=new_query_id(),
            purpose=request.purpose,
            consent_id=request.consent_id,
            policy_hash=engine.hash,
            shape=request.shape.value if request.shape else "",
            subject_hash=self._ctx.audit.subject_hash(subject),
            # what the coordinator received and sent, recorded whatever the decision
            extra={"ciphertexts_received": 0, "ciphertexts_forwarded": 0},
        )
        with self._ctx.audited(record):
            claims = record.identify(self.authenticate(caller, token))
            assert token is not None  # authenticate() refuses a missing token
            outcome = self._query(
                QueryId(record.query_id), request, claims, token, record.extra, engine
            )
            record.allow("partial sum forwarded" if outcome.partial else "sum forwarded")
        return outcome

    def _query(
        self,
        query_id: QueryId,
        request: QueryRequest,
        claims: TokenClaims,
        token: str,
        seen: dict[str, int | str],
        engine: PolicyEngine,
    ) -> QueryOutcome:
        _, purpose, shape = validate_query_fields(
            query_id=query_id, purpose=request.purpose, shape=request.shape
        )
        kind = request.subject_kind
        subject = validate_subject(kind, request.subject_id, field=kind.id_field)
        model = self._ctx.catalogue.model(kind)
        if shape is Shape.THRESHOLD and not model.floor < request.threshold <= model.ceiling:
            raise InvalidArgument(
                f"a THRESHOLD query asks about a score in {model.floor + 1}..{model.ceiling}, "
                f"not {request.threshold} (every score is at least {model.floor})",
                field="threshold",
            )
        if shape is not Shape.THRESHOLD and request.threshold:
            raise InvalidArgument(
                f"a threshold belongs to THRESHOLD queries, not {shape.value}", field="threshold"
            )
        if shape is Shape.STATS:
            raise InvalidArgument(
                "STATS answers a cohort, through StatsQuery, not one subject", field="shape"
            )
        measures = (
            validate_measures(self._ctx.catalogue, request.measures) if shape is Shape.FLAGS else ()
        )
        if measures:
            seen["measures"] = ",".join(measures)
            # a measure no department here can trigger would always read "not restricted"
            for measure in measures:
                if not self._ctx.catalogue.flag_departments(kind, (measure,)):
                    raise InvalidArgument(
                        f"no department of this platform sets a flag that triggers {measure} "
                        f"for {kind.value}s",
                        field="measures",
                    )
        if shape is not Shape.FLAGS and request.measures:
            raise InvalidArgument(
                f"measures belong to FLAGS queries, not {shape.value}", field="measures"
            )
        departments = self._asked_departments(kind, shape, request.departments)
        claims.require_purpose(purpose)
        key = self._keys.registered_key(claims, request.public_key, field="public_key")
        action = "PersonQuery" if kind is SubjectKind.PERSON else "EnterpriseQuery"
        resource = ("Dataset", kind.value)
        context: dict[str, Any] = {"purpose": purpose, "shape": shape.value}
        if shape is Shape.THRESHOLD:
            # a permit can pin the one threshold its purpose needs: any t at all would let a
            # requester bisect the score in about eight questions
            context["threshold"] = request.threshold
            seen["threshold"] = request.threshold
        if shape is Shape.FLAGS:
            # a permit can grant some measures only: a bank's loan decision needs bank_loan
            context["measures"] = tuple(sorted(measures))
        if departments:
            # a permit can pin the departments a purpose may see alone (a tax-bank loan: tax)
            context["departments"] = departments
            seen["departments"] = ",".join(departments)
        if kind is SubjectKind.PERSON or request.consent_id:
            # an enterprise's consent counts where it is given: a tax-bank loan needs one
            state, why = self._consents.check(
                request.consent_id or None,
                subject_id=subject,
                grantee=claims.requester,
                purpose=purpose,
                now=self._ctx.clock(),
                subject_kind=kind,
            )
            context["consent"] = state.value
            decision = self._ctx.decide(engine, claims, action, resource, context)
            self._raise_if_denied(claims, action, resource, context, decision, state, why, engine)
            # the nodes check the consent themselves: its receipt goes with the request
            receipt = (
                self._consents.get(request.consent_id).receipt
                if state is ConsentState.VALID
                else ""
            )
        else:
            context["consent"] = ConsentState.NOT_APPLICABLE.value
            decision = self._ctx.require(engine, claims, action, resource, context)
            receipt = ""
        # a permit's @rate_limit: reserved now, given back if the query is refused after all
        with self._ctx.rate_limited(claims.requester, engine.rate_limits(decision)):
            outcome = (
                self._flags(query_id, claims, token, seen, kind, subject, purpose, key, measures,
                            request.consent_id, receipt) if shape is Shape.FLAGS
                else self._answer(query_id, request, claims, token, seen, engine, decision, kind,
                                  subject, shape, purpose, key, model, receipt)
            )  # fmt: skip
            if receipt:  # a revocation that committed while the departments answered
                self._consents.require_still_valid(request.consent_id, subject_id=subject,
                    grantee=claims.requester, purpose=purpose, now=self._ctx.clock(),
                    subject_kind=kind)  # fmt: skip
            return outcome

    def _answer(
        self,
        query_id: QueryId,
        request: QueryRequest,
        claims: TokenClaims,
        token: str,
        seen: dict[str, int | str],
        engine: PolicyEngine,
        decision: Decision,
        kind: SubjectKind,
        subject: str,
        shape: Shape,
        purpose: str,
        key: PublicKey,
        model: SubjectModel,
        consent_receipt: str,
    ) -> QueryOutcome:
        """Fan out, check what may be released, and sum: everything after the policy allowed."""
        # ARCHITECTURE.md: fewer departments than this are refused unless each allows single-source
        minimum = engine.min_departments(decision)

        expected = sorted(
            d.id
            for d in self._ctx.catalogue.departments_for(kind)
            if not request.departments or d.id in request.departments
        )
        configured = [d for d in expected if d in self._ctx.nodes.departments]
        not_configured = [
            NodeFailure(d, "no node registered for this department")
            for d in expected
            if d not in configured
        ]
        layout = SlotLayout.for_catalogue(
            self._ctx.catalogue, kind, Shape.BREAKDOWN if shape is Shape.BREAKDOWN else Shape.TOTAL
        )
        slots = layout.names if shape is Shape.BREAKDOWN else ()
        widths = layout.widths if shape is Shape.BREAKDOWN else ()
        answers, failures = self._ctx.nodes.contribute_all(
            configured,
            ContributionRequest(
                query_id=query_id,
                subject_kind=kind,
                subject_id=subject,
                shape=shape,
                purpose=purpose,
                consent_id=request.consent_id,
                public_key=request.public_key,
                slots=slots,
                slot_widths=widths,
                consent_receipt=consent_receipt,
            ),
            # nodes verify the requester's token themselves (defence in depth), and the
            # consent: its receipt, and the revocation feed the registry staples
            token=token,
            deadline_s=self._ctx.deadline_s,
            staple=self._consents if consent_receipt else None,
            clock=self._ctx.clock,
        )
        seen["ciphertexts_received"] = len(answers)
        seen["ciphertext_bytes_received"] = sum(len(a.ciphertext) for a in answers)
        seen["departments_missing"] = len(failures) + len(not_configured)
        ciphertexts, answers, invalid = self._validated(key, answers)
        failures = not_configured + failures + invalid
        if (
            not answers
            and failures
            and all(isinstance(f.error, PermissionDenied) for f in failures)
        ):
            # a refusal by every department is the policies' answer, not an outage to retry
            raise PermissionDenied(
                "every department refused: "
                + "; ".join(f"{f.department}: {f.reason}" for f in failures)
            )

        def release(departments: frozenset[str]) -> None:
            chosen = [a for a in answers if a.department in departments]
            left_out = [
                NodeFailure(a.department, EXCLUDED_REASON)
                for a in answers
                if a.department not in departments
            ]
            missing = [
                DepartmentStatus(f.department, f.reason)
                for f in sorted(failures + left_out, key=lambda f: f.department)
            ]
            self._check_disclosure(
                claims, kind, purpose, shape, chosen, missing, len(expected), minimum, engine
            )

        if all(a.single_source_allowed for a in answers) and answers:
            # every part may be disclosed alone (a person's self-query): nothing to protect
            release(frozenset(a.department for a in answers))
        else:
            pinned = self._ledger.settle(
                requester=claims.requester,
                subject_kind=kind,
                subject_hash=self._ctx.audit.subject_hash(subject),
                answered=frozenset(a.department for a in answers),
                release=release,
                now=self._ctx.clock(),
            )
            failures += [
                NodeFailure(a.department, EXCLUDED_REASON)
                for a in answers
                if a.department not in pinned
            ]
            kept = [
                (c, a) for c, a in zip(ciphertexts, answers, strict=True) if a.department in pinned
            ]
            ciphertexts = [c for c, _ in kept]
            answers = [a for _, a in kept]
        answered = tuple(
            DepartmentStatus(a.department, "answered", a.rules_version) for a in answers
        )
        missing = tuple(
            DepartmentStatus(f.department, f.reason)
            for f in sorted(failures, key=lambda f: f.department)
        )
        total = key.add(*ciphertexts)
        if shape is Shape.THRESHOLD:
            return self._threshold_outcome(
                query_id, key, key.add_plain(total, model.base), request.threshold, model.ceiling,
                answered, missing, model.base, seen,
            )  # fmt: skip
        if shape is Shape.TOTAL:
            total = key.add_plain(total, model.base)
        # a fresh E(0) factor makes the forwarded ciphertext unlinkable to every received one,
        # which matters when a single department's part may be disclosed on its own
        total = key.add(total, self._encryptors.encrypt(key, 0))
        seen["ciphertexts_forwarded"] = 1
        return QueryOutcome(
            query_id=query_id,
            shape=shape,
            ciphertext=total.to_bytes(),
            slots=slots,
            slot_widths=widths,
            base=model.base,
            answered=answered,
            missing=missing,
        )

    def _flags(
        self,
        query_id: QueryId,
        claims: TokenClaims,
        token: str,
        seen: dict[str, int | str],
        kind: SubjectKind,
        subject: str,
        purpose: str,
        key: PublicKey,
        measures: tuple[str, ...],
        consent_id: str,
        consent_receipt: str,
    ) -> QueryOutcome:
        """FLAGS: per measure, the flag counts of every department holding a trigger, summed and
        blinded as E(r · count) with r uniform in [1, n) (ARCHITECTURE.md): 0 or a uniform value,
        so the requester learns the bit, never which department flagged nor how many did."""
        departments = self._ctx.catalogue.flag_departments(kind, measures)
        absent = [d for d in departments if d not in self._ctx.nodes.departments]
        if absent:
            raise Unavailable(
                f"no node registered for {', '.join(absent)}, which can set a flag triggering "
                "a measure asked: an answer without it could say 'not restricted' wrongly"
            )
        answers, failures = self._ctx.nodes.contribute_all(
            departments,
            ContributionRequest(
                query_id=query_id,
                subject_kind=kind,
                subject_id=subject,
                shape=Shape.FLAGS,
                purpose=purpose,
                consent_id=consent_id,
                public_key=key.to_bytes(),
                slots=(),
                slot_widths=(),
                measures=measures,
                consent_receipt=consent_receipt,
            ),
            token=token,
            deadline_s=self._ctx.deadline_s,
            staple=self._consents if consent_receipt else None,
            clock=self._ctx.clock,
        )
        seen["ciphertexts_received"] = sum(len(a.flag_counts) for a in answers)
        refusals = [f for f in failures if isinstance(f.error, PermissionDenied)]
        if refusals:
            # a department's policy refuses: a standing answer, not an outage to retry
            raise PermissionDenied(
                "a FLAGS answer needs every department that can set a trigger, and "
                + "; ".join(f"{f.department}: {f.reason}" for f in refusals)
            )
        if failures:
            # a missing department's flag would be read as "not restricted": never partial
            raise Unavailable(
                "a FLAGS answer needs every department that can set a trigger; missing: "
                + "; ".join(f"{f.department}: {f.reason}" for f in failures)
            )
        totals = []
        for index in range(len(measures)):
            parts = []
            for answer in answers:
                if len(answer.flag_counts) != len(measures):
                    raise Unavailable(
                        f"department {answer.department} sent {len(answer.flag_counts)} flag "
                        f"counts for {len(measures)} measures"
                    )
                try:
                    parts.append(
                        key.ciphertext_from_bytes(answer.flag_counts[index], field="flag_counts")
                    )
                except CryptoError as exc:
                    raise Unavailable(
                        f"department {answer.department} sent an invalid ciphertext ({exc})"
                    ) from exc
            totals.append(key.add(*parts))
        # E(count)^r with r uniform in [1, n), times a fresh E(0): the same zero test THRESHOLD
        # uses, at v = 0, so each blinded count carries no trace of the departments' randomness
        flags = [
            self._zero_tests.blinded_zero_tests(
                key, total, (0,), fresh_zero=lambda: self._encryptors.encrypt(key, 0)
            )[0]
            for total in totals
        ]
        seen["ciphertexts_forwarded"] = len(flags)
        return QueryOutcome(
            query_id=query_id,
            shape=Shape.FLAGS,
            ciphertext=b"",
            slots=(),
            slot_widths=(),
            base=self._ctx.catalogue.model(kind).base,
            answered=tuple(
                DepartmentStatus(a.department, "answered", a.rules_version)
                for a in sorted(answers, key=lambda a: a.department)
            ),
            missing=(),
            measures=measures,
            flags=tuple(f.to_bytes() for f in flags),
        )

    def _threshold_outcome(
        self,
        query_id: QueryId,
        key: PublicKey,
        total: Ciphertext,
        threshold: int,
        ceiling: int,
        answered: tuple[DepartmentStatus, ...],
        missing: tuple[DepartmentStatus, ...],
        base: int,
        seen: dict[str, int | str],
    ) -> QueryOutcome:
        """E(T) → shuffled E(r_v · (T − v)) for v = threshold..ceiling (ARCHITECTURE.md).

        T = base − D + B never exceeds the ceiling (bonuses are capped), so T ≥ threshold
        exactly when one v in the range equals T: one candidate then decrypts to 0. The
        shuffle hides which v it was, and full-size r_v hide T − v in every other candidate.
        """
        # each gets fresh randomness too: E(T)^r_v alone carries ρ^r_v, and a requester who
        # can take n-th roots would relate the candidates through it and solve for every r_v,
        # hence T (found in review: a meet-in-the-middle over T − v recovers the score)
        candidates = self._zero_tests.blinded_zero_tests(
            key,
            total,
            range(threshold, ceiling + 1),
            fresh_zero=lambda: self._encryptors.encrypt(key, 0),
        )
        secrets.SystemRandom().shuffle(candidates)
        seen["ciphertexts_forwarded"] = len(candidates)
        return QueryOutcome(
            query_id=query_id,
            shape=Shape.THRESHOLD,
            ciphertext=b"",
            slots=(),
            slot_widths=(),
            base=base,
            answered=answered,
            missing=missing,
            candidates=tuple(c.to_bytes() for c in candidates),
            threshold=threshold,
        )

    def _asked_departments(
        self, kind: SubjectKind, shape: Shape, asked: Sequence[str]
    ) -> tuple[str, ...]:
        """The departments a query names, checked; () when it asks every department."""
        if not asked:
            return ()
        if shape is Shape.FLAGS:
            raise InvalidArgument(
                "a FLAGS query asks every department that can flag the subject; it names "
                "measures, not departments",
                field="departments",
            )
        serving = {d.id for d in self._ctx.catalogue.departments_for(kind)}
        # one pass with a set: the wire capped `asked` at the catalogue's departments, and no
        # check here is quadratic in it either
        named: set[str] = set()
        for department in asked:
            if department in named:
                raise InvalidArgument(
                    f"{str(department)[:40]!r} is named twice", field="departments"
                )
            named.add(department)
        for department in asked:
            if department not in serving:
                raise InvalidArgument(
                    f"{str(department)[:40]!r} is not a department serving {kind.value}s; "
                    "known: " + ", ".join(sorted(serving)),
                    field="departments",
                )
        return tuple(sorted(asked))

    def _raise_if_denied(
        self,
        claims: TokenClaims,
        action: str,
        resource: tuple[str, str],
        context: dict[str, Any],
        decision: Decision,
        state: ConsentState,
        why: str,
        engine: PolicyEngine,
    ) -> None:
        if decision.allowed:
            return
        # would a valid consent have been enough? then the consent is the cause
        with_consent = {**context, "consent": ConsentState.VALID.value}
        if (
            state is not ConsentState.VALID
            and self._ctx.decide(engine, claims, action, resource, with_consent).allowed
        ):
            raise PermissionDenied(f"no valid consent: {why}", field="consent_id")
        raise PermissionDenied(f"central policy: {decision.reason}")

    @staticmethod
    def _validated(
        key: PublicKey, answers: Sequence[ContributionResult]
    ) -> tuple[list[Ciphertext], list[ContributionResult], list[NodeFailure]]:
        good: list[Ciphertext] = []
        kept: list[ContributionResult] = []
        bad: list[NodeFailure] = []
        for answer in answers:
            try:
                good.append(key.ciphertext_from_bytes(answer.ciphertext, field="ciphertext"))
                kept.append(answer)
            except CryptoError as exc:
                _log.warning("department %s sent an invalid ciphertext: %s", answer.department, exc)
                bad.append(
                    NodeFailure(answer.department, f"sent an invalid ciphertext ({exc}); discarded")
                )
        return good, kept, bad

    def _check_disclosure(
        self,
        claims: TokenClaims,
        kind: SubjectKind,
        purpose: str,
        shape: Shape,
        answers: Sequence[ContributionResult],
        missing: Sequence[DepartmentStatus],
        expected: int,
        minimum: int,
        engine: PolicyEngine,
    ) -> None:
        metrics.departments_missing(m.department for m in missing)
        if not answers:
            raise Unavailable(
                "no department answered: "
                + "; ".join(f"{m.department}: {m.detail}" for m in missing)
            )
        if len(answers) < minimum and not all(a.single_source_allowed for a in answers):
            names = ", ".join(a.department for a in answers)
            raise FailedPrecondition(
                f"only {len(answers)} department(s) answered ({names}); "
                f"the policy requires at least {minimum} unless each allows single-source "
                f"disclosure for purpose {purpose!r}"
            )
        if missing:
            context = {
                "purpose": purpose,
                "shape": shape.value,
                "answered": len(answers),
                "expected": expected,
            }
            decision = self._ctx.decide(
                engine, claims, "AcceptPartial", ("Dataset", kind.value), context
            )
            if not decision.allowed:
                raise Unavailable(
                    f"the answer would be partial ({len(answers)} of {expected} departments; "
                    "missing: "
                    + ", ".join(f"{m.department} ({m.detail})" for m in missing)
                    + f") and the central policy refuses partial answers here: {decision.reason}"
                )
            metrics.partial_answer(shape=shape.value)

    # --- red and black lists -------------------------------------------------------------------

    def search_lists(
        self, request: ListSearch, *, caller: PeerIdentity, token: str | None
    ) -> ListSearchOutcome:
        """The public query of red and black lists (see coordinator/lists.py)."""
        return self._lists.search(
            new_query_id(), request, authenticate=lambda: self.authenticate(caller, token)
        )

    def list_changes(
        self, request: ChangesRequest, *, caller: PeerIdentity, token: str | None
    ) -> ListChangesPage:
        """One department's list change feed (see coordinator/list_changes.py)."""
        return self._list_changes.read(
            new_query_id(), request, authenticate=lambda: self.authenticate(caller, token)
        )

    # --- a subject's own file ------------------------------------------------------------------

    def subject_file(
        self, request: SubjectFileRequest, *, caller: PeerIdentity, token: str | None
    ) -> SubjectFileOutcome:
        """Every department's part of a subject's file, sealed (see coordinator/subject_file.py)."""
        return self._subject_files.gather(
            new_query_id(),
            request,
            authenticate=lambda: self.authenticate(caller, token),
            token=token,
        )

    def file_case(
        self, request: FileCaseRequest, *, caller: PeerIdentity, token: str | None
    ) -> CaseReceipt:
        """A subject's sealed case, forwarded to its department's node (coordinator/cases.py)."""
        return self._cases.file(
            new_query_id(),
            request,
            authenticate=lambda: self.authenticate(caller, token),
            token=token,
        )

    # --- statistics ----------------------------------------------------------------------------

    def stats(
        self, request: StatsQuery, *, caller: PeerIdentity, token: str | None
    ) -> StatsOutcome:
        """Noisy sums over a cohort (see coordinator/stats.py)."""
        return self._stats.answer(
            new_query_id(),
            request,
            authenticate=lambda: self.authenticate(caller, token),
            token=token,
        )

    # --- batches -------------------------------------------------------------------------------

    def batch(
        self,
        header: BatchHeader,
        chunks: Iterable[SubjectChunk],
        *,
        caller: PeerIdentity,
        token: str | None,
    ) -> tuple[BatchPlan, BatchRun]:
        """Check the batch as a whole, then answer its chunks as they arrive (see batch.py).

        The caller must close() the returned run, whether or not it iterated it.
        """
        # one policy version decides the batch and is the one the audit entries name
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=new_query_id(),
            purpose=header.purpose,
            policy_hash=engine.hash,
            shape=header.shape.value if header.shape else "",
            extra={"batch": 1},
        )
        run: BatchRun | None = None
        try:
            with self._ctx.audited(record):
                claims = record.identify(self.authenticate(caller, token))
                assert token is not None  # authenticate() refuses a missing token
                plan, batch = self._batches.plan(
                    QueryId(record.query_id), header, claims, token, engine=engine
                )
                run = self._batches.admit(batch, chunks)
                record.allow("batch opened")
        except BaseException:
            # admitted but not recorded (the audit log failed): the batch's place is freed
            if run is not None:
                run.close()
            raise
        return plan, run

    # --- consent -------------------------------------------------------------------------------

    def grant_consent(
        self,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        expires_at: datetime,
        caller: PeerIdentity,
        token: str | None,
        subject_kind: SubjectKind = SubjectKind.PERSON,
    ) -> Consent:
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=new_query_id(),
            policy_hash=engine.hash,
            shape=CONSENT_GRANT,
            subject_hash=self._ctx.audit.subject_hash(canonical_subject(subject_kind, subject_id)),
            # the consent's own purpose and grantee, not a purpose of this request
            extra={"consent_purpose": purpose[:64], "grantee": grantee[:64]},
        )
        with self._ctx.audited(record):
            claims = record.identify(self.authenticate(caller, token))
            self._ctx.require(
                engine,
                claims,
                "ManageConsent",
                ("Registry", "consent"),
                {"operation": "grant", "subject_bound": True},
            )
            subject = validate_subject(subject_kind, subject_id, field="subject_id")
            consent = self._consents.grant(
                subject_id=subject,
                grantee=validate_requester_id(grantee, field="grantee"),
                purpose=validate_purpose(purpose),
                expires_at=expires_at,
                now=self._ctx.clock(),
                subject_kind=subject_kind,
            )
            record.consent_id = consent.consent_id
            record.allow("consent recorded")
        return consent

    def revoke_consent(
        self,
        consent_id: str,
        *,
        caller: PeerIdentity,
        token: str | None,
        subject_id: str = "",
    ) -> Consent:
        """Revoke a consent; with `subject_id`, only if it is that subject's (a subjects' portal
        device must name the subject: it revokes for the one signed in and nobody else)."""
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=new_query_id(),
            consent_id=consent_id,
            policy_hash=engine.hash,
            shape=CONSENT_REVOCATION,
            subject_hash=self._ctx.audit.subject_hash(_canonical_any(subject_id))
            if subject_id
            else "",
        )
        with self._ctx.audited(record):
            claims = record.identify(self.authenticate(caller, token))
            if claims.role in SUBJECT_DEVICE_ROLES and not subject_id:
                raise PermissionDenied(
                    "a subjects' portal device revokes a consent only for the subject it names "
                    "(subject_id)",
                    field="subject_id",
                )
            self._ctx.require(
                engine,
                claims,
                "ManageConsent",
                ("Registry", "consent"),
                {"operation": "revoke", "subject_bound": bool(subject_id)},
            )
            if subject_id:
                subject = validate_any_subject(subject_id, field="subject_id")
                if self._consents.get(ConsentId(consent_id)).subject_id != subject:
                    # the same refusal whoever's it is: nothing about the other subject is told
                    raise PermissionDenied(
                        f"consent {consent_id} is not the named subject's: a subject revokes "
                        "only their own consents",
                        field="consent_id",
                    )
            consent = self._consents.revoke(ConsentId(consent_id), now=self._ctx.clock())
            record.subject_hash = self._ctx.audit.subject_hash(consent.subject_id)
            record.allow("consent revoked")
        return consent

    def list_consents(
        self, *, subject_id: str, grantee: str, caller: PeerIdentity, token: str | None
    ) -> list[Consent]:
        engine = self._ctx.policy.current()
        record = AuditedRequest(
            query_id=new_query_id(),
            policy_hash=engine.hash,
            shape=CONSENT_LIST,
            subject_hash=self._ctx.audit.subject_hash(_canonical_any(subject_id))
            if subject_id
            else "",
        )
        with self._ctx.audited(record):
            claims = record.identify(self.authenticate(caller, token))
            if claims.role in SUBJECT_DEVICE_ROLES and not subject_id:
                raise PermissionDenied(
                    "a subjects' portal device lists the consents of the subject it names "
                    "(subject_id) only",
                    field="subject_id",
                )
            manager = self._ctx.decide(
                engine,
                claims,
                "ManageConsent",
                ("Registry", "consent"),
                {"operation": "list", "subject_bound": bool(subject_id)},
            )
            if not manager.allowed:
                # a requester may always see the consents granted to itself, and nothing else
                if grantee and grantee != claims.requester:
                    raise PermissionDenied(
                        "requesters may list only consents granted to themselves"
                    )
                grantee = claims.requester
            # a person's resident id or an enterprise's credit code (a tax-bank loan's consent)
            subject = validate_any_subject(subject_id, field="subject_id") if subject_id else None
            consents = self._consents.list(
                subject_id=subject, grantee=RequesterId(grantee) if grantee else None
            )
            record.allow("consents listed", consents=len(consents))
        return consents


def _canonical_any(value: str) -> str:
    """A person's or an enterprise's id in its validated form, or as sent if it is neither."""
    try:
        return validate_any_subject(value, field="subject_id")
    except InvalidArgument:
        return value
