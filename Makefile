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

.PHONY: install demo up down status test unit bench compose chromium peers bench-peers

# Bytecode is compiled at install (the first time ~30 s, then ~1 s): where PYTHONDONTWRITEBYTECODE
# is set (as on this machine) Python never caches it, and every process (each flow run, Ray worker,
# test subprocess) compiled its imports from source again, ~7 s of CPU each.
install:  ## uv (if missing), the locked Python environment, its bytecode
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --compile-bytecode
	@$(UV) run --frozen python -m compileall -q flows tasks infra deployments benchmarks >/dev/null

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

# The stack tests share one stack, started here (and stopped after, unless it was already up): those
# that do not need it to themselves run in two processes (a test spends much of its time waiting on
# a service), then the `exclusive` ones alone (tests/conftest.py lists them).
# The stack starts while the unit tier runs (those tests use no service): its log is printed after.
STACK_TESTS := tests/contract tests/e2e tests/integration
test: install compose chromium  ## unit, contract, integration and end-to-end tests; starts the stack itself
	@was_up=0; $(UV) run lakehouse stack status >/dev/null 2>&1 && was_up=1; rc=0; log=$$(mktemp); \
	$(UV) run lakehouse stack up > $$log 2>&1 & up=$$!; \
	$(UV) run pytest tests/unit || rc=$$?; \
	wait $$up; up_rc=$$?; cat $$log; rm -f $$log; [ $$up_rc = 0 ] || exit 1; \
	LAKEHOUSE_KEEP_STACK=1 $(UV) run pytest -n 2 --dist loadfile -m "not exclusive" --durations=15 $(STACK_TESTS) || rc=$$?; \
	LAKEHOUSE_KEEP_STACK=1 $(UV) run pytest -m exclusive --durations=10 $(STACK_TESTS) || rc=$$?; \
	[ $$was_up = 1 ] || $(UV) run lakehouse stack down; exit $$rc

unit: install  ## only the tests that need no service
	$(UV) run pytest tests/unit -q

bench: install
	$(UV) run python benchmarks/stack_startup.py

# Peers (issue 18): Spark 4.0 + Iceberg and Iceberg's Kafka Connect sink, outside the main environment
# (own virtualenv and jars under .lakehouse/peers; poms in infra/peers). Not part of `make test`.
PEERS := .lakehouse/peers
peers:  ## pyspark in its own virtualenv, the Spark/Iceberg/Kafka jars, Kafka Connect and the Iceberg sink plugin
	@test -x $(PEERS)/venv/bin/python || $(UV) venv -q --python 3.11 $(PEERS)/venv
	$(UV) pip install -q --python $(PEERS)/venv/bin/python pyspark==4.0.0
	for p in spark connect-runtime connect-plugin; do \
	  mvn -q -B -s infra/peers/settings.xml -f infra/peers/$$p/pom.xml dependency:copy-dependencies || exit 1; done

bench-peers: install peers  ## the peers side by side with our own paths (needs the stack; writes benchmarks/results/peers.json)
	$(UV) run python benchmarks/peers.py
