"""The requester key registry: fingerprints, size limits, idempotent registration, persistence."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from coordinator.keys import KeyRegistry, fingerprint_of_modulus
from osmanthus.core.crypto import PrivateKey, PublicKey, generate_keypair
from osmanthus.core.errors import FailedPrecondition, InvalidArgument, NotFound
from osmanthus.core.keyproof import prove_modulus
from osmanthus.core.tokens import TokenClaims
from osmanthus.core.types import KeyFingerprint, Purpose, RequesterId, Role

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
BANK = RequesterId("bank-a")
AGENCY = RequesterId("agency-c")


#: each key's modulus proof, which every registration carries
PROOFS: dict[int, bytes] = {}


def _proven(pair: tuple[PublicKey, PrivateKey]) -> PublicKey:
    PROOFS[pair[0].n] = prove_modulus(pair[1])
    return pair[0]


@pytest.fixture(scope="module")
def key() -> PublicKey:
    return _proven(generate_keypair(bits=2048))


@pytest.fixture(scope="module")
def other_key() -> PublicKey:
    return _proven(generate_keypair(bits=2048))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[KeyRegistry]:
    with KeyRegistry(tmp_path / "keys.duckdb") as reg:
        yield reg


def test_fingerprint_is_sha256_of_minimal_big_endian_bytes() -> None:
    assert fingerprint_of_modulus(1) == hashlib.sha256(b"\x01").hexdigest()
    assert fingerprint_of_modulus(0x1234) == hashlib.sha256(b"\x12\x34").hexdigest()
    n = (1 << 2047) + 12345
    assert fingerprint_of_modulus(n) == hashlib.sha256(n.to_bytes(256, "big")).hexdigest()


def test_register_returns_the_fingerprint_tokens_bind(
    registry: KeyRegistry, key: PublicKey
) -> None:
    fingerprint = registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    assert fingerprint == key.fingerprint == fingerprint_of_modulus(key.n)
    assert registry.is_registered(BANK, fingerprint)
    assert registry.get(BANK, fingerprint) == key.n


def test_registering_again_is_idempotent(registry: KeyRegistry, key: PublicKey) -> None:
    first = registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    second = registry.register(
        requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW.replace(year=2027)
    )
    assert first == second
    assert registry.get(BANK, first) == key.n


def test_a_requester_may_hold_several_keys(
    registry: KeyRegistry, key: PublicKey, other_key: PublicKey
) -> None:
    a = registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    b = registry.register(requester=BANK, n=other_key.n, modulus_proof=PROOFS[other_key.n], now=NOW)
    assert a != b
    assert registry.get(BANK, a) == key.n
    assert registry.get(BANK, b) == other_key.n


def test_keys_are_per_requester(
    registry: KeyRegistry, key: PublicKey, other_key: PublicKey
) -> None:
    fingerprint = registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    assert not registry.is_registered(AGENCY, fingerprint)
    assert not registry.is_registered(BANK, other_key.fingerprint)
    with pytest.raises(NotFound, match="no registered key") as caught:
        registry.get(AGENCY, fingerprint)
    assert caught.value.field == "key_fingerprint"


def test_one_key_cannot_belong_to_two_requesters(registry: KeyRegistry, key: PublicKey) -> None:
    registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    with pytest.raises(FailedPrecondition, match="already registered to another requester"):
        registry.register(requester=AGENCY, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    assert not registry.is_registered(AGENCY, key.fingerprint)


@pytest.mark.parametrize(
    ("n", "message"),
    [
        ((1 << 2046) | 1, "2047 bits; at least 2048"),
        (3233, "12 bits; at least 2048"),
        (1 << 2047, "odd integer"),
        ((1 << 3072) | 1, "3073 bits; at most 3072"),
    ],
)
def test_unacceptable_moduli_are_refused(registry: KeyRegistry, n: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        registry.register(requester=BANK, n=n, modulus_proof=b"", now=NOW)
    assert caught.value.field == "public_key"
    assert not registry.is_registered(BANK, fingerprint_of_modulus(n))


def test_requester_and_time_are_validated(registry: KeyRegistry, key: PublicKey) -> None:
    with pytest.raises(InvalidArgument) as caught:
        registry.register(
            requester=RequesterId("Bank A"), n=key.n, modulus_proof=PROOFS[key.n], now=NOW
        )
    assert caught.value.field == "requester"
    with pytest.raises(InvalidArgument) as caught:
        registry.register(
            requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=datetime(2026, 11, 26)
        )
    assert caught.value.field == "now"


def test_keys_survive_a_restart(tmp_path: Path, key: PublicKey) -> None:
    path = tmp_path / "keys.duckdb"
    with KeyRegistry(path) as first:
        fingerprint = first.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    with KeyRegistry(path) as second:
        assert second.is_registered(BANK, fingerprint)
        assert second.get(BANK, fingerprint) == key.n
        assert not second.is_registered(BANK, KeyFingerprint("0" * 64))


def test_a_key_registered_after_a_miss_is_found(registry: KeyRegistry, key: PublicKey) -> None:
    # "not registered" is not remembered: the registration that follows counts at once
    assert not registry.is_registered(BANK, key.fingerprint)
    registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    assert registry.is_registered(BANK, key.fingerprint)
    assert not registry.is_registered(AGENCY, key.fingerprint)


def test_registrations_are_found_after_a_restart_without_a_prior_register(
    tmp_path: Path, key: PublicKey, other_key: PublicKey
) -> None:
    path = tmp_path / "keys.duckdb"
    with KeyRegistry(path) as first:
        a = first.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
        b = first.register(
            requester=AGENCY, n=other_key.n, modulus_proof=PROOFS[other_key.n], now=NOW
        )
    with KeyRegistry(path) as second:
        for _ in range(2):  # from the file, then from memory: the same answers
            assert second.is_registered(BANK, a)
            assert second.is_registered(AGENCY, b)
            assert not second.is_registered(BANK, b)
            assert not second.is_registered(AGENCY, a)


def test_a_registration_without_a_valid_proof_is_refused(
    registry: KeyRegistry, key: PublicKey, other_key: PublicKey
) -> None:
    for proof, words in [
        (b"", "proof that n is a Paillier–Blum modulus is required"),
        (PROOFS[other_key.n], "outside \\[1, n\\)|not an n-th root|Jacobi|fourth root"),
        (PROOFS[key.n][:-1], "21780 bytes; 21781 expected"),
    ]:
        with pytest.raises(InvalidArgument, match=words) as caught:
            registry.register(requester=BANK, n=key.n, modulus_proof=proof, now=NOW)
        assert caught.value.field == "public_key.modulus_proof"
        assert not registry.is_registered(BANK, key.fingerprint)
    assert registry.modulus_proof(key.fingerprint) == b""


def test_the_registry_keeps_the_proof_for_the_nodes(registry: KeyRegistry, key: PublicKey) -> None:
    registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
    assert registry.modulus_proof(key.fingerprint) == PROOFS[key.n]


_OLD_SCHEMA = """
CREATE TABLE requester_keys (
    requester VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    modulus_hex VARCHAR NOT NULL,
    registered_at TIMESTAMP NOT NULL,
    PRIMARY KEY (requester, fingerprint)
)
"""


def test_a_key_registered_before_proofs_must_be_registered_again_with_one(
    tmp_path: Path, key: PublicKey, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.duckdb"
    with duckdb.connect(str(path)) as old:
        old.execute(_OLD_SCHEMA)
        old.execute(
            "INSERT INTO requester_keys VALUES (?, ?, ?, ?)",
            [BANK, key.fingerprint, format(key.n, "x"), NOW.replace(tzinfo=None)],
        )
    claims = _claims(BANK, key.fingerprint)
    with KeyRegistry(path) as registry:
        assert "1 key(s) were registered before modulus proofs were required" in caplog.text
        assert not registry.is_registered(BANK, key.fingerprint)
        with pytest.raises(FailedPrecondition, match=r"without a modulus proof.*RegisterKey again"):
            registry.registered_key(claims, key.to_bytes())
        with pytest.raises(InvalidArgument, match="is required"):
            registry.register(requester=BANK, n=key.n, modulus_proof=b"", now=NOW)
        registry.register(requester=BANK, n=key.n, modulus_proof=PROOFS[key.n], now=NOW)
        assert registry.registered_key(claims, key.to_bytes()) == key
    with KeyRegistry(path) as reopened:
        assert reopened.is_registered(BANK, key.fingerprint)
        assert reopened.modulus_proof(key.fingerprint) == PROOFS[key.n]


def _claims(requester: str, fingerprint: KeyFingerprint) -> TokenClaims:
    return TokenClaims(
        requester=RequesterId(requester),
        role=Role.CREDIT_AGENCY,
        purposes=frozenset({Purpose("loan_underwriting")}),
        key_fingerprint=fingerprint,
        jti="t-1",
        issued_at=NOW,
        not_before=NOW,
        expires_at=NOW,
        single_use=False,
        issuer="platform",
        audience="osmanthus",
    )
