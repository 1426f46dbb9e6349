//! Writing this host's `status`, `installed` and `alive` documents.
//!
//! Status changes are compare-and-swap updates checked against the host state machine: an
//! illegal transition is refused (and logged) rather than written. The agent is the only
//! writer of its `status` and `installed`: each write is guarded by the revision of the
//! agent's own last write (or read) of the key, so a change is one request; the key is read
//! again only when that guard fails.

use std::sync::Arc;

use baton_protocol::documents::{self, Alive, HostHealth, HostStatus, Installed};
use baton_protocol::etcd::{self, Change, Client, EtcdError, KeptLease, Known};
use baton_protocol::state::TransitionError;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId};

/// Writes this host's documents.
#[derive(Clone)]
pub struct Reporter {
    client: Client,
    keyspace: Keyspace,
    host: HostId,
    /// `status` as last written or read, with its revision; a lock held through a write, so
    /// one write at a time.
    status: Arc<tokio::sync::Mutex<Option<Known<HostStatus>>>>,
    /// `installed`, the same way.
    installed: Arc<tokio::sync::Mutex<Option<Known<Installed>>>>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter for `host`.
    pub fn new(client: Client, keyspace: Keyspace, host: HostId) -> Self {
        Self {
            client,
            keyspace,
            host,
            status: Arc::default(),
            installed: Arc::default(),
        }
    }

    /// The key of one of this host's documents.
    pub fn key(&self, doc: HostKey) -> String {
        self.keyspace.host(&self.host, doc)
    }

    /// Sets `status`: `state` for `upgrade`, with the current step and a message.
    pub async fn status(
        &self,
        upgrade: Option<&UpgradeId>,
        state: HostState,
        step: Option<&str>,
        message: &str,
        started_at: Option<&str>,
    ) -> Result<(), EtcdError> {
        let key = self.key(HostKey::Status);
        let mut known = self.status.lock().await;
        let result = etcd::update_known::<HostStatus, TransitionError, _>(
            &self.client,
            &key,
            &mut known,
            |current| next_status(current, upgrade, state, step, message, started_at),
        )
        .await?;
        if let Err(e) = result {
            tracing::error!(host = %self.host, error = %e, "refusing to write an illegal status");
        } else {
            tracing::info!(host = %self.host, state = %state, step, message, "status");
        }
        Ok(())
    }

    /// Publishes `installed` and sets `status` (an upgrade's outcome, with what it
    /// installed) in one transaction when both change and neither changed behind the
    /// agent's back since it last wrote or read them; otherwise as [`Self::installed`] then
    /// [`Self::status`] do, in that order.
    pub async fn installed_and_status(
        &self,
        installed: &Installed,
        upgrade: Option<&UpgradeId>,
        state: HostState,
        message: &str,
        started_at: Option<&str>,
    ) -> Result<(), EtcdError> {
        if self
            .both_at_once(installed, upgrade, state, message, started_at)
            .await?
        {
            tracing::info!(host = %self.host, state = %state, message, "status and installed");
            return Ok(());
        }
        self.installed(installed).await?;
        self.status(upgrade, state, None, message, started_at).await
    }

    /// The one-transaction write of [`Self::installed_and_status`]; `false` when it does not
    /// apply (a document not known, unchanged or not a legal transition) or the guard failed
    /// (the caller then writes each on its own, reading what changed).
    async fn both_at_once(
        &self,
        installed: &Installed,
        upgrade: Option<&UpgradeId>,
        state: HostState,
        message: &str,
        started_at: Option<&str>,
    ) -> Result<bool, EtcdError> {
        // Always `status` first, then `installed`: the only place holding both.
        let mut status = self.status.lock().await;
        let mut known_installed = self.installed.lock().await;
        let (Some(s), Some(i)) = (status.as_ref(), known_installed.as_ref()) else {
            return Ok(false);
        };
        if i.value
            .as_ref()
            .is_some_and(|c| same_installed(c, installed))
        {
            return Ok(false);
        }
        let next = match next_status(s.value.as_ref(), upgrade, state, None, message, started_at) {
            Ok(Change::Put(next)) => next,
            _ => return Ok(false),
        };
        let (status_key, installed_key) = (self.key(HostKey::Status), self.key(HostKey::Installed));
        let writes = [
            (
                status_key.as_str(),
                s.mod_revision,
                documents::encode(&next),
            ),
            (
                installed_key.as_str(),
                i.mod_revision,
                documents::encode(installed),
            ),
        ];
        let written = etcd::put_all_if_unchanged(&self.client, &writes).await;
        if let Ok(Some(revision)) = written {
            *status = Some(Known {
                value: Some(next),
                mod_revision: revision,
            });
            *known_installed = Some(Known {
                value: Some(installed.clone()),
                mod_revision: revision,
            });
            return Ok(true);
        }
        // Changed behind the agent's back, or the outcome is unknown: both are read again
        // before their next write (the single writes that follow a refusal do so).
        *status = None;
        *known_installed = None;
        written.map(|_| false)
    }

