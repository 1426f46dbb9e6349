//! The Baton system-updater: takes REST calls to upgrade the fleet and drives upgrades from
//! etcd state. Several replicas may run; one is elected leader through etcd.

pub mod bundle;
pub mod config;
pub mod leader;
