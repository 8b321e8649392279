#!/usr/bin/env bash
# Makes a helm >= 3.18 available to the tests that render the chart in deploy/helm/ (tests/unit/test_helm_chart.py):
# a no-op when one is on PATH or in the venv. 3.18 is the first helm that checks values.schema.json with the JSON
# Schema library helm 4 uses (santhosh-tekuri/jsonschema), so the chart's errors read the same on both.
# Otherwise `go install helm.sh/helm/v4/cmd/helm@$HELM_VERSION` into the venv bin given as $1: Debian and PyPI have
# no current helm, the Go module proxy serves its source. About 2.5 minutes on 2 cores from an empty Go module and
# build cache (docs/deploy.md); needs Go >= the version helm's go.mod names.
# Usage: scripts/install-helm.sh [VENV_BIN]   (VENV_BIN defaults to .venv/bin; HELM_VERSION defaults to v4.3.2)
set -euo pipefail

VENV_BIN="${1:-.venv/bin}"
HELM_VERSION="${HELM_VERSION:-v4.3.2}"

usable() {  # $1: a helm; true when it is 3.18 or newer
    local version major minor
    version="$("$1" version --template '{{.Version}}' 2>/dev/null || true)"  # v4.3 (go install), v3.18.4 (release)
    major="$(printf '%s' "$version" | sed -n 's/^v\([0-9]*\)\.\([0-9]*\).*/\1/p')"
    minor="$(printf '%s' "$version" | sed -n 's/^v\([0-9]*\)\.\([0-9]*\).*/\2/p')"
    [ -n "$major" ] && [ -n "$minor" ] && { [ "$major" -gt 3 ] || { [ "$major" -eq 3 ] && [ "$minor" -ge 18 ]; }; }
}

for candidate in "$VENV_BIN/helm" "$(command -v helm || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && usable "$candidate"; then
        exit 0
    fi
done

if ! command -v go >/dev/null 2>&1; then
    echo "install-helm: no usable helm (>= 3.18) and no Go toolchain to build one; install Go or put helm on PATH" >&2
    exit 1
fi
if [ ! -d "$VENV_BIN" ]; then
    echo "install-helm: no venv bin directory at $VENV_BIN" >&2
    exit 1
fi
major="${HELM_VERSION#v}"
major="${major%%.*}"
module="helm.sh/helm/v$major/cmd/helm"  # v3.x or v4.x
echo "installing helm $HELM_VERSION into $VENV_BIN (go install $module; a few minutes on a cold build cache)"
GOBIN="$(cd "$VENV_BIN" && pwd)" go install "$module@$HELM_VERSION"
usable "$VENV_BIN/helm"
