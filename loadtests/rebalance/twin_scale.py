"""How long the cluster twin takes to build and serve a production-sized cluster, as ratios to a small one.

Why it exists: the rebalancing benchmark must run 100 nodes x 3,000 VMs (../shared/docs/benchmarks.md), so the
twin's start-up, memory, idle CPU (the load model and exporter ticking) and the API's list latency to the official
client must stay usable at that size. Each size runs `autonomic cluster-sim` with node shapes as a child process;
the first size is the baseline of the same run:

    python -m loadtests.rebalance.twin_scale [--sizes 20x600,100x3000] [--lists 7] [--prometheus]
    python -m loadtests.rebalance.twin_scale --scrape-cost [--sizes ...]

Per size: start-up (spawn to the `ready:` line), RSS after start, CPU the idle twin uses (cores, over 10 s; with
--prometheus, once every node has been scraped, so the window holds 1 s scrapes of every node),
and the median over --lists calls of listing VMIs and pods for all namespaces with the kubernetes client, typed
(`list_pod_for_all_namespaces`, models built) and raw (`_preload_content=False`, the server's share).

`--scrape-cost` instead times, in process on the same twin, one scrape of every node the way the exporter served it
before (a full load-model update per scrape, then the node's text) against now (`LoadTelemetry.for_scrape`: the
last sample reused within a tick, its node's counters projected), the milliseconds per scrape of each; and the
store's list of every pod, JSON-encoded, with the deep copy the HTTP list made before against without (now).
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from loadtests.soak.sampler import cpu_seconds

AUTONOMIC = Path(sys.executable).with_name("autonomic")


def _proc_cpu_s(pid: int) -> float:
    cpu = cpu_seconds(pid)
    if cpu is None:
        raise RuntimeError(f"process {pid} is gone")
    return cpu


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median_s(fn: Callable[[], Any], n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _raw(response: Any) -> bytes:
    """The body of a `_preload_content=False` call (a urllib3 response): read, not decoded into models."""
    return bytes(response.data)


def _wait_scraped(prometheus_url: str, nodes: int, timeout_s: float = 120.0) -> None:
    """Until Prometheus has scraped every node's endpoint once (the twin then serves its steady load)."""
    query = urllib.parse.urlencode({"query": 'count(up{job="node-exporter"} == 1)'})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=10) as resp:
            result = json.loads(resp.read())["data"]["result"]
        if result and int(float(result[0]["value"][1])) >= nodes:
            return
        time.sleep(0.5)
    raise RuntimeError(f"Prometheus did not scrape all {nodes} nodes within {timeout_s:.0f} s")


def measure(nodes: int, vms: int, lists: int, prometheus: bool, idle_s: float = 10.0) -> dict[str, Any]:
    from kubernetes import client, config  # the official client, as the controller uses it

    with tempfile.TemporaryDirectory(prefix="twin-scale-") as tmp:
        kc = Path(tmp) / "kubeconfig"
        cmd = [str(AUTONOMIC), "cluster-sim", "--nodes", str(nodes), "--vms", str(vms), "--node-cpus", "64"]
        cmd += ["--node-memory-gib", "512", "--memory-fill", "0.85", "--port", "0", "--kubeconfig", str(kc)]
        cmd += ["--scrape-interval", "1", "--rate-window", "3s", "--rule-interval", "1s"]
        if not prometheus:
            cmd.append("--no-prometheus")
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            lines = []
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line.rstrip())
                if line.startswith("ready:"):
                    break
            else:
                raise RuntimeError(f"cluster-sim exited: {lines[-5:]}")
            startup = time.perf_counter() - started
            cluster = next((x for x in lines if x.startswith("cluster:")), "")
            prom = next((x.split(" ", 1)[1] for x in lines if x.startswith("prometheus: http")), None)
            if prom is not None:
                _wait_scraped(prom, nodes)
            cpu0, t0 = _proc_cpu_s(proc.pid), time.perf_counter()
            time.sleep(idle_s)  # a measurement window, not a wait for a condition
            idle_cores = (_proc_cpu_s(proc.pid) - cpu0) / (time.perf_counter() - t0)
            api = client.ApiClient(config.new_client_from_config(str(kc)).configuration)
            core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
            vmis: Any = custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances")
            n_vmis = len(vmis["items"])
            n_pods = len(core.list_pod_for_all_namespaces().items)
            out = {
                "nodes": nodes,
                "vms": vms,
                "cluster": cluster,
                "vmis_listed": n_vmis,
                "pods_listed": n_pods,
                "startup_s": startup,
                "rss_mib": _rss_mib(proc.pid),
                "idle_cores": idle_cores,
                "list_vmis_s": _median_s(
                    lambda: custom.list_cluster_custom_object("kubevirt.io", "v1", "virtualmachineinstances"), lists
                ),
                "list_pods_typed_s": _median_s(core.list_pod_for_all_namespaces, lists),
                "list_pods_raw_s": _median_s(
                    lambda: _raw(core.list_pod_for_all_namespaces(_preload_content=False)), lists
                ),
                "list_nodes_typed_s": _median_s(core.list_node, lists),
            }
            api.close()
            return out
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def scrape_cost(nodes: int, vms: int, rounds: int = 3) -> dict[str, Any]:
    """ms per node scrape: a full update each time (before) against for_scrape (now), same twin, same run."""
    from sim.cluster.cluster_shape import ClusterShape
    from sim.cluster.exposition import render_node
    from sim.cluster.resources import PODS
    from sim.cluster.shape_options import shaped_scenario
    from sim.cluster.telemetry_state import LoadTelemetry
    from sim.cluster.twin import ClusterTwin
    from sim.cluster.vm_trace import load_vm_trace

    shape = {"nodes": [{"count": nodes, "cpu": 64, "memory": "512Gi"}], "vms": vms, "memoryFill": 0.85}
    scenario = shaped_scenario(ClusterShape.model_validate(shape))
    with ClusterTwin(scenario, time_scale=1) as twin:
        telemetry = LoadTelemetry(twin.view, load_vm_trace(scenario.load.trace_file), scenario.load)
        names = [n.name for n in twin.view.nodes()]

        def before() -> None:
            for name in names:
                sample = telemetry.update()
                render_node(sample.nodes[name], telemetry.counters, sample.vms)

        def now() -> None:
            telemetry.update()
            for name in names:
                sample, mine, counters = telemetry.for_scrape(name, max_age_s=60.0)
                render_node(sample.nodes[name], counters, mine)

        app = twin.app
        assert app is not None

        def list_pods(copy_items: bool) -> None:
            json.dumps(app.store.list(PODS, copy_items=copy_items)[0])

        out: dict[str, Any] = {"nodes": nodes, "vms": vms}
        for label, fn in (("before_ms", before), ("now_ms", now)):
            out[label] = 1000 * min(twin.call(functools.partial(_median_s, fn, 1)) for _ in range(rounds)) / len(names)
        for label, copy_items in (("list_copy_ms", True), ("list_nocopy_ms", False)):
            timed = functools.partial(_median_s, functools.partial(list_pods, copy_items), 1)
            out[label] = 1000 * min(twin.call(timed) for _ in range(rounds))
        return out


