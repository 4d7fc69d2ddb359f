"""The operator's repairs of a stream: `sync rebase`, and `sync quarantine drop|rebuild`.

Each one verifies every waiting batch of the stream against the job's keys first
(syncjob.verify): nothing is signed anew that was not checked, and a batch that fails is
quarantined, never renumbered.

- **rebase** renumbers a stream's waiting batches to follow the receiver's last batch (after a
  receiver reset or a state restored from an old backup); it refuses while any batch of the
  stream is quarantined.
- **drop** takes the stream's quarantined batches out of the outbox and renumbers the batches
  behind them to follow the receiver's last batch; what the dropped batches held is not
  reported again. A quarantined batch the receiver already holds (it stored it as signed, its
  answer was lost, and the state was changed after) is acknowledged instead: nothing is lost.
- **rebuild** is drop, and the stream's source is read again at the next run: the records come
  from the nodes again, never from the changed payload (lists: every department's feed from its
  first event; grades: every enterprise's grade; statistics: every statistic, spending its ε
  again).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from osmanthus.core.errors import FailedPrecondition
from osmanthus.core.syncbatch import Batch, BatchKind, build_batch, sign_batch
from syncjob.state import ORIGIN, OutboxBatch, StreamPosition, SyncState
from syncjob.verify import Keyring, Quarantined, check_and_read, held_back

if TYPE_CHECKING:
    from osmanthus.core.wire.province import BatchSummary
    from sdk.province import ProvinceClient


@dataclass(frozen=True, kw_only=True)
class Stream:
    """What a repair needs: the job's state, the receiver and keys, one stream."""

    state: SyncState
    province: ProvinceClient
    sender: str
    kind: BatchKind
    key: Ed25519PrivateKey
    keyring: Keyring
    now: datetime


@dataclass(frozen=True)
class Settled:
    """What `sync quarantine drop|rebuild` did to a stream."""

    kind: BatchKind
    #: (sequence, batch id) of each quarantined batch taken out of the outbox
    dropped: list[tuple[int, str]]
    #: a quarantined batch the receiver holds as it was signed: acknowledged, not dropped
    held: tuple[int, str] | None
    #: the batches left waiting, renumbered to follow the receiver's last batch
    waiting: list[OutboxBatch]
    #: the receiver's last batch they follow
    follows: BatchSummary | None
    #: whether the stream's source is read again at the next run
    regather: bool


def verified(stream: Stream) -> tuple[list[tuple[OutboxBatch, Batch]], list[OutboxBatch]]:
    """The stream's waiting batches that verify (with their batch) and those that do not (now
    quarantined), in sequence order."""
    good: list[tuple[OutboxBatch, Batch]] = []
    bad: list[OutboxBatch] = []
    for waiting in stream.state.outbox(stream.kind):
        try:
            good.append(
                (
                    waiting,
                    check_and_read(
                        stream.state,
                        waiting,
                        keyring=stream.keyring,
                        sender=stream.sender,
                        at=stream.now,
                    ),
                )
            )
        except Quarantined:
            bad.append(waiting)
    return good, bad


def rebase(stream: Stream) -> tuple[list[OutboxBatch], BatchSummary | None]:
    """Renumber the stream's waiting batches to continue the receiver's stream where it stands:
    the way out of a gap or an overlap (a state restored from an old backup, a receiver reset).
    Records and their order are kept; each batch gets the next sequence, starts at the previous
    batch's end and is signed anew (so its id changes), once its stored signature verified.
    Returns the batches and the receiver's last batch they follow."""
    kind = stream.kind
    if not stream.state.outbox(kind):
        raise FailedPrecondition(f"no {kind.value} batch waits in the outbox", field="kind")
    good, _ = verified(stream)
    held = stream.state.quarantined(kind)
    if held:
        # nothing is renumbered: the quarantined batch would be signed anew, or left as a gap
        raise held_back(held[0])
    last = stream.province.last_batch(sender=stream.sender, kind=kind)
    rebuilt, position = _renumbered(stream, good, last)
    stream.state.replace_outbox(kind, rebuilt, stream=position)
    return rebuilt, last


def settle(stream: Stream, *, regather: bool) -> Settled:
    """`sync quarantine drop` (regather False) or `rebuild` (True) for the stream: see the
    module's docstring. FailedPrecondition if no batch of the stream is quarantined."""
    kind = stream.kind
    good, bad = verified(stream)
    held = stream.state.quarantined(kind)
    if not bad and not held:
        raise FailedPrecondition(
            f"no {kind.value} batch is quarantined, and every waiting one verifies", field="kind"
        )
    last = stream.province.last_batch(sender=stream.sender, kind=kind)
    resolutions = {q.batch_id: "verified again; kept" for q in held}
    acknowledged: tuple[int, str] | None = None
    dropped: list[tuple[int, str]] = []
    for batch in bad:
        if last is not None and batch.batch_id == last.batch_id:
            # the receiver stored this batch as it was signed, before the state was changed
            acknowledged = (batch.sequence, batch.batch_id)
            resolutions[batch.batch_id] = "held by the province as signed; acknowledged"
        else:
            dropped.append((batch.sequence, batch.batch_id))
            resolutions[batch.batch_id] = "rebuilt from the nodes" if regather else "dropped"
    rebuilt, position = _renumbered(stream, good, last)
    stream.state.settle_quarantine(
        kind,
        batches=rebuilt,
        stream=position,
        resolutions=resolutions,
        regather=regather and bool(dropped),
        at=stream.now,
    )
    return Settled(
        kind=kind,
        dropped=dropped,
        held=acknowledged,
        waiting=rebuilt,
        follows=last,
        regather=regather and bool(dropped),
    )


def _renumbered(
    stream: Stream, good: Sequence[tuple[OutboxBatch, Batch]], last: BatchSummary | None
) -> tuple[list[OutboxBatch], StreamPosition | None]:
    """`good` (verified) renumbered and signed anew to follow `last`, and the stream position
    `last` is; FailedPrecondition if the receiver already holds one of their ranges."""
    kind = stream.kind
    ends = {waiting.watermark_to for waiting, _ in good}
    if last is not None and last.watermark_to in ends:
        # the receiver's stream ends where a waiting batch ends: it holds that range (its
        # answer was lost), and those records would be stored again under new ids
        raise FailedPrecondition(
            f"the receiver's {kind.value} stream ends at {last.watermark_to}, where a "
            "waiting batch ends: it already holds records the job thinks unsent. Send "
            "normally (the receiver acknowledges what it holds), or settle with the "
            "province which records it has",
            field="kind",
        )
    sequence, start = (last.sequence + 1, last.watermark_to) if last else (1, ORIGIN)
    rebuilt: list[OutboxBatch] = []
    for waiting, old in good:
        batch = build_batch(
            sender=stream.sender,
            kind=kind,
            sequence=sequence,
            watermark_from=start,
            watermark_to=old.watermark_to,
            records=list(old.records),
            created_at=old.created_at,
            missing_departments=old.missing_departments,
        )
        rebuilt.append(
            dataclasses.replace(
                waiting,
                sequence=sequence,
                batch_id=batch.batch_id,
                watermark_from=start,
                signed=sign_batch(batch, private_key=stream.key),
                attempts=0,
            )
        )
        sequence, start = sequence + 1, old.watermark_to
    position = (
        StreamPosition(
            kind=kind,
            sequence=last.sequence,
            watermark=last.watermark_to,
            batch_id=last.batch_id,
            acked_at=last.received_at,
        )
        if last
        else None
    )
    return rebuilt, position
