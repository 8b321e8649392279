"""Closed-loop load through Envoy for the picker's failure tests (replicas, workers), shared rather than rewritten."""

from __future__ import annotations

import asyncio
from collections import Counter

import aiohttp
from waiting import HUNG_S

from sim.fleet.synth import prompt_text


class ClosedLoop:
    """Closed-loop clients through Envoy, each request a new prompt; every outcome counted. `pause()` holds them
    between two requests (so a worker can be killed while none of their requests is inside the picker)."""

    def __init__(self, url: str, model: str, clients: int = 4):
        self.url, self.model = url, model
        self.outcomes: Counter[str] = Counter()
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.idle = [asyncio.Event() for _ in range(clients)]
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        n = 0
        async with aiohttp.ClientSession() as http:
            while not self._stop.is_set():
                if not self.resumed.is_set():
                    self.idle[i].set()
                    await self.resumed.wait()
                    self.idle[i].clear()
                n += 1
                body = {"model": self.model, "prompt": prompt_text([i, n], 256), "max_tokens": 4}
                try:
                    async with http.post(f"{self.url}/v1/completions", json=body) as resp:
                        await resp.read()
                        self.outcomes[str(resp.status)] += 1
                except aiohttp.ClientError as exc:
                    self.outcomes[type(exc).__name__] += 1

    async def pause(self) -> None:
        self.resumed.clear()
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in self.idle)), HUNG_S)

    def resume(self) -> None:
        self.resumed.set()

    async def stop(self) -> Counter[str]:
        self._stop.set()
        self.resume()
        await asyncio.gather(*self._tasks)
        return self.outcomes
