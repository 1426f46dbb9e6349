//! Table tests of the engine's decisions: a fixture of an upgrade record and what etcd shows,
//! and the actions expected, written as short lines (`dispatch h2`, `record h1 Succeeded`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use baton_protocol::documents::{
    Alive, BatchSize, Desired, DesiredAction, HostOutcome, HostOutcomeState as O, HostStatus,
    Maintenance, MaintenanceMode, OrchestratorUpdate, SCHEMA_VERSION, Strategy, Task, TaskKind,
    Upgrade,
};
use baton_protocol::etcd::Versioned;
use baton_protocol::{HostId, HostState as H, UpgradeId, UpgradePhase as P};

use super::*;
use crate::engine::model::{
    DownloadOutcome, GateState, Limits, MAX_DISPATCH_PER_PASS, Observed, SuccessorState,
};
use crate::view::FleetView;

const T0: &str = "2026-01-01T00:00:00.000Z";

fn at(secs: u64) -> SystemTime {
    humantime::parse_rfc3339(T0).expect("T0") + Duration::from_secs(secs)
}

fn id(h: &str) -> HostId {
    HostId::new(h).expect("host id")
}

fn rolling(batch: u32, canary: u32, pause: bool, max_failures: u32) -> Strategy {
    Strategy::Rolling {
        batch: BatchSize::Count(batch),
        canary,
        pause_after_canary: pause,
        zone_label: None,
        max_failures,
    }
}

#[derive(Clone)]
struct Fx {
    upgrade: Upgrade,
    view: FleetView,
    missing: BTreeMap<HostId, Duration>,
    unchanged: BTreeMap<HostId, Duration>,
    running: BTreeSet<HostId>,
    elsewhere: usize,
    finished: BTreeMap<HostId, DownloadOutcome>,
    claimed: BTreeSet<HostId>,
    orchestrator_version: String,
    successor: Option<SuccessorState>,
    gates: Option<GateState>,
    now: SystemTime,
}

impl Fx {
    /// An upgrade to 2.0.0 (agent 2.0.0) of hosts with their batches, phase `Pending`, every
    /// host's agent alive on 1.0.0.
    fn new(strategy: Strategy, plan: &[(&str, u32)]) -> Fx {
        let hosts = plan
            .iter()
            .map(|(h, b)| {
                (
                    id(h),
                    HostOutcome {
                        state: O::Pending,
                        reason: String::new(),
                        batch: Some(*b),
                        dispatched_at: None,
                        held_from: None,
                        previous: None,
                        revert: None,
                    },
                )
            })
            .collect();
        let upgrade = Upgrade {
            schema_version: SCHEMA_VERSION,
            id: UpgradeId::new("u1").expect("id"),
            bundle: "r/b@sha256:00".into(),
            version: "2.0.0".into(),
            strategy,
            selector: BTreeMap::new(),
            strategy_reason: None,
            phase: P::Pending,
            paused_from: None,
            hosts,
            reason: None,
            agent_version: Some("2.0.0".into()),
            phase_since: Some(T0.into()),
            canary_approved: false,
            events: 0,
            listed: false,
            task: None,
            orchestrator: None,
            signature: None,
            skip_paused: false,
            allow_downgrade: false,
            on_failure: baton_protocol::documents::OnFailure::Halt,
            created_at: T0.into(),
            updated_at: T0.into(),
            soak: None,
            waiting_for_window: None,
        };
        let mut fx = Fx {
            upgrade,
            view: FleetView::default(),
            missing: BTreeMap::new(),
            unchanged: BTreeMap::new(),
            running: BTreeSet::new(),
            elsewhere: 0,
            finished: BTreeMap::new(),
            claimed: BTreeSet::new(),
            orchestrator_version: "1.0.0".into(),
            successor: None,
            gates: None,
            now: at(1),
        };
        for (h, _) in plan {
            fx = fx.alive(h, "1.0.0");
        }
        fx
    }

    /// The bundle carries an orchestrator image.
    fn carries_orchestrator(mut self) -> Self {
        self.upgrade.orchestrator = Some(OrchestratorUpdate {
            image: "r/orchestrator:2.0.0".into(),
            container: None,
            handed_over_at: None,
        });
        self
    }

    /// The deciding orchestrator runs `version`.
    fn decided_by(mut self, version: &str) -> Self {
        self.orchestrator_version = version.into();
        self
    }

    fn successor(mut self, state: SuccessorState) -> Self {
        self.successor = Some(state);
        self
    }

    fn phase(mut self, p: P) -> Self {
        self.upgrade.phase = p;
        self
    }

    fn paused_from(mut self, p: P) -> Self {
        self.upgrade.phase = P::Paused;
        self.upgrade.paused_from = Some(p);
        self
    }

    fn all(mut self, state: O) -> Self {
        for h in self.upgrade.hosts.values_mut() {
            h.state = state;
        }
        self
    }

