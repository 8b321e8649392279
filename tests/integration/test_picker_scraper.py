"""The /metrics scraper against real HTTP servers: the fleet twin, and a loopback server that misbehaves on purpose.

The scraper feeds the real Director (default config), so each case also checks what scheduling then sees: a good
scrape makes the endpoint a candidate, every kind of failure takes it out at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from envoy_fixture import fleet_addresses

from harness.netutil import free_port
from scorer.config import default_config
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.sources.scraper import MetricsScraper, ScrapeResult
from scorer.types import Endpoint, LLMRequest
from sim.fleet.fleet import Fleet

GOOD = "vllm:num_requests_running 2\nvllm:num_requests_waiting 1\nvllm:kv_cache_usage_perc 0.5\n"


class MetricsServer:
    """Serves whatever `status` and `body` say on /metrics; `delay` holds each answer back (until the server stops)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.status, self.body, self.delay = 200, GOOD, 0.0
        # what a request naming series (`?name[]=...`) gets instead, when set: (status, body)
        self.filtered: tuple[int, str] | None = None
        self.seen: list[tuple[list[str], str]] = []  # per request: the names asked for, its Accept-Encoding
        self.runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _metrics(self, request: web.Request) -> web.Response:
        names = request.query.getall("name[]", [])
        self.seen.append((names, request.headers.get("Accept-Encoding", "")))
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.delay)
        if names and self.filtered is not None:
            return web.Response(status=self.filtered[0], text=self.filtered[1])
        return web.Response(status=self.status, text=self.body)

    async def __aenter__(self) -> MetricsServer:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        self._stopping.set()
        await self.runner.cleanup()


def _director(*addresses: str) -> Director:
    director = Director(Scheduler(default_config()))
    director.set_endpoints([Endpoint(a) for a in addresses])
    return director


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    async with MetricsServer() as s:
        yield s


@pytest.mark.parametrize(
    ("status", "body", "delay", "kind", "error"),
    [
        (500, GOOD, 0.0, "http", "HTTP 500"),
        (200, "<html>not vllm</html>", 0.0, "parse", "vllm:num_requests_waiting: missing"),
        (200, GOOD.replace(" 1\n", " NaN\n"), 0.0, "parse", "must be a finite non-negative number"),
    ],
)
async def test_each_failure_takes_the_endpoint_out_at_once(
    server: MetricsServer, status: int, body: str, delay: float, kind: str, error: str
):
    director = _director(server.address)
    async with MetricsScraper(director, [server.address], timeout_s=0.2) as scraper:
        assert (await scraper.scrape(server.address)).ok
        assert director.ready()
        assert director.endpoints()[0].metrics is not None and director.endpoints()[0].metrics.waiting == 1
        server.status, server.body, server.delay = status, body, delay
        result = await scraper.scrape(server.address)
    assert (result.ok, result.kind) == (False, kind)
    assert result.error is not None and error in result.error
    assert not director.ready()
    assert director.endpoints()[0].error == f"{kind}: {result.error}"
    assert scraper.failing[server.address] == f"{kind}: {result.error}"


async def test_a_timeout_keeps_the_endpoint_until_its_metrics_are_stale(server: MetricsServer):
    clock = [1000.0]
    director = Director(Scheduler(default_config()), clock=lambda: clock[0], staleness_s=2.0)
    director.set_endpoints([Endpoint(server.address)])
    async with MetricsScraper(director, [server.address], timeout_s=0.2, clock=lambda: clock[0]) as scraper:
        assert (await scraper.scrape(server.address)).ok
        server.delay = 5.0
        result = await scraper.scrape(server.address)
    assert (result.ok, result.kind) == (False, "timeout")
    assert scraper.failing[server.address] == f"timeout: {result.error}"
    state = director.endpoints()[0]
    assert (state.error, state.stale, director.ready()) == (None, False, True)
    clock[0] += 3.0  # past the staleness limit: stale, and (alone) still routable as the last resort
    state = director.endpoints()[0]
    assert (state.error, state.stale) == (None, True)
    assert director.pick(LLMRequest("r", "m", prompt="hello")).addresses == [server.address]
    assert director.stale_fallbacks == 1


async def test_refused_connection():
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    director = _director(address)
    async with MetricsScraper(director, [address]) as scraper:
        result = await scraper.scrape(address)
    assert (result.ok, result.kind) == (False, "connect")
    assert scraper.staleness(address) == float("inf")
    assert not director.ready()


