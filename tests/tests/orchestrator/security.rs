//! Who may call the API and from where, against a real etcd over TLS: for every route of the
//! router's table, a request without a credential, with a malformed or revoked token, or with
//! a token whose role is too low is refused (401/403) and the whole keyspace is byte-identical
//! afterwards, while the same request with a high enough role gets past the gate; browsers'
//! requests (a write without `Content-Type: application/json`, a foreign `Origin` or `Host`)
//! and oversized bodies are refused (415, 403, 413) writing nothing; tokens are stored hashed,
//! listed without secrets, and stop working when revoked; the API is https only.

use std::collections::BTreeMap;

use crate::support::{Orchestrator, config, credentials, keyspace};
use baton_orchestrator::api::{ROUTES, Route};
use baton_orchestrator::auth::Access;
use baton_protocol::api::{CreateToken, RegisterHost};
use baton_protocol::documents::ApiRole;
use baton_tests::etcd::EtcdServer;
use baton_tests::pki::TestPki;
use batonctl::client::{ApiClient, ClientCertFiles, Credentials};
use serde_json::{Value, json};
use std::time::Duration;

/// A request each route would accept from a caller with the role: path parameters name
/// things that exist, bodies are valid. A route without one fails the test.
fn sample(route: &Route) -> (String, Option<Value>) {
    let path = route
        .path
        .replace(
            "{host}",
            if route.verb.name() == "delete" {
                "h2"
            } else {
                "h1"
            },
        )
        .replace("{group}", "edge")
        .replace("{id}", "u-sample")
        .replace("{name}", "victim");
    let body = match (route.verb.name(), route.path) {
        ("get", _) => None,
        ("delete", "/v1/tokens/{name}") => None,
        // h2: the host the registration's sample (an earlier route) registers, so h1 stays
        // for the routes after it.
        ("delete", "/v1/hosts/{host}") => None,
        ("post", "/v1/hosts") => Some(json!({"id": "h2", "docker": "unix:///var/run/docker.sock"})),
        ("put", "/v1/hosts/{host}/maintenance") | ("put", "/v1/groups/{group}/maintenance") => {
            Some(json!({"mode": "paused", "reason": "sample"}))
        }
        ("post", "/v1/upgrades") => Some(json!({
            "image": "127.0.0.1:1/baton/bundle:1.0.0",
            "strategy": {"kind": "rolling"},
            "hosts": ["h-unknown"]
        })),
        ("post", p) if p.starts_with("/v1/upgrades/{id}/") => Some(json!({"reason": "sample"})),
        ("post", "/v1/tokens") => Some(json!({"name": "sample", "role": "viewer"})),
        ("put", "/v1/window") | ("put", "/v1/groups/{group}/window") => Some(json!({
            "windows": [{"days": ["sat"], "start": "02:00", "duration": "1h", "time_zone": "UTC"}]
        })),
        ("delete", "/v1/window") | ("delete", "/v1/groups/{group}/window") => None,
        _ => panic!(
            "{}: no sample request; add one to security.rs so the route's access is tested",
            route.name()
        ),
    };
    (path, body)
}

