//! `make bench`: Baton at fleet size, measured. For each fleet size, a real etcd (TLS and
//! authentication), the real `baton-orchestrator` process driven through its REST API, and
//! that many simulated hosts in this process — the real agent on a host-operations fake
//! whose components do no work ([`host`]), sharing a few etcd connections ([`fleet`]) —
//! with a stand-in Docker Engine for the downloader dispatch ([`docker`]). Then the real
//! static `baton-agent` idle ([`idle`]) and the downloader's verify-and-stage against `cp`
//! ([`stage_speed`]). Every figure is printed as `bench: NAME=VALUE` and written to
//! `<target>/bench/report.json` ([`report`]).

pub mod docker;
pub mod figures;
pub mod fleet;
pub mod history;
pub mod host;
pub mod idle;
pub mod metrics;
pub mod orchestrator;
pub mod proc;
pub mod report;
pub mod stage_speed;
pub mod world;

use std::path::PathBuf;
use std::time::Duration;

use self::history::Writer;
use self::report::Report;
use self::world::World;
use crate::error::HarnessError;
use crate::etcd::EtcdServer;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Fleet sizes, in order.
    pub hosts: Vec<usize>,
    /// How long the idle agent is watched.
    pub idle: Duration,
    /// The staging payload, in MiB.
    pub payload_mib: usize,
    /// Where the report goes.
    pub report: PathBuf,
}

/// Runs every measurement and writes the report.
pub async fn run(options: &BenchOptions) -> Result<Report, HarnessError> {
    let mut report = Report::new();
    report.note(
        "docker",
        "stand-in Docker Engine (the benchmark's own, on a Unix socket): downloader jobs are \
         not containers; each stages the bundle's manifest for the agent and reports success",
    );
    report.note(
        "hosts",
        "simulated hosts: the real agent in the benchmark's process on a host-operations fake \
         whose components do no work, sharing a few etcd connections",
    );
    for &hosts in &options.hosts {
        fleet_figures(&mut report, hosts).await?;
    }
    idle_figures(&mut report, options.idle).await?;
    let dir = tempfile::Builder::new()
        .prefix("baton-bench-stage-")
        .tempdir()
        .map_err(|e| HarnessError(format!("temp dir: {e}")))?;
    let speed = stage_speed::measure(dir.path(), options.payload_mib)?;
    report.figure("downloader.payload_mib", options.payload_mib as f64);
    report.figure("downloader.stage_s", speed.stage.as_secs_f64());
    report.figure("downloader.cp_sync_s", speed.cp.as_secs_f64());
    report.figure("downloader.vs_cp", speed.ratio());
    report.write(&options.report)?;
    Ok(report)
}

async fn fleet_figures(report: &mut Report, hosts: usize) -> Result<(), HarnessError> {
    let n = hosts as f64;
    let world = World::start(hosts).await?;
    let name = |figure: &str| format!("hosts_{hosts}.{figure}");
    report.figure(&name("registration_s"), world.registration.as_secs_f64());
    report.figure(
        &name("registration_ms_per_host"),
        world.registration.as_secs_f64() * 1000.0 / n,
    );
    let upgrade = figures::all_at_once(&world, "bench-all-at-once").await?;
    report.text(&name("all_at_once.phase"), &upgrade.phase.to_string());
    report.figure(&name("all_at_once.done"), upgrade.done as f64);
    report.figure(
        &name("all_at_once.duration_s"),
        upgrade.duration.as_secs_f64(),
    );
    if let Some(c) = upgrade.completions_per_second() {
        report.figure(&name("all_at_once.completions_per_s"), c);
    }
    if let Some(first) = upgrade.first_done {
        report.figure(&name("all_at_once.first_install_s"), first.as_secs_f64());
    }
    let etcd = upgrade.etcd;
    let upgrade_requests = etcd.requests - etcd.keep_alives;
    report.figure(&name("etcd.requests_per_host"), etcd.requests / n);
    report.figure(
        &name("etcd.requests_per_host_without_keepalives"),
        upgrade_requests / n,
    );
    report.figure(
        &name("etcd.requests_per_host.orchestrator_engine"),
        upgrade.engine_requests / n,
    );
    report.figure(
        &name("etcd.requests_per_host.agents_and_rest"),
        (upgrade_requests - upgrade.engine_requests) / n,
    );
    report.figure(
        &name("etcd.bytes_received_per_host"),
        etcd.bytes_received / n,
    );
    for (suffix, writer) in [
        ("", None),
        (".orchestrator", Some(Writer::Orchestrator)),
        (".agents", Some(Writer::Agent)),
    ] {
        let bytes = upgrade.bytes_written(writer) as f64 / n;
        report.figure(
            &name(&format!("etcd.bytes_written_per_host{suffix}")),
            bytes,
        );
        let writes = upgrade.writes(writer) as f64 / n;
        report.figure(&name(&format!("etcd.writes_per_host{suffix}")), writes);
    }
    report.figure(&name("stand_in_docker.jobs"), world.docker.jobs() as f64);
    let rolling = figures::rolling(&world, "bench-rolling", hosts).await?;
    report.text(&name("rolling.phase"), &rolling.phase.to_string());
    report.figure(&name("rolling.hosts"), rolling.hosts as f64);
    report.figure(
        &name("rolling.handoff_ms"),
        rolling.handoff.as_secs_f64() * 1000.0,
    );
    report.figure(
        &name("rolling.put_watch_ms"),
        rolling.round_trip.as_secs_f64() * 1000.0,
    );
    report.figure(&name("rolling.handoff_vs_put_watch"), rolling.ratio());
    if let Some(rss) = world.orchestrator.peak_rss() {
        report.figure(&name("orchestrator.peak_rss_mb"), rss as f64 / 1e6);
    }
    Ok(())
}

async fn idle_figures(report: &mut Report, window: Duration) -> Result<(), HarnessError> {
    let agent = crate::bundles::target_dir().join("x86_64-unknown-linux-gnu/debug/baton-agent");
    if !agent.exists() {
        return Err(HarnessError(format!(
            "{} is missing: `make static` builds it",
            agent.display()
        )));
    }
    let etcd = EtcdServer::start_secure(&[]).await?;
    let credential = fleet::hosts_identity(&etcd).await?;
    let dir = tempfile::Builder::new()
        .prefix("baton-bench-idle-")
        .tempdir()
        .map_err(|e| HarnessError(format!("temp dir: {e}")))?;
    let idle = idle::measure(&agent, &etcd, &credential, dir.path(), window).await?;
    report.figure("idle_agent.window_s", window.as_secs_f64());
    report.figure("idle_agent.rss_mb", idle.rss as f64 / 1e6);
    report.figure("idle_agent.peak_rss_mb", idle.peak_rss as f64 / 1e6);
    report.figure("idle_agent.wakeups_per_min", idle.wakeups_per_minute);
    report.figure("idle_agent.watchdog_per_min", idle.watchdog_per_minute);
    report.figure("idle_agent.threads", idle.threads as f64);
    Ok(())
}
