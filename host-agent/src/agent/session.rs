//! The agent's etcd session: connect, grant the liveness lease, write `alive` bound to it,
//! tell systemd `READY=1`, publish `installed`, then reconcile on start and on every change
//! of this host's `desired` key (and, while its upgrade soaks, re-run the health checks
//! every few seconds). [`Agent::run`] re-establishes a failed session with
//! backoff: errors never end the daemon.

use std::future::Future;
use std::time::Duration;

use baton_protocol::HostKey;
use baton_protocol::documents::{self, Alive, Desired};
use baton_protocol::etcd::{
    self, Client, Credential, EndpointWatch, EtcdError, Keeping, KeptLease, Pings, ResumableWatch,
    WatchUpdate,
};
use baton_protocol::timer::Timer;

use super::soak::RECHECK_INTERVAL;
use super::{Agent, AgentError, Driven};
use crate::notify;
use crate::report::Reporter;

/// Longest pause before re-establishing a failed etcd session.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// HTTP/2 pings on the agent's own connection. The lease keeper notices a dead connection
/// within the lease's TTL and the session then starts over on a new one; the pings only
/// end requests left waiting on the dead one. Every ping timer wakes an idle agent (and is
/// pushed back by each lease refresh's answer, waking it again), so they are rare.
const AGENT_PINGS: Pings = Pings {
    every: Duration::from_secs(120),
    answer_within: Duration::from_secs(5),
};

/// Time between liveness lease refreshes, in percent of `lease_ttl_secs` (6 s of the
/// default 10 s): every refresh wakes the agent twice (its timer, then the answer), most of
/// what an idle host wakes for; the remaining 40% of the TTL is left for retries.
const LEASE_REFRESH_PERCENT: u32 = 60;

impl Agent {
    /// Runs until `shutdown` resolves.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        if let Some(interval) = notify::watchdog_interval() {
            tokio::spawn(notify::watchdog(interval));
        }
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                result = self.session() => match result {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(host = %self.config.host_id, %error, retry_in = ?backoff, "agent session failed");
                    }
                },
                () = &mut shutdown => {
                    notify::notify("STOPPING=1");
                    tracing::info!(host = %self.config.host_id, "shutting down");
                    return;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = &mut shutdown => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The agent's etcd client: the shared one it was given, or a new connection as its
    /// host's identity.
    async fn client(&self) -> Result<(Client, Option<EndpointWatch>), AgentError> {
        if let Some(client) = &self.shared_client {
            return Ok((client.clone(), None));
        }
        let credential = match &self.config.credential_file {
            Some(path) => Some(Credential::load(path)?),
            None => None,
        };
        let client = etcd::connect_with(
            &self.config.etcd_endpoints,
            self.config.tls.as_ref(),
            credential.as_ref(),
            AGENT_PINGS,
        )
        .await?;
        // This host's own member may be the one restarting (an etcd upgrade): requests go
        // to the members that answer, and the session signs in again when the restarted
        // member refuses its token.
        let endpoints =
            etcd::watch_endpoints(&client, &self.config.etcd_endpoints, credential.as_ref());
        Ok((client, endpoints))
    }

    /// One etcd session: lease, `alive`, then reconcile on every change of `desired`.
    async fn session(&self) -> Result<(), AgentError> {
        let (client, endpoints) = self.client().await?;
        let reporter = Reporter::new(
            client.clone(),
            self.keyspace.clone(),
            self.config.host_id.clone(),
        );
        // A failed refresh may be a restarted member that forgot the session's token: it is
        // checked at once rather than at the watch's next interval.
        let keeping = Keeping {
            refresh_percent: LEASE_REFRESH_PERCENT,
            token_check: endpoints.as_ref().map(EndpointWatch::token_check),
            // A host's agent keeps one lease: a timerfd wakes it once per refresh. Agents
            // sharing a client (many in one process) stay on tokio's timer.
            timer: if self.shared_client.is_none() {
                Timer::Os
            } else {
                Timer::Runtime
            },
        };
        let lease = KeptLease::grant_with(&client, self.config.lease_ttl_secs, keeping).await?;
        let alive = Alive {
            schema_version: documents::SCHEMA_VERSION,
            agent_version: crate::VERSION.to_owned(),
            boot_id: self.boot_id()?,
            pid: std::process::id(),
            since: documents::now(),
        };
        reporter.alive(&alive, &lease).await?;
        notify::notify("READY=1");
        tracing::info!(host = %self.config.host_id, version = crate::VERSION, boot_id = %alive.boot_id, "agent session up");
        reporter.installed(&self.installed_now()?).await?;

        // `desired` as the watch delivers it (first a read, then every change): never read
        // again on its own.
        let desired_key = reporter.key(HostKey::Desired);
        let mut watch = ResumableWatch::new(client.clone(), desired_key.clone());
        let mut desired = None;
        desired_from(&desired_key, watch.next().await?, &mut desired)?;
        // A chained host's extra watches (its predecessor's status, the upgrade record), kept
        // while it waits for the same keys.
        let mut waits: Vec<ResumableWatch> = Vec::new();
        // The last soak re-checked: a new one is re-checked at once, so a host's health is
        // known as its soak starts, however short the soak is against RECHECK_INTERVAL.
        let mut rechecked = None;
        loop {
            let driven = self.reconcile(&client, &reporter, desired.as_ref()).await?;
            let recheck = match (&driven, &desired) {
                (Driven::Settled, Some(d)) => self.soak_recheck(&client, d).await?,
                _ => None,
            };
            if let Some(r) = &recheck
                && rechecked.as_ref() != Some(r)
            {
                self.recheck(&reporter, r).await?;
                rechecked = Some(r.clone());
            }
            match driven {
                Driven::Settled => waits.clear(),
                Driven::Waiting(keys) => {
                    let watched: Vec<&str> = waits.iter().map(ResumableWatch::prefix).collect();
                    if watched != keys {
                        waits = keys
                            .into_iter()
                            .map(|k| ResumableWatch::new(client.clone(), k))
                            .collect();
                    }
                }
                Driven::Rebooting => {
                    // The host is going down; stay alive (and holding the lease) until it does.
                    lease.lost().await;
                    return Err(EtcdError::LeaseLost { lease: lease.id() }.into());
                }
            }
            let any_wait = async {
                if waits.is_empty() {
                    std::future::pending::<Result<(), EtcdError>>().await
                } else {
                    let nexts = waits.iter_mut().map(|w| Box::pin(w.next()));
                    let (update, _, _) = futures::future::select_all(nexts).await;
                    update.map(|_| ())
                }
            };
            tokio::select! {
                update = watch.next() => desired_from(&desired_key, update?, &mut desired)?,
                update = any_wait => { update?; }
                () = tokio::time::sleep(RECHECK_INTERVAL), if recheck.is_some() => {
                    if let Some(recheck) = &recheck {
                        self.recheck(&reporter, recheck).await?;
                    }
                }
                () = lease.lost() => return Err(EtcdError::LeaseLost { lease: lease.id() }.into()),
            }
        }
    }
}

