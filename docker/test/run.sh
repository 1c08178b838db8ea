#!/usr/bin/env bash
# The container test (run by tests/it/containers.rs; by hand: PGSSL_BIN=target/debug/pgssl
# docker/test/run.sh). No registry can be reached, so it builds what it needs (docker/README.md says
# exactly what it substitutes):
#   1. a Debian bookworm base image, made with debootstrap (with PostgreSQL included) and
#      `docker import`, kept between runs as $BASE_IMAGE (base-image.sh);
#   2. a stand-in for the stock `postgres` image from it (postgres.Dockerfile), as POSTGRES_IMAGE;
#   3. pgssl's Debian package from the binary $PGSSL_BIN (packaging/build-deb.sh), or the package
#      $PGSSL_DEB, and the pgssl image from docker/Dockerfile's `prebuilt` target, which installs it;
# then `docker-compose up` of docker/compose.yaml, psql with sslmode=verify-full through each node,
# one node stopped and the other still serving, and `docker-compose down -v`.
# Every check prints `CHECK <what>: ok`; any failure exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${PGSSL_DEB:=}"
[ -n "$PGSSL_DEB" ] || : "${PGSSL_BIN:?set PGSSL_BIN to a pgssl binary built on Debian bookworm (or PGSSL_DEB to its package)}"
export BASE_IMAGE=${BASE_IMAGE:-pgssl-test/debian:bookworm}
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

"$here/base-image.sh" >/dev/null

step "stand-in postgres image $POSTGRES_IMAGE"
docker build -q -t "$POSTGRES_IMAGE" --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -f "$here/postgres.Dockerfile" "$here" >/dev/null

if [ -z "$PGSSL_DEB" ]; then
  step "Debian package from $PGSSL_BIN (packaging/build-deb.sh)"
  PGSSL_DEB=$(PGSSL_BIN="$PGSSL_BIN" CARGO_DEB_FAST=1 "$repo/packaging/build-deb.sh" "$work/deb" 2>"$work/build-deb.log") \
    || { tail -20 "$work/build-deb.log"; exit 1; }
fi

step "pgssl image $PGSSL_IMAGE (docker/Dockerfile, target prebuilt: installs $(basename "$PGSSL_DEB"))"
ctx="$work/context"
mkdir -p "$ctx/docker"
cp "$PGSSL_DEB" "$ctx/pgssl.deb"
cp "$repo/docker/entrypoint.sh" "$repo/docker/pgssl.toml" "$ctx/docker/"
docker build -q -t "$PGSSL_IMAGE" --target prebuilt --build-arg BASE_IMAGE="$BASE_IMAGE" \
  -f "$repo/docker/Dockerfile" "$ctx" >/dev/null
installed=$(docker run --rm --entrypoint sh "$PGSSL_IMAGE" -c \
  'dpkg-query -W -f "\${Status} \${Version}" pgssl; echo " $(id -un) $(command -v pgssl)"')
[ "$installed" = "install ok installed $(dpkg-deb -f "$PGSSL_DEB" Version) pgssl /usr/bin/pgssl" ] \
  || fail "the image's pgssl: $installed"
echo "CHECK image runs the Debian package's pgssl as pgssl: ok"

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
# Each node's own line must say live (a glob over the whole listing passed with pgssl-1 unreachable).
n1=$(grep -E '^ +pgssl-1: ' <<<"$nodes" || true)
n2=$(grep -E '^ +pgssl-2 \(this node\): ' <<<"$nodes" || true)
[[ $n1 == *"(live)" && $n2 == *"(live)" ]] || fail "list-nodes: $nodes"
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
