#!/usr/bin/env bash
# Quick start: pgssl with its managed repository (a PostgreSQL cluster it creates in the data directory,
# reachable only through the proxy) on 127.0.0.1:8060, repository SSL required, and the direct user
# `tableau` enabled with a fresh password. Re-running reuses the repository and certificate.
#
#   docker/quickstart.sh          # Ctrl-C stops pgssl and its repository
#
# Environment: PGSSL_QUICKSTART_DIR (default /tmp/pgssl-quickstart), PGSSL_LISTEN (default 127.0.0.1:8060).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
work=${PGSSL_QUICKSTART_DIR:-/tmp/pgssl-quickstart}
listen=${PGSSL_LISTEN:-127.0.0.1:8060}
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

have_postgres() {
  local d
  command -v psql >/dev/null || return 1
  d=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then return 0; fi
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}
if ! have_postgres; then
  echo "==> installing PostgreSQL (Debian packages postgresql, postgresql-client)"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql postgresql-client
fi

echo "==> building pgssl"
(cd "$repo" && cargo build --release --locked -q)
pgssl=("$repo/target/release/pgssl" --config "$repo/config/pgssl.toml")

# The repository runs as the postgres user when this runs as root: it must be able to reach the folder.
mkdir -p "$work"
chmod 755 "$work"
export PGSSL_DATA_DIR="$work/data"

# An administrator for the admin server (web pages and API on https://127.0.0.1:8850), once.
admin_password_file="$work/admin-password"
if [ ! -s "$admin_password_file" ]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$admin_password_file")
  "${pgssl[@]}" admin-user add --username admin --password - < "$admin_password_file"
fi

echo "==> starting pgssl on $listen (the managed repository is created on first start)"
"${pgssl[@]}" serve --listen "$listen" &
serve_pid=$!
trap 'kill -TERM "$serve_pid" 2>/dev/null || true' INT TERM
host=${listen%:*}
port=${listen##*:}
for _ in $(seq 1 240); do
  if ! kill -0 "$serve_pid" 2>/dev/null; then
    echo "error: pgssl serve exited; see the messages above" >&2
    exit 1
  fi
  if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then break; fi
  sleep 0.5
done

echo "==> enabling repository SSL"
"${pgssl[@]}" security repository-ssl enable
if "${pgssl[@]}" pending-changes list | grep -q "^Pending"; then
  "${pgssl[@]}" pending-changes apply --ignore-prompt
fi
"${pgssl[@]}" security repository-ssl get-certificate-file -f "$PWD/server.crt"

echo "==> enabling direct access for tableau with a new password"
tableau_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
printf '%s\n' "$tableau_password" |
  "${pgssl[@]}" data-access repository-access enable --repository-username tableau --repository-password -
"${pgssl[@]}" pending-changes apply --ignore-prompt

cat <<INFO

pgssl is serving on $listen in front of its managed repository (data dir $PGSSL_DATA_DIR).
From another terminal, in this directory:

  PGPASSWORD=$tableau_password psql "host=localhost port=$port dbname=repository sslmode=verify-full sslrootcert=server.crt user=tableau"

(Without dbname, libpq uses the user name: tableau lands in its own empty database; the data is in
'repository'.)

An internal service's connection string:   PGSSL_DATA_DIR=$PGSSL_DATA_DIR ${pgssl[*]} internal-credentials
Change the mode live, e.g.:                 PGSSL_DATA_DIR=$PGSSL_DATA_DIR ${pgssl[*]} security repository-ssl enable --internal-only
                                            PGSSL_DATA_DIR=$PGSSL_DATA_DIR ${pgssl[*]} pending-changes apply
Admin web pages:   https://127.0.0.1:8850/  (user admin, password in $admin_password_file; the
                   certificate is self-signed: compare its fingerprint with the one logged above)
Remote CLI:        ${pgssl[*]} -s https://127.0.0.1:8850 -u admin -p - --trust-admin-controller-cert security repository-ssl list
Ctrl-C stops pgssl and its repository.

INFO
wait "$serve_pid" || true
wait "$serve_pid" 2>/dev/null || true
