"""A running service loads only what it runs: `autonomic picker` and `autonomic controller` are started for real
(`python -m autonomic ...`, wrapped so that the process writes `sys.modules` to a file when it exits), do real work
(the picker scrapes a twin, follows its KV events and answers a Pick with the precise profile; the controller lists
the cluster twin and runs cycles) and stop on SIGTERM. Neither has loaded the twins, the harnesses, the benchmarks or
the other service; the picker no scipy. (`-X importtime` would miss modules loaded with importlib, as the CLI loads
its subcommands.) The static side of the same rule is the import-linter contracts in pyproject.toml (make lint).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cluster_helpers import wait_for
from controller_helpers import two_nodes_one_vm

from harness.netutil import free_port
from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from sim.cluster.twin import ClusterTwin
from sim.fleet.fleet import Fleet

ROOT = Path(__file__).resolve().parents[2]
PRECISE_CONFIG = ROOT / "scorer" / "precise-config.yaml"
DEVELOPMENT = {"sim", "loadtests", "harness", "matplotlib", "locust"}
PICKER_FORBIDDEN = DEVELOPMENT | {"controller", "scipy"}
CONTROLLER_FORBIDDEN = DEVELOPMENT | {"scorer"}
# `python -m autonomic ARGS`, except that sys.modules is written to the file named by $MODULES_OUT at exit
_RUN_RECORDING_MODULES = (
    "import atexit, json, os, runpy, sys\n"
    "def _record():\n"
    "    with open(os.environ['MODULES_OUT'], 'w') as f:\n"
    "        json.dump(sorted(sys.modules), f)\n"
    "atexit.register(_record)\n"
    "sys.argv[0] = 'autonomic'\n"
    "runpy.run_module('autonomic', run_name='__main__', alter_sys=True)\n"
)


def autonomic(*args: str) -> list[str]:
    return [sys.executable, "-c", _RUN_RECORDING_MODULES, *args]


def loaded(path: Path) -> set[str]:
    return set(json.loads(path.read_text()))


def forbidden(modules: set[str], packages: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages)


def _env(modules: Path) -> dict[str, str]:
    env = {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "AUTONOMIC_LOG_LEVEL": "warning"}
    return {**os.environ, **env, "MODULES_OUT": str(modules)}


async def test_the_running_picker_loads_no_twin_benchmark_controller_or_scipy(fleet2: Fleet, tmp_path: Path) -> None:
    pool = [u.removeprefix("http://") for u in fleet2.urls]
    port, health, metrics = free_port(), free_port(), free_port()
    trace, modules_out = tmp_path / "stderr.txt", tmp_path / "modules.json"
    cmd = autonomic("picker", "--endpoints", ",".join(pool))
    cmd += ["--config", str(PRECISE_CONFIG), "--scrape-interval", "0.2"]
    cmd += ["--port", str(port), "--health-port", str(health), "--metrics-port", str(metrics)]
    with trace.open("w") as err:
        proc = await asyncio.create_subprocess_exec(
            *cmd, stdout=asyncio.subprocess.PIPE, stderr=err, env=_env(modules_out)
        )
        try:
            assert proc.stdout is not None
            ready = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert ready.startswith("ready:"), (ready, trace.read_text()[-2000:])
            body = json.dumps({"model": fleet2.servers[0].model_name, "prompt": "which way " * 200}).encode()
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.PickerStub(channel)
                async with asyncio.timeout(60):
                    while True:  # until both endpoints are scraped and the decision has a choice
                        answer = await stub.Explain(pb.PickRequest(body=body))
                        if len(answer.endpoints) == len(pool):
                            break
                picked = await stub.Pick(pb.PickRequest(body=body, request_id="boundaries"))
            assert picked.endpoint in pool
            proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    modules = loaded(modules_out)
    # what the picker ran is in the record, so an empty or wrong record cannot pass
    assert {"scorer.cli", "scorer.extproc.server", "scorer.sources.kv_events", "common.kv_wire"} <= modules
    assert forbidden(modules, PICKER_FORBIDDEN) == []


@pytest.fixture(scope="module")
def twin() -> Iterator[ClusterTwin]:
    with ClusterTwin(two_nodes_one_vm(), time_scale=10) as t:
        yield t


@pytest.mark.parametrize("policy", ["descheduler-compatible", "psi-relief"])
def test_the_running_controller_loads_no_twin_benchmark_or_picker(
    twin: ClusterTwin, tmp_path: Path, policy: str
) -> None:
    trace, modules_out = tmp_path / "stderr.txt", tmp_path / "modules.json"
    down = f"http://127.0.0.1:{free_port()}"  # cycles run and skip with metrics-unavailable
    cmd = autonomic("controller", "--policy", policy)
    cmd += ["--kubeconfig", str(twin.kubeconfig_path), "--prometheus-url", down]
    cmd += ["--metrics-host", "127.0.0.1", "--metrics-port", "0", "--interval", "0.2", "--dry-run"]
    with trace.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=_env(modules_out))
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.startswith(f"ready: policy={policy}"), (line, trace.read_text()[-2000:])
            url = line.split("metrics=")[1].split()[0]

            def cycled() -> bool:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    return "autonomic_controller_skipped_cycles_total{" in resp.read().decode()

            wait_for(cycled, timeout=60, what="a cycle")
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    modules = loaded(modules_out)
    assert {"controller.cli", "controller.loop", "common.kube_watch"} <= modules
    assert forbidden(modules, CONTROLLER_FORBIDDEN) == []


def test_a_development_subcommand_is_refused_where_its_code_is_not_installed(tmp_path: Path) -> None:
    """The product image has no twins: `autonomic fleet` there says so and exits 2 (simulated by hiding `sim`)."""
    hidden = tmp_path / "sim"
    hidden.mkdir()
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'sim'\", name='sim')\n")
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    done = subprocess.run(
        [sys.executable, "-m", "autonomic", "fleet", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert "autonomic fleet needs a development install" in done.stderr and "Traceback" not in done.stderr
