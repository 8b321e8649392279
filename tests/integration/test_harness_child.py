"""harness.child.Child against real child processes (small Python scripts): ready lines and probes, early exits and
timeouts reported with the child's last words, output that floods or never ends its line, SIGTERM ignored, process
groups, and no zombie left behind. Every wait is for a condition, with a generous bound."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health

from harness.child import Child, ChildError
from harness.netutil import free_port
from harness.output import CUT, MAX_LINE
from harness.probes import NotReady, http_ready

SLEEPER = """
    import time
    print("ready", flush=True)
    time.sleep(600)
"""


def script(code: str) -> list[str]:
    return [sys.executable, "-u", "-c", textwrap.dedent(code)]


def real(path: Path) -> str:
    return os.path.realpath(path)


def reaped(pid: int) -> bool:
    """Gone for good: a zombie (exited, not waited for) still answers signal 0."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def gone(pid: int) -> bool:
    """Not running (a zombie of some other parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_ready_line_with_env_and_cwd_then_stop_reaps_it(tmp_path: Path) -> None:
    code = """
        import os, time
        print("starting")
        print(f"ready: port=1234 cwd={os.getcwd()} flavour={os.environ['FLAVOUR']}", flush=True)
        time.sleep(600)
    """
    env = dict(os.environ, FLAVOUR="plain")
    child = Child(script(code), ready=r"^ready: port=(\d+)", env=env, cwd=tmp_path)
    async with child:
        assert child.running and child.ready_match is not None and child.ready_match.group(1) == "1234"
        assert child.output == ["starting", f"ready: port=1234 cwd={real(tmp_path)} flavour=plain"]
        pid = child.pid
        assert pid is not None and not reaped(pid)
    assert child.returncode == -signal.SIGTERM and not child.running
    assert reaped(pid)
    assert await child.stop() == -signal.SIGTERM  # idempotent


async def test_exit_before_ready_names_the_code_and_quotes_the_last_lines() -> None:
    code = """
        import sys
        for i in range(50):
            print(f"line {i}")
        print("config error: no such model", file=sys.stderr)
        sys.exit(3)
    """
    child = Child(script(code), name="broken", ready="^ready:")
    with pytest.raises(ChildError) as info:
        await child.start()
    message = str(info.value)
    assert message.startswith("broken exited with code 3 before it was ready")
    assert message.endswith("line 49\nconfig error: no such model")  # the last 20 lines, the very last included
    assert "line 31\n" in message and "line 30\n" not in message
    assert info.value.returncode == 3 and info.value.output[-1] == "config error: no such model"
    assert child.pid is not None and reaped(child.pid)


async def test_not_ready_in_time_is_stopped_and_says_what_it_waited_for() -> None:
    code = """
        import time
        print("still loading", flush=True)
        time.sleep(600)
    """
    child = Child(script(code), name="slow", ready="^ready:", ready_timeout_s=2.0)
    with pytest.raises(ChildError) as info:
        await child.start()
    assert str(info.value).startswith("slow not ready after 2 s (no output line matched '^ready:')")
    assert str(info.value).endswith("still loading")
    assert child.returncode == -signal.SIGTERM
    assert child.pid is not None and reaped(child.pid)


async def test_a_child_that_ignores_sigterm_is_killed() -> None:
    code = """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", flush=True)
        time.sleep(600)
    """
    child = Child(script(code), ready="^ready$", stop_timeout_s=0.5)
    await child.start()
    stops = await asyncio.gather(child.stop(), child.stop())  # concurrent stops wait for the same end
    assert stops == [-signal.SIGKILL, -signal.SIGKILL]
    assert child.pid is not None and reaped(child.pid)


async def test_a_flood_on_stdout_and_stderr_never_blocks_the_child(tmp_path: Path) -> None:
    """8 MB before the ready line and 4 MB after: a child whose pipe is not drained blocks at 64 KiB and never
    gets to print `ready` (or `done`)."""
    code = """
        import sys
        line = "x" * 999
        for i in range(4000):
            print(line)
            print(line, file=sys.stderr)
        print("ready")
        for i in range(4000):
            print(f"after {i} {line}")
        print("done")
    """
    seen: list[str] = []
    child = Child(script(code), ready="^ready$", tail_lines=50, log_path=tmp_path / "child.log", on_line=seen.append)
    await child.start()
    assert await asyncio.wait_for(child.wait(), 60) == 0
    assert await child.stop() == 0
    assert len(child.output) == 50 and child.output[-1] == "done" and child.output[-2].startswith("after 3999 x")
    assert len(seen) == 8000 + 1 + 4000 + 1
    assert (tmp_path / "child.log").read_bytes().count(b"\n") == 8000 + 1 + 4000 + 1


async def test_only_the_tail_is_kept_without_a_callback() -> None:
    code = """
        import sys
        print("ready")
        sys.stdout.write("".join(f"line {i}\\n" for i in range(100_000)))
        sys.stdout.write("bye")  # no newline: still a line at the end
    """
    child = Child(script(code), ready="^ready$", tail_lines=3)
    await child.start()
    assert await asyncio.wait_for(child.wait(), 60) == 0
    await child.stop()
    assert child.output == ["line 99998", "line 99999", "bye"]


async def test_a_line_longer_than_the_limit_is_cut_and_the_next_one_still_read() -> None:
    code = """
        import sys, time
        sys.stdout.write("y" * 1_000_000)
        sys.stdout.write("\\nready\\n")
        sys.stdout.flush()
        time.sleep(600)
    """
    async with Child(script(code), ready="^ready$") as child:
        long, ready = child.output
        assert long == "y" * MAX_LINE + CUT and ready == "ready"


async def test_http_probe_waits_for_the_server() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    child = Child([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], ready=http_ready(url))
    async with child, aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200


async def test_a_probe_that_never_passes_is_quoted_in_the_timeout() -> None:
    async def warming_up() -> bool:
        raise NotReady("3 of 8 workers registered")

    child = Child(script(SLEEPER), name="router", ready=warming_up, ready_timeout_s=0.5)
    with pytest.raises(ChildError, match=r"^router not ready after 0.5 s \(last probe: NotReady: 3 of 8 workers"):
        await child.start()
    assert child.pid is not None and reaped(child.pid)


async def test_a_probe_stops_waiting_when_the_child_exits() -> None:
    async def never() -> bool:
        return False

    child = Child(script("import sys; print('bad flag'); sys.exit(2)"), ready=never, ready_timeout_s=60)
    with pytest.raises(ChildError, match=r"exited with code 2 before it was ready; its last output:\nbad flag$"):
        await asyncio.wait_for(child.start(), 30)  # long before the 60 s of the probe


async def test_process_group_stops_what_the_child_spawned() -> None:
    grandchild = """
        import os, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(f"grandchild {os.getpid()} ignores TERM", flush=True)
        time.sleep(600)
    """
    code = """
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", sys.argv[1]])
        time.sleep(600)
    """
    argv = [*script(code), textwrap.dedent(grandchild)]
    child = Child(argv, ready=r"^grandchild (\d+) ignores TERM$", process_group=True, stop_timeout_s=5)
    async with child:
        assert child.ready_match is not None
        pid = int(child.ready_match.group(1))
        assert not gone(pid)
    assert child.returncode == -signal.SIGTERM
    await until(lambda: gone(pid), "the grandchild to be killed with the group")


async def test_the_body_raising_still_stops_the_child() -> None:
    pid = None
    with pytest.raises(ZeroDivisionError):
        async with Child(script(SLEEPER), ready="^ready$") as child:
            pid = child.pid
            _ = 1 / 0
    assert pid is not None and reaped(pid)


async def test_without_a_ready_condition_start_returns_at_once_and_wait_gives_the_exit_code() -> None:
    child = Child(script("import sys; print('bye', end=''); sys.exit(5)"))
    assert await child.stop() is None  # never started: nothing to stop
    await child.start()
    assert await asyncio.wait_for(child.wait(), 30) == 5
    assert await child.stop() == 5 and child.output == ["bye"]
    with pytest.raises(RuntimeError, match="already started"):
        await child.start()


async def test_a_binary_that_cannot_start_is_a_child_error(tmp_path: Path) -> None:
    with pytest.raises(ChildError, match=f"cannot start {tmp_path}/missing"):
        await Child([tmp_path / "missing"]).start()


async def test_a_failing_line_callback_does_not_stop_the_draining() -> None:
    def explode(line: str) -> None:
        raise ValueError(line)

    async with Child(script(SLEEPER), ready="^ready$", on_line=explode) as child:
        assert child.output == ["ready"]


async def test_die_with_parent_takes_the_child_down_with_a_killed_parent() -> None:
    """A parent (itself a Child here) starts a grandchild with die_with_parent, then is SIGKILLed: no stop() ever
    runs for the grandchild, yet the kernel sends it SIGTERM."""
    parent = """
        import asyncio, sys
        from harness.child import Child

        async def main():
            sleeper = "import os, time; print(f'pid {os.getpid()}', flush=True); time.sleep(600)"
            child = Child([sys.executable, "-c", sleeper], ready=r"^pid (\\d+)$", die_with_parent=True)
            await child.start()
            print(f"grandchild {child.ready_match.group(1)}", flush=True)
            await asyncio.sleep(600)

        asyncio.run(main())
    """
    async with Child(script(parent), ready=r"^grandchild (\d+)$") as child:
        assert child.ready_match is not None and child.pid is not None
        grandchild = int(child.ready_match.group(1))
        assert not gone(grandchild)
        os.kill(child.pid, signal.SIGKILL)
        assert await asyncio.wait_for(child.wait(), 30) == -signal.SIGKILL
        await until(lambda: gone(grandchild), "the grandchild to die with its parent")


async def test_die_with_parent_children_start_cleanly_beside_live_grpc_threads() -> None:
    """With a preexec_fn, subprocess fork()s, and gRPC's fork handlers then sometimes abort the child before exec
    (SIGABRT, seen ~1 in 100 here with a stream open); the exec wrapper keeps vfork(): every child exits 0."""
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    await server.start()
    codes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stream = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            for _ in range(150):
                child = Child([sys.executable, "-I", "-c", "pass"], die_with_parent=True)
                await child.start()
                codes.append(await asyncio.wait_for(child.wait(), 30))
                await child.stop()
            stream.cancel()
    finally:
        await server.stop(None)
    assert codes == [0] * 150