async fn call(api: &ApiClient, route: &Route, path: &str, body: &Option<Value>) -> (u16, Value) {
    if route.path == "/v1/stream" {
        // It never ends: its head is enough (a refusal is a whole JSON answer).
        let (status, answer) = api
            .first(path, Duration::from_secs(20))
            .await
            .expect("request");
        let text = String::from_utf8_lossy(&answer).into_owned();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        return (status.as_u16(), value);
    }
    let bytes = body.as_ref().map(|b| b.to_string().into_bytes());
    let (status, answer) = api
        .raw(route.verb.method(), path, bytes)
        .await
        .expect("request");
    (
        status.as_u16(),
        serde_json::from_slice(&answer).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn every_route_refuses_missing_revoked_and_too_weak_credentials_writing_nothing() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let cfg = config(&etcd, "orch-a");
    let creds = credentials(&cfg);
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let admin = &orch.api;
    let with_token = |token: Option<String>| {
        ApiClient::with(
            &orch.url,
            &Credentials {
                token,
                ca_file: creds.ca_file.clone(),
                client_cert: None,
            },
        )
        .expect("client")
    };

    // Things the sample paths name, and a token of each role.
    admin
        .register(&RegisterHost {
            id: "h1".into(),
            labels: [("group".to_owned(), "edge".to_owned())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            ..Default::default()
        })
        .await
        .expect("register h1");
    let mut role_clients = BTreeMap::new();
    for role in ApiRole::ALL {
        let created = admin
            .create_token(&CreateToken {
                name: format!("t-{role}"),
                role,
            })
            .await
            .expect("create token");
        role_clients.insert(role, with_token(Some(created.token)));
    }
    admin
        .create_token(&CreateToken {
            name: "victim".into(),
            role: ApiRole::Viewer,
        })
        .await
        .expect("victim");
    let revoked = admin
        .create_token(&CreateToken {
            name: "revoked".into(),
            role: ApiRole::Admin,
        })
        .await
        .expect("create");
    let revoked_client = with_token(Some(revoked.token.clone()));
    assert_eq!(
        revoked_client.tokens().await.expect("works before").len(),
        6
    );
    admin.revoke_token("revoked").await.expect("revoke");

    let anonymous = with_token(None);
    let malformed = with_token(Some("baton_admin_0123".into()));
    let forged = with_token(Some(format!("baton_t-admin_{}", "0".repeat(64))));
    let mut checked = 0;
    for route in ROUTES {
        let (path, body) = sample(route);
        let Access::Role(needed) = route.access else {
            let (status, answer) = call(&anonymous, route, &path, &body).await;
            assert_eq!(status, 200, "{}: open to anyone: {answer}", route.name());
            continue;
        };
        let mut refusals: Vec<(String, &ApiClient, u16)> = vec![
            ("no credential".into(), &anonymous, 401),
            ("a malformed token".into(), &malformed, 401),
            ("a forged token".into(), &forged, 401),
            ("a revoked token".into(), &revoked_client, 401),
        ];
        for role in ApiRole::ALL.into_iter().filter(|r| *r < needed) {
            refusals.push((format!("role {role}"), &role_clients[&role], 403));
        }
        for (who, api, want) in refusals {
            let before = keyspace(&client).await;
            let (status, answer) = call(api, route, &path, &body).await;
            assert_eq!(status, want, "{} with {who}: {answer}", route.name());
            let message = answer["error"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("Authorization"),
                "{}: {message}",
                route.name()
            );
            assert_eq!(
                keyspace(&client).await,
                before,
                "{} with {who}: etcd was written",
                route.name()
            );
            checked += 1;
        }
        // The same request with the role needed gets past the gate: the refusals above came
        // from the credential, not from the request.
        let (status, answer) = call(&role_clients[&needed], route, &path, &body).await;
        let unrouted = answer["error"]
            .as_str()
            .is_some_and(|m| m.starts_with("no route"));
        assert!(
            ![401, 403, 405, 413, 415].contains(&status) && !unrouted,
            "{} with role {needed}: {status} {answer}",
            route.name()
        );
        if route.path == "/v1/stream" {
            let text = answer.as_str().unwrap_or_default();
            assert!(text.starts_with("event: snapshot"), "{text}");
        }
    }
    eprintln!("{checked} refusals checked over {} routes", ROUTES.len());

    // A 401 says how to authenticate.
    let (status, _) = anonymous
        .raw("GET".parse().unwrap(), "/v1/hosts", None)
        .await
        .expect("request");
    assert_eq!(status.as_u16(), 401);
    orch.stop().await;
}

#[tokio::test]
async fn browsers_cannot_drive_it_and_big_bodies_are_refused() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let orch = Orchestrator::start(config(&etcd, "orch-a")).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = &orch.api;
    let port = orch.url.rsplit(':').next().unwrap().to_owned();
    let registration = json!({"id": "h1", "docker": "unix:///var/run/docker.sock"}).to_string();
    let json = ("content-type", "application/json");
    let big = json!({
        "id": "h1",
        "docker": "unix:///var/run/docker.sock",
        "labels": {"note": "x".repeat(1100 * 1024)}
    })
    .to_string();
    let evil_host = format!("evil.example:{port}");
    // (what, headers, body, status, the field the message names)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "a form post",
            vec![("content-type", "application/x-www-form-urlencoded")],
            &registration,
            415,
            "Content-Type",
        ),
        (
            "a text/plain post",
            vec![("content-type", "text/plain")],
            &registration,
            415,
            "Content-Type",
        ),
        (
            "a multipart post",
            vec![("content-type", "multipart/form-data; boundary=x")],
            &registration,
            415,
            "Content-Type",
        ),
        (
            "no content type",
            vec![],
            &registration,
            415,
            "Content-Type",
        ),
        (
            "a foreign origin",
            vec![json, ("origin", "https://evil.example")],
            &registration,
            403,
            "Origin",
        ),
        (
            "a null origin",
            vec![json, ("origin", "null")],
            &registration,
            403,
            "Origin",
        ),
        (
            "a foreign host (DNS rebinding)",
            vec![json, ("host", evil_host.as_str())],
            &registration,
            403,
            "Host",
        ),
        (
            "a body over the 1 MiB of a bulk registration",
            vec![json],
            &big,
            413,
            "limit",
        ),
    ];
    for (name, headers, body, want, field) in &cases {
        let before = keyspace(&client).await;
        let (status, answer) = api
            .send(
                "POST".parse().unwrap(),
                "/v1/hosts",
                headers,
                Some(body.as_bytes().to_vec()),
            )
            .await
            .expect("request");
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        assert_eq!(status.as_u16(), *want, "{name}: {answer}");
        let message = answer["error"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{name}: {message}");
        assert_eq!(keyspace(&client).await, before, "{name}: etcd was written");
    }
    // A foreign Host is refused on reads too.
    let (status, _) = api
        .send(
            "GET".parse().unwrap(),
            "/v1/hosts",
            &[("host", &evil_host)],
            None,
        )
        .await
        .expect("request");
    assert_eq!(status.as_u16(), 403);
    // The same registration, sent as the API asks, is accepted: the refusals were the
    // headers' and the size's.
    let (status, answer) = api
        .send(
            "POST".parse().unwrap(),
            "/v1/hosts",
            &[json],
            Some(registration.into_bytes()),
        )
        .await
        .expect("request");
    assert_eq!(status.as_u16(), 201, "{}", String::from_utf8_lossy(&answer));
    orch.stop().await;
}

