"""The cluster twin assembled: store, KubeVirt, HTTP(S) API + admin API on 127.0.0.1, kubeconfig.

Why it exists: the CLI, the demo and the tests all need "a cluster on a port". `ClusterApp` runs in the
caller's event loop (the CLI server); `ClusterTwin` runs one in a background thread with its own loop, so
synchronous clients (the official `kubernetes` client, kubectl in a subprocess) can be used from tests:

    with ClusterTwin(generate(4, 12), time_scale=100) as twin:
        config.load_kube_config(str(twin.kubeconfig_path))
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from sim.cluster.admin import AdminApi
from sim.cluster.builder import build, kubevirt_config
from sim.cluster.clock import Clock, ScaledClock
from sim.cluster.faults import FaultState
from sim.cluster.http_api import ApiServer
from sim.cluster.kubeconfig import write_kubeconfig
from sim.cluster.kubevirt import KubeVirt
from sim.cluster.kubevirt_config import KubeVirtConfig
from sim.cluster.resources import PODS
from sim.cluster.scenario import Scenario, ScenarioError
from sim.cluster.scenario_load import apply_faults
from sim.cluster.store import Store
from sim.cluster.tls import TwinTls
from sim.cluster.view import StoreView

T = TypeVar("T")
MAX_HEADER_BYTES = 1 << 20  # Go's http.DefaultMaxHeaderBytes, kube-apiserver's limit on a request line and headers


class ClusterApp:
    def __init__(
        self,
        scenario: Scenario,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        time_scale: float = 1.0,
        clock: Clock | None = None,
        event_window: int = 10_000,
        bookmark_interval_s: float = 5.0,
        kubevirt: KubeVirtConfig | None = None,
        kubeconfig_path: Path | None = None,
        tls: bool = False,
        service_account_dir: Path | None = None,
    ) -> None:
        self.scenario, self.host, self.port = scenario, host, port
        self.tls = TwinTls.create() if tls else None
        self._service_account_dir = service_account_dir
        self.ca_path: Path | None = None  # under --tls: the CA certificate written beside the kubeconfig
        self.clock = clock or ScaledClock(time_scale)
        self.store = Store(self.clock, event_window=event_window)
        self.faults = FaultState()
        self.kubevirt = KubeVirt(self.store, kubevirt_config(scenario, kubevirt), self.faults)
        self.api = ApiServer(self.store, self.clock, self.faults, bookmark_interval_s=bookmark_interval_s)
        self.api.subresources[(PODS.key, "eviction")] = self.kubevirt.eviction
        self.view = StoreView(self.store, self.clock, self.kubevirt, self.faults)
        errors = apply_faults(self.faults, scenario.faults)
        if errors:
            raise ScenarioError(errors)
        self._kubeconfig = kubeconfig_path
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._private: tempfile.TemporaryDirectory[str] | None = None  # the serving key, while the twin runs
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def api_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def service_account_dir(self) -> Path | None:
        """Under --tls: the directory laid out as /var/run/secrets/kubernetes.io/serviceaccount."""
        return self._service_account_dir if self.tls else None

    @property
    def kubeconfig_path(self) -> Path:
        assert self._kubeconfig is not None, "start() first"
        return self._kubeconfig

    async def start(self) -> None:
        build(self.store, self.kubevirt, self.scenario)
        self.kubevirt.reconcile()
        app = web.Application(client_max_size=16 * 1024 * 1024)
        AdminApi(self.store, self.faults).routes(app)
        self.api.routes(app)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            max_line_size=MAX_HEADER_BYTES,  # long label selectors in URLs, as Go's http.Server allows
            max_field_size=MAX_HEADER_BYTES,
        )
        await self._runner.setup()
        self._private = tempfile.TemporaryDirectory(prefix="autonomic-cluster-tls-")
        ssl_context = self.tls.server_context(Path(self._private.name)) if self.tls else None
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True, ssl_context=ssl_context)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self.api.server_address = f"{self.host}:{self.port}"
        if self._kubeconfig is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="autonomic-cluster-")
            self._kubeconfig = Path(self._tmp.name) / "kubeconfig"
        write_kubeconfig(self._kubeconfig, self.api_url, self.tls.ca.cert_pem if self.tls else None)
        if self.tls:
            self.ca_path = self.tls.write_ca(self._kubeconfig)
            if self._service_account_dir is None:
                self._service_account_dir = self._kubeconfig.parent / "serviceaccount"
            self.tls.write_service_account(self._service_account_dir)
        self._task = asyncio.create_task(self.kubevirt.run(), name="kubevirt")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.store.log.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for tmp in (self._tmp, self._private):
            if tmp is not None:
                tmp.cleanup()
        self._tmp = self._private = None


class ClusterTwin:
    """A `ClusterApp` in a background thread: `start()`/`stop()` (or `with`) from synchronous code."""

    def __init__(self, scenario: Scenario, **kwargs: Any) -> None:
        self._kwargs, self._scenario = kwargs, scenario
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.app: ClusterApp | None = None

    def start(self) -> ClusterTwin:
        ready = threading.Event()
        errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self.app = ClusterApp(self._scenario, **self._kwargs)
                self._loop.run_until_complete(self.app.start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="cluster-twin", daemon=True)
        self._thread.start()
        ready.wait()
        if errors:
            raise errors[0]
        return self

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the twin's loop thread and return its result (for tests poking at the store)."""
        assert self._loop is not None

        async def wrapper() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout=30)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Await `coro` on the twin's loop (e.g. `start_telemetry(twin.view, options)`) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        if self._loop is None or self.app is None:
            return
        asyncio.run_coroutine_threadsafe(self.app.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None

    def __enter__(self) -> ClusterTwin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def api_url(self) -> str:
        assert self.app is not None
        return self.app.api_url

    @property
    def kubeconfig_path(self) -> Path:
        assert self.app is not None
        return self.app.kubeconfig_path

    @property
    def view(self) -> StoreView:
        assert self.app is not None
        return self.app.view

    @property
    def ca_path(self) -> Path | None:
        assert self.app is not None
        return self.app.ca_path

    @property
    def service_account_dir(self) -> Path | None:
        assert self.app is not None
        return self.app.service_account_dir
