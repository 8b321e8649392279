"""The routing benchmark's machinery: each router on a fresh fleet twin, the trace replayed, figures and report.

Why it exists: `loadtests.routing.cli` (the command) stays light to import (`autonomic` builds every parser at
start); the work is here. For a router: a fresh `autonomic fleet` process, then what the router needs in front of it
(Envoy with one of its own lb policies; the picker process + Envoy with ext_proc; the reference EPP on the cluster
twin + Envoy with ext_proc, loadtests.routing.epp; or a peer router process), the
trace replayed open loop in time order (loadtests.routing.replay), the twins' model-time logs summarized
(loadtests.routing.figures); everything stopped before the next router starts. The report is written by
loadtests.report.writer: report.md, ttft_cdf.png, results.json (issue 7's schema) and details.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import time
from pathlib import Path
from typing import Any

import aiohttp

from harness.envoy import LocalEnvoy
from harness.netutil import free_port
from harness.picker import PickerProcess
from loadtests.report.writer import Table, command_line, fmt, pct, plot_cdf, write_json, write_report
from loadtests.routing.bounds import fleet_capacity_blocks, oracle_hit_ratio, pooled_capacity_hit_ratio
from loadtests.routing.cli import ENVOY_POLICIES, OPTIONS, RESPONSE_BODY_SUFFIX, shipped_profiles
from loadtests.routing.epp import EPP_ARMS, EppArm, wait_until_routed
from loadtests.routing.epp import missing_reason as epp_missing_reason
from loadtests.routing.extproc_log import phase_summary
from loadtests.routing.figures import summarize
from loadtests.routing.fleet_group import FleetGroup
from loadtests.routing.peers import PeerError, PeerRouter, is_peer, missing_reason, peer_command
from loadtests.routing.replay import ReplayRecord, replay
from loadtests.routing.replicas import (
    kill_halfway,
    profile_name,
    replica_arm,
    replica_events,
    roll_restart,
    routed_decisions,
)
from loadtests.routing.run import picker_health
from loadtests.soak.sampler import cpu_seconds, group_cpu_seconds
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.profile import load_profile
from sim.fleet.trace import TraceRequest, load_trace


def scale_trace(trace: list[TraceRequest], rate_scale: float, duration_s: float | None) -> list[TraceRequest]:
    """Arrival times divided by `rate_scale`, cut to the first `duration_s` seconds after scaling."""
    if rate_scale <= 0:
        raise ValueError(f"rate scale must be > 0, got {rate_scale}")
    out = [dataclasses.replace(r, timestamp_s=r.timestamp_s / rate_scale) for r in trace]
    return [r for r in out if duration_s is None or r.timestamp_s < duration_s]


_TWIN_ID = re.compile(r"^(?P<client>.+)-\d+-\d+$")


def router_overhead_ms(records: list[ReplayRecord], logs: dict[int, list[dict[str, Any]]], time_scale: float) -> float:
    """p50 of (client TTFT - the twin's own TTFT in wall seconds) per request: what the hop through the router
    (and loopback) added. Requests are matched by the id the client sent (the twin logs `<id>-<server>-<seq>`);
    a router that drops the id is compared on medians instead."""
    twin: dict[str, float] = {}
    for entries in logs.values():
        for e in entries:
            m = _TWIN_ID.match(str(e.get("request_id", "")))
            if m:
                twin[m.group("client")] = e["ttft"] / time_scale
    pairs = [r.ttft_s - twin[r.request_id] for r in records if r.ok and r.ttft_s is not None and r.request_id in twin]
    if len(pairs) >= max(1, len(records) // 2):
        return pct(pairs, 50) * 1e3
    client = [r.ttft_s for r in records if r.ok and r.ttft_s is not None]
    model = [e["ttft"] / time_scale for es in logs.values() for e in es]
    return (pct(client, 50) - pct(model, 50)) * 1e3


def extproc_log(workdir: Path, name: str) -> Path:
    """Where Envoy writes the per-request ext_proc account of router `name` (loadtests.routing.extproc_log)."""
    return workdir / f"{name}-extproc.jsonl"


class RouterSkipped(Exception):
    pass


async def _start_router(
    name: str, fleet: FleetGroup, model: str, block_size: int, workdir: Path
) -> tuple[str, list[Any]]:
    """Start what `name` needs in front of `fleet`; returns its URL and the things to stop (last first)."""
    pool = [u.removeprefix("http://") for u in fleet.urls]
    started: list[Any] = []
    try:
        if is_peer(name):
            cmd = peer_command(
                name, free_port(), fleet.urls, model=model, block_size=block_size, kv_endpoints=fleet.kv_endpoints
            )
            peer = PeerRouter(cmd, workdir / f"{name}.log", model)
            await peer.start()
            started.append(peer)
            return peer.url, started
        picker_port = readyz_port = grpc_health_port = None
        lb = ENVOY_POLICIES.get(name, "ROUND_ROBIN")
        # the reference EPP as GIE deploys it: the whole response through it (its response plugins), no observer
        observe_response_body = name.endswith(RESPONSE_BODY_SUFFIX) or name in EPP_ARMS
        extra_pickers: list[tuple[int, int | None]] = []
        buffered = False
        if name.startswith("picker-"):
            replicas = replica_arm(name)
            config = shipped_profiles()[profile_name(name, RESPONSE_BODY_SUFFIX)]
            # replicas stop as deploy/ runs them: NOT_SERVING first, new streams refused 3 s later (--shutdown-delay),
            # once Envoy's health check has moved them to the other replica
            extra = ["--shutdown-delay", "3"] if replicas else []
            count = replicas.replicas if replicas else 1
            pickers = [PickerProcess(pool, config=config, extra_args=extra) for _ in range(count)]
            for picker in pickers:
                if replicas and replicas.shared:
                    picker.peers = [p.peer_address for p in pickers if p is not picker]
                await picker.start()
                started.append(picker)
            picker_port, readyz_port = pickers[0].port, pickers[0].metrics_port
            extra_pickers = [(p.port, p.metrics_port) for p in pickers[1:]]
            buffered = replicas is not None and replicas.buffered
        elif name in EPP_ARMS:  # the EPP finds the servers as Pods: fleet.hosts, one port
            arm = EppArm(name, fleet.hosts, fleet.port, workdir)
            await arm.start()
            started.append(arm)
            picker_port, grpc_health_port = arm.epp.port, arm.epp.health_port
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            extproc_log_path=str(extproc_log(workdir, name)),
            picker_port=picker_port,
            picker_readyz_port=readyz_port,
            picker_grpc_health_port=grpc_health_port,
            pool=pool,
            failure_mode_allow=buffered,
            body_mode="BUFFERED" if buffered else "FULL_DUPLEX_STREAMED",
            pool_lb_policy=lb,  # type: ignore[arg-type]
            observe_response_body=observe_response_body,
            extra_pickers=extra_pickers,
        )
        envoy = LocalEnvoy(opts)
        await envoy.start()
        started.append(envoy)
        if name in EPP_ARMS:
            await wait_until_routed(envoy.url, model)
        return envoy.url, started
    except BaseException:
        for thing in reversed(started):
            await thing.stop()
        raise


async def run_router(
    name: str, trace: list[TraceRequest], args: argparse.Namespace, model: str, block_size: int
) -> dict[str, Any]:
    """One router on a fresh fleet: its summary (loadtests.routing.figures) plus overhead and lag."""
    # one process per server, as a real fleet; for the EPP, each on its own address (it finds them as Pods)
    fleet = FleetGroup(args.servers, args.time_scale, distinct_hosts=name in EPP_ARMS)
    stack: list[Any] = []
    try:
        await fleet.start()
        try:
            url, stack = await _start_router(name, fleet, model, block_size, args.out)
        except (PeerError, RuntimeError, TimeoutError, OSError) as exc:
            last = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else repr(exc)
            raise RouterSkipped(f"could not start: {last}") from exc
        before = {i: len(es) for i, es in (await fleet.request_logs()).items()}  # a readiness request
        t0 = time.monotonic()

        def tick(sent: int, done: int, failed: int) -> None:
            print(f"  {name}: {time.monotonic() - t0:6.1f}s sent {sent}/{len(trace)} done {done} failed {failed}")

        replicas = replica_arm(name)
        replica_procs = [t for t in stack if isinstance(t, PickerProcess)]
        killed: dict[str, Any] = {}
        half = (trace[-1].timestamp_s - trace[0].timestamp_s) / args.time_scale / 2
        killer: asyncio.Task[None] | None = None
        if replicas is not None and replicas.kill:
            killer = asyncio.create_task(kill_halfway(replica_procs, half, killed))
        elif replicas is not None and replicas.rollout:  # one replica restarted at a third, the other at two thirds
            killer = asyncio.create_task(roll_restart(replica_procs, half * 2 / 3, killed))
        try:
            records = await replay(
                trace, lambda _i: url, model=model, time_scale=args.time_scale, id_prefix=name, progress=tick,
                progress_every_s=10.0,
            )  # fmt: skip
        finally:
            if killer is not None:
                killer.cancel()
        wall = time.monotonic() - t0
        if replicas:
            alive = [p for p in replica_procs if p.running]
            summary_extra = {**killed, "decisions_at_end": [await routed_decisions(p) for p in alive]}
            summary_extra["peer_events"] = [await replica_events(p) for p in alive]
        else:
            summary_extra = {}
        logs = {i: es[before.get(i, 0) :] for i, es in (await fleet.request_logs()).items()}
        summary = summarize(records, logs, time_scale=args.time_scale, wall_s=wall)
        summary["router_overhead_p50_ms"] = router_overhead_ms(records, logs, args.time_scale)
        summary["max_engine_lag_model_s"] = max(d["max_lag_model_s"] for d in await fleet.describe())
        summary["failed_sent_at_s"] = [round(r.sent_at, 2) for r in records if not r.ok][:50]
        summary["replicas"] = summary_extra
        pickers = [t for t in stack if isinstance(t, PickerProcess | EppArm)]
        cpu = [cpu_seconds(t.pid if isinstance(t, PickerProcess) else t.epp.pid) for t in pickers]
        if pickers and None not in cpu:  # the picker's CPU over its whole life (start-up and idle scrapes too)
            summary["picker_cpu_s"] = sum(c for c in cpu if c is not None)
        summary.update(node_cpu(fleet, stack))
        for picker in (t for t in stack if isinstance(t, PickerProcess) and t.running):  # scrape outcomes and more
            try:
                text = await asyncio.wait_for(picker.metrics_text(), 10.0)
            except (TimeoutError, OSError, aiohttp.ClientError):  # informational: a picker that does not answer
                continue
            summary.setdefault("picker_health", []).append(picker_health(text))
        if pickers and summary["failed"]:
            summary["picker_output_tail"] = [ln for t in pickers for ln in t.output][-20:]
    finally:
        for thing in reversed(stack):
            await thing.stop()
        await fleet.stop()
    if extproc_log(args.out, name).exists():  # an Envoy-fronted arm; Envoy has flushed its access log on stop
        summary["extproc_phases"] = phase_summary(extproc_log(args.out, name))
    return summary


def node_cpu(fleet: FleetGroup, stack: list[Any]) -> dict[str, float]:
    """CPU seconds, so far, of what a router puts on the node: the servers (their `/metrics` answers to a router's
    scrapes included), Envoy when it fronts the arm, and a peer router's process group (the picker's and the EPP's
    own figure is `picker_cpu_s`). A figure whose process is gone is left out."""
    out: dict[str, float] = {}
    servers = [cpu_seconds(m.pid) for m in fleet.members]
    if servers and None not in servers:
        out["servers_cpu_s"] = sum(c for c in servers if c is not None)
    for thing in stack:
        if isinstance(thing, LocalEnvoy) and (envoy := cpu_seconds(thing.pid)) is not None:
            out["envoy_cpu_s"] = envoy
        elif isinstance(thing, PeerRouter) and (peer := group_cpu_seconds(thing.pid)) is not None:
            out["peer_cpu_s"] = peer
    return out


def results_entry(s: dict[str, Any]) -> dict[str, Any]:
    """One router's figures in the schema of issue 7 (model-time TTFT/e2e, client TTFT, router overhead)."""
    return {
        "hit_ratio": s["hit_ratio"],
        "ttft_p50_s": s["ttft_model_p50_s"],
        "ttft_p90_s": s["ttft_model_p90_s"],
        "ttft_p99_s": s["ttft_model_p99_s"],
        "e2e_p90_s": s["e2e_model_p90_s"],
        "output_tokens_per_s": s["output_tokens_per_s_model"],
        "client_ttft_p90_s": s["ttft_client_p90_s"],
        "router_overhead_p50_ms": s["router_overhead_p50_ms"],
        "requests_ok": s["ok"],
        "requests_failed": s["failed"],
    }


