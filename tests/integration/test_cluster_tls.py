"""The cluster twin over HTTPS (`--tls`), with certificate verification on: the official python client from the
kubeconfig (its `certificate-authority-data`) and from the service-account directory (in-cluster config), kubectl
both ways, a client that does not trust the CA refused, and `cluster-sim --tls` as a process."""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException
from kubernetes.config.incluster_config import InClusterConfigLoader

from sim.cluster.kubeconfig import TOKEN
from sim.cluster.scenario import parse_scenario
from sim.cluster.twin import ClusterTwin

KUBECTL = shutil.which("kubectl")
AUTONOMIC = Path(sys.executable).with_name("autonomic")
SCENARIO = {
    "nodes": [{"name": "worker-0", "cpu": "8", "memory": "32Gi"}, {"name": "worker-1", "cpu": "8", "memory": "32Gi"}],
    "vms": [{"name": "db-0", "namespace": "vms", "cpu": 2, "memory": "4Gi", "node": "worker-0"}],
}


@pytest.fixture(scope="module")
def twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterTwin]:
    kubeconfig = tmp_path_factory.mktemp("tls") / "kubeconfig"
    with ClusterTwin(parse_scenario(SCENARIO), time_scale=10, tls=True, kubeconfig_path=kubeconfig) as t:
        yield t


def _kubeconfig_client(twin: ClusterTwin) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(config_file=str(twin.kubeconfig_path), client_configuration=cfg)
    assert cfg.verify_ssl and cfg.host.startswith("https://127.0.0.1:")
    return client.ApiClient(cfg)


def _in_cluster_client(twin: ClusterTwin) -> client.ApiClient:
    """What `config.load_incluster_config()` does in a pod, pointed at the twin's service-account directory."""
    sa = twin.service_account_dir
    assert sa is not None
    port = twin.api_url.rsplit(":", 1)[1]
    cfg = client.Configuration()
    InClusterConfigLoader(
        token_filename=str(sa / "token"),
        cert_filename=str(sa / "ca.crt"),
        environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
    ).load_and_set(cfg)
    assert cfg.verify_ssl and cfg.ssl_ca_cert == str(sa / "ca.crt")
    return client.ApiClient(cfg)


