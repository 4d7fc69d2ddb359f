"""The consent registry signs a receipt for every consent, keeps it, and signs old rows at open."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import _SIGN_BATCH, ConsentRegistry, ConsentState
from osmanthus.core.errors import ConfigError
from osmanthus.core.ids import make_resident_id
from osmanthus.core.receipts import (
    RECEIPT_ISSUER,
    ConsentReceipt,
    UntrustedReceipt,
    consent_key_id,
    verify_receipt,
)
from osmanthus.core.wire.coordinator import Consent

KEY = Ed25519PrivateKey.generate()
NOW = datetime(2026, 11, 26, 10, 0, 0, 250_000, tzinfo=UTC)
ALICE = make_resident_id(region="320505", birth=date(1990, 1, 1), sequence=1)

# the table as it was before receipts existed
_OLD_SCHEMA = """
CREATE TABLE consents (
    consent_id VARCHAR PRIMARY KEY,
    subject_id VARCHAR NOT NULL,
    grantee VARCHAR NOT NULL,
    purpose VARCHAR NOT NULL,
    granted_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    revoked_at TIMESTAMP
)
"""


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ConsentRegistry]:
    with ConsentRegistry(tmp_path / "consents.duckdb", receipt_key=KEY) as reg:
        yield reg


def _grant(registry: ConsentRegistry, **kw: str) -> Consent:
    return registry.grant(
        subject_id=kw.get("subject_id", ALICE),
        grantee=kw.get("grantee", "bank-1"),
        purpose=kw.get("purpose", "loan_underwriting"),
        expires_at=NOW + timedelta(days=90),
        now=NOW,
    )


def _verify(consent: Consent) -> ConsentReceipt:
    return verify_receipt(
        consent.receipt,
        public_key=KEY.public_key(),
        now=consent.granted_at + timedelta(days=1),
        expected_grantee=consent.grantee,
        expected_purpose=consent.purpose,
        expected_subject=consent.subject_id,
    )


def _assert_attests(receipt: ConsentReceipt, consent: Consent) -> None:
    assert receipt.consent_id == consent.consent_id
    assert receipt.subject_id == consent.subject_id
    assert receipt.grantee == consent.grantee
    assert receipt.purpose == consent.purpose
    assert receipt.granted_at == consent.granted_at.replace(microsecond=0)
    assert receipt.expires_at == consent.expires_at.replace(microsecond=0)
    assert receipt.issuer == RECEIPT_ISSUER
    assert receipt.key_id == consent_key_id(KEY.public_key())


def test_a_grant_returns_a_receipt_whose_claims_are_the_consent(
    registry: ConsentRegistry,
) -> None:
    consent = _grant(registry)
    _assert_attests(_verify(consent), consent)


def test_every_read_returns_the_receipt_given_at_the_grant(registry: ConsentRegistry) -> None:
    consent = _grant(registry)
    assert registry.get(consent.consent_id).receipt == consent.receipt
    assert [c.receipt for c in registry.list(subject_id=ALICE)] == [consent.receipt]


def test_a_revoked_consents_receipt_still_verifies_but_the_registry_refuses_it(
    registry: ConsentRegistry,
) -> None:
    consent = _grant(registry)
    revoked = registry.revoke(consent.consent_id, now=NOW + timedelta(hours=1))
    assert revoked.receipt == consent.receipt
    _verify(revoked)  # the receipt proves the grant, which did happen...
    state, why = registry.check(
        consent.consent_id,
        subject_id=ALICE,
        grantee="bank-1",
        purpose="loan_underwriting",
        now=NOW + timedelta(hours=2),
    )
    # ...while the registry, asked at query time, knows it no longer stands
    assert state is ConsentState.REVOKED
    assert f"consent {consent.consent_id} was revoked at" in why


def test_receipts_survive_reopening_the_registry(tmp_path: Path) -> None:
    path = tmp_path / "consents.duckdb"
    with ConsentRegistry(path, receipt_key=KEY) as first:
        consent = _grant(first)
    with ConsentRegistry(path, receipt_key=KEY) as second:
        assert second.get(consent.consent_id).receipt == consent.receipt


def _old_file(path: Path, rows: list[tuple[str, str, datetime, datetime | None]]) -> None:
    """A consents file as it was before receipts: (consent id, subject, granted, revoked)."""
    old = duckdb.connect(str(path))
    old.execute(_OLD_SCHEMA)
    for consent_id, subject, at, revoked in rows:
        old.execute(
            "INSERT INTO consents VALUES (?, ?, 'bank-1', 'loan_underwriting', ?, ?, ?)",
            [consent_id, subject, at, at + timedelta(days=30), revoked],
        )
    old.close()


def _stored(path: Path) -> dict[str, str | None]:
    check = duckdb.connect(str(path))
    stored = dict(check.execute("SELECT consent_id, receipt FROM consents").fetchall())
    check.close()
    return stored


LIVE, REVOKED, ENDED, BAD = ("cns_" + c * 22 for c in "ABCD")


def test_a_file_from_before_receipts_is_signed_when_the_registry_opens(tmp_path: Path) -> None:
    path = tmp_path / "consents.duckdb"
    granted = NOW.replace(tzinfo=None)
    _old_file(
        path,
        [
            (LIVE, ALICE, granted, None),
            (REVOKED, ALICE, granted + timedelta(minutes=1), granted + timedelta(days=2)),
            # expired long ago but never revoked: the grant happened, so it is attested
            (ENDED, ALICE, granted - timedelta(days=400), None),
        ],
    )
    with ConsentRegistry(path, receipt_key=KEY):
        pass  # opened and closed: nothing read
    stored = _stored(path)
    assert stored[LIVE] and stored[ENDED]
    # a consent revoked by then gets no fresh receipt: it would attest what no longer stands
    assert stored[REVOKED] is None

    with ConsentRegistry(path, receipt_key=KEY) as registry:
        listed = registry.list(subject_id=ALICE)
        assert [c.consent_id for c in listed] == [ENDED, LIVE, REVOKED]
        for consent in listed[:2]:
            assert consent.receipt == stored[consent.consent_id]
            _assert_attests(_verify(consent), consent)
        revoked = registry.get(REVOKED)
        assert revoked.revoked_at is not None and revoked.receipt == ""
        assert registry.revoke(REVOKED, now=NOW).receipt == ""
    # reading signed nothing more
    assert _stored(path) == stored


def test_revoking_an_unsigned_legacy_consent_needs_no_signature(tmp_path: Path) -> None:
    path = tmp_path / "consents.duckdb"
    # a row that cannot be signed: revoking it must not need a signature either
    bad = ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")
    _old_file(path, [(LIVE, bad, NOW.replace(tzinfo=None), None)])
    with ConsentRegistry(path, receipt_key=KEY) as registry:
        revoked = registry.revoke(LIVE, now=NOW)
    assert revoked.revoked_at == NOW and revoked.receipt == ""


def test_rows_that_cannot_be_signed_are_named_and_do_not_break_reads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "consents.duckdb"
    # a subject id stored before the check character was enforced
    bad = ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")
    granted = NOW.replace(tzinfo=None)
    _old_file(path, [(LIVE, ALICE, granted, None), (BAD, bad, granted, None)])
    with caplog.at_level(logging.WARNING, logger="coordinator.consent"):
        registry = ConsentRegistry(path, receipt_key=KEY)
    with registry:
        [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
        message = warning.getMessage()
        assert "1 consents recorded before receipts existed have no receipt" in message
        assert f"{BAD} (consent.subject_id)" in message
        assert bad not in message  # the field is named, the stored personal data is not
        assert LIVE not in message
        assert [c.consent_id for c in registry.list(grantee="bank-1")] == [LIVE, BAD]
        assert registry.get(BAD).receipt == ""
        _verify(registry.get(LIVE))
        assert registry.revoke(BAD, now=NOW).revoked_at == NOW


def test_more_rows_than_one_batch_are_all_signed_past_one_that_cannot_be(tmp_path: Path) -> None:
    path = tmp_path / "consents.duckdb"
    _old_file(path, [])
    rows = 2 * _SIGN_BATCH + 3
    bad = ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")
    old = duckdb.connect(str(path))
    old.execute(
        "INSERT INTO consents SELECT 'cns_' || lpad(i::VARCHAR, 22, '0'), "
        "CASE WHEN i = ? THEN ? ELSE ? END, 'bank-1', 'loan_underwriting', ?, ?, NULL "
        "FROM range(?) AS t(i)",
        [_SIGN_BATCH // 2, bad, ALICE, NOW.replace(tzinfo=None),
         NOW.replace(tzinfo=None) + timedelta(days=1), rows],
    )  # fmt: skip
    old.close()
    with ConsentRegistry(path, receipt_key=KEY):
        pass
    stored = _stored(path)
    assert len(stored) == rows
    assert [i for i, r in stored.items() if r is None] == [f"cns_{_SIGN_BATCH // 2:022d}"]


def test_receipts_of_another_key_are_kept_and_counted_in_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "consents.duckdb"
    with ConsentRegistry(path, receipt_key=KEY) as first:
        consent = _grant(first)
        _grant(first, grantee="agency-1")
    replacement = Ed25519PrivateKey.generate()
    with caplog.at_level(logging.WARNING, logger="coordinator.consent"):
        second = ConsentRegistry(path, receipt_key=replacement)
    with second:
        assert second.get(consent.consent_id).receipt == consent.receipt
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    message = warning.getMessage()
    assert "2 stored receipts were signed with another consent key" in message
    assert f"key {consent_key_id(KEY.public_key())}: 2" in message
    assert f"({consent_key_id(replacement.public_key())})" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="coordinator.consent"):
        ConsentRegistry(path, receipt_key=KEY).close()
    assert not caplog.records


def test_the_issuer_is_the_deployments_and_verifiers_pin_it(tmp_path: Path) -> None:
    with ConsentRegistry(
        tmp_path / "consents.duckdb", receipt_key=KEY, receipt_issuer="suzhou-credit"
    ) as registry:
        consent = _grant(registry)
    receipt = verify_receipt(
        consent.receipt, public_key=KEY.public_key(), now=NOW, issuer="suzhou-credit"
    )
    assert receipt.issuer == "suzhou-credit"
    with pytest.raises(
        UntrustedReceipt, match="issuer 'suzhou-credit' is not the consent registry"
    ):
        verify_receipt(consent.receipt, public_key=KEY.public_key(), now=NOW)
    with pytest.raises(ConfigError, match="not an issuer name") as caught:
        ConsentRegistry(tmp_path / "other.duckdb", receipt_key=KEY, receipt_issuer="two words")
    assert caught.value.field == "receipt_issuer"
    assert not (tmp_path / "other.duckdb").exists()


def test_the_registry_needs_an_ed25519_receipt_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Ed25519 private key") as caught:
        ConsentRegistry(
            tmp_path / "consents.duckdb",
            receipt_key=ec.generate_private_key(ec.SECP256R1()),  # type: ignore[arg-type]
        )
    assert caught.value.field == "receipt_key"
