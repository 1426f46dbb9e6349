//! A 2.0.0 bundle whose install a test steers host by host, with files on the host: its
//! utility's health checks wait while [`HOLD`] exists (so an upgrade can be paused or
//! aborted while a host is known to be installing) and fail while [`BREAK`] exists (the
//! agent then rolls the host back). No kernel: no reboot, the tests are about the upgrade.

use std::path::Path;

use baton_tests::bundles::prepare_source;
use baton_tests::fleet::Host;
use serde_json::json;

/// While this file exists on a host, its install waits in the utility's health check.
pub const HOLD: &str = "/etc/baton-hold";
/// While this file exists on a host, the utility's health check fails there.
pub const BREAK: &str = "/etc/baton-break";
/// The step a held host reports meanwhile.
pub const HELD_STEP: &str = "check file baton-hello";

/// Prepares the bundle's source in `dir`.
pub async fn source(dir: &Path) {
    prepare_source("2.0.0", dir).await;
    let path = dir.join("manifest.template.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read manifest")).expect("json");
    let components = manifest["components"].as_array_mut().expect("components");
    components.retain(|c| c["kind"] != "kernel");
    let hello = components
        .iter_mut()
        .find(|c| c["name"] == "baton-hello")
        .expect("baton-hello");
    hello["health"] = json!([
        {"check": "command", "argv": ["/usr/local/bin/baton-hello"]},
        {"check": "command", "argv": ["sh", "-c", format!("while test -e {HOLD}; do sleep 0.2; done")],
         "timeout_secs": 600},
        {"check": "command", "argv": ["sh", "-c", format!("test ! -e {BREAK}")]}
    ]);
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).expect("json")).expect("write");
}

/// Runs `script` on the host; fails naming it unless it exits 0. Returns its output.
pub async fn sh(host: &Host, script: &str) -> String {
    let out = host.exec(&["sh", "-c", script]).await.expect("exec");
    assert_eq!(out.status, 0, "{script} on {}: {}", host.name(), out.stderr);
    out.stdout.trim().to_owned()
}
