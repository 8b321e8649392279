"""precise-prefix-cache-scorer: exact scores for endpoints with synced events, approximate ones for the rest."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from common.kv_event_types import BlockStored
from scorer.config import ConfigError, load_config
from scorer.plugins.scorers import PrecisePrefixCacheScorer, TTFTEstimateScorer
from scorer.plugins.scorers.precise_prefix import PreciseMatch, PrecisePrefixParams, PreciseState
from scorer.registry import PluginRuntime
from scorer.scheduler import Scheduler
from scorer.token_cache import tokenize_input
from scorer.types import CycleState, Endpoint, EndpointMetrics, EndpointState, LLMRequest, SchedulingResult

A, B, C = "10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"
BS = 4
PRECISE_CONFIG = Path(__file__).parents[2] / "scorer" / "precise-config.yaml"
PROMPT = "x" * 256  # 4 approximate blocks of 64 bytes
TOKENS = list(range(1, 17))  # 4 precise blocks of 4 tokens


def state(address: str) -> EndpointState:
    return EndpointState(Endpoint(address), EndpointMetrics())


def cycle() -> CycleState:
    return CycleState(now=1.0, rng=random.Random(0))


def plugin() -> PrecisePrefixCacheScorer:
    params = PrecisePrefixParams.model_validate({})
    p = PrecisePrefixCacheScorer("precise", params, PreciseState.empty(params))
    for address in (A, B, C):
        p.precise.add_endpoint(address)
    p.precise.set_synced(A, True)
    p.precise.set_synced(B, True)  # C has no events: approximate
    p.precise.apply(A, BlockStored([1, 2, 3], None, TOKENS[:12], BS))  # 3 of 4 blocks
    p.precise.apply(B, BlockStored([7], None, TOKENS[:4], BS))  # 1 of 4
    return p


def request(model: str = "m", kind: str = "completions") -> LLMRequest:
    return LLMRequest("r1", model, kind=kind, prompt=PROMPT)  # type: ignore[arg-type]


CHAT_FIELDS = {"messages": [{"role": "user", "content": "hi"}]}  # a chat's template fields (LLMRequest.chat_fields)
CHAT = '{"messages":[{"content":"hi","role":"user"}]}'  # the same as canonical JSON (LLMRequest.chat_input)
PRECISE = {A: 0.75, B: 0.25, C: 1.0}  # C: the approximate index (it was sent this prompt)
APPROXIMATE = {A: 0.0, B: 0.0, C: 1.0}  # tokens unknown: approximate everywhere


@pytest.mark.parametrize(
    ("fields", "cached", "expected"),
    [
        ({}, [(PROMPT, False)], PRECISE),  # a text completion, tokenized
        ({}, [], APPROXIMATE),  # not tokenized (yet, or /tokenize failed)
        ({"kind": "chat", "chat_fields": CHAT_FIELDS}, [(CHAT, True)], PRECISE),  # a chat, tokenized with the chat form
        ({"kind": "chat", "chat_fields": CHAT_FIELDS}, [(PROMPT, False), (CHAT, False)], APPROXIMATE),  # never a text's
        ({"kind": "chat"}, [(PROMPT, False)], APPROXIMATE),  # a chat with media parts: no chat input
        ({"prompt_token_ids": tuple(TOKENS)}, [], PRECISE),  # token ids: the tokens, nothing to ask
        ({"prompt_token_ids": tuple(TOKENS)}, [(PROMPT, False)], PRECISE),
        ({"prompt_token_ids": tuple(TOKENS[:8])}, [(PROMPT, False)], {A: 1.0, B: 0.5, C: 1.0}),  # ids win
        ({"prompt_count": 2}, [(PROMPT, False)], APPROXIMATE),  # a batch: no single sequence
        ({"kind": "other"}, [(PROMPT, False)], APPROXIMATE),
    ],
)
def test_scores(fields: dict[str, object], cached: list[tuple[str, bool]], expected: dict[str, float]) -> None:
    p = plugin()
    req = dataclasses.replace(request(), **fields)
    p.index.record(C, p.match(cycle(), req).hashes)  # the approximate index believes C holds the prompt
    for text, chat in cached:
        p.tokens.put("m", text, TOKENS, chat=chat)
    assert p.score(cycle(), req, [state(A), state(B), state(C)]) == expected


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"model": "m", "prompt": PROMPT}),
        ({"prompt": ""}, None),
        ({"kind": "chat", "chat_fields": CHAT_FIELDS}, {"model": "m", "messages": [{"content": "hi", "role": "user"}]}),
        (  # the request's template fields go along, the model is the request's
            {"kind": "chat", "chat_fields": {"model": "x", "messages": [], "add_generation_prompt": False}},
            {"model": "m", "add_generation_prompt": False, "messages": []},
        ),
        ({"kind": "chat"}, None),
        ({"prompt_token_ids": (1, 2)}, None),
        ({"prompt_count": 3}, None),
        ({"kind": "other"}, None),
    ],
)
def test_what_is_asked_of_tokenize(fields: dict[str, object], expected: dict[str, object] | None) -> None:
    question = tokenize_input(dataclasses.replace(request(), **fields))
    assert (question.body("m") if question is not None else None) == expected


def test_synced_endpoint_without_blocks_scores_zero_and_short_prompts_are_neutral() -> None:
    p = plugin()
    p.precise.add_endpoint("10.0.0.4:80")
    p.precise.set_synced("10.0.0.4:80", True)
    p.tokens.put("m", PROMPT, TOKENS)
    assert p.score(cycle(), request(), [state("10.0.0.4:80")]) == {"10.0.0.4:80": 0.0}
    p.tokens.put("m", "short", [1, 2])
    short = LLMRequest("r2", "m", prompt="short")
    assert p.score(cycle(), short, [state(A), state(B)]) == {A: 0.0, B: 0.0}


def test_ttft_estimate_reads_the_precise_match() -> None:
    p = plugin()
    p.tokens.put("m", PROMPT, TOKENS)
    ttft = TTFTEstimateScorer("ttft", TTFTEstimateScorer.Params.model_validate({}))
    ttft.bind({"precise": p, "ttft": ttft})
    estimates = ttft.estimates(cycle(), request(), [state(A), state(B)])
    prompt_tokens = request().estimated_prompt_tokens()
    assert estimates[A].uncached_tokens == pytest.approx(prompt_tokens * 0.25)
    assert estimates[B].uncached_tokens == pytest.approx(prompt_tokens * 0.75)


def test_membership_changes_reach_the_index_and_listeners() -> None:
    p = plugin()
    seen: list[frozenset[str]] = []
    p.state.membership_listeners.append(seen.append)
    p.endpoints_changed(frozenset({A}))
    assert p.precise.addresses() == [A] and seen == [frozenset({A})]


def test_pre_request_keeps_the_approximate_index_learning() -> None:
    p = plugin()
    p.tokens.put("m", PROMPT, TOKENS)
    c = cycle()
    p.pre_request(c, request(), SchedulingResult(targets=(state(B),), reason="t"))
    assert p.index.blocks(B) == 4


def test_shipped_precise_profile_loads_and_binds_ttft_to_it() -> None:
    config = load_config(PRECISE_CONFIG)
    scheduler = Scheduler(config)
    precise = scheduler.plugins["precise-prefix-cache-scorer"]
    ttft = scheduler.plugins["ttft-estimate-scorer"]
    assert isinstance(precise, PrecisePrefixCacheScorer) and isinstance(ttft, TTFTEstimateScorer)
    assert ttft.prefix is precise


def test_the_scheduler_builds_the_plugin_on_the_state_its_runtime_was_given() -> None:
    params = PrecisePrefixParams.model_validate({})
    given = PreciseState.empty(params)
    given.tokens.put("m", PROMPT, TOKENS)
    runtime = PluginRuntime({"precise-prefix-cache-scorer": given})
    precise = Scheduler(load_config(PRECISE_CONFIG), runtime).plugins["precise-prefix-cache-scorer"]
    assert isinstance(precise, PrecisePrefixCacheScorer)
    assert precise.state is given and runtime.provided(PreciseState) == {"precise-prefix-cache-scorer": given}
    made = PluginRuntime()  # nothing given: the factory makes an empty state and the runtime keeps it for the process
    built = Scheduler(load_config(PRECISE_CONFIG), made).plugins["precise-prefix-cache-scorer"]
    assert isinstance(built, PrecisePrefixCacheScorer)
    assert made.provided(PreciseState) == {"precise-prefix-cache-scorer": built.state} and built.state is not given
    assert len(built.state.tokens) == 0


def test_bad_parameters_are_refused_with_their_path(tmp_path: Path) -> None:
    doc = tmp_path / "c.yaml"
    doc.write_text(
        "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\nplugins:\n"
        "- type: precise-prefix-cache-scorer\n  parameters: {maxBlocksPerEndpoint: 0, kvTopics: x}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(doc)
    text = str(err.value)
    assert "plugins[0].parameters.maxBlocksPerEndpoint: must be >= 1" in text
    assert "plugins[0].parameters.kvTopics: unknown field" in text


async def test_a_failing_preparation_step_never_fails_the_request() -> None:
    from scorer.director import Director
    from scorer.metrics import PickerMetrics
    from scorer.observed import ObservedDirector

    backend = ObservedDirector(Director(Scheduler(load_config(PRECISE_CONFIG))), PickerMetrics())
    seen: list[str] = []

    async def broken(request: LLMRequest) -> None:
        raise RuntimeError("boom")

    async def recording(request: LLMRequest) -> None:
        seen.append(request.request_id)

    backend.preparers += [broken, recording]
    await backend.prepare(request())
    assert seen == ["r1"]


# ---- derived tokens: the request extends a cached prompt ---------------------------------------------------------
EARLIER = "w" * 2048  # over one ladder rung of scorer.token_prefix
EARLIER_TOKENS = list(range(1, 101))  # 100 tokens: 25 blocks of 4, 36 left (9 blocks) after the 64-token margin


def derived_plugin(margin: int | None = 64) -> PrecisePrefixCacheScorer:
    params = PrecisePrefixParams.model_validate({"derivedPrefixMarginTokens": margin})
    p = PrecisePrefixCacheScorer("precise", params, PreciseState.empty(params))
    for address in (A, B):
        p.precise.add_endpoint(address)
        p.precise.set_synced(address, True)
    p.precise.apply(A, BlockStored(list(range(1, 26)), None, EARLIER_TOKENS, BS))  # A served the earlier prompt
    p.precise.apply(B, BlockStored([99], None, EARLIER_TOKENS[:4], BS))  # B holds its first block
    p.tokens.put("m", EARLIER, EARLIER_TOKENS)
    return p


def test_a_request_extending_a_cached_prompt_is_matched_on_its_derived_prefix() -> None:
    p = derived_plugin()
    req = LLMRequest("r2", "m", prompt=EARLIER + "w" * 2048)  # twice as long: ~200 tokens, 50 blocks estimated
    c = cycle()
    match = p.match(c, req)
    assert isinstance(match, PreciseMatch) and match.token_source == "derived" and match.prompt_tokens == 200
    assert p.score(c, req, [state(A), state(B)]) == {A: 9 / 50, B: 1 / 50}  # 9 known blocks held by A
    assert match.cached_fraction(A) == pytest.approx(36 / 200)
    assert p.by_source == {"exact": 0, "derived": 1, "none": 0} and c.notes == {"precise.tokens": "derived"}
    p.tokens.put("m", req.prompt, EARLIER_TOKENS + [7] * 100)  # its own answer arrives: exact from now on
    exact = p.match(cycle(), req)
    assert isinstance(exact, PreciseMatch) and exact.token_source == "exact" and exact.block_fraction(A) == 25 / 50


def test_without_derivation_such_a_request_is_scored_approximately() -> None:
    p = derived_plugin(margin=None)
    c = cycle()
    match = p.match(c, LLMRequest("r2", "m", prompt=EARLIER + "w" * 2048))
    assert isinstance(match, PreciseMatch) and match.token_source is None and p.by_source["none"] == 1
    assert c.notes == {"precise.tokens": "none"}


@pytest.mark.parametrize(
    ("parameters", "error"),
    [
        ({"tokenizeTimeoutSeconds": -1}, "tokenizeTimeoutSeconds"),
        ({"derivedPrefixMarginTokens": 0}, "derivedPrefixMarginTokens"),
        ({"backgroundTokenizeConcurrency": 0}, "backgroundTokenizeConcurrency"),
    ],
)
def test_derivation_parameters_are_validated(parameters: dict[str, object], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        PrecisePrefixParams.model_validate(parameters)
    assert PrecisePrefixParams.model_validate({"tokenizeTimeoutSeconds": 0}).tokenize_timeout_seconds == 0
