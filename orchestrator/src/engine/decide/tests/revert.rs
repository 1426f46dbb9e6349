//! Table tests of `on_failure`: the halt or revert once failures pass what is tolerated (or
//! a canary fails), the bundle recorded per host at dispatch, the revert's reverse batch
//! order, its judging and its end.

use baton_protocol::documents::{
    HostRevert, Installed, OnFailure, PreviousBundle, RevertState, Upgrade,
};
use baton_protocol::signing::BundleSignature;

use super::pacing::ts;
use super::*;

/// The record that put the fleet on 1.0.0.
fn v1_record() -> Upgrade {
    let mut u = Fx::new(rolling(1, 0, false, 0), &[("h1", 0), ("h2", 1), ("h3", 2)])
        .all(O::Succeeded)
        .upgrade;
    u.id = UpgradeId::new("u0").expect("id");
    u.version = "1.0.0".into();
    u.bundle = "r/b@sha256:11".into();
    u.phase = P::Succeeded;
    for h in u.hosts.values_mut() {
        h.dispatched_at = Some(T0.into());
    }
    u.signature = Some(BundleSignature {
        payload: "signed 1.0.0".into(),
        signature: "sig".into(),
    });
    u
}

fn v1() -> PreviousBundle {
    PreviousBundle {
        bundle: "r/b@sha256:11".into(),
        version: "1.0.0".into(),
        upgrade: UpgradeId::new("u0").expect("id"),
    }
}

impl Fx {
    fn on_failure(mut self, f: OnFailure) -> Self {
        self.upgrade.on_failure = f;
        self
    }

    /// The fleet's 1.0.0 record is in etcd and each host reports 1.0.0 installed.
    fn on_v1(mut self) -> Self {
        let record = v1_record();
        self.view.upgrades.insert(
            record.id.clone(),
            Versioned {
                value: record,
                mod_revision: 3,
            },
        );
        let hosts: Vec<HostId> = self.upgrade.hosts.keys().cloned().collect();
        for h in hosts {
            self.view.hosts.entry(h).or_default().installed = Some(Versioned {
                value: Installed {
                    schema_version: SCHEMA_VERSION,
                    bundle_version: Some("1.0.0".into()),
                    agent_version: "2.0.0".into(),
                    kernel: None,
                    components: BTreeMap::new(),
                    updated_at: T0.into(),
                },
                mod_revision: 4,
            });
        }
        self
    }

    /// `h` was told to install, running 1.0.0 then.
    fn was_on_v1(mut self, h: &str) -> Self {
        let outcome = self.upgrade.hosts.get_mut(&id(h)).expect("host");
        outcome.previous = Some(v1());
        outcome.dispatched_at = Some(T0.into());
        self
    }

    fn revert_state(mut self, h: &str, state: RevertState) -> Self {
        let outcome = self.upgrade.hosts.get_mut(&id(h)).expect("host");
        outcome.revert = Some(HostRevert {
            state,
            reason: if state == RevertState::Failed {
                format!("{h} refused 1.0.0")
            } else {
                String::new()
            },
            dispatched_at: Some(T0.into()),
        });
        self
    }

    /// `h`'s agent reports `state` for the revert's id.
    fn revert_status(self, h: &str, state: H) -> Self {
        let mut fx = self.status(h, state);
        let revert = fx.upgrade.id.revert();
        if let Some(s) = fx
            .view
            .hosts
            .get_mut(&id(h))
            .and_then(|d| d.status.as_mut())
        {
            s.value.upgrade_id = Some(revert);
        }
        fx
    }
}

/// Three hosts, one per batch, installing 2.0.0 with agents on 2.0.0; every host ran 1.0.0.
fn three(max_failures: u32, on_failure: OnFailure) -> Fx {
    Fx::new(
        rolling(1, 0, false, max_failures),
        &[("h1", 0), ("h2", 1), ("h3", 2)],
    )
    .phase(P::Installing)
    .all(O::Downloaded)
    .all_alive("2.0.0")
    .on_v1()
    .on_failure(on_failure)
}

