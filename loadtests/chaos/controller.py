"""Chaos for the controller: each scenario of scenarios.py on a fresh cluster twin and real Prometheus, with the
real `autonomic controller` as child process(es), and its figures judged against the goals.

Why it exists: the controller's safety claims (untrusted inputs mean no action there, no VM migrated twice, limits hold
across restarts, a standby takes over) are only worth what a run under faults shows. Figures come from the twin's
store (stack.Observer, Stack.writes, the Lease) and from the controller's /metrics and logs, never its word alone:

- duplicates (goal 0): VMs with two unfinished VMIMs at once (twin), plus attempts KubeVirt refused as already in
  flight (/metrics), plus VMs migrated again after a migration of ours succeeded (twin);
- untrusted_actions (goal 0): twin writes (our VMIMs, evacuation marks, taints, our Events) in the window where
  the fault made the metrics untrusted, and the controller's own action count there;
- skips: skipped cycles by reason (/metrics; the logs' reason_code beside them); untrusted: only the expected
  reason, at least 3;
- max_in_flight (goal: within the configured limits, 2 and 1 per source node): most unfinished VMIMs at once;
- takeover_s (goal <= 15 s): SIGKILL of the leader to the standby holding the Lease (twin);
- acted / recovered_s (goal: yes): a migration of ours exists; untrusted: seconds from clearing the fault to one;
- degraded (one node's metrics broken): the node reported untrusted with the expected reason only (/metrics:
  `autonomic_controller_untrusted_node{node, reason}`, `..._untrusted_node_cycles_total{reason}` >= 3), no skipped
  cycle, untrusted_actions (goal 0) = our VMIMs created while it was untrusted whose source or target is that node
  (twin) + taint changes on it in that window (twin), a migration from the other hot node(s) in that window
  (acted_elsewhere), and once cleared the node trusted again (trusted_again_s) and, when hot, acted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.child import Child
from loadtests.chaos.scenarios import HOT_NODES, LIMITS, Scenario
from loadtests.chaos.stack import Observer, Stack, until

ROOT = Path(__file__).resolve().parents[2]
TAKEOVER_GOAL_S = 15.0
MIN_SKIPS = 3
ACT_TIMEOUT_S = 60.0
UNTRUSTED_CYCLES = "autonomic_controller_untrusted_node_cycles_total"  # {reason}
UNTRUSTED_NODE = "autonomic_controller_untrusted_node"  # {node, reason}: 1 while left out
SHORT_WINDOWS = {
    "psiQueries": {"cpu": "avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[3s]))"},
    "vmQueries": {"cpuUsage": "rate(kubevirt_vmi_cpu_usage_seconds_total[3s])"},
}


def controller_config(scenario: Scenario) -> dict[str, Any]:
    metrics = {**SHORT_WINDOWS, **scenario.config.get("metrics", {})}
    rest = {k: v for k, v in scenario.config.items() if k != "metrics"}
    return {
        "policy": "psi-relief",
        "actuator": "migration",
        "psiRelief": {"dimensions": ["cpu"]},
        "limits": dict(LIMITS),
        "metrics": metrics,
        **rest,
    }


class Controller:
    """One `autonomic controller` child: its log lines, and its /metrics read every 0.5 s while it runs."""

    def __init__(
        self, stack: Stack, config: Path, identity: str, election: bool, log_dir: Path, lease: tuple[str, ...] = ()
    ) -> None:
        self.identity, self.metrics_text, self.url = identity, "", ""
        self.lines: list[str] = []
        argv = [sys.executable, "-m", "autonomic", "--log-format", "json", "controller"]
        argv += ["--kubeconfig", str(stack.twin.kubeconfig_path), "--prometheus-url", stack.prometheus_url]
        argv += ["--config", str(config), "--interval", "1", "--min-interval", "0.5", "--twin-clock"]
        argv += ["--metrics-host", "127.0.0.1", "--metrics-port", "0", "--identity", identity]
        argv += [*lease] if election else ["--no-leader-election"]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.child = Child(
            argv,
            name=f"controller {identity}",
            ready=r"^ready: .*metrics=(\S+)/metrics",
            ready_timeout_s=90,
            env=env,
            log_path=log_dir / f"controller-{identity}.log",
            on_line=self.lines.append,
            die_with_parent=True,
        )
        self._poll: asyncio.Task[None] | None = None

    async def start(self) -> Controller:
        await self.child.start()
        assert self.child.ready_match is not None
        self.url = self.child.ready_match.group(1)
        self._poll = asyncio.create_task(self._read_metrics())
        return self

    async def _read_metrics(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while self.child.running:
                with contextlib.suppress(Exception):
                    async with http.get(f"{self.url}/metrics") as resp:
                        self.metrics_text = await resp.text()
                await asyncio.sleep(0.5)

    def counter(self, name: str) -> Counter[str]:
        """A counter's samples by their label values joined with ',' (e.g. 'migrate,in-progress')."""
        out: Counter[str] = Counter()
        for family in text_string_to_metric_families(self.metrics_text):
            for s in family.samples:
                if s.name == name:
                    out[",".join(v for _, v in sorted(s.labels.items()))] += int(s.value)
        return out

    def log_skips(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for line in self.lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("msg", "").startswith("cycle skipped"):
                    out[str(record.get("reason_code"))] += 1
        return out

    async def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no release of the Lease, nothing finished."""
        if self.child.pid is not None and self.child.running:
            os.kill(self.child.pid, signal.SIGKILL)
        await self.child.wait()
        await self.stop()

    async def stop(self) -> None:
        await self.child.stop()
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll


@dataclass
class Result:
    scenario: Scenario
    figures: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, bool] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0
    window: set[str] = field(default_factory=set)  # degraded: our VMIMs created while the bad node was untrusted

    @property
    def passed(self) -> bool:
        return self.error is None and all(self.goals.values())


async def run_scenario(scenario: Scenario, out: Path, progress: Callable[[str], None]) -> Result:
    result, started = Result(scenario), time.monotonic()
    log_dir = out / scenario.name
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = await Stack.start()
    observer = Observer(stack)
    watcher = asyncio.create_task(observer.run())
    controllers: list[Controller] = []
    tasks: list[asyncio.Task[Any]] = []
    with tempfile.TemporaryDirectory(prefix="autonomic-chaos-") as tmp:
        config = Path(tmp) / "controller.yaml"
        config.write_text(yaml.safe_dump(controller_config(scenario)))

        async def launch(identity: str) -> Controller:
            c = Controller(stack, config, identity, scenario.replicas > 1, log_dir, scenario.lease)
            controllers.append(c)
            return await c.start()

        try:
            if scenario.kind == "untrusted":
                await _untrusted(scenario, stack, launch, result, progress)
            elif scenario.kind == "degraded":
                await _degraded(scenario, stack, launch, observer, result, progress)
            else:
                await _acting(scenario, stack, launch, observer, result, tasks, progress)
        except Exception as exc:  # the scenario could not be run to its end: reported, the campaign goes on
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            for task in (*tasks, watcher):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for c in controllers:
                await c.stop()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(observer.finish)
            await stack.stop()
    _judge(scenario, result, controllers, observer)
    result.seconds = round(time.monotonic() - started, 1)
    return result


async def _untrusted(scenario: Scenario, stack: Stack, launch: Any, result: Result, say: Callable[[str], None]) -> None:
    if scenario.api:
        stack.admin("PUT", "faults/api", scenario.api)
    await _break_metrics(scenario, stack)
    say(f"{scenario.name}: fault seen in Prometheus, controller starting")
    before = await asyncio.to_thread(stack.writes)
    controller = await launch("chaos-a")
    await until(
        lambda: sum(controller.counter("autonomic_controller_skipped_cycles_total").values()) >= MIN_SKIPS,
        60,
        f"{MIN_SKIPS} skipped cycles",
    )
    await asyncio.sleep(0)  # the metrics just read are the window's
    after = await asyncio.to_thread(stack.writes)
    result.figures["untrusted_actions"] = sum(((after - before) + (before - after)).values())
    result.figures["untrusted_controller_actions"] = sum(
        controller.counter("autonomic_controller_actions_total").values()
    )
    result.figures["skips"] = dict(controller.counter("autonomic_controller_skipped_cycles_total"))
    result.figures["log_skips"] = dict(controller.log_skips())
    say(f"{scenario.name}: {result.figures['skips']}; clearing the fault")
    cleared = time.monotonic()
    stack.admin("POST", "faults/reset")
    if scenario.prometheus_down:
        assert stack.telemetry.prometheus is not None
        await asyncio.to_thread(stack.twin.run, stack.telemetry.prometheus.start())
    await until(lambda: bool(stack.ours()), ACT_TIMEOUT_S + 30, "a migration after the fault was cleared")
    result.figures["recovered_s"] = round(time.monotonic() - cleared, 1)


async def _degraded(
    scenario: Scenario, stack: Stack, launch: Any, observer: Observer, result: Result, say: Callable[[str], None]
) -> None:
    bad, figures = scenario.bad_node, result.figures
    assert bad is not None
    others = {n for n in HOT_NODES if n != bad}
    if scenario.api:
        stack.admin("PUT", "faults/api", scenario.api)
    await _break_metrics(scenario, stack)
    say(f"{scenario.name}: fault on {bad} seen in Prometheus, controller starting")
    before = await asyncio.to_thread(stack.writes)
    controller = await launch("chaos-a")
    reported: set[str] = set()

    def untrusted_cycles() -> int:
        return controller.counter(UNTRUSTED_CYCLES).get(scenario.expect_untrusted or "", 0)

    def acted_elsewhere() -> list[str]:
        return [name for name, (source, _) in observer.endpoints.items() if source in others]

    def enough() -> bool:
        reported.update(k for k, v in controller.counter(UNTRUSTED_NODE).items() if v)
        return untrusted_cycles() >= MIN_SKIPS and bool(acted_elsewhere())

    with contextlib.suppress(TimeoutError):  # judged below: a missed goal, not an aborted run
        await until(enough, scenario.act_timeout_s, f"{bad} untrusted and a migration from {sorted(others)}")
    await asyncio.sleep(1.0)  # a few more cycles with the fault on
    enough()
    after = await asyncio.to_thread(stack.writes)
    window = {m["metadata"]["name"] for m in stack.ours()}
    taints = {k: after[k] - before[k] for k in set(after) | set(before) if k.startswith(f"taint {bad}:")}
    figures["untrusted"] = {k: v for k, v in controller.counter(UNTRUSTED_CYCLES).items() if v}
    figures["untrusted_reported"] = sorted(reported)
    figures["skips"] = dict(controller.counter("autonomic_controller_skipped_cycles_total"))
    figures["taint_changes_on_bad_node"] = sum(abs(v) for v in taints.values())
    figures["acted_elsewhere"] = len(acted_elsewhere())
    result.window = window
    say(f"{scenario.name}: {figures['untrusted']}, {figures['acted_elsewhere']} migration(s) elsewhere; clearing")
    cleared = time.monotonic()
    stack.admin("POST", "faults/reset")
    with contextlib.suppress(TimeoutError):
        await until(lambda: not controller.counter(UNTRUSTED_NODE).get(f"{bad},{scenario.expect_untrusted}"), 30, "")
        figures["trusted_again_s"] = round(time.monotonic() - cleared, 1)
        if bad in HOT_NODES:
            await until(lambda: any(s == bad for s, _ in observer.endpoints.values()), ACT_TIMEOUT_S, f"{bad} acted on")
            figures["recovered_s"] = round(time.monotonic() - cleared, 1)


async def _break_metrics(scenario: Scenario, stack: Stack) -> None:
    for node, mode in scenario.scrape:
        stack.admin("PUT", "faults/scrape", {"node": node, "mode": mode})
    if scenario.prometheus_down:
        assert stack.telemetry.prometheus is not None
        await asyncio.to_thread(stack.twin.run, stack.telemetry.prometheus.stop())
        return
    nodes = {node for node, _ in scenario.scrape}
    psi = scenario.config.get("metrics", {}).get("psiQueries", {}).get("cpu")

    def seen() -> bool:
        values = stack.query(psi) if psi else stack.cpu_psi()
        modes = {mode for _, mode in scenario.scrape}
        if modes & {"error", "stall"}:
            return not (nodes - {"*"}) & set(values) and ("*" not in nodes or not values)
        if "nan" in modes:
            return all(v != v for n, v in values.items() if n in nodes)
        if "inflate" in modes:
            return all(v > 1 for n, v in values.items() if n in nodes)
        ages = stack.query("time() - timestamp(node_pressure_cpu_waiting_seconds_total)")
        return all(ages.get(n, 0) > 8 for n in nodes) and all(n in values for n in nodes)

    await until(seen, 60, f"the scrape fault {scenario.scrape} in Prometheus")


async def _acting(
    scenario: Scenario,
    stack: Stack,
    launch: Any,
    observer: Observer,
    result: Result,
    tasks: list[asyncio.Task[Any]],
    say: Callable[[str], None],
) -> None:
    if scenario.fail_migrations:
        stack.admin("PUT", "faults/migrations", {"count": scenario.fail_migrations})
    first = [await launch(f"chaos-{c}") for c in "ab"[: scenario.replicas]]
    if scenario.api:
        stack.admin("PUT", "faults/api", scenario.api)
    if scenario.watch_drops_s:
        tasks.append(asyncio.create_task(_drop_watches(stack, scenario.watch_drops_s)))
    began = time.monotonic()

    def running() -> dict[str, Any] | None:
        return next((m for m in stack.ours() if (m.get("status") or {}).get("phase") == "Running"), None)

    migration = await _wait(running, ACT_TIMEOUT_S, "a migration of ours Running")
    result.figures["first_migration_s"] = round(time.monotonic() - began, 1)
    if scenario.notready_mid_migration:
        target = ((migration.get("status") or {}).get("migrationState") or {}).get("targetNode")
        stack.admin("POST", f"nodes/{target}/notready")
        result.figures["notready"] = target
        say(f"{scenario.name}: {target} NotReady during {migration['metadata']['name']}")
    if scenario.kill_mid_migration:
        await first[0].kill()
        say(f"{scenario.name}: SIGKILL during {migration['metadata']['name']}, restarting")
        await launch("chaos-restarted")
    if scenario.replicas > 1:
        leader = await _wait(stack.lease_holder, 10, "a Lease holder")
        victim = next(c for c in first if c.identity == leader)
        killed = time.monotonic()
        await victim.kill()
        await until(lambda: stack.lease_holder() not in ("", leader), 60, "the standby to take the Lease", 0.05)
        result.figures["takeover_s"] = round(time.monotonic() - killed, 1)
        say(f"{scenario.name}: {leader} SIGKILLed, takeover in {result.figures['takeover_s']} s")
    with contextlib.suppress(TimeoutError):
        await until(lambda: stack.relieved() and not observer.sample_open(), 90, "the hot nodes relieved")
    result.figures["relieved"] = await asyncio.to_thread(stack.relieved)


async def _wait(probe: Callable[[], Any], timeout_s: float, what: str) -> Any:
    found: list[Any] = []

    def check() -> bool:
        value = probe()
        if value:
            found.append(value)
        return bool(value)

    await until(check, timeout_s, what, 0.05)
    return found[-1]


async def _drop_watches(stack: Stack, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(stack.admin, "POST", "watches/drop")


def _judge(scenario: Scenario, result: Result, controllers: list[Controller], observer: Observer) -> None:
    figures, goals = result.figures, result.goals
    actions: Counter[str] = sum((c.counter("autonomic_controller_actions_total") for c in controllers), Counter())
    if scenario.kind == "degraded" and scenario.bad_node:
        touching = observer.touching(result.window, scenario.bad_node)
        figures["untrusted_actions"] = len(touching) + figures.get("taint_changes_on_bad_node", 1)
        figures["touching_bad_node"] = touching
    if scenario.kind == "acting":
        figures["skips"] = dict(
            sum((c.counter("autonomic_controller_skipped_cycles_total") for c in controllers), Counter())
        )
        figures["skips"].pop("not-leader", None)
    figures["actions"] = dict(actions)
    figures.update(observer.figures())
    in_progress = actions.get("migrate,in-progress", 0)
    figures["duplicates"] = len(observer.overlapping_vms) + in_progress + figures.get("moved_again", 0)
    goals["no duplicate migration"] = figures["duplicates"] == 0
    goals["limits held"] = (
        observer.max_total <= LIMITS["maxInFlightTotal"] and observer.max_per_node <= LIMITS["maxInFlightPerNode"]
    )
    if scenario.kind == "untrusted":
        goals["no action on untrusted data"] = figures.get("untrusted_actions", 1) == 0 and (
            figures.get("untrusted_controller_actions", 1) == 0
        )
        skips = figures.get("skips", {})
        goals[f"skips: only {scenario.expect_skip}"] = set(skips) == {scenario.expect_skip} and (
            skips[scenario.expect_skip] >= MIN_SKIPS
        )
        goals["acted once the fault cleared"] = "recovered_s" in figures
    elif scenario.kind == "degraded":
        bad, reason = scenario.bad_node, scenario.expect_untrusted
        goals[f"{bad} untrusted: only {reason}"] = figures.get("untrusted_reported") == [f"{bad},{reason}"] and set(
            figures.get("untrusted", {})
        ) == {reason}
        goals["no skipped cycle"] = not any(figures.get("skips", {"?": 1}).values())
        goals[f"nothing written touching {bad} while untrusted"] = figures.get("untrusted_actions", 1) == 0
        goals["acted on the other hot node(s)"] = figures.get("acted_elsewhere", 0) > 0
        goals[f"{bad} trusted again once cleared"] = "trusted_again_s" in figures
        if bad in HOT_NODES:
            goals[f"{bad} relieved once cleared"] = "recovered_s" in figures
    else:
        goals["acted"] = figures.get("migrations", 0) > 0
    if scenario.replicas > 1:
        goals[f"takeover <= {TAKEOVER_GOAL_S:g} s"] = figures.get("takeover_s", 1e9) <= TAKEOVER_GOAL_S
