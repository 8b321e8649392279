# Two commands on a fresh machine: `make demo` and `make test`. Both set up .venv themselves.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed

.PHONY: demo test fuzz lint fmt setup peers test-peers clean proto prometheus kubectl helm descheduler bench-schedule bench-index-memory bench-extproc bench-routing bench-picker bench-rebalance bench-rebalance-day bench-plan chaos-controller chaos-picker soak

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP) prometheus
	$(BIN)/autonomic demo

test: $(STAMP) prometheus kubectl helm
	$(BIN)/python -m pytest -q -m "not peers" tests

# the fuzzing campaign (RELIABILITY.md, "Fuzzing"): every tests/fuzz target with FUZZ_EXAMPLES cases (`make test`
# runs the same targets with 300 each); prints the cases and cases/s of each target. Hours of CPU at the default:
# nice'd, run one at a time on a shared box.
FUZZ_EXAMPLES ?= 125000
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=long FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) nice -n 10 $(BIN)/python -m pytest -q -p no:cacheprovider tests/fuzz

# ruff, mypy and the import contracts of pyproject.toml ([tool.importlinter]); .ci/run runs it before the tests
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy autonomic common controller scorer sim loadtests harness proto
	$(BIN)/lint-imports --no-cache

# Prometheus + promtool (Debian packages) for the cluster twin and its tests; a no-op when installed
prometheus:
	bash scripts/install-prometheus.sh

# kubectl >= 1.21 (kustomize components) for the tests that render deploy/; a no-op when installed
kubectl: $(STAMP)
	bash scripts/install-kubectl.sh $(BIN)

# helm >= 3.18 for the tests that render the chart in deploy/helm/; a no-op when installed, else `go install` of
# helm v4 into the venv (about 2.5 minutes on 2 cores from a cold Go cache)
helm: $(STAMP)
	bash scripts/install-helm.sh $(BIN)

# the upstream descheduler (sigs.k8s.io/descheduler v0.36.0) built from the Go module proxy into .gopath/bin/descheduler
# (a project-local GOPATH, never committed), for tests/integration/test_cluster_descheduler.py and running it against
# `autonomic cluster-sim` (docs/cluster-twin.md); a no-op when built; about 10 minutes on 2 cores from a cold Go cache
descheduler:
	nice -n 10 bash scripts/install-descheduler.sh .gopath

# the peer routers (smg, sglang-router, vllm-router), each in its own venv under .venv-peers/, the reference EPP
# (GIE v1.5.0, `go install` into .gopath-peers/bin; why that version: scripts/install-epp.sh), the upstream
# descheduler (`make descheduler`) for the rebalance benchmark's `descheduler` arm, and llm-d's vLLM simulator for
# the twin cross-check (scripts/install-inference-sim.sh: `go install`, refused by this machine's module proxy)
peers:
	bash scripts/install-peers.sh

test-peers: $(STAMP) peers
	$(BIN)/python -m pytest -q -m peers tests/integration/test_peers.py tests/integration/test_epp_peer.py \
		tests/integration/test_inference_sim_peer.py

# the committed Python stubs of proto/*.proto (tests/unit/test_proto_stubs.py fails when they are stale)
proto: $(STAMP)
	$(BIN)/python -m proto.generate

# picker cost benchmarks (figures in BENCHMARKS.md); not part of `make test`
bench-schedule: $(STAMP)
	$(BIN)/python -m loadtests.picker.schedule_latency

bench-index-memory: $(STAMP)
	$(BIN)/python -m loadtests.picker.index_memory
	$(BIN)/python -m loadtests.picker.inflight_memory

bench-extproc: $(STAMP)
	$(BIN)/python -m loadtests.picker.envoy_hop --requests 2000 --rate 100
	$(BIN)/python -m loadtests.picker.envoy_hop --requests 2000 --rate 400
	$(BIN)/python -m loadtests.picker.envoy_hop --requests 2000 --concurrency 16

# rebalancer benchmarks (figures in BENCHMARKS.md, "Controller"); not part of `make test`
bench-rebalance: $(STAMP) prometheus
	$(BIN)/autonomic bench rebalance --nodes 12 --vms 40 --hot-nodes 2 --hot-factor 4 --duration 900 --out out/bench-rebalance

# a day of load on a production-size, memory-tight cluster in model time (issue 13; tens of minutes on 2 cores)
bench-rebalance-day: $(STAMP)
	$(BIN)/autonomic --log-level warning bench rebalance --engine model --jobs 3 --nodes 100 --vms 3000 --node-cpus 64 \
		--node-memory-gib 512 --memory-fill 0.85 --hot-nodes 5 --duration 86400 \
		--vm-trace ../shared/data/vm-load/gcd_vms_dev.csv.gz --out out/bench-rebalance-day

# chaos campaign for the controller (issue 16, RELIABILITY.md): every scenario on a fresh twin + Prometheus, ~6 min
chaos-controller: $(STAMP) prometheus
	nice -n 10 $(BIN)/autonomic --log-level warning chaos controller --out out/chaos-controller

bench-plan: $(STAMP)
	$(BIN)/python -m loadtests.rebalance.plan_time --cycles 5 --sizes 100,1000

# routing benchmark (issue 7): every router on a fresh fleet of 8 twins, the Mooncake conversation trace at a load
# where round robin queues, in real time; the peers come from `make peers` (skipped, with the reason, if absent).
# ~25 minutes on 2 cores (--time-scale 2 halves it, at the cost of twin lag and picker failures when CPU-starved).
bench-routing: $(STAMP) peers
	$(BIN)/autonomic bench routing --servers 8 --time-scale 1 --rate-scale 2.5 --duration 120 --out out/bench-routing

# picker benchmark (issue 7): schedule() latencies, the Envoy hop at 100 and 400 req/s, scraping 100 endpoints
bench-picker: $(STAMP)
	$(BIN)/autonomic bench picker --out out/bench-picker

# reliability campaign (RELIABILITY.md); not part of `make test`, whose short forms are tests/integration/test_chaos_picker.py
# and test_soak.py. chaos-picker: ~4 minutes; soak: 30 minutes plus start-up
chaos-picker: $(STAMP)
	nice -n 10 $(BIN)/python -m loadtests.chaos.picker --out out/chaos-picker

soak: $(STAMP) prometheus
	nice -n 10 $(BIN)/autonomic soak --minutes 30 --out out/soak

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	test ! -d .gopath-peers || chmod -R u+w .gopath-peers  # Go keeps its module cache read-only
	rm -rf $(VENV) .venv-peers .gopath-peers build *.egg-info .pytest_cache .mypy_cache .ruff_cache
