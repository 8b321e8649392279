"""The twin's telemetry: load and PSI model, node exporter, and a real Prometheus as a child process with the
descheduler's recording rules. `start_telemetry` is the hook `sim/cluster/server.py` awaits.

Why it exists: the controller reads node pressure through PromQL, exactly as in a cluster, so the twin runs
the real thing (the Debian `prometheus` package, 2.42): a temporary directory holds prometheus.yml, the
rendered rules, the file_sd target list and the TSDB; Prometheus listens on 127.0.0.1 only, is ready when
`/-/ready` answers 200, and is stopped (SIGTERM, then SIGKILL) with the twin (harness.child). On Linux it also gets
SIGTERM if the twin dies without stopping it (PR_SET_PDEATHSIG), so no Prometheus outlives a crashed test.
Without a Prometheus binary it fails with a message naming `make prometheus`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from harness.child import Child, ChildError
from harness.netutil import free_port
from harness.probes import http_ready
from sim.cluster.exporter import KSM_PATH, NodeExporter
from sim.cluster.prometheus_config import RULES_PATH, RuleWindows, render_config, render_rules, scrape_timeout
from sim.cluster.scenario_load import LoadSettings
from sim.cluster.state_view import ClusterView, TelemetryOptions
from sim.cluster.telemetry_state import LoadError, LoadTelemetry
from sim.cluster.vm_trace import TraceError, load_vm_trace

log = logging.getLogger("autonomic.cluster.prometheus")
PROMETHEUS_ENV = "AUTONOMIC_PROMETHEUS"
DEFAULT_BINARY = "/usr/bin/prometheus"


class TelemetryError(RuntimeError):
    """Telemetry could not start; the message says what to do."""


def prometheus_binary(configured: str | None = None) -> Path:
    path = Path(configured or os.environ.get(PROMETHEUS_ENV) or DEFAULT_BINARY)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise TelemetryError(
            f"Prometheus not found at {path}: run `make prometheus` (installs the Debian packages prometheus and "
            f"prometheus-node-exporter), set ${PROMETHEUS_ENV}, or use --no-prometheus"
        )
    return path


class PrometheusProcess:
    def __init__(self, binary: Path, workdir: Path, *, port: int, retention: str) -> None:
        self.binary, self.workdir, self.port, self.retention = binary, workdir, port, retention
        self._child: Child | None = None
        self.log_path = workdir / "prometheus.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, timeout_s: float = 60.0) -> None:
        args = [
            str(self.binary),
            f"--config.file={self.workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.workdir / 'data'}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]
        ready = http_ready(f"{self.url}/-/ready")
        self._child = Child(args, name="Prometheus", ready=ready, log_path=self.log_path, die_with_parent=True)
        try:
            await self._child.start(timeout_s)
        except ChildError as exc:
            raise TelemetryError(str(exc)) from None

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()


class TwinTelemetry:
    """What `start_telemetry` started (the `Telemetry` of state_view.py)."""

    def __init__(
        self,
        telemetry: LoadTelemetry,
        exporter: NodeExporter,
        prometheus: PrometheusProcess | None,
        tmp: tempfile.TemporaryDirectory[str],
    ) -> None:
        self.telemetry, self.exporter, self.prometheus, self._tmp = telemetry, exporter, prometheus, tmp

    @property
    def prometheus_url(self) -> str | None:
        return self.prometheus.url if self.prometheus is not None else None

    @property
    def exporter_url(self) -> str:
        return self.exporter.url

    @property
    def workdir(self) -> Path:
        return Path(self._tmp.name)

    async def stop(self) -> None:
        try:
            if self.prometheus is not None:
                await self.prometheus.stop()
        finally:
            await self.exporter.stop()
            self._tmp.cleanup()


async def start_telemetry(view: ClusterView, options: TelemetryOptions) -> TwinTelemetry:
    """Load model + exporter, then (unless options.prometheus is False) Prometheus, ready to be queried."""
    settings = options.load if options.load is not None else LoadSettings.model_validate({})
    windows = RuleWindows(options.rate_window, options.smoothing_window, options.cooldown_window, options.rule_interval)
    binary = prometheus_binary(options.prometheus_binary) if options.prometheus else None
    try:
        windows.check()
        telemetry = LoadTelemetry(view, load_vm_trace(settings.trace_file), settings)
        telemetry.check()
    except (TraceError, LoadError, ValueError) as exc:
        raise TelemetryError(str(exc)) from None
    tmp = tempfile.TemporaryDirectory(prefix="autonomic-telemetry-")
    workdir = Path(tmp.name)
    exporter = NodeExporter(
        telemetry,
        view,
        port=options.exporter_port or 0,
        tick_s=options.tick_s,
        stall_s=scrape_timeout(options.scrape_interval_s) + 1.0,
        targets_path=workdir / "nodes.json",
    )
    prometheus: PrometheusProcess | None = None
    try:
        await exporter.start()
        if binary is not None:
            rules = workdir / "descheduler-rules.yaml"
            rules.write_text(render_rules(RULES_PATH.read_text(), windows))
            (workdir / "prometheus.yml").write_text(
                render_config(
                    scrape_interval_s=options.scrape_interval_s,
                    rules_path=rules,
                    node_targets_path=workdir / "nodes.json",
                    exporter_address=exporter.address,
                    ksm_path=KSM_PATH,
                    extra_targets=options.extra_scrape_targets,
                )
            )
            prometheus = PrometheusProcess(
                binary, workdir, port=options.prometheus_port or free_port(), retention=options.retention
            )
            await prometheus.start()
            log.info("prometheus ready", extra={"url": prometheus.url, "exporter": exporter.url})
    except BaseException:
        await exporter.stop()
        tmp.cleanup()
        raise
    return TwinTelemetry(telemetry, exporter, prometheus, tmp)
