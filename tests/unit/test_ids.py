"""osmanthus.core.ids: worked examples from the standards, every rejection, round trips."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osmanthus.core import ids
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import SubjectKind

# GB 11643-1999's worked example. Digits 1 1 0 1 0 5 1 9 4 9 1 2 3 1 0 0 2 times weights
# 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 give 7+9+0+5+0+20+2+9+24+27+7+18+30+5+0+0+4 = 167;
# 167 mod 11 = 2, and "10X98765432"[2] = 'X'.
GB11643_EXAMPLE = "11010519491231002X"

# The standard's other example, born 1880: its check character is right
# (28+36+0+25+16+16+2+8+48+0+0+9+0+5+0+0+2 = 195, 195 mod 11 = 8, "10X98765432"[8] = '4')
# but we refuse birth dates before 1900.
GB11643_EXAMPLE_1880 = "440524188001010014"

# GB 32100-2015's example. Values 9 1 3 5 0 1 0 0 M=21 0 0 0 1 0 0 Y=30 4 times weights
# 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 give
# 9+3+27+135+0+26+0+0+420+0+0+0+8+0+0+900+112 = 1640; 1640 mod 31 = 28; 31 - 28 = 3 -> '3'.
# Its organisation code M000100Y4 also satisfies GB 11714: M=22, Y=34, so
# 22*3 + 1*5 + 34*2 = 139, 139 mod 11 = 7, 11 - 7 = 4 -> '4'.
GB32100_EXAMPLE = "91350100M000100Y43"

# Codes of well-known companies, as printed on their business licences.
REAL_USCCS = (
    "91330100716105852F",  # Alibaba (China) Co., Ltd., Hangzhou
    "9144030071526726XG",  # Tencent Technology (Shenzhen) Co., Ltd.
    "914403001922038216",  # Huawei Technologies Co., Ltd., Shenzhen
    "91110108551385082Q",  # Xiaomi Technology Co., Ltd., Beijing Haidian
    "91110000802100433B",  # Baidu Online Network Technology (Beijing) Co., Ltd.
)


def _today_in_china() -> datetime.date:
    return datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=8))).date()


def _resident(first17: str) -> str:
    return first17 + ids.resident_id_check_char(first17)


def _uscc(first17: str) -> str:
    return first17 + ids.uscc_check_char(first17)


# --- check characters -------------------------------------------------------------------------


def test_resident_check_char_of_the_standard_examples() -> None:
    assert ids.resident_id_check_char(GB11643_EXAMPLE[:17]) == "X"
    assert ids.resident_id_check_char(GB11643_EXAMPLE_1880[:17]) == "4"


def test_uscc_check_char_of_the_standard_example_and_real_codes() -> None:
    assert ids.uscc_check_char(GB32100_EXAMPLE[:17]) == "3"
    for code in REAL_USCCS:
        assert ids.uscc_check_char(code[:17]) == code[17], code


def test_uscc_check_value_31_is_written_0() -> None:
    # 31 - (sum mod 31) is 31 exactly when the sum is a multiple of 31; all zeros sums to 0.
    assert ids.uscc_check_char("0" * 17) == "0"


def test_organisation_code_check_char() -> None:
    assert ids.organisation_code_check_char("M000100Y") == "4"
    for code in REAL_USCCS:
        assert ids.organisation_code_check_char(code[8:16]) == code[16], code
    # 10 is written 'X' (Tencent's 71526726-X) and 11 is written '0': 00000001 sums to 2,
    # 11 - 2 = 9; 00000010 sums to 4, 11 - 4 = 7; 10000000 sums to 3, 11 - 3 = 8;
    # 00000000 sums to 0, 11 - 0 = 11 -> '0'.
    assert ids.organisation_code_check_char("71526726") == "X"
    assert ids.organisation_code_check_char("00000000") == "0"
    assert ids.organisation_code_check_char("00000001") == "9"


@pytest.mark.parametrize("bad", ["", "1234567890123456", "123456789012345678", "1234567890123456X"])
def test_resident_check_char_needs_17_digits(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="exactly 17 digits") as info:
        ids.resident_id_check_char(bad)
    assert info.value.field == "first17"


@pytest.mark.parametrize("bad", ["", "9135010000000000", "91350100O00010000"])
def test_uscc_check_char_needs_17_charset_characters(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="exactly 17 characters") as info:
        ids.uscc_check_char(bad)
    assert info.value.field == "first17"


@pytest.mark.parametrize("bad", ["", "1234567", "123456789", "1234567a"])
def test_organisation_check_char_needs_8_characters(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="exactly 8 digits or upper-case letters") as info:
        ids.organisation_code_check_char(bad)
    assert info.value.field == "first8"


# --- resident identity numbers: accepted ------------------------------------------------------


def test_standard_example_is_accepted() -> None:
    assert ids.validate_resident_id(GB11643_EXAMPLE) == GB11643_EXAMPLE


def test_lower_case_x_is_normalised() -> None:
    assert ids.validate_resident_id(GB11643_EXAMPLE.lower()) == GB11643_EXAMPLE


def test_leap_day_and_earliest_date_are_accepted() -> None:
    assert ids.validate_resident_id(_resident("32050820000229001"))
    assert ids.validate_resident_id(_resident("32050819000101001"))


def test_birth_today_is_accepted() -> None:
    today = _today_in_china()
    assert ids.validate_resident_id(_resident(f"320508{today:%Y%m%d}123"))


@pytest.mark.parametrize("prefix", sorted(ids.PROVINCE_CODES))
def test_every_province_prefix_is_accepted(prefix: str) -> None:
    assert ids.validate_resident_id(_resident(f"{prefix}010119800101123"))


@pytest.mark.parametrize("region", ["810000", "820000", "830000", "710000"])
def test_hong_kong_macao_taiwan_codes_are_accepted(region: str) -> None:
    assert ids.validate_resident_id(_resident(f"{region}19800101123"))


# --- resident identity numbers: rejected ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (GB11643_EXAMPLE[:17], "must be 18 characters, got 17"),
        (GB11643_EXAMPLE + "0", "must be 18 characters, got 19"),
        ("", "must be 18 characters, got 0"),
        (" " + GB11643_EXAMPLE, "leading or trailing whitespace"),
        (GB11643_EXAMPLE + "\n", "leading or trailing whitespace"),
        (
            "1101051949123100 X",
            "has a character other than a digit at position 17; positions 1-17 must be the digits",
        ),
        ("11010A19491231002X", r"other than a digit at position 6; positions 1-17"),
        # a full-width digit is a digit to str.isdigit() but not to the standard
        ("１1010519491231002X", r"other than a digit at position 1;"),
        (
            "110105194912310025"[:17] + "Y",
            r"does not end in a check character: it must be a digit 0-9 or 'X'",
        ),
        (
            _resident("00010519491231002"),
            r"subject_id: address code in a resident identity number does not start with a "
            r"province-level code \(its first two digits must be one of 11, 12, ",
        ),
        (_resident("19010519491231002"), r"does not start with a province-level code"),
        (_resident("83010119800101123"), r"does not start with a province-level code"),
        (
            _resident("11010519991332002"),
            r"subject_id: the birth date in a resident identity number \(positions 7-14\) is not "
            r"a valid calendar date$",
        ),
        (_resident("11010519000229002"), "birth date .* not a valid calendar date"),
        (_resident("11010520230229002"), "birth date .* not a valid calendar date"),
        (_resident("11010519490000002"), "birth date .* not a valid calendar date"),
        (_resident("11010500000101002"), "birth date .* not a valid calendar date"),
        (
            _resident("11010518991231002"),
            "the birth date in a resident identity number \\(positions 7-14\\) is before "
            "1900-01-01",
        ),
        (GB11643_EXAMPLE_1880, "birth date .* before 1900-01-01"),
        (
            GB11643_EXAMPLE[:17] + "5",
            "resident identity number check character \\(position 18\\) does not match the "
            "ISO 7064 MOD 11-2 check of positions 1-17",
        ),
        ("110105194912310020", "check character .* does not match the ISO 7064 MOD 11-2 check"),
    ],
)
def test_resident_id_rejections(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        ids.validate_resident_id(value)
    assert info.value.field == "subject_id"
    _assert_no_piece_of(value, info.value)


def _assert_no_piece_of(value: str, error: InvalidArgument) -> None:
    """No run of 5 or more characters of the refused value is in the message (a birth date,
    an address code, a check character and its neighbours; 4 would find '100-' of a code in
    the name of the standard, GB 32100-2015)."""
    text = str(error)
    for start in range(len(value) - 4):
        piece = value[start : start + 5]
        assert piece not in text, (piece, text)


def test_birth_date_in_the_future_is_rejected() -> None:
    # Two days ahead is in the future in China whatever this machine's own time zone is.
    soon = _today_in_china() + datetime.timedelta(days=2)
    value = _resident(f"110105{soon:%Y%m%d}002")
    with pytest.raises(InvalidArgument, match=r"birth date .* is in the future") as info:
        ids.validate_resident_id(value)
    assert f"{soon:%Y%m%d}" not in str(info.value) and f"{soon:%Y}" not in str(info.value)


@pytest.mark.parametrize("value", [None, 11010519491231002, b"11010519491231002X"])
def test_resident_id_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidArgument, match="must be a string") as info:
        ids.validate_resident_id(value)  # type: ignore[arg-type]
    assert info.value.field == "subject_id"


def test_rejection_names_the_callers_field() -> None:
    with pytest.raises(InvalidArgument, match="got 17") as info:
        ids.validate_resident_id(GB11643_EXAMPLE[:17], field="legal_representative_id")
    assert info.value.field == "legal_representative_id"
    assert str(info.value).startswith("legal_representative_id: ")


def test_rejection_message_does_not_echo_the_whole_identifier() -> None:
    with pytest.raises(InvalidArgument) as info:
        ids.validate_resident_id(GB11643_EXAMPLE[:17] + "5")
    assert GB11643_EXAMPLE[:17] not in str(info.value)


# --- unified social credit codes: accepted ----------------------------------------------------


@pytest.mark.parametrize("code", (GB32100_EXAMPLE, *REAL_USCCS))
def test_standard_example_and_real_codes_are_accepted(code: str) -> None:
    assert ids.validate_uscc(code) == code


@pytest.mark.parametrize(
    ("authority", "category"),
    [(a, c) for a, (_, cats) in ids.AUTHORITY_CATEGORIES.items() for c in cats],
)
def test_every_assigned_authority_and_category_is_accepted(authority: str, category: str) -> None:
    assert ids.validate_uscc(_uscc(f"{authority}{category}320508M000100Y4"))


def test_central_division_code_100000_is_accepted() -> None:
    assert ids.validate_uscc(_uscc("12100000M000100Y4"))


def test_organisation_code_check_digit_is_not_enforced_by_validation() -> None:
    # Documented choice: M000100Y5 fails GB 11714 (it should end in 4) but position 18 is right.
    code = _uscc("92320508M000100Y5")
    assert ids.validate_uscc(code) == code


# --- unified social credit codes: rejected ----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (GB32100_EXAMPLE[:17], "unified social credit code must be 18 characters, got 17"),
        (GB32100_EXAMPLE + "3", "must be 18 characters, got 19"),
        (GB32100_EXAMPLE + " ", "leading or trailing whitespace"),
        (
            "91350100O000100Y43",
            "enterprise_id: unified social credit code has a character at position 9 that is not "
            "in the GB 32100-2015 character set$",
        ),
        ("91350100M000100I43", "character at position 16 that is not in"),
        ("91350100M000100S43", "character at position 16 that is not in"),
        ("91350100M000100V43", "character at position 16 that is not in"),
        ("91350100M000100Z43", "character at position 16 that is not in"),
        ("91350100m000100Y43", r"at position 9 that .*\(letters must be upper case\)"),
        ("91350100M000100-43", "character at position 16 that is not in"),
        (
            _uscc("B1350100M000100Y4"),
            r"starts with a registration authority code that GB 32100-2015 does not assign",
        ),
        (_uscc("01350100M000100Y4"), r"registration authority code that GB 32100-2015"),
        (
            _uscc("94350100M000100Y4"),
            r"organisation category code at position 2 that its registration authority "
            r"\(market regulation",
        ),
        (_uscc("99350100M000100Y4"), r"category code at position 2 .* \(market regulation"),
        (_uscc("Y2350100M000100Y4"), r"category code at position 2 .* \(other"),
        (_uscc("1A350100M000100Y4"), r"category code at position 2 .* \(institutional staffing"),
        (
            _uscc("5135010AM000100Y4"),
            "administrative division code at positions 3-8 that is not six digits",
        ),
        (
            _uscc("91990100M000100Y4"),
            r"administrative division code at positions 3-8 of a unified social credit code "
            r"does not start with a province-level code",
        ),
        (_uscc("91000000M000100Y4"), r"does not start with a province-level code"),
        (_uscc("91100100M000100Y4"), r"does not start with a province-level code"),
        (
            GB32100_EXAMPLE[:17] + "4",
            "unified social credit code check character \\(position 18\\) does not match the "
            "GB 32100-2015 mod-31 check of positions 1-17",
        ),
    ],
)
def test_uscc_rejections(value: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as info:
        ids.validate_uscc(value, field="enterprise_id")
    assert info.value.field == "enterprise_id"
    _assert_no_piece_of(value, info.value)


def test_uscc_must_be_a_string() -> None:
    not_a_string: object = 913501
    with pytest.raises(InvalidArgument, match="must be a string, got int") as info:
        ids.validate_uscc(not_a_string)  # type: ignore[arg-type]
    assert info.value.field == "subject_id"


# --- validate_subject ---------------------------------------------------------------------------


def test_validate_subject_dispatches_on_kind() -> None:
    assert ids.validate_subject(SubjectKind.PERSON, GB11643_EXAMPLE.lower()) == GB11643_EXAMPLE
    assert ids.validate_subject(SubjectKind.ENTERPRISE, GB32100_EXAMPLE) == GB32100_EXAMPLE


def test_validate_subject_accepts_the_kind_value() -> None:
    assert ids.validate_subject("person", GB11643_EXAMPLE) == GB11643_EXAMPLE  # type: ignore[arg-type]


def test_validate_subject_rejects_unknown_kind() -> None:
    with pytest.raises(
        InvalidArgument, match="subject kind must be one of 'person', 'enterprise'"
    ) as info:
        ids.validate_subject("company", GB32100_EXAMPLE)  # type: ignore[arg-type]
    assert info.value.field == "subject_kind"


def test_resident_id_given_as_enterprise_names_the_rule_and_the_likely_kind() -> None:
    # 11010519491231002X fails GB 32100 at its region code: 010519 has province prefix 01.
    with pytest.raises(
        InvalidArgument,
        match=r"positions 3-8 of a unified social credit code does not start with a "
        r"province-level code.*valid resident identity number, so the subject kind is probably "
        r"'person', not 'enterprise'",
    ) as info:
        ids.validate_subject(SubjectKind.ENTERPRISE, GB11643_EXAMPLE, field="subject")
    assert info.value.field == "subject"


def test_uscc_given_as_person_names_the_rule_and_the_likely_kind() -> None:
    with pytest.raises(
        InvalidArgument,
        match=r"other than a digit at position 9; positions 1-17 must be the digits 0-9; the "
        r"value is a valid unified social credit code, so the subject kind is probably "
        r"'enterprise'",
    ) as info:
        ids.validate_subject(SubjectKind.PERSON, GB32100_EXAMPLE)
    assert info.value.field == "subject_id"


def test_all_digit_uscc_given_as_person_fails_on_a_named_rule() -> None:
    # Huawei's code is all digits, so it passes the character rule of a resident id and fails on
    # its address code: 914403 has province prefix 91.
    with pytest.raises(
        InvalidArgument,
        match=r"address code in a resident identity number does not start with a "
        r"province-level code.*probably 'enterprise', not 'person'",
    ):
        ids.validate_subject(SubjectKind.PERSON, "914403001922038216")


def test_invalid_for_both_kinds_gives_the_requested_kinds_rule_only() -> None:
    with pytest.raises(InvalidArgument) as info:
        ids.validate_subject(SubjectKind.ENTERPRISE, GB11643_EXAMPLE[:17] + "5")
    assert "province-level code" in info.value.message
    assert "probably" not in info.value.message


# --- make_* ------------------------------------------------------------------------------------


def test_make_resident_id_reproduces_the_standard_example() -> None:
    made = ids.make_resident_id(region="110105", birth=datetime.date(1949, 12, 31), sequence=2)
    assert made == GB11643_EXAMPLE


def test_make_uscc_reproduces_the_standard_example() -> None:
    made = ids.make_uscc(authority="9", category="1", region="350100", organisation="M000100Y4")
    assert made == GB32100_EXAMPLE


@pytest.mark.parametrize("region", ids.SUZHOU_DISTRICTS)
def test_suzhou_districts_build_valid_ids(region: str) -> None:
    assert region.startswith("3205")
    person = ids.make_resident_id(region=region, birth=datetime.date(1990, 6, 15), sequence=999)
    assert ids.validate_resident_id(person) == person
    firm = ids.make_uscc(authority="9", category="2", region=region, organisation="M000100Y4")
    assert ids.validate_uscc(firm) == firm


def test_suzhou_districts_are_the_nine_current_ones() -> None:
    assert ids.SUZHOU_DISTRICTS == (
        "320505", "320506", "320507", "320508", "320509", "320581", "320582", "320583", "320585",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"region": "32050"}, "region", "region must be six digits, got '32050'"),
        ({"region": "32050A"}, "region", "six digits"),
        ({"region": "990508"}, "region", r"region does not start with a province-level"),
        (
            {"birth": datetime.datetime(1990, 1, 1)},
            "birth",
            "must be a datetime.date, got datetime",
        ),
        ({"birth": "19900101"}, "birth", "must be a datetime.date, got str"),
        (
            {"birth": datetime.date(1899, 12, 31)},
            "birth",
            "the birth date is before 1900-01-01",
        ),
        ({"sequence": -1}, "sequence", r"sequence must be in 0\.\.999, got -1"),
        ({"sequence": 1000}, "sequence", r"sequence must be in 0\.\.999, got 1000"),
        ({"sequence": True}, "sequence", "must be an integer, got bool"),
        ({"sequence": "7"}, "sequence", "must be an integer, got str"),
    ],
)
def test_make_resident_id_rejections(kwargs: dict[str, object], field: str, message: str) -> None:
    args: dict[str, object] = {
        "region": "320508",
        "birth": datetime.date(1990, 1, 1),
        "sequence": 7,
        **kwargs,
    }
    with pytest.raises(InvalidArgument, match=message) as info:
        ids.make_resident_id(**args)  # type: ignore[arg-type]
    assert info.value.field == field


def test_make_resident_id_rejects_a_future_birth() -> None:
    soon = _today_in_china() + datetime.timedelta(days=2)
    with pytest.raises(InvalidArgument, match="is in the future") as info:
        ids.make_resident_id(region="320508", birth=soon, sequence=1)
    assert info.value.field == "birth"


@pytest.mark.parametrize(
    ("kwargs", "field", "message"),
    [
        ({"authority": "B"}, "authority", "authority 'B' is not a GB 32100-2015 registration"),
        ({"authority": "91"}, "authority", "authority '91' is not"),
        ({"category": "4"}, "category", r"category '4' is not assigned by registration authority"),
        ({"region": "3205"}, "region", "region must be six digits"),
        ({"region": "000000"}, "region", "does not start with a province-level code"),
        ({"organisation": "M000100Y"}, "organisation", "must be 9 characters, got 8"),
        ({"organisation": "O000100Y4"}, "organisation", "contains 'O' at position 1"),
        ({"organisation": "m000100Y4"}, "organisation", "contains 'm' at position 1"),
        (
            {"organisation": "M000100Y5"},
            "organisation",
            "organisation check character is '5' but GB 11714 gives '4'",
        ),
    ],
)
def test_make_uscc_rejections(kwargs: dict[str, str], field: str, message: str) -> None:
    args = {
        "authority": "9",
        "category": "1",
        "region": "320508",
        "organisation": "M000100Y4",
        **kwargs,
    }
    with pytest.raises(InvalidArgument, match=message) as info:
        ids.make_uscc(**args)
    assert info.value.field == field


# --- masking -----------------------------------------------------------------------------------


def test_mask_keeps_first_six_and_last_two() -> None:
    assert ids.mask_subject(GB11643_EXAMPLE) == "110105**********2X"
    assert ids.mask_subject(GB32100_EXAMPLE) == "913501**********43"
    assert len(ids.mask_subject(GB11643_EXAMPLE)) == 18


def test_mask_hides_short_values_entirely() -> None:
    assert ids.mask_subject("12345678") == "********"
    assert ids.mask_subject("") == ""
    assert ids.mask_subject("123456789") == "123456*89"


# --- single-character errors are always caught -------------------------------------------------


def _substitutions(value: str, alphabet: str) -> list[str]:
    return [
        value[:i] + ch + value[i + 1 :]
        for i in range(len(value))
        for ch in alphabet
        if ch != value[i]
    ]


@pytest.mark.parametrize("valid", [GB11643_EXAMPLE, "320508199006150012", "320583200002299990"])
def test_every_single_digit_substitution_in_a_resident_id_is_rejected(valid: str) -> None:
    # MOD 11-2's weights 2^k mod 11 are all non-zero mod the prime 11, and two digits differ by
    # 1..9, so any substitution changes the weighted sum mod 11 and the check fails.
    assert ids.validate_resident_id(_resident(valid[:17])) == valid
    for changed in _substitutions(valid, "0123456789X"):
        with pytest.raises(InvalidArgument):
            ids.validate_resident_id(changed)


@pytest.mark.parametrize("valid", (GB32100_EXAMPLE, *REAL_USCCS))
def test_every_single_character_substitution_in_a_uscc_is_rejected(valid: str) -> None:
    # The weights 3^k mod 31 are non-zero mod the prime 31 and two character values differ by
    # 1..30, so every substitution within the character set moves the sum mod 31.
    for changed in _substitutions(valid, ids.USCC_CHARSET):
        with pytest.raises(InvalidArgument):
            ids.validate_uscc(changed)


_ANY_CHAR = st.characters(codec="utf-8")


@st.composite
def _valid_resident_ids(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from((*ids.SUZHOU_DISTRICTS, "110105", "820000", "650102")))
    birth = draw(st.dates(datetime.date(1900, 1, 1), _today_in_china() - datetime.timedelta(1)))
    return ids.make_resident_id(region=region, birth=birth, sequence=draw(st.integers(0, 999)))


@st.composite
def _valid_usccs(draw: st.DrawFn) -> str:
    authority = draw(st.sampled_from(sorted(ids.AUTHORITY_CATEGORIES)))
    category = draw(st.sampled_from(sorted(ids.AUTHORITY_CATEGORIES[authority][1])))
    region = draw(st.sampled_from((*ids.SUZHOU_DISTRICTS, "100000", "350100", "810000")))
    body = draw(st.text(alphabet=ids.USCC_CHARSET, min_size=8, max_size=8))
    organisation = body + ids.organisation_code_check_char(body)
    return ids.make_uscc(
        authority=authority, category=category, region=region, organisation=organisation
    )


@settings(max_examples=300, deadline=None)
@given(valid=_valid_resident_ids(), position=st.integers(0, 17), replacement=_ANY_CHAR)
def test_any_single_substitution_in_a_resident_id_is_rejected(
    valid: str, position: int, replacement: str
) -> None:
    assert ids.validate_resident_id(valid) == valid
    original = valid[position]
    # 'x' for 'X' is the one substitution the standard treats as no change.
    if replacement == original or (original == "X" and replacement == "x"):
        return
    changed = valid[:position] + replacement + valid[position + 1 :]
    with pytest.raises(InvalidArgument) as info:
        ids.validate_resident_id(changed)
    assert info.value.field == "subject_id"


@settings(max_examples=300, deadline=None)
@given(valid=_valid_usccs(), position=st.integers(0, 17), replacement=_ANY_CHAR)
def test_any_single_substitution_in_a_uscc_is_rejected(
    valid: str, position: int, replacement: str
) -> None:
    assert ids.validate_uscc(valid) == valid
    if replacement == valid[position]:
        return
    changed = valid[:position] + replacement + valid[position + 1 :]
    with pytest.raises(InvalidArgument) as info:
        ids.validate_uscc(changed)
    assert info.value.field == "subject_id"


@settings(max_examples=200, deadline=None)
@given(valid=_valid_resident_ids())
def test_resident_round_trip_through_validate_subject(valid: str) -> None:
    assert ids.validate_subject(SubjectKind.PERSON, valid) == valid
    assert ids.validate_subject(SubjectKind.PERSON, valid.lower()) == valid


@settings(max_examples=200, deadline=None)
@given(valid=_valid_usccs())
def test_uscc_round_trip_through_validate_subject(valid: str) -> None:
    assert ids.validate_subject(SubjectKind.ENTERPRISE, valid) == valid


# --- validate_any_subject -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        GB11643_EXAMPLE[:17] + "5",  # a person's id with one character mistyped
        _resident("11010519991332002")[:-1] + "0",
        "1101051949123100 X",
        GB32100_EXAMPLE[:17] + "4",
        "张三 110105194912310",
    ],
)
def test_validate_any_subject_names_both_rules_never_the_value(value: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        ids.validate_any_subject(value, field="subject_id")
    assert info.value.field == "subject_id"
    message = info.value.message
    assert message.startswith("neither a resident id nor a unified social credit code: ")
    assert "resident identity number" in message and "unified social credit code" in message
    assert "张三" not in message
    _assert_no_piece_of(value, info.value)


def test_validate_any_subject_accepts_either_kind() -> None:
    assert ids.validate_any_subject(GB11643_EXAMPLE.lower()) == GB11643_EXAMPLE
    assert ids.validate_any_subject(GB32100_EXAMPLE) == GB32100_EXAMPLE
