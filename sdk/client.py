"""The requester-side client: keys, registration, queries, decryption and decoding of results."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.catalogue import Catalogue, SubjectModel, load_catalogue
from osmanthus.core.crypto import Ciphertext
from osmanthus.core.dp import parse_epsilon
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import ConfigError, CryptoError, InvalidArgument
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.ids import mask_subject, validate_resident_id, validate_subject, validate_uscc
from osmanthus.core.lists import (
    DEFAULT_CHANGES_PAGE_SIZE,
    ListChangeEvent,
    ListChangesPage,
    changes_page_size,
    list_of,
    parse_change_cursor,
    public_subject,
    shown_value,
)
from osmanthus.core.lists import page_size as lists_page_size
from osmanthus.core.score import Breakdown, grade, score
from osmanthus.core.subjectpart import load_trusted_cas
from osmanthus.core.tls import COORDINATOR_SERVER_NAME, TlsFiles, secure_channel
from osmanthus.core.tokens import bearer_metadata
from osmanthus.core.types import DepartmentId, KeyFingerprint, Shape, SubjectKind
from osmanthus.core.wire import coordinator as wire
from osmanthus.core.wire.coordinator import QueryRequest
from osmanthus.core.wire.lists import list_changes_page_from_proto
from osmanthus.core.wire.node import (
    MAX_CHUNK_SUBJECTS,
    validate_cohort,
    validate_measures,
    validate_statistics,
)
from osmanthus.core.workers import ParallelDecryptor
from osmanthus.v1 import coordinator_pb2_grpc
from sdk.batch import DEFAULT_CIPHERTEXTS_PER_CHUNK, BatchDecoder, Outbox, batch_requests
from sdk.failover import coordinator_target
from sdk.keys import RequesterKeys, load_or_create_keys
from sdk.listfeed import check_changes_page
from sdk.results import (
    BatchScore,
    ConsentRecord,
    EnterpriseScore,
    ListSearchResult,
    LoanDecision,
    PersonScore,
    RestrictionResult,
    StatsResult,
    TaxLoanCheck,
    ThresholdResult,
)
from sdk.subject import SubjectFileResult, file_request, max_response_bytes, open_parts

DEFAULT_TIMEOUT_S = 30.0
#: the purpose, department and measure of a tax-bank loan check (policies/central.cedar)
TAX_BANK_LOAN_PURPOSE = "tax_bank_loan"
TAX_DEPARTMENT = "tax"
BANK_LOAN_MEASURE = "bank_loan"
T = TypeVar("T")
M = TypeVar("M")
R = TypeVar("R")


def _kind_of(subject_id: str) -> SubjectKind:
    """PERSON or ENTERPRISE from the identifier's check digit; refuse one that fits both."""
    fits = []
    for kind, check in (
        (SubjectKind.PERSON, validate_resident_id),
        (SubjectKind.ENTERPRISE, validate_uscc),
    ):
        try:
            check(subject_id, field="subject_id")
        except InvalidArgument:
            continue
        fits.append(kind)
    if len(fits) != 1:
        what = "both a resident id and a credit code" if fits else "neither id kind"
        raise InvalidArgument(
            f"{subject_id[:40]!r} is {what}; pass kind=SubjectKind.PERSON or ENTERPRISE",
            field="subject_id",
        )
    return fits[0]


def _from_coordinator(convert: Callable[[M], R], message: M) -> R:
    """A coordinator's message as typed values; one no honest coordinator sends is its fault."""
    try:
        return convert(message)
    except InvalidArgument as exc:
        raise CryptoError(
            f"the coordinator sent a malformed answer: {exc.message}", field=exc.field
        ) from None


