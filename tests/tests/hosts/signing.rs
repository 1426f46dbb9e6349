//! Signed bundles on a simulated host with the orchestrator bypassed: the downloader job run
//! by hand and `desired` written straight into etcd, as `etcdctl` would.
//!
//! The first signed install brings the bundle's trusted keys (the release key and the next
//! one); a bundle signed by a key the host does not trust is refused by the job before
//! anything is staged and by the agent (`Failed`, naming the key), and so is an unsigned one;
//! a bundle signed by the next key rotates the keys (the host then trusts only that one);
//! the agent restarting on its running bundle after the old key is gone refuses nothing; and
//! the old bundle, signed by the removed key, can no longer be replayed, even as a declared
//! downgrade.
//!
//! Needs `make static bundle-agents` (which `make test` runs first).

use std::time::Instant;

use baton_protocol::HostState;
use baton_protocol::signing::keys::key_file_name;
use baton_tests::bundles::{
    BundleSources, RemoveImages, binaries, build_signed_bundle, prepare_source, run_signed_job,
    systemctl, wait_alive,
};
use baton_tests::fleet::Host;
use baton_tests::signing::{self, TestKey};

use crate::agent_fleet::{World, world};

/// The key files the host trusts (`/etc/baton/trusted-keys/*.json`).
async fn host_keys(host: &Host) -> Vec<String> {
    let out = host
        .exec(&["sh", "-c", "ls /etc/baton/trusted-keys 2>/dev/null || true"])
        .await
        .expect("ls");
    out.stdout.split_whitespace().map(str::to_owned).collect()
}

fn key_file(key: TestKey) -> String {
    key_file_name(key.signing().public())
}

async fn staged(host: &Host, version: &str) -> bool {
    host.exec(&["test", "-e", &format!("/var/lib/baton/bundles/{version}")])
        .await
        .expect("test")
        .status
        == 0
}

/// Writes `desired` for bundle `name` (with `signature`) and waits until the host settles.
async fn install(
    w: &World,
    host: &Host,
    upgrade: &str,
    (version, name): (&str, &str),
    signature: Option<&baton_protocol::signing::BundleSignature>,
    allow_downgrade: bool,
) -> baton_protocol::documents::HostStatus {
    let mut desired = w.desired(upgrade, version, name);
    desired.signature = signature.cloned();
    desired.allow_downgrade = allow_downgrade;
    w.put_desired(host, &desired).await;
    w.settled(host, upgrade).await
}

/// How a refusal names a signature by `key`, which the host does not trust.
fn untrusted(key: TestKey) -> String {
    format!(
        "signed by key {}, which is not trusted",
        key.signing().public().key_id()
    )
}

