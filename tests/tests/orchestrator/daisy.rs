//! A daisy-chain upgrade on the simulated fleet keeps going with no orchestrator: four hosts
//! on 1.0.0 (installed through the orchestrator), then a daisy-chain upgrade to 2.0.0 whose
//! orchestrator is stopped as soon as the first host was dispatched. The orchestrator told
//! every host up front whom it follows; each agent starts once its predecessor's `status`
//! says `Done` (no host writes another's keys), and every host ends on 2.0.0. A new
//! orchestrator then only reports: the same upgrade record ends `Succeeded`, each host told
//! once.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::{Duration, Instant};

use crate::support::{Orchestrator, SimFleet};
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{Desired, HostStatus, Installed};
use baton_protocol::etcd::{self, Client, Credential};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradeId, UpgradePhase};
use baton_tests::bundles::{RemoveImages, binaries, build_bundle, prepare_source};
use baton_tests::etcd::assert_no_key_holds;
use batonctl::client::ApiClient;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(600);

async fn wait_phase(api: &ApiClient, id: &str, phase: UpgradePhase) -> UpgradeInfo {
    let started = Instant::now();
    loop {
        let u: UpgradeInfo = api.upgrade(id).await.expect("show upgrade");
        if u.upgrade.phase == phase || u.upgrade.phase.is_terminal() {
            return u;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "{id} still {:?}",
            u.upgrade.phase
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn read<T: baton_protocol::documents::Document>(client: &Client, key: &str) -> Option<T> {
    etcd::read::<T>(client, key)
        .await
        .expect("etcd read")
        .map(|v| v.value)
}

#[tokio::test]
async fn a_daisy_chain_upgrade_finishes_with_the_orchestrator_stopped() {
    let sim = SimFleet::start(4).await;
    let bins = binaries();
    let (registry, fleet, etcd) = (&sim.registry, &sim.fleet, &sim.etcd);
    let client = etcd.client().await.expect("client");
    let keys = Keyspace::default();

    let sources = tempfile::tempdir().expect("tmp");
    let mut images = RemoveImages(Vec::new());
    let mut tags = Vec::new();
    for (i, version) in ["1.0.0", "2.0.0"].iter().enumerate() {
        let dir = sources.path().join(version);
        prepare_source(version, &dir).await;
        let tag = format!("{}:{version}", registry.reference("baton/bundle"));
        build_bundle(version, &dir, &tag, &bins.agents[i], &bins.downloader).await;
        images.0.push(tag.clone());
        tags.push(tag);
    }

    let orch = sim.leader(sim.config("orch-a")).await;
    let api = orch.api.clone();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v1", "image": tags[0], "strategy": {"kind": "all-at-once", "allow_downtime": true}}),
    )
    .await
    .expect("start 1.0.0");
    let v1 = wait_phase(&api, "u-v1", UpgradePhase::Succeeded).await;
    assert_eq!(
        v1.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?}",
        v1.upgrade.reason
    );

    // Daisy-chain to 2.0.0; the orchestrator goes away once the first host is dispatched.
    let started = Instant::now();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v2", "image": tags[1], "strategy": {"kind": "daisy-chain"}}),
    )
    .await
    .expect("start daisy-chain");
    let desired_for_v2 = |client: Client, host: HostId| async move {
        read::<Desired>(&client, &Keyspace::default().host(&host, HostKey::Desired))
            .await
            .filter(|d| d.upgrade_id.as_str() == "u-v2")
    };
    let hosts: Vec<HostId> = fleet
        .hosts()
        .iter()
        .map(|h| HostId::new(h.name()).expect("id"))
        .collect();
    let first = loop {
        let mut told = Vec::new();
        for h in &hosts {
            if let Some(d) = desired_for_v2(client.clone(), h.clone()).await {
                told.push((h.clone(), d.after));
            }
        }
        if !told.is_empty() {
            // One transaction tells the whole chain: the first host follows no one, each
            // other host the one before it.
            assert_eq!(told.len(), hosts.len(), "{told:?}");
            let starts: Vec<&HostId> = told
                .iter()
                .filter(|(_, after)| after.is_none())
                .map(|(h, _)| h)
                .collect();
            assert_eq!(starts.len(), 1, "a daisy chain starts one host: {told:?}");
            let mut followed: Vec<&HostId> = told.iter().filter_map(|(_, a)| a.as_ref()).collect();
            followed.sort();
            followed.dedup();
            assert_eq!(
                followed.len(),
                hosts.len() - 1,
                "a chain, not a tree: {told:?}"
            );
            break starts[0].clone();
        }
        assert!(started.elapsed() < TIMEOUT, "no host was dispatched");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    orch.stop().await;
    eprintln!(
        "TIMING first host {first} dispatched after {:?}; orchestrator stopped",
        started.elapsed()
    );

    // With no orchestrator, every host gets to 2.0.0, each starting after the one before.
    for h in &hosts {
        let status_key = keys.host(h, HostKey::Status);
        loop {
            let status = read::<HostStatus>(&client, &status_key).await;
            let ours = status
                .as_ref()
                .filter(|s| s.upgrade_id.as_ref().map(|u| u.as_str()) == Some("u-v2"));
            if let Some(s) = ours.filter(|s| s.state.is_settled()) {
                assert_eq!(s.state, HostState::Done, "{h}: {s:?}");
                break;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "{h} never finished u-v2: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let installed = read::<Installed>(&client, &keys.host(h, HostKey::Installed))
            .await
            .expect("installed");
        assert_eq!(installed.bundle_version.as_deref(), Some("2.0.0"), "{h}");
        assert_eq!(installed.kernel.as_deref(), Some("6.1.0-baton2"), "{h}");
    }
    eprintln!(
        "TIMING daisy-chain over 4 hosts without an orchestrator: {:?}",
        started.elapsed()
    );

    // A new orchestrator only reports: the same upgrade ends Succeeded, each host told once.
    let orch = Orchestrator::start(sim.config("orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let v2 = wait_phase(&orch.api, "u-v2", UpgradePhase::Succeeded).await;
    assert_eq!(
        v2.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        v2.upgrade.reason,
        v2.upgrade.hosts
    );
    for h in &hosts {
        let resp = client
            .kv_client()
            .get(keys.host(h, HostKey::Desired), None)
            .await
            .expect("get");
        assert_eq!(
            resp.kvs()[0].version(),
            2,
            "{h}: desired written once per upgrade"
        );
    }

    per_host_identities(&sim, &client, &hosts).await;
    abort_mid_chain(&orch.api, &client, &hosts, &tags[0]).await;
    remove_a_host(&sim, &orch.api, &client, &hosts[3]).await;

    orch.stop().await;
    drop(images);
    sim.fleet.destroy().expect("fleet cleanup");
}

/// Each host's agent works under its own identity, delivered by its downloader job into a
/// root-only file; with it host-1 can write none of another host's keys, the records,
/// `active` or the events; no credential is stored in etcd.
async fn per_host_identities(sim: &SimFleet, client: &Client, hosts: &[HostId]) {
    use std::os::unix::fs::PermissionsExt;
    let keys = Keyspace::default();
    let mut credentials = Vec::new();
    for h in hosts {
        let path = credential_file(sim, h);
        let mode = std::fs::metadata(&path)
            .expect("credential file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", path.display());
        let credential = Credential::load(&path).expect("credential");
        assert_eq!(credential.user, format!("baton-host-{h}"));
        credentials.push(credential);
    }
    let (first, other) = (&hosts[0], &hosts[1]);
    let as_first = sim
        .etcd
        .client_as(&credentials[0])
        .await
        .expect("connect as a host");
    let u = UpgradeId::new("u-v2").expect("id");
    for key in [
        keys.host(other, HostKey::Desired),
        keys.host(other, HostKey::Status),
        keys.host(first, HostKey::Desired),
        keys.upgrade(&u),
        keys.active(),
        keys.event(&u, 999),
    ] {
        let err = as_first
            .kv_client()
            .put(key.as_str(), "{}", None)
            .await
            .err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.to_string().contains("permission denied")),
            "{first} writing {key}: {err:?}"
        );
    }
    let passwords: Vec<&str> = credentials.iter().map(|c| c.password.as_str()).collect();
    assert_no_key_holds(client, &passwords).await;
}

/// Where the downloader job left `host`'s etcd credential (its /etc/baton, on the machine).
fn credential_file(sim: &SimFleet, host: &HostId) -> std::path::PathBuf {
    sim.fleet
        .host(host.as_str())
        .expect("host")
        .root()
        .join("etc/baton/etcd-credential")
}

/// A daisy chain aborted while its first host works: no later host starts, and nothing
/// writes a later host's `desired` from then on.
async fn abort_mid_chain(api: &ApiClient, client: &Client, hosts: &[HostId], back_to_v1: &str) {
    let keys = Keyspace::default();
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": "u-v3", "image": back_to_v1, "strategy": {"kind": "daisy-chain"}, "allow_downgrade": true}),
    )
    .await
    .expect("start the second chain");
    let started = Instant::now();
    // Abort once the first host is installing.
    let first = loop {
        let mut updating = None;
        for h in hosts {
            let status = read::<HostStatus>(client, &keys.host(h, HostKey::Status)).await;
            if status.is_some_and(|s| s.upgrade_id.as_ref().map(|u| u.as_str()) == Some("u-v3")) {
                updating = Some(h.clone());
            }
        }
        if let Some(h) = updating {
            break h;
        }
        assert!(started.elapsed() < TIMEOUT, "no host started u-v3");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Removing a host the upgrade names is refused meanwhile.
    let refused = api
        .delete::<serde_json::Value>(&format!("/v1/hosts/{}", hosts[3]))
        .await
        .err()
        .map(|e| e.to_string());
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("409")),
        "{refused:?}"
    );
    api.post::<_, UpgradeInfo>("/v1/upgrades/u-v3/abort", &json!({}))
        .await
        .expect("abort");
    let later: Vec<&HostId> = hosts.iter().filter(|h| **h != first).collect();
    let at_abort = desired_revisions(client, &later).await;
    eprintln!("TIMING second chain aborted after {:?}", started.elapsed());
    // Long enough for the first host to finish and a chain to have moved on.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(
        desired_revisions(client, &later).await,
        at_abort,
        "desired written after the abort"
    );
    for h in hosts.iter().filter(|h| **h != first) {
        let status = read::<HostStatus>(client, &keys.host(h, HostKey::Status)).await;
        assert!(
            status
                .as_ref()
                .is_none_or(|s| s.upgrade_id.as_ref().map(|u| u.as_str()) != Some("u-v3")),
            "{h} started the aborted chain: {status:?}"
        );
    }
}

