//! Keeping a quorum cluster's quorum while this host's member of it is upgraded: the
//! decisions, as pure functions over a survey of the members (`may_stop`, `successor`,
//! `caught_up`), and the waits around the restart that use them (`before_stop`,
//! `after_start`); the calls to the cluster are in `etcd.rs`.
//!
//! Before the member goes down: every member answers and sees a leader, and the cluster
//! keeps its quorum without this member; if this member leads, leadership moves to the
//! healthy member most caught up first; a snapshot is kept on the host. After it comes
//! back: it answers, sees a leader, and its raft index is within [`CAUGHT_UP_ENTRIES`] of
//! the leader's, before the step counts as checked.

mod etcd;

use std::path::PathBuf;
use std::time::Duration;

use baton_protocol::etcd::{Credential, EtcdTls};
use baton_protocol::manifest::QuorumMember;

/// How far (raft entries) a restarted member may be behind the leader and count as caught
/// up: a few seconds of writes, so a busy cluster does not keep it "behind" forever while
/// one still far behind (replaying a snapshot) is waited for.
pub const CAUGHT_UP_ENTRIES: u64 = 200;

/// How long the cluster may take to be healthy before a member goes down, and a restarted
/// member to be healthy and caught up, before the step fails.
pub const MEMBER_READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How long one call to one member may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two surveys while waiting.
const SURVEY_INTERVAL: Duration = Duration::from_millis(500);

/// One member as surveyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// The member's id.
    pub id: u64,
    /// The member's name.
    pub name: String,
    /// `Ok` with what it said, or why it is not healthy.
    pub state: Result<MemberStatus, String>,
}

/// What a healthy member said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    /// The leader it sees.
    pub leader: u64,
    /// Its raft index.
    pub raft_index: u64,
    /// Its server version.
    pub version: String,
}

impl MemberHealth {
    fn healthy(&self) -> bool {
        self.state.is_ok()
    }
}

/// Why this member may not go down now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A member does not answer, reports errors, or sees no leader.
    #[error("member {name} ({id:x}) is not healthy: {reason}")]
    Unhealthy {
        /// Its name.
        name: String,
        /// Its id.
        id: u64,
        /// Why.
        reason: String,
    },
    /// Without this member the cluster would lose its quorum.
    #[error("the cluster of {members} members cannot lose one: {healthy} healthy, quorum {quorum}")]
    NoSpare {
        /// Members of the cluster.
        members: usize,
        /// Healthy members.
        healthy: usize,
        /// Members a quorum needs.
        quorum: usize,
    },
    /// This member is not in the cluster's member list.
    #[error("member {local:x} is not in the cluster's member list")]
    NotAMember {
        /// The member the local endpoint answered as.
        local: u64,
    },
}

/// Whether the member `local` may go down: every member healthy, and the healthy ones but
/// this one still a quorum.
pub fn may_stop(members: &[MemberHealth], local: u64) -> Result<(), Refusal> {
    if !members.iter().any(|m| m.id == local) {
        return Err(Refusal::NotAMember { local });
    }
    if let Some(m) = members.iter().find(|m| !m.healthy()) {
        return Err(Refusal::Unhealthy {
            name: m.name.clone(),
            id: m.id,
            reason: m.state.clone().err().unwrap_or_default(),
        });
    }
    let quorum = members.len() / 2 + 1;
    let healthy = members.iter().filter(|m| m.healthy()).count();
    if healthy.saturating_sub(1) < quorum {
        return Err(Refusal::NoSpare {
            members: members.len(),
            healthy,
            quorum,
        });
    }
    Ok(())
}

/// The member leadership moves to when `local` leads: the healthy other member with the
/// highest raft index (the least to catch up). `None` when `local` does not lead.
pub fn successor(members: &[MemberHealth], local: u64) -> Option<u64> {
    let leads = members
        .iter()
        .find(|m| m.id == local)
        .and_then(|m| m.state.as_ref().ok())
        .is_some_and(|s| s.leader == local);
    if !leads {
        return None;
    }
    members
        .iter()
        .filter(|m| m.id != local)
        .filter_map(|m| Some((m.state.as_ref().ok()?.raft_index, m.id)))
        .max()
        .map(|(_, id)| id)
}