fn assert_failed(status: &baton_protocol::documents::HostStatus, reason: &str) {
    assert_eq!(status.state, HostState::Failed, "{status:?}");
    assert!(
        status.message.contains(reason),
        "{status:?} lacks {reason:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_verify_signatures_rotate_keys_and_refuse_bundles_they_do_not_trust() {
    let started = Instant::now();
    let mut w = world(1, &[]).await;
    let host = w.fleet.hosts()[0].clone();
    let bins = binaries();
    let sources = tempfile::tempdir().expect("tmp");
    let mut images = RemoveImages(Vec::new());
    // 1.0.0 signed with the release key, bringing it and the next key (other);
    // 2.0.0 signed with the next key, trusting only it; the same 2.0.0 signed by a rogue key.
    let mut bundle = async |version: &str, i: usize, trusts: &[TestKey], signer| {
        let dir = sources.path().join(version);
        prepare_source(version, &dir).await;
        let tag = w.registry.reference(&format!("baton/bundle:{version}"));
        images.0.push(tag.clone());
        let sources = BundleSources {
            source: &dir,
            agent: &bins.agents[i],
            downloader: &bins.downloader,
        };
        let (built, signature) = build_signed_bundle(version, &sources, &tag, trusts, signer).await;
        (built.pushed.expect("pushed"), signature)
    };
    let (v1, v1_sig) = bundle(
        "1.0.0",
        0,
        &[TestKey::Release, TestKey::Other],
        TestKey::Release,
    )
    .await;
    let (v2, v2_sig) = bundle("2.0.0", 1, &[TestKey::Other], TestKey::Other).await;
    let rogue = w
        .registry
        .push(&v2, "baton/rogue", "2.0.0")
        .await
        .expect("push");
    images.0.push(w.registry.reference("baton/rogue:2.0.0"));
    let rogue_sig = signing::sign(&rogue, TestKey::Rogue).await;
    for (name, pinned) in [("1.0.0", &v1), ("2.0.0", &v2), ("rogue", &rogue)] {
        w.bundles.insert(name.to_owned(), pinned.clone());
    }
    eprintln!(
        "TIMING signing: world and bundles in {:?}",
        started.elapsed()
    );

    // First install: verified with the keys the bundle brings, which the host then trusts.
    assert!(host_keys(&host).await.is_empty());
    run_signed_job(&host, &v1, &w.agent_endpoints, Some(&v1_sig))
        .await
        .summary();
    let mut keys = host_keys(&host).await;
    keys.sort();
    let mut want = vec![key_file(TestKey::Release), key_file(TestKey::Other)];
    want.sort();
    assert_eq!(keys, want, "the first install brings the bundle's keys");
    wait_alive(&w.etcd, &host, "1.0.0").await;
    let status = install(&w, &host, "u-v1", ("1.0.0", "1.0.0"), Some(&v1_sig), false).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");

    // Orchestrator bypassed: the rogue-signed and the unsigned 2.0.0 are refused by the job
    // before anything is staged, and by the agent.
    let refusal = run_signed_job(&host, &rogue, &w.agent_endpoints, Some(&rogue_sig))
        .await
        .refusal();
    assert!(refusal.contains(&untrusted(TestKey::Rogue)), "{refusal}");
    let refusal = run_signed_job(&host, &v2, &w.agent_endpoints, None)
        .await
        .refusal();
    assert!(refusal.contains("no signature was given"), "{refusal}");
    assert!(!staged(&host, "2.0.0").await, "a refused bundle was staged");
    let status = install(
        &w,
        &host,
        "u-rogue",
        ("2.0.0", "rogue"),
        Some(&rogue_sig),
        false,
    )
    .await;
    assert_failed(&status, &untrusted(TestKey::Rogue));
    let status = install(&w, &host, "u-unsigned", ("2.0.0", "2.0.0"), None, false).await;
    assert_failed(&status, "desired has no signature");
    assert!(!staged(&host, "2.0.0").await, "a refused bundle was staged");

    // Rotation: 2.0.0, signed by the next key, is accepted and leaves only that key trusted.
    run_signed_job(&host, &v2, &w.agent_endpoints, Some(&v2_sig))
        .await
        .summary();
    assert_eq!(host_keys(&host).await, vec![key_file(TestKey::Other)]);
    wait_alive(&w.etcd, &host, "2.0.0").await;
    let status = install(&w, &host, "u-v2", ("2.0.0", "2.0.0"), Some(&v2_sig), false).await;
    assert_eq!(status.state, HostState::Done, "{status:?}");

    // The old key is gone: the agent restarting on its running bundle refuses nothing, and
    // the job run again for that bundle changes nothing.
    systemctl(&host, &["restart", "baton-agent"]).await;
    wait_alive(&w.etcd, &host, "2.0.0").await;
    let status = w.settled(&host, "u-v2").await;
    assert_eq!(status.state, HostState::Done, "{status:?}");
    let again = run_signed_job(&host, &v2, &w.agent_endpoints, Some(&v2_sig))
        .await
        .summary();
    assert!(!again.changed, "{again:?}");

    // Replay: 1.0.0, signed by the removed key, is refused even as a declared downgrade.
    let status = install(
        &w,
        &host,
        "u-replay",
        ("1.0.0", "1.0.0"),
        Some(&v1_sig),
        true,
    )
    .await;
    assert_failed(&status, &untrusted(TestKey::Release));
    eprintln!("TIMING signing: whole test {:?}", started.elapsed());
}
