"""One rebalancing run: a fresh cluster twin with its real Prometheus, a controller policy (or none), the figures.

Why it exists: comparing rebalancers is fair only when each one meets the same fresh cluster (same scenario, same
load trace, same model time) and is measured the same way. A run:

1. starts a `ClusterTwin` on the scenario and its telemetry (node-exporter + a real Prometheus with the
   descheduler's recording rules) with short windows, so that model time can run `time_scale` times faster than
   real time while the rules keep their reference shape (3 s rate window at 20x is the reference's 1 minute);
2. waits until every node's PSI and descheduler score are in Prometheus and the model clock reaches `warmup`;
3. runs `controller.service.run_controller` in-process on its own thread and event loop (leader election off, the
   twin's model clock, the same model interval for every policy) for `duration` model seconds; the `no-op` arm
   runs no controller at all: the baseline; the arms are those of `arms.py` (`descheduler-compatible` is the
   operator's main profile, `descheduler-compatible-ga` the 4.21 GA one), and each run records what it ran; the
   `descheduler` arm runs the real binary instead, against a TLS twin (`descheduler_arm.py`);
4. reads the per-node CPU PSI and the descheduler score back from Prometheus (a range query over the run) and
   the migrations from the twin, and computes the figures of `figures.py`;
5. stops everything. The lower bound on moves (`bound.py`) is computed from the demands at step 3.

Synchronous (the twin and the controller run on threads of their own): call it from a thread in async code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import multiprocessing
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controller.clock import FunctionClock
from controller.config import ControllerConfig, parse_config
from controller.service import ControllerOptions, RunningController, run_controller
from loadtests.rebalance.arm_result import ArmSeries, cycle_outcomes, explain, finish_result, unplaced_vms
from loadtests.rebalance.arms import ARMS, BASELINE, BASELINE_GA, DESCHEDULER, NO_OP, PROFILE_VERSIONS, PSI_RELIEF
from loadtests.rebalance.bound import BoundNode, BoundVm, bound_inputs
from loadtests.rebalance.descheduler_arm import DeschedulerProcess, find_binary, interval_flag, unavailable
from loadtests.rebalance.figures import MigrationRecord
from sim.cluster.prometheus import TwinTelemetry, start_telemetry
from sim.cluster.resources import EVENTS, VMIS
from sim.cluster.scenario import Scenario, default_scenario_path, load_scenario
from sim.cluster.scenario_load import Hotspot
from sim.cluster.state_view import TelemetryOptions
from sim.cluster.twin import ClusterTwin

SCORE_RULE = "descheduler:node:linear_amplified_ideal_point_positive_distance:k3:avg1m"
ProgressFn = Callable[[str], None]
log = logging.getLogger("autonomic.loadtests.rebalance")


@dataclass(frozen=True)
class RunSettings:
    """Shared by every arm of a comparison. Model seconds unless named `_real_s`."""

    time_scale: float = 20.0
    duration_s: float = 900.0  # model seconds the controller runs (and pressure is measured)
    interval_s: float = 60.0  # model seconds between controller cycles, every policy alike
    warmup_s: float = 240.0  # model time at which the controller starts (after the scores appear: same for all arms)
    threshold: float = 0.30  # CPU PSI "some" above which a node counts as over (psi-relief's default `high`)
    scrape_interval_real_s: float = 1.0
    rate_window_real_s: int = 3  # the rules' and the controller's rate() window, real seconds
    smoothing_window_real_s: int = 15  # the score rules' quantile_over_time window (reference 5 m at 20x)
    cooldown_window_real_s: int = 30  # the eviction-count rules' window (reference 10 m at 20x)
    milp_max_variables: int = 20_000

    def check(self) -> None:
        if not self.time_scale > 0 or not self.duration_s > 0 or not self.interval_s > 0:
            raise ValueError("time_scale, duration and interval must be > 0")
        if not 0 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")


def default_scenario() -> Scenario:
    return load_scenario(default_scenario_path())


def policy_config(policy: str, settings: RunSettings) -> ControllerConfig | None:
    """The controller configuration of an arm (`arms.py`; None for `no-op` and the real `descheduler`); PSI queries
    use the twin's rate window."""
    if policy in (NO_OP, DESCHEDULER):
        return None
    window = f"{settings.rate_window_real_s}s"
    metrics = {
        "psiQueries": {
            d: f"avg by (instance) (rate(node_pressure_{d}_waiting_seconds_total[{window}]))"
            for d in ("cpu", "memory", "io")
        },
        "vmQueries": {"cpuUsage": f"rate(kubevirt_vmi_cpu_usage_seconds_total[{window}])"},
    }
    if policy in (BASELINE, BASELINE_GA):  # the profile as shipped: evictions, the scheduler picks targets
        compat = {"profileVersion": PROFILE_VERSIONS[policy]}
        return parse_config({"policy": BASELINE, "metrics": metrics, "deschedulerCompatible": compat})
    if policy == PSI_RELIEF:  # ours: explicit targets through VirtualMachineInstanceMigrations
        return parse_config({"policy": policy, "actuator": "migration", "metrics": metrics})
    raise ValueError(f"unknown policy {policy!r}; choose from {', '.join(ARMS)}")


