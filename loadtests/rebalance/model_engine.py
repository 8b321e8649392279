"""`--engine model`: one rebalancing arm in discrete model time, in one process, without Prometheus or HTTP.

Why it exists: the live engine (`run.py`) runs real processes on the wall clock, so a day of load at 100 nodes x
3,000 VMs would take hours; judging a rebalancer needs that day. This engine runs the same models and the same
controller code, only without the wire between them:

- the cluster twin's `Store`, KubeVirt (VMI and migration controllers, eviction webhook, migration limits and
  durations from the dirty-rate model) and load/PSI model (`LoadTelemetry`, the VM-load trace, hotspots), as
  `ClusterApp` assembles them, on a `ManualClock` the engine moves: to each load sample (`step_s`), each controller
  cycle, and each moment KubeVirt has something due (a migration phase), so migrations end when the model says;
- the real controller loop (`controller.loop.Controller.run_cycle`: tracker, snapshot, `plan()`, actuation results,
  metrics) with a cluster source over the store (`model_io.StoreCache`), an actuator writing the store through the
  twin's own eviction and admission code (`model_io.StoreActuator`), and a Prometheus source whose query results
  are computed from the load samples of the last rate window (`model_queries.QueryModel`): same checks on arrival
  (`assemble`), same recording-rule arithmetic, same default queries (1 m windows in model time);
- cycles every `interval` model seconds; psi-relief is also woken, as in the live loop, when a migration ends or a
  node changes (not sooner than `min_interval` after the previous cycle began).
What differs from the live engine, and is stated in the report: samples are exact window means where Prometheus
extrapolates rates; the controller reads the newest sample with no scrape or rule-evaluation lag beyond `step_s`;
there are no API latencies, watch delays or Events. `docs/benchmarks/rebalance.md` states the agreement of the two
engines on one scenario.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.clock import FunctionClock
from controller.config import ControllerConfig, parse_config
from controller.loop import Controller
from controller.metrics import ControllerMetrics
from controller.sources.cluster import ClusterSource
from controller.sources.prometheus import PressureReading, PrometheusSource, assemble
from controller.tracker import MigrationTracker
from loadtests.rebalance.arm_result import ArmSeries, cycle_outcomes, explain, finish_result, unplaced_vms
from loadtests.rebalance.arms import BASELINE, BASELINE_GA, NO_OP, PROFILE_VERSIONS, PSI_RELIEF
from loadtests.rebalance.bound import BoundNode, BoundVm, bound_inputs
from loadtests.rebalance.figures import MigrationRecord
from loadtests.rebalance.model_io import StoreActuator, store_caches
from loadtests.rebalance.model_queries import QueryModel, check_queries, descheduler_scores
from loadtests.rebalance.run import RunSettings, describe
from sim.cluster.builder import build, kubevirt_config
from sim.cluster.clock import ManualClock
from sim.cluster.faults import FaultState
from sim.cluster.kubevirt import KubeVirt
from sim.cluster.resources import NODES, VMIMS, VMIS
from sim.cluster.scenario import Scenario, ScenarioError
from sim.cluster.scenario_load import apply_faults
from sim.cluster.state_view import NodeInfo
from sim.cluster.store import Store
from sim.cluster.telemetry_state import LoadTelemetry, Sample
from sim.cluster.view import StoreView
from sim.cluster.vm_trace import load_vm_trace
from sim.cluster.watch import Change

log = logging.getLogger("autonomic.loadtests.rebalance.model")

WATCHED = {rt.key: rt.plural for rt in (NODES, VMIS, VMIMS)}  # the resources whose changes wake the loop
MAX_SETTLE_ROUNDS = 50  # KubeVirt reconciles until the store stops changing (a migration step takes a few rounds)


@dataclass(frozen=True)
class ModelSettings:
    step_s: float = 20.0  # model seconds between load samples (the live engine's scrape step at 20x)
    window_s: float = 60.0  # the queries' rate window ([1m] in the controller's default queries)
    min_interval_s: float = 5.0  # earliest next cycle after an event wake-up (psi-relief), as the live engine

    def check(self) -> None:
        if not self.step_s > 0 or not self.window_s >= self.step_s:
            raise ValueError(f"model step must be > 0 and <= the rate window, got {self.step_s} and {self.window_s}")


def model_policy_config(policy: str) -> ControllerConfig | None:
    """An arm's controller configuration with the controller's default queries (1 m windows in model time)."""
    if policy == NO_OP:
        return None
    if policy in (BASELINE, BASELINE_GA):
        compat = {"profileVersion": PROFILE_VERSIONS[policy]}
        return parse_config({"policy": BASELINE, "deschedulerCompatible": compat})
    if policy == PSI_RELIEF:
        return parse_config({"policy": policy, "actuator": "migration"})
    raise ValueError(f"unknown policy {policy!r}")


class ModelTwin:
    """The cluster twin's store, KubeVirt and load model on a clock only `advance_to` moves."""

    def __init__(self, scenario: Scenario) -> None:
        self.clock = ManualClock()
        self.store = Store(self.clock)
        self.faults = FaultState()
        self.kubevirt = KubeVirt(self.store, kubevirt_config(scenario), self.faults)
        self.view = StoreView(self.store, self.clock, self.kubevirt, self.faults)
        problems = apply_faults(self.faults, scenario.faults)
        if problems:
            raise ScenarioError(problems)
        self._settled = -1  # the store's resource version after the last settle
        build(self.store, self.kubevirt, scenario)
        self.settle()
        trace = load_vm_trace(scenario.load.trace_file)
        self.telemetry = LoadTelemetry(self.view, trace, scenario.load, real_clock=self.clock.now, counters=False)
        self.telemetry.check()

    def now(self) -> float:
        return self.clock.now()

    def epoch(self) -> float:
        """The controller's clock: the model instant in epoch seconds (object timestamps use the same)."""
        return self.clock.wall().timestamp()

    def settle(self) -> None:
        """Reconcile KubeVirt until the store stops changing, as its task does after every change; nothing to do
        when the store has not changed since and nothing is due (KubeVirt's only timers: a migration's next step, a
        failed VM's restart)."""
        due = self.kubevirt.migrations.next_due
        idle = due is None or due > self.clock.now()
        if idle and self.store.resource_version == self._settled and not self.kubevirt.vmis.pending_restart:
            return
        for _ in range(MAX_SETTLE_ROUNDS):
            before = self.store.resource_version
            try:
                self.kubevirt.reconcile()
            except Exception:  # as KubeVirt's task does: log it, the next reconcile tries again
                log.exception("kubevirt reconcile failed")
            if self.store.resource_version == before:
                break
        self._settled = self.store.resource_version

    def advance_to(self, t: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Move the clock to model second `t`, stopping at each moment KubeVirt has something due; return early
        (at that moment) once `stop()` is true. What was written since the last step (a controller's actions) is
        reconciled first, at the moment it was written."""
        self.settle()
        while self.clock.now() < t:
            due = self.kubevirt.migrations.next_due
            now = self.clock.now()
            nxt = min(t, due) if due is not None and due > now else t
            self.clock.advance(nxt - now)
            self.settle()
            if stop():
                return

    def sample(self) -> Sample:
        return self.telemetry.update()


class ModelPressureSource(PrometheusSource):
    """The controller's Prometheus source, answered from `QueryModel` instead of HTTP."""

    def __init__(self, config: ControllerConfig, twin: ModelTwin, queries: QueryModel) -> None:
        super().__init__("model://", config, FunctionClock(twin.epoch))
        bad = check_queries(self.plan)
        if bad:
            raise ValueError("the model engine evaluates the controller's default queries only; not: " + "; ".join(bad))
        self.twin, self.queries = twin, queries

    def read_sync(self) -> PressureReading:
        nodes: dict[str, NodeInfo] = {n.name: n for n in self.twin.view.nodes()}
        now = self.twin.epoch()
        return assemble(self.queries.results(self.plan, nodes), now, now)


@dataclass
class ModelRun:
    """What one arm produced: per-sample pressure series, the migrations, the controller's metrics and reasons."""

    cpu: dict[str, list[float]]
    score: dict[str, list[float]]
    migrations: list[MigrationRecord]
    reasons: dict[str, list[str]]
    metrics: ControllerMetrics | None
    controller: Controller | None
    start_s: float
    end_s: float
    vm_count: int
    pending_vms_start: int
    pending_vms: int
    bounds: tuple[list[BoundNode], list[BoundVm]] | None


async def run_arm(
    scenario: Scenario,
    config: ControllerConfig | None,
    *,
    warmup_s: float,
    duration_s: float,
    interval_s: float,
    model: ModelSettings,
    progress: Callable[[str], None] = lambda _: None,
    with_bound: bool = False,
) -> ModelRun:
    """Warm up to `warmup_s`, then run the controller (none for `config` None) for `duration_s` model seconds."""
    model.check()
    twin = ModelTwin(scenario)
    queries = QueryModel(model.window_s)
    wake: list[float] = []  # model seconds of the wake-ups not acted on yet

    def on_change(_: str) -> None:
        wake.append(twin.now())

    cluster = ClusterSource(None, caches=store_caches(twin.store), on_change=on_change)

    def watch(change: Change) -> None:
        plural = WATCHED.get(change.resource)
        if plural is not None:
            cluster.observe(plural, change.type, change.old, change.obj)

    twin.store.on_change(watch)
    controller: Controller | None = None
    metrics: ControllerMetrics | None = None
    actuator: StoreActuator | None = None
    if config is not None:
        metrics = ControllerMetrics()
        actuator = StoreActuator(twin.store, twin.kubevirt.eviction, cluster, config.actuator)
        controller = Controller(
            config,
            cluster,
            ModelPressureSource(config, twin, queries),
            actuator,
            metrics,
            FunctionClock(twin.epoch),
            tracker=MigrationTracker(),
            interval_s=interval_s,
            min_interval_s=model.min_interval_s,
            wake_on_events=config.policy == "psi-relief",
        )
    next_sample = 0.0
    while next_sample <= warmup_s:
        twin.advance_to(next_sample)
        queries.add(twin.epoch(), twin.sample())
        next_sample += model.step_s
    twin.advance_to(warmup_s)
    start, end = twin.now(), twin.now() + duration_s
    bounds = arm_bound_inputs(twin) if with_bound else None
    pending_start = unplaced_vms(twin.view.vmis())
    names = [n.name for n in twin.view.nodes()]
    cpu: dict[str, list[float]] = {n: [] for n in names}
    score: dict[str, list[float]] = {n: [] for n in names}
    next_cycle, last_cycle = start, -math.inf
    next_sample, next_report, wall0 = start, start, time.monotonic()
    while not (twin.now() >= end and next_sample > end):
        wake.clear()
        target = min(next_sample, next_cycle if controller is not None else math.inf, end)
        twin.advance_to(target, stop=lambda: bool(wake))
        if wake and controller is not None and controller.wake_on_events:
            next_cycle = min(next_cycle, max(twin.now(), last_cycle + model.min_interval_s))
        if twin.now() >= next_sample:
            queries.add(twin.epoch(), twin.sample())
            infos = {n.name: n for n in twin.view.nodes()}
            windows = queries.node_windows(infos)
            scores = descheduler_scores(windows, infos)
            for n in names:
                w = windows.get(n)
                cpu[n].append(w.psi["cpu"] if w is not None else math.nan)
                score[n].append(scores.get(n, math.nan))
            next_sample += model.step_s
        if controller is not None and twin.now() >= next_cycle:
            last_cycle = twin.now()
            await controller.run_cycle()
            next_cycle = last_cycle + interval_s
        if twin.now() >= next_report:
            elapsed = (twin.now() - start) / 3600
            progress(f"model t={elapsed:.1f} h of {duration_s / 3600:g} h, {time.monotonic() - wall0:.0f} s wall")
            next_report += max(duration_s / 10, model.step_s)
    sizes = {f"{v.namespace}/{v.name}": v.memory_bytes for v in twin.view.vmis()}
    migrations = [
        MigrationRecord(
            f"{m.namespace}/{m.vmi}",
            m.phase,
            m.source_node,
            m.target_node,
            float(sizes.get(f"{m.namespace}/{m.vmi}", 0)),
            m.started_at,
            m.ended_at,
        )
        for m in twin.view.migrations()
    ]
    return ModelRun(
        cpu=cpu,
        score=score,
        migrations=migrations,
        reasons=actuator.reasons if actuator is not None else {},
        metrics=metrics,
        controller=controller,
        start_s=start,
        end_s=end,
        vm_count=len(twin.view.vmis()),
        pending_vms_start=pending_start,
        pending_vms=unplaced_vms(twin.view.vmis()),
        bounds=bounds,
    )


def arm_bound_inputs(twin: ModelTwin) -> tuple[list[BoundNode], list[BoundVm]]:
    """The MILP bound's inputs from the arm's cluster now (as the live engine takes them at the same moment)."""
    sample, host_cpu = twin.sample(), twin.telemetry.settings.host_cpu
    return bound_inputs(twin.view.nodes(), twin.view.vmis(), twin.store.peek(VMIS), sample, host_cpu)


def run_policy_model(
    scenario: Scenario,
    policy: str,
    settings: RunSettings,
    progress: Callable[[str], None] = lambda _: None,
    *,
    with_bound: bool = False,
    model: ModelSettings = ModelSettings(),
) -> dict[str, Any]:
    """One arm on a fresh model-time twin; the same result entry as the live engine's `run_policy`."""
    settings.check()
    config = model_policy_config(policy)
    result: dict[str, Any] = {"policy": policy, "controller": describe(config), "engine": "model"}
    started = time.monotonic()
    progress(f"{policy} ({result['controller']}): {settings.duration_s / 3600:g} model h in model time")
    quiet = logging.getLogger("autonomic.controller")
    level = quiet.level
    if quiet.getEffectiveLevel() == logging.INFO:  # a line per cycle, thousands a run: warnings only
        quiet.setLevel(logging.WARNING)
    try:
        run = asyncio.run(
            run_arm(
                scenario,
                config,
                warmup_s=settings.warmup_s,
                duration_s=settings.duration_s,
                interval_s=settings.interval_s,
                model=model,
                progress=lambda m: progress(f"{policy}: {m}"),
                with_bound=with_bound,
            )
        )
    finally:
        quiet.setLevel(level)
    result["pending_vms_start"], result["pending_vms"] = run.pending_vms_start, run.pending_vms
    finish_result(
        result,
        ArmSeries(run.cpu, run.score, model.step_s, run.start_s, run.end_s),
        run.migrations,
        run.reasons,
        vm_count=run.vm_count,
        threshold=settings.threshold,
        bounds=run.bounds,
        milp_max_variables=settings.milp_max_variables,
    )
    result["cycles"] = cycle_outcomes(run.metrics) if run.metrics is not None else {}
    result["last_plan"] = explain(run.controller.last_plan) if run.controller is not None else None
    result["errors"] = []
    result["wall_s"] = time.monotonic() - started
    return result
