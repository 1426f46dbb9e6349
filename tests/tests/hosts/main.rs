//! The host side on simulated hosts (real systemd, real Docker, real etcd): the fleet
//! harness, the agent's logic, the agent and the downloader job on real hosts.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).
//!
//! One test binary for these (each module was a binary of its own): one link instead of
//! several; the harness still runs two tests at a time on two cores.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod agent_fleet;
mod agent_logic;
mod downloader;
mod fleet;
mod signing;
