//! Commits one pass of decisions: the upgrade record with every action applied (and the
//! keys of the hosts whose outcome changed), the `desired` keys of the hosts dispatched,
//! one event per action, and — when the upgrade ends — the removal of `active`, in
//! transactions of at most [`ACTIONS_PER_TXN`] actions each ([`chunks`]: etcd refuses more
//! than 128 operations in one), each guarded by the record's and each `desired` key's
//! `mod_revision` and by this replica's leadership. A conflict writes nothing more; the next
//! pass decides again from what etcd then shows.
//!
//! Also the writes of the leader's own tasks ([`super::tasks`]): creating a task record
//! and clearing a maintenance mode a task carried out.

use baton_protocol::documents::{
    Desired, DesiredAction, Event, EventKind, HostOutcomeState, HostsLayout, Maintenance,
    MaintenanceMode, PreviousBundle, RevertState, SCHEMA_VERSION, TaskKind, Timestamp, Upgrade,
};
use baton_protocol::etcd::{self, Client, EtcdError, Versioned};
use baton_protocol::signing::BundleSignature;
use baton_protocol::{HostId, HostKey, Keyspace};
use etcd_client::TxnOp;

use crate::engine::decide::{Action, apply};
use crate::metrics::Counters;
use crate::store::{self, Written};
use crate::view::FleetView;

/// Actions committed per transaction: an action writes at most its event, a `desired` key
/// and its host's outcome key (and guards that `desired`), so 40 actions with the record
/// and `active` stay within etcd's 128 operations per transaction (`--max-txn-ops`).
pub const ACTIONS_PER_TXN: usize = 40;

/// A pass's actions in the slices committed one transaction each, in order.
pub fn chunks(actions: &[Action]) -> std::slice::Chunks<'_, Action> {
    actions.chunks(ACTIONS_PER_TXN)
}

/// Source named in the events the orchestrator writes.
pub const EVENT_SOURCE: &str = "orchestrator";

/// What a committed pass wrote.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The record as stored now.
    pub upgrade: Upgrade,
    /// The `desired` documents written.
    pub desired: Vec<(HostId, Desired)>,
    /// The store revision of the commit.
    pub revision: i64,
}

/// The event recording `action` (none for starting a download or a self-update: their
/// outcomes are recorded).
pub fn event_for(upgrade: &Upgrade, action: &Action, now: &Timestamp) -> Option<Event> {
    let (host, kind, message) = match action {
        Action::Download { .. } | Action::StartSuccessor => return None,
        Action::Chain { host, after, .. } => (
            Some(host.clone()),
            EventKind::HostState,
            format!(
                "desired written: install {} once {after} is done (daisy chain)",
                upgrade.version
            ),
        ),
        Action::HandOver { container } => (
            None,
            EventKind::OrchestratorHandover,
            format!(
                "orchestrator {} campaigns from container {container}; orchestrator {} hands leadership over and exits",
                upgrade.version,
                crate::VERSION
            ),
        ),
        Action::Phase { to, reason } => (
            None,
            EventKind::Phase,
            match reason {
                Some(r) => format!("{} -> {to}: {r}", upgrade.phase),
                None => format!("{} -> {to}", upgrade.phase),
            },
        ),
        Action::Record {
            host,
            state,
            reason,
        } => {
            let kind = match state {
                HostOutcomeState::Downloaded => EventKind::HostDownloaded,
                HostOutcomeState::Succeeded => EventKind::HostSucceeded,
                HostOutcomeState::Failed => EventKind::HostFailed,
                HostOutcomeState::Skipped => EventKind::HostSkipped,
                HostOutcomeState::Pending
                | HostOutcomeState::Held
                | HostOutcomeState::Dispatched => EventKind::HostState,
            };
            let message = if reason.is_empty() {
                format!("{state:?}: on {}", upgrade.version)
            } else {
                reason.clone()
            };
            (Some(host.clone()), kind, message)
        }
        Action::Soak { note, .. } => (None, EventKind::Soak, note.clone()),
        Action::WindowWait {
            waiting,
            next_opening,
        } => (
            None,
            EventKind::Window,
            match (waiting, next_opening) {
                (true, Some(t)) => format!("hosts are ready: waiting for window {t}"),
                (true, None) => {
                    "hosts are ready: waiting for a window (none opens within a week)".to_owned()
                }
                (false, _) => "no host waits for a window any more".to_owned(),
            },
        ),
        Action::Hold { host, held } => (
            Some(host.clone()),
            EventKind::HostHeld,
            if *held {
                "maintenance mode paused: the upgrade waits for this host (nothing is started on it until the mode is lifted)".to_owned()
            } else {
                "maintenance mode lifted: the upgrade carries on with this host".to_owned()
            },
        ),
        Action::Revert { host, to, .. } => (
            Some(host.clone()),
            EventKind::HostReverting,
            format!(
                "desired written: back to {} ({}) as {}",
                to.version,
                to.bundle,
                upgrade.id.revert()
            ),
        ),
        Action::RecordRevert {
            host,
            state,
            reason,
        } => match state {
            RevertState::Reverted => (
                Some(host.clone()),
                EventKind::HostReverted,
                "back on the bundle it ran before".to_owned(),
            ),
            RevertState::Failed => (
                Some(host.clone()),
                EventKind::HostRevertFailed,
                format!("could not be reverted: {reason}"),
            ),
            RevertState::Dispatched => (Some(host.clone()), EventKind::HostState, reason.clone()),
        },
        Action::Dispatch {
            host,
            write_desired,
            ..
        } => {
            let message = if *write_desired {
                let action = action_name(desired_action(upgrade));
                format!("desired written: {action} {}", upgrade.version)
            } else {
                format!(
                    "started after the previous host of the chain: install {}",
                    upgrade.version
                )
            };
            (Some(host.clone()), EventKind::HostDispatched, message)
        }
    };
    Some(Event {
        schema_version: SCHEMA_VERSION,
        at: now.clone(),
        source: EVENT_SOURCE.to_owned(),
        host,
        kind,
        message,
    })
}

