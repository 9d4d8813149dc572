#!/usr/bin/env bash
# Start or stop a throwaway PostgreSQL for the distributed-sweep tests (Optuna RDB storage).
#
#   scripts/postgres.sh start   # installs Debian's postgresql with apt-get if absent, initialises a
#                               # cluster in a temp dir, starts it on 127.0.0.1:<free port> as the
#                               # postgres user, creates database "optuna", prints its URL on stdout:
#                               # postgresql+psycopg://postgres@127.0.0.1:PORT/optuna
#   scripts/postgres.sh stop    # stops the cluster started from the same state dir and deletes it
#   scripts/postgres.sh status  # prints the URL if it is running, else exits 1
#
# Environment: PG_STATE_DIR (default .tools/postgres-run) keeps the port and the path of the
# cluster, so several test sessions can each run their own; PG_PORT picks a port instead of a free
# one. The cluster itself lives in a fresh temp dir (mktemp) owned by the postgres user, because
# the server may not run as root and cannot enter root-only directories such as pytest's tmp.
# Authentication is "trust" on 127.0.0.1 only: a test database, never a real one.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${PG_STATE_DIR:-$ROOT/.tools/postgres-run}"
DB=optuna

pg_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    if [[ -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  return 1
}

install() {
  if pg_bin >/dev/null; then return; fi
  command -v apt-get >/dev/null || { echo "Error: PostgreSQL is not installed and apt-get is missing; install PostgreSQL 13+ yourself" >&2; exit 1; }
  echo "installing Debian's postgresql (once) ..." >&2
  if [[ "$(id -u)" == 0 ]]; then SUDO=""; else SUDO="sudo"; fi
  # Only the binaries: no cluster is created by the package for us to manage.
  # A fresh machine may have no package lists yet: refresh them once and try again.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends postgresql >&2 || {
    $SUDO apt-get update >&2 &&
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends postgresql >&2; } || {
    echo "Error: apt-get install postgresql failed (after apt-get update); install PostgreSQL 13+ yourself" >&2; exit 1; }
}

# Run a command as the postgres user (initdb and postgres refuse to run as root).
as_pg() {
  if [[ "$(id -u)" == 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

url() { echo "postgresql+psycopg://postgres@127.0.0.1:$1/$DB"; }

running() {
  [[ -f "$STATE/port" && -f "$STATE/cluster" ]] || return 1
  local bin; bin="$(pg_bin)" || return 1
  as_pg "$bin/pg_ctl" -D "$(cat "$STATE/cluster")/data" status >/dev/null 2>&1
}

start() {
  if running; then url "$(cat "$STATE/port")"; return; fi
  install
  local bin; bin="$(pg_bin)"
  if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  stop
  mkdir -p "$STATE"
  local dir; dir="$(mktemp -d "${TMPDIR:-/tmp}/whalebt-pg.XXXXXX")"
  echo "$dir" >"$STATE/cluster"
  if [[ "$(id -u)" == 0 ]]; then chown postgres "$dir"; fi
  local port="${PG_PORT:-$(free_port)}"
  as_pg "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$STATE/initdb.log" 2>&1 || {
    echo "Error: initdb failed; its log ($STATE/initdb.log) says:" >&2; tail -n 20 "$STATE/initdb.log" >&2; exit 1; }
  # Sockets in the cluster dir (not /var/run/postgresql, which may not exist or be writable).
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200 -c fsync=off" start >&2 || {
    echo "Error: PostgreSQL did not start on 127.0.0.1:$port; its log ($dir/postgres.log) says:" >&2
    tail -n 20 "$dir/postgres.log" >&2 || true; exit 1; }
  echo "$port" >"$STATE/port"
  as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB"
  url "$port"
}

stop() {
  local bin dir=""
  [[ -f "$STATE/cluster" ]] && dir="$(cat "$STATE/cluster")"
  if [[ -n "$dir" && -d "$dir/data" ]] && bin="$(pg_bin)"; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  # Only ever delete a cluster this script created.
  if [[ -n "$dir" && "$(basename "$dir")" == whalebt-pg.* ]]; then rm -rf "$dir"; fi
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then url "$(cat "$STATE/port")"; else exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
