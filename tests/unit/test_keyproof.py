"""The modulus proof (CGGMP21 Π^mod, Fiat–Shamir): it verifies, binds its modulus, refuses every
tampering and malformed layout, refuses a modulus of three primes, and nodes check it once."""

from __future__ import annotations

import secrets
from typing import Any

import gmpy2
import pytest

from osmanthus.core.crypto import (
    MAX_KEY_BITS,
    PrivateKey,
    PublicKey,
    UnsafeShortKeys,
    check_modulus,
    generate_keypair,
)
from osmanthus.core.errors import CryptoError, InvalidArgument, KeyProofRequired
from osmanthus.core.grpc_errors import error_reason, status_of
from osmanthus.core.keyproof import (
    MODULUS_PROOF_ROUNDS,
    NTH_ROOT_ROUNDS,
    PROOF_FIELD,
    ModulusProof,
    ProvenKeys,
    _challenges,
    proof_size,
    prove_modulus,
    verify_modulus_proof,
)
from osmanthus.core.types import QueryId, SubjectKind
from osmanthus.core.wire import MAX_RECEIVE_BYTES
from osmanthus.core.wire.node import MAX_COHORT, StatsRequest, stats_request_to_proto


@pytest.fixture(scope="module")
def pair() -> tuple[PublicKey, PrivateKey]:
    return generate_keypair(bits=2048)


@pytest.fixture(scope="module")
def proof(pair: tuple[PublicKey, PrivateKey]) -> bytes:
    return prove_modulus(pair[1])


def _refused(public: PublicKey, proof: bytes, words: str, field: str = PROOF_FIELD) -> None:
    with pytest.raises(InvalidArgument, match=words) as caught:
        verify_modulus_proof(public, proof)
    assert caught.value.field == field


def test_generated_keys_are_blum_integers_and_their_proof_verifies(
    pair: tuple[PublicKey, PrivateKey], proof: bytes
) -> None:
    public, private = pair
    assert all(f % 4 == 3 for f in private.factors())
    verify_modulus_proof(public, proof)
    assert len(proof) == proof_size(public) == 1 + 20 + 85 * 256 == 21_781
    parsed = ModulusProof.from_bytes(proof, public_key=public)
    assert len(parsed.fourth_roots) == MODULUS_PROOF_ROUNDS == 80
    assert len(parsed.nth_roots) == NTH_ROOT_ROUNDS == 4
    assert parsed.to_bytes(public) == proof


def test_a_proof_for_a_3072_bit_key_has_the_documented_size() -> None:
    public = PublicKey(n=(1 << (MAX_KEY_BITS - 1)) | 1)
    assert proof_size(public) == 1 + 20 + 85 * 384 == 32_661


def test_each_proof_draws_a_fresh_w(pair: tuple[PublicKey, PrivateKey], proof: bytes) -> None:
    again = prove_modulus(pair[1])
    assert again != proof
    verify_modulus_proof(pair[0], again)


def test_the_challenges_depend_on_n_and_w_only() -> None:
    n = int(UnsafeShortKeys.generate(bits=256)[0].n)
    assert _challenges(n, 5, 3) == _challenges(n, 5, 3)
    assert _challenges(n, 5, 3) != _challenges(n, 7, 3)
    assert all(0 < y < n and gmpy2.gcd(y, n) == 1 for y in _challenges(n, 5, 80))


def test_a_proof_for_another_modulus_is_refused(pair: tuple[PublicKey, PrivateKey]) -> None:
    other_public, other_private = generate_keypair(bits=2048)
    _refused(
        pair[0],
        prove_modulus(other_private),
        "outside \\[1, n\\)|not an n-th root|Jacobi|fourth root",
    )
    assert other_public.n != pair[0].n


def _flip(data: bytes, index: int, mask: int = 1) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


K = 256  # bytes of n at 2048 bits
W_AT, A_AT, B_AT = 1, 1 + K, 1 + K + 10
X_AT = 1 + K + 20
Z_AT = X_AT + MODULUS_PROOF_ROUNDS * K


