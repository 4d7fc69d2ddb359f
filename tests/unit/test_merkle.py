"""RFC 6962 / RFC 9162 Merkle trees (osmanthus.core.merkle) against the published vectors."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from osmanthus.core.errors import ConfigError
from osmanthus.core.merkle import (
    EMPTY_ROOT,
    HashStore,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# The Certificate Transparency reference inputs and roots (transparency-dev/merkle,
# testonly/constants.go; the same as certificate-transparency's merkle_tree_test)
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
)]  # fmt: skip
ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (leaf index, tree size, path) from the reference inclusion-proof tests
INCLUSION = [
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip
# (old size, new size, path) from the reference consistency-proof tests
CONSISTENCY = [
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

TREE = MemoryTree(leaf_hash(e) for e in LEAVES)


def test_the_published_roots() -> None:
    assert root_of([]) == EMPTY_ROOT
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for n in range(1, 9):
        assert root_of(LEAVES[:n]).hex() == ROOTS[n - 1], n


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION)
def test_the_published_inclusion_proofs(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(TREE, index, size)
    assert [h.hex() for h in proof] == path
    verify_inclusion(index, size, TREE.leaves[index], proof, bytes.fromhex(ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY)
def test_the_published_consistency_proofs(old: int, new: int, path: list[str]) -> None:
    proof = consistency_proof(TREE, old, new)
    assert [h.hex() for h in proof] == path
    verify_consistency(
        old, new, bytes.fromhex(ROOTS[old - 1]), bytes.fromhex(ROOTS[new - 1]), proof
    )


def test_every_proof_of_random_trees_verifies_and_every_altered_one_fails() -> None:
    rng = random.Random(6962)
    for _ in range(60):
        size = rng.randint(1, 70)
        tree = MemoryTree(leaf_hash(rng.randbytes(rng.randint(0, 12))) for _ in range(size))
        root = tree.root()
        index = rng.randrange(size)
        proof = inclusion_proof(tree, index, size)
        verify_inclusion(index, size, tree.leaves[index], proof, root)
        for bad in _altered(proof, rng):
            with pytest.raises(ProofError):
                verify_inclusion(index, size, tree.leaves[index], bad, root)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, leaf_hash(b"not in the log"), proof, root)
        if size > 1:
            with pytest.raises(ProofError):
                verify_inclusion((index + 1) % size, size, tree.leaves[index], proof, root)
        old = rng.randint(1, size)
        proof = consistency_proof(tree, old, size)
        old_root = tree.root(old)
        verify_consistency(old, size, old_root, root, proof)
        for bad in _altered(proof, rng):
            with pytest.raises(ProofError):
                verify_consistency(old, size, old_root, root, bad)
        with pytest.raises(ProofError):
            verify_consistency(old, size, leaf_hash(b"forked"), root, proof)
        if old < size:
            with pytest.raises(ProofError):
                verify_consistency(old, size, old_root, leaf_hash(b"forked"), proof)
            with pytest.raises(ProofError):  # the proof for other sizes
                verify_consistency(old, size - 1, old_root, tree.root(size - 1), proof)


def _altered(proof: list[bytes], rng: random.Random) -> list[list[bytes]]:
    out: list[list[bytes]] = [[*proof, bytes(32)]]
    if proof:
        out.append(proof[:-1])
        i = rng.randrange(len(proof))
        flipped = bytearray(proof[i])
        flipped[rng.randrange(32)] ^= 1 << rng.randrange(8)
        out.append([*proof[:i], bytes(flipped), *proof[i + 1 :]])
        if len(proof) > 1:
            out.append([proof[1], proof[0], *proof[2:]])
    return out


def test_a_rollback_or_a_changed_entry_fails_consistency() -> None:
    honest = MemoryTree(leaf_hash(b"entry %d" % i) for i in range(12))
    rewritten = MemoryTree(
        [*honest.leaves[:9], *(leaf_hash(b"rewritten %d" % i) for i in range(6))]
    )
    witnessed = honest.root(12)
    with pytest.raises(ProofError) as info:
        verify_consistency(
            12, 15, witnessed, rewritten.root(), consistency_proof(rewritten, 12, 15)
        )
    assert info.value.field == "old_root"
    with pytest.raises(ProofError) as info:
        verify_consistency(12, 9, witnessed, honest.root(9), [])
    assert info.value.field == "old_size"
    with pytest.raises(ProofError) as info:
        verify_consistency(12, 12, witnessed, rewritten.root(12), [])
    assert info.value.field == "new_root"


def test_the_store_on_disk_matches_the_tree_and_reopens_without_rehashing(tmp_path: Path) -> None:
    rng = random.Random(9162)
    leaves = [leaf_hash(rng.randbytes(8)) for _ in range(300)]
    memory = MemoryTree()
    with HashStore(tmp_path) as store:
        for i, leaf in enumerate(leaves[:150]):
            assert store.append(leaf, sync=i % 50 == 0) == i
            memory.append(leaf)
            assert store.root() == memory.root()
    # reopened: the size comes from the files, nothing is recomputed
    with HashStore(tmp_path) as store:
        assert store.size == 150
        for leaf in leaves[150:]:
            store.append(leaf, sync=False)
            memory.append(leaf)
        assert store.root() == memory.root()
        for size in (1, 2, 7, 64, 150, 299, 300):
            assert store.root(size) == memory.root(size)
            index = rng.randrange(size)
            assert inclusion_proof(store, index, size) == inclusion_proof(memory, index, size)
            old = rng.randint(1, size)
            assert consistency_proof(store, old, size) == consistency_proof(memory, old, size)
        # level h holds the 300 >> h complete subtrees
        assert (tmp_path / "tree.8").stat().st_size == 32
        assert not (tmp_path / "tree.9").exists()


def test_a_torn_or_out_of_step_tree_is_refused_at_open(tmp_path: Path) -> None:
    with HashStore(tmp_path) as store:
        for i in range(5):
            store.append(leaf_hash(bytes([i])))
    with (tmp_path / "tree.0").open("ab") as f:
        f.write(b"torn")
    with pytest.raises(ConfigError, match="torn write"):
        HashStore(tmp_path)
    with (tmp_path / "tree.0").open("r+b") as f:
        f.truncate(3 * 32)  # level 1 still holds the 2 pairs of 4 leaves
    with pytest.raises(ConfigError, match="out of step"):
        HashStore(tmp_path)


def test_a_torn_upper_level_or_a_missing_level_is_refused(tmp_path: Path) -> None:
    with HashStore(tmp_path) as store:
        for i in range(8):
            store.append(leaf_hash(bytes([i])), sync=False)
    with (tmp_path / "tree.2").open("ab") as f:
        f.write(b"x")
    with pytest.raises(ConfigError, match=r"tree\.2.*torn write"):
        HashStore(tmp_path)
    with (tmp_path / "tree.2").open("r+b") as f:
        f.truncate(2 * 32)
    (tmp_path / "tree.1").unlink()
    with pytest.raises(ConfigError, match=r"tree\.1 is missing"):
        HashStore(tmp_path)
