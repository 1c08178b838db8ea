#!/usr/bin/env bash
# Cluster figures for BENCHMARKS.md, on loopback: TLS handshakes/s through 1, 2 and 3 pgssl nodes
# at once (16 clients in all, split between the nodes), and how long `pending-changes apply` takes
# to return with every node serving the change (it waits for all three).
#
#   benches/cluster.sh                                   # about 2 minutes
#   SECONDS_PER_RUN=20 APPLIES=20 benches/cluster.sh
# Needs: postgresql (server binaries), python3. Output: $OUT (default /tmp/pgssl-cluster-bench).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-/tmp/pgssl-cluster-bench}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
APPLIES=${APPLIES:-10}
mkdir -p "$OUT"
(cd "$repo" && cargo build --release --locked -q)
PGSSL=$repo/target/release/pgssl
BENCH=$repo/target/release/pgssl-bench
export PGSSL_LOG=warn
work=$(mktemp -d /tmp/pgssl-cluster-bench.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  as_pg "$bindir/pg_ctl" stop -D "$work/pg" -m immediate >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0; sleep 0.1; done; echo "$1:$2 never opened" >&2; return 1; }

pw=bench-pw
pgport=$(free_port)
printf '%s\n' "$pw" > "$work/pwfile"
mkdir -m 700 "$work/pg" "$work/sock"
[ "$(id -u)" -eq 0 ] && chown postgres "$work/pwfile" "$work/pg" "$work/sock"
as_pg "$bindir/initdb" -D "$work/pg" -U postgres --auth=scram-sha-256 --pwfile="$work/pwfile" --no-sync >/dev/null
printf "port = %s\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nfsync = off\nmax_connections = 200\n" \
  "$pgport" "$work/sock" | as_pg tee -a "$work/pg/postgresql.auto.conf" >/dev/null
as_pg "$bindir/pg_ctl" start -w -D "$work/pg" -l "$work/sock/pg.log" >/dev/null
PGPASSWORD=$pw "$bindir/psql" -X -q -h 127.0.0.1 -p "$pgport" -U postgres -c "CREATE ROLE tableau LOGIN PASSWORD '$pw'"

printf '[repository]\naddress = "127.0.0.1:%s"\n' "$pgport" > "$work/pgssl.toml"
node() { PGSSL_UPSTREAM_PASSWORD=$pw "$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/n$1" "${@:2}"; }
serve() {
  PGSSL_UPSTREAM_PASSWORD=$pw "$PGSSL" --config "$work/pgssl.toml" --data-dir "$work/n$1" \
    serve --no-admin --listen "127.0.0.$(($1 + 1)):6701" &
  pids+=($!)
  wait_port "127.0.0.$(($1 + 1))" 6701
}
node 1 security repository-ssl enable >/dev/null
node 1 pending-changes apply >/dev/null
serve 1
echo "bench passphrase" | node 1 topology get-bootstrap-file -f "$work/boot.toml" --node-name n1 >/dev/null
for i in 2 3; do
  echo "bench passphrase" | node "$i" topology join --bootstrap-file "$work/boot.toml" --node-name "n$i" >/dev/null
  serve "$i"
done
until [ "$(node 1 topology list-nodes | grep -c '(live)')" -eq 3 ]; do sleep 0.2; done

echo "== handshakes: 16 clients split over 1, 2 and 3 nodes, ${SECONDS_PER_RUN}s each"
: > "$OUT/handshake.jsonl"
for n in 1 2 3; do
  per=$((16 / n))
  benches=()
  for i in $(seq 1 "$n"); do
    "$BENCH" run --mode handshake --target "127.0.0.$((i + 1)):6701" --clients "$per" \
      --duration "$SECONDS_PER_RUN" --json "$work/h$n-$i.json" >/dev/null 2>&1 &
    benches+=($!)
  done
  wait "${benches[@]}"
  python3 - "$n" "$work"/h"$n"-*.json >> "$OUT/handshake.jsonl" <<'PY'
import json, sys
n, files = int(sys.argv[1]), sys.argv[2:]
runs = [json.load(open(f)) for f in files]
rate = sum(r["rate_per_s"] for r in runs)
print(json.dumps({"nodes": n, "handshakes_per_sec": round(rate), "p99_ms": max(r.get("p99_ms", 0) for r in runs), "errors": sum(r.get("errors", 0) for r in runs)}))
PY
done
cat "$OUT/handshake.jsonl"

echo "== apply to all nodes: $APPLIES applies staged on n2, applied on n3"
: > "$OUT/apply.txt"
for k in $(seq 1 "$APPLIES"); do
  if [ $((k % 2)) -eq 1 ]; then node 2 security repository-ssl enable --internal-only >/dev/null
  else node 2 security repository-ssl enable >/dev/null; fi
  start=$(date +%s%N)
  out=$(node 3 pending-changes apply)
  end=$(date +%s%N)
  took=$(grep -c "took the change" <<<"$out")
  echo "$(( (end - start) / 1000000 )) $took" >> "$OUT/apply.txt"
done
python3 - "$OUT/apply.txt" <<'PY'
import statistics, sys
rows = [list(map(int, l.split())) for l in open(sys.argv[1])]
ms = sorted(r[0] for r in rows)
print(f"apply returned with all 3 nodes serving: median {statistics.median(ms)} ms, max {ms[-1]} ms over {len(ms)} applies; nodes that took it each time: {sorted(set(r[1] for r in rows))}")
PY
