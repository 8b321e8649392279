"""The twin's tokenizer: lossless round trips, one token per synthesized word, chat template, frozen ids."""

from __future__ import annotations

import random

import pytest

from sim.fleet.tokenizer import (
    EOS_TOKEN_ID,
    NUM_WORDS,
    VOCAB_SIZE,
    WORD_BASE,
    Tokenizer,
    generate_token_ids,
    get_tokenizer,
)

TOK = get_tokenizer()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "The quick brown fox, 42 times!",
        " bana toka ",
        "   \t\n\n  \r\n   ",
        "héllo wörld ñ 中文 日本語 한국어",
        "emoji 🎉👩‍👩‍👧 flags 🇫🇷 and ZWJ",
        "<|user|> <|nope|> <| <|END|> <<|>>",
        "\x00\x01\x7f control bytes",
        "lone surrogate \ud800 and \udfff",
        "a" * 1000,
    ],
)
def test_round_trip(text: str) -> None:
    ids = TOK.encode(text)
    assert all(0 <= i < VOCAB_SIZE for i in ids)
    assert TOK.decode(ids) == text
    assert TOK.encode_general(text) == ids


def test_round_trip_random_strings_and_both_paths_agree() -> None:
    rng = random.Random(7)
    alphabet = ["a", "b", " ", "  ", "\n", "é", "🎉", "<|user|>", "<", "Z", "la", *TOK.words[:40]]
    alphabet += [" " + w for w in TOK.words[500:540]]
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 15)))
        ids = TOK.encode(text)
        assert ids == TOK.encode_general(text), text
        assert TOK.decode(ids) == text, text


@pytest.mark.parametrize("n_words", [1, 2, 17, 512, 3000])
def test_synthesized_text_has_one_token_per_word(n_words: int) -> None:
    rng = random.Random(n_words)
    words = [rng.choice(TOK.words) for _ in range(n_words)]
    text = "".join(" " + w for w in words)
    ids = TOK.encode(text)
    assert len(ids) == n_words
    assert ids == [TOK.word_token_id(TOK.words.index(w)) for w in words]
    # The bare form (no leading space) is one token too.
    assert TOK.encode(words[0]) == [TOK.word_token_id(TOK.words.index(words[0]), leading_space=False)]


def test_vocabulary_shape() -> None:
    assert TOK.vocab_size == VOCAB_SIZE == 65_536
    assert len(TOK.words) == NUM_WORDS == len(set(TOK.words))
    assert all(w.isascii() and w.isalpha() and w.islower() for w in TOK.words)
    assert TOK.eos_token_id == EOS_TOKEN_ID
    assert TOK.decode([EOS_TOKEN_ID]) == "<|endoftext|>"
    assert TOK.encode("<|endoftext|>") == [EOS_TOKEN_ID]


@pytest.mark.parametrize(
    ("token_id", "piece"),
    [(65, "A"), (10, "<0x0A>"), (0xFF, "<0xFF>"), (258, "<|user|>"), (WORD_BASE, " a"), (WORD_BASE + NUM_WORDS, "a")],
)
def test_id_to_piece(token_id: int, piece: str) -> None:
    assert TOK.id_to_piece(token_id) == piece


@pytest.mark.parametrize("bad", [[-1], [VOCAB_SIZE], [5, 70_000]])
def test_decode_rejects_out_of_vocabulary(bad: list[int]) -> None:
    with pytest.raises(ValueError, match="out of vocabulary"):
        TOK.decode(bad)


def test_decode_of_invalid_utf8_bytes_replaces() -> None:
    assert TOK.decode([0xFF, 65]) == "\ufffdA"


# Frozen once from this implementation: fails if the vocabulary, the regex or the generators change, since
# every twin process and every recorded trace replay depends on these exact ids.
FROZEN_TEXT = "<|user|>\nhello bana toka, Zebra! héllo 🎉 end"
FROZEN_IDS = [258, 10, 104, 101, 108, 108, 111, 1511, 14279, 44, 32, 90, 33331, 33, 32, 104, 195, 169, 108, 108,
              111, 32, 240, 159, 142, 137, 32, 101, 110, 100]  # fmt: skip


