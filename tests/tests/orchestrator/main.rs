//! The orchestrator against a real etcd, registry and Docker Engine: the REST API, the
//! engine with stand-in agents, and whole upgrades on the simulated fleet with the real
//! agents (daisy chain, maintenance, paused hosts, self-update), one of them watched and
//! paused from the fleet page in a headless browser, the Debian packages installed on
//! a simulated host, and the benchmark's fleet of 200 in-process hosts checked for
//! correctness.
//!
//! Needs `make static bundle-agents bundle-orchestrators` (which `make test` runs first).
//!
//! One test binary for these (each module was a binary of its own): one link instead of
//! several; the harness still runs two tests at a time on two cores.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod agent_maintenance;
mod api;
mod bench_fleet;
mod chaos;
mod cli;
mod daisy;
mod engine;
mod etcd_upgrade;
mod fleet;
mod fuzz;
mod gated;
mod group_maintenance;
mod maintenance;
mod pacing;
mod packages;
mod pause_abort;
mod paused_join;
mod revert;
mod security;
mod self_update;
mod signing;
mod support;
mod web;
