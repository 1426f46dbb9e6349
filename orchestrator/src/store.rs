//! The orchestrator's reads and writes of etcd, on top of the protocol's keys and documents.
//!
//! Reads: whole parts of the keyspace with the revision of each key (for guards) and of
//! the read. Writes: one transaction per decision, guarded by the `mod_revision` of every
//! key the decision was based on, plus a **fence**: the writer's leadership key must still
//! exist, so a replica that lost leadership (its lease expired) cannot write anything, even
//! if it has not noticed yet. Several keys change together (an upgrade record, `active`,
//! `desired` keys, events), which the protocol's single-key `etcd::update` cannot express.

use baton_protocol::Keyspace;
use baton_protocol::documents::{Active, Document, HostsLayout, Upgrade, encode};
use baton_protocol::etcd::{self, Client, EtcdError, Versioned};
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp, TxnOpResponse};

use crate::view::{FleetView, Part};

/// Read-decide-write rounds an API write makes before answering 409.
pub const WRITE_ATTEMPTS: u32 = 8;

/// One key and value with the revision it was last changed at.
pub use baton_protocol::etcd::Kv;

fn request_error(op: &'static str, key: &str) -> impl FnOnce(etcd_client::Error) -> EtcdError {
    let key = key.to_owned();
    move |source| EtcdError::Request { op, key, source }
}

/// Reads every key under `prefix` (in pages, at one revision); returns them and the store
/// revision of the read.
pub async fn read_prefix(client: &Client, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
    etcd::read_prefix(client, prefix).await
}

/// The store's current revision, by a count-only read of `prefix` (no values travel): a
/// watch resumed after it sees every later change.
pub async fn revision(client: &Client, prefix: &str) -> Result<i64, EtcdError> {
    Ok(count(client, prefix).await?.1)
}

/// How many keys are under `prefix`, and the store's revision, by a count-only read.
async fn count(client: &Client, prefix: &str) -> Result<(i64, i64), EtcdError> {
    let resp = etcd::retry_auth_race(|| {
        let mut kv = client.kv_client();
        async move {
            kv.get(
                prefix,
                Some(GetOptions::new().with_prefix().with_count_only()),
            )
            .await
        }
    })
    .await
    .map_err(request_error("get", prefix))?;
    Ok((resp.count(), resp.header().map_or(0, |h| h.revision())))
}

/// Reads the given parts into a fresh view.
pub async fn read_view(
    client: &Client,
    keyspace: &Keyspace,
    parts: &[Part],
) -> Result<FleetView, EtcdError> {
    let mut view = FleetView::default();
    for part in parts {
        let (kvs, revision) = read_prefix(client, &part.prefix(keyspace)).await?;
        view.load(keyspace, *part, &kvs, revision);
    }
    Ok(view)
}

/// Guard: the key is as read — same `mod_revision`, or still absent when read absent (0).
pub fn unchanged(key: &str, mod_revision: i64) -> Compare {
    if mod_revision == 0 {
        Compare::create_revision(key, CompareOp::Equal, 0)
    } else {
        Compare::mod_revision(key, CompareOp::Equal, mod_revision)
    }
}

/// Guard: the writer's leadership key still exists (its lease is alive).
pub fn fence(leadership_key: &str) -> Compare {
    Compare::version(leadership_key, CompareOp::Greater, 0)
}

/// Largest document the orchestrator writes: etcd refuses a request above 1.5 MiB by
/// default (`--max-request-bytes`), and a transaction carries more than one value.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// The encoded size of `doc` if it is larger than [`MAX_VALUE_BYTES`].
pub fn oversized<T: Document>(doc: &T) -> Option<usize> {
    let size = encode(doc).len();
    (size > MAX_VALUE_BYTES).then_some(size)
}

/// A put of a document.
pub fn put<T: Document>(key: &str, doc: &T) -> TxnOp {
    TxnOp::put(key, encode(doc), None)
}

/// How a guarded write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Committed at this store revision.
    At(i64),
    /// A guard failed: something changed since the read (or leadership was lost).
    Conflict,
}

