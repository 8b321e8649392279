"""Fuzz target: the request parser (scorer/request_parser.py) on any bytes, any JSON shape, any depth and size.

Invariant: `parse_request` returns an `LLMRequest` or raises `BadRequestError` with a message for the client; nothing
else escapes, and what it returns can be used downstream (the prompt and model encode to UTF-8, the chat fields
serialise to canonical JSON: the precise scorer's cache key).
"""

from __future__ import annotations

import json

from fuzz_support import JSON, counted, nested
from hypothesis import given
from hypothesis import strategies as st

from scorer.request_parser import PRIORITY_HEADER, BadRequestError, parse_request

PATHS = st.sampled_from(
    ["/v1/completions", "/v1/chat/completions", "/v1/chat/completions/", "/v1/completions?x=1", "/v1/models", "", "/"]
) | st.text(max_size=30)
HEADERS = st.dictionaries(
    st.sampled_from([PRIORITY_HEADER, "content-type", "x-session-id", "X-Autonomic-Priority"]) | st.text(max_size=10),
    st.sampled_from(["", "1", "-3", "²", "9" * 5000, " 7 "]) | st.text(max_size=20),
    max_size=4,
)
TEXTS = st.text(max_size=40) | st.sampled_from(["\ud800", "a\udfffb", "\x00", "é" * 30])
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio"]) | JSON},
    optional={
        "text": TEXTS | JSON,
        "image_url": st.fixed_dictionaries({"url": TEXTS}) | JSON,
    },
)
MESSAGE = st.fixed_dictionaries(
    {}, optional={"role": TEXTS | JSON, "content": TEXTS | st.lists(PART, max_size=3) | JSON}
)
TOKEN_IDS = st.lists(st.integers(min_value=-5, max_value=2**33) | st.sampled_from([0, 2**32 - 1, 2**32]), max_size=8)
REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "model": TEXTS | JSON,
        "prompt": TEXTS | st.lists(TEXTS, max_size=3) | TOKEN_IDS | st.lists(TOKEN_IDS, max_size=3) | JSON,
        "messages": st.lists(MESSAGE, max_size=4) | JSON,
        "stream": st.booleans() | JSON,
        "max_tokens": st.integers() | JSON,
        "max_completion_tokens": st.integers() | JSON,
        "tools": JSON,
        "documents": JSON,
        "tool_choice": st.just("none") | JSON,
        "chat_template_kwargs": JSON,
    },
)


@st.composite
def json_text(draw: st.DrawFn) -> bytes:
    """A mostly well-formed OpenAI body, serialised in one of the ways a client might, then maybe damaged."""
    doc = draw(REQUEST | JSON)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-16", "utf-32", "latin-1"]))
    data = text.encode(encoding, errors="surrogatepass" if encoding.startswith("utf") else "replace")
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip", "insert", "bigint"]))
    if damage == "truncate" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
    elif damage == "insert":
        i = draw(st.integers(0, len(data)))
        data = (
            data[:i]
            + draw(st.sampled_from([b"\xff", b"\xed\xa0\x80", b"\\ud800", b"NaN", b"1e999", b"\x00"]))
            + data[i:]
        )
    elif damage == "bigint":
        data = b'{"model":"m","prompt":"p","max_tokens":' + b"9" * draw(st.sampled_from([4300, 4301, 10_000])) + b"}"
    return data


BODIES = json_text() | nested() | st.binary(max_size=200)


@given(path=PATHS, headers=HEADERS, body=BODIES)
@counted
def test_parse_request_returns_a_request_or_a_bad_request_error(path: str, headers: dict[str, str], body: bytes):
    try:
        request = parse_request(path, headers, body, "r1")
    except BadRequestError as exc:
        assert exc.message
        assert exc.param is None or isinstance(exc.param, str)
        return
    request.model.encode()
    request.prompt.encode()
    request.estimated_prompt_tokens()
    if request.chat_fields is not None:
        assert request.chat_input is not None
    assert request.body_size == len(body)
