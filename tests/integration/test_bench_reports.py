"""Short runs of `autonomic bench routing` and `autonomic bench picker`: the reports are complete and well-formed.

Real processes on loopback (fleet twins, Envoy, the picker, the peers when installed), tiny loads; only the shape
of the output is checked (every router and figure present, numbers finite, the table and plot written), never a
timing. The peer routers' run is marked `peers` (`make test-peers`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from autonomic.cli import main as autonomic_main
from loadtests.routing.cli import DEFAULT_TRACE, all_routers
from loadtests.routing.epp import missing_reason as epp_missing_reason
from loadtests.routing.peers import missing_reason

ROUTER_KEYS = {
    "hit_ratio",
    "ttft_p50_s",
    "ttft_p90_s",
    "ttft_p99_s",
    "e2e_p90_s",
    "output_tokens_per_s",
    "client_ttft_p90_s",
    "router_overhead_p50_ms",
    "requests_ok",
    "requests_failed",
}
PNG = b"\x89PNG\r\n\x1a\n"


def small_trace(tmp_path: Path, requests: int = 24) -> Path:
    """The first requests of the shared trace, or a synthetic one with shared prefixes if it is absent."""
    path = tmp_path / "trace.jsonl"
    if DEFAULT_TRACE.exists():
        lines = DEFAULT_TRACE.read_text().splitlines()[:requests]
    else:
        lines = [
            json.dumps({"timestamp": 150 * i, "input_length": 1500, "output_length": 8, "hash_ids": [1, 2, 100 + i]})
            for i in range(requests)
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def table_rows(report: str) -> dict[str, list[str]]:
    rows = {}
    for line in report.splitlines():
        if line.startswith("| ") and not line.startswith("| router"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return rows


def routing(tmp_path: Path, routers: str) -> tuple[int, dict[str, Any], str, Path]:
    out = tmp_path / "out"
    argv = ["bench", "routing", "--trace", str(small_trace(tmp_path)), "--servers", "2", "--time-scale", "20"]
    code = autonomic_main([*argv, "--duration", "600", "--routers", routers, "--out", str(out)])
    return code, json.loads((out / "results.json").read_text()), (out / "report.md").read_text(), out


def check_routing_report(results: dict[str, Any], report: str, out: Path, routers: list[str]) -> None:
    assert set(results) == {"oracle_hit_ratio", "pooled_capacity_bound", "routers"}
    assert 0 <= results["pooled_capacity_bound"] <= results["oracle_hit_ratio"] <= 1
    assert list(results["routers"]) == routers
    for name, figures in results["routers"].items():
        assert set(figures) == ROUTER_KEYS, name
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in figures.values()), (name, figures)
        assert figures["requests_ok"] == 24 and figures["requests_failed"] == 0, (name, figures)
        assert 0 <= figures["hit_ratio"] <= 1
        assert 0 < figures["ttft_p50_s"] <= figures["ttft_p90_s"] <= figures["ttft_p99_s"]
    routers_table, rest = report.split("## CPU the router puts on the node")
    rows = table_rows(routers_table)
    assert {"oracle bound", "pooled-capacity bound", *routers} <= set(rows)
    width = len(rows["oracle bound"])
    for name in routers:
        assert len(rows[name]) == width and "-" not in rows[name], rows[name]  # every figure filled in
    cpu = table_rows(rest.split("Where the router's time goes")[0])  # router, Envoy, servers, servers per request
    for name in routers:
        assert float(cpu[name][2]) > 0 and float(cpu[name][3]) > 0, cpu[name]  # the servers worked
        if name.startswith("picker-"):  # the picker's process and the Envoy in front of it
            assert float(cpu[name][0]) > 0 and float(cpu[name][1]) > 0, cpu[name]
    assert re.search(
        r"^Command: `autonomic bench routing --trace \S+ --servers 2 --time-scale 20 .*--routers ", report, re.M
    )
    assert (out / "ttft_cdf.png").read_bytes().startswith(PNG)
    details = json.loads((out / "details.json").read_text())
    assert set(details["routers"]) == set(routers) and details["requests"] == 24


def test_bench_routing_short_run(tmp_path: Path) -> None:
    arms = ["least-queue", "picker-default", "picker-default-response-body"]
    code, results, report, out = routing(tmp_path, ",".join(arms))
    assert code == 0, report
    check_routing_report(results, report, out, arms)
    # where the router's time went, from Envoy's access log: every request accounted for, each phase waited
    details = json.loads((out / "details.json").read_text())["routers"]
    phases = details["picker-default"]["extproc_phases"]
    assert phases["requests"] == 24 and phases["request_wait_ms"] > 0
    assert phases["response_headers_wait_ms"] is None and phases["response_chunks"] is None  # no response phase
    relayed = details["picker-default-response-body"]["extproc_phases"]  # the response through the picker
    assert relayed["requests"] == 24 and relayed["response_headers_wait_ms"] > 0 and relayed["response_chunks"] >= 1
    assert details["picker-default"]["picker_cpu_s"] > 0 and "picker_cpu_s" not in details["least-queue"]
    # Envoy's own load balancer: routed at once, no ext_proc stream; the picker's arms: routed after their wait
    assert details["least-queue"]["extproc_phases"]["routed_ms"] is not None
    assert details["picker-default"]["extproc_phases"]["routed_ms"] > 0
    where = table_rows(report.split("Where the router's time goes")[1])
    assert where["least-queue"][1:3] == ["0", "-"] and where["picker-default"][1] == "24"


@pytest.mark.peers
@pytest.mark.skipif(missing_reason("sglang-cache-aware") is not None, reason="sglang-router not installed")
@pytest.mark.skipif(missing_reason("vllm-router-kv-aware") is not None, reason="vllm-router not installed")
def test_bench_routing_short_run_with_peers(tmp_path: Path) -> None:
    peers = ["sglang-cache-aware", "vllm-router-cache-aware", "vllm-router-kv-aware"]
    code, results, report, out = routing(tmp_path, ",".join(peers))
    assert code == 0, report
    check_routing_report(results, report, out, peers)


@pytest.mark.peers
@pytest.mark.skipif(missing_reason("smg-cache-aware") is not None, reason=str(missing_reason("smg-cache-aware")))
def test_bench_routing_short_run_with_smg(tmp_path: Path) -> None:
    """smg 1.13.0's arms, `--routers all` includes both, and its defaults arm is selectable by name."""
    peers = ["smg-cache-aware", "smg-prefix-hash", "smg-cache-aware-defaults"]
    assert {"smg-cache-aware", "smg-prefix-hash"} <= set(all_routers())
    assert "smg-cache-aware-defaults" not in all_routers()
    code, results, report, out = routing(tmp_path, ",".join(peers))
    assert code == 0, report
    check_routing_report(results, report, out, peers)


