"""TransparencyService's and WitnessService's wire contract: checkpoints, proofs, entries.

Both ends use these types and conversions (the log servers, the witnesses and
`sdk.transparency`), so a field added to transparency.proto is read and written in one place.
Values read from the wire are checked for shape only (sizes, hash lengths, counts); whether a
note is signed by the right key or a proof proves anything is the reader's job
(`sdk.transparency` verifies both).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from osmanthus.core import merkle
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.signednote import MAX_NOTE_BYTES, MAX_TREE_SIZE
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.v1 import transparency_pb2

#: GetEntries serves at most this many entries a call (transparency.proto)
MAX_ENTRIES_PER_CALL: Final = 1000
#: the most bytes one GetEntries response takes: every Osmanthus server's receive limit, so that
#: a page passes any channel on its way (a relayed page crosses the coordinator). A log stops a
#: page before the line that would not fit, and the reader goes on from there; a 10,000-subject
#: batch chunk's line (~700 KB) fits alone
MAX_ENTRIES_RESPONSE_BYTES: Final = MAX_RECEIVE_BYTES
#: what a GetEntriesResponse adds to its entries' bytes, at most: start and tree_size (a tag and
#: a 10-byte varint each, rounded up) and per entry a tag and a length varint
ENTRIES_RESPONSE_OVERHEAD_BYTES: Final = 32
ENTRY_OVERHEAD_BYTES: Final = 6
#: the receive limit of every channel that carries TransparencyService answers (the SDK's
#: clients, the coordinator's relay to the nodes): gRPC's default, four times a page's
#: MAX_ENTRIES_RESPONSE_BYTES; no larger, since the coordinator's channel to a node carries
#: every NodeService answer too, and a misbehaving node must not send more than it could before
TRANSPARENCY_RECEIVE_BYTES: Final = 4 << 20


@dataclass(frozen=True)
class InclusionProof:
    """RFC 9162 §2.1.3 audit path of leaf `leaf_index` in the tree of `tree_size`, and the
    entry's line (the leaf's input, without its newline)."""

    leaf_index: int
    tree_size: int
    hashes: tuple[bytes, ...]
    entry: bytes


@dataclass(frozen=True)
class ConsistencyProof:
    """RFC 9162 §2.1.4 consistency path from `first_size` to `second_size`."""

    first_size: int
    second_size: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class EntriesPage:
    """Entries [start, start + len(entries)) as the log holds them, and the log's tree size
    when they were read."""

    start: int
    entries: tuple[bytes, ...]
    tree_size: int


def _size(value: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TREE_SIZE:
        raise InvalidArgument(f"must be a tree size, 0 to {MAX_TREE_SIZE}", field=field)
    return value


def _hashes(values: Sequence[bytes], field: str) -> tuple[bytes, ...]:
    if len(values) > merkle.MAX_PROOF_HASHES:
        raise InvalidArgument(
            f"{len(values)} hashes; a proof has at most {merkle.MAX_PROOF_HASHES}", field=field
        )
    for i, value in enumerate(values):
        if len(value) != merkle.HASH_BYTES:
            raise InvalidArgument(
                f"hash {i} has {len(value)} bytes, not {merkle.HASH_BYTES}", field=field
            )
    return tuple(bytes(value) for value in values)


# --- requests ------------------------------------------------------------------------------------


def get_checkpoint_request(origin: str) -> transparency_pb2.GetCheckpointRequest:
    return transparency_pb2.GetCheckpointRequest(origin=origin)


def inclusion_proof_request(
    origin: str, leaf_index: int, tree_size: int
) -> transparency_pb2.GetInclusionProofRequest:
    if not 0 <= _size(leaf_index, "leaf_index") < _size(tree_size, "tree_size"):
        raise InvalidArgument(f"leaf {leaf_index} is not in a tree of {tree_size}", field="index")
    return transparency_pb2.GetInclusionProofRequest(
        origin=origin, leaf_index=leaf_index, tree_size=tree_size
    )


def consistency_proof_request(
    origin: str, first_size: int, second_size: int
) -> transparency_pb2.GetConsistencyProofRequest:
    if not 0 < _size(first_size, "first_size") <= _size(second_size, "second_size"):
        raise InvalidArgument(
            f"no consistency proof from {first_size} to {second_size}: 0 < first <= second",
            field="first_size",
        )
    return transparency_pb2.GetConsistencyProofRequest(
        origin=origin, first_size=first_size, second_size=second_size
    )


def entries_request(origin: str, start: int, end: int) -> transparency_pb2.GetEntriesRequest:
    if not 0 <= _size(start, "start") < _size(end, "end"):
        raise InvalidArgument(f"no entries in [{start}, {end}): start < end", field="end")
    if end - start > MAX_ENTRIES_PER_CALL:
        raise InvalidArgument(
            f"{end - start} entries asked; at most {MAX_ENTRIES_PER_CALL} a call", field="end"
        )
    return transparency_pb2.GetEntriesRequest(origin=origin, start=start, end=end)


def add_cosignatures_request(origin: str, note: bytes) -> transparency_pb2.AddCosignaturesRequest:
    return transparency_pb2.AddCosignaturesRequest(origin=origin, note=_note(note))


def add_checkpoint_request(body: bytes) -> transparency_pb2.AddCheckpointRequest:
    return transparency_pb2.AddCheckpointRequest(body=body)


def get_witnessed_request(origin: str) -> transparency_pb2.GetWitnessedRequest:
    return transparency_pb2.GetWitnessedRequest(origin=origin)


# --- answers -------------------------------------------------------------------------------------


def _note(note: bytes) -> bytes:
    if len(note) > MAX_NOTE_BYTES:
        raise InvalidArgument(f"longer than {MAX_NOTE_BYTES} bytes", field="note")
    return bytes(note)


def signed_checkpoint_to_proto(
    note: bytes, *, origin: str, tree_size: int, root_hash: bytes
) -> transparency_pb2.SignedCheckpoint:
    """The message for a signed note; origin, size and root are the note's, for convenience."""
    return transparency_pb2.SignedCheckpoint(
        note=note, origin=origin, tree_size=tree_size, root_hash=root_hash
    )


