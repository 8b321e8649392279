"""Picker benchmark: what the endpoint picker costs, as ratios to baselines measured in the same run.

Why it exists: the picker sits on every request (../shared/docs/benchmarks.md, section 2). One command measures its
three costs and writes them like the routing benchmark does (report.md, results.json, a CDF plot in --out):

1. scheduling, in process: `Director.pick()` p50/p99 with the shipped default profile against a `random-picker`
   profile on the same endpoints and prompts (loadtests.picker.schedule_latency), per pool size and prompt length;
2. the hop through Envoy: the same small completions, open loop at each stated rate, through Envoy's own round
   robin (baseline), the ext_proc shell with a round-robin backend (the protocol's cost) and the real
   `autonomic picker` process (loadtests.picker.envoy_hop); added p50/p99 latency over the baseline;
3. scraping: the picker's MetricsScraper feeding a Director, against N cheap metrics endpoints serving a real
   twin's exposition (loadtests.picker.scrape_cost, loadtests.picker.metrics_stub), at the stated interval: CPU per
   scrape and cores used, with a small pool measured alongside as the baseline;
4. long prompts (with `--body-sizes`): the hop of 2 with bodies of each size (loadtests.picker.long_prompts),
   Envoy round robin against the real picker, open loop at `--body-rates` and closed loop at `--body-concurrency`
   for the `--closed-sizes`: added p50/p99 and the picker's CPU seconds per 1,000 decisions (net of its idle use).

    autonomic bench picker --out out/bench-picker
    autonomic bench picker --body-sizes 4k,94k,256k,512k --body-rates 20,20,20,5 --out out/bench-picker

This module is the command (light to import); loadtests.picker.benchmark does the work.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from loadtests.entry import module_main
from loadtests.picker.long_prompts import parse_size

OPTIONS = (  # echoed in the report
    "endpoints",
    "tokens",
    "picks",
    "rates",
    "requests",
    "scrape_endpoints",
    "scrape_interval",
    "scrape_seconds",
    "body_sizes",
    "body_rates",
    "body_requests",
    "body_concurrency",
    "closed_sizes",
    "out",
)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _sizes(text: str) -> list[int]:
    try:
        return [parse_size(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"body sizes like 4k,256k,1m: {exc}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", type=_ints, default=[8, 64, 256], help="schedule(): pool sizes (default 8,64,256)")
    p.add_argument("--tokens", type=_ints, default=[1024, 32768], help="schedule(): prompt tokens (default 1024,32768)")
    p.add_argument("--picks", type=int, default=400, help="schedule(): measured picks per cell (default 400)")
    p.add_argument("--rates", type=_floats, default=[100.0, 400.0], help="Envoy hop: open-loop req/s (default 100,400)")
    p.add_argument("--requests", type=int, default=2000, help="Envoy hop: requests per arm and rate (default 2000)")
    p.add_argument("--scrape-endpoints", type=int, default=100, help="scraping: endpoints (default 100)")
    p.add_argument("--scrape-interval", type=float, default=0.05, help="scraping: seconds (default 0.05)")
    p.add_argument("--scrape-seconds", type=float, default=10.0, help="scraping: measured window (default 10)")
    p.add_argument("--body-sizes", type=_sizes, default=[], help="long prompts: body sizes, e.g. 4k,94k,256k,512k")
    p.add_argument(
        "--body-rates",
        type=_floats,
        default=[20.0],
        help="long prompts: open-loop req/s, one per size or one for all (default 20)",
    )
    p.add_argument(
        "--body-requests", type=int, default=300, help="long prompts: requests per arm and cell (default 300)"
    )
    p.add_argument(
        "--body-concurrency",
        type=_ints,
        default=[20, 150],
        help="long prompts: closed-loop concurrency (default 20,150)",
    )
    p.add_argument(
        "--closed-sizes", type=_sizes, default=[220 * 1024], help="long prompts: sizes run closed loop (default 220k)"
    )
    p.add_argument("--out", type=Path, default=Path("out/bench-picker"), help="output directory")


def validate(args: argparse.Namespace) -> None:
    """Raises ValueError naming the bad option."""
    checks = {
        "--endpoints": bool(args.endpoints) and min(args.endpoints) >= 1,
        "--tokens": bool(args.tokens) and min(args.tokens) >= 16,
        "--picks": args.picks >= 10,
        "--rates": bool(args.rates) and min(args.rates) > 0,
        "--requests": args.requests >= 10,
        "--scrape-endpoints": 1 <= args.scrape_endpoints <= 2000,
        "--scrape-interval": args.scrape_interval > 0,
        "--scrape-seconds": args.scrape_seconds > 0,
        "--body-rates": bool(args.body_rates)
        and min(args.body_rates) > 0
        and len(args.body_rates) in (1, len(args.body_sizes) or 1),
        "--body-requests": args.body_requests >= 10,
        "--body-concurrency": all(c >= 1 for c in args.body_concurrency),
    }
    bad = [name for name, ok in checks.items() if not ok]
    if bad:
        raise ValueError(
            f"out of range: {', '.join(bad)} (endpoints >= 1, tokens >= 16, picks >= 10, rates > 0, "
            "requests >= 10, scrape endpoints 1..2000, interval and seconds > 0, body rates > 0 and one per body "
            "size or one for all, body requests >= 10, body concurrency >= 1)"
        )


def run(args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every arm ran, 1 when an Envoy arm was skipped, 2 on bad input.

    `argv` (autonomic.bench's interface) is not needed: the report spells out every option from `args`.
    """
    try:
        validate(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from loadtests.picker.benchmark import bench

    results = asyncio.run(bench(args))
    rows = results["extproc"]["by_rate"] + results["extproc"]["by_body_size"]
    return 1 if any("skipped" in r for r in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    return module_main("python -m loadtests.picker.cli", __doc__.splitlines()[0], add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
