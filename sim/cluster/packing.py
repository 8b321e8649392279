"""Place VMs on nodes by their requests so that every VM is scheduled and no node's memory is overcommitted.

Why it exists: a generated cluster at a production-like memory fill (80-90% of the cluster's allocatable memory
requested) must start with every VM Running, as a real cluster whose VMs were all admitted does:

1. in creation order, each VM on the node kube-scheduler's NodeResourcesFit `LeastAllocated` scores highest (the
   mean free share of memory and CPU requests after placing; ties broken by a seeded random order): what a default
   scheduler does as the VMs arrive;
2. near full, that can strand a large VM at the end; then the same scoring largest request first (worst-fit
   decreasing);
3. if that strands a VM, best-fit decreasing (the fullest node that still fits), which packs tighter;
4. if that strands a VM too, PackingError says how many VMs fit nowhere.

Memory requests never exceed a node's allocatable memory. CPU requests (vCPUs / cpuAllocationRatio) must fit too.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Bin:
    """A node's allocatable CPU (millicores) and memory (bytes)."""

    name: str
    cpu_millis: int
    memory_bytes: int


@dataclass(frozen=True)
class Item:
    """A VM's requests: CPU millicores and memory bytes."""

    name: str
    cpu_millis: int
    memory_bytes: int


class PackingError(ValueError):
    """Some VMs fit on no node."""

    def __init__(self, message: str, unplaced: int) -> None:
        super().__init__(message)
        self.unplaced = unplaced


def _place(
    bins: Sequence[Bin], items: Sequence[Item], rng: random.Random, spread: bool, decreasing: bool
) -> dict[str, str] | None:
    tiebreak = {b.name: rng.random() for b in bins}
    cpu = {b.name: 0 for b in bins}
    mem = {b.name: 0 for b in bins}
    out: dict[str, str] = {}
    order = sorted(items, key=lambda i: (-i.memory_bytes, -i.cpu_millis, i.name)) if decreasing else items
    for item in order:
        best: tuple[float, float, str] | None = None
        for b in bins:
            if mem[b.name] + item.memory_bytes > b.memory_bytes or cpu[b.name] + item.cpu_millis > b.cpu_millis:
                continue
            free = (
                (b.memory_bytes - mem[b.name] - item.memory_bytes) / b.memory_bytes
                + (b.cpu_millis - cpu[b.name] - item.cpu_millis) / b.cpu_millis
            ) / 2
            key = (-free if spread else free, tiebreak[b.name], b.name)
            if best is None or key < best:
                best = key
        if best is None:
            return None
        node = best[2]
        out[item.name] = node
        mem[node] += item.memory_bytes
        cpu[node] += item.cpu_millis
    return out


def pack(bins: Sequence[Bin], items: Sequence[Item], rng: random.Random) -> dict[str, str]:
    """item name -> bin name for every item (module docstring), or PackingError. `items` in creation order."""
    for spread, decreasing in ((True, False), (True, True), (False, True)):
        placed = _place(bins, items, rng, spread, decreasing)
        if placed is not None:
            return placed
    unplaced = _count_unplaced(bins, items)
    need = sum(i.memory_bytes for i in items) / 2**30
    have = sum(b.memory_bytes for b in bins) / 2**30
    raise PackingError(
        f"{unplaced} of {len(items)} VMs fit on no node even packed largest-first "
        f"({need:.0f} GiB requested of {have:.0f} GiB allocatable)",
        unplaced,
    )


def _count_unplaced(bins: Sequence[Bin], items: Sequence[Item]) -> int:
    """How many items best-fit decreasing leaves out (for the error message)."""
    cpu = {b.name: 0 for b in bins}
    mem = {b.name: 0 for b in bins}
    left = 0
    for item in sorted(items, key=lambda i: (-i.memory_bytes, -i.cpu_millis, i.name)):
        fits = [b for b in bins if mem[b.name] + item.memory_bytes <= b.memory_bytes]
        fits = [b for b in fits if cpu[b.name] + item.cpu_millis <= b.cpu_millis]
        if not fits:
            left += 1
            continue
        b = min(fits, key=lambda b: (b.memory_bytes - mem[b.name], b.name))
        mem[b.name] += item.memory_bytes
        cpu[b.name] += item.cpu_millis
    return left
