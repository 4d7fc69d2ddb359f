"""Validate, build and mask subject identifiers: resident identity numbers and social credit codes.

Every entry point that accepts a subject calls this module, so a malformed identifier is refused
before it reaches a policy, a consent lookup, a node or the audit log.

Resident identity number (公民身份号码), GB 11643-1999, 18 characters:
    positions 1-6   address code; its first two digits must be a province-level code
    positions 7-14  birth date YYYYMMDD: a real calendar date, not before 1900-01-01 and not in
                    the future (dates are judged in China Standard Time, UTC+8)
    positions 15-17 sequence code (any three digits)
    position 18     check character, ISO 7064 MOD 11-2 over positions 1-17; a lower-case 'x' is
                    accepted and normalised to 'X'

Unified social credit code (统一社会信用代码), GB 32100-2015, 18 characters from the set
"0123456789ABCDEFGHJKLMNPQRTUWXY" (no I, O, S, V, Z; upper case only):
    position 1      registration authority code
    position 2      organisation category code, which must be one the authority assigns
    positions 3-8   administrative division code of the registering authority: six digits whose
                    first two are a province-level code, or exactly 100000 (central authorities)
    positions 9-17  organisation code (主体标识码, GB 11714-1997)
    position 18     check character: sum of character values (index in the character set) times
                    weights 3^(i-1) mod 31, check value = 31 - (sum mod 31), 31 meaning 0

Choices that go beyond or against the letter of the standards, and why:

* The organisation code's own GB 11714 check digit (position 17) is NOT enforced by
  `validate_uscc`. Codes issued to individual businesses (category 92) and some other register
  entries carry segments that do not satisfy it, and refusing a genuine code at the entry point
  would lock its holder out. The mod-31 check at position 18 already catches every single-character
  error, so the second check would add little. `make_uscc` does enforce it, so every code we
  generate is valid under both rules.
* Province-level codes accepted: 11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71 (Taiwan),
  81 (Hong Kong), 82 (Macao). For resident identity numbers the address code 830000 is also
  accepted: it is the code the 2018 residence-permit rules assign to Taiwan residents living on the
  mainland, whose permits carry a GB 11643 number. No other 83xxxx code is accepted.
* The registration authority and category table is GB 32100-2015 Table 1 as extended by the
  later assignments published with it (2 foreign affairs, 3 judicial administration, 4 culture,
  6 tourism, 7 religion, 8 trade unions, A the CMC staffing office, N agriculture).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from osmanthus.core.clock import china_today
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.types import SubjectId, SubjectKind

__all__ = [
    "AUTHORITY_CATEGORIES",
    "PROVINCE_CODES",
    "SUZHOU_DISTRICTS",
    "USCC_CHARSET",
    "make_resident_id",
    "make_uscc",
    "mask_subject",
    "organisation_code_check_char",
    "resident_id_check_char",
    "uscc_check_char",
    "validate_any_subject",
    "validate_resident_id",
    "validate_subject",
    "validate_uscc",
]

ID_LENGTH = 18

_DIGITS = frozenset("0123456789")

#: the first two digits of a real province-level administrative division code (GB/T 2260)
PROVINCE_CODES: frozenset[str] = frozenset(
    [f"{n}" for n in range(11, 16)]
    + [f"{n}" for n in range(21, 24)]
    + [f"{n}" for n in range(31, 38)]
    + [f"{n}" for n in range(41, 47)]
    + [f"{n}" for n in range(50, 55)]
    + [f"{n}" for n in range(61, 66)]
    + ["71", "81", "82"]
)

# Taiwan residents' residence permits (2018) carry GB 11643 numbers with this address code.
_TAIWAN_RESIDENT_PERMIT_REGION = "830000"
# Authorities at the central level register with this division code instead of a province's.
_CENTRAL_REGION = "100000"

#: real county-level region codes of Suzhou, Jiangsu (GB/T 2260), for synthetic data
SUZHOU_DISTRICTS: tuple[str, ...] = (
    "320505",  # Huqiu 虎丘区
    "320506",  # Wuzhong 吴中区
    "320507",  # Xiangcheng 相城区
    "320508",  # Gusu 姑苏区
    "320509",  # Wujiang 吴江区
    "320581",  # Changshu 常熟市
    "320582",  # Zhangjiagang 张家港市
    "320583",  # Kunshan 昆山市
    "320585",  # Taicang 太仓市
)

_EARLIEST_BIRTH = datetime.date(1900, 1, 1)

# ISO 7064 MOD 11-2: weight of position i (1-based) is 2^(18-i) mod 11.
_RESIDENT_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_RESIDENT_CHECK_CHARS = "10X98765432"

#: the GB 32100-2015 character set; a character's value is its index here
USCC_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE = {ch: i for i, ch in enumerate(USCC_CHARSET)}
# 3^(i-1) mod 31 for positions 1-17.
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)

_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)

#: registration authority code -> (authority name, {category code: category name})
AUTHORITY_CATEGORIES: Mapping[str, tuple[str, Mapping[str, str]]] = {
    "1": (
        "institutional staffing (机构编制)",
        {"1": "state organ", "2": "public institution", "3": "mass organisation", "9": "other"},
    ),
    "2": ("foreign affairs (外交)", {"1": "resident foreign news agency", "9": "other"}),
    "3": (
        "judicial administration (司法行政)",
        {
            "1": "law firm",
            "2": "notary office",
            "3": "grassroots legal service office",
            "4": "forensic appraisal institution",
            "5": "arbitration commission",
            "9": "other",
        },
    ),
    "4": ("culture (文化)", {"1": "foreign cultural centre", "9": "other"}),
    "5": (
        "civil affairs (民政)",
        {
            "1": "social organisation",
            "2": "private non-enterprise unit",
            "3": "foundation",
            "9": "other",
        },
    ),
    "6": (
        "tourism (旅游)",
        {
            "1": "foreign tourism office",
            "2": "Hong Kong, Macao or Taiwan tourism office",
            "9": "other",
        },
    ),
    "7": (
        "religious affairs (宗教)",
        {"1": "religious venue", "2": "religious school", "9": "other"},
    ),
    "8": ("trade unions (工会)", {"1": "grassroots trade union", "9": "other"}),
    "9": (
        "market regulation (工商)",
        {"1": "enterprise", "2": "individual business", "3": "farmers' cooperative"},
    ),
    "A": (
        "CMC reform and staffing office (中央军委改革和编制办公室)",
        {"1": "military public institution", "9": "other"},
    ),
    "N": (
        "agriculture (农业)",
        {
            "1": "group-level collective economic organisation",
            "2": "village-level collective economic organisation",
            "3": "township-level collective economic organisation",
            "9": "other",
        },
    ),
    "Y": ("other (其他)", {"1": "other"}),
}

_RESIDENT = "resident identity number"
_USCC = "unified social credit code"


def _china_today() -> datetime.date:
    # a name of this module's own, so tests can move "today" for identifier checks alone
    return china_today()


def _require_str(value: object, what: str, field: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{what} must be a string, got {type(value).__name__}", field=field)
    return value


def _check_no_outer_whitespace(value: str, what: str, field: str) -> None:
    if value != value.strip():
        raise InvalidArgument(
            f"{what} has leading or trailing whitespace; remove it and submit the 18 characters",
            field=field,
        )


def _check_length(value: str, what: str, field: str) -> None:
    if len(value) != ID_LENGTH:
        raise InvalidArgument(
            f"{what} must be {ID_LENGTH} characters, got {len(value)}", field=field
        )


def _check_province(region: str, what: str, field: str, *, extra: frozenset[str]) -> None:
    """`region` is six ASCII digits already; refuse it unless its province prefix is real.

    Like every message here, the refusal names the rule and never quotes the value: it may be
    a person's resident id, and error messages reach logs and screens."""
    if region in extra:
        return
    if region[:2] not in PROVINCE_CODES:
        raise InvalidArgument(
            f"{what} does not start with a province-level code (its first two digits must be "
            f"one of {', '.join(sorted(PROVINCE_CODES))})",
            field=field,
        )


