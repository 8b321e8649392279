"""The real peer routers (smg, sglang-router, vllm-router) as child processes in front of a fleet, for benchmarks.

Why it exists: the routing benchmark puts each peer in front of its own fresh fleet twin, launched exactly as
tests/integration/test_peers.py and docs/peers.md do (each from its own venv under `.venv-peers/`, installed by
`make peers`; loopback only; its own process group, killed afterwards), and must know when the peer really proxies
(it may answer `/health` before its workers are registered). A missing venv is a reason to skip, never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from harness.child import Child, ChildError, ChildWrapper
from harness.netutil import free_port
from harness.probes import NotReady

REPO = Path(__file__).resolve().parents[2]
PEERS_DIR = Path(os.environ.get("PEERS_DIR", REPO / ".venv-peers"))


@dataclass(frozen=True)
class PeerArm:
    """One benchmark arm: which venv and binary, the policy, and the flags of the configuration it runs."""

    venv: str
    binary: str
    policy: str
    flags: tuple[str, ...] = ()

    @property
    def launch(self) -> bool:
        """sglang-router and smg take a `launch` subcommand; vllm-router does not."""
        return self.binary == "smg"


# smg 1.13.0 in front of vLLM HTTP workers: the flags of its best configurations found here, and of the candidates
# measured against them (docs/peers.md, "smg 1.13.0: its best configuration", says why each flag).
_SMG_NO_WARMUP = ("--worker-warmup-secs", "0", "--worker-warmup-divert-every", "0", "--worker-warmup-thin-ratio", "0")
_SMG_FAST_POLL = ("--load-monitor-interval", "1")  # vLLM's /metrics every second, not every 10 s
_SMG_NO_PROTECTION = ("--disable-worker-overload-protection",)
_SMG_PREFIX_1024 = ("--prefix-token-count", "1024")  # 4,096 characters: past the trace's shared first block
_SMG_SPILL = ("--balance-abs-threshold", "8", "--balance-rel-threshold", "1.25")
_SMG_TIGHT_RING = ("--prefix-hash-load-factor", "1.1", "--prefix-hash-balance-abs-threshold", "4")

PEERS: dict[str, PeerArm] = {
    "sglang-cache-aware": PeerArm("sglang", "smg", "cache_aware"),
    "smg-cache-aware": PeerArm("smg", "smg", "cache_aware", (*_SMG_NO_WARMUP, *_SMG_FAST_POLL)),
    "smg-prefix-hash": PeerArm("smg", "smg", "prefix_hash", (*_SMG_NO_WARMUP, *_SMG_NO_PROTECTION, *_SMG_PREFIX_1024)),
    "vllm-router-cache-aware": PeerArm("vllm", "vllm-router", "cache_aware"),
    "vllm-router-kv-aware": PeerArm("vllm", "vllm-router", "kv_aware"),
}
# by name only (not in `--routers all`): smg 1.13.0 with every default (issue 14's first try), and the candidate
# configurations measured against the chosen ones (BENCHMARKS.md, "smg 1.13.0, best configuration")
EXTRA_PEERS: dict[str, PeerArm] = {
    "smg-cache-aware-defaults": PeerArm("smg", "smg", "cache_aware"),
    "smg-cache-aware-t01": PeerArm("smg", "smg", "cache_aware", (*_SMG_NO_WARMUP, "--cache-threshold", "0.1")),
    "smg-cache-aware-unprotected": PeerArm(
        "smg", "smg", "cache_aware", (*_SMG_NO_WARMUP, *_SMG_NO_PROTECTION, "--cache-threshold", "0.1")
    ),
    "smg-cache-aware-spill": PeerArm(
        "smg", "smg", "cache_aware", (*_SMG_NO_WARMUP, "--cache-threshold", "0.1", *_SMG_SPILL)
    ),
    "smg-cache-aware-no-warmup": PeerArm("smg", "smg", "cache_aware", _SMG_NO_WARMUP),
    "smg-cache-aware-t01-fast-poll": PeerArm(
        "smg", "smg", "cache_aware", (*_SMG_NO_WARMUP, *_SMG_FAST_POLL, "--cache-threshold", "0.1")
    ),
    "smg-prefix-hash-protected-fast-poll": PeerArm(
        "smg", "smg", "prefix_hash", (*_SMG_NO_WARMUP, *_SMG_FAST_POLL, *_SMG_PREFIX_1024)
    ),
    "smg-prefix-hash-256": PeerArm("smg", "smg", "prefix_hash", (*_SMG_NO_WARMUP, *_SMG_NO_PROTECTION)),
    "smg-prefix-hash-protected": PeerArm("smg", "smg", "prefix_hash", (*_SMG_NO_WARMUP, *_SMG_PREFIX_1024)),
    "smg-prefix-hash-tight": PeerArm(
        "smg",
        "smg",
        "prefix_hash",
        (*_SMG_NO_WARMUP, *_SMG_NO_PROTECTION, *_SMG_PREFIX_1024, *_SMG_TIGHT_RING),
    ),
}


def is_peer(name: str) -> bool:
    return name in PEERS or name in EXTRA_PEERS


def peer_arm(name: str) -> PeerArm:
    return PEERS.get(name) or EXTRA_PEERS[name]


class PeerError(RuntimeError):
    pass


def peer_binary(name: str) -> Path:
    arm = peer_arm(name)
    return PEERS_DIR / arm.venv / "bin" / arm.binary


def missing_reason(name: str) -> str | None:
    """Why the peer cannot run here, or None."""
    path = peer_binary(name)
    return None if path.exists() else f"{path} missing: run `make peers`"


def peer_command(
    name: str, port: int, workers: list[str], *, model: str, block_size: int, kv_endpoints: list[str]
) -> list[str]:
    """The launch command, as docs/peers.md gives it; both hosts on loopback (sglang and smg bind 0.0.0.0
    otherwise)."""
    arm = peer_arm(name)
    binary = str(peer_binary(name))
    common = ["--host", "127.0.0.1", "--port", str(port), "--prometheus-host", "127.0.0.1"]
    common += ["--prometheus-port", str(free_port()), "--policy", arm.policy, *arm.flags]
    if arm.launch:
        return [binary, "launch", *common, "--worker-urls", *workers]
    cmd = [binary, *common, "--worker-urls", *workers]
    if arm.policy == "kv_aware":
        if len(kv_endpoints) != len(workers):
            raise PeerError(f"kv_aware needs one KV event endpoint per worker, got {len(kv_endpoints)}")
        cmd += ["--kv-event-model", model, "--kv-event-block-size", str(block_size)]
        for url, endpoint in zip(workers, kv_endpoints, strict=True):
            cmd += ["--kv-event-source", f"{url}={endpoint}"]
    return cmd


class PeerRouter(ChildWrapper):
    """One peer process in its own process group (it spawns workers; its pid is the group's id); `start()` returns
    once a completion has gone through it. Its output goes to `log` (truncated at start)."""

    def __init__(self, cmd: list[str], log: Path, model: str):
        self.cmd, self.log, self.model = cmd, log, model
        self.port = int(cmd[cmd.index("--port") + 1])
        self.url = f"http://127.0.0.1:{self.port}"

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
