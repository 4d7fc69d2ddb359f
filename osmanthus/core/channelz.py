"""The certificates the servers of a client channel presented, read from gRPC's channelz.

gRPC Python verifies a server's certificate chain and name during the handshake but neither
takes a CRL (ssl_channel_credentials has no such option) nor shows a client the certificate it
accepted. gRPC's channelz (gRFC A14) does: for every live connection of a channel it records the
certificate the server presented (`security.tls.remoteCertificate`). A client that must refuse a
revoked server (the coordinator calling department nodes) reads those certificates before and
after each call: they are the certificates of the very connections the calls travel on, not of a
second connection that a network attacker could answer differently.

channelz is on by default in gRPC core (the channel argument grpc.enable_channelz); channels that
need this set it explicitly (CHANNEL_OPTIONS). The functions used are the ones gRPC's own
channelz service (grpcio-channelz) serves from: `grpc._cython.cygrpc.channelz_*`, which return
channelz's JSON.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
from cryptography import x509

from osmanthus.core.errors import ConfigError

try:  # a gRPC without channelz cannot check a server's certificate after the handshake
    from grpc._cython import cygrpc as _cygrpc
except ImportError:  # pragma: no cover - every grpcio wheel has it
    _cygrpc = None

#: the channel options a channel read with ChannelCertificates needs
CHANNEL_OPTIONS: Final = (
    ("grpc.enable_channelz", 1),
    ("grpc.max_channel_trace_event_memory_per_node", 0),
)
#: connections remembered per channel (their certificate's serial); a channel has one or two
_MAX_REMEMBERED: Final = 64


def _channelz(name: str) -> Callable[..., str]:
    function = getattr(_cygrpc, f"channelz_{name}", None) if _cygrpc is not None else None
    if function is None:
        raise ConfigError(
            "this gRPC has no channelz, so a server's certificate cannot be checked against the "
            "CRL after the handshake: install the grpcio version pyproject.toml names",
            field="crl",
        )
    return function  # type: ignore[no-any-return]


def _json(name: str, *args: int) -> dict[str, Any]:
    try:
        value = json.loads(_channelz(name)(*args))
    except ValueError:  # channelz raises ValueError for an entity that no longer exists
        return {}
    return value if isinstance(value, dict) else {}


def _top_channels() -> Iterator[tuple[int, str]]:
    """(channelz id, target) of every top-level channel of this process."""
    start = 0
    while True:
        page = _json("get_top_channels", start)
        channels = page.get("channel", [])
        for channel in channels:
            channel_id = int(channel.get("ref", {}).get("channelId", 0))
            start = max(start, channel_id + 1)
            yield channel_id, str(channel.get("data", {}).get("target", ""))
        if page.get("end", True) or not channels:
            return


def _names_target(channelz_target: str, target: str) -> bool:
    # channelz shows the target as resolved by its resolver: "dns:///host:port" for "host:port"
    return channelz_target == target or channelz_target.split(":///", 1)[-1] == target


def _certificate(encoded: str) -> x509.Certificate | None:
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        if raw.lstrip().startswith(b"-----"):
            return x509.load_pem_x509_certificate(raw)
        return x509.load_der_x509_certificate(raw)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Connection:
    """One live connection of a channel as channelz shows it."""

    #: the serial of the certificate its server presented; None if channelz shows none
    serial: int | None
    #: the streams (one per call) started on it since it was made
    streams_started: int


class ChannelCertificates:
    """The serials of the certificates that a channel's live connections' servers presented."""

    def __init__(self, channel_ids: Sequence[int], *, target: str) -> None:
        self._ids = tuple(channel_ids)
        self.target = target
        self._lock = threading.Lock()
        # channelz socket id -> serial of the certificate its server presented (None: unreadable)
        self._serials: dict[int, int | None] = {}
        self._subchannels: list[int] = []

    @classmethod
    def of_new_channel(
        cls, make: Callable[[], grpc.Channel], *, target: str
    ) -> tuple[grpc.Channel, ChannelCertificates]:
        """Make a channel to `target` with `make` and find it in channelz.

        Channels made at the same moment by other threads to the same target are read too: they
        reach the same servers, so what they show is as true of this one.
        """
        before = max((channel_id for channel_id, _ in _top_channels()), default=0)
        channel = make()
        ids = [
            channel_id
            for channel_id, seen in _top_channels()
            if channel_id > before and _names_target(seen, target)
        ]
        if not ids:
            channel.close()
            raise ConfigError(
                f"the channel to {target} is not in gRPC's channelz, so the certificate of the "
                "server it reaches cannot be checked against the CRL",
                field="crl",
            )
        return channel, cls(ids, target=target)

    def socket_ids(self) -> list[int]:
        """The channelz ids of the channel's live connections."""
        with self._lock:
            subchannels = self._subchannels
        if subchannels:
            # the subchannels rarely change: read them alone, and the channel again only when
            # one is gone or none is connected (a new subchannel may have replaced them)
            sockets, complete = self._sockets_of(subchannels)
            if complete and sockets:
                return sockets
        sockets = []
        subchannels = []
        for channel_id in self._ids:
            channel = _json("get_channel", channel_id).get("channel", {})
            sockets += [int(ref["socketId"]) for ref in channel.get("socketRef", [])]
            subchannels += [int(ref["subchannelId"]) for ref in channel.get("subchannelRef", [])]
        with self._lock:
            self._subchannels = subchannels
        return sockets + self._sockets_of(subchannels)[0]

    @staticmethod
    def _sockets_of(subchannels: Sequence[int]) -> tuple[list[int], bool]:
        """The sockets of `subchannels`, and whether every one of them still exists."""
        sockets: list[int] = []
        complete = True
        for subchannel_id in subchannels:
            subchannel = _json("get_subchannel", subchannel_id).get("subchannel")
            if subchannel is None:
                complete = False
                continue
            sockets += [int(s["socketId"]) for s in subchannel.get("socketRef", [])]
        return sockets, complete

    def connections(self) -> dict[int, Connection]:
        """Each live connection of the channel by its channelz socket id: the serial of its
        server's certificate and the streams (calls) started on it so far; empty when the channel
        is not connected."""
        sockets = self.socket_ids()
        with self._lock:
            known = dict(self._serials)
        found: dict[int, Connection] = {}
        for socket_id in sockets:
            socket = _json("get_socket", socket_id).get("socket")
            if socket is None:
                continue  # closed since the channel was read
            started = _count(socket.get("data", {}).get("streamsStarted"))
            if socket_id in known:
                found[socket_id] = Connection(serial=known[socket_id], streams_started=started)
                continue
            encoded = socket.get("security", {}).get("tls", {}).get("remoteCertificate", "")
            certificate = _certificate(encoded) if encoded else None
            serial = certificate.serial_number if certificate is not None else None
            found[socket_id] = Connection(serial=serial, streams_started=started)
        with self._lock:
            # only the live ones: a socket id is never reused, a closed one never comes back
            self._serials = {
                socket_id: c.serial for socket_id, c in list(found.items())[-_MAX_REMEMBERED:]
            }
        return found

    def serials(self) -> list[int | None]:
        """The serial of each live connection's server certificate (None where channelz shows
        none); empty when the channel is not connected."""
        return [c.serial for c in self.connections().values()]


def _count(value: object) -> int:
    # channelz's JSON writes 64-bit counters as strings and leaves out the ones at zero
    try:
        return int(str(value)) if value is not None else 0
    except ValueError:
        return 0
