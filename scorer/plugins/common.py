"""Small helpers shared by several plugins: reading metrics safely and normalising a load over the candidates.

Why it exists: "lower is better, relative to the other candidates" is the shape of most load scorers (GIE's queue
scorer), and every plugin must treat an endpoint without metrics the same way (as idle: the Director never offers
one, but the scheduler is a pure function that tests may call with anything).
"""

from __future__ import annotations

from collections.abc import Mapping

from scorer.types import EndpointMetrics, EndpointState

_NO_METRICS = EndpointMetrics()


def metrics_of(state: EndpointState) -> EndpointMetrics:
    """The endpoint's last metrics, or all-zero metrics when it has none."""
    return state.metrics if state.metrics is not None else _NO_METRICS


def queue_length(state: EndpointState, count_unscraped: bool) -> int:
    """Waiting requests as last scraped, plus (optionally) the requests sent since that scrape."""
    return metrics_of(state).waiting + (state.dispatched_since_scrape if count_unscraped else 0)


def inverse_min_max(values: Mapping[str, float]) -> dict[str, float]:
    """`(max - v) / (max - min)` per key: 1.0 for the lowest value, 0.0 for the highest, 1.0 for all when equal."""
    if not values:
        return {}
    low, high = min(values.values()), max(values.values())
    if high == low:
        return dict.fromkeys(values, 1.0)
    span = high - low
    return {key: (high - value) / span for key, value in values.items()}
