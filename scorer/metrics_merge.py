"""One Prometheus exposition for the pod out of its picker workers' own: every sample gains a `worker` label.

Why it exists: `autonomic picker --workers N` runs N processes, each with its own registry (the metrics are computed
in-process: counters, histograms, and gauges read from the Director at scrape time), but a pod has one metrics port.
Summing in the supervisor would lose what a per-worker series shows (which worker decides, which one restarted) and
would need rules per metric type (a gauge of in-flight requests sums, a staleness gauge does not); a label keeps
every series as the worker exposed it and leaves the arithmetic to PromQL (`sum without (worker) (...)`).
prometheus_client's multiprocess mode was not an option: it has no custom collectors, which the pool gauges are.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def merge_expositions(texts: Mapping[str, str], label: str = "worker") -> list[Metric]:
    """The families of every exposition in `texts` (keyed by the label's value), each family once, its samples
    labelled; a family whose type differs between workers keeps the first type seen and its other samples are
    left out (they could not be rendered under one TYPE line). Raises ValueError on an exposition that does not
    parse."""
    merged: dict[str, Metric] = {}
    for value, text in texts.items():
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            elif into.type != family.type:
                continue
            for s in family.samples:
                into.samples.append(Sample(s.name, {**s.labels, label: value}, s.value, s.timestamp, s.exemplar))
    return list(merged.values())
