"""`osmanthus portal serve`: the subjects' portal, as a service hall's kiosk or the online site."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osmanthus.cli.env import read_environment
from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, catalogue_of, catalogue_options, command
from osmanthus.core.errors import ConfigError, InvalidArgument

if TYPE_CHECKING:
    from osmanthus.core.logkeys import LogRoster
    from portal.signin import OidcSettings

_log = logging.getLogger("osmanthus")

#: the kiosk's default idle time-out and the online site's, as the portal's settings define them
#: (repeated here so that building the parser imports no web framework)
_KIOSK_IDLE_S = 60
_ONLINE_IDLE_S = 15 * 60
#: the simulated card reader's secret, in the state directory unless --simulator-secret-file
SIMULATOR_SECRET_FILE = "card-simulator.secret"
#: the portal's own state (audit log and its salt) under the credentials directory by default
_DEFAULT_STATE = "state"

_DESCRIPTION = """\
Serve the subjects' portal (docs/portal.md): citizens and enterprises see their own score, their
records (those that count and those that no longer do, and why), who asked about them, their
consents (with a button to revoke one) and their list entries. It asks the coordinator as the
registered requester device whose files are in --credentials: cert.pem, key.pem, token.jwt,
paillier.key and sealing.key (all but cert.pem mode 0600) and ca.pem (or --ca). Its token must
have role 'kiosk' (--mode kiosk) or 'portal' (--mode online), purpose self_query only, and name
the sealing key in its seal_fp claim; the Paillier key is registered on first use.

--mode kiosk: a service hall's self-service machine. The card reader says who is there; the
kiosk answers its own screen (loopback) only and signs the person out when the card is taken
away or after --idle-timeout. The reader shipped is a simulator: a loopback caller places a card
with the secret in --simulator-secret-file (made on first start, mode 0600):

  curl -X POST -H "x-simulator-secret: $(cat STATE_DIR/card-simulator.secret)" \\
       -d action=place -d resident_id=320508198810061286 http://127.0.0.1:8080/_simulator/card

--mode online: the self-service site. People sign in at the city's OpenID Connect provider
(--issuer, --client-id); register --public-url/auth/callback there as the redirect URI. Serve
it behind a TLS-terminating proxy and give the https --public-url: cookies are then Secure.

--mode department: a department's desk for objections and credit repair (docs/cases.md). Its
officers sign in at the OpenID Connect provider (--issuer, --client-id, as online), and the ID
token must carry the claim osmanthus_department equal to --department (anyone else is refused,
and the refusal audited). It talks to the department's own node (--node) with the department's
operator certificate ('osmanthus certs issue --role operator --name DEPARTMENT': --certs-dir, or
--ca, --cert and --key), exactly as 'osmanthus lists' and 'osmanthus disputes' do; it needs no
--coordinator and no --credentials. --state-dir is required.

The portal prints its URL once it serves, keeps what it learns about a subject in memory for
the session only, writes its own audit log (salted subject hashes) to STATE_DIR and stops
cleanly on SIGTERM or Ctrl-C.

examples:
  osmanthus portal serve --mode kiosk --coordinator coordinator:50050 \\
      --credentials /etc/osmanthus/kiosk-hall-1 --listen 127.0.0.1:8080
  osmanthus portal serve --mode online --coordinator coordinator:50050 \\
      --credentials /etc/osmanthus/portal --listen 127.0.0.1:8081 \\
      --public-url https://credit.suzhou.example.gov.cn \\
      --issuer https://idp.suzhou.example.gov.cn/realms/citizens --client-id osmanthus-portal
  osmanthus portal serve --mode department --department hrss --node 10.0.0.5:50051 \\
      --certs-dir /etc/osmanthus/certs --state-dir /var/lib/osmanthus/hrss-desk \\
      --listen 127.0.0.1:8082 --public-url https://hrss-desk.suzhou.example.gov.cn \\
      --issuer https://idp.suzhou.example.gov.cn/realms/staff --client-id osmanthus-desk
