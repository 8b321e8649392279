"""`autonomic demo`: the main job on the embedded twins, printing what it did.

Today it starts a fleet of vLLM twins, replays the first minutes of the Mooncake conversation trace round
robin at a time scale, and reports prefix-cache hit ratio (with the trace's oracle bound), TTFT in model time
and client time, throughput and the spread over servers, plus a TTFT CDF plot. Later issues add the picker
and the rebalancer to this same command.
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

from loadtests.replay import ReplayRecord, replay
from sim.fleet.process import FleetProcess
from sim.fleet.profile import ProfileError, load_profile
from sim.fleet.trace import load_trace, oracle_hit_ratio
from sim.netutil import find_base_port

DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared/data/traces/mooncake_conversation_first30min.jsonl"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded twins and print a summary")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL trace")
    p.add_argument("--minutes", type=float, default=4.0, help="replay the first N minutes of the trace")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=10.0, help="model seconds per real second")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="where the report and plot go")


def run(args: argparse.Namespace) -> int:
    if not args.trace.exists():
        print(f"error: trace not found: {args.trace} (expected ../shared beside the checkout)", file=sys.stderr)
        return 2
    try:
        profile = load_profile()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_demo(args, profile))


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def _demo(args: argparse.Namespace, profile: Any) -> int:
    trace = load_trace(args.trace, max_seconds=args.minutes * 60)
    print(f"[demo] trace: {len(trace)} requests in the first {args.minutes:g} min of {args.trace.name}")
    base = find_base_port(args.servers)
    fleet = FleetProcess(servers=args.servers, base_port=base, time_scale=args.time_scale)
    await fleet.start()
    print(
        f"[demo] fleet: {args.servers} vLLM twins ({profile.name}, {profile.num_gpu_blocks} blocks of "
        f"{profile.block_size} tokens each) on {fleet.urls[0]}..{fleet.urls[-1]}, time scale {args.time_scale:g}x"
    )
    urls = fleet.urls
    t_start = time.monotonic()

    def progress(sent: int, done: int, failed: int) -> None:
        print(
            f"[demo] {time.monotonic() - t_start:6.1f}s  sent {sent:5d}/{len(trace)}  done {done:5d}  failed {failed}",
            flush=True,
        )

    try:
        records = await replay(
            trace,
            lambda i: urls[i % len(urls)],
            model=profile.model,
            time_scale=args.time_scale,
            id_prefix="demo",
            progress=progress,
        )
        wall = time.monotonic() - t_start
        logs = await fleet.request_logs()
        max_lag = max(d["max_lag_model_s"] for d in await fleet.describe())
    finally:
        await fleet.stop()
    summary = _summarize(trace, records, logs, args, wall)
    summary["max_engine_lag_model_s"] = max_lag
    _print_summary(summary)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot = _plot(logs, args.out / "ttft_cdf.png")
    print(f"[demo] wrote {args.out / 'summary.json'}" + (f" and {plot}" if plot else ""))
    return 0 if summary["failed"] == 0 else 1


def _summarize(
    trace: list[Any],
    records: list[ReplayRecord],
    logs: dict[int, list[dict[str, Any]]],
    args: argparse.Namespace,
    wall: float,
) -> dict[str, Any]:
    ok = [r for r in records if r.ok]
    entries = [e for es in logs.values() for e in es]
    prompt = sum(r.prompt_tokens for r in ok)
    cached = sum(r.cached_tokens for r in ok)
    ttft_model = [e["ttft"] for e in entries]
    span_model = (max(e["arrival"] + e["e2e"] for e in entries) - min(e["arrival"] for e in entries)) if entries else 0
    out_tokens = sum(e["output_tokens"] for e in entries)
    per_server = {i: len(es) for i, es in logs.items()}
    return {
        "requests": len(records),
        "ok": len(ok),
        "failed": len(records) - len(ok),
        "errors": sorted({(r.error or "")[:120] for r in records if not r.ok})[:5],
        "prompt_tokens": prompt,
        "cached_tokens": cached,
        "hit_ratio": cached / prompt if prompt else 0.0,
        "oracle_hit_ratio": oracle_hit_ratio(trace),
        "ttft_model_p50_s": _pct(ttft_model, 50),
        "ttft_model_p90_s": _pct(ttft_model, 90),
        "ttft_client_p50_s": _pct([r.ttft_s for r in ok if r.ttft_s is not None], 50),
        "ttft_client_p90_s": _pct([r.ttft_s for r in ok if r.ttft_s is not None], 90),
        "e2e_model_p50_s": _pct([e["e2e"] for e in entries], 50),
        "output_tokens_per_s_model": out_tokens / span_model if span_model else 0.0,
        "preemptions": sum(e["preemptions"] for e in entries),
        "per_server_requests": per_server,
        "time_scale": args.time_scale,
        "wall_s": wall,
    }


def _print_summary(s: dict[str, Any]) -> None:
    rows = [
        ("requests (ok / failed)", f"{s['ok']} / {s['failed']}"),
        (
            "prefix-cache hit ratio",
            f"{s['hit_ratio']:.1%}  (oracle bound, infinite shared cache: {s['oracle_hit_ratio']:.1%})",
        ),
        ("TTFT p50 / p90, model time", f"{s['ttft_model_p50_s']:.3f} s / {s['ttft_model_p90_s']:.3f} s"),
        (
            "TTFT p50 / p90, client (real)",
            f"{s['ttft_client_p50_s']:.3f} s / {s['ttft_client_p90_s']:.3f} s (x{s['time_scale']:g} compressed)",
        ),
        ("e2e latency p50, model time", f"{s['e2e_model_p50_s']:.2f} s"),
        ("throughput, model time", f"{s['output_tokens_per_s_model']:.0f} output tokens/s"),
        ("preemptions", str(s["preemptions"])),
        ("requests per server", ", ".join(f"{k}: {v}" for k, v in sorted(s["per_server_requests"].items()))),
        ("wall time", f"{s['wall_s']:.1f} s"),
        ("engine lag behind wall, max", f"{s.get('max_engine_lag_model_s', 0.0):.2f} model s (CPU shortfall)"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n=== demo summary: round-robin over the vLLM fleet twin ===")
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")
    for e in s["errors"]:
        print(f"  error: {e}")


def _plot(logs: dict[int, list[dict[str, Any]]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, es in sorted(logs.items()):
        v = np.sort([e["ttft"] for e in es])
        if len(v):
            ax.plot(v, np.arange(1, len(v) + 1) / len(v), label=f"server {i}")
    ax.set_xscale("log")
    ax.set_xlabel("TTFT, model time (s)")
    ax.set_ylabel("fraction of requests")
    ax.set_title("TTFT CDF per server (round robin)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
