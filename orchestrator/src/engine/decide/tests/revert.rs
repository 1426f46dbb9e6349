//! Table tests of `on_failure`: the halt or revert once failures pass what is tolerated (or
//! a canary fails), the bundle recorded per host at dispatch, the revert's reverse batch
//! order, its judging and its end.

use baton_protocol::documents::{
    HostRevert, Installed, OnFailure, PreviousBundle, RevertState, Upgrade,
};
use baton_protocol::signing::BundleSignature;

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
