//! A watch over a prefix that survives disconnects and compaction.
//!
//! It resumes from the last seen revision + 1; if that revision was compacted away it
//! re-reads the whole prefix and hands the caller a fresh snapshot before watching again;
//! events at revisions already seen are dropped. Callers treat updates as a cue to
//! re-evaluate (level-triggered), never as commands.

use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchStream, Watcher};

use super::EtcdError;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// One key's new value (or deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvChange {
    /// The key.
    pub key: String,
    /// The new value, `None` if the key was deleted.
    pub value: Option<Vec<u8>>,
    /// The revision of the change.
    pub mod_revision: i64,
}

/// What the watch delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchUpdate {
    /// The full content of the prefix at `revision` (first read, or after compaction):
    /// replace everything known about the prefix with it.
    Snapshot {
        /// Every key under the prefix and its value.
        kvs: Vec<(String, Vec<u8>)>,
        /// The store revision of the read.
        revision: i64,
    },
    /// Changes since the previous update, in revision order.
    Changes(Vec<KvChange>),
}

/// A prefix watch that resumes where it left off.
pub struct ResumableWatch {
    client: Client,
    prefix: String,
    next_revision: i64,
    stream: Option<(Watcher, WatchStream)>,
    backoff: Duration,
    needs_snapshot: bool,
}

/// Keeps the changes at or after `next_revision` (older ones were already seen: a resumed or
/// duplicated delivery) and returns them with the next revision to expect.
pub fn fresh_changes(changes: Vec<KvChange>, next_revision: i64) -> (Vec<KvChange>, i64) {
    let fresh: Vec<KvChange> = changes
        .into_iter()
        .filter(|c| c.mod_revision >= next_revision)
        .collect();
    let next = fresh
        .iter()
        .map(|c| c.mod_revision + 1)
        .max()
        .unwrap_or(next_revision)
        .max(next_revision);
    (fresh, next)
}

impl std::fmt::Debug for ResumableWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableWatch")
            .field("prefix", &self.prefix)
            .field("next_revision", &self.next_revision)
            .finish_non_exhaustive()
    }
}

impl ResumableWatch {
    /// A watch whose first update is a snapshot of the prefix.
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            next_revision: 0,
            stream: None,
            backoff: Duration::from_millis(100),
            needs_snapshot: true,
        }
    }

    /// A watch that resumes at `from_revision` (the last seen revision + 1) without a
    /// snapshot, e.g. after a restart that persisted the revision. If that revision was
    /// compacted, the first update is a snapshot.
    pub fn resume(client: Client, prefix: impl Into<String>, from_revision: i64) -> Self {
        Self {
            next_revision: from_revision,
            needs_snapshot: false,
            ..Self::new(client, prefix)
        }
    }

    /// The revision the next change will have at least (last seen + 1).
    pub fn next_revision(&self) -> i64 {
        self.next_revision
    }

    /// The watched prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Waits for the next update. Connection failures are retried with backoff (logged), so
    /// this returns only with an update or a document-independent fatal error; callers that
    /// need to stop select it against their shutdown signal.
    pub async fn next(&mut self) -> Result<WatchUpdate, EtcdError> {
        loop {
            if self.needs_snapshot {
                match self.snapshot().await {
                    Ok(update) => return Ok(update),
                    Err(e) => {
                        self.pause(&e).await;
                        continue;
                    }
                }
            }
            if self.stream.is_none() {
                let options = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(self.next_revision);
                match self.client.watch(self.prefix.as_str(), Some(options)).await {
                    Ok(stream) => self.stream = Some(stream),
                    Err(source) => {
                        let e = EtcdError::Request {
                            op: "watch",
                            key: self.prefix.clone(),
                            source,
                        };
                        self.pause(&e).await;
                        continue;
                    }
                }
            }
            let Some((_, stream)) = self.stream.as_mut() else {
                continue;
            };
            let message = stream.message().await;
            match message {
                Ok(Some(resp)) => {
                    self.backoff = Duration::from_millis(100);
                    if resp.compact_revision() > 0 {
                        tracing::info!(
                            prefix = %self.prefix,
                            wanted = self.next_revision,
                            compacted = resp.compact_revision(),
                            "watch revision was compacted; re-reading the prefix"
                        );
                        self.stream = None;
                        self.needs_snapshot = true;
                        continue;
                    }
                    if resp.canceled() {
                        tracing::warn!(prefix = %self.prefix, reason = resp.cancel_reason(), "watch canceled; re-watching");
                        self.stream = None;
                        continue;
                    }
                    let changes = resp
                        .events()
                        .iter()
                        .filter_map(|event| {
                            let kv = event.kv()?;
                            Some(KvChange {
                                key: String::from_utf8_lossy(kv.key()).into_owned(),
                                value: (event.event_type() == EventType::Put)
                                    .then(|| kv.value().to_vec()),
                                mod_revision: kv.mod_revision(),
                            })
                        })
                        .collect();
                    let (fresh, next) = fresh_changes(changes, self.next_revision);
                    self.next_revision = next;
                    if !fresh.is_empty() {
                        return Ok(WatchUpdate::Changes(fresh));
                    }
                }
                Ok(None) => {
                    tracing::debug!(prefix = %self.prefix, "watch stream ended; re-watching");
                    self.stream = None;
                }
                Err(source) => {
                    self.stream = None;
                    let e = EtcdError::Request {
                        op: "watch",
                        key: self.prefix.clone(),
                        source,
                    };
                    self.pause(&e).await;
                }
            }
        }
    }

    async fn snapshot(&mut self) -> Result<WatchUpdate, EtcdError> {
        let (kvs, revision) = super::read_prefix(&self.client, &self.prefix).await?;
        let kvs = kvs
            .into_iter()
            .map(|(key, value, _)| (key, value))
            .collect();
        self.next_revision = revision + 1;
        self.needs_snapshot = false;
        self.stream = None;
        Ok(WatchUpdate::Snapshot { kvs, revision })
    }

    async fn pause(&mut self, error: &EtcdError) {
        tracing::warn!(prefix = %self.prefix, %error, retry_in = ?self.backoff, "etcd watch interrupted");
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rev: i64) -> KvChange {
        KvChange {
            key: format!("k{rev}"),
            value: Some(vec![]),
            mod_revision: rev,
        }
    }

    #[test]
    fn drops_changes_already_seen() {
        let (fresh, next) = fresh_changes(vec![change(3), change(5), change(6)], 5);
        assert_eq!(fresh, vec![change(5), change(6)]);
        assert_eq!(next, 7);
    }

    #[test]
    fn nothing_new_keeps_the_revision() {
        let (fresh, next) = fresh_changes(vec![change(2)], 9);
        assert!(fresh.is_empty());
        assert_eq!(next, 9);
    }
}
