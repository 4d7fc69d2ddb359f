"""`osmanthus health`: the standard gRPC health check of a node, coordinator or receiver."""

from __future__ import annotations

import argparse

from osmanthus.cli.exit_codes import ExitCode
from osmanthus.cli.options import Subcommands, command, tls_files, tls_options


def register(subcommands: Subcommands) -> None:
    """Add `health`."""
    p = command(
        subcommands,
        "health",
        "probe a node or coordinator with the standard gRPC health check",
        "Ask a server for its health over mutual TLS with the operator certificate. Exit 0 when "
        "SERVING, 5 otherwise. Used by docker-compose health checks.",
        _cmd_health,
        parents=[tls_options(role_hint="operator")],
        # grpcio-health-checking comes with each server's extra; a node's is the usual one
        extra="node",
    )
    p.add_argument("--target", required=True, help="host:port")
    p.add_argument(
        "--server-name", required=True, help="e.g. coordinator.osmanthus or psb.node.osmanthus"
    )
    p.add_argument("--service", default="", help="service name ('' = the whole server)")
    p.add_argument(
        "--operator", default="operator", help="operator certificate name in --certs-dir"
    )
    p.add_argument("--timeout", type=float, default=3.0, help="seconds")


def _cmd_health(args: argparse.Namespace) -> int:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from osmanthus.core.errors import Unavailable
    from osmanthus.core.grpc_errors import error_from_rpc
    from osmanthus.core.tls import secure_channel

    tls = tls_files(args, role="operator", name=args.operator)
    with secure_channel(args.target, tls, server_name=args.server_name) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            raise Unavailable(f"{args.target}: {error_from_rpc(exc)}") from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(f"{args.target}: {status}")
    if reply.status == health_pb2.HealthCheckResponse.SERVING:
        return ExitCode.SUCCESS
    return ExitCode.UNAVAILABLE
