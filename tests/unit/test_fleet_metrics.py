"""The twin's /metrics against vLLM's exposition: names, types, label sets, buckets, and what observations do.

The expected table is written out here from vLLM v0.13.0's `vllm/v1/metrics/loggers.py` rather than imported
from the module under test, so a change to either side shows up as a failure.
"""

from __future__ import annotations

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sim.fleet.metrics import CONTENT_TYPE, ServerMetrics, build_1_2_5_buckets

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MAX_MODEL_LEN = 4096
ENGINE_LABELS = frozenset({"model_name", "engine"})

TTFT = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0,
        80.0, 160.0, 640.0, 2560.0]  # fmt: skip
ITL = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
LATENCY = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0,
           960.0, 1920.0, 7680.0]  # fmt: skip
ITERATION: list[float] = [1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
TOKENS_4096: list[float] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000]

# vLLM v0.13.0 CacheConfig fields, i.e. the labels of vllm:cache_config_info besides `engine`
CACHE_FIELDS = {
    "block_size", "gpu_memory_utilization", "swap_space", "cache_dtype", "is_attention_free",
    "num_gpu_blocks_override", "sliding_window", "enable_prefix_caching", "prefix_caching_hash_algo",
    "cpu_offload_gb", "calculate_kv_scales", "cpu_kvcache_space_bytes", "mamba_page_size_padded",
    "mamba_block_size", "mamba_cache_dtype", "mamba_ssm_cache_dtype", "num_gpu_blocks", "num_cpu_blocks",
    "kv_sharing_fast_prefill", "kv_cache_memory_bytes", "kv_offloading_size", "kv_offloading_backend",
}  # fmt: skip
LORA_LABELS = frozenset({"max_lora", "waiting_lora_adapters", "running_lora_adapters"})

# family name as the parser reports it (counters without `_total`) -> (type, label names, buckets)
EXPECTED: dict[str, tuple[str, frozenset[str], list[float] | None]] = {
    "vllm:num_requests_running": ("gauge", ENGINE_LABELS, None),
    "vllm:num_requests_waiting": ("gauge", ENGINE_LABELS, None),
    "vllm:engine_sleep_state": ("gauge", ENGINE_LABELS | {"sleep_state"}, None),
    "vllm:kv_cache_usage_perc": ("gauge", ENGINE_LABELS, None),
    "vllm:gpu_cache_usage_perc": ("gauge", ENGINE_LABELS, None),
    "vllm:prefix_cache_queries": ("counter", ENGINE_LABELS, None),
    "vllm:prefix_cache_hits": ("counter", ENGINE_LABELS, None),
    "vllm:num_preemptions": ("counter", ENGINE_LABELS, None),
    "vllm:prompt_tokens": ("counter", ENGINE_LABELS, None),
    "vllm:generation_tokens": ("counter", ENGINE_LABELS, None),
    "vllm:request_success": ("counter", ENGINE_LABELS | {"finished_reason"}, None),
    "vllm:request_prompt_tokens": ("histogram", ENGINE_LABELS, TOKENS_4096),
    "vllm:request_generation_tokens": ("histogram", ENGINE_LABELS, TOKENS_4096),
    "vllm:iteration_tokens_total": ("histogram", ENGINE_LABELS, ITERATION),
    "vllm:request_prefill_kv_computed_tokens": ("histogram", ENGINE_LABELS, TOKENS_4096),
    "vllm:time_to_first_token_seconds": ("histogram", ENGINE_LABELS, TTFT),
    "vllm:inter_token_latency_seconds": ("histogram", ENGINE_LABELS, ITL),
    "vllm:request_time_per_output_token_seconds": ("histogram", ENGINE_LABELS, ITL),
    "vllm:e2e_request_latency_seconds": ("histogram", ENGINE_LABELS, LATENCY),
    "vllm:request_queue_time_seconds": ("histogram", ENGINE_LABELS, LATENCY),
    "vllm:request_inference_time_seconds": ("histogram", ENGINE_LABELS, LATENCY),
    "vllm:request_prefill_time_seconds": ("histogram", ENGINE_LABELS, LATENCY),
    "vllm:request_decode_time_seconds": ("histogram", ENGINE_LABELS, LATENCY),
    "vllm:lora_requests_info": ("gauge", LORA_LABELS, None),
    "vllm:cache_config_info": ("gauge", frozenset(CACHE_FIELDS) | {"engine"}, None),
}


