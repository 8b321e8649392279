"""`autonomic picker` as a real process, in front of the fleet twin, behind the real Envoy.

The picker is started exactly as the demo starts it (`harness.picker.PickerProcess`: CLI flags, `ready:`
line, metrics port). Which endpoint it picked is read from its own `/metrics` (`autonomic_picker_picks_total`), which
twin served a request from the fleet's request log, and whether a prefix was reused from the twins' `cached_tokens`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from envoy_fixture import completion_body, fleet_addresses, new_request_id, picker_options, post_completion, served_by
from prometheus_client.parser import text_string_to_metric_families

from autonomic.cli import build_parser
from harness.envoy import LocalEnvoy
from harness.netutil import find_base_port, free_port
from harness.picker import PickerProcess
from proto.autonomic.picker.v1 import picker_pb2 as pb
from proto.autonomic.picker.v1 import picker_pb2_grpc as pb_grpc
from scorer import cli
from scorer.config import default_config
from scorer.extproc.envoy_config import EnvoyOptions
from scorer.extproc.roundrobin import RoundRobinBackend
from scorer.extproc.server import serve_extproc
from scorer.index_sizing import capacity_blocks
from scorer.plugins.scorers.prefix_cache import PrefixCacheParams
from scorer.service import PickerOptions, StartupError, run_picker
from scorer.sources.model_metrics import parse_vllm_metrics
from scorer.types import Endpoint
from sim.fleet.fleet import Fleet
from sim.fleet.profile import load_profile
from sim.fleet.synth import prompt_text

DEFAULT_SCORERS = ["prefix-cache-scorer", "ttft-estimate-scorer", "queue-scorer", "kv-cache-utilization-scorer"]
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _samples(picker: PickerProcess) -> Samples:
    text = await picker.metrics_text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _picks(samples: Samples, endpoint: str) -> float:
    return _value(samples, "autonomic_picker_picks_total", endpoint=endpoint)


async def _poll(picker: PickerProcess, done: Callable[[Samples], bool], tries: int = 1000) -> Samples:
    """The picker's metrics once `done` holds for them (polled every 20 ms; the bound only guards against a hang)."""
    for _ in range(tries):
        samples = await _samples(picker)
        if done(samples):
            return samples
        await asyncio.sleep(0.02)
    raise AssertionError("the picker's metrics never reached the expected state")


async def _set_fault(fleet: Fleet, index: int, fault: dict[str, object]) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{fleet.control_url}/servers/{index}/fault", json=fault) as r,
    ):
        assert r.status == 200, await r.text()


def _envoy(picker: PickerProcess, pool: list[str]) -> LocalEnvoy:
    return LocalEnvoy(picker_options(picker, pool))


@pytest.fixture
async def picker_envoy(fleet2: Fleet) -> AsyncIterator[tuple[PickerProcess, LocalEnvoy]]:
    addresses = fleet_addresses(fleet2)
    picker = PickerProcess(addresses, scrape_interval_s=0.2)
    await picker.start()
    try:
        async with _envoy(picker, addresses) as envoy:
            yield picker, envoy
    finally:
        await picker.stop()


