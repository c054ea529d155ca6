# etcd-pilot: every task a developer or CI runs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: help deps s3s-fs build image fmt lint unit integration monitoring e2e test crds demo bench \
	testbed-tools testbed-build testbed-up testbed-down testbed-status

TESTBED_DIR ?= /var/tmp/etcd-pilot-testbed
export ETCD_PILOT_TESTBED_DIR := $(TESTBED_DIR)
TESTBED := target/release/testbed

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

deps: ## Install what building and testing need (Debian 12: protoc, etcd 3.4, promtool)
	bash hack/deps.sh

s3s-fs: ## Install s3s-fs, the S3-compatible server of the integration tests and the testbed
	bash hack/s3s-fs.sh

build: deps ## Build the etcd-pilot binary (release)
	$(CARGO) build --locked --release

VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
IMAGE ?= etcd-pilot.local/etcd-pilot:$(VERSION)
image: build ## The operator image as a docker-archive tarball, target/image/etcd-pilot.tar (IMAGE=<repository>:<tag>)
	etcd=$$(bash hack/debian-etcd.sh 3.5.30 3.5.30-2); \
	$(CARGO) run --locked --release -q -p etcd-pilot-image -- --tag "$(IMAGE)" \
	  --binary target/release/etcd-pilot --etcdutl "$$etcd/etcdutl" --etcd "$$etcd/etcd" --out target/image/etcd-pilot.tar

fmt: ## Format the code
	$(CARGO) fmt

lint: deps ## rustfmt check and clippy with warnings as errors
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings

unit: deps ## Unit tests: pure logic, mocks allowed
	$(CARGO) test --locked --lib --bins
	$(CARGO) test --locked -p etcd-pilot-image

integration: deps s3s-fs ## Integration tests against real etcd and a real S3-compatible server
	$(CARGO) test --locked --test '*'

monitoring: deps testbed-tools ## The chart's alerts (promtool check and test), dashboard and monitoring objects
	bash monitoring/check.sh

e2e: testbed-tools testbed-build ## End-to-end tests on the testbed (brings one up and down unless one is up)
	$(MAKE) image IMAGE=etcd-pilot.local/etcd-pilot:dev
	bash e2e/hack/run-e2e.sh

test: lint unit integration monitoring e2e ## Everything the project can test (what CI runs)

crds: ## Regenerate crds/, the chart's copy and the reference in docs/api.md from the code
	$(CARGO) run --locked -q -- crds --out-dir crds --api-doc docs/api.md
	rm -f charts/etcd-pilot/crds/*.yaml
	cp crds/*.yaml charts/etcd-pilot/crds/

testbed-tools: deps s3s-fs ## Install the testbed's tools; builds Kubernetes once per machine (~6 min)
	bash e2e/hack/install.sh

testbed-build: deps ## Build etcd-pilot, the testbed command and the in-pod probe (release)
	$(CARGO) build --locked --release -p etcd-pilot -p etcd-pilot-e2e

testbed-up: testbed-tools testbed-build ## Start the testbed: 3 control-plane nodes + 3 workers (TESTBED_CONTROL_PLANES, TESTBED_WORKERS)
	$(TESTBED) up --operator target/release/etcd-pilot --probe target/release/probe

testbed-down: ## Stop the testbed and remove its state
	@if [ -x $(TESTBED) ]; then $(TESTBED) down; else $(CARGO) run --locked -q -p etcd-pilot-e2e --bin testbed -- down; fi

testbed-status: ## What runs on the testbed, and how to use it
	$(TESTBED) status

demo: testbed-tools testbed-build ## The main job: testbed (unless KUBECONFIG is set), chart installed, an EtcdCluster applied
	bash e2e/hack/demo.sh

bench: deps s3s-fs testbed-tools testbed-build ## Benchmarks with real servers and the testbed; tables go into docs/benchmarks.md
	$(CARGO) bench --locked --bench backup > target/bench-backup.md
	python3 hack/record-bench.py docs/benchmarks.md backup target/bench-backup.md
	$(MAKE) image IMAGE=etcd-pilot.local/etcd-pilot:dev
	bash e2e/hack/run-e2e.sh bench
	python3 hack/record-bench.py docs/benchmarks.md lifecycle target/bench-lifecycle.md
	python3 hack/record-bench.py docs/benchmarks.md restore target/bench-restore.md
	python3 hack/record-bench.py docs/benchmarks.md maintenance target/bench-maintenance.md
	python3 hack/record-bench.py docs/benchmarks.md continuous target/bench-continuous.md
