"""Who asked about a subject, proven: audit lines with RFC 9162 inclusion proofs, and their check.

A party building its part of a subject's file (a department's node, the coordinator) sends, for
each entry of its audit log about the subject, the entry's line exactly as the log holds it (the
input of its leaf hash, RFC 9162 §2.1.1), its leaf index, and its inclusion proof (§2.1.3.1) to
one signed checkpoint of its log (C2SP tlog-checkpoint, with the witnesses' cosignatures held
for it, C2SP tlog-cosignature), which travels in the part (`proven_audit`), with the subject's
salted hash as the party's log names the subject (`subject_hash`, covered by the part's
signature). The checkpoint is the newest one a witness cosigned, or the log's latest when no
witness has cosigned any; nothing is signed on request (a checkpoint only the log signed proves
nothing against the log's own holder, and a signature per request would cost every department
an Ed25519 signature and fsyncs per file asked). An entry the checkpoint does not cover (newer
than it, a line too long to send, no checkpoint at all) goes without a proof: pending.

The portal checks each part (`verify_part`) with the keys of its pinned roster
(osmanthus.core.logkeys.LogRoster), never with a key the part brings: the checkpoint note must
be signed by the key of that party's log (origin `log_origin(...)`) and every cosignature of a
rostered witness must verify; each line's fields must be what its logged line says, its logged
line must name the part's subject hash (its `subject_hash`, or among the `subject_hashes` of a
batch entry), no leaf index may be sent twice, and each proof must lead from that line's leaf
hash to the checkpoint's root (§2.1.3.2). A line is then `VERIFIED` when the checkpoint is
cosigned by at least max(1, `min_witnesses`) rostered witnesses other than the log's own party,
else `SIGNED` (the department's word only: shown, visibly weaker); one beyond the checkpoint or
sent without its line is `PENDING`; one whose check fails is `FAILED`, and the part's `problem`
says why, without any identifier of the subject. Without a roster nothing can be checked: every
line is `UNVERIFIED`.

An inclusion proof shows that what is shown is in the log the checkpoint commits to (and that the
witnesses saw); it does not show that the party left nothing out, nor that the subject hash the
party states is really the subject's (it is the party's signed word: docs/caveats.md).
"""

from __future__ import annotations

import base64
import binascii
import enum
import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from osmanthus.core import merkle
from osmanthus.core.audit import AuditEntry, AuditLog
from osmanthus.core.checkpoints import SignedCheckpoint
from osmanthus.core.errors import InvalidArgument, NotFound, OsmanthusError, Unauthenticated
from osmanthus.core.logkeys import LogRoster, is_coordinator_origin, log_origin, party_host
from osmanthus.core.peers import COORDINATOR_NAME, PeerRole
from osmanthus.core.signednote import Checkpoint, open_note, parse_checkpoint
from osmanthus.core.subjectfile import (
    COORDINATOR_SOURCE,
    MAX_ITEMS,
    MAX_LEAF_CHARS,
    AuditLine,
    SubjectFile,
    audit_line,
)

_log = logging.getLogger(__name__)

#: the default number of witness cosignatures the portal requires on a part's checkpoint for its
#: lines to be marked verified: 0, which counts as 1 (`required_witnesses`): a checkpoint only
#: the log signed is never more than the department's word (docs/portal.md)
DEFAULT_MIN_WITNESSES: Final = 0


def required_witnesses(min_witnesses: int) -> int:
    """How many rostered witnesses must cosign a checkpoint for its lines to be verified."""
    return max(1, min_witnesses)


class CheckpointSource(Protocol):
    """Where a party's checkpoints come from: a log server (osmanthus.core.logserver.LocalLog)
    holding the log's checkpointer and the witnesses' cosignatures. Read only: proving a part
    never signs a checkpoint."""

    @property
    def last(self) -> SignedCheckpoint | None:
        """The latest signed checkpoint (with any cosignatures held), or None before the
        first."""
        ...

    def latest_cosigned(self) -> SignedCheckpoint | None:
        """The newest checkpoint that a witness cosigned, its note carrying the cosignatures;
        None when no witness cosigned one."""
        ...


