#!/usr/bin/env bash
# Start or stop a local Azurite (Azure Blob emulator) for the lake tests.
#
#   scripts/azurite.sh start   # installs azurite@3 into .tools/ if absent, starts it on
#                              # 127.0.0.1:<free port>, prints the connection string on stdout
#   scripts/azurite.sh stop    # stops the instance started from the same state directory
#   scripts/azurite.sh status  # prints the connection string if it is running, else exits 1
#
# Environment: AZURITE_STATE_DIR (default .tools/azurite-run) keeps pid, port and log, so
# several test sessions can run their own instance; AZURITE_PORT picks a port instead of a
# free one; AZURITE_MEMORY_MB caps the in-memory blob data (default 2048). Data lives in
# memory only (--inMemoryPersistence): stopping it forgets everything.
# The account is Azurite's documented development account, not a secret.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools/azurite"
BIN="$TOOLS/node_modules/.bin/azurite-blob"
STATE="${AZURITE_STATE_DIR:-$ROOT/.tools/azurite-run}"
ACCOUNT=devstoreaccount1
KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

conn_string() {
  echo "DefaultEndpointsProtocol=http;AccountName=$ACCOUNT;AccountKey=$KEY;BlobEndpoint=http://127.0.0.1:$1/$ACCOUNT;"
}

running() {
  [[ -f "$STATE/pid" ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null
}

install() {
  if [[ -x "$BIN" ]]; then return; fi
  command -v npm >/dev/null || { echo "Error: npm not found; install Node.js 18+ (apt-get install nodejs npm)" >&2; exit 1; }
  echo "installing azurite@3 into $TOOLS (once) ..." >&2
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error azurite@3 >&2
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close();});'
}

start() {
  if running; then conn_string "$(cat "$STATE/port")"; return; fi
  install
  mkdir -p "$STATE"
  local port="${AZURITE_PORT:-$(free_port)}"
  # --skipApiVersionCheck: the Python SDK may speak a newer API version than this Azurite.
  # --disableTelemetry: this machine talks to nothing but 127.0.0.1.
  # Run from the state directory so that nothing Azurite writes lands in the work tree.
  (cd "$STATE" && exec "$BIN" --blobHost 127.0.0.1 --blobPort "$port" --skipApiVersionCheck \
    --inMemoryPersistence --extentMemoryLimit "${AZURITE_MEMORY_MB:-2048}" --disableTelemetry --loose >"$STATE/azurite.log" 2>&1) &
  echo $! >"$STATE/pid"
  echo "$port" >"$STATE/port"
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      conn_string "$port"
      return
    fi
    if ! running; then break; fi
    sleep 0.2
  done
  echo "Error: Azurite did not start on 127.0.0.1:$port; its log ($STATE/azurite.log) says:" >&2
  tail -n 20 "$STATE/azurite.log" >&2 || true
  stop >/dev/null 2>&1 || true
  exit 1
}

stop() {
  if running; then
    local pid; pid="$(cat "$STATE/pid")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$STATE/pid" "$STATE/port"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running && conn_string "$(cat "$STATE/port")" || { echo "not running" >&2; exit 1; } ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