    fn host(mut self, h: &str, state: O) -> Self {
        let outcome = self.upgrade.hosts.get_mut(&id(h)).expect("planned host");
        outcome.state = state;
        if state == O::Dispatched || state == O::Succeeded {
            outcome.dispatched_at = Some(T0.into());
        }
        if state == O::Failed {
            outcome.reason = format!("{h} broke");
        }
        self
    }

    fn alive(mut self, h: &str, version: &str) -> Self {
        self.view.hosts.entry(id(h)).or_default().alive = Some(Versioned {
            value: Alive {
                schema_version: SCHEMA_VERSION,
                agent_version: version.into(),
                boot_id: "b".into(),
                pid: 1,
                since: T0.into(),
            },
            mod_revision: 5,
        });
        self.missing.remove(&id(h));
        self
    }

    fn all_alive(mut self, version: &str) -> Self {
        let hosts: Vec<HostId> = self.upgrade.hosts.keys().cloned().collect();
        for h in hosts {
            self = self.alive(h.as_str(), version);
        }
        self
    }

    fn gone(mut self, h: &str, secs: u64) -> Self {
        if let Some(d) = self.view.hosts.get_mut(&id(h)) {
            d.alive = None;
        }
        self.missing.insert(id(h), Duration::from_secs(secs));
        self
    }

    /// `h`'s `desired` and `status` have not changed for `secs` seconds.
    fn unchanged(mut self, h: &str, secs: u64) -> Self {
        self.unchanged.insert(id(h), Duration::from_secs(secs));
        self
    }

    fn status(mut self, h: &str, state: H) -> Self {
        self.view.hosts.entry(id(h)).or_default().status = Some(Versioned {
            value: HostStatus {
                schema_version: SCHEMA_VERSION,
                upgrade_id: Some(self.upgrade.id.clone()),
                state,
                step: None,
                message: format!("{state} message"),
                started_at: None,
                updated_at: T0.into(),
                health: None,
            },
            mod_revision: 6,
        });
        self
    }

    fn desired_for_this_upgrade(mut self, h: &str) -> Self {
        self.view.hosts.entry(id(h)).or_default().desired = Some(Versioned {
            value: Desired {
                schema_version: SCHEMA_VERSION,
                upgrade_id: self.upgrade.id.clone(),
                version: "2.0.0".into(),
                bundle: self.upgrade.bundle.clone(),
                action: DesiredAction::Install,
                after: None,
                allow_downgrade: false,
                reverts: None,
                signature: None,
                issued_at: T0.into(),
            },
            mod_revision: 7,
        });
        self
    }

    fn skip_paused(mut self) -> Self {
        self.upgrade.skip_paused = true;
        self
    }

    /// The upgrade holds `h` where it is (its maintenance mode was `paused`).
    fn held(mut self, h: &str) -> Self {
        let outcome = self.upgrade.hosts.get_mut(&id(h)).expect("host");
        outcome.held_from = Some(outcome.state);
        outcome.state = O::Held;
        self
    }

    fn maintenance(mut self, h: &str, mode: MaintenanceMode) -> Self {
        self.view.hosts.entry(id(h)).or_default().maintenance = Some(Versioned {
            value: Maintenance {
                schema_version: SCHEMA_VERSION,
                mode,
                reason: String::new(),
                since: T0.into(),
                reboot: false,
            },
            mod_revision: 8,
        });
        self
    }

    fn running(mut self, h: &str) -> Self {
        self.running.insert(id(h));
        self
    }

    /// `n` downloader jobs run for other records.
    fn elsewhere(mut self, n: usize) -> Self {
        self.elsewhere = n;
        self
    }

    fn finished(mut self, h: &str, outcome: DownloadOutcome) -> Self {
        self.finished.insert(id(h), outcome);
        self
    }

    fn at(mut self, secs: u64) -> Self {
        self.now = at(secs);
        self
    }

    /// Makes the record a task of the leader's for its (only) host.
    fn task(mut self, kind: TaskKind) -> Self {
        let host = self.upgrade.hosts.keys().next().cloned().expect("a host");
        if kind == TaskKind::Restart {
            self.upgrade.agent_version = None;
        }
        self.upgrade.task = Some(Task {
            kind,
            host,
            follows: None,
            maintenance_since: None,
            group: None,
            reboot: false,
        });
        self
    }

    /// Makes the record a restart task that reboots its host.
    fn reboot_task(self) -> Self {
        let mut fx = self.task(TaskKind::Restart);
        if let Some(t) = fx.upgrade.task.as_mut() {
            t.reboot = true;
        }
        fx
    }

    fn claimed(mut self, h: &str) -> Self {
        self.claimed.insert(id(h));
        self
    }

