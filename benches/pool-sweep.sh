#!/usr/bin/env bash
# Connect rate and p50/p99 connect latency against concurrency, for direct PostgreSQL (TLS), PgBouncer
# (session mode, client TLS) and pgssl in proxy mode (warm backends), on the same throwaway PostgreSQL
# and PgBouncer that ../shared/bench/anchor.sh builds: anchor.sh runs once, briefly, with KEEP_TMP=1,
# then this script starts its kept servers again and loads each target with pgssl-bench --mode connect
# (a new TLS connection, SCRAM login and one SELECT per transaction).
#
#   benches/pool-sweep.sh                          # 16, 64, 256 clients, 10 s each, SCRAM 4096
#   SCRAM_ITERATIONS=1 CLIENTS="16 64 256" SECONDS_PER_RUN=10 benches/pool-sweep.sh
# Needs what anchor.sh needs (root, postgresql, pgbouncer, pgbench). Output: $OUT (default
# /tmp/pgssl-pool-sweep): sweep.jsonl (one pgssl-bench JSON line per target and concurrency, with a
# "target" field), sweep.md (a table).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pgssl-pool-sweep}
CLIENTS=${CLIENTS:-"16 64 256"}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
export SCRAM_ITERATIONS=${SCRAM_ITERATIONS:-4096}
mkdir -p "$OUT"
(cd "$repo" && cargo build --release --locked -q --bins)
BENCH=$repo/target/release/pgssl-bench
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
password=sweep-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
pg_port=15410 pgb_port=15411 proxy_port=6554

# 1. The anchor's set-up, kept: PostgreSQL (ssl, SCRAM), PgBouncer, the bench database and role.
BENCH_PASSWORD=$password PG_PORT=$pg_port PGB_PORT=$pgb_port KEEP_TMP=1 TESTS="conn1_tls" DURATION=1 CLIENTS=16 \
  REPEATS=1 WARMUP=0 SKIP_MEM=1 OUT_DIR="$OUT/anchor" RESULTS_MD="$OUT/anchor.md" \
  "$repo/../shared/bench/anchor.sh" >"$OUT/anchor.log" 2>&1
tmp=$(grep -o 'kept /[^ ]*' "$OUT/anchor.log" | tail -1 | cut -d' ' -f2)
[[ -d $tmp ]] || { echo "anchor.sh kept no set-up (see $OUT/anchor.log)" >&2; exit 1; }

stop() {
  [[ -n ${pgssl_pid:-} ]] && kill -TERM "$pgssl_pid" 2>/dev/null || true
  pkill -u postgres -f "pgbouncer.*$tmp" 2>/dev/null || true
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgdata" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf -- "$tmp"
}
trap stop EXIT
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgdata" -l "$tmp/postgres.log" -w start >/dev/null
runuser -u postgres -- pgbouncer -d -q "$tmp/pgbouncer.ini"
# 2. pgssl in proxy mode, as anchor-pgssl.sh runs it for anchor.sh.
PG_PORT=$pg_port PROXY_PORT=$proxy_port BENCH_DB=bench BENCH_TMP=$tmp PGSSL_LOG=warn \
  setsid "$repo/benches/anchor-pgssl.sh" proxy >"$OUT/pgssl.log" 2>&1 &
pgssl_pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$proxy_port") 2>/dev/null && break; sleep 0.2; done

# 3. The sweep, targets rotated per concurrency.
: >"$OUT/sweep.jsonl"
targets=("direct:$pg_port" "pgbouncer:$pgb_port" "pgssl:$proxy_port")
i=0
for clients in $CLIENTS; do
  for k in 0 1 2; do
    t=${targets[$(((i + k) % 3))]}
    name=${t%%:*} port=${t##*:}
    PGPASSWORD=$password "$BENCH" run --mode connect --target "127.0.0.1:$port" --user tableau \
      --database bench --clients "$clients" --duration "$SECONDS_PER_RUN" --json - 2>/dev/null |
      tail -1 | python3 -c "import json,sys; r=json.load(sys.stdin); r['target']='$name'; print(json.dumps(r))" \
        >>"$OUT/sweep.jsonl"
  done
  i=$((i + 1))
done
python3 - "$OUT/sweep.jsonl" >"$OUT/sweep.md" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| clients | target | connections/s | p50 ms | p99 ms | errors |")
print("|---:|---|---:|---:|---:|---:|")
for r in sorted(rows, key=lambda r: (r["clients"], r["target"])):
    print(f"| {r['clients']} | {r['target']} | {r['rate_per_s']:.0f} | "
          f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
PY
cat "$OUT/sweep.md"