@dataclass(frozen=True)
class ProvenAudit:
    """A party's audit lines about a subject (oldest first), whether older ones were left out,
    the checkpoint note their proofs lead to ("" when there is none), and the subject's hash as
    the party's log names it."""

    lines: tuple[AuditLine, ...]
    truncated: bool
    checkpoint: str
    subject_hash: str = ""


def proven_audit(
    log: AuditLog,
    subject_hash: str,
    *,
    checkpoints: CheckpointSource | None,
    keep: int = MAX_ITEMS,
) -> ProvenAudit:
    """The newest `keep` entries of `log` about `subject_hash`, each with its logged line, leaf
    index and inclusion proof to the newest witnessed checkpoint (the latest checkpoint when no
    witness cosigned any), for those it covers. Signs nothing; memory stays bounded whatever the
    log holds."""
    newest: deque[tuple[int, bytes, AuditEntry, bool]] = deque(maxlen=keep)
    seen = 0
    for found in log.indexed_lines_about(subject_hash):
        newest.append(found)
        seen += 1
    signed = proving_checkpoint(checkpoints)
    lines = []
    for index, raw, entry, in_batch in newest:
        if len(raw) > MAX_LEAF_CHARS:
            # a batch chunk's line: too long for the part; shown, but never as proven
            lines.append(audit_line(entry, in_batch=in_batch))
            continue
        proof: tuple[str, ...] | None = None
        if signed is not None and index < signed.size:
            proof = _proof(log, index, signed.size)
        lines.append(
            audit_line(
                entry,
                in_batch=in_batch,
                leaf=raw.decode("ascii"),
                leaf_index=index,
                proof=proof,
            )
        )
    return ProvenAudit(
        lines=tuple(lines),
        truncated=seen > len(lines),
        checkpoint=signed.note.decode("utf-8") if signed is not None else "",
        subject_hash=subject_hash,
    )


def proving_checkpoint(checkpoints: CheckpointSource | None) -> SignedCheckpoint | None:
    """The checkpoint a part's proofs lead to: the newest a witness cosigned, else the latest
    (proofs to it show as signed by the department only), else None. Never issues one."""
    if checkpoints is None:
        return None
    cosigned = checkpoints.latest_cosigned()
    return cosigned if cosigned is not None else checkpoints.last


def _proof(log: AuditLog, index: int, size: int) -> tuple[str, ...] | None:
    try:
        hashes = log.inclusion_proof(index, size)
    except OsmanthusError as exc:
        # the tree stopped following the log: the entry goes unproven, the portal says so
        _log.error("no inclusion proof for leaf %d in %d: %s", index, size, exc)
        return None
    return tuple(base64.b64encode(h).decode("ascii") for h in hashes)


# --- the portal's check ------------------------------------------------------------------------


class EntryStatus(enum.Enum):
    """What the portal could establish about one audit line."""

    #: its proof leads from its logged line to a checkpoint signed by its log's pinned key and
    #: cosigned by enough rostered witnesses (`required_witnesses`)
    VERIFIED = "verified"
    #: as VERIFIED, but the checkpoint carries too few witness cosignatures: the department's
    #: own word, which a department that rewrote its log and signed again could also give
    SIGNED = "signed"
    #: not covered by the part's checkpoint (or sent without its line): shown as not yet proven
    PENDING = "pending"
    #: its line, its proof or the checkpoint failed a check: not shown as a fact
    FAILED = "failed"
    #: no roster of log keys was configured: nothing could be checked
    UNVERIFIED = "unverified"


@dataclass(frozen=True)
class PartCheck:
    """The check of one part's audit lines: one status per line (in the part's order), the
    checkpoint and the witnesses whose cosignatures verified, and the first thing wrong."""

    source: str
    origin: str
    statuses: tuple[EntryStatus, ...]
    checkpoint: Checkpoint | None = None
    witnesses: tuple[str, ...] = ()
    #: True when `witnesses` are enough for the checkpoint's lines to be VERIFIED
    witnessed: bool = False
    #: why the part's log could not be verified (None when nothing failed); names no subject
    problem: str | None = None

    @property
    def failed(self) -> int:
        """How many lines failed."""
        return sum(1 for s in self.statuses if s is EntryStatus.FAILED)


