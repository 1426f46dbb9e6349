//! The calls to an etcd cluster: the member list and each member's `Status` (a survey),
//! `MoveLeader`, and a snapshot streamed from the member. Every call is bounded in time: a
//! member that is down must not hold the agent.

use std::future::Future;
use std::path::Path;

use baton_protocol::etcd::{self as etcd_helpers, Client};

use super::{Access, CALL_TIMEOUT, MemberHealth, MemberStatus, QuorumError};

/// Folder and file mode of saved snapshots: they hold every key of the cluster.
const SNAPSHOT_MODE: u32 = 0o600;

async fn timed<T>(
    what: &str,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {CALL_TIMEOUT:?}")),
    }
}

async fn connect(access: &Access, endpoint: &str) -> Result<Client, String> {
    let endpoints = [endpoint.to_owned()];
    let connecting =
        etcd_helpers::connect_as(&endpoints, access.tls.as_ref(), access.credential.as_ref());
    match tokio::time::timeout(CALL_TIMEOUT, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "connect {endpoint}: no answer within {CALL_TIMEOUT:?}"
        )),
    }
}

/// One member's health, asked at its first client URL.
async fn member_health(access: &Access, endpoint: &str) -> Result<MemberStatus, String> {
    let mut client = connect(access, endpoint).await?;
    let status = timed("status", client.status()).await?;
    if !status.errors().is_empty() {
        return Err(status.errors().join("; "));
    }
    if status.leader() == 0 {
        return Err("sees no leader".to_owned());
    }
    Ok(MemberStatus {
        leader: status.leader(),
        raft_index: status.raft_index(),
        version: status.version().to_owned(),
    })
}

/// The id of the member at `endpoint` (this host's), and every member's health, from the
/// member list that member holds.
pub(super) async fn survey(
    access: &Access,
    endpoint: &str,
) -> Result<(u64, Vec<MemberHealth>), String> {
    let mut local = connect(access, endpoint)
        .await
        .map_err(|e| format!("this host's member {endpoint}: {e}"))?;
    let status = timed("status", local.status())
        .await
        .map_err(|e| format!("this host's member {endpoint}: {e}"))?;
    let local_id = status.header().map(|h| h.member_id()).unwrap_or_default();
    let list = timed("member list", local.member_list())
        .await
        .map_err(|e| format!("this host's member {endpoint}: {e}"))?;
    let mut members = Vec::new();
    for m in list.members() {
        let state = if m.id() == local_id {
            // Asked where this host reaches it: its advertised URL may not be reachable
            // from the host itself.
            member_health(access, endpoint).await
        } else {
            match m.client_urls().first() {
                Some(url) => member_health(access, url).await,
                None => Err("advertises no client URL (not started yet)".to_owned()),
            }
        };
        members.push(MemberHealth {
            id: m.id(),
            name: m.name().to_owned(),
            state,
        });
    }
    Ok((local_id, members))
}

/// Moves leadership from the member at `endpoint` (the leader) to member `to`.
pub(super) async fn move_leader(
    access: &Access,
    endpoint: &str,
    to: u64,
) -> Result<(), QuorumError> {
    let call = |reason: String| QuorumError::Call {
        endpoint: endpoint.to_owned(),
        what: "move leader",
        reason,
    };
    let mut client = connect(access, endpoint).await.map_err(call)?;
    // Moving the leader waits for the new one to be elected: longer than a plain call.
    let moving = tokio::time::timeout(CALL_TIMEOUT * 3, client.move_leader(to));
    match moving.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(call(e.to_string())),
        Err(_) => Err(call("no answer in time".to_owned())),
    }
}

/// Streams a snapshot of the member at `endpoint` into `path` (durably: a temporary file
/// renamed into place, so a partial snapshot never carries the name).
pub(super) async fn snapshot(
    access: &Access,
    endpoint: &str,
    path: &Path,
) -> Result<(), QuorumError> {
    let call = |reason: String| QuorumError::Call {
        endpoint: endpoint.to_owned(),
        what: "snapshot",
        reason,
    };
    let mut client = connect(access, endpoint).await.map_err(call)?;
    let mut stream = client.snapshot().await.map_err(|e| call(e.to_string()))?;
    let mut bytes = Vec::new();
    while let Some(part) = stream.message().await.map_err(|e| call(e.to_string()))? {
        bytes.extend_from_slice(part.blob());
    }
    if bytes.is_empty() {
        return Err(call("the member sent an empty snapshot".to_owned()));
    }
    let path = path.to_owned();
    let written = tokio::task::spawn_blocking(move || {
        baton_protocol::durable::write(&path, &bytes, SNAPSHOT_MODE)
    })
    .await;
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(call(e.to_string())),
        Err(e) => Err(call(e.to_string())),
    }
}
