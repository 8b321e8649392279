"""prometheus.yml and the descheduler's recording rules, rendered for the twin's Prometheus (pure functions).

Why it exists: the twin runs a real Prometheus with the rules the operator installs
(deploy/prometheus/descheduler-rules.yaml), but tests cannot wait minutes for 1m rates and 5m quantiles. The
rules file keeps the reference windows; `render_rules` swaps `[1m]`, `[5m]`, `[10m]` and the group interval
for the configured ones (record names are unchanged, so `...:avg1m` then means "over the rate window").

Jobs: `node-exporter` (file_sd: one target per node, `instance` = node name, see exporter.py),
`kube-state-metrics` (the twin's node series), and any extra `(job, host:port[/path])` targets, e.g. the
controller's own metrics so the cooldown rules can count its evictions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RULES_PATH = Path(__file__).resolve().parents[2] / "deploy/prometheus/descheduler-rules.yaml"
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")
_REFERENCE = {"rate": "1m", "smoothing": "5m", "cooldown": "10m"}


@dataclass(frozen=True)
class RuleWindows:
    rate: str = "1m"  # rate() / avg_over_time() window of the avg1m rules
    smoothing: str = "5m"  # quantile_over_time() window of the p66_5m rules
    cooldown: str = "10m"  # increase() window of the eviction-count rule
    interval: str = "30s"  # evaluation interval of the rule group

    def check(self) -> None:
        for name, value in vars(self).items():
            if not _DURATION.match(value) or not any(c != "0" for c in re.sub(r"[a-z]", "", value)):
                raise ValueError(f"rule window {name}: {value!r} is not a positive Prometheus duration (e.g. 30s, 1m)")


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration ("5s", "800ms")."""
    ms = max(1, round(seconds * 1000))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def render_rules(text: str, windows: RuleWindows) -> str:
    """The rules file with the reference windows replaced (comment lines are left as they are)."""
    windows.check()
    wanted = {_REFERENCE[k]: getattr(windows, k) for k in _REFERENCE}
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        line = re.sub(r"\[(1m|5m|10m)\]", lambda m: f"[{wanted[m.group(1)]}]", line)
        line = re.sub(r"^(\s*interval:\s*)\S+", lambda m: m.group(1) + windows.interval, line)
        out.append(line)
    return "".join(out)


def scrape_timeout(interval_s: float) -> float:
    return min(10.0, interval_s * 0.8)


def render_config(
    *,
    scrape_interval_s: float,
    rules_path: Path,
    node_targets_path: Path,
    exporter_address: str,
    ksm_path: str,
    extra_targets: Sequence[tuple[str, str]] = (),
) -> str:
    """prometheus.yml for the twin."""
    if scrape_interval_s <= 0:
        raise ValueError("scrape interval must be > 0")
    interval = duration(scrape_interval_s)
    jobs: list[dict[str, Any]] = [
        {
            "job_name": "node-exporter",
            "file_sd_configs": [{"files": [str(node_targets_path)], "refresh_interval": interval}],
        },
        {
            "job_name": "kube-state-metrics",
            "metrics_path": ksm_path,
            "static_configs": [{"targets": [exporter_address]}],
        },
    ]
    for job, target in extra_targets:
        address, _, path = target.partition("/")
        jobs.append({"job_name": job, "metrics_path": "/" + path, "static_configs": [{"targets": [address]}]})
    config = {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": duration(scrape_timeout(scrape_interval_s)),
            "evaluation_interval": interval,
        },
        "rule_files": [str(rules_path)],
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def parse_scrape_target(spec: str) -> tuple[str, str]:
    """`JOB=HOST:PORT[/PATH]` (CLI --scrape) -> (job, "host:port/path"); the path defaults to /metrics."""
    job, sep, target = spec.partition("=")
    address, _, path = target.partition("/")
    host, _, port = address.rpartition(":")
    if not sep or not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_-]*", job) or not host or not port.isdigit():
        raise ValueError(f"scrape target {spec!r}: expected JOB=HOST:PORT[/PATH]")
    return job, f"{address}/{path or 'metrics'}"
