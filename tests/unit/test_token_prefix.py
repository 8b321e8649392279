"""Derived token prefixes: a cached earlier prompt that the request extends, or shares a prefix with (when its token
ends are known), gives a true prefix of the request's tokens."""

from __future__ import annotations

import dataclasses
from array import array
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtests.routing.token_derivation import replay_derivation
from scorer.token_cache import ENDS_STRIDE, TokenCache, TokenizeInput, known_prefix, tokenize_input
from scorer.token_offsets import _BYTE_LEVEL, TokenOffsets
from scorer.token_prefix import LADDER_BYTES, chat_prefix_text, derive, ladder
from scorer.types import LLMRequest
from sim.fleet.tokenizer import get_tokenizer
from sim.fleet.trace import TraceRequest

M = 64  # margin in tokens
BASE = "w" * 2048  # two ladder rungs
TOK = list(range(1, 513))  # BASE's tokens: 4 bytes each


def cache_with(*prompts: tuple[str, list[int]], model: str = "m", **kw: Any) -> TokenCache:
    cache = TokenCache(**kw)
    for text, tokens in prompts:
        cache.put(model, text, tokens)
    return cache


def derived(cache: TokenCache, text: str, model: str = "m") -> list[int] | None:
    found = cache.derive(model, TokenizeInput(text), M)
    return None if found is None else list(found.tokens)


@pytest.mark.parametrize(
    ("cached", "request_text", "expected"),
    [
        ([(BASE, TOK)], BASE + " and the answer, then a question", TOK[:-M]),  # a true prefix: all but the margin
        ([(BASE, TOK)], BASE + "w" * 5000, TOK[:-M]),  # many rungs further on
        ([(BASE, TOK)], "v" + BASE, None),  # not a prefix: differs at once
        ([(BASE, TOK)], BASE[:-1] + "v" + " more", None),  # shares all but the last byte: not an extension
        ([(BASE, TOK)], BASE[:1500], None),  # shorter than the cached prompt
        ([(BASE, TOK[: M + 1])], BASE + "x", TOK[:1]),  # one token beyond the margin
        ([(BASE, TOK[:M])], BASE + "x", None),  # nothing beyond the margin
        ([("w" * 1000, TOK)], "w" * 1000 + "x", None),  # under one rung: never filed
        ([(BASE, TOK), (BASE + "w" * 1100, TOK + [7] * 300)], BASE + "w" * 1200, TOK + [7] * (300 - M)),  # longest
        ([(BASE + "w" * 1100, TOK + [7] * 300), (BASE, TOK)], BASE + "w" * 1200, TOK + [7] * (300 - M)),
        ([(BASE, TOK), (BASE + "w" * 10, [9] * 600)], BASE + "w" * 20, [9] * (600 - M)),  # same rung: longer text
    ],
)
def test_derivation(cached: list[tuple[str, list[int]]], request_text: str, expected: list[int] | None) -> None:
    assert derived(cache_with(*cached), request_text) == expected


def test_another_model_or_kind_never_stands_for_the_request() -> None:
    cache = cache_with((BASE, TOK))
    assert derived(cache, BASE + "x", model="other") is None
    chat = TokenizeInput("{}", {"messages": []})
    chat.__dict__["prefix_text"] = BASE.encode() + b"x"  # a chat whose prefix text starts with a cached text prompt
    assert cache.derive("m", chat, M) is None
    chats_only = TokenCache()
    chats_only.put("m", "{}", TOK, chat=True, prefix_text=BASE.encode())  # and a chat filed under the same bytes
    assert derived(chats_only, BASE + "x") is None and chats_only.derive("m", chat, M) is not None


