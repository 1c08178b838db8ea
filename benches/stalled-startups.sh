#!/usr/bin/env bash
# Legitimate clients' connect time while many sockets never finish their start-up (issue #10, F8).
#
# pgssl (release build) runs its managed repository with repository SSL required; `pgbench -C -S`
# (a new TLS connection per transaction, SCRAM) measures the connect time, first alone, then while
# STALLED sockets (default 2000) are held open: half send nothing, half half a start-up packet. The
# handshake timeout is raised to 120 s so that none of them is timed out during the run (the worst
# case for pgssl). `pgssl-bench run --mode connect` (TLS + SCRAM logins, CLIENTS at once) gives the
# connect p50/p99 and the failed logins. Also reports pgssl's RSS per stalled socket and its open files.
#
#   benches/stalled-startups.sh                # about a minute
#   STALLED=5000 SECONDS_PER_RUN=20 benches/stalled-startups.sh
# Needs: postgresql (server binaries, pgbench, psql), python3. Runs as root or as a user that may run
# PostgreSQL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
STALLED=${STALLED:-2000}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
CLIENTS=${CLIENTS:-4}
PORT=${PORT:-6701}
(cd "$repo" && cargo build --release --locked -q)
pgssl=$repo/target/release/pgssl
bench=$repo/target/release/pgssl-bench
work=$(mktemp -d /tmp/pgssl-stalled.XXXXXX)
chmod 755 "$work"
printf '[server]\nhandshake_timeout = "120s"\n' > "$work/pgssl.toml"
export PGSSL_DATA_DIR=$work/data PGSSL_LOG=warn
run() { "$pgssl" --config "$work/pgssl.toml" "$@"; }

cleanup() {
  [ -n "${holder:-}" ] && kill "$holder" 2>/dev/null || true
  [ -n "${serve:-}" ] && kill -TERM "$serve" 2>/dev/null && wait "$serve" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$pgssl" --config "$work/pgssl.toml" serve --no-admin --listen "127.0.0.1:$PORT" & serve=$!
for _ in $(seq 1 240); do pg_isready -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.5; done
run security repository-ssl enable >/dev/null
run pending-changes apply >/dev/null
password=bench-$RANDOM$RANDOM
echo "$password" | run data-access repository-access enable --repository-username tableau --repository-password - >/dev/null
run pending-changes apply >/dev/null
export PGPASSWORD=$password PGSSLMODE=require
conn="host=127.0.0.1 port=$PORT user=tableau dbname=repository"
pgbench -q -i -s 1 "$conn" >/dev/null 2>&1

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$serve/status"; }
fds() { ls "/proc/$serve/fd" | wc -l; }
measure() {
  pgbench -n -C -S -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "$conn" 2>/dev/null |
    awk -F' = ' '/average connection time/ {c=$2} /^tps/ {t=$2} END {printf "pgbench connect %s, tps %s; ", c, t}'
  "$bench" run --mode connect --target "127.0.0.1:$PORT" --user tableau --database repository \
    --clients "$CLIENTS" --duration "$SECONDS_PER_RUN" --json "$work/bench.json" >/dev/null 2>&1
  python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
print("pgssl-bench logins %d, failed %d, p50 %.1f ms, p99 %.1f ms" % (r["ok"], r["errors"], r["p50_ms"], r["p99_ms"]))' "$work/bench.json"
}

echo "pgssl $(git -C "$repo" rev-parse --short HEAD), $(nproc) cores, pgbench -C -S -c $CLIENTS, ${SECONDS_PER_RUN}s"
echo "alone:                 $(measure)"
before=$(rss_kib) fds_before=$(fds)
python3 - "$PORT" "$STALLED" >"$work/holder.out" <<'PY' & holder=$!
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
held = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    if i % 2:
        s.sendall(bytes([0, 0, 0, 40, 0, 3, 0, 0, ord("u")]))
    held.append(s)
print(f"{n} stalled sockets open", flush=True)
time.sleep(3600)
PY
# Measure only once every stalled socket is open (opening 5,000 takes longer than a fixed sleep).
for _ in $(seq 1 600); do grep -q 'stalled sockets open' "$work/holder.out" 2>/dev/null && break; sleep 0.1; done
grep -q 'stalled sockets open' "$work/holder.out" || { echo "the holder could not open $STALLED sockets" >&2; exit 1; }
during=$(rss_kib) fds_during=$(fds)
echo "with $STALLED stalled: $(measure)"
echo "pgssl RSS: $before KiB before, $during KiB with the stalled sockets ($(( (during - before) * 1024 / STALLED )) bytes each)"
echo "pgssl open files: $fds_before before, $fds_during with the stalled sockets, $(fds) after the run"