def _check_birth_date(
    text: str, *, field: str, context: str = f" in a {_RESIDENT} (positions 7-14)"
) -> datetime.date:
    try:
        birth = datetime.date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise InvalidArgument(
            f"the birth date{context} is not a valid calendar date", field=field
        ) from None
    _check_birth_range(birth, field=field, context=context)
    return birth


def _check_birth_range(birth: datetime.date, *, field: str, context: str) -> None:
    if birth < _EARLIEST_BIRTH:
        raise InvalidArgument(
            f"the birth date{context} is before {_EARLIEST_BIRTH.isoformat()}", field=field
        )
    if birth > _china_today():
        raise InvalidArgument(
            f"the birth date{context} is in the future (in China today)", field=field
        )


def resident_id_check_char(first17: str) -> str:
    """ISO 7064 MOD 11-2 check character ('0'-'9' or 'X') for the first 17 digits of an id."""
    first17 = _require_str(
        first17, "the first 17 characters of a resident identity number", "first17"
    )
    if len(first17) != ID_LENGTH - 1 or not set(first17) <= _DIGITS:
        raise InvalidArgument(
            "the check character of a resident identity number is computed from exactly 17 digits",
            field="first17",
        )
    total = sum(int(ch) * w for ch, w in zip(first17, _RESIDENT_WEIGHTS, strict=True))
    return _RESIDENT_CHECK_CHARS[total % 11]


