"""The peer-facing endpoints of one twin server, checked without the peers (they run in test_peers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sim.fleet import compat
from sim.fleet.engine import Engine, EngineRequest
from sim.fleet.profile import load_profile
from sim.fleet.tokenizer import get_tokenizer


class _Server:
    """The attributes compat.py reads, without HTTP listeners or an engine loop."""

    def __init__(self) -> None:
        self.profile = load_profile(num_gpu_blocks=256)
        self.model_name = "twin-model"
        self.tokenizer = get_tokenizer()
        self.engine = Engine(self.profile)
        self.http_port = 8000
        self.lora_names = ["sql-adapter"]


def _is_dir(path: str) -> bool:
    return Path(path).is_dir()


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient[Any, Any], _Server]]:
    srv = _Server()
    app = web.Application()
    compat.add_compat_routes(app, srv)  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as c:
        yield c, srv


async def test_completions_render_is_a_list_of_generate_requests(client: Any) -> None:
    c, srv = client
    r = await c.post("/v1/completions/render", json={"model": "twin-model", "prompt": ["hello there", "general"]})
    assert r.status == 200
    body = await r.json()
    assert [item["token_ids"] for item in body] == [
        srv.tokenizer.encode("hello there"),
        srv.tokenizer.encode("general"),
    ]
    first = body[0]
    assert first["request_id"].startswith("cmpl-")
    assert first["model"] == "twin-model" and first["stream"] is False and first["features"] is None
    assert first["sampling_params"]["max_tokens"] == 16  # the completions default
    assert first["sampling_params"]["output_kind"] == 2


async def test_completions_render_accepts_token_ids(client: Any) -> None:
    c, _ = client
    r = await c.post("/v1/completions/render", json={"prompt": [5, 6, 7], "max_tokens": 3})
    assert (await r.json())[0]["token_ids"] == [5, 6, 7]


async def test_chat_render_is_one_generate_request_with_the_template(client: Any) -> None:
    c, srv = client
    messages = [{"role": "user", "content": "hi"}]
    r = await c.post("/v1/chat/completions/render", json={"model": "sql-adapter", "messages": messages})
    assert r.status == 200
    body = await r.json()
    assert body["request_id"].startswith("chatcmpl-")
    assert body["token_ids"] == srv.tokenizer.encode(srv.tokenizer.apply_chat_template(messages))
    # chat without max_tokens: whatever the context leaves
    assert body["sampling_params"]["max_tokens"] == srv.profile.max_model_len - len(body["token_ids"])


@pytest.mark.parametrize("path", ["/v1/completions/render", "/v1/chat/completions/render"])
async def test_render_errors_are_openai_error_objects(client: Any, path: str) -> None:
    c, _ = client
    r = await c.post(path, data=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status == 400
    err = (await r.json())["error"]
    assert err["type"] == "BadRequestError" and err["code"] == 400 and err["param"] is None
    assert isinstance(err["message"], str)
    r = await c.post(path, json={"model": "nope", "prompt": "x", "messages": [{"role": "user", "content": "x"}]})
    assert r.status == 404
    assert (await r.json())["error"]["type"] == "NotFoundError"


async def test_render_refuses_a_prompt_longer_than_the_context(client: Any) -> None:
    c, srv = client
    r = await c.post("/v1/completions/render", json={"prompt": [1] * (srv.profile.max_model_len + 1)})
    assert r.status == 400


async def test_sglang_discovery_shapes(client: Any) -> None:
    c, srv = client
    for path in ("/server_info", "/get_server_info"):
        info = await (await c.get(path)).json()
        assert info["served_model_name"] == "twin-model"
        assert _is_dir(info["model_path"])  # a local path: peers never go to the hub for a tokenizer
        assert info["page_size"] == srv.profile.block_size
    for path in ("/model_info", "/get_model_info"):
        info = await (await c.get(path)).json()
        assert info["is_generation"] is True and info["architectures"]
    assert "version" in await (await c.get("/version")).json()


async def test_get_load_counts_running_waiting_and_tokens(client: Any) -> None:
    c, srv = client
    assert await (await c.get("/get_load")).json() == [
        {"dp_rank": 0, "num_reqs": 0, "num_waiting_reqs": 0, "num_tokens": 0}
    ]
    srv.engine.add_request(EngineRequest("a", list(range(40)), [1, 2], 0.0))
    srv.engine.add_request(EngineRequest("b", list(range(40, 60)), [1], 0.0))
    load = (await (await c.get("/get_load")).json())[0]
    assert load == {"dp_rank": 0, "num_reqs": 2, "num_waiting_reqs": 2, "num_tokens": 60}
