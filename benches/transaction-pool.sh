#!/usr/bin/env bash
# Transaction pooling (issue #30): pgssl (proxy mode, `[pool] mode = "transaction"`) against PgBouncer
# (pool_mode = transaction) in one run, side by side, on the same throwaway PostgreSQL, with BACKENDS
# repository sessions each (pgssl `[pool] max_backends`, PgBouncer `default_pool_size`).
#
#   benches/transaction-pool.sh                  # the issue's sizes, as root (about 8 minutes)
#   IDLE_CLIENTS=200 CLIENTS=100 DURATION=5 WARMUP=2 SETTLE=2 benches/transaction-pool.sh   # smoke, 2 min
#
# Set-up: ../shared/bench/anchor.sh runs once, briefly, with KEEP_TMP=1 (as benches/pool-sweep.sh does)
# and leaves its PostgreSQL 15 (ssl=on, ECDSA P-256, scram-sha-256, pgbench tables at SCALE), its
# PgBouncer (client TLS required, SCRAM from a userlist, plaintext to PostgreSQL) and their certificates;
# this script starts them again with its own sizes (PostgreSQL max_connections for the direct runs;
# PgBouncer pool_mode = transaction, default_pool_size = BACKENDS, max_client_conn above IDLE_CLIENTS)
# and pgssl through benches/anchor-pgssl.sh proxy (a lookup user, SCRAM with channel binding, SCRAM
# pass-through to PostgreSQL, repository SSL required towards clients, plaintext to PostgreSQL).
# anchor.sh's own pgbench measurements do not fit here (no -M, no p99, PgBouncer's pool sized by its
# client count, idle clients also opened against PostgreSQL itself): only its set-up is used.
#
# Measurements (targets in rotated order per test and repeat; a WARMUP-second pgbench of BACKENDS
# clients per target first, so that every listener has its backends open):
#   idle      IDLE_CLIENTS TLS clients that log in (SCRAM) and sit (anchor_tools.py open-idle, 32
#             logins in flight), against pgssl and PgBouncer: the listener's RSS (and PSS) delta over
#             the clients, SETTLE seconds after the last login, and the listener's connections to
#             PostgreSQL meanwhile (pgssl's include its 2 verifier lookup connections). Not against
#             PostgreSQL itself: a backend per client (~1.3 MB each, ../shared/bench/README.md).
#             Issue target: pgssl <= 8 KiB RSS per idle client.
#   extended  pgbench -n -S -M extended -c CLIENTS -j THREADS -T DURATION: pgssl, PgBouncer, and
#             direct PostgreSQL as a reference (DIRECT_REFERENCE=1). tps, and latency p50/p99 from
#             pgbench --log (every transaction). Issue targets: pgssl >= 1.2x PgBouncer's tps, p99 no
#             worse than PgBouncer's.
#   prepared  pgbench -n -S -M prepared, same shape: pgssl and direct PostgreSQL ONLY. Debian's
#             PgBouncer 1.18 has no prepared-statement support in transaction mode (pgbench's named
#             statements fail on the next server), so this compares pgssl with PostgreSQL itself.
#   instructions (with CALLGRIND=1, which runs both listeners under valgrind's callgrind and makes this
#             the default test): the listener's user-space instructions per transaction and per login,
#             counted, not timed, so they repeat on a noisy machine. Two fixed-count runs per listener:
#             `pgbench -S -M extended -c IR_CLIENTS -j 1 -t IR_TXNS` (IR_CLIENTS logins, many transactions)
#             and the same with -C -t IR_LOGINS (a login per transaction); the two equations give each.
#             Counters are zeroed (callgrind_control -z) before and dumped after each run. valgrind
#             hides AVX-512 and SHA extensions from both listeners' crypto libraries, so the counts are
#             of their portable code paths; the kernel's share is not counted (see the CPU rows).
#   connect   pgbench -n -C -c CONN_CLIENTS -j THREADS -T CONN_DURATION -b select-only: a new TLS
#             connection, SCRAM login and one SELECT per transaction (tps = connections/s): pgssl,
#             PgBouncer, direct PostgreSQL as a reference. Issue target: pgssl >= PgBouncer's rate.
# CPU: utime+stime of the listener (pgssl or PgBouncer: one process, all threads) and of PostgreSQL
# (postmaster and its backends, reaped ones included) from /proc/<pid>/stat, as anchor.sh accounts it,
# divided by the transactions (connections for `connect`). For extended/prepared the window starts
# once pgbench holds all CLIENTS connections (it logs them all in before its first transaction; its
# -T includes that phase) and counts the transactions its --log shows ending after that, so the
# logins are not charged to transactions; for connect it is the whole run.
# "foreign cores": CPU used meanwhile by processes other than pgbench, the listener and PostgreSQL
# (a noisy machine); pgbench's own CPU comes from /usr/bin/time.
#
# Knobs (env): IDLE_CLIENTS=10000 BACKENDS=20 CLIENTS=1000 THREADS=2 DURATION=30
#   CONN_CLIENTS=100 CONN_DURATION=$DURATION WARMUP=5 SETTLE=5 REPEATS=1 SCALE=1
#   TESTS="idle extended prepared connect" DIRECT_REFERENCE=1 SCRAM_ITERATIONS=4096
#   CALLGRIND=0|1 IR_CLIENTS=10 IR_TXNS=300 IR_LOGINS=20 (the instructions test; valgrind is installed
#   when missing)
#   REPOSITORY_LEG=tcp|unix: how both listeners reach PostgreSQL (default tcp, 127.0.0.1; unix: its
#   socket in the set-up's directory, with scram-sha-256 required there too, as over TCP)
#   VERIFIER_CACHE_SECS (pgssl auth.verifier_cache_ttl; unset: pgssl's default, 1 s; PgBouncer reads
#   its userlist once)
#   OUT=/tmp/pgssl-transaction-pool KEEP_TMP=0 KEEP_LOGS=0 (pgbench --log files)
#   PGSSL_BIN: a pgssl binary (default: a release build of this checkout, built when unset).
#   ANCHOR_DIR: where anchor.sh and anchor_tools.py are (default ../shared/bench beside the checkout).
# Needs (as root): postgresql-15 (server, pgbench, psql), pgbouncer (installed when missing), python3,
# iproute2 (ss), /usr/bin/time; an open-file limit above IDLE_CLIENTS + 1000 (raised to the hard limit).
# Output: $OUT/<run id>/results.jsonl (one JSON line per measurement), summary.md (tables and the
# issue's targets; also printed), raw/ (pgbench outputs), logs/ (configs and server logs).
set -Eeuo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
BACKENDS=${BACKENDS:-20}
CLIENTS=${CLIENTS:-1000}
THREADS=${THREADS:-2}
DURATION=${DURATION:-30}
CONN_CLIENTS=${CONN_CLIENTS:-100}
CONN_DURATION=${CONN_DURATION:-$DURATION}
WARMUP=${WARMUP:-5}
SETTLE=${SETTLE:-5}
REPEATS=${REPEATS:-1}
SCALE=${SCALE:-1}
CALLGRIND=${CALLGRIND:-0}
IR_CLIENTS=${IR_CLIENTS:-10} IR_TXNS=${IR_TXNS:-300} IR_LOGINS=${IR_LOGINS:-20}
if [[ $CALLGRIND == 1 ]]; then TESTS=${TESTS:-instructions}; fi
TESTS=${TESTS:-"idle extended prepared connect"}
DIRECT_REFERENCE=${DIRECT_REFERENCE:-1}
REPOSITORY_LEG=${REPOSITORY_LEG:-tcp}
[[ $REPOSITORY_LEG == tcp || $REPOSITORY_LEG == unix ]] || { echo "REPOSITORY_LEG is tcp or unix" >&2; exit 2; }
export SCRAM_ITERATIONS=${SCRAM_ITERATIONS:-4096}
if [[ -n ${VERIFIER_CACHE_SECS:-} ]]; then export VERIFIER_CACHE_SECS; fi
OUT=${OUT:-/tmp/pgssl-transaction-pool}
KEEP_TMP=${KEEP_TMP:-0}
KEEP_LOGS=${KEEP_LOGS:-0}
# the shared harness sits beside the main checkout (a worktree finds it through git's common dir)
ANCHOR_DIR=${ANCHOR_DIR:-$repo/../shared/bench}
if [[ ! -d $ANCHOR_DIR ]] && common=$(git -C "$repo" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
  ANCHOR_DIR=$(dirname "$common")/../shared/bench
fi
ANCHOR=$ANCHOR_DIR/anchor.sh
TOOLS=$ANCHOR_DIR/anchor_tools.py
HOST=127.0.0.1
USER_=tableau DB=bench

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)
RUN=$OUT/$RUN_ID
mkdir -p "$RUN/raw" "$RUN/logs"
LOG=$RUN/run.log
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
die() { log "transaction-pool.sh: $*"; exit 1; }

