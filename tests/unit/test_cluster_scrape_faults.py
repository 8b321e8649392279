"""The scrape faults that answer with bad data (sim/cluster/scrape_faults.py): only pressure samples change."""

from __future__ import annotations

import math

import pytest

from sim.cluster.scrape_faults import INFLATE, corrupt, freeze

BODY = (
    "# TYPE node_pressure_cpu_waiting_seconds_total counter\n"
    "node_pressure_cpu_waiting_seconds_total 2.5\n"
    "# TYPE node_memory_MemTotal_bytes gauge\n"
    "node_memory_MemTotal_bytes 100.0\n"
    'kubevirt_vmi_cpu_usage_seconds_total{name="a",namespace="vms",node="w"} 3.0\n'
)


def _values(body: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line[0] != "#"}


def test_nan_and_inflate_change_only_the_pressure_samples() -> None:
    nan, inflated = _values(corrupt(BODY, "nan")), _values(corrupt(BODY, "inflate"))
    assert math.isnan(nan["node_pressure_cpu_waiting_seconds_total"])
    assert inflated["node_pressure_cpu_waiting_seconds_total"] == 2.5 * INFLATE
    for values in (nan, inflated):
        assert values["node_memory_MemTotal_bytes"] == 100.0
        assert values['kubevirt_vmi_cpu_usage_seconds_total{name="a",namespace="vms",node="w"}'] == 3.0
    with pytest.raises(ValueError, match="unknown mode"):
        corrupt(BODY, "frozen")


def test_freeze_stamps_every_sample_and_no_comment() -> None:
    lines = freeze(BODY, 1_700_000_000_000).splitlines()
    assert [line.endswith(" 1700000000000") for line in lines] == [False, True, False, True, True]
    assert lines[1] == "node_pressure_cpu_waiting_seconds_total 2.5 1700000000000"