/// What a record's dispatch asks of the host: `install`, or the task's `restart` (`reboot`
/// when its maintenance setting asked for one) or `replace`.
pub fn desired_action(upgrade: &Upgrade) -> DesiredAction {
    match upgrade.task.as_ref().map(|t| (t.kind, t.reboot)) {
        Some((TaskKind::Restart, true)) => DesiredAction::Reboot,
        Some((TaskKind::Restart, false)) => DesiredAction::Restart,
        Some((TaskKind::Replace, _)) => DesiredAction::Replace,
        Some((TaskKind::Join | TaskKind::Heal, _)) | None => DesiredAction::Install,
    }
}

fn action_name(action: DesiredAction) -> &'static str {
    match action {
        DesiredAction::Install => "install",
        DesiredAction::Replace => "replace",
        DesiredAction::Restart => "restart",
        DesiredAction::Reboot => "reboot",
    }
}

/// The `desired` document dispatching a host for `upgrade` (in a daisy chain, `after` the
/// host it follows).
pub fn desired_for(upgrade: &Upgrade, after: Option<HostId>, now: &Timestamp) -> Desired {
    Desired {
        schema_version: SCHEMA_VERSION,
        upgrade_id: upgrade.id.clone(),
        version: upgrade.version.clone(),
        bundle: upgrade.bundle.clone(),
        action: desired_action(upgrade),
        after,
        allow_downgrade: upgrade.allow_downgrade,
        reverts: None,
        signature: upgrade.signature.clone(),
        issued_at: now.clone(),
    }
}

/// The `desired` document reverting a host of `upgrade` to the bundle `to` it ran before:
/// under the revert's id (new work for the agent, which has handled the upgrade's), marked
/// as a downgrade the agent accepts, with that bundle's signature.
pub fn revert_desired(
    upgrade: &Upgrade,
    to: &PreviousBundle,
    signature: Option<&BundleSignature>,
    now: &Timestamp,
) -> Desired {
    Desired {
        schema_version: SCHEMA_VERSION,
        upgrade_id: upgrade.id.revert(),
        version: to.version.clone(),
        bundle: to.bundle.clone(),
        action: DesiredAction::Install,
        after: None,
        allow_downgrade: true,
        // The agent finds the revert's soak in this record.
        reverts: Some(upgrade.id.clone()),
        signature: signature.cloned(),
        issued_at: now.clone(),
    }
}

/// Where and as whom a pass is committed.
#[derive(Clone, Copy)]
pub struct Writer<'a> {
    /// The etcd client.
    pub client: &'a Client,
    /// The keyspace.
    pub keyspace: &'a Keyspace,
    /// The leadership key fencing every write.
    pub leadership_key: &'a str,
    /// Metrics.
    pub counters: &'a Counters,
}

impl std::fmt::Debug for Writer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("leadership_key", &self.leadership_key)
            .finish_non_exhaustive()
    }
}

