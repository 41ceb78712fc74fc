#!/bin/sh
# Entrypoint of the RabbitMQ stand-in image (scripts/compose/rabbitmq/Dockerfile), doing what
# the official image's does for our compose files:
#   docker-entrypoint.sh rabbitmq-server [args]
#     As root: writes the default user from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS into
#     conf.d (RabbitMQ creates it, tagged administrator with full permissions on vhost /, on the
#     node's first boot only: an empty data directory), gives /var/lib/rabbitmq to the user
#     rabbitmq, then runs the node as that user in the foreground, as PID 1 (signals reach it).
#     Node name rabbit@<hostname>; config /etc/rabbitmq/conf.d/*.conf.
#   docker-entrypoint.sh anything else: runs it as given (the compose files' `sh -euc ...`).
set -eu

if [ "${1:-}" != rabbitmq-server ]; then
  exec "$@"
fi
shift

if [ "$(id -u)" = 0 ]; then
  defaults=/etc/rabbitmq/conf.d/20-default-user.conf
  if [ -n "${RABBITMQ_DEFAULT_USER:-}${RABBITMQ_DEFAULT_PASS:-}" ]; then
    user="${RABBITMQ_DEFAULT_USER:-guest}"
    pass="${RABBITMQ_DEFAULT_PASS:-guest}"
    # One line per value in rabbitmq.conf's format: a line break would end the value early.
    case "$user$pass" in
      *'
'*)
        echo "docker-entrypoint.sh: RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS must not contain a line break" >&2
        exit 1
        ;;
    esac
    umask 027
    cat >"$defaults" <<EOF
# Written by docker-entrypoint.sh from RABBITMQ_DEFAULT_USER / RABBITMQ_DEFAULT_PASS; used on
# the node's first boot only.
default_user = $user
default_pass = $pass
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
EOF
    chown root:rabbitmq "$defaults"
    umask 022
  else
    rm -f "$defaults"
  fi
  mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
  chown rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
  if [ -e /var/lib/rabbitmq/.erlang.cookie ]; then
    chown rabbitmq:rabbitmq /var/lib/rabbitmq/.erlang.cookie
    chmod 0400 /var/lib/rabbitmq/.erlang.cookie
  fi
  exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups \
    env HOME=/var/lib/rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
fi

exec /usr/lib/rabbitmq/bin/rabbitmq-server "$@"
