"""Carrying a log's latest checkpoint to a witness: the consistency proof it needs, the retry.

Whoever brings checkpoints to a witness (the coordinator to its own in-process witness for the
nodes' logs, the sync job to the provincial receiver's) does the same few steps, per C2SP
tlog-witness: take the log's latest signed note as served, ask the log for an RFC 9162
consistency proof from the size the witness last cosigned, send the add-checkpoint body, and on
a 409 whose size differs from the one it used (it was behind) try once more from that size. The
witness alone judges: the note is passed on as served, unverified, so that a checkpoint the
log's key did not sign, a rollback or a fork reaches the witness and is refused there as an
alarm, not dropped on the way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from osmanthus.core.errors import FailedPrecondition, InvalidArgument, WitnessConflict
from osmanthus.core.signednote import SIGNATURE_LINE_PREFIX, Checkpoint, parse_checkpoint
from osmanthus.core.witness import encode_add_checkpoint

#: a conflict carrying another size is retried from it once; a second one is the caller's
MAX_CONFLICT_RETRIES: Final = 1


class WrongOrigin(FailedPrecondition):
    """A server answered a log's checkpoint with another log's."""


@dataclass(frozen=True)
class Witnessed:
    """What the witness holds for a log: the size and root it last cosigned (0 and None for a
    log it never cosigned)."""

    size: int
    root: bytes | None


@dataclass(frozen=True)
class Carried:
    """One checkpoint carried: the log's note as served, and what the witness answered."""

    checkpoint: Checkpoint
    #: the size the accepted proof went from (the witness's size before)
    old_size: int
    #: the witness's cosignature line(s); empty when nothing was submitted (`unchanged`)
    signatures: bytes
    note: bytes
    #: the log served the checkpoint the witness already cosigned, with its cosignature on it
    unchanged: bool = False

    @property
    def cosigned_note(self) -> bytes:
        """The log's note with the witness's cosignature lines after its signatures: what the
        log is handed back (TransparencyService.AddCosignatures)."""
        return self.note + self.signatures


def peek_checkpoint(note: bytes) -> Checkpoint:
    """The checkpoint a signed note carries, unverified (the witness verifies it): only its
    size is read, to ask the log for a proof up to it."""
    text, sep, _ = note.partition(b"\n\n")
    try:
        if not sep:
            raise InvalidArgument("no blank line before the signatures", field="note")
        return parse_checkpoint(text.decode("utf-8") + "\n")
    except UnicodeDecodeError:
        raise InvalidArgument("the checkpoint note is not UTF-8", field="note") from None


def carries_cosignature(note: bytes, witness: str) -> bool:
    """Whether the note has a signature line under the witness's key name (unverified)."""
    return f"\n{SIGNATURE_LINE_PREFIX}{witness} ".encode() in note


def carry(
    *,
    origin: str,
    note: bytes,
    witnessed: Witnessed,
    witness_name: str,
    proof: Callable[[int, int], Sequence[bytes]],
    submit: Callable[[bytes], bytes],
) -> Carried:
    """Bring `note` (the latest checkpoint of log `origin`) to a witness that holds `witnessed`.

    `proof(old, new)` is the log's consistency proof between two sizes (0 < old < new);
    `submit(body)` sends an add-checkpoint body and returns the cosignature lines or raises the
    witness's refusal. A checkpoint the witness already cosigned at that size and root, whose
    note already carries its cosignature, is not submitted again (`unchanged`). A checkpoint
    smaller than the witness's is submitted all the same, with old size = its own size, so that
    the witness sees the rollback and raises its alarm. A note for another origin than the one
    asked is refused here (WrongOrigin): a server must not get one log's checkpoint cosigned
    in place of another's, nor hide its own log's behind it.
    """
    checkpoint = peek_checkpoint(note)
    if checkpoint.origin != origin:
        raise WrongOrigin(
            f"asked for the checkpoint of {origin!r}, the server sent one of "
            f"{checkpoint.origin!r} (size {checkpoint.size})",
            field="note",
        )
    size = checkpoint.size
    if (
        witnessed.size == size
        and witnessed.root == checkpoint.root_hash
        and carries_cosignature(note, witness_name)
    ):
        return Carried(
            checkpoint=checkpoint, old_size=size, signatures=b"", note=note, unchanged=True
        )
    old = min(witnessed.size, size)
    retries = 0
    while True:
        hashes = list(proof(old, size)) if 0 < old < size else []
        body = encode_add_checkpoint(old_size=old, proof=hashes, note=note)
        try:
            signatures = submit(body)
        except WitnessConflict as exc:
            latest = exc.latest_size
            # behind: the witness cosigned another size since it was asked; a rollback or a
            # fork carries a size the request already used or one above the checkpoint's
            if retries >= MAX_CONFLICT_RETRIES or latest is None or latest == old or latest > size:
                raise
            retries += 1
            old = latest
            continue
        return Carried(checkpoint=checkpoint, old_size=old, signatures=signatures, note=note)
