"""VM flavors for generated clusters, and how to draw a mix of them that fills a given amount of memory.

Why it exists: a realistic cluster runs VMs of the sizes users pick from, not a uniform toy range. The default
flavors are KubeVirt's common instance types of the universal series (`u1`), which OpenShift Virtualization ships:
kubevirt/common-instancetypes `instancetypes/u/1/sizes.yaml` (read at commit 2080c40), u1.small .. u1.4xlarge,
1-16 vCPUs and 2-64 GiB (u1.nano, u1.micro and u1.8xlarge are left out). The *weights* of the mix are ours, an
approximation (many small and medium VMs, few large ones), not measured from a real cluster.

`draw_flavors` returns flavors in creation order. With a target total memory and a count it first tilts the weights
(w_f * exp(lam * mem_f), the least change to the mix whose mean hits the target: bisection on lam), samples, then
steps single VMs to the next larger or smaller flavor until the total is within the tolerance.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from sim.cluster.kv_objects import memory_overhead

GIB = 2**30


@dataclass(frozen=True)
class Flavor:
    """A VM size: guest vCPUs and memory, and its weight in the default mix."""

    name: str
    cpu: int
    memory_bytes: int
    weight: float = 1.0

    @property
    def request_bytes(self) -> int:
        """What the virt-launcher pod requests: guest memory plus KubeVirt's overhead (kv_objects.memory_overhead)."""
        return self.memory_bytes + memory_overhead(self.cpu, self.memory_bytes)


# kubevirt/common-instancetypes u1 sizes (source above); weights: our approximation
U1_FLAVORS: tuple[Flavor, ...] = (
    Flavor("u1.small", 1, 2 * GIB, 2.0),
    Flavor("u1.medium", 1, 4 * GIB, 3.0),
    Flavor("u1.2xmedium", 2, 4 * GIB, 2.0),
    Flavor("u1.large", 2, 8 * GIB, 3.0),
    Flavor("u1.xlarge", 4, 16 * GIB, 2.0),
    Flavor("u1.2xlarge", 8, 32 * GIB, 1.0),
    Flavor("u1.4xlarge", 16, 64 * GIB, 0.5),
)


class FlavorMixError(ValueError):
    """The flavors cannot make the requested count and memory total."""


def tilted_weights(flavors: Sequence[Flavor], mean_request: float) -> list[float]:
    """Weights w_f * exp(lam * request_f) whose mean request is `mean_request` (within the flavors' range)."""
    sizes = [f.request_bytes / GIB for f in flavors]
    target = mean_request / GIB

    def weights(lam: float) -> list[float]:
        top = max(lam * s for s in sizes)
        return [f.weight * math.exp(lam * s - top) for f, s in zip(flavors, sizes, strict=True)]

    def mean(lam: float) -> float:
        w = weights(lam)
        return sum(wi * s for wi, s in zip(w, sizes, strict=True)) / sum(w)

    lo, hi = -50.0, 50.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if mean(mid) < target else (lo, mid)
    return weights((lo + hi) / 2)


def _step(order: list[Flavor], flavor: Flavor, up: bool) -> Flavor | None:
    i = order.index(flavor) + (1 if up else -1)
    return order[i] if 0 <= i < len(order) else None


def draw_flavors(
    flavors: Sequence[Flavor],
    rng: random.Random,
    *,
    count: int | None,
    total_request: float | None,
    tolerance: float,
    max_count: int = 1_000_000,
) -> list[Flavor]:
    """`count` flavors, or as many as make `total_request` bytes of requests (one of them, or both), in creation
    order; with a total, the sum of requests ends within `tolerance` bytes of it, or FlavorMixError says why not."""
    if count is None and total_request is None:
        raise FlavorMixError("need a VM count or a memory total")
    order = sorted(flavors, key=lambda f: (f.request_bytes, f.cpu))
    if total_request is None:
        assert count is not None
        return rng.choices(list(flavors), weights=[f.weight for f in flavors], k=count)
    if count is None:  # draw until no flavor fits under the total: ends less than the smallest request below it
        mean = sum(f.request_bytes * f.weight for f in flavors) / sum(f.weight for f in flavors)
        if total_request / mean > max_count:
            raise FlavorMixError(f"about {total_request / mean:.0f} VMs would be needed; at most {max_count}")
        out: list[Flavor] = []
        total = 0
        while True:
            fitting = [f for f in flavors if total + f.request_bytes <= total_request]
            if not fitting:
                break
            f = rng.choices(fitting, weights=[f.weight for f in fitting])[0]
            out.append(f)
            total += f.request_bytes
        if total_request - total > tolerance:
            raise FlavorMixError(f"the flavors cannot total {total_request / GIB:.0f} GiB within the tolerance")
        return out
    if count == 0:
        if total_request > tolerance:
            raise FlavorMixError("0 VMs cannot fill any memory")
        return []
    smallest, largest = order[0].request_bytes, order[-1].request_bytes
    mean = total_request / count
    if not smallest * count - tolerance <= total_request <= largest * count + tolerance:
        raise FlavorMixError(
            f"{count} VMs would need {mean / GIB:.1f} GiB each on average (requests incl. launcher overhead); "
            f"the flavors range {smallest / GIB:.1f}-{largest / GIB:.1f} GiB"
        )
    mean = min(max(mean, smallest), largest)
    picked = rng.choices(list(flavors), weights=tilted_weights(flavors, mean), k=count)
    total = sum(f.request_bytes for f in picked)
    indices = list(range(count))
    for _ in range(20 * count + 100):
        gap = total_request - total
        if abs(gap) <= min(tolerance, GIB):
            return picked
        rng.shuffle(indices)
        best: tuple[float, int, Flavor] | None = None
        for i in indices:  # the step that brings the total closest to the target
            nxt = _step(order, picked[i], up=gap > 0)
            if nxt is None:
                continue
            after = abs(gap - (nxt.request_bytes - picked[i].request_bytes))
            if after < abs(gap) and (best is None or after < best[0]):
                best = (after, i, nxt)
                if after <= tolerance:
                    break
        if best is None:
            break
        _, i, nxt = best
        total += nxt.request_bytes - picked[i].request_bytes
        picked[i] = nxt
    if abs(total_request - total) <= tolerance:
        return picked
    raise FlavorMixError(
        f"{count} VMs of these flavors cannot total {total_request / GIB:.0f} GiB within {tolerance / GIB:.1f} GiB"
    )
