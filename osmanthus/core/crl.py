"""Certificate revocation: the platform CA's CRL, checked by every server and followed live.

The platform CA publishes an X.509 certificate revocation list (RFC 5280 §5) in `crl.pem`
(`osmanthus certs revoke`, `osmanthus certs crl`). A server started with one (`--crl`) verifies
it at start (it does not start with a CRL that fails) and then polls the file: a new CRL is put
in force only if the platform CA signed it (RFC 5280 §6.3.3: issuer and signature checked
against the CA certificate the server already trusts for TLS), it carries a CRL number
(RFC 5280 §5.2.3) higher than the one in force, and it was not issued more than
MAX_CLOCK_AHEAD in the future (such a CRL is looked at again later: the clock may catch up).
Anything else, a CRL the parser cannot read included, changes nothing and is logged as a
WARNING. With a CRL the CA file must hold the one CA that signs it, never a bundle.

gRPC Python cannot hand a CRL to the TLS handshake (ssl_server_credentials takes none; the core's
CRL provider is not exposed to Python), so the check is made where the caller is read: the
server's RevocationInterceptor compares the serial of the client certificate the handshake
verified with the CRL in force on every call, and on a stream at every message
(osmanthus.core.server). Only serials are compared: the
handshake already proved that the certificate was issued by this same CA.

A CRL past its nextUpdate still revokes what it lists: a stale list is logged as a WARNING once,
never dropped, because dropping it would re-admit every revoked certificate.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm

from osmanthus.core.errors import ConfigError, Unauthenticated
from osmanthus.core.filewatch import AheadOfClock, PolledFile, read_limited

_log = logging.getLogger(__name__)

#: the CRL's file name in the directory 'osmanthus certs init' makes
CRL_FILE: Final = "crl.pem"
#: how often a server looks at its CRL file: a revocation is in force within this long
REVOCATION_POLL_S: Final = 2.0
#: how far ahead of a server's clock a CRL's thisUpdate may be; a CRL dated far in the future is
#: a wrong clock on the CA's machine, and would keep looking fresh long after it is stale
MAX_CLOCK_AHEAD: Final = timedelta(hours=1)
#: the reason a CRL entry gives when it gives none (RFC 5280 §5.3.1: then the reason is absent)
UNSPECIFIED: Final = "unspecified"


def serial_text(serial: int) -> str:
    """A certificate serial as operators see it in `openssl x509 -serial`: hex, e.g. 0x3f2a…."""
    return f"0x{serial:x}"


@dataclass(frozen=True, kw_only=True)
class RevokedCertificate:
    """One entry of a CRL."""

    serial: int
    revoked_at: datetime
    reason: str


@dataclass(frozen=True, kw_only=True)
class VerifiedCrl:
    """A CRL whose signature, issuer and number were checked against the platform CA."""

    number: int
    this_update: datetime
    next_update: datetime
    revoked: Mapping[int, RevokedCertificate]
    #: SHA-256 of the file it was read from
    digest: str

    def describe(self) -> str:
        return (
            f"CRL number {self.number} ({len(self.revoked)} revoked, issued "
            f"{self.this_update.isoformat()}, next update {self.next_update.isoformat()})"
        )


def load_ca_certificate(path: Path, *, field: str = "ca") -> x509.Certificate:
    """The platform CA certificate a CRL must be signed by."""
    data = read_limited(path, field=field, what="CA certificate")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM CA certificate: {exc}", field=field) from None
    if len(certificates) != 1:
        # a bundle (a new CA beside the old during a rollover): which CA signs the CRL, and
        # whose certificates it revokes, would be a guess; one CRL answers for one CA
        raise ConfigError(
            f"{path} holds {len(certificates)} certificates; with a CRL the CA file must hold "
            "exactly the one platform CA that signs it (a CRL of one CA cannot revoke another "
            "CA's certificates): give --ca a file with that CA alone, or run without --crl",
            field=field,
        )
    return certificates[0]


#: what the `cryptography` package raises for a CRL it cannot read or check, beyond ConfigError
_UNREADABLE: Final = (
    ValueError,
    TypeError,
    UnsupportedAlgorithm,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


def verify_crl(
    data: bytes, *, ca: x509.Certificate, origin: str, now: datetime | None = None
) -> VerifiedCrl:
    """The CRL in `data` (PEM or DER) once signed by `ca`; ConfigError naming what is wrong
    (AheadOfClock when it is dated ahead of this server's clock)."""
    try:
        return _verify_crl(data, ca=ca, origin=origin, now=now)
    except ConfigError:
        raise
    except _UNREADABLE as exc:
        # parsed lazily: a malformed extension or entry surfaces only where it is read
        raise ConfigError(
            f"{origin} is not a CRL this server can read ({type(exc).__name__}: "
            f"{str(exc)[:200]}); publish a new one with 'osmanthus certs crl'",
            field="crl",
        ) from None


def _verify_crl(
    data: bytes, *, ca: x509.Certificate, origin: str, now: datetime | None
) -> VerifiedCrl:
    try:
        crl = (
            x509.load_pem_x509_crl(data)
            if data.lstrip().startswith(b"-----")
            else x509.load_der_x509_crl(data)
        )
    except ValueError as exc:
        raise ConfigError(f"{origin} is not an X.509 CRL: {exc}", field="crl") from None
    if crl.issuer != ca.subject:
        raise ConfigError(
            f"{origin} was issued by {crl.issuer.rfc4514_string()!r}, not by the platform CA "
            f"{ca.subject.rfc4514_string()!r}",
            field="crl",
        )
    try:
        valid = crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ConfigError(
            f"{origin}: the signature does not verify against the platform CA's key: it was "
            "signed by another key, or changed after it was signed",
            field="crl",
        )
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        raise ConfigError(
            f"{origin} has no CRL number (RFC 5280 §5.2.3): without it a server cannot tell a "
            "newer list from an older one; make it with 'osmanthus certs crl'",
            field="crl",
        ) from None
    next_update = crl.next_update_utc
    if next_update is None:
        raise ConfigError(f"{origin} has no nextUpdate (RFC 5280 §5.1.2.5)", field="crl")
    this_update = crl.last_update_utc
    current = now or datetime.now(UTC)
    if this_update > current + MAX_CLOCK_AHEAD:
        raise AheadOfClock(
            f"{origin} was issued {this_update.isoformat()}, more than "
            f"{MAX_CLOCK_AHEAD.total_seconds() / 3600:g} hour after this server's clock "
            f"({current.isoformat(timespec='seconds')}): the clock of the CA's machine or of "
            "this server is wrong",
            field="crl",
        )
    revoked: dict[int, RevokedCertificate] = {}
    for entry in crl:
        try:
            reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
        except x509.ExtensionNotFound:
            reason = UNSPECIFIED
        revoked[entry.serial_number] = RevokedCertificate(
            serial=entry.serial_number, revoked_at=entry.revocation_date_utc, reason=reason
        )
    return VerifiedCrl(
        number=number,
        this_update=this_update,
        next_update=next_update,
        revoked=MappingProxyType(revoked),
        digest=hashlib.sha256(data).hexdigest(),
    )


@dataclass(frozen=True, kw_only=True)
class RevocationStatus:
    """What a server's CRL watcher has done: the CRL in force, and how many it installed and
    refused since start (for status output and for tests waiting on a reload)."""

    number: int
    revoked: int
    installed: int
    rejected: int
    last_problem: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


class PeerRevocation:
    """The CRL in force at one server, followed from its file; answers "is this peer revoked?"."""

    def __init__(
        self,
        *,
        path: Path,
        ca: x509.Certificate,
        crl: VerifiedCrl,
        interval_s: float = REVOCATION_POLL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """`clock` is this server's time, as CRL dates are compared with it (tests move it)."""
        self.path = path
        self._ca = ca
        self._clock = clock
        self._crl = crl
        self._lock = threading.Lock()
        self._installed = 0
        self._rejected = 0
        self._last_problem = ""
        self._stale_warned = False
        # the content last refused as dated ahead (offered again until the clock agrees)
        self._ahead_digest = ""
        self._poller = PolledFile(
            path=path,
            what="CRL",
            on_change=self._offered,
            on_unreadable=self._unreadable,
            interval_s=interval_s,
            started_with=crl.digest,
            on_poll=lambda: self._warn_if_stale(self.crl),
        )

    @classmethod
    def open(
        cls, path: Path, *, ca_path: Path, interval_s: float = REVOCATION_POLL_S
    ) -> PeerRevocation:
        """The CRL in `path` verified against the CA certificate in `ca_path`; ConfigError, and
        no start, when it fails. Call start() once serving, close() on shutdown."""
        ca = load_ca_certificate(ca_path)
        data = read_limited(path, field="crl", what="CRL")
        crl = verify_crl(data, ca=ca, origin=str(path))
        _log.info("certificate revocation: %s from %s in force", crl.describe(), path)
        revocation = cls(path=path, ca=ca, crl=crl, interval_s=interval_s)
        revocation._warn_if_stale(crl)
        return revocation

    @property
    def crl(self) -> VerifiedCrl:
        with self._lock:
            return self._crl

    @property
    def status(self) -> RevocationStatus:
        with self._lock:
            return RevocationStatus(
                number=self._crl.number,
                revoked=len(self._crl.revoked),
                installed=self._installed,
                rejected=self._rejected,
                last_problem=self._last_problem,
            )

    def revoked(self, serial: int) -> RevokedCertificate | None:
        """The CRL entry of `serial`, or None when the CRL in force does not list it."""
        with self._lock:
            return self._crl.revoked.get(serial)

    @property
    def lists_any(self) -> bool:
        """Whether the CRL in force revokes anything (when not, no certificate needs parsing)."""
        with self._lock:
            return bool(self._crl.revoked)

    def refusal(self, serial: int, *, whose: str) -> str | None:
        """Why the certificate `whose` (e.g. "the client certificate of requester 'bank'") with
        `serial` is refused, or None when it is not revoked."""
        with self._lock:
            entry = self._crl.revoked.get(serial)
            number = self._crl.number
        if entry is None:
            return None
        return (
            f"{whose} (serial {serial_text(serial)}) was revoked by the platform CA on "
            f"{entry.revoked_at.isoformat()} (reason: {entry.reason}; CRL number {number}): "
            "ask the platform operator for a new certificate"
        )

    def check_certificate_pem(self, pem: bytes, *, whose: str) -> None:
        """Unauthenticated when the PEM certificate `pem` is revoked."""
        if not self.lists_any:
            return
        try:
            serial = x509.load_pem_x509_certificate(pem).serial_number
        except ValueError as exc:
            raise Unauthenticated(f"{whose} cannot be parsed: {exc}") from None
        problem = self.refusal(serial, whose=whose)
        if problem is not None:
            raise Unauthenticated(problem)

    def start(self) -> PeerRevocation:
        """Poll the file in a daemon thread."""
        self._poller.start()
        return self

    def wake(self) -> None:
        """Look at the file now."""
        self._poller.wake()

    def close(self) -> None:
        self._poller.close()

    def check_now(self) -> RevocationStatus:
        """Look at the file once (tests, status); returns the status after the look."""
        self._poller.check_now()
        return self.status

    # --- the watcher's decisions --------------------------------------------------------------

    def _offered(self, data: bytes) -> bool:
        """Put the CRL in `data` in force if it may replace the one in force; True when it was
        refused as dated ahead of the clock (the poller offers it again later)."""
        with self._lock:
            current = self._crl
        digest = hashlib.sha256(data).hexdigest()
        if digest == current.digest:
            # the CRL in force, put back after a file that was refused: nothing to do
            with self._lock:
                self._last_problem = ""
            return False
        try:
            new = verify_crl(data, ca=self._ca, origin=str(self.path), now=self._clock())
            if new.number <= current.number:
                raise ConfigError(
                    f"{self.path} has CRL number {new.number}, not above the number in force "
                    f"({current.number}): an older or replayed CRL is ignored; publish a new "
                    "one with 'osmanthus certs crl'",
                    field="crl",
                )
        except AheadOfClock as exc:
            # offered again at every retry: counted and logged once per content
            if digest != self._ahead_digest:
                self._ahead_digest = digest
                self._refuse(f"{exc.message}; it is looked at again later", current)
            return True
        except ConfigError as exc:
            self._ahead_digest = ""
            self._refuse(exc.message, current)
            return False
        except Exception as exc:  # anything the CRL parser raises must not end the watcher
            self._refuse(f"{self.path} cannot be read as a CRL ({type(exc).__name__})", current)
            return False
        self._ahead_digest = ""
        with self._lock:
            self._crl = new
            self._installed += 1
            self._last_problem = ""
        self._stale_warned = False
        _log.info(
            "certificate revocation: %s from %s now in force; it replaces CRL number %d "
            "(%d revoked)",
            new.describe(), self.path, current.number, len(current.revoked),
        )  # fmt: skip
        self._warn_if_stale(new)
        return False

    def _refuse(self, problem: str, current: VerifiedCrl) -> None:
        with self._lock:
            self._rejected += 1
            self._last_problem = problem
        _log.warning(
            "certificate revocation: CRL file rejected, CRL number %d stays in force: %s",
            current.number,
            problem,
        )

    def _unreadable(self, problem: str) -> None:
        with self._lock:
            self._last_problem = problem
            number = self._crl.number
        _log.warning("certificate revocation: %s; CRL number %d stays in force", problem, number)

    def _warn_if_stale(self, crl: VerifiedCrl) -> None:
        if self._stale_warned or datetime.now(UTC) <= crl.next_update:
            return
        self._stale_warned = True
        _log.warning(
            "certificate revocation: CRL number %d in %s was due for an update at %s; it still "
            "revokes what it lists, but a certificate revoked since may be accepted: run "
            "'osmanthus certs crl' and distribute crl.pem",
            crl.number, self.path, crl.next_update.isoformat(),
        )  # fmt: skip


def open_revocation(
    path: Path | None, *, ca_path: Path, interval_s: float = REVOCATION_POLL_S
) -> PeerRevocation | None:
    """The CRL a server follows, or None (logged as a WARNING) when it is given none."""
    if path is None:
        _log.warning(
            "certificate revocation: no CRL given (--crl): a revoked certificate is accepted "
            "until it expires"
        )
        return None
    return PeerRevocation.open(path, ca_path=ca_path, interval_s=interval_s)
