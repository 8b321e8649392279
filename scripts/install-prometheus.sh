#!/usr/bin/env bash
# Installs Prometheus and node-exporter from Debian's packages (prometheus, prometheus-node-exporter) when
# /usr/bin/prometheus or /usr/bin/promtool is missing: the cluster twin runs the real Prometheus with the
# descheduler's recording rules, and the tests check the rules with promtool. Needs root or sudo.
set -euo pipefail

if [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: apt-get not found; install Prometheus (>= 2.42) so that /usr/bin/prometheus and" \
         "/usr/bin/promtool exist, or point AUTONOMIC_PROMETHEUS at a prometheus binary" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        echo "install-prometheus: run as root or install sudo (apt-get needs root)" >&2
        exit 1
    fi
fi
echo "installing prometheus and prometheus-node-exporter (Debian packages)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    prometheus prometheus-node-exporter