/// Commits `actions` (decided on `current` and `view`; at most [`ACTIONS_PER_TXN`] of them,
/// see [`chunks`]) in one transaction. `Ok(None)`: a guard failed.
pub async fn commit(
    writer: Writer<'_>,
    current: &Versioned<Upgrade>,
    actions: &[Action],
    view: &FleetView,
    now: &Timestamp,
) -> Result<Option<Committed>, EtcdError> {
    let Writer {
        client,
        keyspace,
        leadership_key,
        counters,
    } = writer;
    let upgrade_key = keyspace.upgrade(&current.value.id);
    let mut upgrade = current.value.clone();
    let mut guards = vec![
        store::fence(leadership_key),
        store::unchanged(&upgrade_key, current.mod_revision),
    ];
    let mut ops: Vec<TxnOp> = Vec::new();
    let mut desired = Vec::new();
    for action in actions {
        // Events describe the record as it was when the action was taken.
        if let Some(event) = event_for(&upgrade, action, now) {
            ops.push(store::put(
                &keyspace.event(&upgrade.id, upgrade.events),
                &event,
            ));
            upgrade.events += 1;
        }
        let write = match action {
            Action::Dispatch {
                host,
                write_desired: true,
                ..
            } => Some((host, desired_for(&upgrade, None, now))),
            Action::Chain { host, after, .. } => {
                Some((host, desired_for(&upgrade, Some(after.clone()), now)))
            }
            Action::Revert {
                host,
                to,
                signature,
            } => Some((host, revert_desired(&upgrade, to, signature.as_ref(), now))),
            _ => None,
        };
        if let Some((host, doc)) = write {
            let key = keyspace.host(host, HostKey::Desired);
            let read_at = view
                .hosts
                .get(host)
                .map_or(0, |d| d.revision(HostKey::Desired));
            guards.push(store::unchanged(&key, read_at));
            ops.push(store::put(&key, &doc));
            desired.push((host.clone(), doc));
        }
        if let Action::Phase { to, .. } = action
            && let Err(error) = upgrade.phase.check_transition(*to)
        {
            // A bug in the decision function; refuse to store it.
            tracing::error!(upgrade = %upgrade.id, %error, "refusing an illegal phase change");
            return Ok(None);
        }
        apply(&mut upgrade, action, now);
    }
    if upgrade.phase.is_terminal()
        && let Some(active) = {
            Counters::inc(&counters.reads);
            store::read_active(client, keyspace).await?
        }
        && active.value.upgrade_id == upgrade.id
    {
        guards.push(store::unchanged(&keyspace.active(), active.mod_revision));
        ops.push(TxnOp::delete(keyspace.active(), None));
    }
    let layout = view.layout(&upgrade.id);
    let mut all = etcd::upgrade_ops(keyspace, layout, Some(&current.value), &upgrade);
    all.extend(ops);
    match store::commit(client, &upgrade_key, guards, all).await? {
        Written::At(revision) => Ok(Some(Committed {
            upgrade,
            desired,
            revision,
        })),
        Written::Conflict => Ok(None),
    }
}

/// Creates a task record with its `created` event, only if the id is free and this replica
/// leads. `Ok(None)`: a guard failed (decided again next pass).
pub async fn create_task(
    writer: Writer<'_>,
    upgrade: &Upgrade,
    message: &str,
    now: &Timestamp,
) -> Result<Option<(Upgrade, i64)>, EtcdError> {
    let Writer {
        client,
        keyspace,
        leadership_key,
        ..
    } = writer;
    let key = keyspace.upgrade(&upgrade.id);
    let mut record = upgrade.clone();
    let event = Event {
        schema_version: SCHEMA_VERSION,
        at: now.clone(),
        source: EVENT_SOURCE.to_owned(),
        host: record.task.as_ref().map(|t| t.host.clone()),
        kind: EventKind::Created,
        message: message.to_owned(),
    };
    let event_key = keyspace.event(&record.id, record.events);
    record.events += 1;
    let guards = vec![store::fence(leadership_key), store::unchanged(&key, 0)];
    // A task record names one host: record, host and event fit one transaction.
    let mut ops = etcd::upgrade_ops(keyspace, HostsLayout::Keys, None, &record);
    ops.push(store::put(&event_key, &event));
    match store::commit(client, &key, guards, ops).await? {
        Written::At(revision) => Ok(Some((record, revision))),
        Written::Conflict => Ok(None),
    }
}

/// Sets a maintenance key back to `none` (guarded by the revision it was read at) and writes
/// `message` as an event of the task record `record` (guarded by its revision).
/// `Ok(None)`: a guard failed.
pub async fn clear_maintenance(
    writer: Writer<'_>,
    maintenance_key: &str,
    read_at: i64,
    record: &Versioned<Upgrade>,
    layout: HostsLayout,
    message: &str,
    now: &Timestamp,
) -> Result<Option<(Upgrade, Maintenance, i64)>, EtcdError> {
    let Writer {
        client,
        keyspace,
        leadership_key,
        ..
    } = writer;
    let record_key = keyspace.upgrade(&record.value.id);
    let mut upgrade = record.value.clone();
    let event = Event {
        schema_version: SCHEMA_VERSION,
        at: now.clone(),
        source: EVENT_SOURCE.to_owned(),
        host: upgrade.task.as_ref().map(|t| t.host.clone()),
        kind: EventKind::MaintenanceCleared,
        message: message.to_owned(),
    };
    let event_key = keyspace.event(&upgrade.id, upgrade.events);
    upgrade.events += 1;
    upgrade.updated_at = now.clone();
    let cleared = Maintenance {
        schema_version: SCHEMA_VERSION,
        mode: MaintenanceMode::None,
        reason: format!("cleared by the orchestrator: {} succeeded", upgrade.id),
        since: now.clone(),
        reboot: false,
    };
    let guards = vec![
        store::fence(leadership_key),
        store::unchanged(maintenance_key, read_at),
        store::unchanged(&record_key, record.mod_revision),
    ];
    let mut ops = etcd::upgrade_ops(keyspace, layout, Some(&record.value), &upgrade);
    ops.push(store::put(maintenance_key, &cleared));
    ops.push(store::put(&event_key, &event));
    match store::commit(client, maintenance_key, guards, ops).await? {
        Written::At(revision) => Ok(Some((upgrade, cleared, revision))),
        Written::Conflict => Ok(None),
    }
}
