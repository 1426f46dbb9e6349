//! The downloader job's verify-and-stage (the real `baton_downloader::stage`: every package
//! re-hashed against the manifest while it is copied, written durably) against `cp` of the
//! same payload followed by `sync` of the copy and its folder (the same durability), each
//! timed on a fresh destination, the median of a few runs. The staging code runs in this
//! process: the dev profile builds `sha2` optimised (Cargo.toml), the hashing being what
//! costs.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use baton_downloader::bundle::Bundle;
use baton_downloader::fs::RealFs;
use baton_downloader::layout::HostLayout;
use baton_protocol::digest::sha256_hex;

use crate::error::HarnessError;

/// Runs of each.
const RUNS: usize = 3;

/// The two timings.
#[derive(Debug, Clone, Copy)]
pub struct StageSpeed {
    /// Payload bytes.
    pub bytes: u64,
    /// Median time to verify and stage it.
    pub stage: Duration,
    /// Median time to `cp` it and `sync` the copy.
    pub cp: Duration,
}

impl StageSpeed {
    /// Staging throughput as a fraction of `cp`'s.
    pub fn ratio(&self) -> f64 {
        self.cp.as_secs_f64() / self.stage.as_secs_f64().max(f64::EPSILON)
    }
}

/// Measures with a payload of `mib` MiB in `dir`.
pub fn measure(dir: &Path, mib: usize) -> Result<StageSpeed, HarnessError> {
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |e: std::io::Error| HarnessError(format!("{what}: {e}"))
    };
    let bundle_dir = dir.join("bundle");
    let package = bundle_dir.join("packages/payload/baton-payload");
    let agent = bundle_dir.join("agent/baton-agent");
    for p in [&package, &agent] {
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
    }
    // Incompressible content, so no layer of the storage shortcuts it.
    let mut payload = vec![0u8; mib * 1024 * 1024];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in payload.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&package, &payload).map_err(io(&package))?;
    std::fs::write(&agent, b"agent").map_err(io(&agent))?;
    let entry = |path: &str, content: &[u8], dest: Option<&str>| {
        let mut v = serde_json::json!({
            "path": path, "size": content.len(), "sha256": sha256_hex(content), "mode": "0755"
        });
        if let Some(d) = dest {
            v["dest"] = d.into();
        }
        v
    };
    let manifest = serde_json::json!({
        "schema_version": 1,
        "version": "1.0.0",
        "backward_compatible": true,
        "agent": {"version": "1.0.0", "file": entry("agent/baton-agent", b"agent", None)},
        "components": [{
            "name": "baton-payload", "version": "1.0.0", "kind": "file", "order": 10,
            "files": [entry("packages/payload/baton-payload", &payload, Some("/usr/local/bin/baton-payload"))]
        }]
    });
    let manifest_path = bundle_dir.join("manifest.json");
    std::fs::write(&manifest_path, manifest.to_string()).map_err(io(&manifest_path))?;
    drop(payload);
    let bundle = Bundle::open(&bundle_dir).map_err(|e| HarnessError(e.to_string()))?;
    let mut stage_times = Vec::new();
    let mut cp_times = Vec::new();
    for run in 0..RUNS {
        let host = dir.join(format!("host-{run}"));
        std::fs::create_dir_all(&host).map_err(io(&host))?;
        let started = Instant::now();
        baton_downloader::stage::stage(&RealFs, &bundle, &HostLayout::new(&host))
            .map_err(|e| HarnessError(format!("stage: {e}")))?;
        stage_times.push(started.elapsed());

        let copy = dir.join(format!("cp-{run}"));
        let started = Instant::now();
        let copied = Command::new("cp").arg(&package).arg(&copy).status();
        // The copy and the folder holding its name, as staging makes its files and folders
        // durable.
        let synced = Command::new("sync").arg(&copy).arg(dir).status();
        cp_times.push(started.elapsed());
        if !copied.is_ok_and(|s| s.success()) || !synced.is_ok_and(|s| s.success()) {
            return Err(HarnessError(format!("cp/sync of {}", package.display())));
        }
        let _ = std::fs::remove_dir_all(&host);
        let _ = std::fs::remove_file(&copy);
    }
    Ok(StageSpeed {
        bytes: (mib * 1024 * 1024) as u64,
        stage: median(&mut stage_times),
        cp: median(&mut cp_times),
    })
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}
