"""Paillier encryption (g = n + 1) with a narrow API: keys, ciphertexts, homomorphic addition.

Ciphertexts are ordinary Paillier ciphertexts, interchangeable with python-paillier's `raw_encrypt`
and `raw_decrypt`: no floats and no exponents ever reach the wire. Every ciphertext that arrives
from outside goes through `PublicKey.ciphertext_from_bytes`, which enforces 0 < c < n²,
gcd(c, n) = 1 and the exact byte length. Plaintexts are integers in [0, n); signed values use
the usual encoding (negative v as n + v) through `encrypt_signed` / `decrypt_signed`. Long lists
of ciphertexts are decrypted on every core by `osmanthus.core.workers.ParallelDecryptor` (or
`PrivateKey.decrypt_many`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import gmpy2

from osmanthus.core import probes
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.types import KeyFingerprint

#: key sizes a requester may use (ARCHITECTURE.md: 2048 default, 3072 allowed)
DEFAULT_KEY_BITS = 2048
MIN_KEY_BITS = 2048
ALLOWED_KEY_BITS = (2048, 3072)
#: longer keys are refused before any check: every node pays for them on each encryption, and
#: the primality test that refuses a prime modulus grows with the cube of its length
MAX_KEY_BITS = max(ALLOWED_KEY_BITS)
#: a signed plaintext must lie in (-n/3, n/3) so that sums of a few values cannot wrap around
SIGNED_FRACTION = 3
#: Miller-Rabin rounds on top of gmpy2's primality test when generating p and q
PRIME_TEST_ROUNDS = 50
#: ARCHITECTURE.md: a requester's modulus has no prime factor below 2^20. A factor s below the
#: largest |T - v| of a THRESHOLD zero test (or the largest FLAGS count) would let the requester
#: read r_v·(T - v) mod s = 0 exactly when s divides T - v; every such value is far below 2^20
#: (docs/caveats.md works the numbers out from the catalogue), so no residue mod s shows anything
SMALL_FACTOR_BOUND = 1 << 20
#: Miller-Rabin rounds that refuse a probable-prime modulus (a prime n lets anyone decrypt with
#: λ = n − 1); a composite survives one round with probability below 1/4
COMPOSITE_TEST_ROUNDS = 32
#: moduli whose well-formedness verdict is remembered (least recently used forgotten first):
#: nodes check the key of every request, and the checks cost a few milliseconds
MODULUS_VERDICT_CACHE = 4096
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
        """Accept a key from outside: at least MIN_KEY_BITS, and well formed.

        Refuses moduli shorter than MIN_KEY_BITS or longer than MAX_KEY_BITS, even ones, and
        every modulus `check_modulus` refuses (a prime factor below 2^20, a perfect power, a
        probable prime).
        """
        if not isinstance(n, int) or n.bit_length() < MIN_KEY_BITS:
            bits = n.bit_length() if isinstance(n, int) else 0
            raise InvalidArgument(
                f"Paillier key has {bits} bits; at least {MIN_KEY_BITS} are required",
                field=field,
            )
        if n.bit_length() > MAX_KEY_BITS:
            raise InvalidArgument(
                f"Paillier key has {n.bit_length()} bits; at most {MAX_KEY_BITS} are allowed",
                field=field,
            )
        key = cls(n=n)
        check_modulus(n, field=field)
        return key

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
        """A key from the wire: minimal big-endian bytes of n, then every `checked` test."""
        return cls.checked(int.from_bytes(_minimal_bytes(data, field=field), "big"), field=field)

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

    def factors(self) -> tuple[int, int]:
        """(p, q) with p < q, for proofs about the modulus (`keyproof`); never send them."""
        return int(self._p), int(self._q)

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
        `ParallelDecryptor` (osmanthus.core.workers) instead.
        """
        # imported here: the pool module builds on this one
        from osmanthus.core.workers import ParallelDecryptor

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


