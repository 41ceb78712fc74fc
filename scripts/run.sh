#!/usr/bin/env bash
# Runs the whole system on this machine: RabbitMQ (started if needed), the API on
# 127.0.0.1:8080 and two workers, and prints a new API token (submit, read) for this run. Ctrl-C (or SIGTERM) stops everything gracefully: running jobs get
# OFFLOAD_SHUTDOWN_GRACE_S to finish, and the script exits 0 once every process stopped cleanly.
# A second Ctrl-C kills them at once (their unfinished jobs go back to the queue). If one of the
# processes exits by itself, the script stops the others and exits non-zero.
# Usage: scripts/run.sh            (OFFLOAD_* variables are passed through; WORKERS=N for more)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_rabbitmq
cargo build --release --bins -p offload-api -p offload-worker

pids=()
declare -A names=()
stopping=""

# Asks every process still running to stop (SIGTERM: finish running jobs, then exit).
stop_all() {
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
  fi
}

on_signal() {
  if [ -n "$stopping" ]; then
    echo "second signal: killing the API and the workers now" >&2
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
  stopping=1
  stop_all
}

# Waits until process $1 has exited (a signal only interrupts `wait`) and returns its status.
wait_for() {
  local code
  while true; do
    code=0
    wait "$1" 2>/dev/null || code=$?
    kill -0 "$1" 2>/dev/null || return "$code"
  done
}

# Waits for every process (but $1, already reported) and says whether all of them exited 0.
wait_all() {
  local pid code failed=0
  for pid in "${pids[@]}"; do
    [ "$pid" != "${1:-}" ] || continue
    code=0
    wait_for "$pid" || code=$?
    if [ "$code" -ne 0 ]; then
      echo "${names[$pid]} exited with status $code" >&2
      failed=1
    fi
  done
  pids=()
  return "$failed"
}

trap on_signal INT TERM
# However the script ends, nothing it started outlives it.
trap 'stop_all; wait 2>/dev/null || true' EXIT

bin="${CARGO_TARGET_DIR:-target}/release"
export OFFLOAD_LOG_FORMAT="${OFFLOAD_LOG_FORMAT:-text}"
# Authentication is on: a key for this run, on the store the API uses (shown once, kept hashed).
token="$("$bin/offload-api" keys create --name "run-$(date +%Y%m%d-%H%M%S)-$$" --scope submit --scope read)"
"$bin/offload-api" &
pids+=("$!") && names[$!]="offload-api"
for i in $(seq 1 "${WORKERS:-2}"); do
  OFFLOAD_WORKER_NAME="worker-$i" "$bin/offload-worker" &
  pids+=("$!") && names[$!]="offload-worker worker-$i"
done
echo "Offload is up: API on ${OFFLOAD_HTTP_ADDR:-127.0.0.1:8080} with ${WORKERS:-2} workers. Ctrl-C stops it." >&2
echo "API token for this run (scopes submit, read): $token" >&2
echo "  curl -H \"Authorization: Bearer $token\" http://${OFFLOAD_HTTP_ADDR:-127.0.0.1:8080}/jobs   (or paste it at / in a browser)" >&2

# Until a signal arrives or one process exits by itself.
exited="" code=0
if [ -z "$stopping" ]; then
  wait -n -p exited "${pids[@]}" || code=$?
fi

# A process that exited 0 was asked to stop: by the signal of a Ctrl-C to the whole group,
# which it may have acted on before this shell ran its trap.
if [ -n "$stopping" ] || { [ -n "${exited:-}" ] && [ "$code" -eq 0 ]; }; then
  stopping=1
  echo "stopping the API and the workers" >&2
  stop_all # again: a signal that came while they were starting found only some of them
  # The one `wait -n` reaped, if any, has reported already.
  if wait_all "${exited:-}"; then
    echo "stopped" >&2
    exit 0
  fi
  exit 1
fi

who="${exited:+${names[$exited]:-}}"
echo "${who:-a process} exited by itself with status $code; stopping the others" >&2
stop_all
wait_all "${exited:-}" || true
exit $((code == 0 ? 1 : code))