FIGURES = (
    ("startup_s", "start-up to ready, s", "{:.2f}"),
    ("rss_mib", "RSS after start, MiB", "{:.0f}"),
    ("idle_cores", "idle CPU, cores", "{:.2f}"),
    ("list_vmis_s", "list VMIs (all ns), s", "{:.3f}"),
    ("list_pods_typed_s", "list pods, typed, s", "{:.3f}"),
    ("list_pods_raw_s", "list pods, raw, s", "{:.3f}"),
    ("list_nodes_typed_s", "list nodes, typed, s", "{:.3f}"),
)


def table(results: list[dict[str, Any]]) -> str:
    base = results[0]
    head = ["figure", *(f"{r['nodes']} x {r['vms']}" for r in results)]
    rows = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, label, fmt in FIGURES:
        cells = [fmt.format(base[key])]
        for r in results[1:]:
            ratio = r[key] / base[key] if base[key] else float("nan")
            cells.append(f"{fmt.format(r[key])} ({ratio:.2f}x)")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """`20x600,100x3000` -> [(20, 600), (100, 3000)]; ValueError naming --sizes otherwise."""
    sizes = []
    for part in text.split(","):
        fields = part.strip().lower().split("x")
        if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
            raise ValueError(f"--sizes: expected NODESxVMS[,NODESxVMS...], got {text!r}")
        nodes, vms = int(fields[0]), int(fields[1])
        if not 1 <= nodes <= 10_000 or not 1 <= vms <= 1_000_000:
            raise ValueError(f"--sizes: {part.strip()!r}: need 1-10000 nodes and 1-1000000 VMs")
        sizes.append((nodes, vms))
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtests.rebalance.twin_scale", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20x600,100x3000", help="NODESxVMS,... ; the first is the baseline")
    p.add_argument("--lists", type=int, default=7, help="list calls per figure (median)")
    p.add_argument("--prometheus", action="store_true", help="also run Prometheus (scraping every node each second)")
    p.add_argument("--scrape-cost", action="store_true", help="time one node scrape, before and now (in process)")
    args = p.parse_args(argv)
    try:
        sizes = parse_sizes(args.sizes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.lists < 1:
        print(f"error: --lists must be >= 1, got {args.lists}", file=sys.stderr)
        return 2
    if args.scrape_cost:
        costs = [scrape_cost(nodes, vms) for nodes, vms in sizes]
        print(
            "| size | ms per scrape, before | now | now / before | ms to list all pods, deep copy | no copy | ratio |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for c in costs:
            ratio, lists = c["now_ms"] / c["before_ms"], c["list_nocopy_ms"] / c["list_copy_ms"]
            print(
                f"| {c['nodes']} x {c['vms']} | {c['before_ms']:.2f} | {c['now_ms']:.2f} | {ratio:.3f}x "
                f"| {c['list_copy_ms']:.0f} | {c['list_nocopy_ms']:.0f} | {lists:.2f}x |"
            )
        return 0
    results = []
    for nodes, vms in sizes:
        r = measure(nodes, vms, args.lists, args.prometheus)
        print(f"[twin-scale] {r}", flush=True)
        results.append(r)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
