"""The twin's contention model (sim/cluster/psi.py): CPU, memory and io PSI from demand versus capacity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.cluster.psi import (
    CPU_MODES,
    NodeLoad,
    PsiParams,
    ThreadGroup,
    cpu_contention,
    cpu_modes,
    io_pressure,
    memory_pressure,
    node_pressure,
    runnable_pmf,
)

P = PsiParams()
W = P.wakeup_wait


@pytest.mark.parametrize(
    ("threads", "busy", "utilization", "some", "served"),
    [
        (0, 0.0, 0.0, 0.0, 1.0),  # idle node
        (4, 1.0, 0.5, 0.5 * W, 1.0),  # half the cores always busy: no queue
        (8, 1.0, 1.0, W, 1.0),  # exactly saturated: every CPU busy, nobody waits
        (10, 1.0, 1.0, 2 / 8 + W, 0.8),  # 2 threads too many: 2 of 8 run queues non-empty
        (12, 1.0, 1.0, 4 / 8 + W, 8 / 12),  # linear beyond saturation
        (16, 1.0, 1.0, 1.0, 0.5),  # twice the cores: every queue non-empty
        (24, 1.0, 1.0, 1.0, 1 / 3),  # saturated signal, served share keeps falling
    ],
)
def test_cpu_deterministic_demand(threads: int, busy: float, utilization: float, some: float, served: float) -> None:
    c = cpu_contention(8, [ThreadGroup(threads, busy)])
    assert c.utilization == pytest.approx(utilization)
    assert c.some == pytest.approx(min(1.0, some))
    assert c.served == pytest.approx(served)
    assert c.demand_cores == pytest.approx(threads * busy)


@pytest.mark.parametrize(
    ("groups", "low", "high"),
    [
        ([ThreadGroup(40, 0.1)], 0.0, 0.02),  # 4 cores of demand from 40 vCPUs on 8 cores: fluctuations rarely cross
        ([ThreadGroup(40, 0.2)], 0.08, 0.25),  # mean demand = capacity: the fluctuations above it wait
        ([ThreadGroup(12, 0.95)], 0.4, 0.5),  # 11.4 cores wanted on 8
        ([ThreadGroup(4, 0.9), ThreadGroup(4, 0.9), ThreadGroup(2, 0.8), ThreadGroup(2, 0.8)], 0.25, 0.4),
    ],
)
def test_cpu_stochastic_demand(groups: list[ThreadGroup], low: float, high: float) -> None:
    assert low <= cpu_contention(8, groups).some <= high


def test_cpu_some_rises_smoothly_and_monotonically_with_demand() -> None:
    values = [cpu_contention(8, [ThreadGroup(32, b)]).some for b in np.linspace(0, 1, 41)]
    steps = np.diff(values)
    assert (steps >= -1e-12).all()
    assert max(steps) < 0.1  # no jump at the knee (mean demand 8 cores at busy 0.25)


def test_runnable_pmf_is_a_distribution_with_the_right_mean() -> None:
    groups = [ThreadGroup(4, 0.3), ThreadGroup(2, 0.9), ThreadGroup(1, 0.0), ThreadGroup(3, 1.0)]
    pmf = runnable_pmf(groups)
    assert pmf.sum() == pytest.approx(1.0)
    assert pmf @ np.arange(len(pmf)) == pytest.approx(4 * 0.3 + 2 * 0.9 + 3)
    assert pmf[:3].sum() == pytest.approx(0.0)  # three threads always run


@pytest.mark.parametrize(("cores", "count", "busy"), [(0.8, 1, 0.8), (0.0, 1, 0.0), (2.5, 3, 2.5 / 3), (2, 2, 1.0)])
def test_thread_group_from_cores(cores: float, count: int, busy: float) -> None:
    g = ThreadGroup.cores(cores)
    assert (g.count, g.busy) == (count, pytest.approx(busy))


@pytest.mark.parametrize(
    ("used", "some"),
    [
        (0.5, 0.0),
        (0.9, 0.0),  # the knee
        (0.95, 0.025),  # quadratic towards 0.1 at full
        (1.0, 0.1),
        (1.1, 0.3),  # linear beyond: slope 2 = 2 * 0.1 / (1 - 0.9)
        (1.3, 0.7),
        (1.45, 1.0),
        (2.0, 1.0),  # capped
    ],
)
def test_memory_pressure(used: float, some: float) -> None:
    s, full = memory_pressure(used * 1000, 1000)
    assert s == pytest.approx(some)
    assert full == pytest.approx(some**2)


def test_memory_curve_has_no_kink_at_full() -> None:
    eps = 1e-6
    left = (memory_pressure(1.0, 1.0)[0] - memory_pressure(1.0 - eps, 1.0)[0]) / eps
    right = (memory_pressure(1.0 + eps, 1.0)[0] - memory_pressure(1.0, 1.0)[0]) / eps
    assert left == pytest.approx(right, rel=1e-3) == pytest.approx(P.memory_slope, rel=1e-3)


@pytest.mark.parametrize(
    ("utilization", "memory", "migrations", "some", "full"),
    [
        (0.0, (0.0, 0.0), 0, 0.0, 0.0),
        (1.0, (0.0, 0.0), 0, 0.02, 0.0),
        (0.5, (0.0, 0.0), 2, 0.01 + 0.04, 0.0),
        (0.0, (0.4, 0.16), 0, 0.2, 0.08),  # swap-in: half the memory stall is io wait
        (1.0, (1.0, 1.0), 50, 1.0, 0.5),
    ],
)
def test_io_pressure(
    utilization: float, memory: tuple[float, float], migrations: int, some: float, full: float
) -> None:
    assert io_pressure(utilization, memory, migrations) == (pytest.approx(some), pytest.approx(full))


@pytest.mark.parametrize(("utilization", "io"), [(0.0, 0.0), (0.3, 0.1), (1.0, 0.5), (0.999, 1.0)])
def test_cpu_modes_cover_all_time(utilization: float, io: float) -> None:
    modes = cpu_modes(utilization, io)
    assert set(modes) == set(CPU_MODES)
    assert sum(modes.values()) == pytest.approx(1.0)
    assert min(modes.values()) >= 0
    assert 1 - modes["idle"] == pytest.approx(utilization + modes["iowait"])


def test_node_pressure_combines_the_three() -> None:
    gib = 2**30
    p = node_pressure(
        NodeLoad(
            cores=8, memory_bytes=32 * gib, threads=(ThreadGroup(12, 1.0),), memory_used_bytes=34 * gib, migrations=1
        )
    )
    assert p.cpu.some == pytest.approx(0.5 + W)
    assert p.memory_some == pytest.approx(0.1 + P.memory_slope * (34 / 32 - 1))
    assert p.io_some == pytest.approx(0.02 + 0.5 * p.memory_some + 0.02)
    assert p.memory_available_bytes == 0.0
    assert math.isclose(sum(p.cpu_modes.values()), 1.0)


def test_bad_capacity_is_an_error() -> None:
    with pytest.raises(ValueError):
        cpu_contention(0, [])
    with pytest.raises(ValueError):
        memory_pressure(1, 0)
