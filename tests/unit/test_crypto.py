"""Paillier keys and ciphertexts: phe interoperability, homomorphic sums, validation, key files."""

from __future__ import annotations

import json
import logging
import math
import secrets

import phe
import pytest

from osmanthus.core.crypto import (
    ALLOWED_KEY_BITS,
    MIN_KEY_BITS,
    SIGNED_FRACTION,
    Ciphertext,
    PrivateKey,
    PublicKey,
    UnsafeShortKeys,
    fingerprint_of_modulus,
    generate_keypair,
)
from osmanthus.core.errors import CryptoError, InvalidArgument

KeyPair = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module")
def keys() -> KeyPair:
    """One real 2048-bit key pair for the module (generation costs ~0.1-0.3 s)."""
    return generate_keypair(bits=2048)


@pytest.fixture(scope="module")
def other_keys() -> KeyPair:
    """A second, unrelated key: ciphertexts under it must never mix with `keys`."""
    return generate_keypair(bits=2048)


def factors(private: PrivateKey) -> tuple[int, int]:
    """p and q, read back through the key file format (the only supported way out)."""
    data = json.loads(private.to_json())
    return int(data["p"]), int(data["q"])


def phe_private_key(private: PrivateKey) -> phe.PaillierPrivateKey:
    p, q = factors(private)
    return phe.PaillierPrivateKey(phe.PaillierPublicKey(private.public_key.n), p, q)


