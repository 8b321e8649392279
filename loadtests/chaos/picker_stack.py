"""The routing stack the reliability campaigns run, with a steady open-loop client and a poller of the picker.

Why it exists: `python -m loadtests.chaos.picker` breaks parts of this stack on purpose and `autonomic soak` runs it
for half an hour; both need the same processes (the fleet twin in its own process, `autonomic picker`, a real
Envoy, all on 127.0.0.1), the same small steady load and the same records: every request's start, duration and
what it was answered (`Outcome`), and the picker's own view of the pool, read from its /metrics every few tenths of
a second (`PickerPoller`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess
from sim.fleet.synth import prompt_text

PRECISE_CONFIG = Path(__file__).resolve().parents[2] / "scorer" / "precise-config.yaml"
Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]
# the picker's series the campaigns read (others are skipped before parsing: the exposition has big histograms)
POLLED = (
    "autonomic_picker_picks_total",
    "autonomic_picker_endpoint_ready",
    "autonomic_picker_endpoint_ejections_total",
    "autonomic_picker_scrapes_total",
    "autonomic_picker_kv_events_",
    "autonomic_picker_precise_index_blocks",
    "autonomic_picker_in_flight_requests",
    "autonomic_picker_extproc_active_streams",
    "autonomic_picker_asyncio_tasks",
    "autonomic_picker_stale_fallback_decisions_total",
    "autonomic_picker_extproc_immediate_responses_total",
)


def parse_samples(text: str, prefixes: Iterable[str] = POLLED) -> Samples:
    wanted = tuple(prefixes)
    lines = [line for line in text.splitlines() if line.startswith(wanted) or line.startswith("# TYPE")]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families("\n".join(lines) + "\n")
        for s in family.samples
        if s.name.startswith(wanted)
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series that carries `labels` (all of them when none is given)."""
    wanted = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and wanted <= set(have))


@dataclass(frozen=True)
class Outcome:
    start: float  # seconds since the load began
    seconds: float
    status: int  # HTTP status; 0: no HTTP answer (refused, reset, client timeout)
    answer: str  # "200", or what a failure was answered: status and error type or the start of the body

    @property
    def ok(self) -> bool:
        return self.status == 200


def describe_answer(status: int, body: bytes) -> str:
    if status == 200:
        return "200"
    try:
        kind = json.loads(body)["error"]["type"]
        return f"{status} {kind}"
    except (ValueError, KeyError, TypeError):
        text = " ".join(body.decode(errors="replace").split())
        return f"{status} {text[:60]}" if text else f"{status} (empty body)"


class OpenLoopLoad:
    """Small completions through `url`, one every 1/`rate` s whatever the answers (open loop), until stopped.

    Prompts share one of `groups` prefixes of `prefix_tokens` tokens, so the prefix scorers have something to do;
    a `fresh_share` of them starts a prefix of its own (a new conversation), which only load decides, so every
    replica gets traffic even when each group's prefix is held by another one (a prefix-affine picker keeps a group
    where its prefix is)."""

    def __init__(
        self,
        url: str,
        model: str,
        rate: float,
        *,
        timeout_s: float = 10.0,
        max_tokens: int = 8,
        groups: int = 8,
        prefix_tokens: int = 128,
        fresh_share: float = 0.25,
        seed: int = 1,
    ) -> None:
        self.url, self.model, self.rate = url, model, rate
        self.timeout_s, self.max_tokens = timeout_s, max_tokens
        self._prefixes = [prompt_text([7000 + g], prefix_tokens) for g in range(groups)]
        self._prefix_tokens, self._fresh_share = prefix_tokens, fresh_share
        self._rng = random.Random(seed)
        self.outcomes: list[Outcome] = []
        self.in_flight = 0
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    async def run(self, stop: asyncio.Event) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http:
            i = 0
            while not stop.is_set():
                due = self.t0 + i / self.rate
                if (wait := due - time.monotonic()) > 0:
                    try:
                        await asyncio.wait_for(stop.wait(), wait)
                        break
                    except TimeoutError:
                        pass
                task = asyncio.create_task(self._one(http, i, due - self.t0))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            if tasks:
                await asyncio.wait(tasks)

    async def _one(self, http: aiohttp.ClientSession, i: int, start: float) -> None:
        fresh = self._rng.random() < self._fresh_share
        prefix = prompt_text([100_000 + i], self._prefix_tokens) if fresh else self._rng.choice(self._prefixes)
        prompt = prefix + f" question {i}: {self._rng.random():.6f}?"
        body = {"model": self.model, "prompt": prompt, "max_tokens": self.max_tokens}
        self.in_flight += 1
        try:
            async with http.post(f"{self.url}/v1/completions", json=body) as r:
                status, answer = r.status, describe_answer(r.status, await r.read())
        except TimeoutError:
            status, answer = 0, f"no answer in {self.timeout_s:g} s"
        except aiohttp.ClientError as exc:
            status, answer = 0, f"no answer: {type(exc).__name__}"
        finally:
            self.in_flight -= 1
        self.outcomes.append(Outcome(start, self.now() - start, status, answer))


