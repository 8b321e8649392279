"""The `autonomic` command: one entry point, a subcommand per service, twin, benchmark and demo.

Each subcommand lives beside the code it runs and registers itself here through `add_parser(sub)` and
`run(args) -> int`, so importing the CLI never imports a service it does not run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from autonomic.logs import setup_logging

# subcommand -> module with add_parser(subparsers) and run(args)
SUBCOMMANDS = {
    "fleet": "sim.fleet.cli",
    "cluster-sim": "sim.cluster.cli",
    "controller": "controller.cli",
    "picker": "scorer.cli",
    "demo": "autonomic.demo",
    "bench": "autonomic.bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autonomic",
        description="Autonomic rebalancing (PSI -> KubeVirt live migration) and inference routing "
        "(GIE ext_proc endpoint picker), with digital twins to run everything on one machine.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("AUTONOMIC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="default: $AUTONOMIC_LOG_LEVEL or info",
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    module = importlib.import_module(SUBCOMMANDS[args.command])
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
