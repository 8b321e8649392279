# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test lint fmt setup peers test-peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/autonomic demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not peers" tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy autonomic controller scorer sim loadtests

# the peer routers (sglang-router, vllm-router), each in its own venv under .venv-peers/
peers:
	bash scripts/install-peers.sh

test-peers: $(STAMP) peers
	$(BIN)/python -m pytest -q -m peers tests/integration/test_peers.py

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-peers build *.egg-info .pytest_cache .mypy_cache .ruff_cache