/// h1 upgraded, h2 dispatched (and `h2_reports` for this upgrade), h3 waiting.
fn h2_reporting(on_failure: OnFailure, h2_reports: H) -> Fx {
    three(0, on_failure)
        .host("h1", O::Succeeded)
        .was_on_v1("h1")
        .host("h2", O::Dispatched)
        .was_on_v1("h2")
        .status("h2", h2_reports)
}

/// Reverting after h2 failed (its agent could not roll it back) in batch 1 of 3.
fn reverting() -> Fx {
    h2_reporting(OnFailure::Revert, H::Failed)
        .phase(P::Reverting)
        .host("h2", O::Failed)
}

#[test]
fn revert_table() {
    let cases: Vec<(&str, Fx, &[&str])> = vec![
        // --- Halting.
        (
            "halt (the default): the failure ends it, h3 is never told",
            h2_reporting(OnFailure::Halt, H::Failed),
            &["record h2 Failed", "phase Failed"],
        ),
        (
            "revert: the failed host's batch is reverted first, in the same pass",
            h2_reporting(OnFailure::Revert, H::Failed),
            &["record h2 Failed", "phase Reverting", "revert h2 to 1.0.0"],
        ),
        (
            "a host its agent rolled back is not reverted again: the batch before is",
            h2_reporting(OnFailure::Revert, H::RolledBack),
            &["record h2 Failed", "phase Reverting", "revert h1 to 1.0.0"],
        ),
        (
            "revert with nothing changed yet (a download failed): Failed",
            three(0, OnFailure::Revert)
                .phase(P::Downloading)
                .all(O::Pending)
                .finished("h1", DownloadOutcome::Failed("sha256 mismatch".into())),
            &["record h1 Failed", "phase Failed"],
        ),
        (
            "a failed canary halts even with failures tolerated",
            Fx::new(rolling(1, 1, false, 2), &[("h1", 0), ("h2", 1), ("h3", 2)])
                .phase(P::Installing)
                .all(O::Downloaded)
                .all_alive("2.0.0")
                .on_v1()
                .on_failure(OnFailure::Revert)
                .host("h1", O::Dispatched)
                .was_on_v1("h1")
                .status("h1", H::Failed),
            &["record h1 Failed", "phase Reverting", "revert h1 to 1.0.0"],
        ),
        // --- Reverting, batch by batch from the last reached.
        (
            "the last batch's revert is under way: the batch before waits",
            reverting().revert_state("h2", RevertState::Dispatched),
            &[],
        ),
        (
            "once it is back, the batch before is reverted",
            reverting()
                .revert_state("h2", RevertState::Dispatched)
                .revert_status("h2", H::Done),
            &["record revert h2 Reverted", "revert h1 to 1.0.0"],
        ),
        (
            "a revert that fails is recorded and the revert goes on",
            reverting()
                .revert_state("h2", RevertState::Dispatched)
                .revert_status("h2", H::RolledBack),
            &["record revert h2 Failed", "revert h1 to 1.0.0"],
        ),
        (
            "a host still installing finishes first; nothing else is reverted meanwhile",
            reverting()
                .host("h3", O::Dispatched)
                .was_on_v1("h3")
                .status("h3", H::Updating),
            &[],
        ),
        (
            "every changed host reverted: Reverted",
            reverting()
                .revert_state("h1", RevertState::Reverted)
                .revert_state("h2", RevertState::Reverted),
            &["phase Reverted"],
        ),
        (
            "a host that could not be reverted: Failed",
            reverting()
                .revert_state("h1", RevertState::Reverted)
                .revert_state("h2", RevertState::Failed),
            &["phase Failed"],
        ),
        (
            "the last batch reverted: the batch before is",
            reverting()
                .revert_state("h2", RevertState::Reverted)
                .host("h1", O::Succeeded),
            &["revert h1 to 1.0.0"],
        ),
        (
            "paused while reverting: in-flight reverts are judged, nothing new starts",
            reverting()
                .revert_state("h2", RevertState::Dispatched)
                .revert_status("h2", H::Done)
                .paused_from(P::Reverting),
            &["record revert h2 Reverted"],
        ),
    ];
    for (name, fx, want) in cases {
        let got: Vec<String> = fx.decide().iter().map(line).collect();
        assert_eq!(got, *want, "{name}");
    }
}

