"""OpenAI-compatible request validation and response shapes, as vLLM's OpenAI server produces them.

Why it exists: routers and clients parse these bodies, so field names, defaults and error objects must be
vLLM's (vllm/entrypoints/openai/engine/protocol.py: ErrorResponse{error: ErrorInfo}, UsageInfo with
prompt_tokens_details.cached_tokens, ModelCard). Pure functions; the aiohttp shell in server.py calls them.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any


class ApiError(Exception):
    """An error answered as vLLM does: `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status: int, message: str, err_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.err_type,
                "param": self.param,
                "code": self.status,
            }
        }


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "BadRequestError", param)


@dataclass(frozen=True)
class GenerationParams:
    """What the engine needs from a completions or chat request, after validation."""

    model: str | None
    prompts: list[str | list[int]]  # text, or token ids (completions only)
    max_tokens: int | None  # None: up to the context limit (chat default)
    min_tokens: int
    ignore_eos: bool
    n: int
    stream: bool
    include_usage: bool
    continuous_usage: bool
    request_id: str | None


def _int_field(body: dict[str, Any], name: str, default: int | None, minimum: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"'{name}' must be an integer, got {type(value).__name__}", name)
    if value < minimum:
        raise bad_request(f"'{name}' must be at least {minimum}, got {value}", name)
    return value


def _common(body: dict[str, Any], prompts: list[str | list[int]], max_tokens: int | None) -> GenerationParams:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", "stream")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise bad_request("'stream_options' must be an object", "stream_options")
    if opts is not None and not stream:
        raise bad_request("Stream options can only be defined when `stream=True`.", "stream_options")
    opts = opts or {}
    n = _int_field(body, "n", 1, 1)
    assert n is not None
    return GenerationParams(
        model=model,
        prompts=prompts,
        max_tokens=max_tokens,
        min_tokens=_int_field(body, "min_tokens", 0, 0) or 0,
        ignore_eos=bool(body.get("ignore_eos", False)),
        n=n,
        stream=stream,
        include_usage=bool(opts.get("include_usage", False)),
        continuous_usage=bool(opts.get("continuous_usage_stats", False)),
        request_id=body.get("request_id") if isinstance(body.get("request_id"), str) else None,
    )


def parse_completion(body: Any) -> GenerationParams:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    prompt = body.get("prompt")
    prompts: list[str | list[int]]
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        prompts = [list(prompt)]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = list(prompt)
    elif isinstance(prompt, list) and prompt and all(isinstance(p, list) for p in prompt):
        if not all(p and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt):
            raise bad_request("'prompt' token lists must hold integers", "prompt")
        prompts = [list(p) for p in prompt]
    elif prompt is None:
        raise bad_request("Field required: 'prompt'", "prompt")
    else:
        raise bad_request("'prompt' must be a string, a list of strings or a list of token ids", "prompt")
    if any(p == "" for p in prompts):
        raise bad_request("Prompt cannot be empty", "prompt")
    return _common(body, prompts, _int_field(body, "max_tokens", 16, 0))


def parse_chat(body: Any) -> tuple[GenerationParams, list[dict[str, Any]]]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("'messages' must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad_request(f"messages[{i}] must be an object with a string 'role'", "messages")
    max_tokens = _int_field(body, "max_completion_tokens", None, 0)
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens", None, 0)
    return _common(body, [], max_tokens), messages


def chat_template_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    """(add_generation_prompt, continue_final_message) of a chat or chat-form /tokenize body, defaults and the
    refusal of both as vLLM's ChatCompletionRequest and TokenizeChatRequest have them."""
    add = body.get("add_generation_prompt", True)
    cont = body.get("continue_final_message", False)
    for name, value in (("add_generation_prompt", add), ("continue_final_message", cont)):
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be a boolean", name)
    if add and cont:
        raise bad_request("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    return add, cont


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {
        "index": index,
        "text": text,
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
        "prompt_logprobs": None,
    }


def chat_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {
        "index": index,
        "message": {"role": "assistant", "content": text, "reasoning_content": None, "tool_calls": []},
        "logprobs": None,
        "finish_reason": finish_reason,
        "stop_reason": None,
    }


def chat_delta(index: int, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "index": index,
        "delta": delta,
        "logprobs": None,
        "finish_reason": finish_reason,
    }
    if finish_reason is not None:
        choice["stop_reason"] = None
    return choice


def envelope(kind: str, rid: str, model: str, created: int, choices: list[dict[str, Any]]) -> dict[str, Any]:
    """kind: text_completion | chat.completion | chat.completion.chunk."""
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": choices}


def model_card(model_id: str, root: str, max_model_len: int, parent: str | None = None) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": model_id,
        "object": "model",
        "created": now,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": max_model_len,
        "permission": [
            {
                "id": new_id("modelperm"),
                "object": "model_permission",
                "created": now,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


def context_error(max_model_len: int, prompt_tokens: int, max_tokens: int | None) -> ApiError | None:
    """vLLM's refusal of a prompt (plus requested completion) longer than the context."""
    if prompt_tokens > max_model_len:
        return bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, your request has "
            f"{prompt_tokens} input tokens. Please reduce the length of the input messages.",
            "input_tokens",
        )
    if max_tokens is not None and prompt_tokens + max_tokens > max_model_len:
        return bad_request(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in the "
            "completion). Please reduce the length of the messages or completion.",
            "max_tokens",
        )
    return None