[[ $(id -u) == 0 ]] || die "run as root (PostgreSQL and PgBouncer run as postgres)"
[[ -x $ANCHOR && -f $TOOLS ]] || die "no $ANCHOR (the shared anchor harness)"
if ! command -v pgbouncer >/dev/null && [[ ! -x /usr/sbin/pgbouncer ]]; then
  log "installing pgbouncer"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends pgbouncer >>"$LOG" 2>&1
fi
if [[ $CALLGRIND == 1 ]] && ! command -v callgrind_control >/dev/null; then
  log "installing valgrind"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind >>"$LOG" 2>&1
fi
PGBOUNCER_BIN=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
export PGBOUNCER_BIN
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
for b in "$PGBIN/pg_ctl" pgbench psql ss python3 runuser setsid /usr/bin/time; do
  command -v "$b" >/dev/null || die "missing $b"
done
# Every client is a file descriptor: the idle opener and each listener need IDLE_CLIENTS of them,
# pgbench CLIENTS. Children (PostgreSQL, PgBouncer, pgssl, pgbench, the opener) inherit the limit.
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] || (( hard >= IDLE_CLIENTS + CLIENTS + 1024 )) || ulimit -Hn $(( IDLE_CLIENTS + CLIENTS + 4096 )) 2>/dev/null \
  || die "open-file hard limit $hard is below IDLE_CLIENTS + CLIENTS + 1024; raise it or lower IDLE_CLIENTS"
ulimit -Sn "$(ulimit -Hn)"
if [[ -z ${PGSSL_BIN:-} ]]; then
  log "building pgssl (release)"
  (cd "$repo" && cargo build --release --locked -q --bin pgssl)
fi
export PGSSL_BIN=${PGSSL_BIN:-$repo/target/release/pgssl}
[[ -x $PGSSL_BIN ]] || die "no pgssl binary at $PGSSL_BIN"

