"""Active-active picker replicas: two real `autonomic picker` processes, sharing what they route, behind the real
Envoy (an ext_proc cluster of both), in front of the fleet twin; one is killed (SIGKILL) or stopped (SIGTERM) while
requests flow, and none may fail. Conditions are waited for, never slept on; the timeouts only stop a hung test."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import AsyncIterator

import grpc
import pytest
from closed_loop import ClosedLoop
from envoy_fixture import fleet_addresses
from prometheus_client.parser import text_string_to_metric_families
from waiting import until

from harness.envoy import LocalEnvoy
from harness.netutil import free_port
from harness.picker import PickerProcess
from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from scorer.extproc.envoy_config import EnvoyOptions
from sim.fleet.fleet import Fleet
from sim.fleet.synth import prompt_text


async def _metric(picker: PickerProcess, name: str) -> float:
    text = await picker.metrics_text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def _routed(picker: PickerProcess) -> float:
    return await _metric(picker, "autonomic_picker_decisions_total")


@contextlib.asynccontextmanager
async def _replicas(fleet: Fleet, *extra: str) -> AsyncIterator[tuple[PickerProcess, PickerProcess]]:
    pool = fleet_addresses(fleet)
    a = PickerProcess(pool, scrape_interval_s=0.2, extra_args=extra)
    b = PickerProcess(pool, scrape_interval_s=0.2, extra_args=extra)
    a.peers, b.peers = [b.peer_address], [a.peer_address]
    try:
        await asyncio.gather(a.start(), b.start())
        yield a, b
    finally:
        await asyncio.gather(a.stop(), b.stop())


async def test_each_replica_learns_what_the_other_routed_and_hears_its_end(fleet2: Fleet):
    addresses = fleet_addresses(fleet2)
    body = json.dumps({"model": fleet2.servers[0].model_name, "prompt": prompt_text([71, 72, 73], 768)}).encode()
    async with (
        _replicas(fleet2) as (a, b),
        grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as to_a,
        grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as to_b,
    ):
        assert f"peers={a.peer_port}" in a.ready_line
        picked = await pb_grpc.PickerStub(to_a).Pick(pb.PickRequest(body=body, request_id="shared-1"))

        async def b_knows() -> bool:
            seen = await pb_grpc.PickerStub(to_b).Explain(pb.PickRequest(body=body))
            prefix = {e.endpoint: e.scores["prefix-cache-scorer"] for e in seen.endpoints}
            in_flight = {e.endpoint: e.load.in_flight for e in seen.endpoints}
            return prefix[picked.endpoint] == 1.0 and in_flight[picked.endpoint] == 1

        await until(b_knows, "replica B learns A's decision (prefix blocks and in-flight charge)")
        explained = await pb_grpc.PickerStub(to_b).Explain(pb.PickRequest(body=body))
        assert {e.endpoint: e.scores["prefix-cache-scorer"] for e in explained.endpoints} == {
            x: (1.0 if x == picked.endpoint else 0.0) for x in addresses
        }
        # the end reported to the other replica (Envoy's observer stream may land there): B knows the request, and
        # both release the charge
        ended = pb.CompleteRequest(request_id="shared-1", status=200)
        assert (await pb_grpc.PickerStub(to_b).Complete(ended)).known

        async def a_released() -> bool:
            return await _metric(a, "autonomic_picker_in_flight_requests") == 0

        await until(a_released, "replica A releases the charge on B's report of the end")
        assert await _metric(b, "autonomic_picker_in_flight_requests") == 0
        assert await _metric(a, "autonomic_picker_replica_events_total") > 0


async def test_a_replica_that_starts_later_copies_its_peers_prefix_index(fleet2: Fleet):
    """A rollout restarts replicas one at a time: the new one must not decide blind until the traffic teaches it.
    B starts after A has routed (and so missed A's events); it restores A's snapshot before it serves."""
    pool = fleet_addresses(fleet2)
    body = json.dumps({"model": fleet2.servers[0].model_name, "prompt": prompt_text([81, 82, 83], 768)}).encode()
    a = PickerProcess(pool, scrape_interval_s=0.2)
    b = PickerProcess(pool, scrape_interval_s=0.2)
    a.peers, b.peers = [b.peer_address], [a.peer_address]
    try:
        await a.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") as to_a:
            picked = await pb_grpc.PickerStub(to_a).Pick(pb.PickRequest(body=body, request_id="before-b"))
        await b.start()  # its warm start runs before its ready line
        assert await _metric(b, "autonomic_picker_replica_snapshot_blocks_total") > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as to_b:
            explained = await pb_grpc.PickerStub(to_b).Explain(pb.PickRequest(body=body))
        assert {e.endpoint: e.scores["prefix-cache-scorer"] for e in explained.endpoints} == {
            x: (1.0 if x == picked.endpoint else 0.0) for x in pool
        }
    finally:
        await asyncio.gather(a.stop(), b.stop())


@pytest.mark.parametrize(
    ("how", "body_mode", "fail_open"),
    [
        ("kill", "BUFFERED", True),  # a decision cut off by the kill fails open (Envoy's round robin)
        ("term", "FULL_DUPLEX_STREAMED", False),  # the shipped local config; --shutdown-delay moves traffic first
        ("term", "BUFFERED", True),
    ],
)
async def test_losing_a_replica_mid_run_loses_no_request(fleet2: Fleet, how: str, body_mode: str, fail_open: bool):
    async with _replicas(fleet2, "--shutdown-delay", "3") as (a, b):
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            picker_port=a.port,
            picker_readyz_port=a.metrics_port,
            extra_pickers=[(b.port, b.metrics_port)],
            pool=tuple(fleet_addresses(fleet2)),
            body_mode=body_mode,  # type: ignore[arg-type]
            failure_mode_allow=fail_open,
        )
        async with LocalEnvoy(opts) as envoy:
            load = ClosedLoop(envoy.url, fleet2.servers[0].model_name)
            try:

                async def both_route() -> bool:
                    return min(await _routed(a), await _routed(b)) >= 10

                await until(both_route, "both replicas route requests")
                await (a.kill() if how == "kill" else a.stop())
                assert not a.running
                after = await _routed(b)

                async def survivor_carries_on() -> bool:
                    return await _routed(b) >= after + 50

                await until(survivor_carries_on, "the survivor routes 50 more requests")
            finally:
                outcomes = await load.stop()
            assert sum(outcomes.values()) > 0
            assert outcomes == Counter({"200": sum(outcomes.values())}), outcomes
