"""The sync batch format: canonical form, stable ids, signatures, schemas, resident ids, caps."""

from __future__ import annotations

import dataclasses
import datetime
import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from osmanthus.core import signing
from osmanthus.core.catalogue import ListColour
from osmanthus.core.errors import InvalidArgument, Unauthenticated
from osmanthus.core.ids import (
    make_resident_id,
    make_uscc,
    mask_subject,
    organisation_code_check_char,
    validate_uscc,
)
from osmanthus.core.lists import EntryId, PublicEntry, WithdrawReason, holds_resident_id
from osmanthus.core.receipts import consent_key_id
from osmanthus.core.signing import SYNC_BATCH_TYPE
from osmanthus.core.syncbatch import (
    FORMAT,
    HEADER_RESERVE,
    MAX_PAYLOAD_BYTES,
    MAX_RECORDS_BYTES,
    Batch,
    BatchKind,
    ListChange,
    SignedBatch,
    batch_id_for,
    build_batch,
    canonical_json,
    grade_record,
    list_change_record,
    open_batch,
    peek_claims,
    read_batch,
    record_size,
    sender_key_id,
    shown_key_id,
    sign_batch,
    signed_in_current_format,
    statistic_record,
    verify_signature,
)
from osmanthus.core.syncbatch_checks import MAX_DEPARTMENTS, MAX_INTEGER, MIN_COHORT_SIZE
from osmanthus.core.types import DepartmentId, SubjectKind
from tests.forge import loose_json

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
NOW = datetime.datetime(2026, 11, 26, 8, 30, 15, 999_000, tzinfo=datetime.UTC)
AS_OF = datetime.date(2026, 11, 26)
RESIDENT = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=17)


def credit_code(number: int) -> str:
    organisation = f"MA{number:06d}"
    return make_uscc(
        authority="9",
        category="1",
        region="320505",
        organisation=organisation + organisation_code_check_char(organisation),
    )


def person_entry(**changes: Any) -> PublicEntry:
    entry = PublicEntry(
        entry_id=EntryId("2026-su05-zhi-0123"),
        department=DepartmentId("court"),
        list="judgement_defaulters",
        colour=ListColour.BLACK,
        subject_kind=SubjectKind.PERSON,
        subject_id=mask_subject(RESIDENT),
        subject_name="张三",
        legal_basis="最高人民法院关于公布失信被执行人名单信息的若干规定",
        reason="拒不履行生效判决确定的给付义务",
        window_start=datetime.date(2026, 1, 1),
        window_end=datetime.date(2028, 12, 31),
    )
    return dataclasses.replace(entry, **changes)


def grades(count: int = 2, **changes: Any) -> list[dict[str, Any]]:
    return [
        {
            **grade_record(
                credit_code=credit_code(i),
                grade="A",
                score=i % 200,
                as_of=AS_OF,
                departments_answered=17,
            ),
            **changes,
        }
        for i in range(count)
    ]


def statistic(**changes: Any) -> dict[str, Any]:
    record = statistic_record(
        name="persons.gusu.deductions",
        subject_kind=SubjectKind.PERSON,
        cohort_size=1200,
        value=-37,
        noise_scale=Fraction(40, 3),
        epsilon=Decimal("0.50"),
        as_of=AS_OF,
    )
    return {**record, **changes}


def batch(
    kind: BatchKind = BatchKind.GRADES,
    records: list[dict[str, Any]] | None = None,
    **changes: Any,
) -> Batch:
    arguments: dict[str, Any] = {
        "sender": "suzhou",
        "kind": kind,
        "sequence": 1,
        "watermark_from": "2026-11-25",
        "watermark_to": "2026-11-26",
        "records": grades() if records is None else records,
        "created_at": NOW,
        **changes,
    }
    return build_batch(**arguments)


def edited(payload: bytes, change: Any) -> bytes:
    """The payload with `change(document)` applied, encoded canonically again."""
    document = json.loads(payload)
    change(document)
    return loose_json(document)


def refused(payload: bytes) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        read_batch(payload)
    return info.value


# --- canonical form and ids ---------------------------------------------------------------------