/// Commits `ops` if every guard holds. `key` names the main key in errors.
pub async fn commit(
    client: &Client,
    key: &str,
    guards: Vec<Compare>,
    ops: Vec<TxnOp>,
) -> Result<Written, EtcdError> {
    let txn = Txn::new().when(guards).and_then(ops);
    let resp = etcd::retry_auth_race(|| {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(request_error("txn", key))?;
    Ok(if resp.succeeded() {
        Written::At(resp.header().map_or(0, |h| h.revision()))
    } else {
        Written::Conflict
    })
}

/// Why creating an upgrade did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateRefused {
    /// Another upgrade is active (its id, if readable).
    Active(Option<String>),
    /// An upgrade with this id exists already.
    Exists,
    /// This replica is no longer the leader.
    NotLeader,
}

/// etcd's largest transaction (`--max-txn-ops`, 128 by default): no more operations, and no
/// more guards, in one.
pub const MAX_TXN_OPS: usize = 128;

/// Creates upgrade `upgrade` (its record and its hosts' keys), `active` naming it, and
/// `extra` (its first events): only if no upgrade is active, the id is free and this replica
/// still leads. The hosts that do not fit the record's transaction are written ahead of it,
/// [`MAX_TXN_OPS`] at a time under the same guards (readers ignore them until the record
/// exists); keys left by an earlier attempt with the same id are removed first.
pub async fn create_upgrade(
    client: &Client,
    keyspace: &Keyspace,
    leadership_key: &str,
    upgrade: &Upgrade,
    mut extra: Vec<TxnOp>,
) -> Result<Result<i64, CreateRefused>, EtcdError> {
    let upgrade_key = keyspace.upgrade(&upgrade.id);
    let mut ops = etcd::upgrade_ops(keyspace, HostsLayout::Keys, None, upgrade);
    // The record, then every host.
    let record = ops.remove(0);
    let hosts_prefix = keyspace.upgrade_hosts_prefix(&upgrade.id);
    if count(client, &hosts_prefix).await?.0 > 0 {
        let clear = TxnOp::delete(
            hosts_prefix.as_str(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        );
        if let Err(refused) =
            create_step(client, keyspace, leadership_key, &upgrade_key, vec![clear]).await?
        {
            return Ok(Err(refused));
        }
    }
    let room = MAX_TXN_OPS - 1 - extra.len();
    let ahead = ops.len().saturating_sub(room);
    let last: Vec<TxnOp> = ops.split_off(ahead);
    for chunk in ops.chunks(MAX_TXN_OPS) {
        if let Err(refused) = create_step(
            client,
            keyspace,
            leadership_key,
            &upgrade_key,
            chunk.to_vec(),
        )
        .await?
        {
            return Ok(Err(refused));
        }
    }
    let mut final_ops = vec![record];
    final_ops.extend(last);
    final_ops.append(&mut extra);
    create_step(client, keyspace, leadership_key, &upgrade_key, final_ops).await
}

/// One transaction of [`create_upgrade`]: `ops` only if no upgrade is active, the record's
/// id is free and this replica leads; otherwise which of them failed.
async fn create_step(
    client: &Client,
    keyspace: &Keyspace,
    leadership_key: &str,
    upgrade_key: &str,
    ops: Vec<TxnOp>,
) -> Result<Result<i64, CreateRefused>, EtcdError> {
    let active_key = keyspace.active();
    let txn = Txn::new()
        .when([
            Compare::create_revision(active_key.as_str(), CompareOp::Equal, 0),
            Compare::create_revision(upgrade_key, CompareOp::Equal, 0),
            fence(leadership_key),
        ])
        .and_then(ops)
        .or_else([
            TxnOp::get(active_key.as_str(), None),
            TxnOp::get(upgrade_key, None),
            TxnOp::get(leadership_key, None),
        ]);
    let resp = etcd::retry_auth_race(|| {
        let (mut kv, txn) = (client.kv_client(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(request_error("txn", upgrade_key))?;
    if resp.succeeded() {
        return Ok(Ok(resp.header().map_or(0, |h| h.revision())));
    }
    // The failure branch read the three keys: say which guard failed.
    let found: Vec<Option<Vec<u8>>> = resp
        .op_responses()
        .into_iter()
        .map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        })
        .collect();
    let refused = match found.as_slice() {
        [Some(active), ..] => CreateRefused::Active(
            baton_protocol::documents::decode::<Active>(&active_key, active)
                .ok()
                .map(|a| a.upgrade_id.to_string()),
        ),
        [None, Some(_), ..] => CreateRefused::Exists,
        _ => CreateRefused::NotLeader,
    };
    Ok(Err(refused))
}

/// Reads `active`.
pub async fn read_active(
    client: &Client,
    keyspace: &Keyspace,
) -> Result<Option<Versioned<Active>>, EtcdError> {
    baton_protocol::etcd::read::<Active>(client, &keyspace.active()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_protocol::documents::{Maintenance, MaintenanceMode, SCHEMA_VERSION};

    #[test]
    fn documents_etcd_would_refuse_are_found_before_writing() {
        let doc = |reason: String| Maintenance {
            schema_version: SCHEMA_VERSION,
            mode: MaintenanceMode::Paused,
            reason,
            since: "2026-11-29T00:00:00.000Z".into(),
            reboot: false,
        };
        assert_eq!(oversized(&doc("disk".into())), None);
        let size = oversized(&doc("x".repeat(MAX_VALUE_BYTES))).expect("too large");
        assert!(size > MAX_VALUE_BYTES);
    }
}
