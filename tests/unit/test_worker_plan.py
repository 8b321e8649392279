"""The pure parts of `autonomic picker --workers N`: each worker's command line (scorer/worker_plan.py), the restart
backoff, and the pod's one exposition merged from the workers' (scorer/metrics_merge.py)."""

from __future__ import annotations

import argparse

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scorer import cli
from scorer.metrics_merge import merge_expositions
from scorer.worker_plan import RestartBackoff, WorkerPorts, ready_endpoints, worker_argv

PORTS = [WorkerPorts(41000, 42000), WorkerPorts(41001, 42001), WorkerPorts(41002, 42002)]
BASE = ["--log-level", "info", "picker", "--workers", "3", "--endpoints", "10.0.0.1:8000", "--port", "0"]


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log-level")
    sub = parser.add_subparsers(dest="command")
    cli.add_parser(sub)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("index", "peers"),
    [
        (0, "127.0.0.1:42001,127.0.0.1:42002"),
        (1, "127.0.0.1:42000,127.0.0.1:42002"),
        (2, "127.0.0.1:42000,127.0.0.1:42001"),
    ],
)
def test_a_worker_keeps_the_users_flags_and_gets_its_own(index: int, peers: str):
    args = _parse(worker_argv(BASE, index, 9002, 9003, PORTS))
    assert (args.workers, args.worker_index, args.port, args.health_port) == (1, index, 9002, 9003)
    assert (args.metrics_port, args.peer_port) == (PORTS[index].metrics_port, PORTS[index].peer_port)
    assert args.peers == peers  # its siblings, never itself
    assert args.replica_address == "127.0.0.1"
    assert args.endpoints == "10.0.0.1:8000" and args.log_level == "info"
    assert args.peer_batch_interval == 0.01


@pytest.mark.parametrize("given", [["--peer-batch-interval", "0.005"], ["--peer-batch-interval=0.005"]])
def test_the_users_batch_interval_stands(given: list[str]):
    assert _parse(worker_argv([*BASE, *given], 1, 9002, 9003, PORTS)).peer_batch_interval == 0.005


def test_a_single_worker_has_no_peers():
    args = _parse(worker_argv(BASE, 0, 9002, 9003, PORTS[:1]))
    assert args.peers == ""


@pytest.mark.parametrize(
    ("line", "endpoints"),
    [
        ("ready: ext_proc=127.0.0.1:9002 health=127.0.0.1:9003 metrics=127.0.0.1:9090 endpoints=4", 4),
        ("ready: ext_proc=127.0.0.1:9002 endpoints=12 tls=self-signed peers=9004", 12),
        ("ready: ext_proc=127.0.0.1:9002", None),
        ("ready: endpoints=x", None),
    ],
)
def test_ready_endpoints(line: str, endpoints: int | None):
    assert ready_endpoints(line) == endpoints


B = RestartBackoff(base_s=0.5, max_s=10.0, healthy_after_s=30.0)


@pytest.mark.parametrize(
    ("deaths_before", "lived_s", "delay", "deaths_after"),
    [
        (0, 1.0, 0.5, 1),  # first death: the base delay
        (1, 1.0, 1.0, 2),  # dies again at once: doubles
        (2, 0.1, 2.0, 3),
        (4, 0.1, 8.0, 5),
        (5, 0.1, 10.0, 6),  # capped
        (30, 0.1, 10.0, 31),
        (7, 30.0, 0.5, 1),  # lived long enough: the run starts again
        (0, 3600.0, 0.5, 1),
    ],
)
def test_restart_backoff(deaths_before: int, lived_s: float, delay: float, deaths_after: int):
    assert B.next_delay(deaths_before, lived_s) == (delay, deaths_after)


def _exposition(decisions: float, in_flight: float, observed: list[float]) -> str:
    registry = CollectorRegistry()
    Counter("autonomic_picker_decisions", "Decisions.", ["outcome"], registry=registry).labels("routed").inc(decisions)
    Gauge("autonomic_picker_in_flight_requests", "In flight.", registry=registry).set(in_flight)
    histogram = Histogram("autonomic_picker_pick_duration_seconds", "Pick.", buckets=(0.001, 0.01), registry=registry)
    for value in observed:
        histogram.observe(value)
    return generate_latest(registry).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_every_workers_series_keeps_its_value_under_a_worker_label():
    texts = {"0": _exposition(5, 2, [0.0005]), "1": _exposition(7, 0, [0.005, 0.5])}
    registry = CollectorRegistry()
    families = merge_expositions(texts)
    registry.register(type("Collector", (), {"collect": lambda self: families})())
    merged = _samples(generate_latest(registry).decode())
    expected = {
        (name, tuple(sorted({**dict(labels), "worker": worker}.items()))): value
        for worker, text in texts.items()
        for (name, labels), value in _samples(text).items()
    }
    assert merged == expected
    assert merged[("autonomic_picker_decisions_total", (("outcome", "routed"), ("worker", "1")))] == 7
    assert merged[("autonomic_picker_pick_duration_seconds_count", (("worker", "1"),))] == 2
    assert [f.name for f in families].count("autonomic_picker_decisions") == 1  # one family, one TYPE line


@pytest.mark.parametrize(
    ("texts", "samples"),
    [
        ({}, 0),
        ({"0": ""}, 0),
        # the same name with two types: the first type wins, the other worker's samples are left out
        ({"0": "# TYPE x gauge\nx 1\n", "1": "# TYPE x_total counter\nx_total 2\n"}, 1),
        ({"0": "# TYPE x gauge\nx 1\n", "1": "# TYPE x gauge\nx 2\n"}, 2),
    ],
)
def test_merge_edge_cases(texts: dict[str, str], samples: int):
    assert sum(len(f.samples) for f in merge_expositions(texts)) == samples


def test_an_exposition_that_does_not_parse_is_a_value_error():
    with pytest.raises(ValueError):
        merge_expositions({"0": "x{ 1\n"})
