#!/usr/bin/env bash
# Start or stop a local `mlflow server` (one worker) for the registry tests.
#
#   scripts/mlflow_server.sh start   # starts it on 127.0.0.1:<free port> with a sqlite backend and
#                                    # proxied artifacts in the state dir; prints http://127.0.0.1:PORT
#   scripts/mlflow_server.sh stop    # stops it and deletes its state dir
#   scripts/mlflow_server.sh status  # prints the URL if it is running, else exits 1
#
# Environment: MLFLOW_SERVER_DIR (default .tools/mlflow-run) keeps the database, artifacts, pid,
# port and log; MLFLOW_SERVER_PORT picks a port; MLFLOW_BACKEND_STORE_URI serves an existing store
# instead (e.g. sqlite:////abs/path/mlflow.db; `stop` leaves it alone). Uses the project's .venv
# (PYTHON overrides). Start-up takes ~15 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${MLFLOW_SERVER_DIR:-$ROOT/.tools/mlflow-run}"
PY="${PYTHON:-$ROOT/.venv/bin/python}"

running() { [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }
url() { echo "http://127.0.0.1:$1"; }

start() {
  if running; then url "$(cat "$STATE/port")"; return; fi
  mkdir -p "$STATE/artifacts"
  local port="${MLFLOW_SERVER_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')}"
  # setsid: the server and its worker form one process group that stop() can end together.
  (cd "$STATE" && exec setsid "$PY" -m mlflow server --host 127.0.0.1 --port "$port" --workers 1 \
     --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///$STATE/mlflow.db}" --artifacts-destination "$STATE/artifacts" \
     >"$STATE/server.log" 2>&1) &
  echo $! >"$STATE/pid"
  echo "$port" >"$STATE/port"
  for _ in $(seq 1 300); do
    if "$PY" - "$port" <<'PYEOF' 2>/dev/null; then url "$port"; return; fi
import sys, urllib.request
urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=1).read()
PYEOF
    if ! running; then break; fi
    sleep 0.3
  done
  echo "Error: mlflow server did not start on 127.0.0.1:$port; its log ($STATE/server.log) says:" >&2
  tail -n 20 "$STATE/server.log" >&2 || true
  stop >/dev/null 2>&1 || true
  exit 1
}

stop() {
  if running; then
    local pid; pid="$(cat "$STATE/pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -rf "$STATE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then url "$(cat "$STATE/port")"; else exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
