"""Weak Paillier moduli (issue 14): what they would reveal, and that every one is now refused.

Positive controls first show the attack works against the arithmetic (a prime n decrypts with
λ = n − 1; a factor 3 of n shows (T − v) mod 3 in THRESHOLD zero tests and count mod 3 in FLAGS),
then the same keys are refused with the reason. The bound 2^20 is checked against the largest
|T − v| and flag count the shipped catalogue allows.
"""

from __future__ import annotations

import math
import re

import gmpy2
import pytest

from osmanthus.core import crypto
from osmanthus.core.catalogue import load_catalogue
from osmanthus.core.crypto import (
    SMALL_FACTOR_BOUND,
    Ciphertext,
    PrivateKey,
    PublicKey,
    check_modulus,
    generate_keypair,
)
from osmanthus.core.encoding import SlotLayout
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.keyproof import verify_modulus_proof
from osmanthus.core.types import KeyFingerprint, Shape, SubjectKind
from tests.weak_keys import (
    LARGEST_SMALL_PRIME,
    SMALLEST_LARGE_PRIME,
    WeakKey,
    prime_modulus,
    small_factor_modulus,
    weak_moduli,
)

#: repeats of one single-candidate zero test: a wrong inference needs 3 | r_v every time, 3^-24
REPEATS = 24
#: the size of the key the controls attack
CONTROL_BITS = 768


@pytest.fixture(scope="module")
def weak() -> list[WeakKey]:
    return weak_moduli(2048)


@pytest.fixture(scope="module")
def three_q() -> WeakKey:
    # toy size: the residues mod 3 do not depend on q's size, and the controls make ~150
    # zero tests; the 2048-bit 3·q is refused in test_every_weak_modulus_is_refused_...
    return small_factor_modulus(3, bits=CONTROL_BITS)


def test_every_weak_modulus_is_refused_with_its_reason(weak: list[WeakKey]) -> None:
    assert [w.name for w in weak] == ["prime", "3·q", "p²", "1019·q"]
    for key in weak:
        assert key.n.bit_length() == 2048, key.name
        with pytest.raises(InvalidArgument, match=re.escape(key.reason)) as caught:
            PublicKey.checked(key.n)
        assert caught.value.field == "public_key"
        with pytest.raises(InvalidArgument, match=re.escape(key.reason)):
            PublicKey.from_bytes(key.public.to_bytes(), field="public_key")


def test_a_valid_modulus_proof_does_not_save_a_small_factor(weak: list[WeakKey]) -> None:
    # n = 3·q and n = 1019·q are Blum integers: Π^mod alone holds for them, which is why the
    # gcd with the small primes runs first, also inside the proof's verification
    with_proofs = [w for w in weak if w.proof]
    assert [w.name for w in with_proofs] == ["3·q", "1019·q"]
    for key in with_proofs:
        with pytest.raises(InvalidArgument, match="has a prime factor below 2\\^20") as caught:
            verify_modulus_proof(key.public, key.proof)
        assert caught.value.field == "public_key"


def test_the_bound_is_2_to_the_20_exactly() -> None:
    assert SMALL_FACTOR_BOUND == 2**20
    assert gmpy2.is_prime(LARGEST_SMALL_PRIME) and gmpy2.is_prime(SMALLEST_LARGE_PRIME)
    assert gmpy2.next_prime(LARGEST_SMALL_PRIME) == SMALLEST_LARGE_PRIME
    assert LARGEST_SMALL_PRIME < SMALL_FACTOR_BOUND < SMALLEST_LARGE_PRIME
    below = small_factor_modulus(LARGEST_SMALL_PRIME)
    with pytest.raises(InvalidArgument, match="prime factor below 2\\^20"):
        check_modulus(below.n)
    # just above the bound: no residue mod s shows anything (see the bound test below)
    check_modulus(small_factor_modulus(SMALLEST_LARGE_PRIME).n)


def test_an_honest_key_passes_and_its_verdict_is_remembered() -> None:
    public, _ = generate_keypair(bits=2048)
    assert PublicKey.checked(public.n) == public
    assert crypto._verdicts.get(public.fingerprint) == (True, None)


def test_refused_verdicts_are_remembered_and_the_memory_is_bounded(weak: list[WeakKey]) -> None:
    prime = weak[0]
    with pytest.raises(InvalidArgument):
        check_modulus(prime.n)
    assert crypto._verdicts.get(PublicKey(n=prime.n).fingerprint) == (True, "is a probable prime")
    verdicts = crypto._ModulusVerdicts(2)
    for name in ("a", "b", "c"):
        verdicts.put(KeyFingerprint(name), None)
    assert verdicts.get(KeyFingerprint("a")) == (False, None)
    assert verdicts.get(KeyFingerprint("c")) == (True, None)


@pytest.mark.parametrize("n", [0, -7, 2**2048, 4, True])
def test_check_modulus_refuses_what_is_no_odd_integer_above_3(n: int) -> None:
    with pytest.raises(InvalidArgument, match="odd integer > 3"):
        check_modulus(n, field="n")