def test_a_digest_collision_is_caught_by_the_byte_comparison() -> None:
    cache = cache_with((BASE, TOK), ("v" * 2048, [5] * 512))
    request = TokenizeInput(BASE + " next" * 500)
    rungs = ladder("m", False, request.prefix_text)
    wrong_key = next(k for k, e in cache._entries.items() if e.text.startswith(b"v"))
    cache._anchors.setdefault(rungs[3], []).append(wrong_key)  # "v..." now collides with a longer rung of the request
    cache._anchors[rungs[1]].insert(0, wrong_key)  # and with BASE's own rung, examined first
    found = cache.derive("m", request, M)
    assert found is not None and list(found.tokens) == TOK[:-M]  # the colliding entry was rejected, BASE found


def test_estimated_token_count_follows_the_earlier_prompts_rate() -> None:
    found = cache_with((BASE, TOK)).derive("m", TokenizeInput(BASE + "w" * 2048), M)
    assert found is not None and found.estimated_total == 1024 and found.source_bytes == 2048
    assert derive([1, 2, 3], 12, 6, 1) == derive([1, 2, 3], 12, 12, 1)  # never below the known prefix's source
    with pytest.raises(ValueError):
        derive([1], 1, 1, 0)


def test_eviction_keeps_entries_anchors_and_text_within_bounds() -> None:
    cache = TokenCache(max_entries=2, max_tokens=10_000)
    for i in range(4):
        cache.put("m", chr(ord("a") + i) * 2048, [i] * 100)
    assert len(cache) == 2 and sum(len(v) for v in cache._anchors.values()) == 2
    assert derived(cache, "a" * 2048 + "x") is None and derived(cache, "d" * 2048 + "x") == [3] * (100 - M)
    assert cache.units == 2 * (100 + 2048 // 4) and cache.tokens == 200  # the prefix text counts at 4 bytes a unit
    small = TokenCache(max_entries=10, max_tokens=600)  # one prompt's tokens and text, not two
    small.put("m", "a" * 2048, [1] * 80)
    small.put("m", "b" * 2048, [2] * 80)
    assert len(small) == 1 and derived(small, "a" * 2048 + "x") is None and small.units <= 600
    assert not TokenCache(keep_prefixes=False).derive("m", TokenizeInput(BASE), M)  # nothing kept: nothing derived


def test_a_derivation_refreshes_the_earlier_prompt_in_the_lru() -> None:
    cache = TokenCache(max_entries=2)
    cache.put("m", BASE, TOK)
    cache.put("m", "z" * 2048, [1] * 512)
    assert derived(cache, BASE + "x") is not None  # BASE is now the most recent
    cache.put("m", "y" * 2048, [2] * 512)
    assert derived(cache, BASE + "x") == TOK[:-M]


# ---- chats ------------------------------------------------------------------------------------------------------
LONG = "u" * 1500
TURN1 = {"messages": [{"role": "system", "content": LONG}, {"role": "user", "content": "hi"}]}
ANSWER = {"role": "assistant", "content": "hello"}
TURN2 = {"messages": [*TURN1["messages"], ANSWER, {"role": "user", "content": "and?"}]}


def chat_request(fields: Mapping[str, Any]) -> LLMRequest:
    return LLMRequest("c", "m", kind="chat", prompt="", chat_fields=fields)


@pytest.mark.parametrize(
    ("turn2", "expected"),
    [
        (TURN2, TOK[:-M]),  # same template fields, earlier messages first
        ({**TURN2, "add_generation_prompt": False}, None),  # another template field
        ({**TURN2, "tools": [{"type": "function"}]}, None),
        ({"messages": [TURN1["messages"][0], {"role": "user", "content": "hi!"}, ANSWER]}, None),  # an edited turn
        ({"messages": [*TURN1["messages"][:1], {"role": "user", "content": "hi"}]}, None),  # the same chat: exact
    ],
)
def test_chat_derivation(turn2: dict[str, object], expected: list[int] | None) -> None:
    cache = TokenCache()
    first = tokenize_input(chat_request(TURN1))
    assert first is not None
    cache.put("m", first.text, TOK, chat=True, prefix_text=first.prefix_text)
    question = tokenize_input(chat_request(turn2))
    assert question is not None
    found = cache.derive("m", question, M) if question.text != first.text else None
    assert (list(found.tokens) if found is not None else None) == expected


def test_chat_prefix_text_is_a_byte_prefix_exactly_when_messages_are() -> None:
    one, two = chat_prefix_text(TURN1), chat_prefix_text(TURN2)
    assert two.startswith(one) and chat_prefix_text({"messages": [{"content": "a\nb"}]}).count(b"\n") == 2
    assert chat_prefix_text({"messages": [{"content": "hi"}]}).startswith(chat_prefix_text({"messages": []}))
    cut = chat_prefix_text({"messages": [{"content": "hi"}]})  # a message cut short is not an earlier message
    assert not chat_prefix_text({"messages": [{"content": "hi!"}, {"content": "x"}]}).startswith(cut)


def test_known_prefix_says_where_the_tokens_come_from() -> None:
    cache = cache_with((BASE, TOK))
    same = LLMRequest("r", "m", prompt=BASE)
    longer = dataclasses.replace(same, prompt=BASE + " more")
    assert known_prefix(same, cache, M) == ("exact", cache.peek("m", BASE), 512)
    source, tokens, total = known_prefix(longer, cache, M) or ("", [], 0)
    assert source == "derived" and list(tokens) == TOK[:-M] and total == 512 + round(5 / 4)
    assert known_prefix(longer, cache, None) is None  # derivation off
    ids = dataclasses.replace(same, prompt_token_ids=(1, 2))
    assert known_prefix(ids, cache, M) == ("exact", (1, 2), 2)


# ---- the property: with the twin's tokenizer, a derived prefix is always a prefix of the real tokens -----------
TWIN = get_tokenizer()
_pieces = st.sampled_from(
    [
        " ",
        "  ",
        "\n",
        "\t",
        ",",
        ".",
        "!",
        "42",
        "1234567",
        "<|user|>",
        "<|end|>",
        "<|",
        "|>",
        "<",
        "é",
        "中文",
        "🎉",
        "\ud800",
        "x",
        "zz",
        "qqqqq",
    ]
)
_words = st.sampled_from(TWIN.words[:400]).map(lambda w: " " + w)
_text = st.lists(st.one_of(_words, _words, _pieces, st.text(max_size=8)), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(head=_text, tail=_text, cut=st.integers(0, 60), more=_text)
def test_derived_tokens_are_a_prefix_of_the_real_tokens(head: str, tail: str, cut: int, more: str) -> None:
    earlier = "".join(" " + w for w in TWIN.words[1000 : 1000 + 200]) + head + tail[:cut]  # over one ladder rung
    request = earlier + tail[cut:] + more
    assert len(earlier.encode(errors="surrogatepass")) >= LADDER_BYTES
    cache = TokenCache()
    cache.put("m", earlier, TWIN.encode(earlier))
    found = cache.derive("m", TokenizeInput(request), M)
    real = TWIN.encode(request)
    assert found is not None and list(found.tokens) == real[: len(found.tokens)]
    assert len(found.tokens) == len(TWIN.encode(earlier)) - M


# ---- token ends: a request that only shares a prefix with a cached prompt -----------------------------------------
def twin_ends(text: str) -> tuple[list[int], array[int] | None]:
    tokens = TWIN.encode(text)
    return tokens, TokenOffsets().ends(text.encode(errors="surrogatepass"), [TWIN.id_to_piece(t) for t in tokens])


BL = {" ": "Ġ", "\n": "Ċ"}  # GPT-2's byte-level characters for a space and a newline


@pytest.mark.parametrize(
    ("text", "strs", "expected"),
    [
        ("Hello world", ["Hello", " world"], [5, 11]),  # literal pieces
        ("a\nb", ["a", "<0x0A>", "b"], [1, 2, 3]),  # byte pieces
        ("é", ["<0xC3>", "<0xA9>"], [1, 2]),
        ("Hello world\n", ["Hello", f"{BL[' ']}world", BL["\n"]], [5, 11, 12]),  # byte-level (Llama 3, Qwen)
        ("héllo", ["h", "Ã©", "llo"], [1, 3, 6]),  # é is two bytes, two byte-level characters
        ("Hi there", ["<|begin_of_text|>", "Hi", f"{BL[' ']}there"], [0, 2, 8]),  # a BOS not in the text
        ("Hello world", ["▁Hello", "▁world"], None),  # SentencePiece's ▁: no reading reproduces the text
        ("Hello world", ["Hello", " wor"], None),  # too short
        ("Hello", ["Hel", "lo", "<|end|>"], None),  # a special token that is not in the text, not leading
        ("", [], []),
    ],
)
def test_token_ends(text: str, strs: list[str], expected: list[int] | None) -> None:
    ends = TokenOffsets().ends(text.encode(), strs)
    assert (list(ends) if ends is not None else None) == expected


SHARED = "".join(" " + w for w in TWIN.words[2000:2300])  # ~2.4 KB of the twin's words: over two rungs


def shared_cache(earlier: str, **kw: Any) -> TokenCache:
    tokens, ends = twin_ends(earlier)
    assert ends is not None
    cache = TokenCache(**kw)
    cache.put("m", earlier, tokens, ends=ends)
    return cache


@pytest.mark.parametrize(
    ("earlier", "request_text"),
    [
        (SHARED + " tail of the earlier turn", SHARED + " another turn altogether"),  # an edited last turn
        (SHARED + " bana", SHARED + " banana"),  # the shared prefix ends inside a word
        (SHARED + "   ", SHARED + " x"),  # inside a run of spaces
        (SHARED + " 12", SHARED + " 123456"),  # inside a number
        (SHARED, SHARED + " more"),  # an extension: the same as the extension rule
    ],
)
def test_shared_prefix_derivation_is_a_true_prefix(earlier: str, request_text: str) -> None:
    found = shared_cache(earlier).derive("m", TokenizeInput(request_text), M)
    real = TWIN.encode(request_text)
    x, y = earlier.encode(), request_text.encode()
    common = next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
    _, ends = twin_ends(earlier)
    assert ends is not None
    inside = sum(1 for e in ends if e <= common) // ENDS_STRIDE * ENDS_STRIDE  # ends are kept every 16 tokens
    if request_text.startswith(earlier):
        inside = len(ends)  # the extension rule knows all of them
    assert found is not None and list(found.tokens) == real[: inside - M] == TWIN.encode(earlier)[: inside - M]


def test_shared_prefix_needs_ends_a_whole_rung_and_the_same_model() -> None:
    earlier = SHARED + " end"
    cache = TokenCache()
    cache.put("m", earlier, TWIN.encode(earlier))  # no ends: only the extension rule
    assert derived(cache, SHARED + " other") is None
    assert derived(shared_cache(earlier), SHARED + " other", model="n") is None
    assert derived(shared_cache(earlier), SHARED[:900] + "x" + SHARED[901:]) is None  # shares under one rung
    tokens, ends = twin_ends(earlier)
    bad = TokenCache()
    bad.put("m", earlier, tokens, ends=list(ends or [])[:-1])  # ends that do not fit the tokens are not kept
    assert derived(bad, SHARED + " other") is None


def test_evicting_a_prompt_with_ends_unfiles_its_rungs() -> None:
    cache = shared_cache(SHARED + " one", max_entries=1)
    assert cache._rungs and derived(cache, SHARED + " two") is not None
    cache.put("m", "short", [1])
    assert not cache._rungs and derived(cache, SHARED + " two") is None


@settings(max_examples=200, deadline=None)
@given(head=_text, a=_text, b=_text)
def test_shared_prefix_derived_tokens_are_a_prefix_of_the_real_tokens(head: str, a: str, b: str) -> None:
    earlier, request = SHARED + head + a, SHARED + head + b
    found = shared_cache(earlier).derive("m", TokenizeInput(request), M)
    real = TWIN.encode(request)
    assert found is not None and list(found.tokens) == real[: len(found.tokens)]


_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["system", "user", "assistant", "tool"]),
    _text,
)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(_message, min_size=2, max_size=8), cut=st.integers(1, 7), gen=st.booleans())
def test_chat_derived_tokens_are_a_prefix_of_the_twins_rendered_tokens(
    messages: list[dict[str, str]], cut: int, gen: bool
) -> None:
    """The twin's template is append-only: an earlier turn's tokens minus the margin (which covers its generation
    prompt) are a prefix of the later turn's, whatever the messages."""
    messages = [{"role": "system", "content": SHARED}, *messages]  # over one rung of prefix text
    cut = min(cut, len(messages) - 1)
    fields = {"add_generation_prompt": gen}
    earlier = tokenize_input(chat_request({**fields, "messages": messages[:cut]}))
    later = tokenize_input(chat_request({**fields, "messages": messages}))
    assert earlier is not None and later is not None
    cache = TokenCache()
    earlier_tokens = TWIN.encode(TWIN.apply_chat_template(messages[:cut], add_generation_prompt=gen))
    cache.put("m", earlier.text, earlier_tokens, chat=True, prefix_text=earlier.prefix_text)
    found = cache.derive("m", later, M)
    real = TWIN.encode(TWIN.apply_chat_template(messages, add_generation_prompt=gen))
    assert found is not None and list(found.tokens) == real[: len(found.tokens)]


