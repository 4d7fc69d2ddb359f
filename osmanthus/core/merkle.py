"""RFC 6962 / RFC 9162 Merkle trees: hashes, roots, inclusion and consistency proofs, a file store.

The tree hash (RFC 9162 §2.1.1): a leaf is SHA-256(0x00 || entry), an interior node
SHA-256(0x01 || left || right), and a tree of n > 1 leaves splits at k, the largest power of two
smaller than n. Proofs are generated as RFC 9162 §2.1.3.1 (PATH) and §2.1.4.1 (PROOF/SUBPROOF)
define them and verified with the algorithms of §2.1.3.2 and §2.1.4.2, which the
transparency-dev reference code implements; the published reference vectors are in the tests.

`HashStore` keeps a log's tree on disk beside its entries: one file of 32-byte hashes per level,
level 0 the leaf hashes and level h the hashes of the complete subtrees of 2^h leaves, each
appended when its last leaf arrives. An append writes one hash per level it completes (two on
average), a root or a proof reads O(log n) hashes (O(log² n) for the right edge of a proof), and
a restart reads nothing but the files' sizes: the tree is never rehashed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final, Protocol

from osmanthus.core.errors import ConfigError, InvalidArgument

HASH_BYTES: Final = 32
#: RFC 9162 §2.1.1 domain separation of leaves and interior nodes
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
#: MTH({}) = SHA-256 of the empty string
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
#: a proof for a tree of at most 2^64 leaves has at most 64 hashes (128 for consistency)
MAX_PROOF_HASHES: Final = 128


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


class SubtreeHashes(Protocol):
    """What proofs are built from: the hash of leaves [start, end) of a tree."""

    def subtree(self, start: int, end: int) -> bytes: ...


class MemoryTree:
    """A tree over leaf hashes held in memory (tests, verifiers replaying a log)."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self.leaves: list[bytes] = list(leaves)

    def append(self, leaf: bytes) -> None:
        self.leaves.append(leaf)

    @property
    def size(self) -> int:
        return len(self.leaves)

    def subtree(self, start: int, end: int) -> bytes:
        if end - start == 1:
            return self.leaves[start]
        k = _split(end - start)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        n = self.size if size is None else size
        return EMPTY_ROOT if n == 0 else self.subtree(0, n)


