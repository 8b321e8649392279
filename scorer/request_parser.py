"""OpenAI request bodies -> `LLMRequest`, checked where they enter the picker.

Why it exists: the ext_proc shell receives raw bytes; scheduling needs the model, the prompt text whose prefix
decides cache affinity, and a few knobs (stream, max tokens, priority). This module turns `/v1/completions` and
`/v1/chat/completions` bodies into that, and rejects malformed ones with `BadRequestError` so the shell can answer
400 with an OpenAI-style error before any endpoint sees the request. Every other path (`/v1/models`, `/health`,
...) becomes kind "other" with an empty prompt: the picker may route it to any ready endpoint.

Prompt flattening is prefix-stable: a chat is rendered message by message as ``<role>\\n<content>\\n`` so that the
next turn of a conversation extends the text of the previous one; token-id prompts become ``"<id> <id> ... "``.

For the precise prefix scorer, which matches the tokens the server itself computes, the parser also keeps what
determines them: a single token-id prompt as is (`prompt_token_ids`), and for a chat the fields of the body that
the server's chat template reads (`CHAT_TEMPLATE_FIELDS`, as `chat_fields`), unless a message holds
non-text parts (images, audio: their tokens depend on the server's media processing, not on a `/tokenize` call
worth making) or the body uses template inputs that `/tokenize` does not take. A completions batch (several
prompts) keeps only its count: no single token sequence stands for it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from scorer.types import LLMRequest, RequestKind

PRIORITY_HEADER = "x-autonomic-priority"
# the chat-completion fields vLLM's chat form of /tokenize (TokenizeChatRequest) also takes and that change the tokens
CHAT_TEMPLATE_FIELDS = (
    "messages",
    "add_generation_prompt",
    "continue_final_message",
    "add_special_tokens",
    "chat_template",
    "chat_template_kwargs",
    "tools",
)
_TOKEN_ID_LIMIT = 2**32  # ids are matched as unsigned 32-bit integers, as the servers' KV events carry them
_PATH_KINDS: dict[str, RequestKind] = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}
# Nesting a body may have: far beyond any OpenAI body (a tool's JSON schema nests ~10-20 levels), far below the ~1000
# at which json.loads, json.dumps (the precise scorer's cache key) or a walk over the document would hit the
# interpreter's recursion limit. A deeper body is the client's fault (a nesting bomb): 400.
MAX_JSON_DEPTH = 128
# values a depth check may visit before it counts the body's brackets first: a body of long prompt strings has a
# handful of values (checked in microseconds), one with long token-id lists or many messages may have far more
_DEPTH_WALK_BUDGET = 4096


class BadRequestError(ValueError):
    """The body cannot be scheduled; `message` is safe to show to the client (it names the offending field)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param


def request_kind(path: str) -> RequestKind:
    """The kind of request a path carries; the query string and a trailing slash are ignored."""
    bare = path.split("?", 1)[0].rstrip("/") or "/"
    return _PATH_KINDS.get(bare, "other")