def plaintexts_for(n: int) -> list[int]:
    """The edges of [0, n) and a few values in between."""
    return [0, 1, 2, n // 2, n - 2, n - 1, secrets.randbelow(n), secrets.randbelow(2**64)]


def wire(public: PublicKey, value: int) -> bytes:
    return value.to_bytes(public.ciphertext_size, "big")


# --- interoperability with python-paillier --------------------------------------------------


def test_our_ciphertexts_decrypt_with_phe(keys: KeyPair) -> None:
    public, private = keys
    theirs = phe_private_key(private)
    for m in plaintexts_for(public.n):
        assert theirs.raw_decrypt(public.encrypt(m).value) == m


def test_phe_ciphertexts_decrypt_with_ours(keys: KeyPair) -> None:
    public, private = keys
    theirs = phe.PaillierPublicKey(public.n)
    for m in plaintexts_for(public.n):
        # through the wire validation, as any ciphertext from outside would arrive
        c = public.ciphertext_from_bytes(wire(public, theirs.raw_encrypt(m)))
        assert private.decrypt(c) == m


def test_interoperability_at_3072_bits() -> None:
    public, private = generate_keypair(bits=3072)
    assert public.bits == 3072
    assert public.ciphertext_size == 768
    m = secrets.randbelow(public.n)
    assert phe_private_key(private).raw_decrypt(public.encrypt(m).value) == m
    raw = phe.PaillierPublicKey(public.n).raw_encrypt(m)
    assert private.decrypt(public.ciphertext_from_bytes(wire(public, raw))) == m


def test_phe_homomorphic_sum_of_our_ciphertexts_decrypts_with_ours(keys: KeyPair) -> None:
    public, private = keys
    theirs = phe.PaillierPublicKey(public.n)
    a, b = secrets.randbelow(2**100), secrets.randbelow(2**100)
    # phe's EncryptedNumber sum is the product mod n², computed by phe itself
    summed = phe.EncryptedNumber(theirs, public.encrypt(a).value) + phe.EncryptedNumber(
        theirs, theirs.raw_encrypt(b)
    )
    c = public.ciphertext_from_bytes(wire(public, summed.ciphertext(be_secure=False)))
    assert private.decrypt(c) == a + b


# --- homomorphic arithmetic ------------------------------------------------------------------


def test_encryption_is_randomised(keys: KeyPair) -> None:
    public, private = keys
    c1, c2 = public.encrypt(7), public.encrypt(7)
    assert c1.value != c2.value
    assert private.decrypt(c1) == private.decrypt(c2) == 7


def test_add_sums_plaintexts_mod_n(keys: KeyPair) -> None:
    public, private = keys
    values = [secrets.randbelow(2**200) for _ in range(5)]
    assert private.decrypt(public.add(*(public.encrypt(v) for v in values))) == sum(values)
    # a sum past n wraps around: Paillier plaintexts live in Z_n
    assert private.decrypt(public.add(public.encrypt(public.n - 1), public.encrypt(5))) == 4


def test_add_of_one_ciphertext_is_that_plaintext(keys: KeyPair) -> None:
    public, private = keys
    assert private.decrypt(public.add(public.encrypt(42))) == 42


def test_add_of_nothing_is_refused(keys: KeyPair) -> None:
    public, _ = keys
    with pytest.raises(CryptoError) as info:
        public.add()
    assert info.value.field == "ciphertexts"


def test_add_plain(keys: KeyPair) -> None:
    public, private = keys
    c = public.encrypt(1000)
    assert private.decrypt(public.add_plain(c, 100)) == 1100
    assert private.decrypt(public.add_plain(c, 0)) == 1000
    # a negative constant is added mod n, as the TOTAL base adjustment relies on
    assert private.decrypt_signed(public.add_plain(c, -1500)) == -500
    assert private.decrypt(public.add_plain(public.encrypt(public.n - 1), 1)) == 0


def test_signed_values_round_trip_at_the_bounds(keys: KeyPair) -> None:
    public, private = keys
    limit = public.n // SIGNED_FRACTION
    for v in (0, 1, -1, limit - 1, -(limit - 1), 123456789, -987654321):
        assert private.decrypt_signed(public.encrypt_signed(v)) == v


@pytest.mark.parametrize("offset", [0, 1])
def test_signed_encryption_refuses_values_at_or_past_the_bounds(keys: KeyPair, offset: int) -> None:
    public, _ = keys
    limit = public.n // SIGNED_FRACTION
    for v in (limit + offset, -(limit + offset)):
        with pytest.raises(CryptoError) as info:
            public.encrypt_signed(v)
        assert info.value.field == "plaintext"


def test_signed_sum_of_mixed_signs(keys: KeyPair) -> None:
    public, private = keys
    parts = [-50, 25, -30, 5, 0]
    summed = public.add(*(public.encrypt_signed(v) for v in parts))
    assert private.decrypt_signed(summed) == sum(parts)


def test_signed_decryption_refuses_the_middle_of_the_range(keys: KeyPair) -> None:
    public, private = keys
    limit = public.n // SIGNED_FRACTION
    # [limit, n - limit] is neither a small positive nor a small negative value: an overflow
    for m in (limit, public.n // 2, public.n - limit):
        with pytest.raises(CryptoError) as info:
            private.decrypt_signed(public.encrypt(m))
        assert info.value.field == "ciphertext"
        assert "overflow" in str(info.value)
    assert private.decrypt_signed(public.encrypt(limit - 1)) == limit - 1
    assert private.decrypt_signed(public.encrypt(public.n - limit + 1)) == -(limit - 1)


@pytest.mark.parametrize("m_offset", [0, 1])
def test_plaintext_outside_zero_to_n_is_refused(keys: KeyPair, m_offset: int) -> None:
    public, _ = keys
    for m in (-1 - m_offset, public.n + m_offset):
        with pytest.raises(CryptoError) as info:
            public.encrypt(m)
        assert info.value.field == "plaintext"


# --- validation of received ciphertexts ------------------------------------------------------


def test_valid_ciphertext_round_trips_through_bytes(keys: KeyPair) -> None:
    public, private = keys
    c = public.encrypt(99)
    data = c.to_bytes()
    assert len(data) == public.ciphertext_size == 512
    assert private.decrypt(public.ciphertext_from_bytes(data)) == 99


@pytest.mark.parametrize("delta", [-1, 1])
def test_ciphertext_of_the_wrong_length_is_refused(keys: KeyPair, delta: int) -> None:
    public, _ = keys
    good = public.encrypt(1).to_bytes()
    bad = good[:delta] if delta < 0 else good + b"\x00"
    with pytest.raises(CryptoError) as info:
        public.ciphertext_from_bytes(bad, field="parts[3].ciphertext")
    assert info.value.field == "parts[3].ciphertext"
    assert f"{len(bad)} bytes" in str(info.value)


def test_empty_ciphertext_is_refused(keys: KeyPair) -> None:
    public, _ = keys
    with pytest.raises(CryptoError) as info:
        public.ciphertext_from_bytes(b"")
    assert info.value.field == "ciphertext"


def test_zero_ciphertext_is_refused(keys: KeyPair) -> None:
    public, _ = keys
    with pytest.raises(CryptoError) as info:
        public.ciphertext_from_bytes(wire(public, 0), field="answer")
    assert info.value.field == "answer"
    assert "outside" in str(info.value)


@pytest.mark.parametrize("which", ["n_squared", "n_squared_plus_one", "all_ones"])
def test_ciphertext_at_or_above_n_squared_is_refused(keys: KeyPair, which: str) -> None:
    public, _ = keys
    nsq = public.n * public.n
    value = {
        "n_squared": nsq,
        "n_squared_plus_one": nsq + 1,
        "all_ones": 2 ** (8 * public.ciphertext_size) - 1,
    }[which]
    with pytest.raises(CryptoError) as info:
        public.ciphertext_from_bytes(wire(public, value), field="answer")
    assert info.value.field == "answer"
    assert "outside" in str(info.value)


def test_ciphertext_sharing_a_factor_with_n_is_refused(keys: KeyPair) -> None:
    public, private = keys
    p, q = factors(private)
    # a multiple of p (or of q) is not a unit mod n²: decrypting it would leak the factorisation
    for value in (p, q, p * 12345, q * (public.n + 7), public.n):
        assert math.gcd(value, public.n) != 1
        assert 0 < value < public.n * public.n
        with pytest.raises(CryptoError) as info:
            public.ciphertext_from_bytes(wire(public, value), field="answer")
        assert info.value.field == "answer"
        assert "factor" in str(info.value)


def test_ciphertext_under_another_key_is_refused_in_add(keys: KeyPair, other_keys: KeyPair) -> None:
    public, _ = keys
    other, _ = other_keys
    mine, theirs = public.encrypt(1), other.encrypt(2)
    with pytest.raises(CryptoError) as info:
        public.add(mine, theirs)
    assert info.value.field == "ciphertexts"
    assert "another key" in str(info.value)
    with pytest.raises(CryptoError) as info:
        public.add_plain(theirs, 1)
    assert info.value.field == "ciphertext"


def test_ciphertext_under_another_key_is_refused_in_decrypt(
    keys: KeyPair, other_keys: KeyPair
) -> None:
    _, private = keys
    other, _ = other_keys
    with pytest.raises(CryptoError) as info:
        private.decrypt(other.encrypt(3))
    assert info.value.field == "ciphertext"


def test_ciphertext_repr_does_not_show_the_modulus(keys: KeyPair) -> None:
    public, _ = keys
    assert str(public.n) not in repr(public.encrypt(5))
    assert isinstance(public.encrypt(5), Ciphertext)


# --- public keys ---------------------------------------------------------------------------


def test_checked_refuses_short_keys() -> None:
    # why short: only the modulus size matters here, no arithmetic at 2048 bits is needed
    public, _ = UnsafeShortKeys.generate(bits=1024)
    with pytest.raises(InvalidArgument) as info:
        PublicKey.checked(public.n)
    assert info.value.field == "public_key"
    assert "1024 bits" in str(info.value) and str(MIN_KEY_BITS) in str(info.value)
    with pytest.raises(InvalidArgument) as info:
        PublicKey.from_bytes(public.to_bytes(), field="request.public_key")
    assert info.value.field == "request.public_key"


def test_checked_accepts_2048_bits(keys: KeyPair) -> None:
    public, _ = keys
    again = PublicKey.from_bytes(public.to_bytes())
    assert again == public
    assert again.fingerprint == public.fingerprint == fingerprint_of_modulus(public.n)
    assert len(public.fingerprint) == 64


def test_empty_or_malformed_modulus_is_refused() -> None:
    with pytest.raises(InvalidArgument) as info:
        PublicKey.from_bytes(b"")
    assert info.value.field == "public_key"
    with pytest.raises(InvalidArgument) as info:
        PublicKey(n=2**2048)  # even
    assert info.value.field == "public_key"


@pytest.mark.parametrize("bits", [512, 1024, 2047, 2049, 4096, 0])
def test_generate_keypair_refuses_other_sizes(bits: int) -> None:
    assert bits not in ALLOWED_KEY_BITS
    with pytest.raises(InvalidArgument) as info:
        generate_keypair(bits=bits)
    assert info.value.field == "bits"
    assert str(bits) in str(info.value)


def test_generated_keys_have_exactly_the_requested_size(keys: KeyPair) -> None:
    public, private = keys
    p, q = factors(private)
    assert public.bits == 2048
    assert p * q == public.n and p != q
    assert math.gcd(public.n, (p - 1) * (q - 1)) == 1


# --- private keys --------------------------------------------------------------------------


def test_private_key_json_round_trip(keys: KeyPair) -> None:
    public, private = keys
    again = PrivateKey.from_json(private.to_json())
    assert again.public_key == public
    assert again.decrypt(public.encrypt(31337)) == 31337


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        "{}",
        '{"n": "1", "p": "2"}',
        '{"n": "abc", "p": "1", "q": "1"}',
        '{"n": null, "p": "1", "q": "1"}',
    ],
)
def test_malformed_private_key_json_is_refused(text: str) -> None:
    with pytest.raises(CryptoError) as info:
        PrivateKey.from_json(text)
    assert info.value.field == "private_key"
    assert "malformed" in str(info.value)


