"""device-capacity-scorer: load relative to the size of the hardware, so a big GPU takes more before it is busy.

Formula: per candidate a capacity `c(e)` and a load `l(e) = max(in_flight(e), running + waiting +
dispatched_since_scrape)` (what this picker has outstanding there, or what the server reports plus what was sent
since its last scrape, whichever is larger: both are lower bounds of the true load). The relative load is
`r(e) = l(e) * max(c) / c(e)` and `score(e) = (max r - r(e)) / (max r - min r)` (1.0 for all when equal). With the
max-score picker alone, requests therefore spread in proportion to capacity: an endpoint with 4x the capacity holds
4x the requests when all look equally busy.

Capacity, by `basis` (the same basis for every candidate of a cycle, or the comparison would be meaningless):
- `device`: DRA hints (scorer/sources/dra.py): the streaming multiprocessors of the pod's GPUs/MIG slices when
  every candidate's are known, else their memory capacity. A MIG slice counts as what it is (a 1g.10gb slice of an
  80 GB H100 is 1/8 of it by memory, 16/132 by SMs); a whole GPU counts whole.
- `kv-cache`: `num_gpu_blocks * block_size` from `vllm:cache_config_info` (the server's real KV capacity, tokens).
- `auto` (default): `device` if every candidate has it, else `kv-cache` if every candidate reports it, else none.
When the basis is unavailable every capacity is 1 and the scorer is a plain load scorer (never an error).
Parameters: `basis` (auto | device | kv-cache).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from scorer.framework import PluginParams
from scorer.plugins.common import inverse_min_max, metrics_of
from scorer.types import CycleState, EndpointState, LLMRequest

Basis = Literal["auto", "device", "kv-cache"]


class DeviceCapacityParams(PluginParams):
    basis: Basis = "auto"


def device_capacity(state: EndpointState, field: Literal["multiprocessors", "memory_bytes"]) -> float | None:
    hints = state.endpoint.hints
    value = hints.total(field) if hints is not None else None
    return float(value) if value else None


def kv_capacity(state: EndpointState) -> float | None:
    m = state.metrics
    if m is None or not m.num_gpu_blocks or not m.block_size:
        return None
    return float(m.num_gpu_blocks * m.block_size)


def capacities(candidates: list[EndpointState], basis: Basis) -> tuple[dict[str, float], str]:
    """Capacity per address and the basis actually used ("none": all 1.0)."""
    options: list[tuple[str, list[float | None]]] = []
    if basis in ("auto", "device"):
        options.append(("multiprocessors", [device_capacity(c, "multiprocessors") for c in candidates]))
        options.append(("memory", [device_capacity(c, "memory_bytes") for c in candidates]))
    if basis in ("auto", "kv-cache"):
        options.append(("kv-cache", [kv_capacity(c) for c in candidates]))
    for used, values in options:
        if values and all(v is not None for v in values):
            return {c.address: float(v or 1.0) for c, v in zip(candidates, values, strict=True)}, used
    return {c.address: 1.0 for c in candidates}, "none"


def load_of(state: EndpointState) -> float:
    m = metrics_of(state)
    return float(max(state.in_flight, m.running + m.waiting + state.dispatched_since_scrape))


class DeviceCapacityScorer:
    type_name: ClassVar[str] = "device-capacity-scorer"
    Params = DeviceCapacityParams

    def __init__(self, name: str, params: DeviceCapacityParams):
        self.name = name
        self.basis: Basis = params.basis

    def score(self, cycle: CycleState, request: LLMRequest, candidates: list[EndpointState]) -> dict[str, float]:
        if not candidates:
            return {}
        caps, _ = capacities(candidates, self.basis)
        largest = max(caps.values())
        return inverse_min_max({c.address: load_of(c) * largest / caps[c.address] for c in candidates})
