"""`autonomic demo`: the main job on the embedded twins, printing what it did.

Routing part: replays the first minutes of the Mooncake conversation trace through a real Envoy three times, each
time in front of a fresh fleet of vLLM twins: with Envoy's own round robin, with our endpoint picker over ext_proc
(default profile: approximate prefix index), and with the picker's precise profile (the replicas' KV events and
`/tokenize`). Prints them side by side (prefix-cache hit ratio against the trace's oracle bound, TTFT p50/p90 in
model time, e2e, throughput, spread), writes `summary.json` and a TTFT CDF plot.

Rebalance part: the cluster twin's default scenario (a hotspot on worker-0) with its real Prometheus, three times
on a fresh twin: no controller (the baseline), the controller with `descheduler-compatible` (the descheduler's
profile as the operator's main branch generates it: evictionLimits.node 2, KubevirtMigrationAware; the 4.21 GA
profile is the `descheduler-compatible-ga` arm, run when named), then with `psi-relief`, each for the same model
minutes with the same cycle interval (`loadtests/rebalance/run.py`, `loadtests/rebalance/arms.py`). Prints
node-minutes over the pressure threshold, migrations and VMs moved more than once side by side, adds them to
`summary.json` and plots the hottest node's pressure over time (`pressure.png`). `--parts` picks the parts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from common.logs import JsonFormatter
from loadtests.rebalance.arms import ARMS as REBALANCE_ARMS
from loadtests.rebalance.arms import DEFAULT_ARMS
from loadtests.rebalance.report import json_safe, results_json, text_table
from loadtests.rebalance.report import plot as plot_pressure
from loadtests.rebalance.run import RunSettings, default_scenario, run_policies
from loadtests.routing.run import run_routing
from sim.cluster.prometheus import TelemetryError
from sim.fleet.profile import ProfileError, load_profile
from sim.fleet.trace import load_trace, oracle_hit_ratio

DEFAULT_TRACE = Path(__file__).resolve().parents[1].parent / "shared/data/traces/mooncake_conversation_first30min.jsonl"
# the picker twice: its default profile (approximate prefix index) and scorer/precise-config.yaml (KV events)
ARMS = ("envoy-round-robin", "picker", "picker-precise")
PARTS = ("routing", "rebalance")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the demo on the embedded twins and print a summary")
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL trace")
    p.add_argument("--minutes", type=float, default=4.0, help="replay the first N minutes of the trace")
    p.add_argument("--servers", type=int, default=4)
    p.add_argument("--time-scale", type=float, default=10.0, help="model seconds per real second")
    p.add_argument("--routers", default=",".join(ARMS), help=f"comma-separated, from {ARMS}")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="where the report and plot go")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, from {PARTS}")
    p.add_argument(
        "--rebalance-minutes", type=float, default=10.0, help="model minutes each rebalance policy runs (default 10)"
    )
    p.add_argument(
        "--policies",
        default=",".join(DEFAULT_ARMS),
        help=f"rebalance arms, from {', '.join(REBALANCE_ARMS)} (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    if not parts or any(p not in PARTS for p in parts):
        print(f"error: --parts: {args.parts!r}; choose from {PARTS}", file=sys.stderr)
        return 2
    if not policies or any(p not in REBALANCE_ARMS for p in policies) or len(set(policies)) != len(policies):
        print(f"error: --policies: {args.policies!r}; choose from {', '.join(REBALANCE_ARMS)}", file=sys.stderr)
        return 2
    if not args.rebalance_minutes > 0:
        print(f"error: --rebalance-minutes must be > 0, got {args.rebalance_minutes}", file=sys.stderr)
        return 2
    args.parts, args.policies = parts, policies
    if "routing" not in parts:
        return asyncio.run(_demo(args, [], ""))
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
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    ok = True
    if routers:
        ok = await _routing(args, routers, model, summary)
    if "rebalance" in args.parts:
        ok = await asyncio.to_thread(_rebalance, args, summary) and ok
    (args.out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, allow_nan=False, default=float))
    print(f"[demo] wrote {args.out / 'summary.json'}")
    print(f"[demo] done in {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


def _rebalance(args: argparse.Namespace, summary: dict[str, Any]) -> bool:
    settings = RunSettings(duration_s=args.rebalance_minutes * 60)
    print(
        f"[demo] rebalance: the cluster twin's hotspot scenario, {', '.join(args.policies)}, each on a fresh twin "
        f"with a real Prometheus for {args.rebalance_minutes:g} model min (time scale {settings.time_scale:g}x, "
        f"a cycle every {settings.interval_s:g} model s)",
        flush=True,
    )
    log_path = args.out / "rebalance.log"
    print(f"[demo]   the controllers' and twins' JSON logs go to {log_path}", flush=True)
    try:
        with _logs_to(log_path):
            comparison = run_policies(
                default_scenario(), args.policies, settings, lambda m: print(f"[demo]   {m}", flush=True)
            )
    except (TelemetryError, RuntimeError) as exc:
        print(f"[demo] rebalance failed: {exc} (logs: {log_path})", file=sys.stderr)
        summary["rebalance"] = {"error": str(exc)}
        return False
    for name, run in comparison["policies"].items():
        nth: dict[str, int] = {}
        for move in run["moves"]:
            vmi = str(move.get("vmi"))
            k = nth[vmi] = nth.get(vmi, -1) + 1
            reasons = move.get("why") or []
            why = reasons[k] if k < len(reasons) else ""  # the VM's k-th Event says why its k-th move happened
            started = move.get("started_min")
            when = f" at model min {started:.1f}" if isinstance(started, (int, float)) else " (in flight at the end)"
            print(
                f"[demo]   {name}: {vmi} {move.get('source') or '?'} -> {move.get('target') or '?'} "
                f"{str(move.get('phase') or '').lower()}{when}" + (f" ({_short(why)})" if why else ""),
                flush=True,
            )
    title = (
        f"rebalancing a hotspot: same scenario, fresh twins, {args.rebalance_minutes:g} model min each, "
        f"over = CPU PSI > {settings.threshold:g}"
    )
    print("\n" + text_table(comparison, title) + "\n")
    summary["rebalance"] = {
        "scenario": "sim/cluster/scenarios/default.yaml",
        "settings": dataclasses.asdict(settings),
        **results_json(comparison),
        "moves": {name: r["moves"] for name, r in comparison["policies"].items()},
        "controllers": {name: r["controller"] for name, r in comparison["policies"].items()},
    }
    path = plot_pressure(
        comparison,
        args.out / "pressure.png",
        settings.threshold,
        "Hotspot on worker-0 (4 nodes): each policy on a fresh twin",
    )
    if path:
        print(f"[demo] wrote {path}")
    return not any(r.get("errors") for r in comparison["policies"].values())


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Route the root logger to `path` (JSON lines) while the twins and controllers run; warnings stay on stderr."""
    root = logging.getLogger()
    saved = root.handlers[:]
    to_file = logging.FileHandler(path, mode="w")
    to_file.setFormatter(JsonFormatter())
    to_stderr = logging.StreamHandler(sys.stderr)
    to_stderr.setLevel(logging.WARNING)
    to_stderr.setFormatter(JsonFormatter())
    root.handlers[:] = [to_file, to_stderr]
    try:
        yield
    finally:
        root.handlers[:] = saved
        to_file.close()


def _short(text: str, width: int = 110) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


async def _routing(args: argparse.Namespace, routers: list[str], model: str, summary: dict[str, Any]) -> bool:
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
    summary.update({"oracle_hit_ratio": oracle, "trace": str(args.trace), "minutes": args.minutes, "routers": results})
    plot = _plot(results, args.out / "ttft_cdf.png")
    if plot:
        print(f"[demo] wrote {plot}")
    return all(r["failed"] == 0 for r in results.values())


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
