"""Slot layouts at their bounds: widths come from the catalogue, and sums never spill over."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from osmanthus.core.catalogue import BonusCategory, Catalogue, SubjectModel, load_catalogue
from osmanthus.core.crypto import PrivateKey, PublicKey, UnsafeShortKeys
from osmanthus.core.encoding import HEADROOM_BITS, SlotLayout
from osmanthus.core.errors import CryptoError, InvalidArgument
from osmanthus.core.rules import Contribution
from osmanthus.core.score import Breakdown, clamp_total, score
from osmanthus.core.types import PACKED_SHAPES, DepartmentId, Shape, SubjectKind

CATALOGUE = load_catalogue()
KINDS = st.sampled_from(list(SubjectKind))
SHAPES = st.sampled_from(list(PACKED_SHAPES))


def contribution_for(
    model: SubjectModel, department: str, deductions: int, fill: float
) -> Contribution:
    """A department's contribution with each owned category at `fill` of its cap."""
    return Contribution(
        deductions=deductions,
        bonuses=MappingProxyType(
            {c.name: int(c.cap * fill) for c in model.categories_owned_by(department)}
        ),
    )


@st.composite
def federation_parts(
    draw: st.DrawFn, kind: SubjectKind, catalogue: Catalogue = CATALOGUE
) -> list[tuple[str, Contribution]]:
    """Every department of one subject kind, each with a contribution at or past the bounds."""
    model = catalogue.model(kind)
    saturation = model.base - model.floor + model.bonus_cap
    parts = []
    for dept in catalogue.departments_for(kind):
        deductions = draw(
            st.one_of(
                st.sampled_from([0, 1, saturation - 1, saturation, saturation + 1, 10**9]),
                st.integers(min_value=0, max_value=3 * saturation),
            )
        )
        bonuses = {
            c.name: draw(st.sampled_from([0, c.cap]) | st.integers(0, c.cap))
            for c in model.categories_owned_by(dept.id)
        }
        parts.append((dept.id, Contribution(deductions, MappingProxyType(bonuses))))
    return parts


def test_default_widths_follow_the_catalogue() -> None:
    person = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    model = CATALOGUE.model(SubjectKind.PERSON)
    departments = len(CATALOGUE.departments_for(SubjectKind.PERSON))
    assert person.contributors == departments == 22
    assert person.saturation == model.base - model.floor + model.bonus_cap == 200
    # 22 departments × 200 = 4,400 needs 13 bits; each 25-point category needs 5
    assert person.widths == (13 + HEADROOM_BITS, *(5 + HEADROOM_BITS for _ in range(4)))
    assert person.names == model.slot_names()
    total = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.TOTAL)
    assert total.names == ("total",)
    assert total.widths == ((22 * 200 + 100).bit_length() + HEADROOM_BITS,)
    # what the packing buys at 2048 bits: 47 breakdowns or 136 totals per ciphertext
    assert person.capacity(2048) == 2047 // person.subject_bits == 47
    assert total.capacity(2048) == 136


@settings(max_examples=200, deadline=None)
@given(
    caps=st.lists(st.integers(1, 10**6), min_size=1, max_size=8),
    base=st.integers(0, 10**6),
    contributors=st.integers(1, 512),
    shape=SHAPES,
)
def test_every_department_at_its_maximum_fits_any_catalogue(
    caps: list[int], base: int, contributors: int, shape: Shape
) -> None:
    # widths are derived, not fixed: whatever the caps and the number of departments, the
    # largest honest sum of each slot fits its width with the headroom bits still clear
    categories = tuple(
        BonusCategory(name=f"c{i}", label="c", owner=DepartmentId("d0"), cap=cap)
        for i, cap in enumerate(caps)
    )
    model = SubjectModel(
        kind=SubjectKind.PERSON,
        base=base,
        floor=0,
        ceiling=base + sum(caps),
        categories=categories,
        grades=(),
    )
    layout = SlotLayout.derive(model, contributors=contributors, shape=shape)
    owner = contribution_for(model, "d0", deductions=10**12, fill=1.0)
    others = contribution_for(model, "d1", deductions=10**12, fill=1.0)
    parts = [layout.part(owner, department="d0")]
    parts += [layout.part(others, department="d1") for _ in range(contributors - 1)]
    rows = [tuple(sum(column) for column in zip(*parts, strict=True))]
    for value, slot in zip(rows[0], layout.slots, strict=True):
        assert value <= slot.sum_bound
        assert value.bit_length() <= slot.width - HEADROOM_BITS
    plaintext = sum(layout.pack([p]) for p in parts)
    assert layout.unpack(plaintext, subjects=1, contributors=contributors) == rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), subjects=st.integers(1, 12))