/// Whether `local` is healthy and within `bound` raft entries of the leader it sees (which
/// must be healthy too).
pub fn caught_up(members: &[MemberHealth], local: u64, bound: u64) -> Result<(), String> {
    let status = |id: u64| members.iter().find(|m| m.id == id).map(|m| &m.state);
    let me = match status(local) {
        Some(Ok(s)) => s,
        Some(Err(reason)) => return Err(format!("not healthy: {reason}")),
        None => return Err("not in the member list".to_owned()),
    };
    let leader = match status(me.leader) {
        Some(Ok(s)) => s,
        _ => return Err(format!("its leader {:x} does not answer", me.leader)),
    };
    let behind = leader.raft_index.saturating_sub(me.raft_index);
    if behind > bound {
        return Err(format!(
            "{behind} raft entries behind the leader (at most {bound})"
        ));
    }
    Ok(())
}

/// How to reach the cluster: the agent's own TLS settings and identity.
#[derive(Debug, Clone)]
pub struct Access {
    /// TLS for `https://` endpoints.
    pub tls: Option<EtcdTls>,
    /// The host's etcd identity, when authentication is on.
    pub credential: Option<Credential>,
}

/// A member could not be brought down or back safely.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    /// The cluster did not allow the member to go down in time.
    #[error("quorum member {endpoint} may not go down: {refusal} (waited {waited:?})")]
    Refused {
        /// The member's endpoint.
        endpoint: String,
        /// The last reason.
        refusal: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The restarted member did not become healthy and caught up in time.
    #[error("quorum member {endpoint} did not come back healthy: {reason} (waited {waited:?})")]
    NotBack {
        /// The member's endpoint.
        endpoint: String,
        /// The last reason.
        reason: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A call that had to succeed failed (moving the leader, the snapshot).
    #[error("quorum member {endpoint}: {what}: {reason}")]
    Call {
        /// The member's endpoint.
        endpoint: String,
        /// What was done.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
}

/// Before this host's member goes down: waits (up to [`MEMBER_READY_TIMEOUT`]) until the
/// cluster may lose it, moves leadership away if it leads, and saves a snapshot of the
/// member's data at `snapshot` (kept on the host).
pub async fn before_stop(
    access: &Access,
    member: &QuorumMember,
    snapshot: PathBuf,
) -> Result<(), QuorumError> {
    let (local, members) = wait_for(access, &member.endpoint, |local, members| {
        may_stop(members, local)
            .map(|()| (local, members.to_vec()))
            .map_err(|refusal| refusal.to_string())
    })
    .await
    .map_err(|(refusal, waited)| QuorumError::Refused {
        endpoint: member.endpoint.clone(),
        refusal,
        waited,
    })?;
    etcd::snapshot(access, &member.endpoint, &snapshot).await?;
    tracing::info!(endpoint = %member.endpoint, path = %snapshot.display(), "member snapshot saved");
    if let Some(to) = successor(&members, local) {
        etcd::move_leader(access, &member.endpoint, to).await?;
        tracing::info!(endpoint = %member.endpoint, from = %format!("{local:x}"), to = %format!("{to:x}"), "leadership moved away before the member goes down");
    }
    Ok(())
}

/// After this host's member restarted: waits (up to [`MEMBER_READY_TIMEOUT`]) until it is
/// healthy and caught up with the leader.
pub async fn after_start(access: &Access, member: &QuorumMember) -> Result<(), QuorumError> {
    wait_for(access, &member.endpoint, |local, members| {
        caught_up(members, local, CAUGHT_UP_ENTRIES)
    })
    .await
    .map_err(|(reason, waited)| QuorumError::NotBack {
        endpoint: member.endpoint.clone(),
        reason,
        waited,
    })
}

/// Surveys the cluster from the member at `endpoint` until `ready` accepts what it sees
/// (the local member's id and every member's health), for up to [`MEMBER_READY_TIMEOUT`];
/// `Err` is the last reason and how long it waited.
async fn wait_for<T>(
    access: &Access,
    endpoint: &str,
    ready: impl Fn(u64, &[MemberHealth]) -> Result<T, String>,
) -> Result<T, (String, Duration)> {
    let started = std::time::Instant::now();
    loop {
        let last = match etcd::survey(access, endpoint).await {
            Ok((local, members)) => match ready(local, &members) {
                Ok(v) => return Ok(v),
                Err(reason) => reason,
            },
            Err(reason) => reason,
        };
        if started.elapsed() >= MEMBER_READY_TIMEOUT {
            return Err((last, started.elapsed()));
        }
        tracing::info!(%endpoint, reason = %last, "waiting for the cluster");
        tokio::time::sleep(SURVEY_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests;
