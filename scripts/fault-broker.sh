#!/usr/bin/env bash
# Manages a SECOND, private RabbitMQ node for fault-injection tests (tests that stop and restart
# the broker), so the main node on 127.0.0.1:5672 is never disturbed.
#
# Usage: scripts/fault-broker.sh start|stop|stop-app|start-app|status|url
#   start      start the node detached (no-op if it already answers) and wait until AMQP answers
#   stop       stop the whole node (Erlang VM included)
#   reset      kill the node's VM at once and delete its data (the next start is a fresh node)
#   stop-app   stop the RabbitMQ application only (AMQP port closes; simulates an outage)
#   start-app  start the application again and wait until the AMQP port answers
#   alarm-on   raise a memory alarm (watermark set far below use): the node blocks publishers
#   alarm-off  clear it (watermark back to the default 0.4)
#   close-connections  close every client connection (as a network cut or a node restart does)
#   consumer-timeout=MS  the consumer timeout of channels opened from now on (a delivery left
#              unacknowledged longer closes its channel), checked every second below the
#              default of 1800000 (30 min), else every minute as by default
#   status     exit 0 if the AMQP port answers, 1 otherwise
#   url        print the node's AMQP URL (amqp://guest:guest@127.0.0.1:5673/%2f)
#
# Identity (environment variables, with defaults):
#   RABBITMQ_NODENAME              offload-fault@localhost  (the main node is rabbit@localhost)
#   RABBITMQ_NODE_IP_ADDRESS       127.0.0.1
#   RABBITMQ_NODE_PORT             5673    AMQP
#   RABBITMQ_DIST_PORT             25673   Erlang distribution (the main node uses 25672)
#   OFFLOAD_FAULT_BROKER_DIR       /tmp/offload-fault-broker (holds everything below)
#   RABBITMQ_MNESIA_BASE           $OFFLOAD_FAULT_BROKER_DIR/mnesia
#   RABBITMQ_LOG_BASE              $OFFLOAD_FAULT_BROKER_DIR/log
#   RABBITMQ_PID_FILE              $OFFLOAD_FAULT_BROKER_DIR/<node>.pid
#   RABBITMQ_ENABLED_PLUGINS_FILE  $OFFLOAD_FAULT_BROKER_DIR/enabled_plugins  (written as "[].")
#   RABBITMQ_CONFIG_FILE           $OFFLOAD_FAULT_BROKER_DIR/rabbitmq.conf    (written each start)
#   RABBITMQ_CONF_ENV_FILE         $OFFLOAD_FAULT_BROKER_DIR/rabbitmq-env.conf
#   OFFLOAD_FAULT_BROKER_TIMEOUT   120     seconds to wait for start / start-app / stop
#
# The private config files matter: /etc/rabbitmq/rabbitmq.conf pins listeners.tcp to :5672 and
# /etc/rabbitmq/rabbitmq-env.conf sets NODENAME=rabbit@localhost, so the second node must read
# neither of them. Run as root (the Debian wrappers then run the node as user rabbitmq, which
# shares the main node's Erlang cookie in /var/lib/rabbitmq) or as user rabbitmq.
# To start from a clean slate: `scripts/fault-broker.sh stop && rm -rf /tmp/offload-fault-broker`.
set -euo pipefail

die() {
  echo "fault-broker: $*" >&2
  exit 1
}
say() {
  echo "fault-broker: $*" >&2
}

FAULT_DIR="${OFFLOAD_FAULT_BROKER_DIR:-/tmp/offload-fault-broker}"
TIMEOUT="${OFFLOAD_FAULT_BROKER_TIMEOUT:-120}"

NODE="${RABBITMQ_NODENAME:-offload-fault@localhost}"
case "$NODE" in
  *@*) ;;
  *) NODE="$NODE@localhost" ;;
esac
HOST="${RABBITMQ_NODE_IP_ADDRESS:-127.0.0.1}"
PORT="${RABBITMQ_NODE_PORT:-5673}"
DIST_PORT="${RABBITMQ_DIST_PORT:-25673}"

