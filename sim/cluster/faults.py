"""Fault knobs of the cluster twin, set through the admin API (`/_twin/...`, see admin.py).

Why it exists: a controller must survive a flaky apiserver (errors, latency, dropped watches), nodes going
NotReady and migrations that fail; tests turn these on deliberately instead of hoping for them.

- `error_rate` / `error_status`: that fraction of resource requests (not discovery, not `/_twin`) is answered
  with a 500 InternalError, 503 ServiceUnavailable or 429 TooManyRequests Status before reaching the store, or,
  for 409, that fraction of writes (POST, PUT, PATCH, DELETE) with a 409 Conflict (a read cannot conflict);
- `latency_s`: real seconds added before every resource request is handled (latency is a property of the
  network, so it is not scaled by --time-scale);
- `fail_next_migrations`: the next N migrations that reach Running fail (`failureReason` says so); the source
  keeps the VMI, as after a real failed migration;
- `scrape`: node name (or "*" for every node) -> how its node-exporter endpoint misbehaves: "error" answers
  503, "stall" answers only after the scrape has timed out. Prometheus records `up == 0` and the node's series
  go stale: the gaps a controller must tolerate (ref §5 pain 6). The node's counters keep counting meanwhile.
  "nan", "inflate" and "frozen" answer 200 with bad data: NaN pressure, pressure counters x 100 (rates above 1),
  or the same samples with an old explicit timestamp (scrape_faults.py).
Node NotReady and dropped watches are actions, not state; the admin API performs them directly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

SCRAPE_MODES = ("error", "stall", "nan", "inflate", "frozen")  # the last three: sim/cluster/scrape_faults.py
API_STATUSES = (409, 429, 500, 503)


class FaultError(ValueError):
    pass


@dataclass
class FaultState:
    error_rate: float = 0.0
    error_status: int = 500
    latency_s: float = 0.0
    fail_next_migrations: int = 0
    fail_reason: str = "injected failure: migration aborted by the twin's fault knob"
    scrape: dict[str, str] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def api_error_now(self, method: str = "GET") -> bool:
        if self.error_status == 409 and method in ("GET", "HEAD"):
            return False
        return self.error_rate > 0 and self.rng.random() < self.error_rate

    def take_migration_failure(self) -> str | None:
        if self.fail_next_migrations <= 0:
            return None
        self.fail_next_migrations -= 1
        return self.fail_reason

    def to_dict(self) -> dict[str, Any]:
        return {
            "errorRate": self.error_rate,
            "errorStatus": self.error_status,
            "latencyMs": round(self.latency_s * 1000, 3),
            "failNextMigrations": self.fail_next_migrations,
            "scrape": dict(sorted(self.scrape.items())),
        }

    def scrape_fault(self, node: str) -> str | None:
        """ "error", "stall" or None for the node's metrics endpoint."""
        return self.scrape.get(node) or self.scrape.get("*")

    def reset(self) -> None:
        self.error_rate, self.latency_s, self.fail_next_migrations = 0.0, 0.0, 0
        self.scrape.clear()

    def apply_api(self, body: Any) -> None:
        """Set API faults from `{"errorRate": 0..1, "errorStatus": 409|429|500|503, "latencyMs": >=0}` (all
        optional)."""
        if not isinstance(body, dict):
            raise FaultError("body must be a JSON object")
        unknown = set(body) - {"errorRate", "errorStatus", "latencyMs"}
        if unknown:
            raise FaultError(f"unknown fields: {sorted(unknown)}")
        rate = body.get("errorRate", self.error_rate)
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 <= rate <= 1:
            raise FaultError(f"errorRate: must be a number in [0, 1], got {rate!r}")
        status = body.get("errorStatus", self.error_status)
        if status not in API_STATUSES:
            raise FaultError(f"errorStatus: must be one of {', '.join(map(str, API_STATUSES))}, got {status!r}")
        latency = body.get("latencyMs", self.latency_s * 1000)
        if isinstance(latency, bool) or not isinstance(latency, int | float) or latency < 0:
            raise FaultError(f"latencyMs: must be a number >= 0, got {latency!r}")
        self.error_rate, self.error_status, self.latency_s = float(rate), int(status), float(latency) / 1000

    def apply_migrations(self, body: Any) -> None:
        """`{"count": N, "reason": "..."}`: the next N migrations fail."""
        if not isinstance(body, dict):
            raise FaultError("body must be a JSON object")
        count = body.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise FaultError(f"count: must be an integer >= 0, got {count!r}")
        reason = body.get("reason", self.fail_reason)
        if not isinstance(reason, str) or not reason:
            raise FaultError("reason: must be a non-empty string")
        self.fail_next_migrations, self.fail_reason = count, reason

    def apply_scrape(self, body: Any) -> None:
        """`{"node": "worker-1" | "*", "mode": <a SCRAPE_MODES entry> | "none"}`: that node's scrapes fail (or not)."""
        if not isinstance(body, dict):
            raise FaultError("body must be a JSON object")
        unknown = set(body) - {"node", "mode"}
        if unknown:
            raise FaultError(f"unknown fields: {sorted(unknown)}")
        node, mode = body.get("node"), body.get("mode")
        if not isinstance(node, str) or not node:
            raise FaultError('node: must be a node name or "*"')
        if mode not in (*SCRAPE_MODES, "none"):
            raise FaultError(f"mode: must be one of {', '.join(SCRAPE_MODES)}, none; got {mode!r}")
        if mode == "none":
            self.scrape.pop(node, None)
        else:
            self.scrape[node] = mode
