#!/usr/bin/env bash
# Soak (issue #16): pgbench through pgssl for SOAK_SECONDS while a change is applied every
# APPLY_EVERY seconds (repository SSL toggled between `enable` and `enable --internal-only`, live) and
# the certificate and internal passwords are rotated every ROTATE_EVERY seconds
# (`regenerate-internal-tokens`). Two loads at once: persistent TLS sessions (`pgbench -c 4`, TPC-B)
# and a new TLS + SCRAM connection per transaction (`pgbench -C -S -c 2`). pgssl's RSS and open files
# are sampled every SAMPLE_EVERY seconds into $OUT/samples.tsv.
#
# Fails (exit 1) when any transaction failed or a client aborted, or when an apply or a rotation
# failed. With CHECK_FLAT=1 it also fails when RSS or open files after WARMUP seconds grow by more
# than 5% (median of the last third of the samples against the first third's; the by-hand run — a
# short CI run has no warm-up to speak of).
#
#   benches/soak.sh                                       # 30 minutes, by hand
#   SOAK_SECONDS=40 APPLY_EVERY=5 ROTATE_EVERY=15 WARMUP=10 benches/soak.sh   # what CI runs
# PGSSL_BIN: a pgssl binary to use (default: a release build of this checkout). Needs: postgresql
# (server binaries, pgbench, psql), python3. Runs as root or as a user that may run PostgreSQL.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
SOAK_SECONDS=${SOAK_SECONDS:-1800}
APPLY_EVERY=${APPLY_EVERY:-60}
ROTATE_EVERY=${ROTATE_EVERY:-300}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
WARMUP=${WARMUP:-300}
CHECK_FLAT=${CHECK_FLAT:-0}
OUT=${OUT:-/tmp/pgssl-soak}
PORT=${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
if [ -z "${PGSSL_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --locked -q)
  PGSSL_BIN=$repo/target/release/pgssl
fi
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/pgbench" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
mkdir -p "$OUT"
work=$(mktemp -d /tmp/pgssl-soak.XXXXXX)
chmod 755 "$work"
printf '[server]\nhandshake_timeout = "30s"\n' > "$work/pgssl.toml"
export PGSSL_DATA_DIR=$work/data PGSSL_LOG=warn
run() { "$PGSSL_BIN" --config "$work/pgssl.toml" "$@"; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "${serve:-}" ] && kill -TERM "$serve" 2>/dev/null && wait "$serve" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$PGSSL_BIN" --config "$work/pgssl.toml" serve --no-admin --listen "127.0.0.1:$PORT" 2> "$OUT/serve.log" &
serve=$!
for _ in $(seq 1 240); do "$bindir/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break; sleep 0.5; done
run security repository-ssl enable >/dev/null
run pending-changes apply >/dev/null
password=soak-$RANDOM$RANDOM
echo "$password" | run data-access repository-access enable --repository-username tableau --repository-password - >/dev/null
run pending-changes apply >/dev/null
export PGPASSWORD=$password PGSSLMODE=require
conn="host=127.0.0.1 port=$PORT user=tableau dbname=repository"
"$bindir/pgbench" -q -i -s 4 "$conn" > "$OUT/init.log" 2>&1

sample() {
  local start=$SECONDS
  printf 'elapsed_s\trss_kib\topen_files\n' > "$OUT/samples.tsv"
  while kill -0 "$serve" 2>/dev/null; do
    printf '%s\t%s\t%s\n' "$((SECONDS - start))" "$(awk '/VmRSS/ {print $2}' "/proc/$serve/status")" \
      "$(ls "/proc/$serve/fd" | wc -l)" >> "$OUT/samples.tsv"
    sleep "$SAMPLE_EVERY"
  done
}
sample & pids+=($!)

"$bindir/pgbench" -n -c 4 -j 1 -T "$SOAK_SECONDS" -P 60 "$conn" > "$OUT/persistent.log" 2>&1 & steady=$!
"$bindir/pgbench" -n -C -S -c 2 -j 1 -T "$SOAK_SECONDS" -P 60 "$conn" > "$OUT/connect.log" 2>&1 & connect=$!

# The control loop: an apply every APPLY_EVERY s, a rotation every ROTATE_EVERY s.
changes=0 rotations=0 control_failures=0
begin=$SECONDS internal=0
next_apply=$APPLY_EVERY next_rotate=$ROTATE_EVERY
while [ $((SECONDS - begin)) -lt "$SOAK_SECONDS" ]; do
  sleep 1
  t=$((SECONDS - begin))
  if [ "$t" -ge "$next_rotate" ] && [ "$t" -lt "$SOAK_SECONDS" ]; then
    next_rotate=$((next_rotate + ROTATE_EVERY))
    # regenerate-internal-tokens applies itself (the running server reloads at once).
    if run security regenerate-internal-tokens >> "$OUT/control.log" 2>&1; then
      rotations=$((rotations + 1))
    else control_failures=$((control_failures + 1)); fi
  fi
  if [ "$t" -ge "$next_apply" ] && [ "$t" -lt "$SOAK_SECONDS" ]; then
    next_apply=$((next_apply + APPLY_EVERY))
    if [ "$internal" -eq 0 ]; then flags=(--internal-only); internal=1; else flags=(); internal=0; fi
    if run security repository-ssl enable "${flags[@]}" >> "$OUT/control.log" 2>&1 &&
       run pending-changes apply >> "$OUT/control.log" 2>&1; then
      changes=$((changes + 1))
    else control_failures=$((control_failures + 1)); fi
  fi
done
status=0
wait "$steady" || status=1
wait "$connect" || status=1

summary() { # a pgbench log's transactions, failures and rate
  awk -F'[:=]' '/number of transactions actually processed/ {split($2, a, "/"); tx=a[1]+0}
    /number of failed transactions/ {f=$2+0} /^tps/ {tps=$2+0}
    /aborted|error/ {bad++} END {printf "%d transactions, %d failed, %.1f tps, %d error lines", tx, f, tps, bad}' "$1"
}
echo "pgssl $("$PGSSL_BIN" --version 2>/dev/null | head -1), $(nproc) cores, ${SOAK_SECONDS}s"
echo "persistent (pgbench -c 4):  $(summary "$OUT/persistent.log")"
echo "connect (pgbench -C -S -c 2): $(summary "$OUT/connect.log")"
echo "applies: $changes, rotations: $rotations, failed control commands: $control_failures"
for log in "$OUT/persistent.log" "$OUT/connect.log"; do
  if grep -qE 'aborted|error|FATAL' "$log" ||
     ! grep -qE 'number of failed transactions: 0 ' "$log"; then
    echo "FAILED: $log" >&2; grep -E 'aborted|error|FATAL|failed' "$log" | head -5 >&2; status=1
  fi
done
[ "$control_failures" -eq 0 ] || { tail -20 "$OUT/control.log" >&2; status=1; }
[ "$changes" -gt 0 ] && [ "$rotations" -gt 0 ] || { echo "no apply or no rotation ran" >&2; status=1; }
python3 - "$OUT/samples.tsv" "$WARMUP" "$CHECK_FLAT" <<'PY' || status=1
import sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n")[1:] if l]
warm = [(int(t), int(r), int(f)) for t, r, f in rows if int(t) >= int(sys.argv[2])]
if not warm:
    print("no samples after the warm-up"); sys.exit(1 if sys.argv[3] == "1" else 0)
# Flat means no growth: the median of the last third of the samples after the warm-up is within 5%
# of the first third's. (The spread is printed too: open files move by a few with the sockets of
# `pgbench -C` in flight at the instant of a sample, so their spread is noise, not a leak.)
import statistics
bad = False
third = max(1, len(warm) // 3)
for name, col in (("RSS KiB", 1), ("open files", 2)):
    vals = [w[col] for w in warm]
    lo, hi, first, last = min(vals), max(vals), vals[0], vals[-1]
    spread = (hi - lo) / lo * 100 if lo else 0.0
    early, late = statistics.median(vals[:third]), statistics.median(vals[-third:])
    drift = (late - early) / early * 100 if early else 0.0
    print(f"{name} after {sys.argv[2]}s: first {first}, last {last}, min {lo}, max {hi} (spread {spread:.1f}%); median of the first third {early:g}, of the last third {late:g} (drift {drift:+.1f}%)")
    bad |= abs(drift) > 5.0
if bad and sys.argv[3] == "1":
    print("not flat within 5%"); sys.exit(1)
PY
exit "$status"