#[test]
fn a_host_without_a_recorded_bundle_fails_its_revert() {
    let mut fx = reverting().revert_state("h2", RevertState::Reverted);
    if let Some(h1) = fx.upgrade.hosts.get_mut(&id("h1")) {
        h1.previous = None;
    }
    let got: Vec<String> = fx.decide().iter().map(line).collect();
    assert_eq!(got, ["record revert h1 Failed", "phase Failed"]);
    let mut u = fx.upgrade.clone();
    for a in fx.decide() {
        apply(&mut u, &a, &"now".to_owned());
    }
    let reason = u.reason.unwrap_or_default();
    assert!(
        reason.contains("h1: no record of the bundle it ran before"),
        "{reason}"
    );
}

#[test]
fn dispatch_records_the_bundle_the_host_runs() {
    let fx = three(0, OnFailure::Revert);
    let actions = fx.decide();
    let previous = actions.iter().find_map(|a| match a {
        Action::Dispatch { host, previous, .. } if host.as_str() == "h1" => Some(previous),
        _ => None,
    });
    assert_eq!(previous, Some(&Some(v1())), "{actions:?}");
    let mut u = fx.upgrade.clone();
    for a in &actions {
        apply(&mut u, a, &"now".to_owned());
    }
    assert_eq!(u.hosts[&id("h1")].previous, Some(v1()));
    // An upgrade that halts keeps its record as small as before: nothing to revert to.
    let halting = three(0, OnFailure::Halt).decide();
    let dispatches: Vec<&Option<PreviousBundle>> = halting
        .iter()
        .filter_map(|a| match a {
            Action::Dispatch { previous, .. } => Some(previous),
            _ => None,
        })
        .collect();
    assert_eq!(dispatches, [&None], "{halting:?}");
}

#[test]
fn a_daisy_chain_records_each_hosts_bundle_when_it_is_told() {
    let fx = Fx::new(Strategy::DaisyChain, &[("h1", 0), ("h2", 1), ("h3", 2)])
        .phase(P::Installing)
        .all(O::Downloaded)
        .all_alive("2.0.0")
        .on_v1()
        .on_failure(OnFailure::Revert);
    let mut u = fx.upgrade.clone();
    for a in fx.decide() {
        apply(&mut u, &a, &"now".to_owned());
    }
    for h in ["h1", "h2", "h3"] {
        assert_eq!(u.hosts[&id(h)].previous, Some(v1()), "{h}");
    }
}

#[test]
fn a_revert_carries_the_old_bundles_signature_and_its_record_shows_the_outcome() {
    let fx = reverting();
    let actions = fx.decide();
    let revert = actions
        .iter()
        .find_map(|a| match a {
            Action::Revert { to, signature, .. } => Some((to, signature)),
            _ => None,
        })
        .expect("a revert");
    assert_eq!(revert.0, &v1());
    assert_eq!(
        revert.1.as_ref().map(|s| s.payload.as_str()),
        Some("signed 1.0.0")
    );
    let mut u = fx.upgrade.clone();
    for a in &actions {
        apply(&mut u, a, &"now".to_owned());
    }
    let h2 = u.hosts[&id("h2")].revert.clone().expect("h2's revert");
    assert_eq!(h2.state, RevertState::Dispatched);
    assert_eq!(h2.dispatched_at.as_deref(), Some("now"));
}

#[test]
fn a_chained_host_that_started_unrecorded_is_judged_before_its_batch_is_reverted() {
    let fx = Fx::new(Strategy::DaisyChain, &[("h1", 0), ("h2", 1), ("h3", 2)])
        .phase(P::Reverting)
        .all(O::Downloaded)
        .all_alive("2.0.0")
        .on_v1()
        .on_failure(OnFailure::Revert)
        .host("h1", O::Succeeded)
        .was_on_v1("h1")
        .status("h2", H::Updating);
    let got: Vec<String> = fx.decide().iter().map(line).collect();
    assert_eq!(got, ["dispatch h2 (told before)"]);
}

// --- A revert's soak: each reverted batch soaks like an installed one before the batch
// before it is reverted.

