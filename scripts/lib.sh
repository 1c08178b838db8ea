# Shared by scripts/run and scripts/test (sourced, not run): finding PostgreSQL and installing the
# Debian packages that are missing, as root or through sudo.

# Runs "$@" as root: directly when this is root, through sudo otherwise.
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    return 127
  fi
}

# Whether the PostgreSQL server binaries and psql are here (pg_config first, then Debian's layout).
have_postgres() {
  local d
  command -v psql >/dev/null || return 1
  d=$(pg_config --bindir 2>/dev/null || true)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then return 0; fi
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
}

# Installs the Debian packages named (nothing when none is named), or says what to do when this is
# neither root nor able to use sudo. APT_OPTIONS adds options to apt-get install.
install_debs() {
  [ $# -gt 0 ] || return 0
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: these Debian packages are missing: $*" >&2
    echo "       run this as root, or install sudo, or install them yourself:" >&2
    echo "       apt-get install $*" >&2
    return 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: no apt-get on this machine; install the equivalents of these Debian packages: $*" >&2
    return 1
  fi
  echo "==> installing Debian packages: $*"
  as_root apt-get update -q
  # shellcheck disable=SC2086 # APT_OPTIONS holds whole options, split on purpose.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q ${APT_OPTIONS:-} "$@"
}
