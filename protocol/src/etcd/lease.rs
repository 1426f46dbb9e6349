//! A lease kept alive in the background, with a signal when it is lost.
//!
//! Keys bound to the lease (an agent's `alive`, an election candidacy) vanish when it
//! expires. The keeper refreshes it every third of its TTL by default ([`Keeping`]); if the
//! server says the lease is gone, or no refresh succeeds for a whole TTL, the lease counts
//! as lost and [`KeptLease::lost`] resolves, so the owner can stop acting on what the lease
//! guarded.

use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{EtcdError, TokenCheck};
use crate::timer::Timer;

/// How a lease is kept.
#[derive(Debug, Clone)]
pub struct Keeping {
    /// Time from one refresh to the next, in percent of the TTL (10 to 60): each one is a
    /// wake-up and a request; the rest of the TTL after a refresh is the time a failed one
    /// has to be retried in.
    pub refresh_percent: u32,
    /// Asked to check the client's token whenever a refresh fails: a member that
    /// restarted forgot it, and the keeper's retries are refused until the client signs in
    /// again.
    pub token_check: Option<TokenCheck>,
    /// What the keeper sleeps on between refreshes ([`Timer::Os`] for a process keeping
    /// one lease that otherwise sleeps: a host's agent).
    pub timer: Timer,
}

impl Default for Keeping {
    fn default() -> Self {
        Self {
            refresh_percent: 33,
            token_check: None,
            timer: Timer::Runtime,
        }
    }
}

/// A granted lease and its keep-alive task. Dropping it stops the keep-alive (the lease then
/// expires after its TTL); [`KeptLease::revoke`] ends it at once.
pub struct KeptLease {
    id: i64,
    ttl: i64,
    client: Client,
    lost: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for KeptLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptLease")
            .field("id", &format_args!("{:x}", self.id))
            .field("ttl", &self.ttl)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl KeptLease {
    /// Grants a lease of `ttl_secs` (at least 2) and keeps it alive, refreshing it every
    /// third of its TTL.
    pub async fn grant(client: &Client, ttl_secs: i64) -> Result<Self, EtcdError> {
        Self::grant_with(client, ttl_secs, Keeping::default()).await
    }

    /// Grants a lease of `ttl_secs` (at least 2) and keeps it alive as `keeping` says.
    pub async fn grant_with(
        client: &Client,
        ttl_secs: i64,
        keeping: Keeping,
    ) -> Result<Self, EtcdError> {
        let ttl = ttl_secs.max(2);
        let mut c = client.clone();
        let resp = c
            .lease_grant(ttl, None)
            .await
            .map_err(EtcdError::request("lease grant", format!("ttl {ttl}s")))?;
        let id = resp.id();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(keep_alive(client.clone(), id, ttl, keeping, tx));
        Ok(Self {
            id,
            ttl,
            client: client.clone(),
            lost: rx,
            task,
        })
    }

    /// The lease id, to bind keys to.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// Whether the lease is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves once the lease is lost (immediately if it already is).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        // An error means the keeper task ended, which only happens once the lease is lost or
        // this value is dropped.
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Revokes the lease now: every key bound to it is deleted.
    pub async fn revoke(self) -> Result<(), EtcdError> {
        self.task.abort();
        let mut c = self.client.clone();
        c.lease_revoke(self.id)
            .await
            .map_err(EtcdError::request("lease revoke", format!("{:x}", self.id)))?;
        Ok(())
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn keep_alive(
    mut client: Client,
    id: i64,
    ttl: i64,
    keeping: Keeping,
    lost: watch::Sender<bool>,
) {
    let ttl_dur = Duration::from_secs(ttl.unsigned_abs());
    let period = ttl_dur * keeping.refresh_percent.clamp(10, 60) / 100;
    // Half of what is left of the TTL after a refresh's pause: the other half is for
    // retries.
    let answer_within = ((ttl_dur - period) / 2).max(Duration::from_millis(500));
    let mut last_ok = Instant::now();
    loop {
        // Bounded by what is left of the TTL: on a connection that died silently the stream
        // would not open until the connection's pings gave up, which may be long after.
        let left = ttl_dur
            .saturating_sub(last_ok.elapsed())
            .max(Duration::from_millis(500));
        let opened = tokio::time::timeout(left, client.lease_keep_alive(id)).await;
        match opened {
            Ok(Ok((mut keeper, mut stream))) => loop {
                let refreshed = async {
                    keeper.keep_alive().await?;
                    stream.message().await
                };
                match tokio::time::timeout(answer_within, refreshed).await {
                    Ok(Ok(Some(resp))) if resp.ttl() > 0 => {
                        last_ok = Instant::now();
                        keeping.timer.sleep(period).await;
                    }
                    Ok(Ok(Some(_))) => {
                        tracing::warn!(
                            lease = format_args!("{id:x}"),
                            "lease expired or was revoked"
                        );
                        let _ = lost.send(true);
                        return;
                    }
                    Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                        tracing::warn!(
                            lease = format_args!("{id:x}"),
                            "lease keep-alive failed; retrying"
                        );
                        break;
                    }
                }
            },
            Ok(Err(error)) => {
                tracing::warn!(lease = format_args!("{id:x}"), %error, "lease keep-alive stream failed; retrying");
            }
            Err(_) => {
                tracing::warn!(
                    lease = format_args!("{id:x}"),
                    "lease keep-alive stream did not open in time; retrying"
                );
            }
        }
        if let Some(check) = &keeping.token_check {
            check.now();
        }
        if last_ok.elapsed() >= ttl_dur {
            tracing::warn!(
                lease = format_args!("{id:x}"),
                "no keep-alive succeeded within the TTL; lease lost"
            );
            let _ = lost.send(true);
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
