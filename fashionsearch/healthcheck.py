"""Probe a service's standard gRPC health endpoint; exit 0 when it is SERVING.

Container health checks and the local launcher use it, so images need no curl or grpc_health_probe binary:

    python -m fashionsearch.healthcheck localhost:50051 [--timeout-s 2] [--tls [--tls-ca ca.pem]]
"""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(
    address: str, timeout_s: float = 2.0, service: str = "", tls: bool = False, tls_ca: bytes | None = None
) -> bool:
    """True when the server at `address` answers SERVING within `timeout_s`.

    With `tls`, the channel is encrypted and the server certificate checked against `tls_ca` (PEM), or the
    system's roots when that is None.
    """
    channel = (
        grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=tls_ca))
        if tls or tls_ca is not None
        else grpc.insecure_channel(address)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when a gRPC server reports SERVING.")
    parser.add_argument("address", help="host:port")
    parser.add_argument("--timeout-s", type=float, default=2.0)
    parser.add_argument("--service", default="", help="service name to check (default: the whole server)")
    parser.add_argument("--tls", action="store_true", help="connect with TLS (the gateway with certificates)")
    parser.add_argument("--tls-ca", type=argparse.FileType("rb"), help="PEM file of the CA that signed the server")
    args = parser.parse_args(argv)
    tls_ca = args.tls_ca.read() if args.tls_ca else None
    serving = is_serving(args.address, args.timeout_s, args.service, tls=args.tls, tls_ca=tls_ca)
    print(f"{args.address}: {'SERVING' if serving else 'NOT SERVING'}")
    return 0 if serving else 1


if __name__ == "__main__":
    sys.exit(main())