def make(max_lora: int = 2, **kw: object) -> ServerMetrics:
    cache = {"block_size": "16", "num_gpu_blocks": "2048", "enable_prefix_caching": "True"}
    return ServerMetrics(MODEL, cache_config=cache, max_lora=max_lora, max_model_len=MAX_MODEL_LEN, **kw)  # type: ignore[arg-type]


def families(m: ServerMetrics) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(m.render().decode())}


def value(m: ServerMetrics, sample_name: str, **labels: str) -> float:
    hits = [
        s.value
        for f in text_string_to_metric_families(m.render().decode())
        for s in f.samples
        if s.name == sample_name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(hits) == 1, (sample_name, labels, hits)
    return hits[0]


def test_every_metric_has_vllms_type_labels_and_buckets() -> None:
    m = make()
    m.set_lora(["a"], [], 1.0)  # the LoRA series appears once the scheduler reports
    fams = families(m)
    for name, (typ, labelnames, buckets) in EXPECTED.items():
        assert name in fams, name
        fam = fams[name]
        assert fam.type == typ, name
        assert fam.samples, name
        for s in fam.samples:
            extra = {"le"} if s.name.endswith("_bucket") else set()
            assert set(s.labels) == labelnames | extra, (name, s)
        if typ == "counter":
            assert {s.name for s in fam.samples} == {name + "_total"}
        if typ == "histogram":
            les = [s.labels["le"] for s in fam.samples if s.name == name + "_bucket"]
            assert buckets is not None
            assert les == [str(float(b)) for b in buckets] + ["+Inf"], name
            assert {s.name for s in fam.samples} == {name + "_bucket", name + "_count", name + "_sum"}


def test_no_other_vllm_families_and_created_series_as_vllm_shows_them() -> None:
    m = make()
    m.set_lora([], ["a"], 1.0)
    names = set(families(m))
    created = {n for n in names if n.endswith("_created")}
    assert names - created == set(EXPECTED)
    # prometheus_client's default, which vLLM (single API server, plain registry) leaves on
    want = {n + "_created" for n, (typ, _, _) in EXPECTED.items() if typ in ("counter", "histogram")}
    assert created == want


def test_bucket_builder_matches_vllm() -> None:
    assert build_1_2_5_buckets(100) == [1, 2, 5, 10, 20, 50, 100]
    assert build_1_2_5_buckets(MAX_MODEL_LEN) == TOKENS_4096
    assert build_1_2_5_buckets(1) == [1]


def test_request_success_has_every_finish_reason_from_start() -> None:
    fam = families(make())["vllm:request_success"]
    assert {s.labels["finished_reason"]: s.value for s in fam.samples} == {
        "stop": 0.0,
        "length": 0.0,
        "abort": 0.0,
        "error": 0.0,
    }


def test_cache_config_info_carries_every_cache_config_field() -> None:
    fam = families(make())["vllm:cache_config_info"]
    (s,) = fam.samples
    assert s.value == 1.0
    assert set(s.labels) == CACHE_FIELDS | {"engine"}
    assert "model_name" not in s.labels
    assert s.labels["block_size"] == "16"
    assert s.labels["num_gpu_blocks"] == "2048"
    assert s.labels["num_cpu_blocks"] == "0"
    assert s.labels["engine"] == "0"
    with pytest.raises(ValueError, match="CacheConfig field"):
        ServerMetrics(MODEL, cache_config={"not_a_field": "1"})


def test_gauges_follow_the_engine() -> None:
    m = make()
    m.set_queue(running=3, waiting=7)
    m.set_kv_usage(0.25)
    assert value(m, "vllm:num_requests_running") == 3
    assert value(m, "vllm:num_requests_waiting") == 7
    assert value(m, "vllm:kv_cache_usage_perc") == 0.25
    assert value(m, "vllm:gpu_cache_usage_perc") == 0.25
    assert value(m, "vllm:engine_sleep_state", sleep_state="awake") == 1
    m.set_sleep_state(sleeping=True, level=1)
    assert value(m, "vllm:engine_sleep_state", sleep_state="awake") == 0
    assert value(m, "vllm:engine_sleep_state", sleep_state="weights_offloaded") == 1
    with pytest.raises(ValueError):
        m.set_kv_usage(1.5)
    with pytest.raises(ValueError):
        m.set_kv_usage(float("nan"))


def test_legacy_gauge_can_be_left_out() -> None:
    assert "vllm:gpu_cache_usage_perc" not in families(make(legacy_gpu_cache_usage=False))


def test_counters_accumulate() -> None:
    m = make()
    m.add_prefix_cache(queries=128, hits=96)
    m.add_prefix_cache(queries=64, hits=0)
    m.add_preemptions(2)
    m.add_preemptions(1)
    assert value(m, "vllm:prefix_cache_queries_total") == 192
    assert value(m, "vllm:prefix_cache_hits_total") == 96
    assert value(m, "vllm:num_preemptions_total") == 3
    with pytest.raises(ValueError):
        m.add_prefix_cache(queries=10, hits=11)
    with pytest.raises(ValueError):
        m.add_preemptions(-1)


def test_iteration_tokens_histogram() -> None:
    m = make()
    for n in (1, 7, 300):
        m.add_iteration_tokens(n)
    assert value(m, "vllm:iteration_tokens_total_count") == 3
    assert value(m, "vllm:iteration_tokens_total_sum") == 308
    assert value(m, "vllm:iteration_tokens_total_bucket", le="8.0") == 2
    assert value(m, "vllm:iteration_tokens_total_bucket", le="256.0") == 2
    assert value(m, "vllm:iteration_tokens_total_bucket", le="512.0") == 3


@pytest.mark.parametrize(
    ("steps", "prompt", "generated"),
    [
        ([], 0, 0),
        ([(600, 1)], 600, 1),
        ([(600, 1), (0, 3), (10, 2)], 610, 6),
    ],
)
def test_token_counters_add_up_step_by_step(steps: list[tuple[int, int]], prompt: int, generated: int) -> None:
    m = make()
    for p, g in steps:
        m.add_step_tokens(p, g)
    assert value(m, "vllm:prompt_tokens_total") == prompt
    assert value(m, "vllm:generation_tokens_total") == generated


def test_step_token_counts_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="prompt_tokens"):
        make().add_step_tokens(-1, 0)


