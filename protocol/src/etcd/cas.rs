//! Compare-and-swap on one key, guarded by the `mod_revision` that was read.
//!
//! [`update`] is the level-triggered way to change a document: read it, decide with a pure
//! function, write only if nobody changed it meanwhile, and on conflict read again and decide
//! again. No update is ever lost and nothing is written twice from a stale read.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use super::EtcdError;
use crate::documents::{Document, decode, encode};

/// Attempts before [`update`] gives up with [`EtcdError::Contended`].
pub const MAX_ATTEMPTS: u32 = 32;

/// A document and the revision it was read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    /// The document.
    pub value: T,
    /// The key's `mod_revision` when read; guard writes with it.
    pub mod_revision: i64,
}

/// What [`update`]'s decision function wants done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<T> {
    /// Nothing to write.
    Keep,
    /// Write this document.
    Put(T),
    /// Delete the key.
    Delete,
}

/// The result of a successful [`update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated<T> {
    /// The document now stored (`None` if absent or deleted).
    pub value: Option<T>,
    /// The store revision after the write (or at the read, for [`Change::Keep`]).
    pub revision: i64,
    /// How many read-decide-write rounds it took (1 when uncontended).
    pub attempts: u32,
    /// Whether anything was written.
    pub written: bool,
}

/// Reads and decodes a document.
pub async fn read<T: Document>(
    client: &Client,
    key: &str,
) -> Result<Option<Versioned<T>>, EtcdError> {
    Ok(read_at(client, key).await?.0)
}

/// Reads a document and the store revision of the read.
pub(super) async fn read_at<T: Document>(
    client: &Client,
    key: &str,
) -> Result<(Option<Versioned<T>>, i64), EtcdError> {
    let resp = super::retry_auth_race(|| {
        let mut kv = client.kv_client();
        async move { kv.get(key, None).await }
    })
    .await
    .map_err(EtcdError::request("get", key))?;
    let revision = resp.header().map_or(0, |h| h.revision());
    let value = match resp.kvs().first() {
        Some(kv) => Some(Versioned {
            value: decode(key, kv.value())?,
            mod_revision: kv.mod_revision(),
        }),
        None => None,
    };
    Ok((value, revision))
}

/// Guard for "the key is as read": same `mod_revision`, or still absent.
fn unchanged(key: &str, mod_revision: i64) -> Compare {
    if mod_revision == 0 {
        Compare::create_revision(key, CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key, CompareOp::Equal, mod_revision)
    }
}