def test_the_payload_is_canonical_json_with_sorted_keys_no_spaces_and_raw_utf8() -> None:
    made = batch(BatchKind.LIST_CHANGES, [list_change_record(
        person_entry(), event=ListChange.PUBLISHED, at=NOW
    )])  # fmt: skip
    text = made.payload.decode("utf-8")
    assert made.payload == canonical_json(json.loads(text))
    assert " " not in text.replace("张三", "") or "张三" in text
    assert '"subject_name":"张三"' in text and "\\u" not in text
    assert text.startswith('{"batch_id":"sb-') and list(json.loads(text)) == sorted(
        json.loads(text)
    )
    assert json.loads(text)["format"] == FORMAT
    # times in the payload are UTC, whole seconds
    assert json.loads(text)["created_at"] == "2026-11-26T08:30:15Z"
    assert made.created_at == NOW.replace(microsecond=0)


def test_a_batch_id_is_derived_from_sender_kind_and_range_and_survives_a_rebuild() -> None:
    first = batch()
    again = batch(created_at=NOW + datetime.timedelta(hours=3))
    assert (
        first.batch_id
        == again.batch_id
        == batch_id_for(
            sender="suzhou",
            kind=BatchKind.GRADES,
            watermark_from="2026-11-25",
            watermark_to="2026-11-26",
        )
    )
    # a rerun after a crash is the same content, though built at another time
    assert first.content_sha256 == again.content_sha256
    assert first.payload_sha256 != again.payload_sha256
    others = {
        batch(sender="wuxi").batch_id,
        batch(BatchKind.STATISTICS, [statistic()]).batch_id,
        batch(watermark_from="2026-11-24").batch_id,
        batch(watermark_to="2026-11-27").batch_id,
    }
    assert first.batch_id not in others and len(others) == 4
    # the content covers the records and the sequence, not only the id
    assert batch(records=grades(3)).content_sha256 != first.content_sha256
    assert batch(sequence=2).content_sha256 != first.content_sha256


def test_a_batch_id_that_is_not_the_derived_one_is_refused() -> None:
    payload = edited(batch().payload, lambda d: d.update(batch_id="sb-" + "0" * 32))
    error = refused(payload)
    assert error.field == "batch_id" and "derived" in error.message


@pytest.mark.parametrize(
    ("mangle", "field"),
    [
        (lambda p: p.replace(b'","', b'", "', 1), "payload"),  # whitespace
        (lambda p: b'{"sender":"suzhou",' + p[1:].replace(b',"sender":"suzhou"', b""), "payload"),
        (lambda p: p.replace(b'"suzhou"', b'"\\u0073uzhou"'), "payload"),  # an escape
        (lambda p: p.replace(b'"score":0', b'"score":0.0'), "payload"),  # a float
        (lambda p: p.replace(b'"score":0', b'"score":NaN'), "payload"),
        (lambda p: p[:-1] + b',"sender":"wuxi"}', "payload"),  # a key twice
        (lambda p: p.replace(b"suzhou", b"\xff\xfe"), "payload"),  # not UTF-8
        (lambda p: b"[" + p + b"]", "payload"),
        (lambda p: b"[" * 100_000, "payload"),
    ],
)
def test_anything_but_the_one_canonical_encoding_is_refused(mangle: Any, field: str) -> None:
    error = refused(mangle(batch().payload))
    assert error.field == field


def test_read_refuses_other_formats_and_unknown_or_missing_fields() -> None:
    payload = batch().payload
    assert refused(edited(payload, lambda d: d.update(format="osmanthus-sync-batch/2"))).field == (
        "format"
    )
    assert refused(edited(payload, lambda d: d.update(extra=1))).field == "extra"
    assert refused(edited(payload, lambda d: d.pop("partial"))).field == "partial"
    assert refused(edited(payload, lambda d: d["records"][1].update(note="x"))).field == (
        "records[1].note"
    )
    assert refused(edited(payload, lambda d: d["records"][0].pop("score"))).field == (
        "records[0].score"
    )


# --- signatures ---------------------------------------------------------------------------------


def test_sign_then_open_round_trips_and_the_key_id_is_the_rfc7638_thumbprint() -> None:
    made = batch(records=grades(3, missing_departments=["tax"], partial=True))
    signed = sign_batch(made, private_key=KEY)
    assert signed.key_id == sender_key_id(KEY.public_key()) == consent_key_id(KEY.public_key())
    opened = open_batch(signed, public_key=KEY.public_key())
    assert opened == made
    assert opened.records == made.records and opened.missing_departments == ("tax",)
    assert opened.partial
    # Ed25519 is deterministic: a rebuilt batch sent again is byte for byte the same
    assert sign_batch(read_batch(made.payload), private_key=KEY) == signed


