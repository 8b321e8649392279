"""The controller's Prometheus metrics and its small HTTP server: `/metrics`, `/healthz`, `/readyz`, `/debug/state`.

Why it exists: every decision is observable (docs/architecture.md, convention 10). The series (docs/controller.md
lists them with their labels):

- `autonomic_controller_cycle_seconds` (histogram), `autonomic_controller_cycles_total{outcome}`: `acted`, a policy's
  idle code (`no-overutilized-node`, `no-pressured-node`, ...) or a skip reason;
- `autonomic_controller_skipped_cycles_total{reason}`: cycles that did not trust their inputs or could not run
  (`metrics-unavailable`, `metrics-stale`, `metrics-missing`, ..., `cache-not-synced`), never a policy that found
  nothing to do;
- `autonomic_controller_actions_total{action, result}`: migrations and taint changes asked for, by result
  (`started`, `in-progress`, `refused`, `failed`, `dry-run`, `applied`, ...);
- `autonomic_controller_migrations_total{outcome}`: migrations this controller started, by how they ended;
- `autonomic_controller_chains_total{kind}`: psi-relief's planned chains and swaps (`chain`, `swap`: two moves,
  the second held until the first succeeded; `actions_total{result="held"}` and `{result="chain-dropped"}` follow it);
- `autonomic_controller_migrations_in_flight`, `autonomic_controller_refusals` (last cycle);
- `autonomic_controller_node_pressure{node, signal}` (`score`, `psi_cpu`, ..., as read) and
  `autonomic_controller_node_signal{node}` (the policy's own value, percent or fraction);
- `autonomic_controller_untrusted_nodes{reason}` (last cycle: population nodes left out because their metrics are
  missing, invalid, out of range or stale, by rule; 0 for the rules no node failed) and
  `autonomic_controller_untrusted_node{node, reason}` (1 per such node), and the counter
  `autonomic_controller_untrusted_node_cycles_total{reason}` (one per node per cycle it was left out);
- `autonomic_controller_leader` (1 on the replica that acts), `autonomic_controller_last_cycle_timestamp_seconds`;
- `descheduler_pods_evicted_total{result, strategy, profile, namespace, node}`: the descheduler's own series, so the
  recording rules' eviction cooldown (ref §1.4) counts this controller's moves (`background` when started,
  `success` when the migration succeeded, `error` when it failed; `success` and `error` exist at 0 from the start
  so that `increase()` counts the first one).
A registry per controller: tests run several in one process.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.model import Plan
from controller.plan import UNTRUSTED
from controller.sources.prometheus import PressureReading
from controller.validate import NODE_CODES

log = logging.getLogger("autonomic.controller")
CYCLE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
PRESSURE_FIELDS = ("score", "psi_cpu", "psi_memory", "psi_io", "cpu_utilization", "memory_utilization")


class ControllerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "autonomic_controller_"
        self.cycle_seconds = Histogram(p + "cycle_seconds", "Duration of a cycle", buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter(p + "cycles", "Cycles by outcome", ["outcome"], registry=r)
        self.skipped = Counter(p + "skipped_cycles", "Cycles skipped, by reason", ["reason"], registry=r)
        self.actions = Counter(p + "actions", "Actions asked for, by result", ["action", "result"], registry=r)
        self.migrations = Counter(p + "migrations", "Started migrations, by outcome", ["outcome"], registry=r)
        self.chains = Counter(p + "chains", "Planned chains and swaps (two moves), by kind", ["kind"], registry=r)
        for kind in ("chain", "swap"):
            self.chains.labels(kind)
        self.in_flight = Gauge(p + "migrations_in_flight", "Migrations in flight (last cycle)", registry=r)
        self.refusals = Gauge(p + "refusals", "Moves refused by the budget or safety (last cycle)", registry=r)
        self.pressure = Gauge(p + "node_pressure", "Node pressure as read", ["node", "signal"], registry=r)
        self.signal = Gauge(p + "node_signal", "The policy's signal per node", ["node", "policy"], registry=r)
        self.untrusted = Gauge(
            p + "untrusted_nodes", "Nodes left out as untrusted (last cycle)", ["reason"], registry=r
        )
        self.untrusted_node = Gauge(
            p + "untrusted_node", "1 for a node left out as untrusted (last cycle)", ["node", "reason"], registry=r
        )
        self.untrusted_cycles = Counter(
            p + "untrusted_node_cycles", "Node-cycles left out as untrusted, by reason", ["reason"], registry=r
        )
        for code in NODE_CODES:
            self.untrusted.labels(code).set(0)
            self.untrusted_cycles.labels(code)
        self.leader = Gauge(p + "leader", "1 when this replica holds the lease", registry=r)
        self.last_cycle = Gauge(p + "last_cycle_timestamp_seconds", "End of the last cycle (Unix)", registry=r)
        self.evicted = Counter(
            "descheduler_pods_evicted",
            "Descheduler-compatible eviction counter (background, success, error)",
            ["result", "strategy", "profile", "namespace", "node"],
            registry=r,
        )
        self._pressure_labels: set[tuple[str, str]] = set()
        self._signal_labels: set[tuple[str, str]] = set()
        self._untrusted_labels: set[tuple[str, str]] = set()

    def observe_reading(self, reading: PressureReading) -> None:
        seen = set()
        for node, pressure in reading.nodes.items():
            for field in PRESSURE_FIELDS:
                value = getattr(pressure, field)
                if value is not None:
                    self.pressure.labels(node, field).set(value)
                    seen.add((node, field))
        for gone in self._pressure_labels - seen:
            self.pressure.remove(*gone)
        self._pressure_labels = seen

    def observe_plan(self, plan: Plan, in_flight: int) -> None:
        self.in_flight.set(in_flight)
        self.refusals.set(len(plan.refusals))
        targets = {m.vm: m.target for m in plan.moves}
        for move in plan.moves:
            if move.after is not None:
                self.chains.labels("swap" if targets.get(move.after) == move.source else "chain").inc()
        seen = set()
        for node in plan.nodes:
            if node.value is not None:
                self.signal.labels(node.node, plan.policy).set(node.value)
                seen.add((node.node, plan.policy))
        for gone in self._signal_labels - seen:
            self.signal.remove(*gone)
        self._signal_labels = seen
        untrusted = {(n.node, n.code) for n in plan.nodes if n.classification == UNTRUSTED}
        for code in NODE_CODES:
            self.untrusted.labels(code).set(sum(1 for _, c in untrusted if c == code))
        for labels in untrusted:
            self.untrusted_node.labels(*labels).set(1)
            self.untrusted_cycles.labels(labels[1]).inc()
        for gone in self._untrusted_labels - untrusted:
            self.untrusted_node.remove(*gone)
        self._untrusted_labels = untrusted

    def descheduler_eviction(self, result: str, vm: str, node: str) -> None:
        """Count one eviction; a `background` one (started) also creates its `success` and `error` series at 0.

        The recording rules count `increase(...{result="success"}[10m])`, and Prometheus sees no increase in a
        series whose first sample is already 1: without the 0, the first success per namespace and node (the
        descheduler's own counter has the same blind spot) would never lower that node's cooldown multiplier."""
        labels = ("LowNodeUtilization", "KubeVirtRelieveAndMigrate", vm.split("/", 1)[0], node)
        if result == "background":
            for outcome in ("success", "error"):
                self.evicted.labels(outcome, *labels)
        self.evicted.labels(result, *labels).inc()


async def serve_http(
    metrics: ControllerMetrics,
    *,
    healthy: Callable[[], str | None],
    ready: Callable[[], str | None],
    debug: Callable[[], dict[str, Any]],
    host: str,
    port: int,
) -> tuple[web.AppRunner, int]:
    """Start the HTTP server; `healthy`/`ready` return None when fine, else why not. Returns (runner, bound port)."""

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], str | None], ok: str) -> Callable[[web.Request], Any]:
        async def handler(_: web.Request) -> web.Response:
            problem = check()
            return web.Response(text=f"{ok}\n") if problem is None else web.Response(text=problem + "\n", status=503)

        return handler

    async def plan(_: web.Request) -> web.Response:
        return web.Response(text=json.dumps(debug(), default=_jsonable, indent=1), content_type="application/json")

    app = web.Application()
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/healthz", probe(healthy, "ok"))
    app.router.add_get("/readyz", probe(ready, "ready"))
    app.router.add_get("/debug/state", plan)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


def _jsonable(value: Any) -> Any:
    try:
        return asdict(value)
    except TypeError:
        return str(value)
