"""Slot layouts derived from the score model: how contributions pack into Paillier plaintexts.

A layout fixes, for one subject kind and disclosure shape, the slots one subject occupies and each
slot's width. Widths come from the catalogue: the largest value any one department may put into a
slot, times the number of departments that can be summed, plus HEADROOM_BITS. So no sum of honest
contributions can carry into a neighbouring slot, by construction, and a decoded slot above its
bound (a corrupted sum, a wrong key, a misbehaving node) is caught instead of misread.

- BREAKDOWN: [deductions, bonus category 1, ..., bonus category k]. A bonus category is filled by
  its owner only (capped there); every department may fill the deductions slot.
- TOTAL (packed, for batches): one slot holding bonuses − deductions + `offset`, so each part is
  non-negative; the requester subtracts `offset` once per answering department and adds the base.
  A single-subject TOTAL query carries the signed value instead (`signed_total`).

Deductions are saturated per department at `saturation` = base − floor + the largest total bonus:
past it the score is the floor whatever the other departments say, so the clamp loses nothing,
and it is what makes the deductions slot finite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from osmanthus.core.catalogue import Catalogue, SubjectModel
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.rules import Contribution
from osmanthus.core.types import Shape, SubjectKind

#: spare bits per slot: a value that reaches them cannot be an honest sum and fails decoding
HEADROOM_BITS = 2
#: the packed TOTAL slot's name
TOTAL_SLOT = "total"


@dataclass(frozen=True)
class Slot:
    name: str
    width: int
    #: the largest value the sum over every department can reach
    sum_bound: int


@dataclass(frozen=True)
class SlotLayout:
    """One subject's slots for one shape, derived from a score model and a department count."""

    kind: SubjectKind
    shape: Shape
    slots: tuple[Slot, ...]
    #: how many departments the catalogue lets contribute to one sum
    contributors: int
    #: a department's deductions are capped here before encryption (see the module docstring)
    saturation: int
    #: packed TOTAL only: added to every department's part so that it is non-negative
    offset: int
    model: SubjectModel

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue, kind: SubjectKind, shape: Shape) -> SlotLayout:
        return cls.derive(
            catalogue.model(kind), contributors=len(catalogue.departments_for(kind)), shape=shape
        )

    @classmethod
    def derive(cls, model: SubjectModel, *, contributors: int, shape: Shape) -> SlotLayout:
        if contributors < 1:
            raise InvalidArgument(
                f"a layout needs at least one contributing department, got {contributors}",
                field="contributors",
            )
        saturation = model.base - model.floor + model.bonus_cap
        if shape is Shape.BREAKDOWN:
            bounds = [(model.slot_names()[0], contributors * saturation)]
            # a category has one owner, so its sum is the owner's capped part
            bounds += [(c.name, c.cap) for c in model.categories]
            offset = 0
        else:
            # every part is at most saturation + the department's own caps, and the caps of all
            # departments together are the model's bonus cap
            bounds = [(TOTAL_SLOT, contributors * saturation + model.bonus_cap)]
            offset = saturation
        slots = tuple(Slot(name, b.bit_length() + HEADROOM_BITS, b) for name, b in bounds)
        return cls(
            kind=model.kind,
            shape=shape,
            slots=slots,
            contributors=contributors,
            saturation=saturation,
            offset=offset,
            model=model,
        )

    # --- description -------------------------------------------------------------------------

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(s.width for s in self.slots)

    @property
    def subject_bits(self) -> int:
        return sum(s.width for s in self.slots)

    def capacity(self, key_bits: int) -> int:
        """Subjects per plaintext under a key of `key_bits`: every packed value stays below n."""
        # n has key_bits bits, so any value of key_bits - 1 bits is below n
        count = (key_bits - 1) // self.subject_bits
        if count < 1:
            raise InvalidArgument(
                f"a {key_bits}-bit key cannot hold one {self.subject_bits}-bit subject",
                field="public_key",
            )
        return count

    def check_wire(self, names: Sequence[str], widths: Sequence[int]) -> None:
        """Refuse a layout another party announced unless it is exactly this one."""
        if tuple(names) != self.names:
            raise InvalidArgument(
                f"slot layout {list(names)} does not match this catalogue's {list(self.names)}",
                field="slots",
            )
        if tuple(widths) != self.widths:
            raise InvalidArgument(
                f"slot widths {list(widths)} do not match this catalogue's {list(self.widths)} "
                "(the catalogues' caps or department counts differ)",
                field="slot_widths",
            )

    # --- a department's side --------------------------------------------------------------------

    def part(self, contribution: Contribution, *, department: str) -> tuple[int, ...]:
        """One department's slot values for one subject, deductions saturated, bounds checked."""
        deductions = self._saturated(contribution, department)
        if self.shape is Shape.BREAKDOWN:
            return (
                deductions,
                *(contribution.bonuses.get(c.name, 0) for c in self.model.categories),
            )
        return (sum(contribution.bonuses.values()) - deductions + self.offset,)

    def signed_total(self, contribution: Contribution, *, department: str) -> int:
        """A single-subject TOTAL part: bonuses − saturated deductions, signed."""
        deductions = self._saturated(contribution, department)
        return sum(contribution.bonuses.values()) - deductions

    def _saturated(self, contribution: Contribution, department: str) -> int:
        if contribution.deductions < 0:
            raise InvalidArgument(
                f"deductions {contribution.deductions} are negative", field="contribution"
            )
        own = {c.name: c for c in self.model.categories_owned_by(department)}
        for name, value in contribution.bonuses.items():
            category = own.get(name)
            if category is None:
                raise InvalidArgument(
                    f"department {department} does not own bonus category {name!r}",
                    field="contribution",
                )
            if not 0 <= value <= category.cap:
                raise InvalidArgument(
                    f"bonus category {name!r} value {value} outside 0..{category.cap}",
                    field="contribution",
                )
        return min(contribution.deductions, self.saturation)

    def pack(self, rows: Sequence[Sequence[int]]) -> int:
        """Subjects' slot values → one plaintext; subject i occupies block i from the low end."""
        plaintext = 0
        shift = 0
        for row in rows:
            if len(row) != len(self.slots):
                raise InvalidArgument(
                    f"{len(row)} slot values for a layout of {len(self.slots)} slots",
                    field="contribution",
                )
            for value, slot in zip(row, self.slots, strict=True):
                if not 0 <= value < (1 << slot.width):
                    raise InvalidArgument(
                        f"slot {slot.name!r} value {value} does not fit {slot.width} bits",
                        field="contribution",
                    )
                plaintext |= value << shift
                shift += slot.width
        return plaintext

    # --- the decrypting side --------------------------------------------------------------------

    def unpack(self, plaintext: int, *, subjects: int, contributors: int) -> list[tuple[int, ...]]:
        """A decrypted sum of `contributors` parts → each subject's slot sums, all checked."""
        if not 0 < contributors <= self.contributors:
            raise CryptoError(
                f"{contributors} contributing departments; this layout allows 1.."
                f"{self.contributors}",
                field="contributors",
            )
        if plaintext < 0 or plaintext.bit_length() > self.subject_bits * subjects:
            raise CryptoError(
                "decrypted sum does not fit its slot layout: wrong key or corrupted sum",
                field="ciphertext",
            )
        out: list[tuple[int, ...]] = []
        for index, values in enumerate(self._split(plaintext, subjects)):
            for value, slot in zip(values, self.slots, strict=True):
                if value > self._bound(slot, contributors):
                    raise CryptoError(
                        f"subject {index} slot {slot.name!r} holds {value}, more than "
                        f"{contributors} departments can contribute",
                        field="ciphertext",
                    )
            out.append(values)
        return out

    def _bound(self, slot: Slot, contributors: int) -> int:
        if self.shape is Shape.TOTAL:
            return contributors * self.saturation + self.model.bonus_cap
        if slot.name == self.slots[0].name:
            return contributors * self.saturation
        return slot.sum_bound

    def _split(self, plaintext: int, subjects: int) -> Iterator[tuple[int, ...]]:
        shift = 0
        for _ in range(subjects):
            values = []
            for slot in self.slots:
                values.append((plaintext >> shift) & ((1 << slot.width) - 1))
                shift += slot.width
            yield tuple(values)

    def unclamped_total(self, slot_sum: int, *, contributors: int) -> int:
        """A packed TOTAL slot sum → base − D + B (before the clamp)."""
        return self.model.base + slot_sum - contributors * self.offset
