"""A department node's decision path: authenticate, authorise, score locally, encrypt, audit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import date

from node.lists import ListStore
from node.office import ListOffice
from node.store import RecordStore
from osmanthus import __version__
from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.catalogue import Catalogue, Department
from osmanthus.core.clock import china_today
from osmanthus.core.crypto import EncryptorCache, PublicKey
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from osmanthus.core.ids import canonical_subject, validate_subject
from osmanthus.core.lists import ListChangesPage
from osmanthus.core.names import validate_purpose, validate_query_id
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import (
    Decision,
    PolicyEngine,
    PolicyRequest,
    ReloadablePolicy,
    time_facts,
)
from osmanthus.core.rules import RuleSet
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims, TokenVerifier
from osmanthus.core.types import (
    PACKED_SHAPES,
    Purpose,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.lists import ChangesQuery, PublicPage, PublicQuery
from osmanthus.core.wire.node import (
    MAX_CHUNK_SUBJECTS,
    MAX_COHORT,
    ChunkRequest,
    ChunkResult,
    ContributionRequest,
    ContributionResult,
    NodeDescription,
    StatsRequest,
    StatsResult,
    validate_cohort,
    validate_measures,
    validate_query_fields,
    validate_statistics,
)

_log = logging.getLogger(__name__)


class NodeService:
    """Everything a node does for one Contribute call, on typed values (no proto types here)."""

    def __init__(
        self,
        *,
        department: Department,
        catalogue: Catalogue,
        store: RecordStore,
        rules: RuleSet,
        policy: ReloadablePolicy,
        verifier: TokenVerifier,
        audit: AuditLog,
        encryptors: EncryptorCache,
        today: Callable[[], date] = china_today,
        lists: ListStore | None = None,
    ) -> None:
        """`lists`: the department's red and black lists (node.server always opens them); a
        node without them sets no flag from a list and serves no list office."""
        self._department = department
        self._catalogue = catalogue
        self._store = store
        self._rules = rules
        self._policy = policy
        self._verifier = verifier
        self._audit = audit
        self._encryptors = encryptors
        self._today = today
        self._flags = catalogue.flags_of(department.id)
        # a black list's entry in view sets its flag as a counting record does (ARCHITECTURE:
        # lists feed the flag catalogue), so a flag only a list sets is set by something
        listed = (
            {t.flag for t in catalogue.lists_of(department.id) if t.flag}
            if lists is not None
            else set()
        )
        defined, ruled = {f.id for f in self._flags}, rules.flag_ids() | listed
        if defined != ruled:
            # a flag no rule sets would answer "not restricted" for everyone; a flag the
            # catalogue does not define would trigger no measure
            unset, unknown = sorted(defined - ruled), sorted(ruled - defined)
            raise ConfigError(
                f"department {department.id}: the catalogue's flags and the flags its rules "
                f"{rules.version} set differ"
                + (f"; no rule sets {', '.join(unset)}" if unset else "")
                + (f"; the catalogue does not define {', '.join(unknown)}" if unknown else ""),
                field="catalogue",
            )
        self._layouts = {
            (kind, shape): SlotLayout.for_catalogue(catalogue, kind, shape)
            for kind in department.subject_kinds
            for shape in PACKED_SHAPES
        }
        # most subjects have no record at any one department: their part is computed once
        self._zero_parts = {
            (kind, shape): layout.part(
                rules.contribution(kind, (), as_of=today()), department=department.id
            )
            for (kind, shape), layout in self._layouts.items()
        }
        self._lists = lists
        self._office = (
            ListOffice(department=department, store=lists, audit=audit, today=today)
            if lists is not None
            else None
        )

    def close(self) -> None:
        self._encryptors.close()
        self._store.close()
        if self._lists is not None:
            self._lists.close()
        self._audit.close()

    def list_office(self) -> ListOffice:
        """The department's list office, sharing this node's list store, audit log and clock."""
        if self._office is None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node runs without its list store"
            )
        return self._office

    def public_entries(self, query: PublicQuery, *, caller: PeerIdentity) -> PublicPage:
        """NodeService.PublicEntries: the entries in public view today (coordinator only)."""
        return self.list_office().public_entries(query, caller=caller)

    def list_changes(self, query: ChangesQuery, *, caller: PeerIdentity) -> ListChangesPage:
        """NodeService.ListChanges: the department's list change feed (coordinator only)."""
        return self.list_office().list_changes(query, caller=caller)

    def describe(self) -> NodeDescription:
        owned = tuple(
            c.name
            for kind in sorted(self._department.subject_kinds, key=lambda k: k.value)
            for c in self._catalogue.model(kind).categories_owned_by(self._department.id)
        )
        return NodeDescription(
            department=self._department,
            rules_version=self._rules.version,
            rules_digest=self._rules.digest,
            policy_hash=self._policy.current().hash,
            owned_categories=owned,
            software_version=__version__,
        )

    def _authenticate(self, caller: PeerIdentity, token: str | None) -> TokenClaims:
        """Only the coordinator may ask, and only with a requester's valid token."""
        if caller.role is not PeerRole.COORDINATOR:
            raise PermissionDenied(
                f"only the platform coordinator may request contributions; the caller's "
                f"certificate names {caller.role.value} {caller.name!r}"
            )
        if not token:
            raise Unauthenticated("no requester token in the 'authorization' metadata")
        return self._verifier.verify(token)

    def contribute(
        self, request: ContributionRequest, *, caller: PeerIdentity, token: str | None
    ) -> ContributionResult:
        # one policy version decides the whole request and is the one the audit entry names
        engine = self._policy.current()
        subject = canonical_subject(request.subject_kind, request.subject_id)
        record = AuditedRequest(
            query_id=request.query_id,
            purpose=request.purpose,
            consent_id=request.consent_id,
            policy_hash=engine.hash,
            shape=request.shape.value if request.shape else "",
            subject_hash=self._audit.subject_hash(subject),
        )
        if request.measures:
            # FLAGS: which measures were asked, on refusals too (as names, bounded)
            record.extra["measures"] = ",".join(sorted(m[:40] for m in request.measures[:16]))
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            result = self._decide_and_encrypt(request, claims, engine)
            record.allow(
                "contribution encrypted under the requester's key",
                single_source_allowed=int(result.single_source_allowed),
            )
        return result

    def _checked_common(
        self, *, kind: SubjectKind | None, purpose_raw: str, public_key: bytes, claims: TokenClaims
    ) -> tuple[SubjectKind, Purpose, PublicKey]:
        """Checks every request makes: subject kind served, purpose in the token, key bound."""
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="subject_kind"
            )
        if not self._department.serves(kind):
            raise InvalidArgument(
                f"department {self._department.id} holds no {kind.value} records",
                field="subject_kind",
            )
        purpose = validate_purpose(purpose_raw)
        claims.require_purpose(purpose)
        key = PublicKey.from_bytes(public_key, field="public_key")
        claims.require_key(key.fingerprint)
        return kind, purpose, key

    def _decide(
        self, engine: PolicyEngine, claims: TokenClaims, action: str, context: Mapping[str, object]
    ) -> Decision:
        return engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs={"role": claims.role.value},
                action=action,
                resource_type="Department",
                resource_id=self._department.id,
                context={**context, **time_facts()},
            )
        )

    def _allow(
        self, engine: PolicyEngine, claims: TokenClaims, action: str, context: Mapping[str, object]
    ) -> bool:
        return self._decide(engine, claims, action, context).allowed

    def _decide_and_encrypt(
        self, request: ContributionRequest, claims: TokenClaims, engine: PolicyEngine
    ) -> ContributionResult:
        _, _, shape = validate_query_fields(
            query_id=request.query_id, purpose=request.purpose, shape=request.shape
        )
        kind, purpose, public_key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            claims=claims,
        )
        subject = validate_subject(kind, request.subject_id, field="subject_id")
        if shape is Shape.FLAGS:
            return self._flag_counts(request, claims, engine, kind, subject, purpose, public_key)
        # a THRESHOLD is computed by the coordinator from the TOTAL parts
        layout = self._layouts[kind, Shape.BREAKDOWN if shape is Shape.BREAKDOWN else Shape.TOTAL]
        if shape is Shape.BREAKDOWN:
            layout.check_wire(request.slots, request.slot_widths)
        context = {"purpose": purpose, "shape": shape.value, "subject_kind": kind.value}
        decision = self._decide(engine, claims, "Contribute", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        single = self._allow(engine, claims, "DiscloseSingleSource", context)
        records = self._store.records_for(kind, subject)
        contribution = self._rules.contribution(kind, records, as_of=self._today())
        with self._encoding_guard():
            if shape is Shape.BREAKDOWN:
                part = layout.part(contribution, department=self._department.id)
                ciphertext = self._encryptors.encrypt(public_key, layout.pack([part]))
            else:
                value = layout.signed_total(contribution, department=self._department.id)
                ciphertext = self._encryptors.encrypt_signed(public_key, value)
        return ContributionResult(
            department=self._department.id,
            ciphertext=ciphertext.to_bytes(),
            single_source_allowed=single,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
        )

    def _flag_counts(
        self,
        request: ContributionRequest,
        claims: TokenClaims,
        engine: PolicyEngine,
        kind: SubjectKind,
        subject: SubjectId,
        purpose: Purpose,
        public_key: PublicKey,
    ) -> ContributionResult:
        """FLAGS: per measure asked, how many of this department's flags that trigger it are set."""
        measures = validate_measures(self._catalogue, request.measures)
        context = {
            "purpose": purpose,
            "shape": Shape.FLAGS.value,
            "subject_kind": kind.value,
            "measures": tuple(sorted(measures)),
        }
        decision = self._decide(engine, claims, "Contribute", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        records = self._store.records_for(kind, subject)
        today = self._today()
        raised = self._rules.flags_set(kind, records, as_of=today)
        if self._lists is not None:
            raised = raised | self._lists.flags_in_view(kind, subject, today)
        set_flags = [f for f in self._flags if f.id in raised]
        counts = [sum(1 for f in set_flags if measure in f.measures) for measure in measures]
        return ContributionResult(
            department=self._department.id,
            ciphertext=b"",
            single_source_allowed=False,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
            flag_counts=tuple(
                self._encryptors.encrypt(public_key, count).to_bytes() for count in counts
            ),
        )

    @contextlib.contextmanager
    def _encoding_guard(self) -> Iterator[None]:
        try:
            yield
        except InvalidArgument as exc:
            # the message quotes the contribution itself: it goes to this node's log only
            # (ConfigError is redacted on the wire), never to the coordinator or requester
            raise ConfigError(
                f"department {self._department.id}: a contribution does not fit the encoding "
                f"({exc}); the rules and the catalogue disagree"
            ) from exc

    # --- batches -------------------------------------------------------------------------------

    def contribute_chunk(
        self, request: ChunkRequest, *, caller: PeerIdentity, token: str | None
    ) -> ChunkResult:
        """One chunk of a batch: authorise once, score every subject, pack, encrypt, audit once."""
        engine = self._policy.current()
        record = AuditedRequest(
            query_id=request.query_id,
            purpose=request.purpose,
            policy_hash=engine.hash,
            shape=request.shape.value if request.shape else "",
            extra={"chunk": request.chunk, "subjects": len(request.subject_ids)},
            on_refusal=lambda r: self._name_refused_chunk(r, request),
        )
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            result, subjects = self._chunk(request, claims, engine)
            record.subject_hashes = tuple(self._audit.subject_hashes(subjects))
            record.allow(
                f"batch chunk {request.chunk}: {len(subjects)} contributions encrypted under "
                "the requester's key"
            )
        return result

    def _name_refused_chunk(self, record: AuditedRequest, request: ChunkRequest) -> None:
        # a refused chunk names its subjects as far as they are identifiers at all
        named = [
            canonical_subject(request.subject_kind, s)
            for s in request.subject_ids[:MAX_CHUNK_SUBJECTS]
        ]
        record.subject_hashes = tuple(self._audit.subject_hashes(named))

    def _chunk(
        self, request: ChunkRequest, claims: TokenClaims, engine: PolicyEngine
    ) -> tuple[ChunkResult, tuple[SubjectId, ...]]:
        _, _, shape = validate_query_fields(
            query_id=request.query_id, purpose=request.purpose, shape=request.shape
        )
        kind, purpose, key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            claims=claims,
        )
        count = len(request.subject_ids)
        if not 0 < count <= MAX_CHUNK_SUBJECTS:
            raise InvalidArgument(
                f"a chunk carries 1..{MAX_CHUNK_SUBJECTS} subjects, this one {count}",
                field="subject_ids",
            )
        subjects = tuple(
            validate_subject(kind, s, field=f"subject_ids[{i}]")
            for i, s in enumerate(request.subject_ids)
        )
        if shape not in PACKED_SHAPES:
            raise InvalidArgument(
                f"a batch carries breakdowns or totals, not {shape.value}", field="shape"
            )
        layout = self._layouts[kind, shape]
        layout.check_wire(request.slots, request.slot_widths)
        per = layout.capacity(key.bits)
        if request.subjects_per_ciphertext != per:
            raise InvalidArgument(
                f"{request.subjects_per_ciphertext} subjects per ciphertext asked; this layout "
                f"packs {per} under a {key.bits}-bit key",
                field="subjects_per_ciphertext",
            )
        context: dict[str, object] = {
            "purpose": purpose,
            "shape": shape.value,
            "subject_kind": kind.value,
            "subjects": count,
        }
        if not self._allow(engine, claims, "ContributeBatch", context):
            raise PermissionDenied(
                f"department {self._department.id} policy does not contribute to batches for "
                f"purpose {purpose!r} ({shape.value}, {kind.value}s)"
            )
        records = self._store.records_for_many(kind, subjects)
        as_of = self._today()
        zero = self._zero_parts[kind, shape]
        rows: list[tuple[int, ...]] = []
        with self._encoding_guard():
            for subject in subjects:
                found = records.get(subject)
                if not found:
                    rows.append(zero)
                    continue
                contribution = self._rules.contribution(kind, found, as_of=as_of)
                rows.append(layout.part(contribution, department=self._department.id))
            plaintexts = [layout.pack(rows[i : i + per]) for i in range(0, count, per)]
        ciphertexts = tuple(self._encryptors.encrypt(key, m).to_bytes() for m in plaintexts)
        result = ChunkResult(
            department=self._department.id,
            chunk=request.chunk,
            ciphertexts=ciphertexts,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
        )
        return result, subjects

    # --- STATS -----------------------------------------------------------------------------------

    def contribute_stats(
        self, request: StatsRequest, *, caller: PeerIdentity, token: str | None
    ) -> StatsResult:
        """Cohort sums: authorise once, score every subject, encrypt one sum per statistic."""
        engine = self._policy.current()
        record = AuditedRequest(
            query_id=request.query_id,
            purpose=request.purpose,
            policy_hash=engine.hash,
            shape=Shape.STATS.value,
            extra={"cohort": len(request.subject_ids)},
            on_refusal=lambda r: self._name_refused_cohort(r, request),
        )
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            result, cohort = self._stats(request, claims, engine)
            # a statistic discloses nothing attributable to one member (the noise sees to
            # that), so the entry names the cohort as a whole: its size and one salted hash
            record.subject_hash = self._audit.cohort_hash(cohort)
            record.allow(
                f"cohort sums of {len(result.ciphertexts)} statistics encrypted under the "
                "requester's key"
            )
        return result

    def _name_refused_cohort(self, record: AuditedRequest, request: StatsRequest) -> None:
        # a refused request's ids as far as they are ids at all (the validated cohort costs a
        # second canonicalisation of every id, as much as the database lookup, so it is only
        # made here, for refusals)
        named = [
            canonical_subject(request.subject_kind, s) for s in request.subject_ids[:MAX_COHORT]
        ]
        record.subject_hash = self._audit.cohort_hash(named)

    def _stats(
        self, request: StatsRequest, claims: TokenClaims, engine: PolicyEngine
    ) -> tuple[StatsResult, tuple[SubjectId, ...]]:
        validate_query_id(request.query_id)
        kind, purpose, key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            claims=claims,
        )
        layout = self._layouts[kind, Shape.BREAKDOWN]
        layout.check_wire(request.slots, request.slot_widths)
        bounds = tuple(slot.sum_bound for slot in layout.slots)
        if tuple(request.slot_bounds) != bounds:
            # the noise is calibrated to these bounds: a node whose parts could be larger
            # would make each answer less private than the ε charged for it
            raise InvalidArgument(
                f"the coordinator calibrates the noise to per-subject bounds "
                f"{list(request.slot_bounds)}; this department's catalogue has {list(bounds)} "
                "(the catalogues' caps, saturation or department counts differ)",
                field="slot_bounds",
            )
        statistics = validate_statistics(layout, request.statistics)
        cohort = validate_cohort(kind, request.subject_ids)
        context: dict[str, object] = {
            "purpose": purpose,
            "shape": Shape.STATS.value,
            "subject_kind": kind.value,
            "cohort": len(cohort),
        }
        decision = self._decide(engine, claims, "Contribute", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        positions = [layout.names.index(name) for name in statistics]
        sums = [0] * len(positions)
        as_of = self._today()
        zero = self._zero_parts[kind, Shape.BREAKDOWN]
        # one lookup per MAX_CHUNK_SUBJECTS bounds the records held in memory at once
        with self._encoding_guard():
            for start in range(0, len(cohort), MAX_CHUNK_SUBJECTS):
                part_of = cohort[start : start + MAX_CHUNK_SUBJECTS]
                records = self._store.records_for_many(kind, part_of)
                for subject in part_of:
                    found = records.get(subject)
                    part = (
                        layout.part(
                            self._rules.contribution(kind, found, as_of=as_of),
                            department=self._department.id,
                        )
                        if found
                        else zero
                    )
                    for i, position in enumerate(positions):
                        sums[i] += part[position]
        ciphertexts = tuple(self._encryptors.encrypt(key, value).to_bytes() for value in sums)
        result = StatsResult(
            department=self._department.id,
            ciphertexts=ciphertexts,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
        )
        return result, cohort
