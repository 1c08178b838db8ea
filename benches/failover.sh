#!/usr/bin/env bash
# Repository failover (issue #29): pgssl and HAProxy in front of the same two-member Patroni cluster,
# under write load through both at once, through the same failovers.
#
#   benches/failover.sh                          # by hand, as root (Patroni runs as `postgres`)
#   CLIENTS=16 DURATION=60 benches/failover.sh
#
# Set-up, all on 127.0.0.1 with free ports: etcd and two Patroni members (Debian's `patroni` and
# `etcd-server`, installed when missing; ttl 20, loop_wait 2, primary_start_timeout 0, as
# tests/it/patroni), each PostgreSQL with ssl=on. In front of it, three listeners, each fed by its own
# `pgssl-bench --mode reconnect` with CLIENTS persistent TLS sessions writing one row per transaction
# (a client whose connection fails opens another after 100 ms, as an application's retry would):
#   pgssl          pgssl serve in passthrough mode: repository.address both members,
#                  repository.patroni both REST APIs, probe_interval 1 s (the defaults otherwise)
#   haproxy        Patroni's own HAProxy recipe: option httpchk OPTIONS /primary,
#                  default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
#   haproxy-fast   the same recipe tuned as far as it goes: inter 1s fastinter 250ms fall 1 rise 1
# (HAProxy relays TLS to PostgreSQL end to end; pgssl terminates it and relays in plaintext.)
#
# Events, each in its own load run of DURATION seconds, EVENT_AT seconds in:
#   kill-9      kill -9 of the leader's postmaster; Patroni promotes the replica
#   switchover  POST /switchover to Patroni's REST API, back to the first leader
# The promotion is the moment `pg_is_in_recovery()` turns false on the new leader (polled every
# 20 ms over its Unix socket). Reported per listener: transactions acknowledged, failed transactions
# (on an established session), failed logins, errors by SQLSTATE (25006: a write refused by a host in
# recovery — a write routed to the wrong host), the longest spell without any acknowledged write, and
# from the promotion to the first acknowledged write.
#
# Then two steady-state figures through pgssl: `pgbench -S` as `readonly` (repository.targets:
# prefer-standby) and where its transactions ran (pg_stat_database on each member), and pgssl's own
# CPU over PROBE_SECONDS with no clients (the probes' cost).
#
# Knobs: CLIENTS=8 DURATION=30 EVENT_AT=5 PROBE_SECONDS=30 OUT=/tmp/pgssl-failover KEEP_TMP=0
# PGSSL_BIN / PGSSL_BENCH_BIN: binaries to use (default: a release build of this checkout).
set -Eeuo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-8}
DURATION=${DURATION:-30}
EVENT_AT=${EVENT_AT:-5}
PROBE_SECONDS=${PROBE_SECONDS:-30}
OUT=${OUT:-/tmp/pgssl-failover}
KEEP_TMP=${KEEP_TMP:-0}