def test_packed_sums_unpack_to_each_subjects_sums_and_keep_the_score(
    data: st.DataObject, subjects: int
) -> None:
    kind = data.draw(KINDS)
    shape = data.draw(SHAPES)
    layout = SlotLayout.for_catalogue(CATALOGUE, kind, shape)
    model = CATALOGUE.model(kind)
    per = layout.capacity(2048)
    subjects = min(subjects, per)
    # per subject: every department's contribution
    federation = [data.draw(federation_parts(kind)) for _ in range(subjects)]
    plaintext = 0
    departments = len(federation[0])
    for index in range(departments):
        rows = [layout.part(parts[index][1], department=parts[index][0]) for parts in federation]
        plaintext += layout.pack(rows)
    assert plaintext.bit_length() <= 2047
    unpacked = layout.unpack(plaintext, subjects=subjects, contributors=departments)
    for parts, slots in zip(federation, unpacked, strict=True):
        raw_deductions = sum(c.deductions for _, c in parts)
        bonuses = {
            c.name: sum(p.bonuses.get(c.name, 0) for _, p in parts) for c in model.categories
        }
        # saturating each department's deductions never changes the score
        exact = clamp_total(model, model.base - raw_deductions + sum(bonuses.values()))
        if shape is Shape.TOTAL:
            total = layout.unclamped_total(slots[0], contributors=departments)
            assert clamp_total(model, total) == exact
        else:
            assert slots[0] == sum(min(c.deductions, layout.saturation) for _, c in parts)
            assert dict(zip(layout.names[1:], slots[1:], strict=True)) == bonuses
            assert score(model, Breakdown(slots[0], dict(bonuses))) == exact


def test_a_full_slot_beside_empty_ones_stays_in_its_slot() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    bound = layout.slots[0].sum_bound
    plaintext = layout.pack([(bound, 0, 0, 0, 0), (0, 25, 0, 25, 0), (bound, 25, 25, 25, 25)])
    assert layout.unpack(plaintext, subjects=3, contributors=layout.contributors) == [
        (bound, 0, 0, 0, 0),
        (0, 25, 0, 25, 0),
        (bound, 25, 25, 25, 25),
    ]


@pytest.mark.parametrize("contributors", [1, 3, 22])
@pytest.mark.parametrize("slot", [0, 2])
def test_unpack_refuses_a_slot_above_what_the_contributors_can_reach(
    contributors: int, slot: int
) -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    bound = contributors * layout.saturation if slot == 0 else layout.slots[slot].sum_bound
    values = [0] * 5
    values[slot] = bound
    assert layout.unpack(layout.pack([values]), subjects=1, contributors=contributors) == [
        tuple(values)
    ]
    values[slot] = bound + 1
    with pytest.raises(CryptoError) as info:
        layout.unpack(layout.pack([values]), subjects=1, contributors=contributors)
    assert info.value.field == "ciphertext"
    assert repr(layout.names[slot]) in str(info.value)


def test_unpack_refuses_a_total_above_what_the_contributors_can_reach() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.ENTERPRISE, Shape.TOTAL)
    bound = 3 * layout.saturation + layout.model.bonus_cap
    assert layout.unpack(layout.pack([(bound,)]), subjects=1, contributors=3) == [(bound,)]
    with pytest.raises(CryptoError, match="3 departments"):
        layout.unpack(layout.pack([(bound + 1,)]), subjects=1, contributors=3)


def test_unpack_refuses_a_plaintext_larger_than_the_layout() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    with pytest.raises(CryptoError, match="slot layout") as info:
        layout.unpack(1 << layout.subject_bits, subjects=1, contributors=1)
    assert info.value.field == "ciphertext"
    # a decryption under the wrong key looks like a uniform value in [0, n): also refused
    with pytest.raises(CryptoError):
        layout.unpack(2**2046 + 12345, subjects=3, contributors=22)
    with pytest.raises(CryptoError):
        layout.unpack(-1, subjects=1, contributors=1)


@pytest.mark.parametrize("contributors", [0, -1, 23])
def test_unpack_refuses_an_impossible_contributor_count(contributors: int) -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    with pytest.raises(CryptoError) as info:
        layout.unpack(0, subjects=1, contributors=contributors)
    assert info.value.field == "contributors"


