#!/usr/bin/env bash
# Install the field's reference endpoint picker (the Gateway API Inference Extension EPP, cmd/epp) for the routing
# benchmark's `epp-*` arms: `go install sigs.k8s.io/gateway-api-inference-extension/cmd/epp@$EPP_VERSION` with
# GOPATH=.gopath-peers, so the binary lands in .gopath-peers/bin/epp and its module cache stays out of the user's.
#
# Why GIE v1.5.0 and not llm-d-router: the full EPP moved to llm-d/llm-d-router in 2026 (GIE #2430, code deleted in
# GIE a70292c1), but this machine's Go module proxy does not serve llm-d-router (403). v1.5.0 (2026-04-18) is the
# newest GIE release that still ships cmd/epp (v1.6.x only has the round-robin lightweight EPP, pkg/lwepp); its
# go.mod names go 1.25.0 and has no replace directives, so a plain `go install module@tag` builds it. Its default
# plugins (queue 2, kv-cache-utilization 2, prefix-cache 3) are the ones llm-d-router still ships.
#
# Idempotent: a binary whose embedded module version (`go version -m`) is $EPP_VERSION is left alone. About 15-20
# minutes of CPU on 2 cores from a cold Go build cache (run nice'd on a shared machine). Needs Go >= 1.25.
# Used by `make peers` (scripts/install-peers.sh); EPP_VERSION overrides the tag, PEERS_GOPATH the GOPATH.
set -euo pipefail

cd "$(dirname "$0")/.."
EPP_VERSION="${EPP_VERSION:-v1.5.0}"
MODULE="sigs.k8s.io/gateway-api-inference-extension"
GOPATH_PEERS="$(mkdir -p "${PEERS_GOPATH:-.gopath-peers}" && cd "${PEERS_GOPATH:-.gopath-peers}" && pwd)"
BIN="$GOPATH_PEERS/bin/epp"

installed_version() {  # the module version embedded in $BIN, empty when absent
    [ -x "$BIN" ] || return 0
    go version -m "$BIN" 2>/dev/null | awk -v m="$MODULE" '$1 == "mod" && $2 == m {print $3}'
}

if ! command -v go >/dev/null 2>&1; then
    echo "install-epp: no Go toolchain; the epp-* routing arms will be skipped" >&2
    exit 1
fi
if [ "$(installed_version)" = "$EPP_VERSION" ]; then
    echo "epp $EPP_VERSION already in $BIN"
    exit 0
fi
echo "installing epp $EPP_VERSION into $BIN (go install; 15+ minutes on a cold build cache)"
GOPATH="$GOPATH_PEERS" GOBIN="$GOPATH_PEERS/bin" GOFLAGS=-mod=mod go install "$MODULE/cmd/epp@$EPP_VERSION"
[ "$(installed_version)" = "$EPP_VERSION" ] || { echo "error: $BIN does not report $MODULE $EPP_VERSION" >&2; exit 1; }
echo "installed epp $EPP_VERSION into $BIN"
