"""OpenAI bodies -> LLMRequest, and the 400s for malformed ones."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scorer.request_parser import BadRequestError, _nests_deeper, parse_request, request_kind


def _parse(path: str, body: object, headers: dict[str, str] | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return parse_request(path, headers or {}, raw, "rid-1")


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/v1/completions", "completions"),
        ("/v1/completions?x=1", "completions"),
        ("/v1/chat/completions/", "chat"),
        ("/v1/models", "other"),
        ("/health", "other"),
        ("/", "other"),
    ],
)
def test_request_kind(path, kind):
    assert request_kind(path) == kind


@pytest.mark.parametrize(
    ("prompt", "text"),
    [
        ("hello world", "hello world"),
        ("", ""),
        (["a", "b"], "a\nb"),
        ([1, 2, 3], "1 2 3 "),
        ([[1, 2], [3]], "1 2 \n3 "),
    ],
)
def test_completion_prompts(prompt, text):
    req = _parse("/v1/completions", {"model": "m", "prompt": prompt, "max_tokens": 7, "stream": True})
    assert (req.kind, req.model, req.prompt, req.max_tokens, req.stream) == ("completions", "m", text, 7, True)
    assert req.request_id == "rid-1"
    assert req.body_size > 0


@pytest.mark.parametrize(
    ("prompt", "token_ids", "count"),
    [
        ("hello", None, 1),  # text: the server tokenizes it (completion form of /tokenize)
        (["hello"], None, 1),  # a batch of one is that prompt
        (["a", "b"], None, 2),  # a batch: no single token sequence
        ([5, 6, 7], (5, 6, 7), 1),  # token ids: the tokens themselves
        ([[5, 6]], (5, 6), 1),
        ([[5, 6], [7]], None, 2),
        ([[]], None, 1),  # an empty token list (the server refuses it): nothing to match
        ([2**32 - 1], (2**32 - 1,), 1),
    ],
)
def test_what_the_precise_scorer_keeps_of_a_completion(prompt, token_ids, count):
    req = _parse("/v1/completions", {"model": "m", "prompt": prompt})
    assert (req.prompt_token_ids, req.prompt_count, req.chat_input) == (token_ids, count, None)


@pytest.mark.parametrize(
    ("extra", "content", "expected"),
    [
        ({}, "hi", {"messages": [{"content": "hi", "role": "user"}]}),
        (  # the fields the server's chat template reads travel with the messages; the others do not
            {
                "add_generation_prompt": False,
                "continue_final_message": True,
                "tools": [{"type": "function"}],
                "chat_template_kwargs": {"x": 1},
                "temperature": 0.5,
                "stream": True,
            },
            "hi",
            {
                "add_generation_prompt": False,
                "chat_template_kwargs": {"x": 1},
                "continue_final_message": True,
                "messages": [{"content": "hi", "role": "user"}],
                "tools": [{"type": "function"}],
            },
        ),
        (
            {},
            [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            {"messages": [{"content": [{"text": "a", "type": "text"}, {"text": "b", "type": "text"}], "role": "user"}]},
        ),
        ({}, [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "x"}}], None),  # media
        ({"documents": [{"text": "d"}]}, "hi", None),  # template inputs /tokenize does not take
        ({"tools": [{"type": "function"}], "tool_choice": "none"}, "hi", None),
        (
            {"tools": [{"type": "function"}], "tool_choice": "auto"},
            "hi",
            {"messages": [{"content": "hi", "role": "user"}], "tools": [{"type": "function"}]},
        ),
    ],
)
def test_what_the_precise_scorer_keeps_of_a_chat(extra, content, expected):
    req = _parse("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": content}], **extra})
    assert (req.prompt_token_ids, req.prompt_count) == (None, 1)
    assert (json.loads(req.chat_input) if req.chat_input is not None else None) == expected


def test_chat_input_is_canonical():
    a = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    b = b'{"messages":[{"content":"hi","role":"user"}],"model":"m","temperature":1}'
    assert parse_request("/v1/chat/completions", {}, a, "1").chat_input == (
        parse_request("/v1/chat/completions", {}, b, "2").chat_input
    )


def test_token_prompt_prefix_stays_a_prefix():
    short = _parse("/v1/completions", {"model": "m", "prompt": [12, 34]}).prompt
    longer = _parse("/v1/completions", {"model": "m", "prompt": [12, 345]}).prompt
    assert not longer.startswith(short)


def test_chat_flattening_is_prefix_stable():
    turn1 = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    turn2 = [*turn1, {"role": "assistant", "content": "hello"}, {"role": "user", "content": "more"}]
    a = _parse("/v1/chat/completions", {"model": "m", "messages": turn1})
    b = _parse("/v1/chat/completions", {"model": "m", "messages": turn2})
    assert a.kind == "chat"
    assert a.prompt == "system\nbe brief\nuser\nhi\n"
    assert b.prompt.startswith(a.prompt)


def test_chat_content_parts_and_null_content():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "look "}, image, {"type": "text", "text": "here"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    req = _parse("/v1/chat/completions", {"model": "m", "messages": messages})
    assert req.prompt.startswith("user\nlook <image_url:")
    assert req.prompt.endswith(">here\nassistant\n\n")
    other = dict(image, image_url={"url": "data:image/png;base64,BBBB"})
    messages2 = [{"role": "user", "content": [{"type": "text", "text": "look "}, other]}]
    assert _parse("/v1/chat/completions", {"model": "m", "messages": messages2}).prompt != req.prompt


def test_max_completion_tokens_wins_and_headers_lowercased():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 5, "max_completion_tokens": 9}
    req = _parse("/v1/chat/completions", body, {"X-Session-ID": "s1", "X-Autonomic-Priority": "-2"})
    assert req.max_tokens == 9
    assert req.headers["x-session-id"] == "s1"
    assert req.session_id == "s1"
    assert req.priority == -2


@pytest.mark.parametrize("value", ["high", "", "1.5"])
def test_bad_priority_header_is_ignored(value):
    assert _parse("/v1/completions", {"model": "m", "prompt": "x"}, {"x-autonomic-priority": value}).priority == 0


def test_other_paths_need_no_body():
    req = parse_request("/v1/models", {"Accept": "*/*"}, b"", "r")
    assert (req.kind, req.prompt, req.model, req.headers) == ("other", "", "", {"accept": "*/*"})


@pytest.mark.parametrize(
    ("path", "body", "needle"),
    [
        ("/v1/completions", b"", "empty"),
        ("/v1/completions", b"{not json", "not valid JSON"),
        ("/v1/completions", b"\xff\xfe", "not valid JSON"),
        ("/v1/completions", b"[1, 2]", "must be a JSON object, got list"),
        ("/v1/completions", {"prompt": "x"}, "'model'"),
        ("/v1/completions", {"model": "", "prompt": "x"}, "'model'"),
        ("/v1/completions", {"model": 3, "prompt": "x"}, "'model'"),
        ("/v1/completions", {"model": "m"}, "'prompt' is required"),
        ("/v1/completions", {"model": "m", "prompt": 5}, "'prompt' must be"),
        ("/v1/completions", {"model": "m", "prompt": []}, "'prompt' must be"),
        ("/v1/completions", {"model": "m", "prompt": ["a", 1]}, "'prompt' must be"),
        ("/v1/completions", {"model": "m", "prompt": [True]}, "'prompt' must be"),
        ("/v1/completions", {"model": "m", "prompt": [1, -2]}, "[0, 2**32)"),
        ("/v1/completions", {"model": "m", "prompt": [[1], [2**32]]}, "[0, 2**32)"),
        ("/v1/completions", {"model": "m", "prompt": "x", "stream": "yes"}, "'stream'"),
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": -1}, "'max_tokens'"),
        ("/v1/completions", {"model": "m", "prompt": "x", "max_tokens": 2.5}, "'max_tokens'"),
        ("/v1/chat/completions", {"model": "m"}, "'messages' is required"),
        ("/v1/chat/completions", {"model": "m", "messages": []}, "'messages' is required"),
        ("/v1/chat/completions", {"model": "m", "messages": ["hi"]}, "'messages[0]' must be an object"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"content": "x"}]}, "'messages[0].role'"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": 3}]}, "content"),
        ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, "type"),
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            ".text",
        ),
    ],
)
def test_bad_requests(path, body, needle):
    with pytest.raises(BadRequestError) as err:
        _parse(path, body)
    assert needle in err.value.message


def test_a_nesting_bomb_is_a_bad_request():
    for bomb in (b"[" * 100_000, b'{"model":"m","prompt":' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}"):
        with pytest.raises(BadRequestError) as err:
            _parse("/v1/completions", bomb)
        assert "nested more than 128 levels deep" in err.value.message


def test_nesting_up_to_the_limit_parses_and_brackets_in_strings_do_not_count():
    def deep(n: int) -> object:
        return {"a": deep(n - 1)} if n else 1

    ok = _parse(
        "/v1/chat/completions", {"model": "m", "messages": [{"role": "u", "content": "[{" * 500}], "t": deep(127)}
    )
    assert ok.prompt == "u\n" + "[{" * 500 + "\n"
    with pytest.raises(BadRequestError):
        _parse("/v1/chat/completions", {"model": "m", "messages": [{"role": "u", "content": "x"}], "t": deep(128)})


def test_an_integer_too_long_to_convert_is_a_bad_request():
    body = b'{"model":"m","prompt":"x","max_tokens":' + b"9" * 5000 + b"}"
    with pytest.raises(BadRequestError) as err:
        _parse("/v1/completions", body)
    assert "not valid JSON" in err.value.message and "4300 digits" in err.value.message


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", b'{"model":"m","prompt":"a\\ud800b"}', "prompt"),
        ("/v1/completions", b'{"model":"m\\uDFFF","prompt":"a"}', "model"),
        ("/v1/chat/completions", b'{"model":"m","messages":[{"role":"user","content":"\\ud83d"}]}', "messages"),
        ("/v1/completions", b'{"model":"m","prompt":"a\xed\xa0\x80b"}', None),  # an encoded surrogate: not UTF-8
    ],
)
def test_unpaired_surrogates_are_a_bad_request(path, body, param):
    with pytest.raises(BadRequestError) as err:
        _parse(path, body)
    assert err.value.param == param


def test_escaped_surrogate_pairs_are_text():
    req = _parse("/v1/completions", b'{"model":"m","prompt":"smile \\ud83d\\ude00"}')
    assert req.prompt == "smile \U0001f600"


def _nest(n: int) -> object:
    return [_nest(n - 1)] if n else 1


@pytest.mark.parametrize(
    ("padding", "levels", "too_deep"),
    [
        ("a long prompt string", 127, False),
        ("a long prompt string", 128, True),
        ("a long token-id list", 127, False),  # more values than the walk looks at: brackets are counted first
        ("a long token-id list", 128, True),
        ("many messages", 127, False),
        ("many messages", 128, True),
    ],
)
def test_the_depth_limit_holds_whatever_the_size_of_the_body(padding, levels, too_deep):
    body: dict[str, object] = {"model": "m", "prompt": "word " * 50_000, "t": _nest(levels)}  # 1 + levels deep
    path = "/v1/completions"
    if padding == "a long token-id list":
        body["prompt"] = list(range(10_000))
    elif padding == "many messages":
        path = "/v1/chat/completions"
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}] * 3000, "t": _nest(levels)}
    if too_deep:
        with pytest.raises(BadRequestError, match="nested more than 128 levels deep"):
            _parse(path, body)
    else:
        assert _parse(path, body).model == "m"


@pytest.mark.parametrize(
    ("body", "prompt"),
    [
        (b'{"model":"m","prompt":"caf\\u00e9 \\ud83d\\ude00"}', "caf\u00e9 \U0001f600"),  # escaped pair: non-ASCII
        ('{"model":"m","prompt":"caf\u00e9 \U0001f600"}'.encode(), "caf\u00e9 \U0001f600"),  # raw UTF-8
        (b'{"model":"m","prompt":"plain \\\\ud800 text"}', "plain \\ud800 text"),  # an escaped backslash, ASCII
    ],
)
def test_text_that_only_looks_like_a_surrogate_escape_parses(body, prompt):
    assert _parse("/v1/completions", body).prompt == prompt


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=6),
    max_leaves=80,
)


@given(doc=_json_values, limit=st.integers(0, 8), budget=st.integers(0, 60))
def test_a_budgeted_depth_walk_is_right_or_says_it_does_not_know(doc, limit, budget):
    def depth(value: object) -> int:
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return 0 if children is None else 1 + max(map(depth, children), default=0)

    whole = _nests_deeper(doc, limit)
    assert whole == (depth(doc) > limit)
    assert _nests_deeper(doc, limit, budget) in (None, whole)


@pytest.mark.parametrize("body", [b"5", b"null", b"true", b'"[[[["', b"[1]"])
def test_a_body_that_is_not_an_object_is_a_bad_request(body):
    with pytest.raises(BadRequestError, match="must be a JSON object"):
        _parse("/v1/completions", body)
