"""Engine and KV-cache behaviour: prefix hits, LRU eviction order, preemption, batching limits, events."""

from __future__ import annotations

import pytest

from common.kv_event_types import BlockRemoved, BlockStored
from sim.fleet.engine import Engine, EngineRequest
from sim.fleet.kv_cache import KVCache
from sim.fleet.profile import load_profile

BS = 16


def make_engine(**overrides: object) -> Engine:
    base: dict[str, object] = {"num_gpu_blocks": 64, "max_num_seqs": 8, "max_num_batched_tokens": 256}
    base.update(overrides)
    return Engine(load_profile(**base))


def toks(seed: int, n: int) -> list[int]:
    return [(seed * 7919 + i * 104729) % 30011 + 300 for i in range(n)]


def run_to_end(engine: Engine, now: float = 0.0, max_steps: int = 10_000) -> float:
    for _ in range(max_steps):
        if not engine.has_work():
            return now
        now += engine.step(now).duration
    raise AssertionError("engine did not drain")


def req(rid: str, prompt: list[int], out: int = 4, **kw: object) -> EngineRequest:
    return EngineRequest(rid, prompt, list(range(500, 500 + out)), 0.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("first", "second", "expected_hit"),
    [
        # same 64-token prefix (4 blocks) then different tails: all 4 blocks hit
        (toks(1, 64) + toks(2, 20), toks(1, 64) + toks(3, 20), 64),
        # identical prompts of exactly 4 blocks: the last token is recomputed, so only 3 blocks hit
        (toks(1, 64), toks(1, 64), 48),
        # prefixes diverge inside block 2: only blocks 0 and 1 hit
        (toks(1, 40) + toks(5, 40), toks(1, 40) + toks(6, 40), 32),
        # nothing shared
        (toks(1, 80), toks(2, 80), 0),
        # shorter than a block: nothing cacheable
        (toks(1, 10), toks(1, 10), 0),
    ],
)
def test_prefix_cache_hits(first: list[int], second: list[int], expected_hit: int) -> None:
    eng = make_engine()
    eng.add_request(req("a", first))
    now = run_to_end(eng)
    eng.add_request(req("b", second))
    res = eng.step(now)
    assert res.prefix_hits == expected_hit
    assert res.prefix_queries == len(second)
    assert res.num_prefill_tokens == len(second) - expected_hit


@pytest.mark.parametrize(
    ("first", "second", "expected_hit"),
    [
        # blocks are cached when scheduled (vLLM V1 allocate_slots), so b hits a's 4 blocks within the same step
        (toks(1, 64) + toks(2, 20), toks(1, 64) + toks(3, 20), 64),
        # identical 4-block prompts: b recomputes its last token, so 3 blocks hit
        (toks(1, 64), toks(1, 64), 48),
        # a diverges from b inside block 1: one block
        (toks(1, 20) + toks(2, 64), toks(1, 20) + toks(3, 64), 16),
    ],
)
def test_requests_admitted_in_the_same_step_share_prefix(
    first: list[int], second: list[int], expected_hit: int
) -> None:
    eng = make_engine(max_num_batched_tokens=256)
    eng.add_request(req("a", first))
    eng.add_request(req("b", second))
    res = eng.step(0.0)
    assert len(eng.running) == 2
    assert res.prefix_hits == expected_hit


def test_lora_adapters_do_not_share_prefixes() -> None:
    eng = make_engine(max_loras=2)
    eng.add_request(req("a", toks(1, 80), lora_name="sql"))
    now = run_to_end(eng)
    eng.add_request(req("b", toks(1, 80), lora_name="chat"))
    assert eng.step(now).prefix_hits == 0