@pytest.mark.peers
@pytest.mark.skipif(epp_missing_reason("epp-default") is not None, reason=str(epp_missing_reason("epp-default")))
def test_bench_routing_short_run_with_the_reference_epp(tmp_path: Path) -> None:
    """The EPP arm end to end: a fleet on two loopback addresses, the cluster twin serving them as Pods, the EPP."""
    code, results, report, out = routing(tmp_path, "epp-default")
    assert code == 0, report
    check_routing_report(results, report, out, ["epp-default"])
    assert (out / "epp-default.log").stat().st_size > 0 and (out / "epp-default-cluster.yaml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--routers", "round-robin,nope"], "--routers: unknown ['nope']"),
        (["--rate-scale", "0"], "--rate-scale must be > 0"),
        (["--trace", "/nonexistent/trace.jsonl"], "--trace: /nonexistent/trace.jsonl is not a file"),
    ],
)
def test_bench_routing_refuses_bad_input(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    base = ["bench", "routing", "--trace", str(small_trace(tmp_path)), "--out", str(out)]
    assert autonomic_main([*base, *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # nothing started, nothing written


def test_bench_routing_bad_trace_line_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]}\n{"timestamp": 1}\n')
    out = tmp_path / "out"
    assert autonomic_main(["bench", "routing", "--trace", str(trace), "--out", str(out)]) == 2
    assert f"{trace}:2: missing 'input_length'" in capsys.readouterr().err


def test_bench_picker_short_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["bench", "picker", "--endpoints", "8", "--tokens", "1024", "--picks", "20", "--rates", "40"]
    argv += ["--requests", "40", "--scrape-endpoints", "12", "--scrape-seconds", "0.5", "--out", str(out)]
    argv += ["--body-sizes", "8k", "--body-rates", "20", "--body-requests", "20", "--body-concurrency", "4"]
    argv += ["--closed-sizes", "8k"]
    assert autonomic_main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"schedule", "extproc", "scrape"}
    (cell,) = results["schedule"]
    assert cell["endpoints"] == 8 and cell["prompt_tokens"] == 1024 and cell["p50_ratio"] > 0
    arms = {r["arm"]: r for r in results["extproc"]["by_rate"]}
    assert set(arms) == {"envoy-round-robin", "picker-round-robin", "picker"}
    for arm, r in arms.items():
        assert r["rate_rps"] == 40 and r["errors"] == 0 and math.isfinite(r["added_p99_ms"]), arm
    open_loop, closed_loop = results["extproc"]["by_body_size"]
    assert (open_loop["shape"], open_loop["rate_rps"], closed_loop["shape"], closed_loop["concurrency"]) == (
        "open",
        20,
        "closed",
        4,
    )
    for r in (open_loop, closed_loop):
        assert r["body_bytes"] == 8192 and r["baseline_errors"] == r["picker_errors"] == 0
        assert math.isfinite(r["added_p50_ms"]) and r["picker_net_cpu_s_per_1000"] >= 0
    assert [r["endpoints"] for r in results["scrape"]] == [8, 12]
    for r in results["scrape"]:
        assert r["failed"] == 0 and r["cpu_ms_per_scrape"] > 0 and r["scrapes_per_s"] > 0
    report = (out / "report.md").read_text()
    for title in ("schedule() per decision", "Latency added through Envoy", "Scraping cost", "Long prompts"):
        assert f"## {title}" in report
    assert "| 40 | picker |" in report and "| 12 | 0.05 |" in report
    assert "| 8k | 1195 | 20 req/s |" in report and "| 8k | 1195 | 4 in flight |" in report
    assert (out / "schedule_cdf.png").read_bytes().startswith(PNG)
    assert (out / "long_prompts.png").read_bytes().startswith(PNG)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--body-sizes", "0k"], "a body size must be positive, got '0k'"),
        (["--body-sizes", "4k,lots"], "body sizes like 4k,256k,1m"),
        (["--body-sizes", "4k,8k", "--body-rates", "1,2,3"], "out of range: --body-rates"),
        (["--body-concurrency", "0"], "out of range: --body-concurrency"),
    ],
)
def test_bench_picker_refuses_bad_long_prompt_options(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    try:
        code: object = autonomic_main(["bench", "picker", *args, "--out", str(out)])
    except SystemExit as exc:  # argparse exits on a value it cannot convert
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