def test_finished_requests_fill_histograms_and_counters() -> None:
    m = make()
    m.observe_finished(
        ttft_s=0.2,
        e2e_s=2.2,
        queue_s=0.05,
        prefill_s=0.15,
        decode_s=2.0,
        itl_s=[0.02] * 100,
        prompt_tokens=600,
        generation_tokens=101,
        finish_reason="length",
        cached_tokens=512,
    )
    m.observe_finished(
        ttft_s=0.04,
        e2e_s=0.04,
        queue_s=0.0,
        prefill_s=0.04,
        decode_s=0.0,
        itl_s=None,
        prompt_tokens=10,
        generation_tokens=1,
        finish_reason="stop",
    )
    assert value(m, "vllm:request_success_total", finished_reason="length") == 1
    assert value(m, "vllm:request_success_total", finished_reason="stop") == 1
    assert value(m, "vllm:request_success_total", finished_reason="abort") == 0
    assert value(m, "vllm:prompt_tokens_total") == 0  # counted by the steps, not at the end (vLLM's timing)
    assert value(m, "vllm:time_to_first_token_seconds_count") == 2
    assert value(m, "vllm:time_to_first_token_seconds_sum") == pytest.approx(0.24)
    assert value(m, "vllm:time_to_first_token_seconds_bucket", le="0.04") == 1
    assert value(m, "vllm:inter_token_latency_seconds_count") == 100
    assert value(m, "vllm:inter_token_latency_seconds_sum") == pytest.approx(2.0)
    assert value(m, "vllm:inter_token_latency_seconds_bucket", le="0.01") == 0
    assert value(m, "vllm:inter_token_latency_seconds_bucket", le="0.025") == 100
    assert value(m, "vllm:e2e_request_latency_seconds_sum") == pytest.approx(2.24)
    assert value(m, "vllm:e2e_request_latency_seconds_bucket", le="0.3") == 1
    assert value(m, "vllm:request_queue_time_seconds_sum") == pytest.approx(0.05)
    assert value(m, "vllm:request_prefill_time_seconds_sum") == pytest.approx(0.19)
    assert value(m, "vllm:request_decode_time_seconds_sum") == pytest.approx(2.0)
    assert value(m, "vllm:request_inference_time_seconds_sum") == pytest.approx(2.19)
    # mean time per output token: decode time over the tokens after the first, 0 for a one-token request
    assert value(m, "vllm:request_time_per_output_token_seconds_sum") == pytest.approx(0.02)
    assert value(m, "vllm:request_time_per_output_token_seconds_count") == 2
    assert value(m, "vllm:request_prompt_tokens_sum") == 610
    assert value(m, "vllm:request_prompt_tokens_bucket", le="500.0") == 1
    assert value(m, "vllm:request_generation_tokens_sum") == 102
    assert value(m, "vllm:request_prefill_kv_computed_tokens_sum") == 88 + 10