def test_frozen_ids() -> None:
    assert TOK.encode(FROZEN_TEXT) == FROZEN_IDS
    assert Tokenizer().encode(FROZEN_TEXT) == FROZEN_IDS  # a fresh instance, not only the singleton
    assert (TOK.words[0], TOK.words[1000], TOK.words[20000], TOK.words[-1]) == ("a", "aichou", "bribe", "taitrati")


@pytest.mark.parametrize(
    ("seed", "n", "expected"),
    [
        (0, 8, [2050, 14415, 1949, 11559, 16679, 24741, 23644, 20348]),
        (2**64 - 1, 4, [17548, 11757, 6038, 17956]),
        (5, 0, []),
    ],
)
def test_generate_token_ids_frozen(seed: int, n: int, expected: list[int]) -> None:
    assert generate_token_ids(seed, n) == expected


def test_generate_token_ids_properties() -> None:
    ids = generate_token_ids(123, 400)
    assert all(WORD_BASE <= i < WORD_BASE + NUM_WORDS for i in ids)
    assert generate_token_ids(123, 100) == ids[:100]
    assert generate_token_ids(124, 100) != ids[:100]
    assert TOK.encode(TOK.decode(ids)) == ids
    with pytest.raises(ValueError):
        generate_token_ids(1, -1)


def test_singleton() -> None:
    assert get_tokenizer() is get_tokenizer()


@pytest.mark.parametrize(
    ("messages", "add_generation_prompt", "expected"),
    [
        ([{"role": "user", "content": "hi"}], True, "<|user|>\nhi<|end|>\n<|assistant|>\n"),
        ([{"role": "user", "content": "hi"}], False, "<|user|>\nhi<|end|>\n"),
        (
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "a "}, {"type": "text", "text": "b"}]},
                {"role": "assistant", "content": None},
                {"role": "tool", "content": "42"},
            ],
            True,
            "<|system|>\nbe brief<|end|>\n<|user|>\na b<|end|>\n<|assistant|>\n<|end|>\n"
            "<|tool|>\n42<|end|>\n<|assistant|>\n",
        ),
        ([{"role": "developer", "content": "x"}], False, "<|system|>\nx<|end|>\n"),
        ([], True, "<|assistant|>\n"),
    ],
)
def test_chat_template(messages: list[dict[str, object]], add_generation_prompt: bool, expected: str) -> None:
    text = TOK.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    assert text == expected
    ids = TOK.encode(text)
    assert TOK.decode(ids) == text


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Sure,"}],
            "<|user|>\nhi<|end|>\n<|assistant|>\nSure,",
        ),
        ([{"role": "user", "content": None}], "<|user|>\n"),
        ([], ValueError),
    ],
)
def test_chat_template_continue_final_message(messages: list[dict[str, object]], expected: object) -> None:
    if expected is ValueError:
        with pytest.raises(ValueError, match="continue_final_message"):
            TOK.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True)
        return
    assert TOK.apply_chat_template(messages, add_generation_prompt=False, continue_final_message=True) == expected
    with pytest.raises(ValueError, match="no generation prompt"):  # both at once: refused, as vLLM does
        TOK.apply_chat_template(messages, add_generation_prompt=True, continue_final_message=True)


def test_chat_template_role_markers_are_single_tokens() -> None:
    ids = TOK.encode(TOK.apply_chat_template([{"role": "user", "content": " bana"}]))
    assert ids == [258, 10, TOK.word_token_id(TOK.words.index("bana")), 261, 10, 259, 10]


@pytest.mark.parametrize(
    ("messages", "match"),
    [
        ([{"role": "wizard", "content": "x"}], "role"),
        ([{"content": "x"}], "role"),
        (["not a dict"], "object"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "image_url"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "string"),
        ([{"role": "user", "content": ["raw"]}], "text"),
        ([{"role": "user", "content": 5}], "content"),
    ],
)
def test_chat_template_rejects(messages: list[object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        TOK.apply_chat_template(messages)  # type: ignore[arg-type]
