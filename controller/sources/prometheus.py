"""Node pressure and per-VM usage from Prometheus, read with `prometheus-api-client` and checked on arrival.

Why it exists: the planner trusts nothing it has not been shown to be complete and fresh (controller/validate.py),
and the descheduler's own reader checks only the result type, the `instance` label and the [0, 1] range (ref
§2.2). This reader runs one instant query per signal the active policy needs, once per cycle:

- score: `metrics.query` (default the recording rule `...:k3:avg1m`), unless `metrics.source` is raw-psi;
- PSI (psi-relief with `signal: psi`): `metrics.psiQueries` of the configured dimensions;
- utilisation and per-VM usage (psi-relief): `metrics.utilizationQueries`, `metrics.vmQueries`;
- freshness: an instant query stamps every result with the query time, so the age of each node's data comes from
  `timestamp()` of raw series: `metrics.freshnessQuery` and, for any query that is a bare series name (a
  recording rule), `timestamp(<name>)`. A node's `sampled_at` is the oldest of those; a node missing from a
  freshness result of a required signal is left out (validate.py: "metrics missing"), while the optional
  utilisation rules (absent on clusters without the descheduler's rules) only count where they are present.

A result must be an instant vector whose samples carry an `instance` label equal to the node name, one sample per
node; otherwise, or when Prometheus cannot be reached, the reading carries an `error` and the cycle is skipped
with it. Values are passed on as read (NaN included) for validate.py to judge. The client is synchronous, so
`read()` runs it in a worker thread. Sample ages are measured on the wall clock (Prometheus' own time) and
expressed relative to the controller's clock, which may run faster than real time against the twin.
"""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from controller.clock import Clock
from controller.config import ControllerConfig
from controller.model import NodePressure

BARE_SERIES = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^{}]*\})?$")
PSI_FIELDS = {"cpu": "psi_cpu", "memory": "psi_memory", "io": "psi_io"}
UTILIZATION_FIELDS = {"cpu": "cpu_utilization", "memory": "memory_utilization"}


class QueryError(RuntimeError):
    """A query failed or returned something the controller cannot use; the message names the query."""


@dataclass(frozen=True)
class VmUsage:
    cpu: float | None = None  # cores
    memory: float | None = None  # bytes
    dirty_rate: float | None = None  # bytes/s


@dataclass(frozen=True)
class PressureReading:
    """One cycle's reading: pressure by node name (absent nodes had no data), per-VM usage, or an error."""

    nodes: Mapping[str, NodePressure] = field(default_factory=dict)
    vms: Mapping[tuple[str, str | None], VmUsage] = field(default_factory=dict)  # ("ns/name", node label)
    error: str | None = None

    def vm_usage(self, key: str, node: str) -> VmUsage | None:
        """The usage series of `key` on `node` (a VM's series restart on each node), else one without a node."""
        return self.vms.get((key, node)) or self.vms.get((key, None))


class PrometheusSource:
    def __init__(
        self,
        url: str,
        config: ControllerConfig,
        clock: Clock,
        *,
        token_file: Path | None = None,
        verify_tls: bool = True,
    ) -> None:
        self.url, self.config, self.clock = url.rstrip("/"), config, clock
        self.token_file, self.verify_tls = token_file, verify_tls
        self.plan = query_plan(config)

    async def read(self) -> PressureReading:
        return await asyncio.to_thread(self.read_sync)

    def read_sync(self) -> PressureReading:
        try:
            client = self._client()
            results = {name: self._query(client, q) for name, q in self.plan.items()}
        except QueryError as exc:
            return PressureReading(error=str(exc))
        return assemble(results, self.clock.now(), time.time())

    def _client(self) -> PrometheusConnect:
        # rebuilt each cycle so that a rotated token is picked up (the descheduler does the same, ref §2.2)
        headers = None
        if self.token_file is not None:
            try:
                headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"}
            except OSError as exc:
                raise QueryError(f"prometheus token {self.token_file}: {exc.strerror or exc}") from None
        retry = Retry(total=1, connect=1, read=0, status=0, backoff_factor=0.1)
        timeout: Any = self.config.metrics.timeout_seconds  # the client's annotation says int; requests takes floats
        return PrometheusConnect(
            self.url, headers=headers, disable_ssl=not self.verify_tls, retry=retry, timeout=timeout
        )

    def _query(self, client: PrometheusConnect, promql: str) -> list[dict[str, Any]]:
        try:
            result = client.custom_query(promql)
        except PrometheusApiClientException as exc:
            raise QueryError(f"prometheus {self.url}: query {promql!r}: {exc}") from None
        except requests.RequestException as exc:
            raise QueryError(f"prometheus {self.url} unreachable: {type(exc).__name__}: {_short(exc)}") from None
        except ValueError as exc:  # a body that is not JSON
            raise QueryError(f"prometheus {self.url}: query {promql!r}: invalid response: {exc}") from None
        if not isinstance(result, list) or not all(
            isinstance(s, dict) and isinstance(s.get("metric"), dict) and _pair(s.get("value")) for s in result
        ):
            raise QueryError(f"query {promql!r} did not return an instant vector")
        return result