def uscc_check_char(first17: str) -> str:
    """GB 32100-2015 check character for the first 17 characters of a social credit code."""
    first17 = _require_str(
        first17, "the first 17 characters of a unified social credit code", "first17"
    )
    if len(first17) != ID_LENGTH - 1 or any(ch not in _USCC_VALUE for ch in first17):
        raise InvalidArgument(
            "the check character of a unified social credit code is computed from exactly 17 "
            f"characters of the GB 32100-2015 character set {USCC_CHARSET}",
            field="first17",
        )
    total = sum(_USCC_VALUE[ch] * w for ch, w in zip(first17, _USCC_WEIGHTS, strict=True))
    # 31 - (sum mod 31) is in 1..31, and 31 stands for 0.
    return USCC_CHARSET[(31 - total % 31) % 31]


def organisation_code_check_char(first8: str) -> str:
    """GB 11714-1997 check character for the first 8 characters of an organisation code.

    Digits count as themselves and letters A-Z as 10-35; weights 3 7 9 10 5 8 4 2;
    C9 = 11 - (sum mod 11), written 'X' for 10 and '0' for 11.
    """
    first8 = _require_str(first8, "the first 8 characters of an organisation code", "first8")
    if len(first8) != 8 or not all(ch in _DIGITS or "A" <= ch <= "Z" for ch in first8):
        raise InvalidArgument(
            "the check character of an organisation code is computed from exactly 8 digits or "
            "upper-case letters",
            field="first8",
        )
    total = sum(
        (int(ch) if ch in _DIGITS else ord(ch) - ord("A") + 10) * w
        for ch, w in zip(first8, _ORG_WEIGHTS, strict=True)
    )
    c9 = 11 - total % 11
    return {10: "X", 11: "0"}.get(c9, str(c9))


def validate_resident_id(value: str, *, field: str = "subject_id") -> SubjectId:
    """Return `value` as a SubjectId (trailing 'x' upper-cased) or raise InvalidArgument.

    The rules are in the module docstring; the error message names the rule that failed.
    """
    value = _require_str(value, _RESIDENT, field)
    _check_no_outer_whitespace(value, _RESIDENT, field)
    _check_length(value, _RESIDENT, field)
    for position, ch in enumerate(value[:17], start=1):
        if ch not in _DIGITS:
            raise InvalidArgument(
                f"{_RESIDENT} has a character other than a digit at position {position}; "
                "positions 1-17 must be the digits 0-9",
                field=field,
            )
    check = value[17]
    if check == "x":
        check = "X"
    if check not in _DIGITS and check != "X":
        raise InvalidArgument(
            f"{_RESIDENT} does not end in a check character: it must be a digit 0-9 or 'X'",
            field=field,
        )
    _check_province(
        value[:6],
        f"address code in a {_RESIDENT}",
        field,
        extra=frozenset({_TAIWAN_RESIDENT_PERMIT_REGION}),
    )
    _check_birth_date(value[6:14], field=field)
    expected = resident_id_check_char(value[:17])
    if check != expected:
        raise InvalidArgument(
            f"{_RESIDENT} check character (position 18) does not match the ISO 7064 MOD 11-2 "
            "check of positions 1-17: a character is mistyped",
            field=field,
        )
    return SubjectId(value[:17] + check)


