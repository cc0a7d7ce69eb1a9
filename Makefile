# The two commands of the README: `make demo` (main job) and `make test`.
# Everything else is a convenience around the `lakehouse` console script.
SHELL := /bin/bash
UV_VERSION := 0.13.8
UV := python3 -m uv
export LAKEHOUSE_CONFIG ?= infra/stack.toml

# `docker compose` without a compose package: the Compose CLI plugin is built from the pinned Go
# module in infra/compose and found through DOCKER_CONFIG (the tests validate the Compose file).
DOCKER_COMPOSE := .lakehouse/docker/cli-plugins/docker-compose
export DOCKER_CONFIG := $(CURDIR)/.lakehouse/docker

.PHONY: install demo up down status test unit bench compose chromium

install:  ## uv (if missing) and the locked Python environment
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	@$(UV) sync --frozen

demo: install  ## the main job: stack, deployments, traffic, ingest → silver → gold through Prefect (embedded profile)
	LAKEHOUSE_CONFIG= $(UV) run lakehouse demo

up: install  ## build what is missing, start every service on loopback, wait until healthy
	$(UV) run lakehouse stack up

down: install
	$(UV) run lakehouse stack down

status: install
	$(UV) run lakehouse stack status

compose: $(DOCKER_COMPOSE)  ## the docker compose CLI plugin (built once, ~1.5 min cold)

$(DOCKER_COMPOSE): infra/compose/go.mod infra/compose/go.sum
	cd infra/compose && v=$$(go list -m -f '{{.Version}}' github.com/docker/compose/v5) && \
	  CGO_ENABLED=0 nice go build -p 2 -trimpath \
	    -ldflags="-s -w -X github.com/docker/compose/v5/internal.Version=$$v" \
	    -o $(CURDIR)/$@ github.com/docker/compose/v5/cmd

chromium:  ## Debian's Chromium for the Prefect UI test (skipped when it cannot be installed)
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -q chromium >/dev/null) \
	  || echo "chromium could not be installed: the UI test will be skipped"

test: install compose chromium  ## unit, contract, integration and end-to-end tests; starts the stack itself
	$(UV) run pytest tests/unit
	$(UV) run pytest tests/contract tests/e2e tests/integration

unit: install  ## only the tests that need no service
	$(UV) run pytest tests/unit -q

bench: install
	$(UV) run python benchmarks/stack_startup.py
