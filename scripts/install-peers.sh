#!/usr/bin/env bash
# Install the peer routers the routing benchmark compares against, each in its own virtual environment,
# so their dependencies never meet ours: .venv-peers/smg (smg 1.13.0, the SGLang Model Gateway's own package,
# CLI `smg`), .venv-peers/sglang (sglang-router 0.3.2, its predecessor, kept because it holds the peers' best hit
# ratio; its CLI is also called `smg`, hence separate venvs) and .venv-peers/vllm (vllm-router). Idempotent: a venv that already holds the pinned version is left alone.
# Then the reference endpoint picker (GIE EPP v1.5.0, a Go binary in .gopath-peers/bin) through
# scripts/install-epp.sh, the upstream descheduler (sigs.k8s.io/descheduler, .gopath/bin/descheduler) through
# scripts/install-descheduler.sh, for `autonomic bench rebalance --policies descheduler,...`, and llm-d's vLLM
# simulator (llm-d-inference-sim, .gopath-peers/bin) through scripts/install-inference-sim.sh, when a Go toolchain is
# available (without one, the epp-* arms, the descheduler arm and the llm-d-inference-sim cross-check are skipped; a
# failed simulator install is reported and skipped too). The descheduler's KubevirtMigrationAware plugin is not
# built: the Go module proxy does not serve its module (docs/controller-policies.md).
# Used by `make peers`; PY picks the interpreter (default python3), PEERS_DIR the root (default .venv-peers).
set -euo pipefail

cd "$(dirname "$0")/.."
PY="${PY:-python3}"
ROOT="${PEERS_DIR:-.venv-peers}"

install_peer() {  # name package version binary
    local dir="$ROOT/$1" pkg="$2" version="$3" bin="$4"
    if [ -x "$dir/bin/$bin" ] && [ "$("$dir/bin/python" -m pip show "$pkg" 2>/dev/null | sed -n 's/^Version: //p')" = "$version" ]; then
        echo "$pkg $version already in $dir"
        return
    fi
    test -x "$dir/bin/python" || "$PY" -m venv "$dir"
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "$pkg==$version"
    test -x "$dir/bin/$bin" || { echo "error: $pkg installed but $dir/bin/$bin is missing" >&2; exit 1; }
    echo "installed $pkg $version into $dir"
}

install_peer smg smg 1.13.0 smg
install_peer sglang sglang-router 0.3.2 smg
install_peer vllm vllm-router 0.1.17 vllm-router

if command -v go >/dev/null 2>&1; then
    bash scripts/install-epp.sh
    nice -n 10 bash scripts/install-descheduler.sh .gopath
    bash scripts/install-inference-sim.sh \
        || echo "llm-d-inference-sim not installed (above); tests/integration/test_inference_sim_peer.py will skip"
else
    echo "no Go toolchain: the reference EPP (scripts/install-epp.sh) is not installed; the epp-* arms will be skipped"
    echo "no Go toolchain: the descheduler (scripts/install-descheduler.sh) is not built; its arm will be skipped"
    echo "no Go toolchain: llm-d-inference-sim (scripts/install-inference-sim.sh) is not installed"
fi