"""


def register(subcommands: Subcommands) -> None:
    """Add `portal serve`."""
    portal = command(
        subcommands,
        "portal",
        "serve the subjects' portal: kiosk or online self-service",
        "The subjects' portal: where citizens and enterprises see their own credit.",
    )
    actions: Subcommands = portal.add_subparsers(
        dest="portal_command", required=True, metavar="ACTION"
    )
    p = command(
        actions,
        "serve",
        "serve the kiosk or the online self-service site over HTTP",
        _DESCRIPTION,
        _cmd_portal_serve,
        parents=[catalogue_options()],
        extra="portal",
    )
    p.add_argument(
        "--mode",
        required=True,
        choices=["kiosk", "online", "department"],
        help="which face of the portal",
    )
    p.add_argument(
        "--coordinator", help="the coordinator's host:port (kiosk and online; required there)"
    )
    p.add_argument(
        "--credentials",
        type=Path,
        metavar="DIR",
        help="the device's directory: cert.pem, key.pem, token.jwt, paillier.key, sealing.key "
        "and ca.pem (kiosk and online; required there)",
    )
    p.add_argument("--ca", type=Path, help="platform CA certificate (default: DIR/ca.pem)")
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        help="host:port to serve HTTP on (port 0 = any free port; the URL is printed)",
    )
    p.add_argument(
        "--state-dir",
        type=Path,
        help="the portal's audit log and its salt (default: DIR/state; created owner-only)",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        metavar="SECONDS",
        help=f"sign out after this long without a request, 10 to 28800 (default: "
        f"{_KIOSK_IDLE_S} s for the kiosk, {_ONLINE_IDLE_S // 60} min online)",
    )
    p.add_argument(
        "--public-url",
        help="the URL people reach the portal at, e.g. https://credit.example.gov.cn (default: "
        "the URL it serves on); an https URL makes the session cookies Secure",
    )
    p.add_argument("--ready-file", type=Path, help="write the bound port here once serving")
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="serve Prometheus metrics (requests by route and status) on "
        "http://HOST:PORT/metrics (off by default; bind a loopback or monitoring-only address)",
    )
    logs = p.add_argument_group(
        "who asked about me (kiosk and online)",
        "each entry's inclusion proof is checked against the pinned keys of the log that holds "
        "it before the entry is shown as verified (docs/portal.md)",
    )
    logs.add_argument(
        "--logs",
        type=Path,
        metavar="PATH",
        help="the roster of log and witness keys, logs.toml (default: CERTS_DIR/logs.toml with "
        "--certs-dir; without a roster every entry is shown as not verified)",
    )
    logs.add_argument(
        "--min-witnesses",
        type=int,
        default=0,
        metavar="N",
        help="witness cosignatures a log's checkpoint must carry for its entries to count as "
        "verified (default 0, until every log's checkpoints are cosigned)",
    )
    kiosk = p.add_argument_group("kiosk (--mode kiosk)")
    kiosk.add_argument(
        "--card-reader",
        choices=["simulated"],
        default="simulated",
        help="the identity-card reader (only the simulator ships)",
    )
    kiosk.add_argument(
        "--simulator-secret-file",
        type=Path,
        help="the simulated reader's secret: read if the file exists, else made (mode 0600) "
        f"(default: STATE_DIR/{SIMULATOR_SECRET_FILE})",
    )
    desk = p.add_argument_group(
        "department desk (--mode department)",
        "the department's operator certificate: --certs-dir, or --ca with --cert and --key",
    )
    desk.add_argument("--department", help="the department's id, e.g. hrss")
    desk.add_argument("--node", metavar="HOST:PORT", help="the department's node")
    desk.add_argument("--certs-dir", type=Path, help="platform certificate directory")
    desk.add_argument("--cert", type=Path, help="the operator certificate (PEM)")
    desk.add_argument("--key", type=Path, help="the operator certificate's private key (PEM)")
    desk.add_argument(
        "--operator",
        help="name of the operator certificate in --certs-dir (default: the department id)",
    )
    online = p.add_argument_group("online sign-in (--mode online and --mode department)")
    online.add_argument("--issuer", help="the OpenID Connect provider's issuer URL (https)")
    online.add_argument("--client-id", help="the portal's client id at the provider")
    online.add_argument(
        "--allow-loopback-http",
        action="store_true",
        help="accept a plain-http --issuer on 127.0.0.1, ::1 or localhost (the demo's local "
        "provider); any other http issuer is refused",
    )
    read_environment(p)


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets) as (host, port); InvalidArgument naming --listen."""
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidArgument(
            f"{text!r} is not host:port with a port from 0 to 65535, e.g. 127.0.0.1:8080",
            field="listen",
        )
    return host, int(port_text)