    /// Sets `status.health` (the re-run health checks of `upgrade`, while the host is `Done`
    /// for it), unless it already says the same.
    pub async fn health(
        &self,
        upgrade: &UpgradeId,
        healthy: bool,
        message: &str,
    ) -> Result<(), EtcdError> {
        let key = self.key(HostKey::Status);
        let mut known = self.status.lock().await;
        etcd::update_known::<HostStatus, std::convert::Infallible, _>(
            &self.client,
            &key,
            &mut known,
            |current| {
                let Some(current) = current.filter(|c| {
                    c.state == HostState::Done && c.upgrade_id.as_ref() == Some(upgrade)
                }) else {
                    return Ok(Change::Keep);
                };
                let same = current
                    .health
                    .as_ref()
                    .is_some_and(|h| h.healthy == healthy && h.message == message);
                if same {
                    return Ok(Change::Keep);
                }
                Ok(Change::Put(HostStatus {
                    health: Some(HostHealth {
                        healthy,
                        message: message.to_owned(),
                        since: documents::now(),
                    }),
                    ..current.clone()
                }))
            },
        )
        .await?
        .map(|_| ())
        .map_err(|never| match never {})
    }

    /// The current status, if any (as last written or read: read only the first time).
    pub async fn current_status(&self) -> Result<Option<HostStatus>, EtcdError> {
        let mut known = self.status.lock().await;
        if let Some(k) = known.as_ref() {
            return Ok(k.value.clone());
        }
        let read = etcd::read::<HostStatus>(&self.client, &self.key(HostKey::Status)).await?;
        let value = read.as_ref().map(|v| v.value.clone());
        *known = Some(Known {
            value: value.clone(),
            mod_revision: read.map_or(0, |v| v.mod_revision),
        });
        Ok(value)
    }

    /// Publishes `installed` unless etcd already holds the same content.
    pub async fn installed(&self, installed: &Installed) -> Result<(), EtcdError> {
        let key = self.key(HostKey::Installed);
        let mut known = self.installed.lock().await;
        etcd::update_known::<Installed, std::convert::Infallible, _>(
            &self.client,
            &key,
            &mut known,
            |current| {
                let same = current.is_some_and(|c| same_installed(c, installed));
                Ok(if same {
                    Change::Keep
                } else {
                    Change::Put(installed.clone())
                })
            },
        )
        .await?
        .map(|_| ())
        .map_err(|never| match never {})
    }

    /// Writes `alive`, bound to `lease`.
    pub async fn alive(&self, alive: &Alive, lease: &KeptLease) -> Result<(), EtcdError> {
        etcd::put_leased(&self.client, &self.key(HostKey::Alive), alive, lease.id()).await?;
        Ok(())
    }
}

/// Whether two `installed` documents say the same, whenever each was made.
fn same_installed(a: &Installed, b: &Installed) -> bool {
    Installed {
        updated_at: String::new(),
        ..a.clone()
    } == Installed {
        updated_at: String::new(),
        ..b.clone()
    }
}

/// The `status` to write for `state` (with `upgrade`, `step`, `message`, `started_at`) over
/// `current`: refused when the state machine forbids the transition, kept when it would say
/// the same (its `updated_at` moves only when something else does).
fn next_status(
    current: Option<&HostStatus>,
    upgrade: Option<&UpgradeId>,
    state: HostState,
    step: Option<&str>,
    message: &str,
    started_at: Option<&str>,
) -> Result<Change<HostStatus>, TransitionError> {
    let from = current.map_or(HostState::Idle, |c| c.state);
    from.check_transition(state)?;
    let next = HostStatus {
        schema_version: documents::SCHEMA_VERSION,
        upgrade_id: upgrade.cloned(),
        state,
        step: step.map(str::to_owned),
        message: message.to_owned(),
        started_at: started_at.map(str::to_owned),
        updated_at: current
            .filter(|c| {
                c.state == state
                    && c.step.as_deref() == step
                    && c.message == message
                    && c.upgrade_id.as_ref() == upgrade
            })
            .map_or_else(documents::now, |c| c.updated_at.clone()),
        // Re-run health checks belong to the upgrade and state they were run in.
        health: current
            .filter(|c| c.state == state && c.upgrade_id.as_ref() == upgrade)
            .and_then(|c| c.health.clone()),
    };
    Ok(if current == Some(&next) {
        Change::Keep
    } else {
        Change::Put(next)
    })
}
