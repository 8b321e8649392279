"""Prometheus metrics of one twin vLLM server, under vLLM V1's own names, types, labels and buckets.

Why it exists: routers (the Gateway API Inference Extension's endpoint picker, llm-d's scorers, Prometheus
recording rules) scrape each vLLM server's `/metrics` and read specific series: `vllm:num_requests_waiting`,
`vllm:kv_cache_usage_perc`, `vllm:lora_requests_info`, `vllm:cache_config_info`, the latency histograms.
A twin that renamed, retyped or re-bucketed any of them would test a router against something it never
meets in production. So this module reproduces vLLM's `PrometheusStatLogger` exposition as of the reference
release below, fed from the twin's model-time engine instead of a GPU.

Reference: vLLM v0.13.0 (`vllm/v1/metrics/loggers.py`, `vllm/config/cache.py`, `vllm/v1/engine/__init__.py`),
cross-checked against v0.33.0 (bucket lists moved to `vllm/v1/metrics/buckets.py`, values unchanged) and
v0.11.0 (last release that could still emit `vllm:gpu_cache_usage_perc`). docs/fleet-metrics.md has the table.

Each server owns a private `CollectorRegistry`, so several servers in one process never share a series.
Like vLLM with its default single API server (plain `prometheus_client` registry, no multiprocess mode), the
exposition carries prometheus_client's `_created` series for counters and histograms; vLLM does not disable
them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The classic text format, as vLLM's PrometheusResponse sends it. The body is identical under the newer
# "version=1.0.0" type prometheus_client>=0.22 advertises (every name here is a legal classic name), and
# 0.0.4 is the one every scraper, old or new, accepts.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

VLLM_REFERENCE = "v0.13.0"

LABELNAMES = ("model_name", "engine")

# vllm:time_to_first_token_seconds
TTFT_BUCKETS: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
# vllm:inter_token_latency_seconds and vllm:request_time_per_output_token_seconds
ITL_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
    0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
# e2e, queue, inference, prefill and decode time histograms
REQUEST_LATENCY_BUCKETS: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0,
    30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip
# vllm:iteration_tokens_total (a histogram despite the suffix)
ITERATION_TOKENS_BUCKETS: tuple[float, ...] = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

# str(FinishReason) for every member in v0.13.0; each series exists from start-up with value 0.
FINISH_REASONS = ("stop", "length", "abort", "error")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")

# Used for the token-count buckets when the caller does not say; vLLM derives them from the model's length.
DEFAULT_MAX_MODEL_LEN = 8192

# `CacheConfig.metrics_info()` is `{field: str(value)}` over every field of the dataclass, so these are the
# labels of `vllm:cache_config_info` (plus `engine`), in declaration order, with the values a freshly
# initialised V1 engine reports: `block_size` resolved, `num_gpu_blocks` profiled, `num_cpu_blocks` = 0.
CACHE_CONFIG_DEFAULTS: dict[str, str] = {
    "block_size": "16",
    "gpu_memory_utilization": "0.9",
    "swap_space": "4",
    "cache_dtype": "auto",
    "is_attention_free": "False",
    "num_gpu_blocks_override": "None",
    "sliding_window": "None",
    "enable_prefix_caching": "True",
    "prefix_caching_hash_algo": "sha256",
    "cpu_offload_gb": "0",
    "calculate_kv_scales": "False",
    "cpu_kvcache_space_bytes": "None",
    "mamba_page_size_padded": "None",
    "mamba_block_size": "None",
    "mamba_cache_dtype": "auto",
    "mamba_ssm_cache_dtype": "auto",
    "num_gpu_blocks": "None",
    "num_cpu_blocks": "0",
    "kv_sharing_fast_prefill": "False",
    "kv_cache_memory_bytes": "None",
    "kv_offloading_size": "None",
    "kv_offloading_backend": "None",
}


def build_1_2_5_buckets(max_value: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to and including `max_value`: vLLM's token-count buckets."""
    out: list[int] = []
    scale = 1
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * scale
            if value > max_value:
                return out
            out.append(value)
        scale *= 10


def _check_count(name: str, n: int) -> None:
    if n < 0:
        raise ValueError(f"{name} must be non-negative, got {n}")


def _check_duration(name: str, seconds: float) -> None:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite non-negative duration, got {seconds}")


