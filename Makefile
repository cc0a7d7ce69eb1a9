# The two commands of the README: `make up` (main job) and `make test`.
# Everything else is a convenience around the `lakehouse` console script.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := python3 -m uv
export LAKEHOUSE_CONFIG ?= infra/stack.toml

.PHONY: install up down status test unit bench clean-state

install:  ## uv (if missing) and the locked Python environment
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	@$(UV) sync --frozen

up: install  ## build what is missing, start every service on loopback, wait until healthy
	$(UV) run lakehouse stack up

down: install
	$(UV) run lakehouse stack down

status: install
	$(UV) run lakehouse stack status

test: install  ## unit, contract, integration and end-to-end tests; starts the stack itself
	$(UV) run pytest

unit: install  ## only the tests that need no service
	$(UV) run pytest tests/unit -q

bench: install
	$(UV) run python benchmarks/stack_startup.py
