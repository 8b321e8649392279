"""Precise versus approximate prefix scoring: the same replay through Envoy, same run, fresh fleet per arm.

Why it exists: issue 6 asks whether following the servers' KV events beats guessing their caches from what the
picker sent. Each arm (`loadtests.routing.run`) meets a fresh fleet of twins behind a real Envoy and the same
trace at the same times: Envoy's round robin, the picker with the default profile (approximate prefix index) and
the picker with `scorer/precise-config.yaml` (precise index from KV events). Figures are reported as ratios to the
approximate picker and to round robin measured in this run. `--num-gpu-blocks` shrinks the twins' caches so that
eviction, which the approximate index cannot see, matters.

    python -m loadtests.routing.precise_vs_approximate --minutes 4 --num-gpu-blocks 8000 --out out/precise
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from loadtests.routing.run import ROUTERS, run_routing
from sim.fleet.profile import load_profile
from sim.fleet.trace import load_trace, oracle_hit_ratio

DEFAULT_TRACE = Path(__file__).resolve().parents[3] / "shared/data/traces/mooncake_conversation_first30min.jsonl"
ARMS = ("envoy-round-robin", "picker", "picker-precise")
FIGURES = (
    ("hit_ratio", "prefix-cache hit ratio", "{:.1%}"),
    ("ttft_model_p50_s", "TTFT p50, model time", "{:.3f} s"),
    ("ttft_model_p90_s", "TTFT p90, model time", "{:.3f} s"),
    ("ttft_model_p99_s", "TTFT p99, model time", "{:.3f} s"),
    ("e2e_model_p50_s", "e2e p50, model time", "{:.2f} s"),
    ("ttft_client_p90_s", "TTFT p90, client", "{:.3f} s"),
    ("output_tokens_per_s_model", "output tokens/s, model time", "{:.0f}"),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m loadtests.routing.precise_vs_approximate", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    p.add_argument("--minutes", type=float, default=4.0)
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=10.0)
    p.add_argument("--num-gpu-blocks", type=int, default=None, help="twins' KV cache size (default: the profile's)")
    p.add_argument("--routers", default=",".join(ARMS), help=f"comma-separated, from {ROUTERS}")
    p.add_argument("--out", type=Path, default=Path("out/precise"))
    args = p.parse_args(argv)
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    if not routers or any(r not in ROUTERS for r in routers):
        print(f"error: --routers must be a list from {ROUTERS}", file=sys.stderr)
        return 2
    if not args.trace.exists():
        print(f"error: trace not found: {args.trace}", file=sys.stderr)
        return 2
    return asyncio.run(_run(args, routers))


async def _run(args: argparse.Namespace, routers: list[str]) -> int:
    model = load_profile().model
    trace = load_trace(args.trace, max_seconds=args.minutes * 60)
    oracle = oracle_hit_ratio(trace)
    blocks = args.num_gpu_blocks or load_profile().num_gpu_blocks
    print(f"[precise] {len(trace)} requests, {args.servers} twins x {blocks} blocks, time scale {args.time_scale:g}x")
    results: dict[str, dict[str, Any]] = {}
    for router in routers:
        print(f"[precise] routing run: {router}", flush=True)
        results[router] = await run_routing(
            router,
            trace,
            model=model,
            servers=args.servers,
            time_scale=args.time_scale,
            num_gpu_blocks=args.num_gpu_blocks,
            progress=lambda msg: print(f"[precise]   {msg}", flush=True),
        )
    print(table(results, oracle))
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"trace": str(args.trace), "minutes": args.minutes, "num_gpu_blocks": blocks, "oracle_hit_ratio": oracle}
    doc["routers"] = {k: {f: v for f, v in r.items() if f != "ttft_model_s"} for k, r in results.items()}
    (args.out / "summary.json").write_text(json.dumps(doc, indent=2, default=float))
    return 0 if all(r["failed"] == 0 for r in results.values()) else 1


def table(results: dict[str, dict[str, Any]], oracle: float) -> str:
    """Markdown: each figure per router, and as a ratio to the approximate picker and to round robin."""
    names = list(results)
    bases = [b for b in ("picker", "envoy-round-robin") if b in results]
    head = ["figure", *names, *(f"{n} / {b}" for b in bases for n in names if n != b)]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    rows = [*FIGURES, ("failed", "requests failed", "{}")]
    for key, label, fmt in rows:
        cells = [fmt.format(results[n][key]) for n in names]
        for b in bases:
            for n in names:
                if n == b:
                    continue
                base = results[b][key]
                cells.append(f"{results[n][key] / base:.2f}" if isinstance(base, float) and base else "-")
        lines.append("| " + " | ".join([label, *cells]) + " |")
    lines.append(f"\noracle hit-ratio bound of the trace: {oracle:.1%}")
    for n in names:
        health = results[n].get("picker_health") or {}
        if health:
            shown = ", ".join(f"{k.removeprefix('autonomic_picker_')} {v:g}" for k, v in sorted(health.items()))
            lines.append(f"{n} picker: {shown}")
        for e in results[n]["errors"]:
            lines.append(f"{n} error: {e}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