async def test_requests_land_on_the_picked_endpoint_and_a_shared_prefix_sticks(
    fleet2: Fleet, picker_envoy: tuple[PickerProcess, LocalEnvoy]
):
    picker, envoy = picker_envoy
    addresses = fleet_addresses(fleet2)
    shared = prompt_text([51, 52, 53, 54], 1024)  # re-prefilling it elsewhere costs more than the tie-breakers
    landed = []
    for i in range(4):
        await asyncio.sleep(0.1)  # lets the picker's virtual prefill backlog (wall-clock time) drain
        before = await _samples(picker)
        rid = new_request_id()
        body = completion_body(fleet2, shared + f" question {i}?", rid)
        status, raw = await post_completion(envoy.url, body, {"x-request-id": rid})
        assert status == 200, raw
        after = await _samples(picker)
        picked = [a for a in addresses if _picks(after, a) - _picks(before, a) == 1]
        assert len(picked) == 1 and sum(_picks(after, a) - _picks(before, a) for a in addresses) == 1
        served = await served_by(fleet2, rid)
        assert served == [addresses.index(picked[0])]  # Envoy sent it where the picker said
        landed.append(served[0])
        if i:
            assert json.loads(raw)["usage"]["prompt_tokens_details"]["cached_tokens"] >= 1024 - 16
    assert len(set(landed)) == 1  # the shared prefix kept going to the replica that has it cached
    status, raw = await post_completion(envoy.url, {"prompt": "no model"})
    assert status == 400, raw  # answered by the picker itself
    # every response was reported back: the observer's stream ends with the HTTP stream (plus 0.1 s), so wait
    final = await _poll(picker, lambda s: _value(s, "autonomic_picker_in_flight_requests") == 0)
    decisions: dict[str, float] = {}
    for (name, labels), value in final.items():
        if name == "autonomic_picker_decisions_total":
            outcome = dict(labels)["outcome"]
            decisions[outcome] = decisions.get(outcome, 0) + value
    assert decisions == {"routed": 4}  # by deciding factor; a bad body never reaches scheduling
    assert _value(final, "autonomic_picker_extproc_streams_total") == 10  # a routing and an observer stream each
    assert _value(final, "autonomic_picker_extproc_immediate_responses_total", code="400") == 1
    assert _value(final, "autonomic_picker_responses_total", code="2xx") == 4
    # each decision was learnt after its answer went out, into the budgeted prefix index, all on the sticky replica
    assert _value(final, "autonomic_picker_learn_duration_seconds_count") == 4
    plugin = "prefix-cache-scorer"
    params = default_config().plugin(plugin).params
    assert isinstance(params, PrefixCacheParams)
    block_bytes = params.block_size  # the shipped profile's
    entries = _value(final, "autonomic_picker_prefix_index_entries", plugin=plugin)
    assert entries >= 1024 // block_bytes  # at least the shared prompt's blocks (a token is a byte or more)
    held = _value(final, "autonomic_picker_prefix_index_endpoint_blocks", plugin=plugin, endpoint=addresses[landed[0]])
    assert held == entries
    assert _value(final, "autonomic_picker_prefix_index_budget_bytes", plugin=plugin) == 512 * 2**20 // 400 * 400
    # each endpoint's part of the index is sized to the KV cache its twin reports (cache_config_info), in prompt bytes
    async with aiohttp.ClientSession() as session, session.get(f"http://{addresses[0]}/metrics") as answer:
        twin = parse_vllm_metrics(await answer.text()).metrics
    assert twin.num_gpu_blocks is not None and twin.block_size is not None
    rate = _value(final, "autonomic_picker_prefix_index_bytes_per_token", plugin=plugin)
    expected = capacity_blocks(twin.num_gpu_blocks * twin.block_size, rate, block_bytes)
    capacity = _value(
        final, "autonomic_picker_prefix_index_endpoint_capacity_blocks", plugin=plugin, endpoint=addresses[landed[0]]
    )
    assert capacity == expected


async def test_a_killed_replica_stops_receiving_traffic_within_a_scrape_interval(
    fleet2: Fleet, picker_envoy: tuple[PickerProcess, LocalEnvoy]
):
    picker, envoy = picker_envoy
    live, dead = fleet_addresses(fleet2)
    start = await _samples(picker)
    assert _value(start, "autonomic_picker_endpoint_ready", endpoint=dead) == 1
    await _set_fault(fleet2, 1, {"mode": "stop"})  # the listener closes: connections are refused
    live_scrapes_at_fault = _value(await _samples(picker), "autonomic_picker_scrapes_total", endpoint=live, result="ok")
    now = await _poll(picker, lambda s: _value(s, "autonomic_picker_endpoint_ready", endpoint=dead) == 0)
    # measured in scrape rounds of the live endpoint, which run on the same schedule: about one interval
    assert _value(now, "autonomic_picker_scrapes_total", endpoint=live, result="ok") - live_scrapes_at_fault <= 2
    assert _value(now, "autonomic_picker_scrapes_total", endpoint=dead, result="connect") >= 1
    for i in range(6):
        rid = new_request_id()
        status, raw = await post_completion(envoy.url, completion_body(fleet2, f"after the crash {i}", rid))
        assert status == 200, raw
        assert await served_by(fleet2, rid) == [0]
    after = await _samples(picker)
    assert _picks(after, dead) == _picks(now, dead)
    assert _picks(after, live) == _picks(now, live) + 6
    # the replica comes back with its next good scrape
    await _set_fault(fleet2, 1, {"mode": "ok"})
    await _poll(picker, lambda s: _value(s, "autonomic_picker_endpoint_ready", endpoint=dead) == 1)


