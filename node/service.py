"""A department node's decision path: authenticate, authorise, score locally, encrypt, audit."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from certs import PeerRole
from node.store import RecordStore, china_today
from osmanthus import __version__, encoding
from osmanthus.audit import AuditEntry, AuditLog, redacted_reason
from osmanthus.catalogue import Catalogue, Department
from osmanthus.crypto import Ciphertext, EncryptorCache, PublicKey
from osmanthus.errors import (
    ConfigError,
    InvalidArgument,
    OsmanthusError,
    PermissionDenied,
    Unauthenticated,
)
from osmanthus.ids import canonical_subject, validate_subject
from osmanthus.names import validate_purpose, validate_query_id
from osmanthus.policy import PolicyEngine, PolicyRequest, ReloadablePolicy
from osmanthus.rules import Contribution, RuleSet
from osmanthus.tls import PeerIdentity
from osmanthus.tokens import TokenClaims, TokenVerifier
from osmanthus.types import DepartmentId, Purpose, QueryId, Shape, SubjectKind

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContributionRequest:
    query_id: str
    subject_kind: SubjectKind | None
    subject_id: str
    shape: Shape | None
    purpose: str
    consent_id: str
    public_key: bytes
    slots: tuple[str, ...]


@dataclass(frozen=True)
class ContributionResult:
    department: DepartmentId
    ciphertext: bytes
    single_source_allowed: bool
    rules_version: str
    policy_hash: str


@dataclass(frozen=True)
class NodeDescription:
    department: Department
    rules_version: str
    rules_digest: str
    policy_hash: str
    owned_categories: tuple[str, ...]
    software_version: str


def validate_query_fields(
    *, query_id: str, purpose: str, shape: Shape | None
) -> tuple[QueryId, Purpose, Shape]:
    """Checks shared by node and coordinator entry points."""
    checked_query_id = validate_query_id(query_id)
    checked_purpose = validate_purpose(purpose)
    if shape is None:
        raise InvalidArgument("a disclosure shape (BREAKDOWN or TOTAL) is required", field="shape")
    return checked_query_id, checked_purpose, shape


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
    ) -> None:
        self._department = department
        self._catalogue = catalogue
        self._store = store
        self._rules = rules
        self._policy = policy
        self._verifier = verifier
        self._audit = audit
        self._encryptors = encryptors
        self._today = today

    def close(self) -> None:
        self._encryptors.close()
        self._store.close()
        self._audit.close()

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

    def contribute(
        self, request: ContributionRequest, *, caller: PeerIdentity, token: str | None
    ) -> ContributionResult:
        claims: TokenClaims | None = None
        # one policy version decides the whole request and is the one the audit entry names
        engine = self._policy.current()
        try:
            if caller.role is not PeerRole.COORDINATOR:
                raise PermissionDenied(
                    f"only the platform coordinator may request contributions; the caller's "
                    f"certificate names {caller.role.value} {caller.name!r}"
                )
            if not token:
                raise Unauthenticated("no requester token in the 'authorization' metadata")
            claims = self._verifier.verify(token)
            result = self._decide_and_encrypt(request, claims, engine)
        except OsmanthusError as exc:
            self._record(request, claims, engine.hash, decision="deny", reason=redacted_reason(exc))
            raise
        except Exception:
            self._record(request, claims, engine.hash, decision="deny", reason="internal error")
            raise
        self._record(
            request,
            claims,
            engine.hash,
            decision="allow",
            reason="contribution encrypted under the requester's key",
            extra={"single_source_allowed": int(result.single_source_allowed)},
        )
        return result

    def _decide_and_encrypt(
        self, request: ContributionRequest, claims: TokenClaims, engine: PolicyEngine
    ) -> ContributionResult:
        _, purpose, shape = validate_query_fields(
            query_id=request.query_id, purpose=request.purpose, shape=request.shape
        )
        kind = request.subject_kind
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="subject_kind"
            )
        if not self._department.serves(kind):
            raise InvalidArgument(
                f"department {self._department.id} holds no {kind.value} records",
                field="subject_kind",
            )
        subject = validate_subject(kind, request.subject_id, field="subject_id")
        if purpose not in claims.purposes:
            raise PermissionDenied(
                f"purpose {purpose!r} is not among the token's purposes "
                f"({', '.join(sorted(claims.purposes))})"
            )
        public_key = PublicKey.from_bytes(request.public_key, field="public_key")
        if public_key.fingerprint != claims.key_fingerprint:
            raise PermissionDenied(
                f"public key {public_key.fingerprint[:16]}… is not the key bound to the token "
                f"({claims.key_fingerprint[:16]}…)"
            )
        model = self._catalogue.model(kind)
        if shape is Shape.BREAKDOWN and request.slots != model.slot_names():
            raise InvalidArgument(
                f"slot layout {list(request.slots)} does not match this node's catalogue "
                f"{list(model.slot_names())}",
                field="slots",
            )
        context = {"purpose": purpose, "shape": shape.value, "subject_kind": kind.value}
        principal = {"role": claims.role.value}
        decision = engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs=principal,
                action="Contribute",
                resource_type="Department",
                resource_id=self._department.id,
                context=context,
            )
        )
        if not decision.allowed:
            raise PermissionDenied(f"department {self._department.id} policy: {decision.reason}")
        single = engine.decide(
            PolicyRequest(
                principal_type="Requester",
                principal_id=claims.requester,
                principal_attrs=principal,
                action="DiscloseSingleSource",
                resource_type="Department",
                resource_id=self._department.id,
                context=context,
            )
        )
        records = self._store.records_for(kind, subject)
        contribution = self._rules.contribution(kind, records, as_of=self._today())
        ciphertext = self._encrypt(public_key, shape, kind, contribution).to_bytes()
        return ContributionResult(
            department=self._department.id,
            ciphertext=ciphertext,
            single_source_allowed=single.allowed,
            rules_version=self._rules.version,
            policy_hash=engine.hash,
        )

    def _encrypt(
        self, key: PublicKey, shape: Shape, kind: SubjectKind, contribution: Contribution
    ) -> Ciphertext:
        try:
            if shape is Shape.BREAKDOWN:
                model = self._catalogue.model(kind)
                values = [contribution.deductions]
                # categories owned by other departments get 0: their owners fill those slots
                values += [contribution.bonuses.get(c.name, 0) for c in model.categories]
                return self._encryptors.encrypt(key, encoding.pack_breakdown(values))
            total = encoding.total_contribution(
                deductions=contribution.deductions, bonuses=sum(contribution.bonuses.values())
            )
        except InvalidArgument as exc:
            # the message quotes the contribution itself: it goes to this node's log only
            # (ConfigError is redacted on the wire), never to the coordinator or requester
            raise ConfigError(
                f"department {self._department.id}: a contribution does not fit the encoding "
                f"({exc}); the rules allow more points than the protocol can carry"
            ) from exc
        return self._encryptors.encrypt_signed(key, total)

    def _record(
        self,
        request: ContributionRequest,
        claims: TokenClaims | None,
        policy_hash: str,
        *,
        decision: str,
        reason: str,
        extra: dict[str, int | str] | None = None,
    ) -> None:
        self._audit.append(
            AuditEntry(
                time=datetime.now(UTC),
                query_id=request.query_id[:64],
                requester=claims.requester if claims else "unauthenticated",
                purpose=request.purpose[:64],
                consent_id=request.consent_id[:64],
                policy_hash=policy_hash,
                decision=decision,
                reason=reason,
                shape=request.shape.value if request.shape else "",
                subject_hash=self._audit.subject_hash(
                    canonical_subject(request.subject_kind, request.subject_id)
                ),
                extra=extra or {},
            )
        )
