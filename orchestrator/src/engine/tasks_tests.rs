//! Table tests of the leader's own tasks: a fleet (hosts, groups, records) and the actions
//! expected, written as short lines (`create join-h3-1`, `clear h1 (restart-h1-1)`).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use baton_protocol::documents::{
    Alive, BatchSize, HostOutcome, HostOutcomeState as O, HostSpec, Installed, Maintenance,
    MaintenanceMode as M, SCHEMA_VERSION, Strategy, Task, TaskKind as K, Upgrade,
};
use baton_protocol::etcd::Versioned;
use baton_protocol::{GroupName, HostId, UpgradeId, UpgradePhase as P};

use super::*;
use crate::engine::model::Limits;
use crate::view::FleetView;

pub(crate) const T0: &str = "2026-01-01T00:00:00.000Z";

/// The registration of host `h`, in group `edge`.
pub(crate) fn spec(h: &str) -> HostSpec {
    HostSpec {
        schema_version: SCHEMA_VERSION,
        host: id(h),
        labels: [("group".to_owned(), "edge".to_owned())].into(),
        docker: "unix:///var/run/docker.sock".into(),
        path_map: BTreeMap::new(),
        boot_id_file: None,
        kernel_release_file: None,
        container_prefix: None,
        quorum_member: false,
        registered_at: T0.into(),
    }
}

/// `secs` seconds after [`T0`].
pub(crate) fn at(secs: u64) -> SystemTime {
    humantime::parse_rfc3339(T0).expect("T0") + Duration::from_secs(secs)
}

fn ts(secs: u64) -> String {
    humantime::format_rfc3339_millis(at(secs)).to_string()
}

fn id(h: &str) -> HostId {
    HostId::new(h).expect("host id")
}

fn v<T>(value: T, rev: i64) -> Option<Versioned<T>> {
    Some(Versioned {
        value,
        mod_revision: rev,
    })
}

#[derive(Clone)]
struct Fx {
    view: FleetView,
    missing: BTreeMap<HostId, Duration>,
    docker: BTreeMap<HostId, bool>,
    now: SystemTime,
}

impl Fx {
    fn new() -> Fx {
        Fx {
            view: FleetView::default(),
            missing: BTreeMap::new(),
            docker: BTreeMap::new(),
            now: at(1000),
        }
    }

    /// A registered host in group `edge`, its agent alive, on bundle `version` (if any).
    fn host(mut self, h: &str, version: Option<&str>) -> Self {
        let docs = self.view.hosts.entry(id(h)).or_default();
        docs.spec = v(spec(h), 2);
        docs.alive = v(
            Alive {
                schema_version: SCHEMA_VERSION,
                agent_version: version.unwrap_or("0.0.0").into(),
                boot_id: "b".into(),
                pid: 1,
                since: T0.into(),
            },
            3,
        );
        docs.installed = version.and_then(|ver| {
            v(
                Installed {
                    schema_version: SCHEMA_VERSION,
                    bundle_version: Some(ver.into()),
                    agent_version: ver.into(),
                    kernel: None,
                    components: BTreeMap::new(),
                    updated_at: T0.into(),
                },
                4,
            )
        });
        self
    }

    fn label(mut self, h: &str, k: &str, val: &str) -> Self {
        if let Some(s) = self
            .view
            .hosts
            .get_mut(&id(h))
            .and_then(|d| d.spec.as_mut())
        {
            s.value.labels.insert(k.into(), val.into());
        }
        self
    }

    /// The agent has been gone for `secs` (as this replica saw it).
    fn gone(mut self, h: &str, secs: u64) -> Self {
        if let Some(d) = self.view.hosts.get_mut(&id(h)) {
            d.alive = None;
        }
        self.missing.insert(id(h), Duration::from_secs(secs));
        self
    }

    fn docker(mut self, h: &str, answers: bool) -> Self {
        self.docker.insert(id(h), answers);
        self
    }

    fn mode(mut self, h: &str, mode: M) -> Self {
        self.view.hosts.entry(id(h)).or_default().maintenance = v(
            Maintenance {
                schema_version: SCHEMA_VERSION,
                mode,
                reason: String::new(),
                since: T0.into(),
                reboot: false,
            },
            8,
        );
        self
    }

