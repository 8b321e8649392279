"""The kubeconfig the twin writes for its clients: one cluster (`server: http://127.0.0.1:PORT`), one token user.

Why it exists: the official python client (`config.load_kube_config`) and kubectl find the twin through a
kubeconfig like any cluster. Plain http is fine on loopback: both clients accept an `http://` server and then
skip TLS; the bearer token is sent and accepted (the twin authorizes everyone).
"""

from __future__ import annotations

from pathlib import Path

import yaml

CONTEXT = "autonomic-twin"
TOKEN = "autonomic-twin-token"  # not a secret: the twin serves loopback only and checks no credentials


def kubeconfig_dict(server: str, *, namespace: str = "default") -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server}}],
        "users": [{"name": CONTEXT, "user": {"token": TOKEN}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}],
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(kubeconfig_dict(server), sort_keys=False))
    path.chmod(0o600)
    return path
