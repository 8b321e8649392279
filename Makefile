# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint fmt setup peers test-peers clean proto prometheus bench-schedule bench-extproc

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP) prometheus
	$(BIN)/autonomic demo

test: $(STAMP) prometheus
	$(BIN)/python -m pytest -q -m "not peers" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy autonomic controller scorer sim loadtests

# Prometheus + promtool (Debian packages) for the cluster twin and its tests; a no-op when installed
prometheus:
	bash scripts/install-prometheus.sh

# the peer routers (sglang-router, vllm-router), each in its own venv under .venv-peers/
peers:
	bash scripts/install-peers.sh

test-peers: $(STAMP) peers
	$(BIN)/python -m pytest -q -m peers tests/integration/test_peers.py

# the committed Python stubs of proto/*.proto (tests/unit/test_proto_stubs.py fails when they are stale)
proto: $(STAMP)
	$(BIN)/python -m proto.generate

# picker cost benchmarks (figures in BENCHMARKS.md); not part of `make test`
bench-schedule: $(STAMP)
	$(BIN)/python -m loadtests.bench_schedule

bench-extproc: $(STAMP)
	$(BIN)/python -m loadtests.bench_extproc --requests 2000 --rate 100
	$(BIN)/python -m loadtests.bench_extproc --requests 2000 --rate 400
	$(BIN)/python -m loadtests.bench_extproc --requests 2000 --concurrency 16

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-peers build *.egg-info .pytest_cache .mypy_cache .ruff_cache
