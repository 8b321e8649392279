"""Endpoints that the real peer routers call on their workers beyond the plain OpenAI API.

Why it exists: the routing benchmark puts sglang-router (`smg launch`) and vllm-router in front of the twin, and
a fair comparison needs each peer to work as it would against real engines. Observed with sglang-router 0.3.2
and vllm-router 0.1.17 (docs/peers.md has the full probe list and where each shape comes from):

- sglang-router registers a worker after `GET /health` by reading `GET /server_info` (labels `model_path`,
  `served_model_name`) and `GET /model_info` (`model_type`, `architectures`); its power-of-two policy polls
  `GET /get_load`. These are SGLang's own endpoints, so they answer in SGLang's shapes
  (python/sglang/srt/entrypoints/http_server.py: `model_info`, `get_server_info`, `get_load`), with the
  deprecated `/get_model_info` and `/get_server_info` aliases.
- vllm-router (cache_aware and kv_aware) calls `POST /v1/completions/render` or
  `POST /v1/chat/completions/render` on every worker before routing, and routes on the returned token ids;
  on a 404 it falls back to `POST /tokenize`. These answer as vLLM does
  (vllm/entrypoints/serve/render/: a list of GenerateRequest for completions, one GenerateRequest for chat).

`model_path` names a local directory that exists but holds no tokenizer files. sglang-router loads a
tokenizer from `model_path`; given a Hugging Face id it would try to download one from the hub, which this
project never lets a test do. A local directory makes that attempt fail on the spot, without any traffic.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sim.fleet import openai_api as oa

if TYPE_CHECKING:
    from sim.fleet.server import ModelServer

# What /version, /server_info and /model_info report: the engine the twin imitates is vLLM, the version string
# says that it is the twin.
TWIN_VERSION = "0.0.0+autonomic-twin"
MODEL_PATH = str(Path(__file__).resolve().parent)
ARCHITECTURES = ["LlamaForCausalLM"]
MODEL_TYPE = "llama"

# vLLM's RequestOutputKind values (CUMULATIVE is 0), as SamplingParams serialises them.
_OUTPUT_DELTA, _OUTPUT_FINAL_ONLY = 1, 2


def add_compat_routes(app: web.Application, server: ModelServer) -> None:
    """Register the peer-facing endpoints on one twin server's aiohttp application."""
    routes = _CompatRoutes(server)
    app.router.add_get("/model_info", routes.model_info)
    app.router.add_get("/get_model_info", routes.model_info)
    app.router.add_get("/server_info", routes.server_info)
    app.router.add_get("/get_server_info", routes.server_info)
    app.router.add_get("/get_load", routes.get_load)
    app.router.add_get("/version", routes.version)
    app.router.add_post("/v1/completions/render", routes.render_completions)
    app.router.add_post("/v1/chat/completions/render", routes.render_chat)


def _error(err: oa.ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status)