async def test_loops_scrape_every_endpoint_and_a_hung_one_does_not_delay_the_others(fleet2: Fleet):
    healthy = fleet_addresses(fleet2)
    async with MetricsServer() as hung:
        hung.delay = 30.0
        director = _director(*healthy, hung.address)
        results: list[ScrapeResult] = []
        scraper = MetricsScraper(
            director, [*healthy, hung.address], interval_s=0.05, timeout_s=10.0, on_result=results.append
        )
        async with scraper:
            task = asyncio.create_task(scraper.run())
            try:
                for _ in range(500):  # until each healthy twin has been scraped 5 times (a hang guard, not a timer)
                    if all(sum(r.address == a and r.ok for r in results) >= 5 for a in healthy):
                        break
                    await asyncio.sleep(0.02)
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # the hung endpoint's first scrape has not even timed out, while the twins were scraped on schedule
        assert not any(r.address == hung.address for r in results)
        assert all(sum(r.address == a and r.ok for r in results) >= 5 for a in healthy)
        states = {s.address: s for s in director.endpoints()}
        assert all(states[a].metrics is not None and states[a].error is None for a in healthy)
        assert states[hung.address].metrics is None
        assert all(scraper.staleness(a) < float("inf") for a in healthy)


async def test_scrapes_what_the_twin_reports(fleet2: Fleet):
    """The twin's real exposition, including LoRA and cache config, reaches the Director."""
    address = fleet_addresses(fleet2)[0]
    director = _director(address)
    async with aiohttp.ClientSession() as http:
        body = {"model": "sql-adapter", "prompt": "hello", "max_tokens": 2}
        async with http.post(f"{fleet2.urls[0]}/v1/completions", json=body) as r:
            assert r.status == 200
    async with MetricsScraper(director, [address]) as scraper:
        assert (await scraper.scrape(address)).ok
    metrics = director.endpoints()[0].metrics
    assert metrics is not None
    assert (metrics.max_loras, metrics.block_size, metrics.num_gpu_blocks) == (2, 16, 512)
    assert metrics.waiting == 0 and 0.0 <= metrics.kv_usage <= 1.0


async def test_set_addresses_scrapes_newcomers_at_once_and_forgets_leavers(fleet2: Fleet):
    """Membership changes while the loops run (InferencePool discovery): a newcomer is scraped without waiting for a
    slow interval, a leaver's loop ends and its state goes."""
    first, second = fleet_addresses(fleet2)
    director = _director(first)
    results: list[ScrapeResult] = []
    scraper = MetricsScraper(director, [first], interval_s=60.0, on_result=results.append)  # loops never come round
    async with scraper:
        assert (await scraper.scrape(first)).ok
        task = asyncio.create_task(scraper.run())
        try:
            director.set_endpoints([Endpoint(first), Endpoint(second)])
            scraper.set_addresses([first, second])
            for _ in range(500):  # a hang guard, not a timer
                if any(r.address == second and r.ok for r in results):
                    break
                await asyncio.sleep(0.01)
            assert [r.address for r in results] == [first, second]  # the newcomer at once, nothing else yet
            assert {s.address for s in director.endpoints() if s.metrics is not None} == {first, second}
            scraper.set_addresses([second])
            assert scraper.addresses == [second] and first not in scraper.last_success
            await asyncio.sleep(0)  # let the cancellation land
            assert not task.done()  # the group lives on for later newcomers
            scraper.set_addresses([second, first])  # back again, while the loops run
            for _ in range(500):
                if len(results) == 3:
                    break
                await asyncio.sleep(0.01)
            assert [r.address for r in results] == [first, second, first]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


