"""The platform CA's revocations: its record of revoked certificates, and the CRL it signs.

`osmanthus certs revoke` adds a certificate to the CA's record (CA_DIR/revocations.json, mode
0600, beside the CA key) and publishes a fresh CRL (CA_DIR/crl.pem); `osmanthus certs crl` signs
the same list again with a later nextUpdate. The CRL is an X.509 v2 CRL (RFC 5280 §5) signed
with the CA key: CRL number (§5.2.3), authority key identifier (§5.2.1), and a reason code
(§5.3.1) on every entry that has one other than "unspecified". Servers follow it without a
restart (osmanthus.core.crl); distributing crl.pem to them is the operator's job
(docs/deployment.md).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from certs.authority import _load_ca
from osmanthus.core.crl import CRL_FILE, serial_text
from osmanthus.core.errors import ConfigError, InvalidArgument
from osmanthus.core.files import write_atomically
from osmanthus.core.peers import CA_CERT_FILE, CA_KEY_FILE

#: the CA's record of what it revoked and the last CRL number it used (private: mode 0600)
REVOCATIONS_FILE: Final = "revocations.json"
#: a CRL's lifetime: servers warn once it is past; `certs crl` (from cron) signs a new one
DEFAULT_CRL_DAYS: Final = 30
MAX_CRL_DAYS: Final = 365
#: the reasons an operator may give (RFC 5280 §5.3.1), by their names in `cryptography`
REASONS: Final[Mapping[str, x509.ReasonFlags]] = {
    flag.name: flag
    for flag in (
        x509.ReasonFlags.unspecified,
        x509.ReasonFlags.key_compromise,
        x509.ReasonFlags.affiliation_changed,
        x509.ReasonFlags.superseded,
        x509.ReasonFlags.cessation_of_operation,
        x509.ReasonFlags.privilege_withdrawn,
    )
}
_RECORD_FORMAT: Final = 1


@dataclass(frozen=True, kw_only=True)
class RevokedEntry:
    """One certificate the CA revoked."""

    serial: int
    revoked_at: datetime.datetime
    reason: str
    #: the certificate's subject when the operator named the certificate file, else ""
    subject: str


@dataclass(frozen=True, kw_only=True)
class PublishedCrl:
    """A CRL the CA just signed."""

    path: Path
    number: int
    revoked: int
    next_update: datetime.datetime


@dataclass(frozen=True, kw_only=True)
class _Record:
    crl_number: int
    revoked: tuple[RevokedEntry, ...]


def parse_serial(text: str, *, decimal: bool = False) -> int:
    """A certificate serial as an operator copies it: in hex, as `openssl x509 -noout -serial`
    prints it ("serial=3F2A…"; the "serial=" and a 0x are optional, ':' between bytes allowed),
    or, only when `decimal` says so, in decimal. One rule, never a guess: "10" is 0x10."""
    cleaned = text.strip()
    if cleaned.lower().startswith("serial="):
        cleaned = cleaned[len("serial=") :]
    if decimal:
        digits, base, shown = cleaned, 10, "in decimal (--decimal)"
    else:
        digits = cleaned.replace(":", "")
        digits = digits[2:] if digits.lower().startswith("0x") else digits
        base, shown = 16, "in hex, as 'openssl x509 -noout -serial' prints it (serial=3F2A…)"
    # int() would also take '_', '+' and spaces inside: only plain digits are a serial
    allowed = "0123456789" if base == 10 else "0123456789abcdefABCDEF"
    if not digits or any(c not in allowed for c in digits):
        raise InvalidArgument(f"{text[:80]!r} is not a certificate serial {shown}", field="serial")
    serial = int(digits, base)
    if not 0 < serial < 2**160:
        raise InvalidArgument(
            f"{text[:80]!r} is not a certificate serial: RFC 5280 §4.1.2.2 serials are "
            "positive and at most 20 bytes"
            + ("" if decimal else f" (read {shown}; a decimal serial needs --decimal)"),
            field="serial",
        )
    return serial


def revoke_certificate(
    ca_dir: Path,
    *,
    serial: int | None = None,
    cert: Path | None = None,
    reason: str = "unspecified",
    days: int = DEFAULT_CRL_DAYS,
    now: datetime.datetime | None = None,
    force: bool = False,
) -> tuple[RevokedEntry, PublishedCrl]:
    """Record the certificate `serial` (or the one in the file `cert`) as revoked and publish a
    fresh CRL. A certificate file must have been issued by this CA; a serial already revoked
    is refused (InvalidArgument), so the record keeps the first reason and date.

    The CA keeps no register of every serial it issued, so a bare `serial` is looked for among
    the certificates in `ca_dir` ('certs init' and 'certs issue' write there by default): one
    not found is refused unless `force` (a mistyped serial would revoke nothing and leave the
    certificate meant working, with no one the wiser)."""
    if (serial is None) == (cert is None):
        raise InvalidArgument("give a serial or a certificate file, not both", field="serial")
    if reason not in REASONS:
        raise InvalidArgument(
            f"{reason!r} is not a revocation reason: use one of {', '.join(sorted(REASONS))}",
            field="reason",
        )
    _check_days(days)
    ca_cert, ca_key = _load_ca(ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE)
    subject = ""
    if cert is not None:
        serial, subject = _serial_of(cert, ca_cert)
    assert serial is not None
    if cert is None:
        subject = _issued_here(ca_dir, ca_cert).get(serial, "")
        if not subject and not force:
            raise InvalidArgument(
                f"no certificate of this CA with serial {serial_text(serial)} is in {ca_dir}: "
                "check the serial (hex, as 'openssl x509 -noout -serial' prints it), give the "
                "certificate file with --cert, or revoke it anyway with --force (the CA keeps no "
                "register of every serial it issued, only of the files in its directory)",
                field="serial",
            )
    now = _now(now)
    record = _read_record(ca_dir)
    for entry in record.revoked:
        if entry.serial == serial:
            raise InvalidArgument(
                f"serial {serial_text(serial)} was already revoked on "
                f"{entry.revoked_at.isoformat()} ({entry.reason}); to publish the CRL again, "
                "run 'osmanthus certs crl'",
                field="serial",
            )
    entry = RevokedEntry(serial=serial, revoked_at=now, reason=reason, subject=subject)
    record = _Record(crl_number=record.crl_number, revoked=(*record.revoked, entry))
    # the record first: a crash between the two leaves the revocation recorded, and the next
    # 'certs crl' publishes it
    _write_record(ca_dir, record)
    return entry, _publish(ca_dir, ca_cert, ca_key, record, days=days, now=now)


def publish_crl(
    ca_dir: Path, *, days: int = DEFAULT_CRL_DAYS, now: datetime.datetime | None = None
) -> PublishedCrl:
    """Sign the CA's record of revocations again as a CRL with the next number."""
    _check_days(days)
    ca_cert, ca_key = _load_ca(ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE)
    return _publish(ca_dir, ca_cert, ca_key, _read_record(ca_dir), days=days, now=_now(now))


