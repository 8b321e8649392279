"""Pressure stall information (PSI) of a node from what its VMs demand versus what it has: the twin's
contention model, as pure functions.

Why it exists: the controller (and the descheduler rules it mirrors) acts on `/proc/pressure/*` as
node-exporter reports it, so the twin must produce PSI that behaves like a kernel's when demand approaches and
exceeds capacity. docs/cluster-twin.md ("PSI model") gives the reasoning; in short:

CPU. Every vCPU (and host or migration thread) is a thread that is runnable with probability `busy` at a
random instant, independently; the number of runnable threads N is then Poisson-binomial. The kernel reports
system-wide "some" as the average over CPUs (weighted by non-idle time) of the time that CPU had a task
waiting in its run queue. With the load balancer spreading N threads over C cores, max(0, min(N - C, C)) CPUs
have a waiter, so

    cpu some = E[clamp(N - C, 0, C)] / C  +  wakeup_wait * utilization        (capped at 1)
    utilization = E[min(N, C)] / C,   served share of demand = E[min(N, C)] / E[N]

It rises smoothly as mean demand nears C (the fluctuations of N cross C), is linear beyond (each runnable
thread in excess of the cores keeps one more CPU's queue non-empty) and saturates when demand reaches 2 C.
The small `wakeup_wait` term stands for wake-up latency and imperfect balancing below saturation.

Memory. x = memory in use / total. Reclaim stalls start at `memory_knee` (page-cache refaults as the working
set approaches RAM), reach `memory_some_at_full` at x = 1 along a quadratic, then grow linearly with the
overcommitted share (swap-ins), with the slope that keeps the curve smooth at x = 1. "full" (every non-idle
task stalled at once) is some**2: two busy tasks stalling independently.

IO. Small: guest disk activity in proportion to CPU utilization, swap traffic as a share of the memory
stall, and a constant per live migration in flight on the node.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class PsiParams:
    wakeup_wait: float = 0.03  # cpu some per unit of utilization below saturation
    system_share: float = 0.08  # share of busy CPU time spent in mode=system (QEMU, vhost, kernel)
    memory_knee: float = 0.90  # memory in use / total where reclaim starts to stall tasks
    memory_some_at_full: float = 0.10  # memory some when exactly all memory is in use
    io_per_utilization: float = 0.02  # io some per unit of CPU utilization (guest disk io)
    io_per_memory_stall: float = 0.5  # share of memory stall time that is also io wait (swap-in)
    io_per_migration: float = 0.02  # io some per live migration in flight on the node

    @property
    def memory_slope(self) -> float:
        """d(some)/dx beyond x = 1: the quadratic's slope at 1, so the curve has no kink."""
        return 2 * self.memory_some_at_full / (1 - self.memory_knee)


@dataclass(frozen=True)
class ThreadGroup:
    """`count` threads, each runnable with probability `busy` (a VM's vCPUs at its utilization)."""

    count: int
    busy: float

    @staticmethod
    def cores(cores: float) -> ThreadGroup:
        """A demand of `cores` (e.g. 0.8 for a migration thread) as the fewest threads that can carry it."""
        n = max(1, math.ceil(cores))
        return ThreadGroup(n, min(1.0, max(0.0, cores) / n))


@dataclass(frozen=True)
class NodeLoad:
    cores: float
    memory_bytes: float
    threads: tuple[ThreadGroup, ...]
    memory_used_bytes: float
    migrations: int = 0  # live migrations in flight with this node as source or target


@dataclass(frozen=True)
class CpuContention:
    utilization: float  # busy fraction of all cores
    served: float  # share of the runnable demand that gets a CPU
    some: float  # PSI cpu "some" stall fraction
    demand_cores: float  # E[N]


@dataclass(frozen=True)
class NodePressure:
    cpu: CpuContention
    memory_some: float
    memory_full: float
    io_some: float
    io_full: float
    memory_available_bytes: float
    cpu_modes: Mapping[str, float]  # share of each CPU's time per mode (sums to 1)


