"""A subject's own file as a subjects' portal device reads it: asked, opened, checked, decoded.

The device (a kiosk, or the online self-service site) asks the coordinator for the file of the
subject of its session (Client.subject_file). Every department's node sealed its part to the
device's X25519 key, and the coordinator added its own part, its audit entries about the
subject, sealed the same way; the coordinator cannot open any part. Here each part is opened
with the context it must have been sealed under (the query, its source, the subject: HPKE info,
osmanthus.core.subjectseal) and decoded strictly (osmanthus.core.subjectfile.decode), so a part
sealed for another query, department or subject, or altered on the way, fails.

Sealing alone proves nothing about who sealed (the coordinator sees the device's public key),
so every part is also signed by its maker with the key of its mutual-TLS certificate, and the
signature is checked first (osmanthus.core.subjectpart): the certificate must chain to the
platform CA this client trusts (its TLS CA file), be in date and name exactly the part's
source (that department's node, or the coordinator for its own part). A part the coordinator
made up, or one signed by another department, fails. Each call carries a fresh random nonce
that every part's seal and signature bind, so a part from an earlier call fails too.

So does an answer that leaves a department unexplained (neither a part nor a reason it is
missing), has no part of the coordinator's own, or is older than MAX_PART_AGE. A part that
fails any check fails the whole call, naming its source: the subject is never shown half a
file as if it were whole.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.catalogue import Catalogue
from osmanthus.core.errors import ConfigError, CryptoError, InvalidArgument, Unauthenticated
from osmanthus.core.ids import validate_subject
from osmanthus.core.subjectfile import COORDINATOR_SOURCE, SubjectFile
from osmanthus.core.subjectpart import open_part
from osmanthus.core.subjectseal import SealContext, new_nonce, public_bytes
from osmanthus.core.types import SELF_QUERY, DepartmentStatus, SubjectKind
from osmanthus.core.wire.coordinator import SubjectFileOutcome, SubjectFileRequest
from osmanthus.core.wire.node import MAX_SEALED_PART_BYTES

#: a part generated longer ago than this (or this far in the future: clocks disagree) is
#: refused: the coordinator must not serve an old answer as today's
MAX_PART_AGE: Final = datetime.timedelta(minutes=10)
#: room in the coordinator's answer besides the sealed parts (sources, statuses, framing)
_RESPONSE_SLACK_BYTES: Final = 256 * 1024


@dataclass(frozen=True)
class SubjectFileResult:
    """A subject's file: every part opened and decoded, the departments' first (in the order
    the coordinator sent them), then the coordinator's own; and the departments that sent
    none, with why."""

    query_id: str
    parts: tuple[SubjectFile, ...]
    missing: tuple[DepartmentStatus, ...]
    partial: bool

    @property
    def departments(self) -> tuple[SubjectFile, ...]:
        """The departments' parts (records, list entries, their audit entries)."""
        return tuple(p for p in self.parts if p.source != COORDINATOR_SOURCE)

    @property
    def coordinator(self) -> SubjectFile:
        """The coordinator's part: its audit entries about the subject."""
        return next(p for p in self.parts if p.source == COORDINATOR_SOURCE)


def max_response_bytes(catalogue: Catalogue) -> int:
    """The largest answer a SubjectFile may bring: one sealed part per department and the
    coordinator's (what the client's channel must be able to receive)."""
    parts = len(catalogue.departments) + 1
    return parts * (MAX_SEALED_PART_BYTES + 1024) + _RESPONSE_SLACK_BYTES


def file_request(
    *, subject_kind: SubjectKind, subject_id: str, sealing_key: X25519PrivateKey
) -> SubjectFileRequest:
    """The question for the coordinator: the subject (validated), the device's public key and
    a fresh random nonce for this one call."""
    if not isinstance(subject_kind, SubjectKind):
        raise InvalidArgument(
            f"{subject_kind!r} is not a SubjectKind (PERSON or ENTERPRISE)", field="subject_kind"
        )
    if not isinstance(sealing_key, X25519PrivateKey):
        raise ConfigError(
            f"the sealing key must be an X25519 private key, not {type(sealing_key).__name__}",
            field="sealing_key",
        )
    return SubjectFileRequest(
        subject_kind=subject_kind,
        subject_id=validate_subject(subject_kind, subject_id, field=subject_kind.id_field),
        purpose=SELF_QUERY,
        recipient_key=public_bytes(sealing_key),
        nonce=new_nonce(),
    )


