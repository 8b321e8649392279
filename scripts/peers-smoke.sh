#!/usr/bin/env bash
# By-hand demonstration that the real peers accept the twin: starts a 3-server fleet (`autonomic fleet`),
# puts smg 1.13.0 (cache_aware, its best configuration here: docs/peers.md), sglang-router 0.3.2 and then vllm-router
# (cache_aware, then kv_aware on the twin's KV events) in front of it,
# sends a few completions through each and prints which server answered. Everything binds 127.0.0.1 and
# every process started here is stopped on exit. Needs `make setup` and `make peers`.
set -euo pipefail

cd "$(dirname "$0")/.."
BASE="${BASE:-23100}"          # fleet: HTTP on BASE+i, KV events on BASE+1000+i, control on BASE+3000
ROUTER_PORT="${ROUTER_PORT:-23050}"
METRICS_PORT="${METRICS_PORT:-23051}"
N=3
LOGDIR="$(mktemp -d)"
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    echo "logs in $LOGDIR"
}
trap cleanup EXIT

start() {  # log-name command...: run in a new session so its whole process group can be stopped
    local name="$1"; shift
    setsid "$@" >"$LOGDIR/$name.log" 2>&1 &
    pids+=("$!")
}

wait_http() {  # url, up to 30 s
    for _ in $(seq 60); do curl -sf -o /dev/null "$1" && return 0; sleep 0.5; done
    echo "timed out waiting for $1" >&2; return 1
}

workers=(); kv=()
for i in $(seq 0 $((N - 1))); do
    workers+=("http://127.0.0.1:$((BASE + i))")
    kv+=(--kv-event-source "http://127.0.0.1:$((BASE + i))=tcp://127.0.0.1:$((BASE + 1000 + i))")
done

start fleet .venv/bin/autonomic fleet --servers "$N" --base-port "$BASE" --time-scale 50
wait_http "${workers[0]}/health"
MODEL="$(curl -s "${workers[0]}/v1/models" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
echo "fleet up: ${workers[*]} (model $MODEL)"

served_by() {  # which server's prompt-token counter moved
    for w in "${workers[@]}"; do curl -s "$w/metrics" | awk '/^vllm:prompt_tokens_total/ {s += $NF} END {printf "%d ", s}'; done
}

drive() {  # name
    local prompt="shared system prompt $(printf 'alpha beta gamma delta %.0s' $(seq 80)) question"
    for attempt in $(seq 60); do
        curl -sf -o /dev/null "http://127.0.0.1:$ROUTER_PORT/v1/completions" -H 'content-type: application/json' \
            -d "{\"model\": \"$MODEL\", \"prompt\": \"ready\", \"max_tokens\": 1}" && break
        sleep 0.5
    done
    for n in 1 2 3; do
        local before after
        before="$(served_by)"
        curl -s "http://127.0.0.1:$ROUTER_PORT/v1/completions" -H 'content-type: application/json' \
            -d "{\"model\": \"$MODEL\", \"prompt\": \"$prompt\", \"max_tokens\": 8}" \
            | .venv/bin/python -c 'import json,sys; u=json.load(sys.stdin)["usage"]; print("  usage", u)'
        after="$(served_by)"
        echo "  $1 request $n: prompt tokens per server before [$before] after [$after]"
    done
}

stop_last() { local pid="${pids[-1]}"; kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; unset 'pids[-1]'; }

echo "smg 1.13.0 (smg launch, cache_aware)"
start smg .venv-peers/smg/bin/smg launch --host 127.0.0.1 --port "$ROUTER_PORT" \
    --prometheus-host 127.0.0.1 --prometheus-port "$METRICS_PORT" --policy cache_aware --load-monitor-interval 1 \
    --worker-warmup-secs 0 --worker-warmup-divert-every 0 --worker-warmup-thin-ratio 0 --worker-urls "${workers[@]}"
drive smg; stop_last

echo "sglang-router 0.3.2 (smg launch, cache_aware)"
start sglang .venv-peers/sglang/bin/smg launch --host 127.0.0.1 --port "$ROUTER_PORT" \
    --prometheus-host 127.0.0.1 --prometheus-port "$METRICS_PORT" --policy cache_aware --worker-urls "${workers[@]}"
drive sglang; stop_last

echo "vllm-router (cache_aware)"
start vllm .venv-peers/vllm/bin/vllm-router --host 127.0.0.1 --port "$ROUTER_PORT" \
    --prometheus-host 127.0.0.1 --prometheus-port "$METRICS_PORT" --policy cache_aware --worker-urls "${workers[@]}"
drive vllm-cache-aware; stop_last

echo "vllm-router (kv_aware, KV events from the twin)"
start vllm-kv .venv-peers/vllm/bin/vllm-router --host 127.0.0.1 --port "$ROUTER_PORT" \
    --prometheus-host 127.0.0.1 --prometheus-port "$METRICS_PORT" --policy kv_aware \
    --kv-event-model "$MODEL" --kv-event-block-size 16 "${kv[@]}" --worker-urls "${workers[@]}"
drive vllm-kv-aware; stop_last
echo "ok"