    fn approved(mut self) -> Self {
        self.upgrade.canary_approved = true;
        self
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            view: &self.view,
            alive_missing_for: &self.missing,
            unchanged_for: &self.unchanged,
            downloads_running: &self.running,
            downloads_elsewhere: self.elsewhere,
            downloads_finished: &self.finished,
            claimed: &self.claimed,
            orchestrator_version: &self.orchestrator_version,
            successor: self.successor.as_ref(),
            gates: self.gates.as_ref(),
            now: self.now,
        }
    }

    fn decide(&self) -> Vec<Action> {
        next_actions(&self.upgrade, &self.observed(), &limits())
    }

    /// [`wake_after`], in whole seconds.
    fn wake(&self) -> Option<u64> {
        wake_after(&self.upgrade, &self.observed(), &limits()).map(|d| d.as_secs())
    }
}

fn limits() -> Limits {
    Limits {
        download_concurrency: 2,
        agent_timeout: Duration::from_secs(60),
        health_timeout: Duration::from_secs(100),
        install_timeout: Duration::from_secs(1000),
        max_dispatch: MAX_DISPATCH_PER_PASS,
        heal_grace: Duration::from_secs(30),
    }
}

fn line(a: &Action) -> String {
    match a {
        Action::Phase { to, .. } => format!("phase {to}"),
        Action::Download { host } => format!("download {host}"),
        Action::StartSuccessor => "start successor".to_owned(),
        Action::Hold { host, held: true } => format!("hold {host}"),
        Action::Hold { host, held: false } => format!("release {host}"),
        Action::HandOver { container } => format!("hand over to {container}"),
        Action::Record { host, state, .. } => format!("record {host} {state:?}"),
        Action::Dispatch {
            host,
            write_desired,
            ..
        } => {
            let mut s = format!("dispatch {host}");
            if !write_desired {
                s.push_str(" (told before)");
            }
            s
        }
        Action::Chain { host, after, .. } => format!("chain {host} after {after}"),
        Action::Revert { host, to, .. } => format!("revert {host} to {}", to.version),
        Action::RecordRevert { host, state, .. } => format!("record revert {host} {state:?}"),
        Action::Soak {
            batch: Some(b),
            until,
            ..
        } => format!("soak batch {b} until {}", until.as_deref().unwrap_or("?")),
        Action::Soak { batch: None, .. } => "soak over".to_owned(),
        Action::WindowWait {
            waiting: true,
            next_opening,
        } => format!(
            "wait for window {}",
            next_opening.as_deref().unwrap_or("(none)")
        ),
        Action::WindowWait { waiting: false, .. } => "window open".to_owned(),
    }
}

fn lines(actions: &[Action]) -> Vec<String> {
    actions.iter().map(line).collect()
}

fn four(strategy: Strategy) -> Fx {
    Fx::new(strategy, &[("h1", 0), ("h2", 1), ("h3", 2), ("h4", 3)])
}

fn installing_on_2(fx: Fx) -> Fx {
    fx.phase(P::Installing)
        .all(O::Downloaded)
        .all_alive("2.0.0")
}

