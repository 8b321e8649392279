"""`autonomic demo`: the main job on the embedded twins, printing what it did.

Routing part: replays the first minutes of the Mooncake conversation trace through a real Envoy twice, each time
in front of a fresh fleet of vLLM twins: once with Envoy's own round robin, once with our endpoint picker over
ext_proc. Prints the two side by side (prefix-cache hit ratio against the trace's oracle bound, TTFT p50/p90 in
model time, e2e, throughput, spread), writes `summary.json` and a TTFT CDF plot. The rebalancer joins this command
with its issue.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.routing_run import run_routing
from sim.fleet.profile import ProfileError, load_profile
from sim.fleet.trace import load_trace, oracle_hit_ratio

DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared/data/traces/mooncake_conversation_first30min.jsonl"
ARMS = ("envoy-round-robin", "picker")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded twins and print a summary")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL trace")
    p.add_argument("--minutes", type=float, default=4.0, help="replay the first N minutes of the trace")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=10.0, help="model seconds per real second")
    p.add_argument("--routers", default=",".join(ARMS), help=f"comma-separated, from {ARMS}")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="where the report and plot go")


def run(args: argparse.Namespace) -> int:
    if not args.trace.exists():
        print(f"error: trace not found: {args.trace} (expected ../shared beside the checkout)", file=sys.stderr)
        return 2
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    bad = [r for r in routers if r not in ARMS]
    if bad or not routers:
        print(f"error: --routers: unknown {bad}; choose from {ARMS}", file=sys.stderr)
        return 2
    try:
        profile = load_profile()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_demo(args, routers, profile.model))


async def _demo(args: argparse.Namespace, routers: list[str], model: str) -> int:
    started = time.monotonic()
    trace = load_trace(args.trace, max_seconds=args.minutes * 60)
    oracle = oracle_hit_ratio(trace)
    print(
        f"[demo] trace: {len(trace)} requests in the first {args.minutes:g} min of {args.trace.name}; "
        f"{args.servers} vLLM twins per run, time scale {args.time_scale:g}x",
        flush=True,
    )
    results: dict[str, dict[str, Any]] = {}
    for router in routers:
        print(f"[demo] routing run: {router} (fresh fleet, real Envoy)", flush=True)
        results[router] = await run_routing(
            router,
            trace,
            model=model,
            servers=args.servers,
            time_scale=args.time_scale,
            progress=lambda msg: print(f"[demo]   {msg}", flush=True),
        )
    _print_table(results, oracle)
    args.out.mkdir(parents=True, exist_ok=True)
    out = {"oracle_hit_ratio": oracle, "trace": str(args.trace), "minutes": args.minutes, "routers": results}
    (args.out / "summary.json").write_text(json.dumps(out, indent=2, default=float))
    plot = _plot(results, args.out / "ttft_cdf.png")
    print(f"[demo] wrote {args.out / 'summary.json'}" + (f" and {plot}" if plot else ""))
    print(f"[demo] done in {time.monotonic() - started:.0f} s")
    return 0 if all(r["failed"] == 0 for r in results.values()) else 1


def _print_table(results: dict[str, dict[str, Any]], oracle: float) -> None:
    names = list(results)
    rows: list[tuple[str, list[str]]] = [
        ("requests ok / failed", [f"{r['ok']} / {r['failed']}" for r in results.values()]),
        ("prefix-cache hit ratio", [f"{r['hit_ratio']:.1%}" for r in results.values()]),
        ("  of the oracle bound", [f"{r['hit_ratio'] / oracle:.2f}" if oracle else "-" for r in results.values()]),
        ("TTFT p50, model time", [f"{r['ttft_model_p50_s']:.3f} s" for r in results.values()]),
        ("TTFT p90, model time", [f"{r['ttft_model_p90_s']:.3f} s" for r in results.values()]),
        ("e2e p50, model time", [f"{r['e2e_model_p50_s']:.2f} s" for r in results.values()]),
        ("output tokens/s, model time", [f"{r['output_tokens_per_s_model']:.0f}" for r in results.values()]),
        ("TTFT p90, client (compressed)", [f"{r['ttft_client_p90_s']:.3f} s" for r in results.values()]),
        ("preemptions", [str(r["preemptions"]) for r in results.values()]),
        (
            "requests per server",
            ["/".join(str(v) for v in r["per_server_requests"].values()) for r in results.values()],
        ),
        ("max twin lag (model s)", [f"{r['max_engine_lag_model_s']:.1f}" for r in results.values()]),
    ]
    w0 = max(len(k) for k, _ in rows)
    widths = [max(len(n), *(len(v[i]) for _, v in rows)) for i, n in enumerate(names)]
    print(f"\n=== routing through Envoy: same trace, fresh fleets (oracle hit-ratio bound {oracle:.1%}) ===")
    print("  " + " " * w0 + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True)))
    for k, vals in rows:
        print("  " + k.ljust(w0) + "  " + "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True)))
    for name, r in results.items():
        for e in r["errors"]:
            print(f"  {name} error: {e}")
    print()


def _plot(results: dict[str, dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, r in results.items():
        v = np.asarray(r["ttft_model_s"])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=name)
    ax.set_xscale("log")
    ax.set_xlabel("TTFT, model time (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT CDF: Mooncake conversation trace, 4 vLLM twins")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
