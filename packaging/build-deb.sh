#!/usr/bin/env bash
# Builds pgssl's Debian package with cargo-deb (packaging/README.md):
#   1. the release binary (`cargo build --release --locked`), or the binary named by PGSSL_BIN;
#   2. its man pages and bash/zsh/fish completions, from its own clap definition
#      (`pgssl generate-docs`), into <target>/release/pgssl-docs/;
#   3. `cargo deb --no-build`, with the assets, conffile, unit and maintainer scripts that Cargo.toml's
#      [package.metadata.deb] lists.
# Usage: packaging/build-deb.sh [OUT_DIR]      (default target/debian; prints the .deb's path last)
#   PGSSL_BIN=path    package this binary instead of building one (the tests pass their own build)
#   CARGO_DEB_FAST=1  lighter compression: a larger .deb, made faster (the tests use it)
# cargo-deb is installed with `cargo install` (a pinned version) when `cargo deb` is missing.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/target/debian}" && cd "${1:-$repo/target/debian}" && pwd)
CARGO_DEB_VERSION=3.8.0
cd "$repo"

# One install even when several builds start at once (the container and package tests do).
flock "${TMPDIR:-/tmp}/pgssl-cargo-deb-install.lock" bash -c '
  cargo deb --version >/dev/null 2>&1 && exit 0
  echo "==> cargo install cargo-deb '"$CARGO_DEB_VERSION"' (once)" >&2
  cargo install --quiet --locked cargo-deb --version '"$CARGO_DEB_VERSION"' >&2'

if [ -n "${PGSSL_BIN:-}" ]; then
  # cargo-deb reads built files from <CARGO_TARGET_DIR>/release; a private one holding just this
  # binary keeps concurrent runs (and a real release build in target/) apart.
  target=$(mktemp -d)
  trap 'rm -rf "$target"' EXIT
  mkdir "$target/release"
  cp "$PGSSL_BIN" "$target/release/pgssl"
else
  target=${CARGO_TARGET_DIR:-$repo/target}
  echo "==> cargo build --release" >&2
  cargo build --release --locked --bin pgssl >&2
fi

docs="$target/release/pgssl-docs"
rm -rf "$docs"
# --config: the repository's documented defaults, so no PGSSL_CONFIG of the caller's can get in
# the way (the command reads a config like every other).
"$target/release/pgssl" --config "$repo/config/pgssl.toml" generate-docs --out "$docs" >&2
# Debian policy: man pages gzip -9n (no name or time stamp, so builds are reproducible).
gzip -9n "$docs"/man/*.1

fast=()
[ -n "${CARGO_DEB_FAST:-}" ] && fast=(--fast)
CARGO_TARGET_DIR=$target cargo deb --no-build --locked "${fast[@]}" --output "$out" >&2
ls -t "$out"/pgssl_*.deb | head -1
