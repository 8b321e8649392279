"""Response ends through Envoy's gRPC access log (EnvoyOptions.response_ends="access_log"): the real `autonomic
picker` behind the real Envoy in front of the fleet twin gets one ext_proc stream per request, and still releases
every in-flight charge and counts every response. Conditions are waited for; the timeout only stops a hung test."""

from __future__ import annotations

import asyncio

import aiohttp
from envoy_fixture import fleet_addresses, picker_options
from prometheus_client.parser import text_string_to_metric_families

from harness.envoy import LocalEnvoy
from harness.picker import PickerProcess
from sim.fleet.fleet import Fleet

HUNG_S = 60.0


def _value(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_the_access_log_reports_every_end_with_one_stream_per_request(fleet2: Fleet):
    picker = PickerProcess(fleet_addresses(fleet2), scrape_interval_s=0.2)
    await picker.start()
    try:
        opts = picker_options(picker, fleet_addresses(fleet2), response_ends="access_log")
        async with LocalEnvoy(opts) as envoy, aiohttp.ClientSession() as http:
            body = {"model": fleet2.servers[0].model_name, "prompt": "hello", "max_tokens": 2}
            statuses = []
            for _ in range(20):
                async with http.post(f"{envoy.url}/v1/completions", json=body) as resp:
                    await resp.read()
                    statuses.append(resp.status)
            assert statuses == [200] * 20

            async def all_ended() -> str:
                while True:
                    text = await picker.metrics_text()
                    if _value(text, "autonomic_picker_responses_total", code="2xx") >= 20:
                        return text
                    await asyncio.sleep(0.05)

            text = await asyncio.wait_for(all_ended(), HUNG_S)
            assert _value(text, "autonomic_picker_responses_total", code="2xx") == 20
            assert _value(text, "autonomic_picker_in_flight_requests") == 0
            assert _value(text, "autonomic_picker_decisions_total") == 20
            assert _value(text, "autonomic_picker_extproc_streams_total") == 20  # no observer stream
    finally:
        await picker.stop()
