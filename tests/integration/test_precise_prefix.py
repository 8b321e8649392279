"""The precise prefix index fed by real KV events from the fleet twin, checked against the twin's true cache.

Servers have 96 blocks of 16 tokens, far less than the prompts sent, so the caches evict all the time; the pool
loses and regains a member mid-run (churn). Every wait is bounded by asyncio.timeout; nothing sleeps to let time
pass. The truth comes from the fleet's read-only `GET /servers/{i}/kv_cache`, read when the servers are idle.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from waiting import until

from common.kv_event_types import BlockStored, EventBatch
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from scorer.config import load_config
from scorer.director import Director
from scorer.plugins.scorers.precise_prefix import (
    PreciseMatch,
    PrecisePrefixCacheScorer,
    PrecisePrefixParams,
    PreciseState,
)
from scorer.precise_index import PreciseIndex, request_keys
from scorer.request_parser import parse_request
from scorer.scheduler import Scheduler
from scorer.sources.kv_events import KVEventsOptions, KVEventsSource
from scorer.sources.tokenize import QUEUED_PER_SLOT, Tokenizer
from scorer.token_cache import TokenCache, known_tokens, tokenize_input
from scorer.types import CycleState, Endpoint, EndpointMetrics, EndpointState, LLMRequest
from sim.fleet.fleet import Fleet
from sim.fleet.kv_publisher import KVEventPublisher
from sim.fleet.profile import load_profile
from sim.fleet.synth import prompt_text
from sim.fleet.tokenizer import get_tokenizer

WAIT = 20.0
BLOCKS = 96
PRECISE_CONFIG = Path(__file__).parents[2] / "scorer" / "precise-config.yaml"


@pytest.fixture
async def small_fleet() -> AsyncIterator[Fleet]:
    fleet = Fleet(
        servers=2, base_port=find_base_port(2), profile=load_profile(num_gpu_blocks=BLOCKS), time_scale=1000.0
    )
    await fleet.start()
    try:
        yield fleet
    finally:
        await fleet.stop()


def addresses(fleet: Fleet) -> list[str]:
    return [u.removeprefix("http://") for u in fleet.urls]


async def truth(session: aiohttp.ClientSession, fleet: Fleet, i: int) -> dict[str, Any]:
    async with session.get(f"{fleet.control_url}/servers/{i}/kv_cache") as r:
        assert r.status == 200
        doc: dict[str, Any] = await r.json()
        return doc


async def caught_up(source: KVEventsSource, address: str, seq: int | None) -> None:
    status = source.status[address]
    async with asyncio.timeout(WAIT):
        while not status.synced or (seq is not None and (status.applied_seq is None or status.applied_seq < seq)):
            status.applied.clear()
            await status.applied.wait()


async def agreement(session: aiohttp.ClientSession, fleet: Fleet, source: KVEventsSource) -> list[float]:
    """Per server: |held and true| / |held or true| over (block, copy) pairs, once the index has every batch."""
    out = []
    for i, address in enumerate(addresses(fleet)):
        doc = await truth(session, fleet, i)
        await caught_up(source, address, doc["last_published_seq"])
        true = {h: n for h, n in doc["blocks"]}
        held = source.index.engine_hashes(address)
        both = sum(min(n, held.get(h, 0)) for h, n in true.items())
        union = sum(max(true.get(h, 0), held.get(h, 0)) for h in true.keys() | held.keys())
        out.append(both / union if union else 1.0)
    return out


async def complete(session: aiohttp.ClientSession, url: str, prompt: str, model: str) -> None:
    body = {"model": model, "prompt": prompt, "max_tokens": 4, "ignore_eos": True}
    async with session.post(url + "/v1/completions", json=body) as r:
        assert r.status == 200, await r.text()


async def drive(session: aiohttp.ClientSession, fleet: Fleet, n: int, seed: int) -> int:
    """n requests with shared prefixes (ids from a small set) over both servers; returns the prompt tokens sent."""
    rng = random.Random(seed)
    model = fleet.servers[0].model_name
    sent = 0
    for start in range(0, n, 4):
        jobs = []
        for j in range(start, min(n, start + 4)):
            ids = [rng.randrange(6) for _ in range(rng.randint(2, 8))]
            length = rng.randint(100, 64 * len(ids))
            sent += length
            jobs.append(complete(session, fleet.urls[j % 2], prompt_text(ids, length, 64), model))
        await asyncio.gather(*jobs)
    return sent


@pytest.fixture
async def following(small_fleet: Fleet) -> AsyncIterator[KVEventsSource]:
    source = KVEventsSource(PreciseIndex(), addresses(small_fleet))
    task = asyncio.create_task(source.run())
    try:
        for address in addresses(small_fleet):
            await caught_up(source, address, None)
        yield source
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_index_agrees_with_the_true_caches_under_eviction_and_churn(
    small_fleet: Fleet, following: KVEventsSource
) -> None:
    fleet, source = small_fleet, following
    pool = addresses(fleet)
    async with aiohttp.ClientSession() as session:
        sent = await drive(session, fleet, 24, seed=1)
        assert min(await agreement(session, fleet, source)) >= 0.99
        source.set_endpoints(pool[:1])  # server 1 leaves the pool: its entries are forgotten
        assert source.index.addresses() == pool[:1] and source.index.blocks(pool[1]) == 0
        sent += await drive(session, fleet, 24, seed=2)
        source.set_endpoints(pool)  # and comes back: replay from seq 0 rebuilds it
        sent += await drive(session, fleet, 24, seed=3)
        scores = await agreement(session, fleet, source)
        assert min(scores) >= 0.99, scores
        assert sent > 3 * BLOCKS * 16 * 2  # far more than both caches hold: eviction happened throughout
        assert all(s.bad_messages == 0 and s.resyncs == 0 for s in source.status.values())

        # a request's prefix maps to the keys its blocks were stored under: the index predicts each server's hit
        model = fleet.servers[0].model_name
        for ids in ([0, 1, 2], [3, 4], [5, 0, 1, 2]):
            prompt = prompt_text(ids, 64 * len(ids), 64)
            async with session.post(fleet.urls[0] + "/tokenize", json={"model": model, "prompt": prompt}) as r:
                tokens = (await r.json())["tokens"]
            matched = source.index.match(request_keys(tokens, 16, None, 10_000))
            for i, server in enumerate(fleet.servers):
                hashes = server.engine.cache.new_hashes(None)
                hashes.extend(tokens)
                true_hit = len(server.engine.cache.longest_hit(hashes.hashes, 10_000))
                assert matched.get(pool[i], 0) == true_hit


async def test_lost_batch_is_repaired_through_replay(small_fleet: Fleet, following: KVEventsSource) -> None:
    fleet, source = small_fleet, following
    async with aiohttp.ClientSession() as session:
        await drive(session, fleet, 4, seed=4)
        fleet.servers[0].drop_kv_batches = 2  # the next two batches of server 0 never go out live
        await drive(session, fleet, 8, seed=5)
        assert min(await agreement(session, fleet, source)) == 1.0
    status = source.status[addresses(fleet)[0]]
    assert status.gaps >= 1 and status.gaps_repaired == status.gaps and status.resyncs == 0


async def test_without_replay_a_gap_clears_the_endpoint_and_never_invents_blocks(small_fleet: Fleet) -> None:
    fleet = small_fleet
    source = KVEventsSource(PreciseIndex(), addresses(fleet)[:1], KVEventsOptions(replay_port_offset=None))
    task = asyncio.create_task(source.run())
    address = addresses(fleet)[0]
    try:
        async with aiohttp.ClientSession() as session:
            model = fleet.servers[0].model_name
            async with asyncio.timeout(WAIT):  # no replay: live only, so wait until a batch has been applied
                while not source.status[address].synced:
                    await complete(session, fleet.urls[0], prompt_text([9], 64, 64), model)
            fleet.servers[0].drop_kv_batches = 1
            await drive(session, fleet, 8, seed=6)
            doc = await truth(session, fleet, 0)
            await caught_up(source, address, doc["last_published_seq"])
            held = source.index.engine_hashes(address)
            assert set(held) <= {h for h, _ in doc["blocks"]}  # what it lost is missing; nothing is made up
        assert source.status[address].resyncs >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _stored(first_hash: int, tokens: list[int]) -> EventBatch:
    return EventBatch(ts=0.0, events=[BlockStored([first_hash], None, tokens, 4)])


async def test_publisher_restart_is_detected_and_the_endpoint_rebuilt() -> None:
    http_port = free_port()
    while not all(0 < http_port + o < 65536 for o in (1000, 2000)):
        http_port = free_port()
    address = f"127.0.0.1:{http_port}"
    events, replay = f"tcp://127.0.0.1:{http_port + 1000}", f"tcp://127.0.0.1:{http_port + 2000}"
    source = KVEventsSource(PreciseIndex(), [address])
    old = KVEventPublisher(events, replay_endpoint=replay)
    for i in range(5):
        old.publish(_stored(100 + i, [i] * 4))
    task = asyncio.create_task(source.run())
    try:
        await caught_up(source, address, 4)
        assert set(source.index.engine_hashes(address)) == {100, 101, 102, 103, 104}
        await old.aclose()
        new = KVEventPublisher(events, replay_endpoint=replay)  # the server restarted: seq starts at 0 again
        try:
            status = source.status[address]
            async with asyncio.timeout(WAIT):
                await new.wait_for_peers(1)
                for i in range(4):  # stay below the old publisher's last seq, so the restart is visible
                    new.publish(_stored(200 + i, [50 + i] * 4))
                    try:
                        async with asyncio.timeout(0.5):
                            while status.restarts == 0:
                                status.applied.clear()
                                await status.applied.wait()
                        break
                    except TimeoutError:
                        continue
            await caught_up(source, address, new.next_seq - 1)
            assert status.restarts == 1
            assert set(source.index.engine_hashes(address)) == {200 + i for i in range(new.next_seq)}
        finally:
            await new.aclose()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_picker_process_with_the_precise_profile_routes_to_what_a_server_really_holds(fleet2: Fleet) -> None:
    """A prefix cached on server 1 by traffic the picker never saw: only the KV events can tell the picker."""
    pool = addresses(fleet2)
    model = fleet2.servers[0].model_name
    shared = prompt_text([71, 72, 73], 3 * 512)
    async with aiohttp.ClientSession() as session:
        await complete(session, fleet2.urls[1], shared, model)
    body = json.dumps({"model": model, "prompt": shared + " and a new question"}).encode()
    picker = PickerProcess(pool, config=PRECISE_CONFIG, scrape_interval_s=0.2)
    await picker.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.port}") as channel:
            stub = pb_grpc.PickerStub(channel)
            scores: dict[str, float] = {}
            async with asyncio.timeout(WAIT):
                while scores.get(pool[1], 0.0) == 0.0:  # until the start-up replay has reached the index
                    answer = await stub.Explain(pb.PickRequest(body=body))
                    scores = {e.endpoint: e.scores["precise-prefix-cache-scorer"] for e in answer.endpoints}
            assert scores[pool[0]] == 0.0 and scores[pool[1]] == pytest.approx(96 / 97)  # 96 of 97 full blocks
            assert dict(answer.notes) == {"precise-prefix-cache-scorer.tokens": "exact"}  # its /tokenize answer
            picked = await stub.Pick(pb.PickRequest(body=body, request_id="precise-1"))
            assert picked.endpoint == pool[1]

            # a chat too: its next turn, tokenized with the chat form, is sent where the first turn is cached
            turn1 = [{"role": "user", "content": prompt_text([74, 75], 2 * 256)}]
            async with aiohttp.ClientSession() as session:
                first = await chat(session, fleet2.urls[0], {"model": model, "messages": turn1, "max_tokens": 2})
            turn2 = [*turn1, first["choices"][0]["message"], {"role": "user", "content": "why?"}]
            chat_body = json.dumps({"model": model, "messages": turn2}).encode()
            request = pb.PickRequest(path="/v1/chat/completions", body=chat_body)
            scores = {}
            async with asyncio.timeout(WAIT):  # until all of server 0's events of turn 1 (32 full blocks of the 33
                while scores.get(pool[0], 0.0) < 32 / 33:  # of turn 2) have reached the index: they come in batches
                    answer = await stub.Explain(request)
                    scores = {e.endpoint: e.scores["precise-prefix-cache-scorer"] for e in answer.endpoints}
            assert scores[pool[1]] == 0.0 and scores[pool[0]] == pytest.approx(32 / 33)
            picked = await stub.Pick(pb.PickRequest(path="/v1/chat/completions", body=chat_body))
            assert picked.endpoint == pool[0]
        text = await picker.metrics_text()
        plugin = 'plugin="precise-prefix-cache-scorer"'
        for address in pool:
            assert f'autonomic_picker_kv_events_synced{{endpoint="{address}",{plugin}}} 1.0' in text
        assert f'autonomic_picker_precise_index_blocks{{endpoint="{pool[1]}",{plugin}}} 96.0' in text
        assert f'autonomic_picker_tokenize_requests_total{{outcome="ok",{plugin}}}' in text
    finally:
        await picker.stop()


def state(address: str) -> EndpointState:
    return EndpointState(Endpoint(address), EndpointMetrics())


async def chat(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        assert r.status == 200, await r.text()
        doc: dict[str, Any] = await r.json()
        return doc


async def test_a_chat_is_tokenized_as_the_server_does_and_its_cached_prefix_predicted_exactly(
    small_fleet: Fleet,
) -> None:
    """The next turn of a conversation: the picker's tokens (chat form of /tokenize) are the server's own, and the
    index's longest match is the prefix the server then really serves from cache (usage.cached_tokens)."""
    fleet = small_fleet
    pool = addresses(fleet)
    model = fleet.servers[0].model_name
    params = PrecisePrefixParams.model_validate({})
    plugin = PrecisePrefixCacheScorer("precise", params, PreciseState.empty(params))
    source = KVEventsSource(plugin.precise, pool)
    task = asyncio.create_task(source.run())
    try:
        async with aiohttp.ClientSession() as session, Tokenizer(plugin.tokens, lambda: pool[::-1], 5.0) as tokenizer:
            turn1 = [
                {"role": "system", "content": prompt_text([31, 32], 2 * 100, 100)},
                {"role": "user", "content": [{"type": "text", "text": prompt_text([33], 90, 90)}]},
            ]
            first = await chat(session, fleet.urls[0], {"model": model, "messages": turn1, "max_tokens": 20})
            turn2 = [*turn1, first["choices"][0]["message"], {"role": "user", "content": "and then?"}]
            body = {"model": model, "messages": turn2, "max_tokens": 4, "temperature": 0.2}
            request = parse_request("/v1/chat/completions", {}, json.dumps(body).encode(), "turn-2")
            await tokenizer.prepare(request)  # asks server 1, which never saw the conversation
            tokens = known_tokens(request, plugin.tokens)
            assert tokens is not None and tokenizer.failures == 0
            for i, address in enumerate(pool):
                seq = (await truth(session, fleet, i))["last_published_seq"]
                await caught_up(source, address, seq if seq >= 0 else None)  # -1: nothing published yet
            keys = request_keys(tokens, 16, None, 10_000)
            matched = plugin.precise.match(keys)
            assert matched.get(pool[1], 0) == 0 and matched.get(pool[0], 0) >= 290 // 16  # turn 1 is held
            scores = plugin.score(CycleState(now=0.0, rng=random.Random(0)), request, [state(a) for a in pool])
            assert scores == {pool[0]: matched[pool[0]] / len(keys), pool[1]: 0.0}

            second = await chat(session, fleet.urls[0], body)
            assert second["usage"]["prompt_tokens"] == len(tokens)
            hit = min(matched[pool[0]], (len(tokens) - 1) // 16)  # the server always computes the last token
            assert second["usage"]["prompt_tokens_details"]["cached_tokens"] == hit * 16

            # the same tokens sent as a token-id completion are matched as they are, with no /tokenize call
            asked = tokenizer.requests
            ids = parse_request(
                "/v1/completions", {}, json.dumps({"model": model, "prompt": list(tokens)}).encode(), "c"
            )
            await tokenizer.prepare(ids)
            assert known_tokens(ids, plugin.tokens) == tuple(tokens) and tokenizer.requests == asked
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_second_turn_is_decided_on_derived_tokens_without_waiting_for_tokenize(fleet2: Fleet) -> None:
    """Turn 1 is tokenized (waited for) and served by server 1; turn 2 extends it. Its decision reads the precise
    index through the derived prefix before any /tokenize call is made, picks server 1, and the exact tokens that the
    background call brings pick the same server."""
    pool = addresses(fleet2)
    model = fleet2.servers[0].model_name
    director = Director(Scheduler(load_config(PRECISE_CONFIG)))
    director.set_endpoints([Endpoint(a) for a in pool])
    for address in pool:
        director.update_metrics(address, EndpointMetrics())
    (plugin,) = [p for p in director.scheduler.plugins.values() if isinstance(p, PrecisePrefixCacheScorer)]
    source = KVEventsSource(plugin.precise, pool)
    task = asyncio.create_task(source.run())
    margin = plugin.precise_params.derived_prefix_margin_tokens
    try:
        async with aiohttp.ClientSession() as session, Tokenizer(plugin.tokens, lambda: pool, 5.0, margin=margin) as t:
            turn1 = prompt_text([81, 82, 83, 84], 4 * 100, 100)
            await t.prepare(completion(model, turn1, "turn-1"))  # nothing to derive from: waits for /tokenize
            assert t.waited == 1 and t.requests == 1
            await complete(session, fleet2.urls[1], turn1, model)
            for i, address in enumerate(pool):
                seq = (await truth(session, fleet2, i))["last_published_seq"]
                await caught_up(source, address, seq if seq >= 0 else None)

            turn2 = completion(model, turn1 + " the answer" + prompt_text([85], 60, 60), "turn-2")
            await t.prepare(turn2)
            assert t.waited == 1 and t.derived == 1 and t.requests == 1  # no round trip before the decision
            assert t.in_background() == 1
            c = CycleState(now=0.0, rng=random.Random(0))
            derived = plugin.match(c, turn2)
            assert isinstance(derived, PreciseMatch) and derived.token_source == "derived"
            derived_scores = plugin.score(c, turn2, [state(a) for a in pool])
            assert derived_scores[pool[1]] > 0.5 and derived_scores[pool[0]] == 0.0
            assert director.pick(turn2).targets[0].address == pool[1]

            async with asyncio.timeout(WAIT):  # the background answer fills the cache
                await t.settled()
            assert t.requests == 2 and t.failures == 0
            c = CycleState(now=0.0, rng=random.Random(0))
            exact = plugin.match(c, turn2)
            assert isinstance(exact, PreciseMatch) and exact.token_source == "exact"
            exact_scores = plugin.score(c, turn2, [state(a) for a in pool])
            assert max(exact_scores, key=exact_scores.__getitem__) == pool[1] and exact_scores[pool[0]] == 0.0
            assert exact_scores[pool[1]] >= derived_scores[pool[1]]  # the margin's blocks are known now
            assert plugin.by_source["derived"] >= 1 and plugin.by_source["exact"] >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def completion(model: str, prompt: str, request_id: str) -> LLMRequest:
    return parse_request("/v1/completions", {}, json.dumps({"model": model, "prompt": prompt}).encode(), request_id)


async def test_picker_process_counts_how_requests_were_tokenized(fleet2: Fleet) -> None:
    """Through the process and its Pick API: turn 1 waits for /tokenize, turn 2 is derived; the metrics say so."""
    pool = addresses(fleet2)
    model = fleet2.servers[0].model_name
    turn1 = prompt_text([91, 92, 93], 3 * 100, 100)
    turn2 = turn1 + " an answer" + prompt_text([94], 50, 50)
    picker = PickerProcess(pool, config=PRECISE_CONFIG, scrape_interval_s=0.2)
    await picker.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.port}") as channel:
            stub = pb_grpc.PickerStub(channel)
            plugin = 'plugin="precise-prefix-cache-scorer"'
            for i, prompt in enumerate((turn1, turn2)):
                body = json.dumps({"model": model, "prompt": prompt}).encode()
                await stub.Pick(pb.PickRequest(body=body, request_id=f"turn-{i + 1}"))
                answered = f'tokenize_requests_total{{outcome="ok",{plugin}}} {i + 1}.0'  # this turn's answer

                async def cached(line: str = answered) -> bool:
                    return line in await picker.metrics_text()

                await until(cached, f"turn {i + 1}'s tokens cached (within the wait, after it, or in the background)")
        text = await picker.metrics_text()
        waits = [
            f'autonomic_picker_tokenize_waits_total{{outcome="{o}",{plugin}}} 1.0' for o in ("answered", "timed_out")
        ]
        assert sum(w in text for w in waits) == 1, text  # turn 1 only (answered in time, or after the wait)
        assert f'autonomic_picker_precise_tokens_total{{{plugin},source="derived"}} 1.0' in text
        assert f"autonomic_picker_tokenize_background{{{plugin}}}" in text
    finally:
        await picker.stop()