def url_of(host: str, port: int) -> str:
    """The http URL of a bound address (IPv6 in brackets; 0.0.0.0 and :: as the loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}"


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one); ConfigError when it cannot."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve {host!r}: {exc.strerror}", field="listen") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror}", field="listen"
        ) from None
    return sock


def simulator_secret(path: Path) -> str:
    """The card simulator's secret in `path`, made (mode 0600) when the file does not exist."""
    from osmanthus.core.files import write_atomically
    from portal.settings import MIN_SIMULATOR_SECRET_CHARS, new_simulator_secret

    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"{path} is readable by others (mode {mode:04o}); run 'chmod 600 {path}'",
                field="simulator_secret_file",
            )
        secret = path.read_text(encoding="utf-8").strip()
        if len(secret) < MIN_SIMULATOR_SECRET_CHARS:
            raise ConfigError(
                f"{path} holds a secret shorter than {MIN_SIMULATOR_SECRET_CHARS} characters",
                field="simulator_secret_file",
            )
        return secret
    secret = new_simulator_secret()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, f"{secret}\n".encode(), mode=0o600, field="simulator_secret_file")
    return secret


def log_roster(args: argparse.Namespace) -> LogRoster | None:
    """The roster of log keys --logs names (or CERTS_DIR/logs.toml with --certs-dir); None,
    with a warning, when neither is given: "who asked" is then shown unverified."""
    from osmanthus.core.logkeys import ROSTER_FILE, LogRoster

    path: Path | None = args.logs
    if path is None and args.certs_dir is not None:
        path = args.certs_dir / ROSTER_FILE
    if path is None:
        _log.warning(
            "no log roster (--logs): 'who asked about me' is shown without verifying any "
            "entry's inclusion proof"
        )
        return None
    return LogRoster.load(path)


def _identity(args: argparse.Namespace, *, public_url: str) -> OidcSettings:
    from portal.oidc import IdTokenVerifier, ProviderKeys
    from portal.signin import CALLBACK_PATH, OidcSettings

    for option in ("issuer", "client_id"):
        if not getattr(args, option):
            raise InvalidArgument(
                f"--mode {args.mode} needs --{option.replace('_', '-')} (the OpenID Connect "
                "provider)",
                field=option,
            )
    keys = ProviderKeys(issuer=args.issuer, allow_loopback_http=args.allow_loopback_http)
    verifier = IdTokenVerifier(issuer=args.issuer, audience=args.client_id, keys=keys)
    return OidcSettings(
        issuer=args.issuer,
        client_id=args.client_id,
        redirect_uri=public_url.rstrip("/") + CALLBACK_PATH,
        verifier=verifier,
        allow_loopback_http=args.allow_loopback_http,
    )


def _cmd_portal_serve(args: argparse.Namespace) -> int:
    from osmanthus.core.files import write_atomically
    from osmanthus.core.types import Role
    from portal.app import create_app
    from portal.backend import DeviceCredentials
    from portal.cardreader import SimulatedCardReader
    from portal.settings import PortalMode, PortalSettings

    mode = PortalMode(args.mode)
    if mode is PortalMode.DEPARTMENT:
        return _serve_department(args)
    for option in ("coordinator", "credentials"):
        if not getattr(args, option):
            raise InvalidArgument(f"--mode {mode.value} needs --{option}", field=option)
    if args.department or args.node:
        raise InvalidArgument(
            f"--department and --node are for --mode department, not {mode.value}",
            field="department",
        )
    if mode is PortalMode.KIOSK and (args.issuer or args.client_id):
        raise InvalidArgument("a kiosk signs people in by card: drop --issuer and --client-id")
    host, port = parse_listen(args.listen)
    credentials = DeviceCredentials.load(args.credentials, ca=args.ca)
    wanted = Role.KIOSK if mode is PortalMode.KIOSK else Role.PORTAL
    if credentials.role is not wanted:
        raise ConfigError(
            f"the token in {args.credentials} has role {credentials.role.value!r}; --mode "
            f"{mode.value} needs a token with role {wanted.value!r}",
            field="token",
        )
    state_dir: Path = args.state_dir or args.credentials / _DEFAULT_STATE
    catalogue = catalogue_of(args)
    roster = log_roster(args)
    sock = bind(host, port)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        url = url_of(bound_host, bound_port)
        public_url = args.public_url or url
        reader = SimulatedCardReader() if mode is PortalMode.KIOSK else None
        secret = None
        if reader is not None:
            secret = simulator_secret(
                args.simulator_secret_file or state_dir / SIMULATOR_SECRET_FILE
            )
        settings = PortalSettings(
            mode=mode,
            device_id=credentials.device_id,
            state_dir=state_dir,
            idle_timeout_s=args.idle_timeout,
            secure_cookies=public_url.startswith("https://"),
            public_url=public_url,
            simulator_secret=secret,
            log_roster=roster,
            min_witnesses=args.min_witnesses,
        )
        identity = _identity(args, public_url=public_url) if mode is PortalMode.ONLINE else None
        backend = credentials.backend(target=args.coordinator, catalogue=catalogue)
        try:
            app = create_app(
                settings=settings, backend=backend, card_reader=reader, identity=identity
            )

            def started() -> None:
                print(f"portal ({mode.value}, device {credentials.device_id}) serving at {url}/",
                      flush=True)  # fmt: skip
                if args.ready_file is not None:
                    # written atomically so a watcher never reads a half-written port
                    write_atomically(
                        args.ready_file, f"{bound_port}\n".encode(), field="ready_file"
                    )

            serve(app, sock, on_started=started, metrics_listen=args.metrics_listen)
        finally:
            backend.close()
    finally:
        sock.close()
    return ExitCode.SUCCESS