def signed_checkpoint_note(message: transparency_pb2.SignedCheckpoint) -> bytes:
    """The signed note of a SignedCheckpoint: the one thing a reader verifies (the parsed
    fields beside it are checked against the note by `sdk.transparency`)."""
    if not message.note:
        raise InvalidArgument("the answer carries no signed note", field="note")
    return _note(message.note)


def inclusion_proof_to_proto(proof: InclusionProof) -> transparency_pb2.InclusionProof:
    return transparency_pb2.InclusionProof(
        leaf_index=proof.leaf_index,
        tree_size=proof.tree_size,
        hashes=list(proof.hashes),
        entry=proof.entry,
    )


def inclusion_proof_from_proto(message: transparency_pb2.InclusionProof) -> InclusionProof:
    return InclusionProof(
        leaf_index=_size(message.leaf_index, "leaf_index"),
        tree_size=_size(message.tree_size, "tree_size"),
        hashes=_hashes(message.hashes, "hashes"),
        entry=bytes(message.entry),
    )


def consistency_proof_to_proto(proof: ConsistencyProof) -> transparency_pb2.ConsistencyProof:
    return transparency_pb2.ConsistencyProof(
        first_size=proof.first_size, second_size=proof.second_size, hashes=list(proof.hashes)
    )


def consistency_proof_from_proto(message: transparency_pb2.ConsistencyProof) -> ConsistencyProof:
    return ConsistencyProof(
        first_size=_size(message.first_size, "first_size"),
        second_size=_size(message.second_size, "second_size"),
        hashes=_hashes(message.hashes, "hashes"),
    )


def entries_page_to_proto(page: EntriesPage) -> transparency_pb2.GetEntriesResponse:
    return transparency_pb2.GetEntriesResponse(
        start=page.start, entries=list(page.entries), tree_size=page.tree_size
    )


def entries_page_from_proto(message: transparency_pb2.GetEntriesResponse) -> EntriesPage:
    if len(message.entries) > MAX_ENTRIES_PER_CALL:
        raise InvalidArgument(
            f"{len(message.entries)} entries; at most {MAX_ENTRIES_PER_CALL} a call",
            field="entries",
        )
    return EntriesPage(
        start=_size(message.start, "start"),
        entries=tuple(bytes(entry) for entry in message.entries),
        tree_size=_size(message.tree_size, "tree_size"),
    )


def add_checkpoint_response(signatures: bytes) -> transparency_pb2.AddCheckpointResponse:
    return transparency_pb2.AddCheckpointResponse(signatures=signatures)


def add_checkpoint_signatures(message: transparency_pb2.AddCheckpointResponse) -> bytes:
    if not message.signatures:
        raise InvalidArgument("the witness answered no cosignature", field="signatures")
    return _note(message.signatures)