def open_parts(
    outcome: SubjectFileOutcome,
    *,
    request: SubjectFileRequest,
    sealing_key: X25519PrivateKey,
    catalogue: Catalogue,
    trusted_cas: Sequence[x509.Certificate],
    now: datetime.datetime | None = None,
) -> SubjectFileResult:
    """Check the signature, open and decode every part of the coordinator's answer to
    `request`; CryptoError naming the source of the first part (or the department) that does
    not fit. `trusted_cas`: the platform CA certificates this client's TLS trusts."""
    kind = request.subject_kind
    assert kind is not None  # file_request always names it
    serving: set[str] = {d.id for d in catalogue.departments_for(kind)}
    moment = now or datetime.datetime.now(datetime.UTC)
    _check_coverage(outcome, serving)
    opened: list[SubjectFile] = []
    for index, part in enumerate(outcome.parts):
        context = SealContext(
            query_id=outcome.query_id,
            source=part.source,
            subject_kind=kind.value,
            subject_id=request.subject_id,
            nonce=request.nonce,
        )
        try:
            subject_file = open_part(
                part=part,
                expected=context,
                sealing_key=sealing_key,
                trusted_cas=trusted_cas,
                now=moment,
            )
        except (InvalidArgument, Unauthenticated) as exc:
            raise CryptoError(
                f"the part from {_shown(part.source)} cannot be used, so the file is not "
                f"shown: {exc.message}",
                field=f"files[{index}]",
            ) from None
        _check_fresh(subject_file, moment, index)
        opened.append(subject_file)
    ordered = [p for p in opened if p.source != COORDINATOR_SOURCE] + [
        p for p in opened if p.source == COORDINATOR_SOURCE
    ]
    return SubjectFileResult(
        query_id=outcome.query_id,
        parts=tuple(ordered),
        missing=outcome.missing,
        partial=outcome.partial,
    )


def _check_coverage(outcome: SubjectFileOutcome, serving: set[str]) -> None:
    """Every department serving the kind is either a part or missing with a reason, never
    both; nothing else sends a part but the coordinator, which always does."""
    sources = [p.source for p in outcome.parts]
    for index, source in enumerate(sources):
        if source != COORDINATOR_SOURCE and source not in serving:
            raise CryptoError(
                f"the answer holds a part from {_shown(source)}, which is not a department "
                "serving this kind of subject",
                field=f"files[{index}].source",
            )
    if COORDINATOR_SOURCE not in sources:
        raise CryptoError(
            "the answer holds no part of the coordinator's own (its audit entries)",
            field="files",
        )
    missing = [m.department for m in outcome.missing]
    both = sorted(set(missing) & set(sources))
    if both:
        raise CryptoError(
            f"departments {', '.join(map(_shown, both))} are both answered and missing",
            field="missing",
        )
    unexplained = sorted(serving - set(sources) - set(missing))
    if unexplained:
        raise CryptoError(
            "the answer neither holds nor explains the part of "
            + ", ".join(map(_shown, unexplained)),
            field="missing",
        )
    if outcome.partial != bool(outcome.missing):
        raise CryptoError(
            "the answer says it is "
            + ("partial" if outcome.partial else "whole")
            + f" but {len(outcome.missing)} department(s) are missing",
            field="partial",
        )


def _check_fresh(subject_file: SubjectFile, now: datetime.datetime, index: int) -> None:
    try:
        generated = datetime.datetime.fromisoformat(subject_file.generated_at)
    except ValueError:
        generated = None
    if generated is None or generated.tzinfo is None:
        raise CryptoError(
            f"the part from {_shown(subject_file.source)} has no usable generated_at time",
            field=f"files[{index}].generated_at",
        )
    if abs(now - generated) > MAX_PART_AGE:
        raise CryptoError(
            f"the part from {_shown(subject_file.source)} was generated at "
            f"{subject_file.generated_at}, more than {MAX_PART_AGE} from now: an old answer "
            "is not shown as today's",
            field=f"files[{index}].generated_at",
        )


def _shown(source: str) -> str:
    return repr(source[:40])
