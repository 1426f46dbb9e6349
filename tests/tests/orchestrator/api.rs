//! The orchestrator's REST API against a real etcd, a real registry and the real Docker
//! Engine: health, metrics and OpenAPI; host registration; every refused request answers a
//! 4xx naming the field and leaves the whole keyspace untouched; an upgrade's tag is
//! resolved to the registry's digest once and stored with `active` in one transaction; a
//! second upgrade while one is active is a 409; pause, resume and abort; followers serve
//! reads, refuse writes naming the leader, and take over when it resigns; without etcd a
//! replica is alive but not ready.

use std::time::{Duration, Instant};

use crate::support::{
    Orchestrator, RemoveImages, black_hole, config, keys_under, keyspace, push_tiny_bundle,
    tiny_manifest,
};
use baton_protocol::api::Command;
use baton_protocol::api::UpgradeInfo;
use baton_protocol::api::{HostInfo, RegisterHost};
use baton_protocol::documents::{HostOutcomeState, Strategy};
use baton_protocol::{HostId, UpgradePhase};
use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::registry::Registry;
use batonctl::client::ApiClient;
use serde_json::{Value, json};

async fn require_docker() {
    if let Err(e) = docker::ensure_available().await {
        panic!("this test needs a working Docker Engine: {e}");
    }
}

/// Sends a raw body; returns the status and the parsed answer.
async fn send(api: &ApiClient, method: &str, path: &str, body: &str) -> (u16, Value) {
    let method = method.parse().expect("method");
    let (status, bytes) = api
        .raw(method, path, Some(body.as_bytes().to_vec()))
        .await
        .expect("request");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status.as_u16(), value)
}

fn host(id: &str, group: &str, zone: &str, docker: &str) -> RegisterHost {
    RegisterHost {
        id: id.to_owned(),
        labels: [
            ("group".to_owned(), group.to_owned()),
            ("zone".to_owned(), zone.to_owned()),
        ]
        .into(),
        docker: docker.to_owned(),
        ..Default::default()
    }
}

