"""Clients of TransparencyService and WitnessService, and the checks of what a log serves.

>>> with TransparencyClient.connect("127.0.0.1:50051", tls=tls, server_name=name) as log:
...     head = log.get_checkpoint(origin, log_key=roster.log_verifier(origin))
...     proof = log.inclusion_proof(17, head)          # verified against head's root
...     later = log.get_checkpoint(origin, log_key=roster.log_verifier(origin))
...     log.consistency_proof(head, later)             # verified: later extends head

Nothing a log serves is trusted: a checkpoint counts only once its note verifies with the log's
key from the roster (C2SP signed-note), an inclusion proof only once it leads to a verified
checkpoint's root (RFC 9162 §2.1.3.2), a consistency proof only once it links two verified
checkpoints' roots (RFC 9162 §2.1.4.2). A log that serves anything else gets a CryptoError
naming what failed. Refusals by the server arrive as Osmanthus errors
(osmanthus.core.grpc_errors): Unavailable and DeadlineExceeded are worth retrying; a witness's
conflict is a FailedPrecondition whose reason and latest size are in its message.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, TypeVar

import grpc

from osmanthus.core import merkle
from osmanthus.core.errors import CryptoError, InvalidArgument, Unauthenticated
from osmanthus.core.grpc_errors import error_from_rpc
from osmanthus.core.signednote import (
    SIGNATURE_LINE_PREFIX,
    Checkpoint,
    CosignatureVerifier,
    NoteVerifier,
    open_note,
    parse_checkpoint,
)
from osmanthus.core.tls import TlsFiles, secure_channel
from osmanthus.core.wire import transparency as wire
from osmanthus.core.wire.transparency import (
    MAX_ENTRIES_PER_CALL,
    ConsistencyProof,
    InclusionProof,
)
from osmanthus.v1 import transparency_pb2_grpc

DEFAULT_TIMEOUT_S: Final = 30.0
#: entries can be long (a batch entry names thousands of subjects): a log caps a page at
#: wire.MAX_ENTRIES_RESPONSE_BYTES, but one that caps pages by count only may send 1,000 of them
MAX_RECEIVE_BYTES: Final = wire.TRANSPARENCY_RECEIVE_BYTES
T = TypeVar("T")
M = TypeVar("M")

__all__ = [
    "ConsistencyProof",
    "InclusionProof",
    "TransparencyClient",
    "VerifiedCheckpoint",
    "WitnessClient",
    "check_cosignatures",
    "verify_checkpoint",
]


@dataclass(frozen=True)
class VerifiedCheckpoint:
    """A checkpoint whose note verified with the log's key.

    `cosigned_at` maps each witness whose cosignature verified to the time it states (POSIX
    seconds); `bad_cosignatures` names the given witnesses whose signature line is there but
    does not verify (a forged or damaged cosignature); `missing` those who did not cosign.
    """

    checkpoint: Checkpoint
    note: bytes
    cosigned_at: Mapping[str, int] = field(default_factory=dict)
    bad_cosignatures: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        return self.checkpoint.origin

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root(self) -> bytes:
        return self.checkpoint.root_hash


def verify_checkpoint(
    note: bytes,
    *,
    log_key: NoteVerifier,
    witnesses: Sequence[CosignatureVerifier] = (),
    origin: str | None = None,
) -> VerifiedCheckpoint:
    """Open a checkpoint note with the log's key and report each witness's cosignature.

    Unauthenticated when the log's own signature is missing or does not verify (a witness's
    cosignature alone never makes a checkpoint the log's); InvalidArgument for a malformed
    note, or one for another origin than `origin` (default: the key's name, as a log's key is
    named after its origin).
    """
    opened = open_note(note, [log_key])
    if log_key.name not in opened.signatures:  # pragma: no cover - open_note refuses it first
        raise Unauthenticated(f"the note is not signed by {log_key.name}", field="note")
    checkpoint = parse_checkpoint(opened.text)
    expected = origin if origin is not None else log_key.name
    if checkpoint.origin != expected:
        raise InvalidArgument(
            f"the checkpoint is for origin {checkpoint.origin!r}, not {expected!r}",
            field="checkpoint.origin",
        )
    cosigned, bad, missing = check_cosignatures(note, witnesses)
    return VerifiedCheckpoint(
        checkpoint=checkpoint,
        note=bytes(note),
        cosigned_at=MappingProxyType(cosigned),
        bad_cosignatures=bad,
        missing=missing,
    )


def check_cosignatures(
    note: bytes, witnesses: Sequence[CosignatureVerifier]
) -> tuple[dict[str, int], tuple[str, ...], tuple[str, ...]]:
    """Each witness's cosignature on a note (C2SP tlog-cosignature), checked one by one:
    (witness -> the time its verified cosignature states, witnesses whose line is there but
    does not verify, witnesses with no line). The log's own signature is not checked here."""
    cosigned: dict[str, int] = {}
    bad: list[str] = []
    missing: list[str] = []
    text = note.decode("utf-8", errors="replace")
    for witness in witnesses:
        if f"\n{SIGNATURE_LINE_PREFIX}{witness.name} " not in text:
            missing.append(witness.name)
            continue
        try:
            found = open_note(note, [witness])
        except (Unauthenticated, InvalidArgument):
            bad.append(witness.name)
            continue
        if witness.name in found.cosigned_at:
            cosigned[witness.name] = found.cosigned_at[witness.name]
        else:  # a line under the witness's name but another key ID: not this witness's key
            missing.append(witness.name)
    return cosigned, tuple(bad), tuple(missing)


