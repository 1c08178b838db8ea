#!/usr/bin/env bash
# Quick start: a throwaway PostgreSQL ("the repository") on a private Unix socket, with pgssl in front
# of it on 127.0.0.1:8060 and repository SSL required. Re-running reuses the cluster and certificate.
#
#   docker/quickstart.sh          # Ctrl-C stops pgssl and the PostgreSQL it started
#
# Environment: PGSSL_QUICKSTART_DIR (default /tmp/pgssl-quickstart), PGSSL_LISTEN (default 127.0.0.1:8060).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${PGSSL_QUICKSTART_DIR:-/tmp/pgssl-quickstart}
listen=${PGSSL_LISTEN:-127.0.0.1:8060}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

find_bindir() {
  local d
  d=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then echo "$d"; return; fi
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ]; then echo "$d"; return; fi
  done
}

bindir=$(find_bindir)
if [ -z "$bindir" ] || ! command -v psql >/dev/null; then
  echo "==> installing PostgreSQL (Debian packages postgresql, postgresql-client)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-client
  bindir=$(find_bindir)
fi
[ -n "$bindir" ] || { echo "error: PostgreSQL server binaries not found after install" >&2; exit 1; }

echo "==> building pgssl"
(cd "$repo" && cargo build --release --locked -q)
pgssl="$repo/target/release/pgssl"

mkdir -p "$work"
chmod 755 "$work"
pgdir="$work/pg"
sockdir="$work/sock"
# PostgreSQL refuses to run as root: run it as the postgres user then.
run_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if [ ! -f "$work/passwords" ]; then
  umask 077
  {
    for user in postgres tableau readonly internal_svc; do
      echo "$user=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
    done
  } > "$work/passwords"
  umask 022
fi
pw() { sed -n "s/^$1=//p" "$work/passwords"; }

if [ ! -f "$pgdir/PG_VERSION" ]; then
  echo "==> creating a PostgreSQL cluster in $pgdir"
  mkdir -p "$pgdir" "$sockdir"
  pwfile=$(mktemp "$work/pw.XXXXXX")
  pw postgres > "$pwfile"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pgdir" "$sockdir" "$pwfile"; fi
  run_pg "$bindir/initdb" -D "$pgdir" -U postgres --auth=scram-sha-256 --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  # No TCP port: the proxy is the only network entrance.
  printf "listen_addresses = ''\nunix_socket_directories = '%s'\nport = 5432\n" "$sockdir" > "$pgdir/postgresql.auto.conf"
  if [ "$(id -u)" -eq 0 ]; then chown postgres: "$pgdir/postgresql.auto.conf"; fi
  fresh=1
fi

if ! run_pg "$bindir/pg_ctl" status -D "$pgdir" >/dev/null 2>&1; then
  echo "==> starting PostgreSQL (Unix socket $sockdir)"
  run_pg "$bindir/pg_ctl" start -w -D "$pgdir" -l "$pgdir/postgres.log" >/dev/null
fi
trap 'echo "==> stopping PostgreSQL"; run_pg "$bindir/pg_ctl" stop -D "$pgdir" -m fast >/dev/null 2>&1 || true' EXIT

if [ "${fresh:-0}" = 1 ]; then
  PGPASSWORD=$(pw postgres) "$bindir/psql" -X -q -h "$sockdir" -U postgres -d postgres -v ON_ERROR_STOP=1 <<SQL
CREATE ROLE tableau LOGIN PASSWORD '$(pw tableau)';
CREATE ROLE readonly LOGIN PASSWORD '$(pw readonly)';
CREATE ROLE internal_svc LOGIN PASSWORD '$(pw internal_svc)';
-- A database named after each user, so psql's default dbname works.
CREATE DATABASE tableau OWNER tableau;
CREATE DATABASE readonly OWNER readonly;
CREATE DATABASE internal_svc OWNER internal_svc;
SQL
fi

cat > "$work/pgssl.toml" <<TOML
# Written by docker/quickstart.sh: the defaults of config/pgssl.toml, with this upstream.
[server]
listen = "$listen"
upstream = "unix:$sockdir"
TOML

export PGSSL_DATA_DIR="$work/data"
export PGSSL_UPSTREAM_PASSWORD
PGSSL_UPSTREAM_PASSWORD=$(pw postgres)
cfg=(--config "$work/pgssl.toml")
echo "==> enabling repository SSL"
"$pgssl" "${cfg[@]}" security repository-ssl enable
if "$pgssl" "${cfg[@]}" pending-changes list | grep -q "^Pending"; then
  "$pgssl" "${cfg[@]}" pending-changes apply --ignore-prompt
fi
"$pgssl" "${cfg[@]}" security repository-ssl get-certificate-file -f "$PWD/server.crt"
unset PGSSL_UPSTREAM_PASSWORD

port=${listen##*:}
cat <<INFO

pgssl is starting on $listen in front of the repository (data dir $PGSSL_DATA_DIR).
Connect from another terminal, in this directory:

  PGPASSWORD=$(pw tableau) psql "host=localhost port=$port sslmode=verify-full sslrootcert=server.crt user=tableau"

Passwords of tableau, readonly and internal_svc are in $work/passwords.
Change the mode live from another terminal, e.g.:
  PGSSL_DATA_DIR=$PGSSL_DATA_DIR $pgssl --config $work/pgssl.toml security repository-ssl enable --internal-only
  PGSSL_DATA_DIR=$PGSSL_DATA_DIR $pgssl --config $work/pgssl.toml pending-changes apply
Ctrl-C stops pgssl and this PostgreSQL.

INFO
# In the background so that a SIGTERM to this script reaches pgssl too.
"$pgssl" "${cfg[@]}" serve &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null || true' INT TERM
wait "$serve_pid" || true
wait "$serve_pid" 2>/dev/null || true