async def test_pick_complete_and_explain_over_grpc_and_the_explain_cli(fleet2: Fleet, tmp_path: Path):
    addresses = fleet_addresses(fleet2)
    model = fleet2.servers[0].model_name
    prompt = prompt_text([61, 62, 63], 768)
    body = json.dumps({"model": model, "prompt": prompt}).encode()
    picker = PickerProcess(addresses, scrape_interval_s=0.2)
    await picker.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{picker.port}") as channel:
            stub = pb_grpc.PickerStub(channel)
            first = await stub.Explain(pb.PickRequest(body=body))
            assert sorted(e.endpoint for e in first.endpoints) == sorted(addresses)
            assert [s.name for s in first.scorers] == DEFAULT_SCORERS
            assert [s.weight for s in first.scorers] == [4, 4, 1, 1]
            assert all(sorted(e.scores) == sorted(DEFAULT_SCORERS) for e in first.endpoints)
            assert all(e.scores["prefix-cache-scorer"] == 0 for e in first.endpoints)
            assert first.targets[0] in addresses and first.reason and first.profile == "default"
            assert first.prompt_tokens > 0 and not first.unavailable and not first.error

            picked = await stub.Pick(pb.PickRequest(body=body, request_id="pick-1"))
            assert (picked.request_id, picked.profile) == ("pick-1", "default")
            assert picked.endpoint in addresses and not picked.fallbacks and picked.reason
            samples = await _samples(picker)
            assert _picks(samples, picked.endpoint) == 1
            assert _value(samples, "autonomic_picker_in_flight_requests") == 1

            learned = await stub.Explain(pb.PickRequest(body=body))  # the pick taught the prefix index
            prefix = {e.endpoint: e.scores["prefix-cache-scorer"] for e in learned.endpoints}
            assert prefix == {a: (1.0 if a == picked.endpoint else 0.0) for a in addresses}
            assert {e.endpoint: e.load.in_flight for e in learned.endpoints}[picked.endpoint] == 1

            assert (await stub.Complete(pb.CompleteRequest(request_id="pick-1", status=200))).known
            assert not (await stub.Complete(pb.CompleteRequest(request_id="pick-1", status=200))).known
            samples = await _samples(picker)
            assert _value(samples, "autonomic_picker_in_flight_requests") == 0
            assert sum(_picks(samples, a) for a in addresses) == 1  # Explain never counts as a pick

            subset = await stub.Explain(pb.PickRequest(body=body, subset=pb.Subset(endpoints=[addresses[1]])))
            assert list(subset.targets) == [addresses[1]]
            assert [(f.filter, list(f.removed)) for f in subset.filters] == [("subset hint", [addresses[0]])]

            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Pick(pb.PickRequest(body=b'{"prompt": "no model"}'))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "model" in (err.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Pick(pb.PickRequest(body=body, subset=pb.Subset()))
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE

        prompt_file = tmp_path / "prompt.txt"
        prompt_file.write_text(prompt)
        target = f"127.0.0.1:{picker.port}"
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "autonomic", "picker", "explain", "--prompt-file", str(prompt_file)),
            *("--target", target, "--model", model),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err_text = await proc.communicate()
        assert proc.returncode == 0, err_text.decode()
        lines = out.decode().splitlines()
        assert lines[0].startswith(f"picker {target}, profile default, prompt ~")
        assert lines[1] == f"choice: {picked.endpoint} (fallbacks: none)"  # where the prompt is cached now
        assert lines[2].startswith("reason: max score")
        header = next(line for line in lines if line.split()[:2] == ["endpoint", "total"])
        assert header.split()[2:6] == DEFAULT_SCORERS
        rows = {line.split()[1]: line.split() for line in lines if line.startswith("*")}
        assert list(rows) == [picked.endpoint] and rows[picked.endpoint][3] == "1.000"  # prefix-cache-scorer
        assert any(line.split()[:1] == [a] for a in addresses for line in lines)  # the other endpoint's row
    finally:
        await picker.stop()


async def test_bad_config_exits_2_and_names_the_path(tmp_path: Path):
    bad = tmp_path / "picker.yaml"
    bad.write_text(
        "apiVersion: autonomic.dev/v1alpha1\nkind: EndpointPickerConfig\n"
        "plugins:\n- {type: prefix-cache-scorer, parameters: {blockSize: 0}}\n"
        "schedulingProfiles:\n- {name: default, plugins: [{pluginRef: nope}]}\n"
    )
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "autonomic", "picker", "--config", str(bad), "--endpoints", "127.0.0.1:1"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 2
    assert not out.decode().startswith("ready:")
    text = err.decode()
    assert f"error: --config {bad}: invalid EndpointPickerConfig:" in text
    assert "plugins[0].parameters.blockSize: must be >= 1" in text
    assert "schedulingProfiles[0].plugins[0].pluginRef: unknown plugin 'nope'" in text