impl Fx {
    /// Decides, and folds the actions into the record as the executor commits them: what
    /// was decided (as lines, and the actions) and the fixture for the next pass.
    fn pass(&self) -> (Vec<String>, Vec<Action>, Fx) {
        let actions = self.decide();
        let mut next = self.clone();
        let now = humantime::format_rfc3339_millis(self.now).to_string();
        for a in &actions {
            apply(&mut next.upgrade, a, &now);
        }
        (actions.iter().map(line).collect(), actions, next)
    }

    /// `h`'s revert is under way and its agent reports it `Done`, re-run health checks
    /// `healthy` (`None`: not reported yet).
    fn back(self, h: &str, healthy: Option<bool>) -> Self {
        let fx = self
            .revert_state(h, RevertState::Dispatched)
            .revert_status(h, H::Done);
        match healthy {
            Some(healthy) => fx.health(h, healthy),
            None => fx,
        }
    }

    fn revert_reason(&self, h: &str) -> String {
        self.upgrade.hosts[&id(h)]
            .revert
            .as_ref()
            .map(|r| r.reason.clone())
            .unwrap_or_default()
    }
}

fn soak_notes(actions: &[Action]) -> Vec<&str> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Soak { note, .. } => Some(note.as_str()),
            _ => None,
        })
        .collect()
}

/// Reverting after h2 failed in batch 1 of 3, the request soaking 30s with an HTTP gate.
fn reverting_with_soak() -> Fx {
    reverting().soak(30)
}

#[test]
fn a_reverted_batch_soaks_before_the_batch_before_is_reverted() {
    // h2 is back on 1.0.0: not recorded reverted yet, its batch starts soaking.
    let (got, actions, fx) = reverting_with_soak().back("h2", Some(true)).pass();
    assert_eq!(got, [format!("soak batch 1 until {}", ts(31))]);
    let note = soak_notes(&actions)[0];
    assert!(
        note.starts_with("revert of batch 1 done (h2): soaks 30s")
            && note.contains("gates http http://gate/ answers 200"),
        "{note}"
    );
    // While it soaks, healthy and its gates passing, the batch before waits.
    let (got, _, fx) = fx.gate_rounds(None, Some(20)).at(20).pass();
    assert!(got.is_empty(), "{got:?}");
    // Past its end, it waits for a gate round started after the end.
    let (got, _, fx) = fx.at(33).pass();
    assert!(got.is_empty(), "{got:?}");
    let (got, actions, fx) = fx.gate_rounds(None, Some(32)).at(33).pass();
    assert_eq!(got, ["record revert h2 Reverted", "soak over"]);
    assert_eq!(
        soak_notes(&actions),
        ["revert of batch 1 (h2) soaked 30s: health checks and gates passing"]
    );
    // Then the batch before is reverted, and soaks in turn.
    let (got, _, fx) = fx.pass();
    assert_eq!(got, ["revert h1 to 1.0.0"]);
    let (got, _, fx) = fx.back("h1", Some(true)).at(40).pass();
    assert_eq!(got, [format!("soak batch 0 until {}", ts(70))]);
    let (got, _, fx) = fx.gate_rounds(None, Some(71)).at(72).pass();
    assert_eq!(got, ["record revert h1 Reverted", "soak over"]);
    let (got, _, _) = fx.pass();
    assert_eq!(got, ["phase Reverted"]);
}