die() { echo "failover.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: Patroni and PostgreSQL run as the postgres user"
id postgres >/dev/null 2>&1 || die "no postgres user (apt-get install postgresql)"
missing=()
command -v patroni >/dev/null || missing+=(patroni)
command -v etcd >/dev/null || missing+=(etcd-server)
command -v haproxy >/dev/null || missing+=(haproxy)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
bindir=$(pg_config --bindir 2>/dev/null || true)
[ -x "$bindir/initdb" ] || bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$bindir/initdb" ] || die "no PostgreSQL server binaries (apt-get install postgresql)"
if [ -z "${PGSSL_BIN:-}" ] || [ -z "${PGSSL_BENCH_BIN:-}" ]; then
  (cd "$repo" && cargo build --release --locked -q --bin pgssl --bin pgssl-bench)
fi
PGSSL_BIN=${PGSSL_BIN:-$repo/target/release/pgssl}
PGSSL_BENCH_BIN=${PGSSL_BENCH_BIN:-$repo/target/release/pgssl-bench}

tmp=$(mktemp -d /tmp/pgssl-failover.XXXXXX)
chmod 755 "$tmp"
mkdir -p "$OUT"
pids=()
cleanup() {
  set +e
  # Patroni first, so that it restarts nothing; then every postmaster; then the rest.
  for p in "${patroni_pids[@]:-}"; do [ -n "$p" ] && kill -9 "$p" 2>/dev/null; done
  for d in "$tmp"/node*/data; do
    [ -f "$d/postmaster.pid" ] && kill -9 "$(head -1 "$d/postmaster.pid")" 2>/dev/null
  done
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  [ "$KEEP_TMP" = 1 ] && echo "kept $tmp" >&2 || rm -rf "$tmp"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { date +%s%3N; }
secret() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }
wait_until() { # seconds, description, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what"
    sleep 0.1
  done
}

superuser=$(secret) replicator=$(secret) rewinder=$(secret) bench_password=$(secret)
etcd_port=$(port) etcd_peer=$(port)
etcd --name=bench --data-dir="$tmp/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="bench=http://127.0.0.1:$etcd_peer" --initial-cluster-state=new \
  --initial-cluster-token="pgssl-failover-$$" >"$tmp/etcd.log" 2>&1 &
pids+=($!)
wait_until 30 "etcd" curl -sf "http://127.0.0.1:$etcd_port/health"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -keyout "$tmp/pg.key" -out "$tmp/pg.crt" 2>/dev/null
pg_port=() rest_port=() patroni_pids=()
for i in 0 1; do
  pg_port[i]=$(port) rest_port[i]=$(port)
  mkdir -p "$tmp/node$i"
  cat >"$tmp/node$i/patroni.yml" <<YAML
scope: pgssl-failover-$$
namespace: /pgssl-failover/
name: node$i
restapi: {listen: '127.0.0.1:${rest_port[i]}', connect_address: '127.0.0.1:${rest_port[i]}'}
etcd3: {host: '127.0.0.1:$etcd_port'}
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 2
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    primary_start_timeout: 0
    postgresql: {use_pg_rewind: true, use_slots: true}
  initdb: [{encoding: UTF8}, data-checksums]
postgresql:
  listen: '127.0.0.1:${pg_port[i]}'
  connect_address: '127.0.0.1:${pg_port[i]}'
  data_dir: '$tmp/node$i/data'
  bin_dir: '$bindir'
  pgpass: '$tmp/node$i/pgpass'
  authentication:
    superuser: {username: postgres, password: '$superuser'}
    replication: {username: replicator, password: '$replicator'}
    rewind: {username: rewind_user, password: '$rewinder'}
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
  parameters: {unix_socket_directories: '$tmp/node$i', max_connections: 100, ssl: 'on',
               ssl_cert_file: '$tmp/pg.crt', ssl_key_file: '$tmp/pg.key'}
watchdog: {mode: 'off'}
YAML
  chmod 600 "$tmp/node$i/patroni.yml"
done
chown -R postgres:postgres "$tmp"
chmod 600 "$tmp/pg.key"
for i in 0 1; do
  setpriv --reuid=postgres --regid=postgres --init-groups patroni "$tmp/node$i/patroni.yml" \
    >"$tmp/node$i/patroni.log" 2>&1 &
  patroni_pids+=($!)
done

is_primary() { curl -sf -o /dev/null "http://127.0.0.1:${rest_port[$1]}/primary"; }
is_replica() { curl -sf -o /dev/null "http://127.0.0.1:${rest_port[$1]}/replica"; }
leader() { for i in 0 1; do is_primary "$i" && { echo "$i"; return 0; }; done; return 1; }
settled() { leader >/dev/null && { is_replica 0 || is_replica 1; }; }
wait_until 180 "a Patroni leader and a streaming replica" settled
L=$(leader)
R=$((1 - L))
psql_on() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$tmp/node$1" -p "${pg_port[$1]}" -U postgres -d postgres "${@:2}"; }
psql_on "$L" <<SQL
CREATE ROLE bench LOGIN PASSWORD '$bench_password';
CREATE ROLE readonly LOGIN PASSWORD '$bench_password';
CREATE ROLE pgssl_probe LOGIN PASSWORD '$bench_password' IN ROLE pg_monitor;
CREATE TABLE failover_bench (id bigserial PRIMARY KEY, via text NOT NULL, at timestamptz DEFAULT clock_timestamp());
GRANT INSERT ON failover_bench TO bench;
GRANT USAGE ON SEQUENCE failover_bench_id_seq TO bench;
SQL
PGPASSWORD=$superuser "$bindir/pgbench" -q -i -s 1 -h 127.0.0.1 -p "${pg_port[$L]}" -U postgres postgres >/dev/null 2>&1
psql_on "$L" -c "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history TO readonly"

# pgssl: passthrough (PostgreSQL authenticates), TLS to clients.
pgssl_port=$(port)
cat >"$tmp/pgssl.toml" <<TOML
[auth]
mode = "passthrough"
[repository]
address = ["127.0.0.1:${pg_port[0]}", "127.0.0.1:${pg_port[1]}"]
patroni = ["http://127.0.0.1:${rest_port[0]}", "http://127.0.0.1:${rest_port[1]}"]
probe_user = "pgssl_probe"
targets = { readonly = "prefer-standby" }
TOML
pgssl() { "$PGSSL_BIN" --data-dir "$tmp/pgssl" --config "$tmp/pgssl.toml" "$@"; }
export PGSSL_UPSTREAM_PASSWORD=$bench_password PGSSL_LOG=${PGSSL_LOG:-info}
pgssl security repository-ssl enable >/dev/null
pgssl pending-changes apply --ignore-prompt >/dev/null
pgssl serve --no-admin --listen "127.0.0.1:$pgssl_port" >"$tmp/pgssl.log" 2>&1 &
pgssl_pid=$!
pids+=("$pgssl_pid")

hap_port=$(port) hap_fast_port=$(port)
cat >"$tmp/haproxy.cfg" <<CFG
global
    maxconn 1000
defaults
    mode tcp
    retries 2
    timeout client 30m
    timeout connect 4s
    timeout server 30m
    timeout check 5s
listen haproxy
    bind 127.0.0.1:$hap_port
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions
    server node0 127.0.0.1:${pg_port[0]} maxconn 100 check port ${rest_port[0]}
    server node1 127.0.0.1:${pg_port[1]} maxconn 100 check port ${rest_port[1]}
listen haproxy-fast
    bind 127.0.0.1:$hap_fast_port
    option httpchk OPTIONS /primary
    http-check expect status 200
    default-server inter 1s fastinter 250ms downinter 250ms fall 1 rise 1 on-marked-down shutdown-sessions
    server node0 127.0.0.1:${pg_port[0]} maxconn 100 check port ${rest_port[0]}
    server node1 127.0.0.1:${pg_port[1]} maxconn 100 check port ${rest_port[1]}
CFG
haproxy -db -f "$tmp/haproxy.cfg" >"$tmp/haproxy.log" 2>&1 &
pids+=($!)

writes() { # port: one acknowledged write through it
  PGPASSWORD=$bench_password psql -X -q -At "host=127.0.0.1 port=$1 user=bench dbname=postgres sslmode=require" \
    -c "INSERT INTO failover_bench(via) VALUES ('check')"
}
for p in "$pgssl_port" "$hap_port" "$hap_fast_port"; do wait_until 60 "writes through port $p" writes "$p"; done

declare -A listener=([pgssl]=$pgssl_port [haproxy]=$hap_port [haproxy-fast]=$hap_fast_port)
names=(pgssl haproxy haproxy-fast)

# One load run per listener, all at once, with `event` (a function) EVENT_AT seconds in.
run_event() { # name, function to call
  local name=$1 action=$2 loads=() n
  for n in "${names[@]}"; do
    PGPASSWORD=$bench_password "$PGSSL_BENCH_BIN" run --mode reconnect --target "127.0.0.1:${listener[$n]}" \
      --user bench --database postgres --clients "$CLIENTS" --warmup 1 --duration "$DURATION" \
      --sql "INSERT INTO failover_bench(via) VALUES ('$n')" --json "$OUT/$name-$n.json" \
      >"$OUT/$name-$n.txt" 2>"$OUT/$name-$n.progress" &
    loads+=($!)
  done
  sleep $((1 + EVENT_AT))
  "$action" >"$OUT/$name-event.json"
  for n in "${loads[@]}"; do wait "$n" || die "a load run of $name failed (see $OUT/$name-*.progress)"; done
}
promoted_at() { # host index: waits until it is out of recovery, prints the Unix ms it was first seen so
  local deadline=$((SECONDS + 120))
  until [ "$(psql_on "$1" -c 'SELECT pg_is_in_recovery()' 2>/dev/null)" = f ]; do
    [ $SECONDS -lt $deadline ] || die "node$1 was not promoted within 120 s"
    sleep 0.02
  done
  now_ms
}
kill_leader() {
  local old=$L new=$R event_ms promoted_ms
  event_ms=$(now_ms)
  kill -9 "$(head -1 "$tmp/node$old/data/postmaster.pid")"
  promoted_ms=$(promoted_at "$new")
  printf '{"event":"kill -9 of the leader'"'"'s postmaster","event_unix_ms":%s,"promoted_unix_ms":%s}\n' "$event_ms" "$promoted_ms"
  L=$new R=$old
}
switch_back() {
  local old=$L new=$R event_ms promoted_ms
  event_ms=$(now_ms)
  curl -sf -XPOST -d "{\"leader\":\"node$old\",\"candidate\":\"node$new\"}" \
    "http://127.0.0.1:${rest_port[$old]}/switchover" >/dev/null
  promoted_ms=$(promoted_at "$new")
  printf '{"event":"Patroni switchover (POST /switchover)","event_unix_ms":%s,"promoted_unix_ms":%s}\n' "$event_ms" "$promoted_ms"
  L=$new R=$old
}

echo "failover 1: kill -9 of node$L's postmaster, $CLIENTS writers per listener" >&2
run_event kill-9 kill_leader
# The old leader comes back as a replica of the new one (pg_rewind) before the switchover.
wait_until 180 "node$R to stream from node$L again" is_replica "$R"
wait_until 60 "writes through pgssl" writes "$pgssl_port"
echo "failover 2: switchover to node$R" >&2
run_event switchover switch_back
wait_until 180 "node$R to stream again" is_replica "$R"

# Read routing: pgbench -S as readonly through pgssl, counted where it ran.
committed() { psql_on "$1" -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'postgres'"; }
wait_until 60 "readonly logins through pgssl" env PGPASSWORD="$bench_password" psql -X -q -At \
  "host=127.0.0.1 port=$pgssl_port user=readonly dbname=postgres sslmode=require" -c 'SELECT 1'
before_l=$(committed "$L") before_r=$(committed "$R")
PGPASSWORD=$bench_password PGSSLMODE=require "$bindir/pgbench" -n -S -c "$CLIENTS" -j 2 -T 10 \
  -h 127.0.0.1 -p "$pgssl_port" -U readonly postgres >"$OUT/readonly-pgbench.txt" 2>&1
sleep 0.7 # pg_stat_database is flushed by each backend at most every 500 ms after its transactions
after_l=$(committed "$L") after_r=$(committed "$R")

# The probes' cost: pgssl's CPU with no clients at all.
ticks() { awk '{print $14 + $15}' "/proc/$pgssl_pid/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
sleep "$PROBE_SECONDS"
t1=$(ticks)

python3 - "$OUT" "$CLIENTS" "$DURATION" "$((after_l - before_l))" "$((after_r - before_r))" \
  "$(grep -o 'tps = [0-9.]*' "$OUT/readonly-pgbench.txt" | head -1)" "$((t1 - t0))" "$hz" "$PROBE_SECONDS" <<'PY' | tee "$OUT/results.md"
import json, sys
out, clients, duration, on_primary, on_standby, tps, ticks, hz, probe_s = sys.argv[1:]
names = ["pgssl", "haproxy", "haproxy-fast"]
print(f"{clients} writers per listener, {duration} s per event, all three listeners at once\n")
for event in ["kill-9", "switchover"]:
    ev = json.load(open(f"{out}/{event}-event.json"))
    kill, promoted = ev["event_unix_ms"], ev["promoted_unix_ms"]
    print(f"#### {ev['event']}: promotion visible {(promoted - kill) / 1000:.2f} s after the event\n")
    print("| listener | writes acknowledged | failed transactions | failed logins | errors by SQLSTATE | "
          "longest spell without a write | promotion → first write |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for n in names:
        r = json.load(open(f"{out}/{event}-{n}.json"))
        gaps = [g for g in r["gaps_unix_ms"] if g[1] >= kill]
        longest = max((b - a for a, b in gaps), default=0)
        spanning = [b for a, b in gaps if a <= promoted <= b]
        first = f"{(spanning[0] - promoted) / 1000:.2f} s" if spanning else "< 0.25 s"
        codes = ", ".join(f"{c}: {k}" for c, k in sorted(r["errors_by_code"].items())) or "none"
        print(f"| {n} | {r['ok']} | {r['failed_transactions']} | {r['failed_logins']} | {codes} | "
              f"{longest / 1000:.2f} s | {first} |")
    print()
on_primary, on_standby = int(on_primary), int(on_standby)
share = on_standby / max(1, on_primary + on_standby)
print(f"readonly `pgbench -S -c {clients}` through pgssl ({tps}): {on_standby} transactions on the standby, "
      f"{on_primary} on the primary ({share:.0%} on the standby)\n")
cpu = int(ticks) / int(hz) / int(probe_s)
print(f"pgssl's CPU with no clients over {probe_s} s (two hosts probed every second, Patroni asked too): "
      f"{cpu:.3%} of one core ({ticks} clock ticks of 1/{hz} s)")
PY