def test_kubeconfig_is_https_with_the_ca_beside_it(twin: ClusterTwin) -> None:
    doc = yaml.safe_load(twin.kubeconfig_path.read_text())
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == twin.api_url and twin.api_url.startswith("https://127.0.0.1:")
    assert twin.ca_path == twin.kubeconfig_path.with_name("kubeconfig-ca.crt")
    assert base64.b64decode(cluster["certificate-authority-data"]) == twin.ca_path.read_bytes()
    ca = x509.load_pem_x509_certificate(twin.ca_path.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_before_utc <= datetime.now(UTC) <= ca.not_valid_after_utc  # the wall clock, not model time


def test_service_account_directory(twin: ClusterTwin) -> None:
    sa = twin.service_account_dir
    assert sa == twin.kubeconfig_path.parent / "serviceaccount"
    assert (sa / "token").read_text() == TOKEN and (sa / "namespace").read_text() == "default"
    assert (sa / "ca.crt").read_bytes() == twin.ca_path.read_bytes()  # type: ignore[union-attr]


@pytest.mark.parametrize("make", [_kubeconfig_client, _in_cluster_client], ids=["kubeconfig", "in-cluster"])
def test_python_client_over_verified_tls(twin: ClusterTwin, make) -> None:  # type: ignore[no-untyped-def]
    api = make(twin)
    core = client.CoreV1Api(api)
    assert [n.metadata.name for n in core.list_node().items] == ["worker-0", "worker-1"]
    rv = core.list_namespace().metadata.resource_version
    core.create_namespace({"metadata": {"name": f"tls-{make.__name__.strip('_').split('_')[0]}"}})
    events = watch.Watch().stream(core.list_namespace, resource_version=rv, timeout_seconds=2)
    assert next(iter(events))["type"] == "ADDED"  # a watch stream over TLS
    api.close()


def test_client_without_the_ca_is_refused(twin: ClusterTwin) -> None:
    cfg = client.Configuration()
    cfg.host, cfg.api_key = twin.api_url, {"authorization": f"Bearer {TOKEN}"}
    cfg.retries = False
    with pytest.raises(ApiException) as exc:
        client.CoreV1Api(client.ApiClient(cfg)).list_node()
    assert exc.value.status == 0 and "CERTIFICATE_VERIFY_FAILED" in str(exc.value.reason)
    with pytest.raises(urllib.error.URLError):  # the admin API is behind the same TLS
        urllib.request.urlopen(f"{twin.api_url}/_twin/state", timeout=10)
    trusted = ssl.create_default_context(cafile=str(twin.ca_path))
    with urllib.request.urlopen(f"{twin.api_url}/_twin/state", timeout=10, context=trusted) as resp:
        assert json.loads(resp.read())["timeScale"] == 10


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed (Debian package `kubectl`)")
def test_kubectl_over_verified_tls(twin: ClusterTwin, tmp_path: Path) -> None:
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "--kubeconfig", str(twin.kubeconfig_path), "get", "nodes", "-o", "name"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.split() == ["node/worker-0", "node/worker-1"], out.stderr
    sa = twin.service_account_dir
    assert sa is not None
    (tmp_path / "none").write_text("")
    in_cluster = [
        KUBECTL,
        "--kubeconfig",
        str(tmp_path / "none"),  # an empty kubeconfig: only the flags below, as a pod's service account gives them
        "--server",
        twin.api_url,
        "--certificate-authority",
        str(sa / "ca.crt"),
        "--token",
        (sa / "token").read_text(),
    ]
    out = subprocess.run([*in_cluster, "get", "vmi", "-A", "-o", "name"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.split() == ["virtualmachineinstance.kubevirt.io/db-0"], out.stderr
    untrusting = [*in_cluster[:5], "--token", TOKEN]  # no --certificate-authority: the system roots only
    out = subprocess.run([*untrusting, "get", "nodes"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "certificate signed by unknown authority" in out.stderr, out.stderr


@pytest.mark.skipif(not AUTONOMIC.exists(), reason="the autonomic console script is not installed")
def test_cluster_sim_tls_process(tmp_path: Path) -> None:
    kubeconfig, sa = tmp_path / "kc" / "kubeconfig", tmp_path / "sa"
    proc = subprocess.Popen(
        [
            str(AUTONOMIC),
            "cluster-sim",
            "--nodes",
            "2",
            "--vms",
            "2",
            "--port",
            "0",
            "--no-prometheus",
            "--tls",
            "--kubeconfig",
            str(kubeconfig),
            "--serviceaccount-dir",
            str(sa),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.strip())
            if line.startswith("ready:"):
                break
        fields = dict(line.split(": ", 1) for line in lines)
        port = fields["api"].rsplit(":", 1)[1]
        assert fields["api"].startswith("https://127.0.0.1:")
        assert fields["ca"] == str(kubeconfig.with_name("kubeconfig-ca.crt"))
        assert fields["serviceaccount"] == f"{sa} (KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT={port})"
        cfg = client.Configuration()
        InClusterConfigLoader(
            token_filename=str(sa / "token"),
            cert_filename=str(sa / "ca.crt"),
            environ={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
        ).load_and_set(cfg)
        with client.ApiClient(cfg) as api:
            assert len(client.CoreV1Api(api).list_node().items) == 2
        proc.terminate()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_controller_twin_clock_reads_the_admin_api_over_tls(twin: ClusterTwin) -> None:
    from controller.cli import twin_clock

    clock = twin_clock(twin.kubeconfig_path, timeout_s=10)
    assert abs(clock.now() - twin.call(lambda: twin.app.clock.wall().timestamp())) < 5  # type: ignore[union-attr]
