# Sourced by the scripts: makes sure the services the project needs are answering.
# Each function starts its service only if it is not already up, and fails with the fix.

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# True if the broker on port $1 answers an AMQP handshake within 5 s (its first frame, a
# Connection.Start method frame, begins with the byte 01). A node can accept TCP and still not
# answer (seen here: a node that stopped accepting AMQP connections, and did so again on a
# restart over the same data directory).
amqp_answers() {
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf 'AMQP\x00\x00\x09\x01' >&3; head -c 1 <&3 | od -An -tx1" 2>/dev/null \
    | grep -q 01
}

# Stops the main node (rabbit@localhost) that does not answer: rabbitmqctl stop, else the beam
# process listening on its distribution port 25672 (the fault node uses 25673). If its next start
# does not answer either, its data directory is moved aside (its queues are the tests', made
# again by each test).
restart_hung_rabbitmq() {
  echo "RabbitMQ accepts TCP on 127.0.0.1:$1 but does not answer AMQP within 5 s; restarting it" >&2
  timeout 30 rabbitmqctl -n rabbit@localhost stop >/dev/null 2>&1 || true
  local pid
  pid="$(ss -ltnpH 'sport = :25672' 2>/dev/null | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)"
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    sleep 3
    kill -9 "$pid" 2>/dev/null || true
  fi
  for _ in $(seq 1 50); do
    port_open "$1" || break
    sleep 0.2
  done
}

ensure_rabbitmq() {
  local port="${OFFLOAD_TEST_AMQP_PORT:-5672}"
  if port_open "$port"; then
    if amqp_answers "$port"; then
      return 0
    fi
    restart_hung_rabbitmq "$port"
    start_rabbitmq "$port" && amqp_answers "$port" && return 0
    local data=/var/lib/rabbitmq/mnesia
    if [ -d "$data" ] && [ "$(id -u)" = 0 ]; then
      echo "RabbitMQ still does not answer; moving $data aside to $data.hung-$(date +%s) and starting afresh" >&2
      restart_hung_rabbitmq "$port"
      mv "$data" "$data.hung-$(date +%s)"
    fi
  fi
  start_rabbitmq "$port"
}

# Installs RabbitMQ if needed and starts it; waits until port $1 answers.
start_rabbitmq() {
  local port="$1"
  if port_open "$port"; then
    return 0
  fi
  if ! command -v rabbitmq-server >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "RabbitMQ is not installed; installing it with apt-get" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    else
      echo "RabbitMQ is not answering on 127.0.0.1:$port and is not installed." >&2
      echo "Install it (e.g. apt-get install rabbitmq-server) or run it in Docker:" >&2
      echo "  docker run -d -p 5672:5672 rabbitmq:4-management" >&2
      return 1
    fi
  fi
  echo "starting RabbitMQ (rabbitmq-server -detached)" >&2
  rabbitmq-server -detached >/dev/null 2>&1 || true
  if ! timeout 120 rabbitmqctl await_startup >/dev/null 2>&1; then
    echo "RabbitMQ did not start within 120 s; see /var/log/rabbitmq/" >&2
    return 1
  fi
  for _ in $(seq 1 100); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "RabbitMQ started but 127.0.0.1:$port does not answer" >&2
  return 1
}

# The management plugin gives the API the unacked count of its queues (OFFLOAD_MANAGEMENT_URL).
ensure_rabbitmq_management() {
  local port="${OFFLOAD_TEST_MANAGEMENT_PORT:-15672}"
  if port_open "$port"; then
    return 0
  fi
  echo "enabling the RabbitMQ management plugin (rabbitmq-plugins enable rabbitmq_management)" >&2
  if ! timeout 120 rabbitmq-plugins enable rabbitmq_management >/dev/null; then
    echo "could not enable rabbitmq_management; see /var/log/rabbitmq/" >&2
    return 1
  fi
  for _ in $(seq 1 300); do
    port_open "$port" && return 0
    sleep 0.2
  done
  echo "the management plugin is enabled but 127.0.0.1:$port does not answer" >&2
  return 1
}

# Deletes the queues an earlier, interrupted test run left on the test broker (`test-…`, each
# test's prefix): every quorum queue left costs the broker, and hundreds of them slow its
# answers past the test processes' connect deadline. Through the management API, in parallel
# (rabbitmqctl takes half a second a queue).
purge_test_queues() {
  local port="${OFFLOAD_TEST_MANAGEMENT_PORT:-15672}" base
  base="http://guest:guest@127.0.0.1:$port/api/queues"
  local names
  names=$(curl -fsS "$base?columns=name" 2>/dev/null \
    | python3 -c 'import json, sys; print("\n".join(q["name"] for q in json.load(sys.stdin) if q["name"].startswith("test-")))' 2>/dev/null) || return 0
  [ -n "$names" ] || return 0
  echo "deleting $(wc -l <<<"$names") queues left by an earlier test run" >&2
  xargs -P 8 -I{} curl -fsS -o /dev/null -X DELETE "$base/%2F/{}" <<<"$names" || true
}