def validate_uscc(value: str, *, field: str = "subject_id") -> SubjectId:
    """Return `value` as a SubjectId or raise InvalidArgument naming the GB 32100-2015 rule broken.

    The organisation code's GB 11714 check digit is deliberately not enforced (module docstring).
    """
    value = _require_str(value, _USCC, field)
    _check_no_outer_whitespace(value, _USCC, field)
    _check_length(value, _USCC, field)
    for position, ch in enumerate(value, start=1):
        if ch not in _USCC_VALUE:
            hint = " (letters must be upper case)" if ch.upper() in _USCC_VALUE else ""
            raise InvalidArgument(
                f"{_USCC} has a character at position {position} that is not in the "
                f"GB 32100-2015 character set{hint}",
                field=field,
            )
    authority, category = value[0], value[1]
    entry = AUTHORITY_CATEGORIES.get(authority)
    if entry is None:
        raise InvalidArgument(
            f"{_USCC} starts with a registration authority code that GB 32100-2015 does not "
            f"assign (assigned: {', '.join(AUTHORITY_CATEGORIES)})",
            field=field,
        )
    authority_name, categories = entry
    if category not in categories:
        raise InvalidArgument(
            f"{_USCC} has an organisation category code at position 2 that its registration "
            f"authority ({authority_name}) does not assign under GB 32100-2015 (assigned: "
            f"{', '.join(categories)})",
            field=field,
        )
    region = value[2:8]
    if not set(region) <= _DIGITS:
        raise InvalidArgument(
            f"{_USCC} has an administrative division code at positions 3-8 that is not six digits",
            field=field,
        )
    _check_province(
        region,
        f"administrative division code at positions 3-8 of a {_USCC}",
        field,
        extra=frozenset({_CENTRAL_REGION}),
    )
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        raise InvalidArgument(
            f"{_USCC} check character (position 18) does not match the GB 32100-2015 mod-31 "
            "check of positions 1-17: a character is mistyped",
            field=field,
        )
    return SubjectId(value)


def validate_subject(kind: SubjectKind, value: str, *, field: str = "subject_id") -> SubjectId:
    """Validate `value` as the identifier of a subject of `kind` (person or enterprise).

    When the value fails but is a valid identifier of the other kind, the message says so after
    naming the rule that failed, since a wrong kind is the likelier mistake than a wrong id.
    """
    if not isinstance(kind, SubjectKind):
        try:
            kind = SubjectKind(kind)
        except ValueError:
            allowed = ", ".join(repr(k.value) for k in SubjectKind)
            raise InvalidArgument(
                f"subject kind must be one of {allowed}, got {kind!r}", field="subject_kind"
            ) from None
    if kind is SubjectKind.PERSON:
        own, other, other_name = validate_resident_id, validate_uscc, _USCC
    else:
        own, other, other_name = validate_uscc, validate_resident_id, _RESIDENT
    try:
        return own(value, field=field)
    except InvalidArgument as exc:
        try:
            other(value, field=field)
        except InvalidArgument:
            raise exc from None
        other_kind = SubjectKind.ENTERPRISE if kind is SubjectKind.PERSON else SubjectKind.PERSON
        raise InvalidArgument(
            f"{exc.message}; the value is a valid {other_name}, so the subject kind is probably "
            f"{other_kind.value!r}, not {kind.value!r}",
            field=field,
        ) from None