class _CompatRoutes:
    def __init__(self, server: ModelServer) -> None:
        self.srv = server

    # ---- SGLang's discovery endpoints -----------------------------------------------------------------
    async def model_info(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "model_path": MODEL_PATH,
                "tokenizer_path": MODEL_PATH,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "model_type": MODEL_TYPE,
                "architectures": ARCHITECTURES,
            }
        )

    async def server_info(self, _: web.Request) -> web.Response:
        """SGLang's server_args, scheduler info, internal states and version, in one flat object."""
        srv, prof = self.srv, self.srv.profile
        max_total_tokens = prof.num_gpu_blocks * prof.block_size
        return web.json_response(
            {
                "model_path": MODEL_PATH,
                "tokenizer_path": MODEL_PATH,
                "served_model_name": srv.model_name,
                "host": "127.0.0.1",
                "port": srv.http_port,
                "tp_size": 1,
                "dp_size": 1,
                "page_size": prof.block_size,
                "context_length": prof.max_model_len,
                "max_running_requests": prof.max_num_seqs,
                "max_total_tokens": max_total_tokens,
                "chunked_prefill_size": prof.max_num_batched_tokens,
                "max_prefill_tokens": prof.max_num_batched_tokens,
                "schedule_policy": "fcfs",
                "disable_radix_cache": False,
                "enable_lora": bool(srv.lora_names),
                "max_loras_per_batch": prof.max_loras,
                "lora_paths": list(srv.lora_names) or None,
                "max_total_num_tokens": max_total_tokens,
                "max_req_input_len": prof.max_model_len - 1,
                "internal_states": [
                    {"max_running_requests": prof.max_num_seqs, "max_total_num_tokens": max_total_tokens}
                ],
                "version": TWIN_VERSION,
            }
        )

    async def get_load(self, _: web.Request) -> web.Response:
        """SGLang's per-DP-rank load: requests held, those waiting, and tokens held in KV plus queued prompts."""
        engine, prof = self.srv.engine, self.srv.profile
        waiting = list(engine.waiting)
        kv_tokens = round(engine.kv_usage() * prof.num_gpu_blocks * prof.block_size)
        queued_tokens = sum(r.num_prompt_tokens for r in waiting)
        return web.json_response(
            [
                {
                    "dp_rank": 0,
                    "num_reqs": len(engine.running) + len(waiting),
                    "num_waiting_reqs": len(waiting),
                    "num_tokens": kv_tokens + queued_tokens,
                }
            ]
        )

    async def version(self, _: web.Request) -> web.Response:
        return web.json_response({"version": TWIN_VERSION})

    # ---- vLLM's render endpoints ----------------------------------------------------------------------
    async def render_completions(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            params = oa.parse_completion(body)
            self._check_model(params.model)
            tok = self.srv.tokenizer
            out = []
            for prompt in params.prompts:
                ids = list(prompt) if isinstance(prompt, list) else tok.encode(prompt)
                max_tokens = self._max_tokens(len(ids), params.max_tokens)
                out.append(self._generate_request("cmpl", ids, body, params, max_tokens))
        except oa.ApiError as err:
            return _error(err)
        return web.json_response(out)

    async def render_chat(self, request: web.Request) -> web.Response:
        try:
            body = await _json_body(request)
            params, messages = oa.parse_chat(body)
            self._check_model(params.model)
            add, cont = oa.chat_template_flags(body)
            try:
                text = self.srv.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=add, continue_final_message=cont
                )
            except (ValueError, TypeError) as exc:
                raise oa.bad_request(str(exc), "messages") from exc
            ids = self.srv.tokenizer.encode(text)
            max_tokens = self._max_tokens(len(ids), params.max_tokens)
            out = self._generate_request("chatcmpl", ids, body, params, max_tokens)
        except oa.ApiError as err:
            return _error(err)
        return web.json_response(out)

    def _check_model(self, model: str | None) -> None:
        if model is None or model == self.srv.model_name or model in self.srv.lora_names:
            return
        raise oa.ApiError(404, f"The model `{model}` does not exist.", "NotFoundError", "model")

    def _max_tokens(self, prompt_len: int, requested: int | None) -> int:
        """vLLM's get_max_tokens: what the context leaves, capped by the request; refuses what cannot fit."""
        limit = self.srv.profile.max_model_len
        err = oa.context_error(limit, prompt_len, requested)
        if err is not None:
            raise err
        room = limit - prompt_len
        return room if requested is None else min(requested, room)

    def _generate_request(
        self, prefix: str, ids: list[int], body: dict[str, Any], params: oa.GenerationParams, max_tokens: int
    ) -> dict[str, Any]:
        """One vLLM GenerateRequest (vllm/entrypoints/serve/disagg/protocol.py), as model_dump() writes it."""
        return {
            "request_id": f"{prefix}-{uuid.uuid4().hex}",
            "token_ids": ids,
            "features": None,
            "sampling_params": _sampling_params(body, params, max_tokens),
            "model": params.model,
            "stream": params.stream,
            "stream_options": body.get("stream_options") if params.stream else None,
            "cache_salt": body.get("cache_salt"),
            "priority": body.get("priority", 0),
            "kv_transfer_params": None,
        }


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise oa.bad_request(f"Invalid JSON body: {exc}") from exc
    if not isinstance(body, dict):
        raise oa.bad_request("request body must be a JSON object")
    return body


def _sampling_params(body: dict[str, Any], params: oa.GenerationParams, max_tokens: int) -> dict[str, Any]:
    """The fields of vLLM's SamplingParams a router may read, with vLLM's defaults where the request is silent."""
    stop = body.get("stop")
    return {
        "n": params.n,
        "presence_penalty": body.get("presence_penalty") or 0.0,
        "frequency_penalty": body.get("frequency_penalty") or 0.0,
        "repetition_penalty": body.get("repetition_penalty") or 1.0,
        "temperature": 1.0 if body.get("temperature") is None else body["temperature"],
        "top_p": 1.0 if body.get("top_p") is None else body["top_p"],
        "top_k": body.get("top_k") or 0,
        "min_p": body.get("min_p") or 0.0,
        "seed": body.get("seed"),
        "stop": [stop] if isinstance(stop, str) else list(stop or []),
        "stop_token_ids": list(body.get("stop_token_ids") or []),
        "ignore_eos": params.ignore_eos,
        "max_tokens": max_tokens,
        "min_tokens": params.min_tokens,
        "logprobs": _logprobs(body),
        "prompt_logprobs": body.get("prompt_logprobs"),
        "skip_special_tokens": body.get("skip_special_tokens", True),
        "spaces_between_special_tokens": body.get("spaces_between_special_tokens", True),
        "include_stop_str_in_output": body.get("include_stop_str_in_output", False),
        "output_kind": _OUTPUT_DELTA if params.stream else _OUTPUT_FINAL_ONLY,
    }


def _logprobs(body: dict[str, Any]) -> int | None:
    """Completions send `logprobs: N`; chat sends `logprobs: true` with `top_logprobs: N`."""
    value = body.get("logprobs")
    if value is True:
        top = body.get("top_logprobs")
        return top if isinstance(top, int) and not isinstance(top, bool) else 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None