def test_client_aborts_leave_the_exposition_alone() -> None:
    m = make()
    before = value(m, "vllm:request_success_total", finished_reason="abort")
    m.observe_aborted()
    assert m.client_aborts == 1
    assert value(m, "vllm:request_success_total", finished_reason="abort") == before == 0
    assert value(m, "vllm:e2e_request_latency_seconds_count") == 0


def test_observe_finished_rejects_bad_input() -> None:
    m = make()
    good: dict[str, object] = {
        "ttft_s": 0.1,
        "e2e_s": 0.2,
        "queue_s": 0.0,
        "prefill_s": 0.1,
        "decode_s": 0.1,
        "itl_s": [0.1],
        "prompt_tokens": 5,
        "generation_tokens": 2,
        "finish_reason": "stop",
    }
    for bad in ({"finish_reason": "eos"}, {"e2e_s": -1.0}, {"itl_s": [float("inf")]}, {"cached_tokens": 6}):
        with pytest.raises(ValueError):
            m.observe_finished(**{**good, **bad})  # type: ignore[arg-type]
    assert value(m, "vllm:e2e_request_latency_seconds_count") == 0


def test_lora_info_keeps_every_combination_with_its_timestamp() -> None:
    m = make(max_lora=4)
    m.set_lora(["sql"], [], 100.0)
    m.set_lora(["sql", "chat"], ["math"], 101.5)
    m.set_lora(["sql"], [], 102.0)
    fam = families(m)["vllm:lora_requests_info"]
    got = {(s.labels["running_lora_adapters"], s.labels["waiting_lora_adapters"]): s.value for s in fam.samples}
    assert got == {("sql", ""): 102.0, ("sql,chat", "math"): 101.5}
    assert {s.labels["max_lora"] for s in fam.samples} == {"4"}


def test_lora_info_absent_without_lora() -> None:
    m = make(max_lora=0)
    assert "vllm:lora_requests_info" not in families(m)
    with pytest.raises(RuntimeError):
        m.set_lora([], [], 1.0)


def test_instances_do_not_share_state() -> None:
    a = ServerMetrics("model-a", max_lora=1)
    b = ServerMetrics("model-b", engine="1")
    a.set_queue(running=5, waiting=1)
    a.add_prefix_cache(queries=10, hits=4)
    a.set_lora(["x"], [], 1.0)
    assert value(a, "vllm:num_requests_running", model_name="model-a", engine="0") == 5
    assert value(b, "vllm:num_requests_running", model_name="model-b", engine="1") == 0
    assert value(b, "vllm:prefix_cache_hits_total") == 0
    assert "model-a" not in b.render().decode()
    assert "vllm:lora_requests_info" not in families(b)
    assert value(b, "vllm:cache_config_info", engine="1") == 1


def test_render_is_text_format() -> None:
    body = make().render()
    assert isinstance(body, bytes)
    assert body.startswith(b"# HELP vllm:")
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