def test_eviction_is_lru_and_deepest_block_first() -> None:
    cache = KVCache(num_gpu_blocks=7, block_size=BS, model="m")  # 6 usable blocks
    a_tokens, b_tokens = toks(1, 48), toks(2, 48)
    ha, hb = cache.new_hashes(None), cache.new_hashes(None)
    ha.extend(a_tokens)
    hb.extend(b_tokens)
    a = cache.allocate(3)
    cache.cache_full_blocks(a, ha.hashes, a_tokens, 0, 3, None)
    cache.free(a)  # a's blocks go to the free-queue tail, deepest first
    b = cache.allocate(3)  # takes the 3 never-used blocks
    cache.cache_full_blocks(b, hb.hashes, b_tokens, 0, 3, None)
    cache.free(b)
    cache.drain_events()
    cache.allocate(2)  # evicts the two least recently freed: a's deepest blocks a2 then a1
    removed = [e.block_hashes[0] for e in cache.drain_events() if isinstance(e, BlockRemoved)]
    assert removed == [ha.hashes[2], ha.hashes[1]]
    assert [b.block_hash for b in cache.longest_hit(ha.hashes, 3)] == [ha.hashes[0]]
    assert len(cache.longest_hit(hb.hashes, 3)) == 3


def test_hit_blocks_are_not_evictable_while_referenced() -> None:
    cache = KVCache(num_gpu_blocks=5, block_size=BS, model="m")  # 4 usable
    t = toks(1, 32)
    h = cache.new_hashes(None)
    h.extend(t)
    a = cache.allocate(2)
    cache.cache_full_blocks(a, h.hashes, t, 0, 2, None)
    cache.free(a)
    hit = cache.longest_hit(h.hashes, 2)
    cache.touch(hit)
    assert cache.num_free() == 2
    cache.allocate(2)
    assert cache.num_free() == 0
    assert len(cache.longest_hit(h.hashes, 2)) == 2  # still cached: they were referenced


def test_batching_limits_max_num_seqs_and_token_budget() -> None:
    eng = make_engine(max_num_seqs=3, max_num_batched_tokens=100, num_gpu_blocks=200)
    for i in range(5):
        eng.add_request(req(f"r{i}", toks(i + 10, 40)))
    first = eng.step(0.0)
    # token budget 100: two full prompts (80) plus a 20-token chunk of the third
    assert first.num_scheduled_tokens == 100
    assert len(eng.running) == 3
    assert len(eng.waiting) == 2
    second = eng.step(first.duration)
    assert len(eng.running) <= 3
    assert second.num_scheduled_tokens <= 100