def _serve_department(args: argparse.Namespace) -> int:
    """--mode department: the department desk, on the department's node's case office."""
    from osmanthus.cli.options import tls_files
    from osmanthus.core.files import write_atomically
    from osmanthus.core.peers import validate_name
    from osmanthus.core.types import DepartmentId
    from portal.department import create_department_app
    from portal.settings import PortalMode, PortalSettings
    from sdk.caseoffice import CaseOffice

    for option in ("department", "node", "state_dir"):
        if not getattr(args, option):
            raise InvalidArgument(
                f"--mode department needs --{option.replace('_', '-')}", field=option
            )
    if args.coordinator or args.credentials:
        raise InvalidArgument(
            "the department desk talks to the department's node, not the coordinator: drop "
            "--coordinator and --credentials",
            field="coordinator",
        )
    department = validate_name(args.department, field="department")
    catalogue = catalogue_of(args)
    catalogue.department(department)  # an unknown department is refused here, by name
    tls = tls_files(args, role="operator", name=args.operator or department)
    host, port = parse_listen(args.listen)
    sock = bind(host, port)
    try:
        bound_host, bound_port = sock.getsockname()[:2]
        url = url_of(bound_host, bound_port)
        public_url = args.public_url or url
        settings = PortalSettings(
            mode=PortalMode.DEPARTMENT,
            device_id=f"{department}-desk",
            state_dir=args.state_dir,
            idle_timeout_s=args.idle_timeout,
            secure_cookies=public_url.startswith("https://"),
            public_url=public_url,
        )
        identity = _identity(args, public_url=public_url)
        with CaseOffice(args.node, tls=tls, department=DepartmentId(department)) as office:
            app = create_department_app(
                settings=settings,
                office=office,
                department=department,
                identity=identity,
                catalogue=catalogue,
            )

            def started() -> None:
                print(f"portal (department desk of {department}) serving at {url}/", flush=True)
                if args.ready_file is not None:
                    write_atomically(
                        args.ready_file, f"{bound_port}\n".encode(), field="ready_file"
                    )

            serve(app, sock, on_started=started, metrics_listen=args.metrics_listen)
    finally:
        sock.close()
    return ExitCode.SUCCESS


def serve(
    app: Any,
    sock: socket.socket,
    *,
    on_started: Callable[[], None],
    metrics_listen: str | None = None,
) -> None:
    """Serve `app` with uvicorn on the listening `sock` until SIGTERM or SIGINT (in a thread
    other than the main one: until the server's `should_exit` is set). `metrics_listen`
    (HOST:PORT): count requests by route template and status, and serve Prometheus metrics
    there (osmanthus.core.metrics)."""
    import uvicorn

    endpoint = None
    if metrics_listen is not None:
        from osmanthus.core import metrics

        endpoint = metrics.serve(metrics_listen)
        app = metrics.HttpMetricsMiddleware(app)

    class Server(uvicorn.Server):
        """Reports when it serves, and ends on a signal without raising it again (uvicorn
        raises a signal it caught again once it has shut down, so that the default action
        follows: for SIGTERM, an exit by signal instead of a clean exit code 0)."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                on_started()

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return

            def stop(signum: int, _frame: object) -> None:
                _log.info("signal %d received: shutting down", signum)
                if self.should_exit and signum == signal.SIGINT:
                    self.force_exit = True  # a second Ctrl-C: no waiting for open connections
                self.should_exit = True

            previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for signum, handler in previous.items():
                    signal.signal(signum, handler)

    config = uvicorn.Config(
        app,
        # the portal's own audit log says who signed in and what was refused; an access log
        # would add only paths, and uvicorn's logging setup would replace the command's
        access_log=False,
        log_config=None,
        server_header=False,
        lifespan="on",
    )
    try:
        Server(config).run(sockets=[sock])
    finally:
        if endpoint is not None:
            endpoint.close()