@pytest.mark.parametrize(
    ("where", "words"),
    [
        (W_AT + K - 1, "n-th root|Jacobi"),  # w: every challenge changes
        (A_AT, "x_1 is not a fourth root"),  # a_1
        (B_AT + 9, "x_80 is not a fourth root"),  # b_80 (bit 7 of the last byte)
        (X_AT + K - 1, "x_1 is not a fourth root"),
        (X_AT + 79 * K + 100, "x_80 is not a fourth root"),
        (Z_AT + K - 1, "z_1 is not an n-th root"),
        (Z_AT + 3 * K + 5, "z_4 is not an n-th root"),
    ],
)
def test_a_tampered_proof_is_refused(
    pair: tuple[PublicKey, PrivateKey], proof: bytes, where: int, words: str
) -> None:
    mask = 0x80 if where == B_AT + 9 else 1
    _refused(pair[0], _flip(proof, where, mask), words)


@pytest.mark.parametrize(
    ("mangle", "words"),
    [
        (lambda p: b"", "is required"),
        (lambda p: p[:-1], "21780 bytes; 21781 expected"),
        (lambda p: p + b"\x00", "21782 bytes; 21781 expected"),
        (lambda p: b"\x02" + p[1:], "unknown modulus proof version 2"),
        (lambda p: p[:W_AT] + bytes(K) + p[W_AT + K :], "w of the modulus proof is outside"),
        (lambda p: p[:X_AT] + b"\xff" * K + p[X_AT + K :], "x_1 of the modulus proof is outside"),
        (lambda p: p[:Z_AT] + bytes(K) + p[Z_AT + K :], "z_1 of the modulus proof is outside"),
    ],
)
def test_a_malformed_proof_is_refused_before_any_arithmetic(
    pair: tuple[PublicKey, PrivateKey], proof: bytes, mangle: Any, words: str
) -> None:
    _refused(pair[0], mangle(proof), words)


def test_a_w_with_jacobi_symbol_one_is_refused(
    pair: tuple[PublicKey, PrivateKey], proof: bytes
) -> None:
    one = (1).to_bytes(K, "big")
    _refused(pair[0], proof[:W_AT] + one + proof[W_AT + K :], "Jacobi symbol")


def test_a_key_that_is_no_blum_integer_cannot_be_proven() -> None:
    # what keys made before the proof existed are, three times in four
    def prime_1_mod_4(bits: int) -> int:
        while True:
            p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(bits)) | (3 << (bits - 2)))
            if p % 4 == 1:
                return int(p)

    p, q = prime_1_mod_4(512), prime_1_mod_4(512)
    private = PrivateKey(public_key=PublicKey(n=p * q), p=p, q=q)
    with pytest.raises(CryptoError, match=r"not a Blum integer.*generate a new key pair"):
        prove_modulus(private)