/// Runs `op` on `key` only if the key's `mod_revision` is still `expected` (0: still
/// absent). Returns the new store revision, or `None` if the key changed meanwhile.
async fn guarded(
    client: &Client,
    key: &str,
    expected: i64,
    op: TxnOp,
    what: &'static str,
) -> Result<Option<i64>, EtcdError> {
    let txn = Txn::new().when([unchanged(key, expected)]).and_then([op]);
    let resp = super::retry_auth_race(|| {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(EtcdError::request(what, key))?;
    Ok(resp
        .succeeded()
        .then(|| resp.header().map_or(0, |h| h.revision())))
}

/// Puts every `(key, expected mod_revision, value)` in one transaction, only if none of the
/// keys changed (0: still absent): one request where a sole writer changes several of its
/// keys together. The new store revision, or `None` if any key changed meanwhile (nothing
/// written).
pub async fn put_all_if_unchanged(
    client: &Client,
    writes: &[(&str, i64, Vec<u8>)],
) -> Result<Option<i64>, EtcdError> {
    let compares: Vec<Compare> = writes
        .iter()
        .map(|(key, expected, _)| unchanged(key, *expected))
        .collect();
    let puts: Vec<TxnOp> = writes
        .iter()
        .map(|(key, _, value)| TxnOp::put(*key, value.clone(), None))
        .collect();
    let txn = Txn::new().when(compares).and_then(puts);
    let keys: Vec<&str> = writes.iter().map(|(key, _, _)| *key).collect();
    let resp = super::retry_auth_race(|| {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(EtcdError::request("txn put", keys.join(" ")))?;
    Ok(resp
        .succeeded()
        .then(|| resp.header().map_or(0, |h| h.revision())))
}

/// Writes `value` only if the key's `mod_revision` is still `expected` (0: still absent).
/// Returns the new revision, or `None` if the key changed meanwhile.
pub async fn put_if_unchanged<T: Document>(
    client: &Client,
    key: &str,
    value: &T,
    expected: i64,
) -> Result<Option<i64>, EtcdError> {
    guarded(
        client,
        key,
        expected,
        TxnOp::put(key, encode(value), None),
        "txn put",
    )
    .await
}

/// Deletes the key only if its `mod_revision` is still `expected`.
pub async fn delete_if_unchanged(
    client: &Client,
    key: &str,
    expected: i64,
) -> Result<bool, EtcdError> {
    Ok(guarded(
        client,
        key,
        expected,
        TxnOp::delete(key, None),
        "txn delete",
    )
    .await?
    .is_some())
}

/// Creates the key only if it does not exist. Returns whether it was created.
pub async fn create<T: Document>(client: &Client, key: &str, value: &T) -> Result<bool, EtcdError> {
    Ok(put_if_unchanged(client, key, value, 0).await?.is_some())
}

/// What a key's sole writer knows of it: the document it last wrote or read (`None`:
/// absent) and that write's or read's `mod_revision` (0: absent). [`update_known`] decides
/// from it instead of reading the key first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known<T> {
    /// The document (`None`: the key is absent).
    pub value: Option<T>,
    /// Its `mod_revision` (0: absent).
    pub mod_revision: i64,
}

/// Read-decide-write with retries: `decide` sees the current document (or `None`) and says
/// what to do; the write happens only if the key did not change since the read, otherwise
/// it re-reads and decides again. `decide` must be pure: it may run several times.
pub async fn update<T, E, F>(
    client: &Client,
    key: &str,
    decide: F,
) -> Result<Result<Updated<T>, E>, EtcdError>
where
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Change<T>, E>,
{
    update_known(client, key, &mut None, decide).await
}

/// [`update`] for a key's sole writer: decides first from `known` (what it last wrote or
/// read, with that `mod_revision`) without reading the key, so an uncontended change is one
/// request; the write is still guarded by that revision, and only when the guard fails (the
/// key changed behind the writer's back, or `known` is `None`) is the key read and the
/// decision made again. `known` is left holding what was written or read, or `None` when
/// a request failed (its outcome is unknown, so the next change reads first).
pub async fn update_known<T, E, F>(
    client: &Client,
    key: &str,
    known: &mut Option<Known<T>>,
    decide: F,
) -> Result<Result<Updated<T>, E>, EtcdError>
where
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Change<T>, E>,
{
    guarded_update(&EtcdStore(client), key, known, decide).await
}

/// The two requests a guarded update makes, so its logic is tested without etcd.
trait GuardedStore {
    /// The document at `key` and the store revision of the read.
    async fn read_at<T: Document>(
        &self,
        key: &str,
    ) -> Result<(Option<Versioned<T>>, i64), EtcdError>;
    /// Puts `value` (or deletes, for `None`) if the key's `mod_revision` is still
    /// `expected`; the new store revision, or `None` if the key changed.
    async fn write_if(
        &self,
        key: &str,
        expected: i64,
        value: Option<Vec<u8>>,
    ) -> Result<Option<i64>, EtcdError>;
}

/// The real store: etcd.
struct EtcdStore<'a>(&'a Client);

impl GuardedStore for EtcdStore<'_> {
    async fn read_at<T: Document>(
        &self,
        key: &str,
    ) -> Result<(Option<Versioned<T>>, i64), EtcdError> {
        read_at(self.0, key).await
    }

    async fn write_if(
        &self,
        key: &str,
        expected: i64,
        value: Option<Vec<u8>>,
    ) -> Result<Option<i64>, EtcdError> {
        match value {
            Some(bytes) => {
                guarded(
                    self.0,
                    key,
                    expected,
                    TxnOp::put(key, bytes, None),
                    "txn put",
                )
                .await
            }
            None => {
                guarded(
                    self.0,
                    key,
                    expected,
                    TxnOp::delete(key, None),
                    "txn delete",
                )
                .await
            }
        }
    }
}

async fn guarded_update<S, T, E, F>(
    store: &S,
    key: &str,
    known: &mut Option<Known<T>>,
    mut decide: F,
) -> Result<Result<Updated<T>, E>, EtcdError>
where
    S: GuardedStore,
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Change<T>, E>,
{
    for attempt in 1..=MAX_ATTEMPTS {
        // Taken: a failed request below leaves it `None` (unknown).
        let (current, expected, revision, was_read) = match known.take() {
            Some(k) => (k.value, k.mod_revision, k.mod_revision, false),
            None => {
                let (current, revision) = store.read_at::<T>(key).await?;
                let expected = current.as_ref().map_or(0, |v| v.mod_revision);
                (current.map(|v| v.value), expected, revision, true)
            }
        };
        let change = match decide(current.as_ref()) {
            Ok(change) => change,
            Err(e) => {
                *known = Some(Known {
                    value: current,
                    mod_revision: expected,
                });
                return Ok(Err(e));
            }
        };
        let value = match change {
            Change::Keep => {
                *known = Some(Known {
                    value: current.clone(),
                    mod_revision: expected,
                });
                return Ok(Ok(Updated {
                    value: current,
                    revision,
                    attempts: attempt,
                    written: false,
                }));
            }
            Change::Put(value) => Some(value),
            Change::Delete => None,
        };
        let bytes = value.as_ref().map(encode);
        if let Some(revision) = store.write_if(key, expected, bytes).await? {
            // The write's revision is the key's new `mod_revision` (0 once deleted).
            *known = Some(Known {
                value: value.clone(),
                mod_revision: if value.is_some() { revision } else { 0 },
            });
            return Ok(Ok(Updated {
                value,
                revision,
                attempts: attempt,
                written: true,
            }));
        }
        tracing::debug!(key, attempt, "compare-and-swap conflict, re-reading");
        if was_read {
            // Short, growing pause so two contenders do not collide in lockstep forever (a
            // stale `known` is no contention: it is read again at once).
            tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3)).await;
        }
    }
    Err(EtcdError::Contended {
        key: key.to_owned(),
        attempts: MAX_ATTEMPTS,
    })
}

