#!/usr/bin/env bash
# Builds the upstream descheduler (sigs.k8s.io/descheduler) into a project-local GOPATH, .gopath/bin/descheduler, to run
# it against `autonomic cluster-sim` (docs/cluster-twin.md, "The upstream descheduler"). A no-op when that binary
# reports $DESCHEDULER_VERSION. `go install module@version` refuses the descheduler (its go.mod has replace
# directives), so the module's source is fetched through the module proxy into .gopath/pkg/mod, copied to
# .gopath/src/descheduler-$VERSION (the module cache is read-only) and built there with -mod=mod. Nothing of it is
# committed (.gopath/ is ignored). About 10 minutes on 2 cores from an empty Go cache; needs Go >= the version its
# go.mod names (1.26 for v0.36.0).
# Usage: scripts/install-descheduler.sh [GOPATH]   (GOPATH defaults to .gopath; DESCHEDULER_VERSION to v0.36.0)
set -euo pipefail

GOPATH_DIR="$(mkdir -p "${1:-.gopath}" && cd "${1:-.gopath}" && pwd)"
VERSION="${DESCHEDULER_VERSION:-v0.36.0}"
BIN="$GOPATH_DIR/bin/descheduler"
export GOPATH="$GOPATH_DIR" GOFLAGS=-mod=mod

if [ -x "$BIN" ] && [ "$(cat "$BIN.version" 2>/dev/null || true)" = "$VERSION" ]; then
    exit 0
fi
if ! command -v go >/dev/null 2>&1; then
    echo "install-descheduler: no Go toolchain (go >= 1.26) to build sigs.k8s.io/descheduler@$VERSION" >&2
    exit 1
fi
echo "building sigs.k8s.io/descheduler@$VERSION into $BIN (about 10 minutes on 2 cores from a cold Go cache)"
module_dir="$(go mod download -json "sigs.k8s.io/descheduler@$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
src="$GOPATH_DIR/src/descheduler-$VERSION"
rm -rf "$src"
mkdir -p "$GOPATH_DIR/src"
cp -r "$module_dir" "$src"
chmod -R u+w "$src"
(cd "$src" && go build -o "$BIN" ./cmd/descheduler)
printf '%s\n' "$VERSION" > "$BIN.version"
