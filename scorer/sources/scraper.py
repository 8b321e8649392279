"""Scrapes every model server's `/metrics` on its own schedule and feeds the Director, so picks see live load.

Why it exists: the scheduling core only knows what the scrapes tell it (queue, running, KV usage, LoRA state), and
whether an endpoint answers at all. Each endpoint gets its own loop (a task in one TaskGroup), so a server that hangs
until the per-request timeout never delays the scrapes of the others. A failed scrape (refused, reset, HTTP error,
unusable exposition) is reported to `Director.update_metrics(address, None, error)` at once, which takes the
endpoint out of the candidates: a dead replica stops receiving new requests within one scrape interval. A timeout
is not proof of death (a starved CPU, on either side, looks the same): it is logged and counted but not reported,
so the endpoint keeps its last metrics until they pass the staleness limit, and then the Director's stale rule
applies (out while others are fresh, still routable when nobody is).

The set of endpoints may change while it runs (`set_addresses`, from InferencePool discovery): a newcomer is
scraped at once and then on its own loop, a leaver's loop is cancelled and its state dropped.

Connections are kept alive, but each is used for at most `reconnect_s` (1 s): the scrape due after that asks the
server to close (`Connection: close`), so the next one connects anew. A server that stopped accepting connections
while still answering on open ones (draining before its pod is removed) therefore looks down within ~1 s plus one
interval; one that crashed, or closes its idle connections as uvicorn does on shutdown, looks down at the next
scrape, as with a new connection every time. Why not a new connection every time: at 0.1 s that was a TCP connect and
close per scrape, about a third of a scrape's CPU (1.48-1.62 -> 0.99-1.11 ms per scrape, alternating in one process
of `loadtests.picker.scrape_cost`), and scraping is most of an idle picker's CPU; the servers pay the accepts too.
`keepalive_timeout` (2 s) stays under the servers' own idle timeouts (uvicorn's, vLLM's: 5 s), so a connection the
server is about to close is not reused.

Only the series the picker reads are asked for (`?name[]=vllm:num_requests_waiting&...`), uncompressed
(`Accept-Encoding: identity`). vLLM serves `/metrics` with prometheus_client's exposition app, which renders just the
named series when asked so, and gzips its answer for a client that accepts gzip (aiohttp's default header does):
rendering and compressing the whole ~40 KB exposition cost a twin ~12x the CPU of the ~1.8 KB that is read
(docs/picker.md, "What is read"). A server that answers the filtered form without a required series, or refuses it
with a 4xx (a proxy in front of it that drops or rejects the query), is asked again at once for everything; when
that answer is good, it is asked for everything from then on (a server broken either way keeps being asked both).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import quote

import aiohttp

from scorer.sources.model_metrics import SERIES, MetricsError, parse_vllm_metrics
from scorer.types import EndpointMetrics

log = logging.getLogger("autonomic.picker.scrape")
_IDENTITY = {"Accept-Encoding": "identity"}
_CLOSE = {**_IDENTITY, "Connection": "close"}
# the series parse_vllm_metrics reads, as prometheus_client's `name[]` filter wants them (sample names)
SERIES_QUERY = "&".join(f"name%5B%5D={quote(name, safe='')}" for name in SERIES)


class MetricsSink(Protocol):
    """Where scrape results go (`scorer.director.Director` satisfies it)."""

    def update_metrics(self, address: str, metrics: EndpointMetrics | None, error: str | None = None) -> None: ...


@dataclass(frozen=True)
class ScrapeResult:
    address: str
    ok: bool
    seconds: float  # how long the scrape took
    kind: str = "ok"  # ok | timeout | connect | http | parse | error
    error: str | None = None


class MetricsScraper:
    """`async with MetricsScraper(sink, addresses) as s: await s.scrape_all(); await s.run()` (run until cancelled)."""

    def __init__(
        self,
        sink: MetricsSink,
        addresses: Sequence[str],
        *,
        interval_s: float = 0.1,
        timeout_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        on_result: Callable[[ScrapeResult], None] | None = None,
        path: str = "/metrics",
        reconnect_s: float = 1.0,
    ):
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("scrape interval and timeout must be positive")
        if reconnect_s < 0:
            raise ValueError("reconnect_s must be >= 0 (0: a new connection for every scrape)")
        self.sink = sink
        self.addresses = list(dict.fromkeys(addresses))
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.clock = clock
        self.on_result = on_result
        self.path = path
        self.reconnect_s = reconnect_s
        self._reconnect_at: dict[str, float] = {}  # address -> clock time after which its scrape closes its connection
        self.last_success: dict[str, float] = {}  # address -> clock time of its last good scrape
        self.failing: dict[str, str] = {}  # address -> why its last scrape failed
        self._session: aiohttp.ClientSession | None = None
        self._group: asyncio.TaskGroup | None = None  # set while `run` runs
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._filter = ("&" if "?" in path else "?") + SERIES_QUERY  # appended to `path` to ask for the series read
        self.unfiltered: set[str] = set()  # addresses that did not answer the filtered form completely

    async def __aenter__(self) -> MetricsScraper:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=2.0)
        self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=self.timeout_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def staleness(self, address: str) -> float:
        """Seconds since the last successful scrape (inf before the first one)."""
        last = self.last_success.get(address)
        return float("inf") if last is None else max(0.0, self.clock() - last)

    async def scrape_all(self) -> list[ScrapeResult]:
        """One scrape of every endpoint, concurrently (used once before serving)."""
        return list(await asyncio.gather(*(self.scrape(a) for a in self.addresses)))

    async def run(self) -> None:
        """Scrape each endpoint every `interval_s` until cancelled."""
        async with asyncio.TaskGroup() as tg:
            self._group = tg
            try:
                for i, address in enumerate(self.addresses):
                    offset = self.interval_s * (1 + i / max(1, len(self.addresses)))  # spread the endpoints' phases
                    scraped = address in self.last_success or address in self.failing
                    self._start_loop(address, offset if scraped else 0.0)  # a newcomer: at once
                await asyncio.Event().wait()  # keep the group open for newcomers until cancelled
            finally:
                self._group = None

    def set_addresses(self, addresses: Sequence[str]) -> None:
        """The endpoints to scrape from now on: newcomers are scraped at once, leavers stop being scraped."""
        wanted = list(dict.fromkeys(addresses))
        for address in set(self.addresses) - set(wanted):
            task = self._loops.pop(address, None)
            if task is not None:
                task.cancel()
            self.last_success.pop(address, None)
            self.failing.pop(address, None)
            self._reconnect_at.pop(address, None)
            self.unfiltered.discard(address)
        known = set(self.addresses)
        self.addresses = wanted
        if self._group is not None:
            for address in wanted:
                if address not in known:
                    self._start_loop(address, 0.0)

    def _start_loop(self, address: str, first_delay: float) -> None:
        assert self._group is not None
        task = self._group.create_task(self._loop(address, first_delay), name=f"scrape {address}")
        self._loops[address] = task
        task.add_done_callback(lambda t: self._loops.pop(address, None) if self._loops.get(address) is t else None)

    async def _loop(self, address: str, first_delay: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + first_delay
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self.scrape(address)
            due = max(due + self.interval_s, loop.time())  # after a slow scrape: go on, do not burst to catch up

    async def scrape(self, address: str) -> ScrapeResult:
        """Scrape one endpoint and report the result to the sink (never raises, except on cancellation)."""
        started = time.perf_counter()
        filtered = address not in self.unfiltered
        kind, error, metrics = await self._fetch(address, filtered)
        if filtered and (kind == "parse" or (kind == "http" and error is not None and error.startswith("HTTP 4"))):
            whole = await self._fetch(address, filtered=False)
            if whole[0] == "ok":  # the whole exposition has what the filtered one lacked: this server cannot filter
                self.unfiltered.add(address)
                log.info(
                    "endpoint did not answer the filtered scrape; scraping its whole exposition from now on",
                    extra={"endpoint": address, "error": error},
                )
            kind, error, metrics = whole
        result = ScrapeResult(address, metrics is not None, time.perf_counter() - started, kind, error)
        self._record(result, metrics)
        return result

    async def _fetch(self, address: str, filtered: bool) -> tuple[str, str | None, EndpointMetrics | None]:
        """One GET of the endpoint's metrics: (kind, error, metrics), kind "ok" with metrics, else why not."""
        assert self._session is not None, "use the scraper as an async context manager"
        kind, error, metrics = "ok", None, None
        try:
            url = f"http://{address}{self.path}{self._filter if filtered else ''}"
            async with self._session.get(url, headers=self._headers(address)) as resp:
                body = await resp.read()
                if resp.status != 200:
                    kind, error = "http", f"HTTP {resp.status}"
                else:
                    parsed = parse_vllm_metrics(body.decode("utf-8", errors="replace"), scraped_at=self.clock())
                    metrics = parsed.metrics
                    for warning in parsed.warnings:
                        log.debug("metrics warning", extra={"endpoint": address, "warning": warning})
        except TimeoutError:
            kind, error = "timeout", f"no answer within {self.timeout_s:g} s"
        except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError, ConnectionError) as exc:
            kind, error = "connect", str(exc) or type(exc).__name__
        except MetricsError as exc:
            kind, error = "parse", str(exc)
        except (aiohttp.ClientError, OSError, UnicodeError) as exc:
            kind, error = "error", f"{type(exc).__name__}: {exc}"
        return kind, error, metrics

    def _headers(self, address: str) -> dict[str, str]:
        """No compression; and `Connection: close` when this address's connection has served `reconnect_s`."""
        now = self.clock()
        due = self._reconnect_at.setdefault(address, now + self.reconnect_s)
        if now < due:
            return _IDENTITY
        self._reconnect_at[address] = now + self.reconnect_s
        return _CLOSE

    def _record(self, result: ScrapeResult, metrics: EndpointMetrics | None) -> None:
        address = result.address
        if metrics is not None:
            self.sink.update_metrics(address, metrics)
            self.last_success[address] = metrics.scraped_at
            if self.failing.pop(address, None) is not None:
                log.info("endpoint scrape recovered", extra={"endpoint": address})
        else:
            message = f"{result.kind}: {result.error}"
            slow = result.kind == "timeout"  # slow is not down: the last metrics age out instead
            if not slow:
                self.sink.update_metrics(address, None, message)
            if self.failing.get(address) is None:
                what = "kept until its metrics are stale" if slow else "not a candidate"
                log.warning(f"endpoint scrape failed; {what}", extra={"endpoint": address, "error": message})
            self.failing[address] = message
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:  # observability must never stop the scrapes
                log.exception("scrape observer failed", extra={"endpoint": address})
