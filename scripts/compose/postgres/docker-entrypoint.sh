#!/bin/sh
# Entrypoint of the PostgreSQL stand-in image (scripts/compose/postgres/Dockerfile), doing what
# the official image's does for our compose file:
#   docker-entrypoint.sh postgres [args]
#     As root: gives $PGDATA to the user postgres and starts again as that user. On an empty
#     $PGDATA: initdb with the superuser POSTGRES_USER (default postgres) and the password from
#     POSTGRES_PASSWORD_FILE or POSTGRES_PASSWORD, local connections trusted, connections from
#     the network with that password (scram-sha-256), listening on every address; then makes
#     the database POSTGRES_DB (default: the user's name). Then runs the server as PID 1.
#   docker-entrypoint.sh anything else: runs it as given.
set -eu
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA

if [ "${1:-}" != postgres ]; then
  exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /var/run/postgresql
  chown postgres:postgres "$PGDATA" /var/run/postgresql
  chmod 0700 "$PGDATA"
  chmod 2775 /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql "$0" "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  user="${POSTGRES_USER:-postgres}"
  db="${POSTGRES_DB:-$user}"
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password="$(cat "$POSTGRES_PASSWORD_FILE")"
  else
    password="${POSTGRES_PASSWORD:-}"
  fi
  if [ -z "$password" ]; then
    echo "docker-entrypoint.sh: the data directory is empty and no password is set: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
    exit 1
  fi
  pwfile="$(mktemp)"
  printf '%s\n' "$password" >"$pwfile"
  initdb --username="$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA"
  rm -f "$pwfile"
  printf '\n# From the network: with the password (docker-entrypoint.sh).\nhost all all all scram-sha-256\n' \
    >>"$PGDATA/pg_hba.conf"
  printf "\n# docker-entrypoint.sh\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"
  if [ "$db" != postgres ]; then
    # A server on the socket only, to make the database; stopped again before the real start.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    echo 'CREATE DATABASE :"db";' | psql -v ON_ERROR_STOP=1 -v db="$db" --username="$user" --dbname=postgres -q
    pg_ctl -D "$PGDATA" -m fast -w stop
  fi
  echo "docker-entrypoint.sh: initialised $PGDATA (user $user, database $db)"
fi

exec "$@"
