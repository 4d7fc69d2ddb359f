"""Batch scoring at the coordinator: chunk by chunk, every department, summed blindly, in order.

Memory stays bounded whatever the batch size: at most `window` chunks are in flight (being
answered by the nodes or waiting to be sent on), each at most MAX_CHUNK_SUBJECTS subjects.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from coordinator.context import CoordinatorContext
from coordinator.disclosure import DisclosureLedger
from coordinator.keys import KeyRegistry
from osmanthus.core.audited import AuditedRequest
from osmanthus.core.crypto import Ciphertext, EncryptorCache, PublicKey
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import (
    CryptoError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unavailable,
)
from osmanthus.core.ids import validate_subject
from osmanthus.core.names import validate_purpose
from osmanthus.core.policy import PolicyEngine
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import (
    PACKED_SHAPES,
    DepartmentId,
    DepartmentStatus,
    QueryId,
    Shape,
    SubjectKind,
)
from osmanthus.core.wire.coordinator import (
    BatchHeader,
    BatchPlan,
    ChunkOutcome,
    RefusedSubject,
    SubjectChunk,
)
from osmanthus.core.wire.node import MAX_CHUNK_SUBJECTS, ChunkRequest, ChunkResult

_log = logging.getLogger(__name__)

#: chunks in flight at once: enough to keep every node busy while one chunk is summed and sent
DEFAULT_WINDOW = 3
#: a chunk's deadline: the slowest node must score, pack and encrypt MAX_CHUNK_SUBJECTS subjects
DEFAULT_CHUNK_DEADLINE_S = 120.0
#: batches running at once: each holds an RPC thread for its whole length, and single queries
#: must keep the rest of the coordinator's threads
DEFAULT_MAX_BATCHES = 2
#: a batch whose client sends no chunk for this long is closed, freeing its place
DEFAULT_IDLE_S = 300.0
PINNED_REASON = (
    "earlier answers to you about this subject summed a different set of departments; a batch "
    "sums every department and would disclose the difference by subtraction: query it singly"
)


@dataclass(frozen=True)
class _Batch:
    query_id: QueryId
    claims: TokenClaims
    token: str
    kind: SubjectKind
    shape: Shape
    purpose: str
    key: PublicKey
    layout: SlotLayout
    per: int
    departments: tuple[DepartmentId, ...]
    engine: PolicyEngine


class SendWatchdog:
    """Cancels a call whose client has not taken one response within `seconds`.

    A client that stops reading blocks the server in flow control, holding its batch place;
    `with watchdog: yield response` times each hand-over, and only that.
    """

    def __init__(self, cancel: Callable[[], object], *, seconds: float = DEFAULT_IDLE_S) -> None:
        self._cancel = cancel
        self._seconds = seconds
        self._timer: threading.Timer | None = None
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        _log.warning("a batch client took no response for %g s; cancelling it", self._seconds)
        self._cancel()

    def __enter__(self) -> SendWatchdog:
        self._timer = threading.Timer(self._seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()


class BatchRun:
    """The chunks of one admitted batch; close() ends it and frees its place (idempotent)."""

    def __init__(self, outcomes: Iterator[ChunkOutcome], release: Callable[[], None]) -> None:
        self._outcomes = outcomes
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> Iterator[ChunkOutcome]:
        return self._outcomes

    def close(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            try:
                close = getattr(self._outcomes, "close", None)
                if close is not None:
                    close()
            finally:
                release()


class BatchScorer:
    """Runs BatchQuery streams for the coordinator service."""

    def __init__(
        self,
        context: CoordinatorContext,
        *,
        keys: KeyRegistry,
        ledger: DisclosureLedger,
        encryptors: EncryptorCache,
        window: int = DEFAULT_WINDOW,
        chunk_deadline_s: float = DEFAULT_CHUNK_DEADLINE_S,
        max_batches: int = DEFAULT_MAX_BATCHES,
        idle_s: float = DEFAULT_IDLE_S,
    ) -> None:
        self._ctx = context
        self._keys = keys
        self._ledger = ledger
        self._encryptors = encryptors
        self._window = window
        self._chunk_deadline_s = chunk_deadline_s
        self._max_batches = max_batches
        self._idle_s = idle_s
        self._running = threading.BoundedSemaphore(max_batches)
        self._workers = ThreadPoolExecutor(
            max_workers=max(2, window * max_batches), thread_name_prefix="osmanthus-batch"
        )

    def close(self) -> None:
        self._workers.shutdown(wait=False, cancel_futures=True)

    def plan(
        self,
        query_id: QueryId,
        header: BatchHeader,
        claims: TokenClaims,
        token: str,
        *,
        engine: PolicyEngine,
    ) -> tuple[BatchPlan, _Batch]:
        """Check everything about the batch that does not depend on its subjects.

        `engine` decides the whole batch; the caller names the same one in its audit entry.
        """
        kind = header.subject_kind
        if kind is None:
            raise InvalidArgument(
                "a subject kind (PERSON or ENTERPRISE) is required", field="header.subject_kind"
            )
        if header.shape is None:
            raise InvalidArgument(
                "a disclosure shape (BREAKDOWN or TOTAL) is required", field="header.shape"
            )
        shape = header.shape
        if shape not in PACKED_SHAPES:
            raise InvalidArgument(
                f"a batch answers breakdowns or totals, not {shape.value}", field="header.shape"
            )
        purpose = validate_purpose(header.purpose, field="header.purpose")
        claims.require_purpose(purpose)
        key = self._keys.registered_key(claims, header.public_key, field="header.public_key")
        decision = self._ctx.require(
            engine,
            claims,
            "BatchQuery",
            ("Dataset", kind.value),
            {"purpose": purpose, "shape": shape.value},
        )
        # the batch counts once against the limit, when it opens; a batch refused while it is
        # planned gives its place back
        with self._ctx.rate_limited(claims.requester, engine.rate_limits(decision)):
            expected = sorted(d.id for d in self._ctx.catalogue.departments_for(kind))
            absent = [d for d in expected if d not in self._ctx.nodes.departments]
            if absent:
                raise FailedPrecondition(
                    f"a batch sums every {kind.value} department, and no node is registered "
                    "for " + ", ".join(absent)
                )
            minimum = engine.min_departments(decision)
            if len(expected) < minimum:
                raise FailedPrecondition(
                    f"the catalogue names {len(expected)} {kind.value} department(s); the "
                    f"policy requires sums of at least {minimum}"
                )
        layout = SlotLayout.for_catalogue(self._ctx.catalogue, kind, shape)
        per = layout.capacity(key.bits)
        model = self._ctx.catalogue.model(kind)
        batch = _Batch(
            query_id=query_id,
            claims=claims,
            token=token,
            kind=kind,
            shape=shape,
            purpose=purpose,
            key=key,
            layout=layout,
            per=per,
            departments=tuple(DepartmentId(d) for d in expected),
            engine=engine,
        )
        plan = BatchPlan(
            query_id=query_id,
            shape=shape,
            slots=layout.names,
            slot_widths=layout.widths,
            subjects_per_ciphertext=per,
            base=model.base,
            offset=layout.offset,
            departments=tuple(DepartmentStatus(d, "summed in every chunk") for d in expected),
        )
        return plan, batch

    def admit(self, batch: _Batch, chunks: Iterable[SubjectChunk]) -> BatchRun:
        """Take one of the places for running batches, or refuse with Unavailable."""
        if not self._running.acquire(blocking=False):
            raise Unavailable(
                f"the coordinator is already running its maximum of {self._max_batches} batches; "
                "retry when one has finished"
            )
        return BatchRun(self._run(batch, chunks), self._running.release)

    def _run(self, batch: _Batch, chunks: Iterable[SubjectChunk]) -> Iterator[ChunkOutcome]:
        """Answer chunks in order, keeping at most `window` in flight."""
        inflight: deque[Future[ChunkOutcome]] = deque()
        expected_number = 0
        try:
            for chunk in _read_ahead(chunks, self._window, idle_s=self._idle_s):
                if chunk.chunk != expected_number:
                    raise InvalidArgument(
                        f"chunk {chunk.chunk} arrived where chunk {expected_number} was due; "
                        "number chunks 0, 1, 2, ... in order",
                        field="chunk",
                    )
                expected_number += 1
                if not 0 < len(chunk.subject_ids) <= MAX_CHUNK_SUBJECTS:
                    raise InvalidArgument(
                        f"chunk {chunk.chunk} has {len(chunk.subject_ids)} subjects; a chunk "
                        f"carries 1..{MAX_CHUNK_SUBJECTS}",
                        field="subject_ids",
                    )
                inflight.append(self._workers.submit(self._answer, batch, chunk))
                while len(inflight) >= self._window:
                    yield inflight.popleft().result()
            while inflight:
                yield inflight.popleft().result()
        finally:
            for future in inflight:
                future.cancel()

    def _answer(self, batch: _Batch, chunk: SubjectChunk) -> ChunkOutcome:
        record = AuditedRequest(
            query_id=batch.query_id,
            requester=batch.claims.requester,
            purpose=batch.purpose,
            policy_hash=batch.engine.hash,
            shape=batch.shape.value,
            extra={"chunk": chunk.chunk, "subjects": len(chunk.subject_ids)},
        )
        with self._ctx.audited(record):
            outcome = self._answer_checked(batch, chunk, record)
            record.allow(
                f"batch chunk {chunk.chunk}: sums of {len(outcome.subject_ids)} subjects "
                f"forwarded, {len(outcome.refused)} refused"
            )
        return outcome

    def _answer_checked(
        self, batch: _Batch, chunk: SubjectChunk, record: AuditedRequest
    ) -> ChunkOutcome:
        refused: list[RefusedSubject] = []
        valid: list[str] = []
        # a refusal names the id as the client sent it, which the client matches its input by
        raws: list[str] = []
        for raw in chunk.subject_ids:
            try:
                valid.append(validate_subject(batch.kind, raw, field="subject_ids"))
                raws.append(raw)
            except InvalidArgument as exc:
                refused.append(RefusedSubject(raw, f"invalid: {exc}"))
        hashes = self._ctx.audit.subject_hashes(valid)
        record.subject_hashes = tuple(hashes)
        allowed = self._ledger.settle_batch(
            requester=batch.claims.requester,
            subject_kind=batch.kind,
            subject_hashes=hashes,
            departments=frozenset(batch.departments),
            now=self._ctx.clock(),
        )
        subjects = tuple(s for s, ok in zip(valid, allowed, strict=True) if ok)
        refused += [
            RefusedSubject(raw, PINNED_REASON)
            for raw, ok in zip(raws, allowed, strict=True)
            if not ok
        ]
        record.extra["refused"] = len(refused)
        if not subjects:
            return ChunkOutcome(chunk.chunk, (), (), tuple(refused))
        request = ChunkRequest(
            query_id=batch.query_id,
            chunk=chunk.chunk,
            subject_kind=batch.kind,
            subject_ids=subjects,
            shape=batch.shape,
            purpose=batch.purpose,
            public_key=batch.key.to_bytes(),
            slots=batch.layout.names,
            slot_widths=batch.layout.widths,
            subjects_per_ciphertext=batch.per,
        )
        answers, failures = self._ctx.nodes.contribute_chunk_all(
            batch.departments,
            request,
            token=batch.token,
            deadline_s=self._chunk_deadline_s,
        )
        if failures:
            why = "; ".join(f"{f.department}: {f.reason}" for f in failures)
            lasting = [f for f in failures if f.error is not None and not f.error.retryable]
            if lasting:
                # a refusal will not go away by asking again: say so, and do not invite a resume
                raise PermissionDenied(
                    f"chunk {chunk.chunk}: a batch needs every department, and {why}; this is "
                    "not a passing fault: the department's policy or your token must change first"
                )
            raise Unavailable(
                f"chunk {chunk.chunk}: a batch needs every department and {why}; resume the "
                "batch from this chunk when it answers"
            )
        count = -(-len(subjects) // batch.per)
        record.extra["ciphertexts_received"] = count * len(answers)
        record.extra["ciphertext_bytes_received"] = sum(
            len(c) for a in answers for c in a.ciphertexts
        )
        sums = self._sum(batch.key, answers, count, chunk.chunk)
        record.extra["ciphertexts_forwarded"] = count
        return ChunkOutcome(chunk.chunk, subjects, sums, tuple(refused))

    def _sum(
        self, key: PublicKey, answers: list[ChunkResult], count: int, chunk: int
    ) -> tuple[bytes, ...]:
        columns: list[list[Ciphertext]] = [[] for _ in range(count)]
        for answer in answers:
            if len(answer.ciphertexts) != count or answer.chunk != chunk:
                raise Unavailable(
                    f"chunk {chunk}: department {answer.department} sent "
                    f"{len(answer.ciphertexts)} ciphertexts for chunk {answer.chunk}, expected "
                    f"{count} for chunk {chunk}; the batch stops here"
                )
            try:
                for column, raw in zip(columns, answer.ciphertexts, strict=True):
                    column.append(key.ciphertext_from_bytes(raw, field="ciphertexts"))
            except CryptoError as exc:
                raise Unavailable(
                    f"chunk {chunk}: department {answer.department} sent an invalid ciphertext "
                    f"({exc}); the batch stops here"
                ) from exc
        # a fresh E(0) per sum: the forwarded ciphertexts are unlinkable to every received one
        return tuple(
            key.add(key.add(*column), self._encryptors.encrypt(key, 0)).to_bytes()
            for column in columns
        )


_END = object()


def _read_ahead(
    chunks: Iterable[SubjectChunk], depth: int, *, idle_s: float
) -> Iterator[SubjectChunk]:
    """Pull from the client's stream on a thread, so reading overlaps answering."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in chunks:
                if not offer(item):
                    return
            offer(_END)
        except BaseException as exc:  # the stream's error surfaces in the consumer
            offer(exc)

    thread = threading.Thread(target=pump, name="osmanthus-batch-reader", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=idle_s)
            except queue.Empty:
                raise DeadlineExceeded(
                    f"no chunk arrived for {idle_s:g} s; the batch is closed", field="chunk"
                ) from None
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
