#!/usr/bin/env bash
# Side-by-side performance figures for BENCHMARKS.md, all on loopback, all bounded in time:
#   1. ../shared/bench/anchor.sh (direct PostgreSQL TLS, PgBouncer TLS, pgssl) with SCRAM 4096 and 1
#   2. handshake-only: pgssl vs a bare rustls accept loop vs PgBouncer, same certificate, pgssl-bench
#   3. connect rate and p99 latency against client concurrency (1, 4, 16, 64, 256), plotted to PNG
#   4. a certificate rotation applied under load: failed connections must be zero
#
#   benches/compare.sh                    # everything (about 25 minutes on 2 cores)
#   PARTS="2 3 4" benches/compare.sh      # skip the anchor runs
# Needs: postgresql, pgbouncer, psql, pgbench, python3 with matplotlib (pip install matplotlib).
# Output: $OUT (default /tmp/pgssl-compare): *.md, *.json, connect-sweep.png.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pgssl-compare}
PARTS=${PARTS:-"1 2 3 4"}
ANCHOR=${ANCHOR:-$repo/../shared/bench/anchor.sh}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
mkdir -p "$OUT"
chmod 755 "$OUT"
(cd "$repo" && cargo build --release --locked -q)
PGSSL=$repo/target/release/pgssl
BENCH=$repo/target/release/pgssl-bench
export PGSSL_LOG=warn

