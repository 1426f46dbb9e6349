//! Operators' commands on an upgrade — pause, resume, abort — as pure functions of the
//! record: what it becomes, or why the command does not apply (answered 409).

use baton_protocol::UpgradePhase as P;
use baton_protocol::api::Command;
use baton_protocol::documents::{Timestamp, Upgrade};

use crate::engine::decide::canaries_done;

/// The command does not apply to the upgrade as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("upgrade {id} is {phase}: {reason}")]
pub struct Refused {
    /// The upgrade.
    pub id: String,
    /// Its phase.
    pub phase: P,
    /// Why the command does not apply.
    pub reason: &'static str,
}

/// The record after `command` (`None`: already so, nothing to write).
pub fn apply(
    upgrade: &Upgrade,
    command: Command,
    reason: Option<&str>,
    now: &Timestamp,
) -> Result<Option<Upgrade>, Refused> {
    let refuse = |reason| {
        Err(Refused {
            id: upgrade.id.to_string(),
            phase: upgrade.phase,
            reason,
        })
    };
    if upgrade.phase.is_terminal() {
        return refuse("it is over");
    }
    let said = |what: &str| match reason {
        Some(r) if !r.is_empty() => format!("{what} by operator: {r}"),
        _ => format!("{what} by operator"),
    };
    let mut u = upgrade.clone();
    match command {
        Command::Pause => {
            if u.phase == P::Paused {
                return Ok(None);
            }
            u.paused_from = Some(u.phase);
            u.phase = P::Paused;
            u.reason = Some(said("paused"));
        }
        Command::Resume => {
            if u.phase != P::Paused {
                return refuse("it is not paused");
            }
            // A pause after the canaries is their approval.
            u.canary_approved = u.canary_approved || canaries_done(&u);
            u.phase = u.paused_from.take().unwrap_or(P::Installing);
            u.reason = None;
        }
        Command::Abort => {
            u.paused_from = None;
            u.phase = P::Aborted;
            u.reason = Some(said("aborted"));
        }
    }
    u.phase_since = Some(now.clone());
    u.updated_at = now.clone();
    Ok(Some(u))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use baton_protocol::documents::{
        BatchSize, HostOutcome, HostOutcomeState as O, SCHEMA_VERSION, Strategy,
    };
    use baton_protocol::{HostId, UpgradeId};

    use super::*;

    fn upgrade(phase: P, paused_from: Option<P>, canary: O) -> Upgrade {
        Upgrade {
            schema_version: SCHEMA_VERSION,
            id: UpgradeId::new("u1").expect("id"),
            bundle: "r/b@sha256:00".into(),
            version: "2.0.0".into(),
            strategy: Strategy::Rolling {
                batch: BatchSize::Count(1),
                canary: 1,
                pause_after_canary: true,
                zone_label: None,
                max_failures: 0,
            },
            selector: BTreeMap::new(),
            strategy_reason: None,
            phase,
            paused_from,
            hosts: [(
                HostId::new("h1").expect("id"),
                HostOutcome {
                    state: canary,
                    reason: String::new(),
                    batch: Some(0),
                    dispatched_at: None,
                    held_from: None,
                    previous: None,
                    revert: None,
                },
            )]
            .into(),
            reason: None,
            agent_version: None,
            phase_since: None,
            canary_approved: false,
            events: 0,
            listed: false,
            task: None,
            orchestrator: None,
            signature: None,
            skip_paused: false,
            allow_downgrade: false,
            on_failure: baton_protocol::documents::OnFailure::Halt,
            created_at: "t".into(),
            updated_at: "t".into(),
            soak: None,
            waiting_for_window: None,
        }
    }

    #[test]
    fn commands_table() {
        let now = "now".to_owned();
        type Want = Result<Option<(P, Option<P>)>, &'static str>;
        let cases: &[(&str, Upgrade, Command, Want)] = &[
            (
                "pause while installing",
                upgrade(P::Installing, None, O::Dispatched),
                Command::Pause,
                Ok(Some((P::Paused, Some(P::Installing)))),
            ),
            (
                "pause while downloading",
                upgrade(P::Downloading, None, O::Pending),
                Command::Pause,
                Ok(Some((P::Paused, Some(P::Downloading)))),
            ),
            (
                "pause twice changes nothing",
                upgrade(P::Paused, Some(P::Installing), O::Dispatched),
                Command::Pause,
                Ok(None),
            ),
            (
                "resume returns to the paused phase",
                upgrade(P::Paused, Some(P::UpdatingAgents), O::Downloaded),
                Command::Resume,
                Ok(Some((P::UpdatingAgents, None))),
            ),
            (
                "resume what is not paused",
                upgrade(P::Installing, None, O::Dispatched),
                Command::Resume,
                Err("it is not paused"),
            ),
            (
                "abort a paused upgrade",
                upgrade(P::Paused, Some(P::Installing), O::Succeeded),
                Command::Abort,
                Ok(Some((P::Aborted, None))),
            ),
            (
                "abort what is over",
                upgrade(P::Succeeded, None, O::Succeeded),
                Command::Abort,
                Err("it is over"),
            ),
            (
                "pause what is over",
                upgrade(P::Aborted, None, O::Dispatched),
                Command::Pause,
                Err("it is over"),
            ),
        ];
        for (name, u, command, want) in cases {
            let got = apply(u, *command, None, &now)
                .map(|o| o.map(|u| (u.phase, u.paused_from)))
                .map_err(|e| e.reason);
            assert_eq!(&got, want, "{name}");
            if let Ok(Some(_)) = got {
                let next = apply(u, *command, None, &now)
                    .expect("ok")
                    .expect("changed");
                assert!(
                    u.phase.check_transition(next.phase).is_ok(),
                    "{name}: illegal"
                );
            }
        }
    }

    #[test]
    fn resuming_after_the_canaries_approves_them() {
        let paused = upgrade(P::Paused, Some(P::Installing), O::Succeeded);
        let resumed = apply(&paused, Command::Resume, None, &"now".to_owned())
            .expect("resume")
            .expect("changed");
        assert!(resumed.canary_approved);
        let early = upgrade(P::Paused, Some(P::Installing), O::Dispatched);
        let resumed = apply(&early, Command::Resume, None, &"now".to_owned())
            .expect("resume")
            .expect("changed");
        assert!(!resumed.canary_approved, "canary still running");
        let aborted = apply(
            &early,
            Command::Abort,
            Some("bad canary"),
            &"now".to_owned(),
        )
        .expect("abort")
        .expect("changed");
        assert_eq!(
            aborted.reason.as_deref(),
            Some("aborted by operator: bad canary")
        );
    }
}
