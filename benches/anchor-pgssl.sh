#!/usr/bin/env bash
# pgssl as the third listener of ../shared/bench/anchor.sh, in one authentication mode:
#
#   PROXY_NAME=pgssl-proxy PROXY_PORT=6544 PROXY_CMD="exec $PWD/benches/anchor-pgssl.sh proxy" ../shared/bench/anchor.sh
#   PROXY_NAME=pgssl-passthrough PROXY_PORT=6544 PROXY_CMD="exec $PWD/benches/anchor-pgssl.sh passthrough" ../shared/bench/anchor.sh
#
# proxy: pgssl authenticates clients itself (SCRAM, channel binding over TLS) through a lookup user
# that reads verifiers with the SECURITY DEFINER function 'pgssl authentication lookup-user sql' prints,
# then logs into PostgreSQL by SCRAM pass-through. passthrough: PostgreSQL authenticates; pgssl relays.
# REPOSITORY_ADDRESS sets repository.address (default 127.0.0.1:PG_PORT; say unix:/dir/.s.PGSQL.port).
# VERIFIER_CACHE_SECS=N sets auth.verifier_cache_ttl to N seconds (unset: pgssl's default, 1 s; 0: a
# lookup per login).
# Proxy mode keeps repository sessions warm between clients ([pool], on by default); passthrough cannot.
# Both with repository SSL required towards clients and plaintext to PostgreSQL, like PgBouncer in
# the anchor. Runs under anchor.sh (as root), which sets PG_PORT, PROXY_PORT, BENCH_DB and BENCH_TMP
# (its PostgreSQL's socket directory, where local connections are trusted).
set -euo pipefail
mode=${1:?usage: anchor-pgssl.sh proxy|passthrough}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${PGSSL_BIN:-$here/target/release/pgssl}
dir=$BENCH_TMP/pgssl-$mode
config=$dir.toml
mkdir -p "$dir"
cat >"$config" <<CONF
[auth]
mode = "$mode"
lookup_database = "$BENCH_DB"
lookup_query = "SELECT * FROM pgssl.lookup(\$1)"
${VERIFIER_CACHE_SECS:+verifier_cache_ttl = \"${VERIFIER_CACHE_SECS}s\"}
[repository]
address = "${REPOSITORY_ADDRESS:-127.0.0.1:$PG_PORT}"
CONF
pg() { psql -X -q -v ON_ERROR_STOP=1 -h "$BENCH_TMP" -p "$PG_PORT" -U postgres -d "$BENCH_DB" "$@"; }
# The warm pool's bound follows the repository's own (proxy mode keeps sessions warm between clients);
# still in the [repository] table the file ends with.
printf 'max_connections = %s\n' "$(pg -At -c 'SHOW max_connections')" >>"$config"
# PGSSL_EXTRA_CONFIG: more TOML tables appended as they are (say "[pool]\nmax_idle = 500").
[[ -n ${PGSSL_EXTRA_CONFIG:-} ]] && printf '%b\n' "$PGSSL_EXTRA_CONFIG" >>"$config"
lookup_password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
if [[ $mode == proxy ]]; then
  pg -c "DROP ROLE IF EXISTS pgssl_lookup" -c "CREATE ROLE pgssl_lookup LOGIN PASSWORD '$lookup_password'" >/dev/null
  "$bin" authentication lookup-user sql --lookup-user pgssl_lookup | pg >/dev/null
fi
run() { "$bin" --data-dir "$dir" --config "$config" "$@" >/dev/null; }
run security repository-ssl enable
if [[ $mode == proxy ]]; then
  echo "$lookup_password" | run authentication lookup-user set --lookup-user pgssl_lookup --lookup-password -
fi
run pending-changes apply --ignore-prompt
# PGSSL_SERVE_PREFIX: a command serve runs under (say valgrind --tool=callgrind ...); the set-up above runs bare.
# shellcheck disable=SC2086
exec ${PGSSL_SERVE_PREFIX:-} "$bin" --data-dir "$dir" --config "$config" serve --no-admin --listen "127.0.0.1:$PROXY_PORT"
