"""Reads a vLLM server's `/metrics` text into `EndpointMetrics`: the input check for everything scheduling reads.

Why it exists: the scorers trust `EndpointMetrics` (queue lengths are non-negative integers, KV usage is a fraction),
so the text a model server sends is checked here, where it enters, and a broken exposition is a typed error rather
than a strange score. The scraper turns that error into a failed scrape (the endpoint stops being a candidate).

Series read (vLLM V1 names, as `sim/fleet/metrics.py` and docs/fleet-metrics.md list them):

- waiting, running: `vllm:num_requests_waiting`, `vllm:num_requests_running`; required, summed over engines;
- kv_usage: `vllm:kv_cache_usage_perc`, else the legacy `vllm:gpu_cache_usage_perc`; required, mean over engines;
- active/waiting LoRAs, max_loras: the labels of `vllm:lora_requests_info` (comma-joined adapter names); optional;
  vLLM keeps every label combination it ever set, with the time it was set as the value, so the series with the
  largest value is the current one (as GIE reads it);
- block_size, num_gpu_blocks: labels of `vllm:cache_config_info`; optional, `"None"` means unknown;
- prompt_tokens_total: `vllm:prompt_tokens_total`, summed over engines; optional (the prefix index learns its bytes per
  token from it: scorer/index_sizing.py).

Required values must be finite and non-negative (KV usage at most 1), and a queue at most `MAX_COUNT`: NaN, a
negative or impossibly long queue or a missing series raise `MetricsError`. Integers are bounded so that whatever a
scorer computes from them stays a float (1e308 waiting requests would overflow its arithmetic). Optional series
that are malformed (or out of bounds) are ignored and reported in `ParsedMetrics.warnings`, so a LoRA label typo
cannot take a healthy replica out of rotation.

Only the lines of those series are parsed: a vLLM exposition is ~400 lines of histograms, and parsing all of it
costs ~15x more (measured ~13 ms vs ~0.8 ms per scrape) for nothing. Those lines are read by one regular expression
when they have the form vLLM's prometheus_client writes (`name{label="value",...} value [timestamp]`, known TYPE
lines), and by `prometheus_client.parser` otherwise, so both give the same samples and the same errors (a property
test compares them). Why: the picker scrapes every server ten times a second, and the reference parser walks label
values a character at a time (vLLM's `cache_config_info` has ~23 labels): 160 of the 260 us a twin's exposition
cost, the largest part of the scrape's CPU after the HTTP exchange.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from scorer.types import EndpointMetrics

WAITING = "vllm:num_requests_waiting"
RUNNING = "vllm:num_requests_running"
KV_USAGE = "vllm:kv_cache_usage_perc"
KV_USAGE_LEGACY = "vllm:gpu_cache_usage_perc"  # vLLM <= 0.10 (hidden in 0.11, gone in 0.13)
LORA_INFO = "vllm:lora_requests_info"
CACHE_CONFIG = "vllm:cache_config_info"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
SERIES = (WAITING, RUNNING, KV_USAGE, KV_USAGE_LEGACY, LORA_INFO, CACHE_CONFIG, PROMPT_TOKENS)
# the metric families of those series: a counter's TYPE line names its family without `_total`
_FAMILIES = tuple(name.removesuffix("_total") for name in SERIES)
_TYPE_PREFIXES = tuple(f"# TYPE {family} " for family in _FAMILIES)
_RELEVANT_PREFIXES = SERIES + _TYPE_PREFIXES
# TYPE lines that leave every sample's name as written (a gauge family typed `counter` would get `_total` appended)
_PLAIN_TYPES = frozenset(
    f"# TYPE {family} {'counter' if name == PROMPT_TOKENS else 'gauge'}"
    for name, family in zip(SERIES, _FAMILIES, strict=True)
)
# a sample line as prometheus_client writes it; any other form goes to the reference parser
_LABEL_NAME = r"(?!__)[a-zA-Z_][a-zA-Z0-9_]*"
_LABEL_VALUE = r'"(?:[^"\\]|\\[\\n"])*"'
_SAMPLE = re.compile(
    rf"(?P<name>{'|'.join(re.escape(n) for n in SERIES)})"
    rf"(?:\{{(?P<labels>{_LABEL_NAME}={_LABEL_VALUE}(?:,{_LABEL_NAME}={_LABEL_VALUE})*)?\}})?"
    r" (?P<value>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?Inf|NaN)"
    r"(?: -?[0-9]{1,15})?"
)
_LABEL = re.compile(rf"({_LABEL_NAME})=({_LABEL_VALUE})")
_ESCAPE = re.compile(r'\\([\\n"])')
_INTEGER = re.compile(r"[+-]?[0-9]+")
MAX_TOKENS = 2.0**53  # a counter beyond this has lost integer precision in a float: no real server counts that far
MAX_COUNT = 2**31 - 1  # a queue, a block count or a block size beyond this is no real server's


class MetricsError(ValueError):
    """The exposition lacks a required series or carries a value the scheduler cannot use."""


@dataclass(frozen=True)
class ParsedMetrics:
    metrics: EndpointMetrics
    warnings: tuple[str, ...] = field(default=())


def parse_vllm_metrics(text: str, scraped_at: float = 0.0) -> ParsedMetrics:
    """Parse one `/metrics` body. Raises `MetricsError` (garbage, missing or impossible required values)."""
    samples = _samples(text)
    warnings: list[str] = []
    waiting = _count(samples, WAITING)
    running = _count(samples, RUNNING)
    kv_name = KV_USAGE if samples.get(KV_USAGE) else KV_USAGE_LEGACY
    if not samples.get(kv_name):
        raise MetricsError(f"{KV_USAGE}: missing (nor the legacy {KV_USAGE_LEGACY})")
    kv_values = [_finite(kv_name, v) for _labels, v in samples[kv_name]]
    kv_usage = sum(kv_values) / len(kv_values)
    if not 0.0 <= kv_usage <= 1.0:
        raise MetricsError(f"{kv_name}: must be a fraction in [0, 1], got {kv_usage}")
    active, waiting_loras, max_loras = _lora(samples.get(LORA_INFO, []), warnings)
    block_size, num_gpu_blocks = _cache_config(samples.get(CACHE_CONFIG, []), warnings)
    prompt_tokens = _prompt_tokens(samples.get(PROMPT_TOKENS, []), warnings)
    metrics = EndpointMetrics(
        waiting=waiting,
        running=running,
        kv_usage=kv_usage,
        active_loras=active,
        waiting_loras=waiting_loras,
        max_loras=max_loras,
        block_size=block_size,
        num_gpu_blocks=num_gpu_blocks,
        prompt_tokens_total=prompt_tokens,
        scraped_at=scraped_at,
    )
    return ParsedMetrics(metrics, tuple(warnings))


Sample = tuple[dict[str, str], float]


def _samples(text: str) -> dict[str, list[Sample]]:
    lines = [line for line in text.splitlines() if line.startswith(_RELEVANT_PREFIXES)]
    try:
        fast = _written_samples(lines)
        return fast if fast is not None else _reference_samples(lines)
    # what the parser raises on a malformed line; OverflowError: an integer value too large for a float ("9" * 400)
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise MetricsError(f"malformed exposition: {exc}") from None


def _written_samples(lines: list[str]) -> dict[str, list[Sample]] | None:
    """The samples of `lines` if every one has the form prometheus_client writes, else None (not an error)."""
    out: dict[str, list[Sample]] = {}
    for line in lines:
        if line in _PLAIN_TYPES:
            continue
        m = _SAMPLE.fullmatch(line)
        if m is None:
            return None
        labels: dict[str, str] = {}
        raw = m.group("labels")
        if raw:
            found = 0
            for label in _LABEL.finditer(raw):
                value = label.group(2)[1:-1]
                labels[label.group(1)] = _ESCAPE.sub(_unescape, value) if "\\" in value else value
                found += 1
            if found != len(labels):
                return None  # a label named twice: the reference parser's error
        value = m.group("value")
        out.setdefault(m.group("name"), []).append((labels, float(int(value) if _INTEGER.fullmatch(value) else value)))
    return out


def _unescape(m: re.Match[str]) -> str:
    return "\n" if m.group(1) == "n" else m.group(1)


def _reference_samples(lines: list[str]) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families("\n".join(lines) + "\n"):
        for sample in family.samples:
            if sample.name in SERIES:
                out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out


def _required(samples: dict[str, list[Sample]], name: str) -> list[Sample]:
    found = samples.get(name)
    if not found:
        raise MetricsError(f"{name}: missing")
    return found


def _finite(name: str, value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise MetricsError(f"{name}: must be a finite non-negative number, got {value}")
    return value


def _count(samples: dict[str, list[Sample]], name: str) -> int:
    total = sum(_finite(name, v) for _labels, v in _required(samples, name))
    if total > MAX_COUNT:  # inf too, when the engines' values add up beyond a float
        raise MetricsError(f"{name}: must be at most {MAX_COUNT}, got {total}")
    return round(total)


def _names(value: str) -> frozenset[str]:
    return frozenset(n.strip() for n in value.split(",") if n.strip())


def _lora(found: list[Sample], warnings: list[str]) -> tuple[frozenset[str], frozenset[str], int]:
    usable = [(labels, v) for labels, v in found if not math.isnan(v)]
    if not usable:
        return frozenset(), frozenset(), 0
    labels, _ = max(usable, key=lambda s: s[1])
    try:
        max_loras = int(labels.get("max_lora", "0"))
        if not 0 <= max_loras <= MAX_COUNT:
            raise ValueError(max_loras)
    except ValueError:
        warnings.append(f"{LORA_INFO}: max_lora is not an integer in [0, {MAX_COUNT}]: {labels.get('max_lora')!r}")
        return frozenset(), frozenset(), 0
    return _names(labels.get("running_lora_adapters", "")), _names(labels.get("waiting_lora_adapters", "")), max_loras


def _prompt_tokens(found: list[Sample], warnings: list[str]) -> float | None:
    if not found:
        return None
    total = sum(v for _labels, v in found)
    if not 0.0 <= total <= MAX_TOKENS:  # NaN and infinities fail this too
        warnings.append(f"{PROMPT_TOKENS}: must be a count in [0, 2^53], got {total}")
        return None
    return total


def _cache_config(found: list[Sample], warnings: list[str]) -> tuple[int | None, int | None]:
    if not found:
        return None, None
    labels = found[0][0]
    return _positive(labels, "block_size", warnings), _positive(labels, "num_gpu_blocks", warnings)


def _positive(labels: dict[str, str], key: str, warnings: list[str]) -> int | None:
    raw = labels.get(key, "None")
    if raw in ("None", ""):
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_COUNT:
        warnings.append(f"{CACHE_CONFIG}: {key} is not a positive integer up to {MAX_COUNT}: {raw!r}")
        return None
    return value
