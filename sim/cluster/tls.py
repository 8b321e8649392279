"""HTTPS for the cluster twin (`cluster-sim --tls`): a CA of its own, a serving certificate it issues, and the files
clients use to trust it: the kubeconfig's `certificate-authority-data` and a service-account directory.

Why it exists: real clients expect an apiserver behind TLS. client-go's in-cluster config (`rest.InClusterConfig`)
only speaks HTTPS and verifies the server against `ca.crt` of the service-account directory; kubectl and the
python client verify against the kubeconfig's CA. The twin therefore makes, at each start:
- a CA (`common/certs.py`), written as `<kubeconfig>-ca.crt` beside the kubeconfig (its key is never written);
- a serving certificate signed by it for 127.0.0.1, ::1, localhost and the in-cluster names of the `kubernetes`
  Service, whose key lives in a private temporary directory for as long as the twin runs;
- a service-account directory laid out as /var/run/secrets/kubernetes.io/serviceaccount is (`token`, `ca.crt`,
  `namespace`), so that a client run with `KUBERNETES_SERVICE_HOST=127.0.0.1`, `KUBERNETES_SERVICE_PORT=<port>`
  and that directory (mounted there, or handed to the python client's `InClusterConfigLoader`) finds the twin.
Certificates are stamped with the real wall clock, whatever the time scale: clients check them against theirs.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.certs import CertPair, certificate_authority, issue
from sim.cluster.kubeconfig import TOKEN

ORGANIZATION = "autonomic cluster twin"
SERVING_HOSTS = (
    "127.0.0.1",
    "::1",
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
SERVICE_ACCOUNT_NAMESPACE = "default"


@dataclass(frozen=True)
class TwinTls:
    ca: CertPair
    serving: CertPair

    @classmethod
    def create(cls, now: datetime | None = None) -> TwinTls:
        now = now or datetime.now(UTC)
        ca = certificate_authority("autonomic-twin-ca", now, organization=ORGANIZATION)
        return cls(ca=ca, serving=issue(ca, SERVING_HOSTS, now, organization=ORGANIZATION))

    def server_context(self, private_dir: Path) -> ssl.SSLContext:
        """The server side, from the serving pair written (mode 0600) into `private_dir`."""
        cert, key = private_dir / "serving.crt", private_dir / "serving.key"
        cert.write_bytes(self.serving.cert_pem)
        key.touch(mode=0o600)
        key.write_bytes(self.serving.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(cert, key)
        return context

    def write_ca(self, kubeconfig_path: Path) -> Path:
        """The CA certificate beside the kubeconfig: `<kubeconfig>-ca.crt`."""
        path = kubeconfig_path.with_name(f"{kubeconfig_path.name}-ca.crt")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.ca.cert_pem)
        return path

    def write_service_account(self, directory: Path) -> Path:
        """`token`, `ca.crt` and `namespace`, as the kubelet mounts them into a pod."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "token").write_text(TOKEN)
        (directory / "ca.crt").write_bytes(self.ca.cert_pem)
        (directory / "namespace").write_text(SERVICE_ACCOUNT_NAMESPACE)
        return directory