def test_a_changed_payload_or_signature_or_another_key_does_not_verify() -> None:
    signed = sign_batch(batch(), private_key=KEY)
    tampered = signed.payload.replace(b'"score":0', b'"score":1')
    cases = [
        (dataclasses.replace(signed, payload=tampered), "signature"),
        (dataclasses.replace(signed, signature=signed.signature[:63]), "signature"),
        (dataclasses.replace(signed, signature=signed.signature[:-4]), "signature"),
        (dataclasses.replace(signed, key_id="not a key id"), "key_id"),
    ]
    for candidate, field in cases:
        with pytest.raises(Unauthenticated) as info:
            open_batch(candidate, public_key=KEY.public_key())
        assert info.value.field == field
    # another key: its id does not match, and its signature does not verify either
    with pytest.raises(Unauthenticated) as info:
        open_batch(signed, public_key=OTHER_KEY.public_key())
    assert info.value.field == "key_id" and sender_key_id(OTHER_KEY.public_key()) in str(info.value)
    forged = SignedBatch(
        payload=signed.payload,
        signature=_jws(signed.payload, OTHER_KEY),
        key_id=signed.key_id,
    )
    with pytest.raises(Unauthenticated):
        verify_signature(forged, public_key=KEY.public_key())


def _jws(payload: bytes, key: Ed25519PrivateKey, payload_type: str = SYNC_BATCH_TYPE) -> bytes:
    return signing.sign(payload, payload_type=payload_type, private_key=key).encode()


def test_a_batch_is_signed_in_the_one_envelope_and_only_as_a_sync_batch() -> None:
    signed = sign_batch(batch(), private_key=KEY)
    # a detached JWS of the sync batch type, by the sender's key, over the payload's bytes
    kid = signing.verify(
        signed.payload,
        signed.signature.decode(),
        payload_type=SYNC_BATCH_TYPE,
        trusted_keys={signed.key_id: KEY.public_key()},
    )
    assert kid == signed.key_id
    # the same key's signature over the same bytes, made for another artefact, is refused
    other_kind = dataclasses.replace(
        signed, signature=_jws(signed.payload, KEY, signing.POLICY_BUNDLE_TYPE)
    )
    with pytest.raises(Unauthenticated, match="not a sync batch signature") as info:
        verify_signature(other_kind, public_key=KEY.public_key())
    assert info.value.field == "signature"


def test_a_signature_of_the_earlier_format_is_refused_saying_how_it_is_signed_anew() -> None:
    signed = sign_batch(batch(), private_key=KEY)
    assert signed_in_current_format(signed)
    # before the one envelope: a bare Ed25519 signature over a prefix and the payload
    legacy = dataclasses.replace(
        signed, signature=KEY.sign(b"osmanthus-sync-batch/1\n" + signed.payload)
    )
    assert not signed_in_current_format(legacy)
    with pytest.raises(InvalidArgument, match="earlier format") as info:
        verify_signature(legacy, public_key=KEY.public_key())
    assert info.value.field == "signature"
    assert "signs its waiting batches anew" in info.value.message


def test_peek_claims_reads_sender_and_id_without_trusting_them() -> None:
    made = batch()
    assert peek_claims(made.payload) == ("suzhou", made.batch_id)
    assert peek_claims(b"\xff") == ("", "")
    assert peek_claims(b'{"sender":"Not A Sender","batch_id":"x"}') == ("", "")
    # a claim is recorded with a refusal: a resident id is never taken for a sender
    assert peek_claims(canonical_json({"sender": RESIDENT})) == ("", "")
    assert peek_claims(b"[" * 100_000) == ("", "")