    fn group_mode(mut self, mode: M) -> Self {
        self.view.groups.insert(
            GroupName::new("edge").expect("group"),
            Versioned {
                value: Maintenance {
                    schema_version: SCHEMA_VERSION,
                    mode,
                    reason: String::new(),
                    since: T0.into(),
                    reboot: false,
                },
                mod_revision: 9,
            },
        );
        self
    }

    /// An operator upgrade `uid` to `version` at minute `created`, hosts with their states.
    fn upgrade(
        mut self,
        uid: &str,
        version: &str,
        phase: P,
        created: u64,
        hosts: &[(&str, O)],
    ) -> Self {
        let u = record(uid, version, phase, created, hosts, None);
        self.view.wrote_upgrade(u, 10);
        self
    }

    /// A task record.
    fn task(mut self, uid: &str, kind: K, host: &str, phase: P, ended: u64, group: bool) -> Self {
        let state = if phase == P::Succeeded {
            O::Succeeded
        } else if phase.is_terminal() {
            O::Failed
        } else {
            O::Pending
        };
        let task = Task {
            kind,
            host: id(host),
            follows: Some(UpgradeId::new("u1").expect("id")),
            maintenance_since: matches!(kind, K::Restart | K::Replace).then(|| T0.to_owned()),
            group: group.then(|| GroupName::new("edge").expect("group")),
            reboot: false,
        };
        let mut u = record(uid, "2.0.0", phase, ended, &[(host, state)], Some(task));
        u.updated_at = ts(ended);
        self.view.wrote_upgrade(u, 11);
        self
    }

    /// Record `uid` told `h` to install.
    fn dispatched(mut self, uid: &str, h: &str) -> Self {
        let key = UpgradeId::new(uid).expect("id");
        if let Some(u) = self.view.upgrades.get_mut(&key)
            && let Some(o) = u.value.hosts.get_mut(&id(h))
        {
            o.state = O::Dispatched;
            o.dispatched_at = Some(T0.into());
        }
        self
    }

    /// Record `uid` ended for `reason`.
    fn reason(mut self, uid: &str, reason: &str) -> Self {
        let key = UpgradeId::new(uid).expect("id");
        if let Some(u) = self.view.upgrades.get_mut(&key) {
            u.value.reason = Some(reason.into());
        }
        self
    }

    fn decide(&self) -> Vec<TaskAction> {
        let limits = Limits {
            heal_grace: Duration::from_secs(30),
            ..Limits::default()
        };
        next_tasks(
            &FleetObserved {
                view: &self.view,
                alive_missing_for: &self.missing,
                docker_answers: &self.docker,
                now: self.now,
            },
            &limits,
        )
    }
}

/// A record `uid` to `version` created `created` seconds after [`T0`], its hosts with their
/// states (dispatched at `T0` when they reached it).
pub(crate) fn record(
    uid: &str,
    version: &str,
    phase: P,
    created: u64,
    hosts: &[(&str, O)],
    task: Option<Task>,
) -> Upgrade {
    Upgrade {
        schema_version: SCHEMA_VERSION,
        id: UpgradeId::new(uid).expect("id"),
        bundle: format!("r/b@sha256:{version}"),
        version: version.into(),
        strategy: Strategy::Rolling {
            batch: BatchSize::Count(1),
            canary: 0,
            pause_after_canary: false,
            zone_label: None,
            max_failures: 0,
        },
        selector: BTreeMap::new(),
        strategy_reason: None,
        phase,
        paused_from: None,
        hosts: hosts
            .iter()
            .map(|(h, s)| {
                (
                    id(h),
                    HostOutcome {
                        state: *s,
                        reason: String::new(),
                        batch: Some(0),
                        dispatched_at: matches!(s, O::Succeeded | O::Dispatched)
                            .then(|| T0.to_owned()),
                        held_from: None,
                        previous: None,
                        revert: None,
                    },
                )
            })
            .collect(),
        reason: None,
        agent_version: Some(version.into()),
        phase_since: None,
        canary_approved: false,
        events: 3,
        listed: false,
        task,
        orchestrator: None,
        signature: None,
        skip_paused: false,
        allow_downgrade: false,
        on_failure: baton_protocol::documents::OnFailure::Halt,
        created_at: ts(created),
        updated_at: ts(created),
        soak: None,
        waiting_for_window: None,
    }
}