class Client:
    """Query the federation through the coordinator; only this process can read the answers.

    >>> client = Client("coordinator:50051", tls=TlsFiles(ca=..., cert=..., key=...),
    ...                 token=token, keys=Path("~/.osmanthus/agency.key"))
    >>> card = client.person_score("11010519491231002X", purpose="loan_underwriting",
    ...                            consent_id="cns_...")
    """

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        tls: TlsFiles,
        token: str,
        keys: RequesterKeys | Path,
        server_name: str = COORDINATOR_SERVER_NAME,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        catalogue: Catalogue | None = None,
    ) -> None:
        self._keys = keys if isinstance(keys, RequesterKeys) else load_or_create_keys(keys)
        claims = self._check_token_binding(token, self._keys.fingerprint)
        # a single-use token is spent by its one query, so it cannot also register the key
        self._auto_register = not claims.get("single_use", False)
        self._token = token
        self._timeout_s = timeout_s
        self._catalogue = catalogue or load_catalogue()
        # the platform CA: a subject file's parts must be signed by certificates it issued
        self._ca_path = tls.ca
        # several addresses: the coordinator's replicas, balanced and failed over by gRPC
        channel_target, balancing = coordinator_target(target)
        self._channel = secure_channel(
            channel_target,
            tls,
            server_name=server_name,
            # a subject's file is one sealed part per department: more than gRPC's default 4 MiB
            options=[
                ("grpc.max_receive_message_length", max_response_bytes(self._catalogue)),
                *balancing,
            ],
        )
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self._registered = False
        self._lock = threading.Lock()
        self._zero_checker: ParallelDecryptor | None = None

    @staticmethod
    def _check_token_binding(token: str, fingerprint: KeyFingerprint) -> dict[str, Any]:
        # fail early and locally: the coordinator would refuse the mismatch anyway
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise ConfigError(f"the token is not a JWT: {exc}", field="token") from exc
        if claims.get("key_fp") != fingerprint:
            raise ConfigError(
                f"the token is bound to key {str(claims.get('key_fp'))[:16]}…, but this client's "
                f"key is {fingerprint[:16]}…; ask the platform for a token for this key",
                field="token",
            )
        return claims

    # --- plumbing ------------------------------------------------------------------------------

    def _call(self, method: Callable[..., T], request: Any) -> T:
        try:
            return method(
                request,
                timeout=self._timeout_s,
                metadata=bearer_metadata(self._token),
            )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def call_coordinator(self, method: str, request: Any) -> Any:
        """CoordinatorService `method` with this client's token, deadline and error mapping
        (for the SDK's modules that add calls, e.g. sdk.cases.file_case)."""
        return self._call(getattr(self._stub, method), request)

    def _query(self, request: wire.QueryRequest) -> wire.QueryOutcome:
        if request.subject_kind is SubjectKind.PERSON:
            message = self._call(self._stub.PersonQuery, wire.person_query_to_proto(request))
        else:
            message = self._call(
                self._stub.EnterpriseQuery, wire.enterprise_query_to_proto(request)
            )
        return _from_coordinator(wire.query_outcome_from_proto, message)

    def close(self) -> None:
        with self._lock:
            checker, self._zero_checker = self._zero_checker, None
        if checker is not None:
            checker.close()
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def key_fingerprint(self) -> KeyFingerprint:
        return self._keys.fingerprint

    def register_key(self) -> KeyFingerprint:
        """Register this client's public key with the coordinator (idempotent; automatic)."""
        request = wire.register_key_to_proto(
            self._keys.public.to_bytes(), modulus_proof=self._keys.modulus_proof
        )
        response = self._call(self._stub.RegisterKey, request)
        with self._lock:
            self._registered = True
        return KeyFingerprint(response.key_fingerprint)

    def _ensure_registered(self) -> None:
        with self._lock:
            done = self._registered or not self._auto_register
        if not done:
            self.register_key()

    # --- queries -------------------------------------------------------------------------------

    def person_score(
        self,
        resident_id: str,
        *,
        purpose: str,
        consent_id: str | None = None,
        shape: Shape = Shape.BREAKDOWN,
    ) -> PersonScore:
        subject = validate_resident_id(resident_id, field="resident_id")
        self._ensure_registered()
        response = self._query(
            QueryRequest(
                subject_kind=SubjectKind.PERSON,
                subject_id=subject,
                shape=shape,
                purpose=purpose,
                consent_id=consent_id or "",
                public_key=self._keys.public.to_bytes(),
            )
        )
        model = self._catalogue.model(SubjectKind.PERSON)
        fields = self._decode(response, model, shape, subject)
        return PersonScore(**fields)

    def enterprise_score(
        self, credit_code: str, *, purpose: str, shape: Shape = Shape.BREAKDOWN
    ) -> EnterpriseScore:
        subject = validate_uscc(credit_code, field="credit_code")
        self._ensure_registered()
        response = self._query(
            QueryRequest(
                subject_kind=SubjectKind.ENTERPRISE,
                subject_id=subject,
                shape=shape,
                purpose=purpose,
                public_key=self._keys.public.to_bytes(),
            )
        )
        model = self._catalogue.model(SubjectKind.ENTERPRISE)
        fields = self._decode(response, model, shape, subject)
        return EnterpriseScore(**fields, grade=grade(model, fields["score"]))

    def _decode(
        self,
        response: wire.QueryOutcome,
        model: SubjectModel,
        shape: Shape,
        subject: str,
    ) -> dict[str, Any]:
        answered, missing = response.answered, response.missing
        if not answered:
            raise CryptoError("the coordinator returned a sum of no departments", field="answered")
        if response.shape is not shape:
            raise CryptoError("the coordinator answered a different shape", field="shape")
        public = self._keys.public
        ciphertext: Ciphertext = public.ciphertext_from_bytes(response.ciphertext)
        common: dict[str, Any] = {
            "subject_id": subject,
            "base": response.base,
            "shape": shape,
            "answered": answered,
            "missing": missing,
            "query_id": response.query_id,
        }
        if response.base != model.base:
            raise CryptoError(
                f"the coordinator reports base {response.base}, the catalogue says {model.base}",
                field="base",
            )
        if shape is Shape.TOTAL:
            total = self._keys.private.decrypt_signed(ciphertext)
            clamped = min(max(total, model.floor), model.ceiling)
            return {**common, "score": clamped, "deductions": None, "bonuses": {}}
        layout = SlotLayout.for_catalogue(self._catalogue, model.kind, shape)
        try:
            layout.check_wire(response.slots, response.slot_widths)
        except InvalidArgument as exc:
            raise CryptoError(f"the coordinator's {exc}", field=exc.field) from None
        (values,) = layout.unpack(
            self._keys.private.decrypt(ciphertext), subjects=1, contributors=len(answered)
        )
        present = {s.department for s in answered}
        bonuses: dict[str, int | None] = {}
        for category, value in zip(model.categories, values[1:], strict=True):
            if category.owner not in present:
                if value:
                    raise CryptoError(
                        f"category {category.name} is non-zero but its owner did not answer",
                        field="ciphertext",
                    )
                bonuses[category.name] = None
            elif value > category.cap:
                raise CryptoError(
                    f"category {category.name} sums to {value}, above its cap {category.cap}",
                    field="ciphertext",
                )
            else:
                bonuses[category.name] = value
        breakdown = Breakdown(deductions=values[0], bonuses=bonuses)
        return {
            **common,
            "score": score(model, breakdown),
            "deductions": values[0],
            "bonuses": bonuses,
        }

    def subjects_per_ciphertext(self, kind: SubjectKind, shape: Shape) -> int:
        """How many subjects one batch ciphertext carries under this client's key."""
        return SlotLayout.for_catalogue(self._catalogue, kind, shape).capacity(
            self._keys.public.bits
        )

    def batch_scores(
        self,
        subject_ids: Iterable[str],
        *,
        purpose: str,
        kind: SubjectKind = SubjectKind.PERSON,
        shape: Shape = Shape.TOTAL,
        chunk_size: int | None = None,
        decrypt_workers: int | None = None,
    ) -> Iterator[BatchScore]:
        """Score many subjects in one stream; yields one BatchScore per input id, in input order.


        Ids are read lazily and sent in chunks, so the input may be larger than memory. A subject
        that cannot be scored (an invalid id, a pinned department set) comes back with `refused`
        saying why; a failure of the batch as a whole (a department down) raises after the rows
        already yielded, which stand: resume with the ids not yet yielded.
        """
        self._ensure_registered()
        model = self._catalogue.model(kind)
        layout = SlotLayout.for_catalogue(self._catalogue, kind, shape)
        per = layout.capacity(self._keys.public.bits)
        size = chunk_size or per * DEFAULT_CIPHERTEXTS_PER_CHUNK
        if not 0 < size <= MAX_CHUNK_SUBJECTS:
            raise ConfigError(
                f"chunk_size must be 1..{MAX_CHUNK_SUBJECTS}, got {size}", field="chunk_size"
            )
        outbox = Outbox()
        requests = batch_requests(
            subject_ids,
            header=wire.batch_header_to_proto(
                wire.BatchHeader(
                    subject_kind=kind,
                    shape=shape,
                    purpose=purpose,
                    public_key=self._keys.public.to_bytes(),
                )
            ),
            chunk_size=size,
            outbox=outbox,
        )
        try:
            responses = self._stub.BatchQuery(requests, metadata=bearer_metadata(self._token))
            with BatchDecoder(
                keys=self._keys, layout=layout, model=model, outbox=outbox, workers=decrypt_workers
            ) as decoder:
                yield from decoder.rows(
                    _from_coordinator(wire.batch_answer_from_proto, m) for m in responses
                )
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        if outbox.error is not None:
            # the ids could not all be read: every row before the failure has been yielded
            raise outbox.error

    def person_meets_threshold(
        self,
        resident_id: str,
        *,
        threshold: int,
        purpose: str,
        consent_id: str | None = None,
    ) -> ThresholdResult:
        """Whether a person's score is at least `threshold`: one bit, not the score."""
        subject = validate_resident_id(resident_id, field="resident_id")
        self._ensure_registered()
        response = self._query(
            QueryRequest(
                subject_kind=SubjectKind.PERSON,
                subject_id=subject,
                shape=Shape.THRESHOLD,
                purpose=purpose,
                consent_id=consent_id or "",
                public_key=self._keys.public.to_bytes(),
                threshold=threshold,
            )
        )
        return self._threshold(response, SubjectKind.PERSON, subject, threshold)

    def enterprise_meets_threshold(
        self,
        credit_code: str,
        *,
        threshold: int,
        purpose: str,
        consent_id: str | None = None,
        departments: Sequence[str] = (),
    ) -> ThresholdResult:
        """Whether an enterprise's score is at least `threshold` (e.g. grade A at 110).

        With `departments`, only their parts are summed (base included): a purpose the policy
        grants that way, under the enterprise's `consent_id` where it needs one.
        """
        subject = validate_uscc(credit_code, field="credit_code")
        self._ensure_registered()
        response = self._query(
            QueryRequest(
                subject_kind=SubjectKind.ENTERPRISE,
                subject_id=subject,
                shape=Shape.THRESHOLD,
                purpose=purpose,
                public_key=self._keys.public.to_bytes(),
                threshold=threshold,
                consent_id=consent_id or "",
                departments=tuple(departments),
            )
        )
        result = self._threshold(response, SubjectKind.ENTERPRISE, subject, threshold)
        answered = {s.department for s in result.answered}
        if departments and not answered <= set(departments):
            raise CryptoError(
                f"departments {sorted(answered)} answered; {sorted(departments)} were asked",
                field="answered",
            )
        return result

    def tax_bank_loan_check(
        self, credit_code: str, *, consent_id: str, purpose: str = TAX_BANK_LOAN_PURPOSE
    ) -> TaxLoanCheck:
        """A tax-bank loan (税银贷) check of a small business, under its recorded consent.

        Two questions, one bit each: is the taxation bureau's part of the record at least that
        of a clean A-level taxpayer (base + the bureau's bonus caps), and are bank loans
        restricted? The answer is decision-ready: pre-approve, refer or decline (LoanDecision).
        """
        model = self._catalogue.model(SubjectKind.ENTERPRISE)
        threshold = model.base + sum(c.cap for c in model.categories_owned_by(TAX_DEPARTMENT))
        compliance = self.enterprise_meets_threshold(
            credit_code,
            threshold=threshold,
            purpose=purpose,
            consent_id=consent_id,
            departments=(TAX_DEPARTMENT,),
        )
        restrictions = self.check_restrictions(
            credit_code,
            measures=(BANK_LOAN_MEASURE,),
            purpose=purpose,
            consent_id=consent_id,
            kind=SubjectKind.ENTERPRISE,
        )
        restricted = restrictions.restricted[BANK_LOAN_MEASURE]
        if restricted:
            decision = LoanDecision.DECLINE
            reason = "bank loans are restricted under joint punishment"
        elif not compliance.meets:
            decision = LoanDecision.REFER
            reason = (
                "the tax record is not that of an A-level taxpayer without arrears or "
                "violations; an underwriter decides"
            )
        else:
            decision = LoanDecision.PRE_APPROVE
            reason = "an A-level taxpayer without arrears or violations, not restricted"
        return TaxLoanCheck(
            subject_id=compliance.subject_id,
            consent_id=consent_id,
            tax_compliant=compliance.meets,
            restricted=restricted,
            decision=decision,
            reason=reason,
            threshold=threshold,
            query_ids=(compliance.query_id, restrictions.query_id),
        )

    def _threshold(
        self, response: wire.QueryOutcome, kind: SubjectKind, subject: str, threshold: int
    ) -> ThresholdResult:
        model = self._catalogue.model(kind)
        if response.shape is not Shape.THRESHOLD or response.threshold != threshold:
            raise CryptoError("the coordinator answered another question", field="threshold")
        if not response.answered:
            raise CryptoError("the coordinator returned a sum of no departments", field="answered")
        expected = model.ceiling - threshold + 1
        if len(response.candidates) != expected:
            raise CryptoError(
                f"{len(response.candidates)} zero tests for scores {threshold}..{model.ceiling}; "
                f"{expected} expected",
                field="candidates",
            )
        public = self._keys.public
        candidates = [
            public.ciphertext_from_bytes(c, field="candidates") for c in response.candidates
        ]
        with self._lock:
            if self._zero_checker is None:
                # on every core, with the key sent to its workers once for this client's life
                self._zero_checker = ParallelDecryptor(self._keys.private)
            checker = self._zero_checker
        zeros = sum(checker.zero_flags(candidates))
        if zeros > 1:
            # a score has one value: two zeros mean the candidates were not made honestly
            raise CryptoError(
                f"{zeros} zero tests came out zero; at most one can", field="candidates"
            )
        return ThresholdResult(
            subject_id=subject,
            threshold=threshold,
            meets=zeros == 1,
            answered=response.answered,
            missing=response.missing,
            query_id=response.query_id,
        )

    # --- joint punishment ------------------------------------------------------------------------

    def check_restrictions(
        self,
        subject_id: str,
        *,
        measures: Sequence[str],
        purpose: str,
        consent_id: str | None = None,
        kind: SubjectKind | None = None,
    ) -> RestrictionResult:
        """Which joint-punishment measures apply to a person or an enterprise: one bit each.

        `kind` is inferred from the identifier when only one kind fits it. A person needs a
        consent (or a statutory purpose) as for a score.
        """
        kind = kind or _kind_of(subject_id)
        asked = validate_measures(self._catalogue, tuple(measures))
        self._ensure_registered()
        if kind is SubjectKind.PERSON:
            subject = validate_resident_id(subject_id, field="subject_id")
            response = self._query(
                QueryRequest(
                    subject_kind=SubjectKind.PERSON,
                    subject_id=subject,
                    shape=Shape.FLAGS,
                    purpose=purpose,
                    consent_id=consent_id or "",
                    public_key=self._keys.public.to_bytes(),
                    measures=asked,
                )
            )
        else:
            subject = validate_uscc(subject_id, field="subject_id")
            response = self._query(
                QueryRequest(
                    subject_kind=SubjectKind.ENTERPRISE,
                    subject_id=subject,
                    shape=Shape.FLAGS,
                    purpose=purpose,
                    public_key=self._keys.public.to_bytes(),
                    measures=asked,
                    consent_id=consent_id or "",
                )
            )
        if response.shape is not Shape.FLAGS or response.measures != asked:
            raise CryptoError("the coordinator answered another question", field="measures")
        if len(response.flags) != len(asked):
            raise CryptoError(
                f"{len(response.flags)} answers for {len(asked)} measures", field="flags"
            )
        expected = set(self._catalogue.flag_departments(kind, asked))
        answered = {s.department for s in response.answered}
        if answered != expected:
            # a coordinator on another catalogue would leave a department out, and its flags
            # would read as "not restricted"
            raise CryptoError(
                f"departments {sorted(answered)} answered; this catalogue's departments that can "
                f"set a trigger are {sorted(expected)}",
                field="answered",
            )
        public = self._keys.public
        blinded = [public.ciphertext_from_bytes(c, field="flags") for c in response.flags]
        with self._lock:
            if self._zero_checker is None:
                self._zero_checker = ParallelDecryptor(self._keys.private)
            checker = self._zero_checker
        zero = checker.zero_flags(blinded)
        return RestrictionResult(
            subject_id=subject,
            restricted={m: not z for m, z in zip(asked, zero, strict=True)},
            answered=response.answered,
            query_id=response.query_id,
        )

    # --- statistics ------------------------------------------------------------------------------

    def stats(
        self,
        subject_ids: Sequence[str],
        *,
        kind: SubjectKind,
        purpose: str,
        epsilon: str | Decimal,
        statistics: Sequence[str] = (),
    ) -> StatsResult:
        """Noisy sums over a cohort of distinct subjects, spending `epsilon` of the budget.

        `statistics` names BREAKDOWN slots ("deductions", a bonus category); empty asks for all
        of them. Each one asked splits the ε further, so ask only for what you need. The
        policy sets the smallest cohort (k, 10 by default), the most ε per query and the ε
        budget per period; a query past the budget raises BudgetExhausted.
        """
        layout = SlotLayout.for_catalogue(self._catalogue, kind, Shape.BREAKDOWN)
        asked = validate_statistics(layout, tuple(statistics))
        cohort = validate_cohort(kind, list(subject_ids))
        amount = parse_epsilon(str(epsilon))
        self._ensure_registered()
        message = self._call(
            self._stub.StatsQuery,
            wire.stats_query_to_proto(
                wire.StatsQuery(
                    subject_kind=kind,
                    subject_ids=cohort,
                    purpose=purpose,
                    epsilon=format(amount.normalize(), "f"),
                    statistics=() if asked == layout.names else asked,
                    public_key=self._keys.public.to_bytes(),
                )
            ),
        )
        response = _from_coordinator(wire.stats_outcome_from_proto, message)
        if response.statistics != asked or len(response.ciphertexts) != len(asked):
            raise CryptoError(
                f"the coordinator answered statistics {list(response.statistics)}, not "
                f"{list(asked)}",
                field="statistics",
            )
        if response.cohort != len(cohort) or not response.answered:
            raise CryptoError("the coordinator answered about another cohort", field="cohort")
        public = self._keys.public
        values = [
            self._keys.private.decrypt_signed(
                public.ciphertext_from_bytes(c, field=f"ciphertexts[{i}]")
            )
            for i, c in enumerate(response.ciphertexts)
        ]
        return StatsResult(
            subject_kind=kind,
            cohort=response.cohort,
            sums=dict(zip(asked, values, strict=True)),
            noise_scales=dict(zip(asked, response.noise_scales, strict=True)),
            epsilon=response.epsilon,
            epsilon_left=response.epsilon_left,
            base=response.base,
            answered=response.answered,
            query_id=response.query_id,
            complete=asked == layout.names,
        )

    # --- red and black lists -----------------------------------------------------------------

    def search_lists(
        self,
        *,
        kind: SubjectKind,
        subject: str | None = None,
        list_id: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> ListSearchResult:
        """The red and black list entries in public view today: published fields only.

        Name a subject (its entries on every list, all in one answer), a list (its entries one
        page at a time: pass the result's `next_page_token` back as `page_token`, or let
        `search_lists_pages` do it), or both (the subject's entries on that list, paged). A
        person's resident id comes back masked. No key, purpose or consent is needed: the
        lists are public by law, and the central policy bounds how often you may ask
        (RateLimited says when to retry). `missing` names the departments whose entries the
        answer may lack.
        """
        if not isinstance(kind, SubjectKind):
            raise InvalidArgument(
                f"{kind!r} is not SubjectKind.PERSON or SubjectKind.ENTERPRISE", field="kind"
            )
        if not subject and not list_id:
            raise InvalidArgument("name a subject, a list (list_id), or both", field="subject")
        subject_id = validate_subject(kind, subject, field="subject") if subject else ""
        if list_id:
            list_type = list_of(self._catalogue, list_id, department=None, field="list_id")
            if kind not in list_type.subject_kinds:
                kinds = " and ".join(sorted(k.value for k in list_type.subject_kinds))
                raise InvalidArgument(
                    f"{list_type.id} lists {kinds}s, not {kind.value}s", field="list_id"
                )
        size = lists_page_size(page_size or 0, field="page_size")
        if page_token and not list_id:
            raise InvalidArgument(
                "a page token continues a list's pages: pass it with the list_id it came from",
                field="page_token",
            )
        message = self._call(
            self._stub.SearchLists,
            wire.list_search_to_proto(
                wire.ListSearch(
                    subject_kind=kind,
                    subject_id=subject_id,
                    list_id=list_id or "",
                    page_size=size if list_id else 0,
                    page_token=page_token or "",
                )
            ),
        )
        answer = _from_coordinator(wire.list_search_outcome_from_proto, message)
        for i, entry in enumerate(answer.entries):
            # the coordinator checks what the nodes send; this checks the coordinator
            if (
                entry.subject_kind is not kind
                or (list_id and entry.list != list_id)
                or (subject_id and entry.subject_id != public_subject(kind, subject_id))
                or (
                    kind is SubjectKind.PERSON
                    and entry.subject_id != mask_subject(entry.subject_id)
                )
            ):
                raise CryptoError(
                    "the coordinator answered another question (an entry of another kind, list "
                    "or subject, or an unmasked resident id)",
                    field=f"entries[{i}]",
                )
        if list_id and len(answer.entries) > size:
            raise CryptoError(
                f"{len(answer.entries)} entries for a page of {size}", field="entries"
            )
        if answer.next_page_token and not list_id:
            raise CryptoError("a page token for a subject's entries", field="next_page_token")
        return ListSearchResult(
            subject_kind=kind,
            subject_id=subject_id or None,
            list_id=list_id or None,
            entries=answer.entries,
            missing=answer.missing,
            next_page_token=answer.next_page_token,
        )

    def search_lists_pages(
        self,
        *,
        kind: SubjectKind,
        list_id: str,
        subject: str | None = None,
        page_size: int | None = None,
        page_token: str | None = None,
    ) -> Iterator[ListSearchResult]:
        """Every page of a list (or of one subject's entries on it), first to last.

        Pages are fetched as you iterate. Start from `page_token` to resume where an earlier
        iteration stopped (each page's `next_page_token` is the place after it), e.g. after
        RateLimited. All entries: `[e for page in client.search_lists_pages(...) for e in
        page.entries]`.
        """
        token = page_token or ""
        while True:
            page = self.search_lists(
                kind=kind,
                subject=subject,
                list_id=list_id,
                page_size=page_size,
                page_token=token or None,
            )
            yield page
            if not page.next_page_token:
                return
            if not page.entries or page.next_page_token == token:
                # a page that moves nowhere would be asked for again and again
                raise CryptoError(
                    "the coordinator sent a next page token without moving on",
                    field="next_page_token",
                )
            token = page.next_page_token

    def list_changes(
        self, department: str, *, after: str = "", page_size: int = DEFAULT_CHANGES_PAGE_SIZE
    ) -> ListChangesPage:
        """One department's list change feed after `after`: every entry it published or
        withdrew, oldest first, at most `page_size` (1 to 1000) events (fewer, with `more`
        set, when long texts would make the page too large for one message).

        For the provincial sync job (the central policy grants ReadListChanges to role
        sync_job only). Entries come with their published fields only, a person's resident id
        masked; a withdrawal with its reason. An entry published and later withdrawn comes
        twice. An event whose entry fails a check on content today (a text reading as a
        resident id, a window longer than the list now allows, ...) comes withheld: `entry`
        None, `withheld` naming the check, `entry_id` the entry's id if that passes its own
        checks (else ""), and a withdrawal still with its reason, so that it closes the entry
        it names. `entry_id` of an event with its entry is `entry.entry_id`. Start with
        `after=""`; keep `next_cursor` and pass it back as `after` for the events that follow
        (`more` says whether some already wait), with the page's `feed_id`: a cursor means
        something in its feed only, and a department whose list store was made anew has
        another. Unavailable (retryable) names the department when its node is down or its
        answer failed the coordinator's checks of the page's frame; nothing of such a page is
        given, so no event is skipped.
        """
        dept = self._lists_department(department)
        parse_change_cursor(after, field="after")
        size = changes_page_size(page_size, field="page_size")
        message = self._call(
            self._stub.ListChanges,
            wire.changes_request_to_proto(
                wire.ChangesRequest(department=dept, after=after, page_size=size)
            ),
        )
        page = _from_coordinator(list_changes_page_from_proto, message)
        check_changes_page(page, department=dept, after=after, size=size)
        return page

    def list_changes_all(
        self, department: str, *, after: str = "", page_size: int = DEFAULT_CHANGES_PAGE_SIZE
    ) -> Iterator[ListChangeEvent]:
        """Every event of one department's feed after `after`, page by page as you iterate,
        up to the last one stored now. Each event's `cursor` is where to resume from (e.g.
        after RateLimited or Unavailable): save the last one you have handled."""
        cursor = after
        while True:
            page = self.list_changes(department, after=cursor, page_size=page_size)
            yield from page.events
            if not page.more:
                return
            cursor = page.next_cursor

    def _lists_department(self, department: str) -> DepartmentId:
        """A department that publishes lists, by this client's catalogue."""
        publishing = sorted({t.department for t in self._catalogue.lists})
        if not isinstance(department, str) or department not in publishing:
            raise InvalidArgument(
                f"{shown_value(department)} publishes no red or black list; departments that "
                f"do: {', '.join(publishing)}",
                field="department",
            )
        return DepartmentId(department)

    # --- consent (platform services acting for data subjects) ----------------------------------

    def grant_consent(
        self,
        *,
        subject_id: str,
        grantee: str,
        purpose: str,
        expires_at: datetime,
        kind: SubjectKind | None = None,
    ) -> ConsentRecord:
        """Record a consent (platform services, on the subject's instruction): a person's, or
        an enterprise's given through its legal representative. `kind` is inferred from the
        identifier when only one kind fits it."""
        kind = kind or _kind_of(subject_id)
        subject = validate_subject(kind, subject_id, field="subject_id")
        message = self._call(
            self._stub.GrantConsent,
            wire.consent_grant_to_proto(
                wire.ConsentGrant(
                    subject_id=subject,
                    subject_kind=kind,
                    grantee=grantee,
                    purpose=purpose,
                    expires_at=expires_at,
                )
            ),
        )
        return _from_coordinator(wire.consent_from_proto, message)

    def revoke_consent(self, consent_id: str, *, subject_id: str = "") -> ConsentRecord:
        """Revoke a consent; with `subject_id` only if it is that subject's (how a subjects'
        portal revokes for the subject signed in: it must name them)."""
        message = self._call(
            self._stub.RevokeConsent,
            wire.revoke_consent_to_proto(consent_id, subject_id=subject_id),
        )
        return _from_coordinator(wire.consent_from_proto, message)

    def list_consents(self, *, subject_id: str = "", grantee: str = "") -> list[ConsentRecord]:
        response = self._call(
            self._stub.ListConsents,
            wire.list_consents_to_proto(subject_id=subject_id, grantee=grantee),
        )
        return _from_coordinator(wire.consents_from_proto, response)

    # --- a subject's own file (subjects' portal devices) ---------------------------------------

    def subject_file(
        self, *, subject_kind: SubjectKind, subject_id: str, sealing_key: X25519PrivateKey
    ) -> SubjectFileResult:
        """The subject's own file, every part opened with `sealing_key` (its public key's
        SHA-256 must be the token's seal_fp); see sdk/subject.py for what is checked."""
        request = file_request(
            subject_kind=subject_kind, subject_id=subject_id, sealing_key=sealing_key
        )
        message = self._call(self._stub.SubjectFile, wire.subject_file_request_to_proto(request))
        outcome = _from_coordinator(wire.subject_file_outcome_from_proto, message)
        return open_parts(
            outcome,
            request=request,
            sealing_key=sealing_key,
            catalogue=self._catalogue,
            trusted_cas=load_trusted_cas(self._ca_path),
        )
