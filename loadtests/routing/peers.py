"""The real peer routers (sglang-router, vllm-router) as child processes in front of a fleet, for benchmarks.

Why it exists: the routing benchmark puts each peer in front of its own fresh fleet twin, launched exactly as
tests/integration/test_peers.py and docs/peers.md do (each from its own venv under `.venv-peers/`, installed by
`make peers`; loopback only; its own process group, killed afterwards), and must know when the peer really proxies
(it may answer `/health` before its workers are registered). A missing venv is a reason to skip, never an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from harness.child import Child, ChildError
from harness.netutil import free_port
from harness.probes import NotReady

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(os.environ.get("PEERS_DIR", REPO / ".venv-peers"))

# benchmark name -> (venv, binary, policy)
PEERS: dict[str, tuple[str, str, str]] = {
    "sglang-cache-aware": ("sglang", "smg", "cache_aware"),
    "vllm-router-cache-aware": ("vllm", "vllm-router", "cache_aware"),
    "vllm-router-kv-aware": ("vllm", "vllm-router", "kv_aware"),
}


class PeerError(RuntimeError):
    pass


def peer_binary(name: str) -> Path:
    venv, binary, _ = PEERS[name]
    return PEERS_DIR / venv / "bin" / binary


def missing_reason(name: str) -> str | None:
    """Why the peer cannot run here, or None."""
    path = peer_binary(name)
    return None if path.exists() else f"{path} missing: run `make peers`"


def peer_command(
    name: str, port: int, workers: list[str], *, model: str, block_size: int, kv_endpoints: list[str]
) -> list[str]:
    """The launch command, as docs/peers.md gives it; both hosts on loopback (sglang binds 0.0.0.0 otherwise)."""
    _, _, policy = PEERS[name]
    binary = str(peer_binary(name))
    common = ["--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1"]
    common += ["--prometheus-port", str(free_port()), "--policy", policy]
    if name.startswith("sglang"):
        return [binary, "launch", *common, "--worker-urls", *workers]
    cmd = [binary, *common, "--worker-urls", *workers]
    if policy == "kv_aware":
        if len(kv_endpoints) != len(workers):
            raise PeerError(f"kv_aware needs one KV event endpoint per worker, got {len(kv_endpoints)}")
        cmd += ["--kv-event-model", model, "--kv-event-block-size", str(block_size)]
        for url, endpoint in zip(workers, kv_endpoints, strict=True):
            cmd += ["--kv-event-source", f"{url}={endpoint}"]
    return cmd


class PeerRouter:
    """One peer process in its own process group (it spawns workers); `start()` returns once a completion has gone
    through it. Its output goes to `log` (truncated at start)."""

    def __init__(self, cmd: list[str], log: Path, model: str):
        self.cmd, self.log, self.model = cmd, log, model
        self.port = int(cmd[cmd.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._child: Child | None = None

    async def start(self, timeout_s: float = 60.0) -> None:
        self.log.write_bytes(b"")
        name = Path(self.cmd[0]).name
        self._child = Child(
            self.cmd, name=name, ready=self._proxies, log_path=self.log, process_group=True, poll_interval_s=0.5
        )
        try:
            await self._child.start(timeout_s)
        except ChildError as exc:
            raise PeerError(str(exc)) from exc

    async def _proxies(self) -> bool:
        """A completion through the peer reaches a worker (it may answer `/health` before its workers register)."""
        return await completion_answered(self.url, self.model)

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()


async def completion_answered(url: str, model: str) -> bool:
    """One small completion through the router at `url` is answered 200 (a readiness probe); NotReady otherwise."""
    import aiohttp  # here: the benchmark's command imports this module, and must stay light

    body = {"model": model, "prompt": "ready check", "max_tokens": 2, "request_id": "bench-ready"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(f"{url}/v1/completions", json=body) as r,
    ):
        if r.status != 200:
            raise NotReady(f"HTTP {r.status} {(await r.text())[:200]}")
        await r.read()
        return True
