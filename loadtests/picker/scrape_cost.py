"""What the picker's scraping costs: its MetricsScraper feeding a Director, against N cheap metrics endpoints.

Why it exists: the picker scrapes every model server's `/metrics` every interval, so its CPU grows with the pool.
This measures the scraper in this process (nothing else runs in it meanwhile) against `loadtests.picker.metrics_stub`
serving a real twin's exposition on N loopback ports: CPU per scrape and cores used, with a small pool measured
alongside as the baseline. Part 3 of `autonomic bench picker`. `--server-side` measures the other half: the CPU a
real fleet twin spends answering each scrape (its Prometheus exposition, as vLLM's API server renders its own), in
each form a scraper can ask for it (everything, gzip-compressed or not; only the series the picker reads).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from harness.child import Child
from harness.netutil import find_base_port
from loadtests.report.writer import pct
from loadtests.soak.sampler import cpu_seconds
from scorer.config import default_config
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.sources.scraper import SERIES_QUERY, MetricsScraper, ScrapeResult
from scorer.types import Endpoint
from sim.fleet.process import FleetProcess


async def twin_expositions(*queries: str) -> list[str]:
    """A real twin's /metrics texts (one fresh server), one per query ("": the whole exposition; the picker's
    `?name[]=...`: the series it reads)."""
    async with FleetProcess(servers=1, base_port=find_base_port(1)) as fleet, aiohttp.ClientSession() as http:
        texts = []
        for query in queries:
            async with http.get(fleet.urls[0] + "/metrics" + query) as response:
                texts.append(await response.text())
        return texts


async def write_expositions(directory: Path) -> Path:
    """The twin's whole exposition in `directory`/twin-metrics.txt and its answer to the picker's filtered request
    beside it (twin-metrics-filtered.txt), for `MetricsStub`; returns the first."""
    whole, filtered = await twin_expositions("", "?" + SERIES_QUERY)
    (directory / "twin-metrics-filtered.txt").write_text(filtered)
    text_file = directory / "twin-metrics.txt"
    text_file.write_text(whole)
    return text_file


class MetricsStub:
    """`python -m loadtests.picker.metrics_stub` serving `text_file` on `ports` loopback ports, as a child process."""

    def __init__(self, ports: int, text_file: Path):
        cmd = [sys.executable, "-m", "loadtests.picker.metrics_stub", "--ports", str(ports), "--text", str(text_file)]
        filtered = text_file.with_name(text_file.stem + "-filtered.txt")
        if filtered.exists():  # what a request naming the series gets
            cmd += ["--filtered-text", str(filtered)]
        self._child = Child(cmd, name="metrics stub", ready=r"^ready: (\S+)$", ready_timeout_s=60.0)
        self.addresses: list[str] = []

    async def __aenter__(self) -> MetricsStub:
        await self._child.start()
        assert self._child.ready_match is not None
        self.addresses = [f"127.0.0.1:{p}" for p in self._child.ready_match.group(1).split(",")]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._child.stop()


async def scrape_cost(endpoints: int, interval_s: float, seconds: float, text_file: Path) -> dict[str, Any]:
    """The scraper's CPU (this process, nothing else runs in it meanwhile) over `seconds` of scraping."""
    async with MetricsStub(endpoints, text_file) as stub:
        director = Director(Scheduler(default_config()), staleness_s=1e9)
        director.set_endpoints([Endpoint(a) for a in stub.addresses])
        results: list[ScrapeResult] = []
        async with MetricsScraper(director, stub.addresses, interval_s=interval_s, on_result=results.append) as s:
            await s.scrape_all()
            task = asyncio.create_task(s.run())
            await asyncio.sleep(interval_s * 2)  # every loop has started
            first, cpu0, wall0 = len(results), time.process_time(), time.monotonic()
            await asyncio.sleep(seconds)
            cpu, wall, window = time.process_time() - cpu0, time.monotonic() - wall0, results[first:]
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    ok = [r for r in window if r.ok]
    target = endpoints / interval_s
    per_scrape_ms = cpu / len(window) * 1e3 if window else float("nan")
    return {
        "endpoints": endpoints,
        "interval_s": interval_s,
        "target_scrapes_per_s": target,
        "scrapes_per_s": len(window) / wall,
        "failed": len(window) - len(ok),
        "cpu_cores": cpu / wall,
        "cpu_ms_per_scrape": per_scrape_ms,
        "projected_cores_at_target": per_scrape_ms * target / 1e3,
        "scrape_p50_ms": pct([r.seconds for r in ok], 50) * 1e3,
        "scrape_p99_ms": pct([r.seconds for r in ok], 99) * 1e3,
    }


