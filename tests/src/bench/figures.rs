//! The measurements on one fleet, each with its reference taken in the same run: the
//! all-at-once upgrade of every host (completions per second, etcd requests and bytes per
//! host and whose they are, the orchestrator's peak memory, time to first install) and the
//! rolling upgrade one host at a time (median hand-off against a raw etcd put→watch round
//! trip).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_protocol::etcd::Client;
use baton_protocol::{HostId, UpgradeId, UpgradePhase};
use batonctl::client::ApiClient;
use etcd_client::WatchOptions;

use super::fleet::host_id;
use super::history::{self, Change, Writer};
use super::metrics::{self, EtcdCounts};
use super::world::{ALL_AT_ONCE_VERSION, ROLLING_VERSION, World};
use crate::error::HarnessError;

/// Hosts of the rolling upgrade (fewer if the fleet is smaller).
pub const ROLLING_HOSTS: usize = 200;
/// Round trips of the put→watch reference.
const ROUND_TRIPS: usize = 40;

/// What an all-at-once upgrade of the whole fleet showed.
#[derive(Debug, Clone)]
pub struct AllAtOnce {
    /// The upgrade's id and how it ended.
    pub id: UpgradeId,
    /// How it ended.
    pub phase: UpgradePhase,
    /// Hosts seen `Done` for it.
    pub done: usize,
    /// Hosts whose `desired` was written more than once for it.
    pub desired_rewritten: Vec<HostId>,
    /// Hosts whose `desired` was written for it.
    pub desired_hosts: usize,
    /// Its changes (from its request to its end).
    pub changes: Vec<Change>,
    /// Request to end.
    pub duration: Duration,
    /// Request to the first host `Done`.
    pub first_done: Option<Duration>,
    /// First `desired` to last `Done`.
    pub install_window: Option<Duration>,
    /// etcd's counts over the upgrade.
    pub etcd: EtcdCounts,
    /// The orchestrator's engine requests over the upgrade.
    pub engine_requests: f64,
    /// Hosts the engine's passes looked at over the upgrade, and its passes.
    pub engine_work: metrics::EngineWork,
}

impl AllAtOnce {
    /// Completions per second over the install window.
    pub fn completions_per_second(&self) -> Option<f64> {
        self.install_window
            .map(|w| self.done as f64 / w.as_secs_f64().max(f64::EPSILON))
    }

    /// Bytes of key and value written, by writer.
    pub fn bytes_written(&self, writer: Option<Writer>) -> usize {
        self.changes
            .iter()
            .filter(|c| writer.is_none_or(|w| c.writer == w))
            .map(|c| c.bytes)
            .sum()
    }

    /// Writes (puts and deletes), by writer.
    pub fn writes(&self, writer: Option<Writer>) -> usize {
        self.changes
            .iter()
            .filter(|c| writer.is_none_or(|w| c.writer == w))
            .count()
    }
}

/// Upgrades every host of `world` at once to [`ALL_AT_ONCE_VERSION`] and waits for the end.
pub async fn all_at_once(world: &World, id: &str) -> Result<AllAtOnce, HarnessError> {
    all_at_once_to(world, id, ALL_AT_ONCE_VERSION).await
}

/// Upgrades every host of `world` at once to bundle `version` and waits for the end.
pub async fn all_at_once_to(
    world: &World,
    id: &str,
    version: &str,
) -> Result<AllAtOnce, HarnessError> {
    let history = world.history().await?;
    let etcd_api = ApiClient::new(&world.etcd.metrics_endpoint())
        .map_err(|e| HarnessError(format!("etcd metrics URL: {e}")))?;
    // The orchestrator's counters first, etcd's next (its scrape reads etcd), and the
    // reverse at the end: the window holds neither scrape.
    let engine_before = metrics::scrape(&world.orchestrator.api).await?;
    let etcd_before = metrics::scrape(&etcd_api).await?;
    let started = Instant::now();
    let request = serde_json::json!({
        "image": world.bundle(version)?,
        "strategy": {"kind": "all-at-once", "allow_downtime": true},
    });
    let id = world.start_upgrade(id, request).await?;
    let phase = world.wait_end(&history, &id).await?;
    let changes = history.changes();
    let ended = changes
        .iter()
        .find(|c| matches!(&c.said, history::Said::Phase(u, p) if *u == id && p.is_terminal()))
        .map_or_else(Instant::now, |c| c.at);
    let etcd_after = metrics::scrape(&etcd_api).await?;
    let engine_after = metrics::scrape(&world.orchestrator.api).await?;
    let window: Vec<Change> = changes.into_iter().filter(|c| c.at <= ended).collect();
    let dones = history::done_times(&window, &id);
    let desired = history::desired_times(&window, &id);
    let mut writes: BTreeMap<HostId, usize> = BTreeMap::new();
    for (host, _) in &desired {
        *writes.entry(host.clone()).or_default() += 1;
    }
    let first_desired = desired.iter().map(|(_, at)| *at).min();
    let last_done = dones.iter().map(|(_, at)| *at).max();
    Ok(AllAtOnce {
        phase,
        done: dones.len(),
        desired_rewritten: writes
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(h, _)| h.clone())
            .collect(),
        desired_hosts: writes.len(),
        first_done: dones.iter().map(|(_, at)| at.duration_since(started)).min(),
        install_window: first_desired
            .zip(last_done)
            .map(|(a, b)| b.duration_since(a)),
        duration: ended.duration_since(started),
        changes: window,
        etcd: EtcdCounts::from(&etcd_after.since(&etcd_before)),
        engine_requests: metrics::engine_requests(&engine_after.since(&engine_before)),
        engine_work: metrics::engine_work(&engine_after.since(&engine_before)),
        id,
    })
}

