//! The `batonctl` binary against a real orchestrator, as an operator's scripts use it: its
//! exit codes tell done (0), an upgrade that ended without succeeding (3), a refusal by the
//! server (4) and a server out of reach (5) apart; `version` names the server's version
//! too; `-o json|yaml|wide` shape what read commands print; `group maintenance` sets a
//! group's mode; `completion` and `manpages` come from the same definition.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::support::{
    Orchestrator, RemoveImages, black_hole, config, credentials, push_tiny_bundle, tiny_manifest,
};
use baton_protocol::api::{CreateToken, RegisterHost, StartUpgrade};
use baton_protocol::documents::{ApiRole, MaintenanceMode};
use baton_tests::bundles::{self, require_docker};
use baton_tests::etcd::EtcdServer;
use baton_tests::registry::Registry;
use serde_json::Value;

/// The batonctl that `make test` builds (`make orchestrator-bins`).
fn batonctl_bin() -> PathBuf {
    let bin = bundles::target_dir().join("debug/batonctl");
    assert!(
        bin.exists(),
        "{} is missing: build it with `make orchestrator-bins` (make test does)",
        bin.display()
    );
    bin
}

/// Runs batonctl against `api` with `token_file` and `ca_file`, nothing from the caller's
/// own environment or config file.
async fn batonctl(api: &str, token_file: &Path, ca_file: &Path, args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("home");
    tokio::process::Command::new(batonctl_bin())
        .args(args)
        .env_clear()
        .env("HOME", home.path())
        .env("BATON_API", api)
        .env("BATON_TOKEN_FILE", token_file)
        .env("BATON_CA_FILE", ca_file)
        .output()
        .await
        .expect("run batonctl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[tokio::test]
async fn batonctl_exit_codes_outputs_version_and_group_maintenance() {
    require_docker().await;
    let etcd = EtcdServer::start().await.expect("etcd");
    let registry = Registry::start().await.expect("registry");
    let mut images = RemoveImages(Vec::new());
    let (bundle, _) = push_tiny_bundle(
        &registry,
        "9.0.0",
        &tiny_manifest("9.0.0", true),
        &mut images.0,
    )
    .await;
    let mut cfg = config(&etcd, "orch-cli");
    // The host's engine is a port that never answers: the upgrade below stays in progress
    // until it is aborted.
    cfg.allow_plain_docker_tcp = true;
    let creds = credentials(&cfg);
    let token_file = cfg.admin_token_file.clone().expect("admin token file");
    let ca = creds.ca_file.clone().expect("CA");
    let orch = Orchestrator::start(cfg).await;
    orch.wait_role("leader", Duration::from_secs(20)).await;
    let url = orch.url.clone();
    let run = |args: &'static [&'static str]| batonctl(&url, &token_file, &ca, args);

    // version: this build's and the server's.
    let out = run(&["version"]).await;
    assert_eq!(code(&out), 0, "{out:?}");
    let text = stdout(&out);
    assert!(
        text.contains(&format!("client: batonctl {}", batonctl::VERSION)),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "server: baton-orchestrator {}",
            baton_orchestrator::VERSION
        )),
        "{text}"
    );

    let (hole, _hole_task) = black_hole().await;
    orch.api
        .register(&RegisterHost {
            id: "h1".into(),
            labels: [("group".to_owned(), "edge".to_owned())].into(),
            docker: hole,
            ..Default::default()
        })
        .await
        .expect("register");

    // -o: a table by default, wide with more columns, JSON and YAML for scripts.
    let table = stdout(&run(&["host", "ls"]).await);
    assert!(
        table.starts_with("HOST") && !table.contains("KERNEL"),
        "{table}"
    );
    let wide = stdout(&run(&["-o", "wide", "host", "ls"]).await);
    assert!(
        wide.lines().next().unwrap_or_default().contains("KERNEL"),
        "{wide}"
    );
    let json: Value = serde_json::from_str(&stdout(&run(&["-o", "json", "host", "ls"]).await))
        .expect("JSON list");
    assert_eq!(json[0]["id"], "h1", "{json}");
    let yaml = stdout(&run(&["host", "show", "h1", "-o", "yaml"]).await);
    assert!(yaml.starts_with("id: h1"), "{yaml}");

    // group maintenance: the group's mode reaches its host.
    let out = run(&[
        "group",
        "maintenance",
        "edge",
        "paused",
        "--reason",
        "cli test",
    ])
    .await;
    assert_eq!(code(&out), 0, "{out:?}");
    let h1 = orch.api.host("h1").await.expect("h1");
    assert_eq!(h1.effective_maintenance, MaintenanceMode::Paused);
    assert_eq!(
        code(&run(&["group", "maintenance", "edge", "none"]).await),
        0
    );

    // 3: an upgrade followed to an end other than success.
    let started = orch
        .api
        .start(
            &serde_json::from_value::<StartUpgrade>(serde_json::json!({
                "image": bundle, "strategy": {"kind": "all-at-once", "allow_downtime": true}
            }))
            .expect("request"),
        )
        .await
        .expect("start");
    let id = started.upgrade.id.to_string();
    orch.api
        .command(&id, baton_protocol::api::Command::Abort, None)
        .await
        .expect("abort");
    let watched = batonctl(&url, &token_file, &ca, &["upgrade", "watch", &id]).await;
    assert_eq!(code(&watched), 3, "an aborted upgrade: {watched:?}");

    // 4: refused by the server (a viewer listing tokens).
    let viewer = orch
        .api
        .create_token(&CreateToken {
            name: "cli-viewer".into(),
            role: ApiRole::Viewer,
        })
        .await
        .expect("viewer");
    let dir = tempfile::tempdir().expect("dir");
    let viewer_file = dir.path().join("viewer");
    std::fs::write(&viewer_file, &viewer.token).expect("token file");
    let refused = batonctl(&url, &viewer_file, &ca, &["token", "ls"]).await;
    assert_eq!(code(&refused), 4, "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("403"),
        "{refused:?}"
    );

    // 5: nothing answers; the client's version is still printed.
    let away = batonctl("https://127.0.0.1:1", &token_file, &ca, &["version"]).await;
    assert_eq!(code(&away), 5, "{away:?}");
    assert!(stdout(&away).contains("client: batonctl"), "{away:?}");
    assert_eq!(
        code(&batonctl("https://127.0.0.1:1", &token_file, &ca, &["host", "ls"]).await),
        5
    );
    // 2: a wrong command line.
    assert_eq!(code(&run(&["upgrade", "frobnicate"]).await), 2);

    // completion and man pages, from the same definition.
    let bash = run(&["completion", "bash"]).await;
    assert_eq!(code(&bash), 0);
    assert!(
        stdout(&bash).contains("_batonctl()"),
        "a bash completion function"
    );
    let pages = tempfile::tempdir().expect("dir");
    let pages_dir = pages.path().display().to_string();
    let out = batonctl(&url, &token_file, &ca, &["manpages", &pages_dir]).await;
    assert_eq!(code(&out), 0, "{out:?}");
    assert!(pages.path().join("batonctl-upgrade-start.1").exists());
    orch.stop().await;
}
