"""The soak's machinery: the routing stack and the controller on the cluster twin, steady load, a sample a minute.

Started, in order: the cluster twin (`autonomic cluster-sim`, with its real Prometheus as a grandchild), the
controller (`autonomic controller` on that twin, leader election on, psi-relief, short cycles), the fleet twin,
`autonomic picker` (precise profile) and Envoy (loadtests.chaos.picker_stack). Open-loop completions go through
Envoy for the whole run. Every `--sample-seconds`, each process' RSS, open fds and threads are read from /proc, and
the picker's and the controller's own gauges from their /metrics. Growth is judged after the warm-up.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import asdict
from typing import Any

import aiohttp

from harness.child import Child
from harness.netutil import free_port
from loadtests.chaos.picker_stack import OpenLoopLoad, RoutingStack, StackOptions, parse_samples, value
from loadtests.soak.sampler import children, live_tcp_inodes, read_proc

PICKER_GAUGES = {
    "in_flight": "autonomic_picker_in_flight_requests",
    "active_streams": "autonomic_picker_extproc_active_streams",
    "asyncio_tasks": "autonomic_picker_asyncio_tasks",
    "precise_index_blocks": "autonomic_picker_precise_index_blocks",
}
CONTROLLER_SERIES = ("autonomic_controller_cycles_total", "autonomic_controller_migrations_total")


class ClusterAndController:
    """`autonomic cluster-sim` (+ Prometheus) and `autonomic controller` against it, as child processes."""

    def __init__(self, nodes: int, vms: int, time_scale: float) -> None:
        self.lines: dict[str, str] = {}
        cmd = [sys.executable, "-m", "autonomic", "cluster-sim", "--nodes", str(nodes), "--vms", str(vms)]
        cmd += ["--port", "0", "--time-scale", f"{time_scale:g}", "--scrape-interval", "1"]
        cmd += ["--rate-window", "15s", "--rule-interval", "5s"]
        self.cluster = Child(cmd, name="cluster-sim", ready=r"^ready:", on_line=self._banner)
        self.metrics_port = free_port()
        self.controller: Child | None = None

    def _banner(self, line: str) -> None:
        if m := re.match(r"^(kubeconfig|prometheus): (\S+)", line):
            self.lines[m.group(1)] = m.group(2)

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    async def start(self) -> None:
        await self.cluster.start(90)
        cmd = [sys.executable, "-m", "autonomic", "controller", "--kubeconfig", self.lines["kubeconfig"]]
        cmd += ["--prometheus-url", self.lines["prometheus"], "--policy", "psi-relief", "--twin-clock"]
        cmd += ["--interval", "5", "--min-interval", "2", "--metrics-host", "127.0.0.1"]
        cmd += ["--metrics-port", str(self.metrics_port)]
        self.controller = Child(cmd, name="autonomic controller", ready=r"^ready:")
        await self.controller.start(60)

    async def stop(self) -> None:
        if self.controller is not None:
            await self.controller.stop()
        await self.cluster.stop()

    def pids(self) -> dict[str, int]:
        out = {}
        if self.cluster.pid is not None:
            out["cluster twin"] = self.cluster.pid
            out |= {comm: p for p, comm in children(self.cluster.pid).items() if comm == "prometheus"}
        if self.controller is not None and self.controller.pid is not None:
            out["controller"] = self.controller.pid
        return out


async def _metrics(http: aiohttp.ClientSession, url: str, prefixes: tuple[str, ...]) -> dict[Any, float]:
    try:
        async with http.get(url) as r:
            return parse_samples(await r.text(), prefixes)
    except (aiohttp.ClientError, TimeoutError):
        return {}


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    duration_s, warmup_s = args.minutes * 60, args.warmup_minutes * 60
    # the twins' benchmark request log (~1 KB a request, up to 200,000 per server) is kept short: nobody reads it here
    opts = StackOptions(args.servers, args.time_scale, num_gpu_blocks=args.num_gpu_blocks, request_log=1000)
    stack = RoutingStack(opts)
    control = ClusterAndController(args.nodes, args.vms, args.cluster_time_scale)
    samples: list[dict[str, Any]] = []
    try:
        await control.start()
        await stack.start()
        assert stack.picker is not None and stack.envoy is not None
        pids = {"picker": stack.picker.pid, "envoy": stack.envoy.pid, "fleet twin": stack.fleet.pid}
        pids |= control.pids()
        pids["soak driver"] = None  # this process: the load generator
        load = OpenLoopLoad(stack.url, stack.model, args.rate)
        stop = asyncio.Event()
        running = asyncio.create_task(load.run(stop))
        timeout = aiohttp.ClientTimeout(total=5)
        print(f"soak: {args.minutes:g} min, a sample every {args.sample_seconds:g} s; processes {pids}", flush=True)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            n = 0
            while True:
                due = load.t0 + n * args.sample_seconds
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                if running.done():
                    running.result()  # the load generator failed: say why
                sample = await _sample(http, stack, control, pids, load)
                samples.append(sample)
                _progress(sample, args)
                n += 1
                if sample["t_s"] >= duration_s - 1e-6:
                    break
        stop.set()
        await running
    finally:
        await stack.stop()
        await control.stop()
    return {"samples": samples, "warmup_s": warmup_s, "pids": pids}


async def _sample(
    http: aiohttp.ClientSession,
    stack: RoutingStack,
    control: ClusterAndController,
    pids: dict[str, int | None],
    load: OpenLoopLoad,
) -> dict[str, Any]:
    procs: dict[str, Any] = {}
    established = live_tcp_inodes()
    for name, pid in pids.items():
        stat = read_proc(pid if pid is not None else _self_pid(), established)
        procs[name] = None if stat is None else {**asdict(stat), "held_fds": stat.held_fds}
    picker = await _metrics(http, stack.metrics_url, tuple(PICKER_GAUGES.values()))
    controller = await _metrics(http, control.metrics_url, CONTROLLER_SERIES)
    outcomes = load.outcomes
    return {
        "t_s": round(load.now(), 1),
        "processes": procs,
        "picker": {k: value(picker, series) if picker else None for k, series in PICKER_GAUGES.items()},
        "controller": {
            "cycles": value(controller, "autonomic_controller_cycles_total") if controller else None,
            "migrations": value(controller, "autonomic_controller_migrations_total") if controller else None,
        },
        "load": {"sent": len(outcomes), "failed": sum(not o.ok for o in outcomes), "in_flight": load.in_flight},
    }


def _self_pid() -> int:
    import os

    return os.getpid()


def _progress(sample: dict[str, Any], args: argparse.Namespace) -> None:
    p = sample["processes"]
    parts = [
        f"{name} {s['rss_mb']:.0f}MB/{s['fds']}fd" if s else f"{name} GONE"
        for name, s in p.items()
        if name != "soak driver"
    ]
    pk = sample["picker"]
    print(
        f"[{sample['t_s'] / 60:5.1f}/{args.minutes:g} min] sent {sample['load']['sent']} failed "
        f"{sample['load']['failed']} | {', '.join(parts)} | picker tasks {pk['asyncio_tasks']} in-flight "
        f"{pk['in_flight']} index {pk['precise_index_blocks']} | controller cycles {sample['controller']['cycles']}",
        flush=True,
    )
