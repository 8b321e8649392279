"""Routing arms with several picker replicas behind one Envoy (issue 15, active-active), and the kill during a run.

Why it exists: the claim to measure is that N replicas route as well as one (hit ratio) and that losing one mid-run
loses no request. Arms, by name suffix on a shipped profile (`picker-default-x2`...):

- `-x2`: 2 replicas sharing what they route (scorer/replica_sync.py); Envoy spreads ext_proc streams over both;
- `-x2-unshared`: the same without sharing (each replica's index and in-flight counts see only its own half);
- `-x2-kill`: `-x2`, and replica 0 is SIGKILLed halfway through the trace's wall time; the survivor carries on;
- `-x2-kill-buffered`: the same with Envoy in BUFFERED mode and fail-open: a decision the killed replica was making
  is not failed (FULL_DUPLEX_STREAMED can fail open only before the first body chunk, envoy #41276) but routed by
  Envoy's fallback (round robin);
- `-x2-rollout`: `-x2`, and a rolling restart: replica 0 is stopped (SIGTERM: it drains) and started again at a third
  of the trace's wall time, replica 1 at two thirds; each starts warm from the other's prefix index
  (scorer/replica_sync.py `warm_start`), as a Deployment's rollout does.

Light to import (the command's parser reads the names); the pickers are started by loadtests.routing.benchmark.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

REPLICA_SUFFIXES = ("-x2-unshared", "-x2-kill-buffered", "-x2-kill", "-x2-rollout", "-x2")
REPLICA_ARMS = tuple(f"picker-default{s}" for s in REPLICA_SUFFIXES)
_DECISIONS = re.compile(r'^autonomic_picker_decisions_total\{outcome="routed"[^}]*\} (\S+)$', re.M)


@dataclass(frozen=True)
class ReplicaArm:
    profile: str
    replicas: int
    shared: bool
    kill: bool
    buffered: bool = False  # Envoy BUFFERED + fail-open instead of FULL_DUPLEX_STREAMED fail-closed
    rollout: bool = False  # each replica restarted in turn during the run


def replica_arm(name: str) -> ReplicaArm | None:
    """The replica setup a router name asks for; None for a single-picker arm."""
    for suffix in REPLICA_SUFFIXES:
        if name.startswith("picker-") and name.endswith(suffix):
            profile = name.removeprefix("picker-").removesuffix(suffix)
            shared, kill, buffered = suffix != "-x2-unshared", "kill" in suffix, "buffered" in suffix
            return ReplicaArm(profile, 2, shared=shared, kill=kill, buffered=buffered, rollout="rollout" in suffix)
    return None


def profile_name(name: str, response_body_suffix: str) -> str:
    """The shipped profile a `picker-...` router name runs."""
    arm = replica_arm(name)
    return arm.profile if arm else name.removeprefix("picker-").removesuffix(response_body_suffix)


async def routed_decisions(picker: Any) -> float:
    """Requests a running picker process routed so far (its /metrics)."""
    text = await picker.metrics_text()
    return sum(float(v) for v in _DECISIONS.findall(text))


_EVENTS = re.compile(r'^autonomic_picker_replica_events_total\{direction="(\w+)"\} (\S+)$', re.M)


async def replica_events(picker: Any) -> dict[str, float]:
    """Events a running replica exchanged with its peers so far, by direction (sent, received, dropped)."""
    return {d: float(v) for d, v in _EVENTS.findall(await picker.metrics_text())}


async def kill_halfway(pickers: list[Any], after_s: float, out: dict[str, Any]) -> None:
    """SIGKILL pickers[0] `after_s` wall seconds from now; note when, and what the survivor had routed by then."""
    t0 = time.monotonic()
    await asyncio.sleep(after_s)
    await pickers[0].kill()  # first: a picker slow to answer /metrics on a loaded machine must not delay the kill
    out["killed_at_s"] = round(time.monotonic() - t0, 2)
    out["survivor_decisions_at_kill"] = await routed_decisions(pickers[1])
    print(f"  killed picker replica 0 (pid gone) at {out['killed_at_s']} s", flush=True)


_WARM = re.compile(r"^autonomic_picker_replica_snapshot_blocks_total(?:\{[^}]*\})? (\S+)$", re.M)


async def roll_restart(pickers: list[Any], period_s: float, out: dict[str, Any]) -> None:
    """Restart pickers[0], then pickers[1]..., one every `period_s` wall seconds from now: stop (SIGTERM, the
    picker drains) and start again on its own ports; note when each was down and the blocks its warm start took."""
    t0 = time.monotonic()
    restarts: list[dict[str, Any]] = []
    out["restarts"] = restarts
    for i, picker in enumerate(pickers):
        await asyncio.sleep(max(0.0, t0 + period_s * (i + 1) - time.monotonic()))
        stopped = time.monotonic()
        await picker.stop()
        await picker.start()
        warm = sum(float(v) for v in _WARM.findall(await picker.metrics_text()))
        restarts.append(
            {
                "replica": i,
                "stopped_at_s": round(stopped - t0, 2),
                "down_s": round(time.monotonic() - stopped, 2),
                "warm_start_blocks": warm,
            }
        )
        print(f"  restarted picker replica {i}: {restarts[-1]}", flush=True)
