"""llm-d's vLLM simulator (llm-d-inference-sim, Go) as child processes on loopback, laid out like our fleet twin, for
the cross-check of the two twins (docs/peers.md, "Cross-check: llm-d-inference-sim").

Why it exists: the picker, its tests and the routing benchmark expect a fleet where server i serves HTTP on P+i and
publishes KV events on P+1000+i (the twin's convention, which the precise profile's `kvEventsPortOffset` follows).
llm-d-inference-sim serves HTTP on `--port` and *dials* `--zmq-endpoint` with a PUB socket (llm-d's central-collector
layout: the collector binds, every pod connects), where vLLM binds a `tcp://*:port` endpoint. Our picker connects one
SUB per endpoint, and two connecting sockets never meet; so each simulator gets a `KVEventRelay` that binds where
the simulator dials and re-publishes every message, unchanged, on P+1000+i. It has no replay socket (the simulator
has none): run the picker with `kvReplayPortOffset: null`.

`make peers` builds the binary (scripts/install-inference-sim.sh) into `.gopath-peers/bin/llm-d-inference-sim`;
`INFSIM_BIN` points elsewhere. Flags: `--force-dummy-tokenizer` always (otherwise a real model name makes the
simulator ask huggingface.co whether the model exists, and then a tokenizer render service: traffic off the machine);
`POD_IP=127.0.0.1` (the KV cache refuses to start without it; it names the event topic `kv@<POD_IP>@<model>`). The
binary listens on every interface (`:port`, no host flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.asyncio

from harness.child import Child, ChildWrapper
from harness.netutil import free_port
from harness.probes import http_ready

REPO = Path(__file__).resolve().parents[1]
INFSIM_VERSION = "v0.10.2"  # scripts/install-inference-sim.sh
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def inference_sim_binary() -> Path:
    return Path(os.environ.get("INFSIM_BIN") or REPO / ".gopath-peers" / "bin" / "llm-d-inference-sim")


def missing_reason() -> str | None:
    """Why the simulator cannot run here, or None."""
    path = inference_sim_binary()
    return None if path.exists() else f"{path} missing: run `make peers` (needs Go >= 1.25)"


class KVEventRelay:
    """Binds a SUB where a simulator dials, and a PUB where a picker connects; forwards every message unchanged."""

    def __init__(self, publish_port: int, *, host: str = "127.0.0.1"):
        self.inbound = f"tcp://{host}:{free_port()}"  # the simulator's --zmq-endpoint
        self.outbound = f"tcp://{host}:{publish_port}"
        self.forwarded = 0
        self._ctx: zmq.asyncio.Context | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._ctx = zmq.asyncio.Context()
        sub = self._ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.subscribe(b"")
        sub.bind(self.inbound)
        pub = self._ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        pub.bind(self.outbound)
        self._task = asyncio.create_task(self._forward(sub, pub))

    async def _forward(self, sub: zmq.asyncio.Socket, pub: zmq.asyncio.Socket) -> None:
        # the pending recv also hands the SUB's subscription to a simulator that connects later: a bound SUB sends
        # it only while the application calls into the socket, and the simulator's PUB drops what nobody asked for
        try:
            while True:
                frames = await sub.recv_multipart()
                await pub.send_multipart(frames)
                self.forwarded += 1
        finally:
            sub.close()
            pub.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None


@dataclass(frozen=True)
class SimOptions:
    """The simulator's engine flags that a cross-check varies (the rest are its defaults)."""

    model: str = MODEL
    block_size: int = 16
    kv_cache_size: int = 1024  # blocks
    max_num_seqs: int = 5
    max_model_len: int = 8192
    time_to_first_token_ms: int = 0
    inter_token_latency_ms: int = 0
    extra_args: tuple[str, ...] = ()


class InferenceSimProcess(ChildWrapper):
    """One llm-d-inference-sim on `port`; ready once /health answers 200."""

    def __init__(self, port: int, options: SimOptions = SimOptions(), *, zmq_endpoint: str | None = None):
        self.port, self.options = port, options
        self.zmq_endpoint = zmq_endpoint  # None: no KV cache, no events
        self._child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        o = self.options
        cmd = [str(inference_sim_binary()), "--port", str(self.port), "--model", o.model]
        cmd += ["--force-dummy-tokenizer", "--mode", "random", "--block-size", str(o.block_size)]
        cmd += ["--max-num-seqs", str(o.max_num_seqs), "--max-model-len", str(o.max_model_len)]
        cmd += ["--time-to-first-token", f"{o.time_to_first_token_ms}ms"]
        cmd += ["--inter-token-latency", f"{o.inter_token_latency_ms}ms"]
        if self.zmq_endpoint is not None:
            cmd += ["--enable-kvcache", "--kv-cache-size", str(o.kv_cache_size), "--zmq-endpoint", self.zmq_endpoint]
        return [*cmd, *o.extra_args]

    async def start(self, timeout_s: float = 30.0) -> None:
        """Start it; raises ChildError (a RuntimeError) with its last output if it exits or is not ready in time."""
        env = dict(os.environ, POD_IP="127.0.0.1")
        self._child = Child(self.command(), name="llm-d-inference-sim", env=env, ready=http_ready(self.url + "/health"))
        await self._child.start(timeout_s)


@dataclass
class InferenceSimFleet:
    """n simulators laid out as the fleet twin: HTTP on base_port+i, KV events (relayed) on base_port+1000+i."""

    n: int
    base_port: int
    kv_events: bool = True
    options: SimOptions = SimOptions()

    def __post_init__(self) -> None:
        self.relays = [KVEventRelay(self.base_port + 1000 + i) for i in range(self.n)] if self.kv_events else []
        self.servers = [
            InferenceSimProcess(
                self.base_port + i, self.options, zmq_endpoint=self.relays[i].inbound if self.kv_events else None
            )
            for i in range(self.n)
        ]

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.servers]

    async def start(self) -> None:
        try:
            for relay in self.relays:
                await relay.start()
            await asyncio.gather(*(s.start() for s in self.servers))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        for s in self.servers:
            await s.stop()
        for relay in self.relays:
            await relay.stop()

    async def __aenter__(self) -> InferenceSimFleet:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
