# Quick start: `make demo` runs the main job, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard proto/neocloud/v1/*.proto)

.PHONY: all demo test lint typecheck proto proto-check deploy-check unit integration bench clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Regenerates the committed protobuf/gRPC modules under neocloud/v1.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS)

# Fails when the committed generated modules no longer match proto/.
proto-check: $(STAMP)
	@tmp=$$(mktemp -d) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS) && \
	diff -r -x __init__.py -x __pycache__ $$tmp/neocloud/v1 neocloud/v1 && rm -rf $$tmp && \
	echo "proto-check: generated code matches proto/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy -p neocloud

# Prometheus config, rules and rule unit tests under deploy/prometheus (promtool comes with
# Debian's `prometheus` package; .ci/run installs it). Skipped, loudly, where it is missing.
PROMTOOL ?= promtool
deploy-check:
	@if ! command -v $(PROMTOOL) >/dev/null 2>&1; then \
		echo "deploy-check: SKIPPED, $(PROMTOOL) not found (apt-get install prometheus)"; exit 0; fi; \
	cd deploy/prometheus && $(PROMTOOL) check config prometheus.yml && \
	$(PROMTOOL) check rules rules/*.yml && $(PROMTOOL) test rules tests/*.yml

test: $(STAMP) proto-check lint typecheck deploy-check
	$(PY) -m pytest -q

demo: $(STAMP)
	$(VENV)/bin/neocloud demo

bench: $(STAMP)
	$(VENV)/bin/neocloud bench ingest
	$(VENV)/bin/neocloud bench agent

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