def origin_of(source: str) -> str:
    """The origin of the log behind a part from `source` (a department, or the coordinator)."""
    if source == COORDINATOR_SOURCE:
        return log_origin(PeerRole.COORDINATOR, COORDINATOR_NAME)
    return log_origin(PeerRole.NODE, source)


def verify_part(
    part: SubjectFile, *, roster: LogRoster | None, min_witnesses: int = DEFAULT_MIN_WITNESSES
) -> PartCheck:
    """Check `part`'s audit lines against the keys of `roster` (see the module docstring)."""
    if isinstance(min_witnesses, bool) or not isinstance(min_witnesses, int) or min_witnesses < 0:
        raise InvalidArgument("min_witnesses must be a whole number from 0", field="min_witnesses")
    origin = origin_of(part.source)
    if part.source == COORDINATOR_SOURCE and part.checkpoint:
        # a coordinator replica proves its lines to its own log (osmanthus.core.logkeys); the
        # origin its note names only picks the roster's key, which must then sign the note
        named = part.checkpoint.partition("\n")[0]
        if is_coordinator_origin(named):
            origin = named
    count = len(part.audit)
    if roster is None:
        return PartCheck(
            source=part.source, origin=origin, statuses=(EntryStatus.UNVERIFIED,) * count
        )
    # every line must say what its logged line says, whatever else holds
    faithful = [_faithful(line) for line in part.audit]
    checkpoint: Checkpoint | None = None
    witnesses: tuple[str, ...] = ()
    problem: str | None = None
    if part.checkpoint:
        try:
            checkpoint, witnesses = _open_checkpoint(part.checkpoint, origin, roster)
        except (InvalidArgument, NotFound, Unauthenticated) as exc:
            problem = f"its checkpoint does not verify: {exc.message}"
    if problem is None:
        # a line about someone else, or one leaf shown twice, is a lie of the whole part
        problem = _unbound(part)
    # counted by party: coordinator replicas witnessing with keys of their own are one witness
    parties = {party_host(name) for name in witnesses}
    witnessed = checkpoint is not None and len(parties) >= required_witnesses(min_witnesses)
    statuses: list[EntryStatus] = []
    first_bad: str | None = None
    for line, ok in zip(part.audit, faithful, strict=True):
        status, why = _line_status(line, ok, checkpoint, checkpoint_failed=problem is not None)
        if status is EntryStatus.VERIFIED and not witnessed:
            status = EntryStatus.SIGNED
        statuses.append(status)
        if why is not None and first_bad is None:
            first_bad = why
    if problem is None and first_bad is not None:
        failed = statuses.count(EntryStatus.FAILED)
        problem = f"{failed} of its {count} entries could not be proven; the first: {first_bad}"
    return PartCheck(
        source=part.source,
        origin=origin,
        statuses=tuple(statuses),
        checkpoint=checkpoint,
        witnesses=witnesses,
        witnessed=witnessed,
        problem=problem,
    )


def _unbound(part: SubjectFile) -> str | None:
    """None when every logged line of `part` names the part's subject hash and no leaf index
    comes twice, else what is wrong (naming no subject and no hash)."""
    seen: set[int] = set()
    for line in part.audit:
        if not line.leaf or line.leaf_index is None:
            continue
        index = line.leaf_index
        if index in seen:
            return f"leaf {index} is shown more than once"
        seen.add(index)
        if not part.subject_hash:
            return f"leaf {index} is sent, but the part states no subject hash to match it with"
        try:
            entry = AuditEntry.from_json(line.leaf)
        except (ValueError, KeyError, TypeError, InvalidArgument):
            continue  # _faithful fails the line itself
        if entry.subject_hash != part.subject_hash and part.subject_hash not in (
            entry.subject_hashes
        ):
            return f"leaf {index} is an entry about another subject than this part's"
    return None


