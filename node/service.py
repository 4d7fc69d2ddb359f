"""A department node's decision path: authenticate, authorise, score locally, encrypt, audit."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from node.casefiling import CaseFiling, TargetFinder
from node.casekeys import case_key_text
from node.caseoffice import CaseOffice
from node.caseoverlay import EMPTY_OVERLAY, RecordOverlay
from node.cases import CaseStore
from node.consent import ConsentCheck, NoConsentCheck
from node.ingest import IngestOffice
from node.lists import ListStore
from node.office import ListOffice
from node.store import RecordStore, record_problems
from node.subject import build as build_subject_file
from osmanthus import __version__
from osmanthus.core.audit import AuditLog
from osmanthus.core.audited import AuditedRequest, audited
from osmanthus.core.auditproofs import CheckpointSource, proven_audit
from osmanthus.core.cases import CaseReceipt
from osmanthus.core.catalogue import Catalogue, Department
from osmanthus.core.clock import china_today
from osmanthus.core.consent_feed import RevocationsBehind
from osmanthus.core.crypto import EncryptorCache, PublicKey, fingerprint_of_bytes
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    ConfigError,
    FailedPrecondition,
    InvalidArgument,
    KeyProofRequired,
    PermissionDenied,
    Unauthenticated,
)
from osmanthus.core.ids import canonical_subject, validate_subject
from osmanthus.core.keyproof import ProvenKeys
from osmanthus.core.lists import ListChangesPage
from osmanthus.core.logserver import LocalLog
from osmanthus.core.names import validate_purpose, validate_query_id
from osmanthus.core.peers import PeerRole
from osmanthus.core.policy import (
    Decision,
    PolicyEngine,
    PolicyRequest,
    ReloadablePolicy,
    time_facts,
)
from osmanthus.core.rules import Record, RuleSet
from osmanthus.core.status import (
    FILE_TIME,
    LIVE_INGEST,
    OFFLINE_INGEST,
    audit_standing,
    catalogue_digest,
    modified_at,
)
from osmanthus.core.subjectfile import AUDIT_SHAPE as SUBJECT_FILE_SHAPE
from osmanthus.core.subjectpart import PartSigner, seal_part
from osmanthus.core.subjectseal import check_nonce, seal_fingerprint
from osmanthus.core.tls import PeerIdentity
from osmanthus.core.tokens import TokenClaims, TokenVerifier
from osmanthus.core.types import (
    PACKED_SHAPES,
    SELF_QUERY,
    SUBJECT_DEVICE_ROLES,
    DepartmentId,
    Purpose,
    Shape,
    SubjectId,
    SubjectKind,
)
from osmanthus.core.wire.cases import FileCaseRequest
from osmanthus.core.wire.common import RequestLimits
from osmanthus.core.wire.lists import ChangesQuery, PublicPage, PublicQuery
from osmanthus.core.wire.node import (
    MAX_CHUNK_SUBJECTS,
    MAX_COHORT,
    ChunkRequest,
    ChunkResult,
    ContributionRequest,
    ContributionResult,
    NodeDescription,
    SealedPart,
    StatsRequest,
    StatsResult,
    SubjectFileQuery,
    validate_cohort,
    validate_measures,
    validate_query_fields,
    validate_statistics,
)

_log = logging.getLogger(__name__)


#: the callers GetInfo tells the node's standing (records held, last ingest, audit log)
_STANDING_READERS = frozenset({PeerRole.OPERATOR, PeerRole.COORDINATOR})


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
        consent: ConsentCheck | None = None,
        part_signer: PartSigner | None = None,
        cases: CaseStore | None = None,
        case_seal_key: X25519PrivateKey | None = None,
        transparency: CheckpointSource | None = None,
    ) -> None:
        """`lists`: the department's red and black lists (node.server always opens them); a
        node without them sets no flag from a list and serves no list office. `consent`: how
        this node verifies the consent a request rests on (node.consent); without one, no
        request that needs a consent is answered. `part_signer`: the node certificate's key
        that signs each part of a subject's file (osmanthus.core.subjectpart); without one, no
        subject's file is served. `cases` and `case_seal_key`: the department's case store and
        X25519 case key (node.cases); without them no case is filed or decided here, and the
        records read as stored. `transparency`: the audit log as a transparency log
        (osmanthus.core.logserver.LocalLog); with it, the audit lines of a subject's file carry
        inclusion proofs to its newest witnessed checkpoint (the latest when none is witnessed;
        none is signed on request), without it they go unproven."""
        self._transparency = transparency
        self._part_signer = part_signer
        self._consent: ConsentCheck = consent if consent is not None else NoConsentCheck()
        self._department = department
        self._catalogue = catalogue
        self._store = store
        self._rules = rules
        self._policy = policy
        self._verifier = verifier
        self._audit = audit
        self._encryptors = encryptors
        # keys whose modulus proof this node verified: each proof is checked once per key
        self._proven_keys = ProvenKeys()
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
        self._limits = RequestLimits.for_catalogue(catalogue)
        self._lists = lists
        self._office = (
            ListOffice(department=department, store=lists, audit=audit, today=today)
            if lists is not None
            else None
        )
        self._cases = cases
        self._case_seal_key = case_seal_key
        self._case_filing: CaseFiling | None = None
        self._case_office: CaseOffice | None = None
        if cases is not None and case_seal_key is not None:
            targets = TargetFinder(
                department=department, records=store, cases=cases, lists=lists, rules=rules,
                today=today,
            )  # fmt: skip
            self._case_filing = CaseFiling(
                department=department, cases=cases, targets=targets, audit=audit, policy=policy,
                seal_key=case_seal_key, authenticate=self._authenticate, decide=self._decide,
            )  # fmt: skip
            served = department.subject_kinds

            def check_record(record: Record) -> list[tuple[str, str]]:
                return record_problems(record, rules=rules, served=served, today=today())

            self._case_office = CaseOffice(
                department=department, cases=cases, targets=targets, lists=lists, audit=audit,
                today=today, check_record=check_record,
            )  # fmt: skip

    @property
    def request_limits(self) -> RequestLimits:
        """The natural size of each repeated request field, which the servicer caps them at."""
        return self._limits

    def close(self) -> None:
        self._encryptors.close()
        self._store.close()
        if self._lists is not None:
            self._lists.close()
        if self._cases is not None:
            self._cases.close()
        self._audit.close()

    def list_office(self) -> ListOffice:
        """The department's list office, sharing this node's list store, audit log and clock."""
        if self._office is None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node runs without its list store"
            )
        return self._office

    def ingest_office(self, *, spool_dir: Path) -> IngestOffice:
        """The department's IngestService and inbox (node.ingest), over this node's record
        store, case store (a record a case is about is not changed by an import), rules and
        audit log; uploads are spooled in `spool_dir`."""
        return IngestOffice(
            department=self._department, catalogue=self._catalogue, store=self._store,
            rules=self._rules, audit=self._audit, spool_dir=spool_dir, cases=self._cases,
            today=self._today,
        )  # fmt: skip

    def case_office(self) -> CaseOffice:
        """The department's case office (CaseOfficeService), sharing this node's stores."""
        if self._case_office is None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node runs without its case store"
            )
        return self._case_office

    def file_case(
        self, request: FileCaseRequest, *, caller: PeerIdentity, token: str | None
    ) -> CaseReceipt:
        """NodeService.FileCase (node.casefiling): coordinator only, for the portal's token."""
        if self._case_filing is None:
            raise FailedPrecondition(
                f"department {self._department.id}: this node runs without its case store"
            )
        return self._case_filing.file_case(request, caller=caller, token=token)

    @property
    def _overlay(self) -> RecordOverlay:
        # what the department's cases do to its records (node.caseoverlay): empty, and free,
        # when no case is open and none changed a record
        return self._cases.overlay if self._cases is not None else EMPTY_OVERLAY

    def _records_for(self, kind: SubjectKind, subject: SubjectId) -> list[Record]:
        return self._overlay.records(self._store.records_for(kind, subject))

    def _records_for_many(
        self, kind: SubjectKind, subjects: Sequence[SubjectId]
    ) -> dict[SubjectId, list[Record]]:
        return self._overlay.records_many(self._store.records_for_many(kind, subjects))

    def public_entries(self, query: PublicQuery, *, caller: PeerIdentity) -> PublicPage:
        """NodeService.PublicEntries: the entries in public view today (coordinator only)."""
        return self.list_office().public_entries(query, caller=caller)

    def list_changes(self, query: ChangesQuery, *, caller: PeerIdentity) -> ListChangesPage:
        """NodeService.ListChanges: the department's list change feed (coordinator only)."""
        return self.list_office().list_changes(query, caller=caller)

    @property
    def department_id(self) -> DepartmentId:
        return self._department.id

    @property
    def audit_log(self) -> AuditLog:
        """The node's audit log (its server's health follows whether it can be written)."""
        return self._audit

    def describe(self, *, caller: PeerIdentity) -> NodeDescription:
        """What the node is, for any platform certificate; with its standing (records held,
        last ingest, audit log) for operators and the coordinator only: a requester could
        otherwise watch the department's query volume and ingest rhythm."""
        owned = tuple(
            c.name
            for kind in sorted(self._department.subject_kinds, key=lambda k: k.value)
            for c in self._catalogue.model(kind).categories_owned_by(self._department.id)
        )
        description = NodeDescription(
            department=self._department,
            rules_version=self._rules.version,
            rules_digest=self._rules.digest,
            policy_hash=self._policy.current().hash,
            owned_categories=owned,
            software_version=__version__,
            catalogue_digest=catalogue_digest(self._catalogue),
        )
        if caller.role not in _STANDING_READERS:
            return description
        at, source, actor = self._last_ingest()
        return dataclasses.replace(
            description,
            records_held=self._store.count(),
            last_ingest_at=at,
            last_ingest_source=source,
            last_ingest_actor=actor,
            audit=audit_standing(
                self._audit,
                self._transparency if isinstance(self._transparency, LocalLog) else None,
            ),
        )

    def _last_ingest(self) -> tuple[float | None, str, str]:
        """(when, "live"/"offline", who) of the newest import the store records; without one
        (a store built before import history was kept), the store file's last change."""
        report = self._store.last_import()
        if report is None or report.at is None:
            return modified_at(self._store.path), FILE_TIME, ""
        # `osmanthus node import` with the node stopped records "offline:<user>" (or the
        # store's default, "offline import"); imports into the running node name the operator
        # or "inbox:<owner>"
        offline = report.actor == "offline import" or report.actor.startswith("offline:")
        return report.at.timestamp(), OFFLINE_INGEST if offline else LIVE_INGEST, report.actor

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
            with self._asked_again_if_refused(claims):
                result = self._decide_and_encrypt(request, claims, engine, record)
            record.allow(
                "contribution encrypted under the requester's key",
                single_source_allowed=int(result.single_source_allowed),
            )
        return result

    @contextlib.contextmanager
    def _asked_again_if_refused(self, claims: TokenClaims) -> Iterator[None]:
        """The coordinator asks again, with the same token, after a refusal that says what was
        missing (a key's modulus proof after this node restarted, revocations it lacks): a
        single-use token that was refused so is still unanswered, and must pass once more."""
        try:
            yield
        except (KeyProofRequired, RevocationsBehind):
            self._verifier.release(claims)
            raise

    def _checked_common(
        self,
        *,
        kind: SubjectKind | None,
        purpose_raw: str,
        public_key: bytes,
        modulus_proof: bytes,
        claims: TokenClaims,
    ) -> tuple[SubjectKind, Purpose, PublicKey]:
        """Checks every request makes: subject kind served, purpose in the token, key bound,
        well formed (`PublicKey.from_bytes`) and proven (its modulus proof, verified once)."""
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
        # the token's key first: only then the costly tests of n
        claims.require_key(fingerprint_of_bytes(public_key, field="public_key"))
        key = PublicKey.from_bytes(public_key, field="public_key")
        # the coordinator verified the proof at RegisterKey, but a node decides for itself: a
        # coordinator that forwarded a key of p·q·r would otherwise have it encrypted under
        self._proven_keys.require(key, modulus_proof)
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

    def _require_consent(
        self,
        engine: PolicyEngine,
        claims: TokenClaims,
        request: ContributionRequest,
        *,
        kind: SubjectKind,
        subject: SubjectId,
        purpose: Purpose,
        context: Mapping[str, object],
        record: AuditedRequest,
    ) -> None:
        """A consent this node verified itself, or a purpose its own policy answers without one
        (`ContributeWithoutConsent`: a statutory purpose); raises the reason otherwise.

        The verdict goes to the audit log either way, with the consent id and key id the
        receipt claims: a forged receipt is evidence, named there.
        """
        verdict = self._consent.verdict(
            request, kind=kind, subject=subject, grantee=claims.requester, purpose=purpose
        )
        record.extra["consent"] = verdict.state
        if verdict.receipt_id:
            record.extra["receipt"] = verdict.receipt_id
        if verdict.receipt_key:
            record.extra["receipt_key"] = verdict.receipt_key
        if verdict.state in ("untrusted", "malformed", "feed_refused"):
            _log.warning(
                "department %s: query %s from %s carried a consent the registry did not sign "
                "or a revocation feed that does not verify (%s, receipt %s, key %s): %s",
                self._department.id,
                request.query_id[:64],
                claims.requester,
                verdict.state,
                verdict.receipt_id or "-",
                verdict.receipt_key or "-",
                verdict.reason,
            )
        if verdict.error is None:
            return
        if self._allow(engine, claims, "ContributeWithoutConsent", context):
            record.extra["consent_needed"] = 0
            return
        raise verdict.error

    def _decide_and_encrypt(
        self,
        request: ContributionRequest,
        claims: TokenClaims,
        engine: PolicyEngine,
        record: AuditedRequest,
    ) -> ContributionResult:
        _, _, shape = validate_query_fields(
            query_id=request.query_id, purpose=request.purpose, shape=request.shape
        )
        kind, purpose, public_key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            modulus_proof=request.modulus_proof,
            claims=claims,
        )
        subject = validate_subject(kind, request.subject_id, field="subject_id")
        if shape is Shape.FLAGS:
            return self._flag_counts(
                request, claims, engine, kind, subject, purpose, public_key, record
            )
        # a THRESHOLD is computed by the coordinator from the TOTAL parts
        layout = self._layouts[kind, Shape.BREAKDOWN if shape is Shape.BREAKDOWN else Shape.TOTAL]
        if shape is Shape.BREAKDOWN:
            layout.check_wire(request.slots, request.slot_widths)
        context = {"purpose": purpose, "shape": shape.value, "subject_kind": kind.value}
        decision = self._decide(engine, claims, "Contribute", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        self._require_consent(engine, claims, request, kind=kind, subject=subject,
                              purpose=purpose, context=context, record=record)  # fmt: skip
        single = self._allow(engine, claims, "DiscloseSingleSource", context)
        records = self._records_for(kind, subject)
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
        record: AuditedRequest,
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
        self._require_consent(engine, claims, request, kind=kind, subject=subject,
                              purpose=purpose, context=context, record=record)  # fmt: skip
        records = self._records_for(kind, subject)
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

    # --- the subject's own file (the subjects' portal) -----------------------------------------

    def subject_file(
        self, query: SubjectFileQuery, *, caller: PeerIdentity, token: str | None
    ) -> SealedPart:
        """NodeService.SubjectFile: decide and audit, then build the subject's file here and
        seal it to the portal's key (node.subject, osmanthus.core.subjectseal)."""
        engine = self._policy.current()
        subject_hash = self._audit.subject_hash(
            canonical_subject(query.subject_kind, query.subject_id)
        )
        record = AuditedRequest(
            query_id=query.query_id,
            purpose=query.purpose,
            policy_hash=engine.hash,
            shape=SUBJECT_FILE_SHAPE,
            subject_hash=subject_hash,
        )
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            kind, subject_id = self._subject_file_allowed(query, claims, engine)
            record.allow(
                "subject's file sealed to the portal's key",
                seal_key=(claims.seal_fingerprint or "")[:16],
            )
        # built once the decision is on disk, so that the file lists this request too (a fault
        # from here on leaves that "allow" standing: the decision was made, the answer failed,
        # and the server's log says why)
        as_of = self._today()
        built = build_subject_file(
            department=self._department.id,
            query_id=query.query_id,
            kind=kind,
            subject=subject_id,
            rules=self._rules,
            records=self._records_for(kind, subject_id),
            lists=self._lists.history(kind, subject_id, today=as_of) if self._lists else (),
            audit=proven_audit(self._audit, subject_hash, checkpoints=self._transparency),
            as_of=as_of,
            now=datetime.now(UTC),
            cases=self._cases.cases_of(kind, subject_id) if self._cases is not None else (),
            case_key=(
                case_key_text(self._case_seal_key) if self._case_seal_key is not None else ""
            ),
        )
        assert self._part_signer is not None  # _subject_file_allowed refuses without one
        return seal_part(
            subject_file=built,
            recipient_key=query.recipient_key,
            nonce=query.nonce,
            signer=self._part_signer,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
        )

    def _subject_file_allowed(
        self, query: SubjectFileQuery, claims: TokenClaims, engine: PolicyEngine
    ) -> tuple[SubjectKind, SubjectId]:
        """The checks a subject's file needs: a portal device's token for self_query bound to
        the very key the file is sealed to, the kind served, a valid id and this node's policy."""
        if claims.role not in SUBJECT_DEVICE_ROLES:
            raise PermissionDenied(
                "a subject's file is sealed only to the subjects' portal devices (role "
                f"{' or '.join(sorted(r.value for r in SUBJECT_DEVICE_ROLES))}); the token's "
                f"role is {claims.role.value}"
            )
        if self._part_signer is None:
            raise FailedPrecondition(
                f"department {self._department.id} has no key to sign a subject's file with "
                "(its node certificate's): it serves none"
            )
        validate_query_id(query.query_id)
        # the portal's, for this call only: bound into the seal and the signature
        check_nonce(query.nonce)
        purpose = validate_purpose(query.purpose)
        if purpose != SELF_QUERY:
            raise PermissionDenied(
                f"a subject's file is asked for purpose {SELF_QUERY!r} only, not {purpose!r}",
                field="purpose",
            )
        claims.require_purpose(purpose)
        kind = query.subject_kind
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="subject_kind"
            )
        if not self._department.serves(kind):
            raise InvalidArgument(
                f"department {self._department.id} holds no {kind.value} records",
                field="subject_kind",
            )
        # the key the token binds, not one the coordinator chose: a coordinator that put its
        # own key in could read what it forwards
        claims.require_seal_key(seal_fingerprint(query.recipient_key))
        subject_id = validate_subject(kind, query.subject_id, field="subject_id")
        context = {"purpose": purpose, "subject_kind": kind.value}
        decision = self._decide(engine, claims, "SubjectFile", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        return kind, subject_id

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
        )
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            with self._asked_again_if_refused(claims):
                result, subjects = self._chunk(request, claims, engine, record)
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
        self,
        request: ChunkRequest,
        claims: TokenClaims,
        engine: PolicyEngine,
        record: AuditedRequest,
    ) -> tuple[ChunkResult, tuple[SubjectId, ...]]:
        _, _, shape = validate_query_fields(
            query_id=request.query_id, purpose=request.purpose, shape=request.shape
        )
        kind, purpose, key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            modulus_proof=request.modulus_proof,
            claims=claims,
        )
        count = len(request.subject_ids)
        if not 0 < count <= MAX_CHUNK_SUBJECTS:
            raise InvalidArgument(
                f"a chunk carries 1..{MAX_CHUNK_SUBJECTS} subjects, this one {count}",
                field="subject_ids",
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
        # read entry by entry only once the policy allowed the chunk; from here a refusal
        # names the chunk's subjects too (a hash per id, which a refused caller does not get)
        record.on_refusal = lambda r: self._name_refused_chunk(r, request)
        subjects = tuple(
            validate_subject(kind, s, field=f"subject_ids[{i}]")
            for i, s in enumerate(request.subject_ids)
        )
        records = self._records_for_many(kind, subjects)
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
        )
        with audited(self._audit, record):
            claims = record.identify(self._authenticate(caller, token))
            with self._asked_again_if_refused(claims):
                result, cohort = self._stats(request, claims, engine, record)
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
        self,
        request: StatsRequest,
        claims: TokenClaims,
        engine: PolicyEngine,
        record: AuditedRequest,
    ) -> tuple[StatsResult, tuple[SubjectId, ...]]:
        validate_query_id(request.query_id)
        kind, purpose, key = self._checked_common(
            kind=request.subject_kind,
            purpose_raw=request.purpose,
            public_key=request.public_key,
            modulus_proof=request.modulus_proof,
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
        size = len(request.subject_ids)
        if not 0 < size <= MAX_COHORT:
            raise InvalidArgument(
                f"a cohort names 1..{MAX_COHORT} subjects, this one {size}", field="subject_ids"
            )
        # the policy decides on the cohort's size before any id is read: validate_cohort
        # refuses a cohort whose ids are not `size` distinct subjects, so the size is exact
        context: dict[str, object] = {
            "purpose": purpose,
            "shape": Shape.STATS.value,
            "subject_kind": kind.value,
            "cohort": size,
        }
        decision = self._decide(engine, claims, "Contribute", context)
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        # from here a refusal names the cohort (one hash of its ids, as far as they are ids):
        # it costs a hash per id, which a caller the policy refused does not get
        record.on_refusal = lambda r: self._name_refused_cohort(r, request)
        cohort = validate_cohort(kind, request.subject_ids)
        positions = [layout.names.index(name) for name in statistics]
        sums = [0] * len(positions)
        as_of = self._today()
        zero = self._zero_parts[kind, Shape.BREAKDOWN]
        # one lookup per MAX_CHUNK_SUBJECTS bounds the records held in memory at once; all of
        # them read one snapshot, so an import committing meanwhile is in all parts or none
        with self._encoding_guard(), self._store.snapshot():
            for start in range(0, len(cohort), MAX_CHUNK_SUBJECTS):
                part_of = cohort[start : start + MAX_CHUNK_SUBJECTS]
                records = self._records_for_many(kind, part_of)
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
