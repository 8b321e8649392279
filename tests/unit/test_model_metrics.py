"""The vLLM /metrics parser: what the scheduler reads from real expositions, and what it refuses."""

from __future__ import annotations

import math

import pytest

from scorer.sources.model_metrics import (
    _RELEVANT_PREFIXES,
    CACHE_CONFIG,
    LORA_INFO,
    MetricsError,
    _reference_samples,
    _written_samples,
    parse_vllm_metrics,
)
from sim.fleet.metrics import ServerMetrics

# The scheduler-relevant part of a vLLM V1 (v0.13) exposition, as the server prints it (HELP/TYPE lines,
# model_name/engine labels, the info-style gauges), plus a histogram the parser must skip.
VLLM_TEXT = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 7.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.4375
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="meta-llama/Llama-3.1-8B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.25
# HELP vllm:lora_requests_info Running stats on lora requests.
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql",waiting_lora_adapters=""} 1.7e+09
vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql,chat",waiting_lora_adapters="math"} 1.8e+09
# HELP vllm:cache_config_info Information of the LLMEngine CacheConfig
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",cache_dtype="auto",engine="0",num_cpu_blocks="0",num_gpu_blocks="28672"} 1.0
"""

LEGACY_TEXT = """\
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 1.0
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="m"} 0.0
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name="m"} 0.25
"""

TWO_ENGINES = """\
vllm:num_requests_running{engine="0",model_name="m"} 2
vllm:num_requests_running{engine="1",model_name="m"} 3
vllm:num_requests_waiting{engine="0",model_name="m"} 1
vllm:num_requests_waiting{engine="1",model_name="m"} 4
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.2
vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.6
"""

BASE = "vllm:num_requests_running 1\nvllm:num_requests_waiting 2\nvllm:kv_cache_usage_perc 0.5\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            VLLM_TEXT,
            {
                "waiting": 3,
                "running": 7,
                "kv_usage": 0.4375,
                "active_loras": frozenset({"sql", "chat"}),  # the newest series wins
                "waiting_loras": frozenset({"math"}),
                "max_loras": 4,
                "block_size": 16,
                "num_gpu_blocks": 28672,
            },
            id="vllm-v0.13",
        ),
        pytest.param(LEGACY_TEXT, {"waiting": 0, "running": 1, "kv_usage": 0.25, "block_size": None}, id="legacy-kv"),
        pytest.param(TWO_ENGINES, {"waiting": 5, "running": 5, "kv_usage": pytest.approx(0.4)}, id="two-engines"),
        pytest.param(BASE, {"waiting": 2, "running": 1, "max_loras": 0, "active_loras": frozenset()}, id="no-lora"),
        pytest.param(
            BASE + 'vllm:kv_cache_usage_perc{engine="1"} 0.7\n', {"kv_usage": pytest.approx(0.6)}, id="kv-mean"
        ),
        pytest.param(BASE.replace(" 2\n", " 2.6\n"), {"waiting": 3}, id="fractional-count-rounds"),
        pytest.param(BASE, {"prompt_tokens_total": None}, id="no-prompt-counter"),
        pytest.param(
            BASE + "# TYPE vllm:prompt_tokens counter\n"
            'vllm:prompt_tokens_total{engine="0",model_name="m"} 1234.0\n'
            'vllm:prompt_tokens_created{engine="0",model_name="m"} 1.7e9\n'
            'vllm:prompt_tokens_total{engine="1",model_name="m"} 66.0\n',
            {"prompt_tokens_total": 1300.0},
            id="prompt-counter-summed-over-engines",
        ),
        pytest.param(
            BASE + 'vllm:cache_config_info{block_size="None",num_gpu_blocks="None"} 1\n',
            {"block_size": None, "num_gpu_blocks": None},
            id="cache-config-unknown",
        ),
    ],
)
def test_parses(text: str, expected: dict[str, object]):
    metrics = parse_vllm_metrics(text, scraped_at=12.5).metrics
    assert metrics.scraped_at == 12.5
    for field, value in expected.items():
        assert getattr(metrics, field) == value, field


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "vllm:num_requests_waiting: missing", id="empty"),
        pytest.param("<html><body>404</body></html>", "vllm:num_requests_waiting: missing", id="html"),
        pytest.param("\x00\xff garbage {{{", "vllm:num_requests_waiting: missing", id="binary-garbage"),
        pytest.param(
            BASE.replace("vllm:num_requests_running 1\n", ""), "vllm:num_requests_running: missing", id="no-run"
        ),
        pytest.param(
            BASE.replace("vllm:kv_cache_usage_perc 0.5\n", ""),
            "vllm:kv_cache_usage_perc: missing (nor the legacy vllm:gpu_cache_usage_perc)",
            id="no-kv",
        ),
        pytest.param(BASE.replace(" 2\n", " NaN\n"), "vllm:num_requests_waiting: must be a finite", id="nan-waiting"),
        pytest.param(BASE.replace(" 1\n", " +Inf\n"), "vllm:num_requests_running: must be a finite", id="inf-running"),
        pytest.param(BASE.replace(" 2\n", " -1\n"), "vllm:num_requests_waiting: must be a finite", id="negative"),
        pytest.param(BASE.replace(" 0.5\n", " NaN\n"), "vllm:kv_cache_usage_perc: must be a finite", id="nan-kv"),
        pytest.param(BASE.replace(" 0.5\n", " 1.5\n"), "must be a fraction in [0, 1]", id="kv-over-1"),
        pytest.param(BASE.replace(" 2\n", " two\n"), "malformed exposition", id="not-a-number"),
        pytest.param(BASE.replace("waiting 2", 'waiting{model_name="m} 2'), "malformed exposition", id="bad-labels"),
        pytest.param(BASE.replace(" 2\n", f" {'9' * 400}\n"), "malformed exposition", id="int-beyond-float"),
        pytest.param(
            BASE.replace("waiting 2", 'waiting{engine="0"} 1e308\nvllm:num_requests_waiting{engine="1"} 1e308'),
            "vllm:num_requests_waiting: must be at most 2147483647, got inf",
            id="engines-add-up-beyond-a-float",
        ),
        pytest.param(BASE.replace(" 1\n", " 1e12\n"), "vllm:num_requests_running: must be at most", id="huge-queue"),
    ],
)
def test_refuses(text: str, message: str):
    with pytest.raises(MetricsError) as err:
        parse_vllm_metrics(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ('vllm:lora_requests_info{max_lora="x",running_lora_adapters="a",waiting_lora_adapters=""} 5\n', "max_lora"),
        ('vllm:cache_config_info{block_size="0",num_gpu_blocks="12"} 1\n', "block_size"),
        ("vllm:prompt_tokens_total NaN\n", "vllm:prompt_tokens_total"),
        ("vllm:prompt_tokens_total -5\n", "vllm:prompt_tokens_total"),
        ("vllm:prompt_tokens_total 1e300\n", "vllm:prompt_tokens_total"),
        ('vllm:cache_config_info{block_size="16",num_gpu_blocks="lots"} 1\n', "num_gpu_blocks"),
        (f'vllm:cache_config_info{{block_size="16",num_gpu_blocks="{"1" * 400}"}} 1\n', "num_gpu_blocks"),
        (
            'vllm:lora_requests_info{max_lora="99999999999",running_lora_adapters="",waiting_lora_adapters=""} 5\n',
            "max",
        ),
    ],
)
def test_malformed_optional_series_are_warnings_not_errors(extra: str, warning: str):
    parsed = parse_vllm_metrics(BASE + extra)
    assert parsed.metrics.waiting == 2  # the endpoint stays usable
    assert any(warning in w for w in parsed.warnings)


def test_lora_nan_timestamps_are_ignored():
    text = BASE + 'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a",waiting_lora_adapters=""} NaN\n'
    assert parse_vllm_metrics(text).metrics.active_loras == frozenset()


def test_the_fleet_twin_exposition_round_trips():
    """What the twin serves (vLLM's full exposition, histograms included) reads back as what it was set to."""
    twin = ServerMetrics("meta-llama/Llama-3.1-8B-Instruct", cache_config={"num_gpu_blocks": 512}, max_lora=2)
    twin.set_queue(running=4, waiting=9)
    twin.set_kv_usage(0.75)
    twin.set_lora(["sql-adapter"], [], now=100.0)
    twin.observe_finished(
        ttft_s=0.1, e2e_s=1.0, queue_s=0.0, prefill_s=0.1, decode_s=0.9, itl_s=[0.1], prompt_tokens=10,
        generation_tokens=2, finish_reason="stop",
    )  # fmt: skip
    twin.add_step_tokens(10, 2)
    m = parse_vllm_metrics(twin.render().decode()).metrics
    assert m.prompt_tokens_total == 10
    assert (m.waiting, m.running, m.kv_usage) == (9, 4, 0.75)
    assert (m.active_loras, m.max_loras, m.block_size, m.num_gpu_blocks) == (frozenset({"sql-adapter"}), 2, 16, 512)
    assert not math.isnan(m.kv_usage)


def test_the_fleet_twin_exposition_is_read_without_the_reference_parser():
    """vLLM's form (what the twin writes: its TYPE lines, ~23 labels on cache_config_info) takes the fast reader."""
    twin = ServerMetrics("meta-llama/Llama-3.1-8B-Instruct", cache_config={"num_gpu_blocks": "512"}, max_lora=2)
    twin.set_queue(running=4, waiting=9)
    twin.set_lora(["sql-adapter"], ["a\\b"], now=100.0)
    lines = [line for line in twin.render().decode().splitlines() if line.startswith(_RELEVANT_PREFIXES)]
    assert any(line.startswith(CACHE_CONFIG) for line in lines) and any(line.startswith("# TYPE") for line in lines)
    written = _written_samples(lines)
    assert written is not None
    assert written == _reference_samples(lines)
    assert written[LORA_INFO][0][0]["waiting_lora_adapters"] == "a\\b"
