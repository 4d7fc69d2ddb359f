"""Plaintext encodings of a department's contribution for each disclosure shape.

BREAKDOWN packs [deductions, bonus category 1, ..., bonus category k] into fixed-width slots of one
plaintext, so one ciphertext per subject carries the whole breakdown. A single department's slot
value is at most MAX_SLOT_VALUE and at most MAX_CONTRIBUTORS departments are summed, so no slot can
overflow into its neighbour: SLOT_BITS ≥ bits(MAX_SLOT_VALUE · MAX_CONTRIBUTORS), by construction.
TOTAL is the signed sum of bonuses minus deductions; the coordinator adds the public base.
"""

from __future__ import annotations

from collections.abc import Sequence

from osmanthus.errors import CryptoError, InvalidArgument

SLOT_BITS = 40
MAX_SLOT_VALUE = 2**32 - 1
MAX_CONTRIBUTORS = 2 ** (SLOT_BITS - 32)
#: a TOTAL contribution's magnitude bound (far below n/3 for any allowed key)
MAX_TOTAL_MAGNITUDE = 2**32 - 1

assert (MAX_SLOT_VALUE * MAX_CONTRIBUTORS).bit_length() <= SLOT_BITS


def pack_breakdown(values: Sequence[int]) -> int:
    """One department's slot values → one plaintext integer."""
    plaintext = 0
    for i, value in enumerate(values):
        if not 0 <= value <= MAX_SLOT_VALUE:
            raise InvalidArgument(
                f"slot {i} value {value} outside [0, {MAX_SLOT_VALUE}]", field="contribution"
            )
        plaintext |= value << (SLOT_BITS * i)
    return plaintext


def unpack_breakdown(plaintext: int, *, slots: int, contributors: int) -> tuple[int, ...]:
    """A decrypted sum → slot values; fails loudly if any slot could not have come from the sum."""
    if not 0 < contributors <= MAX_CONTRIBUTORS:
        raise CryptoError(f"contributor count {contributors} out of range", field="contributors")
    if plaintext < 0 or plaintext.bit_length() > SLOT_BITS * slots:
        raise CryptoError(
            "decrypted breakdown does not fit its slot layout: wrong key or corrupted sum",
            field="ciphertext",
        )
    mask = (1 << SLOT_BITS) - 1
    values = tuple((plaintext >> (SLOT_BITS * i)) & mask for i in range(slots))
    bound = MAX_SLOT_VALUE * contributors
    for i, value in enumerate(values):
        if value > bound:
            raise CryptoError(
                f"slot {i} holds {value}, more than {contributors} departments can contribute",
                field="ciphertext",
            )
    return values


def total_contribution(*, deductions: int, bonuses: int) -> int:
    """A department's signed part of T = base − D + B."""
    value = bonuses - deductions
    if abs(value) > MAX_TOTAL_MAGNITUDE:
        raise InvalidArgument(f"total contribution {value} out of range", field="contribution")
    return value