cleanup() { jobs -p | xargs -r kill 2>/dev/null || true; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

if [[ " $PARTS " == *" 1 "* ]]; then
  for iters in 4096 1; do
    echo "== anchor.sh with pgssl, SCRAM iterations $iters"
    SCRAM_ITERATIONS=$iters DURATION=$SECONDS_PER_RUN REPEATS=$ROUNDS OUT_DIR="$OUT/anchor-scram$iters" \
    RESULTS_MD="$OUT/anchor-scram$iters.md" PROXY_NAME=pgssl PROXY_PORT=6544 \
    PROXY_CMD="D=\$BENCH_TMP/pgssl; B=$PGSSL; export PGSSL_LOG=warn; \$B --data-dir \$D security repository-ssl enable >/dev/null && \$B --data-dir \$D pending-changes apply --ignore-prompt >/dev/null && exec \$B --data-dir \$D serve --listen 127.0.0.1:\$PROXY_PORT --repository 127.0.0.1:\$PG_PORT" \
      "$ANCHOR" > "$OUT/anchor-scram$iters.log" 2>&1
  done
fi

# Parts 2 and 4 need no database: the start-up is refused by the front end itself.
work=$(mktemp -d /tmp/pgssl-compare.XXXXXX)
chmod 755 "$work"
printf '[repository]\naddress = "127.0.0.1:9"\n' > "$work/pgssl.toml"
"$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/data" security repository-ssl enable >/dev/null
"$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/data" pending-changes apply >/dev/null
cert=$work/data/config/pgsql15/security/server.crt
key=$work/data/config/pgsql15/security/server.key

if [[ " $PARTS " == *" 2 "* || " $PARTS " == *" 4 "* ]]; then
  "$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/data" serve --listen 127.0.0.1:6601 & pgssl_pid=$!
  "$BENCH" bare-server --listen 127.0.0.1:6602 --cert "$cert" --key "$key" 2>/dev/null & bare_pid=$!
  mkdir -p "$work/pgb"; chown postgres: "$work/pgb" 2>/dev/null || true
  install -m 600 -o postgres "$cert" "$work/pgb/server.crt" 2>/dev/null || cp "$cert" "$work/pgb/server.crt"
  install -m 600 -o postgres "$key" "$work/pgb/server.key" 2>/dev/null || cp "$key" "$work/pgb/server.key"
  cat > "$work/pgb/pgbouncer.ini" <<INI
[databases]
* = host=127.0.0.1 port=9
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6603
unix_socket_dir =
logfile = $work/pgb/pgbouncer.log
auth_type = scram-sha-256
auth_file = $work/pgb/userlist.txt
max_client_conn = 5000
log_connections = 0
log_disconnections = 0
client_tls_sslmode = require
client_tls_cert_file = $work/pgb/server.crt
client_tls_key_file = $work/pgb/server.key
INI
  touch "$work/pgb/userlist.txt"; chown -R postgres: "$work/pgb" 2>/dev/null || true
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- pgbouncer -q "$work/pgb/pgbouncer.ini" & else pgbouncer -q "$work/pgb/pgbouncer.ini" & fi
  pgb_pid=$!
  wait_port 6601; wait_port 6602; wait_port 6603
fi

if [[ " $PARTS " == *" 2 "* ]]; then
  echo "== handshake-only: $ROUNDS rounds x ${SECONDS_PER_RUN}s, order rotated"
  : > "$OUT/handshake.jsonl"
  targets=("pgssl 6601 $pgssl_pid" "bare-rustls 6602 $bare_pid" "pgbouncer 6603 $(pgrep -n -x pgbouncer)")
  for round in $(seq 1 "$ROUNDS"); do
    for i in 0 1 2; do
      read -r name port pid <<< "${targets[$(( (i + round) % 3 ))]}"
      "$BENCH" run --mode handshake --target "127.0.0.1:$port" --clients 16 --duration "$SECONDS_PER_RUN" \
        --server-pid "$pid" --json - 2>/dev/null | tail -1 | python3 -c "import json,sys; d=json.load(sys.stdin); d['name']='$name'; d['round']=$round; print(json.dumps(d))" >> "$OUT/handshake.jsonl"
    done
  done
  python3 - "$OUT/handshake.jsonl" > "$OUT/handshake.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
by = {}
for r in rows:
    by.setdefault(r["name"], []).append(r)
base = statistics.median(r["rate_per_s"] for r in by["bare-rustls"])
base_cpu = statistics.median(r["server_cpu_us_per_op"] for r in by["bare-rustls"])
print("| target | handshakes/s (median) | vs bare rustls | server CPU µs/handshake | vs bare rustls | p99 ms | errors |")
print("|---|---:|---:|---:|---:|---:|---:|")
for name in ["pgssl", "bare-rustls", "pgbouncer"]:
    rs = by[name]
    rate = statistics.median(r["rate_per_s"] for r in rs)
    cpu = statistics.median(r["server_cpu_us_per_op"] for r in rs)
    p99 = statistics.median(r["p99_ms"] for r in rs)
    print(f"| {name} | {rate:,.0f} | {rate/base:.2f}x | {cpu:.0f} | {cpu/base_cpu:.2f}x | {p99:.2f} | {sum(r['errors'] for r in rs)} |")
PY
  cat "$OUT/handshake.md"
fi

if [[ " $PARTS " == *" 4 "* ]]; then
  echo "== certificate rotation under load"
  "$BENCH" run --mode handshake --target 127.0.0.1:6601 --clients 16 --duration 8 --warmup 0 --json "$OUT/rotation-load.json" 2>/dev/null > /dev/null & load=$!
  sleep 3
  "$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/data" security regenerate-internal-tokens > "$OUT/rotation.log"
  wait "$load"
  python3 -c "import json; d=json.load(open('$OUT/rotation-load.json')); print(f\"rotation under load: {d['ok']} connections at {d['rate_per_s']:.0f}/s, {d['errors']} failed\")" | tee "$OUT/rotation.md"
fi

if [[ " $PARTS " == *" 3 "* ]]; then
  echo "== connect rate and p99 against concurrency"
  m=$work/managed
  mkdir -p "$m"; chmod 755 "$m"
  printf '[server]\nmax_connections = 2000\n[repository]\nmax_connections = 300\n' > "$m/pgssl.toml"
  "$PGSSL" --config "$m/pgssl.toml" --data-dir "$m/data" serve --listen 127.0.0.1:6611 & managed_pid=$!
  wait_port 6611
  pw=sweep-$RANDOM$RANDOM
  printf '%s\n' "$pw" | "$PGSSL" --config "$m/pgssl.toml" --data-dir "$m/data" data-access repository-access enable --repository-username tableau --repository-password - >/dev/null
  "$PGSSL" --config "$m/pgssl.toml" --data-dir "$m/data" security repository-ssl enable >/dev/null
  "$PGSSL" --config "$m/pgssl.toml" --data-dir "$m/data" pending-changes apply >/dev/null
  : > "$OUT/connect-sweep.jsonl"
  for clients in 1 4 16 64 256; do
    PGPASSWORD=$pw "$BENCH" run --mode connect --target 127.0.0.1:6611 --user tableau --database repository \
      --clients "$clients" --duration "$SECONDS_PER_RUN" --server-pid "$managed_pid" --json - 2>/dev/null | tail -1 >> "$OUT/connect-sweep.jsonl"
  done
  kill -TERM "$managed_pid"; wait "$managed_pid" || true
  python3 "$repo/benches/plot.py" "$OUT/connect-sweep.jsonl" "$OUT/connect-sweep.png"
fi
echo "results in $OUT"
