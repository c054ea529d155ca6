# etcd-pilot: every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: help deps build fmt lint unit integration e2e test crds demo bench

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## Install what building and testing need (Debian 12: protoc, etcd 3.4, s3s-fs)
	bash hack/deps.sh

build: deps ## Build the etcd-pilot binary (release)
	$(CARGO) build --locked --release

fmt: ## Format the code
	$(CARGO) fmt

lint: deps ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

unit: deps ## Unit tests: pure logic, mocks allowed
	$(CARGO) test --locked --lib --bins

integration: deps ## Integration tests against real etcd and a real S3-compatible server
	$(CARGO) test --locked --test '*'

e2e: ## End-to-end tests on the testbed cluster (not ready yet)
	@echo "make e2e: not ready yet: the testbed (a real Kubernetes cluster built here) is the next issue." >&2
	@exit 2

test: lint unit integration ## Everything the project can test today (what CI runs)

crds: ## Regenerate crds/ and the reference in docs/api.md from the code
	$(CARGO) run --locked -q -- crds --out-dir crds --api-doc docs/api.md

demo: ## Local cluster, chart installed, an EtcdCluster running, a backup taken (not ready yet)
	@echo "make demo: not ready yet: it needs the testbed cluster and the Helm chart, which come next." >&2
	@exit 2

bench: ## Benchmarks, results in docs/benchmarks.md (not ready yet)
	@echo "make bench: not ready yet: benchmarks come with the reconciler." >&2
	@exit 2
