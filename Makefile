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

.PHONY: venv demo test test-fast test-slow bench demo-live wheel lock clean

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

test: venv
	$(BIN)/python -m pytest -q

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
