# Choreo: operational entry points. Recipes stay thin; the logic lives in scripts/.
# `make` alone lists the targets.

.DEFAULT_GOAL := help
.PHONY: help up down test observer-browser-test build fmt lint logs clean chaos chaos-cluster bench cluster cluster-down container-base container-test k8s-validate api-docs check-api-docs check-metrics users up-test tls-test mutants

SERVICES := orders billing shipping
# Where cargo puts binaries (CARGO_TARGET_DIR moves it).
BIN_DIR := $(or $(CARGO_TARGET_DIR),target)/release
# Where scripts/container-tools.sh puts podman-compose and kubernetes-validate.
TOOLS_VENV ?= $(HOME)/.cache/choreo-ci/venv

help: ## List the targets
	@echo "Usage: make <target>"
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-zA-Z0-9_-]*:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Ports: ORDERS_PORT, BILLING_PORT, SHIPPING_PORT, OBSERVER_PORT (8080 to 8083); broker: CHOREO_AMQP_URL."

up: ## Build, make sure RabbitMQ runs, start the three services and the observer (run/; OBSERVER=0: not it), each on its own broker user (BROKER_USERS=guest: as guest), run the demo
	@bash scripts/up.sh

users: ## Load deploy/rabbitmq/definitions.json (vhost choreo, a user per process) with generated passwords (run/broker/) into the local RabbitMQ; `make up` does it by default
	@bash scripts/users.sh

up-test: ## `make up` in both broker modes (own users, BROKER_USERS=guest): the demo and each connection's user; stops what it started
	@bash scripts/up-test.sh

tls-test: ## Start a TLS-only RabbitMQ node (scripts/tls-broker.sh), run the TLS tests against it, stop it
	@bash scripts/tls-broker.sh up >/dev/null
	@eval "$$(bash scripts/tls-broker.sh env)" && cargo test -p choreo-e2e --test e2e tls::; \
	  status=$$?; bash scripts/tls-broker.sh down >/dev/null; exit $$status

down: ## Stop the services (and the observer) started by `make up` (SIGTERM, then wait)
	@bash scripts/down.sh

observer-browser-test: ## The observer's live page in headless Chromium (installs chromium and Playwright once; needs RabbitMQ)
	@bash scripts/observer-browser-test.sh

test: ## Run the test suite (needs RabbitMQ on 127.0.0.1:5672)
	cargo test --workspace

build: ## Build the three service binaries in release mode (target/release/)
	cargo build --release $(addprefix --bin ,$(SERVICES))

fmt: ## Format the code
	cargo fmt --all

api-docs: ## Regenerate docs/api/ (AsyncAPI, JSON Schemas, examples, OpenAPI) from the code
	cargo run -q -p choreo-api-docs --bin api-docs

check-api-docs: ## Check docs/api/ is up to date, then validate it (asyncapi, check-jsonschema, redocly; installs them once)
	@bash scripts/check-api-docs.sh

check-metrics: ## Run the metrics end-to-end test and check each service's live /metrics with `promtool check metrics`; check and test deploy/prometheus/alerts.yml
	@bash scripts/check-metrics.sh

lint: ## Check formatting and run clippy with warnings as errors
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

logs: ## Follow the logs of the running services (SERVICE=orders for one)
	@bash scripts/logs.sh $(SERVICE)

clean: ## Stop the services, delete run/ (logs, pids, data) and the cargo build output
	@bash scripts/clean.sh

mutants: ## Mutation testing of the files that carry the guarantees (cargo-mutants, installed if missing; needs RabbitMQ and PostgreSQL; docs/testing.md); GROUPS="relay inbox" for some (decisions, consumer, relay, inbox, store; runtime = the middle three)
	@bash scripts/mutants.sh $(GROUPS)

chaos: ## Fault matrix (docs/operations.md): kills the local RabbitMQ, run it alone; ARGS=--ci for the short one; with `make cluster` up, the cluster rows too; REPORT=1 writes docs/chaos-results.md and docs/cluster-chaos-results.md
	cargo build --release $(addprefix --bin ,$(SERVICES)) --bin observer --bin chaos
	$(BIN_DIR)/chaos --bin-dir $(BIN_DIR) $(if $(REPORT),--report docs/chaos-results.md) $(ARGS)
	@if bash scripts/cluster.sh running 2>/dev/null; then \
	  echo "== the cluster is up: its rows (docs/cluster.md)"; \
	  AMQP_URL="$$(bash scripts/cluster.sh urls)" $(BIN_DIR)/chaos --bin-dir $(BIN_DIR) --cluster $(if $(REPORT),--report docs/cluster-chaos-results.md) $(ARGS); \
	else \
	  echo "(cluster rows skipped: start the cluster with 'make cluster' to run them)"; \
	fi

chaos-cluster: ## Only the fault matrix's cluster rows (needs `make cluster`); ARGS and REPORT as for chaos
	cargo build --release $(addprefix --bin ,$(SERVICES)) --bin observer --bin chaos
	AMQP_URL="$$(bash scripts/cluster.sh urls)" $(BIN_DIR)/chaos --bin-dir $(BIN_DIR) --cluster $(if $(REPORT),--report docs/cluster-chaos-results.md) $(ARGS)

cluster: ## Start a three-node RabbitMQ cluster on 127.0.0.1:5681-5683 (docs/cluster.md) and print its CHOREO_AMQP_URL
	@bash scripts/cluster.sh up

cluster-down: ## Stop the three-node cluster and delete its data
	@bash scripts/cluster.sh down

bench: ## Benchmark as users see it, vs the broker alone (needs RabbitMQ and PostgreSQL; a few minutes); BASELINE=<git rev> also measures that commit; ARGS=--quick, `bench --help`
	cargo build --release $(addprefix --bin ,$(SERVICES)) --bin observer --bin bench
	$(if $(BASELINE),bash scripts/build-baseline.sh $(BASELINE))
	$(BIN_DIR)/bench --bin-dir $(BIN_DIR) --report docs/benchmark-results.md $(if $(BASELINE),--baseline-bin-dir target/baseline/release) $(ARGS)
container-base: ## Make the local base image (debootstrap + podman import; cached) the images build on without a registry
	@bash scripts/container-base.sh

container-test: ## Build the three images with Podman, run the saga through them as containers, then through docker-compose.yml (needs root, RabbitMQ)
	@bash scripts/container-test.sh

k8s-validate: ## Validate deploy/k8s offline (kubernetes-validate: scripts/container-tools.sh installs it, or K8S_PYTHON=<a python that has it>)
	$(or $(K8S_PYTHON),$(wildcard $(TOOLS_VENV)/bin/python),python3) scripts/k8s-validate.py
