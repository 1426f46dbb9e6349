//! Upgrade records in etcd: reading one with its hosts' outcomes (their keys read at the
//! record's revision) and the transaction operations that store one
//! ([`crate::documents::record_writes`]).

use std::collections::BTreeMap;

use etcd_client::{Client, TxnOp};

use super::{EtcdError, Versioned};
use crate::documents::{
    HostsLayout, RecordWrite, Upgrade, UpgradeHost, assemble, decode, record_writes,
};
use crate::keys::{Key, Keyspace};
use crate::names::UpgradeId;

/// Reads upgrade `id` as readers see it (its record and its hosts' keys, at one revision),
/// with the layout its record is stored in. `None`: no such record.
pub async fn read_upgrade(
    client: &Client,
    keyspace: &Keyspace,
    id: &UpgradeId,
) -> Result<Option<(Versioned<Upgrade>, HostsLayout)>, EtcdError> {
    let key = keyspace.upgrade(id);
    let (record, revision) = super::cas::read_at::<Upgrade>(client, &key).await?;
    let Some(record) = record else {
        return Ok(None);
    };
    let mut outcomes = BTreeMap::new();
    if record.value.hosts.is_empty() {
        let (kvs, _) =
            super::read_prefix_at(client, &keyspace.upgrade_hosts_prefix(id), revision).await?;
        for (key, value, _) in kvs {
            if let Ok(Key::UpgradeHost(_, host)) = keyspace.parse(&key) {
                outcomes.insert(host, decode::<UpgradeHost>(&key, &value)?.outcome);
            }
        }
    }
    let (value, layout) = assemble(record.value, outcomes);
    Ok(Some((
        Versioned {
            value,
            mod_revision: record.mod_revision,
        },
        layout,
    )))
}

/// The operations storing `after` in `layout` over `before` as stored (`None`: new): its
/// record first, then the keys of the hosts whose outcome changed.
pub fn upgrade_ops(
    keyspace: &Keyspace,
    layout: HostsLayout,
    before: Option<&Upgrade>,
    after: &Upgrade,
) -> Vec<TxnOp> {
    record_writes(keyspace, layout, before, after)
        .into_iter()
        .map(|w| match w {
            RecordWrite::Put(key, value) => TxnOp::put(key, value, None),
            RecordWrite::Delete(key) => TxnOp::delete(key, None),
        })
        .collect()
}