# Guard rails: never act on the main node, whatever the caller's environment says.
case "$NODE" in
  rabbit@*) die "refusing to manage '$NODE': that is the main node's name (set RABBITMQ_NODENAME to something else)" ;;
esac
[ "$PORT" != 5672 ] || die "refusing RABBITMQ_NODE_PORT=5672: that is the main node's AMQP port"
[ "$DIST_PORT" != 25672 ] || die "refusing RABBITMQ_DIST_PORT=25672: that is the main node's distribution port"

export RABBITMQ_NODENAME="$NODE"
export RABBITMQ_NODE_IP_ADDRESS="$HOST"
export RABBITMQ_NODE_PORT="$PORT"
export RABBITMQ_DIST_PORT="$DIST_PORT"
export RABBITMQ_MNESIA_BASE="${RABBITMQ_MNESIA_BASE:-$FAULT_DIR/mnesia}"
export RABBITMQ_LOG_BASE="${RABBITMQ_LOG_BASE:-$FAULT_DIR/log}"
export RABBITMQ_PID_FILE="${RABBITMQ_PID_FILE:-$FAULT_DIR/$NODE.pid}"
export RABBITMQ_ENABLED_PLUGINS_FILE="${RABBITMQ_ENABLED_PLUGINS_FILE:-$FAULT_DIR/enabled_plugins}"
export RABBITMQ_CONFIG_FILE="${RABBITMQ_CONFIG_FILE:-$FAULT_DIR/rabbitmq.conf}"
export RABBITMQ_CONFIG_FILES="${RABBITMQ_CONFIG_FILES:-$FAULT_DIR/conf.d}"
export RABBITMQ_ADVANCED_CONFIG_FILE="${RABBITMQ_ADVANCED_CONFIG_FILE:-$FAULT_DIR/advanced.config}"
export RABBITMQ_CONF_ENV_FILE="${RABBITMQ_CONF_ENV_FILE:-$FAULT_DIR/rabbitmq-env.conf}"
# Keep the distribution listener on loopback, as the main node does (its rabbitmq-env.conf sets
# this through ERL_FLAGS, which we no longer read).
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:--kernel inet_dist_use_interface {127,0,0,1}}"
export ERL_EPMD_ADDRESS="${ERL_EPMD_ADDRESS:-127.0.0.1}"
# These would override the files above; never inherit them from the caller.
unset RABBITMQ_ENABLED_PLUGINS RABBITMQ_MNESIA_DIR RABBITMQ_LOGS RABBITMQ_NODE_ONLY RABBITMQ_ALLOW_INPUT

LOG_FILE="$RABBITMQ_LOG_BASE/$NODE.log"
STARTUP_LOG="$RABBITMQ_LOG_BASE/startup.log"

# Which binaries to run: as root the Debian wrappers in /usr/sbin switch to user rabbitmq
# (environment kept); as rabbitmq we call the real scripts, because the /usr/sbin wrapper would
# send our startup output to the main node's /var/log/rabbitmq/startup_log.
RMQ_LIB=/usr/lib/rabbitmq/bin
if [ "$(id -u)" = 0 ]; then
  id -u rabbitmq >/dev/null 2>&1 || die "user 'rabbitmq' does not exist; is rabbitmq-server installed?"
  CTL=(rabbitmqctl)
  SERVER=(rabbitmq-server)
  RUN_AS=rabbitmq
elif [ "$(id -un)" = rabbitmq ]; then
  CTL=(env HOME=/var/lib/rabbitmq "$RMQ_LIB/rabbitmqctl")
  SERVER=(env HOME=/var/lib/rabbitmq "$RMQ_LIB/rabbitmq-server")
  RUN_AS=
else
  die "run this as root or as user rabbitmq (the node runs as rabbitmq and uses its Erlang cookie)"
fi
command -v rabbitmqctl >/dev/null 2>&1 || die "rabbitmqctl not found (apt-get install rabbitmq-server)"

ctl() {
  "${CTL[@]}" -n "$NODE" "$@"
}

port_open() {
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$PORT" 2>/dev/null
}