def report_table(oracle: float, pooled: float, summaries: dict[str, dict[str, Any]]) -> Table:
    headers = ["router", "hit ratio", "of oracle", "of pooled", "TTFT p50 s", "p90 s", "p99 s", "E2E p50 s"]
    headers += ["E2E p90 s", "output tok/s", "client TTFT p90 s", "router overhead p50 ms", "ok", "failed"]
    headers += ["load imbalance", "twin lag s"]
    table = Table("Routers", headers)
    table.rows.append(["oracle bound", fmt(oracle), "1", fmt(oracle / pooled if pooled else None, ".2f")] + ["-"] * 12)
    table.rows.append(["pooled-capacity bound", fmt(pooled), fmt(pooled / oracle if oracle else None, ".2f"), "1"])
    table.rows[-1] += ["-"] * 12
    for name, s in summaries.items():
        row = [name, fmt(s["hit_ratio"]), fmt(s["hit_ratio"] / oracle if oracle else None, ".2f")]
        row.append(fmt(s["hit_ratio"] / pooled if pooled else None, ".2f"))
        row += [fmt(s[k]) for k in ("ttft_model_p50_s", "ttft_model_p90_s", "ttft_model_p99_s")]
        row += [fmt(s["e2e_model_p50_s"], ".2f"), fmt(s["e2e_model_p90_s"], ".2f")]
        row += [fmt(s["output_tokens_per_s_model"], ".0f"), fmt(s["ttft_client_p90_s"])]
        row += [fmt(s["router_overhead_p50_ms"], ".1f"), str(s["ok"]), str(s["failed"])]
        row += [fmt(s["load_imbalance"], ".2f"), fmt(s["max_engine_lag_model_s"], ".1f")]
        table.rows.append(row)
    table.notes = [
        "Hit ratio: prompt tokens the servers served from their prefix caches / prompt tokens. TTFT and E2E in model",
        "time (what the twins measured: queueing + prefill, decode; real seconds of the modelled GPU, free of proxy",
        "overheads the time scale does not compress). Client TTFT: what the client saw, wall seconds (compressed).",
        "Router overhead: p50 of client TTFT minus the twin's own TTFT, per request, in wall ms. Load imbalance: the",
        "busiest server's requests / the mean. Twin lag: how far a twin's GPU timeline fell behind the wall clock",
        "(model s; large values mean the machine, not the router, set the pace). Oracle bound: one infinite cache",
        "shared by all servers. Pooled-capacity bound: one LRU prefix cache of the whole fleet's capacity; LRU is not",
        "optimal, so a router that keeps reused prefixes apart from one-off requests can exceed it slightly.",
    ]
    return table


