"""The fixed-base fast path: ordinary Paillier ciphertexts (phe decrypts them), and its cache."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import phe
import pytest

from osmanthus.core.crypto import (
    TABLE_EVICT_IDLE_S,
    Ciphertext,
    EncryptorCache,
    FastEncryptor,
    PrivateKey,
    PublicKey,
    UnsafeShortKeys,
    generate_keypair,
    table_size,
)
from osmanthus.core.errors import CryptoError, InvalidArgument


@pytest.fixture(scope="module", params=[2048, 3072], ids=["2048", "3072"])
def keys(request: pytest.FixtureRequest) -> tuple[PublicKey, PrivateKey, FastEncryptor]:
    public, private = generate_keypair(bits=request.param)
    return public, private, FastEncryptor(public_key=public)


def _phe_private(public: PublicKey, private: PrivateKey) -> phe.PaillierPrivateKey:
    stored = json.loads(private.to_json())  # the test plays the key owner, reading its key file
    return phe.PaillierPrivateKey(
        phe.PaillierPublicKey(public.n), int(stored["p"]), int(stored["q"])
    )


@pytest.mark.parametrize("m", [0, 1, 2**40 + 17, -1])
def test_phe_decrypts_fast_ciphertexts(
    keys: tuple[PublicKey, PrivateKey, FastEncryptor], m: int
) -> None:
    public, private, fast = keys
    plaintext = m % public.n  # -1 is n - 1: the top of the plaintext range
    c = fast.encrypt(plaintext)
    assert 0 < c.value < public.n**2
    assert _phe_private(public, private).raw_decrypt(c.value) == plaintext
    assert private.decrypt(c) == plaintext


def test_fast_ciphertexts_add_with_plain_and_phe_ones(
    keys: tuple[PublicKey, PrivateKey, FastEncryptor],
) -> None:
    public, private, fast = keys
    phe_c = Ciphertext(value=phe.PaillierPublicKey(public.n).raw_encrypt(40), n=public.n)
    total = public.add(fast.encrypt(1), public.encrypt(2), phe_c, fast.encrypt_signed(-5))
    assert private.decrypt_signed(total) == 38


def test_fast_encryption_is_randomised_and_validates(
    keys: tuple[PublicKey, PrivateKey, FastEncryptor],
) -> None:
    public, _, fast = keys
    a, b = fast.encrypt(7), fast.encrypt(7)
    assert a.value != b.value
    # what leaves the node is accepted by the receiver's validation
    assert public.ciphertext_from_bytes(a.to_bytes()) == a
    with pytest.raises(CryptoError, match="plaintext"):
        fast.encrypt(public.n)
    with pytest.raises(CryptoError, match="signed"):
        fast.encrypt_signed(public.n // 2)


def test_table_size_is_reported() -> None:
    # why short: this checks the arithmetic of the table layout, not security
    public, _ = UnsafeShortKeys.generate(bits=512)
    fast = FastEncryptor(public_key=public, window_bits=4)
    assert fast.table_bytes == (256 // 4) * 16 * public.ciphertext_size
    with pytest.raises(InvalidArgument, match="window"):
        FastEncryptor(public_key=public, window_bits=1)


def test_cache_uses_the_plain_path_until_the_table_is_ready(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # why short keys and small windows: cache mechanics, where build speed matters, not security
    with caplog.at_level(logging.WARNING):
        public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, build_after=1)
    try:
        assert cache.encryptor(public) is None  # first sight: build scheduled, not awaited
        assert private.decrypt(cache.encrypt(public, 9)) == 9
        ready = cache.wait_ready(public, timeout=30)
        assert cache.encryptor(public) is ready
        assert private.decrypt_signed(cache.encrypt_signed(public, -3)) == -3
        assert cache.cached_bytes == ready.table_bytes
    finally:
        cache.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + 30
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_cache_evicts_only_idle_tables_for_a_new_key() -> None:
    # why short keys: three tables must be built quickly; the budget holds exactly two
    keys = [UnsafeShortKeys.generate(bits=512)[0] for _ in range(3)]
    size = table_size(keys[0], 4)
    clock = FakeClock()
    cache = EncryptorCache(window_bits=4, max_bytes=2 * size, build_after=1, clock=clock)
    try:
        first = cache.wait_ready(keys[0], timeout=30)
        cache.wait_ready(keys[1], timeout=30)
        # both tables were just used: a third key must not push one out and cause a rebuild loop
        assert cache.encryptor(keys[2]) is None
        time.sleep(0.2)
        assert cache.cached_bytes == 2 * size and cache.encryptor(keys[1]) is not None
        clock.now += TABLE_EVICT_IDLE_S / 2
        assert cache.encryptor(keys[0]) is first  # keys[0] busy, keys[1] idle from now on
        clock.now += TABLE_EVICT_IDLE_S
        cache.encryptor(keys[0])
        cache.encryptor(keys[2])  # keys[1] has been idle long enough: its room is taken
        assert _until(lambda: cache.encryptor(keys[2]) is not None)
        assert cache.cached_bytes == 2 * size
        assert cache.encryptor(keys[0]) is first
    finally:
        cache.close()


def test_a_table_larger_than_the_budget_is_never_built_in_the_background() -> None:
    # why short: only the budget logic is under test
    public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, max_bytes=table_size(public, 4) - 1, build_after=1)
    try:
        for value in range(50):
            assert private.decrypt(cache.encrypt(public, value)) == value
        assert cache.cached_bytes == 0 and not cache._building
    finally:
        cache.close()


def test_a_closed_cache_falls_back_to_the_plain_path() -> None:
    # why short: requests still in flight at shutdown must not fail; no security aspect
    public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, build_after=1)
    cache.close()
    assert private.decrypt(cache.encrypt(public, 4)) == 4
    assert private.decrypt(cache.wait_ready(public).encrypt(6)) == 6


def test_a_negative_budget_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="negative"):
        EncryptorCache(max_bytes=-1)


def test_a_table_larger_than_the_budget_is_used_but_not_kept() -> None:
    # why short: only the budget logic is under test
    public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, max_bytes=1)
    try:
        fast = cache.wait_ready(public, timeout=30)
        assert private.decrypt(fast.encrypt(5)) == 5
        assert cache.cached_bytes == 0
    finally:
        cache.close()


def test_a_table_is_built_only_for_a_key_used_often_enough() -> None:
    # why short: the use counting is under test; a key queried a few times costs no table
    public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, build_after=3)
    try:
        for value in (1, 2):
            assert private.decrypt(cache.encrypt(public, value)) == value
        assert cache.cached_bytes == 0
        cache.encrypt(public, 3)  # the third use schedules the build
        deadline = time.monotonic() + 30
        while cache.cached_bytes == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cache.cached_bytes > 0
    finally:
        cache.close()


def test_a_zero_budget_turns_the_fast_path_off() -> None:
    # why short: no table is ever built here
    public, private = UnsafeShortKeys.generate(bits=512)
    cache = EncryptorCache(window_bits=4, max_bytes=0, build_after=1)
    try:
        for value in range(5):
            assert private.decrypt(cache.encrypt(public, value)) == value
            assert cache.encryptor(public) is None
        assert cache.cached_bytes == 0
    finally:
        cache.close()
