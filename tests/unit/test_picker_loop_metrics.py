"""The picker's asyncio task gauge: read on the event loop when /metrics is rendered, absent outside one."""

from __future__ import annotations

import asyncio

from prometheus_client import generate_latest

from scorer.metrics import PickerMetrics


def test_asyncio_tasks_are_counted_on_the_loop_and_absent_outside_it() -> None:
    metrics = PickerMetrics()
    assert b"autonomic_picker_asyncio_tasks" not in generate_latest(metrics.registry)

    async def render(extra: int) -> float:
        idle = [asyncio.create_task(asyncio.sleep(10)) for _ in range(extra)]
        try:
            return metrics.registry.get_sample_value("autonomic_picker_asyncio_tasks") or 0.0
        finally:
            for task in idle:
                task.cancel()

    assert asyncio.run(render(0)) == 1  # the task rendering the metrics
    assert asyncio.run(render(5)) == 6
