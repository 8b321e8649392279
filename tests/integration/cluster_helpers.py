"""Helpers for tests against the cluster twin: a client bound to its kubeconfig, polling, the admin API, and
`cluster-sim` as a process (the console script, its lines up to `ready:`)."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config

from sim.cluster.twin import ClusterTwin

T = TypeVar("T")
AUTONOMIC = Path(sys.executable).with_name("autonomic")


def read_until_ready(proc: subprocess.Popen[str], timeout: float = 60) -> list[str]:
    """The lines `cluster-sim` prints up to `ready:` (read in a thread, so a hang fails instead of blocking)."""
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or not seen[-1].startswith("ready:"):
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        assert line is not None, f"cluster-sim exited: {seen}"
        seen.append(line)
    return seen


def api_client(twin: ClusterTwin) -> client.ApiClient:
    """An ApiClient configured only from the twin's kubeconfig (no global default touched)."""
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(twin.kubeconfig_path), client_configuration=cfg)
    return client.ApiClient(cfg)


def wait_for(probe: Callable[[], T | None], *, timeout: float = 30.0, what: str = "condition") -> T:
    """Poll until `probe` returns something truthy (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def admin(twin: ClusterTwin, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{twin.api_url}/_twin/{path}", data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def raw(
    twin: ClusterTwin,
    method: str,
    path: str,
    *,
    query: dict[str, str] | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One plain HTTP request to the twin's API: (status, headers, body), errors included (no client decoding)."""
    url = f"{twin.api_url}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def launcher_pod(core: client.CoreV1Api, namespace: str, vm: str) -> client.V1Pod:
    pods = core.list_namespaced_pod(namespace, label_selector=f"kubevirt.io=virt-launcher,vm.kubevirt.io/name={vm}")
    running = [p for p in pods.items if p.status.phase == "Running"]
    assert len(running) == 1, [p.metadata.name for p in pods.items]
    return running[0]