def query_plan(config: ControllerConfig) -> dict[str, str]:
    """name -> PromQL for what the active policy needs; names are `score`, `psi:<d>`, `util:<d>`, `vm:<field>`,
    `fresh`, `fresh:<name>`."""
    m, relief = config.metrics, config.psi_relief
    plan: dict[str, str] = {}
    psi_relief = config.policy == "psi-relief"
    if m.source != "raw-psi" and (not psi_relief or relief.signal == "score"):
        plan["score"] = m.query
    if psi_relief and relief.signal == "psi":
        plan.update({f"psi:{d}": m.psi_queries[d] for d in relief.dimensions})
    if psi_relief:
        plan.update({f"util:{d}": q for d, q in m.utilization_queries.items() if q})
        vm = m.vm_queries
        plan.update({f"vm:{k}": q for k, q in (("cpu", vm.cpu_usage), ("memory", vm.memory_usage)) if q})
        if vm.dirty_rate:
            plan["vm:dirty_rate"] = vm.dirty_rate
    if m.freshness_query:
        plan["fresh"] = m.freshness_query
    for name, promql in list(plan.items()):
        if not name.startswith(("vm:", "fresh")) and BARE_SERIES.match(promql.strip()):
            plan[f"fresh:{name}"] = f"timestamp({promql.strip()})"
    return plan


def assemble(results: Mapping[str, list[dict[str, Any]]], clock_now: float, wall_now: float) -> PressureReading:
    """Turn query results into per-node pressure and per-VM usage (pure; raises nothing, errors become `error`)."""
    try:
        by_node = {name: _by_instance(name, samples) for name, samples in results.items() if not name.startswith("vm:")}
    except QueryError as exc:
        return PressureReading(error=str(exc))
    # the ages of required signals must be known; an optional one (utilisation) counts where it is present
    fresh = [v for k, v in by_node.items() if k.startswith("fresh") and not k.startswith("fresh:util")]
    optional = [v for k, v in by_node.items() if k.startswith("fresh:util")]
    values = {k: v for k, v in by_node.items() if not k.startswith("fresh")}
    names = set().union(*(v.keys() for v in by_node.values())) if by_node else set()
    nodes: dict[str, NodePressure] = {}
    for node in sorted(names):
        if fresh and not all(node in f for f in fresh):
            continue  # no proof the node's data is current: treat it as absent ("metrics missing")
        stamps = [f[node] for f in fresh] + [f[node] for f in optional if node in f]
        oldest = min(stamps) if stamps and all(math.isfinite(s) for s in stamps) else wall_now
        fields: dict[str, float | None] = {"score": values.get("score", {}).get(node)}
        for d, f in PSI_FIELDS.items():
            fields[f] = values.get(f"psi:{d}", {}).get(node)
        for d, f in UTILIZATION_FIELDS.items():
            fields[f] = values.get(f"util:{d}", {}).get(node)
        nodes[node] = NodePressure(sampled_at=clock_now - (wall_now - oldest), **fields)
    return PressureReading(nodes, _vm_usage(results))


def _by_instance(name: str, samples: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample in samples:
        instance = sample["metric"].get("instance")
        if not instance:
            raise QueryError(f"query {name}: a sample has no instance label (it must be the node name)")
        if instance in out:
            raise QueryError(f"query {name}: more than one series for instance {instance} (aggregate by instance)")
        out[instance] = _float(sample["value"][1])
    return out


def _vm_usage(results: Mapping[str, list[dict[str, Any]]]) -> dict[tuple[str, str | None], VmUsage]:
    values: dict[tuple[str, str | None], dict[str, float | None]] = {}
    ambiguous: set[tuple[str, str | None]] = set()
    for field_name in ("cpu", "memory", "dirty_rate"):
        seen: set[tuple[str, str | None]] = set()
        for sample in results.get(f"vm:{field_name}", ()):
            labels = sample["metric"]
            if not (labels.get("namespace") and labels.get("name")):
                continue
            key = (f"{labels['namespace']}/{labels['name']}", labels.get("node"))
            if key in seen:
                ambiguous.add(key)
            seen.add(key)
            values.setdefault(key, {})[field_name] = _float(sample["value"][1])
    return {key: VmUsage(**fields) for key, fields in values.items() if key not in ambiguous}


def _pair(value: Any) -> bool:
    return isinstance(value, list | tuple) and len(value) == 2


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."