def runnable_pmf(groups: Iterable[ThreadGroup]) -> np.ndarray:
    """P(N = n) for the number N of runnable threads: the convolution of one binomial per group."""
    pmf = np.ones(1)
    for g in groups:
        p = min(1.0, max(0.0, g.busy))
        if g.count <= 0 or p == 0.0:
            continue
        k = np.arange(g.count + 1)
        comb = np.array([math.comb(g.count, int(i)) for i in k], dtype=float)
        pmf = np.convolve(pmf, comb * p**k * (1 - p) ** (g.count - k))
    return pmf


def cpu_contention(cores: float, groups: Iterable[ThreadGroup], params: PsiParams = PsiParams()) -> CpuContention:
    if cores <= 0:
        raise ValueError("a node needs cores > 0")
    pmf = runnable_pmf(groups)
    n = np.arange(len(pmf), dtype=float)
    busy = float(pmf @ np.minimum(n, cores))
    waiting = float(pmf @ np.clip(n - cores, 0.0, cores))
    demand = float(pmf @ n)
    utilization = min(1.0, busy / cores)
    served = busy / demand if demand > 0 else 1.0
    some = min(1.0, waiting / cores + params.wakeup_wait * utilization)
    return CpuContention(utilization=utilization, served=min(1.0, served), some=some, demand_cores=demand)


def memory_pressure(used_bytes: float, total_bytes: float, params: PsiParams = PsiParams()) -> tuple[float, float]:
    """(some, full) memory stall fractions for `used_bytes` in use out of `total_bytes`."""
    if total_bytes <= 0:
        raise ValueError("a node needs memory > 0")
    x = used_bytes / total_bytes
    knee, at_full = params.memory_knee, params.memory_some_at_full
    if x <= knee:
        some = 0.0
    elif x <= 1.0:
        some = at_full * ((x - knee) / (1 - knee)) ** 2
    else:
        some = at_full + params.memory_slope * (x - 1.0)
    some = min(1.0, some)
    return some, some * some


def io_pressure(
    cpu_utilization: float, memory: tuple[float, float], migrations: int, params: PsiParams = PsiParams()
) -> tuple[float, float]:
    """(some, full) io stall fractions: guest disk io, swap traffic, migration streams."""
    mem_some, mem_full = memory
    some = (
        params.io_per_utilization * cpu_utilization
        + params.io_per_memory_stall * mem_some
        + params.io_per_migration * migrations
    )
    some = min(1.0, some)
    return some, min(some, params.io_per_memory_stall * mem_full)


def cpu_modes(utilization: float, io_some: float, params: PsiParams = PsiParams()) -> dict[str, float]:
    """How each CPU's time splits over node-exporter's modes: busy time is user + system, idle time with io
    outstanding is iowait (in proportion to io some), the rest idle."""
    busy = min(1.0, max(0.0, utilization))
    system = params.system_share * busy
    iowait = (1.0 - busy) * min(1.0, io_some)
    modes = dict.fromkeys(CPU_MODES, 0.0)
    modes.update(user=busy - system, system=system, iowait=iowait, idle=max(0.0, 1.0 - busy - iowait))
    return modes


def node_pressure(load: NodeLoad, params: PsiParams = PsiParams()) -> NodePressure:
    cpu = cpu_contention(load.cores, load.threads, params)
    mem = memory_pressure(load.memory_used_bytes, load.memory_bytes, params)
    io = io_pressure(cpu.utilization, mem, load.migrations, params)
    return NodePressure(
        cpu=cpu,
        memory_some=mem[0],
        memory_full=mem[1],
        io_some=io[0],
        io_full=io[1],
        memory_available_bytes=max(0.0, load.memory_bytes - load.memory_used_bytes),
        cpu_modes=cpu_modes(cpu.utilization, io[0], params),
    )
