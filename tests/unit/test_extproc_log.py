"""Reading Envoy's per-request ext_proc account (loadtests.routing.extproc_log) from its JSON access log lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loadtests.routing.extproc_log import phase_summary, read_entries


def _line(status: int, **ext: int) -> str:
    return json.dumps({"request_id": "r", "status": status, "duration_ms": 9, "ext_proc": ext})


def test_phases_are_medians_over_successful_requests(tmp_path: Path):
    log = tmp_path / "extproc.jsonl"
    rows = [
        _line(200, request_header_latency_us=4000, response_header_latency_us=500, response_body_total_latency_us=900,
              response_body_call_count=3),
        _line(200, request_header_latency_us=2000, response_header_latency_us=300, response_body_total_latency_us=400,
              response_body_call_count=2),
        _line(200, request_header_latency_us=3000, response_header_latency_us=100, response_body_total_latency_us=0,
              response_body_call_count=0),
        _line(500, request_header_latency_us=99_000),  # a failed request is not a phase figure
        "not json",
        json.dumps({"status": 200, "ext_proc": "-"}),  # a request without an ext_proc stream
    ]  # fmt: skip
    log.write_text("\n".join(rows) + "\n")
    assert len(read_entries(log)) == 3
    summary = phase_summary(log)
    assert summary["requests"] == 3
    assert summary["request_wait_ms"] == pytest.approx(3.0)
    assert summary["response_headers_wait_ms"] == pytest.approx(0.3)
    assert summary["response_chunk_wait_ms"] == pytest.approx(0.25)  # median of 0.3 and 0.2 ms per chunk
    assert summary["response_chunks"] == 2


def test_a_missing_log_gives_no_figures(tmp_path: Path):
    summary = phase_summary(tmp_path / "absent.jsonl")
    assert summary["requests"] == 0 and summary["request_wait_ms"] is None


def test_routed_time_is_read_with_or_without_an_ext_proc_stream(tmp_path: Path):
    log = tmp_path / "extproc.jsonl"
    rows = [
        json.dumps({"status": 200, "ext_proc": "-", "routed_us": 100}),  # Envoy's own load balancer
        json.dumps({"status": 200, "ext_proc": {"request_header_latency_us": 5000}, "routed_us": 7000}),
        json.dumps({"status": 200, "ext_proc": "-", "routed_us": 300}),
        json.dumps({"status": 200, "ext_proc": "-", "routed_us": "-"}),  # never sent upstream
        json.dumps({"status": 503, "ext_proc": "-", "routed_us": 90_000}),  # failed: not a figure
    ]
    log.write_text("\n".join(rows) + "\n")
    summary = phase_summary(log)
    assert summary["routed_ms"] == pytest.approx(0.3)  # median of 0.1, 7 and 0.3 ms
    assert summary["requests"] == 1 and summary["request_wait_ms"] == pytest.approx(5.0)
