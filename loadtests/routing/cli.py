"""Routing benchmark: the same trace through every router, each in front of its own fresh fleet twin.

Why it exists: users choose a router on evidence (../shared/docs/benchmarks.md, section 1). One command replays a
Mooncake trace in time order through Envoy's own policies (round-robin, random, least-queue = Envoy's LEAST_REQUEST:
the less busy of two random servers, by Envoy's own in-flight count), our picker with each shipped profile (through
a real Envoy, ext_proc), the field's reference endpoint picker behind the same Envoy (epp-default: the Gateway API
Inference Extension EPP v1.5.0, which finds the servers as Pods of an InferencePool in the cluster twin,
loadtests.routing.epp), and the real peers (sglang-router cache_aware, vllm-router cache_aware and kv_aware, from
their own venvs; every peer skipped with the reason when not installed), and reports the hit ratio against two
bounds computed from the trace (the oracle and the pooled-capacity bound, loadtests.routing.bounds), TTFT and e2e in
model time, client TTFT, the router's own overhead, throughput, failures and load imbalance, all from the same run.

Load: `--rate-scale R` divides the trace's inter-arrival times (R times the request rate, same requests) and
`--time-scale X` compresses the result for the twins and the client alike; `--duration S` replays the first S model
seconds after rate scaling (the first S x R trace seconds, about S / X wall seconds per router plus the drain).

    autonomic bench routing --trace ../shared/data/traces/mooncake_conversation_first30min.jsonl \
        --servers 8 --time-scale 1 --rate-scale 2.5 --duration 120 --out out/bench-routing

Output in --out: report.md, ttft_cdf.png, results.json (the schema of issue 7) and details.json (every figure of
every router, skipped routers with their reasons, the arguments). This module is the command (light to import);
loadtests.routing.benchmark does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.entry import module_main
from loadtests.routing.epp import EPP_ARMS
from loadtests.routing.peers import EXTRA_PEERS, PEERS
from loadtests.routing.replicas import REPLICA_ARMS, profile_name

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = REPO.parent / "shared/data/traces/mooncake_conversation_first30min.jsonl"
ENVOY_POLICIES = {"round-robin": "ROUND_ROBIN", "random": "RANDOM", "least-queue": "LEAST_REQUEST"}
PROFILES = REPO / "scorer"  # the shipped picker profiles: scorer/NAME-config.yaml
OPTIONS = ("trace", "servers", "time_scale", "rate_scale", "duration", "routers", "out")  # echoed in the report


def shipped_profiles() -> dict[str, Path]:
    """Picker profiles shipped in scorer/ (`NAME-config.yaml`), by name."""
    return {path.stem.removesuffix("-config"): path for path in sorted(PROFILES.glob("*-config.yaml"))}


# on request only (not in 'all'): the shipped default profile with the whole response through the picker
# (EnvoyOptions.observe_response_body), as the local config did before the response observer and as gateways that
# cannot add an observability-mode filter run it: the cost of relaying every response chunk, same run; and peer arms
# kept for reference (smg 1.13.0 with its defaults)
RESPONSE_BODY_SUFFIX = "-response-body"
EXTRA_ROUTERS = ("picker-default" + RESPONSE_BODY_SUFFIX, *REPLICA_ARMS, *EXTRA_PEERS)


def all_routers() -> list[str]:
    return [*ENVOY_POLICIES, *(f"picker-{p}" for p in shipped_profiles()), *EPP_ARMS, *PEERS]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL trace")
    p.add_argument("--servers", type=int, default=8, help="fleet twins per router (default 8)")
    p.add_argument("--time-scale", type=float, default=2.0, help="model seconds per wall second (default 2)")
    p.add_argument("--rate-scale", type=float, default=1.0, help="request-rate multiplier (default 1)")
    p.add_argument("--duration", type=float, default=120.0, help="model seconds replayed, after rate scaling")
    p.add_argument(
        "--routers",
        default="all",
        help=f"comma-separated, or 'all': {','.join(all_routers())} (and by name: {','.join(EXTRA_ROUTERS)})",
    )
    p.add_argument("--out", type=Path, default=Path("out/bench-routing"), help="output directory")


def validate(args: argparse.Namespace) -> list[str]:
    """The routers to run; raises ValueError naming the bad option."""
    from scorer.config import ConfigError, load_config

    if args.servers < 1:
        raise ValueError(f"--servers must be >= 1, got {args.servers}")
    for opt in ("time_scale", "rate_scale", "duration"):
        if not getattr(args, opt) > 0:
            raise ValueError(f"--{opt.replace('_', '-')} must be > 0, got {getattr(args, opt)}")
    if not args.trace.is_file():
        raise ValueError(f"--trace: {args.trace} is not a file")
    known = all_routers()
    routers = known if args.routers == "all" else [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = [r for r in routers if r not in known and r not in EXTRA_ROUTERS]
    if unknown or not routers:
        raise ValueError(f"--routers: unknown {unknown}; choose from {','.join([*known, *EXTRA_ROUTERS])}")
    for name in routers:
        if name.startswith("picker-"):
            try:
                load_config(shipped_profiles()[profile_name(name, RESPONSE_BODY_SUFFIX)])
            except (ConfigError, KeyError) as exc:
                raise ValueError(f"--routers: {name}: {exc}") from exc
    return list(dict.fromkeys(routers))


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every router served every request, 1 when some failed, 2 on bad input.

    `argv` (autonomic.bench's interface) is not needed: the report spells out every option from `args`.
    """
    from loadtests.routing.benchmark import bench
    from sim.fleet.trace import TraceFormatError

    try:
        routers = validate(args)
        results = asyncio.run(bench(args, routers))
    except (ValueError, TraceFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if any(r["requests_failed"] for r in results["routers"].values()) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("python -m loadtests.routing.cli", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
