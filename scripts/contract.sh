#!/usr/bin/env bash
# The contract test: runs schemathesis (property-based, from the OpenAPI document) against the
# real API and a real worker, with a fresh queue prefix and a temporary SQLite store. Fails on
# any 5xx, any status or header the document does not list, any response that does not match
# its schema or content type, and any schema-valid request the API refuses.
#
# Bounded: CONTRACT_MAX_EXAMPLES cases per operation (default 100), seed CONTRACT_SEED (default
# 1, so a run repeats), and CONTRACT_TIMEOUT_S for the whole schemathesis run (default 180).
# Credentials: OFFLOAD_CONTRACT_TOKEN if set; else, when `offload-api keys` exists, an admin
# key created for the run; else (an API without authentication) none.
# Usage: scripts/contract.sh [extra cargo build arguments, e.g. --locked]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh

ensure_rabbitmq
ensure_rabbitmq_management
ensure_contract_python
cargo build "$@" -p offload-api -p offload-worker --bins
bin_dir="${CARGO_TARGET_DIR:-target}/debug"
api_bin="$bin_dir/offload-api"
worker_bin="$bin_dir/offload-worker"

management="${OFFLOAD_TEST_MANAGEMENT_URL:-http://guest:guest@127.0.0.1:15672}"
work="$(mktemp -d)"
prefix="contract-$(date +%s)-$$"
pids=()

# Stops the API and the worker, deletes the run's queues and exchanges and its store.
cleanup() {
  local code=$?
  if [ "${#pids[@]}" -gt 0 ]; then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
      done
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  "$OFFLOAD_CONTRACT_PYTHON" - "$management" "$prefix" <<'PY' || echo "could not delete the queues of $prefix" >&2
import json, sys, urllib.parse, urllib.request
base, prefix = sys.argv[1], sys.argv[2]
url = urllib.parse.urlsplit(base)
host = f"{url.scheme}://{url.hostname}:{url.port}"
auth = urllib.request.HTTPPasswordMgrWithDefaultRealm()
auth.add_password(None, host, url.username or "guest", url.password or "guest")
opener = urllib.request.build_opener(urllib.request.HTTPBasicAuthHandler(auth))
for what in ("queues", "exchanges"):
    with opener.open(f"{host}/api/{what}/%2F?columns=name", timeout=10) as r:
        names = [q["name"] for q in json.load(r)]
    for name in names:
        if name.startswith(prefix + "."):
            q = urllib.parse.quote(name, safe="")
            opener.open(urllib.request.Request(f"{host}/api/{what}/%2F/{q}", method="DELETE"), timeout=10)
PY
  if [ "$code" != 0 ] && [ -f "$work/api.log" ]; then
    echo "--- last lines of the API's log" >&2
    tail -n 20 "$work/api.log" >&2
  fi
  rm -rf "$work"
  exit "$code"
}
trap cleanup EXIT

port="$("$OFFLOAD_CONTRACT_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export OFFLOAD_QUEUE_PREFIX="$prefix"
export OFFLOAD_DATABASE_URL="sqlite://$work/contract.db"
export OFFLOAD_HTTP_ADDR="127.0.0.1:$port"
export OFFLOAD_METRICS_ADDR="127.0.0.1:0"
export OFFLOAD_LOG_FORMAT=json
export RUST_LOG="${RUST_LOG:-warn}"
# Jobs still sleeping at the end are abandoned quickly (they go back to a queue deleted next).
export OFFLOAD_SHUTDOWN_GRACE_S=1

headers=()
token="${OFFLOAD_CONTRACT_TOKEN:-}"
if [ -z "$token" ] && "$api_bin" keys --help >/dev/null 2>&1; then
  # A batch takes as many tokens of the key's bucket as it holds jobs, and a batch over the
  # key's burst is refused (422): the contract key may send the largest batch the document
  # allows (1000), when the command lets it say so.
  quota=()
  if "$api_bin" keys create --help 2>/dev/null | grep -q -- '--burst'; then
    quota=(--burst 1000 --rate-per-s 1000)
  fi
  token="$(timeout 60 "$api_bin" keys create --name contract --scope admin "${quota[@]}")"
fi
if [ -n "$token" ]; then
  headers=(-H "Authorization: Bearer $token")
else
  echo "no token: testing an API without authentication" >&2
fi

"$api_bin" >"$work/api.log" 2>&1 &
pids+=($!)
"$worker_bin" >"$work/worker.log" 2>&1 &
pids+=($!)
base="http://127.0.0.1:$port"
ready=""
for _ in $(seq 1 150); do
  if "$OFFLOAD_CONTRACT_PYTHON" -c "import urllib.request; urllib.request.urlopen('$base/health/ready', timeout=1)" 2>/dev/null; then
    ready=1
    break
  fi
  sleep 0.2
done
if [ -z "$ready" ]; then
  echo "the API at $base was not ready within 30 s" >&2
  exit 1
fi

# The HTML form of POST /jobs (urlencoded or multipart) carries its payload as JSON text
# (`contentMediaType`), which schemathesis generates as arbitrary text: it is left out here and covered by the unit tests and
# the fuzz target of the form parser instead. Everything else is tested as served.
"$OFFLOAD_CONTRACT_PYTHON" - "$base/openapi.json" "$work/openapi.json" "${headers[@]:1}" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1])
if len(sys.argv) > 3:
    name, value = sys.argv[3].split(": ", 1)
    request.add_header(name, value)
with urllib.request.urlopen(request, timeout=10) as r:
    doc = json.load(r)
doc["paths"]["/jobs"]["post"]["requestBody"]["content"].pop("application/x-www-form-urlencoded", None)
doc["paths"]["/jobs"]["post"]["requestBody"]["content"].pop("multipart/form-data", None)
json.dump(doc, open(sys.argv[2], "w"))
PY

echo "== schemathesis against $base (prefix $prefix)"
# The coverage phase is left out: schemathesis 4.32.5 fails inside its own generator (a
# hypothesis FlakyFailure) on the negative cases of the kinds' nested oneOf payload schemas
# (pdf.render's templates, image.thumbnail's file-or-url), before any request is sent.
st="$(dirname "$OFFLOAD_CONTRACT_PYTHON")/schemathesis"
started=$(date +%s)
# Run from the temporary directory: nothing (hypothesis' files) is left in the clone.
# No coverage phase: schemathesis 4.32.5 fails inside its own generator (a hypothesis
# FlakyFailure) on the negative cases of the kinds' nested oneOf payload schemas (pdf.render's
# templates, image.thumbnail's file or url) before sending anything; the other phases run.
hooks="$PWD/scripts/contract_hooks.py"
(cd "$work" && SCHEMATHESIS_HOOKS="$hooks" timeout "${CONTRACT_TIMEOUT_S:-180}" "$st" --no-color run "$work/openapi.json" \
  --url "$base" \
  --checks not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance,positive_data_acceptance \
  --max-examples "${CONTRACT_MAX_EXAMPLES:-100}" \
  --phases examples,fuzzing,stateful \
  --seed "${CONTRACT_SEED:-1}" \
  --request-timeout 10 \
  --workers 2 \
  --generation-database none \
  --generation-with-security-parameters false \
  --suppress-health-check all \
  "${headers[@]}")
echo "contract test finished in $(( $(date +%s) - started )) s"