#[tokio::test]
async fn tokens_are_stored_hashed_listed_without_secrets_and_the_api_is_https_only() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    let cfg = config(&etcd, "orch-a");
    let creds = credentials(&cfg);
    let admin_token = creds.token.clone().expect("admin token");
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = &orch.api;

    let created = api
        .create_token(&CreateToken {
            name: "ci".into(),
            role: ApiRole::Operator,
        })
        .await
        .expect("create");
    assert!(created.token.starts_with("baton_ci_"), "token format");
    assert!(!format!("{created:?}").contains(&created.token));
    let stored = client
        .kv_client()
        .get("/baton/tokens/ci", None)
        .await
        .expect("get");
    let stored = String::from_utf8_lossy(stored.kvs()[0].value()).into_owned();
    let secret = &created.token["baton_ci_".len()..];
    assert!(!stored.contains(secret), "the secret is stored: {stored}");
    assert!(stored.contains("\"role\":\"operator\""), "{stored}");
    // The bootstrap admin token is stored the same way.
    let all = keyspace(&client).await;
    for (key, (value, _)) in &all {
        let value = String::from_utf8_lossy(value);
        assert!(
            !value.contains(&admin_token["baton_admin_".len()..]),
            "{key} holds the admin token"
        );
    }
    let listed = api.tokens().await.expect("list");
    let names: Vec<&str> = listed.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["admin", "ci"]);
    let (_, raw) = api
        .raw("GET".parse().unwrap(), "/v1/tokens", None)
        .await
        .expect("list");
    assert!(!String::from_utf8_lossy(&raw).contains(secret));
    // A name taken: 409, nothing written.
    let before = keyspace(&client).await;
    let err = api
        .create_token(&CreateToken {
            name: "ci".into(),
            role: ApiRole::Admin,
        })
        .await
        .expect_err("taken");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(409), "{err}");
    assert_eq!(keyspace(&client).await, before);

    // Revoked: it stops working at once.
    let ci = ApiClient::with(
        &orch.url,
        &Credentials {
            token: Some(created.token.clone()),
            ca_file: creds.ca_file.clone(),
            client_cert: None,
        },
    )
    .expect("client");
    assert!(ci.hosts().await.is_ok());
    api.revoke_token("ci").await.expect("revoke");
    let err = ci.hosts().await.expect_err("revoked");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    let err = api.revoke_token("ci").await.expect_err("twice");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(404), "{err}");

    // https only: plain HTTP to the port gets no answer, and a client that does not trust
    // the API's CA does not connect.
    let plain = ApiClient::with(
        &orch.url.replace("https://", "http://"),
        &Credentials {
            token: Some(admin_token.clone()),
            ca_file: None,
            client_cert: None,
        },
    )
    .expect("client");
    assert!(plain.hosts().await.is_err(), "plain HTTP was answered");
    let untrusting = ApiClient::with(
        &orch.url,
        &Credentials {
            token: Some(admin_token),
            ca_file: Some(etcd.dir().join("no-such-ca.pem")),
            client_cert: None,
        },
    );
    assert!(untrusting.is_err(), "a missing CA file is refused");
    orch.stop().await;
}

