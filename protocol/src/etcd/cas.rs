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

/// Read-decide-write with retries: `decide` sees the current document (or `None`) and says
/// what to do; the write happens only if the key did not change since the read, otherwise
/// it re-reads and decides again. `decide` must be pure: it may run several times.
pub async fn update<T, E, F>(
    client: &Client,
    key: &str,
    mut decide: F,
) -> Result<Result<Updated<T>, E>, EtcdError>
where
    T: Document + Clone,
    F: FnMut(Option<&T>) -> Result<Change<T>, E>,
{
    for attempt in 1..=MAX_ATTEMPTS {
        let (current, read_revision) = read_at::<T>(client, key).await?;
        let expected = current.as_ref().map_or(0, |v| v.mod_revision);
        let current = current.map(|v| v.value);
        let change = match decide(current.as_ref()) {
            Ok(change) => change,
            Err(e) => return Ok(Err(e)),
        };
        let written = match &change {
            Change::Keep => {
                return Ok(Ok(Updated {
                    value: current,
                    revision: read_revision,
                    attempts: attempt,
                    written: false,
                }));
            }
            Change::Put(value) => put_if_unchanged(client, key, value, expected).await?,
            Change::Delete => {
                guarded(
                    client,
                    key,
                    expected,
                    TxnOp::delete(key, None),
                    "txn delete",
                )
                .await?
            }
        };
        if let Some(revision) = written {
            let value = match change {
                Change::Put(v) => Some(v),
                _ => None,
            };
            return Ok(Ok(Updated {
                value,
                revision,
                attempts: attempt,
                written: true,
            }));
        }
        tracing::debug!(key, attempt, "compare-and-swap conflict, re-reading");
        // Short, growing pause so two contenders do not collide in lockstep forever.
        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(10)) * 3)).await;
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