/// What the rolling upgrade one host at a time showed.
#[derive(Debug, Clone)]
pub struct Rolling {
    /// Hosts upgraded.
    pub hosts: usize,
    /// How it ended.
    pub phase: UpgradePhase,
    /// Median of host i `Done` → host i+1's `desired`, as the benchmark's watch saw them.
    pub handoff: Duration,
    /// Median raw put→watch round trip on the same etcd.
    pub round_trip: Duration,
}

impl Rolling {
    /// The hand-off as a multiple of the round trip.
    pub fn ratio(&self) -> f64 {
        self.handoff.as_secs_f64() / self.round_trip.as_secs_f64().max(f64::EPSILON)
    }
}

/// Upgrades the first [`ROLLING_HOSTS`] hosts to [`ROLLING_VERSION`] in batches of one.
pub async fn rolling(world: &World, id: &str, fleet: usize) -> Result<Rolling, HarnessError> {
    let hosts: Vec<String> = (0..ROLLING_HOSTS.min(fleet)).map(host_id).collect();
    let round_trip = put_watch_round_trip(&world.client().await?).await?;
    let history = world.history().await?;
    let request = serde_json::json!({
        "image": world.bundle(ROLLING_VERSION)?,
        "strategy": {"kind": "rolling", "batch": {"count": 1}},
        "hosts": hosts,
    });
    let id = world.start_upgrade(id, request).await?;
    let phase = world.wait_end(&history, &id).await?;
    let changes = history.changes();
    let dones = history::done_times(&changes, &id);
    let desired = history::desired_times(&changes, &id);
    // For each host done, the first `desired` seen after it (the next host's).
    let mut handoffs: Vec<Duration> = dones
        .iter()
        .filter_map(|(_, done)| {
            desired
                .iter()
                .map(|(_, at)| *at)
                .filter(|at| at >= done)
                .min()
                .map(|next| next.duration_since(*done))
        })
        .collect();
    handoffs.sort();
    let handoff = handoffs
        .get(handoffs.len() / 2)
        .copied()
        .ok_or_else(|| HarnessError(format!("rolling upgrade {id}: no hand-off seen")))?;
    Ok(Rolling {
        hosts: hosts.len(),
        phase,
        handoff,
        round_trip,
    })
}

/// The median time from a put to its watch event, over [`ROUND_TRIPS`] puts.
pub async fn put_watch_round_trip(client: &Client) -> Result<Duration, HarnessError> {
    let key = "/baton-bench/round-trip";
    let fail = |what: &str, e: etcd_client::Error| HarnessError(format!("etcd {what} {key}: {e}"));
    let mut watch_client = client.watch_client();
    let (_watcher, mut stream) = watch_client
        .watch(key, None::<WatchOptions>)
        .await
        .map_err(|e| fail("watch", e))?;
    let mut kv = client.kv_client();
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS {
        let started = Instant::now();
        kv.put(key, i.to_string(), None)
            .await
            .map_err(|e| fail("put", e))?;
        loop {
            let message = stream.message().await.map_err(|e| fail("watch", e))?;
            match message {
                Some(resp) if !resp.events().is_empty() => break,
                Some(_) => continue,
                None => return Err(HarnessError(format!("watch of {key} ended"))),
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}
