"""The picker's benchmark commands complete a tiny run and print a well-formed table (no timing thresholds)."""

from __future__ import annotations

import pytest

from loadtests.picker import index_memory, schedule_latency
from loadtests.routing import in_process
from scorer.prefix_index import ENTRY_BYTES


def _rows(text: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| ")]


def test_schedule_latency_prints_one_row_per_cell(capsys: pytest.CaptureFixture[str]):
    schedule_latency.main(["--picks", "20", "--endpoints", "2", "5", "--tokens", "64", "--fill", "0.001"])
    header, *rows = _rows(capsys.readouterr().out)
    assert header[:2] == ["endpoints", "prompt tokens"] and len(header) == 12
    assert [(r[0], r[1]) for r in rows] == [("2", "64"), ("5", "64")]
    for row in rows:
        assert all(float(v) >= 0 for v in row[2:6] + row[8:]) and row[6].endswith("x") and row[7].endswith("x")
        assert float(row[10]) >= max(float(row[3]), float(row[9]))  # inline p99: a quantile of the sums


@pytest.mark.skipif(not in_process.TRACE.exists(), reason="trace not available")
def test_in_process_routing_replays_a_few_requests(capsys: pytest.CaptureFixture[str]):
    in_process.main(["--minutes", "0.05", "--servers", "2", "--only", "random", "--default", "--emulate-sglang"])
    header, *rows = _rows(capsys.readouterr().out)
    assert header[0] == "profile" and [r[0] for r in rows] == ["random", "default-config.yaml", in_process.EMULATED]
    for row in rows:
        assert int(row[1]) > 0 and row[-1] == "0"  # requests completed, none rejected


@pytest.mark.skipif(not in_process.TRACE.exists(), reason="trace not available")
def test_in_process_routing_replays_the_parts_of_sglang_s_rule(capsys: pytest.CaptureFixture[str]):
    in_process.main(["--minutes", "0.05", "--servers", "2", "--only", "none", "--emulate-sglang-parts"])
    header, *rows = _rows(capsys.readouterr().out)
    assert header[0] == "profile" and [r[0] for r in rows] == list(in_process._parts())
    for row in rows:
        assert int(row[1]) > 0 and row[-1] == "0"


def test_index_memory_reports_every_arm_against_its_budget(capsys: pytest.CaptureFixture[str]):
    index_memory.main(
        ["--endpoints", "4", "--tokens", "512", "--prompts", "12", "--every", "6", "--budgets", "40k,none"]
    )
    rows = _rows(capsys.readouterr().out)
    detail = [r for r in rows if len(r) == 15]
    assert [(r[0], r[1]) for r in detail[1:]] == [("40000", "6"), ("40000", "12"), ("none", "6"), ("none", "12")]
    for row in detail[1:]:
        entries = int(row[2].replace(",", ""))
        assert 0 < entries <= (40_000 // ENTRY_BYTES if row[0] != "none" else 10**9)
    summary = [r for r in rows if len(r) == 6]
    assert [r[0] for r in summary[1:]] == ["40000", "none"]