def _forged_proof_for_three_primes(primes: tuple[int, int, int]) -> bytes:
    """The best a prover can do for n = p·q·r: a fourth root wherever one exists.

    With three primes, w can fix the residuosity mod at most two of them per round, so about
    half the rounds have no fourth root at all; the n-th roots exist (gcd(n, φ(n)) = 1).
    """
    n = primes[0] * primes[1] * primes[2]
    phi = 1
    for p in primes:
        phi *= p - 1
    nn = gmpy2.mpz(n)
    while True:
        w = gmpy2.mpz(secrets.randbelow(n - 2) + 2)
        if gmpy2.jacobi(w, nn) == -1:
            break
    ys = _challenges(n, int(w), MODULUS_PROOF_ROUNDS)
    signs, w_exponents, fourth = [], [], []
    for y in ys:
        found = (0, 0, 1)
        for a in (0, 1):
            for b in (0, 1):
                target = gmpy2.mpz(y) * (w if b else 1) * (-1 if a else 1) % nn
                if all(gmpy2.legendre(target, p) == 1 for p in primes):
                    # a fourth root mod each prime ≡ 3 (mod 4), joined by CRT
                    roots = [gmpy2.powmod(target, ((p + 1) // 4) ** 2 % (p - 1), p) for p in primes]
                    x = 0
                    for p, r in zip(primes, roots, strict=True):
                        m = n // p
                        x += int(r) * m * int(gmpy2.invert(m, p))
                    found = (a, b, x % n)
        signs.append(found[0])
        w_exponents.append(found[1])
        fourth.append(found[2])
    d = int(gmpy2.invert(n, phi))
    nth = [pow(y, d, n) for y in ys[:NTH_ROOT_ROUNDS]]
    forged = ModulusProof(
        w=int(w),
        signs=tuple(signs),
        w_exponents=tuple(w_exponents),
        fourth_roots=tuple(fourth),
        nth_roots=tuple(nth),
    )
    return forged.to_bytes(PublicKey(n=n))


def test_a_modulus_of_three_large_primes_passes_the_checks_but_not_the_proof() -> None:
    # the well-formedness checks cannot tell p·q·r from p·q; the proof's fourth roots can
    def blum_prime(bits: int) -> int:
        while True:
            p = gmpy2.next_prime(gmpy2.mpz(secrets.randbits(bits)) | (3 << (bits - 2)))
            if p % 4 == 3:
                return int(p)

    primes = (blum_prime(683), blum_prime(683), blum_prime(682))
    n = primes[0] * primes[1] * primes[2]
    check_modulus(n)
    public = PublicKey(n=n)
    _refused(public, _forged_proof_for_three_primes(primes), "is not a fourth root")


def test_a_node_asks_for_the_proof_once_and_then_remembers_the_key(
    pair: tuple[PublicKey, PrivateKey], proof: bytes
) -> None:
    proven = ProvenKeys()
    with pytest.raises(KeyProofRequired) as caught:
        proven.require(pair[0], b"")
    assert caught.value.field == PROOF_FIELD
    # FAILED_PRECONDITION with ErrorInfo reason KEY_PROOF_REQUIRED: the coordinator's cue
    assert status_of(caught.value).name == "FAILED_PRECONDITION"
    assert error_reason(KeyProofRequired) == "KEY_PROOF_REQUIRED"
    with pytest.raises(InvalidArgument, match="fourth root"):
        proven.require(pair[0], _flip(proof, X_AT + 7))
    assert pair[0].fingerprint not in proven
    proven.require(pair[0], proof)
    assert pair[0].fingerprint in proven
    # from now on without a proof, and a stale or broken one changes nothing
    proven.require(pair[0], b"")
    proven.require(pair[0], b"garbage")


def test_the_nodes_memory_of_proven_keys_is_bounded() -> None:
    keys = [UnsafeShortKeys.generate(bits=512) for _ in range(3)]
    proven = ProvenKeys(capacity=2)
    for public, private in keys:
        proven.require(public, prove_modulus(private))
    assert keys[0][0].fingerprint not in proven
    assert keys[1][0].fingerprint in proven and keys[2][0].fingerprint in proven
    with pytest.raises(KeyProofRequired):
        proven.require(keys[0][0], b"")


def test_the_largest_stats_request_with_a_3072_bit_proof_fits_a_message() -> None:
    # the proof travels once per node and key, possibly with a full STATS cohort
    public = PublicKey(n=(1 << (MAX_KEY_BITS - 1)) | 1)
    request = StatsRequest(
        query_id=QueryId("q_" + "0" * 32),
        subject_kind=SubjectKind.ENTERPRISE,
        subject_ids=tuple("91320500MA1XXXXX" + f"{i:02d}"[-2:] for i in range(MAX_COHORT)),
        purpose="credit_statistics_purpose_name",
        public_key=public.to_bytes(),
        statistics=tuple(f"category_{i}" for i in range(8)),
        slots=tuple(f"category_{i}" for i in range(8)),
        slot_widths=(32,) * 8,
        slot_bounds=(2**31,) * 8,
        modulus_proof=b"\xff" * proof_size(public),
    )
    size = len(stats_request_to_proto(request).SerializeToString())
    assert size < MAX_RECEIVE_BYTES, (size, MAX_RECEIVE_BYTES)
