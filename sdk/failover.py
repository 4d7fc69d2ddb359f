"""Several coordinator replicas behind one channel: gRPC's own load balancing over a static list.

A coordinator run as replicas on one PostgreSQL database (docs/deployment.md) is reachable at
several addresses. Given more than one, the client resolves them once, when the channel is
made, into one gRPC target of the `ipv4:` or `ipv6:` scheme (gRPC's naming document,
doc/naming.md: a static list of addresses) and lets the round_robin policy
(doc/load-balancing.md) spread calls over the replicas that are up: a replica that stops is
left out within one failed connection attempt and taken back when it answers again. A call
in flight on a replica that stops fails with UNAVAILABLE (the SDK's Unavailable); whether to
repeat it is the caller's decision, since a query may already have spent ε or a rate-limit
place. Calls that never left the client are moved to another replica by gRPC itself.

One address is used as given (a DNS name stays a DNS name), as before replicas existed.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence
from typing import Any, Final

from osmanthus.core.errors import InvalidArgument

#: gRPC's load-balancing policy over the replicas (doc/load-balancing.md)
LB_POLICY: Final = "round_robin"


def coordinator_target(addresses: str | Sequence[str]) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target for one coordinator address or several replicas' (a list, or one string
    with commas), and the channel options that balance over them."""
    given = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    parts = [a.strip() for a in given if isinstance(a, str) and a.strip()]
    if not parts or len(parts) != len(given):
        raise InvalidArgument(
            "give the coordinator's address as HOST:PORT, or several replicas' separated by "
            f"commas; got {str(addresses)[:80]!r}",
            field="target",
        )
    if len(parts) == 1:
        return parts[0], []
    resolved = [ip for part in parts for ip in _resolve(part)]
    families = {ipaddress.ip_address(host).version for host, _ in resolved}
    if len(families) > 1:
        raise InvalidArgument(
            f"the replicas {', '.join(parts)} resolve to IPv4 and IPv6 addresses; gRPC balances "
            "over one family in one channel: give addresses of one family",
            field="target",
        )
    if families == {4}:
        target = "ipv4:" + ",".join(f"{host}:{port}" for host, port in dict.fromkeys(resolved))
    else:
        target = "ipv6:" + ",".join(f"[{host}]:{port}" for host, port in dict.fromkeys(resolved))
    return target, [("grpc.lb_policy_name", LB_POLICY)]


def _resolve(address: str) -> list[tuple[str, int]]:
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgument(
            f"{address[:80]!r} is not HOST:PORT (a replica of the coordinator)", field="target"
        )
    try:
        infos = socket.getaddrinfo(host, int(port_text), type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise InvalidArgument(
            f"coordinator replica {address[:80]!r}: cannot resolve {host!r}: {exc.strerror}",
            field="target",
        ) from None
    return list(dict.fromkeys((str(info[4][0]), int(info[4][1])) for info in infos))
