"""The requester's side of a batch: lazy chunked requests, layout checks, parallel decryption."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from types import TracebackType

from osmanthus.core.catalogue import SubjectModel
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.score import Breakdown, grade, score
from osmanthus.core.types import Shape
from osmanthus.core.wire import coordinator as wire
from osmanthus.core.workers import ParallelDecryptor
from osmanthus.v1 import coordinator_pb2
from sdk.keys import RequesterKeys
from sdk.results import BatchScore

#: a chunk fills this many ciphertexts by default: large enough that per-call costs vanish,
#: small enough that a chunk is answered in about a second by 22 nodes on a small machine
DEFAULT_CIPHERTEXTS_PER_CHUNK = 24


class Outbox:
    """What the request side sent, shared with the answer side of one batch stream.

    `sent` keeps each chunk's ids until its answer puts the rows back in input order (HTTP/2
    flow control and the coordinator's read-ahead bound how many are outstanding). `error` is
    what reading the caller's ids raised: grpc consumes requests on its own thread and would
    otherwise replace it with a bare cancellation.
    """

    def __init__(self) -> None:
        self.sent: dict[int, list[str]] = {}
        self.error: Exception | None = None


def batch_requests(
    subject_ids: Iterable[str],
    *,
    header: coordinator_pb2.BatchQueryRequest,
    chunk_size: int,
    outbox: Outbox,
) -> Iterator[coordinator_pb2.BatchQueryRequest]:
    """The header, then the ids in chunks of `chunk_size`, read lazily from `subject_ids`.

    If reading the ids fails, the stream ends after the last whole chunk: the chunks sent are
    still answered, and the caller gets the error after their rows.
    """
    yield header
    ids = iter(subject_ids)
    for number in itertools.count():
        try:
            chunk = list(itertools.islice(ids, chunk_size))
        except Exception as exc:
            outbox.error = exc
            return
        if not chunk:
            return
        outbox.sent[number] = chunk
        yield wire.subject_chunk_to_proto(wire.SubjectChunk(number, tuple(chunk)))


class BatchDecoder:
    """Checks the coordinator's layout against the catalogue's and turns chunks into rows."""

    def __init__(
        self,
        *,
        keys: RequesterKeys,
        layout: SlotLayout,
        model: SubjectModel,
        outbox: Outbox,
        workers: int | None = None,
    ) -> None:
        self._outbox = outbox
        self._keys = keys
        self._layout = layout
        self._model = model
        self._per = layout.capacity(keys.public.bits)
        self._decryptor = ParallelDecryptor(keys.private, workers=workers)

    def close(self) -> None:
        self._decryptor.close()

    def __enter__(self) -> BatchDecoder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def rows(self, answers: Iterable[wire.BatchPlan | wire.ChunkOutcome]) -> Iterator[BatchScore]:
        stream = iter(answers)
        first = next(stream, None)
        if not isinstance(first, wire.BatchPlan):
            raise CryptoError(
                "the coordinator did not open the batch with its layout", field="layout"
            )
        contributors = self._check_layout(first)
        for expected_chunk, answer in enumerate(stream):
            if not isinstance(answer, wire.ChunkOutcome):
                raise CryptoError("the coordinator sent a second layout", field="layout")
            if answer.chunk != expected_chunk:
                raise CryptoError(
                    f"chunk {answer.chunk} arrived where chunk {expected_chunk} was due",
                    field="chunk",
                )
            yield from self._chunk_rows(first.query_id, answer, contributors)

    def _check_layout(self, layout: wire.BatchPlan) -> int:
        try:
            self._layout.check_wire(layout.slots, layout.slot_widths)
        except InvalidArgument as exc:
            raise CryptoError(f"the coordinator's {exc}", field=exc.field) from None
        problems = []
        if layout.shape is not self._layout.shape:
            problems.append(f"shape {layout.shape.value} instead of {self._layout.shape.value}")
        if layout.subjects_per_ciphertext != self._per:
            problems.append(
                f"{layout.subjects_per_ciphertext} subjects per ciphertext instead of {self._per}"
            )
        if layout.base != self._model.base:
            problems.append(f"base {layout.base} instead of {self._model.base}")
        if layout.offset != self._layout.offset:
            problems.append(f"offset {layout.offset} instead of {self._layout.offset}")
        if not 0 < len(layout.departments) <= self._layout.contributors:
            problems.append(f"{len(layout.departments)} departments summed")
        if problems:
            raise CryptoError(
                "the coordinator's batch layout disagrees with the catalogue: "
                + "; ".join(problems),
                field="layout",
            )
        return len(layout.departments)

    def _chunk_rows(
        self, query_id: str, answer: wire.ChunkOutcome, contributors: int
    ) -> Iterator[BatchScore]:
        count = len(answer.subject_ids)
        if len(answer.ciphertexts) != -(-count // self._per):
            raise CryptoError(
                f"chunk {answer.chunk}: {len(answer.ciphertexts)} ciphertexts for {count} subjects",
                field="ciphertexts",
            )
        public = self._keys.public
        ciphertexts = [public.ciphertext_from_bytes(c) for c in answer.ciphertexts]
        values: list[tuple[int, ...]] = []
        for index, plaintext in enumerate(self._decryptor.decrypt(ciphertexts)):
            subjects = min(self._per, count - index * self._per)
            values += self._layout.unpack(plaintext, subjects=subjects, contributors=contributors)
        asked = self._outbox.sent.pop(answer.chunk, None)
        if asked is None or len(asked) != count + len(answer.refused):
            raise CryptoError(
                f"chunk {answer.chunk}: the answer accounts for {count + len(answer.refused)} "
                f"subjects, {len(asked or ())} were sent",
                field="subject_ids",
            )
        # the coordinator lists refused subjects apart; put every row back at its input place
        refusals: dict[str, list[str]] = {}
        for refused in answer.refused:
            refusals.setdefault(refused.subject_id, []).append(refused.reason)
        scored = iter(zip(answer.subject_ids, values, strict=True))
        for raw in asked:
            reasons = refusals.get(raw)
            if reasons:
                yield BatchScore(
                    subject_id=raw,
                    score=None,
                    grade=None,
                    deductions=None,
                    bonuses={},
                    refused=reasons.pop(0),
                    query_id=query_id,
                )
                continue
            found = next(scored, None)
            if found is None:
                raise CryptoError(
                    f"chunk {answer.chunk}: the answer does not account for input id {raw!r}",
                    field="subject_ids",
                )
            subject_id, slots = found
            yield self._row(query_id, subject_id, slots, contributors)

    def _row(
        self, query_id: str, subject_id: str, slots: tuple[int, ...], contributors: int
    ) -> BatchScore:
        model = self._model
        if self._layout.shape is Shape.TOTAL:
            total = self._layout.unclamped_total(slots[0], contributors=contributors)
            value = min(max(total, model.floor), model.ceiling)
            return BatchScore(
                subject_id=subject_id,
                score=value,
                grade=grade(model, value),
                deductions=None,
                bonuses={},
                refused=None,
                query_id=query_id,
            )
        bonuses = {c.name: v for c, v in zip(model.categories, slots[1:], strict=True)}
        value = score(model, Breakdown(deductions=slots[0], bonuses=dict(bonuses)))
        return BatchScore(
            subject_id=subject_id,
            score=value,
            grade=grade(model, value),
            deductions=slots[0],
            bonuses=bonuses,
            refused=None,
            query_id=query_id,
        )