def cpu_table(summaries: dict[str, dict[str, Any]]) -> Table:
    headers = ["router", "router CPU s", "Envoy CPU s", "servers' CPU s", "servers' CPU ms per request"]
    table = Table("CPU the router puts on the node", headers)
    for name, s in summaries.items():
        router = s.get("picker_cpu_s", s.get("peer_cpu_s"))
        per = s["servers_cpu_s"] * 1e3 / s["ok"] if s.get("servers_cpu_s") is not None and s["ok"] else None
        row = [name, fmt(router, ".1f"), fmt(s.get("envoy_cpu_s"), ".1f"), fmt(s.get("servers_cpu_s"), ".1f")]
        table.rows.append([*row, fmt(per, ".1f")])
    table.notes = [
        "User + system CPU seconds over each process's life (start-up included), read just before it stops.",
        "Router: the picker's or the EPP's process, or a peer router's process group; Envoy: the proxy, when it",
        "fronts the arm; servers: the fleet twins, whose work includes answering a router's `/metrics` scrapes",
        "(`python -m loadtests.picker.scrape_cost --server-side`: ~2.5 ms of a twin's CPU for its whole ~40 KB",
        "exposition, gzip accepted, as Prometheus and Go clients ask; ~0.2 ms for the seven series the picker asks",
        "for), so a router that scrapes often takes CPU from the servers.",
    ]
    return table