async def test_background_tokenize_is_bounded_shared_and_reads_token_ends(fleet2: Fleet) -> None:
    """`tokenizeTimeoutSeconds: 0`: nothing is ever awaited; one call in flight and `QUEUED_PER_SLOT` waiting at most,
    a repeated question joins the call it made, and the answers' token strings let a request that shares only a
    prefix derive."""
    pool = addresses(fleet2)
    model = fleet2.servers[0].model_name
    cache = TokenCache()
    async with Tokenizer(cache, lambda: pool, 0.0, margin=64, max_background=1) as t:
        turns = [completion(model, prompt_text([100 + i], 300, 300), f"b{i}") for i in range(QUEUED_PER_SLOT + 2)]
        for request in [*turns, turns[0]]:
            await t.prepare(request)
        assert t.waited == 0 and t.skipped == 1 and t.in_background() == QUEUED_PER_SLOT + 1 and t.requests == 0
        async with asyncio.timeout(WAIT):
            await t.settled()
        assert t.requests == QUEUED_PER_SLOT + 1 and t.failures == 0
        assert known_tokens(turns[0], cache) is not None and known_tokens(turns[-1], cache) is None
        edited = completion(model, turns[0].prompt[:-40] + " something else", "b-edited")
        question = tokenize_input(edited)
        assert question is not None
        found = cache.derive(model, question, 64)
        real = get_tokenizer().encode(edited.prompt)
        assert found is not None and list(found.tokens) == real[: len(found.tokens)] and len(found.tokens) > 200