def test_private_key_json_with_wrong_factors_is_refused(keys: KeyPair) -> None:
    public, private = keys
    p, q = factors(private)
    for bad_p, bad_q in ((p, q + 2), (p, p), (q, q), (p * q, p * q)):
        text = json.dumps({"n": str(public.n), "p": str(bad_p), "q": str(bad_q)})
        with pytest.raises(CryptoError) as info:
            PrivateKey.from_json(text)
        assert info.value.field == "private_key"


@pytest.mark.parametrize("split", ["one_and_n", "negated"])
def test_private_key_with_trivial_or_negative_factors_is_refused(keys: KeyPair, split: str) -> None:
    public, private = keys
    p, q = factors(private)
    bad_p, bad_q = (1, public.n) if split == "one_and_n" else (-p, -q)
    text = json.dumps({"n": str(public.n), "p": str(bad_p), "q": str(bad_q)})
    with pytest.raises(CryptoError) as info:
        PrivateKey.from_json(text)
    assert info.value.field == "private_key"


def test_private_key_json_with_a_short_modulus_is_refused() -> None:
    # why short: the refusal depends only on the size of n
    _, private = UnsafeShortKeys.generate(bits=1024)
    with pytest.raises(InvalidArgument) as info:
        PrivateKey.from_json(private.to_json())
    assert info.value.field == "private_key"


def test_private_key_repr_does_not_show_the_factors(keys: KeyPair) -> None:
    _, private = keys
    p, q = factors(private)
    shown = repr(private) + str(private) + f"{private!r}"
    for secret in (p, q):
        assert str(secret) not in shown
        assert f"{secret:x}" not in shown.lower()
        # not even a recognisable prefix of the decimal digits
        assert str(secret)[:12] not in shown
    assert private.public_key.fingerprint[:16] in repr(private)


def test_unsafe_short_keys_warn(caplog: pytest.LogCaptureFixture) -> None:
    # why short: this is the test-only generator itself
    with caplog.at_level(logging.WARNING, logger="osmanthus.core.crypto"):
        public, private = UnsafeShortKeys.generate(bits=512)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("UNSAFE" in r.getMessage() and "512" in r.getMessage() for r in warnings)
    assert public.bits == 512
    assert private.decrypt(public.encrypt(12)) == 12