@dataclass
class PickerPoller:
    """The picker's /metrics (the POLLED series) every `interval_s`, as (seconds since `t0`, samples)."""

    url: str
    t0: float
    interval_s: float = 0.2
    keep: int = 100_000
    polls: list[tuple[float, Samples]] = field(default_factory=list)
    failures: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            while not stop.is_set():
                try:
                    async with http.get(self.url) as r:
                        text = await r.text()
                    self.polls.append((time.monotonic() - self.t0, parse_samples(text)))
                    del self.polls[: -self.keep]
                except (aiohttp.ClientError, TimeoutError):
                    self.failures += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.interval_s)

    def latest(self) -> Samples:
        return self.polls[-1][1] if self.polls else {}


@dataclass
class StackOptions:
    servers: int = 3
    time_scale: float = 20.0
    precise: bool = True  # the precise-prefix profile (KV events + /tokenize), else the shipped default
    scrape_interval_s: float = 0.1
    envoy_workers: int = 1
    num_gpu_blocks: int | None = None  # the twins' KV-cache size (None: the profile's, 28,150 blocks)
    request_log: int | None = None  # finished requests each twin keeps for benchmarks (None: its 200,000)


class RoutingStack:
    """Fleet twin + `autonomic picker` + Envoy, started in that order, stopped in reverse."""

    def __init__(self, opts: StackOptions) -> None:
        self.opts = opts
        self.fleet = FleetProcess(
            servers=opts.servers,
            base_port=find_base_port(opts.servers),
            time_scale=opts.time_scale,
            num_gpu_blocks=opts.num_gpu_blocks,
            extra_args=["--request-log", str(opts.request_log)] if opts.request_log else [],
        )
        self.picker: PickerProcess | None = None
        self.envoy: LocalEnvoy | None = None
        self.model = ""
        self.addresses: list[str] = []

    @property
    def url(self) -> str:
        assert self.envoy is not None
        return self.envoy.url

    @property
    def metrics_url(self) -> str:
        assert self.picker is not None
        return f"http://127.0.0.1:{self.picker.metrics_port}/metrics"

    async def start(self) -> None:
        try:
            await self.fleet.start()
            self.model = (await self.fleet.describe())[0]["model"]
            self.addresses = [u.removeprefix("http://") for u in self.fleet.urls]
            config = PRECISE_CONFIG if self.opts.precise else None
            self.picker = PickerProcess(self.addresses, config=config, scrape_interval_s=self.opts.scrape_interval_s)
            await self.picker.start()
            opts = EnvoyOptions(
                listen_port=free_port(),
                admin_port=free_port(),
                picker_port=self.picker.port,
                picker_readyz_port=self.picker.metrics_port,
                pool=self.addresses,
            )
            self.envoy = LocalEnvoy(opts, concurrency=self.opts.envoy_workers)
            await self.envoy.start()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for part in (self.envoy, self.picker, self.fleet):
            if part is not None:
                await part.stop()

    async def control(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the fleet's control API (`/servers/{i}/fault`, `/servers/{i}/kv_events`); raises on refusal."""
        async with aiohttp.ClientSession() as http, http.post(self.fleet.control_url + path, json=body) as r:
            answer: dict[str, Any] = await r.json()
            if r.status != 200:
                raise RuntimeError(f"fleet control {path} {body}: HTTP {r.status} {answer}")
            return answer

    async def __aenter__(self) -> RoutingStack:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