def test_pack_refuses_values_that_do_not_fit() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    for bad in (-1, 1 << layout.widths[1]):
        with pytest.raises(InvalidArgument, match="qualifications") as info:
            layout.pack([(0, bad, 0, 0, 0)])
        assert info.value.field == "contribution"
    with pytest.raises(InvalidArgument, match="4 slot values"):
        layout.pack([(0, 0, 0, 0)])


def test_part_refuses_bonuses_the_department_does_not_own_or_past_the_cap() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    owner = layout.model.categories[0].owner
    stranger = next(
        d.id
        for d in CATALOGUE.departments_for(SubjectKind.PERSON)
        if not layout.model.categories_owned_by(d.id)
    )
    name = layout.model.categories[0].name
    with pytest.raises(InvalidArgument, match="does not own"):
        layout.part(Contribution(0, {name: 1}), department=stranger)
    with pytest.raises(InvalidArgument, match=r"outside 0\.\.25"):
        layout.part(Contribution(0, {name: 26}), department=owner)
    with pytest.raises(InvalidArgument, match="negative"):
        layout.part(Contribution(-1, {}), department=stranger)


def test_signed_total_saturates_like_the_packed_total() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.TOTAL)
    stranger = "psb"
    assert layout.signed_total(Contribution(10**9, {}), department=stranger) == -200
    assert layout.part(Contribution(10**9, {}), department=stranger) == (0,)
    assert layout.signed_total(Contribution(30, {}), department=stranger) == -30


def test_check_wire_names_what_differs() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    layout.check_wire(layout.names, layout.widths)
    with pytest.raises(InvalidArgument) as info:
        layout.check_wire(layout.names[::-1], layout.widths)
    assert info.value.field == "slots"
    with pytest.raises(InvalidArgument) as info:
        layout.check_wire(layout.names, (40,) * 5)
    assert info.value.field == "slot_widths"
    assert "differ" in str(info.value)


def test_a_key_too_short_for_one_subject_is_refused() -> None:
    layout = SlotLayout.for_catalogue(CATALOGUE, SubjectKind.PERSON, Shape.BREAKDOWN)
    with pytest.raises(InvalidArgument) as info:
        layout.capacity(layout.subject_bits)
    assert info.value.field == "public_key"
    assert layout.capacity(layout.subject_bits + 1) == 1


def test_a_catalogue_with_more_departments_widens_the_deductions_slot() -> None:
    model = CATALOGUE.model(SubjectKind.PERSON)
    narrow = SlotLayout.derive(model, contributors=22, shape=Shape.BREAKDOWN)
    wide = SlotLayout.derive(model, contributors=65, shape=Shape.BREAKDOWN)
    assert wide.widths[0] == (65 * 200).bit_length() + HEADROOM_BITS > narrow.widths[0]
    assert wide.widths[1:] == narrow.widths[1:]
    with pytest.raises(InvalidArgument):
        SlotLayout.derive(model, contributors=0, shape=Shape.TOTAL)
    assert dataclasses.replace(model, base=model.base).bonus_cap == 100


# --- through real encryption -----------------------------------------------------------------


@pytest.fixture(scope="module")
def short_keys() -> tuple[PublicKey, PrivateKey]:
    # why short: dozens of encryptions per property run, and a 1024-bit key still packs 23
    # BREAKDOWN subjects, enough to cross many slot and subject boundaries
    return UnsafeShortKeys.generate(bits=1024)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_homomorphic_sum_of_packed_parts_unpacks_to_the_plain_sums(
    short_keys: tuple[PublicKey, PrivateKey], data: st.DataObject
) -> None:
    public, private = short_keys
    kind = data.draw(KINDS)
    shape = data.draw(SHAPES)
    layout = SlotLayout.for_catalogue(CATALOGUE, kind, shape)
    # the last subject of a full plaintext is where an overflow past n would show
    subjects = data.draw(st.sampled_from([1, layout.capacity(public.bits)]))
    federation = [data.draw(federation_parts(kind)) for _ in range(subjects)]
    departments = len(federation[0])
    ciphertexts = []
    plain = 0
    for index in range(departments):
        rows = [layout.part(p[index][1], department=p[index][0]) for p in federation]
        packed = layout.pack(rows)
        plain += packed
        ciphertexts.append(public.encrypt(packed))
    decrypted = private.decrypt(public.add(*ciphertexts))
    assert decrypted == plain
    assert layout.unpack(decrypted, subjects=subjects, contributors=departments) == layout.unpack(
        plain, subjects=subjects, contributors=departments
    )
