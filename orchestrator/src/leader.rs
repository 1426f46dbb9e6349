//! Leadership: each replica campaigns in `<prefix>/leader`; the leader runs the upgrade
//! engine, and gives leadership up on shutdown so a successor takes over at once.

use std::future::Future;

use baton_protocol::Keyspace;
use baton_protocol::etcd::{self, Election, EtcdError, KeptLease};

use crate::config::Config;

/// The orchestrator could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration.
    #[error("configuration: {0}")]
    Config(String),
    /// etcd failed.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

/// Runs one replica until `shutdown` resolves: campaigns for leadership and holds it.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let keyspace = Keyspace::new(&config.prefix).map_err(|e| RunError::Config(e.to_string()))?;
    let replica = config
        .replica
        .clone()
        .unwrap_or_else(|| format!("orchestrator-{}", std::process::id()));
    let client = etcd::connect(&config.etcd).await?;
    let lease = KeptLease::grant(&client, config.leader_ttl).await?;
    let election = Election::new(client.clone(), keyspace.leader());
    tokio::pin!(shutdown);
    tracing::info!(%replica, "campaigning for leadership");
    let leadership = tokio::select! {
        lead = election.campaign(replica.as_bytes(), &lease) => lead?,
        () = &mut shutdown => {
            lease.revoke().await?;
            return Ok(());
        }
    };
    tracing::info!(%replica, key = %leadership.key(), "elected leader");
    tokio::select! {
        () = &mut shutdown => {
            tracing::info!(%replica, "shutting down; resigning leadership");
            election.resign(leadership).await?;
            lease.revoke().await?;
            Ok(())
        }
        () = lease.lost() => Err(EtcdError::LeaseLost { lease: lease.id() }.into()),
    }
}
