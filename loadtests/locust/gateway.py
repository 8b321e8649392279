"""Locust users for the inference gateway: OpenAI-compatible requests through Envoy (or any OpenAI endpoint).

Why it exists: the benchmarks replay fixed traces; load tests need open-ended, shaped traffic a person can watch and
stop, with locust's CSV/HTML reports. Shapes (`--shape`):

- `trace`: a Mooncake-format trace replayed in time order (`--trace-file`, `--trace-time-scale`, `--trace-limit`),
  each request's prompt synthesized with the trace's exact block structure (sim.fleet.synth) and its output length
  forced (`max_tokens` + `ignore_eos`); every user takes the next request when it is due, so run more users than
  the trace ever has in flight; the run stops once every request has finished;
- `system-prompts`: chat requests sharing one of a few long system prompts, with a short, unique question;
- `multi-turn`: each user holds a conversation that grows turn after turn (the whole history is resent, the
  previous answer included) and starts a new one after `--turns` turns;
- `tool-agent`: an agent loop: system prompt with tool definitions, then call -> long tool output appended ->
  call again, `--turns` steps per task.

Streaming by default (`--no-stream` for plain JSON answers). With streaming, time to first token is reported as its
own locust metric (request type `TTFT`), measured at the first SSE chunk that carries text; the request itself is
reported as usual (its time is the whole stream).

    locust -f loadtests/locust/gateway.py --headless -u 20 -r 5 -t 60s --host http://127.0.0.1:8081 \
        --shape multi-turn --csv out/locust/gateway --html out/locust/gateway.html
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, events, task
from locust import stats as locust_stats
from locust.env import Environment
from locust.exception import StopUser

from sim.fleet.synth import prompt_text
from sim.fleet.trace import TraceRequest, load_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[3] / "shared/data/traces/mooncake_conversation_first30min.jsonl"
SHAPES = ("trace", "system-prompts", "multi-turn", "tool-agent")


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--shape", choices=SHAPES, default="multi-turn", help="traffic shape")
    parser.add_argument("--model", default="meta-llama/Llama-3.1-8B-Instruct", help="model field of every request")
    parser.add_argument("--no-stream", action="store_true", default=False, help="plain JSON answers, no SSE")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens (synthetic shapes)")
    parser.add_argument("--turns", type=int, default=6, help="turns per conversation / steps per agent task")
    parser.add_argument("--trace-file", default=str(DEFAULT_TRACE), help="Mooncake-format JSONL (shape trace)")
    parser.add_argument("--trace-time-scale", type=float, default=10.0, help="trace seconds per real second")
    parser.add_argument("--trace-limit", type=int, default=0, help="replay at most this many requests (0: all)")


class TraceSchedule:
    """The trace shared by all users: the next request index and when it is due (real seconds from the start)."""

    def __init__(self, trace: list[TraceRequest], time_scale: float):
        if time_scale <= 0:
            raise ValueError(f"--trace-time-scale must be > 0, got {time_scale}")
        self.trace = trace
        self.time_scale = time_scale
        self.start = time.monotonic()
        self._next = itertools.count()
        self.finished = 0

    def take(self) -> tuple[int, float] | None:
        i = next(self._next)
        if i >= len(self.trace):
            return None
        return i, (self.trace[i].timestamp_s - self.trace[0].timestamp_s) / self.time_scale


_schedule: TraceSchedule | None = None


@events.test_start.add_listener
def _load_trace(environment: Environment, **_: Any) -> None:
    global _schedule
    opts = environment.parsed_options
    if opts is None or opts.shape != "trace":
        return
    trace = load_trace(opts.trace_file, limit=opts.trace_limit or None)
    if not trace:
        raise ValueError(f"--trace-file {opts.trace_file}: no requests")
    _schedule = TraceSchedule(trace, opts.trace_time_scale)


def _words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(5000)}" for _ in range(n))


SYSTEM_PROMPTS = [f"You are assistant {k}. " + _words(random.Random(k), 1500) for k in range(4)]
TOOLS = "Tools: " + json.dumps(
    [{"name": f"tool_{k}", "description": _words(random.Random(100 + k), 60)} for k in range(12)]
)


class GatewayUser(HttpUser):
    """One client of the gateway; its shape comes from the command line (see the module docstring)."""

    def on_start(self) -> None:
        self.opts = self.environment.parsed_options
        self.rng = random.Random()
        self.history: list[dict[str, str]] = []
        self.turn = 0

    @task
    def one_request(self) -> None:
        shape = self.opts.shape
        if shape == "trace":
            self._trace_request()
        elif shape == "system-prompts":
            messages = [
                {"role": "system", "content": self.rng.choice(SYSTEM_PROMPTS)},
                {"role": "user", "content": f"question {self.rng.getrandbits(32)}: " + _words(self.rng, 30)},
            ]
            self._chat(messages, "system-prompts")
        elif shape == "multi-turn":
            self._next_turn("multi-turn", SYSTEM_PROMPTS[0], lambda: _words(self.rng, 40))
        else:
            self._next_turn("tool-agent", SYSTEM_PROMPTS[1] + TOOLS, lambda: "tool output: " + _words(self.rng, 400))

    # ---- shapes -------------------------------------------------------------------------------------------
    def _next_turn(self, name: str, system: str, next_message: Any) -> None:
        if self.turn == 0 or self.turn >= self.opts.turns:
            self.turn = 0
            self.history = [{"role": "system", "content": system}, {"role": "user", "content": _words(self.rng, 40)}]
        answer = self._chat(list(self.history), name)
        self.history.append({"role": "assistant", "content": answer or "(no answer)"})
        self.history.append({"role": "user", "content": next_message()})
        self.turn += 1

    def _trace_request(self) -> None:
        schedule = _schedule
        taken = schedule.take() if schedule is not None else None
        if schedule is None or taken is None:
            raise StopUser()
        i, due = taken
        gevent.sleep(max(0.0, due - (time.monotonic() - schedule.start)))
        req = schedule.trace[i]
        body = {
            "model": self.opts.model,
            "prompt": prompt_text(req.hash_ids, req.input_length),
            "max_tokens": max(1, req.output_length),
            "ignore_eos": True,
        }
        try:
            self._send("/v1/completions", body, "trace /v1/completions")
        finally:
            schedule.finished += 1
            runner = self.environment.runner
            if schedule.finished == len(schedule.trace) and runner is not None:
                # the whole trace has been replayed: stop once the CSV writer has written the last figures
                gevent.spawn_later(locust_stats.CSV_STATS_INTERVAL_SEC + 1.0, runner.quit)

    def _chat(self, messages: list[dict[str, str]], name: str) -> str:
        body = {"model": self.opts.model, "messages": messages, "max_tokens": self.opts.max_tokens}
        return self._send("/v1/chat/completions", body, f"{name} /v1/chat/completions")

    # ---- transport ----------------------------------------------------------------------------------------
    def _send(self, path: str, body: dict[str, Any], name: str) -> str:
        """POST and read the answer; returns its text. Failures are reported to locust, never raised."""
        stream = not self.opts.no_stream
        body = {**body, "stream": stream}
        if stream:
            body["stream_options"] = {"include_usage": True}
        started = time.perf_counter()
        with self.client.post(path, json=body, stream=stream, catch_response=True, name=name) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return ""
            try:
                return self._read_stream(resp, name, started) if stream else self._read_json(resp)
            except (ValueError, KeyError) as exc:
                resp.failure(f"bad answer: {exc}")
                return ""

    @staticmethod
    def _read_json(resp: Any) -> str:
        data = resp.json()
        choice = data["choices"][0]
        return str(choice.get("text") or (choice.get("message") or {}).get("content") or "")

    def _read_stream(self, resp: Any, name: str, started: float) -> str:
        parts: list[str] = []
        ttft_ms: float | None = None
        done = False
        for raw in resp.iter_lines():
            line = raw.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            for choice in json.loads(data).get("choices", []):
                text = choice.get("text") or (choice.get("delta") or {}).get("content") or ""
                if text and ttft_ms is None:
                    ttft_ms = (time.perf_counter() - started) * 1e3
                parts.append(text)
        if not done:
            resp.failure("the stream ended without [DONE]")
        elif ttft_ms is None:
            resp.failure("no chunk carried text")
        else:
            self.environment.events.request.fire(
                request_type="TTFT", name=name, response_time=ttft_ms, response_length=0, exception=None, context={}
            )
        return "".join(parts)
