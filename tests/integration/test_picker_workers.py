"""`autonomic picker --workers 2` behind the real Envoy, in front of the fleet twin: both workers serve decisions (the
per-worker counters of the pod's one /metrics), a worker killed with SIGKILL is started again (with a copy of its
sibling's prefix index) while the other one carries every request, and SIGTERM to the supervisor stops every process
with exit code 0. Conditions are waited for, never slept on; the timeouts only stop a hung test."""

from __future__ import annotations

import os
import signal
from collections import Counter
from typing import Any

import pytest
from closed_loop import ClosedLoop
from envoy_fixture import fleet_addresses, picker_options
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from harness.envoy import LocalEnvoy
from harness.picker import PickerProcess
from loadtests.soak.sampler import children
from sim.fleet.fleet import Fleet


async def _by_worker(picker: PickerProcess, name: str) -> dict[str, float]:
    """The sum of a series' samples per `worker` label (the supervisor's own series have none: key '')."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(await picker.metrics_text()):
        for s in family.samples:
            if s.name == name:
                worker = s.labels.get("worker", "")
                totals[worker] = totals.get(worker, 0.0) + s.value
    return totals


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    ("body_mode", "fail_open", "kill_between"),
    [
        # the shipped local config: the kill lands between requests (a decision in progress on the killed worker
        # would fail closed in full duplex, as with replicas: docs/picker-envoy.md §8)
        ("FULL_DUPLEX_STREAMED", False, True),
        # the kill lands anywhere: a decision cut off by it fails open (Envoy's round robin)
        ("BUFFERED", True, False),
    ],
)
async def test_two_workers_share_the_port_survive_a_kill_and_stop_on_sigterm(
    fleet2: Fleet, body_mode: str, fail_open: bool, kill_between: bool
):
    picker = PickerProcess(fleet_addresses(fleet2), scrape_interval_s=0.2, extra_args=["--workers", "2"])
    await picker.start()
    try:
        assert picker.ready_line.endswith("workers=2")
        assert picker.pid is not None
        workers = sorted(children(picker.pid))
        assert len(workers) == 2
        opts = picker_options(
            picker, fleet_addresses(fleet2), body_mode=body_mode, failure_mode_allow=fail_open, picker_workers=2
        )
        async with LocalEnvoy(opts) as envoy:
            load = ClosedLoop(envoy.url, fleet2.servers[0].model_name, clients=1 if kill_between else 4)
            try:

                async def both_decide() -> bool:
                    decided = await _by_worker(picker, "autonomic_picker_decisions_total")
                    return min(decided.get("0", 0), decided.get("1", 0)) >= 10

                await until(both_decide, "both workers serve decisions")
                if kill_between:
                    await load.pause()
                closed = await _remote_closes(envoy)
                os.kill(workers[0], signal.SIGKILL)
                if kill_between:  # resumed once Envoy has seen the killed worker's connections close

                    async def envoy_noticed() -> bool:
                        return await _remote_closes(envoy) > closed

                    await until(envoy_noticed, "Envoy sees the killed worker's connections close")
                load.resume()
                before = sum((await _by_worker(picker, "autonomic_picker_decisions_total")).values())

                seen: dict[str, Any] = {"before": before}

                async def restarted_and_serving() -> bool:
                    restarts = await _by_worker(picker, "autonomic_picker_worker_restarts_total")
                    running = await _by_worker(picker, "autonomic_picker_workers_running")
                    decided = await _by_worker(picker, "autonomic_picker_decisions_total")
                    warm = await _by_worker(picker, "autonomic_picker_replica_snapshot_blocks_total")
                    seen.update(restarts=restarts, running=running, decided=decided, outcomes=dict(load.outcomes))
                    # the restarted worker starts its counters at 0: the total after the kill counts anew
                    restarted = sum(restarts.values()) == 1  # labelled by the index of the worker started again
                    again = next((w for w, n in restarts.items() if n), None)
                    copied = again is not None and warm.get(again, 0) > 0  # it copied its sibling's index first
                    return restarted and copied and running == {"": 2.0} and sum(decided.values()) >= before + 50

                await until(restarted_and_serving, "the killed worker is started again, 50 more decisions", seen)
            finally:
                outcomes = await load.stop()
            assert sum(outcomes.values()) > 0
            assert outcomes == Counter({"200": sum(outcomes.values())}), outcomes
            now = sorted(children(picker.pid))
            assert len(now) == 2 and workers[0] not in now and workers[1] in now
        code = await picker._child.stop() if picker._child else None
        assert code == 0
        await until(lambda: _none_alive(now), "every worker exits with the supervisor")
    finally:
        await picker.stop()


async def _remote_closes(envoy: LocalEnvoy) -> int:
    """Connections to the picker that the picker's side closed, as Envoy counts them."""
    text = await envoy.admin_get("/stats?filter=^cluster\\.picker\\.upstream_cx_destroy_remote$")
    return sum(int(line.rpartition(": ")[2]) for line in text.splitlines() if line.strip())


async def _none_alive(pids: list[int]) -> bool:
    return not any(_alive(pid) for pid in pids)


async def test_a_port_held_by_workers_is_refused_to_any_other_picker(fleet2: Fleet):
    """The supervisor keeps the ports from unrelated processes: a plain picker and a second supervisor on the same
    --port exit 1 without serving, and the workers' port keeps answering."""
    pool = fleet_addresses(fleet2)
    held = PickerProcess(pool, scrape_interval_s=0.2, extra_args=["--workers", "2"])
    await held.start()
    try:
        for extra in ([], ["--workers", "2"]):
            intruder = PickerProcess(pool, extra_args=extra)
            intruder.port = held.port  # the same ext_proc port, its other ports its own
            with pytest.raises(RuntimeError, match="exited with code 1"):
                await intruder.start()
            assert any("cannot serve" in line for line in intruder.output), intruder.output[-5:]
        assert held.running
        assert (await _by_worker(held, "autonomic_picker_workers_running")) == {"": 2.0}
    finally:
        await held.stop()
