#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 15) on its checked-in corpus, on the stable
# toolchain (no sanitizer: -s none). New inputs go to a scratch folder, so the checkout is not changed;
# to keep them, merge with `cargo fuzz cmin` (see README, Fuzzing). A crash stops the run with its input
# in fuzz/artifacts/<target>/.
#
#   fuzz/run.sh                 # CI: 15 s per target
#   SECONDS_PER_TARGET=600 fuzz/run.sh first_packet
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
per=${SECONDS_PER_TARGET:-15}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(first_packet login_watch auth_message scram_messages admin_request_bodies log_safe session_watch cert_name proxy_header cluster_files control_socket supplied_files patroni_json pool_tracker pool_sql identity_guard)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cargo fuzz build -s none -O >/dev/null
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t"
  out=$(cargo fuzz run -s none -O "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
          -max_total_time="$per" -max_len=12000 2>&1) || { echo "$out" | tail -40; exit 1; }
  echo "fuzz $t: $(echo "$out" | grep -Eo 'Done [0-9]+ runs in [0-9]+ second' | tail -1), no crash"
done
