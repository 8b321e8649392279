"""vLLM's HTTP routes for one twin server: OpenAI completions and chat (streaming and not), models,
health, metrics, tokenize/detokenize and reset_prefix_cache.

Why it exists: kept apart from server.py so the engine shell stays small; each handler validates its body
(oa.ApiError on anything bad), submits engine requests and shapes the answer exactly as vLLM does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sim.fleet import openai_api as oa

if TYPE_CHECKING:
    from sim.fleet.server import ModelServer, _Stream


def add_routes(app: web.Application, srv: ModelServer) -> None:
    api = _Api(srv)
    app.router.add_get("/health", api.health)
    app.router.add_get("/ping", api.health)
    app.router.add_get("/metrics", api.metrics)
    app.router.add_get("/v1/models", api.models)
    app.router.add_post("/v1/completions", api.completions)
    app.router.add_post("/v1/chat/completions", api.chat)
    app.router.add_post("/tokenize", api.tokenize)
    app.router.add_post("/detokenize", api.detokenize)
    app.router.add_post("/reset_prefix_cache", api.reset_prefix_cache)


def _sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


class _Api:
    def __init__(self, srv: ModelServer):
        self.srv = srv

    async def health(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def metrics(self, request: web.Request) -> web.Response:
        names = request.query.getall("name[]", [])
        return self.srv.metrics_response(names, request.headers.get("Accept-Encoding", ""))

    async def models(self, _: web.Request) -> web.Response:
        s = self.srv
        cards = [oa.model_card(s.model_name, s.profile.model, s.profile.max_model_len)]
        cards += [oa.model_card(n, f"/adapters/{n}", s.profile.max_model_len, s.model_name) for n in s.lora_names]
        return web.json_response({"object": "list", "data": cards})

    async def _body(self, request: web.Request) -> Any:
        from sim.fleet.server import loads

        return loads(await request.read())

    # ---- generation ------------------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        params = oa.parse_completion(await self._body(request))
        lora = self.srv.check_model(params.model)
        tok = self.srv.tokenizer
        prompt_ids = [p if isinstance(p, list) else tok.encode(p) for p in params.prompts]
        for ids in prompt_ids:
            if any(t < 0 or t >= tok.vocab_size for t in ids):
                raise oa.bad_request(f"token id out of vocabulary (size {tok.vocab_size})", "prompt")
        return await self._generate(request, params, prompt_ids, lora, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        params, messages = oa.parse_chat(body)
        add, cont = oa.chat_template_flags(body)
        lora = self.srv.check_model(params.model)
        try:
            text = self.srv.tokenizer.apply_chat_template(
                messages, add_generation_prompt=add, continue_final_message=cont
            )
        except (ValueError, TypeError) as exc:
            raise oa.bad_request(str(exc), "messages") from exc
        return await self._generate(request, params, [self.srv.tokenizer.encode(text)], lora, chat=True)

    async def _generate(
        self,
        request: web.Request,
        params: oa.GenerationParams,
        prompt_ids: list[list[int]],
        lora: str | None,
        chat: bool,
    ) -> web.StreamResponse:
        srv = self.srv
        # validate every choice before enqueueing any, so a bad one leaves nothing running
        for ids in prompt_ids:
            err = oa.context_error(srv.profile.max_model_len, len(ids), params.max_tokens)
            if err is not None:
                raise err
        streams = [srv.submit(ids, params, lora, j) for ids in prompt_ids for j in range(params.n)]
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        model = params.model or srv.model_name
        created = int(time.time())
        if params.stream:
            return await self._stream(request, params, streams, rid, model, created, chat)
        try:
            texts = await asyncio.gather(*(self._collect(s) for s in streams))
        except asyncio.CancelledError:
            for s in streams:
                srv._abort(s.req.request_id)
            raise
        choices = []
        for i, (s, text) in enumerate(zip(streams, texts, strict=True)):
            reason = s.req.finish_reason or "abort"
            choices.append(oa.chat_choice(i, text, reason) if chat else oa.completion_choice(i, text, reason))
        body = oa.envelope("chat.completion" if chat else "text_completion", rid, model, created, choices)
        body["usage"] = self._usage(streams, params.n)
        return web.json_response(body)

    async def _collect(self, stream: _Stream) -> str:
        out: list[int] = []
        while (toks := await stream.queue.get()) is not None:
            out.extend(toks)
        return self.srv.tokenizer.decode(out)

    @staticmethod
    def _usage(streams: list[_Stream], n: int) -> dict[str, Any]:
        """vLLM counts each prompt once per request: the n samples of a prompt share it."""
        firsts = streams[::n]
        prompt = sum(s.req.num_prompt_tokens for s in firsts)
        cached = sum(s.req.cached_prompt_tokens for s in firsts)
        completion = sum(s.req.num_output_tokens for s in streams)
        return oa.usage(prompt, completion, cached)

    async def _stream(
        self,
        request: web.Request,
        params: oa.GenerationParams,
        streams: list[_Stream],
        rid: str,
        model: str,
        created: int,
        chat: bool,
    ) -> web.StreamResponse:
        srv, tok = self.srv, self.srv.tokenizer
        kind = "chat.completion.chunk" if chat else "text_completion"
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        queue: asyncio.Queue[tuple[int, list[int] | None]] = asyncio.Queue()

        async def pump(i: int, s: _Stream) -> None:
            while (toks := await s.queue.get()) is not None:
                queue.put_nowait((i, toks))
            queue.put_nowait((i, None))

        pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
        try:
            if chat:
                first = [oa.chat_delta(i, {"role": "assistant", "content": ""}, None) for i in range(len(streams))]
                await resp.write(_sse(oa.envelope(kind, rid, model, created, first)))
            open_choices = len(streams)
            while open_choices:
                items = [await queue.get()]
                while not queue.empty():  # merge what piled up, as vLLM's output collector does
                    items.append(queue.get_nowait())
                merged: dict[int, list[int]] = {}
                done: set[int] = set()
                for i, toks in items:
                    if toks is None:
                        done.add(i)
                    else:
                        merged.setdefault(i, []).extend(toks)
                choices = []
                for i in sorted(set(merged) | done):
                    text = tok.decode(merged.get(i, []))
                    reason = (streams[i].req.finish_reason or "abort") if i in done else None
                    if chat:
                        choices.append(oa.chat_delta(i, {"content": text}, reason))
                    else:
                        choices.append(oa.completion_choice(i, text, reason))
                open_choices -= len(done)
                chunk = oa.envelope(kind, rid, model, created, choices)
                if params.include_usage and params.continuous_usage:
                    chunk["usage"] = self._usage(streams, params.n)
                await resp.write(_sse(chunk))
            if params.include_usage:
                final = oa.envelope(kind, rid, model, created, [])
                final["usage"] = self._usage(streams, params.n)
                await resp.write(_sse(final))
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            for s in streams:
                srv._abort(s.req.request_id)
            raise
        finally:
            for p in pumps:
                p.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await p
        return resp

    # ---- tokenizer endpoints -----------------------------------------------------------------------------
    async def tokenize(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise oa.bad_request("request body must be a JSON object")
        self.srv.check_model(body.get("model"))
        tok = self.srv.tokenizer
        if "messages" in body:  # vLLM's TokenizeChatRequest: the chat template applied as for a chat completion
            if not isinstance(body["messages"], list):
                raise oa.bad_request("'messages' must be a list", "messages")
            add, cont = oa.chat_template_flags(body)
            try:
                text = tok.apply_chat_template(body["messages"], add_generation_prompt=add, continue_final_message=cont)
            except (ValueError, TypeError) as exc:
                raise oa.bad_request(str(exc), "messages") from exc
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise oa.bad_request("either 'prompt' (string) or 'messages' is required", "prompt")
        ids = tok.encode(text)
        strs = [tok.id_to_piece(i) for i in ids] if body.get("return_token_strs") else None
        return web.json_response(
            {
                "count": len(ids),
                "max_model_len": self.srv.profile.max_model_len,
                "tokens": ids,
                "token_strs": strs,
            }
        )

    async def detokenize(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        if not isinstance(body, dict):
            raise oa.bad_request("request body must be a JSON object")
        self.srv.check_model(body.get("model"))
        ids = body.get("tokens")
        tok = self.srv.tokenizer
        if not isinstance(ids, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise oa.bad_request("'tokens' must be a list of integers", "tokens")
        if any(t < 0 or t >= tok.vocab_size for t in ids):
            raise oa.bad_request(f"token id out of vocabulary (size {tok.vocab_size})", "tokens")
        return web.json_response({"prompt": tok.decode(ids)})

    async def reset_prefix_cache(self, _: web.Request) -> web.Response:
        if not self.srv.engine.reset_prefix_cache():
            raise oa.ApiError(409, "cannot reset the prefix cache while requests are running", "ConflictError")
        self.srv._wake.set()
        return web.Response(status=200)