def _open_checkpoint(
    note: str, origin: str, roster: LogRoster
) -> tuple[Checkpoint, tuple[str, ...]]:
    """The checkpoint in `note` once the log's pinned key's signature verifies, and the names
    of the roster's witnesses whose cosignatures verify (a rostered witness's cosignature that
    does not verify refuses the note, as signed-note verifiers do). A witness run by the log's
    own party (its name on the origin's host) is not counted: a log cannot witness itself."""
    data = note.encode("utf-8")
    # the log's own signature, alone: a note only witnesses signed is not the log's
    opened = open_note(data, [roster.log_verifier(origin)])
    checkpoint = parse_checkpoint(opened.text)
    if checkpoint.origin != origin:
        raise InvalidArgument(
            f"the checkpoint is for log {checkpoint.origin!r}, not {origin!r}", field="checkpoint"
        )
    # the coordinator's replicas are one party: none of them witnesses another's log
    host = party_host(origin)
    witnesses = [w for w in roster.witness_verifiers() if party_host(w.name) != host]
    if not witnesses:
        return checkpoint, ()
    try:
        cosigned = open_note(data, witnesses)
    except Unauthenticated as exc:
        if "none of the trusted keys" in exc.message:
            return checkpoint, ()  # cosigned by no rostered witness: counted as none
        raise
    return checkpoint, tuple(sorted(cosigned.signatures))


def _faithful(line: AuditLine) -> str | None:
    """None when `line`'s shown fields are what its logged line says (or it has none), else
    why not."""
    if not line.leaf:
        return None
    try:
        entry = AuditEntry.from_json(line.leaf)
    except (ValueError, KeyError, TypeError, InvalidArgument) as exc:
        return (
            f"leaf {line.leaf_index}: its logged line is not an audit entry ({type(exc).__name__})"
        )
    expected = audit_line(
        entry,
        in_batch=bool(entry.subject_hashes),
        leaf=line.leaf,
        leaf_index=line.leaf_index,
        proof=line.proof,
    )
    if expected != line:
        return f"leaf {line.leaf_index}: what is shown differs from its logged line"
    return None


def _line_status(
    line: AuditLine,
    unfaithful: str | None,
    checkpoint: Checkpoint | None,
    *,
    checkpoint_failed: bool,
) -> tuple[EntryStatus, str | None]:
    """One line's status and, when it failed on its own, why."""
    if unfaithful is not None:
        return EntryStatus.FAILED, unfaithful
    if not line.leaf or line.leaf_index is None:
        return EntryStatus.PENDING, None
    if checkpoint_failed:
        return EntryStatus.FAILED, None
    index = line.leaf_index
    if checkpoint is None or index >= checkpoint.size:
        if line.proof is not None:
            return EntryStatus.FAILED, f"leaf {index}: a proof to a checkpoint that lacks it"
        return EntryStatus.PENDING, None
    if line.proof is None:
        return EntryStatus.FAILED, f"leaf {index}: within the checkpoint but sent without proof"
    try:
        hashes = _hashes(line.proof)
        merkle.verify_inclusion(
            index,
            checkpoint.size,
            merkle.leaf_hash(line.leaf.encode("utf-8")),
            hashes,
            checkpoint.root_hash,
        )
    except InvalidArgument as exc:
        return EntryStatus.FAILED, f"leaf {index}: {exc.message}"
    return EntryStatus.VERIFIED, None


def _hashes(proof: Sequence[str]) -> list[bytes]:
    out = []
    for position, text in enumerate(proof):
        try:
            value = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            value = b""
        if len(value) != merkle.HASH_BYTES or base64.b64encode(value).decode("ascii") != text:
            raise InvalidArgument(
                f"proof hash {position} is not standard base64 of {merkle.HASH_BYTES} bytes",
                field="proof",
            )
        out.append(value)
    return out