def test_longer_keys_than_allowed_are_refused_before_any_costly_check() -> None:
    with pytest.raises(InvalidArgument, match="4097 bits; at most 3072"):
        PublicKey.checked((1 << 4096) | 1)


# --- positive controls: what the weak keys would have revealed --------------------------------


def _lambda_decrypt(n: int, c: Ciphertext) -> int:
    """Paillier decryption with λ = n − 1: correct whenever n is prime (φ(n) = n − 1)."""
    lam = n - 1
    nsq = n * n
    u = (pow(c.value, lam, nsq) - 1) // n
    return u * pow(lam, -1, n) % n


def test_control_a_prime_modulus_decrypts_without_the_private_key_and_is_refused() -> None:
    key = prime_modulus()
    public = key.public
    for m in (0, 1, 185, 2**200 + 12345):
        assert _lambda_decrypt(key.n, public.encrypt(m)) == m
    with pytest.raises(InvalidArgument, match="is a probable prime"):
        PublicKey.checked(key.n)


def _encrypt_unit(public: PublicKey, m: int) -> Ciphertext:
    """E(m) as a node's part reaches the zero tests: the coordinator refuses a ciphertext that
    shares a factor with n, which one in s made under n = s·q does (its r is 0 mod s)."""
    while True:
        c = public.encrypt(m)
        if math.gcd(c.value, public.n) == 1:
            return c


def _residues_mod_3(key: WeakKey, ciphertexts: list[Ciphertext]) -> list[int]:
    """What the requester who made n = 3·q reads: each plaintext mod 3 (CRT half of p = 3)."""
    s, q = key.factors
    private = PrivateKey(public_key=key.public, p=s, q=q)
    return [private.decrypt(c) % s for c in ciphertexts]


def test_control_a_factor_3_shows_whether_3_divides_t_minus_v_and_is_refused(
    three_q: WeakKey,
) -> None:
    public = three_q.public
    assert three_q.factors[0] == 3
    # one THRESHOLD query as the coordinator makes it (before the shuffle): T = 185 < t = 190,
    # so the one bit it may tell is "no" (no candidate decrypts to 0)
    total, values = 185, list(range(190, 201))
    tests = public.zero_tests(_encrypt_unit(public, total), values)
    private = PrivateKey(public_key=public, p=3, q=three_q.factors[1])
    assert all(private.decrypt(c) != 0 for c in tests)
    for v, residue in zip(values, _residues_mod_3(three_q, tests), strict=True):
        # r_v·(T − v) mod 3 = 0 whenever 3 | T − v; a non-zero residue proves 3 ∤ T − v
        if (total - v) % 3 == 0:
            assert residue == 0
        if residue != 0:
            assert (total - v) % 3 != 0
    # the single-candidate query (t = 200), asked again and again, with a fresh r_v each time:
    # the requester tells scores below the threshold apart by T mod 3, far more than one bit
    for score in (197, 198, 199):
        repeated = [
            public.zero_tests(_encrypt_unit(public, score), [200])[0] for _ in range(REPEATS)
        ]
        inferred = all(r == 0 for r in _residues_mod_3(three_q, repeated))
        assert inferred == ((200 - score) % 3 == 0), score
    with pytest.raises(InvalidArgument, match="has a prime factor below 2\\^20"):
        check_modulus(three_q.n)


def test_control_a_factor_3_shows_whether_3_divides_a_flag_count(three_q: WeakKey) -> None:
    # FLAGS forwards E(r · count): the one bit is count > 0; mod 3 tells whether 3 | count
    public = three_q.public
    for count in (1, 3):
        blinded = [public.zero_tests(_encrypt_unit(public, count), [0])[0] for _ in range(REPEATS)]
        assert all(r == 0 for r in _residues_mod_3(three_q, blinded)) == (count % 3 == 0)


# --- the bound against the catalogue ------------------------------------------------------------


def test_no_residue_below_the_bound_can_show_anything_for_the_shipped_catalogue() -> None:
    """A prime s shows something only if it divides a non-zero T − v or flag count, i.e. if
    s ≤ |T − v| or s ≤ count. The largest |T − v| is ceiling − base + every department's
    saturated deductions; the largest count is the number of flags triggering one measure."""
    catalogue = load_catalogue()
    largest = 0
    for kind in SubjectKind:
        model = catalogue.model(kind)
        layout = SlotLayout.for_catalogue(catalogue, kind, Shape.TOTAL)
        lowest_total = model.base - layout.contributors * layout.saturation
        largest = max(largest, model.ceiling - lowest_total, model.ceiling - (model.floor + 1))
    counts = max(sum(1 for f in catalogue.flags if m.id in f.measures) for m in catalogue.measures)
    assert largest == 4_500  # persons: 22 departments × 200 + 100 (docs/caveats.md)
    assert counts <= len(catalogue.flags) < 100
    assert max(largest, counts) < SMALL_FACTOR_BOUND