# The newest PostgreSQL cluster version under /etc/postgresql (e.g. 15), or nothing.
pg_version() {
  ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres() {
  local port="${OFFLOAD_TEST_PG_PORT:-5432}"
  if port_open "$port"; then
    return 0
  fi
  local fresh=""
  if [ -z "$(pg_version)" ] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "PostgreSQL is not installed; installing it with apt-get" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
      fresh=1
    else
      echo "PostgreSQL is not answering on 127.0.0.1:$port and is not installed." >&2
      echo "Install it (e.g. apt-get install postgresql) or run it in Docker:" >&2
      echo "  docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust -e POSTGRES_DB=test postgres:16" >&2
      return 1
    fi
  fi
  local version
  version="$(pg_version)"
  if [ -n "$fresh" ]; then
    # The tests connect as postgres without a password over TCP, to the database `test`.
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' \
      "/etc/postgresql/$version/main/pg_hba.conf"
  fi
  echo "starting PostgreSQL (pg_ctlcluster --skip-systemctl-redirect $version main start)" >&2
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
  for _ in $(seq 1 150); do
    if port_open "$port"; then
      if [ -n "$fresh" ]; then
        runuser -u postgres -- createdb test
      fi
      return 0
    fi
    sleep 0.2
  done
  echo "PostgreSQL did not answer on 127.0.0.1:$port within 30 s; see /var/log/postgresql/" >&2
  return 1
}

# poppler's pdftotext and pdfinfo: the pdf.render tests read the PDFs they render with them.
ensure_pdftotext() {
  if command -v pdftotext >/dev/null 2>&1 && command -v pdfinfo >/dev/null 2>&1; then
    return 0
  fi
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "pdftotext is not installed; installing poppler-utils with apt-get" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
  else
    echo "pdftotext and pdfinfo are missing: install them with apt-get install poppler-utils" >&2
    return 1
  fi
}

# The Python interpreter the protocol peer test (tests/tests/peer.rs) runs: a virtualenv with
# pika, kept in the user's cache so a fresh clone reuses it. Exports OFFLOAD_PEER_PYTHON.
ensure_peer_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/offload/peer-venv"
  if ! "$venv/bin/python" -c "import pika" 2>/dev/null; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" 2>/dev/null; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "python3 with venv is not installed; installing it with apt-get" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
      else
        echo "The protocol peer test needs python3 with venv: install python3 and python3-venv" >&2
        return 1
      fi
    fi
    echo "creating $venv with pika for the protocol peer test" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'pika>=1.3,<2' >&2
  fi
  export OFFLOAD_PEER_PYTHON="$venv/bin/python"
}

# The Python interpreter of the contract test (scripts/contract.sh): a virtualenv with a pinned
# schemathesis, kept in the user's cache so a fresh clone reuses it. Exports
# OFFLOAD_CONTRACT_PYTHON.
SCHEMATHESIS_VERSION="4.32.5"
ensure_contract_python() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/offload/contract-venv"
  if ! "$venv/bin/python" -c "import schemathesis, sys; sys.exit(schemathesis.__version__ != '$SCHEMATHESIS_VERSION')" 2>/dev/null; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import venv, ensurepip" 2>/dev/null; then
      echo "The contract test needs python3 with venv: install python3 and python3-venv" >&2
      return 1
    fi
    echo "creating $venv with schemathesis $SCHEMATHESIS_VERSION for the contract test" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION" >&2
  fi
  export OFFLOAD_CONTRACT_PYTHON="$venv/bin/python"
}

# Debian's chromium, for the browser suite (tests/tests/browser.rs): playwright-core drives it
# through `executablePath`, so no browser build is downloaded. Exports OFFLOAD_CHROMIUM.
ensure_chromium() {
  local chromium
  chromium="$(command -v chromium || true)"
  if [ -z "$chromium" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
      echo "chromium is not installed; installing it with apt-get (browser suite)" >&2
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
      chromium="$(command -v chromium || true)"
    fi
    if [ -z "$chromium" ]; then
      echo "The browser suite needs Debian's chromium: run (as root) apt-get install chromium" >&2
      return 1
    fi
  fi
  export OFFLOAD_CHROMIUM="$chromium"
}

# The browser suite's driver: a pinned playwright-core from npm, kept in the user's cache so a
# fresh clone reuses it (no browser download: it drives Debian's chromium). Exports
# OFFLOAD_BROWSER_DRIVER (the directory holding node_modules/playwright-core).
# axe-core, pinned too, checks each dashboard page for accessibility issues.
PLAYWRIGHT_CORE_VERSION="1.65.1"
AXE_CORE_VERSION="4.14.1"
ensure_browser_driver() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/offload/browser"
  local installed axe
  installed="$(node -p "require('$dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
  axe="$(node -p "require('$dir/node_modules/axe-core/package.json').version" 2>/dev/null || true)"
  if [ "$installed" != "$PLAYWRIGHT_CORE_VERSION" ] || [ "$axe" != "$AXE_CORE_VERSION" ]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
      if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "Node.js is not installed; installing it with apt-get (browser suite)" >&2
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
      else
        echo "The browser suite needs Node.js and npm: install nodejs and npm" >&2
        return 1
      fi
    fi
    echo "installing playwright-core $PLAYWRIGHT_CORE_VERSION and axe-core $AXE_CORE_VERSION into $dir (browser suite)" >&2
    mkdir -p "$dir"
    # No browser download: the suite launches Debian's chromium by path.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$dir" --no-save --no-audit --no-fund \
      --no-package-lock --silent "playwright-core@$PLAYWRIGHT_CORE_VERSION" "axe-core@$AXE_CORE_VERSION" >&2
  fi
  export OFFLOAD_BROWSER_DRIVER="$dir"
}