#[test]
fn revert_soak_table() {
    let soaking = || reverting_with_soak().back("h2", Some(true)).soaking(1, 1);
    let cases: Vec<(&str, Fx, &[&str], &str)> = vec![
        (
            "a gate failing during the revert's soak fails the batch's reverts",
            soaking()
                .gate_rounds(Some("GET http://gate/ answered 503, expected 200"), Some(5))
                .at(10),
            &["record revert h2 Failed", "soak over"],
            "soak of revert of batch 1 failed: gate GET http://gate/ answered 503",
        ),
        (
            "a host unhealthy during the revert's soak fails its revert",
            reverting_with_soak()
                .back("h2", Some(false))
                .soaking(1, 1)
                .at(10),
            &["record revert h2 Failed", "soak over"],
            "unhealthy while revert of batch 1 soaked: unit baton-echo inactive",
        ),
        (
            "a host that never reports its re-run checks fails after the grace",
            reverting_with_soak()
                .back("h2", None)
                .soaking(1, 1)
                .gate_rounds(None, Some(95))
                .at(95),
            &["record revert h2 Failed", "soak over"],
            "reported no re-run health checks",
        ),
        (
            "a revert that fails outright is recorded at once: no soak",
            reverting_with_soak()
                .revert_state("h2", RevertState::Dispatched)
                .revert_status("h2", H::RolledBack),
            &["record revert h2 Failed", "revert h1 to 1.0.0"],
            "RolledBack",
        ),
        (
            "paused while reverting: a host back waits for its soak, nothing starts",
            reverting_with_soak()
                .back("h2", Some(true))
                .paused_from(P::Reverting),
            &[],
            "",
        ),
    ];
    for (name, fx, want, reason) in cases {
        let (got, _, next) = fx.pass();
        assert_eq!(got, *want, "{name}");
        assert!(
            next.revert_reason("h2").contains(reason),
            "{name}: {}",
            next.revert_reason("h2")
        );
    }
}

#[test]
fn a_failed_revert_soak_goes_on_with_the_batch_before_and_ends_failed_naming_it() {
    let (got, _, fx) = reverting_with_soak()
        .back("h2", Some(true))
        .soaking(1, 1)
        .gate_rounds(Some("GET http://gate/ answered 503, expected 200"), Some(5))
        .at(10)
        .pass();
    assert_eq!(got, ["record revert h2 Failed", "soak over"]);
    // Stopping would leave the fleet split: the batch before is reverted all the same.
    let (got, _, fx) = fx.pass();
    assert_eq!(got, ["revert h1 to 1.0.0"]);
    let (got, _, fx) = fx.back("h1", Some(true)).pass();
    assert_eq!(got, [format!("soak batch 0 until {}", ts(40))]);
    let (got, _, fx) = fx.gate_rounds(None, Some(41)).at(42).pass();
    assert_eq!(got, ["record revert h1 Reverted", "soak over"]);
    let (got, _, fx) = fx.pass();
    assert_eq!(got, ["phase Failed"]);
    let reason = fx.upgrade.reason.clone().unwrap_or_default();
    assert!(
        reason.contains("1 host(s) could not be reverted: h2: soak of revert of batch 1 failed"),
        "{reason}"
    );
}

#[test]
fn without_a_soak_a_host_back_is_reverted_at_once() {
    let (got, actions, _) = reverting().back("h2", Some(true)).pass();
    assert_eq!(got, ["record revert h2 Reverted", "revert h1 to 1.0.0"]);
    assert!(soak_notes(&actions).is_empty(), "{actions:?}");
}

#[test]
fn a_halt_cuts_an_install_soak_short_and_reverts_its_done_hosts() {
    // Batch 0 (h1, h2) installs; h1 is done and the batch soaks when h2's agent goes away.
    let fx = Fx::new(rolling(2, 0, false, 0), &[("h1", 0), ("h2", 0), ("h3", 1)])
        .phase(P::Installing)
        .all(O::Downloaded)
        .all_alive("2.0.0")
        .on_v1()
        .on_failure(OnFailure::Revert)
        .soak(30)
        .done("h1", Some(true))
        .was_on_v1("h1")
        .done("h2", Some(true))
        .was_on_v1("h2")
        .soaking(0, 1)
        .gone("h2", 200)
        .at(10);
    let (got, actions, fx) = fx.pass();
    assert_eq!(got, ["record h2 Failed", "soak over", "phase Reverting"]);
    assert_eq!(
        soak_notes(&actions),
        ["soak of batch 0 cut short: the upgrade halts"]
    );
    assert_eq!(fx.upgrade.soak.as_ref().and_then(|s| s.batch), None);
    // h1 was done: it counts as changed, and the batch is reverted.
    let (got, _, _) = fx.pass();
    assert_eq!(
        got,
        [
            "record h1 Succeeded",
            "revert h1 to 1.0.0",
            "revert h2 to 1.0.0"
        ]
    );
}