def parse_request(path: str, headers: Mapping[str, str], body: bytes, request_id: str) -> LLMRequest:
    """Parse one HTTP request into what scheduling needs; raises `BadRequestError` on a malformed inference body."""
    lower = {k.lower(): v for k, v in headers.items()}
    kind = request_kind(path)
    priority = _priority(lower)
    if kind == "other":
        return LLMRequest(
            request_id=request_id, model="", kind="other", headers=lower, priority=priority, body_size=len(body)
        )
    text = _json_text(body)
    doc = _json_object(text)
    model = doc.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestError("'model' is required and must be a non-empty string", "model")
    token_ids: tuple[int, ...] | None = None
    chat_fields: dict[str, Any] | None = None
    count = 1
    if kind == "completions":
        prompt, token_ids, count = _completion_prompt(doc)
    else:
        prompt = _chat_prompt(doc)
        chat_fields = _chat_fields(doc)
    stream = doc.get("stream", False)
    if not isinstance(stream, bool):
        raise BadRequestError("'stream' must be a boolean", "stream")
    max_tokens = _optional_count(doc, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _optional_count(doc, "max_tokens")
    # an unpaired surrogate is not ASCII, and `str.isascii` costs nothing: only a non-ASCII text is scanned for a
    # \uXXXX escape of a surrogate (the scan of a long body costs more than the rest of the parse)
    if not (model.isascii() and prompt.isascii()) and ("\\ud" in text or "\\uD" in text):
        _check_unicode(model, "model")
        _check_unicode(prompt, "prompt" if kind == "completions" else "messages")
    return LLMRequest(
        request_id=request_id,
        model=model,
        kind=kind,
        prompt=prompt,
        headers=lower,
        max_tokens=max_tokens,
        stream=stream,
        priority=priority,
        body_size=len(body),
        prompt_token_ids=token_ids,
        chat_fields=chat_fields,
        prompt_count=count,
    )


def _json_text(body: bytes) -> str:
    """The body as text, decoded as `json.loads` would (UTF-8, or UTF-16/32 by their byte patterns)."""
    if not body.strip():
        raise BadRequestError("request body is empty; expected a JSON object")
    try:
        return body.decode(json.detect_encoding(body))  # strict: an encoded surrogate is not UTF-8
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None


def _json_object(text: str) -> dict[str, Any]:
    too_deep = BadRequestError(f"request body is not valid JSON: nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        doc = json.loads(text)
    except RecursionError:  # a nesting bomb, deeper than the interpreter's stack allows
        raise too_deep from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise BadRequestError(f"request body is not valid JSON: {exc}") from None
    # a walk over a document of few values (long prompt strings) is cheaper than a scan of its text; a larger one is
    # walked only if it has more brackets than the limit (two C scans)
    deep = _nests_deeper(doc, MAX_JSON_DEPTH, _DEPTH_WALK_BUDGET)
    if deep is None:
        deep = text.count("[") + text.count("{") > MAX_JSON_DEPTH and bool(_nests_deeper(doc, MAX_JSON_DEPTH))
    if deep:
        raise too_deep
    if not isinstance(doc, dict):
        raise BadRequestError(f"request body must be a JSON object, got {type(doc).__name__}")
    return doc


def _nests_deeper(doc: Any, limit: int, budget: int | None = None) -> bool | None:
    """Whether the arrays and objects of a parsed document nest more than `limit` deep (iteratively: no recursion);
    None if that is not known after looking at `budget` values. A scalar nests 0 deep."""
    stack = [(doc, 1)] if isinstance(doc, dict | list) else []
    seen = 0
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        seen += len(children)
        if budget is not None and seen > budget:
            return None
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _check_unicode(value: str, param: str) -> None:
    """An unpaired surrogate escape (`"\\ud800"`) decodes to a str with no UTF-8 form: nothing could hash it."""
    try:
        value.encode()
    except UnicodeEncodeError:
        raise BadRequestError(f"'{param}' is not valid Unicode: it holds an unpaired surrogate escape", param) from None


def _priority(headers: Mapping[str, str]) -> int:
    raw = headers.get(PRIORITY_HEADER, "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        return 0  # a bad hint is ignored rather than failing the request


def _optional_count(doc: Mapping[str, Any], key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequestError(f"'{key}' must be a non-negative integer", key)
    return value


def _is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in value)


def _checked_ids(ids: list[int]) -> tuple[int, ...]:
    if not all(0 <= t < _TOKEN_ID_LIMIT for t in ids):
        raise BadRequestError("'prompt' token ids must be integers in [0, 2**32)", "prompt")
    return tuple(ids)


def _tokens_text(ids: list[int]) -> str:
    return "".join(f"{t} " for t in ids)


def _completion_prompt(doc: Mapping[str, Any]) -> tuple[str, tuple[int, ...] | None, int]:
    """(flattened text, the token ids of a single token-id prompt or None, number of prompts)."""
    if "prompt" not in doc:
        raise BadRequestError("'prompt' is required for /v1/completions", "prompt")
    prompt = doc["prompt"]
    if isinstance(prompt, str):
        return prompt, None, 1
    if _is_token_list(prompt) and prompt:
        return _tokens_text(prompt), _checked_ids(prompt), 1
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return "\n".join(prompt), None, len(prompt)
        if all(_is_token_list(p) for p in prompt):
            ids = [_checked_ids(p) for p in prompt]
            single = ids[0] if len(ids) == 1 and ids[0] else None
            return "\n".join(_tokens_text(p) for p in prompt), single, len(prompt)
    raise BadRequestError(
        "'prompt' must be a string, a non-empty list of strings, a list of token ids or a list of token-id lists",
        "prompt",
    )


def _chat_prompt(doc: Mapping[str, Any]) -> str:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError(
            "'messages' is required for /v1/chat/completions and must be a non-empty list", "messages"
        )
    parts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise BadRequestError(f"'messages[{i}]' must be an object", "messages")
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise BadRequestError(f"'messages[{i}].role' must be a non-empty string", "messages")
        parts.append(f"{role}\n{_content_text(message.get('content'), i)}\n")
    return "".join(parts)


def _chat_fields(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The template-relevant fields (not copied); None when the chat form of /tokenize cannot reproduce the
    server's prompt: a message carries non-text parts, or the body uses template inputs /tokenize does not take
    (`documents`; `tool_choice: "none"`, with which a server may leave `tools` out of the template)."""
    if doc.get("documents") or (doc.get("tool_choice") == "none" and doc.get("tools")):
        return None
    for message in doc["messages"]:
        content = message.get("content")
        if isinstance(content, list) and any(part.get("type") != "text" for part in content):
            return None
    return {k: doc[k] for k in CHAT_TEMPLATE_FIELDS if k in doc}


def _content_text(content: Any, i: int) -> str:
    if content is None:  # e.g. an assistant turn that only carries tool calls
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequestError(f"'messages[{i}].content' must be a string, a list of parts or null", "messages")
    out: list[str] = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise BadRequestError(f"'messages[{i}].content[{j}]' must be an object with a 'type'", "messages")
        if part["type"] == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise BadRequestError(f"'messages[{i}].content[{j}].text' must be a string", "messages")
            out.append(text)
        else:  # images, audio...: a short digest keeps different media apart without copying megabytes of base64
            canon = json.dumps(part, sort_keys=True, separators=(",", ":")).encode()
            out.append(f"<{part['type']}:{hashlib.sha256(canon).hexdigest()[:16]}>")
    return "".join(out)
