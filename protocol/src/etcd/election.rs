//! Leader election through etcd's election API: campaign, observe, resign.
//!
//! A candidacy is a key under the election name bound to the candidate's lease, so a leader
//! that dies loses leadership when its lease expires and the next candidate takes over.

use etcd_client::{Client, LeaderKey, ResignOptions};
use tonic::Code as tonic_code;

use super::{EtcdError, KeptLease};

/// An election, by name (Baton uses `<prefix>/leader`).
#[derive(Clone)]
pub struct Election {
    client: Client,
    name: String,
}

impl std::fmt::Debug for Election {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Election")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Proof of leadership, needed to resign.
#[derive(Debug, Clone)]
pub struct Leadership {
    key: LeaderKey,
    lease: i64,
}

impl Leadership {
    /// The candidacy key (`<name>/<lease>`).
    pub fn key(&self) -> String {
        String::from_utf8_lossy(self.key.key()).into_owned()
    }

    /// The lease the leadership is bound to.
    pub fn lease(&self) -> i64 {
        self.lease
    }
}

impl Election {
    /// The election `name` on `client`.
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    /// Waits until this candidate (announcing `value`) is the leader. Fails with
    /// [`EtcdError::LeaseLost`] if the lease is lost first.
    pub async fn campaign(&self, value: &[u8], lease: &KeptLease) -> Result<Leadership, EtcdError> {
        loop {
            let mut client = self.client.clone();
            let campaign = client.campaign(self.name.as_str(), value, lease.id());
            tokio::select! {
                resp = campaign => match resp {
                    Ok(resp) => {
                        let key = resp
                            .leader()
                            .cloned()
                            .ok_or(EtcdError::LeaseLost { lease: lease.id() })?;
                        return Ok(Leadership { key, lease: lease.id() });
                    }
                    // Waiting for leadership outlasts the per-request timeout. Campaigning
                    // again with the same lease resumes the same candidacy (same key, same
                    // place in line), so just keep waiting.
                    Err(etcd_client::Error::GRpcStatus(status))
                        if matches!(status.code(), tonic_code::Cancelled | tonic_code::DeadlineExceeded) =>
                    {
                        tracing::debug!(election = %self.name, "campaign still waiting");
                    }
                    Err(source) => {
                        return Err(EtcdError::Request { op: "campaign", key: self.name.clone(), source });
                    }
                },
                () = lease.lost() => return Err(EtcdError::LeaseLost { lease: lease.id() }),
            }
        }
    }

    /// The current leader's value, if there is a leader.
    pub async fn leader(&self) -> Result<Option<Vec<u8>>, EtcdError> {
        let mut client = self.client.clone();
        match client.leader(self.name.as_str()).await {
            Ok(resp) => Ok(resp.kv().map(|kv| kv.value().to_vec())),
            // The server answers "election: no leader" as an error.
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("no leader") =>
            {
                Ok(None)
            }
            Err(source) => Err(EtcdError::Request {
                op: "leader",
                key: self.name.clone(),
                source,
            }),
        }
    }

    /// Waits for the next leader announcement and returns its value.
    pub async fn observe(&self) -> Result<Observer, EtcdError> {
        let mut client = self.client.clone();
        let stream = client
            .observe(self.name.as_str())
            .await
            .map_err(EtcdError::request("observe", self.name.clone()))?;
        Ok(Observer {
            stream,
            name: self.name.clone(),
        })
    }

    /// Gives up leadership so another candidate can take over at once.
    pub async fn resign(&self, leadership: Leadership) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        client
            .resign(Some(ResignOptions::new().with_leader(leadership.key)))
            .await
            .map_err(EtcdError::request("resign", self.name.clone()))?;
        Ok(())
    }
}

/// A stream of leader announcements.
#[derive(Debug)]
pub struct Observer {
    stream: etcd_client::ObserveStream,
    name: String,
}

impl Observer {
    /// The next leader's value; `None` if the stream ended.
    pub async fn next(&mut self) -> Result<Option<Vec<u8>>, EtcdError> {
        let msg = self
            .stream
            .message()
            .await
            .map_err(EtcdError::request("observe", self.name.clone()))?;
        Ok(msg.and_then(|resp| resp.kv().map(|kv| kv.value().to_vec())))
    }
}
