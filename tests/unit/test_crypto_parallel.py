"""Decryption on several cores: same plaintexts and order as one core, reusable, closable."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from osmanthus.core.crypto import (
    ONE_SHOT_MIN_PER_WORKER,
    PARALLEL_MIN_PER_WORKER,
    SIGNED_FRACTION,
    Ciphertext,
    PrivateKey,
    PublicKey,
    UnsafeShortKeys,
    generate_keypair,
    resolve_workers,
)
from osmanthus.core.errors import CryptoError, FailedPrecondition, InvalidArgument
from osmanthus.core.workers import ParallelDecryptor, ZeroTestPool

KeyPair = tuple[PublicKey, PrivateKey]
WORKERS = 2


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    return generate_keypair(bits=2048)


@pytest.fixture(scope="module")
def decryptor(keys: KeyPair) -> Iterator[ParallelDecryptor]:
    """One pool for the module: starting worker processes is the slow part, reuse is the point."""
    with ParallelDecryptor(keys[1], workers=WORKERS) as shared:
        yield shared


def plaintexts(n: int, count: int) -> list[int]:
    """The edges of [0, n) first, then distinct random values: a reordering cannot go unseen."""
    values = [0, n - 1, 1, n - 2]
    while len(values) < count:
        values.append(secrets.randbelow(n))
    return values


def encrypt_all(public: PublicKey, values: list[int]) -> list[Ciphertext]:
    return [public.encrypt(v) for v in values]


def test_parallel_decryption_equals_sequential_in_order(
    keys: KeyPair, decryptor: ParallelDecryptor
) -> None:
    public, private = keys
    values = plaintexts(public.n, 5 * WORKERS * PARALLEL_MIN_PER_WORKER + 1)
    ciphertexts = encrypt_all(public, values)
    assert decryptor.decrypt(ciphertexts) == [private.decrypt(c) for c in ciphertexts] == values


def test_the_pool_serves_list_after_list(keys: KeyPair, decryptor: ParallelDecryptor) -> None:
    public, _ = keys
    for length in (WORKERS * PARALLEL_MIN_PER_WORKER, 7, 1, 0, 13):
        values = plaintexts(public.n, length)[:length]
        assert decryptor.decrypt(encrypt_all(public, values)) == values


def test_signed_parallel_decryption(keys: KeyPair, decryptor: ParallelDecryptor) -> None:
    public, private = keys
    limit = public.n // SIGNED_FRACTION
    values = [0, -1, 1, -(limit - 1), limit - 1, -12345, 678, -9]
    ciphertexts = [public.encrypt_signed(v) for v in values]
    assert decryptor.decrypt_signed(ciphertexts) == values
    assert private.decrypt_signed_many(ciphertexts, workers=WORKERS) == values


def test_signed_overflow_names_the_ciphertext(keys: KeyPair, decryptor: ParallelDecryptor) -> None:
    public, _ = keys
    ciphertexts = [public.encrypt(v) for v in (1, 2, 3, 4, public.n // 2, 5)]
    with pytest.raises(CryptoError, match=r"ciphertexts\[4\].*signed range"):
        decryptor.decrypt_signed(ciphertexts)


def test_ciphertext_under_another_key_is_refused_with_its_index(
    keys: KeyPair, decryptor: ParallelDecryptor
) -> None:
    public, _ = keys
    other_public, _ = generate_keypair(bits=2048)
    ciphertexts = [*encrypt_all(public, [1, 2, 3]), other_public.encrypt(4), public.encrypt(5)]
    with pytest.raises(CryptoError, match=r"ciphertexts\[3\].*another key"):
        decryptor.decrypt(ciphertexts)
    with pytest.raises(CryptoError, match=r"ciphertexts\[3\].*another key"):
        keys[1].decrypt_many(ciphertexts, workers=1)


def test_decrypt_many_on_one_core_and_on_several(keys: KeyPair) -> None:
    public, private = keys
    short = plaintexts(public.n, 6)
    assert private.decrypt_many(encrypt_all(public, short), workers=1) == short
    assert private.decrypt_many(encrypt_all(public, short)) == short  # in process: too short
    # long enough to start a pool for this call only (with cheap g^m·1 ciphertexts: r = 1)
    values = plaintexts(public.n, ONE_SHOT_MIN_PER_WORKER * WORKERS)
    ciphertexts = [Ciphertext(value=(1 + v * public.n) % public.n**2, n=public.n) for v in values]
    assert private.decrypt_many(ciphertexts, workers=WORKERS) == values


def test_one_worker_starts_no_process_and_still_decrypts(keys: KeyPair) -> None:
    public, _ = keys
    values = plaintexts(public.n, 9)
    with ParallelDecryptor(keys[1], workers=1) as single:
        assert single.workers == 1
        assert single.decrypt(encrypt_all(public, values)) == values
        assert single.decrypt([]) == []


def test_a_closed_decryptor_refuses_every_call(keys: KeyPair) -> None:
    public, private = keys
    ciphertexts = encrypt_all(public, plaintexts(public.n, 2 * WORKERS * PARALLEL_MIN_PER_WORKER))
    closed = ParallelDecryptor(private, workers=WORKERS)
    assert closed.decrypt(ciphertexts) == [private.decrypt(c) for c in ciphertexts]
    closed.close()
    closed.close()  # closing twice is harmless
    for attempt in (ciphertexts, ciphertexts[:1], []):
        with pytest.raises(FailedPrecondition, match=r"decryptor.*closed; create a new one"):
            closed.decrypt(attempt)
    with pytest.raises(FailedPrecondition, match="closed"):
        closed.decrypt_signed(ciphertexts)
    assert "closed" in repr(closed)


def test_the_context_manager_closes(keys: KeyPair) -> None:
    with ParallelDecryptor(keys[1], workers=1) as scoped:
        pass
    with pytest.raises(FailedPrecondition, match="closed"):
        scoped.decrypt([])


def test_repr_does_not_show_the_factors(keys: KeyPair, decryptor: ParallelDecryptor) -> None:
    _, private = keys
    p = str(private._p)
    assert p[:20] not in repr(decryptor) and str(private.public_key.n)[:20] not in repr(decryptor)


@pytest.mark.parametrize("workers", [0, -1, True, 1.5, "2"])
def test_invalid_worker_counts_are_refused(keys: KeyPair, workers: object) -> None:
    with pytest.raises(InvalidArgument, match="workers must be a whole number"):
        ParallelDecryptor(keys[1], workers=workers)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="workers"):
        keys[1].decrypt_many([], workers=workers)  # type: ignore[arg-type]


def test_default_workers_are_the_usable_cores() -> None:
    assert resolve_workers(None) >= 1
    assert resolve_workers(3) == 3


def test_zero_tests_survive_a_killed_worker_and_the_pool_is_renewed() -> None:
    import os
    import signal

    # why short keys: dozens of exponentiations per call; 1024 bits still exercises the pool
    public, private = UnsafeShortKeys.generate(bits=1024)
    pool = ZeroTestPool(workers=2)
    try:
        total = public.encrypt(150)
        values = list(range(110, 201))

        def tests() -> list[Ciphertext]:
            return pool.blinded_zero_tests(
                public, total, values, fresh_zero=lambda: public.encrypt(0)
            )

        assert sum(private.is_zero(c) for c in tests()) == 1
        inner = pool._pool
        assert inner is not None
        for pid in pool.worker_pids():  # an out-of-memory kill, say
            os.kill(pid, signal.SIGKILL)
        # answered in process this time
        assert [private.is_zero(c) for c in tests()].count(True) == 1
        assert pool._pool is not inner  # and a fresh pool serves the next call
        assert sum(private.is_zero(c) for c in tests()) == 1
    finally:
        pool.close()


def _related(private: PrivateKey, first: Ciphertext, second: Ciphertext, diffs: range) -> bool:
    """Whether ρ_i^(m_j/d_j) = ρ_j^(m_i/d_i) for some differences: the review's attack step."""
    import gmpy2

    n = private.public_key.n
    phi = (int(private._p) - 1) * (int(private._q) - 1)
    n_inverse = gmpy2.invert(n, phi)

    def m_rho(c: Ciphertext) -> tuple[int, int]:
        m = private.decrypt(c)
        rho_n = c.value * gmpy2.invert(1 + m * n, n * n) % (n * n)
        return m, int(gmpy2.powmod(rho_n % n, n_inverse, n))

    (m_i, rho_i), (m_j, rho_j) = m_rho(first), m_rho(second)
    left = {int(gmpy2.powmod(rho_i, m_j * gmpy2.invert(d % n, n) % n, n)) for d in diffs if d}
    return any(
        int(gmpy2.powmod(rho_j, m_i * gmpy2.invert(d % n, n) % n, n)) in left for d in diffs if d
    )


def test_pooled_zero_tests_carry_fresh_randomness_each() -> None:
    # why short keys: the relation check tries every pair of differences (24 × 24 powmods)
    public, private = UnsafeShortKeys.generate(bits=1024)
    total = public.encrypt(150)
    values = range(130, 154)  # 24 values: the pool's parallel path
    diffs = range(150 - 153, 150 - 130 + 1)
    # positive control: unblinded tests are related through the one sum's randomness
    bare = [c for c in public.zero_tests(total, values) if not private.is_zero(c)]
    assert _related(private, bare[0], bare[1], diffs)
    with ZeroTestPool(workers=2) as pool:
        tests = pool.blinded_zero_tests(public, total, values, fresh_zero=lambda: public.encrypt(0))
    assert [private.is_zero(c) for c in tests].count(True) == 1
    nonzero = [c for c in tests if not private.is_zero(c)]
    assert not _related(private, nonzero[0], nonzero[1], diffs)