# --- no resident ids ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "records", "field"),
    [
        # a person on a list with the full id instead of the masked one
        (
            BatchKind.LIST_CHANGES,
            [{**list_change_record(person_entry(), event=ListChange.PUBLISHED, at=NOW),
              "subject_id": RESIDENT}],
            "records[0].subject_id",
        ),
        # a full id in the reason, written in groups
        (
            BatchKind.LIST_CHANGES,
            [list_change_record(
                person_entry(reason=f"被执行人 {RESIDENT[:6]} {RESIDENT[6:14]} {RESIDENT[14:]}"),
                event=ListChange.PUBLISHED, at=NOW,
            )],
            "records[0].reason",
        ),
        (BatchKind.STATISTICS, [statistic(name=f"person.{RESIDENT.lower()}")],
         "records[0].name"),
        # a resident id where a credit code belongs is not a credit code
        (BatchKind.GRADES, grades(1, credit_code=RESIDENT), "records[0].credit_code"),
    ],
)  # fmt: skip
def test_a_record_holding_a_full_resident_id_is_refused(
    kind: BatchKind, records: list[dict[str, Any]], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        batch(kind, records)
    assert info.value.field == field
    assert RESIDENT not in str(info.value)


def test_a_watermark_or_sender_reading_as_a_resident_id_is_refused_without_repeating_it() -> None:
    for change, field in (
        ({"watermark_to": RESIDENT}, "watermark_to"),
        ({"watermark_from": f"{RESIDENT} "}, "watermark_from"),  # not a watermark either
        ({"sender": RESIDENT}, "sender"),
    ):
        with pytest.raises(InvalidArgument) as info:
            batch(**change)
        assert info.value.field == field and RESIDENT not in str(info.value)


def test_the_receiver_refuses_a_resident_id_the_builder_would_have_refused() -> None:
    payload = batch(
        BatchKind.LIST_CHANGES,
        [list_change_record(person_entry(), event=ListChange.PUBLISHED, at=NOW)],
    ).payload
    smuggled = edited(payload, lambda d: d["records"][0].update(subject_name=RESIDENT))
    assert refused(smuggled).field == "records[0].subject_name"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["records"][0].update(grade=RESIDENT), "records[0].grade"),
        (lambda d: d.update(format=RESIDENT), "format"),
        (lambda d: d.update(sender=RESIDENT), "sender"),
        (lambda d: d["records"][0].update({RESIDENT: 1}), "records[0] (a key)"),
        (lambda d: d["records"][0].update(missing_departments=[RESIDENT]), None),
    ],
)
def test_a_refusal_never_repeats_a_resident_id_it_found(change: Any, field: str | None) -> None:
    error = refused(edited(batch().payload, change))
    assert RESIDENT not in str(error) and "resident identity number" in error.message
    assert field is None or error.field == field


# --- record schemas -----------------------------------------------------------------------------


