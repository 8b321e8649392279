"""The precise profile when the servers' /tokenize fails: the decision is made on the approximate index, never a 500.

Real twin servers broken through the fleet's control API (docs/fleet-twin.md): `error` answers 503, `hang` never
answers (the tokenizer's timeout ends the wait; the call goes on in the background, so that a late answer would still
serve the next turn). The picker's preparation step must return normally, count the failure or the timed-out wait,
cache nothing, and the pick that follows must still choose a server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scorer.config import load_config
from scorer.director import Director
from scorer.metrics import PickerMetrics
from scorer.observed import ObservedDirector
from scorer.plugins.scorers import PrecisePrefixCacheScorer
from scorer.request_parser import parse_request
from scorer.scheduler import Scheduler
from scorer.sources.tokenize import Tokenizer
from scorer.token_cache import known_tokens
from scorer.types import Endpoint, EndpointMetrics
from sim.fleet.fleet import Fleet

PRECISE_CONFIG = Path(__file__).resolve().parents[2] / "scorer" / "precise-config.yaml"


async def _fault(fleet: Fleet, index: int, fault: dict[str, Any]) -> None:
    url = f"{fleet.control_url}/servers/{index}/fault"
    async with aiohttp.ClientSession() as http, http.post(url, json=fault) as r:
        assert r.status == 200, await r.text()


@pytest.mark.parametrize("fault", [{"mode": "error", "status": 503}, {"mode": "hang"}])
async def test_tokenize_failure_falls_back_to_approximate_scoring(fleet2: Fleet, fault: dict[str, Any]) -> None:
    pool = [u.removeprefix("http://") for u in fleet2.urls]
    director = Director(Scheduler(load_config(PRECISE_CONFIG)))
    director.set_endpoints([Endpoint(a) for a in pool])
    for address in pool:
        director.update_metrics(address, EndpointMetrics())
    backend = ObservedDirector(director, PickerMetrics())
    (plugin,) = [p for p in director.scheduler.plugins.values() if isinstance(p, PrecisePrefixCacheScorer)]
    body = {"model": fleet2.servers[0].model_name, "prompt": "a prompt to tokenize " * 20, "max_tokens": 2}
    request = parse_request("/v1/completions", {}, json.dumps(body).encode(), "tok-fault")
    for i in range(len(pool)):
        await _fault(fleet2, i, fault)
    try:
        async with Tokenizer(plugin.tokens, lambda: pool, timeout_s=0.2) as tokenizer:
            backend.preparers.append(tokenizer.prepare)
            await backend.prepare(request)  # must not raise
            assert known_tokens(request, plugin.tokens) is None
            if fault["mode"] == "hang":
                assert tokenizer.wait_timeouts == 1 and tokenizer.in_background() == 1
            else:
                assert tokenizer.failures >= 1 and tokenizer.wait_timeouts == 0
            result = backend.pick(request)
    finally:
        for i in range(len(pool)):
            await _fault(fleet2, i, {"mode": "ok"})
    assert result.targets[0].address in pool
