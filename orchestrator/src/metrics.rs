//! Prometheus metrics: counters the engine bumps, and the text exposition rendered from
//! them plus what etcd shows at scrape time (upgrades by phase, hosts by state).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use baton_protocol::{HostState, UpgradePhase};

/// Counters and gauges kept in memory by this replica.
#[derive(Debug, Default)]
pub struct Counters {
    /// This replica leads.
    pub leader: AtomicBool,
    /// Engine passes (decisions over the records in progress and the leader's tasks).
    pub passes: AtomicU64,
    /// Upgrades decided by the engine's passes.
    pub decisions: AtomicU64,
    /// Hosts looked at by the engine's passes: each decided upgrade's, and those whose
    /// documents changed (every host, after a full recomputation).
    pub hosts_visited: AtomicU64,
    /// Engine transactions committed.
    pub commits: AtomicU64,
    /// Engine transactions refused by a guard (decided again).
    pub conflicts: AtomicU64,
    /// Engine reads (range requests; its view is otherwise kept by watches).
    pub reads: AtomicU64,
    /// Key changes the engine's watches delivered.
    pub watch_events: AtomicU64,
    /// Downloader jobs started.
    pub jobs_started: AtomicU64,
    /// Downloader jobs running now.
    pub jobs_running: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Subtracts one from a gauge (never below 0).
    pub fn dec(gauge: &AtomicU64) {
        let _ = gauge.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }
}

/// What etcd showed at scrape time (`None`: etcd could not be read).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Upgrade records per phase.
    pub upgrades: BTreeMap<UpgradePhase, u64>,
    /// Hosts per `status.state` (hosts without a status are not counted here).
    pub host_states: BTreeMap<HostState, u64>,
    /// Registered hosts.
    pub hosts: u64,
    /// Hosts whose agent is alive.
    pub alive: u64,
}

/// The text exposition (format 0.0.4).
pub fn render(version: &str, counters: &Counters, etcd: Option<&Snapshot>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, kind: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let one = |v: u64| vec![(String::new(), v)];
    metric(
        "baton_build_info",
        "Version of this orchestrator.",
        "gauge",
        &[(format!("{{version=\"{version}\"}}"), 1)],
    );
    metric(
        "baton_leader",
        "1 if this replica is the leader.",
        "gauge",
        &one(u64::from(counters.leader.load(Ordering::Relaxed))),
    );
    metric(
        "baton_etcd_up",
        "1 if etcd answered the scrape's reads.",
        "gauge",
        &one(u64::from(etcd.is_some())),
    );
    if let Some(s) = etcd {
        let phases: Vec<(String, u64)> = UpgradePhase::ALL
            .iter()
            .map(|p| {
                (
                    format!("{{phase=\"{p}\"}}"),
                    s.upgrades.get(p).copied().unwrap_or(0),
                )
            })
            .collect();
        metric(
            "baton_upgrades",
            "Upgrade records by phase.",
            "gauge",
            &phases,
        );
        let states: Vec<(String, u64)> = HostState::ALL
            .iter()
            .map(|st| {
                (
                    format!("{{state=\"{st}\"}}"),
                    s.host_states.get(st).copied().unwrap_or(0),
                )
            })
            .collect();
        metric(
            "baton_hosts",
            "Hosts by the state their agent reports.",
            "gauge",
            &states,
        );
        metric(
            "baton_hosts_registered",
            "Registered hosts.",
            "gauge",
            &one(s.hosts),
        );
        metric(
            "baton_hosts_alive",
            "Hosts whose agent is alive.",
            "gauge",
            &one(s.alive),
        );
    }
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    metric(
        "baton_engine_passes_total",
        "Engine passes: after a change, or on the clock when an upgrade's deadline or a heal is due.",
        "counter",
        &one(load(&counters.passes)),
    );
    metric(
        "baton_engine_decisions_total",
        "Upgrades decided by the engine's passes (those a change touched or whose deadline came).",
        "counter",
        &one(load(&counters.decisions)),
    );
    metric(
        "baton_engine_hosts_visited_total",
        "Hosts looked at by the engine's passes: the hosts of each upgrade decided and those whose documents changed.",
        "counter",
        &one(load(&counters.hosts_visited)),
    );
    metric(
        "baton_engine_commits_total",
        "Engine transactions committed by this replica.",
        "counter",
        &one(load(&counters.commits)),
    );
    metric(
        "baton_engine_conflicts_total",
        "Engine transactions refused by a revision guard.",
        "counter",
        &one(load(&counters.conflicts)),
    );
    metric(
        "baton_engine_etcd_reads_total",
        "Range requests made by the engine (start, resync, end of an upgrade).",
        "counter",
        &one(load(&counters.reads)),
    );
    metric(
        "baton_engine_watch_events_total",
        "Key changes delivered to the engine by its watches.",
        "counter",
        &one(load(&counters.watch_events)),
    );
    metric(
        "baton_downloader_jobs_started_total",
        "Downloader jobs started by this replica.",
        "counter",
        &one(load(&counters.jobs_started)),
    );
    metric(
        "baton_downloader_jobs_running",
        "Downloader jobs running now.",
        "gauge",
        &one(load(&counters.jobs_running)),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_phase_and_state() {
        let counters = Counters::default();
        counters.leader.store(true, Ordering::Relaxed);
        let snapshot = Snapshot {
            upgrades: [(UpgradePhase::Installing, 1)].into(),
            host_states: [(HostState::Done, 3)].into(),
            hosts: 4,
            alive: 4,
        };
        let text = render("1.2.3", &counters, Some(&snapshot));
        for line in [
            "baton_build_info{version=\"1.2.3\"} 1",
            "baton_leader 1",
            "baton_etcd_up 1",
            "baton_upgrades{phase=\"Installing\"} 1",
            "baton_upgrades{phase=\"Succeeded\"} 0",
            "baton_hosts{state=\"Done\"} 3",
            "baton_hosts{state=\"RolledBack\"} 0",
            "baton_hosts_registered 4",
            "# TYPE baton_engine_commits_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        let down = render("1.2.3", &counters, None);
        assert!(down.contains("baton_etcd_up 0"));
        assert!(!down.contains("baton_upgrades{"));
    }
}