class ServerMetrics:
    """vLLM's Prometheus metrics for one server and one engine, on a registry of its own.

    The engine shell calls the setters after every step and `observe_finished` for every request the engine
    finishes; `render()` is the `/metrics` body.
    """

    def __init__(
        self,
        model_name: str,
        engine: str = "0",
        cache_config: Mapping[str, str] | None = None,
        max_lora: int = 0,
        max_model_len: int = DEFAULT_MAX_MODEL_LEN,
        *,
        legacy_gpu_cache_usage: bool = True,
    ) -> None:
        if max_lora < 0:
            raise ValueError("max_lora must be non-negative")
        if max_model_len < 1:
            raise ValueError("max_model_len must be positive")
        info = dict(CACHE_CONFIG_DEFAULTS)
        for key, value in (cache_config or {}).items():
            if key not in info:
                raise ValueError(f"{key!r} is not a vLLM {VLLM_REFERENCE} CacheConfig field")
            info[key] = str(value)
        self.model_name = model_name
        self.engine = str(engine)
        self.max_lora = max_lora
        self.max_model_len = max_model_len
        self.client_aborts = 0  # requests aborted by their client: not exposed, as in vLLM
        self.registry = CollectorRegistry()
        reg = self.registry
        values = (model_name, self.engine)
        names = list(LABELNAMES)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=reg).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, names, registry=reg).labels(*values)

        def histogram(name: str, doc: str, buckets: Sequence[float]) -> Histogram:
            return Histogram(name, doc, names, buckets=buckets, registry=reg).labels(*values)

        # --- scheduler state -----------------------------------------------------------------------------
        self._running = gauge("vllm:num_requests_running", "Number of requests in model execution batches.")
        self._waiting = gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.")
        sleep = Gauge(
            "vllm:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            [*names, "sleep_state"],
            registry=reg,
        )
        self._sleep = {state: sleep.labels(*values, state) for state in SLEEP_STATES}
        self.set_sleep_state(sleeping=False)

        # --- KV cache ------------------------------------------------------------------------------------
        self._kv_usage = gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        # Renamed to kv_cache_usage_perc in vLLM 0.9; only behind --show-hidden-metrics-for-version=0.10 in
        # 0.11, absent from 0.13. Older endpoint pickers still read it, so the twin keeps it by default.
        self._gpu_usage: Gauge | None = None
        if legacy_gpu_cache_usage:
            self._gpu_usage = gauge(
                "vllm:gpu_cache_usage_perc",
                "GPU KV-cache usage. 1 means 100 percent usage.DEPRECATED: Use vllm:kv_cache_usage_perc instead.",
            )
        self._prefix_queries = counter(
            "vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self._prefix_hits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")

        # --- token and request counters ------------------------------------------------------------------
        self._preemptions = counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
        self._prompt_tokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
        self._generation_tokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
        success = Counter(
            "vllm:request_success",
            "Count of successfully processed requests.",
            [*names, "finished_reason"],
            registry=reg,
        )
        self._success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}

        # --- histograms of counts ------------------------------------------------------------------------
        token_buckets = build_1_2_5_buckets(max_model_len)
        self._req_prompt_tokens = histogram(
            "vllm:request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self._req_generation_tokens = histogram(
            "vllm:request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self._iteration_tokens = histogram(
            "vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", ITERATION_TOKENS_BUCKETS
        )
        self._prefill_kv_computed = histogram(
            "vllm:request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
        )

        # --- histograms of time intervals ----------------------------------------------------------------
        self._ttft = histogram(
            "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", TTFT_BUCKETS
        )
        self._itl = histogram(
            "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", ITL_BUCKETS
        )
        self._tpot = histogram(
            "vllm:request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            ITL_BUCKETS,
        )
        self._e2e = histogram(
            "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", REQUEST_LATENCY_BUCKETS
        )
        self._queue = histogram(
            "vllm:request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._inference = histogram(
            "vllm:request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._prefill = histogram(
            "vllm:request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )
        self._decode = histogram(
            "vllm:request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            REQUEST_LATENCY_BUCKETS,
        )

        # --- LoRA: exists only when LoRA is enabled (vLLM: lora_config is not None) ------------------------
        self._lora: Gauge | None = None
        if max_lora > 0:
            self._lora = Gauge(
                "vllm:lora_requests_info",
                "Running stats on lora requests.",
                ["max_lora", "waiting_lora_adapters", "running_lora_adapters"],
                registry=reg,
            )

        # --- cache config: an info metric emulated with a gauge set to 1 (no model_name label) ----------
        info["engine"] = self.engine
        Gauge("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", list(info), registry=reg).labels(
            **info
        ).set(1)

    # ---- per-step state -----------------------------------------------------------------------------------
    def set_queue(self, running: int, waiting: int) -> None:
        """Requests in the running batch and in the waiting queue after a step."""
        _check_count("running", running)
        _check_count("waiting", waiting)
        self._running.set(running)
        self._waiting.set(waiting)

    def set_kv_usage(self, frac: float) -> None:
        """Fraction of KV blocks in use, in [0, 1] (vLLM: 1 - free/total); sets the legacy gauge too."""
        if not 0.0 <= frac <= 1.0:  # also rejects NaN
            raise ValueError(f"KV usage must be a fraction in [0, 1], got {frac}")
        self._kv_usage.set(frac)
        if self._gpu_usage is not None:
            self._gpu_usage.set(frac)

    def add_prefix_cache(self, queries: int, hits: int) -> None:
        """Prefix-cache lookups of newly scheduled requests, in tokens: queried and found cached."""
        _check_count("queries", queries)
        _check_count("hits", hits)
        if hits > queries:
            raise ValueError(f"prefix cache hits ({hits}) exceed queries ({queries})")
        self._prefix_queries.inc(queries)
        self._prefix_hits.inc(hits)

    def set_lora(self, running: Sequence[str], waiting: Sequence[str], now: float) -> None:
        """Adapters with running and waiting requests; the series' value is the wall-clock time `now`.

        Like vLLM, every label combination ever seen stays in the exposition with the time it was last set:
        readers take the series with the largest value as the current one.
        """
        if self._lora is None:
            raise RuntimeError("LoRA metrics need max_lora > 0")
        self._lora.labels(
            max_lora=str(self.max_lora),
            waiting_lora_adapters=",".join(waiting),
            running_lora_adapters=",".join(running),
        ).set(now)

    def set_sleep_state(self, *, sleeping: bool, level: int = 0) -> None:
        """`vllm:engine_sleep_state` as vLLM's /sleep (level 1 or 2) and /wake_up set it."""
        self._sleep["awake"].set(0 if sleeping else 1)
        self._sleep["weights_offloaded"].set(1 if sleeping and level == 1 else 0)
        self._sleep["discard_all"].set(1 if sleeping and level == 2 else 0)

    def add_preemptions(self, n: int) -> None:
        """Requests preempted in a step."""
        _check_count("preemptions", n)
        self._preemptions.inc(n)

    def add_iteration_tokens(self, n: int) -> None:
        """Tokens computed in one engine step (prefill chunks plus decoded tokens)."""
        _check_count("iteration tokens", n)
        self._iteration_tokens.observe(n)

    def add_step_tokens(self, prompt_tokens: int, generation_tokens: int) -> None:
        """One engine step's token counts, as vLLM's iteration stats add them: the whole prompt of each request whose
        prefill finished this step (it produced its first token), and every token generated."""
        _check_count("prompt_tokens", prompt_tokens)
        _check_count("generation_tokens", generation_tokens)
        self._prompt_tokens.inc(prompt_tokens)
        self._generation_tokens.inc(generation_tokens)

    # ---- per request --------------------------------------------------------------------------------------
    def observe_finished(
        self,
        *,
        ttft_s: float,
        e2e_s: float,
        queue_s: float,
        prefill_s: float,
        decode_s: float,
        itl_s: Sequence[float] | None,
        prompt_tokens: int,
        generation_tokens: int,
        finish_reason: str,
        cached_tokens: int = 0,
    ) -> None:
        """A request the engine finished, with its model-time intervals as vLLM measures them.

        ttft and e2e run from arrival; queue from queued to first scheduled; prefill from first scheduled to
        first token; decode from first token to last token. `itl_s` holds the gaps between successive
        tokens; `cached_tokens` the prompt tokens served from the prefix cache.
        """
        if finish_reason not in self._success:
            raise ValueError(f"finish_reason must be one of {FINISH_REASONS}, got {finish_reason!r}")
        for name, value in (
            ("ttft_s", ttft_s),
            ("e2e_s", e2e_s),
            ("queue_s", queue_s),
            ("prefill_s", prefill_s),
            ("decode_s", decode_s),
        ):
            _check_duration(name, value)
        gaps = list(itl_s or ())
        for gap in gaps:
            _check_duration("itl_s item", gap)
        _check_count("prompt_tokens", prompt_tokens)
        _check_count("generation_tokens", generation_tokens)
        if not 0 <= cached_tokens <= prompt_tokens:
            raise ValueError(f"cached_tokens must be in [0, prompt_tokens], got {cached_tokens}")

        self._ttft.observe(ttft_s)
        for gap in gaps:
            self._itl.observe(gap)
        self._success[finish_reason].inc()
        self._e2e.observe(e2e_s)
        self._queue.observe(queue_s)
        self._prefill.observe(prefill_s)
        self._inference.observe(prefill_s + decode_s)
        self._decode.observe(decode_s)
        self._prefill_kv_computed.observe(prompt_tokens - cached_tokens)
        self._req_prompt_tokens.observe(prompt_tokens)
        self._req_generation_tokens.observe(generation_tokens)
        # The first token belongs to prefill, so the mean spreads decode time over the others (0 if none).
        self._tpot.observe(decode_s / (generation_tokens - 1) if generation_tokens > 1 else 0.0)

    def observe_aborted(self) -> None:
        """A request its client aborted. vLLM's output processor drops such a request's stats (no
        request_success, no histograms), so this only keeps a count for the twin's own reports."""
        self.client_aborts += 1

    # ---- exposition ---------------------------------------------------------------------------------------
    def render(self, names: Sequence[str] = ()) -> bytes:
        """The `/metrics` body, in the text format named by `CONTENT_TYPE`: every series, or only the named ones
        (`?name[]=...`, as prometheus_client's exposition app serves vLLM's `/metrics`: a name picks the sample
        names it spells, e.g. `vllm:prompt_tokens_total`, not the rest of that family)."""
        return generate_latest(self.registry.restricted_registry(names) if names else self.registry)
