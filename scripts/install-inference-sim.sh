#!/usr/bin/env bash
# Install llm-d's vLLM simulator (llm-d-inference-sim, Go) for the cross-check of our fleet twin
# (docs/peers.md, "Cross-check: llm-d-inference-sim"): the binary lands in .gopath-peers/bin/llm-d-inference-sim,
# its module cache and build tree stay under .gopath-peers (never committed).
#
# Why two ways: the ordinary way is `go install github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim@TAG`,
# tried first. On this machine the Go module proxy answers 403 ("This module version is not available") for every
# github.com/llm-d/* module (llm-d-inference-sim, and llm-d-kv-cache / llm-d-router, which it requires), so that
# fails. The script then builds the same tag from local git mirrors of the two repositories (INFSIM_SRC, KVCACHE_SRC:
# git directories; defaults are this machine's read-only mirrors): `git archive TAG` of the simulator, the packages
# it imports from llm-d-kv-cache at the version its go.mod requires (KVCACHE_REF when the mirror lacks that tag),
# joined by a `replace` directive; every other dependency comes from the module proxy. Pure Go: v0.10.x publishes KV
# events with github.com/go-zeromq/zmq4 (no cgo, no libzmq).
#
# Idempotent: a binary whose stamp (`$BIN.version`) names the same tag and sources is left alone. About 7 minutes of
# CPU on 2 cores from a cold build cache (run nice'd on a shared machine). Needs Go >= 1.25.
# Used by `make peers` (scripts/install-peers.sh); INFSIM_VERSION overrides the tag, PEERS_GOPATH the GOPATH.
set -euo pipefail

cd "$(dirname "$0")/.."
INFSIM_VERSION="${INFSIM_VERSION:-v0.10.2}"
MODULE="github.com/llm-d/llm-d-inference-sim"
KVCACHE_MODULE="github.com/llm-d/llm-d-kv-cache"
INFSIM_SRC="${INFSIM_SRC:-/work/.mirror/llm-d+llm-d-inference-sim/repo}"
KVCACHE_SRC="${KVCACHE_SRC:-/work/.mirror/llm-d+llm-d-kv-cache/repo}"
GOPATH_PEERS="$(mkdir -p "${PEERS_GOPATH:-.gopath-peers}" && cd "${PEERS_GOPATH:-.gopath-peers}" && pwd)"
BIN="$GOPATH_PEERS/bin/llm-d-inference-sim"
export GOPATH="$GOPATH_PEERS" GOFLAGS=-mod=mod

if ! command -v go >/dev/null 2>&1; then
    echo "install-inference-sim: no Go toolchain; the llm-d-inference-sim cross-check will be skipped" >&2
    exit 1
fi
stamp() { cat "$BIN.version" 2>/dev/null || true; }

# 1. the ordinary way
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

# 2. the same tag from local git mirrors
for src in "$INFSIM_SRC" "$KVCACHE_SRC"; do
    if ! git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
        echo "error: cannot build $MODULE $INFSIM_VERSION: the module proxy refused it and $src is not a git" \
            "directory (set INFSIM_SRC and KVCACHE_SRC to clones of llm-d/llm-d-inference-sim and llm-d/llm-d-kv-cache)" >&2
        exit 1
    fi
done
git -C "$INFSIM_SRC" rev-parse -q --verify "$INFSIM_VERSION^{commit}" >/dev/null \
    || { echo "error: $INFSIM_SRC has no tag $INFSIM_VERSION" >&2; exit 1; }
wanted="$(git -C "$INFSIM_SRC" show "$INFSIM_VERSION:go.mod" | awk -v m="$KVCACHE_MODULE" '$1 == m {print $2}')"
[ -n "$wanted" ] || { echo "error: $MODULE $INFSIM_VERSION does not require $KVCACHE_MODULE; update this script" >&2; exit 1; }
if git -C "$KVCACHE_SRC" rev-parse -q --verify "$wanted^{commit}" >/dev/null; then
    kv_ref="${KVCACHE_REF:-$wanted}"
else
    kv_ref="${KVCACHE_REF:-HEAD}"
    echo "note: $KVCACHE_SRC has no tag $wanted (required by $INFSIM_VERSION); using $kv_ref instead"
fi
kv_commit="$(git -C "$KVCACHE_SRC" rev-parse "$kv_ref^{commit}")"
want_stamp="$MODULE $INFSIM_VERSION (source; $KVCACHE_MODULE $wanted => $kv_commit)"
if [ "$(stamp)" = "$want_stamp" ] && [ -x "$BIN" ]; then
    echo "llm-d-inference-sim $INFSIM_VERSION already in $BIN (built from source)"
    exit 0
fi

build="$GOPATH_PEERS/src/llm-d-inference-sim@$INFSIM_VERSION"
rm -rf "$build" && mkdir -p "$build/sim" "$build/kvcache"
git -C "$INFSIM_SRC" archive "$INFSIM_VERSION" | tar -x -C "$build/sim"
# only what a Go build reads: the mirror lacks some large non-Go files (wheels), and git warns about them even for a
# path-limited archive (an "invalid object" line, silenced; a real failure leaves tar an empty stream and stops here)
git -C "$KVCACHE_SRC" archive "$kv_commit" go.mod go.sum pkg version 2>/dev/null | tar -x -C "$build/kvcache"
(
    cd "$build/sim"
    go mod edit -replace "$KVCACHE_MODULE=../kvcache"
    echo "building $MODULE $INFSIM_VERSION from $INFSIM_SRC with $KVCACHE_MODULE at $kv_commit (several minutes)"
    go build -o "$BIN" ./cmd/llm-d-inference-sim
)
echo "$want_stamp" >"$BIN.version"
echo "installed llm-d-inference-sim $INFSIM_VERSION into $BIN (built from source)"
