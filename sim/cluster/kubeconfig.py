"""The kubeconfig the twin writes for its clients: one cluster (`server: http://127.0.0.1:PORT`, or https with
`certificate-authority-data` under `--tls`), one token user.

Why it exists: the official python client (`config.load_kube_config`) and kubectl find the twin through a
kubeconfig like any cluster. Plain http is fine on loopback: both clients accept an `http://` server and then
skip TLS; over https (`tls.py`) they verify the twin's certificate against the CA embedded here. The bearer
token is sent and accepted (the twin authorizes everyone).
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

CONTEXT = "autonomic-twin"
TOKEN = "autonomic-twin-token"  # not a secret: the twin serves loopback only and checks no credentials


def kubeconfig_dict(server: str, *, namespace: str = "default", ca_pem: bytes | None = None) -> dict[str, object]:
    cluster: dict[str, str] = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str, ca_pem: bytes | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(server, ca_pem=ca_pem), sort_keys=False))
    path.chmod(0o600)
    return path