async def test_a_chats_next_turn_is_derived_from_the_twins_chat_tokens(fleet2: Fleet) -> None:
    """The chat rule against the twin's own chat form of /tokenize: turn 2 (turn 1's messages, the answer, a new
    question) is derived without a round trip, and the derived tokens are a prefix of what the server answers."""
    pool = addresses(fleet2)
    model = fleet2.servers[0].model_name
    cache = TokenCache()
    async with aiohttp.ClientSession() as session, Tokenizer(cache, lambda: pool, 5.0, margin=64) as t:
        turn1 = [
            {"role": "system", "content": prompt_text([61, 62], 2 * 120, 120)},
            {"role": "user", "content": [{"type": "text", "text": prompt_text([63], 50, 50)}]},
        ]
        first_body = {"model": model, "messages": turn1, "max_tokens": 8}
        await t.prepare(parse_request("/v1/chat/completions", {}, json.dumps(first_body).encode(), "c1"))
        assert t.waited == 1 and t.requests == 1
        first = await chat(session, fleet2.urls[1], first_body)
        turn2 = [*turn1, first["choices"][0]["message"], {"role": "user", "content": "and then?"}]
        body = json.dumps({"model": model, "messages": turn2, "max_tokens": 8}).encode()
        request = parse_request("/v1/chat/completions", {}, body, "c2")
        await t.prepare(request)
        assert t.waited == 1 and t.derived == 1 and t.requests == 1  # decided with no round trip
        question = tokenize_input(request)
        assert question is not None
        found = cache.derive(model, question, 64)
        assert found is not None
        async with asyncio.timeout(WAIT):
            await t.settled()
        exact = known_tokens(request, cache)
        assert exact is not None and list(found.tokens) == list(exact[: len(found.tokens)])
        assert len(exact) - len(found.tokens) >= 64 and abs(found.estimated_total - len(exact)) <= 0.1 * len(exact)
