"""The subject file's HPKE sealing: opens only with the portal's key and the exact context
(query, source, subject and the portal's per-call nonce); small-order keys refused up front."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from osmanthus.core.errors import ConfigError, InvalidArgument, Unauthenticated
from osmanthus.core.subjectseal import (
    ENC_BYTES,
    MAX_NONCE_BYTES,
    MIN_NONCE_BYTES,
    TAG_BYTES,
    SealContext,
    check_nonce,
    new_nonce,
    open_file,
    public_bytes,
    read_public_key_file,
    recipient_public_key,
    seal_file,
    seal_fingerprint,
)

NONCE = b"\x07" * 32
CONTEXT = SealContext(
    query_id="q-1",
    source="tax",
    subject_kind="person",
    subject_id="11010519491231002X",
    nonce=NONCE,
)
#: X25519 points of small order besides zero (RFC 7748 §6.1; the list libsodium refuses): every
#: exchange with one gives an all-zero secret
SMALL_ORDER_POINTS = [
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def test_round_trip_and_wire_size() -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_file(plaintext=b'{"a":1}', recipient_key=public_bytes(key), context=CONTEXT)
    assert len(sealed) == ENC_BYTES + len(b'{"a":1}') + TAG_BYTES
    assert open_file(sealed=sealed, private_key=key, context=CONTEXT) == b'{"a":1}'


def test_each_seal_is_fresh() -> None:
    key = X25519PrivateKey.generate()
    one = seal_file(plaintext=b"x", recipient_key=public_bytes(key), context=CONTEXT)
    two = seal_file(plaintext=b"x", recipient_key=public_bytes(key), context=CONTEXT)
    assert one != two  # a fresh ephemeral key each time: equal files do not look equal


@pytest.mark.parametrize(
    "other",
    [
        dataclasses.replace(CONTEXT, query_id="q-2"),
        dataclasses.replace(CONTEXT, source="court"),
        dataclasses.replace(CONTEXT, subject_id="110105194912310029"),
        dataclasses.replace(CONTEXT, subject_kind="enterprise"),
        # the same query id, chosen again by a coordinator replaying the part into a new call:
        # the portal's nonce for that call is another
        dataclasses.replace(CONTEXT, nonce=b"\x08" * 32),
    ],
)
def test_a_file_opens_for_no_other_query_source_subject_or_call(other: SealContext) -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_file(plaintext=b"records", recipient_key=public_bytes(key), context=CONTEXT)
    with pytest.raises(Unauthenticated, match="does not open"):
        open_file(sealed=sealed, private_key=key, context=other)


def test_another_key_or_a_changed_byte_does_not_open() -> None:
    key = X25519PrivateKey.generate()
    sealed = seal_file(plaintext=b"records", recipient_key=public_bytes(key), context=CONTEXT)
    with pytest.raises(Unauthenticated):
        open_file(sealed=sealed, private_key=X25519PrivateKey.generate(), context=CONTEXT)
    for position in (0, ENC_BYTES, len(sealed) - 1):
        changed = bytearray(sealed)
        changed[position] ^= 1
        with pytest.raises(Unauthenticated):
            open_file(sealed=bytes(changed), private_key=key, context=CONTEXT)


def test_bad_keys_and_sizes_name_the_field() -> None:
    with pytest.raises(InvalidArgument, match="32 raw bytes") as info:
        seal_file(plaintext=b"x", recipient_key=b"short", context=CONTEXT)
    assert info.value.field == "recipient_key"
    with pytest.raises(InvalidArgument, match="all-zero"):
        seal_file(plaintext=b"x", recipient_key=bytes(32), context=CONTEXT)
    with pytest.raises(InvalidArgument) as size:
        open_file(sealed=b"\x00" * 10, private_key=X25519PrivateKey.generate(), context=CONTEXT)
    assert size.value.field == "sealed"
    with pytest.raises(InvalidArgument, match="query_id"):
        dataclasses.replace(CONTEXT, query_id="").info()


@pytest.mark.parametrize("size", [0, MIN_NONCE_BYTES - 1, MAX_NONCE_BYTES + 1])
def test_a_nonce_of_the_wrong_size_is_refused_naming_it(size: int) -> None:
    with pytest.raises(InvalidArgument, match="nonce must be 16 to 64") as caught:
        dataclasses.replace(CONTEXT, nonce=bytes(size)).info()
    assert caught.value.field == "nonce"
    with pytest.raises(InvalidArgument):
        check_nonce(bytes(size))


def test_each_call_draws_a_new_nonce() -> None:
    one, two = new_nonce(), new_nonce()
    assert one != two and len(one) == 32 and check_nonce(one) == one


@pytest.mark.parametrize("point", SMALL_ORDER_POINTS, ids=lambda p: p.hex()[:8])
def test_a_small_order_key_is_refused_before_anything_is_sealed(point: bytes) -> None:
    # before: seal_file raised a bare ValueError from the exchange, after the node had
    # audited its "allow" (INTERNAL on the wire); now a clear refusal naming the field
    for call in (
        lambda: recipient_public_key(point),
        lambda: seal_fingerprint(point),
        lambda: seal_file(plaintext=b"x", recipient_key=point, context=CONTEXT),
    ):
        with pytest.raises(InvalidArgument, match="small order") as caught:
            call()
        assert caught.value.field == "recipient_key"


def test_a_small_order_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "seal.pub"
    path.write_bytes(SMALL_ORDER_POINTS[1])
    with pytest.raises(ConfigError, match="small order") as caught:
        read_public_key_file(path)
    assert caught.value.field == "seal_key" and str(path) in caught.value.message


def test_fingerprint_is_sha256_of_the_raw_key() -> None:
    import hashlib

    raw = public_bytes(X25519PrivateKey.generate())
    assert seal_fingerprint(raw) == hashlib.sha256(raw).hexdigest()
