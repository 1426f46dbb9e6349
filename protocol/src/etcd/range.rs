//! Reading every key under a prefix, in pages, at one revision: the one way any part reads a
//! prefix.
//!
//! One range response must fit the gRPC client's message limit (4 MiB by default), and a
//! fleet's prefix can hold far more (10,000 hosts with six documents each). So the prefix is
//! read [`PAGE_KEYS`] keys at a time, every page at the revision of the first one (a
//! consistent snapshot, whatever is written meanwhile); a page whose bytes near the limit
//! makes the next one ask for half as many keys, and a response refused as too large is
//! asked again with half as many.

use etcd_client::{Client, GetOptions};

use super::EtcdError;

/// Keys asked for per page.
pub const PAGE_KEYS: i64 = 256;
/// Bytes a page may carry before the next asks for half as many keys: half the gRPC
/// client's default 4 MiB message limit.
pub const PAGE_BYTES: usize = 2 * 1024 * 1024;

/// One key, its value and the revision it was last changed at.
pub type Kv = (String, Vec<u8>, i64);

/// The first key after every key starting with `prefix` (etcd's range end for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the keyspace.
    vec![0]
}

/// How many keys the next page asks for, after a page of `bytes` asked with `limit`.
pub fn next_limit(limit: i64, bytes: usize) -> i64 {
    if bytes > PAGE_BYTES {
        (limit / 2).max(1)
    } else if bytes < PAGE_BYTES / 4 {
        (limit * 2).min(PAGE_KEYS)
    } else {
        limit
    }
}

/// etcd's answer did not fit the client's message limit.
fn too_large(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if matches!(s.code(), tonic::Code::OutOfRange | tonic::Code::ResourceExhausted)
            && s.message().contains("too large"))
}

/// Reads every key under `prefix` at the newest revision; returns them in key order and
/// the revision of the read.
pub async fn read_prefix(client: &Client, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
    read_prefix_at(client, prefix, 0).await
}

/// Reads every key under `prefix` as of `revision` (0: the newest), in pages; returns them
/// in key order and the revision read.
pub async fn read_prefix_at(
    client: &Client,
    prefix: &str,
    revision: i64,
) -> Result<(Vec<Kv>, i64), EtcdError> {
    let end = prefix_end(prefix.as_bytes());
    let mut start = prefix.as_bytes().to_vec();
    let mut limit = PAGE_KEYS;
    let mut at = revision;
    let mut kvs = Vec::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_limit(limit)
            .with_revision(at);
        let answer = super::retry_auth_race(|| {
            let (mut kv, start, options) = (client.kv_client(), start.clone(), options.clone());
            async move { kv.get(start, Some(options)).await }
        })
        .await;
        let resp = match answer {
            Err(e) if too_large(&e) && limit > 1 => {
                limit = (limit / 2).max(1);
                continue;
            }
            other => other.map_err(EtcdError::request("get", prefix))?,
        };
        if at == 0 {
            at = resp.header().map_or(0, |h| h.revision());
        }
        let mut bytes = 0;
        for kv in resp.kvs() {
            bytes += kv.key().len() + kv.value().len();
            kvs.push((
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
                kv.mod_revision(),
            ));
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                // The next page starts just after the last key read.
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok((kvs, at)),
        }
        limit = next_limit(limit, bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_ends_at_its_last_byte_plus_one() {
        assert_eq!(prefix_end(b"/baton/hosts/"), b"/baton/hosts0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn pages_shrink_near_the_message_limit_and_grow_back() {
        assert_eq!(next_limit(PAGE_KEYS, PAGE_BYTES + 1), PAGE_KEYS / 2);
        assert_eq!(next_limit(1, 10 * PAGE_BYTES), 1);
        assert_eq!(next_limit(64, PAGE_BYTES / 2), 64);
        assert_eq!(next_limit(64, 1000), 128);
        assert_eq!(next_limit(PAGE_KEYS, 1000), PAGE_KEYS);
    }

    #[test]
    fn only_a_response_over_the_message_limit_is_asked_again_smaller() {
        let status = |code, message: &str| {
            etcd_client::Error::GRpcStatus(tonic::Status::new(code, message.to_owned()))
        };
        assert!(too_large(&status(
            tonic::Code::OutOfRange,
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes"
        )));
        assert!(!too_large(&status(
            tonic::Code::PermissionDenied,
            "etcdserver: permission denied"
        )));
    }
}
