//! Leadership: each replica campaigns in `<prefix>/leader`, announcing a
//! [`Candidate`](baton_protocol::documents::Candidate) (its name and API URL). The leader
//! runs the upgrade engine and accepts writes; when its lease is lost it stops at once and
//! campaigns again; on shutdown it resigns so a standby replica takes over without waiting
//! for the lease to expire. Errors are retried with backoff; the loop ends at shutdown, or
//! when the engine handed the leadership over to a new orchestrator version (self-update).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use baton_protocol::Keyspace;
use baton_protocol::documents::{self, Candidate, SCHEMA_VERSION};
use baton_protocol::etcd::{Client, Election, KeptLease};
use tokio::sync::watch;

use crate::engine::{self, EngineConfig};
use crate::metrics::Counters;

/// Longest pause before campaigning again after an error.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// This replica's part in the election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Campaigning or following: reads only.
    Follower,
    /// Leading: writes are fenced by this candidacy key (it exists while the lease lives).
    Leader {
        /// `<prefix>/leader/<lease>`.
        key: String,
    },
}

/// What a replica campaigns with.
#[derive(Clone)]
pub struct Campaign {
    /// The etcd client.
    pub client: Client,
    /// The keyspace.
    pub keyspace: Keyspace,
    /// Announced in the election.
    pub candidate: Candidate,
    /// Lease TTL in seconds.
    pub ttl: i64,
    /// The engine's configuration.
    pub engine: EngineConfig,
    /// Metrics.
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Campaign {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Campaign")
            .field("candidate", &self.candidate)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

/// The candidacy document for `replica` reachable at `api`.
pub fn candidate(replica: String, api: Option<String>) -> Candidate {
    Candidate {
        schema_version: SCHEMA_VERSION,
        replica,
        api,
        version: Some(crate::VERSION.to_owned()),
        since: documents::now(),
    }
}

/// Who leads, as announced (`replica (api)`), or `None` when nobody does.
pub async fn current_leader(election: &Election, keyspace: &Keyspace) -> Option<String> {
    let value = election.leader().await.ok()??;
    Some(
        match documents::decode::<Candidate>(&keyspace.leader(), &value) {
            Ok(c) => match c.api {
                Some(api) => format!("{} ({api})", c.replica),
                None => c.replica,
            },
            Err(_) => String::from_utf8_lossy(&value).into_owned(),
        },
    )
}

/// Campaigns, leads and campaigns again until `shutdown` resolves or the engine handed the
/// leadership over to a new orchestrator version; publishes the role; says which ended it.
pub async fn run(
    campaign: Campaign,
    role: watch::Sender<Role>,
    shutdown: impl Future<Output = ()>,
) -> engine::Exit {
    tokio::pin!(shutdown);
    let replica = campaign.candidate.replica.clone();
    let value = documents::encode(&campaign.candidate);
    let election = Election::new(campaign.client.clone(), campaign.keyspace.leader());
    let mut backoff = Duration::from_millis(500);
    loop {
        let lease = tokio::select! {
            lease = KeptLease::grant(&campaign.client, campaign.ttl) => lease,
            () = &mut shutdown => return engine::Exit::Shutdown,
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(error) => {
                tracing::warn!(%replica, %error, retry_in = ?backoff, "could not get a lease");
                if pause(&mut backoff, &mut shutdown).await {
                    return engine::Exit::Shutdown;
                }
                continue;
            }
        };
        tracing::info!(%replica, "campaigning for leadership");
        let leadership = tokio::select! {
            lead = election.campaign(&value, &lease) => lead,
            () = &mut shutdown => {
                if let Err(error) = lease.revoke().await {
                    tracing::warn!(%error, "could not revoke the campaign lease");
                }
                return engine::Exit::Shutdown;
            }
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(error) => {
                tracing::warn!(%replica, %error, retry_in = ?backoff, "campaign failed");
                if pause(&mut backoff, &mut shutdown).await {
                    return engine::Exit::Shutdown;
                }
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let key = leadership.key();
        tracing::info!(%replica, %key, "elected leader; running the upgrade engine");
        campaign.counters.leader.store(true, Ordering::Relaxed);
        role.send_replace(Role::Leader { key: key.clone() });
        let running = engine::run(
            campaign.client.clone(),
            campaign.keyspace.clone(),
            key,
            campaign.engine.clone(),
            campaign.counters.clone(),
        );
        let ended = tokio::select! {
            exit = running => Some(exit),
            () = lease.lost() => {
                tracing::warn!(%replica, "leadership lease lost; the engine stopped; campaigning again");
                None
            }
            () = &mut shutdown => Some(engine::Exit::Shutdown),
        };
        role.send_replace(Role::Follower);
        campaign.counters.leader.store(false, Ordering::Relaxed);
        match &ended {
            Some(engine::Exit::Shutdown) => {
                tracing::info!(%replica, "shutting down; resigning leadership");
            }
            Some(engine::Exit::HandedOver { container }) => {
                tracing::info!(%replica, %container, "handing leadership over to the new orchestrator version; resigning and exiting");
            }
            None => {}
        }
        // After a lost lease these fail harmlessly (the candidacy is gone already).
        if let Err(error) = election.resign(leadership).await {
            tracing::debug!(%error, "could not resign");
        }
        if let Err(error) = lease.revoke().await {
            tracing::debug!(%error, "could not revoke the leadership lease");
        }
        if let Some(exit) = ended {
            return exit;
        }
    }
}

/// Sleeps `backoff` (doubling it) unless shutdown comes first; returns whether it did.
async fn pause(
    backoff: &mut Duration,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> bool {
    let stop = tokio::select! {
        () = tokio::time::sleep(*backoff) => false,
        () = shutdown.as_mut() => true,
    };
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    stop
}