def phases_table(phases: dict[str, dict[str, Any]]) -> Table:
    headers = ["router", "routed p50 ms", "ext_proc streams", "request path wait p50 ms"]
    headers += ["response headers wait p50 ms", "wait per response chunk p50 ms", "response chunks p50", "picker CPU s"]
    table = Table("Where the router's time goes (Envoy's account)", headers)
    for name, p in phases.items():
        row = [name, fmt(p.get("routed_ms"), ".2f"), str(p["requests"]), fmt(p["request_wait_ms"], ".2f")]
        row += [fmt(p["response_headers_wait_ms"], ".2f")]
        row += [fmt(p["response_chunk_wait_ms"], ".2f"), fmt(p["response_chunks"], "g"), fmt(p.get("cpu_s"), ".1f")]
        table.rows.append(row)
    table.notes = [
        "From Envoy's access log, successful requests of the arms Envoy fronts. Routed: from the request's first byte",
        "at Envoy to Envoy sending it upstream (the whole decision, the picker's inbound hop included; ~0 for Envoy's",
        "own load balancers). The rest from ExtProcLoggingInfo. Request path: from the request headers",
        "sent to the picker to its answer, held until the whole body arrived and the decision was made. The response",
        "headers and every response body chunk then wait for the picker again; the first chunk is the first token.",
        "Picker CPU: user + system seconds of the picker process over its life (start-up and idle scrapes included).",
    ]
    return table


