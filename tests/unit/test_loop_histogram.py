"""LoopHistogram (scorer/loop_histogram.py) exposes what prometheus_client's Histogram exposes for the same
observations: every bucket (values on a bound included), count and sum, per label values."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scorer.loop_histogram import LoopHistogram

BUCKETS = (1e-5, 1e-3, 0.25, 1.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


@pytest.mark.parametrize(
    "observations",
    [
        [],
        [("a", 0.0)],
        [("a", 1e-5), ("a", 1e-3), ("a", 0.25), ("a", 1.0)],  # on the bounds: le is inclusive
        [("a", 2.0), ("a", 1e9), ("b", 0.5), ("b", 5e-6)],  # beyond the last bound: +Inf only
        [("a", 0.3)] * 5 + [("b", 0.0009)] * 3,
    ],
)
def test_same_exposition_as_prometheus_client(observations: list[tuple[str, float]]):
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("x_seconds", "X.", ["plugin"], buckets=BUCKETS, registry=ours)
    reference = Histogram("x_seconds", "X.", ["plugin"], buckets=BUCKETS, registry=theirs)
    for plugin, value in observations:
        loop.observe(value, plugin)
        reference.labels(plugin).observe(value)
    assert _samples(ours) == pytest.approx(_samples(theirs))


def test_label_values_must_match_the_label_names():
    histogram = LoopHistogram("y_seconds", "Y.", ["plugin"], buckets=BUCKETS, registry=CollectorRegistry())
    with pytest.raises(ValueError, match="expected labels"):
        histogram.observe(1.0)
    unlabelled = LoopHistogram("z_seconds", "Z.", buckets=BUCKETS, registry=CollectorRegistry())
    unlabelled.observe(0.5)
    assert [s.value for s in next(iter(unlabelled.collect())).samples if s.name == "z_seconds_count"] == [1.0]
