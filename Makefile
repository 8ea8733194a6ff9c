# SessionMonitoring developer commands. Every target sets itself up: virtualenv, install, codegen.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules --warn-undefined-variables

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROTOS := $(shell find protos -name '*.proto')
GEN_STAMP := generated/.stamp
# The protos with their comments, for server reflection (server/transport/reflection.py).
DESCRIPTOR_SET := generated/sessionmonitoring/v1/session_monitoring_descriptor_set.binpb
# The last released API: `make lint` fails on a change that breaks its callers.
API_RELEASE := protos/released/v1.0.0.binpb
VERSION ?=
ARGS ?=

.PHONY: help run test lint generate check-generated bench soak migrate clean release-api psql

help: ## Show this help
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml client/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "Python 3.11+ is required (found $$($(PYTHON) --version))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet -e ./client
	touch $@

$(GEN_STAMP): $(STAMP) $(PROTOS)
	rm -rf generated/sessionmonitoring
	mkdir -p generated
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=generated --pyi_out=generated --grpc_python_out=generated $(PROTOS)
	$(BIN)/python -m grpc_tools.protoc -Iprotos --include_source_info --include_imports \
		--descriptor_set_out=$(DESCRIPTOR_SET) $(PROTOS)
	touch $@

generate: ## Regenerate generated/ from protos/ (committed; never edit by hand)
	rm -f $(GEN_STAMP)
	$(MAKE) --no-print-directory $(GEN_STAMP)

check-generated: $(STAMP) ## Fail if generated/ differs from what `make generate` produces
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(BIN)/python -m grpc_tools.protoc -Iprotos \
		--python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(PROTOS); \
	$(BIN)/python -m grpc_tools.protoc -Iprotos --include_source_info --include_imports \
		--descriptor_set_out=$$tmp/$(DESCRIPTOR_SET:generated/%=%) $(PROTOS); \
	diff -r --exclude=.stamp --exclude=__pycache__ "$$tmp/sessionmonitoring" generated/sessionmonitoring \
		|| { echo "generated/ is stale: run 'make generate' and commit" >&2; exit 1; }

run: $(GEN_STAMP) ## Serve on 127.0.0.1:50051 (embedded PostgreSQL with demo data unless DATABASE_URL is set)
	$(BIN)/python -m server.tools seed-demo
	$(BIN)/python -m server serve

psql: $(GEN_STAMP) ## psql on the embedded database while make run serves, or on DATABASE_URL (ARGS="-c ...")
	$(BIN)/python -m server.tools psql $(ARGS)

migrate: $(GEN_STAMP) ## Apply database migrations to DATABASE_URL (or the embedded PostgreSQL)
	$(BIN)/python -m server migrate

test: $(GEN_STAMP) ## Run the whole suite against a real PostgreSQL (embedded, or TEST_DATABASE_URL)
	$(BIN)/python -m pytest

lint: check-generated ## ruff, mypy, import layers, buf lint and breaking check, generated code fresh
	$(BIN)/ruff check server tests client
	$(BIN)/ruff format --check server tests client
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/buf lint
	$(BIN)/buf breaking --against $(API_RELEASE)

bench: $(GEN_STAMP) ## Benchmark every RPC against the raw-SQL and bare-gRPC limits (writes BENCHMARKS.md)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m server.tools.bench

clean: ## Remove the virtualenv and local database data
	rm -rf $(VENV) .data

soak: $(GEN_STAMP) ## Mixed load for SOAK_SECONDS (default 300) on loopback; reports codes, latency, memory
	$(BIN)/python -m server.tools.bench.soak

release-api: $(STAMP) ## Record protos/ as released API VERSION (e.g. make release-api VERSION=v1.1.0)
	@test -n "$(VERSION)" || { echo "usage: make release-api VERSION=vX.Y.Z" >&2; exit 1; }
	$(BIN)/buf build -o protos/released/$(VERSION).binpb
	@echo "now point API_RELEASE in the Makefile at protos/released/$(VERSION).binpb"