async def test_sigterm_drains_an_open_stream_and_exits_0():
    """A response still streaming through the picker (ext_proc sees the response body) completes after SIGTERM."""
    profile = load_profile(num_gpu_blocks=512)
    fleet = Fleet(
        servers=1, base_port=find_base_port(1), profile=profile, time_scale=1.0
    )  # real time: the stream lasts
    await fleet.start()
    pool = fleet_addresses(fleet)
    ports = [free_port() for _ in range(3)]
    cmd = [sys.executable, "-m", "autonomic", "picker", "--endpoints", pool[0], "--drain-seconds", "30"]
    cmd += ["--port", str(ports[0]), "--health-port", str(ports[1]), "--metrics-port", str(ports[2])]
    env = dict(os.environ, AUTONOMIC_LOG_LEVEL="info")
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        assert proc.stdout is not None
        ready = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        assert ready.startswith(f"ready: ext_proc=127.0.0.1:{ports[0]} health=127.0.0.1:{ports[1]} ")
        assert f"metrics=127.0.0.1:{ports[2]}" in ready
        opts = EnvoyOptions(
            listen_port=free_port(),
            admin_port=free_port(),
            picker_port=ports[0],
            picker_readyz_port=ports[2],
            pool=tuple(pool),
        )
        async with LocalEnvoy(opts) as envoy, aiohttp.ClientSession() as http:
            body = {"model": fleet.servers[0].model_name, "prompt": "drain me", "stream": True}
            body |= {"max_tokens": 60, "min_tokens": 60, "stream_options": {"include_usage": True}}
            async with http.post(f"{envoy.url}/v1/completions", json=body) as resp:
                assert resp.status == 200
                first = await resp.content.readline()  # the stream is open and flowing through the picker
                assert first.startswith(b"data:")
                async with http.get(f"http://127.0.0.1:{ports[2]}/readyz") as r:
                    assert r.status == 200
                proc.send_signal(signal.SIGTERM)
                readyz = 200
                while readyz == 200:  # not ready while draining: Envoy and the kubelet stop sending new streams
                    async with http.get(f"http://127.0.0.1:{ports[2]}/readyz") as r:
                        readyz = r.status
                assert readyz == 503
                rest = await resp.content.read()
            events = [line for line in (first + rest).split(b"\n") if line.startswith(b"data:")]
            assert events[-1] == b"data: [DONE]"
            usage = json.loads(events[-2][5:])["usage"]
            assert usage["completion_tokens"] == 60  # the whole answer arrived: the shutdown cut nothing
        assert await asyncio.wait_for(proc.wait(), 30) == 0
        assert proc.stderr is not None
        log = (await proc.stderr.read()).decode()
        assert '"msg": "shutting down"' in log and '"msg": "stopped"' in log
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fleet.stop()


async def test_a_port_taken_by_another_picker_is_refused():
    """grpcio would share the port (SO_REUSEPORT) and split Envoy's streams between two pickers; it must refuse."""
    first = await serve_extproc(RoundRobinBackend(["127.0.0.1:1"]), port=0)
    try:
        opts = PickerOptions(
            config=default_config(), endpoints=[Endpoint("127.0.0.1:1")], port=first.port, health_port=0, metrics_port=0
        )
        stop = asyncio.Event()
        stop.set()  # if it did start, it would stop at once (and this test fail) rather than serve forever
        with pytest.raises(StartupError, match=f"gRPC on 127.0.0.1:{first.port}"):
            await run_picker(opts, stop)
    finally:
        await first.stop(0)


def test_a_taken_port_exits_1(capsys: pytest.CaptureFixture[str]):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        argv = [
            "picker",
            "--endpoints",
            "127.0.0.1:1",
            "--port",
            "0",
            "--health-port",
            "0",
            "--metrics-port",
            str(port),
        ]
        assert cli.run(build_parser().parse_args(argv)) == 1
    assert f"error: cannot serve: metrics on 127.0.0.1:{port}" in capsys.readouterr().err
