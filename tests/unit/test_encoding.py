"""BREAKDOWN packing at its bounds: sums of packed contributions never spill into a neighbour."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osmanthus.crypto import PrivateKey, PublicKey, UnsafeShortKeys
from osmanthus.encoding import (
    MAX_CONTRIBUTORS,
    MAX_SLOT_VALUE,
    MAX_TOTAL_MAGNITUDE,
    SLOT_BITS,
    pack_breakdown,
    total_contribution,
    unpack_breakdown,
)
from osmanthus.errors import CryptoError, InvalidArgument

#: the default catalogue has 5 slots per subject kind (deductions + 4 categories); go past it
MAX_SLOTS = 8

#: slot values drawn with extra weight on the edges, where overflow would show
slot_values = st.one_of(
    st.sampled_from([0, 1, MAX_SLOT_VALUE - 1, MAX_SLOT_VALUE]),
    st.integers(min_value=0, max_value=MAX_SLOT_VALUE),
)


@st.composite
def departments(draw: st.DrawFn, *, max_contributors: int = MAX_CONTRIBUTORS) -> list[list[int]]:
    """1..max_contributors departments, each with one value per slot of a common layout."""
    slots = draw(st.integers(min_value=1, max_value=MAX_SLOTS))
    count = draw(
        st.one_of(
            st.sampled_from([1, 2, max_contributors]),
            st.integers(min_value=1, max_value=max_contributors),
        )
    )
    if draw(st.booleans()):
        # the same row for every department keeps large counts cheap to draw and hits the
        # worst case (everyone at the maximum) often
        row = draw(st.lists(slot_values, min_size=slots, max_size=slots))
        return [list(row) for _ in range(count)]
    return [draw(st.lists(slot_values, min_size=slots, max_size=slots)) for _ in range(count)]


def slot_sums(parts: list[list[int]]) -> tuple[int, ...]:
    return tuple(sum(column) for column in zip(*parts, strict=True))


def test_layout_constants_leave_no_room_for_overflow() -> None:
    assert (MAX_SLOT_VALUE * MAX_CONTRIBUTORS).bit_length() <= SLOT_BITS
    # one more contributor at the maximum would need another bit
    assert (MAX_SLOT_VALUE * (MAX_CONTRIBUTORS + 1)).bit_length() > SLOT_BITS


def test_every_department_at_the_maximum_sums_without_overflow() -> None:
    slots = 5
    parts = [[MAX_SLOT_VALUE] * slots for _ in range(MAX_CONTRIBUTORS)]
    plaintext = sum(pack_breakdown(p) for p in parts)
    expected = (MAX_SLOT_VALUE * MAX_CONTRIBUTORS,) * slots
    assert unpack_breakdown(plaintext, slots=slots, contributors=MAX_CONTRIBUTORS) == expected
    assert plaintext.bit_length() <= SLOT_BITS * slots


def test_maximum_next_to_zero_stays_in_its_slot() -> None:
    # a full slot beside empty ones: any carry would show up as 1 in the neighbour
    parts = [[0, MAX_SLOT_VALUE, 0, MAX_SLOT_VALUE, 0] for _ in range(MAX_CONTRIBUTORS)]
    plaintext = sum(pack_breakdown(p) for p in parts)
    full = MAX_SLOT_VALUE * MAX_CONTRIBUTORS
    assert unpack_breakdown(plaintext, slots=5, contributors=MAX_CONTRIBUTORS) == (
        0,
        full,
        0,
        full,
        0,
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=departments())
def test_sum_of_packed_contributions_unpacks_to_slot_sums(parts: list[list[int]]) -> None:
    # the decrypted homomorphic sum is exactly the integer sum (no wrap: far below any n)
    plaintext = sum(pack_breakdown(p) for p in parts)
    slots = len(parts[0])
    assert unpack_breakdown(plaintext, slots=slots, contributors=len(parts)) == slot_sums(parts)


@given(row=st.lists(slot_values, min_size=1, max_size=MAX_SLOTS))
def test_one_department_round_trips(row: list[int]) -> None:
    assert unpack_breakdown(pack_breakdown(row), slots=len(row), contributors=1) == tuple(row)


@pytest.mark.parametrize("bad", [-1, MAX_SLOT_VALUE + 1, 2**SLOT_BITS, -(2**40)])
@pytest.mark.parametrize("position", [0, 2, 4])
def test_pack_refuses_out_of_range_values(bad: int, position: int) -> None:
    values = [0, 1, 2, 3, 4]
    values[position] = bad
    with pytest.raises(InvalidArgument) as info:
        pack_breakdown(values)
    assert info.value.field == "contribution"
    assert f"slot {position}" in str(info.value)
    assert str(bad) in str(info.value)


def test_pack_of_no_values_is_zero() -> None:
    assert pack_breakdown([]) == 0


@pytest.mark.parametrize("slots", [1, 5])
def test_unpack_refuses_a_plaintext_too_large_for_the_layout(slots: int) -> None:
    too_large = 1 << (SLOT_BITS * slots)
    with pytest.raises(CryptoError) as info:
        unpack_breakdown(too_large, slots=slots, contributors=1)
    assert info.value.field == "ciphertext"
    assert "slot layout" in str(info.value)
    # a decryption under the wrong key looks like a uniform value in [0, n): also refused
    with pytest.raises(CryptoError):
        unpack_breakdown(2**2047 + 12345, slots=slots, contributors=MAX_CONTRIBUTORS)


def test_unpack_refuses_a_negative_plaintext() -> None:
    with pytest.raises(CryptoError) as info:
        unpack_breakdown(-1, slots=5, contributors=1)
    assert info.value.field == "ciphertext"


@pytest.mark.parametrize("contributors", [1, 3, MAX_CONTRIBUTORS - 1])
@pytest.mark.parametrize("slot", [0, 3])
def test_unpack_refuses_a_slot_above_what_the_contributors_can_reach(
    contributors: int, slot: int
) -> None:
    bound = MAX_SLOT_VALUE * contributors
    values = [0] * 5
    values[slot] = bound
    at_bound = sum(v << (SLOT_BITS * i) for i, v in enumerate(values))
    assert unpack_breakdown(at_bound, slots=5, contributors=contributors)[slot] == bound
    values[slot] = bound + 1
    above = sum(v << (SLOT_BITS * i) for i, v in enumerate(values))
    with pytest.raises(CryptoError) as info:
        unpack_breakdown(above, slots=5, contributors=contributors)
    assert info.value.field == "ciphertext"
    assert f"slot {slot}" in str(info.value)
    assert f"{contributors} departments" in str(info.value)


@pytest.mark.parametrize("contributors", [0, -1, MAX_CONTRIBUTORS + 1])
def test_unpack_refuses_an_impossible_contributor_count(contributors: int) -> None:
    with pytest.raises(CryptoError) as info:
        unpack_breakdown(0, slots=5, contributors=contributors)
    assert info.value.field == "contributors"


def test_total_contribution_bounds() -> None:
    assert total_contribution(deductions=30, bonuses=5) == -25
    assert total_contribution(deductions=0, bonuses=MAX_TOTAL_MAGNITUDE) == MAX_TOTAL_MAGNITUDE
    assert total_contribution(deductions=MAX_TOTAL_MAGNITUDE, bonuses=0) == -MAX_TOTAL_MAGNITUDE
    for deductions, bonuses in ((0, MAX_TOTAL_MAGNITUDE + 1), (MAX_TOTAL_MAGNITUDE + 1, 0)):
        with pytest.raises(InvalidArgument) as info:
            total_contribution(deductions=deductions, bonuses=bonuses)
        assert info.value.field == "contribution"


# --- through real encryption -----------------------------------------------------------------


@pytest.fixture(scope="module")
def short_keys() -> tuple[PublicKey, PrivateKey]:
    # why short: hundreds of encryptions per property run; 512 bits still holds
    # MAX_SLOTS × SLOT_BITS = 320-bit plaintexts, which is all the packing needs
    public, private = UnsafeShortKeys.generate(bits=512)
    assert public.bits > SLOT_BITS * MAX_SLOTS
    return public, private


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(parts=departments())
def test_homomorphic_sum_of_encrypted_contributions_unpacks_to_slot_sums(
    short_keys: tuple[PublicKey, PrivateKey], parts: list[list[int]]
) -> None:
    public, private = short_keys
    ciphertexts = [
        public.ciphertext_from_bytes(public.encrypt(pack_breakdown(p)).to_bytes()) for p in parts
    ]
    plaintext = private.decrypt(public.add(*ciphertexts))
    slots = len(parts[0])
    assert unpack_breakdown(plaintext, slots=slots, contributors=len(parts)) == slot_sums(parts)


def test_homomorphic_sum_at_the_extreme(short_keys: tuple[PublicKey, PrivateKey]) -> None:
    public, private = short_keys
    slots = MAX_SLOTS
    packed = pack_breakdown([MAX_SLOT_VALUE] * slots)
    total = public.add(*(public.encrypt(packed) for _ in range(MAX_CONTRIBUTORS)))
    assert (
        unpack_breakdown(private.decrypt(total), slots=slots, contributors=MAX_CONTRIBUTORS)
        == ((MAX_SLOT_VALUE * MAX_CONTRIBUTORS),) * slots
    )
