"""A cheap stand-in for many model servers' `/metrics`: one process, N loopback ports, the same exposition text.

Why it exists: measuring what the picker's scraper costs for 100 endpoints needs 100 endpoints that answer fast and
alike, on a 2-core machine; 100 fleet twins would spend the CPU being measured. The text is a real twin's exposition
(captured by the caller), so the scraper parses exactly what it parses in production; a request that names series
(`?name[]=...`, as the picker asks) gets `--filtered-text` when given (the twin's answer to that request), as a
server with prometheus_client's exposition app answers it. Prints `ready: P1,P2,...` once every port listens; stops
on SIGTERM.

    python -m loadtests.picker.metrics_stub --ports 100 --text metrics.txt [--filtered-text filtered.txt]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web


async def serve(ports: int, text: str, filtered_text: str | None = None) -> None:
    body = text.encode()
    filtered = body if filtered_text is None else filtered_text.encode()

    async def metrics(request: web.Request) -> web.Response:
        named = "name[]" in request.query
        return web.Response(body=filtered if named else body, content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    bound: list[int] = []
    for _ in range(ports):
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # the bound port of a port-0 site is only known from its socket
        assert isinstance(server, asyncio.Server)
        bound.append(server.sockets[0].getsockname()[1])
    print("ready: " + ",".join(map(str, bound)), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, required=True)
    ap.add_argument("--text", type=Path, required=True, help="the exposition every port serves")
    ap.add_argument("--filtered-text", type=Path, default=None, help="the answer to a request that names series")
    args = ap.parse_args(argv)
    if not 1 <= args.ports <= 2000:
        ap.error(f"--ports must be within 1..2000, got {args.ports}")
    filtered = args.filtered_text.read_text() if args.filtered_text else None
    asyncio.run(serve(args.ports, args.text.read_text(), filtered))


if __name__ == "__main__":
    main()
