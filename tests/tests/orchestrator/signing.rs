//! Signed bundles at the orchestrator: `POST /v1/upgrades` accepts only a bundle whose
//! signature, stored beside it in its registry, was made by a trusted key, has not expired
//! and is for that very image, from an allowed registry; each refusal is a 422 naming the
//! reason and leaves the whole etcd keyspace byte-identical (so no host is dispatched). A
//! bundle copied with its signature to another registry stays verifiable, the upgrade
//! record keeps the signature it verified, and trusting a second key accepts its bundles.

use std::time::{Duration, SystemTime};

use baton_protocol::api::{Command, RegisterHost};
use baton_protocol::docker::signature::signature_ref;
use baton_protocol::signing::TrustedKeys;
use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::registry::Registry;
use baton_tests::signing::{self, TestKey};
use batonctl::client::ApiClient;
use serde_json::{Value, json};

use crate::support::{
    Orchestrator, RemoveImages, black_hole, config, keyspace, push_tiny_bundle, tiny_manifest,
};

async fn start(api: &ApiClient, image: &str, id: &str) -> (u16, Value) {
    let body =
        json!({"id": id, "image": image, "strategy": {"kind": "rolling", "batch": {"count": 1}}});
    let (status, bytes) = api
        .raw(
            "POST".parse().expect("method"),
            "/v1/upgrades",
            Some(body.to_string().into_bytes()),
        )
        .await
        .expect("request");
    (
        status.as_u16(),
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Copies `pinned`'s signature image to the tag of `onto`'s digest (in `onto`'s
/// repository): a valid signature for another image.
async fn copy_signature(pinned: &str, onto: &str, images: &mut RemoveImages) {
    let from = signature_ref(pinned).expect("pinned");
    let to = signature_ref(onto).expect("pinned");
    docker::run(&["pull", "--quiet", &from])
        .await
        .expect("pull signature");
    docker::run(&["tag", &from, &to]).await.expect("tag");
    docker::run(&["push", "--quiet", &to]).await.expect("push");
    images.0.extend([from, to]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_bundles_from_allowed_registries_are_accepted_and_refusals_write_nothing() {
    baton_tests::bundles::require_docker().await;
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let registry = Registry::start().await.expect("registry");
    let elsewhere = Registry::start().await.expect("second registry");
    let mut images = RemoveImages(Vec::new());
    let started = std::time::Instant::now();

    // A and B: signed with the release key (the test bundles' key).
    let (a, a_pinned) = push_tiny_bundle(
        &registry,
        "9.0.0",
        &tiny_manifest("9.0.0", true),
        &mut images.0,
    )
    .await;
    let (b, b_pinned) = push_tiny_bundle(
        &registry,
        "9.1.0",
        &tiny_manifest("9.1.0", true),
        &mut images.0,
    )
    .await;
    // A pushed where no signature lies beside it.
    let unsigned = registry
        .push(&a, "baton-test/unsigned", "9.0.0")
        .await
        .expect("push");
    // A signed with a key the orchestrator does not trust.
    let by_other = registry
        .push(&a, "baton-test/other-key", "9.0.0")
        .await
        .expect("push");
    signing::sign(&by_other, TestKey::Other).await;
    // A signed with an expiry that has passed.
    let expired = registry
        .push(&a, "baton-test/expired", "9.0.0")
        .await
        .expect("push");
    signing::sign_until(
        &expired,
        TestKey::Release,
        SystemTime::now() - Duration::from_secs(60),
    )
    .await;
    // A, signed, in a registry that is not allowed.
    let foreign = elsewhere
        .push(&a, "baton-test/bundle", "9.0.0")
        .await
        .expect("push");
    signing::sign(&foreign, TestKey::Release).await;
    // B's signature replaced by A's: valid, but for another image.
    copy_signature(&a_pinned, &b_pinned, &mut images).await;
    for r in [&unsigned, &by_other, &expired, &foreign] {
        images
            .0
            .push(r.split('@').next().unwrap_or_default().to_owned() + ":9.0.0");
    }
    eprintln!(
        "TIMING signing: bundles pushed and signed in {:?}",
        started.elapsed()
    );
    // `batonctl bundle verify`'s check, with the release key and with another one.
    let docker_api = batonctl::bundle::connect().await.expect("docker");
    let trust = |k: TestKey| TrustedKeys::new([k.signing().public().clone()]);
    let quiet = &batonctl::bundle::Quiet;
    let (pinned, signed) =
        batonctl::bundle::verify(&docker_api, &a, &trust(TestKey::Release), quiet)
            .await
            .expect("A verifies with the release key");
    assert_eq!(
        (pinned.as_str(), signed.version.as_str()),
        (a_pinned.as_str(), "9.0.0")
    );
    let err = batonctl::bundle::verify(&docker_api, &a, &trust(TestKey::Other), quiet)
        .await
        .expect_err("not with another key");
    assert!(err.to_string().contains("which is not trusted"), "{err}");

    let mut c = config(&etcd, "orch-sig");
    c.allowed_registries = vec![registry.host(), "localhost".to_owned()];
    // The host below names a plain tcp:// engine (a port that never answers).
    c.allow_plain_docker_tcp = true;
    let orch = Orchestrator::start(c).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = &orch.api;
    let (hole, _hole_task) = black_hole().await;
    let host = RegisterHost {
        id: "h1".to_owned(),
        labels: [("group".to_owned(), "edge".to_owned())].into(),
        docker: hole,
        path_map: Default::default(),
        boot_id_file: None,
        kernel_release_file: None,
        container_prefix: None,
        quorum_member: false,
    };
    api.register(&host).await.expect("register");

    let other_id = TestKey::Other.signing().public().key_id().to_owned();
    let a_digest = a_pinned.split('@').nth(1).expect("digest").to_owned();
    let b_digest = b_pinned.split('@').nth(1).expect("digest").to_owned();
    let cases: [(&str, &str, Vec<String>); 5] = [
        (
            "unsigned",
            &unsigned,
            vec!["not signed".into(), "has no signature".into()],
        ),
        (
            "signed by an untrusted key",
            &by_other,
            vec![format!("signed by key {other_id}, which is not trusted")],
        ),
        ("expired", &expired, vec!["expired at".into()]),
        (
            "from a registry not allowed",
            &foreign,
            vec![format!("registry {} is not allowed", elsewhere.host())],
        ),
        (
            "a signature copied from another image",
            &b,
            vec![format!(
                "signature is for image digest {a_digest}, not {b_digest}"
            )],
        ),
    ];
    for (what, image, wants) in &cases {
        let before = keyspace(&client).await;
        let t = std::time::Instant::now();
        let (status, answer) = start(api, image, "u-refused").await;
        eprintln!("TIMING signing: {what} refused in {:?}", t.elapsed());
        assert_eq!(status, 422, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        for want in wants {
            assert!(
                error.contains(want.as_str()),
                "{what}: {error:?} lacks {want:?}"
            );
        }
        assert_eq!(
            keyspace(&client).await,
            before,
            "{what}: the refusal wrote something"
        );
    }

    // A copied with its signature to another (allowed) registry is accepted there.
    let copied = format!(
        "localhost:{}/baton-test/copied:9.0.0",
        elsewhere.host().rsplit(':').next().expect("port")
    );
    docker::run(&["tag", &a, &copied]).await.expect("tag");
    docker::run(&["push", "--quiet", &copied])
        .await
        .expect("push");
    let copied_pinned = format!("{}@{a_digest}", copied.rsplit_once(':').expect("tag").0);
    copy_signature(&a_pinned, &copied_pinned, &mut images).await;
    images.0.push(copied.clone());
    let (status, answer) = start(api, &copied, "u-copied").await;
    assert_eq!(status, 201, "{answer}");
    let signature = &answer["signature"];
    let payload: Value =
        serde_json::from_str(signature["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(payload["image_digest"], a_digest.as_str(), "{answer}");
    assert_eq!(
        payload["key_id"],
        TestKey::Release.signing().public().key_id()
    );
    api.command("u-copied", Command::Abort, Some("test".into()))
        .await
        .expect("abort");
    orch.stop().await;

    // Trusting a second key (rotation) accepts what it signed.
    let mut c = config(&etcd, "orch-rotated");
    c.trusted_keys.push(TestKey::Other.public_file());
    let orch = Orchestrator::start(c).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let (status, answer) = start(&orch.api, &by_other, "u-other-key").await;
    assert_eq!(status, 201, "{answer}");
    orch.api
        .command("u-other-key", Command::Abort, None)
        .await
        .expect("abort");
    orch.stop().await;
}