class _ModulusVerdicts:
    """Bounded memory of `check_modulus` verdicts by fingerprint: None (well formed) or why not."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._verdicts: OrderedDict[KeyFingerprint, str | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, fingerprint: KeyFingerprint) -> tuple[bool, str | None]:
        with self._lock:
            if fingerprint not in self._verdicts:
                return False, None
            self._verdicts.move_to_end(fingerprint)
            return True, self._verdicts[fingerprint]

    def put(self, fingerprint: KeyFingerprint, verdict: str | None) -> None:
        with self._lock:
            self._verdicts[fingerprint] = verdict
            self._verdicts.move_to_end(fingerprint)
            while len(self._verdicts) > self._capacity:
                self._verdicts.popitem(last=False)


_verdicts = _ModulusVerdicts(MODULUS_VERDICT_CACHE)
_small_primes_product: Any = None
_small_primes_lock = threading.Lock()


def _product_of_small_primes() -> Any:
    """∏ of every prime below SMALL_FACTOR_BOUND (~1.5 M bits), computed once per process."""
    global _small_primes_product
    with _small_primes_lock:
        if _small_primes_product is None:
            # primorial(x) is the product of the primes ≤ x; the bound itself is no prime
            _small_primes_product = gmpy2.primorial(SMALL_FACTOR_BOUND - 1)
        return _small_primes_product


def _modulus_defect(n: int) -> str | None:
    """Why n is not a usable Paillier modulus (beyond its size), or None."""
    m = gmpy2.mpz(n)
    # one gcd with the product of the small primes finds any small factor at once; reducing
    # the ~1.5 M-bit product mod n first makes the gcd one of two numbers of n's size
    if gmpy2.gcd(_product_of_small_primes() % m, m) != 1:
        return f"has a prime factor below 2^{SMALL_FACTOR_BOUND.bit_length() - 1}"
    # p² (or any p^k, (pq)^k) is not square-free: gcd(n, φ(n)) ≠ 1, no Paillier modulus
    if gmpy2.is_power(m):
        return "is a perfect power"
    # a prime n lets anyone decrypt: λ = n − 1 (issue 14)
    if gmpy2.is_prime(m, COMPOSITE_TEST_ROUNDS):
        return "is a probable prime"
    return None


def check_modulus(n: int, *, field: str = "public_key") -> None:
    """Refuse a modulus that is not a product of large primes, whatever its size.

    The checks ARCHITECTURE.md requires of every party that uses a requester's key: no prime
    factor below SMALL_FACTOR_BOUND (2^20), not a perfect power, not a probable prime. They
    cannot tell p·q from p·q·r with all factors large; the modulus proof
    (`osmanthus.core.keyproof`) does. Verdicts are remembered per fingerprint (bounded), so a
    node that sees the same key on every request pays for the checks once.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n <= 3 or n % 2 == 0:
        raise InvalidArgument("the Paillier modulus n must be an odd integer > 3", field=field)
    fingerprint = fingerprint_of_modulus(n)
    known, verdict = _verdicts.get(fingerprint)
    if not known:
        verdict = _modulus_defect(n)
        _verdicts.put(fingerprint, verdict)
    if verdict is not None:
        raise InvalidArgument(f"the Paillier modulus n {verdict}", field=field)


def fingerprint_of_modulus(n: int) -> KeyFingerprint:
    """SHA-256 of n's minimal big-endian bytes, lower-case hex (ARCHITECTURE.md)."""
    return KeyFingerprint(hashlib.sha256(_modulus_bytes(n)).hexdigest())


def fingerprint_of_bytes(data: bytes, *, field: str = "public_key") -> KeyFingerprint:
    """The fingerprint of a key as it arrives, before any costly check of n.

    A server compares it with the token's key first, so that a caller cannot make it test
    moduli its token does not name (each test of a prime n costs tens of milliseconds).
    """
    return KeyFingerprint(hashlib.sha256(_minimal_bytes(data, field=field)).hexdigest())


def _minimal_bytes(data: bytes, *, field: str) -> bytes:
    # one key, one encoding: b"\0" + n would otherwise be the same key under other bytes
    if not data:
        raise InvalidArgument("public key is empty", field=field)
    if data[0] == 0:
        raise InvalidArgument("public key has a leading zero byte: send n minimally", field=field)
    if len(data) * 8 > MAX_KEY_BITS:
        raise InvalidArgument(
            f"Paillier key has {len(data) * 8} bits; at most {MAX_KEY_BITS} are allowed",
            field=field,
        )
    return bytes(data)


def _random_prime(bits: int) -> Any:
    """A random prime p ≡ 3 (mod 4) of exactly `bits` bits.

    p ≡ 3 (mod 4) for both factors makes n a Blum integer, which the modulus proof needs
    (CGGMP21 Π^mod proves n is a Paillier–Blum modulus; `osmanthus.core.keyproof`).
    """
    while True:
        # top two bits set so that p·q has exactly 2·bits bits
        candidate = gmpy2.mpz(secrets.randbits(bits) | (3 << (bits - 2)) | 1)
        p = gmpy2.next_prime(candidate)
        if p % 4 == 3 and p.bit_length() == bits and gmpy2.is_prime(p, PRIME_TEST_ROUNDS):
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
        started = time.perf_counter()
        try:
            encryptor = FastEncryptor(public_key=public_key, window_bits=self._window_bits)
            probes.table_built(time.perf_counter() - started)
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


class UnsafeShortKeys:
    """Test-only: short Paillier keys for unit tests of arithmetic. Nodes refuse such keys."""

    @staticmethod
    def generate(*, bits: int) -> tuple[PublicKey, PrivateKey]:
        _log.warning("generating an UNSAFE %d-bit Paillier key: for tests only", bits)
        return _generate(bits)
