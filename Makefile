# Baton: `make test` checks everything; `make demo` upgrades a local simulated fleet.
.PHONY: all deps build test fmt lint unit demo demo-down clean

CARGO ?= cargo

all: build

deps:
	@scripts/install-deps.sh

build: deps
	$(CARGO) build --workspace --all-targets

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Formatting, lints, unit tests and the integration tests against real etcd, registry,
# Docker and simulated hosts.
test: lint
	$(CARGO) test --workspace --locked

demo: deps
	@echo "make demo: the end-to-end demo needs the orchestrator and agent, which do not run upgrades yet." >&2
	@exit 1

demo-down:
	@true

clean:
	$(CARGO) clean