def _from_log(convert: Callable[[M], T], message: M, what: str) -> T:
    """A server's answer as typed values; one no honest log sends is a CryptoError."""
    try:
        return convert(message)
    except InvalidArgument as exc:
        raise CryptoError(
            f"the log sent a malformed {what}: {exc.message}", field=exc.field
        ) from None


class _Stub:
    """What both clients share: a channel, a timeout and the error mapping."""

    def __init__(self, *, channel: grpc.Channel, timeout_s: float, owns_channel: bool) -> None:
        self._channel = channel
        self._timeout_s = timeout_s
        self._owns_channel = owns_channel

    def _call(self, method: Callable[..., T], request: object) -> T:
        try:
            return method(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None

    def close(self) -> None:
        """Close the channel if this client opened it (`connect`)."""
        if self._owns_channel:
            self._channel.close()


def _channel(target: str, tls: TlsFiles, server_name: str) -> grpc.Channel:
    return secure_channel(
        target,
        tls,
        server_name=server_name,
        options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)],
    )


class TransparencyClient(_Stub):
    """TransparencyService of one server (a node's own log, or the coordinator's log and the
    nodes' logs it relays by origin). `origin` "" asks for the server's own log."""

    def __init__(
        self,
        *,
        channel: grpc.Channel,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        owns_channel: bool = False,
    ) -> None:
        super().__init__(channel=channel, timeout_s=timeout_s, owns_channel=owns_channel)
        self._stub = transparency_pb2_grpc.TransparencyServiceStub(channel)

    @classmethod
    def connect(
        cls, target: str, *, tls: TlsFiles, server_name: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> TransparencyClient:
        """A client over a new mutual-TLS channel to `target`, whose certificate must name
        `server_name`; `close()` (or the with block) closes the channel."""
        return cls(
            channel=_channel(target, tls, server_name), timeout_s=timeout_s, owns_channel=True
        )

    def __enter__(self) -> TransparencyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_checkpoint_note(self, origin: str = "") -> bytes:
        """The log's latest signed note, with the cosignatures it holds, unverified."""
        message = self._call(self._stub.GetCheckpoint, wire.get_checkpoint_request(origin))
        return _from_log(wire.signed_checkpoint_note, message, "checkpoint")

    def get_checkpoint(
        self,
        origin: str = "",
        *,
        log_key: NoteVerifier,
        witnesses: Sequence[CosignatureVerifier] = (),
    ) -> VerifiedCheckpoint:
        """The log's latest checkpoint, verified with `log_key` (and, reported in the result,
        each witness's cosignature); CryptoError when the log's signature fails or the
        checkpoint is another log's."""
        note = self.get_checkpoint_note(origin)
        try:
            return verify_checkpoint(
                note, log_key=log_key, witnesses=witnesses, origin=origin or None
            )
        except (Unauthenticated, InvalidArgument) as exc:
            raise CryptoError(
                f"the checkpoint served for {origin or 'the server own log'} does not verify "
                f"with the key {log_key.name}: {exc.message}",
                field="checkpoint",
            ) from None

    def inclusion_proof(
        self, index: int, checkpoint: VerifiedCheckpoint, *, origin: str | None = None
    ) -> InclusionProof:
        """Entry `index`'s inclusion proof in `checkpoint`'s tree, verified against its root:
        the entry the proof carries is then the one the checkpoint commits to."""
        request = wire.inclusion_proof_request(
            checkpoint.origin if origin is None else origin, index, checkpoint.size
        )
        message = self._call(self._stub.GetInclusionProof, request)
        proof = _from_log(wire.inclusion_proof_from_proto, message, "inclusion proof")
        if (proof.leaf_index, proof.tree_size) != (index, checkpoint.size):
            raise CryptoError(
                f"asked for leaf {index} in {checkpoint.size}, the log proved leaf "
                f"{proof.leaf_index} in {proof.tree_size}",
                field="inclusion_proof",
            )
        try:
            merkle.verify_inclusion(
                index, checkpoint.size, merkle.leaf_hash(proof.entry), proof.hashes, checkpoint.root
            )
        except merkle.ProofError as exc:
            raise CryptoError(
                f"the inclusion proof of entry {index} in checkpoint {checkpoint.size} does "
                f"not verify: {exc.message}",
                field="inclusion_proof",
            ) from None
        return proof

    def consistency_proof(
        self,
        first: VerifiedCheckpoint,
        second: VerifiedCheckpoint,
        *,
        origin: str | None = None,
    ) -> ConsistencyProof:
        """The proof that `second`'s tree extends `first`'s, verified (RFC 9162 §2.1.4.2)."""
        if first.origin != second.origin:
            raise InvalidArgument(
                f"checkpoints of two logs ({first.origin!r}, {second.origin!r})", field="second"
            )
        if first.size > second.size:
            raise InvalidArgument(
                f"the first checkpoint ({first.size}) is ahead of the second ({second.size})",
                field="first",
            )
        if first.size == 0:
            # every tree extends the empty one: there is nothing to ask
            return ConsistencyProof(first_size=0, second_size=second.size, hashes=())
        request = wire.consistency_proof_request(
            first.origin if origin is None else origin, first.size, second.size
        )
        message = self._call(self._stub.GetConsistencyProof, request)
        proof = _from_log(wire.consistency_proof_from_proto, message, "consistency proof")
        if (proof.first_size, proof.second_size) != (first.size, second.size):
            raise CryptoError(
                f"asked for consistency from {first.size} to {second.size}, the log proved "
                f"{proof.first_size} to {proof.second_size}",
                field="consistency_proof",
            )
        try:
            merkle.verify_consistency(
                first.size, second.size, first.root, second.root, proof.hashes
            )
        except merkle.ProofError as exc:
            raise CryptoError(
                f"checkpoint {second.size} does not extend checkpoint {first.size}: {exc.message}",
                field="consistency_proof",
            ) from None
        return proof

    def raw_consistency_proof(
        self, origin: str, first_size: int, second_size: int
    ) -> ConsistencyProof:
        """The log's consistency proof between two sizes, unverified (the caller holds the
        roots to verify it with, e.g. roots it computed itself from the entries)."""
        request = wire.consistency_proof_request(origin, first_size, second_size)
        message = self._call(self._stub.GetConsistencyProof, request)
        return _from_log(wire.consistency_proof_from_proto, message, "consistency proof")

    def entries(
        self, start: int, end: int, *, origin: str = "", page_size: int = MAX_ENTRIES_PER_CALL
    ) -> Iterator[bytes]:
        """Entries [start, end) as the log holds them (each the leaf's input), fetched in pages
        of at most `page_size` (≤ 1,000). Unverified: hash them into the root of a verified
        checkpoint (or check each with `inclusion_proof`) before trusting them."""
        if not 1 <= page_size <= MAX_ENTRIES_PER_CALL:
            raise InvalidArgument(
                f"page_size must be 1 to {MAX_ENTRIES_PER_CALL}", field="page_size"
            )
        position = start
        while position < end:
            stop = min(end, position + page_size)
            request = wire.entries_request(origin, position, stop)
            message = self._call(self._stub.GetEntries, request)
            page = _from_log(wire.entries_page_from_proto, message, "page of entries")
            if page.start != position or not page.entries:
                raise CryptoError(
                    f"asked for entries from {position}, the log sent {len(page.entries)} "
                    f"from {page.start}",
                    field="entries",
                )
            if len(page.entries) > stop - position:
                raise CryptoError(
                    f"asked for {stop - position} entries from {position}, the log sent "
                    f"{len(page.entries)}",
                    field="entries",
                )
            # a server may send fewer than asked (a size cap): continue where it stopped
            yield from page.entries
            position += len(page.entries)

    def add_cosignatures(self, note: bytes, *, origin: str = "") -> bytes:
        """Hand the log a witness's cosigned note; the answer is the note the log now serves."""
        message = self._call(
            self._stub.AddCosignatures, wire.add_cosignatures_request(origin, note)
        )
        return _from_log(wire.signed_checkpoint_note, message, "checkpoint")


class WitnessClient(_Stub):
    """WitnessService of one witness (C2SP tlog-witness semantics over gRPC)."""

    def __init__(
        self,
        *,
        channel: grpc.Channel,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        owns_channel: bool = False,
    ) -> None:
        super().__init__(channel=channel, timeout_s=timeout_s, owns_channel=owns_channel)
        self._stub = transparency_pb2_grpc.WitnessServiceStub(channel)

    @classmethod
    def connect(
        cls, target: str, *, tls: TlsFiles, server_name: str, timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> WitnessClient:
        return cls(
            channel=_channel(target, tls, server_name), timeout_s=timeout_s, owns_channel=True
        )

    def __enter__(self) -> WitnessClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_checkpoint(self, body: bytes) -> bytes:
        """Send an add-checkpoint body (osmanthus.core.witness.encode_add_checkpoint); the
        answer is the witness's cosignature line(s). A refusal raises: NotFound (unknown
        origin), PermissionDenied (bad log signature), InvalidArgument (old size ahead, bad
        body), FailedPrecondition (conflict: the witness's latest size is in the message;
        or an inconsistent proof)."""
        message = self._call(self._stub.AddCheckpoint, wire.add_checkpoint_request(body))
        return _from_log(wire.add_checkpoint_signatures, message, "cosignature")

    def get_witnessed_note(self, origin: str) -> bytes:
        """What the witness last cosigned for `origin`, unverified."""
        message = self._call(self._stub.GetWitnessed, wire.get_witnessed_request(origin))
        return _from_log(wire.signed_checkpoint_note, message, "checkpoint")

    def get_witnessed(
        self,
        origin: str,
        *,
        log_key: NoteVerifier,
        witnesses: Sequence[CosignatureVerifier] = (),
    ) -> VerifiedCheckpoint:
        """What the witness last cosigned for `origin`, verified with the log's key."""
        note = self.get_witnessed_note(origin)
        try:
            return verify_checkpoint(note, log_key=log_key, witnesses=witnesses, origin=origin)
        except (Unauthenticated, InvalidArgument) as exc:
            raise CryptoError(
                f"the witness's checkpoint of {origin} does not verify with the log's key: "
                f"{exc.message}",
                field="checkpoint",
            ) from None
