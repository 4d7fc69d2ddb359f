"""Weak Paillier moduli an attacking requester could register, with a valid modulus proof where
one exists: what issue 14 found accepted, for tests that play the attack."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import gmpy2

from osmanthus.core.crypto import PrivateKey, PublicKey
from osmanthus.core.keyproof import prove_modulus

#: the largest prime below 2^20 and the smallest above: the two sides of the small-factor bound
LARGEST_SMALL_PRIME = 1_048_573
SMALLEST_LARGE_PRIME = 1_048_583
#: a small prime ≡ 3 (mod 4): s·q is then a Blum integer, and Π^mod alone would accept it
SMALL_BLUM_PRIME = 1019


@dataclass(frozen=True)
class WeakKey:
    """A weak modulus n, what is wrong with it, and a Π^mod proof for it when one exists."""

    name: str
    n: int
    #: the words `check_modulus` refuses it with
    reason: str
    #: a valid CGGMP21 Π^mod proof (n = s·q with s, q ≡ 3 mod 4), else b""
    proof: bytes
    #: n's prime factors with repetition, as the attacker who made n knows them
    factors: tuple[int, ...]

    @property
    def public(self) -> PublicKey:
        # no checks: building the key is exactly what the attacker does
        return PublicKey(n=self.n)


def _prime_in(low: int, high: int, *, blum: bool = False, coprime_to: int = 1) -> Any:
    """A random prime p in [low, high), ≡ 3 (mod 4) if `blum`, with gcd(p − 1, coprime_to) = 1."""
    while True:
        p = gmpy2.next_prime(low + secrets.randbelow(high - low))
        while p < high and ((blum and p % 4 != 3) or gmpy2.gcd(p - 1, coprime_to) != 1):
            p = gmpy2.next_prime(p)
        if p < high:
            return p


def _prime(bits: int) -> Any:
    return _prime_in(1 << (bits - 1), 1 << bits)


def _times_prime(s: int, bits: int) -> tuple[int, Any]:
    """n = s·q of exactly `bits` bits, q a prime ≡ 3 (mod 4) with s ∤ q − 1, so that
    gcd(n, φ(n)) = 1 and (for s ≡ 3 mod 4) a valid Π^mod proof exists."""
    q = _prime_in(-(-(1 << (bits - 1)) // s), (1 << bits) // s, blum=True, coprime_to=s)
    return int(s * q), q


def proof_for(n: int, p: int, q: int) -> bytes:
    """Π^mod for n = p·q, made as an honest prover would (the attacker knows p and q)."""
    public = PublicKey(n=n)
    return prove_modulus(PrivateKey(public_key=public, p=p, q=q))


def prime_modulus(bits: int = 2048) -> WeakKey:
    """n prime: anyone decrypts with λ = n − 1."""
    n = int(_prime(bits))
    return WeakKey("prime", n, "is a probable prime", b"", (n,))


def small_factor_modulus(s: int, bits: int = 2048) -> WeakKey:
    """n = s·q with s prime: a requester reads residues mod s of every zero test."""
    n, q = _times_prime(s, bits)
    proof = proof_for(n, s, int(q)) if s % 4 == 3 else b""
    return WeakKey(f"{s}·q", n, "has a prime factor below 2^20", proof, (s, int(q)))


def prime_square_modulus(bits: int = 2048) -> WeakKey:
    """n = p²: not square-free, gcd(n, φ(n)) = p; no Π^mod proof exists."""
    while True:
        p = _prime(bits // 2)
        if (p * p).bit_length() == bits:
            return WeakKey("p²", int(p * p), "is a perfect power", b"", (int(p), int(p)))


def weak_moduli(bits: int = 2048) -> list[WeakKey]:
    """Every kind the issue names: prime, 3·q, p², a small prime times q."""
    return [
        prime_modulus(bits),
        small_factor_modulus(3, bits),
        prime_square_modulus(bits),
        small_factor_modulus(SMALL_BLUM_PRIME, bits),
    ]