async def scrape_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    text_file = await write_expositions(args.out)
    rows = []
    for n in dict.fromkeys([min(8, args.scrape_endpoints), args.scrape_endpoints]):
        rows.append(await scrape_cost(n, args.scrape_interval, args.scrape_seconds, text_file))
        print(f"[bench picker] scraping {n} endpoints: {rows[-1]['cpu_ms_per_scrape']:.3f} CPU ms per scrape")
    for row in rows:
        row["cpu_per_scrape_ratio"] = row["cpu_ms_per_scrape"] / rows[0]["cpu_ms_per_scrape"]
    return rows


# the forms of a scrape, by what the picker asks: everything with aiohttp's default Accept-Encoding (gzip, deflate:
# the picker until 2026-12-08), everything uncompressed, and only the series it reads, uncompressed (the picker now)
SCRAPE_FORMS = {
    "whole, gzip accepted": ("", "gzip, deflate"),
    "whole, identity": ("", "identity"),
    "series read, identity": ("?" + SERIES_QUERY, "identity"),
}


async def server_cost(scrapes: int, query: str = "", encoding: str = "identity") -> dict[str, float]:
    """CPU ms a fresh fleet twin (one server, idle) spends per `/metrics` answer, over `scrapes` scrapes on one
    kept-alive connection, as the picker scrapes; the client's own CPU per scrape (a bare aiohttp GET, the body
    decompressed when it came compressed) and the bytes on the wire beside it."""
    async with FleetProcess(servers=1, base_port=find_base_port(1)) as fleet, aiohttp.ClientSession() as http:
        url, headers = fleet.urls[0] + "/metrics" + query, {"Accept-Encoding": encoding}
        for _ in range(20):  # warm: imports, first connection
            async with http.get(url, headers=headers) as response:
                await response.read()
        twin0, own0, wire = cpu_seconds(fleet.pid), time.process_time(), 0
        for _ in range(scrapes):
            async with http.get(url, headers=headers) as response:
                await response.read()
                wire += int(response.headers.get("Content-Length", "0"))
        twin1, own1 = cpu_seconds(fleet.pid), time.process_time()
    if twin0 is None or twin1 is None:
        raise RuntimeError("the twin's CPU could not be read")
    return {
        "server_cpu_ms_per_scrape": (twin1 - twin0) * 1e3 / scrapes,
        "client_cpu_ms_per_scrape": (own1 - own0) * 1e3 / scrapes,
        "bytes_per_scrape": wire / scrapes,
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m loadtests.picker.scrape_cost --endpoints 8 --seconds 10 --repeat 3`: this part alone."""
    p = argparse.ArgumentParser(prog="python -m loadtests.picker.scrape_cost", description=__doc__)
    p.add_argument("--endpoints", type=int, default=8, help="metrics endpoints to scrape (default 8)")
    p.add_argument(
        "--interval", type=float, default=0.05, help="seconds between scrapes of one endpoint (default 0.05)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured window per run (default 10)")
    p.add_argument("--repeat", type=int, default=1, help="runs, one after another (default 1)")
    p.add_argument(
        "--server-side",
        action="store_true",
        help="measure instead the CPU a fleet twin spends answering each scrape, per form (2,000 scrapes each)",
    )
    args = p.parse_args(argv)
    if not (1 <= args.endpoints <= 2000 and args.interval > 0 and args.seconds > 0 and args.repeat >= 1):
        p.error("--endpoints must be in [1, 2000]; --interval and --seconds positive; --repeat at least 1")

    async def server_runs() -> None:
        print(f"{'run':>3} {'form':<22} {'twin CPU ms/scrape':>18} {'client CPU ms/scrape':>20} {'bytes':>7}")
        for i in range(args.repeat):
            for form, (query, encoding) in SCRAPE_FORMS.items():
                r = await server_cost(2000, query, encoding)
                print(
                    f"{i + 1:>3} {form:<22} {r['server_cpu_ms_per_scrape']:18.3f} "
                    f"{r['client_cpu_ms_per_scrape']:20.3f} {r['bytes_per_scrape']:7.0f}",
                    flush=True,
                )

    async def runs() -> None:
        with tempfile.TemporaryDirectory(prefix="scrape-cost-") as tmp:
            text_file = await write_expositions(Path(tmp))
            head = ("run", "scrapes/s", "CPU ms/scrape", "cores", "p50 ms", "p99 ms", "failed")
            print(" ".join(f"{h:>{w}}" for h, w in zip(head, (3, 9, 13, 6, 7, 7, 6), strict=True)))
            for i in range(args.repeat):
                r = await scrape_cost(args.endpoints, args.interval, args.seconds, text_file)
                print(
                    f"{i + 1:>3} {r['scrapes_per_s']:9.0f} {r['cpu_ms_per_scrape']:13.3f} {r['cpu_cores']:6.3f} "
                    f"{r['scrape_p50_ms']:7.2f} {r['scrape_p99_ms']:7.2f} {r['failed']:6d}",
                    flush=True,
                )

    asyncio.run(server_runs() if args.server_side else runs())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
