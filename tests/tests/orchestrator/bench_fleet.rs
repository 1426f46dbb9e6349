//! The benchmark's fleet checked for correctness, without timing: 200 simulated hosts (the
//! real agent on the no-work host fake, sharing a few etcd connections, registered through
//! the API of the real `baton-orchestrator` process, downloads through the stand-in Docker
//! Engine) upgraded all at once. Every host ends `Done`, etcd's history shows each host's
//! `desired` written exactly once, and the upgrade's record and audit trail count every
//! host once in each step.
//!
//! Needs `cargo build -p baton-orchestrator` (which `make test` runs first).

use std::collections::BTreeMap;

use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{Event, HostOutcomeState, decode};
use baton_protocol::events::EventKind;
use baton_protocol::{HostId, Keyspace, UpgradePhase};
use baton_tests::bench::figures;
use baton_tests::bench::world::World;

const HOSTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_all_at_once_upgrade_of_200_simulated_hosts_does_every_host_once() {
    let world = World::start(HOSTS).await.unwrap_or_else(|e| panic!("{e}"));
    let upgrade = figures::all_at_once(&world, "bench-fleet")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upgrade.phase, UpgradePhase::Succeeded);
    assert_eq!(upgrade.done, HOSTS, "hosts seen Done");
    assert_eq!(upgrade.desired_hosts, HOSTS, "hosts told to install");
    assert!(
        upgrade.desired_rewritten.is_empty(),
        "desired written more than once for {:?}",
        upgrade.desired_rewritten
    );
    assert_eq!(world.docker.jobs(), HOSTS as u64, "downloader jobs run");

    // The record, through the API.
    let info: UpgradeInfo = world
        .orchestrator
        .api
        .get(&format!("/v1/upgrades/{}", upgrade.id))
        .await
        .expect("GET the upgrade");
    assert_eq!(info.upgrade.phase, UpgradePhase::Succeeded);
    assert_eq!(
        info.counts,
        BTreeMap::from([(HostOutcomeState::Succeeded, HOSTS)]),
        "the record's outcomes"
    );

    // The audit trail: the upgrade created once, each host downloaded, dispatched and
    // succeeded once, nothing failed.
    let prefix = Keyspace::default().events_prefix(&upgrade.id);
    let mut per_kind: BTreeMap<EventKind, BTreeMap<Option<HostId>, usize>> = BTreeMap::new();
    let client = world.client().await.unwrap_or_else(|e| panic!("{e}"));
    let mut key = prefix.clone();
    let end =
        etcd_client::GetOptions::new().with_range(format!("{}0", prefix.trim_end_matches('/')));
    loop {
        let resp = client
            .kv_client()
            .get(key.as_str(), Some(end.clone().with_limit(500)))
            .await
            .expect("read events");
        for kv in resp.kvs() {
            let event: Event =
                decode(&String::from_utf8_lossy(kv.key()), kv.value()).expect("event");
            *per_kind
                .entry(event.kind)
                .or_default()
                .entry(event.host)
                .or_default() += 1;
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => key = format!("{}\0", String::from_utf8_lossy(last.key())),
            _ => break,
        }
    }
    let once_per_host = |kind: EventKind| {
        let hosts = per_kind.get(&kind).cloned().unwrap_or_default();
        assert_eq!(hosts.len(), HOSTS, "hosts with a {kind:?} event");
        assert!(
            hosts.iter().all(|(h, n)| h.is_some() && *n == 1),
            "{kind:?} events per host: {hosts:?}"
        );
    };
    once_per_host(EventKind::HostDownloaded);
    once_per_host(EventKind::HostDispatched);
    once_per_host(EventKind::HostSucceeded);
    assert_eq!(
        per_kind
            .get(&EventKind::Created)
            .map(|h| h.values().sum::<usize>()),
        Some(1),
        "created events"
    );
    for kind in [EventKind::HostFailed, EventKind::HostSkipped] {
        assert!(
            !per_kind.contains_key(&kind),
            "{kind:?} events: {:?}",
            per_kind.get(&kind)
        );
    }
}
