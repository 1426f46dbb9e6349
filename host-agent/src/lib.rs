//! The Baton host agent (updater-daemon): watches its host's `desired` key in etcd and
//! applies what it is told — utilities, daemons, platform containers, kernel — journaled so
//! a crash or reboot resumes, health-checked and rolled back on failure, reporting `status`,
//! `installed` and `alive` through etcd.

pub mod agent;
pub mod apply;
pub mod journal;
pub mod notify;
pub mod ops;
pub mod plan;
pub mod quorum;
pub mod real_host;
pub mod report;

/// The version this build reports (see [`baton_protocol::build_version`]).
pub const VERSION: &str = baton_protocol::build_version!();
