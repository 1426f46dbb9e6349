//! Host states, upgrade phases and hosts' outcomes in an upgrade as data plus pure
//! transition rules.
//!
//! The transition tables here are the single source of truth: the agent checks every status
//! change it makes against [`HostState::check_transition`], the orchestrator every phase change
//! against [`UpgradePhase::check_transition`]; [`HostOutcomeState::successors`] says how a
//! host's outcome in an upgrade record may move. Side effects live elsewhere.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A state change that the rules do not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal {what} transition {from} -> {to}")]
pub struct TransitionError {
    /// `host state` or `upgrade phase`.
    pub what: &'static str,
    /// Where it was.
    pub from: String,
    /// Where it was asked to go.
    pub to: String,
}

/// `Ok` if `from -> to` is allowed by `successors` (staying put always is), else an error
/// naming both, for the state machines below.
fn check<T: Copy + PartialEq + fmt::Debug>(
    what: &'static str,
    from: T,
    to: T,
    successors: &[T],
) -> Result<(), TransitionError> {
    if from == to || successors.contains(&to) {
        Ok(())
    } else {
        Err(TransitionError {
            what,
            from: format!("{from:?}"),
            to: format!("{to:?}"),
        })
    }
}

/// What a host's agent is doing (`status.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HostState {
    /// Nothing to do: no upgrade has touched the host yet, or it was reset.
    Idle,
    /// The bundle is being fetched and staged on the host.
    Downloading,
    /// The bundle is staged under `/var/lib/baton/bundles/<version>/`.
    Downloaded,
    /// Components are being applied; the host may be degraded.
    Updating,
    /// A kernel was installed and the host is restarting into it.
    Rebooting,
    /// Back from a reboot (or after applying), checking the result.
    Verifying,
    /// The desired version is installed and healthy.
    Done,
    /// The update failed and could not be rolled back; needs an operator.
    Failed,
    /// The update failed and the host was returned to its previous versions.
    RolledBack,
}

impl HostState {
    /// Every state, in declaration order.
    pub const ALL: [HostState; 9] = [
        HostState::Idle,
        HostState::Downloading,
        HostState::Downloaded,
        HostState::Updating,
        HostState::Rebooting,
        HostState::Verifying,
        HostState::Done,
        HostState::Failed,
        HostState::RolledBack,
    ];

    /// The legal transitions out of `self` (staying in the same state is always allowed: it is
    /// a progress update, not a transition).
    pub fn successors(self) -> &'static [HostState] {
        use HostState::*;
        match self {
            Idle => &[Downloading, Downloaded, Updating],
            Downloading => &[Downloaded, Failed, Idle],
            Downloaded => &[Updating, Downloading, Idle],
            Updating => &[Rebooting, Verifying, Done, Failed, RolledBack],
            Rebooting => &[Verifying, Failed, RolledBack],
            Verifying => &[Updating, Done, Failed, RolledBack],
            // A settled host may take the next upgrade or be reset.
            Done | Failed | RolledBack => &[Idle, Downloading, Downloaded, Updating],
        }
    }

    /// Whether `self -> to` is allowed.
    pub fn can_transition_to(self, to: HostState) -> bool {
        check("", self, to, self.successors()).is_ok()
    }

    /// `Ok` if `self -> to` is allowed, else an error naming both states.
    pub fn check_transition(self, to: HostState) -> Result<(), TransitionError> {
        check("host state", self, to, self.successors())
    }

    /// A settled state: the agent is not working on the host.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            HostState::Idle | HostState::Done | HostState::Failed | HostState::RolledBack
        )
    }

    /// The host is taken out of service by an update (counts against the rollout's batch).
    pub fn is_disruptive(self) -> bool {
        matches!(
            self,
            HostState::Updating | HostState::Rebooting | HostState::Verifying
        )
    }

    /// The update on this host ended badly.
    pub fn is_failure(self) -> bool {
        matches!(self, HostState::Failed | HostState::RolledBack)
    }
}