#[tokio::test]
async fn registrations_name_only_engines_and_folders_the_operator_allowed() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let client = etcd.client().await.expect("client");
    // No Docker TLS identity and no --allow-plain-docker-tcp; path-map root: the
    // temporary folder (support::config).
    let cfg = config(&etcd, "orch-a");
    let root = cfg.path_map_roots[0].clone();
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let api = &orch.api;
    let before = keyspace(&client).await;
    let refused = [
        (
            "a plain tcp:// engine",
            json!({"id": "h1", "docker": "tcp://127.0.0.1:2375"}),
            "--docker-tls-ca-file",
        ),
        (
            "the host's root mounted",
            json!({"id": "h1", "docker": "unix:///var/run/docker.sock", "path_map": {"/": "/"}}),
            "path_map[\"/\"]",
        ),
        (
            "a path the job does not mount",
            json!({"id": "h1", "docker": "unix:///var/run/docker.sock", "path_map": {"/usr/bin": "/usr/bin"}}),
            "path_map[\"/usr/bin\"]",
        ),
        (
            "an engine folder outside the roots",
            json!({"id": "h1", "docker": "unix:///var/run/docker.sock", "path_map": {"/etc/baton": "/etc"}}),
            "--path-map-root",
        ),
    ];
    for (name, body, want) in &refused {
        let (status, answer) = api
            .raw(
                "POST".parse().unwrap(),
                "/v1/hosts",
                Some(body.to_string().into_bytes()),
            )
            .await
            .expect("request");
        let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        let error = answer["error"].as_str().unwrap_or_default();
        assert_eq!(status.as_u16(), 422, "{name}: {answer}");
        assert!(error.contains(want), "{name}: {error}");
    }
    assert_eq!(keyspace(&client).await, before, "a refusal wrote something");
    // The document says the same: no tcp:// engines, host paths under the root.
    let doc: Value = api.get("/openapi.json").await.expect("openapi");
    let register = &doc["components"]["schemas"]["RegisterHost"]["properties"];
    assert!(
        !register["docker"]["pattern"].to_string().contains("tcp"),
        "{}",
        register["docker"]
    );
    assert_eq!(register["path_map"]["additionalProperties"], false);
    // Within the policy: registered.
    let host_folder = format!("{root}/h1/etc/baton");
    api.register(&RegisterHost {
        id: "h1".into(),
        docker: "unix:///var/run/docker.sock".into(),
        path_map: [("/etc/baton".to_owned(), host_folder)].into(),
        ..Default::default()
    })
    .await
    .expect("registered within the policy");
    orch.stop().await;
}

#[tokio::test]
async fn a_client_certificate_acts_as_the_token_its_common_name_names() {
    let etcd = EtcdServer::start().await.expect("etcd");
    let mut cfg = config(&etcd, "orch-a");
    let creds = credentials(&cfg);
    // Clients' certificates come from a CA of their own (common name `baton-test-client`).
    let clients_dir = etcd.dir().join("api-clients");
    std::fs::create_dir_all(&clients_dir).expect("folder");
    let clients = TestPki::generate(&clients_dir).expect("clients' PKI");
    let strangers_dir = etcd.dir().join("api-strangers");
    std::fs::create_dir_all(&strangers_dir).expect("folder");
    let strangers = TestPki::generate(&strangers_dir).expect("another PKI");
    cfg.api_client_ca_file = Some(clients.ca.clone());
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let with_cert = |pki: &TestPki| {
        ApiClient::with(
            &orch.url,
            &Credentials {
                token: None,
                ca_file: creds.ca_file.clone(),
                client_cert: Some(ClientCertFiles {
                    cert_file: pki.client_cert.clone(),
                    key_file: pki.client_key.clone(),
                }),
            },
        )
        .expect("client")
    };
    let cert_client = with_cert(&clients);

    // No token of that name yet: 401 saying how to make one.
    let err = cert_client.hosts().await.expect_err("no token named so");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    assert!(err.to_string().contains("baton-test-client"), "{err}");

    // A viewer token of that name: the certificate reads, and may not write.
    orch.api
        .create_token(&CreateToken {
            name: "baton-test-client".into(),
            role: ApiRole::Viewer,
        })
        .await
        .expect("create");
    assert!(cert_client.hosts().await.is_ok(), "a viewer reads");
    let (status, _) = cert_client
        .raw(
            "POST".parse().unwrap(),
            "/v1/hosts",
            Some(
                json!({"id": "h1", "docker": "unix:///var/run/docker.sock"})
                    .to_string()
                    .into_bytes(),
            ),
        )
        .await
        .expect("request");
    assert_eq!(status.as_u16(), 403, "a viewer may not register hosts");

    // A certificate of another CA does not get through the handshake; token clients still
    // connect without a certificate.
    assert!(
        with_cert(&strangers).hosts().await.is_err(),
        "a stranger's certificate was accepted"
    );
    assert!(
        orch.api.hosts().await.is_ok(),
        "token clients need no certificate"
    );

    // Revoking the token revokes the certificate's access.
    orch.api
        .revoke_token("baton-test-client")
        .await
        .expect("revoke");
    let err = cert_client.hosts().await.expect_err("revoked");
    assert_eq!(err.status().map(|s| s.as_u16()), Some(401), "{err}");
    orch.stop().await;
}
