# Quick start: `make demo` runs the main job, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/neocloud/v1/*.proto)
# Exact versions, with hashes, of everything `.[dev]` pulls in: what CI and `make` install.
# pyproject.toml keeps ranges for pip users; `make lock` rewrites this file from them.
LOCK := requirements/ci.lock

.PHONY: all demo test lint typecheck proto proto-check deploy-check unit integration bench lock clean

all: test

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Regenerates $(LOCK) from pyproject.toml with pip-tools (in a throwaway venv): versions already in
# the lock stay while they fit the ranges; `make lock LOCK_ARGS=--upgrade` takes the newest that fit,
# `LOCK_ARGS='--upgrade-package ray'` one package. Python 3.11 on Linux x86_64, as CI.
PIP_TOOLS := pip-tools>=7.5,<8
lock:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp" && "$$tmp/bin/pip" install --quiet --upgrade pip '$(PIP_TOOLS)' && \
	CUSTOM_COMPILE_COMMAND="make lock" "$$tmp/bin/pip-compile" --quiet --generate-hashes --extra dev \
		--strip-extras --no-emit-index-url --no-emit-find-links --unsafe-package neocloud $(LOCK_ARGS) \
		-o $(LOCK) pyproject.toml

# Regenerates the committed protobuf/gRPC modules under neocloud/v1.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fails when the committed generated modules no longer match proto/.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	diff -r -x __init__.py -x __pycache__ $$tmp/neocloud/v1 neocloud/v1 && rm -rf $$tmp && \
	echo "proto-check: generated code matches proto/"

# ruff, then the layer contracts in .importlinter (a broken one is named in the output).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: $(STAMP)
	$(VENV)/bin/mypy -p neocloud

# Prometheus config, rules and rule unit tests under deploy/prometheus (promtool comes with
# Debian's `prometheus` package; .ci/run installs it). Skipped, loudly, where it is missing.
PROMTOOL ?= promtool
deploy-check:
	@if ! command -v $(PROMTOOL) >/dev/null 2>&1; then \
		echo "deploy-check: SKIPPED, $(PROMTOOL) not found (apt-get install prometheus)"; exit 0; fi; \
	cd deploy/prometheus && $(PROMTOOL) check config --syntax-only prometheus.yml && \
	$(PROMTOOL) check rules rules/*.yml && $(PROMTOOL) test rules tests/*.yml

test: $(STAMP) proto-check lint typecheck deploy-check
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/neocloud demo

bench: $(STAMP)
	$(VENV)/bin/neocloud bench ingest
	$(VENV)/bin/neocloud bench agent

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
