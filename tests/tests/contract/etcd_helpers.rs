//! The `protocol` etcd helpers against a real etcd server: compare-and-swap under a race,
//! a watch that was down across a compaction, a lost lease, and leader failover on a
//! 3-member cluster.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_protocol::documents::{self, Active, Alive, Document, encode};
use baton_protocol::etcd::{
    self, Change, Client, Election, KeptLease, ResumableWatch, WatchUpdate,
};
use baton_protocol::{HostId, HostKey, Keyspace, UpgradeId};
use baton_tests::etcd::{EtcdCluster, EtcdServer};
use etcd_client::GetOptions;
use serde::{Deserialize, Serialize};

/// A counter document, only for these tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    schema_version: u32,
    n: u64,
    writers: Vec<String>,
}

impl Document for Counter {
    const KIND: &'static str = "test counter";
}

fn bump(
    writer: &str,
) -> impl FnMut(Option<&Counter>) -> Result<Change<Counter>, std::convert::Infallible> + '_ {
    move |current| {
        let mut next = current.cloned().unwrap_or(Counter {
            schema_version: 1,
            n: 0,
            writers: vec![],
        });
        next.n += 1;
        next.writers.push(writer.to_owned());
        Ok(Change::Put(next))
    }
}

async fn server() -> EtcdServer {
    EtcdServer::start().await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_both_land_and_the_loser_retries() {
    let etcd = server().await;
    let a = etcd.client().await.expect("client a");
    let b = etcd.client().await.expect("client b");
    let key = "/baton-test/counter";

    // Writer A decides on a stale read: while A is deciding, B completes a whole update.
    // A's guarded write must fail, and A must re-read and decide again.
    let mut b_written = false;
    let endpoint = etcd.endpoint();
    let outcome = etcd::update::<Counter, std::convert::Infallible, _>(&a, key, |current| {
        if !b_written {
            b_written = true;
            let endpoint = endpoint.clone();
            // B runs on its own thread and runtime so it finishes before A's decision returns.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt");
                rt.block_on(async {
                    let b = etcd::connect(&[endpoint]).await.expect("connect b");
                    etcd::update(&b, "/baton-test/counter", bump("b"))
                        .await
                        .expect("etcd")
                        .expect("b");
                });
            })
            .join()
            .expect("writer b");
        }
        bump("a")(current)
    })
    .await
    .expect("etcd")
    .expect("a");

    assert_eq!(
        outcome.attempts, 2,
        "A should have conflicted once and retried"
    );
    let stored: Counter = etcd::read(&b, key)
        .await
        .expect("read")
        .expect("present")
        .value;
    assert_eq!(stored.n, 2, "no update may be lost: {stored:?}");
    assert_eq!(stored.writers, ["b", "a"]);

    // And under real contention: two tasks, 40 increments each, none lost.
    let run = |client: Client, name: &'static str| async move {
        let mut conflicts = 0;
        for _ in 0..40 {
            let done = etcd::update(&client, "/baton-test/contended", bump(name))
                .await
                .expect("etcd")
                .expect("update");
            conflicts += done.attempts - 1;
        }
        conflicts
    };
    let (ca, cb) = tokio::join!(run(a.clone(), "a"), run(b.clone(), "b"));
    let stored: Counter = etcd::read(&a, "/baton-test/contended")
        .await
        .expect("read")
        .expect("present")
        .value;
    assert_eq!(stored.n, 80, "lost updates under contention");
    println!(
        "contended counter: 80 updates, {} conflicts retried",
        ca + cb
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_a_second_active_upgrade() {
    let etcd = server().await;
    let client = etcd.client().await.expect("client");
    let ks = Keyspace::default();
    let first = Active {
        schema_version: documents::SCHEMA_VERSION,
        upgrade_id: UpgradeId::new("u1").expect("id"),
    };
    let second = Active {
        upgrade_id: UpgradeId::new("u2").expect("id"),
        ..first.clone()
    };
    assert!(
        etcd::create(&client, &ks.active(), &first)
            .await
            .expect("create")
    );
    assert!(
        !etcd::create(&client, &ks.active(), &second)
            .await
            .expect("create")
    );
    let stored: Active = etcd::read(&client, &ks.active())
        .await
        .expect("read")
        .expect("present")
        .value;
    assert_eq!(stored, first);
}

/// Applies watch updates to a local copy of the prefix, as a level-triggered consumer would.
fn apply(state: &mut BTreeMap<String, Vec<u8>>, update: WatchUpdate) {
    match update {
        WatchUpdate::Snapshot { kvs, .. } => {
            *state = kvs.into_iter().collect();
        }
        WatchUpdate::Changes(changes) => {
            for c in changes {
                match c.value {
                    Some(v) => state.insert(c.key, v),
                    None => state.remove(&c.key),
                };
            }
        }
    }
}

async fn etcd_state(client: &Client, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let resp = client
        .kv_client()
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("get prefix");
    resp.kvs()
        .iter()
        .map(|kv| (kv.key_str().expect("utf8").to_owned(), kv.value().to_vec()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_down_across_compaction_ends_with_the_right_state() {
    let etcd = server().await;
    let client = etcd.client().await.expect("client");
    let ks = Keyspace::default();
    let prefix = ks.hosts_prefix();
    let put = |host: &str, v: &str| {
        let client = client.clone();
        let key = ks.host(&HostId::new(host).expect("host"), HostKey::Installed);
        let v = v.to_owned();
        async move {
            client.kv_client().put(key, v, None).await.expect("put");
        }
    };
    put("h1", "v1").await;
    put("h2", "v1").await;

    let mut watch = ResumableWatch::new(client.clone(), prefix.clone());
    let mut seen = BTreeMap::new();
    let first = watch.next().await.expect("snapshot");
    assert!(matches!(first, WatchUpdate::Snapshot { .. }), "{first:?}");
    apply(&mut seen, first);
    put("h1", "v2").await;
    apply(&mut seen, watch.next().await.expect("changes"));
    assert_eq!(seen, etcd_state(&client, &prefix).await);

    // The watcher goes down, remembering only where it was.
    let resume_from = watch.next_revision();
    drop(watch);
    put("h2", "v2").await;
    put("h3", "v1").await;
    client
        .kv_client()
        .delete(
            ks.host(&HostId::new("h1").expect("h"), HostKey::Installed),
            None,
        )
        .await
        .expect("delete");
    put("h3", "v2").await;
    let rev = client
        .kv_client()
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    client
        .kv_client()
        .compact(rev, None)
        .await
        .expect("compact");

    // Back up: its revision is gone, so it must re-read the prefix and carry on watching.
    let mut watch = ResumableWatch::resume(client.clone(), prefix.clone(), resume_from);
    let update = watch.next().await.expect("resync");
    assert!(
        matches!(update, WatchUpdate::Snapshot { .. }),
        "expected a re-read after compaction, got {update:?}"
    );
    apply(&mut seen, update);
    assert_eq!(seen, etcd_state(&client, &prefix).await);

    // And it keeps following changes after the re-read, with nothing stale replayed.
    put("h4", "v1").await;
    let update = watch.next().await.expect("changes after resync");
    let WatchUpdate::Changes(changes) = &update else {
        panic!("{update:?}")
    };
    assert_eq!(changes.len(), 1, "{changes:?}");
    apply(&mut seen, update);
    assert_eq!(seen, etcd_state(&client, &prefix).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_watch_replays_what_it_missed() {
    let etcd = server().await;
    let client = etcd.client().await.expect("client");
    let mut watch = ResumableWatch::new(client.clone(), "/baton/hosts/");
    let WatchUpdate::Snapshot { revision, .. } = watch.next().await.expect("snapshot") else {
        panic!("snapshot first")
    };
    drop(watch);
    client
        .kv_client()
        .put("/baton/hosts/h1/status", "a", None)
        .await
        .expect("put");
    client
        .kv_client()
        .put("/baton/hosts/h1/status", "b", None)
        .await
        .expect("put");
    let mut watch = ResumableWatch::resume(client.clone(), "/baton/hosts/", revision + 1);
    let WatchUpdate::Changes(changes) = watch.next().await.expect("changes") else {
        panic!("changes")
    };
    let values: Vec<_> = changes
        .iter()
        .map(|c| c.value.clone().expect("put"))
        .collect();
    assert_eq!(values, [b"a".to_vec(), b"b".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_removes_its_key_and_signals() {
    let etcd = server().await;
    let client = etcd.client().await.expect("client");
    let ks = Keyspace::default();
    let key = ks.host(&HostId::new("h1").expect("h"), HostKey::Alive);
    let alive = Alive {
        schema_version: documents::SCHEMA_VERSION,
        agent_version: "1.0.0".into(),
        boot_id: "b1".into(),
        pid: 1,
        since: documents::now(),
    };

    // Kept alive, the key outlives its TTL.
    let lease = KeptLease::grant(&client, 2).await.expect("lease");
    client
        .kv_client()
        .put(
            key.as_str(),
            encode(&alive),
            Some(etcd_client::PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!lease.is_lost());
    assert!(
        etcd::read::<Alive>(&client, &key)
            .await
            .expect("read")
            .is_some(),
        "kept-alive key expired"
    );

    // Revoked from elsewhere (as when etcd expires it): the key goes and the owner is told.
    let mut other = etcd.client().await.expect("client");
    other.lease_revoke(lease.id()).await.expect("revoke");
    tokio::time::timeout(Duration::from_secs(10), lease.lost())
        .await
        .expect("loss not signalled");
    assert!(
        etcd::read::<Alive>(&client, &key)
            .await
            .expect("read")
            .is_none()
    );

    // Dropped without revoking (a crashed agent): the key vanishes after the TTL.
    let lease = KeptLease::grant(&client, 2).await.expect("lease");
    client
        .kv_client()
        .put(
            key.as_str(),
            encode(&alive),
            Some(etcd_client::PutOptions::new().with_lease(lease.id())),
        )
        .await
        .expect("put");
    drop(lease);
    let start = Instant::now();
    while etcd::read::<Alive>(&client, &key)
        .await
        .expect("read")
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "key of a dead lease never vanished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "dead lease's key vanished after {:?} (TTL 2s)",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_on_a_three_member_cluster() {
    let mut cluster = EtcdCluster::start_with(3, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let ttl = 3;
    let ks = Keyspace::default();

    // Candidate A talks to member 0 only; B to members 1 and 2.
    let a_client = cluster.member_client(0).await.expect("a");
    let b_client = baton_protocol::etcd::connect(&cluster.endpoints()[1..])
        .await
        .expect("b");
    let a_election = Election::new(a_client.clone(), ks.leader());
    let b_election = Election::new(b_client.clone(), ks.leader());

    let a_lease = KeptLease::grant(&a_client, ttl).await.expect("lease a");
    let a_lead = a_election
        .campaign(b"orchestrator-a", &a_lease)
        .await
        .expect("a leads");
    assert_eq!(
        b_election.leader().await.expect("leader"),
        Some(b"orchestrator-a".to_vec())
    );

    let b_lease = KeptLease::grant(&b_client, ttl).await.expect("lease b");
    let b_campaign = tokio::spawn({
        let b_election = b_election.clone();
        async move {
            let lead = b_election.campaign(b"orchestrator-b", &b_lease).await;
            (lead, b_lease)
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!b_campaign.is_finished(), "B must wait while A leads");

    // A's whole side dies: its etcd member and its process (the keep-alive stops).
    let mut observer = b_election.observe().await.expect("observe");
    assert_eq!(
        observer.next().await.expect("observe").as_deref(),
        Some(&b"orchestrator-a"[..])
    );
    cluster.kill(0);
    let killed = Instant::now();
    drop(a_lease);
    drop(a_lead);

    // The handover is bounded by A's lease: it expires TTL after A's last keep-alive. If
    // the killed member was the raft leader, etcd also re-elects (1 s here) and extends
    // leases by an election timeout; allow for that and a loaded machine, no more. A lease
    // kept alive by a dead process would never hand over.
    let bound = Duration::from_secs(2 * ttl as u64 + 2);
    let (lead, _b_lease) = tokio::time::timeout(bound, b_campaign)
        .await
        .unwrap_or_else(|_| panic!("B did not take over within {bound:?} (lease TTL {ttl}s)"))
        .expect("join");
    let lead = lead.expect("B leads");
    let took = killed.elapsed();
    println!("leader failover took {took:?} with a {ttl}s lease (2 of 3 members up)");
    assert_eq!(
        b_election.leader().await.expect("leader"),
        Some(b"orchestrator-b".to_vec())
    );

    // The killed member comes back and agrees; B resigns and leadership is free at once.
    cluster.restart(0).await.expect("restart member 0");
    let back = cluster.member_client(0).await.expect("member 0");
    assert_eq!(
        Election::new(back, ks.leader())
            .leader()
            .await
            .expect("leader"),
        Some(b"orchestrator-b".to_vec())
    );
    b_election.resign(lead).await.expect("resign");
    assert_eq!(b_election.leader().await.expect("leader"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_larger_than_a_page_is_read_whole_at_one_revision() {
    let etcd = server().await;
    let client = etcd.client().await.expect("client");
    let prefix = "/baton-test/paged/";
    let n = 2 * etcd::PAGE_KEYS + 17;
    for i in 0..n {
        client
            .kv_client()
            .put(format!("{prefix}{i:05}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    // A key just past the prefix is not part of it.
    client
        .kv_client()
        .put("/baton-test/paged0", "outside", None)
        .await
        .expect("put");
    let (kvs, revision) = etcd::read_prefix(&client, prefix)
        .await
        .expect("paged read");
    let expected = etcd_state(&client, prefix).await;
    assert_eq!(kvs.len(), usize::try_from(n).expect("count"));
    let read: BTreeMap<String, Vec<u8>> =
        kvs.iter().map(|(k, v, _)| (k.clone(), v.clone())).collect();
    assert_eq!(read, expected);

    // Read again as of that revision after changes: the same snapshot, every page alike.
    client
        .kv_client()
        .put(format!("{prefix}00000"), "changed", None)
        .await
        .expect("put");
    client
        .kv_client()
        .delete(format!("{prefix}{:05}", n - 1), None)
        .await
        .expect("delete");
    let (again, at) = etcd::read_prefix_at(&client, prefix, revision)
        .await
        .expect("read at the revision");
    assert_eq!(at, revision);
    assert_eq!(again, kvs);
    let (now, _) = etcd::read_prefix(&client, prefix).await.expect("read now");
    assert_eq!(now.len(), kvs.len() - 1);
    assert_eq!(now[0].1, b"changed".to_vec());
}