/// Writes a document bound to a lease (it vanishes when the lease does).
pub async fn put_leased<T: Document>(
    client: &Client,
    key: &str,
    value: &T,
    lease: i64,
) -> Result<i64, EtcdError> {
    let bytes = encode(value);
    let resp = super::retry_auth_race(|| {
        let (mut kv, bytes) = (client.kv_client(), bytes.clone());
        async move {
            kv.put(
                key,
                bytes,
                Some(etcd_client::PutOptions::new().with_lease(lease)),
            )
            .await
        }
    })
    .await
    .map_err(EtcdError::request("put", key))?;
    Ok(resp.header().map_or(0, |h| h.revision()))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use super::*;
    use crate::documents::{self, HostStatus};
    use crate::{HostState, UpgradeId};

    /// An in-memory store: one revision counter, keys with their bytes and `mod_revision`,
    /// and the requests made.
    #[derive(Default)]
    struct FakeStore {
        revision: RefCell<i64>,
        keys: RefCell<BTreeMap<String, (Vec<u8>, i64)>>,
        requests: RefCell<Vec<&'static str>>,
    }

    impl FakeStore {
        /// Another writer puts `value` at `key`.
        fn put_behind(&self, key: &str, value: &HostStatus) {
            *self.revision.borrow_mut() += 1;
            let revision = *self.revision.borrow();
            self.keys
                .borrow_mut()
                .insert(key.to_owned(), (encode(value), revision));
        }

        fn requests(&self) -> Vec<&'static str> {
            self.requests.borrow().clone()
        }
    }

    impl GuardedStore for FakeStore {
        async fn read_at<T: Document>(
            &self,
            key: &str,
        ) -> Result<(Option<Versioned<T>>, i64), EtcdError> {
            self.requests.borrow_mut().push("read");
            let value = match self.keys.borrow().get(key) {
                Some((bytes, mod_revision)) => Some(Versioned {
                    value: crate::documents::decode(key, bytes)?,
                    mod_revision: *mod_revision,
                }),
                None => None,
            };
            Ok((value, *self.revision.borrow()))
        }

        async fn write_if(
            &self,
            key: &str,
            expected: i64,
            value: Option<Vec<u8>>,
        ) -> Result<Option<i64>, EtcdError> {
            self.requests.borrow_mut().push("write");
            let current = self.keys.borrow().get(key).map_or(0, |(_, r)| *r);
            if current != expected {
                return Ok(None);
            }
            *self.revision.borrow_mut() += 1;
            let revision = *self.revision.borrow();
            match value {
                Some(bytes) => {
                    self.keys
                        .borrow_mut()
                        .insert(key.to_owned(), (bytes, revision));
                }
                None => {
                    self.keys.borrow_mut().remove(key);
                }
            }
            Ok(Some(revision))
        }
    }

    const KEY: &str = "/baton/hosts/h1/status";

    fn status(state: HostState, message: &str) -> HostStatus {
        HostStatus {
            schema_version: documents::SCHEMA_VERSION,
            upgrade_id: Some(UpgradeId::new("u1").expect("id")),
            state,
            step: None,
            message: message.to_owned(),
            started_at: None,
            updated_at: "t".to_owned(),
            health: None,
        }
    }

    /// Sets the state to `to`, and says what it saw.
    async fn set(
        store: &FakeStore,
        known: &mut Option<Known<HostStatus>>,
        to: HostState,
        seen: &RefCell<Vec<Option<HostState>>>,
    ) -> Updated<HostStatus> {
        let outcome =
            guarded_update::<_, _, std::convert::Infallible, _>(store, KEY, known, |current| {
                seen.borrow_mut().push(current.map(|c| c.state));
                Ok(if current.map(|c| c.state) == Some(to) {
                    Change::Keep
                } else {
                    Change::Put(status(to, ""))
                })
            })
            .await;
        match outcome {
            Ok(Ok(updated)) => updated,
            Ok(Err(never)) => match never {},
            Err(e) => panic!("update: {e}"),
        }
    }

    #[tokio::test]
    async fn a_sole_writer_reads_once_then_writes_guarded_by_the_revision_it_wrote() {
        let store = FakeStore::default();
        let seen = RefCell::new(Vec::new());
        let mut known = None;
        let first = set(&store, &mut known, HostState::Updating, &seen).await;
        assert!(first.written);
        assert_eq!(store.requests(), ["read", "write"]);
        assert_eq!(
            known.as_ref().map(|k| k.mod_revision),
            Some(first.revision),
            "the revision it wrote is kept"
        );

        let second = set(&store, &mut known, HostState::Done, &seen).await;
        assert!(second.written);
        assert_eq!(second.attempts, 1);
        assert_eq!(
            store.requests(),
            ["read", "write", "write"],
            "no read before the second write"
        );
        assert_eq!(*seen.borrow(), [None, Some(HostState::Updating)]);

        // Nothing to change: no request at all.
        let kept = set(&store, &mut known, HostState::Done, &seen).await;
        assert!(!kept.written);
        assert_eq!(store.requests().len(), 3);
    }

    #[tokio::test]
    async fn a_write_whose_revision_is_stale_re_reads_decides_again_and_retries() {
        let store = FakeStore::default();
        let seen = RefCell::new(Vec::new());
        let mut known = None;
        set(&store, &mut known, HostState::Updating, &seen).await;
        // Someone else changed the key: the guarded write fails, the key is read again and
        // the decision is made from what was read.
        store.put_behind(KEY, &status(HostState::Failed, "behind the writer's back"));
        let retried = set(&store, &mut known, HostState::Done, &seen).await;
        assert!(retried.written);
        assert_eq!(retried.attempts, 2);
        assert_eq!(
            store.requests(),
            ["read", "write", "write", "read", "write"]
        );
        assert_eq!(
            *seen.borrow(),
            [None, Some(HostState::Updating), Some(HostState::Failed)],
            "decided first from what it wrote, then from what it read"
        );
        let stored = store.keys.borrow().get(KEY).cloned().expect("stored");
        assert_eq!(known.map(|k| k.mod_revision), Some(stored.1));
    }

    #[tokio::test]
    async fn without_known_state_every_update_reads_first() {
        let store = FakeStore::default();
        let seen = RefCell::new(Vec::new());
        set(&store, &mut None, HostState::Updating, &seen).await;
        set(&store, &mut None, HostState::Done, &seen).await;
        assert_eq!(store.requests(), ["read", "write", "read", "write"]);
    }
}
