"""Waiting for a condition of other processes (pickers, Envoy, twins) in integration tests, never for a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

HUNG_S = 90.0  # only a guard against a hung test, never a performance bound


async def until(check: Callable[[], Coroutine[Any, Any, bool]], what: str, seen: object = None) -> None:
    """Poll `check` every 50 ms until it is true; fail the test naming `what` (and `seen`) if it never is."""

    async def poll() -> None:
        while not await check():  # noqa: ASYNC110 (a condition of other processes)
            await asyncio.sleep(0.05)

    try:
        await asyncio.wait_for(poll(), HUNG_S)
    except TimeoutError:
        pytest.fail(f"never happened: {what}" + (f" (last seen: {seen})" if seen is not None else ""))
