"""What a portal process is: kiosk or online site, its device name, its state and its time-outs."""

from __future__ import annotations

import enum
import ipaddress
import secrets
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from osmanthus.core.auditproofs import DEFAULT_MIN_WITNESSES
from osmanthus.core.errors import InvalidArgument
from osmanthus.core.logkeys import LogRoster, party_host
from osmanthus.core.peers import validate_name
from portal.oidc import is_loopback

#: a kiosk signs out after this long without a request: the next person in the hall must not
#: find the previous one's screen (design: kiosk 60 s)
KIOSK_IDLE_S: Final = 60.0
#: the online site's idle time-out (design: 15 min)
ONLINE_IDLE_S: Final = 15 * 60.0
#: bounds on a configured idle time-out: below 10 s nobody can read a page, above 8 h a
#: forgotten browser keeps a session for a whole day
MIN_IDLE_S: Final = 10.0
MAX_IDLE_S: Final = 8 * 3600.0
#: a simulator secret shorter than this could be guessed by anything on the machine
MIN_SIMULATOR_SECRET_CHARS: Final = 32
#: the Host header values a kiosk answers: its browser runs on the kiosk itself (an IPv6
#: literal is bracketed in a Host header, RFC 9110 §7.2 / RFC 3986 §3.2.2)
LOOPBACK_HOSTS: Final = ("127.0.0.1", "[::1]", "localhost")


class PortalMode(enum.Enum):
    """The two faces of the portal."""

    #: a self-service machine in the service hall: the card reader says who is there
    KIOSK = "kiosk"
    #: the online self-service site: the city's identity provider says who signed in
    ONLINE = "online"
    #: a department's officers deciding objections and credit repair (portal.department):
    #: the identity provider says who signed in, and its token names their department
    DEPARTMENT = "department"