def root_of(entries: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of raw entries (RFC 9162 §2.1.1)."""
    return MemoryTree(leaf_hash(e) for e in entries).root()


# --- generating proofs ---------------------------------------------------------------------------


def inclusion_proof(tree: SubtreeHashes, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf-side first."""
    if not 0 <= index < size:
        raise InvalidArgument(f"leaf {index} is not in a tree of {size}", field="index")
    path: list[bytes] = []
    start, end = 0, size
    # walk down from the root, keeping the sibling of each subtree the leaf lies in
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(tree.subtree(start + k, end))
            end = start + k
        else:
            path.append(tree.subtree(start, start + k))
            start = start + k
    path.reverse()
    return path


def consistency_proof(tree: SubtreeHashes, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1)."""
    if not 0 < old_size <= new_size:
        raise InvalidArgument(
            f"no consistency proof from {old_size} to {new_size} leaves: 0 < old <= new",
            field="old_size",
        )
    if old_size == new_size:
        return []
    return _subproof(tree, old_size, 0, new_size, True)


def _subproof(tree: SubtreeHashes, m: int, start: int, end: int, whole: bool) -> list[bytes]:
    n = end - start
    if m == n:
        return [] if whole else [tree.subtree(start, end)]
    k = _split(n)
    if m <= k:
        return [*_subproof(tree, m, start, start + k, whole), tree.subtree(start + k, end)]
    return [*_subproof(tree, m - k, start + k, end, False), tree.subtree(start, start + k)]


# --- verifying proofs (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------------------------


class ProofError(InvalidArgument):
    """A proof does not prove what it claims; the message says where it fails."""


def _check_hashes(proof: Sequence[bytes], field: str) -> None:
    if len(proof) > MAX_PROOF_HASHES:
        raise ProofError(f"{len(proof)} hashes; at most {MAX_PROOF_HASHES}", field=field)
    for i, h in enumerate(proof):
        if not isinstance(h, bytes) or len(h) != HASH_BYTES:
            raise ProofError(f"hash {i} is not {HASH_BYTES} bytes", field=field)


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root `proof` makes of `leaf` at `index` in a tree of `size`; ProofError when the
    proof has the wrong length for that position (RFC 9162 §2.1.3.2)."""
    _check_hashes(proof, "inclusion_proof")
    if not 0 <= index < size:
        raise ProofError(f"leaf {index} is not in a tree of {size}", field="index")
    fn, sn = index, size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            raise ProofError(
                f"the inclusion proof of leaf {index} in {size} has too many hashes",
                field="inclusion_proof",
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"the inclusion proof of leaf {index} in {size} has too few hashes",
            field="inclusion_proof",
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """ProofError unless `proof` shows `leaf` at `index` in the tree of `size` with `root`."""
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(
            f"leaf {index} is not in the tree of {size} with that root (the proof leads to "
            "another root)",
            field="inclusion_proof",
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """ProofError unless `proof` shows that the tree of `new_size` with `new_root` extends the
    tree of `old_size` with `old_root` (RFC 9162 §2.1.4.2)."""
    _check_hashes(proof, "consistency_proof")
    if old_size < 1 or old_size > new_size:
        raise ProofError(
            f"no consistency from {old_size} to {new_size} leaves (old size ahead of new, or 0)",
            field="old_size",
        )
    if old_size == new_size:
        if proof:
            raise ProofError("equal sizes take an empty proof", field="consistency_proof")
        if old_root != new_root:
            raise ProofError(
                f"two different roots for the same size {old_size}: the log forked or an "
                "entry changed",
                field="new_root",
            )
        return
    if not proof:
        raise ProofError(
            f"the consistency proof from {old_size} to {new_size} is empty",
            field="consistency_proof",
        )
    path = list(proof)
    # a power-of-two old tree is a complete subtree of the new one: its root starts the path
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(
                f"the consistency proof from {old_size} to {new_size} has too many hashes",
                field="consistency_proof",
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"the consistency proof from {old_size} to {new_size} has too few hashes",
            field="consistency_proof",
        )
    if fr != old_root:
        raise ProofError(
            f"the tree of {new_size} does not extend the tree of {old_size} with that root: "
            "its first entries differ (an entry changed, was removed or reordered)",
            field="old_root",
        )
    if sr != new_root:
        raise ProofError(
            f"the consistency proof from {old_size} leads to another root of {new_size} than "
            "the one given",
            field="new_root",
        )


# --- the tree on disk ----------------------------------------------------------------------------


class HashStore:
    """A log's Merkle tree in files `<prefix>.<level>` beside the log (see the module docstring).

    Appends are serialised by the caller or by the store's lock; readers may run concurrently
    with appends and see the tree as of any completed append they ask about (sizes given)."""

    def __init__(self, directory: Path, *, prefix: str = "tree") -> None:
        self.directory = Path(directory)
        self.prefix = prefix
        self._lock = threading.Lock()
        self._files: list[int] = []
        self._size = 0
        try:
            self._open_levels()
        except BaseException:
            for fd in self._files:
                os.close(fd)
            raise

    def _path(self, level: int) -> Path:
        return self.directory / f"{self.prefix}.{level}"

    def _open_levels(self) -> None:
        level = 0
        while self._path(level).exists():
            fd = os.open(self._path(level), os.O_RDWR | os.O_APPEND)
            self._files.append(fd)
            level += 1
        if not self._files:
            self._files.append(self._open_new(0))
        stray = sorted(
            str(path)
            for path in self.directory.glob(f"{self.prefix}.*")
            if path.suffix[1:].isdigit() and int(path.suffix[1:]) > len(self._files)
        )
        if stray:
            raise ConfigError(
                f"{self._path(len(self._files))} is missing but {', '.join(stray)} exist: the "
                "tree files are out of step; delete them all and let the log rebuild its tree"
            )
        sizes = [os.fstat(fd).st_size for fd in self._files]
        for lvl, length in enumerate(sizes):
            if length % HASH_BYTES:
                raise ConfigError(
                    f"{self._path(lvl)}: {length} bytes is not a whole number of {HASH_BYTES}-byte "
                    "hashes (torn write): delete the tree files and let the log rebuild its tree"
                )
        self._size = sizes[0] // HASH_BYTES
        # each level holds exactly the complete subtrees of the leaves below it
        for lvl in range(1, len(self._files)):
            want = self._size >> lvl
            have = sizes[lvl] // HASH_BYTES
            if have != want:
                raise ConfigError(
                    f"{self._path(lvl)} holds {have} hashes where {self._size} leaves make "
                    f"{want}: the tree files are out of step"
                )

    def _open_new(self, level: int) -> int:
        return os.open(self._path(level), os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes, *, sync: bool = True) -> int:
        """Add a leaf hash; returns its index. With `sync`, every file written is fsynced
        before the new size counts."""
        if len(leaf) != HASH_BYTES:
            raise InvalidArgument(f"a leaf hash is {HASH_BYTES} bytes", field="leaf")
        with self._lock:
            index = self._size
            written = [0]
            os.write(self._files[0], leaf)
            node, level, position = leaf, 0, index
            # each completed pair of subtrees makes one hash on the level above
            while position & 1:
                left = self._read(level, position - 1)
                node = node_hash(left, node)
                level += 1
                position >>= 1
                if level == len(self._files):
                    self._files.append(self._open_new(level))
                os.write(self._files[level], node)
                written.append(level)
            if sync:
                for lvl in written:
                    os.fsync(self._files[lvl])
            self._size = index + 1
            return index

    def discard_partial(self) -> None:
        """Cut every level's file back to what the last completed append wrote: an append that
        failed (a full disk) may have written part of its hashes, which the next append would
        otherwise follow with its own, out of step."""
        with self._lock:
            for level, fd in enumerate(self._files):
                os.ftruncate(fd, (self._size >> level) * HASH_BYTES)

    def _read(self, level: int, position: int) -> bytes:
        data = os.pread(self._files[level], HASH_BYTES, position * HASH_BYTES)
        if len(data) != HASH_BYTES:
            raise ConfigError(f"{self._path(level)}: hash {position} is missing")
        return data

    def leaf(self, index: int) -> bytes:
        return self._read(0, index)

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]); a complete aligned subtree is one read."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._read(n.bit_length() - 1, start // n)
        k = _split(n)
        return node_hash(self.subtree(start, start + k), self.subtree(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        n = self._size if size is None else size
        if n > self._size:
            raise InvalidArgument(f"the tree has {self._size} leaves, not {n}", field="size")
        return EMPTY_ROOT if n == 0 else self.subtree(0, n)

    def close(self) -> None:
        with self._lock:
            for fd in self._files:
                os.close(fd)
            self._files = []

    def __enter__(self) -> HashStore:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