def test_chunked_prefill_spreads_a_long_prompt_over_steps() -> None:
    eng = make_engine(max_num_batched_tokens=64, num_gpu_blocks=100)
    eng.add_request(req("long", toks(3, 300), out=2))
    steps = 0
    now = 0.0
    while "long" not in (r := eng.step(now)).new_tokens:
        now += r.duration
        steps += 1
        assert r.num_scheduled_tokens <= 64
    assert steps + 1 == -(-300 // 64)


def test_preemption_when_blocks_run_out() -> None:
    # 10 usable blocks; two requests of 4 full blocks each decode until they need more than remains
    eng = make_engine(num_gpu_blocks=11, max_num_batched_tokens=512)
    eng.add_request(req("a", toks(1, 63), out=40))
    eng.add_request(req("b", toks(2, 63), out=40))
    now, preempted = 0.0, 0
    order: list[str] = []
    for _ in range(1000):
        if not eng.has_work():
            break
        r = eng.step(now)
        now += r.duration
        preempted += r.preempted
        order += [f.request_id for f in r.finished]
    assert preempted >= 1
    assert sorted(order) == ["a", "b"]
    assert order[0] == "a"  # the later-admitted request is the victim, so the earlier one finishes first
    assert eng.cache.num_free() == eng.cache.usable_blocks


def test_waiting_request_is_head_of_line_blocked_when_no_blocks() -> None:
    eng = make_engine(num_gpu_blocks=9)  # 8 usable = 128 tokens
    eng.add_request(req("big", toks(1, 100), out=10))
    eng.add_request(req("next", toks(2, 60), out=1))
    eng.step(0.0)
    assert [r.request_id for r in eng.running] == ["big"]
    assert [r.request_id for r in eng.waiting] == ["next"]


@pytest.mark.parametrize(
    ("prompt_len", "ok"),
    [(10, True), (63 * BS, True), (63 * BS + 1, False)],
)
def test_admission_rejects_prompts_the_cache_cannot_hold(prompt_len: int, ok: bool) -> None:
    eng = make_engine(num_gpu_blocks=65)  # 64 usable; one kept for the first output token
    r = req("x", toks(1, prompt_len))
    if ok:
        eng.add_request(r)
    else:
        with pytest.raises(ValueError):
            eng.add_request(r)


def test_events_rebuild_exactly_the_cached_blocks() -> None:
    eng = make_engine(num_gpu_blocks=30, max_num_batched_tokens=128)
    held: dict[int, int] = {}
    now = 0.0
    for i in range(40):
        eng.add_request(req(f"r{i}", toks(i % 7, 48) + toks(i, 20 + i), out=20))
        if i % 3 == 0:
            for _ in range(5):
                r = eng.step(now)
                now += r.duration
                _apply(held, r.events)
    while eng.has_work():
        r = eng.step(now)
        now += r.duration
        _apply(held, r.events)
    assert held == eng.cache.cached_hashes()
    assert held  # the cache holds something at the end


def _apply(held: dict[int, int], events: list) -> None:  # type: ignore[type-arg]
    for ev in events:
        if isinstance(ev, BlockStored):
            for h in ev.block_hashes:
                held[h] = held.get(h, 0) + 1
            assert len(ev.token_ids) == len(ev.block_hashes) * ev.block_size
        elif isinstance(ev, BlockRemoved):
            for h in ev.block_hashes:
                held[h] -= 1
                if held[h] == 0:
                    del held[h]


def test_reset_prefix_cache_only_when_idle() -> None:
    eng = make_engine()
    eng.add_request(req("a", toks(1, 64), out=3))
    eng.step(0.0)
    assert eng.reset_prefix_cache() is False
    run_to_end(eng)
    assert eng.reset_prefix_cache() is True
    assert eng.cache.num_cached() == 0


def test_step_time_grows_with_prefill_and_batch() -> None:
    p = load_profile()
    assert p.step_time(0, 0, 0) == 0.0
    assert p.step_time(8192, 8192 * 4096, 0) > p.step_time(1024, 1024 * 512, 0)
    assert p.step_time(64, 0, 64 * 2000) > p.step_time(8, 0, 8 * 2000)


def test_requests_are_not_admitted_before_they_arrive_on_the_gpu_timeline() -> None:
    eng = make_engine()
    eng.add_request(EngineRequest("early", toks(1, 40), [500, 501], 0.0))
    eng.add_request(EngineRequest("late", toks(2, 40), [500, 501], 5.0))
    assert eng.next_start(0.0) == 0.0
    res = eng.step(0.0)
    assert [r.request_id for r in eng.running] == ["early"]
    assert res.prefix_queries == 40
    run_to_end_of = eng.step(res.duration)  # "early" decodes; "late" still in the future
    assert [r.request_id for r in eng.running] == ["early"] or not eng.running
    assert run_to_end_of.prefix_queries == 0
    # idle engine: the next step starts when the waiting request arrived, not earlier
    while eng.running:
        eng.step(1.0)
    assert eng.next_start(1.0) == 5.0
    assert eng.step(5.0).prefix_queries == 40


@pytest.mark.parametrize(("prompts", "out"), [([40], 3), ([300, 20], 2), ([600, 600, 10], 1)])
def test_a_prompt_is_counted_once_in_the_step_of_its_first_token(prompts: list[int], out: int) -> None:
    """vLLM's prompt-token counter moves when a prefill ends (chunked over several steps here for 300 and 600)."""
    eng = make_engine(num_gpu_blocks=256)
    mine = [req(f"r{i}", toks(i + 1, n), out=out) for i, n in enumerate(prompts)]
    for r in mine:
        eng.add_request(r)
    seen: set[str] = set()
    counted, now = 0, 0.0
    while eng.has_work():
        res = eng.step(now)
        firsts = [r for r in mine if r.first_token is not None and r.request_id not in seen]
        seen.update(r.request_id for r in firsts)
        assert res.first_token_prompt_tokens == sum(r.num_prompt_tokens for r in firsts)
        counted += res.first_token_prompt_tokens
        now += res.duration
    assert counted == sum(prompts) and seen == {r.request_id for r in mine}
