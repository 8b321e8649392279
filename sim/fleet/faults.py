"""Fault modes of one twin server, set through the fleet's control API, so tests can break servers on purpose.

A faithful twin fails like the real one:
- `stop`: as a crash: the listening socket is closed (connections refused), in-flight requests are aborted and
  every open connection is closed (idle keep-alive ones too);
- `hang`: requests are accepted and never answered (until the mode changes);
- `error`: API, health and tokenizer endpoints answer `status` (default 500) with an OpenAI error object;
  `/metrics` still answers, as a wedged vLLM's does;
- `slow`: every engine step takes `factor` times longer (a throttled or degraded GPU);
- `ok`: normal service.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

FaultMode = Literal["ok", "stop", "hang", "error", "slow"]
MODES: tuple[str, ...] = ("ok", "stop", "hang", "error", "slow")


class FaultError(ValueError):
    pass


@dataclass(frozen=True)
class Fault:
    mode: FaultMode = "ok"
    status: int = 500
    factor: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_fault(body: Any) -> Fault:
    if not isinstance(body, dict):
        raise FaultError('fault must be a JSON object like {"mode": "error", "status": 503}')
    unknown = set(body) - {"mode", "status", "factor"}
    if unknown:
        raise FaultError(f"unknown fault fields: {sorted(unknown)}")
    mode = body.get("mode")
    if mode not in MODES:
        raise FaultError(f"mode: must be one of {list(MODES)}, got {mode!r}")
    status = body.get("status", 500)
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise FaultError(f"status: must be an HTTP error status 400..599, got {status!r}")
    factor = body.get("factor", 1.0)
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1.0:
        raise FaultError(f"factor: must be a number >= 1, got {factor!r}")
    if mode == "slow" and "factor" not in body:
        raise FaultError("factor: required for mode 'slow'")
    return Fault(mode=mode, status=status, factor=float(factor))
