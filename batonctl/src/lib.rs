//! `batonctl`, Baton's operator command line, as a library (the binary is a thin `main.rs`;
//! the tests and the demo use the client, the display and the bundle builder directly).
//!
//! - [`cli`]: subcommands and flags, and the request bodies they make;
//! - [`commands`]: running a command line; [`watch`]: following an upgrade;
//! - [`client`]: the REST API client; [`settings`]: its address and credentials (flags,
//!   environment, config file); [`display`]: tables and progress lines;
//! - [`output`]: `-o table|wide|json|yaml`; [`manpages`]: man pages from the CLI definition;
//! - [`bundle`]: building, pushing, inspecting, signing and verifying bundle images;
//! - [`registrations`]: the registrations file of `host add --from-file`;
//! - [`keys`]: signing key pairs (`key generate`) and the key files the bundle commands read;
//! - [`error`]: what a command can fail with, and the exit code it gives.
//!
//! It talks to the orchestrator only through its REST API: the wire types are the
//! protocol's ([`baton_protocol::api`]), never the server's.

pub mod bundle;
pub mod cli;
pub mod client;
pub mod commands;
pub mod display;
pub mod error;
pub mod keys;
pub mod manpages;
pub mod output;
pub mod registrations;
pub mod settings;
pub mod watch;

pub use commands::run;
pub use error::CtlError;

/// The version this build reports (see [`baton_protocol::build_version`]).
pub const VERSION: &str = baton_protocol::build_version!();