class KeepAliveServer:
    """A minimal HTTP/1.1 /metrics server that can stop accepting while its open connections go on answering (what a
    draining server may do); it counts the connections it accepted and honours `Connection: close`."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._connections.add(writer)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                close = b"connection: close" in head.lower()
                body = GOOD.encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n"
                    % (len(body), b"Connection: close\r\n" if close else b"")
                )
                writer.write(body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    async def __aenter__(self) -> KeepAliveServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    def stop_accepting(self) -> None:
        assert self.server is not None
        self.server.close()  # the listening socket only: open connections keep being served

    async def __aexit__(self, *exc: object) -> None:
        self.stop_accepting()
        for writer in list(self._connections):
            writer.close()


async def test_connections_are_reused_and_a_server_that_stops_accepting_looks_down_after_reconnect_s():
    clock = [0.0]
    async with KeepAliveServer() as server:
        director = _director(server.address)
        async with MetricsScraper(director, [server.address], reconnect_s=1.0, clock=lambda: clock[0]) as scraper:
            for t in (0.0, 0.2, 0.4, 0.6, 0.8):
                clock[0] = t
                assert (await scraper.scrape(server.address)).ok
            assert server.accepted == 1  # one connection for five scrapes
            server.stop_accepting()
            clock[0] = 0.9
            assert (await scraper.scrape(server.address)).ok  # the open connection still answers...
            clock[0] = 1.0
            assert (await scraper.scrape(server.address)).ok  # ...and is told to close after this answer
            clock[0] = 1.1
            result = await scraper.scrape(server.address)  # a new connection: refused
    assert (result.ok, result.kind) == (False, "connect")
    assert not director.ready()
    assert server.accepted == 1


async def test_reconnect_zero_opens_a_connection_per_scrape():
    async with KeepAliveServer() as server:
        director = _director(server.address)
        async with MetricsScraper(director, [server.address], reconnect_s=0.0) as scraper:
            for _ in range(3):
                assert (await scraper.scrape(server.address)).ok
    assert server.accepted == 3


async def test_scrape_cost_server_side_reads_the_twin_s_cpu_per_answer():
    """`scrape_cost --server-side`: a real twin answering /metrics spends CPU on each answer (read from /proc)."""
    from loadtests.picker.scrape_cost import server_cost

    cost = await server_cost(50)
    assert cost["server_cpu_ms_per_scrape"] > 0
    assert cost["client_cpu_ms_per_scrape"] > 0


@pytest.mark.parametrize(
    ("filtered", "full", "kind", "requests", "falls_back"),
    [
        (None, (200, GOOD), "ok", [True], False),  # a server that ignores the filter: it is read as it is
        ((200, GOOD), (200, "unused"), "ok", [True], False),  # the filter honoured
        ((200, ""), (200, GOOD), "ok", [True, False], True),  # an empty filtered answer: asked again for everything
        ((404, "no"), (200, GOOD), "ok", [True, False], True),  # the query refused
        ((500, "down"), (200, GOOD), "http", [True], False),  # a server error is not about the filter
        ((200, "junk"), (200, "junk"), "parse", [True, False], False),  # broken either way: both asked each time
    ],
)
async def test_only_the_series_read_are_asked_for_and_a_server_that_cannot_filter_is_asked_for_all(
    server: MetricsServer,
    filtered: tuple[int, str] | None,
    full: tuple[int, str],
    kind: str,
    requests: list[bool],
    falls_back: bool,
):
    from scorer.sources.model_metrics import SERIES

    server.filtered, (server.status, server.body) = filtered, full
    director = _director(server.address)
    async with MetricsScraper(director, [server.address]) as scraper:
        first = await scraper.scrape(server.address)
        assert first.kind == kind
        assert [bool(names) for names, _ in server.seen] == requests
        assert all(names in ([], list(SERIES)) for names, _ in server.seen)
        assert all(encoding == "identity" for _, encoding in server.seen)  # never compressed
        assert (server.address in scraper.unfiltered) == falls_back
        server.seen.clear()
        await scraper.scrape(server.address)  # the next scrape asks in the form that worked, once
        assert [bool(names) for names, _ in server.seen] == ([False] if falls_back else requests)


async def test_a_twin_s_filtered_answer_reads_as_its_whole_exposition(fleet2: Fleet):
    """The real twin honours `name[]` as vLLM's prometheus_client app does: the scraper's filtered read gives the
    metrics the whole exposition gives."""
    from scorer.sources.model_metrics import parse_vllm_metrics

    address = fleet_addresses(fleet2)[0]
    director = _director(address)
    async with MetricsScraper(director, [address]) as scraper, aiohttp.ClientSession() as http:
        assert (await scraper.scrape(address)).ok and address not in scraper.unfiltered
        async with http.get(f"http://{address}/metrics") as response:
            whole = parse_vllm_metrics(await response.text()).metrics
        seen = director.endpoints()[0].metrics
        assert seen is not None and whole == dataclasses.replace(seen, scraped_at=whole.scraped_at)