# True if the node answers an AMQP handshake: the protocol header gets a Connection.Start frame
# (type 1) back within 5 s. An open port is not enough: a node out of sockets (connections left
# by killed clients) accepts TCP but never answers, and every client of it times out.
amqp_answers() {
  local first
  first="$(timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"; printf "AMQP\x00\x00\x09\x01" >&3; head -c 1 <&3 | od -An -tx1' "$HOST" "$PORT" 2>/dev/null || true)"
  [ "$(echo $first)" = 01 ]
}

# True if the Erlang VM of the node answers (even with the RabbitMQ application stopped).
node_alive() {
  timeout 30 "${CTL[@]}" -n "$NODE" ping >/dev/null 2>&1
}

# PIDs of this node's Erlang VM. RabbitMQ 3.10 puts no -sname on the command line (the node
# name is applied at boot from the environment), so match a server VM ("-s rabbit boot"; the
# rabbitmqctl VMs run "-run escript") whose environment has our RABBITMQ_NODENAME; the main
# node's VM never has it.
vm_pids() {
  local p args
  for p in $(pgrep -x beam.smp 2>/dev/null || true); do
    args="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null || true)"
    case "$args" in
      *" -s rabbit boot "*) ;;
      *) continue ;;
    esac
    if grep -qzxF "RABBITMQ_NODENAME=$NODE" "/proc/$p/environ" 2>/dev/null; then
      echo "$p"
    fi
  done
}

# Waits until the AMQP port is in state $1 (open|closed) or until $2 seconds have passed.
wait_port() {
  local want="$1" deadline=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if port_open; then
      [ "$want" = open ] && return 0
    else
      [ "$want" = closed ] && return 0
    fi
    sleep 0.2
  done
  return 1
}

show_logs() {
  local f
  for f in "$STARTUP_LOG" "$LOG_FILE"; do
    if [ -s "$f" ]; then
      echo "----- tail of $f -----" >&2
      tail -n 40 "$f" >&2
    fi
  done
  [ -f "$RABBITMQ_LOG_BASE/erl_crash.dump" ] && echo "(crash dump: $RABBITMQ_LOG_BASE/erl_crash.dump)" >&2
  return 0
}

# Creates the node's private directories and config files, owned by the user that runs it.
prepare() {
  local d
  mkdir -p "$FAULT_DIR" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE" "$RABBITMQ_CONFIG_FILES" \
    "$(dirname "$RABBITMQ_PID_FILE")"
  : >"$STARTUP_LOG"
  if [ "$RABBITMQ_CONFIG_FILE" = "$FAULT_DIR/rabbitmq.conf" ]; then
    cat >"$RABBITMQ_CONFIG_FILE" <<EOF
# Generated by scripts/fault-broker.sh for $NODE; rewritten on every start.
# Deliberately not /etc/rabbitmq/rabbitmq.conf, which pins the listener to the main node's port.
listeners.tcp.default = $HOST:$PORT
loopback_users.guest = true
EOF
  fi
  if [ "$RABBITMQ_ENABLED_PLUGINS_FILE" = "$FAULT_DIR/enabled_plugins" ]; then
    # No plugins: management/prometheus would try to bind the main node's ports.
    echo '[].' >"$RABBITMQ_ENABLED_PLUGINS_FILE"
  fi
  if [ "$RABBITMQ_CONF_ENV_FILE" = "$FAULT_DIR/rabbitmq-env.conf" ]; then
    cat >"$RABBITMQ_CONF_ENV_FILE" <<'EOF'
# Generated by scripts/fault-broker.sh. Replaces /etc/rabbitmq/rabbitmq-env.conf (which names the
# main node) for the private fault-injection node; the real settings come from the environment.
ERL_EPMD_ADDRESS=127.0.0.1
EOF
  fi
  if [ -n "$RUN_AS" ]; then
    for d in "$FAULT_DIR" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE" "$RABBITMQ_CONFIG_FILES" \
      "$(dirname "$RABBITMQ_PID_FILE")"; do
      chown -R "$RUN_AS:$RUN_AS" "$d"
    done
    chown "$RUN_AS:$RUN_AS" "$RABBITMQ_CONFIG_FILE" "$RABBITMQ_ENABLED_PLUGINS_FILE" \
      "$RABBITMQ_CONF_ENV_FILE" 2>/dev/null || true
  fi
}

