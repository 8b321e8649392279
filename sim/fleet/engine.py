"""Engine model of one vLLM server: continuous batching over the paged prefix cache, in model time.

Why it exists: a router is judged by what happens inside the servers it feeds: queueing, batching, prefix
hits, eviction and preemption. This is vLLM V1's scheduler reduced to what a router can observe:

- each step spends a token budget (`max_num_batched_tokens`): running requests first (one token each when
  decoding, a chunk when prefilling), then waiting requests in FCFS order while `max_num_seqs`, the budget,
  free blocks and `max_loras` allow (chunked prefill: a long prompt takes several steps);
- a new request first looks up the longest cached prefix of its full blocks (the last prompt token is always
  recomputed, as in vLLM), takes references on the hit blocks and allocates the rest;
- when a running request needs a block and none is free, the most recently admitted running request is
  preempted (its blocks freed, recomputed later from scratch: vLLM's recompute preemption);
- a step's duration comes from the profile's roofline model; a token is sampled for every request whose
  computed tokens reach its length.

Pure and synchronous: `step(now)` returns what the step did and how long it took; the async shell sleeps.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.kv_event_types import KVEvent
from sim.fleet.kv_cache import Block, BlockHashes, KVCache
from sim.fleet.profile import EngineProfile


@dataclass(eq=False)
class EngineRequest:
    """A request inside the engine. `output_plan` holds the tokens it will generate, in order."""

    request_id: str
    prompt_token_ids: list[int]
    output_plan: list[int]
    arrival: float
    lora_name: str | None = None
    stop_on_plan_end: bool = False  # finish reason "stop" (EOS) rather than "length" when the plan ends
    # --- state ---
    token_ids: list[int] = field(default_factory=list)  # prompt followed by generated tokens
    num_computed: int = 0
    num_cached_blocks: int = 0  # how many leading blocks are registered in the prefix cache
    blocks: list[Block] = field(default_factory=list)
    hashes: BlockHashes | None = None
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    finish_reason: str | None = None
    cached_prompt_tokens: int = 0  # prompt tokens served from cache at first admission
    preemptions: int = 0
    token_times: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.token_ids = list(self.prompt_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids) :]

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class StepResult:
    """What one engine step did. `duration` is model seconds; tokens appear at start + duration."""

    start: float
    duration: float
    new_tokens: dict[str, list[int]] = field(default_factory=dict)
    finished: list[EngineRequest] = field(default_factory=list)
    events: list[KVEvent] = field(default_factory=list)
    num_scheduled_tokens: int = 0
    num_prefill_tokens: int = 0
    num_decode_seqs: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    preempted: int = 0
    first_token_prompt_tokens: int = 0  # prompt tokens of the requests whose first token came this step


class Engine:
    def __init__(self, profile: EngineProfile, enable_prefix_caching: bool = True):
        self.profile = profile
        self.cache = KVCache(profile.num_gpu_blocks, profile.block_size, profile.model, enable_prefix_caching)
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.requests: dict[str, EngineRequest] = {}
        self._pending_events: list[KVEvent] = []
        self.slowdown = 1.0  # fault injection: every step takes this many times longer

    # ---- admission -----------------------------------------------------------------------------------
    def max_prompt_tokens(self) -> int:
        """The longest prompt the cache can ever hold (plus one block for the first output token)."""
        return min(self.profile.max_model_len, (self.cache.usable_blocks - 1) * self.profile.block_size)

    def add_request(self, req: EngineRequest) -> None:
        if req.request_id in self.requests:
            raise ValueError(f"duplicate request id {req.request_id}")
        if not req.prompt_token_ids:
            raise ValueError("empty prompt")
        if len(req.prompt_token_ids) > self.max_prompt_tokens():
            raise ValueError(f"prompt of {len(req.prompt_token_ids)} tokens exceeds {self.max_prompt_tokens()}")
        if not req.output_plan:
            raise ValueError("output plan must hold at least one token")
        req.hashes = self.cache.new_hashes(req.lora_name)
        req.hashes.extend(req.prompt_token_ids)
        self.requests[req.request_id] = req
        self.waiting.append(req)

    def abort(self, request_id: str, now: float) -> EngineRequest | None:
        req = self.requests.pop(request_id, None)
        if req is None:
            return None
        if req in self.running:
            self.running.remove(req)
        else:
            with contextlib.suppress(ValueError):
                self.waiting.remove(req)
        self.cache.free(req.blocks)
        req.blocks = []
        req.finished, req.finish_reason = now, "abort"
        return req

    def reset_prefix_cache(self) -> bool:
        ok = self.cache.reset()
        self._pending_events.extend(self.cache.drain_events())
        return ok

    # ---- observation ---------------------------------------------------------------------------------
    def next_start(self, gpu_free_at: float) -> float:
        """When the next step can start: at once if anything runs, else when the oldest waiting request arrived."""
        if self.running or not self.waiting:
            return gpu_free_at
        return max(gpu_free_at, min(r.arrival for r in self.waiting))

    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def kv_usage(self) -> float:
        return self.cache.usage()

    def lora_sets(self) -> tuple[list[str], list[str]]:
        running = sorted({r.lora_name for r in self.running if r.lora_name})
        waiting = sorted({r.lora_name for r in self.waiting if r.lora_name})
        return running, waiting

    # ---- the step ------------------------------------------------------------------------------------
    def step(self, now: float) -> StepResult:
        res = StepResult(start=now, duration=0.0)
        res.events.extend(self._pending_events)
        self._pending_events = []
        budget = self.profile.max_num_batched_tokens
        scheduled: list[tuple[EngineRequest, int]] = []
        preempted_now = False

        # 1. running requests, in admission order
        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            if n <= 0:  # cannot happen for a running request, but never schedule nothing
                i += 1
                continue
            while not self._grow(req, n):
                victim = self.running.pop()
                self._preempt(victim)
                res.preempted += 1
                preempted_now = True
                if victim is req:
                    break
            else:
                scheduled.append((req, n))
                self._commit(req, n)
                budget -= n
                i += 1
                continue
            break  # req itself was preempted: it was the last one

        # 2. waiting requests (not in a step that had to preempt, as in vLLM)
        skipped: list[EngineRequest] = []
        if not preempted_now:
            running_loras = {r.lora_name for r in self.running if r.lora_name}
            while self.waiting and budget > 0 and len(self.running) < self.profile.max_num_seqs:
                req = self.waiting[0]
                if req.arrival > now:  # arrived after this step's start on the GPU timeline (see ModelServer)
                    break
                if (
                    req.lora_name
                    and req.lora_name not in running_loras
                    and len(running_loras) >= self.profile.max_loras
                ):
                    skipped.append(self.waiting.popleft())
                    continue
                n = self._admit(req, budget, res)
                if n == 0:
                    break
                self.waiting.popleft()
                self.running.append(req)
                if req.lora_name:
                    running_loras.add(req.lora_name)
                if req.first_scheduled is None:
                    req.first_scheduled = now
                scheduled.append((req, n))
                self._commit(req, n)
                budget -= n
        for req in reversed(skipped):
            self.waiting.appendleft(req)

        if not scheduled:
            res.events.extend(self.cache.drain_events())
            return res

        # 3. cost of the step
        new_tokens = attn_pairs = kv_read = 0.0
        for req, n in scheduled:
            new_tokens += n
            if n == 1 and req.num_output_tokens and req.num_computed + 1 >= req.num_tokens:
                kv_read += req.num_computed
                res.num_decode_seqs += 1
            else:
                attn_pairs += n * (req.num_computed + n / 2)
                res.num_prefill_tokens += n
        res.duration = (
            self.profile.step_time(int(new_tokens), attn_pairs, int(kv_read), res.num_decode_seqs) * self.slowdown
        )
        res.num_scheduled_tokens = int(new_tokens)
        end = now + res.duration

        # 4. effects: computed tokens, sampled tokens, finished requests
        bs = self.profile.block_size
        for req, n in scheduled:
            req.num_computed += n
            assert req.hashes is not None
            if req.num_computed < req.num_tokens:
                continue  # still prefilling
            tok = req.output_plan[req.num_output_tokens]
            req.token_ids.append(tok)
            req.token_times.append(end)
            if req.first_token is None:
                req.first_token = end
                res.first_token_prompt_tokens += req.num_prompt_tokens
            res.new_tokens[req.request_id] = [tok]
            if len(req.token_ids) % bs == 0:
                req.hashes.extend(req.token_ids)
            if req.num_output_tokens >= len(req.output_plan):
                req.finished = end
                req.finish_reason = "stop" if req.stop_on_plan_end else "length"
                res.finished.append(req)
        for req in res.finished:
            self.running.remove(req)
            self.cache.free(req.blocks)
            req.blocks = []
            del self.requests[req.request_id]
        res.events.extend(self.cache.drain_events())
        return res

    # ---- helpers -------------------------------------------------------------------------------------
    def _commit(self, req: EngineRequest, n: int) -> None:
        """Cache the full blocks this step will compute, at scheduling time as vLLM V1's allocate_slots does,
        so a request admitted later in the same step already hits them."""
        assert req.hashes is not None
        full = min((req.num_computed + n) // self.profile.block_size, len(req.hashes.hashes))
        if full > req.num_cached_blocks:
            self.cache.cache_full_blocks(
                req.blocks, req.hashes.hashes, req.token_ids, req.num_cached_blocks, full, req.lora_name
            )
            req.num_cached_blocks = full

    def _blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.profile.block_size)

    def _grow(self, req: EngineRequest, n: int) -> bool:
        need = self._blocks_for(req.num_computed + n) - len(req.blocks)
        if need <= 0:
            return True
        if need > self.cache.num_free():
            return False
        req.blocks.extend(self.cache.allocate(need))
        return True

    def _admit(self, req: EngineRequest, budget: int, res: StepResult) -> int:
        """Prefix lookup + allocation for a waiting request; returns tokens scheduled (0 = cannot admit)."""
        assert req.hashes is not None
        bs = self.profile.block_size
        # the last token is always computed, so at most (num_tokens - 1) // bs blocks can be hits
        hit: Sequence[Block] = self.cache.longest_hit(req.hashes.hashes, (req.num_tokens - 1) // bs)
        computed = len(hit) * bs
        n = min(req.num_tokens - computed, budget)
        total_blocks = self._blocks_for(computed + n)
        need_new = total_blocks - len(hit)
        if need_new + self.cache.blocks_needed(hit) > self.cache.num_free():
            return 0
        self.cache.touch(hit)
        req.blocks = list(hit) + self.cache.allocate(need_new)
        req.num_computed = computed
        req.num_cached_blocks = len(hit)
        if req.preemptions == 0:
            req.cached_prompt_tokens = computed
        res.prefix_queries += req.num_tokens
        res.prefix_hits += computed
        return n

    def _preempt(self, req: EngineRequest) -> None:
        self.cache.free(req.blocks)
        req.blocks = []
        req.num_computed = 0
        req.num_cached_blocks = 0
        req.preemptions += 1
        self.waiting.appendleft(req)