def make_resident_id(*, region: str, birth: datetime.date, sequence: int) -> SubjectId:
    """Build a valid resident identity number (for synthetic data) with its check character."""
    region = _require_str(region, "region", "region")
    if len(region) != 6 or not set(region) <= _DIGITS:
        raise InvalidArgument(f"region must be six digits, got {region!r}", field="region")
    _check_province(region, "region", "region", extra=frozenset({_TAIWAN_RESIDENT_PERMIT_REGION}))
    if not isinstance(birth, datetime.date) or isinstance(birth, datetime.datetime):
        raise InvalidArgument(
            f"birth must be a datetime.date, got {type(birth).__name__}", field="birth"
        )
    _check_birth_range(birth, field="birth", context="")
    if isinstance(sequence, bool) or not isinstance(sequence, int):
        raise InvalidArgument(
            f"sequence must be an integer, got {type(sequence).__name__}", field="sequence"
        )
    if not 0 <= sequence <= 999:
        raise InvalidArgument(f"sequence must be in 0..999, got {sequence}", field="sequence")
    first17 = f"{region}{birth:%Y%m%d}{sequence:03d}"
    return validate_resident_id(first17 + resident_id_check_char(first17))


def make_uscc(*, authority: str, category: str, region: str, organisation: str) -> SubjectId:
    """Build a valid unified social credit code with its check character.

    `organisation` is the 9-character organisation code; unlike `validate_uscc`, this insists
    that its ninth character is the GB 11714 check character, so generated codes satisfy both.
    """
    authority = _require_str(authority, "authority", "authority")
    category = _require_str(category, "category", "category")
    region = _require_str(region, "region", "region")
    organisation = _require_str(organisation, "organisation", "organisation")
    entry = AUTHORITY_CATEGORIES.get(authority)
    if entry is None:
        raise InvalidArgument(
            f"authority {authority!r} is not a GB 32100-2015 registration authority code "
            f"(assigned: {', '.join(AUTHORITY_CATEGORIES)})",
            field="authority",
        )
    authority_name, categories = entry
    if category not in categories:
        raise InvalidArgument(
            f"category {category!r} is not assigned by registration authority {authority!r} "
            f"({authority_name}) (assigned: {', '.join(categories)})",
            field="category",
        )
    if len(region) != 6 or not set(region) <= _DIGITS:
        raise InvalidArgument(f"region must be six digits, got {region!r}", field="region")
    _check_province(region, "region", "region", extra=frozenset({_CENTRAL_REGION}))
    if len(organisation) != 9:
        raise InvalidArgument(
            f"organisation must be 9 characters, got {len(organisation)}", field="organisation"
        )
    for position, ch in enumerate(organisation, start=1):
        if ch not in _USCC_VALUE:
            raise InvalidArgument(
                f"organisation contains {ch!r} at position {position}, which is not in the "
                "GB 32100-2015 character set",
                field="organisation",
            )
    expected = organisation_code_check_char(organisation[:8])
    if organisation[8] != expected:
        raise InvalidArgument(
            f"organisation check character is {organisation[8]!r} but GB 11714 gives {expected!r}",
            field="organisation",
        )
    first17 = authority + category + region + organisation
    return validate_uscc(first17 + uscc_check_char(first17))


def mask_subject(value: str) -> str:
    """Mask an identifier for display: first 6 and last 2 characters kept, the rest starred.

    Values too short to keep 8 characters and still hide one are starred entirely.
    """
    if len(value) <= 8:
        return "*" * len(value)
    return value[:6] + "*" * (len(value) - 8) + value[-2:]


def validate_any_subject(value: str, *, field: str = "subject_id") -> SubjectId:
    """`value` validated as a resident id or, failing that, as a unified social credit code:
    for filters and checks that take either kind of subject."""
    try:
        return validate_resident_id(value, field=field)
    except InvalidArgument as exc:
        as_person = exc.message
    try:
        return validate_uscc(value, field=field)
    except InvalidArgument as exc:
        # the rules that failed, never the value (it may be a person's id)
        raise InvalidArgument(
            f"neither a resident id nor a unified social credit code: {as_person}; {exc.message}",
            field=field,
        ) from None


def canonical_subject(kind: SubjectKind | None, value: str) -> str:
    """The validated form of a subject id, or the raw string if it is invalid.

    Audit entries hash this, so one person's entries share one hash whether an 'x' check
    character arrived in lower or upper case.
    """
    if kind is None:
        return value
    try:
        return validate_subject(kind, value)
    except InvalidArgument:
        return value