# Serialises start/stop/... between concurrent callers (e.g. parallel tests).
lock() {
  mkdir -p "$FAULT_DIR"
  exec 9>>"$FAULT_DIR/.lock"
  chmod 666 "$FAULT_DIR/.lock" 2>/dev/null || true
  flock -w "$((TIMEOUT + 60))" 9 || die "timed out waiting for another fault-broker.sh call to finish"
}

# Kills this node's VM at once and deletes its data: the next start is a fresh node. For a
# node that no longer answers (its CLI may hang too), and for a clean slate before a test run.
reset_locked() {
  local pids
  pids="$(vm_pids)"
  if [ -n "$pids" ]; then
    say "killing the VM of $NODE (pid(s) $pids) and deleting its data"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    wait_port closed 10 || die "killed $NODE but $HOST:$PORT still answers"
  fi
  rm -rf "$RABBITMQ_MNESIA_BASE"
}

cmd_reset() {
  lock
  reset_locked
}

cmd_start() {
  lock
  if port_open && amqp_answers; then
    say "$NODE already answers on $HOST:$PORT"
    return 0
  fi
  if [ -n "$(vm_pids)" ] && port_open; then
    # Seen here: a node that accepts TCP but never answers, whose rabbitmqctl hangs too.
    say "$NODE accepts connections on $HOST:$PORT but does not answer the AMQP handshake; starting a fresh one"
    reset_locked
  elif port_open; then
    die "$HOST:$PORT answers but not as node $NODE: the port is taken by something else"
  fi
  if node_alive; then
    # The VM runs but the application is stopped (after stop-app): just start the application.
    say "$NODE is running with its application stopped; starting the application"
    cmd_start_app_locked
    return 0
  fi
  prepare
  say "starting $NODE (AMQP $HOST:$PORT, distribution $DIST_PORT, data $RABBITMQ_MNESIA_BASE)"
  # fd 9 (the lock) must not be inherited by the detached VM, or the lock would never be released.
  "${SERVER[@]}" -detached >"$STARTUP_LOG" 2>&1 9>&- || {
    show_logs
    die "rabbitmq-server -detached failed"
  }
  local started=$SECONDS deadline=$((SECONDS + TIMEOUT)) left
  while :; do
    left=$((deadline - SECONDS))
    if [ $((SECONDS - started)) -ge 5 ] && [ -z "$(vm_pids)" ]; then
      show_logs
      echo "Errors raised before logging is set up (e.g. a syntax error in $RABBITMQ_CONFIG_FILE," >&2
      echo "a port already in use) are not captured with -detached: run rabbitmq-server in the" >&2
      echo "foreground with the environment set at the top of this script to see them." >&2
      die "the Erlang VM of $NODE exited during boot"
    fi
    if [ "$left" -le 0 ]; then
      show_logs
      die "$NODE did not finish booting within ${TIMEOUT}s (logs above; all logs in $RABBITMQ_LOG_BASE)"
    fi
    # await_startup fails at once while the VM is not yet reachable, so retry until the deadline.
    if timeout "$left" "${CTL[@]}" -n "$NODE" await_startup --timeout "$left" >/dev/null 2>&1; then
      break
    fi
    sleep 1
  done
  left=$((deadline - SECONDS))
  [ "$left" -gt 0 ] || left=1
  if ! wait_port open "$left"; then
    show_logs
    die "$NODE booted but $HOST:$PORT does not accept connections"
  fi
  say "$NODE is up: $(cmd_url)"
}

cmd_stop() {
  lock
  cmd_stop_locked
}