def test_list_change_records_carry_the_published_fields_and_the_event() -> None:
    entries = [
        list_change_record(person_entry(), event=ListChange.PUBLISHED, at=NOW),
        list_change_record(
            person_entry(),
            event=ListChange.WITHDRAWN,
            at=NOW + datetime.timedelta(days=30),
            withdraw_reason=WithdrawReason.REPAIRED,
        ),
        list_change_record(
            person_entry(
                entry_id=EntryId("a-2026-001"),
                department=DepartmentId("tax"),
                list="a_taxpayers",
                colour=ListColour.RED,
                subject_kind=SubjectKind.ENTERPRISE,
                subject_id=credit_code(7),
                subject_name="苏州某某科技有限公司",
                facilitation_class="AA",
            ),
            event=ListChange.EXPIRED,
            at=NOW,
        ),
    ]
    made = batch(BatchKind.LIST_CHANGES, entries)
    assert [r["event"] for r in made.records] == ["published", "withdrawn", "expired"]
    assert made.records[0]["subject_id"] == mask_subject(RESIDENT)
    assert made.records[1]["withdraw_reason"] == "repaired"
    assert made.records[2]["facilitation_class"] == "AA"
    assert not made.partial


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"event": "deleted"}, "event"),
        ({"event": "withdrawn"}, "withdraw_reason"),  # a withdrawal says why
        ({"withdraw_reason": "repaired"}, "withdraw_reason"),  # a publication does not
        ({"facilitation_class": "AA"}, "facilitation_class"),  # black lists grant none
        ({"window_end": "2025-12-31"}, "window_end"),
        ({"window_start": "2026-02-30"}, "window_start"),
        ({"event_at": "2026-11-26 08:30:00"}, "event_at"),
        ({"reason": " trailing "}, "reason"),
        ({"reason": ""}, "reason"),
        ({"subject_name": "a\x07b"}, "subject_name"),
        ({"colour": "grey"}, "colour"),
        ({"department": "Court"}, "department"),
        ({"entry_id": "-bad"}, "entry_id"),
        ({"subject_kind": "enterprise"}, "subject_id"),  # a masked id is no credit code
    ],
)
def test_list_change_fields_are_checked(change: dict[str, Any], field: str) -> None:
    record = {**list_change_record(person_entry(), event=ListChange.PUBLISHED, at=NOW), **change}
    with pytest.raises(InvalidArgument) as info:
        batch(BatchKind.LIST_CHANGES, [record])
    assert info.value.field == f"records[0].{field}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"score": -1}, "score"),
        ({"score": 1001}, "score"),
        ({"score": True}, "score"),  # a boolean is not a number here
        ({"grade": "a"}, "grade"),
        ({"departments_answered": 0}, "departments_answered"),
        ({"missing_departments": ["tax"]}, "partial"),  # partial must say so
        ({"missing_departments": ["tax", "court"], "partial": True}, "missing_departments"),
        ({"as_of": "26/11/2026"}, "as_of"),
        ({"credit_code": "91320505MA0000015X"}, "credit_code"),
    ],
)
def test_grade_fields_are_checked(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        batch(records=grades(1, **change))
    assert info.value.field == f"records[0].{field}"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cohort_size": MIN_COHORT_SIZE - 1}, "cohort_size"),  # too few to publish
        ({"value": MAX_INTEGER + 1}, "value"),
        ({"noise_scale": "80/6"}, "noise_scale"),  # not in lowest terms
        ({"noise_scale": "0"}, "noise_scale"),
        ({"noise_scale": "-2"}, "noise_scale"),
        ({"epsilon": "0.50"}, "epsilon"),  # one spelling only
        ({"epsilon": "11"}, "epsilon"),  # above the most one query may spend
        ({"epsilon": "0"}, "epsilon"),
        ({"epsilon": "1e-1"}, "epsilon"),
        ({"name": "Deductions"}, "name"),
        ({"subject_kind": "household"}, "subject_kind"),
    ],
)
def test_statistic_fields_are_checked(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        batch(BatchKind.STATISTICS, [statistic(**change)])
    assert info.value.field == f"records[0].{field}"


def test_statistic_records_write_epsilon_and_scale_in_one_spelling() -> None:
    record = statistic(epsilon="0.5")
    assert record["epsilon"] == "0.5" and record["noise_scale"] == "40/3"
    made = batch(BatchKind.STATISTICS, [statistic_record(
        name="enterprises.tax", subject_kind=SubjectKind.ENTERPRISE, cohort_size=300,
        value=12, noise_scale=Fraction(20), epsilon=Decimal("1.0000"), as_of=AS_OF,
    )])  # fmt: skip
    assert made.records[0]["epsilon"] == "1" and made.records[0]["noise_scale"] == "20"


def test_a_statistic_a_department_did_not_answer_has_no_value_and_marks_the_batch() -> None:
    owed = statistic_record(
        name="enterprises.tax", subject_kind=SubjectKind.ENTERPRISE, cohort_size=300,
        value=None, noise_scale=None, epsilon=None, as_of=AS_OF, missing_departments=["customs"],
    )  # fmt: skip
    made = batch(BatchKind.STATISTICS, [owed])
    assert made.records[0]["value"] is None and made.records[0]["partial"] is True
    # a record's missing department makes the batch partial
    assert made.partial and made.missing_departments == ("customs",)
    # a partial statistic with a value would be a biased sum passed off as the statistic
    for name, value in (("value", 12), ("noise_scale", "20"), ("epsilon", "1")):
        with pytest.raises(InvalidArgument) as info:
            batch(BatchKind.STATISTICS, [{**owed, name: value}])
        assert info.value.field == f"records[0].{name}" and "null" in info.value.message
    # and a complete one needs all three
    with pytest.raises(InvalidArgument) as info:
        batch(BatchKind.STATISTICS, [statistic(value=None)])
    assert info.value.field == "records[0].value"


def test_a_record_reported_twice_in_one_batch_is_refused() -> None:
    records = grades(2)
    records[1]["credit_code"] = records[0]["credit_code"]
    with pytest.raises(InvalidArgument) as info:
        batch(records=records)
    assert info.value.field == "records[1]" and "records[0]" in info.value.message


def test_the_batch_header_is_checked() -> None:
    for change, field in (
        ({"sender": "Suzhou City"}, "sender"),
        ({"sequence": 0}, "sequence"),
        ({"watermark_from": "2026-11-26"}, "watermark_to"),  # an empty range
        ({"watermark_to": "-1"}, "watermark_to"),
        ({"missing_departments": ["Tax"]}, "missing_departments[0]"),
    ):
        with pytest.raises(InvalidArgument) as info:
            batch(**change)
        assert info.value.field == field, change
    with pytest.raises(InvalidArgument) as info:
        batch(created_at=datetime.datetime(2026, 11, 26))  # no time zone
    assert info.value.field == "created_at"
    # the header must name every department a record names as missing, and say partial
    payload = batch(records=grades(1, missing_departments=["tax"], partial=True)).payload
    dropped = edited(payload, lambda d: d.update(missing_departments=[], partial=False))
    assert refused(dropped).field == "missing_departments"
    unflagged = edited(payload, lambda d: d.update(partial=False))
    assert refused(unflagged).field == "partial"
    twice = edited(payload, lambda d: d.update(missing_departments=["tax", "tax"]))
    assert refused(twice).field == "missing_departments"


def test_a_batch_may_carry_no_records_to_move_the_watermark_on() -> None:
    made = batch(records=[], missing_departments=["court"])
    assert made.records == () and made.partial and made.missing_departments == ("court",)


# --- size caps ----------------------------------------------------------------------------------


def test_a_batch_over_the_payload_cap_is_refused_and_says_to_split() -> None:
    records = grades(MAX_PAYLOAD_BYTES // record_size(grades(1)[0]) + 10)
    with pytest.raises(InvalidArgument) as info:
        batch(records=records)
    assert info.value.field == "payload" and "split" in info.value.message
    with pytest.raises(InvalidArgument):
        read_batch(b" " * (MAX_PAYLOAD_BYTES + 1))


def test_records_packed_by_record_size_always_fit_beside_the_largest_header() -> None:
    departments = [f"d{i:03d}" + "x" * 28 for i in range(MAX_DEPARTMENTS)]
    header_only = batch(
        BatchKind.LIST_CHANGES,
        [],
        sender="s" * 63,
        sequence=MAX_INTEGER,
        watermark_from="a" * 128,
        watermark_to="b" * 128,
        missing_departments=departments,
    )
    assert len(header_only.payload) <= HEADER_RESERVE
    # greedy packing within MAX_RECORDS_BYTES, as a sync job would do it
    packed: list[dict[str, Any]] = []
    used = 0
    for record in grades(5_000):
        cost = record_size(record) + 1
        if used + cost > MAX_RECORDS_BYTES:
            break
        packed.append(record)
        used += cost
    made = batch(
        records=packed,
        sender="s" * 63,
        sequence=MAX_INTEGER,
        watermark_from="a" * 128,
        watermark_to="b" * 128,
        missing_departments=departments,
    )
    assert len(made.payload) <= MAX_PAYLOAD_BYTES and len(made.records) == len(packed)


def test_values_json_cannot_carry_are_refused_by_the_builder() -> None:
    for value in (AS_OF, float("nan"), 1.5):
        with pytest.raises(InvalidArgument) as info:
            batch(records=grades(1, score=value))
        assert info.value.field in ("records", "payload", "records[0].score")


@settings(max_examples=60, deadline=None)
@given(
    name=st.from_regex(r"[a-z][a-z0-9_.:-]{0,40}", fullmatch=True),
    value=st.integers(min_value=-MAX_INTEGER, max_value=MAX_INTEGER),
    cohort=st.integers(min_value=MIN_COHORT_SIZE, max_value=13_000_000),
    scale=st.fractions(min_value=Fraction(1, 1000), max_value=Fraction(10**6)),
    units=st.integers(min_value=1, max_value=100_000),
)
def test_any_valid_statistic_round_trips_through_sign_and_open(
    name: str, value: int, cohort: int, scale: Fraction, units: int
) -> None:
    epsilon = Decimal(units).scaleb(-4)
    record = statistic_record(
        name=name,
        subject_kind=SubjectKind.PERSON,
        cohort_size=cohort,
        value=value,
        noise_scale=scale,
        epsilon=epsilon,
        as_of=AS_OF,
    )
    made = batch(BatchKind.STATISTICS, [record])
    opened = open_batch(sign_batch(made, private_key=KEY), public_key=KEY.public_key())
    assert opened.records[0]["value"] == value
    assert Fraction(opened.records[0]["noise_scale"]) == scale
    assert Decimal(opened.records[0]["epsilon"]) == epsilon


# --- values that must never be repeated ---------------------------------------------------------

#: all digits, so that it is an integer too (RESIDENT may end in X)
NUMERIC_RESIDENT = make_resident_id(region="320505", birth=datetime.date(1980, 4, 1), sequence=1)
#: a valid credit code (GB 32100-2015 without the organisation digit) that is also a valid
#: resident id: 111101 (Beijing), born 1980-04-01, check character 3
CODE_AND_ID = "111101198004010033"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        # an 18-digit integer is out of range, and its message would have repeated it
        (lambda p: edited(p, lambda d: d["records"][0].update(score=int(NUMERIC_RESIDENT))),
         "records[0].score"),
        (lambda p: edited(p, lambda d: d.update(sequence=int(NUMERIC_RESIDENT))), "sequence"),
        (lambda p: edited(p, lambda d: d["records"][0].update(as_of=int(NUMERIC_RESIDENT))),
         "records[0].as_of"),
        (lambda p: edited(p, lambda d: d.update(kind=int(NUMERIC_RESIDENT))), "kind"),
        # a fractional number and a repeated key fail while parsing, before the id scan
        (lambda p: p.replace(b'"score":0', f'"score":{NUMERIC_RESIDENT}.5'.encode()), "payload"),
        (lambda p: b'{"%s":1,"%s":2,' % ((NUMERIC_RESIDENT.encode(),) * 2) + p[1:], "payload"),
    ],
)  # fmt: skip
def test_a_number_or_key_reading_as_a_resident_id_is_never_repeated(
    payload: Any, field: str
) -> None:
    assert NUMERIC_RESIDENT.isdigit()
    error = refused(payload(batch().payload))
    assert error.field == field
    assert NUMERIC_RESIDENT not in str(error) and NUMERIC_RESIDENT[:17] not in str(error)


