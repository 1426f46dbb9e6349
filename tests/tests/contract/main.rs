//! The contract against the real thing: Baton's etcd helpers and etcd TLS against a real
//! etcd server, and the test registry.
//!
//! One test binary for these (each module was a binary of its own): one link instead of
//! several; the harness still runs two tests at a time on two cores.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod etcd_helpers;
mod etcd_roles;
mod etcd_tls;
mod registry;
