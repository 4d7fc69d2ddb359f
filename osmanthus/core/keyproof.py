"""A non-interactive proof that a Paillier modulus is well formed: n = p·q, p ≡ q ≡ 3 (mod 4).

The proof is the Paillier–Blum modulus proof Π^mod of Canetti, Gennaro, Goldfeder, Makriyannis
and Peled, "UC Non-Interactive, Proactive, Threshold ECDSA with Identifiable Aborts" (CGGMP21,
IACR ePrint 2021/060, Fig. 16), made non-interactive by Fiat–Shamir:

- the prover picks w with Jacobi symbol (w/n) = −1;
- the challenges y_1..y_m ∈ Z_n^* are derived from SHAKE-256 over a domain tag, n and w
  (`_challenges`), so the prover cannot choose them after w;
- for each i it sends x_i with x_i⁴ = (−1)^a_i · w^b_i · y_i (mod n), a fourth root that exists
  for exactly one (a_i, b_i) when n is a Blum integer, and z_i with z_i^n = y_i (mod n), an n-th
  root that exists for every y_i exactly when gcd(n, φ(n)) = 1.

The verifier accepts iff n is odd and composite, (w/n) = −1, every value lies in [1, n) and
every equation holds. A modulus that is not of the form p^a·q^b (p, q ≡ 3 mod 4) fails each
fourth-root round with probability at least 1/2: m = MODULUS_PROOF_ROUNDS = 80 rounds give
2^-80. The n-th roots prove gcd(n, φ(n)) = 1, so n is square-free, hence n = p·q.

One deviation from Fig. 16, on the n-th roots only: if gcd(n, φ(n)) ≠ 1, some prime s divides
both n and φ(n), and a random y has an n-th root with probability at most 1/s. The verifier
first refuses every n with a prime factor below 2^20 (`crypto.check_modulus`), so s ≥ 2^20 and
NTH_ROOT_ROUNDS = ⌈80 / 20⌉ = 4 roots give the same 2^-80 as 80 would (the parameter choice of
Goldberg, Reyzin, Sagga and Baldimtsi, "Efficient Noninteractive Certification of RSA Moduli
and Beyond", ASIACRYPT 2019, IACR ePrint 2018/057). That makes the proof half as long
(~21 KB instead of ~41 KB at 2048 bits) and its verification ~15 times cheaper: 76 fewer
full-size exponentiations.

CGGMP21's no-small-factor proof Π^fac is not used: it needs ring-Pedersen parameters from a
party the prover does not control, and the gcd bound already gives what the disclosure analysis
needs (every prime factor of n is at least 2^20, larger than any |T − v| or flag count).

Wire layout (`ModulusProof.to_bytes`), k = byte length of n, integers big-endian in k bytes:

    version (1 byte, 1) | w | a_1..a_80 (10 bytes) | b_1..b_80 (10 bytes) | x_1..x_80 | z_1..z_4

bit i of a (and of b) is bit i mod 8 of byte i // 8; the total is 1 + 20 + 85·k bytes (21,781
at 2048 bits, 32,661 at 3072). Anything else is refused.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import gmpy2

from osmanthus.core.crypto import PrivateKey, PublicKey, check_modulus
from osmanthus.core.errors import CryptoError, InvalidArgument, KeyProofRequired
from osmanthus.core.types import KeyFingerprint

#: fourth-root rounds, each with soundness error 1/2 (CGGMP21 Fig. 16: m = 80)
MODULUS_PROOF_ROUNDS: Final = 80
#: n-th-root rounds, each with soundness error below 2^-20 once no prime factor of n is below
#: 2^20 (GRSB19): ⌈80 / 20⌉
NTH_ROOT_ROUNDS: Final = 4
#: the proof layout's version byte
PROOF_VERSION: Final = 1
#: Fiat–Shamir domain separation: the challenges of no other protocol are derived this way
PROOF_DOMAIN: Final = b"osmanthus/v1 paillier-blum modulus proof (CGGMP21 fig. 16)"
#: where a proof travels on the wire; errors name it
PROOF_FIELD: Final = "public_key.modulus_proof"
#: fingerprints of verified keys one process remembers (least recently used forgotten first):
#: ~100 bytes each; a forgotten key costs one more verification (~25 ms at 2048 bits)
PROVEN_KEY_CACHE: Final = 4096

_BITS_BYTES: Final = (MODULUS_PROOF_ROUNDS + 7) // 8


def proof_size(public_key: PublicKey) -> int:
    """Bytes of a proof for this key (the layout in the module docstring)."""
    k = _width(public_key.n)
    return 1 + 2 * _BITS_BYTES + (1 + MODULUS_PROOF_ROUNDS + NTH_ROOT_ROUNDS) * k


@dataclass(frozen=True)
class ModulusProof:
    """A parsed proof: w, the fourth roots x_i with their signs a_i and w-exponents b_i, and
    the n-th roots z_i. Made by `prove_modulus`, checked by `verify_modulus_proof`."""

    w: int
    signs: tuple[int, ...]
    w_exponents: tuple[int, ...]
    fourth_roots: tuple[int, ...]
    nth_roots: tuple[int, ...]

    def to_bytes(self, public_key: PublicKey) -> bytes:
        k = _width(public_key.n)
        return b"".join(
            [
                bytes([PROOF_VERSION]),
                self.w.to_bytes(k, "big"),
                _pack_bits(self.signs),
                _pack_bits(self.w_exponents),
                *(x.to_bytes(k, "big") for x in self.fourth_roots),
                *(z.to_bytes(k, "big") for z in self.nth_roots),
            ]
        )

    @classmethod
    def from_bytes(
        cls, data: bytes, *, public_key: PublicKey, field: str = PROOF_FIELD
    ) -> ModulusProof:
        """Parse strictly: exact length, known version, every integer in [1, n)."""
        if not isinstance(data, bytes | bytearray):
            raise InvalidArgument("the modulus proof must be bytes", field=field)
        expected = proof_size(public_key)
        if len(data) != expected:
            raise InvalidArgument(
                f"the modulus proof is {len(data)} bytes; {expected} expected for a "
                f"{public_key.bits}-bit key",
                field=field,
            )
        if data[0] != PROOF_VERSION:
            raise InvalidArgument(
                f"unknown modulus proof version {data[0]}; this release reads {PROOF_VERSION}",
                field=field,
            )
        n, k = public_key.n, _width(public_key.n)
        offset = 1

        def integer(what: str) -> int:
            nonlocal offset
            value = int.from_bytes(data[offset : offset + k], "big")
            offset += k
            if not 0 < value < n:
                raise InvalidArgument(f"{what} of the modulus proof is outside [1, n)", field=field)
            return value

        w = integer("w")
        signs = _unpack_bits(data[offset : offset + _BITS_BYTES])
        offset += _BITS_BYTES
        w_exponents = _unpack_bits(data[offset : offset + _BITS_BYTES])
        offset += _BITS_BYTES
        fourth = tuple(integer(f"x_{i + 1}") for i in range(MODULUS_PROOF_ROUNDS))
        nth = tuple(integer(f"z_{i + 1}") for i in range(NTH_ROOT_ROUNDS))
        return cls(w=w, signs=signs, w_exponents=w_exponents, fourth_roots=fourth, nth_roots=nth)


def prove_modulus(private_key: PrivateKey) -> bytes:
    """The proof for `private_key`'s modulus (~0.1 s at 2048 bits): compute once per key."""
    n = private_key.public_key.n
    p, q = (gmpy2.mpz(f) for f in private_key.factors())
    if p % 4 != 3 or q % 4 != 3:
        # keys made before the proof existed need not be Blum integers; no proof exists then
        raise CryptoError(
            "this key's modulus is not a Blum integer (p, q ≡ 3 mod 4), so it cannot carry the "
            "modulus proof every party now requires; generate a new key pair and ask the "
            "platform for a token bound to it",
            field="private_key",
        )
    nn = gmpy2.mpz(n)
    if gmpy2.gcd(nn, (p - 1) * (q - 1)) != 1:
        raise CryptoError(
            "n shares a factor with φ(n): no n-th roots exist, and no Paillier key either",
            field="private_key",
        )
    w = _random_jacobi_minus_one(nn)
    # x = y'^(((p+1)/4)²) mod p is a fourth root of a quadratic residue y' when p ≡ 3 (mod 4):
    # y'^((p+1)/4) is the square root that is itself a residue, and its square root is x
    fourth_p = ((p + 1) // 4) ** 2 % (p - 1)
    fourth_q = ((q + 1) // 4) ** 2 % (q - 1)
    # z = y^(n⁻¹ mod φ(n)) mod n, by CRT: z^n = y because n·(n⁻¹ mod p−1) ≡ 1 (mod p−1)
    nth_p = gmpy2.invert(nn, p - 1)
    nth_q = gmpy2.invert(nn, q - 1)
    p_inv_q = gmpy2.invert(p, q)
    w_residue_p = gmpy2.legendre(w, p)

    def crt(rp: Any, rq: Any) -> int:
        return int(rp + (rq - rp) * p_inv_q % q * p)

    signs: list[int] = []
    w_exponents: list[int] = []
    fourth_roots: list[int] = []
    challenges = _challenges(n, int(w), MODULUS_PROOF_ROUNDS)
    for y in challenges:
        lp, lq = gmpy2.legendre(y, p), gmpy2.legendre(y, q)
        # −1 is a non-residue mod p and mod q (both ≡ 3 mod 4) and w a residue mod exactly one
        # of them ((w/n) = −1): one of ±y, ±w·y is a residue mod both
        b = 0 if lp == lq else 1
        a = 0 if (lp if b == 0 else lp * w_residue_p) == 1 else 1
        y_prime = gmpy2.mpz(y) * (w if b else 1) * (-1 if a else 1) % nn
        x = crt(gmpy2.powmod(y_prime, fourth_p, p), gmpy2.powmod(y_prime, fourth_q, q))
        signs.append(a)
        w_exponents.append(b)
        fourth_roots.append(x)
    nth_roots = [
        crt(gmpy2.powmod(y, nth_p, p), gmpy2.powmod(y, nth_q, q))
        for y in challenges[:NTH_ROOT_ROUNDS]
    ]
    proof = ModulusProof(
        w=int(w),
        signs=tuple(signs),
        w_exponents=tuple(w_exponents),
        fourth_roots=tuple(fourth_roots),
        nth_roots=tuple(nth_roots),
    )
    return proof.to_bytes(private_key.public_key)


def verify_modulus_proof(public_key: PublicKey, proof: bytes, *, field: str = PROOF_FIELD) -> None:
    """Accept `proof` for `public_key` or raise InvalidArgument naming `field` and the reason.

    Runs `check_modulus` first (cached): the n-th-root rounds are only sound once no prime
    factor of n is below 2^20. Costs ~25 ms at 2048 bits (4 exponentiations to the n-th power).
    """
    n = public_key.n
    check_modulus(n, field="public_key")
    if not proof:
        raise InvalidArgument(
            "a proof that n is a Paillier–Blum modulus is required; the SDK makes one when it "
            "registers a key",
            field=field,
        )
    parsed = ModulusProof.from_bytes(proof, public_key=public_key, field=field)
    nn = gmpy2.mpz(n)
    w = gmpy2.mpz(parsed.w)
    if gmpy2.jacobi(w, nn) != -1:
        raise InvalidArgument(
            "w of the modulus proof does not have Jacobi symbol −1 modulo n", field=field
        )
    challenges = _challenges(n, parsed.w, MODULUS_PROOF_ROUNDS)
    for i, (z, y) in enumerate(zip(parsed.nth_roots, challenges, strict=False)):
        if gmpy2.powmod(z, nn, nn) != y:
            raise InvalidArgument(
                f"z_{i + 1} is not an n-th root of its challenge: this proof is not for this "
                "key, or n shares a factor with φ(n)",
                field=field,
            )
    for i, y in enumerate(challenges):
        expected = gmpy2.mpz(y) * (w if parsed.w_exponents[i] else 1) % nn
        if parsed.signs[i]:
            expected = (nn - expected) % nn
        x = gmpy2.mpz(parsed.fourth_roots[i])
        if gmpy2.powmod(x, 4, nn) != expected:
            raise InvalidArgument(
                f"x_{i + 1} is not a fourth root of (−1)^a·w^b·y_{i + 1}: n is not shown to be "
                "a Paillier–Blum modulus",
                field=field,
            )


class ProvenKeys:
    """The keys whose modulus proof this process has verified, by fingerprint (bounded, LRU).

    A node keeps one: the coordinator attaches the registered proof the first time it sends a
    key to the node, and again whenever the node answers KEY_PROOF_REQUIRED (after a restart,
    or once the key was forgotten).
    """

    def __init__(self, *, capacity: int = PROVEN_KEY_CACHE) -> None:
        if capacity < 1:
            raise InvalidArgument("must be at least 1", field="capacity")
        self._capacity = capacity
        self._proven: OrderedDict[KeyFingerprint, None] = OrderedDict()
        self._lock = threading.Lock()

    def __contains__(self, fingerprint: object) -> bool:
        with self._lock:
            return fingerprint in self._proven

    def require(self, public_key: PublicKey, proof: bytes, *, field: str = PROOF_FIELD) -> None:
        """Return if the key is proven (now or before); refuse it otherwise.

        A key not yet proven and no proof: KeyProofRequired (FAILED_PRECONDITION); a proof that
        does not verify: InvalidArgument naming `field`.
        """
        fingerprint = public_key.fingerprint
        with self._lock:
            if fingerprint in self._proven:
                self._proven.move_to_end(fingerprint)
                return
        if not proof:
            raise KeyProofRequired(
                f"this node has not verified key {fingerprint[:16]}…; send the key's modulus "
                "proof with the request",
                field=field,
            )
        verify_modulus_proof(public_key, proof, field=field)
        with self._lock:
            self._proven[fingerprint] = None
            self._proven.move_to_end(fingerprint)
            while len(self._proven) > self._capacity:
                self._proven.popitem(last=False)


def _width(n: int) -> int:
    return (n.bit_length() + 7) // 8


def _pack_bits(bits: tuple[int, ...]) -> bytes:
    value = 0
    for i, bit in enumerate(bits):
        value |= (bit & 1) << i
    return value.to_bytes(_BITS_BYTES, "little")


def _unpack_bits(data: bytes) -> tuple[int, ...]:
    # MODULUS_PROOF_ROUNDS is a multiple of 8: every bit of the field is a round's
    value = int.from_bytes(data, "little")
    return tuple((value >> i) & 1 for i in range(MODULUS_PROOF_ROUNDS))


def _random_jacobi_minus_one(n: Any) -> Any:
    while True:
        w = gmpy2.mpz(secrets.randbelow(int(n) - 1) + 1)
        # half of Z_n^* has Jacobi symbol −1 for a Blum integer; a non-unit has 0
        if gmpy2.jacobi(w, n) == -1:
            return w


def _challenges(n: int, w: int, count: int) -> list[int]:
    """y_1..y_count ∈ Z_n^*, derived from n and w alone (the Fiat–Shamir transform).

    y_i is the first value of SHAKE-256(prefix ‖ i ‖ j), j = 0, 1, ..., cut to n's bit length,
    that lies in [1, n) and is a unit: rejection sampling, so every y_i is uniform in Z_n^*.
    """
    k = _width(n)
    prefix = hashlib.shake_256()
    prefix.update(len(PROOF_DOMAIN).to_bytes(2, "big") + PROOF_DOMAIN)
    prefix.update(k.to_bytes(2, "big") + n.to_bytes(k, "big") + w.to_bytes(k, "big"))
    excess = 8 * k - n.bit_length()
    out: list[int] = []
    for i in range(count):
        j = 0
        while True:
            h = prefix.copy()
            h.update(i.to_bytes(4, "big") + j.to_bytes(4, "big"))
            y = int.from_bytes(h.digest(k), "big") >> excess
            if 0 < y < n and gmpy2.gcd(y, n) == 1:
                out.append(y)
                break
            j += 1
    return out
