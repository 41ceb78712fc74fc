#!/usr/bin/env bash
# Runs the whole system on this machine: RabbitMQ (started if needed), the API on :8080 and
# two workers. Ctrl-C stops everything gracefully.
# Usage: scripts/run.sh            (OFFLOAD_* variables are passed through; WORKERS=N for more)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_rabbitmq
cargo build --release --bins -p offload-api -p offload-worker

pids=()
stop() {
  trap - INT TERM EXIT
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM EXIT

export OFFLOAD_LOG_FORMAT="${OFFLOAD_LOG_FORMAT:-text}"
target/release/offload-api & pids+=($!)
for i in $(seq 1 "${WORKERS:-2}"); do
  OFFLOAD_WORKER_NAME="worker-$i" target/release/offload-worker & pids+=($!)
done
echo "Offload is up: API on ${OFFLOAD_HTTP_ADDR:-0.0.0.0:8080} with ${WORKERS:-2} workers. Ctrl-C stops it." >&2
wait -n "${pids[@]}"
