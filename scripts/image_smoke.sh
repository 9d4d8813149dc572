#!/usr/bin/env bash
# Builds the live image (scripts/image.sh) and runs it as its non-root user (uid 10001) against
# `live replay` of real recorded Binance BTCUSDT frames (tests/data/real): /health must answer 200
# while the stream flows, and the journal of `live run` must equal `bt signals` byte for byte.
# Everything runs inside the image; with buildah the containers run with `--isolation chroot`
# (no cgroups or user namespaces needed) and share the host's network, so 127.0.0.1 reaches them.
#   scripts/image_smoke.sh                 build (cached layers are reused) and check
#   SMOKE_DIR=results/image-smoke SMOKE_SPEED=10 scripts/image_smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
IMAGE=$(scripts/image.sh)
t_build=$(( $(date +%s) - t0 ))
. "${IMAGE_STATE_DIR:-results/image}/image.env"
REC=tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz
CONFIG=configs/demo_live.yaml
DIR=${SMOKE_DIR:-results/image-smoke}
SPEED=${SMOKE_SPEED:-10}  # the 5-minute recording in about 30 s: long enough to ask /health meanwhile
log() { echo "image-smoke: $*" >&2; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

rm -rf "$DIR" && mkdir -p "$DIR/in/configs" "$DIR/in/data" "$DIR/out"
cp "$CONFIG" "$DIR/in/configs/" && cp "$REC" "$DIR/in/data/"
chmod -R a+rX "$DIR/in"
chown 10001:10001 "$DIR/out" 2>/dev/null || chmod 0777 "$DIR/out"
IN=$(cd "$DIR/in" && pwd) OUT=$(cd "$DIR/out" && pwd)
REC_IN=/in/data/$(basename "$REC") CONFIG_IN=/in/configs/$(basename "$CONFIG")

TAG_SUFFIX="$$-$RANDOM"
cleanup() {  # the containers of this run (also those of killed background runs), then its processes
    [ -n "${REPLAY_PID:-}" ] && kill "$REPLAY_PID" 2>/dev/null || true
    [ -n "${RUN_PID:-}" ] && kill "$RUN_PID" 2>/dev/null || true
    if [ "$IMAGE_TOOL" = buildah ]; then
        buildah containers --format '{{.ContainerName}}' 2>/dev/null | grep -- "-$TAG_SUFFIX\$" \
            | while read -r c; do buildah rm "$c" >/dev/null 2>&1 || true; done || true
    fi
    return 0
}
trap cleanup EXIT
case $IMAGE_TOOL in
    buildah)
        run_in() {  # run_in NAME CMD...: a fresh container of the image, as uid 10001, removed after
            local c rc=0; c=$(buildah from --pull-never --name "whalebt-smoke-$1-$TAG_SUFFIX" "$IMAGE"); shift
            buildah run --isolation "${BUILDAH_ISOLATION:-chroot}" --user 10001:10001 \
                -v "$IN:/in:ro" -v "$OUT:/out" --workingdir /out "$c" -- "$@" || rc=$?
            buildah rm "$c" >/dev/null 2>&1 || true
            return "$rc"
        } ;;
    podman|docker)
        run_in() {
            shift; "$IMAGE_TOOL" run --rm --network host --user 10001:10001 -v "$IN:/in:ro" -v "$OUT:/out" \
                -w /out --entrypoint "" "$IMAGE" "$@"
        } ;;
esac

ids=$(run_in id sh -c 'echo "$(id -u):$(id -g)"')
log "user in the image: $ids"
[ "$ids" = 10001:10001 ] || { log "FAIL: not running as uid 10001"; exit 1; }
t1=$(date +%s)
run_in ingest datasets ingest recording "$REC_IN" --lake /out/lake > "$OUT/ingest.log" 2>&1
run_in signals bt signals "$CONFIG_IN" --lake /out/lake --out /out/bt-signals.jsonl > "$OUT/bt-signals.log" 2>&1

WS_PORT=$(free_port) HTTP_PORT=$(free_port)
run_in replay live replay "$REC_IN" --port "$WS_PORT" --speed "$SPEED" --exit-at-end > "$OUT/replay.out" 2> "$OUT/replay.log" &
REPLAY_PID=$!
for _ in $(seq 100); do grep -q "ws://" "$OUT/replay.out" 2>/dev/null && break; sleep 0.2; done
run_in run live run --config "$CONFIG_IN" --exchange binance_usdm --symbols BTCUSDT \
    --ws-url "ws://127.0.0.1:$WS_PORT/stream" --stream trade --journal /out/journal.jsonl \
    --http-port "$HTTP_PORT" --http-host 127.0.0.1 --idle-exit-s 3 --metrics-out /out/metrics.prom --quiet \
    > "$OUT/live.out" 2> "$OUT/live.log" &
RUN_PID=$!

health=""
for _ in $(seq 300); do
    health=$(python3 - "$HTTP_PORT" <<'PY' || true
import sys, urllib.error, urllib.request
try:
    r = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/health", timeout=2)
    print(r.status, r.read().decode())
except urllib.error.HTTPError as e:
    print(e.code, e.read().decode())
except OSError:
    pass
PY
)
    [ "${health%% *}" = 200 ] && break
    kill -0 "$RUN_PID" 2>/dev/null || break
    sleep 0.2
done
log "/health: ${health:-no answer}"
wait "$REPLAY_PID" || { log "FAIL: live replay exited with $?"; tail -n 20 "$OUT/replay.log" >&2; exit 1; }
REPLAY_PID=
rc=0; wait "$RUN_PID" || rc=$?
RUN_PID=
[ "$rc" = 0 ] || { log "FAIL: live run exited with $rc"; tail -n 20 "$OUT/live.log" >&2; exit 1; }
[ "${health%% *}" = 200 ] || { log "FAIL: /health never answered 200"; tail -n 20 "$OUT/live.log" >&2; exit 1; }
owner=$(stat -c %u "$OUT/journal.jsonl")
[ "$owner" = 10001 ] || { log "FAIL: the journal belongs to uid $owner, not 10001"; exit 1; }
if ! cmp "$OUT/journal.jsonl" "$OUT/bt-signals.jsonl"; then
    log "FAIL: the journal of live run in the image differs from bt signals"; exit 1
fi
log "PASS: $IMAGE ($IMAGE_TOOL, base $PYTHON_IMAGE $BASE_DIGEST) as uid 10001: /health 200, journal == bt signals," \
    "$(wc -l < "$OUT/journal.jsonl") events byte for byte; image ${t_build} s, smoke $(( $(date +%s) - t1 )) s"
