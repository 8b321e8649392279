"""One child process on loopback: start it, know when it is ready, keep its output flowing, stop it, reap it.

Why it exists: the tests, the demo and the benchmarks run real binaries (Envoy, Prometheus, the peer routers) and
our own services (`autonomic picker`, `autonomic fleet`, small stubs) as children on 127.0.0.1, and every one of
them needs the same lifecycle. Written six times, the copies drifted: one drain task raced `stop`, one child was
never read after its ready line (a chatty child then blocks on a full pipe), one had no SIGKILL after SIGTERM.
`Child` is that lifecycle written once:

- start `argv` with `env` and `cwd`; stdin is /dev/null, stderr goes with stdout;
- ready when an output line matches `ready` (a regex), or when `ready` (an async probe, harness.probes: an HTTP or
  gRPC readiness check) returns True; if the child exits first or `ready_timeout_s` passes, it is stopped and
  `ChildError` says which, with the child's last output lines;
- its output is read by the event loop as it arrives (never paused, so the child never blocks writing), kept as the
  last `tail_lines` lines (harness.output), passed to `on_line` and appended to `log_path` if given;
- `stop()`: SIGTERM, up to `stop_timeout_s`, then SIGKILL; it always waits for the exit (no zombie), is idempotent
  and safe to call from several tasks; with `process_group=True` the child gets its own session and the signals go
  to its whole group (whatever it spawned), with a final SIGKILL for anything left in the group;
- `async with Child(...) as child:` starts it, waits until ready, and stops it on the way out.

`die_with_parent=True` (Linux) also has the kernel send SIGTERM to the child if the thread that started it dies
(PR_SET_PDEATHSIG), so nothing outlives a crashed test; start such children from a thread that lives as long. It is
set by a tiny exec wrapper, not a `preexec_fn`: that would make subprocess fork() instead of vfork(), and a fork of
a process with gRPC threads runs gRPC's fork handlers in the child, which sometimes abort it (SIGABRT) before exec.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Self

from harness.output import OutputLines
from harness.probes import Probe, poll

log = logging.getLogger("autonomic.harness")

Ready = str | re.Pattern[str] | Probe | None
_OUTPUT_GRACE_S = 2.0  # after the exit, how long the last output may take (a grandchild can hold the pipe open)


class ChildError(RuntimeError):
    """The child could not start, exited before it was ready, or was not ready in time. The message ends with its
    last output lines; `returncode` and `output` (the kept lines) are there for callers."""

    def __init__(self, message: str, *, returncode: int | None = None, output: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = list(output)


# argv: the parent's pid, then the command; exec'd in place, so the pid (and the signals) stay the child's
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('die_with_parent: the parent died before the child started')\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, child: Child) -> None:
        self.child = child

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.child._output.feed(data if isinstance(data, bytes) else data.encode())

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self.child._output.close()

    def process_exited(self) -> None:
        self.child._exited.set()

    def connection_lost(self, exc: Exception | None) -> None:  # exited and every pipe closed
        self.child._closed.set()


class Child:
    def __init__(
        self,
        argv: Sequence[str | Path],
        *,
        name: str | None = None,
        ready: Ready = None,
        ready_timeout_s: float = 30.0,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        log_path: Path | None = None,
        tail_lines: int = 200,
        on_line: Callable[[str], None] | None = None,
        process_group: bool = False,
        die_with_parent: bool = False,
        stop_timeout_s: float = 10.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        if not argv:
            raise ValueError("argv is empty")
        self.argv = [str(a) for a in argv]
        self.name = name or _default_name(self.argv)
        self._pattern: re.Pattern[str] | None = None
        self._probe: Probe | None = None
        if isinstance(ready, str):
            self._pattern = re.compile(ready)
        elif isinstance(ready, re.Pattern):
            self._pattern = ready
        else:
            self._probe = ready
        self.ready_timeout_s = ready_timeout_s
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.log_path = log_path
        self.on_line = on_line
        self.process_group = process_group
        self.die_with_parent = die_with_parent
        self.stop_timeout_s = stop_timeout_s
        self.poll_interval_s = poll_interval_s
        self.ready_match: re.Match[str] | None = None  # the ready line's match (a `ready` pattern only)
        self._tail_lines = tail_lines
        self._output = self._new_output(None)
        self._transport: asyncio.SubprocessTransport | None = None
        self._started = False
        self._stopped = False
        self._ready = asyncio.Event()
        self._exited = asyncio.Event()
        self._closed = asyncio.Event()
        self._stop_lock = asyncio.Lock()

    # ---- state ---------------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return self._transport.get_pid() if self._transport is not None else None

    @property
    def returncode(self) -> int | None:
        """The exit code once it has exited (negative: killed by that signal), else None."""
        return self._transport.get_returncode() if self._transport is not None else None

    @property
    def running(self) -> bool:
        return self._transport is not None and not self._exited.is_set()

    @property
    def output(self) -> list[str]:
        """The last `tail_lines` lines of output (stdout and stderr together)."""
        return self._output.lines

    def tail(self, lines: int = 20) -> str:
        return self._output.tail(lines)

    # ---- lifecycle -----------------------------------------------------------------------------------------------
    async def start(self, timeout_s: float | None = None) -> None:
        """Start the child and return once it is ready; raises ChildError (after stopping it) if it is not."""
        if self._started:
            raise RuntimeError(f"{self.name}: already started (a Child runs once)")
        self._started = True
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._output = self._new_output(self.log_path.open("ab", buffering=0))
        try:
            transport, _ = await asyncio.get_running_loop().subprocess_exec(
                lambda: _Protocol(self),
                *self._command(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=self.process_group,
            )
        except OSError as exc:
            self._stopped = True
            self._output.close()
            raise ChildError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from exc
        self._transport = transport
        log.debug("child started", extra={"child": self.name, "pid": self.pid})
        timeout = self.ready_timeout_s if timeout_s is None else timeout_s
        try:
            problem = await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        if problem is not None:
            await self.stop()
            raise ChildError(
                f"{self.name} {problem}; its last output:\n{self.tail()}",
                returncode=self.returncode,
                output=self.output,
            )

    async def wait(self) -> int:
        """Wait for the child to exit on its own; its exit code."""
        if self._transport is None:
            raise RuntimeError(f"{self.name}: not started")
        await self._exited.wait()
        return self._transport.get_returncode()  # type: ignore[return-value]

    async def stop(self) -> int | None:
        """SIGTERM, wait up to stop_timeout_s, SIGKILL, wait; the exit code (None if it never started)."""
        async with self._stop_lock:
            if self._transport is not None and not self._stopped:
                try:
                    await self._terminate()
                finally:
                    self._stopped = True
                    self._transport.close()  # closes our ends of the pipes (kills only if still running)
                    self._output.close()
                    log.debug("child stopped", extra={"child": self.name, "returncode": self.returncode})
        return self.returncode

    async def kill(self) -> int | None:
        """SIGKILL at once (a crash, for failure tests) and wait for the exit; then `stop()` only cleans up."""
        if self._transport is not None and not self._exited.is_set():
            self._signal(signal.SIGKILL)
            await self._exited.wait()
        return self.returncode

    async def __aenter__(self) -> Child:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- internals -----------------------------------------------------------------------------------------------
    async def _wait_ready(self, timeout_s: float) -> str | None:
        """None once ready, else what went wrong (exited, or not ready in time)."""
        if self._probe is not None:
            problem = await poll(self._probe, self._exited, timeout_s, self.poll_interval_s)
        elif self._pattern is not None:
            await _first(self._ready, self._exited, timeout_s)
            problem = None if self.ready_match is not None else f"no output line matched {self._pattern.pattern!r}"
        else:
            return None
        if self._exited.is_set():  # even if it looked ready: it is not running
            return f"exited with code {self.returncode} before it was ready"
        return None if problem is None else f"not ready after {timeout_s:g} s ({problem})"

    async def _terminate(self) -> None:
        if not self._exited.is_set():
            self._signal(signal.SIGTERM)
            if not await _within(self._exited, self.stop_timeout_s):
                log.warning("child ignored SIGTERM: killing it", extra={"child": self.name, "pid": self.pid})
                self._signal(signal.SIGKILL)
                await self._exited.wait()
        if self.process_group:
            self._signal(signal.SIGKILL)  # whatever it left behind in its group
        await _within(self._closed, _OUTPUT_GRACE_S)  # its last output, still in the pipe

    def _command(self) -> list[str]:
        if not (self.die_with_parent and sys.platform.startswith("linux")):
            return self.argv
        binary = shutil.which(self.argv[0], path=(self.env or os.environ).get("PATH"))
        if binary is None:
            raise FileNotFoundError(f"no such executable: {self.argv[0]}")
        return [sys.executable, "-I", "-c", _DIE_WITH_PARENT, str(os.getpid()), binary, *self.argv[1:]]

    def _signal(self, sig: int) -> None:
        pid = self.pid
        if pid is None:
            return
        # os.kill, not Popen.send_signal: the latter polls (waitpid) and can reap the child before asyncio's watcher
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.process_group:
                os.killpg(pid, sig)
            elif not self._exited.is_set():
                os.kill(pid, sig)

    def _new_output(self, log_file: IO[bytes] | None) -> OutputLines:
        output = OutputLines(self._tail_lines, self._line, log_file)
        output.tail_only = self.on_line is None and self._pattern is None  # no line needs to be looked at
        return output

    def _line(self, text: str) -> None:
        if self.on_line is not None:
            try:
                self.on_line(text)
            except Exception:  # a bad callback must not stop the draining
                log.exception("on_line failed", extra={"child": self.name})
        if self._pattern is not None and self.ready_match is None and (m := self._pattern.search(text)):
            self.ready_match = m
            self._ready.set()
            self._output.tail_only = self.on_line is None


async def _first(a: asyncio.Event, b: asyncio.Event, timeout_s: float) -> None:
    """Until `a` or `b` is set, or `timeout_s` has passed."""
    waits = {asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())}
    try:
        await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()


async def _within(event: asyncio.Event, timeout_s: float) -> bool:
    """Whether `event` is set within `timeout_s`."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


def _default_name(argv: list[str]) -> str:
    """`python -m autonomic picker ...` -> 'autonomic picker', `python -m mod` -> 'mod', else the binary's name."""
    if len(argv) >= 3 and argv[1] == "-m":
        return f"autonomic {argv[3]}" if argv[2] == "autonomic" and len(argv) >= 4 else argv[2]
    return Path(argv[0]).name


class ChildWrapper:
    """What a wrapper of one `Child` (a peer, the picker) shares: `stop()` and `async with`; the subclass sets
    `self._child` in its own `start()`."""

    _child: Child | None = None

    @property
    def output(self) -> list[str]:
        """Its last lines of output (stdout and stderr)."""
        return self._child.output if self._child is not None else []

    @property
    def running(self) -> bool:
        return self._child is not None and self._child.running

    @property
    def pid(self) -> int | None:
        """Its process id while it runs (for CPU pinning and /proc sampling)."""
        return self._child.pid if self._child is not None else None

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop()

    async def kill(self) -> None:
        """SIGKILL it (a crash) and wait until it is gone."""
        if self._child is not None:
            await self._child.kill()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
