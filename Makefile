# whalebt — two commands on a fresh machine (Python 3.11 + pip):
#   make demo   set up .venv, build a synthetic market, ingest it, backtest it, print metrics + tearsheet path
#   make test   set up .venv and run the test suite
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.whalebt-installed
export PYTHONDONTWRITEBYTECODE :=
export MPLBACKEND := Agg

DEMO_SYMBOL := PLANTUSDT
DEMO_START := 2024-03-01
DEMO_END := 2024-03-10
DEMO_ARCHIVE := results/demo-archive

.PHONY: venv demo demo-live test test-fast test-slow lint bench demo-live wheel lock clean
LINTED := whalebt signals datasets bt live observatory

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "whalebt needs Python 3.11, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

demo: venv
	@echo "== whalebt demo: a SYNTHETIC market (not real exchange data) with a planted whale effect =="
	$(BIN)/datasets synth --out $(DEMO_ARCHIVE) --symbol $(DEMO_SYMBOL) --start $(DEMO_START) --days 10 \
		--seed 7 --plant-effect-bps 60 --plant-horizon-s 3600 --whale-notional-usd 1000000 --whale-rate-per-day 12
	$(BIN)/datasets ingest binance-archive --root $(DEMO_ARCHIVE) --symbol $(DEMO_SYMBOL) \
		--start $(DEMO_START) --end $(DEMO_END) --lake results/lake
	$(BIN)/bt run configs/demo.yaml
	@echo "== the market above is synthetic: see results/demo-archive/synth.json for what was planted =="

DEMO_LIVE_REC := tests/data/real/binance_usdm_btcusdt_2024-08-08_stream.txt.gz

# Replays REAL recorded Binance BTCUSDT frames through `live run` and checks its journal against `bt signals`.
demo-live: venv
	@echo "== live demo: REAL Binance USD-M BTCUSDT frames (2024-08-08 23:54-23:59 UTC, hftbacktest, MIT) =="
	@mkdir -p results/demo-live && rm -f results/demo-live/journal*.jsonl
	$(BIN)/datasets ingest recording $(DEMO_LIVE_REC) --lake results/lake
	$(BIN)/bt signals configs/demo_live.yaml --out results/demo-live/bt-signals.jsonl
	$(BIN)/live replay $(DEMO_LIVE_REC) --port 9001 --speed max --exit-at-end > /dev/null 2> results/demo-live/replay.log & \
	  sleep 2; \
	  $(BIN)/live run --config configs/demo_live.yaml --exchange binance_usdm --symbols BTCUSDT \
	    --ws-url ws://127.0.0.1:9001/stream --stream trade --journal results/demo-live/journal.jsonl \
	    --idle-exit-s 3 --metrics-out results/demo-live/metrics.prom --quiet 2> results/demo-live/live.log; \
	  wait
	@echo "== first journal lines (docs/spec.md §5) =="; head -n 5 results/demo-live/journal.jsonl
	@echo "== /metrics at exit =="; grep -v '^#' results/demo-live/metrics.prom | grep -v '_bucket' | head -n 30
	@cmp results/demo-live/journal.jsonl results/demo-live/bt-signals.jsonl && \
	  echo "== live journal == bt signals journal: $$(wc -l < results/demo-live/journal.jsonl) events, byte for byte =="
	$(BIN)/bt run configs/demo_live.yaml --no-tearsheet > /dev/null
	$(BIN)/live report --config configs/demo_live.yaml --paper results/demo-live/journal.paper.jsonl

test: venv lint
	$(BIN)/python -m pytest -q

# ruff (lint + format check) and mypy, configured in pyproject.toml; part of `make test`.
lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy $(LINTED)

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow and not services"

test-slow: venv
	$(BIN)/python -m pytest -q -m "slow or services"

bench: venv
	$(BIN)/python bench/run_all.py

wheel: venv
	$(BIN)/python -m pip wheel --no-deps --quiet -w dist .
	@ls -1 dist/*.whl

lock: venv
	$(BIN)/python -m pip freeze --exclude-editable | sed '1i # Full pinned environment of whalebt (pip freeze of a clean install on Python 3.11).\n# Regenerate: make lock' > requirements.lock

clean:
	rm -rf build dist *.egg-info .pytest_cache

# The live image (Dockerfile): docker, podman or buildah, whichever works; without a registry the
# Debian base is bootstrapped with mmdebstrap (scripts/base_image.sh). Both install what they need.
.PHONY: image image-smoke
image:
	scripts/image.sh

# Builds the image and runs `live run` in it as uid 10001 against `live replay` of real frames:
# /health 200 and journal == `bt signals`, byte for byte (scripts/image_smoke.sh).
image-smoke:
	scripts/image_smoke.sh