port_busy() { [[ -n $(ss -ltnH "sport = :$1") ]]; }
pick_port() { local p q; for p in $(seq 15400 15999); do for q in "$@"; do [[ $p == "$q" ]] && continue 2; done; port_busy "$p" || { echo "$p"; return 0; }; done; return 1; }
wait_listen() { local i; for i in $(seq 1 $(( $2 * 10 ))); do port_busy "$1" && return 0; sleep 0.1; done; return 1; }
listener_pid_of() { ss -ltnpH "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
PG_PORT=$(pick_port) PGB_PORT=$(pick_port "$PG_PORT") PGSSL_PORT=$(pick_port "$PG_PORT" "$PGB_PORT")
PASSWORD=tp-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')

# ----------------------------------------------------------------------------- cleanup
tmp="" pm_pid="" pgb_pid="" pgssl_pid="" opener_pid="" pgbench_pid=""
stop_pid() { # pid [signal] [tenths of a second]: only pids this script started
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for i in $(seq 1 "${3:-150}"); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  stop_pid "$pgbench_pid"; stop_pid "$opener_pid"
  stop_pid "$pgssl_pid" TERM 400
  stop_pid "$pgb_pid" TERM 100
  if [[ -n $tmp && -f $tmp/pgdata/postmaster.pid ]]; then
    runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgdata" -m fast -w -t 60 stop >>"$LOG" 2>&1
  fi
  if [[ -n $tmp && -d $tmp ]]; then
    cp -f "$tmp"/*.log "$tmp"/*.ini "$tmp"/pgssl-proxy.toml "$RUN/logs/" 2>/dev/null
    sed -n '/# ---- transaction-pool.sh ----/,$p' "$tmp/pgdata/postgresql.conf" >"$RUN/logs/postgresql.conf.tail" 2>/dev/null
    if [[ $KEEP_TMP == 1 ]]; then log "kept $tmp"; else rm -rf -- "$tmp"; fi
  fi
  [[ $rc == 0 ]] || log "exit status $rc; partial results in $RUN"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ----------------------------------------------------------------------------- 1. anchor's set-up, kept
log "run $RUN_ID: set-up by anchor.sh (PostgreSQL :$PG_PORT, PgBouncer :$PGB_PORT, SCRAM $SCRAM_ITERATIONS)"
BENCH_PASSWORD=$PASSWORD PG_PORT=$PG_PORT PGB_PORT=$PGB_PORT KEEP_TMP=1 TESTS=conn1_tls DURATION=1 \
  CLIENTS=$BACKENDS REPEATS=1 WARMUP=1 SKIP_MEM=1 SCALE=$SCALE QUIET_TIMEOUT=5 NOISY_RETRIES=0 \
  OUT_DIR="$RUN/anchor" RESULTS_MD="$RUN/anchor/anchor.md" "$ANCHOR" >"$RUN/logs/anchor.log" 2>&1 \
  || die "anchor.sh failed (see $RUN/logs/anchor.log)"
tmp=$(grep -o 'kept /[^ ]*' "$RUN/logs/anchor.log" | tail -1 | cut -d' ' -f2)
[[ -n $tmp && -d $tmp/pgdata ]] || die "anchor.sh kept no set-up (see $RUN/logs/anchor.log)"

# ----------------------------------------------------------------------------- 2. servers, resized
PG_MAX=$(( CLIENTS + CONN_CLIENTS + 2 * BACKENDS + 50 ))
cat >>"$tmp/pgdata/postgresql.conf" <<EOF

# ---- transaction-pool.sh ----
max_connections = $PG_MAX
EOF
if [[ $REPOSITORY_LEG == unix ]]; then
  # anchor.sh trusts every local connection; the listeners' logins must cost PostgreSQL the same
  # SCRAM exchange over the socket as over TCP (the harness's own superuser stays trusted).
  sed -i 's/^local \+all \+all \+trust$/local all postgres trust\nlocal all all scram-sha-256/' "$tmp/pgdata/pg_hba.conf"
  grep -q '^local all all scram-sha-256$' "$tmp/pgdata/pg_hba.conf" || die "could not require SCRAM on the socket"
  sed -i "s|^$DB = host=$HOST |$DB = host=$tmp |" "$tmp/pgbouncer.ini"
  grep -q "^$DB = host=$tmp " "$tmp/pgbouncer.ini" || die "could not point PgBouncer at the socket"
  export REPOSITORY_ADDRESS="unix:$tmp/.s.PGSQL.$PG_PORT"
fi
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$tmp/pgdata" -l "$tmp/postgres.log" -w -t 60 start >>"$LOG" 2>&1 \
  || die "postgres did not start (see $tmp/postgres.log)"
pm_pid=$(head -1 "$tmp/pgdata/postmaster.pid")
psql_su() { psql -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$PG_PORT" -U postgres -d "${2:-postgres}" -Atc "$1"; }

PGB_MAX_CLIENTS=$(( IDLE_CLIENTS + CLIENTS + CONN_CLIENTS + 200 ))
sed -i -e "s/^pool_mode = .*/pool_mode = transaction/" \
       -e "s/^max_client_conn = .*/max_client_conn = $PGB_MAX_CLIENTS/" \
       -e "s/^default_pool_size = .*/default_pool_size = $BACKENDS/" "$tmp/pgbouncer.ini"
grep -q '^pool_mode = transaction$' "$tmp/pgbouncer.ini" || die "could not set pool_mode in $tmp/pgbouncer.ini"
rm -f "$tmp/pgbouncer.pid"
# runuser's pam_limits puts the soft open-file limit back to 1024: raise it again for PgBouncer
if [[ $CALLGRIND == 1 ]]; then
  # in the foreground under callgrind (a daemon's fork would leave it); it still writes its pidfile
  runuser -u postgres -- bash -c 'ulimit -Sn "$(ulimit -Hn)" && LOGNAME=vg USER=vg HOST=vg exec valgrind -q --tool=callgrind --vgdb-prefix="$2" --callgrind-out-file="$2" "$0" -q "$1"' \
    "$PGBOUNCER_BIN" "$tmp/pgbouncer.ini" "$tmp/callgrind.pgbouncer" >>"$LOG" 2>&1 </dev/null &
  # vgdb names its pipes after LOGNAME/USER and HOST on both ends: the same everywhere here
  export PGSSL_SERVE_PREFIX="env LOGNAME=vg USER=vg HOST=vg valgrind -q --tool=callgrind --vgdb-prefix=$tmp/callgrind.pgssl --callgrind-out-file=$tmp/callgrind.pgssl"
else
  runuser -u postgres -- bash -c 'ulimit -Sn "$(ulimit -Hn)" && exec "$0" -d -q "$1"' "$PGBOUNCER_BIN" "$tmp/pgbouncer.ini" \
    >>"$LOG" 2>&1 || die "pgbouncer did not start"
fi
for _ in $(seq 1 300); do [[ -s $tmp/pgbouncer.pid ]] && break; sleep 0.1; done
pgb_pid=$(cat "$tmp/pgbouncer.pid" 2>/dev/null || true)
[[ -n $pgb_pid ]] && wait_listen "$PGB_PORT" 30 || die "pgbouncer not listening (see $tmp/pgbouncer.log)"
pgb_files=$(awk '/Max open files/{print $4}' "/proc/$pgb_pid/limits")
(( pgb_files >= PGB_MAX_CLIENTS + BACKENDS + 10 )) || die "pgbouncer may open only $pgb_files files, fewer than max_client_conn $PGB_MAX_CLIENTS"

PGSSL_MAX=$(( IDLE_CLIENTS + CLIENTS + CONN_CLIENTS + 200 ))
PG_PORT=$PG_PORT PROXY_PORT=$PGSSL_PORT BENCH_DB=$DB BENCH_TMP=$tmp PGSSL_LOG=${PGSSL_LOG:-warn} \
PGSSL_EXTRA_CONFIG="[pool]\nmode = \"transaction\"\nmax_backends = $BACKENDS\n[server]\nmax_connections = $PGSSL_MAX" \
  setsid "$repo/benches/anchor-pgssl.sh" proxy >"$tmp/pgssl.log" 2>&1 </dev/null &
pgssl_pid=$!
wait_listen "$PGSSL_PORT" 60 || die "pgssl not listening on $PGSSL_PORT (see $tmp/pgssl.log)"
[[ $(listener_pid_of "$PGSSL_PORT") == "$pgssl_pid" ]] || die "pid $pgssl_pid is not the one listening on $PGSSL_PORT"

declare -A PORT=([direct]=$PG_PORT [pgbouncer]=$PGB_PORT [pgssl]=$PGSSL_PORT)
declare -A LPID=([direct]=0 [pgbouncer]=$pgb_pid [pgssl]=$pgssl_pid)
log "up: postgres pid $pm_pid (max_connections $PG_MAX), pgbouncer pid $pgb_pid (open files" \
    "$(awk '/Max open files/{print $4}' "/proc/$pgb_pid/limits")), pgssl pid $pgssl_pid (open files" \
    "$(awk '/Max open files/{print $4}' "/proc/$pgssl_pid/limits"))"
for t in direct pgbouncer pgssl; do
  out=$(PGPASSWORD=$PASSWORD PGSSLMODE=require PGCONNECT_TIMEOUT=10 timeout 30 psql -X -h $HOST -p "${PORT[$t]}" \
        -U $USER_ -d $DB -c '\conninfo' -Atc 'SELECT count(*) FROM pgbench_branches' 2>&1) || die "sanity $t: $out"
  log "sanity $t: $(echo "$out" | tr '\n' ' ' | cut -c1-160)"
done

# ----------------------------------------------------------------------------- helpers
PY=$tmp/tp_tools.py
cat >"$PY" <<'PY'
import glob, json, os, re, sys

def pgbench_out(path):
    text = open(path, errors="replace").read()
    def grab(pat, cast=float):
        m = re.search(pat, text, re.M)
        return cast(m.group(1)) if m else None
    return {
        "tps": grab(r"^tps = ([\d.]+)"),
        "transactions": grab(r"^number of transactions actually processed: (\d+)", int),
        "failed": grab(r"^number of failed transactions: (\d+)", int),
        "lat_avg_ms": grab(r"^latency average = ([\d.]+) ms"),
        "initial_connection_ms": grab(r"^initial connection time = ([\d.]+) ms"),
        "errors_in_output": bool(re.search(r"(?i)\berror\b|fatal|aborted", text)),
    }

def percentiles(prefix, since_us):
    # pgbench --log: client_id transaction_no latency_us script_no end_epoch_s end_us [...]
    lat, in_window = [], 0
    for f in glob.glob(prefix + ".*"):
        with open(f) as fh:
            for line in fh:
                p = line.split()
                if len(p) >= 6 and p[2].isdigit():
                    lat.append(int(p[2]))
                    if int(p[4]) * 1000000 + int(p[5]) >= since_us:
                        in_window += 1
    if not lat:
        return {}
    lat.sort()
    pick = lambda q: round(lat[min(len(lat) - 1, int(q * len(lat)))] / 1000, 3)
    return {"p50_ms": pick(0.50), "p99_ms": pick(0.99), "p999_ms": pick(0.999),
            "max_ms": round(lat[-1] / 1000, 3), "logged": len(lat), "transactions_in_cpu_window": in_window}

def ticks(s):
    return [int(x) for x in s.split()]  # total idle steal task pg listener

def cmd_record(a):
    clk, nproc = int(a["clk"]), int(a["nproc"])
    t0, t1, t2 = ticks(a["t0"]), ticks(a["t1"]), ticks(a["t2"])
    w0, w1, w2 = int(a["w0"]), int(a["w1"]), int(a["w2"])  # wall clock, ns since the epoch
    r = {"test": a["test"], "target": a["target"], "rep": int(a["rep"]), "clients": int(a["clients"]),
         "threads": int(a["threads"]), "duration_s": int(a["duration"]), "command": a["command"]}
    r.update(pgbench_out(a["out"]))
    if a.get("logprefix"):
        r.update(percentiles(a["logprefix"], w1 // 1000))
    direct = a["target"] == "direct"
    # the window charged to transactions: from t1 (all clients connected; == t0 for -C) to t2
    win = (w2 - w1) / 1e9
    ls = (t2[5] - t1[5]) / clk
    pg = (t2[4] - t1[4]) / clk
    # transactions charged: those that ended inside the window (from the log), else all of them
    n = r.get("transactions_in_cpu_window") or r["transactions"] or 0
    r["cpu_window_s"] = round(win, 2)
    r["cpu_window_from_s"] = round((w1 - w0) / 1e9, 2)  # after pgbench's start (all clients connected)
    r["listener_cpu_s"] = None if direct else round(ls, 2)
    r["postgres_cpu_s"] = round(pg, 2)
    if n:
        r["listener_us_per_txn"] = None if direct else round(ls / n * 1e6, 1)
        r["postgres_us_per_txn"] = round(pg / n * 1e6, 1)
        r["server_us_per_txn"] = round((pg + (0 if direct else ls)) / n * 1e6, 1)
    r["listener_cores"] = None if direct else round(ls / win, 2) if win else None
    r["postgres_cores"] = round(pg / win, 2) if win else None
    # whole run (t0..t2): pgbench's CPU from /usr/bin/time; foreign = everything else busy
    wall = (w2 - w0) / 1e9
    client = None
    try:
        u, s = open(a["time"]).read().split()[-2:]
        client = float(u) + float(s)
    except (OSError, ValueError):
        pass
    task = (t2[3] - t0[3]) / clk
    own = (t2[4] - t0[4]) / clk + (0 if direct else (t2[5] - t0[5]) / clk) + (client or 0)
    r["wall_s"] = round(wall, 2)
    r["client_cores"] = round(client / wall, 2) if client is not None and wall else None
    r["machine_cores"] = round(((t2[0] - t0[0]) - (t2[1] - t0[1]) - (t2[2] - t0[2])) / clk / wall, 2) if wall else None
    r["foreign_cores"] = round(max(0.0, task - own) / wall, 2) if wall else None
    print(json.dumps(r))

def cmd_idle(a):
    st = json.load(open(a["status"]))
    lb, la, lc = (json.loads(a[k]) for k in ("before", "after", "closed"))
    pb, pa = json.loads(a["pg_before"]), json.loads(a["pg_after"])
    ok = st.get("ok") or 0
    r = {"test": "idle", "target": a["target"], "rep": int(a["rep"]), "clients": int(a["n"]),
         "ok": ok, "failed": st.get("failed"), "errors": st.get("errors"), "open_s": st.get("open_seconds"),
         "tls": st.get("tls"), "rss_before_kib": lb["rss_kb"], "rss_after_kib": la["rss_kb"],
         "rss_after_close_kib": lc["rss_kb"], "pss_before_kib": lb["pss_kb"], "pss_after_kib": la["pss_kb"],
         "postgres_pss_delta_kib": pa["pss_kb"] - pb["pss_kb"],
         "listener_connections_to_postgres": int(a["sessions"]), "postgres_procs_during": pa["procs"]}
    if ok:
        r["rss_per_client_kib"] = round((la["rss_kb"] - lb["rss_kb"]) / ok, 2)
        r["pss_per_client_kib"] = round((la["pss_kb"] - lb["pss_kb"]) / ok, 2)
    print(json.dumps(r))

def med(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2

def cmd_instructions(a):
    # txns run: IR_CLIENTS logins and T transactions; logins run: L logins, each with one transaction.
    # ir = T * per_txn + logins * per_login, twice: solved for both.
    q, c = pgbench_out(a["txns"] + ".txt"), pgbench_out(a["logins"] + ".txt")
    qi, ci = int(open(a["txns"] + ".ir").read()), int(open(a["logins"] + ".ir").read())
    qt, ql = q["transactions"], int(a["clients"])
    ct = cl = c["transactions"]
    per_txn = (qi * cl - ci * ql) / (qt * cl - ct * ql)
    per_login = (ci - ct * per_txn) / cl
    print(json.dumps({"test": "instructions", "target": a["target"], "rep": 1,
                      "ir_txns_run": qi, "txns": qt, "ir_logins_run": ci, "logins": cl,
                      "ir_per_txn": round(per_txn), "ir_per_login": round(per_login),
                      "failed": (q["failed"] or 0) + (c["failed"] or 0), "command": a["command"]}))

def f(v, nd=1):
    return "–" if v is None else f"{v:,.{nd}f}"

def cmd_summary(a):
    rows = [json.loads(l) for l in open(a["results"]) if l.strip()]
    meta = json.loads(a["meta"])
    def agg(test, target, key):
        return med([r.get(key) for r in rows if r["test"] == test and r["target"] == target])
    targets = [t for t in ("pgssl", "pgbouncer", "direct") if any(r["target"] == t for r in rows)]
    out = [f"## Transaction pooling: pgssl vs PgBouncer (run {meta['run_id']})", ""]
    out.append(f"- {meta['machine']}")
    out.append(f"- {meta['versions']}")
    out.append(f"- shape: {meta['shape']}")
    out.append("- pgssl: proxy mode (SCRAM with channel binding, lookup user), `[pool] mode = \"transaction\"`, "
               f"`max_backends = {meta['backends']}`; PgBouncer: `pool_mode = transaction`, "
               f"`default_pool_size = {meta['backends']}`; both TLS to clients, plaintext to PostgreSQL ({meta['leg']})")
    if meta["repeats"] > 1:
        out.append(f"- medians over {meta['repeats']} repeats, target order rotated")
    out.append("")
    if any(r["test"] == "idle" for r in rows):
        out += ["### Idle TLS clients (logged in, then idle)", "",
                "| target | clients ok / failed | open s | RSS before → after MiB | RSS KiB per client | PSS KiB per client | RSS after close MiB | its connections to PostgreSQL |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in targets:
            rs = [r for r in rows if r["test"] == "idle" and r["target"] == t]
            if not rs:
                continue
            g = lambda k: med([r.get(k) for r in rs])
            mib = lambda v: f((v or 0) / 1024)
            out.append(f"| {t} | {f(g('ok'),0)} / {f(g('failed'),0)} | {f(g('open_s'))} | {mib(g('rss_before_kib'))} → {mib(g('rss_after_kib'))} | "
                       f"**{f(g('rss_per_client_kib'),2)}** | {f(g('pss_per_client_kib'),2)} | {mib(g('rss_after_close_kib'))} | {f(g('listener_connections_to_postgres'),0)} |")
        out.append("")
    steady = [x for x in ("extended", "prepared") if any(r["test"] == x for r in rows)]
    if steady:
        out += ["### Persistent clients: pgbench -S", "",
                "| -M | target | tps | lat avg ms | p50 ms | p99 ms | listener µs/txn | PostgreSQL µs/txn | server µs/txn | pgbench cores | foreign cores | failed |",
                "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in steady:
            for t in targets:
                if not any(r["test"] == x and r["target"] == t for r in rows):
                    continue
                g = lambda k: agg(x, t, k)
                out.append(f"| {x} | {t} | {f(g('tps'),0)} | {f(g('lat_avg_ms'),2)} | {f(g('p50_ms'),2)} | {f(g('p99_ms'),2)} | "
                           f"{f(g('listener_us_per_txn'))} | {f(g('postgres_us_per_txn'))} | {f(g('server_us_per_txn'))} | "
                           f"{f(g('client_cores'),2)} | {f(g('foreign_cores'),2)} | {f(g('failed'),0)} |")
        out += ["", "`-M prepared`: not through PgBouncer: Debian's PgBouncer 1.18 has no prepared-statement support in "
                "transaction mode, so pgssl's `-M prepared` is compared with direct PostgreSQL only.", ""]
    if any(r["test"] == "connect" for r in rows):
        out += ["### A new TLS connection per transaction: pgbench -C -b select-only", "",
                "| target | connections/s | listener µs/conn | PostgreSQL µs/conn | server µs/conn | pgbench cores | foreign cores | failed |",
                "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for t in targets:
            if not any(r["test"] == "connect" and r["target"] == t for r in rows):
                continue
            g = lambda k: agg("connect", t, k)
            out.append(f"| {t} | {f(g('tps'),0)} | {f(g('listener_us_per_txn'))} | {f(g('postgres_us_per_txn'))} | "
                       f"{f(g('server_us_per_txn'))} | {f(g('client_cores'),2)} | {f(g('foreign_cores'),2)} | {f(g('failed'),0)} |")
        out.append("")
    if any(r["test"] == "instructions" for r in rows):
        out += ["### User-space instructions per operation (callgrind, counted)", "",
                "| target | instructions per transaction | instructions per login | transactions / logins counted | failed |",
                "|---|---:|---:|---:|---:|"]
        for t in targets:
            rs = [r for r in rows if r["test"] == "instructions" and r["target"] == t]
            if rs:
                r = rs[-1]
                out.append(f"| {t} | {r['ir_per_txn']:,} | {r['ir_per_login']:,} | {r['txns']:,} / {r['logins']:,} | {r['failed']} |")
        a_ = [r for r in rows if r["test"] == "instructions"]
        pi = {r["target"]: r for r in a_}
        if "pgssl" in pi and "pgbouncer" in pi:
            out.append("")
            out.append(f"- pgssl / PgBouncer: {pi['pgssl']['ir_per_txn'] / pi['pgbouncer']['ir_per_txn']:.2f}× per transaction, "
                       f"{pi['pgssl']['ir_per_login'] / pi['pgbouncer']['ir_per_login']:.2f}× per login")
        out.append("")
    out += ["### Issue #30's targets", ""]
    def check(label, ok, detail):
        mark = "–" if ok is None else ("met" if ok else "NOT met")
        out.append(f"- {label}: {detail} — **{mark}**")
    v = agg("idle", "pgssl", "rss_per_client_kib")
    if v is not None:
        check(f"{meta['idle_clients']:,} idle TLS clients through pgssl on {meta['backends']} backends, ≤ 8 KiB RSS each",
              v <= 8, f"pgssl {f(v,2)} KiB, PgBouncer {f(agg('idle','pgbouncer','rss_per_client_kib'),2)} KiB")
    a_, b_ = agg("extended", "pgssl", "tps"), agg("extended", "pgbouncer", "tps")
    if a_ and b_:
        check(f"-M extended -c {meta['clients']}: pgssl tps ≥ 1.2× PgBouncer's", a_ / b_ >= 1.2,
              f"{a_:,.0f} / {b_:,.0f} = {a_ / b_:.2f}×")
        p, q = agg("extended", "pgssl", "p99_ms"), agg("extended", "pgbouncer", "p99_ms")
        if p is not None and q is not None:
            check("-M extended p99 latency no worse than PgBouncer's", p <= q, f"pgssl {p:.2f} ms, PgBouncer {q:.2f} ms")
        s, u = agg("extended", "pgssl", "server_us_per_txn"), agg("extended", "pgbouncer", "server_us_per_txn")
        l1, l2 = agg("extended", "pgssl", "listener_us_per_txn"), agg("extended", "pgbouncer", "listener_us_per_txn")
        out.append(f"- -M extended server CPU per transaction (listener + PostgreSQL): pgssl {f(s)} µs ({f(l1)} µs its own), "
                   f"PgBouncer {f(u)} µs ({f(l2)} µs its own)")
    a_, d_ = agg("prepared", "pgssl", "tps"), agg("prepared", "direct", "tps")
    if a_ and d_:
        out.append(f"- -M prepared (against direct PostgreSQL; PgBouncer 1.18 cannot): pgssl {a_:,.0f} tps, "
                   f"direct {d_:,.0f} tps = {a_ / d_:.2f}×; p99 {f(agg('prepared','pgssl','p99_ms'),2)} ms vs {f(agg('prepared','direct','p99_ms'),2)} ms")
    a_, b_ = agg("connect", "pgssl", "tps"), agg("connect", "pgbouncer", "tps")
    if a_ and b_:
        check(f"-C -c {meta['conn_clients']}: pgssl connect rate ≥ PgBouncer's", a_ >= b_,
              f"{a_:,.0f} / {b_:,.0f} conn/s = {a_ / b_:.2f}×; server CPU per connection pgssl "
              f"{f(agg('connect','pgssl','server_us_per_txn'))} µs, PgBouncer {f(agg('connect','pgbouncer','server_us_per_txn'))} µs")
    noisy = [r for r in rows if (r.get("foreign_cores") or 0) > 0.25]
    if noisy:
        out += ["", f"Noisy: {len(noisy)} measurement(s) ran while other processes used > 0.25 cores "
                "(see foreign cores); rerun on a quiet machine before quoting them."]
    print("\n".join(out))

if __name__ == "__main__":
    cmd = sys.argv[1]
    args = dict(x.split("=", 1) for x in sys.argv[2:])
    {"record": cmd_record, "idle": cmd_idle, "summary": cmd_summary,
     "instructions": cmd_instructions}[cmd](args)
PY

CLK=$(getconf CLK_TCK) NPROC=$(nproc)
RESULTS=$RUN/results.jsonl; : >"$RESULTS"
ticks() { python3 "$TOOLS" ticks --pm "$pm_pid" --listener "${1:-0}"; }
descendant_named() { # pid name: the first descendant of pid called name
  local p c
  for p in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    [[ $(cat /proc/"$p"/comm 2>/dev/null) == "$2" ]] && { echo "$p"; return 0; }
    c=$(descendant_named "$p" "$2") && { echo "$c"; return 0; }
  done
  return 1
}
sockets_of() { find /proc/"$1"/fd -lname 'socket:*' 2>/dev/null | wc -l; }

# pgbench against one target; one JSON line into results.jsonl
run_pgbench() { # test target rep
  local test=$1 t=$2 rep=$3 raw="$RUN/raw/$1__$2__r$3" lp=${LPID[$2]} t0 t1 t2 w0 w1 w2 wpid pb i want
  local -a a=(-n -h $HOST -p "${PORT[$t]}" -U $USER_) extra=()
  local clients=$CLIENTS duration=$DURATION logprefix=""
  case $test in
    extended|prepared) a+=(-S -M "$test" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" --log --log-prefix="$raw.log") ; logprefix=$raw.log ;;
    connect) a+=(-C -b select-only -c "$CONN_CLIENTS" -j "$THREADS" -T "$CONN_DURATION"); clients=$CONN_CLIENTS duration=$CONN_DURATION ;;
    warmup) a+=(-S -M extended -c "$BACKENDS" -j "$THREADS" -T "$WARMUP"); clients=$BACKENDS duration=$WARMUP ;;
    *) die "unknown test $test" ;;
  esac
  rm -f "$raw".log.*
  t0=$(ticks "$lp"); w0=$(date +%s%N)
  PGPASSWORD=$PASSWORD PGSSLMODE=require PGCONNECT_TIMEOUT=30 /usr/bin/time -f '%U %S' -o "$raw.time" \
    timeout -k 5 $(( duration + 300 )) pgbench "${a[@]}" $DB >"$raw.txt" 2>&1 &
  wpid=$!; pgbench_pid=$wpid
  t1=$t0 w1=$w0
  if [[ $test == extended || $test == prepared ]]; then
    # the transactions' window opens once pgbench holds all its connections (it logs them all in first)
    pb=""; want=$clients
    for i in $(seq 1 3000); do   # <= 300 s
      kill -0 "$wpid" 2>/dev/null || break
      [[ -n $pb ]] || pb=$(descendant_named "$wpid" pgbench) || pb=""
      if [[ -n $pb ]] && (( $(sockets_of "$pb") >= want )); then
        w1=$(date +%s%N); t1=$(ticks "$lp"); w1=$(( (w1 + $(date +%s%N)) / 2 )); break
      fi
      sleep 0.1
    done
    [[ $w1 != "$w0" ]] || log "WARN: $t $test: pgbench never held $want connections; CPU window is the whole run"
  fi
  wait "$wpid" || log "WARN: pgbench exit $? for $t $test r$rep (see $raw.txt)"
  pgbench_pid=""
  t2=$(ticks "$lp"); w2=$(date +%s%N)
  [[ $test == warmup ]] && { log "warmup $t: $(grep -m1 '^tps' "$raw.txt" || echo FAILED)"; return 0; }
  python3 "$PY" record test="$test" target="$t" rep="$rep" out="$raw.txt" logprefix="$logprefix" time="$raw.time" \
    t0="$t0" t1="$t1" t2="$t2" w0="$w0" w1="$w1" w2="$w2" clk="$CLK" nproc="$NPROC" clients="$clients" \
    threads="$THREADS" duration="$duration" command="pgbench ${a[*]} $DB" >>"$RESULTS"
  [[ $KEEP_LOGS == 1 ]] || rm -f "$raw".log.*
  log "$(printf '%-9s %-9s r%s ' "$test" "$t" "$rep")$(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(f"{k}={r.get(k)}" for k in ("tps","failed","p99_ms","listener_us_per_txn","postgres_us_per_txn","foreign_cores")))')"
}

measure_idle() { # target rep
  local t=$1 rep=$2 lp=${LPID[$1]} status="$RUN/raw/idle__$1__r$2.status" lb la lc pb pa sessions i
  lb=$(python3 "$TOOLS" mem "$lp"); pb=$(python3 "$TOOLS" mem --tree "$pm_pid")
  rm -f "$status"
  PGPASSWORD=$PASSWORD python3 "$TOOLS" open-idle --port "${PORT[$t]}" -n "$IDLE_CLIENTS" --user $USER_ --db $DB \
    --hold 3600 --conn-timeout 60 --status-file "$status" >"$RUN/raw/idle__${t}__r$rep.log" 2>&1 &
  opener_pid=$!
  for i in $(seq 1 $(( 600 + IDLE_CLIENTS / 5 ))); do   # 60 s + 20 ms per client at most
    [[ -s $status ]] && break
    kill -0 "$opener_pid" 2>/dev/null || break
    sleep 0.1
  done
  [[ -s $status ]] || { stop_pid "$opener_pid"; opener_pid=""; log "WARN: idle $t: the opener gave no status"; return 0; }
  sleep "$SETTLE"
  la=$(python3 "$TOOLS" mem "$lp"); pa=$(python3 "$TOOLS" mem --tree "$pm_pid")
  sessions=$(ss -tnpH state established "dport = :$PG_PORT" | grep -c "pid=$lp," || true)
  stop_pid "$opener_pid"; wait "$opener_pid" 2>/dev/null || true; opener_pid=""
  for i in $(seq 1 600); do   # <= 60 s for the listener to see its clients go
    (( $(ss -tnH state established "sport = :${PORT[$t]}" | wc -l) <= 5 )) && break
    sleep 0.1
  done
  sleep "$SETTLE"
  lc=$(python3 "$TOOLS" mem "$lp")
  python3 "$PY" idle target="$t" rep="$rep" n="$IDLE_CLIENTS" status="$status" before="$lb" after="$la" closed="$lc" \
    pg_before="$pb" pg_after="$pa" sessions="$sessions" >>"$RESULTS"
  log "idle      $(printf '%-9s' "$t") r$rep $(tail -1 "$RESULTS" | python3 -c 'import json,sys; r=json.load(sys.stdin); print(" ".join(f"{k}={r.get(k)}" for k in ("ok","failed","open_s","rss_per_client_kib","pss_per_client_kib","listener_connections_to_postgres")))')"
}

# the listener's instructions (callgrind's Ir, all threads) over one pgbench run
ctl() { # target action: callgrind_control as the listener's user (vgdb ptraces a listener blocked in a syscall)
  local -a as=()
  [[ $1 == pgbouncer ]] && as=(runuser -u postgres --)
  "${as[@]}" env LOGNAME=vg USER=vg HOST=vg timeout 60 callgrind_control --vgdb-prefix="$tmp/callgrind.$1" "$2" "${LPID[$1]}" >/dev/null
}
ir_window() { # target out pgbench-args...
  local t=$1 out=$2 dump; shift 2
  ctl "$t" -z || die "callgrind_control -z $t failed"
  PGPASSWORD=$PASSWORD PGSSLMODE=require PGCONNECT_TIMEOUT=60 timeout -k 5 900 pgbench "$@" $DB >"$out.txt" 2>&1 \
    || die "pgbench against $t failed (see $out.txt)"
  ctl "$t" -d || die "callgrind_control -d $t failed"
  dump=$(ls -t "$tmp/callgrind.$t".[0-9]* 2>/dev/null | head -1)
  [[ -n $dump ]] || die "no callgrind dump for $t"
  cp "$dump" "$out.callgrind"   # callgrind_annotate reads where the instructions went
  awk '/^(summary|totals):/{print $2; exit}' "$dump" >"$out.ir"
  [[ -s $out.ir ]] || die "no instruction count in $dump"
}
measure_instructions() { # target
  local t=$1 raw="$RUN/raw/instructions__$1"
  local -a a=(-n -h $HOST -p "${PORT[$1]}" -U $USER_ -S -M extended -c "$IR_CLIENTS" -j 1)
  ir_window "$t" "$raw.txns" "${a[@]}" -t "$IR_TXNS"
  ir_window "$t" "$raw.logins" "${a[@]}" -C -t "$IR_LOGINS"
  python3 "$PY" instructions target="$t" txns="$raw.txns" logins="$raw.logins" clients="$IR_CLIENTS" \
    command="pgbench ${a[*]} -t $IR_TXNS (and -C -t $IR_LOGINS) $DB" >>"$RESULTS"
  log "instructions $t: $(tail -1 "$RESULTS")"
}

targets_for() { # test -> targets in this script's base order
  case $1 in
    idle) echo "pgssl pgbouncer" ;;
    prepared) echo "pgssl direct" ;;
    instructions) echo "pgssl pgbouncer" ;;
    *) if [[ $DIRECT_REFERENCE == 1 ]]; then echo "pgssl pgbouncer direct"; else echo "pgssl pgbouncer"; fi ;;
  esac
}
rotated() { # offset target... -> the targets rotated by offset
  local k=$1; shift; local -a t=("$@"); local n=${#t[@]} i
  for i in $(seq 0 $(( n - 1 ))); do printf '%s ' "${t[$(( (i + k) % n ))]}"; done
}

# ----------------------------------------------------------------------------- 3. measurements
PG_VER=$("$PGBIN/postgres" --version); PGB_VER=$("$PGBOUNCER_BIN" --version 2>&1 | head -1)
PGSSL_VER=$("$PGSSL_BIN" --version 2>/dev/null | head -1 || echo pgssl)
GIT_REV=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$RUN/meta.json" <<EOF
{"run_id":"$RUN_ID","idle_clients":$IDLE_CLIENTS,"backends":$BACKENDS,"clients":$CLIENTS,"conn_clients":$CONN_CLIENTS,
 "threads":$THREADS,"duration":$DURATION,"conn_duration":$CONN_DURATION,"repeats":$REPEATS,"scram_iterations":$SCRAM_ITERATIONS,"leg":"$REPOSITORY_LEG",
 "machine":"nproc=$NPROC, $(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo), RAM $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)",
 "versions":"$PGSSL_VER ($GIT_REV); $PG_VER; $PGB_VER; $(openssl version); pgbench $(pgbench --version | awk '{print $3}')",
 "shape":"IDLE_CLIENTS=$IDLE_CLIENTS, CLIENTS=$CLIENTS, CONN_CLIENTS=$CONN_CLIENTS, THREADS=$THREADS, DURATION=${DURATION}s, CONN_DURATION=${CONN_DURATION}s, SCRAM $SCRAM_ITERATIONS iterations, pgssl verifier cache ${VERIFIER_CACHE_SECS:-1}s, scale $SCALE, repository leg $REPOSITORY_LEG, client and servers on the same $NPROC cores"}
EOF
[[ $CALLGRIND == 1 ]] || for t in pgssl pgbouncer direct; do run_pgbench warmup "$t" 0; done

ti=0
for rep in $(seq 1 "$REPEATS"); do
  for test in $TESTS; do
    read -r -a base <<<"$(targets_for "$test")"
    for t in $(rotated $(( rep - 1 + ti )) "${base[@]}"); do
      case $test in
        idle) measure_idle "$t" "$rep" ;;
        instructions) measure_instructions "$t" ;;
        *) run_pgbench "$test" "$t" "$rep" ;;
      esac
    done
    ti=$(( ti + 1 ))
  done
done

python3 "$PY" summary results="$RESULTS" meta="$(tr -d '\n' <"$RUN/meta.json")" >"$RUN/summary.md"
{
  echo
  echo "Exact commands:"
  echo '```'
  python3 -c 'import json,sys
seen=set()
for l in open(sys.argv[1]):
    r=json.loads(l); c=r.get("command")
    t=r["target"]
    if c and c not in seen: seen.add(c); print(f"[{t}] PGSSLMODE=require {c}")' "$RESULTS"
  echo "[idle] PGPASSWORD=*** python3 ../shared/bench/anchor_tools.py open-idle --port <target> -n $IDLE_CLIENTS --user $USER_ --db $DB (32 logins in flight; RSS/PSS ${SETTLE}s after the last)"
  echo '```'
  echo "raw: $RUN"
} >>"$RUN/summary.md"
echo
cat "$RUN/summary.md"