impl fmt::Display for HostState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Where an upgrade stands (`upgrades/<id>.phase`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UpgradePhase {
    /// Accepted and recorded; nothing has run yet.
    Pending,
    /// Downloader jobs are staging the bundle on the selected hosts.
    Downloading,
    /// Waiting for every selected host's agent to report the bundle's agent version.
    UpdatingAgents,
    /// Hosts are being told to install, by strategy.
    Installing,
    /// An operator paused it: in-flight hosts finish, nothing new is dispatched.
    Paused,
    /// More hosts failed than tolerated and the request said `on_failure: revert`: nothing
    /// new is dispatched, and every host it changed is returned to the bundle it ran before,
    /// batch by batch in reverse order.
    Reverting,
    /// Every selected host is on the target version.
    Succeeded,
    /// Halted and reverted: every host it changed is back on the bundle it ran before.
    Reverted,
    /// Halted: too many hosts failed, or something could not work; see the reason.
    Failed,
    /// An operator aborted it.
    Aborted,
}

impl UpgradePhase {
    /// Every phase, in declaration order.
    pub const ALL: [UpgradePhase; 10] = [
        UpgradePhase::Pending,
        UpgradePhase::Downloading,
        UpgradePhase::UpdatingAgents,
        UpgradePhase::Installing,
        UpgradePhase::Paused,
        UpgradePhase::Reverting,
        UpgradePhase::Succeeded,
        UpgradePhase::Reverted,
        UpgradePhase::Failed,
        UpgradePhase::Aborted,
    ];

    /// The legal transitions out of `self`.
    pub fn successors(self) -> &'static [UpgradePhase] {
        use UpgradePhase::*;
        match self {
            Pending => &[Downloading, Paused, Failed, Aborted],
            Downloading => &[UpdatingAgents, Paused, Failed, Aborted],
            UpdatingAgents => &[Installing, Paused, Failed, Aborted],
            // Only hosts told to install change: a revert starts from here (or from a pause
            // in it).
            Installing => &[Succeeded, Paused, Reverting, Failed, Aborted],
            // Resume returns to the phase the upgrade was paused in (kept in the document).
            Paused => &[
                Pending,
                Downloading,
                UpdatingAgents,
                Installing,
                Reverting,
                Failed,
                Aborted,
            ],
            // `Failed` when a host could not be reverted.
            Reverting => &[Paused, Reverted, Failed, Aborted],
            Succeeded | Reverted | Failed | Aborted => &[],
        }
    }

    /// Whether `self -> to` is allowed (staying put is a progress update and always allowed).
    pub fn can_transition_to(self, to: UpgradePhase) -> bool {
        check("", self, to, self.successors()).is_ok()
    }

    /// `Ok` if `self -> to` is allowed, else an error naming both phases.
    pub fn check_transition(self, to: UpgradePhase) -> Result<(), TransitionError> {
        check("upgrade phase", self, to, self.successors())
    }

    /// The upgrade is over; `active` must no longer name it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            UpgradePhase::Succeeded
                | UpgradePhase::Reverted
                | UpgradePhase::Failed
                | UpgradePhase::Aborted
        )
    }
}

impl fmt::Display for UpgradePhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What happened to one host in an upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum HostOutcomeState {
    /// Not started.
    Pending,
    /// The downloader job ran; the bundle is staged.
    Downloaded,
    /// Not dispatched yet, and its maintenance mode is `paused`: nothing is started on it and
    /// the upgrade waits for it; back to where it was (`HostOutcome::held_from`) once the
    /// mode is lifted.
    Held,
    /// Its `desired` key was written.
    Dispatched,
    /// Done and healthy.
    Succeeded,
    /// Failed or rolled back.
    Failed,
    /// Skipped (paused for maintenance).
    Skipped,
}

impl HostOutcomeState {
    /// Every state, in declaration order.
    pub const ALL: [HostOutcomeState; 7] = [
        HostOutcomeState::Pending,
        HostOutcomeState::Downloaded,
        HostOutcomeState::Held,
        HostOutcomeState::Dispatched,
        HostOutcomeState::Succeeded,
        HostOutcomeState::Failed,
        HostOutcomeState::Skipped,
    ];