#[test]
fn decisions_table() {
    let ok = || DownloadOutcome::Staged("bundle 2.0.0 staged".into());
    let bad = || DownloadOutcome::Failed("sha256 mismatch".into());
    let pairs = Fx::new(
        rolling(2, 0, false, 0),
        &[("h1", 0), ("h2", 0), ("h3", 1), ("h4", 1)],
    );
    let canary = Fx::new(
        rolling(2, 1, true, 0),
        &[("h1", 0), ("h2", 1), ("h3", 1), ("h4", 2)],
    );
    let zoned = Fx::new(
        Strategy::Rolling {
            batch: BatchSize::Count(2),
            canary: 0,
            pause_after_canary: false,
            zone_label: Some("zone".into()),
            max_failures: 0,
        },
        // Zone a: h1 h2 h3 (batches 0, 1); zone b: h4 (batch 2) — planned at creation.
        &[("h1", 0), ("h2", 0), ("h3", 1), ("h4", 2)],
    );
    let aao = Strategy::AllAtOnce {
        allow_downtime: true,
    };
    let all_at_once = Fx::new(aao, &[("h1", 0), ("h2", 0), ("h3", 0)]);
    let chain = Fx::new(Strategy::DaisyChain, &[("h1", 0), ("h2", 1), ("h3", 2)]);

    let cases: Vec<(&str, Fx, &[&str])> = vec![
        // --- Self-update (the bundle carries an orchestrator image).
        (
            "an older orchestrator starts the bundle's first, before any download",
            four(rolling(1, 0, false, 0)).carries_orchestrator(),
            &["start successor"],
        ),
        (
            "while the new version starts, nothing else happens",
            four(rolling(1, 0, false, 0))
                .carries_orchestrator()
                .successor(SuccessorState::Starting),
            &[],
        ),
        (
            "once it campaigns, the hand-over is recorded",
            four(rolling(1, 0, false, 0))
                .carries_orchestrator()
                .successor(SuccessorState::Ready {
                    container: "c2".into(),
                }),
            &["hand over to c2"],
        ),
        (
            "if it does not, the upgrade fails with no host touched",
            four(rolling(1, 0, false, 0))
                .carries_orchestrator()
                .successor(SuccessorState::Failed("exited".into())),
            &["phase Failed"],
        ),
        (
            "the new version continues the same upgrade",
            four(rolling(1, 0, false, 0))
                .carries_orchestrator()
                .decided_by("2.0.0"),
            &["phase Downloading", "download h1", "download h2"],
        ),
        // --- Downloading.
        (
            "a new upgrade starts downloading, two jobs at a time",
            four(rolling(1, 0, false, 0)),
            &["phase Downloading", "download h1", "download h2"],
        ),
        (
            "running jobs count against the concurrency",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .running("h1"),
            &["download h2"],
        ),
        (
            "a finished job is recorded and frees its slot",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .running("h2")
                .finished("h1", ok()),
            &[
                "record h1 Downloaded",
                "phase UpdatingAgents",
                "download h3",
            ],
        ),
        (
            "a failed download halts when nothing is tolerated",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .finished("h1", bad()),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "a failed download within max_failures carries on",
            four(rolling(1, 0, false, 1))
                .phase(P::Downloading)
                .host("h2", O::Downloaded)
                .host("h3", O::Downloaded)
                .host("h4", O::Downloaded)
                .finished("h1", bad()),
            &["record h1 Failed", "phase UpdatingAgents"],
        ),
        (
            "a paused host is skipped, not downloaded, when the request says so",
            four(rolling(1, 0, false, 0))
                .skip_paused()
                .phase(P::Downloading)
                .maintenance("h1", MaintenanceMode::Paused),
            &["record h1 Skipped", "download h2", "download h3"],
        ),
        (
            "else a paused host is held, not downloaded",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .maintenance("h1", MaintenanceMode::Paused),
            &["hold h1", "download h2", "download h3"],
        ),
        (
            "the download phase waits for a held host",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .all(O::Downloaded)
                .host("h1", O::Pending)
                .held("h1")
                .maintenance("h1", MaintenanceMode::Paused),
            &[],
        ),
        (
            "a held host is released once the mode is lifted, and downloaded",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .all(O::Downloaded)
                .host("h1", O::Pending)
                .held("h1"),
            &["release h1", "download h1"],
        ),
        (
            "paused while downloading: results recorded, nothing started",
            four(rolling(1, 0, false, 0))
                .paused_from(P::Downloading)
                .finished("h1", ok()),
            &["record h1 Downloaded"],
        ),
        // --- Downloads run ahead of installs.
        (
            "downloads start lowest batch first",
            Fx::new(
                rolling(1, 0, false, 0),
                &[("a", 3), ("b", 1), ("c", 0), ("d", 2)],
            ),
            &["phase Downloading", "download c", "download b"],
        ),
        (
            "other records' jobs share the concurrency",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .elsewhere(1),
            &["download h1"],
        ),
        (
            "no slot left anywhere: nothing starts",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .elsewhere(2),
            &[],
        ),
        (
            "a host another record's job works on is not downloaded",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .claimed("h1"),
            &["download h2", "download h3"],
        ),
        (
            "the first batch installs once its own hosts are downloaded, the others downloading",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .host("h1", O::Downloaded)
                .alive("h1", "2.0.0")
                .running("h2"),
            &[
                "phase UpdatingAgents",
                "phase Installing",
                "dispatch h1",
                "download h3",
            ],
        ),
        (
            "a batch waits for all of its own downloads",
            Fx::new(
                rolling(2, 0, false, 0),
                &[("h1", 0), ("h2", 0), ("h3", 1), ("h4", 1)],
            )
            .phase(P::Downloading)
            .host("h1", O::Downloaded)
            .alive("h1", "2.0.0")
            .running("h2")
            .running("h3"),
            &[],
        ),
        (
            "the next batch not downloaded yet: back to downloading, nothing dispatched",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Succeeded)
                .host("h2", O::Pending)
                .host("h3", O::Pending)
                .host("h4", O::Pending)
                .running("h2")
                .running("h3"),
            &["phase Downloading"],
        ),
        (
            "the next batch downloaded but an agent of it still old: no host of it changes",
            installing_on_2(Fx::new(
                rolling(2, 0, false, 0),
                &[("h1", 0), ("h2", 1), ("h3", 1), ("h4", 2)],
            ))
            .host("h1", O::Succeeded)
            .alive("h3", "1.0.0"),
            &["phase UpdatingAgents"],
        ),
        (
            "its agents updated: the batch installs",
            installing_on_2(Fx::new(
                rolling(2, 0, false, 0),
                &[("h1", 0), ("h2", 1), ("h3", 1), ("h4", 2)],
            ))
            .phase(P::UpdatingAgents)
            .host("h1", O::Succeeded),
            &["phase Installing", "dispatch h2", "dispatch h3"],
        ),
        (
            "the agent timeout fails only hosts of the batch waited for",
            four(rolling(1, 0, false, 3))
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .at(61),
            &["record h1 Failed", "phase UpdatingAgents"],
        ),
        (
            "a daisy chain waits for every host's download before its first installs",
            chain
                .clone()
                .phase(P::Downloading)
                .host("h1", O::Downloaded)
                .alive("h1", "2.0.0")
                .running("h2")
                .running("h3"),
            &[],
        ),
        (
            "and for every host's agent",
            chain
                .clone()
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0")
                .alive("h3", "1.0.0"),
            &[],
        ),
        (
            "paused: no download starts",
            four(rolling(1, 0, false, 0)).paused_from(P::Installing),
            &[],
        ),
        // --- Updating agents.
        (
            "all downloaded: wait for the agents",
            four(rolling(1, 0, false, 0))
                .phase(P::Downloading)
                .all(O::Downloaded),
            &["phase UpdatingAgents"],
        ),
        (
            "agents on the bundle's version: install the first batch",
            four(rolling(1, 0, false, 0))
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0"),
            &["phase Installing", "dispatch h1"],
        ),
        (
            "one agent of the first batch still old: wait",
            pairs
                .clone()
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0")
                .alive("h2", "1.0.0"),
            &[],
        ),
        (
            "one agent of a later batch still old: the first batch installs",
            four(rolling(1, 0, false, 0))
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0")
                .alive("h3", "1.0.0"),
            &["phase Installing", "dispatch h1"],
        ),
        (
            "an agent that never updates fails after the agent timeout",
            pairs
                .clone()
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0")
                .alive("h2", "1.0.0")
                .at(61),
            &["record h2 Failed", "phase Failed"],
        ),
        // --- Rolling installs.
        (
            "a batch in flight holds the next",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Updating),
            &[],
        ),
        (
            "done and alive on the new agent: next batch at once",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Done),
            &["record h1 Succeeded", "dispatch h2"],
        ),
        (
            "done but the agent still reports the old version: failed",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Done)
                .alive("h1", "1.0.0"),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "batches of two go together",
            installing_on_2(pairs.clone()),
            &["dispatch h1", "dispatch h2"],
        ),
        (
            "half a batch done: wait for the other half",
            installing_on_2(pairs.clone())
                .host("h1", O::Succeeded)
                .host("h2", O::Dispatched)
                .status("h2", H::Verifying),
            &[],
        ),
        (
            "canary first, alone",
            installing_on_2(canary.clone()),
            &["dispatch h1"],
        ),
        (
            "canary done: pause for approval",
            installing_on_2(canary.clone())
                .host("h1", O::Dispatched)
                .status("h1", H::Done),
            &["record h1 Succeeded", "phase Paused"],
        ),
        (
            "canary approved: the next batch",
            installing_on_2(canary.clone())
                .host("h1", O::Succeeded)
                .approved(),
            &["dispatch h2", "dispatch h3"],
        ),
        (
            "a zone's last host is a batch of its own",
            installing_on_2(zoned.clone())
                .host("h1", O::Succeeded)
                .host("h2", O::Succeeded),
            &["dispatch h3"],
        ),
        (
            "the next zone after",
            installing_on_2(zoned.clone())
                .host("h1", O::Succeeded)
                .host("h2", O::Succeeded)
                .host("h3", O::Succeeded),
            &["dispatch h4"],
        ),
        (
            "a rolled back host halts the upgrade",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::RolledBack),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "within max_failures the rollout continues",
            installing_on_2(four(rolling(1, 0, false, 1)))
                .host("h1", O::Dispatched)
                .status("h1", H::Failed),
            &["record h1 Failed", "dispatch h2"],
        ),
        (
            "over max_failures it halts",
            installing_on_2(four(rolling(1, 0, false, 1)))
                .host("h1", O::Failed)
                .host("h2", O::Dispatched)
                .status("h2", H::RolledBack),
            &["record h2 Failed", "phase Failed"],
        ),
        (
            "a vanished host holds its slot",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Rebooting)
                .gone("h1", 99),
            &[],
        ),
        (
            "…and fails after the health timeout",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Rebooting)
                .gone("h1", 100),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "an alive host making no progress keeps its slot…",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Updating)
                .unchanged("h1", 999),
            &[],
        ),
        (
            "…and fails after the install timeout",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Updating)
                .unchanged("h1", 1000),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "…also when its agent never took up the desired",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .unchanged("h1", 1000),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "a gone host is judged by the health timeout, not the install timeout",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Dispatched)
                .status("h1", H::Rebooting)
                .gone("h1", 99)
                .unchanged("h1", 1000),
            &[],
        ),
        (
            "a stale status of another upgrade is not this upgrade's Done",
            {
                let mut fx = installing_on_2(four(rolling(1, 0, false, 0)))
                    .host("h1", O::Dispatched)
                    .status("h1", H::Done);
                if let Some(s) = fx
                    .view
                    .hosts
                    .get_mut(&id("h1"))
                    .and_then(|d| d.status.as_mut())
                {
                    s.value.upgrade_id = Some(UpgradeId::new("u0").expect("id"));
                }
                fx
            },
            &[],
        ),
        (
            "paused while installing: outcomes recorded, nothing dispatched",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .paused_from(P::Installing)
                .host("h1", O::Dispatched)
                .status("h1", H::Done),
            &["record h1 Succeeded"],
        ),
        (
            "a paused host is skipped at its turn when the request says so",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .skip_paused()
                .host("h1", O::Succeeded)
                .maintenance("h2", MaintenanceMode::Paused),
            &["record h2 Skipped", "dispatch h3"],
        ),
        (
            "else its batch waits for it",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Succeeded)
                .maintenance("h2", MaintenanceMode::Paused),
            &["hold h2"],
        ),
        (
            "a host held after its download is released to its batch and dispatched",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .host("h1", O::Succeeded)
                .host("h2", O::Downloaded)
                .held("h2"),
            &["release h2", "dispatch h2"],
        ),
        (
            "a daisy chain passes over a held host",
            installing_on_2(chain.clone())
                .host("h2", O::Downloaded)
                .held("h2")
                .maintenance("h2", MaintenanceMode::Paused),
            &["dispatch h1", "chain h3 after h1"],
        ),
        (
            "autohealing-off does not stop dispatch",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .maintenance("h1", MaintenanceMode::AutohealingOff),
            &["dispatch h1"],
        ),
        (
            "last batch done: succeeded",
            installing_on_2(four(rolling(1, 0, false, 0)))
                .all(O::Succeeded)
                .host("h4", O::Dispatched)
                .status("h4", H::Done),
            &["record h4 Succeeded", "phase Succeeded"],
        ),
        (
            "nothing succeeded: failed",
            installing_on_2(four(rolling(1, 0, false, 9))).all(O::Skipped),
            &["phase Failed"],
        ),
        // --- All at once.
        (
            "all at once dispatches everyone together",
            installing_on_2(all_at_once.clone()),
            &["dispatch h1", "dispatch h2", "dispatch h3"],
        ),
        (
            "all at once tolerates no failure: it halts once no host is in flight",
            installing_on_2(all_at_once.clone())
                .all(O::Dispatched)
                .status("h2", H::RolledBack),
            &["record h2 Failed"],
        ),
        (
            "all at once: a halt judges the hosts still in flight first",
            installing_on_2(all_at_once.clone())
                .all(O::Dispatched)
                .host("h2", O::Failed)
                .status("h1", H::Done)
                .status("h3", H::Failed),
            &["record h1 Succeeded", "record h3 Failed", "phase Failed"],
        ),
        // --- Daisy chain.
        (
            "daisy chain: the first host, and every later one told whom it follows",
            installing_on_2(chain.clone()),
            &["dispatch h1", "chain h2 after h1", "chain h3 after h2"],
        ),
        (
            "daisy chain: a host told up front is only recorded when its turn comes",
            installing_on_2(chain.clone())
                .host("h1", O::Dispatched)
                .status("h1", H::Done)
                .desired_for_this_upgrade("h2")
                .desired_for_this_upgrade("h3"),
            &["record h1 Succeeded", "dispatch h2 (told before)"],
        ),
        (
            "daisy chain: a later host not told yet is told (a pass that wrote nothing else)",
            installing_on_2(chain.clone())
                .host("h1", O::Dispatched)
                .desired_for_this_upgrade("h2"),
            &["chain h3 after h2"],
        ),
        // --- Terminal.
        (
            "a terminal upgrade is left alone",
            four(rolling(1, 0, false, 0)).phase(P::Aborted),
            &[],
        ),
        // --- Hosts held by a task, and the tasks themselves.
        (
            "a host a task holds gets no downloader job yet",
            four(rolling(1, 0, false, 0)).claimed("h1"),
            &["phase Downloading", "download h2", "download h3"],
        ),
        (
            "nor a desired key",
            installing_on_2(pairs.clone()).claimed("h2"),
            &["dispatch h1"],
        ),
        (
            "a heal ends once the agent is back on the bundle's agent version",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
                .task(TaskKind::Heal)
                .phase(P::UpdatingAgents)
                .all(O::Downloaded)
                .all_alive("2.0.0"),
            &["phase Installing", "record h1 Succeeded", "phase Succeeded"],
        ),
        (
            "a heal waits for the agent like an upgrade",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
                .task(TaskKind::Heal)
                .phase(P::UpdatingAgents)
                .all(O::Downloaded),
            &[],
        ),
        (
            "a restart (nothing to stage) goes straight to dispatching restart",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
                .task(TaskKind::Restart)
                .all(O::Downloaded),
            &[
                "phase Downloading",
                "phase UpdatingAgents",
                "phase Installing",
                "dispatch h1",
            ],
        ),
        (
            "a restart waits for an agent to be alive",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
                .task(TaskKind::Restart)
                .all(O::Downloaded)
                .gone("h1", 5),
            &["phase Downloading", "phase UpdatingAgents"],
        ),
        (
            "a replace downloads, then dispatches",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]).task(TaskKind::Replace),
            &["phase Downloading", "download h1"],
        ),
        (
            "a restart succeeds on Done",
            Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
                .task(TaskKind::Restart)
                .phase(P::Installing)
                .host("h1", O::Dispatched)
                .status("h1", H::Done),
            &["record h1 Succeeded", "phase Succeeded"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, fx, want) in cases {
        let got: Vec<String> = fx.decide().iter().map(line).collect();
        if got != want {
            failures.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn tasks_dispatch_their_action() {
    use crate::engine::execute::{desired_action, desired_for};
    let fx = Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]);
    assert_eq!(desired_action(&fx.upgrade), DesiredAction::Install);
    for (kind, action) in [
        (TaskKind::Join, DesiredAction::Install),
        (TaskKind::Restart, DesiredAction::Restart),
        (TaskKind::Replace, DesiredAction::Replace),
    ] {
        let u = fx.clone().task(kind).upgrade;
        assert_eq!(
            desired_for(&u, None, &T0.to_owned()).action,
            action,
            "{kind:?}"
        );
    }
    let u = fx.reboot_task().upgrade;
    assert_eq!(
        desired_for(&u, None, &T0.to_owned()).action,
        DesiredAction::Reboot
    );
}

#[test]
fn a_restart_task_records_that_its_host_resumed() {
    use crate::engine::execute::event_for;
    let done = |fx: Fx| {
        fx.phase(P::Installing)
            .host("h1", O::Dispatched)
            .status("h1", H::Done)
    };
    let cases = [
        (
            done(Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]).task(TaskKind::Restart)),
            "h1 resumed after its managed services were restarted; agent: Done message",
        ),
        (
            done(Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]).reboot_task()),
            "h1 resumed after the reboot; agent: Done message",
        ),
    ];
    for (fx, want) in cases {
        let actions = fx.decide();
        let record = actions
            .iter()
            .find(|a| matches!(a, Action::Record { .. }))
            .expect("the host is recorded");
        let event = event_for(&fx.upgrade, record, &T0.to_owned()).expect("an event");
        assert_eq!(event.kind, "host-succeeded");
        assert_eq!(event.message, want);
        assert_eq!(event.host, Some(id("h1")));
        // The note is the event's, not the record's: a success keeps no reason.
        let mut u = fx.upgrade.clone();
        apply(&mut u, record, &T0.to_owned());
        assert_eq!(u.hosts[&id("h1")].state, O::Succeeded);
        assert_eq!(u.hosts[&id("h1")].reason, "");
    }
    // Other records keep the plain message.
    let fx = done(Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]).task(TaskKind::Replace))
        .all_alive("2.0.0");
    let actions = fx.decide();
    let event = event_for(&fx.upgrade, &actions[0], &T0.to_owned()).expect("an event");
    assert_eq!(event.message, "Succeeded: on 2.0.0");
}