/// Each host's `desired` revision (none: no key).
async fn desired_revisions(client: &Client, hosts: &[&HostId]) -> Vec<Option<i64>> {
    let keys = Keyspace::default();
    let mut revs = Vec::new();
    for h in hosts {
        let resp = client
            .kv_client()
            .get(keys.host(h, HostKey::Desired), None)
            .await
            .expect("get");
        revs.push(resp.kvs().first().map(|kv| kv.mod_revision()));
    }
    revs
}

/// Removing a host revokes its identity: its credential no longer authenticates, and its
/// agent's `alive` (deleted with its keys) is never written again.
async fn remove_a_host(sim: &SimFleet, api: &ApiClient, client: &Client, gone: &HostId) {
    let keys = Keyspace::default();
    let credential = Credential::load(&credential_file(sim, gone)).expect("credential");
    sim.etcd
        .client_as(&credential)
        .await
        .expect("the host's credential authenticates before the removal");
    api.delete::<serde_json::Value>(&format!("/v1/hosts/{gone}"))
        .await
        .expect("remove the host");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let alive = client
            .kv_client()
            .get(keys.host(gone, HostKey::Alive), None)
            .await
            .expect("get");
        assert!(alive.kvs().is_empty(), "{gone}'s agent still writes alive");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        sim.etcd.client_as(&credential).await.is_err(),
        "{gone}'s credential still authenticates"
    );
}
