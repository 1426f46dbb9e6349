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
use self::world::{STEADY_VERSION, World};
use crate::error::HarnessError;
use crate::etcd::EtcdServer;

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// The upgrades at each fleet size.
    Fleet,
    /// The idle static agent.
    Idle,
    /// The downloader's staging against `cp`.
    Stage,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The parts to run (every part when empty).
    pub only: Vec<Part>,
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
        "build",
        &format!(
            "{} builds of baton-bench and baton-orchestrator",
            orchestrator::PROFILE
        ),
    );
    report.note(
        "hosts",
        "simulated hosts: the real agent in the benchmark's process on a host-operations fake \
         whose components do no work, sharing a few etcd connections",
    );
    let runs = |part| options.only.is_empty() || options.only.contains(&part);
    if runs(Part::Fleet) {
        for &hosts in &options.hosts {
            fleet_figures(&mut report, hosts).await?;
        }
    }
    if runs(Part::Idle) {
        idle_figures(&mut report, options.idle).await?;
    }
    if runs(Part::Stage) {
        stage_figures(&mut report, options.payload_mib)?;
    }
    report.write(&options.report)?;
    Ok(report)
}

fn stage_figures(report: &mut Report, payload_mib: usize) -> Result<(), HarnessError> {
    let dir = tempfile::Builder::new()
        .prefix("baton-bench-stage-")
        .tempdir()
        .map_err(|e| HarnessError(format!("temp dir: {e}")))?;
    let speed = stage_speed::measure(dir.path(), payload_mib)?;
    report.figure("downloader.payload_mib", payload_mib as f64);
    report.figure("downloader.stage_s", speed.stage.as_secs_f64());
    report.figure("downloader.cp_sync_s", speed.cp.as_secs_f64());
    report.figure("downloader.vs_cp", speed.ratio());
    Ok(())
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
    for (figure, (count, took)) in [
        ("registration.bulk", world.bulk_registration),
        ("registration.one_by_one", world.single_registration),
    ] {
        report.figure(&name(&format!("{figure}.hosts")), count as f64);
        if count > 0 {
            report.figure(
                &name(&format!("{figure}.ms_per_host")),
                took.as_secs_f64() * 1000.0 / count as f64,
            );
        }
    }
    // The first upgrade makes every host's etcd identity (its first downloader job); the
    // second is the steady state every later upgrade costs, on which the goals are judged.
    let first = figures::all_at_once(&world, "bench-first").await?;
    upgrade_figures(
        report,
        &name("first_upgrade"),
        &name("first_upgrade.etcd"),
        &first,
        n,
    );
    let steady = figures::all_at_once_to(&world, "bench-all-at-once", STEADY_VERSION).await?;
    upgrade_figures(report, &name("all_at_once"), &name("etcd"), &steady, n);
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

/// The figures of one all-at-once upgrade of `n` hosts: its own under `upgrade.`, etcd's
/// under `etcd.` (both prefixes given whole).
fn upgrade_figures(
    report: &mut Report,
    upgrade: &str,
    etcd: &str,
    run: &figures::AllAtOnce,
    n: f64,
) {
    let up = |figure: &str| format!("{upgrade}.{figure}");
    let et = |figure: &str| format!("{etcd}.{figure}");
    report.text(&up("phase"), &run.phase.to_string());
    report.figure(&up("done"), run.done as f64);
    report.figure(&up("duration_s"), run.duration.as_secs_f64());
    if let Some(c) = run.completions_per_second() {
        report.figure(&up("completions_per_s"), c);
    }
    if let Some(first) = run.first_done {
        report.figure(&up("first_install_s"), first.as_secs_f64());
    }
    let counts = &run.etcd;
    let upgrade_requests = counts.requests - counts.keep_alives;
    report.figure(&et("requests_per_host"), counts.requests / n);
    report.figure(
        &et("requests_per_host_without_keepalives"),
        upgrade_requests / n,
    );
    report.figure(
        &et("requests_per_host.orchestrator_engine"),
        run.engine_requests / n,
    );
    report.figure(&up("engine.passes"), run.engine_work.passes);
    report.figure(
        &up("engine.hosts_visited_per_host"),
        run.engine_work.hosts_visited / n,
    );
    report.figure(
        &et("requests_per_host.agents_and_rest"),
        (upgrade_requests - run.engine_requests) / n,
    );
    for (method, count) in &counts.by_method {
        report.figure(
            &et(&format!("requests_per_host.method.{method}")),
            count / n,
        );
    }
    report.figure(&et("bytes_received_per_host"), counts.bytes_received / n);
    for (suffix, writer) in [
        ("", None),
        (".orchestrator", Some(Writer::Orchestrator)),
        (".agents", Some(Writer::Agent)),
    ] {
        let bytes = run.bytes_written(writer) as f64 / n;
        report.figure(&et(&format!("bytes_written_per_host{suffix}")), bytes);
        let writes = run.writes(writer) as f64 / n;
        report.figure(&et(&format!("writes_per_host{suffix}")), writes);
    }
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
    report.figure(
        "idle_agent.preemptions_per_min",
        idle.preemptions_per_minute,
    );
    report.figure("idle_agent.watchdog_per_min", idle.watchdog_per_minute);
    report.figure("idle_agent.threads", idle.threads as f64);
    Ok(())
}
