#!/usr/bin/env bash
# The Debian bookworm base image of the offline tests (run.sh, and tests/it/package.rs), made without
# a registry and kept between runs; prints its name.
#   docker/test/base-image.sh           $BASE_IMAGE (default pgssl-test/debian:bookworm): debootstrap
#                                       --variant=minbase with PostgreSQL, then `docker import`
#   docker/test/base-image.sh systemd   that image plus Debian's systemd package (for
#                                       `systemd-analyze verify`), as $BASE_IMAGE-systemd
# Concurrent callers (the tests run in parallel) wait for one another instead of building it twice.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BASE_IMAGE=${BASE_IMAGE:-pgssl-test/debian:bookworm}
with=${1:-}
case "$with" in
  "") image=$BASE_IMAGE ;;
  systemd) image=$BASE_IMAGE-systemd ;;
  *) echo "usage: $0 [systemd]" >&2; exit 2 ;;
esac

exec 9>"${TMPDIR:-/tmp}/pgssl-test-base-image.lock"
flock 9

step() { echo "==> $* ($(date +%T))" >&2; }

if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "base image $BASE_IMAGE: debootstrap bookworm (minbase + postgresql) and docker import"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  root="$work/rootfs"
  debootstrap --variant=minbase --include=postgresql,postgresql-client,ca-certificates \
    bookworm "$root" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | docker import -c 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
fi

if [ "$with" = systemd ] && ! docker image inspect "$image" >/dev/null 2>&1; then
  step "base image $image: $BASE_IMAGE plus systemd (apt from Debian's mirror)"
  docker build -q -t "$image" --build-arg BASE_IMAGE="$BASE_IMAGE" \
    -f "$here/systemd.Dockerfile" "$here" >/dev/null
fi
echo "$image"
