"""The locustfiles run headless for a few seconds against real twins and write CSV rows without failures.

Real processes on loopback: a fleet twin, Envoy (round robin) for the gateway users, the `autonomic picker` process
for the ext_proc users; locust itself as a child process, as a person would run it. Only the CSV's shape and the
absence of failures are checked, never a rate or a latency.
"""

from __future__ import annotations

import asyncio
import csv
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def fleet() -> AsyncIterator[FleetProcess]:
    async with FleetProcess(servers=2, base_port=find_base_port(2), time_scale=100.0) as f:
        yield f


async def locust(locustfile: str, host: str, out: Path, *args: str, seconds: int = 4) -> dict[tuple[str, str], dict]:
    """Run locust headless; returns the stats CSV rows by (type, name). Fails the test with locust's output."""
    prefix = out / "run"
    cmd = [sys.executable, "-m", "locust", "-f", str(REPO / "loadtests" / "locust" / locustfile), "--headless"]
    cmd += ["--host", host, "-t", f"{seconds}s", "--csv", str(prefix), "--html", str(out / "run.html")]
    cmd += ["--only-summary", "--loglevel", "WARNING", *args]
    proc = await asyncio.create_subprocess_exec(
        *cmd, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    output, _ = await asyncio.wait_for(proc.communicate(), seconds + 60)
    text = output.decode(errors="replace")
    stats = prefix.with_name("run_stats.csv")
    assert stats.exists(), text[-3000:]
    with stats.open() as f:
        rows = {(r["Type"], r["Name"]): r for r in csv.DictReader(f)}
    assert (out / "run.html").stat().st_size > 0
    return rows


def check(rows: dict[tuple[str, str], dict], key: tuple[str, str], at_least: int = 1) -> int:
    assert key in rows, sorted(rows)
    count, failures = int(rows[key]["Request Count"]), int(rows[key]["Failure Count"])
    assert count >= at_least and failures == 0, rows[key]
    return count


async def test_gateway_users_multi_turn_streaming(fleet: FleetProcess, tmp_path: Path) -> None:
    pool = [u.removeprefix("http://") for u in fleet.urls]
    async with LocalEnvoy(
        EnvoyOptions(listen_port=free_port(), admin_port=free_port(), picker_port=None, pool=pool)
    ) as envoy:
        rows = await locust(
            "gateway.py", envoy.url, tmp_path, "-u", "3", "-r", "3", "--shape", "multi-turn", "--max-tokens", "4"
        )
    check(rows, ("POST", "multi-turn /v1/chat/completions"))
    check(rows, ("TTFT", "multi-turn /v1/chat/completions"))
    assert int(rows[("", "Aggregated")]["Failure Count"]) == 0


async def test_gateway_users_replay_a_trace_without_streaming(fleet: FleetProcess, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    lines = [
        {"timestamp": 50 * i, "input_length": 700, "output_length": 3, "hash_ids": [1, 2 + i % 3]} for i in range(10)
    ]
    trace.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = [
        "-u",
        "4",
        "-r",
        "4",
        "--shape",
        "trace",
        "--trace-file",
        str(trace),
        "--trace-time-scale",
        "1",
        "--no-stream",
    ]
    rows = await locust("gateway.py", fleet.urls[0], tmp_path, *args, seconds=20)
    assert check(rows, ("POST", "trace /v1/completions")) == 10  # every request once; the run stops by itself
    assert ("TTFT", "trace /v1/completions") not in rows


async def test_picker_users_speak_ext_proc(fleet: FleetProcess, tmp_path: Path) -> None:
    picker = PickerProcess([u.removeprefix("http://") for u in fleet.urls])
    await picker.start()
    try:
        rows = await locust("picker.py", f"127.0.0.1:{picker.port}", tmp_path, "-u", "2", "-r", "2", seconds=3)
    finally:
        await picker.stop()
    check(rows, ("ext_proc", "decision"), at_least=5)
