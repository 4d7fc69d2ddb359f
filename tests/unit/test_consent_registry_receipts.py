"""The consent registry signs a receipt for every consent, keeps it, and signs old rows on read."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coordinator.consent import Consent, ConsentRegistry, ConsentState
from osmanthus.errors import ConfigError
from osmanthus.ids import make_resident_id
from osmanthus.receipts import RECEIPT_ISSUER, ConsentReceipt, consent_key_id, verify_receipt

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
        now=NOW + timedelta(days=1),
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


def test_a_file_from_before_receipts_is_migrated_and_its_rows_signed_on_read(
    tmp_path: Path,
) -> None:
    path = tmp_path / "consents.duckdb"
    old = duckdb.connect(str(path))
    old.execute(_OLD_SCHEMA)
    granted = NOW.replace(tzinfo=None)
    rows = [
        ("cns_" + "A" * 22, granted, None),
        ("cns_" + "B" * 22, granted + timedelta(minutes=1), granted + timedelta(days=2)),
    ]
    for consent_id, at, revoked in rows:
        old.execute(
            "INSERT INTO consents VALUES (?, ?, 'bank-1', 'loan_underwriting', ?, ?, ?)",
            [consent_id, ALICE, at, at + timedelta(days=30), revoked],
        )
    old.close()

    with ConsentRegistry(path, receipt_key=KEY) as registry:
        live = registry.get("cns_" + "A" * 22)
        _assert_attests(_verify(live), live)
        listed = registry.list(subject_id=ALICE)
        assert [c.consent_id for c in listed] == [r[0] for r in rows]
        for consent in listed:
            _assert_attests(_verify(consent), consent)
        assert listed[1].revoked_at is not None  # revoked before the migration, still signed
    # signed once and stored: the column holds them and a reopened registry returns the same
    check = duckdb.connect(str(path))
    stored = dict(check.execute("SELECT consent_id, receipt FROM consents").fetchall())
    check.close()
    assert stored == {c.consent_id: c.receipt for c in listed}
    with ConsentRegistry(path, receipt_key=KEY) as reopened:
        assert [c.receipt for c in reopened.list()] == [c.receipt for c in listed]


def test_the_registry_needs_an_ed25519_receipt_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Ed25519 private key") as caught:
        ConsentRegistry(
            tmp_path / "consents.duckdb",
            receipt_key=ec.generate_private_key(ec.SECP256R1()),  # type: ignore[arg-type]
        )
    assert caught.value.field == "receipt_key"
