"""device-capacity-scorer and device-health-filter on hand-made candidates (tables)."""

from __future__ import annotations

import random

import pytest

from scorer.device_hints import DeviceHints, DeviceInfo, DeviceTaint
from scorer.plugins.filters.device_health import DeviceHealthFilter, DeviceHealthParams
from scorer.plugins.scorers.device_capacity import DeviceCapacityParams, DeviceCapacityScorer, capacities
from scorer.types import CycleState, Endpoint, EndpointMetrics, EndpointState, LLMRequest

GI = 1 << 30
REQ = LLMRequest("r", "m")


def cycle() -> CycleState:
    return CycleState(now=0.0, rng=random.Random(0))


def state(
    address: str,
    *devices: DeviceInfo,
    running: int = 0,
    in_flight: int = 0,
    blocks: int | None = None,
    hints: bool = True,
) -> EndpointState:
    h = DeviceHints("n", tuple(devices)) if hints else None
    metrics = EndpointMetrics(running=running, num_gpu_blocks=blocks, block_size=16 if blocks else None)
    return EndpointState(Endpoint(address, hints=h), metrics, in_flight=in_flight)


def gpu(memory: int | None = 80 * GI, sms: int | None = None, **kw: object) -> DeviceInfo:
    return DeviceInfo("d/p/gpu", type="gpu", memory_bytes=memory, multiprocessors=sms, **kw)  # type: ignore[arg-type]


def mig(memory: int = 10 * GI, sms: int | None = 16) -> DeviceInfo:
    return DeviceInfo("d/p/mig", type="mig", memory_bytes=memory, multiprocessors=sms, mig_profile="1g.10gb")


@pytest.mark.parametrize(
    ("candidates", "basis", "used", "caps"),
    [
        ([state("a:1", gpu(sms=132)), state("b:1", mig())], "auto", "multiprocessors", [132, 16]),
        ([state("a:1", gpu()), state("b:1", mig())], "auto", "memory", [80 * GI, 10 * GI]),  # a has no SMs
        ([state("a:1", gpu(), blocks=1000), state("b:1", mig(), blocks=100)], "kv-cache", "kv-cache", [16000, 1600]),
        ([state("a:1", hints=False, blocks=1000), state("b:1", mig(), blocks=250)], "auto", "kv-cache", [16000, 4000]),
        ([state("a:1", hints=False), state("b:1", mig())], "auto", "none", [1, 1]),
        ([state("a:1", gpu(memory=None)), state("b:1", mig())], "device", "none", [1, 1]),
    ],
)
def test_capacity_basis(candidates: list[EndpointState], basis: str, used: str, caps: list[float]) -> None:
    got, why = capacities(candidates, basis)  # type: ignore[arg-type]
    assert why == used and list(got.values()) == caps


def test_a_big_gpu_takes_proportionally_more_before_it_scores_as_busy() -> None:
    scorer = DeviceCapacityScorer("c", DeviceCapacityParams())
    big, small = state("a:1", gpu(), running=8), state("b:1", mig(), running=1)  # 8:1 capacity, 8:1 load
    assert scorer.score(cycle(), REQ, [big, small]) == {"a:1": 1.0, "b:1": 1.0}
    big9 = state("a:1", gpu(), running=9)
    assert scorer.score(cycle(), REQ, [big9, small]) == {"a:1": 0.0, "b:1": 1.0}
    small2 = state("b:1", mig(), running=2)
    assert scorer.score(cycle(), REQ, [big9, small2]) == {"a:1": 1.0, "b:1": 0.0}


def test_in_flight_counts_when_larger_than_scraped_load() -> None:
    scorer = DeviceCapacityScorer("c", DeviceCapacityParams())
    a, b = state("a:1", gpu(), in_flight=3), state("b:1", gpu(), running=1)
    assert scorer.score(cycle(), REQ, [a, b]) == {"a:1": 0.0, "b:1": 1.0}


NO_SCHED = DeviceTaint("gpu.nvidia.com/xid", "79", "NoSchedule")


@pytest.mark.parametrize(
    ("device", "params", "kept"),
    [
        (gpu(), {}, True),
        (gpu(taints=(NO_SCHED,)), {}, False),
        (gpu(taints=(DeviceTaint("k", "", "NoExecute"),)), {}, False),
        (gpu(taints=(DeviceTaint("gpu.nvidia.com/unmonitored", "", "None"),)), {}, True),
        (gpu(taints=(DeviceTaint("k", "", "Sometimes"),)), {}, True),  # unknown effects are informational
        (gpu(taints=(NO_SCHED,)), {"effects": ["NoExecute"]}, True),
        (gpu(health="unhealthy", health_reason="Ready=False"), {}, False),
        (gpu(health="unhealthy"), {"dropUnhealthy": False}, True),
        (gpu(health="unknown"), {}, True),
    ],
)
def test_device_health_filter(device: DeviceInfo, params: dict[str, object], kept: bool) -> None:
    f = DeviceHealthFilter("f", DeviceHealthParams.model_validate(params))
    healthy, candidate = state("a:1", gpu()), state("b:1", device)
    assert [c.address for c in f.filter(cycle(), REQ, [healthy, candidate])] == ["a:1"] + (["b:1"] if kept else [])


def test_endpoints_without_hints_are_kept_and_fail_open_is_soft() -> None:
    assert DeviceHealthFilter("f", DeviceHealthParams()).filter(cycle(), REQ, [state("a:1", hints=False)])
    assert DeviceHealthFilter("f", DeviceHealthParams(fail_open=True)).soft is True
    assert DeviceHealthFilter("f", DeviceHealthParams()).soft is False
