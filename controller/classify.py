"""The descheduler's node classification, reproduced exactly: under-, appropriately and over-utilised nodes.

Why it exists: the `descheduler-compatible` policy and the soft taints must put each node in the same class as
LowNodeUtilization and the OpenShift soft-tainter do for the same Prometheus values, or the baseline is not the
baseline. Source: kubernetes-sigs/descheduler `nodeutilization/{lownodeutilization,nodeutilization}.go`,
`classifier/classifier.go` (ref §2.2-2.3):

- usage      = int(score * 100)                          (Prometheus sample truncated to an integer percent)
- deviation  : avg = mean(usage over the population);  low = clamp(avg - thresholds, 0, 100);
               high = clamp(avg + targetThresholds, 0, 100)
- static     : low = thresholds, high = targetThresholds
- under      : usage <= low and the node is schedulable  (evaluated first, so "under" wins over "over")
- over       : usage > high
- appropriate: everything else
Over-utilised nodes are listed by usage, descending (sortNodesByUsage); ties by name, where Go's unstable sort
leaves them in map order.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cached_property

UNDER, APPROPRIATE, OVER, EXCLUDED = "under", "appropriate", "over", "excluded"


@dataclass(frozen=True)
class Thresholds:
    """Percentages; deviations from the mean when `use_deviation` (the profile's default, ref §1.2)."""

    low: float
    high: float
    use_deviation: bool = True


@dataclass(frozen=True)
class Classification:
    usage: Mapping[str, float]  # percent
    average: float | None  # only in deviation mode
    low: float
    high: float
    under: tuple[str, ...]
    appropriate: tuple[str, ...]
    over: tuple[str, ...]  # usage descending

    def category(self, node: str) -> str:
        if node in self._over_set:
            return OVER
        if node in self._under_set:
            return UNDER
        return APPROPRIATE if node in self.usage else EXCLUDED

    @cached_property
    def _over_set(self) -> frozenset[str]:
        return frozenset(self.over)

    @cached_property
    def _under_set(self) -> frozenset[str]:
        return frozenset(self.under)


def usage_percent(score: float) -> float:
    """`int64(sample.Value*100)` in NodeUsageFromPrometheusMetrics: truncation, with float64 rounding included."""
    return float(int(score * 100))


def classify(usage: Mapping[str, float], unschedulable: Collection[str], thresholds: Thresholds) -> Classification:
    """Classify every node in `usage` (the population, in its order) against thresholds resolved as above."""
    average: float | None = None
    if thresholds.use_deviation:
        average = sum(usage.values()) / len(usage) if usage else 0.0
        low = _clamp(average - thresholds.low)
        high = _clamp(average + thresholds.high)
    else:
        low, high = thresholds.low, thresholds.high
    under, appropriate, over = [], [], []
    for node, value in usage.items():
        if node not in unschedulable and value <= low:
            under.append(node)
        elif value > high:
            over.append(node)
        else:
            appropriate.append(node)
    over.sort(key=lambda name: (-usage[name], name))
    return Classification(usage, average, low, high, tuple(under), tuple(appropriate), tuple(over))


def capacity_cap(threshold_percent: float) -> int:
    """capNodeCapacityToThreshold for MetricResource (capacity 100): `int64(threshold * 0.01 * 100)`.

    Kept operation for operation because float64 rounding matters: a high threshold of 29 caps at 28.
    """
    return int(threshold_percent * 0.01 * 100)


def _clamp(value: float) -> float:
    return min(max(value, 0.0), 100.0)