def describe(config: ControllerConfig | None) -> str:
    """What an arm ran, for runs.json and the logs: `no controller`, or the policy and (baseline) its profile."""
    if config is None:
        return "no controller"
    if config.policy == BASELINE:
        return f"{config.policy}, profile {config.descheduler_compatible.describe()}"
    return f"{config.policy}, actuator {config.actuator}"


class ControllerThread:
    """`run_controller` on its own event loop in a thread; `start()` returns once it is ready."""

    def __init__(self, options: ControllerOptions) -> None:
        self.options = options
        self.running: RunningController | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="controller", daemon=True)

    def _main(self) -> None:
        async def body() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

            def ready(running: RunningController) -> None:
                self.running = running
                self._ready.set()

            await run_controller(self.options, self._stop, on_ready=ready)

        try:
            asyncio.run(body())
        except BaseException as exc:  # reported by start()/stop()
            self.error = exc
        finally:
            self._ready.set()

    def start(self, timeout_s: float = 60.0) -> None:
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"controller failed to start: {self.error}") from self.error
        if self.running is None:
            raise RuntimeError(f"controller not ready after {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)

    def cycle_outcomes(self) -> dict[str, float]:
        assert self.running is not None
        return cycle_outcomes(self.running.metrics)


def _get_json(url: str, timeout_s: float = 15.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus query failed: {body}")
    return body


def instant(prometheus_url: str, promql: str) -> dict[str, float]:
    body = _get_json(f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    return {r["metric"].get("instance", ""): float(r["value"][1]) for r in body["data"]["result"]}


def range_series(
    prometheus_url: str, promql: str, start: float, end: float, step: float, nodes: list[str]
) -> dict[str, list[float]]:
    """node -> values at start, start+step, ... end (NaN where Prometheus has no sample)."""
    q = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    body = _get_json(f"{prometheus_url}/api/v1/query_range?" + urllib.parse.urlencode(q))
    count = math.floor((end - start) / step + 1e-9) + 1
    out = {n: [math.nan] * count for n in nodes}
    for r in body["data"]["result"]:
        node = r["metric"].get("instance", "")
        if node not in out:
            continue
        for ts, value in r["values"]:
            i = round((float(ts) - start) / step)
            if 0 <= i < count:
                out[node][i] = float(value)
    return out


def _wait(probe: Callable[[], bool], what: str, timeout_real_s: float) -> None:
    deadline = time.monotonic() + timeout_real_s
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_real_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def _bound_inputs(twin: ClusterTwin, telemetry: TwinTelemetry) -> tuple[list[BoundNode], list[BoundVm]]:
    sample = twin.call(telemetry.telemetry.update)
    objects = twin.call(lambda: twin.app.store.peek(VMIS) if twin.app else [])
    return bound_inputs(twin.view.nodes(), twin.view.vmis(), objects, sample, telemetry.telemetry.settings.host_cpu)


def run_policy(
    scenario: Scenario,
    policy: str,
    settings: RunSettings = RunSettings(),
    progress: ProgressFn = lambda _: None,
    *,
    with_bound: bool = False,
) -> dict[str, Any]:
    """One arm on a fresh twin; returns the figures, the pressure series (model minutes) and what went wrong."""
    settings.check()
    config = policy_config(policy, settings)
    options = TelemetryOptions(
        scrape_interval_s=settings.scrape_interval_real_s,
        rate_window=f"{settings.rate_window_real_s}s",
        smoothing_window=f"{settings.smoothing_window_real_s}s",
        cooldown_window=f"{settings.cooldown_window_real_s}s",
        rule_interval="1s",
        tick_s=0.1,
        time_scale=settings.time_scale,
        load=scenario.load,
    )
    errors: list[str] = []
    result: dict[str, Any] = {"policy": policy, "controller": describe(config)}
    started = time.monotonic()
    peer: DeschedulerProcess | None = None
    if policy == DESCHEDULER:  # the real binary, on the wall clock: its interval is the model interval scaled
        binary = find_binary()
        if binary is None:
            raise RuntimeError(unavailable() or "no descheduler binary")
        peer = DeschedulerProcess(binary, interval_flag(settings.interval_s, settings.time_scale))
        result["controller"] = peer.describe()
    with ClusterTwin(scenario, time_scale=settings.time_scale, tls=peer is not None) as twin:
        telemetry = twin.run(start_telemetry(twin.view, options))
        try:
            url = telemetry.prometheus_url
            assert url is not None
            node_names = [n.name for n in twin.view.nodes()]
            cpu_q = f"avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[{settings.rate_window_real_s}s]))"
            _wait(lambda: len(instant(url, cpu_q)) == len(node_names), "every node's CPU PSI", 120)
            _wait(lambda: len(instant(url, SCORE_RULE)) == len(node_names), "every node's descheduler score", 120)
            _wait(lambda: twin.view.now() >= settings.warmup_s, f"model time {settings.warmup_s:g} s", 600)
            result["pending_vms_start"] = unplaced_vms(twin.view.vmis())
            bounds = _bound_inputs(twin, telemetry) if with_bound else None
            controller: ControllerThread | None = None
            if config is not None:
                app = twin.app
                assert app is not None
                controller = ControllerThread(
                    ControllerOptions(
                        config=config,
                        prometheus_url=url,
                        kubeconfig=twin.kubeconfig_path,
                        interval_s=settings.interval_s / settings.time_scale,
                        min_interval_s=min(5.0, settings.interval_s) / settings.time_scale,
                        host="127.0.0.1",
                        metrics_port=0,
                        leader_election=False,
                        clock=FunctionClock(lambda: app.clock.wall().timestamp()),
                        sync_timeout_s=30,
                    )
                )
                controller.start()
            if peer is not None:
                peer.start(twin, url)
            real_t0, model_t0 = time.time(), twin.view.now()
            progress(
                f"{policy} ({result['controller']}): running {settings.duration_s / 60:g} model min "
                f"from model t={model_t0:.0f} s"
            )
            try:
                _wait(lambda: twin.view.now() >= model_t0 + settings.duration_s, "the run's end", 3600)
            finally:
                real_t1 = time.time()
                cycles: dict[str, float] = {}
                last_plan: dict[str, Any] | None = None
                if controller is not None:
                    if controller.running is not None:
                        result["controller"] = describe(controller.running.controller.config)  # what really ran
                        last_plan = explain(controller.running.controller.last_plan)
                        cycles = controller.cycle_outcomes()
                    controller.stop()
                    if controller.error is not None:
                        errors.append(f"controller: {controller.error}")
                if peer is not None:
                    result["descheduler"] = peer.stop()
                    cycles = {"completed": float(result["descheduler"]["cycles"])}
                    if "error" in result["descheduler"]:
                        errors.append(f"descheduler: {result['descheduler']['error']}")
            result["pending_vms"] = unplaced_vms(twin.view.vmis())
            twin_vms = twin.view.vmis()
            migrations = _migrations(twin, telemetry)
            reasons = _move_reasons(twin)
            step = settings.scrape_interval_real_s
            time.sleep(step * 1.5)  # let the last sample land
            cpu = range_series(url, cpu_q, real_t0, real_t1, step, node_names)
            score = range_series(url, SCORE_RULE, real_t0, real_t1, step, node_names)
        finally:
            twin.run(telemetry.stop())
    step_model = settings.scrape_interval_real_s * settings.time_scale
    finish_result(
        result,
        ArmSeries(cpu, score, step_model, model_t0, model_t0 + settings.duration_s),
        migrations,
        reasons,
        vm_count=len(twin_vms),
        threshold=settings.threshold,
        bounds=bounds,
        milp_max_variables=settings.milp_max_variables,
    )
    result["cycles"] = cycles
    result["last_plan"] = last_plan
    result["errors"] = errors
    result["wall_s"] = time.monotonic() - started
    return result


def _move_reasons(twin: ClusterTwin) -> dict[str, list[str]]:
    """namespace/name -> the controller's `Migrating` Event messages on that VMI, oldest first (why it moved)."""
    app = twin.app
    assert app is not None
    events = twin.call(lambda: list(app.store.peek(EVENTS)))
    out: dict[str, list[str]] = {}
    for e in sorted(events, key=lambda e: str(e.get("firstTimestamp") or e["metadata"].get("creationTimestamp"))):
        obj = e.get("involvedObject") or {}
        if e.get("reason") == "Migrating" and obj.get("kind") == "VirtualMachineInstance":
            out.setdefault(f"{obj.get('namespace')}/{obj.get('name')}", []).append(str(e.get("message", "")))
    return out


def _migrations(twin: ClusterTwin, telemetry: TwinTelemetry) -> list[MigrationRecord]:
    sizes = {f"{v.namespace}/{v.name}": v.memory_domain for v in twin.call(telemetry.telemetry.update).vms}
    out = []
    for m in twin.view.migrations():
        key = f"{m.namespace}/{m.vmi}"
        record = MigrationRecord(key, m.phase, m.source_node, m.target_node, float(sizes.get(key, 0)))
        out.append(replace(record, started_at=m.started_at, ended_at=m.ended_at))
    return out


ArmRunner = Callable[..., dict[str, Any]]  # run_policy's signature: (scenario, policy, settings, progress, with_bound=)


def run_policies(
    scenario: Scenario,
    policies: list[str],
    settings: RunSettings = RunSettings(),
    progress: ProgressFn = lambda _: None,
    run_one: ArmRunner | None = None,
) -> dict[str, Any]:
    """Every policy in turn on a fresh twin (`run_one`: the live engine's `run_policy` unless another engine's is
    given); the MILP bound from the first arm's starting demands. The real `descheduler` arm needs the live engine
    and its binary: otherwise it is skipped, and `skipped` says why."""
    runner = run_one or run_policy
    out: dict[str, Any] = {"milp_lower_bound": None, "policies": {}, "skipped": {}}
    if DESCHEDULER in policies:
        why = unavailable() if run_one is None else "the real descheduler runs against the live twin only"
        if why is not None:
            progress(f"skipping the {DESCHEDULER} arm: {why}")
            out["skipped"][DESCHEDULER] = why
            policies = [p for p in policies if p != DESCHEDULER]
    for i, policy in enumerate(policies):
        progress(f"rebalance run: {policy} (fresh cluster twin)")
        result = runner(scenario, policy, settings, progress, with_bound=i == 0)
        if i == 0:
            out["milp_lower_bound"] = result.pop("milp_lower_bound", None)
            out["milp_bound_kind"] = result.pop("milp_bound_kind", "none")
        out["policies"][policy] = result
    return out


def run_policies_parallel(
    scenario: Scenario,
    policies: list[str],
    settings: RunSettings,
    run_one: ArmRunner,
    jobs: int,
    progress: ProgressFn,
) -> dict[str, Any]:
    """`run_policies` with the arms in up to `jobs` processes at once (the model engine: each arm is one CPU-bound
    process, sharing nothing); the bound from the first arm, results in the order asked."""
    out: dict[str, Any] = {"milp_lower_bound": None, "policies": {}}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("fork")) as pool:
        futures = {
            p: pool.submit(run_one, scenario, p, settings, progress, with_bound=i == 0) for i, p in enumerate(policies)
        }
        for i, policy in enumerate(policies):
            result = futures[policy].result()
            if i == 0:
                out["milp_lower_bound"] = result.pop("milp_lower_bound", None)
                out["milp_bound_kind"] = result.pop("milp_bound_kind", "none")
            out["policies"][policy] = result
    return out


def with_hotspots(scenario: Scenario, count: int, cpu_factor: float) -> Scenario:
    """The scenario with the CPU demand of the VMs on its `count` most-subscribed nodes (most vCPUs placed, ties
    by name) multiplied by `cpu_factor`: a generated cluster's trace load alone rarely reaches contention."""
    if count <= 0 or cpu_factor == 1.0:
        return scenario
    vcpus: dict[str, int] = {n.name: 0 for n in scenario.nodes}
    for vm in scenario.vms:
        if vm.node in vcpus:
            vcpus[vm.node] += vm.cpu
    hot = sorted(vcpus, key=lambda n: (-vcpus[n], n))[:count]
    spots = [Hotspot.model_validate({"node": n, "cpuFactor": cpu_factor}) for n in hot]
    load = scenario.load.model_copy(update={"hotspots": [*scenario.load.hotspots, *spots]})
    return scenario.model_copy(update={"load": load})


def with_trace(scenario: Scenario, trace_file: Path | None) -> Scenario:
    """The scenario with its VM load read from `trace_file` (same columns as the shared trace)."""
    if trace_file is None:
        return scenario
    load = scenario.load.model_copy(update={"trace_file": str(trace_file)})
    return scenario.model_copy(update={"load": load})
