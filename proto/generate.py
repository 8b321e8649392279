"""Generates the Python stubs of the project's own gRPC API from the `.proto` files, with grpcio-tools.

Why it exists: the stubs are committed (so installing the package needs no protoc), and something must say
exactly how they were made, both for `make proto` and for the test that regenerates them into a temporary
directory and compares (tests/unit/test_proto_stubs.py), which proves the committed stubs match the `.proto`.

The include root is the repository, so `proto/autonomic/picker/v1/picker.proto` becomes the Python module
`proto.autonomic.picker.v1.picker_pb2` (and `_pb2_grpc`, plus a `.pyi` for type checkers) beside its source;
the protobuf package stays `autonomic.picker.v1`, which is what the wire and the service names use.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ("proto/autonomic/picker/v1/picker.proto",)
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def outputs(out: Path) -> list[Path]:
    """The files `generate(out)` writes."""
    return [out / (proto.removesuffix(".proto") + suffix) for proto in PROTOS for suffix in SUFFIXES]


def generate(out: Path = ROOT) -> list[Path]:
    """Run protoc (the one bundled with grpcio-tools) over every `.proto`; returns the files written."""
    from grpc_tools import protoc

    out.mkdir(parents=True, exist_ok=True)
    args = ["grpc_tools.protoc", f"-I{ROOT}", f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}"]
    status = protoc.main([*args, *(str(ROOT / p) for p in PROTOS)])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    return outputs(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the Python stubs of proto/ (grpcio-tools).")
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (default: the repository)")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out) if path.is_relative_to(args.out) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
