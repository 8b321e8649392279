"""Helpers for the controller's integration tests: a controller in a background thread against the cluster twin,
the twin's clock, the twin's resourceVersion, and a VMIM watch that records concurrency."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from cluster_helpers import admin, api_client
from kubernetes import client, watch

from controller.clock import FunctionClock
from controller.config import ControllerConfig, parse_config
from controller.service import ControllerOptions
from loadtests.rebalance.run import ControllerThread
from sim.cluster.scenario import Scenario, parse_scenario
from sim.cluster.twin import ClusterTwin

FAST_LEASE = {"lease_duration_s": 2.0, "renew_deadline_s": 1.5, "retry_s": 0.2}
# the twin's Prometheus uses 3 s rate windows (tests' TelemetryOptions): the raw queries must too
SHORT_WINDOWS = {
    "psiQueries": {
        "cpu": "avg by (instance) (rate(node_pressure_cpu_waiting_seconds_total[3s]))",
        "memory": "avg by (instance) (rate(node_pressure_memory_waiting_seconds_total[3s]))",
        "io": "avg by (instance) (rate(node_pressure_io_waiting_seconds_total[3s]))",
    },
    "vmQueries": {"cpuUsage": "rate(kubevirt_vmi_cpu_usage_seconds_total[3s])"},
}


def two_nodes_one_vm() -> Scenario:
    """The smallest cluster a controller process can start against: worker-0 and worker-1, one VM on worker-0."""
    return parse_scenario(
        {
            "namespaces": ["vms"],
            "nodes": [{"name": "worker-0"}, {"name": "worker-1"}],
            "vms": [{"name": "vm-0", "namespace": "vms", "cpu": 2, "memory": "2Gi", "node": "worker-0"}],
        }
    )


def controller_config(**doc: Any) -> ControllerConfig:
    metrics = {**SHORT_WINDOWS, **doc.pop("metrics", {})}
    return parse_config({"metrics": metrics, **doc})


def twin_options(twin: ClusterTwin, config: ControllerConfig, prometheus_url: str, **kw: Any) -> ControllerOptions:
    """Options for a fast controller on the twin: 0.5 s cycles, fast lease, the twin's model clock."""
    app = twin.app
    assert app is not None
    clock = FunctionClock(lambda: app.clock.wall().timestamp())
    base = ControllerOptions(
        config=config,
        prometheus_url=prometheus_url,
        kubeconfig=twin.kubeconfig_path,
        interval_s=0.5,
        min_interval_s=0.2,
        host="127.0.0.1",
        metrics_port=0,
        clock=clock,
        sync_timeout_s=20,
        **FAST_LEASE,
    )
    return replace(base, **kw)


class BackgroundController(ControllerThread):
    """The benchmark's controller thread (loadtests/rebalance/run.py) as tests use it: `start()` returns the
    controller, `stop()` raises what the controller failed with, a context manager, and metric samples."""

    def start(self, timeout_s: float = 30.0) -> BackgroundController:
        super().start(timeout_s)
        return self

    def stop(self) -> None:
        super().stop()
        if self.error is not None:
            raise self.error

    def __enter__(self) -> BackgroundController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self, name: str, **labels: str) -> float:
        assert self.running is not None
        return self.running.metrics.registry.get_sample_value(name, labels) or 0.0

    def skipped(self, reason: str) -> float:
        return self.sample("autonomic_controller_skipped_cycles_total", reason=reason)


def resource_version(twin: ClusterTwin) -> int:
    return int(admin(twin, "GET", "state")["resourceVersion"])


def vmims(twin: ClusterTwin) -> list[dict[str, Any]]:
    with api_client(twin) as api:
        body = client.CustomObjectsApi(api).list_cluster_custom_object(
            "kubevirt.io", "v1", "virtualmachineinstancemigrations"
        )
    return list(body["items"])


TERMINAL = ("Succeeded", "Failed")


@dataclass
class ConcurrencyWatch:
    """Watches VMIMs from the start and records the most that were unfinished at once, overall and per VMI and per
    source node (evacuations carry their source in `kubevirt.io/evacuationMigration`; others: `source_of`)."""

    twin: ClusterTwin
    source_of: dict[str, str] = field(default_factory=dict)  # vmi name -> node, for VMIMs without the annotation
    max_total: int = 0
    max_per_node: Counter[str] = field(default_factory=Counter)
    max_per_vmi: int = 0
    finished: list[dict[str, Any]] = field(default_factory=list)
    created: int = 0

    def __post_init__(self) -> None:
        self._open: dict[str, tuple[str, str]] = {}  # uid -> (vmi, node)
        self._watch = watch.Watch(return_type="object")
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._lock = threading.Lock()

    def start(self) -> ConcurrencyWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._watch.stop()
        self._thread.join(10)

    def _run(self) -> None:
        with api_client(self.twin) as api:
            custom = client.CustomObjectsApi(api)
            try:
                for event in self._watch.stream(
                    custom.list_cluster_custom_object, "kubevirt.io", "v1", "virtualmachineinstancemigrations"
                ):
                    self._apply(event["type"], event["raw_object"])
            except Exception:  # stopped
                return

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        uid, phase = obj["metadata"]["uid"], (obj.get("status") or {}).get("phase")
        vmi = obj["spec"]["vmiName"]
        with self._lock:
            if kind == "DELETED" or phase in TERMINAL:
                if self._open.pop(uid, None) is not None:
                    self.finished.append(obj)
                return
            if uid in self._open:
                return
            node = (obj["metadata"].get("annotations") or {}).get("kubevirt.io/evacuationMigration") or (
                self.source_of.get(vmi, "?")
            )
            self._open[uid] = (vmi, node)
            self.created += 1
            self.max_total = max(self.max_total, len(self._open))
            per_node = Counter(n for _, n in self._open.values())
            for n, count in per_node.items():
                self.max_per_node[n] = max(self.max_per_node[n], count)
            self.max_per_vmi = max(self.max_per_vmi, *Counter(v for v, _ in self._open.values()).values())

    def open_count(self) -> int:
        with self._lock:
            return len(self._open)


class ScoreExporter:
    """Per-node scores for Prometheus to scrape: `fresh_score{node}` stamped by Prometheus at each scrape, and
    `frozen_score{node}` with explicit timestamps that never advance, as Prometheus sees a stuck federation or
    pushgateway: those stay queryable (within the 5 min lookback) with an old timestamp."""

    def __init__(self, fresh: dict[str, float], frozen: dict[str, float], frozen_age_s: float) -> None:
        import time

        stamp = int((time.time() - frozen_age_s) * 1000)
        lines = ["# TYPE fresh_score gauge"]
        lines += [f'fresh_score{{node="{node}"}} {value}' for node, value in fresh.items()]
        lines += ["# TYPE frozen_score gauge"]
        lines += [f'frozen_score{{node="{node}"}} {value} {stamp}' for node, value in frozen.items()]
        self.body = ("\n".join(lines) + "\n").encode()
        self._server: Any = None

    def start(self) -> ScoreExporter:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        body = self.body

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
