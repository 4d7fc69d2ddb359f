"""Paillier encryption (g = n + 1) with a narrow API: keys, ciphertexts, homomorphic addition.

Ciphertexts are ordinary Paillier ciphertexts, interchangeable with python-paillier's `raw_encrypt`
and `raw_decrypt`: no floats and no exponents ever reach the wire. Every ciphertext that arrives
from outside goes through `PublicKey.ciphertext_from_bytes`, which enforces 0 < c < n²,
gcd(c, n) = 1 and the exact byte length. Plaintexts are integers in [0, n); signed values use
the usual encoding (negative v as n + v) through `encrypt_signed` / `decrypt_signed`. Long lists
of ciphertexts are decrypted on every core by `ParallelDecryptor` (or `PrivateKey.decrypt_many`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

import gmpy2

from osmanthus.core.errors import CryptoError, FailedPrecondition, InvalidArgument
from osmanthus.core.types import KeyFingerprint

#: key sizes a requester may use (ARCHITECTURE.md: 2048 default, 3072 allowed)
DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 2048
ALLOWED_KEY_BITS = (2048, 3072)
#: a signed plaintext must lie in (-n/3, n/3) so that sums of a few values cannot wrap around
SIGNED_FRACTION = 3
#: Miller-Rabin rounds on top of gmpy2's primality test when generating p and q
PRIME_TEST_ROUNDS = 50
#: fixed-base window width: 10-bit windows need ~103 multiplications per encryption at 2048 bits
#: (about 15x fewer than r^n) for a 54 MB table; 8 bits would be 17 MB but ~15 % slower
FAST_WINDOW_BITS = 10
#: memory the per-key tables of one process may hold before the least recently used is dropped
DEFAULT_TABLE_CACHE_BYTES = 256 * 2**20
#: encryptions under one key before its table is built: a key used for a handful of queries is
#: not worth ~0.5 s of CPU and 54 MB, a key used for a batch is
DEFAULT_TABLE_AFTER_USES = 32
#: keys whose uses are counted before they earn a table (oldest forgotten first)
_USE_COUNTER_KEYS = 4096
#: a table is evicted for a new one only if unused this long: otherwise keys in active use
#: would push each other out and every rebuild would cost more than the fast path saves
TABLE_EVICT_IDLE_S = 60.0
#: a reusable pool decrypts a list in the calling process below this many ciphertexts per
#: worker: one task's round trip between processes (~0.3 ms) is then a large share of the
#: ~2.5 ms (2048 bits) to ~7 ms (3072 bits) that one decryption costs
PARALLEL_MIN_PER_WORKER = 2
#: `PrivateKey.decrypt_many` starts a pool for one call only from this many ciphertexts per
#: worker: starting the worker processes costs ~0.1-0.2 s, some 40-80 decryptions at 2048 bits
ONE_SHOT_MIN_PER_WORKER = 64


def table_size(public_key: PublicKey, window_bits: int) -> int:
    """Bytes of a fixed-base table for this key: one ciphertext per window and digit."""
    windows = -(-(public_key.bits // 2) // window_bits)
    return windows * (1 << window_bits) * public_key.ciphertext_size


_log = logging.getLogger(__name__)


def _modulus_bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


@dataclass(frozen=True)
class PublicKey:
    """A requester's Paillier public key; `fingerprint` is what tokens bind."""

    n: int
    _nsquare: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n <= 3 or self.n % 2 == 0:
            raise InvalidArgument("Paillier modulus must be an odd integer > 3", field="public_key")
        object.__setattr__(self, "_nsquare", gmpy2.mpz(self.n) * self.n)

    @classmethod
    def checked(cls, n: int, *, field: str = "public_key") -> PublicKey:
        """Accept a key from outside: refuses moduli shorter than MIN_KEY_BITS."""
        if n.bit_length() < MIN_KEY_BITS:
            raise InvalidArgument(
                f"Paillier key has {n.bit_length()} bits; at least {MIN_KEY_BITS} are required",
                field=field,
            )
        return cls(n=n)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def fingerprint(self) -> KeyFingerprint:
        return fingerprint_of_modulus(self.n)

    @property
    def ciphertext_size(self) -> int:
        """Byte length of every ciphertext on the wire: that of n²."""
        return (int(self._nsquare).bit_length() + 7) // 8

    def to_bytes(self) -> bytes:
        return _modulus_bytes(self.n)

    @classmethod
    def from_bytes(cls, data: bytes, *, field: str = "public_key") -> PublicKey:
        if not data:
            raise InvalidArgument("public key is empty", field=field)
        return cls.checked(int.from_bytes(data, "big"), field=field)

    def encrypt(self, plaintext: int) -> Ciphertext:
        if not 0 <= plaintext < self.n:
            raise CryptoError("plaintext must lie in [0, n)", field="plaintext")
        nsq = self._nsquare
        r = secrets.randbelow(self.n - 1) + 1
        # (n+1)^m = 1 + m·n mod n², which saves one exponentiation
        c = (1 + gmpy2.mpz(plaintext) * self.n) * gmpy2.powmod(r, self.n, nsq) % nsq
        return Ciphertext(value=int(c), n=self.n)

    def encrypt_signed(self, value: int) -> Ciphertext:
        limit = self.n // SIGNED_FRACTION
        if not -limit < value < limit:
            raise CryptoError("signed plaintext out of range (|v| < n/3)", field="plaintext")
        return self.encrypt(value % self.n)

    def add(self, *ciphertexts: Ciphertext) -> Ciphertext:
        """Homomorphic sum of the plaintexts (product of the ciphertexts mod n²)."""
        if not ciphertexts:
            raise CryptoError("nothing to add", field="ciphertexts")
        acc = gmpy2.mpz(1)
        for c in ciphertexts:
            if c.n != self.n:
                raise CryptoError("ciphertext was made under another key", field="ciphertexts")
            acc = acc * c.value % self._nsquare
        return Ciphertext(value=int(acc), n=self.n)

    def add_plain(self, ciphertext: Ciphertext, plaintext: int) -> Ciphertext:
        """E(m) → E(m + k): multiply by g^k = 1 + k·n (no new randomness needed after a sum)."""
        if ciphertext.n != self.n:
            raise CryptoError("ciphertext was made under another key", field="ciphertext")
        k = plaintext % self.n
        value = gmpy2.mpz(ciphertext.value) * (1 + gmpy2.mpz(k) * self.n) % self._nsquare
        return Ciphertext(value=int(value), n=self.n)

    def zero_tests(self, ciphertext: Ciphertext, values: Sequence[int]) -> list[Ciphertext]:
        """E(m) → [E(r_v · (m − v)) for each v], r_v drawn uniformly from [1, n) for each.

        Each decrypts to 0 if m = v and otherwise to a uniformly distributed non-zero value:
        r_v is full size, so the product wraps mod n and nothing of m − v shows. Exponentiations
        of the one base share a window table. The results share the randomness of E(m) raised
        to r_v: re-randomise each (multiply by a fresh E(0)) before anyone else sees them.
        """
        return self._zero_tests_with(
            ciphertext,
            values,
            lambda base, exponents: _fixed_base_powers(gmpy2.mpz(base), exponents, self._nsquare),
        )

    def _zero_tests_with(
        self,
        ciphertext: Ciphertext,
        values: Sequence[int],
        powers_of: Callable[[int, list[int]], Sequence[Any]],
    ) -> list[Ciphertext]:
        if ciphertext.n != self.n:
            raise CryptoError("ciphertext was made under another key", field="ciphertext")
        exponents = [1 + secrets.randbelow(self.n - 1) for _ in values]
        powers = powers_of(ciphertext.value, exponents)
        out = []
        for v, r, c_r in zip(values, exponents, powers, strict=True):
            # E(m)^r · g^(−v·r) = E(r·(m − v)), with g^k = 1 + k·n mod n²
            k = (-v * r) % self.n
            out.append(Ciphertext(int(c_r * (1 + gmpy2.mpz(k) * self.n) % self._nsquare), self.n))
        return out

    def ciphertext_from_bytes(self, data: bytes, *, field: str = "ciphertext") -> Ciphertext:
        """Validate a ciphertext received from another party (size, range, unit mod n)."""
        if len(data) != self.ciphertext_size:
            raise CryptoError(
                f"ciphertext is {len(data)} bytes; {self.ciphertext_size} expected for this key",
                field=field,
            )
        c = int.from_bytes(data, "big")
        if not 0 < c < self._nsquare:
            raise CryptoError("ciphertext is outside (0, n²)", field=field)
        if math.gcd(c, self.n) != 1:
            raise CryptoError("ciphertext shares a factor with n", field=field)
        return Ciphertext(value=c, n=self.n)


