#!/usr/bin/env bash
# The container test (run by tests/it/containers.rs; by hand: PGSSL_BIN=target/debug/pgssl
# docker/test/run.sh). No registry can be reached, so it builds what it needs (docker/README.md says
# exactly what it substitutes):
#   1. a Debian bookworm base image, made with debootstrap (with PostgreSQL included) and
#      `docker import`, kept between runs as $BASE_IMAGE;
#   2. a stand-in for the stock `postgres` image from it (postgres.Dockerfile), as POSTGRES_IMAGE;
#   3. the pgssl image from docker/Dockerfile's `prebuilt` target with the binary $PGSSL_BIN;
# then `docker-compose up` of docker/compose.yaml, psql with sslmode=verify-full through each node,
# one node stopped and the other still serving, and `docker-compose down -v`.
# Every check prints `CHECK <what>: ok`; any failure exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${PGSSL_BIN:?set PGSSL_BIN to a pgssl binary built on Debian bookworm}"
BASE_IMAGE=${BASE_IMAGE:-pgssl-test/debian:bookworm}
export POSTGRES_IMAGE=${POSTGRES_IMAGE:-pgssl-test/postgres:ci}
export PGSSL_IMAGE=${PGSSL_IMAGE:-pgssl-test/pgssl:ci}
export POSTGRES_PASSWORD="ci-$$-$RANDOM"
export PGSSL_BOOTSTRAP_PASSPHRASE="ci passphrase $$"
project="pgssl-ci-$$"
work=$(mktemp -d)
compose() { docker-compose -p "$project" -f "$repo/docker/compose.yaml" "$@"; }
cleanup() {
  compose logs --no-color > "$work/compose.log" 2>&1 || true
  compose down -v --remove-orphans >/dev/null 2>&1 || true
  [ "${KEEP_LOGS:-}" ] && echo "logs: $work/compose.log" || rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL $*" >&2; compose logs --no-color --tail 60 >&2 || true; exit 1; }

step() { echo "==> $* ($(date +%T))"; }

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "base image $BASE_IMAGE: debootstrap bookworm (minbase + postgresql) and docker import"
  root="$work/rootfs"
  debootstrap --variant=minbase --include=postgresql,postgresql-client,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi

step "stand-in postgres image $POSTGRES_IMAGE"
docker build -q -t "$POSTGRES_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -f "$here/postgres.Dockerfile" "$here" >/dev/null

step "pgssl image $PGSSL_IMAGE (docker/Dockerfile, target prebuilt)"
ctx="$work/context"
mkdir -p "$ctx/docker"
cp "$PGSSL_BIN" "$ctx/pgssl"
cp "$repo/docker/entrypoint.sh" "$repo/docker/pgssl.toml" "$ctx/docker/"
docker build -q -t "$PGSSL_IMAGE" --target prebuilt --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -f "$repo/docker/Dockerfile" "$ctx" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export PGSSL_NODE1_PORT=$(free_port) PGSSL_NODE2_PORT=$(free_port)

step "docker-compose up (repository, two pgssl nodes)"
compose up -d --no-build >/dev/null 2>&1 || fail "compose up"
crt="$work/server.crt"
for _ in $(seq 1 120); do
  docker cp "$(compose ps -q pgssl-1):/shared/server.crt" "$crt" >/dev/null 2>&1 && break
  sleep 1
done
[ -s "$crt" ] || fail "pgssl-1 never exported its certificate"
echo "CHECK certificate exported to the shared volume: ok"

query() { # port sslmode -> prints the answer of SELECT
  PGPASSWORD="$POSTGRES_PASSWORD" PGCONNECT_TIMEOUT=5 psql -X -A -t \
    "host=localhost port=$1 user=postgres dbname=postgres sslmode=$2 sslrootcert=$crt" \
    -c "SELECT 'served by ' || current_setting('server_version_num')::int / 10000 || ' ' || (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'psql')" 2>&1
}
wait_query() { # port
  for _ in $(seq 1 120); do
    out=$(query "$1" verify-full) && [[ $out == "served by "* ]] && { echo "$out"; return 0; }
    sleep 1
  done
  echo "$out"; return 1
}
for node in 1 2; do
  port_var=PGSSL_NODE${node}_PORT
  out=$(wait_query "${!port_var}") || fail "psql verify-full through pgssl-$node: $out"
  echo "CHECK psql sslmode=verify-full through pgssl-$node ($out): ok"
  out=$(query "${!port_var}" disable) && fail "pgssl-$node let a plaintext login in: $out"
  [[ $out == *"SSL"* || $out == *"TLS"* || $out == *"encryption"* ]] || fail "pgssl-$node plaintext refusal: $out"
  echo "CHECK plaintext refused by pgssl-$node (TLS required): ok"
done
nodes=$(docker exec "$(compose ps -q pgssl-2)" pgssl topology list-nodes) || fail "list-nodes"
[[ $nodes == *"pgssl-1"*"(live)"* && $nodes == *"pgssl-2 (this node)"*"(live)"* ]] || fail "list-nodes: $nodes"
echo "CHECK both nodes live in one cluster: ok"

step "stop pgssl-1"
compose stop pgssl-1 >/dev/null 2>&1 || fail "stop pgssl-1"
out=$(query "$PGSSL_NODE1_PORT" verify-full) && fail "pgssl-1 still answers after stop: $out"
out=$(wait_query "$PGSSL_NODE2_PORT") || fail "pgssl-2 after pgssl-1 stopped: $out"
echo "CHECK pgssl-2 still serves with pgssl-1 stopped ($out): ok"

step "docker-compose down -v"
compose down -v --remove-orphans >/dev/null 2>&1 || fail "compose down"
left=$(docker volume ls -q --filter "name=${project}_" | wc -l)
[ "$left" -eq 0 ] || fail "$left volumes left"
echo "CHECK down -v removed every volume: ok"