def test_the_trace_replay_classifies_and_checks_every_request() -> None:
    trace = [
        TraceRequest(0.0, 1500, 10, (1, 2, 3)),
        TraceRequest(1.0, 2000, 10, (1, 2, 3, 4)),  # extends the first (its partial block 3 is a prefix of block 3)
        TraceRequest(2.0, 1200, 10, (1, 9, 8)),  # shares block 1 with both
        TraceRequest(3.0, 1200, 10, (1, 9, 8)),  # a repeat
        TraceRequest(4.0, 600, 10, (7, 6)),  # shares nothing
    ]
    stats = replay_derivation(trace, TokenCache(), M)
    assert (stats.exact, stats.derived, stats.none, stats.wrong) == (1, 2, 2, 0)
    assert stats.shared_blocks == 1500 // 16 + 512 // 16 and 0 < stats.covered_blocks <= stats.shared_blocks
    without_ends = replay_derivation(trace, TokenCache(), M, offsets=False)
    assert (without_ends.derived, without_ends.none) == (1, 3)  # only the extension


_BYTE_TO_LEVEL = {b: c for c, b in _BYTE_LEVEL.items()}
_spans = st.lists(st.text(min_size=1, max_size=6), max_size=40)


@settings(max_examples=400, deadline=None)
@given(spans=_spans, reading=st.sampled_from(["literal", "byte-pieces", "byte-level"]), bos=st.booleans())
def test_token_ends_are_where_each_string_ends_whichever_path_reads_them(
    spans: list[str], reading: str, bos: bool
) -> None:
    """Strings made from a known split of a text, in each reading, with or without a BOS: the ends are the split's,
    and the one-byte-per-character path agrees with the memoized one wherever it answers."""
    pieces = [s.encode(errors="surrogatepass") for s in spans]
    if reading == "literal":
        strs = list(spans)
    elif reading == "byte-pieces":  # every non-ASCII byte as its own <0xNN> piece, as SentencePiece's fallback does
        pieces = [bytes([b]) for p in pieces for b in p]
        strs = [chr(p[0]) if p[0] <= 127 else f"<0x{p[0]:02X}>" for p in pieces]
    else:
        strs = ["".join(_BYTE_TO_LEVEL[b] for b in p) for p in pieces]
    truth = list(accumulate(map(len, pieces)))
    if bos:
        strs, truth = ["<|begin_of_text|>", *strs], [0, *truth]
    text = b"".join(pieces)
    ends = TokenOffsets().ends(text, strs)
    memoized = TokenOffsets().memoized_ends(text, strs)
    if reading == "literal" and any("<0x" in s for s in strs):
        return  # a literal "<0x41>" in the text reads as a byte piece: no claim
    assert ends is not None and list(ends) == truth
    assert memoized is None or list(memoized) == truth
