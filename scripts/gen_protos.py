"""Regenerate osmanthus/v1/*_pb2.py, *_pb2_grpc.py and .pyi stubs from protos/ (the only way to)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "protos"
OUT = ROOT  # generated modules land in the osmanthus.v1 package


def main() -> int:
    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    well_known = str(Path(grpc_tools.__file__).parent / "_proto")
    for stale in (OUT / "osmanthus" / "v1").glob("*_pb2*.py*"):
        stale.unlink()
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={OUT}",
            f"--pyi_out={OUT}",
            f"--grpc_python_out={OUT}",
            *protos,
        ]
    )
    if rc != 0:
        print("protoc failed", file=sys.stderr)
    return int(rc)


if __name__ == "__main__":
    raise SystemExit(main())