def test_a_key_id_is_repeated_only_when_it_is_one_and_holds_no_resident_id() -> None:
    signed = sign_batch(batch(), private_key=KEY)
    with pytest.raises(Unauthenticated) as info:
        verify_signature(
            dataclasses.replace(signed, key_id=NUMERIC_RESIDENT), public_key=KEY.public_key()
        )
    assert info.value.field == "key_id" and NUMERIC_RESIDENT not in str(info.value)
    # the shape of a key id, with an id inside: named by what it is, not repeated
    shaped = "A" * 25 + NUMERIC_RESIDENT
    with pytest.raises(Unauthenticated) as info:
        verify_signature(dataclasses.replace(signed, key_id=shaped), public_key=KEY.public_key())
    assert NUMERIC_RESIDENT not in str(info.value)
    assert shown_key_id(shaped) != shaped and shown_key_id(signed.key_id) == signed.key_id


def test_a_lone_surrogate_escape_is_refused_naming_the_field() -> None:
    payload = batch(BatchKind.LIST_CHANGES, [list_change_record(
        person_entry(subject_name="Zhang"), event=ListChange.PUBLISHED, at=NOW
    )]).payload  # fmt: skip
    assert b'"subject_name":"Zhang"' in payload
    lone = payload.replace(b'"subject_name":"Zhang"', b'"subject_name":"Zh\\ud800ang"')
    error = refused(lone)
    assert error.field == "records[0].subject_name" and "surrogate" in error.message
    key = payload.replace(b'"subject_name":"Zhang"', b'"subject_name":"Zhang","\\udfff":1')
    assert refused(key).field == "records[0] (a key)"
    # a pair is one character, written as itself in canonical form
    paired = payload.replace(b'"subject_name":"Zhang"', b'"subject_name":"Zh\\ud83d\\ude00ang"')
    assert refused(paired).field == "payload"


def test_a_credit_code_that_also_reads_as_a_resident_id_is_refused() -> None:
    # the premise: validate_uscc passes it, and it is a valid resident id
    assert validate_uscc(CODE_AND_ID) == CODE_AND_ID and holds_resident_id(CODE_AND_ID)
    with pytest.raises(InvalidArgument) as info:
        batch(records=grades(1, credit_code=CODE_AND_ID))
    assert info.value.field == "records[0].credit_code" and CODE_AND_ID not in str(info.value)
    assert "cannot be sent" in info.value.message
    firm = person_entry(
        subject_kind=SubjectKind.ENTERPRISE, subject_id=CODE_AND_ID, subject_name="某公司"
    )
    with pytest.raises(InvalidArgument) as info:
        batch(
            BatchKind.LIST_CHANGES,
            [list_change_record(firm, event=ListChange.PUBLISHED, at=NOW)],
        )
    assert info.value.field == "records[0].subject_id" and CODE_AND_ID not in str(info.value)
