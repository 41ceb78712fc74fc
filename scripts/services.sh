# Sourced by the scripts: makes sure the services the project needs are answering.
# Each function starts its service only if it is not already up, and fails with the fix.

# True if something accepts TCP connections on 127.0.0.1:$1.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

ensure_rabbitmq() {
  local port="${OFFLOAD_TEST_AMQP_PORT:-5672}"
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