@dataclass(frozen=True, kw_only=True)
class PortalSettings:
    """One portal process's settings (the device's credentials live in the backend)."""

    mode: PortalMode
    #: the requester name of this device (its certificate and token name it), for the audit log
    device_id: str
    #: where the portal's own audit log and its salt live (created owner-only)
    state_dir: Path
    #: idle time-out in seconds; None takes the mode's default
    idle_timeout_s: float | None = None
    #: True when the portal is served over TLS (directly or behind a TLS-terminating proxy):
    #: the session cookie is then `__Host-osm_session` with Secure
    secure_cookies: bool = False
    #: the portal's public base URL (e.g. "https://credit.suzhou.gov.cn"); the OIDC
    #: redirect_uri is this plus /auth/callback. Required online.
    public_url: str | None = None
    #: kiosk with a simulated reader only: the secret that lets a loopback caller place a card
    #: through POST /_simulator/card (the demo and the browser tests); None disables the route
    simulator_secret: str | None = field(default=None, repr=False)
    #: the Host header values the portal answers (others get 400, so a DNS-rebinding page or a
    #: forged Host cannot reach it); None: the loopback names at a kiosk, the public_url's host
    #: and the loopback names online
    allowed_hosts: tuple[str, ...] | None = None
    #: the pinned keys of the platform's logs and witnesses (`logs.toml`,
    #: osmanthus.core.logkeys.LogRoster) that "who asked about me" is verified with; None shows
    #: every entry as not verified, with a note saying why
    log_roster: LogRoster | None = field(default=None, repr=False)
    #: rostered witnesses' cosignatures each part's checkpoint must carry for its entries to
    #: be marked verified; 0 (the default) counts as 1. Entries proven to a checkpoint with
    #: fewer are shown, marked as signed by the department only (auditproofs.required_witnesses)
    min_witnesses: int = DEFAULT_MIN_WITNESSES

    def __post_init__(self) -> None:
        if not isinstance(self.mode, PortalMode):
            raise InvalidArgument(
                "must be PortalMode.KIOSK, PortalMode.ONLINE or PortalMode.DEPARTMENT",
                field="mode",
            )
        validate_name(self.device_id, field="device_id")
        if self.idle_timeout_s is not None and not (
            MIN_IDLE_S <= self.idle_timeout_s <= MAX_IDLE_S
        ):
            raise InvalidArgument(
                f"must be between {MIN_IDLE_S:g} and {MAX_IDLE_S:g} seconds",
                field="idle_timeout_s",
            )
        if self.simulator_secret is not None and (
            len(self.simulator_secret) < MIN_SIMULATOR_SECRET_CHARS
        ):
            raise InvalidArgument(
                f"must be at least {MIN_SIMULATOR_SECRET_CHARS} characters "
                "(use new_simulator_secret())",
                field="simulator_secret",
            )
        if self.simulator_secret is not None and self.mode is not PortalMode.KIOSK:
            raise InvalidArgument(
                "a card simulator exists in kiosk mode only", field="simulator_secret"
            )
        if self.mode is not PortalMode.KIOSK and self.public_url is None:
            raise InvalidArgument(
                f"the {self.mode.value} site needs its public base URL (the OIDC redirect_uri "
                "is built from it)",
                field="public_url",
            )
        if self.public_url is not None:
            self._check_public_url(self.public_url)
        if isinstance(self.min_witnesses, bool) or not isinstance(self.min_witnesses, int):
            raise InvalidArgument("must be a whole number", field="min_witnesses")
        if self.min_witnesses < 0:
            raise InvalidArgument("must be 0 or more", field="min_witnesses")
        if self.min_witnesses:
            # counted by party, as verify_part counts them: the coordinator's replicas are one
            known = (
                len({party_host(name) for name in self.log_roster.witnesses})
                if self.log_roster is not None
                else 0
            )
            if known < self.min_witnesses:
                raise InvalidArgument(
                    f"requires {self.min_witnesses} witnesses' cosignatures but the log roster "
                    f"lists witnesses of {known} part(ies): no entry could ever be verified",
                    field="min_witnesses",
                )
        if self.allowed_hosts is not None:
            if isinstance(self.allowed_hosts, str) or not self.allowed_hosts:
                raise InvalidArgument(
                    "must be a non-empty tuple of host names", field="allowed_hosts"
                )
            for host in self.allowed_hosts:
                if not isinstance(host, str) or not host or "*" in host or "/" in host:
                    raise InvalidArgument(
                        f"{host!r} is not a host name (no wildcards, ports or paths)",
                        field="allowed_hosts",
                    )

    def _check_public_url(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidArgument(f"{url!r} must be an absolute http(s) URL", field="public_url")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise InvalidArgument(
                f"{url!r} must be a base URL (no user, query or fragment)", field="public_url"
            )
        if parts.scheme == "http" and not is_loopback(parts.hostname):
            # a session cookie and the OIDC code would cross the network in the clear
            raise InvalidArgument(
                f"{url!r} is plain http to a host other than this machine; serve the portal "
                "over TLS (or behind a TLS-terminating proxy) and give its https URL",
                field="public_url",
            )
        if parts.scheme == "https" and not self.secure_cookies:
            # the browser reaches the site over TLS, so the session cookie must be
            # __Host-prefixed and Secure (a plain-http cookie could be planted or leaked)
            raise InvalidArgument(
                f"{url!r} is https, so secure_cookies must be True (the session cookie is "
                "then __Host-osm_session with Secure)",
                field="secure_cookies",
            )

    @property
    def hosts(self) -> tuple[str, ...]:
        """The Host header values answered (lower case, IPv6 literals in brackets)."""
        if self.allowed_hosts is not None:
            return tuple(_host_pattern(h) for h in self.allowed_hosts)
        if self.mode is PortalMode.KIOSK or self.public_url is None:
            return LOOPBACK_HOSTS
        public = urllib.parse.urlsplit(self.public_url).hostname or ""
        return (_host_pattern(public), *LOOPBACK_HOSTS)

    @property
    def idle_s(self) -> float:
        """The idle time-out in force."""
        if self.idle_timeout_s is not None:
            return self.idle_timeout_s
        return KIOSK_IDLE_S if self.mode is PortalMode.KIOSK else ONLINE_IDLE_S


def _host_pattern(host: str) -> str:
    """`host` as it appears in a Host header: lower case, an IPv6 address in brackets."""
    host = host.lower()
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host


def new_simulator_secret() -> str:
    """A fresh random secret for the card simulator's admin route (256 bits)."""
    return secrets.token_urlsafe(32)
