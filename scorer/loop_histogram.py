"""A Prometheus histogram family observed from the event loop's thread only: no lock and no label lookup per call.

Why it exists: every decision observes eight durations (the pick, each plugin, the learning). prometheus_client's
`Histogram.labels(...).observe(v)` validates the labels, takes a lock for the child, then a lock per bucket and for
the sum: measured in process (BENCHMARKS.md, "Capacity per core"), the decision metrics cost half as much CPU as
the Director's own decision at 2 endpoints (23.5 against 42 us; 13.8 us with these). Everything that observes runs
on the picker's asyncio loop, and so does the collection (`/metrics` is served by the same loop), so plain lists
suffice. The exposition is prometheus_client's
own (`HistogramMetricFamily`): the same names, labels and `le` bounds; only the `_created` series is not exported.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.utils import floatToGoString


class LoopHistogram:
    """`observe(value, *label_values)`; registered in `registry`. Not thread-safe by design (see the module)."""

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str] = (),
        *,
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ):
        self.name, self.documentation, self.labelnames = name, documentation, list(labelnames)
        self._bounds = tuple(sorted(float(b) for b in buckets if b != float("inf")))
        self._les = [floatToGoString(b) for b in self._bounds] + ["+Inf"]
        self._series: dict[tuple[str, ...], list[float]] = {}  # label values -> counts per bucket, then the sum
        registry.register(self)

    def observe(self, value: float, *label_values: str) -> None:
        series = self._series.get(label_values)
        if series is None:
            if len(label_values) != len(self.labelnames):
                raise ValueError(f"{self.name}: expected labels {self.labelnames}, got {label_values}")
            series = self._series[label_values] = [0.0] * (len(self._bounds) + 2)
        series[bisect_left(self._bounds, value)] += 1  # the first bucket whose bound is >= value (le)
        series[-1] += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for label_values, series in list(self._series.items()):
            counts = series[:-1]
            family.add_metric(list(label_values), list(zip(self._les, accumulate(counts), strict=True)), series[-1])
        yield family