/// Brings `desired` up to date with a watch update of its key (`key` exactly: the watch is
/// on a prefix).
fn desired_from(
    key: &str,
    update: WatchUpdate,
    desired: &mut Option<Desired>,
) -> Result<(), EtcdError> {
    match update {
        WatchUpdate::Snapshot { kvs, .. } => {
            *desired = match kvs.iter().find(|(k, _)| k == key) {
                Some((_, value)) => Some(documents::decode(key, value)?),
                None => None,
            };
        }
        WatchUpdate::Changes(changes) => {
            // In revision order: the last change of the key is what it holds now.
            if let Some(change) = changes.iter().rev().find(|c| c.key == key) {
                *desired = match &change.value {
                    Some(value) => Some(documents::decode(key, value)?),
                    None => None,
                };
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use baton_protocol::UpgradeId;
    use baton_protocol::documents::{DesiredAction, SCHEMA_VERSION, encode};
    use baton_protocol::etcd::KvChange;

    use super::*;

    const KEY: &str = "/baton/hosts/h1/desired";

    fn desired(id: &str) -> Desired {
        Desired {
            schema_version: SCHEMA_VERSION,
            upgrade_id: UpgradeId::new(id).expect("id"),
            version: "2.0.0".into(),
            bundle: "r@sha256:00".into(),
            action: DesiredAction::Install,
            after: None,
            allow_downgrade: false,
            reverts: None,
            signature: None,
            issued_at: "t".into(),
        }
    }

    fn change(key: &str, value: Option<&Desired>, revision: i64) -> KvChange {
        KvChange {
            key: key.to_owned(),
            value: value.map(encode),
            mod_revision: revision,
        }
    }

    #[test]
    fn desired_is_taken_from_the_watch_updates_of_its_key() {
        let mut held = None;
        let snapshot = WatchUpdate::Snapshot {
            kvs: vec![(KEY.to_owned(), encode(&desired("u1")))],
            revision: 5,
        };
        desired_from(KEY, snapshot, &mut held).expect("snapshot");
        assert_eq!(held, Some(desired("u1")));

        // The last change of the key wins; another key under the same prefix is not it.
        let changes = WatchUpdate::Changes(vec![
            change(KEY, Some(&desired("u2")), 6),
            change(KEY, Some(&desired("u3")), 7),
            change("/baton/hosts/h1/desired-other", Some(&desired("u9")), 8),
        ]);
        desired_from(KEY, changes, &mut held).expect("changes");
        assert_eq!(held, Some(desired("u3")));

        desired_from(
            KEY,
            WatchUpdate::Changes(vec![change(KEY, None, 9)]),
            &mut held,
        )
        .expect("deleted");
        assert_eq!(held, None);

        let bad = WatchUpdate::Changes(vec![KvChange {
            key: KEY.to_owned(),
            value: Some(b"not json".to_vec()),
            mod_revision: 10,
        }]);
        assert!(desired_from(KEY, bad, &mut held).is_err());
    }
}
