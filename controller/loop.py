"""The controller's cycle and the loop that runs it: read, plan, act, explain; on a timer and on cluster events.

Why it exists: it is the thin async shell around the pure planner (docs/architecture.md, convention 1). One cycle:

1. not the leader (another replica acts) or the cluster cache not synced: skip, and say so;
2. follow up the migrations this controller started (tracker.py): outcomes are counted and logged; a chain's
   second move held since an earlier cycle starts once its first move succeeded, or is dropped (tracker.py);
3. read Prometheus (sources/prometheus.py) and build the snapshot from the cache (sources/cluster.py), with the
   requests the cache has not shown yet counted as in flight;
4. `plan(snapshot, config, now)` in a worker thread (the exact search may take a while on a large cluster and must
   not stall lease renewals or health checks);
5. warn once, naming them, about the nodes the plan left out as untrusted (their metrics missing, invalid, out of
   range or stale); carry out the moves, then the taint changes, through the actuator (real or dry-run),
   re-checking leadership before each write; every action is a metric, a log line and, for real, an Event.
A skipped cycle writes nothing, taints included. Cycles run every `interval_s`, and sooner (but not within
`min_interval_s` of the previous start) when the cluster source reports a change that matters (a migration ended,
a node changed) and `wake_on_events` is on, or when this replica becomes the leader. The service turns event
wake-ups on for psi-relief only: it discounts moves its metrics cannot show yet (`metricLagSeconds`), while the
descheduler's loop runs on its interval alone (ref §2.1), and waking it right after a migration would make the
baseline act on stale scores more often than the profile does. A failing cycle is logged and counted (`error`)
and the loop goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from controller.actuators import HELD, HELD_DROPPED, STARTED, ActionResult, Actuator
from controller.clock import Clock
from controller.config import ControllerConfig
from controller.metrics import ControllerMetrics
from controller.model import Move, Plan
from controller.plan import UNTRUSTED
from controller.plan import plan as make_plan
from controller.sources.cluster import ClusterSource
from controller.sources.prometheus import PressureReading, PrometheusSource
from controller.tracker import MigrationTracker, Outcome, Requested
from controller.validate import INPUT_CODES

log = logging.getLogger("autonomic.controller")
TAINT_PARALLELISM = 20  # nodes whose taints change at once (the soft-tainter's, ref §1.5)


class Controller:
    def __init__(
        self,
        config: ControllerConfig,
        cluster: ClusterSource,
        prometheus: PrometheusSource,
        actuator: Actuator,
        metrics: ControllerMetrics,
        clock: Clock,
        *,
        tracker: MigrationTracker | None = None,
        is_leader: Callable[[], bool] = lambda: True,
        interval_s: float = 60.0,
        min_interval_s: float = 5.0,
        wake_on_events: bool = True,
    ) -> None:
        self.config, self.cluster, self.prometheus, self.actuator = config, cluster, prometheus, actuator
        self.metrics, self.clock, self.is_leader = metrics, clock, is_leader
        self.tracker = tracker or MigrationTracker()
        self.interval_s, self.min_interval_s = interval_s, min(min_interval_s, interval_s)
        self.wake_on_events = wake_on_events
        self.last_plan: Plan | None = None
        self.last_skip: tuple[str, str] | None = None  # (code, reason) of the last skipped cycle
        self.cycles_run = 0
        self.heartbeat = time.monotonic()
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ---- wake-ups (any thread) -----------------------------------------------------------------------------------
    def wake(self, reason: str, *, always: bool = False) -> None:
        """Run the next cycle early: on cluster events when `wake_on_events`, and always when `always`."""
        loop = self._loop
        if (always or self.wake_on_events) and loop is not None and not loop.is_closed():
            log.debug("wake-up", extra={"why": reason})
            loop.call_soon_threadsafe(self._wake.set)

    # ---- the loop ------------------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self._loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = self._loop.time()
            self._wake.clear()
            try:
                await self.run_cycle()
            except Exception:
                log.exception("cycle failed")
                self.metrics.skipped.labels("error").inc()
            self.heartbeat = time.monotonic()
            await self._pause(stop, started)
            self.heartbeat = time.monotonic()

    async def _pause(self, stop: asyncio.Event, started: float) -> None:
        loop = asyncio.get_running_loop()
        woke = await _first(stop, self._wake, started + self.interval_s - loop.time())
        if woke is self._wake and not stop.is_set():
            await _first(stop, None, started + self.min_interval_s - loop.time())

    # ---- one cycle -----------------------------------------------------------------------------------------------
    async def run_cycle(self) -> Plan | None:
        """One cycle; returns the plan, or None when it could not plan at all (not leader, cache not synced)."""
        t0 = time.perf_counter()
        if not self.is_leader():
            return self._skip("not-leader", "another replica holds the lease", log_level=logging.DEBUG)
        if not self.cluster.synced:
            return self._skip("cache-not-synced", "cluster cache not synced: " + ", ".join(self.cluster.not_synced()))
        outcomes = self.tracker.update(self.cluster, self.clock.now())
        for outcome in outcomes:
            self._outcome(outcome)
        await self._release_held(outcomes)
        reading = await self.prometheus.read()
        self.metrics.observe_reading(reading)
        plan, in_flight = await asyncio.to_thread(self._plan, reading)
        self.last_plan, self.cycles_run = plan, self.cycles_run + 1
        self.metrics.observe_plan(plan, in_flight)
        if plan.skip_code in INPUT_CODES:
            self._skip(plan.skip_code or "", plan.skipped or "", log_level=logging.WARNING)
        else:
            self.last_skip = None
            self._warn_untrusted(plan)
            self.metrics.cycles.labels("acted" if plan.moves or plan.taint_changes else plan.skip_code or "idle").inc()
            results = await self._carry_out(plan)
            self._log_plan(plan, results, time.perf_counter() - t0)
        self.metrics.cycle_seconds.observe(time.perf_counter() - t0)
        self.metrics.last_cycle.set(time.time())
        return plan

    def _plan(self, reading: PressureReading) -> tuple[Plan, int]:
        now = self.clock.now()
        snapshot = self.cluster.snapshot(
            reading,
            taken_at=now,
            cluster_eviction_strategy=self.config.cluster_eviction_strategy,
            extra=self.tracker.pending(),
        )
        if reading.error:
            snapshot = replace(snapshot, metrics_error=reading.error)
        return make_plan(snapshot, self.config, self.clock.now()), len(snapshot.migrations)

    def _warn_untrusted(self, plan: Plan) -> None:
        """One warning per cycle naming the nodes left out (a skipped cycle's own warning names them already)."""
        untrusted = [n for n in plan.nodes if n.classification == UNTRUSTED]
        if untrusted:
            log.warning(
                f"{len(untrusted)} node(s) untrusted, left out of this cycle: "
                + "; ".join(f"{n.node} ({n.note})" for n in untrusted),
                extra={
                    "untrusted": {n.node: n.code for n in untrusted},
                    "policy": self.config.policy,
                },
            )

    def _skip(self, code: str, reason: str, *, log_level: int = logging.WARNING) -> Plan | None:
        self.last_skip = (code, reason)
        self.metrics.skipped.labels(code).inc()
        self.metrics.cycles.labels(code).inc()
        log.log(log_level, "cycle skipped: " + reason, extra={"reason_code": code, "policy": self.config.policy})
        return None

    async def _release_held(self, outcomes: list[Outcome]) -> None:
        """Start the chains' second moves whose first move succeeded; drop the others (tracker.py, "Chains")."""
        ready, dropped = self.tracker.release(outcomes, self.clock.now())
        for move, why in dropped:
            self.metrics.actions.labels("migrate", HELD_DROPPED).inc()
            log.warning(f"chain step dropped: {move.vm} from {move.source}: {why}", extra={"vm": move.vm, "why": why})
        for move in ready:
            if not self.is_leader():
                return
            await self._migrate(move, self.config.policy, dry_run=False)

    async def _migrate(self, move: Move, policy: str, *, dry_run: bool) -> ActionResult:
        # the request's time is when it was sent: KubeVirt may create (and stamp) the evacuation's VMIM before the
        # eviction call answers, and the tracker recognises it by a creation time not older than the request
        requested_at = self.clock.now()
        result = await self.actuator.migrate(move)
        self.metrics.actions.labels("migrate", result.result).inc()
        if result.result == STARTED:
            self.tracker.record(Requested(move.vm, move.source, move.target, requested_at, result.migration))
            self.metrics.descheduler_eviction("background", move.vm, move.source)
        log.info(
            f"migration {result.result}: {move.vm} from {move.source}" + (f" to {move.target}" if move.target else ""),
            extra={
                "vm": move.vm,
                "source": move.source,
                "target": move.target,
                "result": result.result,
                "detail": result.detail,
                "why": move.reason,
                "policy": policy,
                "dry_run": dry_run,
            },
        )
        return result

    def _hold(self, move: Move, first: ActionResult | None) -> ActionResult:
        """A chain's second move waits for its first (started in this cycle) to succeed, else it is dropped."""
        if first is not None and first.result == STARTED:
            self.tracker.hold(move, self.clock.now())
            result, detail = HELD, f"waits for {move.after} to finish"
        else:
            result, detail = HELD_DROPPED, f"{move.after}, which it waits for, was not started"
        self.metrics.actions.labels("migrate", result).inc()
        log.info(
            f"migration {result}: {move.vm} from {move.source}: {detail}", extra={"vm": move.vm, "why": move.reason}
        )
        return ActionResult("migrate", move.vm, result, detail, None, move.reason)

    async def _carry_out(self, plan: Plan) -> list[ActionResult]:
        results: list[ActionResult] = []
        by_vm: dict[str, ActionResult] = {}
        for move in plan.moves:
            if not self.is_leader():
                log.warning("leadership lost mid-cycle: remaining actions dropped")
                return results
            if move.after is not None and not plan.dry_run:
                result = self._hold(move, by_vm.get(move.after))
            else:
                result = await self._migrate(move, plan.policy, dry_run=plan.dry_run)
            results.append(result)
            by_vm[move.vm] = result
        return results + await self._set_taints(plan)

    async def _set_taints(self, plan: Plan) -> list[ActionResult]:
        """The plan's taint changes, nodes in parallel (at most `TAINT_PARALLELISM` at once, as the soft-tainter
        patches 20), each node's own changes in order: a change reads and rewrites its node's whole taint list, so
        two on one node at once would conflict. Done one by one, a first cycle that taints dozens of nodes took
        minutes of model time on the benchmark's twin (issue 13, item 4). In plan order in the results."""
        why = {n.node: f"{n.classification} ({n.note or 'signal ' + _fmt(n.value)})" for n in plan.nodes}
        by_node: dict[str, list[int]] = {}
        for i, change in enumerate(plan.taint_changes):
            by_node.setdefault(change.node, []).append(i)
        results: list[ActionResult | None] = [None] * len(plan.taint_changes)
        gate = asyncio.Semaphore(TAINT_PARALLELISM)

        async def node_changes(indices: list[int]) -> None:
            async with gate:
                for i in indices:
                    if not self.is_leader():
                        return
                    change = plan.taint_changes[i]
                    result = await self.actuator.set_taint(change, f"{plan.policy}: node {why.get(change.node, '')}")
                    results[i] = result
                    self.metrics.actions.labels("taint", result.result).inc()
                    log.info(
                        f"taint {result.result}: {change.action} {change.key} on {change.node}",
                        extra={
                            "node": change.node,
                            "result": result.result,
                            "detail": result.detail,
                            "why": result.reason,
                        },
                    )

        await asyncio.gather(*(node_changes(indices) for indices in by_node.values()))
        return [r for r in results if r is not None]

    def _outcome(self, outcome: Outcome) -> None:
        self.metrics.migrations.labels(outcome.outcome).inc()
        if outcome.outcome in ("succeeded", "failed"):
            result = "success" if outcome.outcome == "succeeded" else "error"
            self.metrics.descheduler_eviction(result, outcome.vm, outcome.source)
        level = logging.INFO if outcome.outcome == "succeeded" else logging.WARNING
        log.log(
            level,
            f"migration {outcome.outcome}: {outcome.vm} from {outcome.source}",
            extra={
                "vm": outcome.vm,
                "migration": outcome.migration,
                "outcome": outcome.outcome,
                "detail": outcome.detail,
            },
        )

    def _log_plan(self, plan: Plan, results: list[ActionResult], seconds: float) -> None:
        log.info(
            f"cycle: {len(plan.moves)} move(s), {len(plan.taint_changes)} taint change(s)"
            + (f"; {plan.skipped}" if plan.skipped else ""),
            extra={
                "policy": plan.policy,
                "dry_run": plan.dry_run,
                "outcome": plan.skip_code or "acted",
                "moves": [f"{m.vm} {m.source}->{m.target or '?'}" for m in plan.moves],
                "results": [r.result for r in results],
                "refusals": len(plan.refusals),
                "seconds": round(seconds, 4),
            },
        )
        for node in plan.nodes:
            log.debug(
                f"node {node.node}: {node.classification}",
                extra={"node": node.node, "value": node.value, "low": node.low, "high": node.high, "note": node.note},
            )
        for refusal in plan.refusals:
            log.debug(f"not moved: {refusal.subject}: {refusal.reason}", extra={"subject": refusal.subject})


async def _first(stop: asyncio.Event, other: asyncio.Event | None, seconds: float) -> asyncio.Event | None:
    """Wait until `stop` or `other` is set, or `seconds` pass; returns the event that fired (None on timeout)."""
    if stop.is_set():
        return stop
    if other is not None and other.is_set():
        return other
    if seconds <= 0:
        return None
    waiters = {asyncio.ensure_future(stop.wait()): stop}
    if other is not None:
        waiters[asyncio.ensure_future(other.wait())] = other
    done, pending = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return waiters[next(iter(done))] if done else None


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"
