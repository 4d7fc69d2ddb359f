"""The consent registry: grant, revoke, expiry, purpose and grantee checks, persistence."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import ConsentRegistry, ConsentState
from osmanthus.core.errors import InvalidArgument, NotFound, PermissionDenied
from osmanthus.core.ids import make_resident_id
from osmanthus.core.types import SubjectKind
from osmanthus.core.wire.coordinator import Consent

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
ALICE = make_resident_id(region="320505", birth=date(1990, 1, 1), sequence=1)
BOB = make_resident_id(region="320508", birth=date(1985, 6, 30), sequence=2)
#: signs the receipts of every registry in this module
RECEIPT_KEY = Ed25519PrivateKey.generate()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ConsentRegistry]:
    with ConsentRegistry(tmp_path / "consent.duckdb", receipt_key=RECEIPT_KEY) as reg:
        yield reg


def grant(
    registry: ConsentRegistry,
    *,
    subject: str = ALICE,
    grantee: str = "bank-a",
    purpose: str = "loan_underwriting",
    days: int = 90,
) -> Consent:
    return registry.grant(
        subject_id=subject,
        grantee=grantee,
        purpose=purpose,
        expires_at=NOW + timedelta(days=days),
        now=NOW,
    )


def check(
    registry: ConsentRegistry,
    consent_id: str | None,
    *,
    subject: str = ALICE,
    grantee: str = "bank-a",
    purpose: str = "loan_underwriting",
    now: datetime = NOW + timedelta(days=1),
) -> tuple[ConsentState, str]:
    return registry.check(consent_id, subject_id=subject, grantee=grantee, purpose=purpose, now=now)


def test_grant_records_the_consent(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    assert re.fullmatch(r"cns_[A-Za-z0-9_-]{22}", consent.consent_id)
    assert consent.subject_id == ALICE
    assert consent.grantee == "bank-a"
    assert consent.purpose == "loan_underwriting"
    assert consent.granted_at == NOW
    assert consent.expires_at == NOW + timedelta(days=90)
    assert consent.revoked_at is None
    assert registry.get(consent.consent_id) == consent


def test_consent_ids_are_random(registry: ConsentRegistry) -> None:
    ids = {grant(registry).consent_id for _ in range(20)}
    assert len(ids) == 20


def test_valid_consent(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    state, why = check(registry, consent.consent_id)
    assert state is ConsentState.VALID
    assert why == f"consent {consent.consent_id} is valid until 2027-02-24T10:00:00Z"


def test_no_consent_id(registry: ConsentRegistry) -> None:
    assert check(registry, None) == (ConsentState.MISSING, "no consent id given")
    assert check(registry, "") == (ConsentState.MISSING, "no consent id given")


def test_unknown_and_malformed_consent_ids(registry: ConsentRegistry) -> None:
    unknown = "cns_" + "A" * 22
    assert check(registry, unknown) == (
        ConsentState.MISSING,
        f"consent {unknown} does not exist",
    )
    state, why = check(registry, "x' OR 1=1 --")
    assert state is ConsentState.MISSING
    assert "is not a consent id" in why


def test_revoked_consent(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    revoked = registry.revoke(consent.consent_id, now=NOW + timedelta(hours=2))
    assert revoked.revoked_at == NOW + timedelta(hours=2)
    state, why = check(registry, consent.consent_id)
    assert state is ConsentState.REVOKED
    assert why == f"consent {consent.consent_id} was revoked at 2026-11-26T12:00:00Z"


def test_an_answer_is_released_only_while_its_consent_still_holds(
    registry: ConsentRegistry,
) -> None:
    consent = grant(registry)

    def still_valid(consent_id: str, now: datetime) -> None:
        registry.require_still_valid(consent_id, subject_id=ALICE, grantee="bank-a",
                                     purpose="loan_underwriting", now=now,
                                     subject_kind=SubjectKind.PERSON)  # fmt: skip

    # checked again just before the sum is released: still valid, nothing to say
    still_valid(consent.consent_id, NOW + timedelta(hours=1))
    # revoked while the departments answered: the answer is refused, naming the revocation
    registry.revoke(consent.consent_id, now=NOW + timedelta(hours=2))
    with pytest.raises(
        PermissionDenied, match=r"was revoked at .*the answer was not released"
    ) as e:
        still_valid(consent.consent_id, NOW + timedelta(hours=3))
    assert e.value.field == "consent_id"
    # and one that expired meanwhile
    short = grant(registry, days=1)
    with pytest.raises(PermissionDenied, match="expired"):
        still_valid(short.consent_id, NOW + timedelta(days=2))


def test_revocation_is_final_even_for_an_earlier_clock(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    registry.revoke(consent.consent_id, now=NOW + timedelta(days=5))
    state, _ = check(registry, consent.consent_id, now=NOW + timedelta(days=1))
    assert state is ConsentState.REVOKED


def test_revoking_twice_is_idempotent(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    first = registry.revoke(consent.consent_id, now=NOW + timedelta(hours=1))
    second = registry.revoke(consent.consent_id, now=NOW + timedelta(hours=5))
    assert second == first
    assert registry.get(consent.consent_id).revoked_at == NOW + timedelta(hours=1)


def test_revoking_an_unknown_consent_names_it(registry: ConsentRegistry) -> None:
    unknown = "cns_" + "b" * 22
    with pytest.raises(NotFound, match=f"consent {unknown} does not exist") as caught:
        registry.revoke(unknown, now=NOW)
    assert caught.value.field == "consent_id"
    with pytest.raises(NotFound):
        registry.get(unknown)


def test_expired_consent(registry: ConsentRegistry) -> None:
    consent = grant(registry, days=30)
    state, why = check(registry, consent.consent_id, now=NOW + timedelta(days=30))
    assert state is ConsentState.EXPIRED
    assert why == f"consent {consent.consent_id} expired at 2026-12-26T10:00:00Z"
    state, _ = check(registry, consent.consent_id, now=NOW + timedelta(days=29, hours=23))
    assert state is ConsentState.VALID


def test_consent_not_yet_granted_at_the_query_time(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    state, why = check(registry, consent.consent_id, now=NOW - timedelta(minutes=1))
    assert state is ConsentState.MISSING
    assert "starts at 2026-11-26T10:00:00Z" in why


def test_purpose_mismatch(registry: ConsentRegistry) -> None:
    consent = grant(registry, purpose="self_query")
    state, why = check(registry, consent.consent_id, purpose="loan_underwriting")
    assert state is ConsentState.PURPOSE_MISMATCH
    assert why == (
        f"consent {consent.consent_id} is for purpose 'self_query', not 'loan_underwriting'"
    )


def test_grantee_mismatch(registry: ConsentRegistry) -> None:
    consent = grant(registry, grantee="bank-a")
    state, why = check(registry, consent.consent_id, grantee="bank-b")
    assert state is ConsentState.GRANTEE_MISMATCH
    assert why == f"consent {consent.consent_id} was granted to 'bank-a', not 'bank-b'"


def test_consent_of_another_person_does_not_count(registry: ConsentRegistry) -> None:
    consent = grant(registry, subject=ALICE)
    state, why = check(registry, consent.consent_id, subject=BOB)
    assert state is ConsentState.MISSING
    # the sentence goes to the audit log: it must not carry either identifier
    assert ALICE not in why
    assert BOB not in why


def test_lower_case_check_character_matches(registry: ConsentRegistry) -> None:
    subject = next(
        s
        for n in range(1000)
        if (s := make_resident_id(region="320506", birth=date(1970, 3, 3), sequence=n)).endswith(
            "X"
        )
    )
    consent = grant(registry, subject=subject.lower())
    assert consent.subject_id == subject
    state, _ = check(registry, consent.consent_id, subject=subject.lower())
    assert state is ConsentState.VALID


def test_state_values_are_the_policy_context_values() -> None:
    assert {s.value for s in ConsentState} >= {
        "valid",
        "missing",
        "revoked",
        "expired",
        "not_applicable",
    }


def test_invalid_subject_is_refused(registry: ConsentRegistry) -> None:
    wrong_check_character = ALICE[:17] + ("1" if ALICE[17] == "0" else "0")
    with pytest.raises(InvalidArgument) as caught:
        grant(registry, subject=wrong_check_character)
    assert caught.value.field == "subject_id"


@pytest.mark.parametrize(
    ("days", "message"),
    [(0, "is not in the future"), (-1, "is not in the future"), (5 * 366 + 1, "more than 5 years")],
)
def test_expiry_must_be_future_and_within_five_years(
    registry: ConsentRegistry, days: int, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message) as caught:
        grant(registry, days=days)
    assert caught.value.field == "expires_at"


def test_five_years_exactly_is_allowed(registry: ConsentRegistry) -> None:
    consent = registry.grant(
        subject_id=ALICE,
        grantee="bank-a",
        purpose="loan_underwriting",
        expires_at=NOW.replace(year=2031),
        now=NOW,
    )
    assert consent.expires_at == datetime(2031, 11, 26, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"grantee": ""}, "grantee"),
        ({"grantee": "Bank A"}, "grantee"),
        ({"purpose": "Loan"}, "purpose"),
        ({"purpose": ""}, "purpose"),
        ({"now": datetime(2026, 11, 26)}, "now"),
        ({"expires_at": datetime(2027, 1, 1)}, "expires_at"),
    ],
)
def test_grant_arguments_are_validated(
    registry: ConsentRegistry, kwargs: dict[str, object], field: str
) -> None:
    arguments: dict[str, object] = {
        "subject_id": ALICE,
        "grantee": "bank-a",
        "purpose": "loan_underwriting",
        "expires_at": NOW + timedelta(days=1),
        "now": NOW,
    }
    arguments.update(kwargs)
    with pytest.raises(InvalidArgument) as caught:
        registry.grant(**arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_list_filters_by_subject_and_grantee(registry: ConsentRegistry) -> None:
    a1 = grant(registry, subject=ALICE, grantee="bank-a")
    a2 = grant(registry, subject=ALICE, grantee="agency-c", purpose="self_query")
    b1 = grant(registry, subject=BOB, grantee="bank-a")
    assert {c.consent_id for c in registry.list()} == {a1.consent_id, a2.consent_id, b1.consent_id}
    assert {c.consent_id for c in registry.list(subject_id=ALICE)} == {a1.consent_id, a2.consent_id}
    assert {c.consent_id for c in registry.list(grantee="bank-a")} == {a1.consent_id, b1.consent_id}
    assert registry.list(subject_id=BOB, grantee="bank-a") == [b1]
    assert registry.list(grantee="nobody") == []


def test_consents_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "consent.duckdb"
    with ConsentRegistry(path, receipt_key=RECEIPT_KEY) as first:
        kept = grant(first)
        revoked = first.revoke(grant(first, purpose="self_query").consent_id, now=NOW)
    with ConsentRegistry(path, receipt_key=RECEIPT_KEY) as second:
        assert second.get(kept.consent_id) == kept
        assert second.get(revoked.consent_id) == revoked
        assert check(second, kept.consent_id)[0] is ConsentState.VALID
        assert check(second, revoked.consent_id, purpose="self_query")[0] is ConsentState.REVOKED


# -- the in-memory cache in front of the file -----------------------------------------------------


def test_a_cached_valid_consent_is_revoked_at_once(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    for _ in range(3):  # read from the file once, then from memory
        assert check(registry, consent.consent_id)[0] is ConsentState.VALID
    registry.revoke(consent.consent_id, now=NOW + timedelta(hours=1))
    assert check(registry, consent.consent_id)[0] is ConsentState.REVOKED
    assert registry.get(consent.consent_id).revoked_at == NOW + timedelta(hours=1)
    assert registry.list(subject_id=ALICE)[0].revoked_at == NOW + timedelta(hours=1)


def test_a_cached_consent_still_expires(registry: ConsentRegistry) -> None:
    consent = grant(registry, days=30)
    assert check(registry, consent.consent_id)[0] is ConsentState.VALID
    later = NOW + timedelta(days=30)
    assert check(registry, consent.consent_id, now=later)[0] is ConsentState.EXPIRED
    assert check(registry, consent.consent_id, purpose="marketing")[0] is (
        ConsentState.PURPOSE_MISMATCH
    )


def test_the_cache_is_bounded_and_evicted_consents_stay_exact(tmp_path: Path) -> None:
    with ConsentRegistry(
        tmp_path / "small.duckdb", receipt_key=RECEIPT_KEY, cache_entries=2
    ) as small:
        consents = [grant(small, grantee=f"bank-{i}") for i in range(5)]
        for i, consent in enumerate(consents):
            assert check(small, consent.consent_id, grantee=f"bank-{i}")[0] is ConsentState.VALID
        small.revoke(consents[0].consent_id, now=NOW + timedelta(hours=1))  # evicted by now
        small.revoke(consents[4].consent_id, now=NOW + timedelta(hours=1))  # still cached
        states = [
            check(small, c.consent_id, grantee=f"bank-{i}")[0] for i, c in enumerate(consents)
        ]
        assert states == [ConsentState.REVOKED] + [ConsentState.VALID] * 3 + [ConsentState.REVOKED]
    with ConsentRegistry(
        tmp_path / "none.duckdb", receipt_key=RECEIPT_KEY, cache_entries=0
    ) as uncached:
        consent = grant(uncached)
        assert check(uncached, consent.consent_id)[0] is ConsentState.VALID
        uncached.revoke(consent.consent_id, now=NOW + timedelta(hours=1))
        assert check(uncached, consent.consent_id)[0] is ConsentState.REVOKED


def test_no_check_after_a_revocation_sees_the_consent_valid(registry: ConsentRegistry) -> None:
    consent = grant(registry)
    revoked = threading.Event()
    stop = threading.Event()
    stale: list[ConsentState] = []
    checks = [0]

    def checker() -> None:
        while not stop.is_set():
            after = revoked.is_set()
            state, _ = check(registry, consent.consent_id)
            checks[0] += 1
            if after and state is not ConsentState.REVOKED:
                stale.append(state)

    threads = [threading.Thread(target=checker) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.02)
    registry.revoke(consent.consent_id, now=NOW + timedelta(hours=1))
    revoked.set()
    time.sleep(0.02)
    stop.set()
    for thread in threads:
        thread.join()
    assert stale == []
    assert checks[0] > 8
