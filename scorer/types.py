"""The vocabulary of the scheduling core: requests, endpoints, their metrics, and what a decision returns.

Everything here is plain data with no I/O so that `schedule()` stays a pure function that tests can drive with
tables. The I/O shell (ext_proc, scrapers, discovery) builds these objects; plugins only read them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from scorer.device_hints import DeviceHints

RequestKind = Literal["completions", "chat", "other"]


@dataclass(frozen=True)
class Endpoint:
    """One model-server port, addressed as `ip:port` exactly as Envoy's ORIGINAL_DST cluster dials it."""

    address: str
    name: str = ""  # pod name (or "" in local mode)
    labels: Mapping[str, str] = field(default_factory=dict)
    hints: DeviceHints | None = None  # DRA devices behind it (InferencePool discovery), None when not resolved

    def __post_init__(self) -> None:
        host, sep, port = self.address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"endpoint address must be host:port, got {self.address!r}")


@dataclass(frozen=True)
class EndpointMetrics:
    """What the last scrape of an endpoint's `/metrics` said (vLLM names, GIE model-server protocol)."""

    waiting: int = 0  # vllm:num_requests_waiting
    running: int = 0  # vllm:num_requests_running
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, in [0, 1]
    active_loras: frozenset[str] = frozenset()  # vllm:lora_requests_info running_lora_adapters
    waiting_loras: frozenset[str] = frozenset()  # vllm:lora_requests_info waiting_lora_adapters
    max_loras: int = 0  # vllm:lora_requests_info max_lora
    block_size: int | None = None  # vllm:cache_config_info block_size
    num_gpu_blocks: int | None = None  # vllm:cache_config_info num_gpu_blocks
    prompt_tokens_total: float | None = None  # vllm:prompt_tokens_total, summed over engines
    scraped_at: float = 0.0  # clock time of the scrape that produced these values


@dataclass
class EndpointState:
    """A candidate as the scheduler sees it: the endpoint, its last metrics and the picker's own counters.

    `in_flight` and `in_flight_tokens` are counted by the picker between scrapes (incremented at pick, decremented
    when the response ends), so load is visible before the next scrape shows it.
    """

    endpoint: Endpoint
    metrics: EndpointMetrics | None = None  # None until the first successful scrape
    stale: bool = False  # the last good scrape is older than the staleness limit
    in_flight: int = 0
    in_flight_tokens: int = 0  # prompt tokens (estimated) of in-flight requests not yet answered
    dispatched_since_scrape: int = 0  # requests sent here after the last successful scrape (not yet in `waiting`)
    error: str | None = None  # why the last scrape failed (None when it succeeded)
    ejected: bool = False  # answered 5xx too many times in a row: out until its ejection ends (Director)

    @property
    def address(self) -> str:
        return self.endpoint.address


@dataclass(frozen=True)
class LLMRequest:
    """An inference request reduced to what scheduling needs.

    `prompt` is the text whose prefix decides cache affinity: the completion prompt, or the chat messages flattened
    in order (role and content) so that a later turn of the same conversation extends the earlier one's prefix.

    What the precise prefix scorer needs to know the server's own tokens: `prompt_token_ids`, a completion's single
    prompt given as token ids (the server tokenizes nothing); `chat_fields`, a chat request's fields that decide the
    server's rendered prompt (messages, add_generation_prompt, tools...), the body of vLLM's chat form of `/tokenize`
    (`chat_fields`; None when the content is not only text), and the same as canonical JSON (`chat_input`, the token
    cache's key); `prompt_count`, how many prompts a completions batch holds (only a single prompt has one token
    sequence to match).
    """

    request_id: str
    model: str
    kind: RequestKind = "completions"
    prompt: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    max_tokens: int | None = None
    stream: bool = False
    priority: int = 0  # InferenceObjective priority: negative means sheddable
    body_size: int = 0
    prompt_token_ids: tuple[int, ...] | None = None
    chat_fields: Mapping[str, Any] | None = None
    prompt_count: int = 1

    @property
    def session_id(self) -> str | None:
        return self.headers.get("x-session-id")

    @functools.cached_property
    def chat_input(self) -> str | None:
        """`chat_fields` as canonical JSON, built on first use only (a long chat costs ~2.5 ms per MiB to encode)."""
        if self.chat_fields is None:
            return None
        return json.dumps(self.chat_fields, sort_keys=True, separators=(",", ":"))

    def without_prompt(self) -> LLMRequest:
        """The request as kept while its response is outstanding: all but the prompt and what stands for it (chat
        fields, token ids). No response hook reads them, and they are the request's weight: a 100k-token prompt kept
        ~390 KB as text, ~790 KB as parsed chat messages, ~4.5 MB as token ids in memory
        (`loadtests.picker.inflight_memory`), times every response in flight."""
        if not self.prompt and self.chat_fields is None and self.prompt_token_ids is None:
            return self
        return dataclasses.replace(self, prompt="", chat_fields=None, prompt_token_ids=None)

    def estimated_prompt_tokens(self) -> int:
        """Tokens without a tokenizer: ~4 bytes per token, the estimate llm-d's token producer uses."""
        return max(1, len(self.prompt.encode()) // 4)


@dataclass
class CycleState:
    """Scratch space shared by the plugins of one scheduling cycle (e.g. prefix hashes computed once)."""

    now: float
    rng: random.Random
    data: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # what a plugin says of this cycle, "plugin.what" -> value


@dataclass(frozen=True)
class ScoredEndpoint:
    state: EndpointState
    total: float
    by_scorer: Mapping[str, float]  # scorer name -> clamped raw score in [0, 1] (before weight)


@dataclass(frozen=True)
class SchedulingResult:
    """The outcome of one cycle: the chosen endpoints (first is primary, the rest are fallbacks) and why."""

    targets: tuple[EndpointState, ...]
    reason: str
    scored: tuple[ScoredEndpoint, ...] = ()
    filtered_out: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # filter name -> addresses removed
    plugin_seconds: Mapping[str, float] = field(default_factory=dict)  # plugin name -> time spent this cycle
    profile: str = "default"
    notes: Mapping[str, str] = field(default_factory=dict)  # the plugins' notes of the cycle (CycleState.notes)

    @property
    def addresses(self) -> list[str]:
        return [t.address for t in self.targets]


@dataclass(frozen=True)
class IndexSnapshot:
    """A prefix plugin's state as a replica that starts copies it from a running peer (scorer/replica_sync.py)."""

    endpoints: Mapping[str, Sequence[int]]  # address -> block hashes, least recently used first
    bytes_per_token: float | None = None  # the peer's learned estimate (None: not learned yet)


class NoEndpointError(Exception):
    """No endpoint can take the request: the shell answers 503 (or 429 when `shed` is set)."""

    def __init__(self, message: str, *, shed: bool = False, filtered_out: Mapping[str, tuple[str, ...]] | None = None):
        super().__init__(message)
        self.shed = shed
        self.filtered_out = dict(filtered_out or {})
