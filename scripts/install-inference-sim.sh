#!/usr/bin/env bash
# Install llm-d's vLLM simulator (llm-d-inference-sim, Go) for the cross-check of our fleet twin
# (docs/peers.md, "Cross-check: llm-d-inference-sim"): `go install` of the tagged release into
# .gopath-peers/bin/llm-d-inference-sim, its module cache and build tree under .gopath-peers (never committed).
#
# On this machine the Go module proxy answers 403 ("This module version is not available") for every
# github.com/llm-d/* module (llm-d-inference-sim, and llm-d-kv-cache which it requires), so the install fails here
# and says so; the harness and tests/integration/test_inference_sim_peer.py then skip. The project builds no peer
# from a copy of its sources. Pure Go (v0.10.x publishes KV events with github.com/go-zeromq/zmq4: no cgo, no
# libzmq). Idempotent: a binary whose stamp (`$BIN.version`) names the same tag is left alone. Needs Go >= 1.25.
# Used by `make peers` (scripts/install-peers.sh); INFSIM_VERSION overrides the tag, PEERS_GOPATH the GOPATH.
set -euo pipefail

cd "$(dirname "$0")/.."
INFSIM_VERSION="${INFSIM_VERSION:-v0.10.2}"
MODULE="github.com/llm-d/llm-d-inference-sim"
GOPATH_PEERS="$(mkdir -p "${PEERS_GOPATH:-.gopath-peers}" && cd "${PEERS_GOPATH:-.gopath-peers}" && pwd)"
BIN="$GOPATH_PEERS/bin/llm-d-inference-sim"
export GOPATH="$GOPATH_PEERS" GOFLAGS=-mod=mod

if ! command -v go >/dev/null 2>&1; then
    echo "install-inference-sim: no Go toolchain; the llm-d-inference-sim cross-check will be skipped" >&2
    exit 1
fi
stamp() { cat "$BIN.version" 2>/dev/null || true; }


if [ "$(stamp)" = "$MODULE $INFSIM_VERSION (go install)" ] && [ -x "$BIN" ]; then
    echo "llm-d-inference-sim $INFSIM_VERSION already in $BIN"
    exit 0
fi
echo "installing llm-d-inference-sim $INFSIM_VERSION into $BIN (go install)"
if GOBIN="$GOPATH_PEERS/bin" go install "$MODULE/cmd/llm-d-inference-sim@$INFSIM_VERSION" 2>"$GOPATH_PEERS/infsim-install.err"; then
    echo "$MODULE $INFSIM_VERSION (go install)" >"$BIN.version"
    echo "installed llm-d-inference-sim $INFSIM_VERSION into $BIN"
    exit 0
fi
echo "go install failed: $(tail -n 2 "$GOPATH_PEERS/infsim-install.err" | tr '\n' ' ')"
echo "error: llm-d-inference-sim $INFSIM_VERSION is not installed: the Go module proxy did not serve $MODULE" \
    "(on this machine it refuses github.com/llm-d/*); the cross-check is skipped" >&2
exit 1