    /// The legal transitions out of `self` (staying is always allowed).
    pub fn successors(self) -> &'static [HostOutcomeState] {
        use HostOutcomeState::*;
        match self {
            Pending => &[Downloaded, Held, Failed, Skipped],
            // A heal succeeds without a dispatch: the agent is back on the bundle's version.
            Downloaded => &[Dispatched, Held, Succeeded, Failed, Skipped],
            // Released to where it was; an agent that misses its timeout fails meanwhile.
            Held => &[Pending, Downloaded, Failed, Skipped],
            Dispatched => &[Succeeded, Failed],
            Succeeded | Failed | Skipped => &[],
        }
    }

    /// Whether `self -> to` is allowed.
    pub fn can_transition_to(self, to: HostOutcomeState) -> bool {
        check("", self, to, self.successors()).is_ok()
    }

    /// `Ok` if `self -> to` is allowed, else an error naming both states.
    pub fn check_transition(self, to: HostOutcomeState) -> Result<(), TransitionError> {
        check("host outcome", self, to, self.successors())
    }

    /// Still to be worked on (or being worked on) in its upgrade.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            HostOutcomeState::Pending
                | HostOutcomeState::Downloaded
                | HostOutcomeState::Held
                | HostOutcomeState::Dispatched
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use HostState as H;
    use UpgradePhase as P;

    /// Every legal host transition, written out so a change to the rules shows up here.
    const HOST_LEGAL: &[(HostState, HostState)] = &[
        (H::Idle, H::Downloading),
        (H::Idle, H::Downloaded),
        (H::Idle, H::Updating),
        (H::Downloading, H::Downloaded),
        (H::Downloading, H::Failed),
        (H::Downloading, H::Idle),
        (H::Downloaded, H::Updating),
        (H::Downloaded, H::Downloading),
        (H::Downloaded, H::Idle),
        (H::Updating, H::Rebooting),
        (H::Updating, H::Verifying),
        (H::Updating, H::Done),
        (H::Updating, H::Failed),
        (H::Updating, H::RolledBack),
        (H::Rebooting, H::Verifying),
        (H::Rebooting, H::Failed),
        (H::Rebooting, H::RolledBack),
        (H::Verifying, H::Updating),
        (H::Verifying, H::Done),
        (H::Verifying, H::Failed),
        (H::Verifying, H::RolledBack),
        (H::Done, H::Idle),
        (H::Done, H::Downloading),
        (H::Done, H::Downloaded),
        (H::Done, H::Updating),
        (H::Failed, H::Idle),
        (H::Failed, H::Downloading),
        (H::Failed, H::Downloaded),
        (H::Failed, H::Updating),
        (H::RolledBack, H::Idle),
        (H::RolledBack, H::Downloading),
        (H::RolledBack, H::Downloaded),
        (H::RolledBack, H::Updating),
    ];

    const PHASE_LEGAL: &[(UpgradePhase, UpgradePhase)] = &[
        (P::Pending, P::Downloading),
        (P::Pending, P::Paused),
        (P::Pending, P::Failed),
        (P::Pending, P::Aborted),
        (P::Downloading, P::UpdatingAgents),
        (P::Downloading, P::Paused),
        (P::Downloading, P::Failed),
        (P::Downloading, P::Aborted),
        (P::UpdatingAgents, P::Installing),
        (P::UpdatingAgents, P::Paused),
        (P::UpdatingAgents, P::Failed),
        (P::UpdatingAgents, P::Aborted),
        (P::Installing, P::Succeeded),
        (P::Installing, P::Paused),
        (P::Installing, P::Reverting),
        (P::Installing, P::Failed),
        (P::Installing, P::Aborted),
        (P::Paused, P::Pending),
        (P::Paused, P::Downloading),
        (P::Paused, P::UpdatingAgents),
        (P::Paused, P::Installing),
        (P::Paused, P::Reverting),
        (P::Paused, P::Failed),
        (P::Paused, P::Aborted),
        (P::Reverting, P::Paused),
        (P::Reverting, P::Reverted),
        (P::Reverting, P::Failed),
        (P::Reverting, P::Aborted),
    ];

    #[test]
    fn host_table_is_exactly_the_rules() {
        for &(from, to) in HOST_LEGAL {
            assert!(from.check_transition(to).is_ok(), "{from} -> {to}");
        }
        let listed: BTreeSet<_> = HOST_LEGAL.iter().copied().collect();
        let from_rules: BTreeSet<_> = H::ALL
            .iter()
            .flat_map(|&f| f.successors().iter().map(move |&t| (f, t)))
            .collect();
        assert_eq!(listed, from_rules);
    }

    #[test]
    fn phase_table_is_exactly_the_rules() {
        for &(from, to) in PHASE_LEGAL {
            assert!(from.check_transition(to).is_ok(), "{from} -> {to}");
        }
        let listed: BTreeSet<_> = PHASE_LEGAL.iter().copied().collect();
        let from_rules: BTreeSet<_> = P::ALL
            .iter()
            .flat_map(|&f| f.successors().iter().map(move |&t| (f, t)))
            .collect();
        assert_eq!(listed, from_rules);
    }

    #[test]
    fn terminal_phases_are_final() {
        for p in [P::Succeeded, P::Reverted, P::Failed, P::Aborted] {
            assert!(p.is_terminal());
            for to in P::ALL {
                assert_eq!(p.can_transition_to(to), p == to, "{p} -> {to}");
            }
        }
    }

    #[test]
    fn illegal_transition_names_both_states() {
        let err = H::Idle.check_transition(H::Done).expect_err("Idle -> Done");
        assert_eq!(
            err.to_string(),
            "illegal host state transition Idle -> Done"
        );
    }

    #[test]
    fn states_serialise_by_name() {
        assert_eq!(
            serde_json::to_string(&H::RolledBack).expect("json"),
            "\"RolledBack\""
        );
        assert_eq!(
            serde_json::to_string(&P::UpdatingAgents).expect("json"),
            "\"UpdatingAgents\""
        );
    }

    proptest! {
        #[test]
        fn host_pairs_outside_the_table_are_refused(
            from in proptest::sample::select(H::ALL.to_vec()),
            to in proptest::sample::select(H::ALL.to_vec()),
        ) {
            let legal = from == to || HOST_LEGAL.contains(&(from, to));
            prop_assert_eq!(from.check_transition(to).is_ok(), legal);
        }

        #[test]
        fn phase_pairs_outside_the_table_are_refused(
            from in proptest::sample::select(P::ALL.to_vec()),
            to in proptest::sample::select(P::ALL.to_vec()),
        ) {
            let legal = from == to || PHASE_LEGAL.contains(&(from, to));
            prop_assert_eq!(from.check_transition(to).is_ok(), legal);
        }
    }

    /// Every legal host outcome transition, written out so a change to the rules shows up here.
    const OUTCOME_LEGAL: &[(HostOutcomeState, HostOutcomeState)] = {
        use HostOutcomeState::*;
        &[
            (Pending, Downloaded),
            (Pending, Held),
            (Pending, Failed),
            (Pending, Skipped),
            (Downloaded, Dispatched),
            (Downloaded, Held),
            (Downloaded, Succeeded),
            (Downloaded, Failed),
            (Downloaded, Skipped),
            (Held, Pending),
            (Held, Downloaded),
            (Held, Failed),
            (Held, Skipped),
            (Dispatched, Succeeded),
            (Dispatched, Failed),
        ]
    };

    #[test]
    fn outcome_table_is_exactly_the_rules() {
        for from in HostOutcomeState::ALL {
            for to in HostOutcomeState::ALL {
                let legal = from == to || OUTCOME_LEGAL.contains(&(from, to));
                assert_eq!(
                    from.check_transition(to).is_ok(),
                    legal,
                    "{from:?} -> {to:?}"
                );
            }
        }
        let err = HostOutcomeState::Succeeded
            .check_transition(HostOutcomeState::Pending)
            .expect_err("settled");
        assert_eq!(
            err.to_string(),
            "illegal host outcome transition Succeeded -> Pending"
        );
        for state in HostOutcomeState::ALL {
            assert_eq!(state.is_open(), !state.successors().is_empty(), "{state:?}");
        }
    }
}
