//! Test harness for Baton: real etcd servers and clusters, a real OCI registry, a fleet of
//! simulated hosts (containers running systemd), and virtual machines booting a real Debian
//! disk under QEMU. Used by the integration tests in `tests/tests/` and by `make demo`.

pub mod bench;
pub mod bundles;
pub mod demo;
pub mod docker;
pub mod error;
pub mod etcd;
pub mod etcd_members;
pub mod fleet;
pub mod pki;
pub mod recipe;
pub mod registration;
pub mod registry;
pub mod signing;
pub mod simhost_image;
pub mod venv;
pub mod vm;