fn line(a: &TaskAction) -> String {
    match a {
        TaskAction::Probe { host } => format!("probe {host}"),
        TaskAction::Create { upgrade, .. } => format!("create {}", upgrade.id),
        TaskAction::Preempt { record } => format!("abort {record}"),
        TaskAction::ClearHost { host, record, .. } => format!("clear {host} ({record})"),
        TaskAction::ClearGroup { group, record, .. } => format!("clear group {group} ({record})"),
    }
}

/// h1 and h2 upgraded to 2.0.0 by u1.
fn fleet() -> Fx {
    Fx::new()
        .host("h1", Some("2.0.0"))
        .host("h2", Some("2.0.0"))
        .upgrade(
            "u1",
            "2.0.0",
            P::Succeeded,
            10,
            &[("h1", O::Succeeded), ("h2", O::Succeeded)],
        )
}

#[test]
fn tasks_table() {
    let cases: Vec<(&str, Fx, &[&str])> = vec![
        ("a settled fleet needs nothing", fleet(), &[]),
        // --- Late joiners.
        (
            "a host registered after the upgrade joins it",
            fleet().host("h3", None),
            &["create join-h3-1"],
        ),
        (
            "joins run alongside each other",
            fleet().host("h3", None).host("h4", Some("1.0.0")),
            &["create join-h3-1", "create join-h4-1"],
        ),
        (
            "at most download_concurrency joins in progress",
            {
                let mut fx = fleet();
                for i in 0..70 {
                    fx = fx.host(&format!("n{i:02}"), None);
                }
                for i in 0..63 {
                    let h = format!("n{i:02}");
                    fx = fx.task(
                        &format!("join-{h}-1"),
                        K::Join,
                        &h,
                        P::Downloading,
                        20,
                        false,
                    );
                }
                fx
            },
            &["create join-n63-1"],
        ),
        (
            "a joiner already on the version is left alone",
            fleet().host("h3", Some("2.0.0")),
            &[],
        ),
        (
            "no join while an upgrade is active",
            fleet().host("h3", None).upgrade(
                "u2",
                "3.0.0",
                P::Installing,
                20,
                &[("h1", O::Dispatched)],
            ),
            &[],
        ),
        (
            "a join does not wait for another",
            fleet().host("h3", None).host("h4", None).task(
                "join-h3-1",
                K::Join,
                "h3",
                P::Downloading,
                20,
                false,
            ),
            &["create join-h4-1"],
        ),
        (
            "an operator's upgrade aborts a join that has not told its host",
            fleet()
                .host("h3", None)
                .task("join-h3-1", K::Join, "h3", P::Downloading, 20, false)
                .upgrade("u2", "3.0.0", P::Downloading, 30, &[("h1", O::Pending)]),
            &["abort join-h3-1"],
        ),
        (
            "a join that told its host finishes",
            fleet()
                .host("h3", None)
                .task("join-h3-1", K::Join, "h3", P::Installing, 20, false)
                .dispatched("join-h3-1", "h3")
                .upgrade("u2", "3.0.0", P::Downloading, 30, &[("h1", O::Pending)]),
            &[],
        ),
        (
            "a join aborted for an operator's upgrade is made again once it ended",
            fleet()
                .host("h3", None)
                .task("join-h3-1", K::Join, "h3", P::Aborted, 20, false)
                .reason("join-h3-1", JOIN_PREEMPTED)
                .upgrade("u2", "3.0.0", P::Failed, 30, &[("h1", O::Failed)]),
            &["create join-h3-2"],
        ),
        (
            "a join aborted by an operator is not",
            fleet()
                .host("h3", None)
                .task("join-h3-1", K::Join, "h3", P::Aborted, 20, false)
                .reason("join-h3-1", "aborted by the operator"),
            &[],
        ),
        (
            "a failed join is not retried by itself",
            fleet()
                .host("h3", None)
                .task("join-h3-1", K::Join, "h3", P::Failed, 20, false),
            &[],
        ),
        (
            "a host the upgrade selected but that failed is no late joiner",
            Fx::new()
                .host("h1", Some("2.0.0"))
                .host("h2", Some("1.0.0"))
                .upgrade(
                    "u1",
                    "2.0.0",
                    P::Succeeded,
                    10,
                    &[("h1", O::Succeeded), ("h2", O::Failed)],
                ),
            &[],
        ),
        (
            "the fleet's version is the latest succeeded upgrade, not a failed one",
            fleet()
                .upgrade("u2", "3.0.0", P::Failed, 20, &[("h1", O::Failed)])
                .host("h3", Some("3.0.0")),
            &["create join-h3-1"],
        ),
        (
            "a host outside the upgrade's selector does not join",
            {
                let mut fx = fleet().host("h3", None).label("h3", "zone", "b");
                let u1 = UpgradeId::new("u1").expect("id");
                if let Some(u) = fx.view.upgrades.get_mut(&u1) {
                    u.value.selector = [("zone".to_owned(), "a".to_owned())].into();
                }
                fx
            },
            &[],
        ),
        (
            "a paused host does not join",
            fleet().host("h3", None).mode("h3", M::Paused),
            &[],
        ),
        // --- Autohealing.
        (
            "an agent gone within the grace period is left alone",
            fleet().gone("h1", 29),
            &[],
        ),
        (
            "past the grace period the host's Docker Engine is probed first",
            fleet().gone("h1", 31),
            &["probe h1"],
        ),
        (
            "it answers: heal with the current bundle",
            fleet().gone("h1", 31).docker("h1", true),
            &["create heal-h1-1"],
        ),
        (
            "it does not answer: nothing",
            fleet().gone("h1", 31).docker("h1", false),
            &[],
        ),
        (
            "autohealing-off on the host",
            fleet()
                .gone("h1", 31)
                .docker("h1", true)
                .mode("h1", M::AutohealingOff),
            &[],
        ),
        (
            "autohealing-off on its group",
            fleet()
                .gone("h1", 31)
                .docker("h1", true)
                .group_mode(M::AutohealingOff),
            &[],
        ),
        (
            "a host in an upgrade's install slot is never healed",
            fleet().gone("h1", 500).docker("h1", true).upgrade(
                "u2",
                "3.0.0",
                P::Installing,
                20,
                &[("h1", O::Dispatched), ("h2", O::Pending)],
            ),
            &[],
        ),
        (
            "a host without a bundle from Baton is not healed (it may join)",
            fleet().host("h3", None).gone("h3", 500).docker("h3", true),
            &["create join-h3-1"],
        ),
        (
            "a heal in progress is not doubled",
            fleet().gone("h1", 500).docker("h1", true).task(
                "heal-h1-1",
                K::Heal,
                "h1",
                P::UpdatingAgents,
                990,
                false,
            ),
            &[],
        ),
        (
            "after a failed heal the next waits twice the grace period",
            fleet().gone("h1", 500).docker("h1", true).task(
                "heal-h1-1",
                K::Heal,
                "h1",
                P::Failed,
                950,
                false,
            ),
            &[],
        ),
        (
            "… and then heals again",
            fleet().gone("h1", 500).docker("h1", true).task(
                "heal-h1-1",
                K::Heal,
                "h1",
                P::Failed,
                930,
                false,
            ),
            &["create heal-h1-2"],
        ),
        (
            "after a successful heal the agent dying again is healed again",
            fleet().gone("h1", 31).docker("h1", true).task(
                "heal-h1-1",
                K::Heal,
                "h1",
                P::Succeeded,
                990,
                false,
            ),
            &["create heal-h1-2"],
        ),
        // --- Maintenance restart and replace.
        (
            "restart on a host creates its task",
            fleet().mode("h1", M::Restart),
            &["create restart-h1-1"],
        ),
        (
            "replace on a host creates its task",
            fleet().mode("h2", M::Replace),
            &["create replace-h2-1"],
        ),
        (
            "a task in progress holds the host",
            fleet().mode("h1", M::Restart).task(
                "restart-h1-1",
                K::Restart,
                "h1",
                P::Installing,
                990,
                false,
            ),
            &[],
        ),
        (
            "once it succeeded the host's mode is cleared",
            fleet().mode("h1", M::Restart).task(
                "restart-h1-1",
                K::Restart,
                "h1",
                P::Succeeded,
                990,
                false,
            ),
            &["clear h1 (restart-h1-1)"],
        ),
        (
            "a failed task leaves the mode set and is not retried",
            fleet().mode("h1", M::Replace).task(
                "replace-h1-1",
                K::Replace,
                "h1",
                P::Failed,
                990,
                false,
            ),
            &[],
        ),
        (
            "a host without a bundle has nothing to restart",
            fleet().host("h3", Some("2.0.0")).mode("h3", M::Restart),
            &[],
        ),
        (
            "a group restart goes one host at a time",
            fleet().group_mode(M::Restart),
            &["create restart-h1-1"],
        ),
        (
            "… the next host once the first is done",
            fleet().group_mode(M::Restart).task(
                "restart-h1-1",
                K::Restart,
                "h1",
                P::Succeeded,
                990,
                true,
            ),
            &["create restart-h2-1"],
        ),
        (
            "… and the group's mode clears when every host is done",
            fleet()
                .group_mode(M::Replace)
                .task("replace-h1-1", K::Replace, "h1", P::Succeeded, 980, true)
                .task("replace-h2-1", K::Replace, "h2", P::Succeeded, 990, true),
            &["clear group edge (replace-h2-1)"],
        ),
        (
            "a host with its own mode is not part of its group's restart",
            fleet().group_mode(M::Restart).mode("h2", M::Paused).task(
                "restart-h1-1",
                K::Restart,
                "h1",
                P::Succeeded,
                990,
                true,
            ),
            &["clear group edge (restart-h1-1)"],
        ),
        (
            "a host joining a group later is restarted before the group clears",
            fleet()
                .group_mode(M::Restart)
                .task("restart-h1-1", K::Restart, "h1", P::Succeeded, 980, true)
                .task("restart-h2-1", K::Restart, "h2", P::Succeeded, 990, true)
                .host("h3", Some("2.0.0"))
                .task("join-h3-1", K::Join, "h3", P::Succeeded, 995, false),
            &["create restart-h3-1"],
        ),
    ];
    let mut failures = Vec::new();
    for (name, fx, want) in &cases {
        let got: Vec<String> = fx.decide().iter().map(line).collect();
        if got != *want {
            failures.push(format!("{name}:\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn task_records_carry_the_current_bundle_and_the_right_first_state() {
    let fx = fleet()
        .mode("h1", M::Restart)
        .gone("h2", 60)
        .docker("h2", true);
    let actions = fx.decide();
    let records: Vec<&Upgrade> = actions
        .iter()
        .filter_map(|a| match a {
            TaskAction::Create { upgrade, .. } => Some(upgrade.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(records.len(), 2, "{actions:?}");
    let restart = records[0];
    assert_eq!(restart.bundle, "r/b@sha256:2.0.0");
    assert_eq!(
        restart.hosts[&id("h1")].state,
        O::Downloaded,
        "a restart stages nothing"
    );
    assert_eq!(restart.agent_version, None);
    let task = restart.task.as_ref().expect("task");
    assert_eq!(task.maintenance_since.as_deref(), Some(T0));
    assert_eq!(task.follows.as_ref().map(UpgradeId::as_str), Some("u1"));
    let heal = records[1];
    assert_eq!(
        heal.hosts[&id("h2")].state,
        O::Pending,
        "a heal runs the job"
    );
    assert_eq!(heal.agent_version.as_deref(), Some("2.0.0"));
    assert!(heal.listed);
    let TaskAction::Create { message, .. } = &actions[1] else {
        panic!("{actions:?}")
    };
    assert!(message.contains("gone for 60s"), "{message}");
}

#[test]
fn a_deliberate_downgrade_stays_one_for_hosts_reinstalled_later() {
    let mut fx = fleet().mode("h1", M::Replace);
    let u1 = UpgradeId::new("u1").expect("id");
    for (allowed, want) in [(false, false), (true, true)] {
        if let Some(u) = fx.view.upgrades.get_mut(&u1) {
            u.value.allow_downgrade = allowed;
        }
        let actions = fx.decide();
        let Some(TaskAction::Create { upgrade, .. }) = actions.first() else {
            panic!("{actions:?}")
        };
        assert_eq!(upgrade.allow_downgrade, want, "{actions:?}");
    }
}

#[test]
fn a_restart_with_reboot_carries_it_into_its_task() {
    let mut fx = fleet().mode("h1", M::Restart);
    if let Some(m) = fx
        .view
        .hosts
        .get_mut(&id("h1"))
        .and_then(|d| d.maintenance.as_mut())
    {
        m.value.reboot = true;
    }
    let actions = fx.decide();
    let [
        TaskAction::Create {
            upgrade, message, ..
        },
    ] = actions.as_slice()
    else {
        panic!("{actions:?}")
    };
    let task = upgrade.task.as_ref().expect("task");
    assert_eq!(task.kind, K::Restart);
    assert!(task.reboot, "{task:?}");
    assert!(message.contains("rebooting h1"), "{message}");
    assert_eq!(
        crate::engine::execute::desired_action(upgrade),
        baton_protocol::documents::DesiredAction::Reboot
    );
    // Without it, the task restarts services.
    let actions = fleet().mode("h1", M::Restart).decide();
    let [TaskAction::Create { upgrade, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(!upgrade.task.as_ref().expect("task").reboot);
}

#[test]
fn the_current_bundle_prefers_the_installed_version() {
    let fx = fleet().upgrade("u2", "3.0.0", P::Failed, 20, &[("h1", O::Dispatched)]);
    let h1 = id("h1");
    assert_eq!(
        current_bundle(&fx.view, &h1).map(|u| u.id.as_str()),
        Some("u1"),
        "h1 still reports 2.0.0 installed"
    );
    let mut fx = fx;
    if let Some(i) = fx
        .view
        .hosts
        .get_mut(&h1)
        .and_then(|d| d.installed.as_mut())
    {
        i.value.bundle_version = Some("3.0.0".into());
    }
    assert_eq!(
        current_bundle(&fx.view, &h1).map(|u| u.id.as_str()),
        Some("u2")
    );
}

#[test]
fn task_ids_fit_the_name_limit() {
    let long = "h".repeat(63);
    let view = FleetView::default();
    let id = task_id(
        &view,
        &Index::new(&view),
        K::Replace,
        &HostId::new(long).expect("id"),
    )
    .expect("task id");
    assert_eq!(id.as_str().len(), 63);
    assert!(id.as_str().starts_with("replace-hhh") && id.as_str().ends_with("-1"));
}

#[test]
fn a_reverting_upgrade_holds_its_hosts_until_their_revert_ended() {
    use baton_protocol::documents::{HostRevert, RevertState};
    let with_revert = |state: Option<RevertState>| {
        let mut u = record(
            "u2",
            "3.0.0",
            P::Reverting,
            20,
            &[("h1", O::Succeeded)],
            None,
        );
        if let Some(h) = u.hosts.get_mut(&id("h1")) {
            h.revert = state.map(|state| HostRevert {
                state,
                reason: String::new(),
                dispatched_at: None,
            });
        }
        let mut fx = fleet().mode("h1", M::Restart);
        fx.view.wrote_upgrade(u, 12);
        fx.decide().iter().map(line).collect::<Vec<_>>()
    };
    let none: &[&str] = &[];
    assert_eq!(with_revert(None), none, "not reverted yet");
    assert_eq!(
        with_revert(Some(RevertState::Dispatched)),
        none,
        "being reverted"
    );
    assert_eq!(
        with_revert(Some(RevertState::Reverted)),
        ["create restart-h1-1"],
        "reverted"
    );
}