def _fixed_base_powers(base: Any, exponents: Sequence[int], modulus: Any) -> list[Any]:
    """base^e mod modulus for every e, sharing one window table when that is cheaper."""
    if not exponents:
        return []
    bits = max(e.bit_length() for e in exponents)
    count = len(exponents)
    # mulmods: plain square-and-multiply ~1.2·bits each; a w-bit table costs rows·(2^w + w)
    # to build and `rows` per exponent
    best_w, best_cost = 0, count * bits * 6 // 5
    for w in range(2, 9):
        rows = -(-bits // w)
        cost = rows * ((1 << w) + w) + count * rows
        if cost < best_cost:
            best_w, best_cost = w, cost
    if best_w == 0:
        return [gmpy2.powmod(base, e, modulus) for e in exponents]
    w = best_w
    rows = -(-bits // w)
    mask = (1 << w) - 1
    table: list[list[Any]] = []
    row_base = base
    for _ in range(rows):
        row = [gmpy2.mpz(1), row_base]
        for _ in range(2, 1 << w):
            row.append(row[-1] * row_base % modulus)
        table.append(row)
        row_base = row[-1] * row_base % modulus  # base^(2^(w·(i+1)))
    out = []
    for e in exponents:
        acc = gmpy2.mpz(1)
        i = 0
        while e:
            digit = e & mask
            if digit:
                acc = acc * table[i][digit] % modulus
            e >>= w
            i += 1
        out.append(acc)
    return out


@dataclass(frozen=True)
class Ciphertext:
    """One Paillier ciphertext together with the modulus it belongs to."""

    value: int
    n: int = field(repr=False)

    def to_bytes(self) -> bytes:
        size = ((self.n * self.n).bit_length() + 7) // 8
        return self.value.to_bytes(size, "big")


class PrivateKey:
    """The requester's decryption key (CRT form). Never leaves the requester's process."""

    def __init__(self, *, public_key: PublicKey, p: int, q: int) -> None:
        n = public_key.n
        # (1, n) or negated factors also multiply to n but are no factorisation at all
        if not (1 < p < n and 1 < q < n) or p == q or p * q != n:
            raise CryptoError(
                "p and q are not the prime factors of the modulus", field="private_key"
            )
        if q < p:
            p, q = q, p
        self.public_key = public_key
        self._p = gmpy2.mpz(p)
        self._q = gmpy2.mpz(q)
        self._psq = self._p * self._p
        self._qsq = self._q * self._q
        self._p_inv_q = gmpy2.invert(self._p, self._q)
        g = gmpy2.mpz(public_key.n) + 1
        self._hp = gmpy2.invert(self._l(gmpy2.powmod(g, self._p - 1, self._psq), self._p), self._p)
        self._hq = gmpy2.invert(self._l(gmpy2.powmod(g, self._q - 1, self._qsq), self._q), self._q)

    @staticmethod
    def _l(x: Any, m: Any) -> Any:
        return (x - 1) // m

    def __repr__(self) -> str:
        return f"PrivateKey(fingerprint={self.public_key.fingerprint[:16]}…)"

    def decrypt(self, ciphertext: Ciphertext) -> int:
        if ciphertext.n != self.public_key.n:
            raise CryptoError("ciphertext was made under another key", field="ciphertext")
        return self._decrypt_value(ciphertext.value)

    def _decrypt_value(self, value: int) -> int:
        c = gmpy2.mpz(value)
        mp = self._l(gmpy2.powmod(c, self._p - 1, self._psq), self._p) * self._hp % self._p
        mq = self._l(gmpy2.powmod(c, self._q - 1, self._qsq), self._q) * self._hq % self._q
        # Garner's CRT recombination
        return int(mp + (mq - mp) * self._p_inv_q % self._q * self._p)

    def decrypt_signed(self, ciphertext: Ciphertext) -> int:
        return self._signed(self.decrypt(ciphertext), field="ciphertext")

    def is_zero(self, ciphertext: Ciphertext) -> bool:
        """Whether the ciphertext decrypts to 0, at about half the cost of a decryption.

        The p-half decides almost always: a uniform non-zero plaintext is 0 mod p with
        probability 1/p; the q-half confirms a zero, so the answer is exact.
        """
        if ciphertext.n != self.public_key.n:
            raise CryptoError("ciphertext was made under another key", field="ciphertext")
        return self._is_zero_value(ciphertext.value)

    def _is_zero_value(self, value: int) -> bool:
        c = gmpy2.mpz(value)
        if self._l(gmpy2.powmod(c, self._p - 1, self._psq), self._p) * self._hp % self._p:
            return False
        return not self._l(gmpy2.powmod(c, self._q - 1, self._qsq), self._q) * self._hq % self._q

    def _signed(self, m: int, *, field: str) -> int:
        n = self.public_key.n
        if m < n // SIGNED_FRACTION:
            return m
        if m > n - n // SIGNED_FRACTION:
            return m - n
        raise CryptoError("decrypted value is outside the signed range: overflow", field=field)

    def decrypt_many(
        self, ciphertexts: Sequence[Ciphertext], *, workers: int | None = None
    ) -> list[int]:
        """Plaintexts of `ciphertexts` in their order, decrypted on `workers` cores (default all).

        Starts worker processes for this call only, and only for lists long enough to pay for
        them (ONE_SHOT_MIN_PER_WORKER per worker); to decrypt list after list, keep one
        `ParallelDecryptor` instead.
        """
        count = resolve_workers(workers)
        if count == 1 or len(ciphertexts) < ONE_SHOT_MIN_PER_WORKER * count:
            return [self._decrypt_value(v) for v in self._values_of(ciphertexts)]
        with ParallelDecryptor(self, workers=count) as decryptor:
            return decryptor.decrypt(ciphertexts)

    def decrypt_signed_many(
        self, ciphertexts: Sequence[Ciphertext], *, workers: int | None = None
    ) -> list[int]:
        """`decrypt_signed` of each ciphertext, in order, on `workers` cores (see decrypt_many)."""
        plaintexts = self.decrypt_many(ciphertexts, workers=workers)
        return [self._signed(m, field=f"ciphertexts[{i}]") for i, m in enumerate(plaintexts)]

    def _values_of(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        n = self.public_key.n
        for index, ciphertext in enumerate(ciphertexts):
            if ciphertext.n != n:
                raise CryptoError(
                    "ciphertext was made under another key", field=f"ciphertexts[{index}]"
                )
        return [ciphertext.value for ciphertext in ciphertexts]

    def _worker_args(self) -> tuple[int, int, int]:
        return self.public_key.n, int(self._p), int(self._q)

    def to_json(self) -> str:
        return json.dumps({"n": str(self.public_key.n), "p": str(self._p), "q": str(self._q)})

    @classmethod
    def from_json(cls, text: str) -> PrivateKey:
        try:
            data = json.loads(text)
            n, p, q = int(data["n"]), int(data["p"]), int(data["q"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CryptoError(f"private key file is malformed: {exc}", field="private_key") from exc
        return cls(public_key=PublicKey.checked(n, field="private_key"), p=p, q=q)


def fingerprint_of_modulus(n: int) -> KeyFingerprint:
    """SHA-256 of n's minimal big-endian bytes, lower-case hex (ARCHITECTURE.md)."""
    return KeyFingerprint(hashlib.sha256(_modulus_bytes(n)).hexdigest())


def _random_prime(bits: int) -> Any:
    while True:
        # top two bits set so that p·q has exactly 2·bits bits
        candidate = gmpy2.mpz(secrets.randbits(bits) | (3 << (bits - 2)) | 1)
        p = gmpy2.next_prime(candidate)
        if p.bit_length() == bits and gmpy2.is_prime(p, PRIME_TEST_ROUNDS):
            return p


def _generate(bits: int) -> tuple[PublicKey, PrivateKey]:
    half = bits // 2
    while True:
        p, q = _random_prime(half), _random_prime(bits - half)
        n = p * q
        if p != q and n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            public = PublicKey(n=int(n))
            return public, PrivateKey(public_key=public, p=int(p), q=int(q))


def generate_keypair(*, bits: int = DEFAULT_KEY_BITS) -> tuple[PublicKey, PrivateKey]:
    if bits not in ALLOWED_KEY_BITS:
        raise InvalidArgument(
            f"key size must be one of {ALLOWED_KEY_BITS}, got {bits}", field="bits"
        )
    return _generate(bits)


class FastEncryptor:
    """Encrypts under one requester key with a fixed-base table (ARCHITECTURE.md, Performance).

    A secret r0 is drawn once and h = r0^n mod n² computed; then E(m) = (1 + m·n) · h^x mod n²
    with x uniform of n/2 bits, evaluated from a table of h^(d·2^(w·i)) as one multiplication per
    w-bit window of x. The result is an ordinary Paillier ciphertext: h^x = (r0^x)^n.
    """

    def __init__(self, *, public_key: PublicKey, window_bits: int = FAST_WINDOW_BITS) -> None:
        if not 2 <= window_bits <= 16:
            raise InvalidArgument("window must be 2 to 16 bits", field="window_bits")
        self.public_key = public_key
        n = gmpy2.mpz(public_key.n)
        self._n = n
        self._nsquare = n * n
        self._mask = (1 << window_bits) - 1
        self._window_bits = window_bits
        self._exponent_bits = public_key.bits // 2
        while True:
            r0 = gmpy2.mpz(secrets.randbelow(public_key.n - 1) + 1)
            if gmpy2.gcd(r0, n) == 1:
                break
        base = gmpy2.powmod(r0, n, self._nsquare)
        del r0  # only h is needed; r0 must not outlive the table's construction
        windows = -(-self._exponent_bits // window_bits)
        table: list[list[Any]] = []
        for _ in range(windows):
            row = [gmpy2.mpz(1)]
            acc = gmpy2.mpz(1)
            for _ in range(self._mask):
                acc = acc * base % self._nsquare
                row.append(acc)
            table.append(row)
            base = acc * base % self._nsquare  # h^(2^(w·(i+1)))
        self._table = table
        self.table_bytes = table_size(public_key, window_bits)

    def encrypt(self, plaintext: int) -> Ciphertext:
        if not 0 <= plaintext < self.public_key.n:
            raise CryptoError("plaintext must lie in [0, n)", field="plaintext")
        x = secrets.randbits(self._exponent_bits)
        mask, width = self._mask, self._window_bits
        nsq = self._nsquare
        acc = 1 + gmpy2.mpz(plaintext) * self._n
        for row in self._table:
            digit = x & mask
            if digit:
                acc = acc * row[digit] % nsq
            x >>= width
        return Ciphertext(value=int(acc % nsq), n=self.public_key.n)

    def encrypt_signed(self, value: int) -> Ciphertext:
        limit = self.public_key.n // SIGNED_FRACTION
        if not -limit < value < limit:
            raise CryptoError("signed plaintext out of range (|v| < n/3)", field="plaintext")
        return self.encrypt(value % self.public_key.n)


class EncryptorCache:
    """Fast encryptors per requester key, bounded by table memory (least recently used first out).

    A key is encrypted on the plain path until it has been used `build_after` times; then its
    table is built in a background thread, so no request waits for a table. `max_bytes=0` turns
    the fast path off.
    """

    def __init__(
        self,
        *,
        max_bytes: int = DEFAULT_TABLE_CACHE_BYTES,
        window_bits: int = FAST_WINDOW_BITS,
        build_after: int = DEFAULT_TABLE_AFTER_USES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_bytes < 0:
            raise InvalidArgument("the table memory budget cannot be negative", field="max_bytes")
        self._max_bytes = max_bytes
        self._window_bits = window_bits
        self._build_after = build_after
        self._clock = clock
        self._uses: OrderedDict[int, int] = OrderedDict()
        self._ready: OrderedDict[int, FastEncryptor] = OrderedDict()
        self._last_used: dict[int, float] = {}
        self._building: dict[int, Future[FastEncryptor]] = {}
        self._closed = False
        self._lock = threading.Lock()
        self._builder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="osmanthus-table")

    @property
    def cached_bytes(self) -> int:
        with self._lock:
            return sum(e.table_bytes for e in self._ready.values())

    def encryptor(self, public_key: PublicKey) -> FastEncryptor | None:
        """The key's fast encryptor, or None while its table is still being built."""
        with self._lock:
            ready = self._ready.get(public_key.n)
            if ready is not None:
                self._ready.move_to_end(public_key.n)
                self._last_used[public_key.n] = self._clock()
                return ready
            if self._closed or public_key.n in self._building:
                return None
            uses = self._uses.pop(public_key.n, 0) + 1
            if uses >= self._build_after and self._room_for(public_key):
                self._building[public_key.n] = self._builder.submit(self._build, public_key)
            else:
                # counting starts again after a refusal, so room is looked for now and then
                self._uses[public_key.n] = 0 if uses >= self._build_after else uses
                if len(self._uses) > _USE_COUNTER_KEYS:
                    self._uses.popitem(last=False)
        return None

    def _room_for(self, public_key: PublicKey) -> bool:
        """Whether the key's table fits, evicting only tables idle long enough (lock held)."""
        needed = table_size(public_key, self._window_bits)
        if needed > self._max_bytes:
            return False
        free = self._max_bytes - sum(e.table_bytes for e in self._ready.values())
        now = self._clock()
        for n, encryptor in self._ready.items():  # least recently used first
            if free >= needed:
                break
            if now - self._last_used.get(n, now) < TABLE_EVICT_IDLE_S:
                return False
            free += encryptor.table_bytes
        return free >= needed

    def _build(self, public_key: PublicKey) -> FastEncryptor:
        try:
            encryptor = FastEncryptor(public_key=public_key, window_bits=self._window_bits)
        except Exception:
            _log.exception("building a fixed-base table failed; the plain path stays in use")
            with self._lock:
                self._building.pop(public_key.n, None)
            raise
        with self._lock:
            self._building.pop(public_key.n, None)
            # a table larger than the whole budget (built by wait_ready) is used once, not kept
            if encryptor.table_bytes <= self._max_bytes and not self._closed:
                self._ready[public_key.n] = encryptor
                self._last_used[public_key.n] = self._clock()
                while sum(e.table_bytes for e in self._ready.values()) > self._max_bytes:
                    evicted, _ = self._ready.popitem(last=False)
                    self._last_used.pop(evicted, None)
        return encryptor

    def wait_ready(self, public_key: PublicKey, timeout: float | None = None) -> FastEncryptor:
        """Build (or wait for) the key's table now; for warming before a batch and benchmarks."""
        with self._lock:
            ready = self._ready.get(public_key.n)
            if ready is not None:
                self._ready.move_to_end(public_key.n)
                return ready
            future = self._building.get(public_key.n)
            if future is None and not self._closed:
                future = self._builder.submit(self._build, public_key)
                self._building[public_key.n] = future
        if future is None:  # closed: nothing runs in the background any more
            return FastEncryptor(public_key=public_key, window_bits=self._window_bits)
        return future.result(timeout)

    def encrypt(self, public_key: PublicKey, plaintext: int) -> Ciphertext:
        fast = self.encryptor(public_key)
        return fast.encrypt(plaintext) if fast else public_key.encrypt(plaintext)

    def encrypt_signed(self, public_key: PublicKey, value: int) -> Ciphertext:
        fast = self.encryptor(public_key)
        return fast.encrypt_signed(value) if fast else public_key.encrypt_signed(value)

    def close(self) -> None:
        # requests still in flight after this fall back to the plain path
        with self._lock:
            self._closed = True
        self._builder.shutdown(wait=False, cancel_futures=True)


def resolve_workers(workers: int | None) -> int:
    """`workers` checked, or the number of cores this process may run on if None."""
    if workers is None:
        # the affinity mask, not the machine's core count: a container or taskset may allow fewer
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise InvalidArgument(
            f"workers must be a whole number >= 1, got {workers!r}", field="workers"
        )
    return workers


_R = TypeVar("_R")

#: zero tests below this many are made in the calling process: a pool trip costs more
ZERO_TEST_MIN_PARALLEL = 24

#: the private key of a decryption worker process, set once by its pool's initializer
_worker_key: PrivateKey | None = None


def _init_worker(n: int, p: int, q: int) -> None:
    global _worker_key
    _worker_key = PrivateKey(public_key=PublicKey(n=n), p=p, q=q)


def _decrypt_in_worker(values: list[int]) -> list[int]:
    key = _worker_key
    if key is None:
        raise CryptoError("this decryption worker never received its key", field="workers")
    return [key._decrypt_value(value) for value in values]


def _is_zero_in_worker(values: list[int]) -> list[bool]:
    key = _worker_key
    if key is None:
        raise CryptoError("this decryption worker never received its key", field="workers")
    return [key._is_zero_value(value) for value in values]


#: a zero-test worker's fast encryptors, by modulus, for the fresh E(0) of each test
_worker_blinders: OrderedDict[int, FastEncryptor] = OrderedDict()
#: requester keys a zero-test worker keeps a table for (~54 MB each at 2048 bits)
_WORKER_BLINDER_KEYS = 2


def _zero_tests_in_worker(n: int, base: int, exponents: list[int]) -> list[int]:
    """base^e · E(0) for each e: the power and its fresh randomness, on this worker's core."""
    modulus = gmpy2.mpz(n) * n
    blinder = _worker_blinders.get(n)
    if blinder is None:
        # its own secret r0 and table, built once per key in this worker
        blinder = FastEncryptor(public_key=PublicKey(n=n))
        _worker_blinders[n] = blinder
        while len(_worker_blinders) > _WORKER_BLINDER_KEYS:
            _worker_blinders.popitem(last=False)
    _worker_blinders.move_to_end(n)
    return [
        int(c * blinder.encrypt(0).value % modulus)
        for c in _fixed_base_powers(gmpy2.mpz(base), exponents, modulus)
    ]


def _pool_context() -> multiprocessing.context.BaseContext:
    # not "fork": the requester's process runs gRPC threads, and forking a threaded process can
    # deadlock the child; a fork server is a fresh interpreter, and workers forked from it start
    # in ~10 ms each
    if "forkserver" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("forkserver")
    return multiprocessing.get_context("spawn")


def _slices(values: list[int], count: int) -> list[list[int]]:
    """`values` cut into `count` contiguous slices whose lengths differ by at most one."""
    size, extra = divmod(len(values), count)
    slices, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        slices.append(values[start:end])
        start = end
    return slices


class ParallelDecryptor:
    """Decrypts list after list of ciphertexts on several cores with one pool of processes.

    Each worker process receives the private key once, from the pool's initializer when it
    starts; a task carries ciphertext values only and its result plaintexts only. A list
    shorter than PARALLEL_MIN_PER_WORKER × workers is decrypted in the calling process, as is
    every list when workers is 1 (no process is started then). Worker processes start with the
    first long list. Close the decryptor (or use it as a context manager) to stop them.

    Worker processes are started by a fork server (spawned where there is none), so a program
    that uses this from its main script needs the usual `if __name__ == "__main__":` guard.
    """

    def __init__(self, private_key: PrivateKey, *, workers: int | None = None) -> None:
        self._key = private_key
        self.workers = resolve_workers(workers)
        self._lock = threading.Lock()
        self._closed = False
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=_pool_context(),
                initializer=_init_worker,
                initargs=private_key._worker_args(),
            )
            # a decryptor dropped without close() must not leave processes holding the key
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"ParallelDecryptor({self._key!r}, workers={self.workers}, {state})"

    def decrypt(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        """Plaintexts in [0, n) of `ciphertexts`, in their order."""
        return self._map(ciphertexts, _decrypt_in_worker, self._key._decrypt_value)

    def zero_flags(self, ciphertexts: Sequence[Ciphertext]) -> list[bool]:
        """Whether each ciphertext decrypts to 0 (see `PrivateKey.is_zero`), in order."""
        return self._map(ciphertexts, _is_zero_in_worker, self._key._is_zero_value)

    def _map(
        self,
        ciphertexts: Sequence[Ciphertext],
        in_worker: Callable[[list[int]], list[_R]],
        in_process: Callable[[int], _R],
    ) -> list[_R]:
        with self._lock:
            if self._closed:
                raise FailedPrecondition(
                    "the parallel decryptor is closed; create a new one", field="decryptor"
                )
            values = self._key._values_of(ciphertexts)
            pool = self._pool
            if pool is None or len(values) < PARALLEL_MIN_PER_WORKER * self.workers:
                parts = None
            else:
                # one slice per worker: finer slices would balance a worker slowed by other
                # load, but each task's trip through the pool's queues and threads cost more
                # than that gained when measured (24 ciphertexts, 2 workers: 1 slice each
                # ~5-15 % faster than 2 to 12)
                try:
                    # submitted under the lock so that close() cannot stop the pool in between
                    parts = pool.map(in_worker, _slices(values, self.workers))
                except BrokenProcessPool as exc:
                    raise _broken(exc) from exc
        if parts is None:
            return [in_process(value) for value in values]
        try:
            return [result for part in parts for result in part]
        except BrokenProcessPool as exc:
            raise _broken(exc) from exc

    def decrypt_signed(self, ciphertexts: Sequence[Ciphertext]) -> list[int]:
        """Signed plaintexts (see `PrivateKey.decrypt_signed`) of `ciphertexts`, in order."""
        return [
            self._key._signed(m, field=f"ciphertexts[{i}]")
            for i, m in enumerate(self.decrypt(ciphertexts))
        ]

    def close(self) -> None:
        """Stop the worker processes after the calls in progress; later calls are refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ParallelDecryptor:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ZeroTestPool:
    """Makes re-randomised zero tests (`PublicKey.zero_tests` × a fresh E(0)) on several cores.

    The random multipliers are drawn in the calling process; each worker raises the one base
    to its share of them and multiplies each by a fresh E(0) of its own fixed-base table (built
    once per key per worker). Lists shorter than ZERO_TEST_MIN_PARALLEL stay in the caller,
    which re-randomises them with `fresh_zero`.
    """

    def __init__(self, *, workers: int | None = None) -> None:
        self.workers = resolve_workers(workers)
        self._lock = threading.Lock()
        self._closed = False
        self._pool: ProcessPoolExecutor | None = None
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context())
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def blinded_zero_tests(
        self,
        public_key: PublicKey,
        ciphertext: Ciphertext,
        values: Sequence[int],
        *,
        fresh_zero: Callable[[], Ciphertext],
    ) -> list[Ciphertext]:
        """E(m) → [E(r_v · (m − v)) · E(0)]: zero tests safe to hand to the key's holder."""
        with self._lock:
            if self._closed:
                raise FailedPrecondition("the zero-test pool is closed", field="zero_tests")
            pool = self._pool
        if pool is None or len(values) < ZERO_TEST_MIN_PARALLEL:
            return [
                public_key.add(test, fresh_zero())
                for test in public_key.zero_tests(ciphertext, values)
            ]

        def in_process(base: int, exponents: list[int]) -> list[Any]:
            n2 = public_key._nsquare
            return [
                c * fresh_zero().value % n2
                for c in _fixed_base_powers(gmpy2.mpz(base), exponents, n2)
            ]

        def powers(base: int, exponents: list[int]) -> list[Any]:
            try:
                parts = pool.map(
                    _zero_tests_in_worker,
                    [public_key.n] * self.workers,
                    [base] * self.workers,
                    _slices(exponents, self.workers),
                )
                return [power for part in parts for power in part]
            except (BrokenProcessPool, RuntimeError):
                # a worker died (or the pool is closing): answer this query here, and start a
                # fresh pool for the next one rather than fail every THRESHOLD until a restart
                _log.warning("zero-test workers failed; continuing in process", exc_info=True)
                self._replace(pool)
                return in_process(base, exponents)

        return public_key._zero_tests_with(ciphertext, values, powers)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._closed or self._pool is not broken:
                return
            self._finalizer.detach()
            broken.shutdown(wait=False, cancel_futures=True)
            self._pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=_pool_context())
            self._finalizer = weakref.finalize(
                self, self._pool.shutdown, wait=False, cancel_futures=True
            )

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._pool is not None:
            self._finalizer.detach()
            self._pool.shutdown(wait=True)

    def __enter__(self) -> ZeroTestPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _broken(exc: BrokenProcessPool) -> CryptoError:
    return CryptoError(
        "a decryption worker process stopped unexpectedly (killed, or out of memory); "
        f"close this decryptor and create a new one ({exc})",
        field="workers",
    )


class UnsafeShortKeys:
    """Test-only: short Paillier keys for unit tests of arithmetic. Nodes refuse such keys."""

    @staticmethod
    def generate(*, bits: int) -> tuple[PublicKey, PrivateKey]:
        _log.warning("generating an UNSAFE %d-bit Paillier key: for tests only", bits)
        return _generate(bits)