#[tokio::test]
async fn api_validates_writes_nothing_when_refusing_and_allows_one_active_upgrade() {
    require_docker().await;
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let registry = Registry::start().await.expect("registry");
    let mut images = RemoveImages(Vec::new());
    let (compatible, compatible_pinned) = push_tiny_bundle(
        &registry,
        "9.0.0",
        &tiny_manifest("9.0.0", true),
        &mut images.0,
    )
    .await;
    let (incompatible, incompatible_pinned) = push_tiny_bundle(
        &registry,
        "9.1.0",
        &tiny_manifest("9.1.0", false),
        &mut images.0,
    )
    .await;

    // The hosts below name a plain tcp:// engine (a port that never answers).
    let mut cfg = config(&etcd, "orch-a");
    cfg.allow_plain_docker_tcp = true;
    let orch = Orchestrator::start(cfg).await;
    let elected = orch.wait_role("leader", Duration::from_secs(20)).await;
    eprintln!("TIMING elected in {elected:?}");
    let api = &orch.api;

    // --- Health, readiness, metrics, OpenAPI.
    let health: Value = api.get("/healthz").await.expect("healthz");
    assert_eq!(health["version"], baton_orchestrator::VERSION);
    assert_eq!(health["replica"], "orch-a");
    let ready: Value = api.get("/readyz").await.expect("readyz");
    assert_eq!(ready["status"], "ok");
    let (status, bytes) = api
        .raw("GET".parse().unwrap(), "/metrics", None)
        .await
        .expect("metrics");
    let metrics = String::from_utf8(bytes).expect("utf-8");
    assert_eq!(status.as_u16(), 200);
    for line in [
        "baton_leader 1",
        "baton_etcd_up 1",
        "baton_upgrades{phase=\"Pending\"} 0",
        "baton_hosts_registered 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line}:\n{metrics}");
    }
    let openapi: Value = api.get("/openapi.json").await.expect("openapi");
    for path in [
        "/v1/upgrades",
        "/v1/hosts/{host}",
        "/v1/upgrades/{id}/abort",
    ] {
        assert!(openapi["paths"].get(path).is_some(), "{path}");
    }
    let (status, body) = send(api, "GET", "/v2/nothing", "").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/v2/nothing"));

    // --- Hosts. Their Docker endpoint never answers, so downloader jobs hang and an upgrade
    // stays in progress for the rest of the test.
    let (hole, _hole_task) = black_hole().await;
    let fleet = [
        host("h1", "edge", "a", &hole),
        host("h2", "edge", "a", &hole),
        host("h3", "edge", "b", &hole),
        host("h4", "core", "b", &hole),
    ];
    for h in &fleet {
        let (status, body) =
            send(api, "POST", "/v1/hosts", &serde_json::to_string(h).unwrap()).await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["host"], h.id.as_str());
    }
    // Lists come in pages, linked by their `Link` header; the client follows them.
    let (first, next) = api
        .page::<HostInfo>("/v1/hosts?limit=3")
        .await
        .expect("page 1");
    let ids: Vec<&str> = first.iter().map(|h| h.id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2", "h3"]);
    let next = next.expect("a link to page 2");
    assert_eq!(next, "/v1/hosts?limit=3&after=h3");
    let (second, last) = api.page::<HostInfo>(&next).await.expect("page 2");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id.as_str(), "h4");
    assert_eq!(last, None, "the last page links nowhere");
    assert_eq!(api.hosts().await.expect("all").len(), 4);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("page=2", "page"),
    ] {
        let (status, body) = send(api, "GET", &format!("/v1/hosts?{query}"), "").await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with(field),
            "{body}"
        );
    }
    let (status, _) = send(
        api,
        "POST",
        "/v1/hosts",
        &serde_json::to_string(&fleet[0]).unwrap(),
    )
    .await;
    assert_eq!(status, 200, "re-registering the same spec");
    let listed = api.hosts().await.expect("hosts");
    assert_eq!(listed.len(), 4);
    let h3 = api.host("h3").await.expect("h3");
    assert_eq!(h3.spec.expect("spec").labels["zone"], "b");
    assert!(h3.alive.is_none() && h3.status.is_none());
    let (status, body) = send(api, "GET", "/v1/hosts/h9", "").await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("h9"), "{body}");

    // h4's agent reports bundle 9.0.5: the 9.0.0 bundle would downgrade it.
    let installed = json!({"schema_version": 1, "bundle_version": "9.0.5", "agent_version": "9.0.5",
                           "components": {}, "updated_at": "2026-11-21T23:30:00.000Z"});
    client
        .kv_client()
        .put("/baton/hosts/h4/installed", installed.to_string(), None)
        .await
        .expect("put installed");

    // --- Refused requests: a 4xx naming the field, nothing written anywhere.
    let rolling = json!({"kind": "rolling", "batch": {"count": 1}});
    let start = |edit: &dyn Fn(&mut Value)| {
        let mut v = json!({"image": compatible, "strategy": rolling});
        edit(&mut v);
        v.to_string()
    };
    let refused: Vec<(&str, &str, String, u16, &[&str])> = vec![
        (
            "malformed JSON",
            "/v1/upgrades",
            "{\"image\": ".into(),
            400,
            &["malformed JSON"],
        ),
        (
            "missing image",
            "/v1/upgrades",
            json!({"strategy": rolling}).to_string(),
            400,
            &["missing field `image`"],
        ),
        (
            "unknown field",
            "/v1/upgrades",
            start(&|v| v["colour"] = "blue".into()),
            400,
            &["colour", "unknown field"],
        ),
        (
            "unknown strategy field",
            "/v1/upgrades",
            start(&|v| v["strategy"]["speed"] = 9.into()),
            400,
            &["strategy.speed"],
        ),
        (
            "unknown strategy",
            "/v1/upgrades",
            start(&|v| v["strategy"]["kind"] = "sideways".into()),
            400,
            &["strategy.kind"],
        ),
        (
            "bad image reference",
            "/v1/upgrades",
            start(&|v| v["image"] = "Not An Image!".into()),
            422,
            &["image"],
        ),
        (
            "negative batch",
            "/v1/upgrades",
            start(&|v| v["strategy"]["batch"]["count"] = (-1).into()),
            422,
            &["strategy.batch.count", "-1"],
        ),
        (
            "batch of the wrong type",
            "/v1/upgrades",
            start(&|v| v["strategy"]["batch"]["count"] = "two".into()),
            400,
            &["strategy.batch.count"],
        ),
        (
            "negative max_failures",
            "/v1/upgrades",
            start(&|v| v["strategy"]["max_failures"] = (-3).into()),
            422,
            &["strategy.max_failures"],
        ),
        (
            "batch of every host",
            "/v1/upgrades",
            start(&|v| v["strategy"]["batch"]["count"] = 4.into()),
            422,
            &["strategy.batch.count", "all 4"],
        ),
        (
            "unknown label value",
            "/v1/upgrades",
            start(&|v| v["selector"] = json!({"zone": "mars"})),
            422,
            &["selector", "zone=mars"],
        ),
        (
            "unknown label",
            "/v1/upgrades",
            start(&|v| v["selector"] = json!({"rack": "r1"})),
            422,
            &["selector", "rack=r1"],
        ),
        (
            "unknown host",
            "/v1/upgrades",
            start(&|v| v["hosts"] = json!(["h1", "h7"])),
            422,
            &["hosts[1]", "h7"],
        ),
        (
            "zone label missing",
            "/v1/upgrades",
            start(&|v| v["strategy"]["zone_label"] = "rack".into()),
            422,
            &["strategy.zone_label", "rack"],
        ),
        (
            "all at once without downtime",
            "/v1/upgrades",
            start(&|v| v["strategy"] = json!({"kind": "all-at-once"})),
            422,
            &["strategy.allow_downtime"],
        ),
        (
            "bad id",
            "/v1/upgrades",
            start(&|v| v["id"] = "a/b".into()),
            422,
            &["id"],
        ),
        (
            "image not in the registry",
            "/v1/upgrades",
            start(&|v| {
                v["image"] = format!("{}:0.0.404", registry.reference("baton-test/bundle")).into()
            }),
            422,
            &["image"],
        ),
        (
            "incompatible bundle rolling",
            "/v1/upgrades",
            start(&|v| v["image"] = incompatible.clone().into()),
            422,
            &["strategy.kind", "backward compatible"],
        ),
        (
            "incompatible bundle, auto, no allow_downtime",
            "/v1/upgrades",
            start(&|v| {
                v["image"] = incompatible.clone().into();
                v["strategy"] = json!({"kind": "auto"});
            }),
            422,
            &["strategy.allow_downtime", "auto chooses all-at-once"],
        ),
        (
            "incompatible bundle daisy chain",
            "/v1/upgrades",
            start(&|v| {
                v["image"] = incompatible.clone().into();
                v["strategy"] = json!({"kind": "daisy-chain"});
            }),
            422,
            &["strategy.kind"],
        ),
        (
            "host with a bad id",
            "/v1/hosts",
            json!({"id": "../x", "docker": hole}).to_string(),
            422,
            &["id"],
        ),
        (
            "a downgrade without allow_downgrade",
            "/v1/upgrades",
            start(&|v| v["hosts"] = json!(["h4"])),
            422,
            &["allow_downgrade", "host h4 runs 9.0.5", "bundle 9.0.0"],
        ),
        (
            "host with an http endpoint",
            "/v1/hosts",
            json!({"id": "h5", "docker": "http://x:1"}).to_string(),
            422,
            &["docker"],
        ),
        (
            "host with an unknown field",
            "/v1/hosts",
            json!({"id": "h5", "docker": hole, "ip": "1.2.3.4"}).to_string(),
            400,
            &["ip"],
        ),
        (
            "host with a relative path map",
            "/v1/hosts",
            json!({"id": "h5", "docker": hole, "path_map": {"var/lib": "/x"}}).to_string(),
            422,
            &["path_map"],
        ),
        (
            "host with a bad label",
            "/v1/hosts",
            json!({"id": "h5", "docker": hole, "labels": {"zone": "a b"}}).to_string(),
            422,
            &["labels.zone"],
        ),
    ];
    for (name, path, body, want_status, want) in &refused {
        let before = keyspace(&client).await;
        let started = Instant::now();
        let (status, answer) = send(api, "POST", path, body).await;
        let message = answer["error"].as_str().unwrap_or_default().to_owned();
        eprintln!("{name}: {status} {message} ({:?})", started.elapsed());
        assert_eq!(status, *want_status, "{name}: {answer}");
        for w in *want {
            assert!(message.contains(w), "{name}: {w:?} not in {message:?}");
        }
        assert_eq!(keyspace(&client).await, before, "{name}: etcd was written");
    }
    assert!(keys_under(&client, "/baton/upgrades/").await.is_empty());

    // --- Maintenance: `reboot` only goes with mode `restart`.
    let refused_maintenance = [
        (
            "/v1/hosts/h1/maintenance",
            json!({"mode": "replace", "reboot": true}),
        ),
        (
            "/v1/hosts/h1/maintenance",
            json!({"mode": "none", "reboot": true}),
        ),
        (
            "/v1/groups/edge/maintenance",
            json!({"mode": "paused", "reboot": true}),
        ),
        (
            "/v1/hosts/h1/maintenance",
            json!({"mode": "restart", "reboot": "yes"}),
        ),
    ];
    for (path, body) in &refused_maintenance {
        let before = keyspace(&client).await;
        let (status, answer) = send(api, "PUT", path, &body.to_string()).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("reboot"), "{path} {body}: {message}");
        assert_eq!(keyspace(&client).await, before, "{path} {body}: written");
    }
    let (status, answer) = send(
        api,
        "PUT",
        "/v1/hosts/h1/maintenance",
        &json!({"mode": "restart", "reboot": true, "reason": "kernel params"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["reboot"], true, "{answer}");
    let stored = client
        .kv_client()
        .get("/baton/hosts/h1/maintenance", None)
        .await
        .expect("get");
    let stored = String::from_utf8_lossy(stored.kvs()[0].value()).into_owned();
    assert!(stored.contains(r#""reboot":true"#), "{stored}");
    let (status, answer) = send(
        api,
        "PUT",
        "/v1/hosts/h1/maintenance",
        &json!({"mode": "none"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.get("reboot").is_none(), "{answer}");

    // --- A valid upgrade: the tag is resolved to the registry's digest once.
    let started = Instant::now();
    let first: UpgradeInfo = api
        .post(
            "/v1/upgrades",
            &json!({"image": compatible, "strategy": {"kind": "rolling", "batch": {"count": 1}, "zone_label": "zone", "canary": 1, "pause_after_canary": true}, "selector": {"group": "edge"}, "id": "u-first"}),
        )
        .await
        .expect("start an upgrade");
    eprintln!(
        "TIMING upgrade created (pull, inspect, txn) in {:?}",
        started.elapsed()
    );
    assert_eq!(first.upgrade.bundle, compatible_pinned);
    assert_eq!(first.upgrade.version, "9.0.0");
    assert_eq!(first.upgrade.agent_version.as_deref(), Some("9.0.0"));
    assert!(first.active);
    let batches: Vec<(String, Option<u32>)> = first
        .upgrade
        .hosts
        .iter()
        .map(|(h, o)| (h.to_string(), o.batch))
        .collect();
    // Canary from zone a, then zone a's other host, then zone b: h4 (group core) is not
    // selected.
    assert_eq!(
        batches,
        [
            ("h1".to_owned(), Some(0)),
            ("h2".to_owned(), Some(1)),
            ("h3".to_owned(), Some(2))
        ]
    );
    let stored = api.upgrade("u-first").await.expect("show");
    assert_eq!(stored.upgrade.bundle, compatible_pinned);
    let active = client
        .kv_client()
        .get("/baton/active", None)
        .await
        .expect("get active");
    let active: Value = serde_json::from_slice(active.kvs()[0].value()).expect("json");
    assert_eq!(active["upgrade_id"], "u-first");

    // The engine picks it up: downloads start (and hang on the black-hole endpoint).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let u = api.upgrade("u-first").await.expect("show");
        if u.upgrade.phase == UpgradePhase::Downloading {
            break;
        }
        assert!(Instant::now() < deadline, "still {:?}", u.upgrade.phase);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // --- A second upgrade while one is active: 409, nothing written.
    let before = keyspace(&client).await;
    let (status, answer) = send(
        api,
        "POST",
        "/v1/upgrades",
        &json!({"image": incompatible, "strategy": {"kind": "all-at-once", "allow_downtime": true}}).to_string(),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("u-first"),
        "{answer}"
    );
    assert_eq!(keyspace(&client).await, before, "the 409 wrote something");

    // --- Pause, resume, abort.
    let paused = api
        .command("u-first", Command::Pause, Some("look at h1".into()))
        .await
        .expect("pause");
    assert_eq!(paused.upgrade.phase, UpgradePhase::Paused);
    assert_eq!(paused.upgrade.paused_from, Some(UpgradePhase::Downloading));
    let (status, answer) = send(api, "POST", "/v1/upgrades/u-first/pause", "").await;
    assert_eq!(status, 200, "pausing twice is harmless: {answer}");
    let resumed = api
        .command("u-first", Command::Resume, None)
        .await
        .expect("resume");
    assert_eq!(resumed.upgrade.phase, UpgradePhase::Downloading);
    let (status, answer) = send(api, "POST", "/v1/upgrades/u-first/resume", "").await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("not paused"));
    let (status, answer) = send(api, "POST", "/v1/upgrades/u-nope/abort", "").await;
    assert_eq!(status, 404, "{answer}");
    let aborted = api
        .command("u-first", Command::Abort, Some("wrong bundle".into()))
        .await
        .expect("abort");
    assert_eq!(aborted.upgrade.phase, UpgradePhase::Aborted);
    assert!(!aborted.active);
    assert!(keys_under(&client, "/baton/active").await.is_empty());
    let (status, _) = send(api, "POST", "/v1/upgrades/u-first/abort", "").await;
    assert_eq!(status, 409, "aborting twice");
    let events = api.events("u-first").await.expect("events");
    let kinds: Vec<&str> = events.iter().map(|e| e.event.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"created"), "{kinds:?}");
    assert!(
        events.iter().any(|e| e
            .event
            .message
            .contains("aborted by operator: wrong bundle")),
        "{events:?}"
    );
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>(), "gapless");

    // --- Now another may start: an incompatible bundle, by digest; auto chooses all at once.
    let second = api
        .start(&serde_json::from_value(json!({"image": incompatible_pinned, "strategy": {"kind": "auto", "allow_downtime": true}, "hosts": ["h3", "h4"]})).unwrap())
        .await
        .expect("second upgrade");
    assert_eq!(second.upgrade.bundle, incompatible_pinned);
    assert_eq!(
        second.upgrade.strategy,
        Strategy::AllAtOnce {
            allow_downtime: true
        }
    );
    let why = second.upgrade.strategy_reason.clone().unwrap_or_default();
    assert!(why.contains("not backward compatible"), "{why:?}");
    assert!(
        second.upgrade.id.as_str().starts_with("u-9.1.0-"),
        "{}",
        second.upgrade.id
    );
    assert_eq!(
        second
            .upgrade
            .hosts
            .keys()
            .map(HostId::as_str)
            .collect::<Vec<_>>(),
        ["h3", "h4"]
    );
    assert!(
        second
            .upgrade
            .hosts
            .values()
            .all(|h| h.state == HostOutcomeState::Pending && h.batch == Some(0))
    );
    let listed = api.upgrades().await.expect("list");
    assert_eq!(
        listed
            .iter()
            .map(|u| (u.upgrade.id.to_string(), u.active))
            .collect::<Vec<_>>(),
        [
            ("u-first".to_owned(), false),
            (second.upgrade.id.to_string(), true)
        ]
    );
    let (_, bytes) = api
        .raw("GET".parse().unwrap(), "/metrics", None)
        .await
        .expect("metrics");
    let metrics = String::from_utf8(bytes).expect("utf-8");
    assert!(
        metrics.contains("baton_upgrades{phase=\"Aborted\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("baton_hosts_registered 4"), "{metrics}");

    orch.stop().await;
    drop(images);
}

#[tokio::test]
async fn followers_serve_reads_refuse_writes_naming_the_leader_and_take_over() {
    let mut etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let a = Orchestrator::start(config(&etcd, "orch-a")).await;
    a.wait_role("leader", Duration::from_secs(20)).await;
    let b = Orchestrator::start(config(&etcd, "orch-b")).await;
    b.wait_role("follower", Duration::from_secs(20)).await;
    // B is campaigning (its candidacy key exists) but A leads.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys_under(&client, "/baton/leader/").await.len() < 2 {
        assert!(Instant::now() < deadline, "B never campaigned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let h1 = host("h1", "edge", "a", "unix:///var/run/docker.sock");
    a.api.register(&h1).await.expect("register on the leader");

    // Reads on the follower.
    let hosts = b.api.hosts().await.expect("follower lists hosts");
    assert_eq!(hosts.len(), 1);
    assert_eq!(b.api.host("h1").await.expect("show").id.as_str(), "h1");
    assert!(b.api.upgrades().await.expect("list").is_empty());
    let health: Value = b.api.get("/healthz").await.expect("healthz");
    assert_eq!(health["role"], "follower");

    // Writes on the follower: 503 naming the leader and where it is; nothing written.
    let writes = [
        ("/v1/hosts", serde_json::to_string(&host("h2", "edge", "a", "unix:///x.sock")).unwrap()),
        ("/v1/upgrades", json!({"image": "127.0.0.1:1/b:1", "strategy": {"kind": "rolling", "batch": {"count": 1}}}).to_string()),
        ("/v1/upgrades/u1/pause", String::new()),
    ];
    for (path, body) in &writes {
        let before = keyspace(&client).await;
        let (status, answer) = send(&b.api, "POST", path, body).await;
        assert_eq!(status, 503, "{path}: {answer}");
        let message = answer["error"].as_str().unwrap();
        assert!(message.contains("orch-b is not the leader"), "{message}");
        assert!(message.contains("orch-a"), "{message}");
        assert!(message.contains(&a.url), "{message}");
        assert_eq!(keyspace(&client).await, before, "{path}: written");
    }

    // The leader resigns on shutdown; the follower takes over at once.
    let stopped = Instant::now();
    a.stop().await;
    let took = b.wait_role("leader", Duration::from_secs(20)).await;
    eprintln!(
        "TIMING takeover after the leader resigned: {:?} (stop took {:?})",
        took,
        stopped.elapsed() - took
    );
    let h2 = host("h2", "edge", "a", "unix:///var/run/docker.sock");
    b.api
        .register(&h2)
        .await
        .expect("register on the new leader");
    assert_eq!(b.api.hosts().await.expect("hosts").len(), 2);

    // Without etcd: alive, not ready.
    etcd.kill(0);
    let (status, answer) = send(&b.api, "GET", "/readyz", "").await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().starts_with("etcd"),
        "{answer}"
    );
    let (status, _) = send(&b.api, "GET", "/healthz", "").await;
    assert_eq!(status, 200);
    drop(b);
}

#[tokio::test]
async fn the_orchestrator_talks_to_etcd_over_tls_with_a_client_certificate() {
    let etcd = EtcdServer::start_tls().await.expect("TLS etcd");
    let tls = etcd.client_tls().expect("client TLS files").clone();
    assert!(
        etcd.endpoint().starts_with("https://"),
        "{}",
        etcd.endpoint()
    );
    let mut cfg = config(&etcd, "orch-tls");
    cfg.tls.etcd_ca_file = Some(tls.ca_file.clone());
    cfg.tls.etcd_cert_file = tls.cert_file.clone();
    cfg.tls.etcd_key_file = tls.key_file.clone();
    cfg.tls.etcd_domain = tls.domain.clone();
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let ready: Value = orch.api.get("/readyz").await.expect("ready over TLS");
    assert_eq!(ready["status"], "ok");
    orch.api
        .register(&host("h1", "edge", "a", "unix:///var/run/docker.sock"))
        .await
        .expect("register over TLS");
    assert_eq!(orch.api.hosts().await.expect("hosts").len(), 1);
    orch.stop().await;
}

/// The etcd users and roles (a registration must change none of them).
async fn auth_entities(client: &baton_protocol::etcd::Client) -> (Vec<String>, Vec<String>) {
    let mut auth = client.auth_client();
    let users = auth.user_list().await.expect("user list").users().to_vec();
    let roles = auth.role_list().await.expect("role list").roles().to_vec();
    (users, roles)
}

#[tokio::test]
async fn bulk_registration_is_all_or_nothing_and_changes_no_etcd_identity() {
    let etcd = EtcdServer::start_secure(&[]).await.expect("etcd");
    let client = etcd.client().await.expect("root client");
    let orch = Orchestrator::start(config(&etcd, "orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(30)).await;
    let api = &orch.api;
    let sock = "unix:///var/run/docker.sock";
    let auth_before = auth_entities(&client).await;

    // Refusals name the item and its field, and write nothing.
    let before = keyspace(&client).await;
    let item = |id: &str| json!({"id": id, "docker": sock, "labels": {"group": "edge"}});
    let bad_docker = json!([item("b1"), {"id": "b2", "docker": "http://engine:2375"}, item("b3")]);
    let twice = json!([item("b1"), item("b2"), item("b1")]);
    let bad_type = json!([item("b1"), {"id": "b2", "docker": sock, "labels": {"group": 7}}]);
    let unknown = json!([item("b1"), {"id": "b2", "docker": sock, "bogus": 1}]);
    let bad_label = json!([item("b1"), item("b2"), item("b3"), {"id": "b4", "docker": sock, "labels": {"group": "no spaces"}}]);
    let too_many: Vec<Value> = (0..1001).map(|i| item(&format!("m{i}"))).collect();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "a refused engine",
            bad_docker.to_string(),
            422,
            "[1].docker: ",
        ),
        (
            "a host named twice",
            twice.to_string(),
            422,
            "[2].id: b1 is registered by [0] already",
        ),
        (
            "a wrong type",
            bad_type.to_string(),
            400,
            "[1].labels.group: ",
        ),
        (
            "an unknown field",
            unknown.to_string(),
            400,
            "[1].bogus: unknown field `bogus`",
        ),
        ("a refused label", bad_label.to_string(), 422, "[3].labels"),
        (
            "more than 1,000",
            Value::Array(too_many).to_string(),
            413,
            "1001 registrations; at most 1000",
        ),
    ];
    for (what, body, status, message) in &cases {
        let (got, answer) = send(api, "POST", "/v1/hosts", body).await;
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(got, *status, "{what}: {answer}");
        assert!(
            error.contains(message),
            "{what}: {error:?} lacks {message:?}"
        );
        assert_eq!(
            keyspace(&client).await,
            before,
            "{what}: something was written"
        );
    }

    // An empty array is a valid request that registers nothing.
    let (status, answer) = send(api, "POST", "/v1/hosts", "[]").await;
    assert_eq!((status, answer.clone()), (200, json!([])), "{answer}");
    assert_eq!(keyspace(&client).await, before, "[]: something was written");

    // 250 hosts in one request (three transactions): all created, in order.
    let fleet: Vec<Value> = (0..250).map(|i| item(&format!("h{i:03}"))).collect();
    let (status, answer) = send(
        api,
        "POST",
        "/v1/hosts",
        &Value::Array(fleet.clone()).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let outcomes = |answer: &Value| -> Vec<(String, String)> {
        answer
            .as_array()
            .expect("an array")
            .iter()
            .map(|a| {
                (
                    a["spec"]["host"].as_str().unwrap_or_default().to_owned(),
                    a["outcome"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    };
    let created = outcomes(&answer);
    assert_eq!(created.len(), 250);
    assert!(
        created
            .iter()
            .enumerate()
            .all(|(i, (h, o))| *h == format!("h{i:03}") && o == "created"),
        "{created:?}"
    );
    let specs = keys_under(&client, "/baton/hosts/").await;
    assert_eq!(specs.len(), 250, "{specs:?}");

    // Again, with one host changed: the others unchanged, their registered_at kept.
    let first = api.host("h000").await.expect("h000");
    let mut again = fleet;
    again[7]["labels"]["zone"] = json!("b");
    let (status, answer) = send(api, "POST", "/v1/hosts", &Value::Array(again).to_string()).await;
    assert_eq!(status, 200, "{answer}");
    let outcomes = outcomes(&answer);
    assert_eq!(outcomes[7], ("h007".to_owned(), "updated".to_owned()));
    assert!(
        outcomes
            .iter()
            .enumerate()
            .all(|(i, (_, o))| i == 7 || o == "unchanged"),
        "{outcomes:?}"
    );
    assert_eq!(api.host("h000").await.expect("h000").spec, first.spec);

    // One registration keeps its form: 201, then 200.
    let one = json!({"id": "single", "docker": sock});
    let (status, answer) = send(api, "POST", "/v1/hosts", &one.to_string()).await;
    assert_eq!(
        (status, answer["host"].as_str()),
        (201, Some("single")),
        "{answer}"
    );
    let (status, _) = send(api, "POST", "/v1/hosts", &one.to_string()).await;
    assert_eq!(status, 200);

    // No registration made an etcd user, role or permission: the hosts' identities come with
    // their first downloader job.
    assert_eq!(auth_entities(&client).await, auth_before);
    let orchestrator_role = client
        .auth_client()
        .role_get("baton-orchestrator")
        .await
        .expect("role");
    assert!(
        orchestrator_role
            .permissions()
            .iter()
            .all(|p| !String::from_utf8_lossy(p.key()).contains("/hosts/")),
        "the orchestrator's role got a host's permission at registration"
    );

    // A host never upgraded can still be put in maintenance and removed.
    let (status, answer) = send(
        api,
        "PUT",
        "/v1/hosts/h001/maintenance",
        &json!({"mode": "paused", "reason": "t"}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = send(api, "DELETE", "/v1/hosts/h002", "").await;
    assert_eq!(status, 200, "{answer}");
    assert!(keys_under(&client, "/baton/hosts/h002/").await.is_empty());
    orch.stop().await;
}
