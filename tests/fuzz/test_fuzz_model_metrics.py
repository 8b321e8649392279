"""Fuzz target: the vLLM /metrics parser (scorer/sources/model_metrics.py `parse_vllm_metrics`) on any text.

Invariant: `ParsedMetrics` whose values the scorers can trust (non-negative integer queues, a KV usage in [0, 1],
positive or absent block figures) or `MetricsError`; nothing else escapes. "Trust" is checked by scheduling with
them: every plugin that reads scraped metrics scores a request against an endpoint carrying the parsed metrics
(beside a healthy one) without raising. Texts are real-looking expositions with any values, labels and line damage,
or arbitrary text.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

from fuzz_support import counted
from hypothesis import given
from hypothesis import strategies as st

from scorer.config import load_config
from scorer.director import Director
from scorer.scheduler import Scheduler
from scorer.sources.model_metrics import (
    _RELEVANT_PREFIXES,
    SERIES,
    MetricsError,
    Sample,
    _reference_samples,
    _written_samples,
    parse_vllm_metrics,
)
from scorer.types import Endpoint, EndpointMetrics, LLMRequest, NoEndpointError

# every plugin that reads scraped metrics, in one profile
CONFIG = """
apiVersion: autonomic.dev/v1alpha1
kind: EndpointPickerConfig
plugins:
- {type: saturation-filter}
- {type: queue-scorer}
- {type: kv-cache-utilization-scorer}
- {type: running-requests-scorer}
- {type: ttft-estimate-scorer}
- {type: lora-affinity-scorer}
- {type: device-capacity-scorer}
- {type: active-request-scorer}
- {type: max-score-picker, parameters: {maxNumOfEndpoints: 2}}
schedulingProfiles:
- name: default
  plugins:
  - {pluginRef: saturation-filter}
  - {pluginRef: queue-scorer}
  - {pluginRef: kv-cache-utilization-scorer}
  - {pluginRef: running-requests-scorer}
  - {pluginRef: ttft-estimate-scorer}
  - {pluginRef: lora-affinity-scorer}
  - {pluginRef: device-capacity-scorer}
  - {pluginRef: active-request-scorer}
  - {pluginRef: max-score-picker}
