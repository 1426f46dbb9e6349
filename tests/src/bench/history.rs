//! etcd's own record of what was written: a watch of the whole keyspace from a revision,
//! each change noted with when it arrived, its size, who writes that key (the agents own
//! their hosts' `alive`, `status` and `installed`; the orchestrator everything else) and,
//! for the keys the figures need, what it says (a host's `desired` and `status`, an
//! upgrade's phase).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_protocol::documents::{Desired, HostStatus, Upgrade, decode};
use baton_protocol::etcd::{Client, ResumableWatch, WatchUpdate};
use baton_protocol::keys::Key;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId, UpgradePhase};
use tokio::task::JoinHandle;

use crate::error::HarnessError;

/// Who writes a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// A host's agent.
    Agent,
    /// The orchestrator.
    Orchestrator,
}

/// What a change says, for the keys the figures need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A host's `desired` names an upgrade.
    Desired(HostId, UpgradeId),
    /// A host's `status`.
    Status(HostId, Option<UpgradeId>, HostState),
    /// An upgrade record's phase.
    Phase(UpgradeId, UpgradePhase),
    /// Anything else (or a deletion).
    Other,
}

/// One change.
#[derive(Debug, Clone)]
pub struct Change {
    /// When the watch delivered it.
    pub at: Instant,
    /// Its revision.
    pub revision: i64,
    /// Bytes of key and value.
    pub bytes: usize,
    /// Whether it was a deletion.
    pub deleted: bool,
    /// Who writes the key.
    pub writer: Writer,
    /// What it says.
    pub said: Said,
}

/// The watch, recording until dropped.
#[derive(Debug)]
pub struct History {
    changes: Arc<Mutex<Vec<Change>>>,
    task: JoinHandle<()>,
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl History {
    /// Records every change under `keyspace` from `revision` on.
    pub fn start(client: Client, keyspace: Keyspace, revision: i64) -> Self {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let recorded = changes.clone();
        let task = tokio::spawn(async move {
            let mut watch = ResumableWatch::resume(client, keyspace.root(), revision);
            while let Ok(update) = watch.next().await {
                let at = Instant::now();
                let WatchUpdate::Changes(kvs) = update else {
                    // Compacted away: nothing more can be told.
                    return;
                };
                let noted: Vec<Change> = kvs
                    .into_iter()
                    .map(|kv| note(&keyspace, at, &kv.key, kv.value.as_deref(), kv.mod_revision))
                    .collect();
                lock(&recorded).extend(noted);
            }
        });
        History { changes, task }
    }

    /// The changes so far.
    pub fn changes(&self) -> Vec<Change> {
        lock(&self.changes).clone()
    }

    /// Waits until `done` holds of the changes so far; fails after `timeout`, naming `what`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[Change]) -> bool,
    ) -> Result<(), HarnessError> {
        let started = Instant::now();
        loop {
            if done(&lock(&self.changes)) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(HarnessError(format!("{what}: not within {timeout:?}")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn lock(changes: &Mutex<Vec<Change>>) -> std::sync::MutexGuard<'_, Vec<Change>> {
    changes.lock().unwrap_or_else(|e| e.into_inner())
}

fn note(
    keyspace: &Keyspace,
    at: Instant,
    key: &str,
    value: Option<&[u8]>,
    revision: i64,
) -> Change {
    let parsed = keyspace.parse(key).ok();
    let writer = match &parsed {
        Some(Key::Host(_, HostKey::Alive | HostKey::Status | HostKey::Installed)) => Writer::Agent,
        _ => Writer::Orchestrator,
    };
    let said = match (parsed, value) {
        (Some(Key::Host(host, HostKey::Desired)), Some(v)) => {
            decode::<Desired>(key, v).map_or(Said::Other, |d| Said::Desired(host, d.upgrade_id))
        }
        (Some(Key::Host(host, HostKey::Status)), Some(v)) => decode::<HostStatus>(key, v)
            .map_or(Said::Other, |s| Said::Status(host, s.upgrade_id, s.state)),
        (Some(Key::Upgrade(id)), Some(v)) => {
            decode::<Upgrade>(key, v).map_or(Said::Other, |u| Said::Phase(id, u.phase))
        }
        _ => Said::Other,
    };
    Change {
        at,
        revision,
        bytes: key.len() + value.map_or(0, <[u8]>::len),
        deleted: value.is_none(),
        writer,
        said,
    }
}

/// Whether upgrade `id` reached a terminal phase in `changes`, and which.
pub fn finished(changes: &[Change], id: &UpgradeId) -> Option<UpgradePhase> {
    changes.iter().rev().find_map(|c| match &c.said {
        Said::Phase(u, phase) if u == id && phase.is_terminal() => Some(*phase),
        _ => None,
    })
}

/// When each host of upgrade `id` was first seen `Done` for it, in the order seen.
pub fn done_times(changes: &[Change], id: &UpgradeId) -> Vec<(HostId, Instant)> {
    let mut seen = std::collections::BTreeSet::new();
    changes
        .iter()
        .filter_map(|c| match &c.said {
            Said::Status(host, Some(u), HostState::Done)
                if u == id && seen.insert(host.clone()) =>
            {
                Some((host.clone(), c.at))
            }
            _ => None,
        })
        .collect()
}

/// When each `desired` write naming upgrade `id` was seen, in order (a host written twice
/// appears twice).
pub fn desired_times(changes: &[Change], id: &UpgradeId) -> Vec<(HostId, Instant)> {
    changes
        .iter()
        .filter_map(|c| match &c.said {
            Said::Desired(host, u) if u == id => Some((host.clone(), c.at)),
            _ => None,
        })
        .collect()
}
