"""The `autonomic` command: one entry point, a subcommand per service, twin, benchmark and demo.

Each subcommand lives beside the code it runs and registers itself through `add_parser(sub)` and `run(args) -> int`.
`main` finds the subcommand in argv first and imports only its module, so `autonomic picker` loads neither the
controller nor the twins nor the benchmarks (tests/unit/test_import_boundaries.py holds it to that). The other
subcommands appear in `--help` from the table below, with the same one-line help their modules give (checked by a
test), without being imported.

The product image installs only the services (Containerfile): there the twin, demo and benchmark subcommands say so
and exit 2 instead of failing with a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from common.logs import setup_logging


@dataclass(frozen=True)
class Subcommand:
    module: str  # has add_parser(subparsers) and run(args)
    help: str  # the module's own one-line help, shown in `autonomic --help` without importing it
    product: bool  # part of the shipped services (else: twins, demo, benchmarks of a source checkout)


SUBCOMMANDS: dict[str, Subcommand] = {
    "controller": Subcommand(
        "controller.cli", "run the PSI rebalancer (live-migrates KubeVirt VMs off pressured nodes)", True
    ),
    "picker": Subcommand("scorer.cli", "run the inference endpoint picker (Envoy ext_proc, GIE protocol)", True),
    "fleet": Subcommand("sim.fleet.cli", "run a fleet of vLLM-compatible twin servers", False),
    "cluster-sim": Subcommand("sim.cluster.cli", "run the Kubernetes + KubeVirt API twin", False),
    "demo": Subcommand("autonomic.demo", "run the demo on the embedded twins and print a summary", False),
    "chaos": Subcommand(
        "loadtests.chaos.cli",
        "run a chaos campaign against a service on the twins and judge it (report.md, results.json)",
        False,
    ),
    "bench": Subcommand(
        "autonomic.bench", "run a benchmark and write its report (report.md, plots, results.json)", False
    ),
    "soak": Subcommand(
        "loadtests.soak.cli",
        "run the picker and the controller under steady load for minutes and report resource growth",
        False,
    ),
}

# packages a source checkout has and the product image does not
_DEVELOPMENT_PACKAGES = {"sim", "loadtests", "harness", "matplotlib", "locust"}


class NotInstalled(Exception):
    """A subcommand whose code is not installed here (a twin or benchmark in the product image)."""


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("AUTONOMIC_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="default: $AUTONOMIC_LOG_LEVEL or info",
    )
    parser.add_argument("--log-format", default="json", choices=["json", "text"])


def _load(name: str) -> ModuleType:
    entry = SUBCOMMANDS[name]
    try:
        return importlib.import_module(entry.module)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        own = entry.module == missing or entry.module.startswith(missing + ".")
        if missing.split(".")[0] in _DEVELOPMENT_PACKAGES or (own and not entry.product):
            raise NotInstalled(
                f"autonomic {name} needs a development install (pip install -e '.[dev]' in a source checkout): "
                f"module {missing!r} is not installed here"
            ) from exc
        raise


def build_parser(*commands: str) -> argparse.ArgumentParser:
    """The full parser of `commands` (every subcommand when none is named); the others are listed, not loaded."""
    unknown = set(commands) - set(SUBCOMMANDS)
    if unknown:
        raise ValueError(f"no such subcommand: {sorted(unknown)}")
    return _parser(set(commands or SUBCOMMANDS))


def _parser(loaded: set[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autonomic",
        description="Autonomic rebalancing (PSI -> KubeVirt live migration) and inference routing "
        "(GIE ext_proc endpoint picker), with digital twins to run everything on one machine.",
    )
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, entry in SUBCOMMANDS.items():
        if name in loaded:
            _load(name).add_parser(sub)
        else:
            sub.add_parser(name, help=entry.help)
    return parser


def command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (after any global options), or None (e.g. `autonomic --help`)."""
    pre = argparse.ArgumentParser(add_help=False)
    _global_options(pre)
    pre.add_argument("command", nargs="?")
    try:
        known, _rest = pre.parse_known_args(argv)
    except SystemExit:  # a bad global option: the full parser reports it
        return None
    return known.command if known.command in SUBCOMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = command_of(argv)
    try:
        # only the named subcommand is imported; with none (`--help`, a typo) every one is listed and none loaded
        args = _parser({command} if command else set()).parse_args(argv)
        args.argv = argv  # as given: a command that starts copies of itself (`picker --workers N`) passes them on
        setup_logging(args.log_level, args.log_format)
        module = _load(args.command)
    except NotInstalled as exc:
        print(f"autonomic: {exc}", file=sys.stderr)
        return 2
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