def start_revocations(ca_dir: Path) -> PublishedCrl:
    """A new CA's empty record and first CRL (init_platform): the revocations of a CA this
    directory held before belong to that CA and are dropped with it."""
    ca_cert, ca_key = _load_ca(ca_dir / CA_CERT_FILE, ca_dir / CA_KEY_FILE)
    record = _Record(crl_number=0, revoked=())
    _write_record(ca_dir, record)
    return _publish(ca_dir, ca_cert, ca_key, record, days=DEFAULT_CRL_DAYS, now=_now(None))


def revoked_entries(ca_dir: Path) -> tuple[RevokedEntry, ...]:
    """What the CA's record says it revoked, oldest first."""
    return _read_record(ca_dir).revoked


def _publish(
    ca_dir: Path,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    record: _Record,
    *,
    days: int,
    now: datetime.datetime,
) -> PublishedCrl:
    path = ca_dir / CRL_FILE
    # above the record's number and the published file's: a record restored from an older
    # backup must not make servers ignore every CRL after it as a replay
    number = max(record.crl_number, _published_number(path, ca_cert)) + 1
    next_update = now + datetime.timedelta(days=days)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
    )
    for entry in record.revoked:
        revoked = (
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
        )
        if entry.reason != x509.ReasonFlags.unspecified.name:
            # RFC 5280 §5.3.1: the reason code is left out rather than given as unspecified
            revoked = revoked.add_extension(x509.CRLReason(REASONS[entry.reason]), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    crl = builder.sign(ca_key, hashes.SHA256())
    _write_record(ca_dir, _Record(crl_number=number, revoked=record.revoked))
    # public: every server reads it
    write_atomically(path, crl.public_bytes(serialization.Encoding.PEM), mode=0o644, field="crl")
    return PublishedCrl(
        path=path, number=number, revoked=len(record.revoked), next_update=next_update
    )


def _published_number(path: Path, ca_cert: x509.Certificate) -> int:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        if crl.issuer != ca_cert.subject:
            return 0
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


def _serial_of(path: Path, ca_cert: x509.Certificate) -> tuple[int, str]:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except OSError as exc:
        raise ConfigError(
            f"cannot read the certificate {path}: {exc.strerror}", field="cert"
        ) from None
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM certificate: {exc}", field="cert") from None
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        raise InvalidArgument(
            f"{path} was not issued by this CA: revoking it here would change nothing",
            field="cert",
        ) from None
    return cert.serial_number, cert.subject.rfc4514_string()


#: certificate files looked at for a bare serial (a CA directory holds one per peer)
_MAX_LOOKED_AT: Final = 10_000


def _issued_here(ca_dir: Path, ca_cert: x509.Certificate) -> dict[int, str]:
    """Serial -> subject of the certificates in `ca_dir` (and below) this CA signed."""
    found: dict[int, str] = {}
    for index, path in enumerate(sorted(ca_dir.rglob("*.pem"))):
        if index >= _MAX_LOOKED_AT:
            break
        try:
            data = path.read_bytes()
            if b"BEGIN CERTIFICATE" not in data:
                continue  # keys, the CRL
            cert = x509.load_pem_x509_certificate(data)
            cert.verify_directly_issued_by(ca_cert)
        except (OSError, ValueError, TypeError, InvalidSignature):
            continue
        if cert.serial_number != ca_cert.serial_number:
            found[cert.serial_number] = cert.subject.rfc4514_string()
    return found


def _now(now: datetime.datetime | None) -> datetime.datetime:
    # whole seconds: a CRL's times have no fraction
    return (
        (now or datetime.datetime.now(datetime.UTC)).astimezone(datetime.UTC).replace(microsecond=0)
    )


def _check_days(days: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_CRL_DAYS:
        raise InvalidArgument(
            f"{days!r} is not a whole number of days from 1 to {MAX_CRL_DAYS}", field="days"
        )


def _read_record(ca_dir: Path) -> _Record:
    path = ca_dir / REVOCATIONS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        # a CA made before revocation existed: nothing revoked yet
        return _Record(crl_number=0, revoked=())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}", field="ca_dir") from None
    damaged = f"{path} is damaged: restore it from backup (it lists every revoked certificate)"
    try:
        value: Any = json.loads(text)
        if value["format"] != _RECORD_FORMAT:
            raise ValueError("format")
        number = value["crl_number"]
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise ValueError("crl_number")
        entries = tuple(
            RevokedEntry(
                serial=parse_serial(item["serial"]),
                revoked_at=datetime.datetime.fromisoformat(item["revoked_at"]).astimezone(
                    datetime.UTC
                ),
                reason=str(item["reason"]),
                subject=str(item["subject"]),
            )
            for item in value["revoked"]
        )
    except (ValueError, KeyError, TypeError, AttributeError, InvalidArgument) as exc:
        raise ConfigError(f"{damaged} ({exc})", field="ca_dir") from None
    for entry in entries:
        if entry.reason not in REASONS:
            raise ConfigError(f"{damaged} (reason {entry.reason!r})", field="ca_dir")
    return _Record(crl_number=number, revoked=entries)


def _write_record(ca_dir: Path, record: _Record) -> None:
    value = {
        "format": _RECORD_FORMAT,
        "crl_number": record.crl_number,
        "revoked": [
            {
                "serial": serial_text(entry.serial),
                "revoked_at": entry.revoked_at.isoformat(),
                "reason": entry.reason,
                "subject": entry.subject,
            }
            for entry in record.revoked
        ],
    }
    data = (json.dumps(value, indent=2) + "\n").encode()
    # beside the CA key and as private as it: who was revoked, and why, is the CA's business
    write_atomically(ca_dir / REVOCATIONS_FILE, data, mode=0o600, field="ca_dir")