async def bench(args: argparse.Namespace, routers: list[str]) -> dict[str, Any]:
    profile = load_profile()
    trace = scale_trace(load_trace(args.trace, max_seconds=args.duration * args.rate_scale), args.rate_scale, None)
    if not trace:
        raise ValueError(f"--trace: no request in the first {args.duration * args.rate_scale:g} trace seconds")
    capacity = fleet_capacity_blocks(args.servers, profile.num_gpu_blocks, profile.block_size)
    oracle, pooled = oracle_hit_ratio(trace), pooled_capacity_hit_ratio(trace, capacity)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        f"[bench routing] {len(trace)} requests ({args.duration:g} model s, rate x{args.rate_scale:g}, time scale "
        f"x{args.time_scale:g}), {args.servers} servers; oracle {oracle:.3f}, pooled-capacity bound {pooled:.3f}",
        flush=True,
    )
    summaries: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    for name in routers:
        reason = missing_reason(name) if is_peer(name) else epp_missing_reason(name) if name in EPP_ARMS else None
        if reason:
            skipped[name] = reason
            print(f"[bench routing] {name}: skipped ({reason})", flush=True)
            continue
        print(f"[bench routing] {name}: fresh fleet of {args.servers}", flush=True)
        try:
            summaries[name] = await run_router(name, trace, args, profile.model, profile.block_size)
        except RouterSkipped as exc:
            skipped[name] = str(exc)
            print(f"[bench routing] {name}: skipped ({exc})", flush=True)
            continue
        s = summaries[name]
        print(
            f"[bench routing] {name}: hit {s['hit_ratio']:.3f}, TTFT p50/p90 {s['ttft_model_p50_s']:.3f}/"
            f"{s['ttft_model_p90_s']:.3f} s, ok {s['ok']}, failed {s['failed']}, wall {s['wall_s']:.0f} s",
            flush=True,
        )
        if s.get("replicas"):
            print(f"[bench routing] {name}: replicas {s['replicas']}", flush=True)
    results = {
        "oracle_hit_ratio": oracle,
        "pooled_capacity_bound": pooled,
        "routers": {name: results_entry(s) for name, s in summaries.items()},
    }
    write_json(args.out / "results.json", results)
    details = {
        "command": command_line(getattr(args, "prog", "autonomic bench routing"), args, OPTIONS),
        "trace": str(args.trace),
        "requests": len(trace),
        "servers": args.servers,
        "time_scale": args.time_scale,
        "rate_scale": args.rate_scale,
        "duration_model_s": args.duration,
        "capacity_blocks": capacity,
        "skipped": skipped,
        "routers": {n: {k: v for k, v in s.items() if k != "ttft_model_s"} for n, s in summaries.items()},
    }
    write_json(args.out / "details.json", details)
    title = f"TTFT CDF (model time): {args.trace.name}, {args.servers} twins, rate x{args.rate_scale:g}"
    plot = plot_cdf(
        args.out / "ttft_cdf.png",
        {n: s["ttft_model_s"] for n, s in summaries.items()},
        xlabel="TTFT, model time (s)",
        title=title,
    )
    intro = [
        f"Command: `{details['command']}`",
        "",
        f"Trace `{args.trace.name}`: {len(trace)} requests, the first {args.duration * args.rate_scale:g} trace "
        f"seconds at x{args.rate_scale:g} the rate ({args.duration:g} model s), replayed in time order at time scale "
        f"x{args.time_scale:g}; {args.servers} fleet twins per router ({profile.name}, {capacity} trace blocks of "
        "512 tokens of KV cache together), a fresh fleet for each router, each server in its own process.",
    ]
    footer = [f"Skipped: {n}: {why}" for n, why in skipped.items()]
    footer += [f"Plot: {plot.name}" if plot else "Plot: not drawn (matplotlib missing or no data)"]
    tables = [report_table(oracle, pooled, summaries), cpu_table(summaries)]
    phases = {n: {**s.get("extproc_phases", {}), "cpu_s": s.get("picker_cpu_s")} for n, s in summaries.items()}
    phases = {n: p for n, p in phases.items() if p.get("requests") is not None}
    if phases:
        tables.append(phases_table(phases))
    write_report(args.out, "Routing benchmark", intro, tables, footer)
    written = "report.md, results.json, details.json" + (", ttft_cdf.png" if plot else "")
    print(f"[bench routing] wrote {written} in {args.out}")
    return results
