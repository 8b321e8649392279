"""The controller chaos campaign's scenarios: which faults, when, and what the controller should say about them.

Why it exists: a scenario is data, so that the campaign, its short form in the test suite and the report read the
same list. Three kinds:

- `untrusted`: the fault makes every node's metrics (or Prometheus itself) untrustworthy. It is switched on and
  seen in Prometheus before the controller starts on a cluster with two hot nodes (it wants to act); every cycle
  must be skipped with `expect_skip` and nothing written. Then the fault is cleared and the controller must act
  (`recovered_s`), which proves it wanted to all along.
- `degraded`: the fault breaks one node's metrics (`bad_node`), seen in Prometheus before the controller starts.
  The controller must report that node untrusted with `expect_untrusted` (its /metrics), skip no cycle, never
  write anything touching it while it is untrusted (no migration from or to it, no taint change on it: the
  twin's record), and still relieve the other hot node(s). Then the fault is cleared: the node must be trusted
  again and, when it is hot, relieved (`recovered_s`).
- `acting`: the metrics are good and the controller acts while the API, the watches, the nodes, the migrations or
  the controller process itself fail. It must relieve the hot nodes without a duplicate migration and without
  exceeding the limits; skip reasons are reported (they are the controller's response to the fault).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HOT_NODES = ("worker-0", "worker-1")
COLD = "worker-3"  # the node whose scrapes a partial fault breaks (cold: only its absence matters)
LIMITS = {"maxInFlightTotal": 2, "maxInFlightPerNode": 1}  # the controller's; KubeVirt's are below
KUBEVIRT_LIMITS = {"total": 5, "perNode": 2}  # parallelMigrationsPerCluster, parallelOutboundMigrationsPerNode


@dataclass(frozen=True)
class Scenario:
    name: str
    what: str  # one line for the report
    kind: str  # "untrusted" | "degraded" | "acting"
    expect_skip: str | None = None  # untrusted: the only skip reason allowed while the fault is on
    expect_untrusted: str | None = None  # degraded: the reason the bad node must be reported untrusted with
    scrape: tuple[tuple[str, str], ...] = ()  # (node, mode) pairs for PUT /_twin/faults/scrape
    prometheus_down: bool = False
    api: dict[str, Any] = field(default_factory=dict)  # PUT /_twin/faults/api body
    watch_drops_s: float = 0.0  # drop every watch this often (real seconds), 0 = never
    fail_migrations: int = 0  # PUT /_twin/faults/migrations count
    notready_mid_migration: bool = False  # the target node of the first migration goes NotReady while it runs
    kill_mid_migration: bool = False  # SIGKILL the controller while its first migration runs, start another
    replicas: int = 1  # 2: leader election on, the leader is SIGKILLed once it has acted
    lease: tuple[str, ...] = ()  # extra lease flags for the replicas (default: the controller's, 10/7/2 s)
    config: dict[str, Any] = field(default_factory=dict)  # merged into the controller's configuration
    fast: bool = False  # in the test suite's short form
    act_timeout_s: float = 60.0  # degraded: how long the controller has to act on the other hot node(s)

    @property
    def bad_node(self) -> str | None:
        """degraded: the one node whose metrics the fault breaks."""
        return self.scrape[0][0] if self.kind == "degraded" and self.scrape else None


# the PSI queries of the stale scenario: a rate window long enough that the frozen node still has a rate
LONG_WINDOWS = {
    "psiQueries": {"cpu": "avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[120s]))"},
    "vmQueries": {"cpuUsage": "rate(kubevirt_vmi_cpu_usage_seconds_total[120s])"},
    "maxAgeSeconds": 8,
}

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("baseline", "no fault: the controller relieves both hot nodes", "acting", fast=True),
    Scenario(
        "prometheus-down",
        "Prometheus stopped",
        "untrusted",
        "metrics-unavailable",
        prometheus_down=True,
        fast=True,
    ),
    Scenario("scrapes-stopped", "every node's scrape stalls", "untrusted", "metrics-missing", scrape=(("*", "stall"),)),
    Scenario(
        "partial",
        f"{COLD}'s scrapes fail (503)",
        "degraded",
        expect_untrusted="metrics-missing",
        scrape=((COLD, "error"),),
    ),
    Scenario(
        "nan",
        "worker-0's PSI is NaN (worker-1 hot too)",
        "degraded",
        expect_untrusted="metrics-invalid",
        scrape=(("worker-0", "nan"),),
    ),
    Scenario(
        "out-of-range",
        "worker-0's PSI counters x100 (rate > 1; worker-1 hot too)",
        "degraded",
        expect_untrusted="metrics-out-of-range",
        scrape=(("worker-0", "inflate"),),
    ),
    Scenario(
        "stale",
        f"{COLD}'s samples frozen with an old timestamp (120 s rate windows, maxAgeSeconds 8)",
        "degraded",
        expect_untrusted="metrics-stale",
        scrape=((COLD, "frozen"),),
        config={"metrics": LONG_WINDOWS},
        act_timeout_s=180.0,  # a 120 s rate window shows the hot nodes above high about a minute after the start
    ),
    Scenario("api-503", "30% of API requests answer 503", "acting", api={"errorRate": 0.3, "errorStatus": 503}),
    Scenario("api-500", "30% of API requests answer 500", "acting", api={"errorRate": 0.3, "errorStatus": 500}),
    Scenario("api-429", "30% of API requests answer 429", "acting", api={"errorRate": 0.3, "errorStatus": 429}),
    Scenario("api-409", "50% of API writes answer 409", "acting", api={"errorRate": 0.5, "errorStatus": 409}),
    Scenario("api-latency", "every API request 300 ms late", "acting", api={"latencyMs": 300}),
    Scenario("watch-drops", "every watch dropped each second", "acting", watch_drops_s=1.0),
    Scenario("migrations-fail", "the next 2 migrations fail", "acting", fail_migrations=2),
    Scenario(
        "notready-mid-migration", "the first migration's target goes NotReady", "acting", notready_mid_migration=True
    ),
    Scenario("sigkill-restart", "SIGKILL mid-migration, restarted", "acting", kill_mid_migration=True, fast=True),
    Scenario(
        "leader-sigkill",
        "two replicas (default lease 10/7/2 s), the leader SIGKILLed after acting",
        "acting",
        replicas=2,
    ),
    Scenario(
        "partial+latency",
        f"{COLD}'s scrapes fail and every API request is 300 ms late",
        "degraded",
        expect_untrusted="metrics-missing",
        scrape=((COLD, "error"),),
        api={"latencyMs": 300},
    ),
    Scenario(
        "503+drops+sigkill",
        "20% 503s, watches dropped each second, SIGKILL mid-migration and restart",
        "acting",
        api={"errorRate": 0.2, "errorStatus": 503},
        watch_drops_s=1.0,
        kill_mid_migration=True,
    ),
    Scenario(
        "fail+notready",
        "the next migration fails and the first one's target goes NotReady",
        "acting",
        fail_migrations=1,
        notready_mid_migration=True,
    ),
)


def by_name(names: str) -> list[Scenario]:
    """The scenarios named (comma-separated; "all", "fast"); raises ValueError naming an unknown one."""
    if names in ("all", ""):
        return list(SCENARIOS)
    if names == "fast":
        return [s for s in SCENARIOS if s.fast]
    known = {s.name: s for s in SCENARIOS}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise ValueError(f"--scenarios: unknown {unknown}; choose from all, fast, {', '.join(known)}")
    return [known[n] for n in wanted]