"""
SCHEDULER = Scheduler(load_config(CONFIG))

NUMBERS = st.sampled_from(
    [
        "0",
        "1",
        "3.0",
        "-1",
        "NaN",
        "+Inf",
        "-Inf",
        "1e308",
        "1.7976931348623157e308",
        "1e309",
        "0.5",
        "1.0000001",
        "",
        "0x10",
        "1_000",
        "٣",
        "1e-400",
        "9" * 400,
    ]
) | st.floats().map(repr)
LABEL_VALUES = st.sampled_from(
    ["0", "4", "-2", "None", "", "16", "x", "9" * 5000, "sql,chat", ",", '\\"', "\\n"]
) | st.text(max_size=8)
LABEL_NAMES = st.sampled_from(
    [
        "engine",
        "model_name",
        "max_lora",
        "running_lora_adapters",
        "waiting_lora_adapters",
        "block_size",
        "num_gpu_blocks",
    ]
) | st.text(max_size=6)


@st.composite
def sample_line(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(SERIES) | st.text(max_size=12))
    labels = draw(st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=4))
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
    braces = bool(labels) or draw(st.booleans())
    line = f"{name}{{{inner}}} {draw(NUMBERS)}" if braces else f"{name} {draw(NUMBERS)}"
    if draw(st.integers(0, 5)) == 0:
        line += f" {draw(st.sampled_from(['1700000000', '-1', 'x', '1e3']))}"  # a timestamp, or not
    return line


REQUIRED = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc")
PLAIN = st.sampled_from(["0", "1", "3", "0.25"])


@st.composite
def exposition(draw: st.DrawFn) -> str:
    lines: list[str] = []
    if draw(st.booleans()):  # the required series, for 1 to 3 engines, usually with sane values
        for name in REQUIRED:
            for engine in range(draw(st.integers(1, 3))):
                lines.append(f'{name}{{engine="{engine}"}} {draw(PLAIN | NUMBERS)}')
        if draw(st.booleans()):
            labels = {k: draw(LABEL_VALUES) for k in ("max_lora", "running_lora_adapters", "waiting_lora_adapters")}
            inner = ",".join(f'{k}="{v}"' for k, v in labels.items())
            lines.append(f"vllm:lora_requests_info{{{inner}}} {draw(NUMBERS)}")
        if draw(st.booleans()):
            block_size, blocks = draw(LABEL_VALUES), draw(LABEL_VALUES | st.just("1" * 300))
            lines.append(f'vllm:cache_config_info{{block_size="{block_size}",num_gpu_blocks="{blocks}"}} 1.0')
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["sample", "sample", "sample", "type", "help", "junk"]))
        if kind == "sample":
            lines.append(draw(sample_line()))
        elif kind == "type":
            kind_word = draw(st.sampled_from(["gauge", "counter", "histogram", "x", ""]))
            lines.append(f"# TYPE {draw(st.sampled_from(SERIES))} {kind_word}")
        elif kind == "help":
            lines.append(f"# HELP {draw(st.sampled_from(SERIES))} {draw(st.text(max_size=10))}")
        else:
            lines.append(draw(st.text(max_size=20)))
    sep = draw(st.sampled_from(["\n", "\n", "\r\n", "\n\n"]))
    return sep.join(lines) + draw(st.sampled_from(["\n", "", "\n# EOF\n"]))


@given(text=exposition() | st.text(max_size=200), scraped_at=st.floats(allow_nan=False))
@counted
def test_parse_vllm_metrics_returns_trustworthy_metrics_or_a_metrics_error(text: str, scraped_at: float):
    try:
        parsed = parse_vllm_metrics(text, scraped_at)
    except MetricsError as exc:
        assert str(exc)
        return
    m = parsed.metrics
    assert isinstance(m.waiting, int) and m.waiting >= 0
    assert isinstance(m.running, int) and m.running >= 0
    assert math.isfinite(m.kv_usage) and 0.0 <= m.kv_usage <= 1.0
    assert isinstance(m.max_loras, int) and m.max_loras >= 0
    assert m.block_size is None or m.block_size >= 1
    assert m.num_gpu_blocks is None or m.num_gpu_blocks >= 1
    assert m.prompt_tokens_total is None or (math.isfinite(m.prompt_tokens_total) and m.prompt_tokens_total >= 0)
    director = Director(SCHEDULER, clock=lambda: scraped_at)
    director.set_endpoints([Endpoint("10.0.0.1:8000"), Endpoint("10.0.0.2:8000")])
    director.update_metrics("10.0.0.1:8000", m)
    director.update_metrics("10.0.0.2:8000", EndpointMetrics(waiting=1, running=1, kv_usage=0.5, scraped_at=scraped_at))
    for model in ("m", "sql"):
        with contextlib.suppress(NoEndpointError):
            director.pick(LLMRequest("r", model, prompt="hello " * 20))


def _outcome(read: Callable[[list[str]], dict[str, list[Sample]] | None], lines: list[str]) -> object:
    """What a sample reader makes of `lines`: its samples with values as reprs (NaN equals NaN), or its error type."""
    try:
        samples = read(lines)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        return type(exc).__name__ if isinstance(exc, OverflowError) else "ValueError"
    if samples is None:
        return None
    return {name: [(labels, repr(value)) for labels, value in found] for name, found in samples.items()}


@given(text=exposition())
@counted
def test_the_written_form_reads_as_the_reference_parser_reads_it(text: str):
    """The regular-expression reader either declines or gives exactly prometheus_client's samples and errors."""
    lines = [line for line in text.splitlines() if line.startswith(_RELEVANT_PREFIXES)]
    fast = _outcome(_written_samples, lines)
    if fast is not None:
        assert fast == _outcome(_reference_samples, lines)
