#!/bin/sh
# pgssl's container entry point: `serve` (the default) or any pgssl command.
#
# With PGSSL_CLUSTER the container takes part in a cluster through a folder shared by the nodes
# (PGSSL_SHARED_DIR, default /shared) and PGSSL_BOOTSTRAP_PASSPHRASE:
#   first  serves, applies `repository-ssl enable` once when PGSSL_REPOSITORY_SSL=enable, makes the
#          cluster and writes bootstrap.toml and server.crt (the certificate clients verify) there;
#   join   waits for bootstrap.toml, joins once (a data directory already joined skips it), serves.
set -eu

if [ "${1:-serve}" != serve ]; then
  exec pgssl "$@"
fi
shift || true

shared=${PGSSL_SHARED_DIR:-/shared}
name=${PGSSL_NODE_NAME:-$(hostname)}
member="$PGSSL_DATA_DIR/config/cluster.toml"
port=${PGSSL_LISTEN##*:}

passphrase() {
  if [ -z "${PGSSL_BOOTSTRAP_PASSPHRASE:-}" ]; then
    echo "pgssl-entrypoint: PGSSL_CLUSTER needs PGSSL_BOOTSTRAP_PASSPHRASE" >&2
    exit 1
  fi
  printf '%s\n' "$PGSSL_BOOTSTRAP_PASSPHRASE"
}

case "${PGSSL_CLUSTER:-}" in
  "") exec pgssl serve "$@" ;;
  join)
    if [ ! -f "$member" ]; then
      echo "pgssl-entrypoint: waiting for $shared/bootstrap.toml" >&2
      while [ ! -f "$shared/bootstrap.toml" ]; do sleep 1; done
      passphrase | pgssl topology join --bootstrap-file "$shared/bootstrap.toml" --node-name "$name"
    fi
    exec pgssl serve "$@"
    ;;
  first)
    # PGSSL_UPSTREAM is the old name of PGSSL_REPOSITORY: a container still configured with it
    # keeps working (serve reads it too, and warns likewise).
    repo=${PGSSL_REPOSITORY:-${PGSSL_UPSTREAM:-}}
    if [ -z "${PGSSL_REPOSITORY:-}" ] && [ -n "${PGSSL_UPSTREAM:-}" ]; then
      echo "pgssl-entrypoint: PGSSL_UPSTREAM is the old name of PGSSL_REPOSITORY; rename it: the old name will stop working" >&2
    fi
    # Making the cluster needs the repository: wait for it (its first start runs initdb). A
    # managed repository (no address) is started by serve itself: nothing to wait for.
    if [ -n "$repo" ]; then
      until pg_isready -q -h "${repo%:*}" -p "${repo##*:}"; do sleep 1; done
    fi
    pgssl serve "$@" &
    pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null' TERM INT
    until pg_isready -q -h 127.0.0.1 -p "$port" -U pgssl-healthcheck; do
      kill -0 "$pid" 2>/dev/null || { wait "$pid"; exit $?; }
      sleep 1
    done
    if [ ! -f "$member" ]; then
      if [ "${PGSSL_REPOSITORY_SSL:-}" = enable ]; then
        # Again after a restart half-way: staging nothing new leaves nothing to apply.
        pgssl security repository-ssl enable
        pgssl pending-changes apply || true
      fi
      passphrase | pgssl topology get-bootstrap-file -f "$shared/bootstrap.toml" --node-name "$name"
    fi
    pgssl security repository-ssl get-certificate-file -f "$shared/server.crt" || true
    wait "$pid"
    ;;
  *)
    echo "pgssl-entrypoint: PGSSL_CLUSTER must be first or join, not '$PGSSL_CLUSTER'" >&2
    exit 1
    ;;
esac