#[test]
fn every_phase_change_is_legal() {
    let fixtures = [
        four(rolling(1, 0, false, 0)),
        four(rolling(1, 0, false, 0))
            .phase(P::Downloading)
            .all(O::Downloaded)
            .all_alive("2.0.0"),
        installing_on_2(four(rolling(1, 1, true, 0)))
            .host("h1", O::Dispatched)
            .status("h1", H::Done),
        installing_on_2(four(rolling(1, 0, false, 0)))
            .all(O::Succeeded)
            .host("h4", O::Dispatched)
            .status("h4", H::Failed),
    ];
    for fx in fixtures {
        let mut phase = fx.upgrade.phase;
        for a in fx.decide() {
            if let Action::Phase { to, .. } = a {
                assert!(phase.check_transition(to).is_ok(), "{phase} -> {to}");
                phase = to;
            }
        }
    }
}

#[test]
fn failures_name_hosts_and_reasons() {
    let actions = installing_on_2(four(rolling(1, 0, false, 0)))
        .host("h1", O::Dispatched)
        .status("h1", H::RolledBack)
        .decide();
    let Some(Action::Phase {
        to: P::Failed,
        reason: Some(reason),
    }) = actions.last()
    else {
        panic!("{actions:?}");
    };
    assert!(
        reason.contains("h1: RolledBack: RolledBack message"),
        "{reason}"
    );

    let actions = installing_on_2(four(rolling(1, 0, false, 0)))
        .host("h1", O::Dispatched)
        .status("h1", H::Rebooting)
        .gone("h1", 150)
        .decide();
    let Some(Action::Record { reason, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    assert!(
        reason.contains("not alive for 150s while Rebooting"),
        "{reason}"
    );

    let actions = installing_on_2(four(rolling(1, 0, false, 0)))
        .host("h1", O::Dispatched)
        .status("h1", H::Updating)
        .unchanged("h1", 1200)
        .decide();
    let Some(Action::Record { reason, .. }) = actions.first() else {
        panic!("{actions:?}");
    };
    assert!(
        reason.contains("no progress for 1200s while Updating")
            && reason.contains("install timeout 1000s"),
        "{reason}"
    );
}

#[test]
fn applying_a_pass_records_it() {
    let fx = installing_on_2(four(rolling(1, 0, false, 0)))
        .host("h1", O::Dispatched)
        .status("h1", H::Done)
        .at(30);
    let mut u = fx.upgrade.clone();
    let now = humantime::format_rfc3339_millis(fx.now).to_string();
    for a in fx.decide() {
        apply(&mut u, &a, &now);
    }
    assert_eq!(u.hosts[&id("h1")].state, O::Succeeded);
    assert_eq!(u.hosts[&id("h2")].state, O::Dispatched);
    assert_eq!(
        u.hosts[&id("h2")].dispatched_at.as_deref(),
        Some(now.as_str())
    );
    assert_eq!(u.updated_at, now);
    // Deciding again on the applied record changes nothing (h2 is in flight).
    let again = Fx { upgrade: u, ..fx };
    assert_eq!(again.decide(), Vec::<Action>::new());
}

#[test]
fn pausing_remembers_the_phase() {
    let fx = installing_on_2(four(rolling(1, 1, true, 0)))
        .host("h1", O::Dispatched)
        .status("h1", H::Done);
    let mut u = fx.upgrade.clone();
    for a in fx.decide() {
        apply(&mut u, &a, &"t".to_owned());
    }
    assert_eq!(u.phase, P::Paused);
    assert_eq!(u.paused_from, Some(P::Installing));
    assert!(canaries_done(&u));
    assert!(
        u.reason
            .as_deref()
            .unwrap_or_default()
            .contains("canaries done")
    );
}

#[test]
fn holding_keeps_where_the_host_was_and_releasing_returns_it_there() {
    let now = T0.to_owned();
    for from in [O::Pending, O::Downloaded] {
        let mut u = Fx::new(rolling(1, 0, false, 0), &[("h1", 0)]).upgrade;
        u.hosts.get_mut(&id("h1")).expect("h1").state = from;
        let hold = Action::Hold {
            host: id("h1"),
            held: true,
        };
        apply(&mut u, &hold, &now);
        let h = &u.hosts[&id("h1")];
        assert_eq!(
            (h.state, h.held_from, h.stage()),
            (O::Held, Some(from), from)
        );
        assert!(from.check_transition(O::Held).is_ok());
        let release = Action::Hold {
            host: id("h1"),
            held: false,
        };
        apply(&mut u, &release, &now);
        let h = &u.hosts[&id("h1")];
        assert_eq!((h.state, h.held_from), (from, None));
        assert!(O::Held.check_transition(from).is_ok());
    }
}

/// Soaks and maintenance windows, with the same fixture.
mod pacing;
mod revert;

/// When an upgrade is due again with nothing changed: each clock that can turn into an
/// action, and at that moment the decision does act (no timeout is missed by waiting).
#[test]
fn an_upgrade_is_due_again_when_its_first_clock_runs_out() {
    let installing = Fx::new(rolling(2, 0, false, 0), &[("h1", 0), ("h2", 0), ("h3", 1)])
        .phase(P::Installing)
        .all(O::Downloaded)
        .all_alive("2.0.0")
        .host("h1", O::Dispatched)
        .host("h2", O::Dispatched)
        .status("h1", H::Updating)
        .status("h2", H::Updating);
    // Alive hosts: the install timeout, from the last change of the one waiting longest.
    let fx = installing.clone().unchanged("h1", 400).unchanged("h2", 900);
    assert_eq!(fx.wake(), Some(100));
    assert!(fx.decide().is_empty(), "nothing due yet");
    assert_eq!(
        lines(&fx.unchanged("h2", 1000).decide()),
        ["record h2 Failed"],
        "due: the install timeout fires (the halt waits for h1, still in flight)"
    );
    // A gone host: the health timeout, although its status is recent.
    let fx = installing.clone().unchanged("h1", 10).gone("h2", 30);
    assert_eq!(fx.wake(), Some(70));
    assert!(fx.decide().is_empty());
    assert!(lines(&fx.gone("h2", 100).decide()).contains(&"record h2 Failed".to_owned()));
    // Hosts not told anything run no clock: a downloaded host of a later batch is waited
    // for by changes only.
    assert_eq!(
        installing
            .clone()
            .host("h1", O::Succeeded)
            .host("h2", O::Succeeded)
            .unchanged("h3", 5000)
            .phase(P::Downloading)
            .wake(),
        None
    );
    // `UpdatingAgents`: the agent timeout, from the phase's start.
    let agents = Fx::new(rolling(1, 0, false, 0), &[("h1", 0)])
        .phase(P::UpdatingAgents)
        .all(O::Downloaded)
        .at(45);
    assert_eq!(agents.wake(), Some(15));
    assert!(agents.decide().is_empty());
    assert_eq!(
        lines(&agents.at(60).decide()),
        ["record h1 Failed", "phase Failed"]
    );
    // A finished upgrade waits for nothing.
    assert_eq!(installing.phase(P::Succeeded).wake(), None);
}