cmd_stop_locked() {
  if ! node_alive; then
    say "$NODE is not running"
    return 0
  fi
  say "stopping $NODE"
  local pids
  if ! timeout "$TIMEOUT" "${CTL[@]}" -n "$NODE" stop >/dev/null; then
    say "rabbitmqctl stop failed or took more than ${TIMEOUT}s"
  fi
  # rabbitmqctl stop returns once the node has agreed to stop; wait for the VM itself to exit,
  # and kill it (by pid, only this node's VM) if it does not within 30 s.
  local deadline=$((SECONDS + 30))
  while [ -n "$(vm_pids)" ] && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.2
  done
  pids="$(vm_pids)"
  if [ -n "$pids" ]; then
    say "the VM of $NODE is still running; killing pid(s) $pids"
    # shellcheck disable=SC2086
    kill -TERM $pids 2>/dev/null || true
    sleep 5
    pids="$(vm_pids)"
    # shellcheck disable=SC2086
    [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
  fi
  wait_port closed 10 || die "$NODE stopped but $HOST:$PORT still answers"
  say "$NODE stopped"
}

cmd_stop_app() {
  lock
  node_alive || die "$NODE is not running (use: $0 start)"
  timeout "$TIMEOUT" "${CTL[@]}" -n "$NODE" stop_app >/dev/null ||
    die "stop_app on $NODE failed or took more than ${TIMEOUT}s"
  wait_port closed 30 || die "stop_app returned but $HOST:$PORT still answers"
  say "$NODE application stopped ($HOST:$PORT closed)"
}

cmd_start_app_locked() {
  node_alive || die "$NODE is not running (use: $0 start)"
  local deadline=$((SECONDS + TIMEOUT)) left
  timeout "$TIMEOUT" "${CTL[@]}" -n "$NODE" start_app >/dev/null || {
    show_logs
    die "start_app on $NODE failed or took more than ${TIMEOUT}s"
  }
  left=$((deadline - SECONDS))
  [ "$left" -gt 0 ] || left=1
  wait_port open "$left" || {
    show_logs
    die "start_app returned but $HOST:$PORT does not answer"
  }
  say "$NODE application started ($HOST:$PORT answers)"
}

cmd_start_app() {
  lock
  cmd_start_app_locked
}

# A memory alarm, as a broker short of memory raises it: connections that publish are blocked
# (connection.blocked) and nothing is stored until it clears.
cmd_alarm() {
  lock
  node_alive || die "$NODE is not running (use: $0 start)"
  timeout 30 "${CTL[@]}" -n "$NODE" set_vm_memory_high_watermark "$1" >/dev/null ||
    die "set_vm_memory_high_watermark $1 on $NODE failed"
  say "$NODE memory high watermark set to $1"
}

cmd_url() {
  echo "amqp://guest:guest@$HOST:$PORT/%2f"
}

case "${1:-}" in
  start) cmd_start ;;
  reset) cmd_reset ;;
  stop) cmd_stop ;;
  stop-app) cmd_stop_app ;;
  start-app) cmd_start_app ;;
  alarm-on) cmd_alarm 0.000001 ;;
  alarm-off) cmd_alarm 0.4 ;;
  close-connections)
    lock
    timeout 30 "${CTL[@]}" -n "$NODE" close_all_connections "closed by fault-broker.sh" >/dev/null ||
      die "close_all_connections on $NODE failed"
    say "closed every connection to $NODE"
    ;;
  consumer-timeout=*)
    ms="${1#consumer-timeout=}"
    case "$ms" in
      '' | *[!0-9]*) die "consumer-timeout=MS takes a whole number of milliseconds, not '$ms'" ;;
    esac
    lock
    node_alive || die "$NODE is not running (use: $0 start)"
    # A channel checks its deliveries' age on each tick (channel_tick_interval, 60 s by
    # default): a timeout of seconds needs a tick of a second to be noticed in time.
    tick=60000
    [ "$ms" -ge 1800000 ] || tick=1000
    timeout 30 "${CTL[@]}" -n "$NODE" eval \
      "application:set_env(rabbit, consumer_timeout, $ms), application:set_env(rabbit, channel_tick_interval, $tick)." >/dev/null ||
      die "setting consumer_timeout on $NODE failed"
    say "$NODE consumer timeout set to $ms ms (checked every $tick ms) for channels opened from now on"
    ;;
  status) if port_open; then exit 0; else exit 1; fi ;;
  url) cmd_url ;;
  *)
    echo "usage: $0 start|stop|reset|stop-app|start-app|alarm-on|alarm-off|close-connections|consumer-timeout=MS|status|url" >&2
    exit 2
    ;;
esac
