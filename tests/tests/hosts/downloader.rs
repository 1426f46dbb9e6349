//! Bundles and the downloader job, for real: sample bundles built with the orchestrator's
//! `bundle build` (through the Docker Engine API), pushed to a real registry, pulled back by
//! digest and run as a container with a simulated host's paths bind-mounted. The job leaves
//! the bundle staged on the host and the bundle's `baton-agent` running under the host's
//! systemd (talking to a real etcd); a second run changes nothing; bad bundles are refused
//! with the host's files byte-for-byte unchanged; bundle 2.0.0 replaces agent 1.0.0.
//!
//! Needs the static `baton-downloader` and the versioned agents: `make static
//! bundle-agents` (which `make test` runs first).

// Test helpers panic with a message on any failure, like the tests themselves.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use baton_downloader::job::AgentAction;
use baton_downloader::stage::StageAction;
use baton_protocol::agent_config::AgentConfig;
use baton_protocol::staged::StagedBundle;
use baton_tests::bundles::{
    RemoveImages, VERSIONS, agent_main_pid, binaries, build_bundle, derived_bundle, prepare_source,
    require_docker, run_job, systemctl, wait_alive,
};
use baton_tests::docker;
use baton_tests::etcd::EtcdServer;
use baton_tests::fleet::{Fleet, FleetOptions, Host};
use baton_tests::registry::Registry;
use baton_tests::simhost_image::BOOT_ID_PATH;
use batonctl::bundle::{self, BuildOptions};

/// Every entry under the host's folder: type, mode, owner, and content (or link target).
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path) -> Snapshot {
    fn walk(root: &Path, dir: &Path, out: &mut Snapshot) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let meta = std::fs::symlink_metadata(&path)
                .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
            let head = format!(
                "mode {:o} uid {} gid {}",
                meta.permissions().mode(),
                meta.uid(),
                meta.gid()
            );
            let rel = path.strip_prefix(root).expect("under root").to_owned();
            let t = meta.file_type();
            let value = if t.is_dir() {
                walk(root, &path, out);
                format!("dir {head}")
            } else if t.is_symlink() {
                let target = std::fs::read_link(&path).expect("read link");
                format!("link {head} -> {}", target.display())
            } else if t.is_file() {
                let content =
                    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
                format!(
                    "file {head} {:?}",
                    baton_downloader::verify::sha256_hex(&content)
                )
            } else {
                format!("special {head}")
            };
            out.insert(rel, value);
        }
    }
    let mut out = Snapshot::new();
    walk(root, root, &mut out);
    out
}

fn assert_same(before: &Snapshot, after: &Snapshot, what: &str) {
    if before == after {
        return;
    }
    let mut diff = Vec::new();
    for (path, value) in before {
        match after.get(path) {
            None => diff.push(format!("removed {}", path.display())),
            Some(v) if v != value => {
                diff.push(format!("changed {}: {value} -> {v}", path.display()))
            }
            _ => {}
        }
    }
    for path in after.keys().filter(|p| !before.contains_key(*p)) {
        diff.push(format!("added {}", path.display()));
    }
    panic!("{what} changed the host's files:\n{}", diff.join("\n"));
}

async fn assert_agent_active(host: &Host) {
    let state = systemctl(host, &["is-active", "baton-agent"]).await;
    if state != "active" {
        let status = host
            .exec(&["systemctl", "status", "--no-pager", "baton-agent"])
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        panic!("baton-agent is {state:?} on {}:\n{status}", host.name());
    }
    assert_eq!(
        systemctl(host, &["is-enabled", "baton-agent"]).await,
        "enabled"
    );
}

/// Reads a host file through its folder on the machine.
async fn host_file(host: &Host, path: &str) -> Vec<u8> {
    host.read_file(path)
        .await
        .unwrap_or_else(|e| panic!("read {path} on {}: {e}", host.name()))
}

#[tokio::test]
async fn downloader_installs_the_agent_idempotently_refuses_bad_bundles_and_upgrades() {
    require_docker().await;
    let bins = binaries();
    let registry = Registry::start().await.expect("start registry");
    let fleet = Fleet::start(1, FleetOptions::default())
        .await
        .expect("start a simulated host");
    let host = &fleet.hosts()[0];
    let gateway = IpAddr::V4(fleet.gateway_ip());
    let etcd = EtcdServer::start_on(gateway).await.expect("start etcd");
    let endpoints = etcd.endpoints_on(gateway);

    // Both sample bundles, built through the API and pushed.
    let sources = tempfile::tempdir().expect("temp dir");
    let mut cleanup = RemoveImages(Vec::new());
    let mut built = Vec::new();
    for (i, version) in VERSIONS.iter().enumerate() {
        let source = sources.path().join(version);
        prepare_source(version, &source).await;
        let tag = format!("{}:{version}", registry.reference("baton/bundle"));
        cleanup.0.push(tag.clone());
        let b = build_bundle(version, &source, &tag, &bins.agents[i], &bins.downloader).await;
        let pinned = b.pushed.clone().expect("pushed");
        cleanup.0.push(pinned.clone());
        assert!(
            pinned.starts_with(&format!("{}@sha256:", registry.reference("baton/bundle"))),
            "{pinned}"
        );
        built.push((b, source));
    }
    let (v1, v1_source) = &built[0];
    let (v2, v2_source) = &built[1];

    // The bundle's manifest, read back out of the image.
    let docker_api = bundle::connect().await.expect("connect");
    let inspected = bundle::read_manifest(&docker_api, &v1.tag, &bundle::Quiet)
        .await
        .expect("inspect v1");
    assert_eq!(inspected, v1.manifest);

    // Pulled back by digest: the local copies are removed first.
    let v1_pinned = v1.pushed.clone().expect("pushed");
    let v2_pinned = v2.pushed.clone().expect("pushed");
    for (tag, pinned) in [(&v1.tag, &v1_pinned), (&v2.tag, &v2_pinned)] {
        docker::run(&["rmi", "--force", tag]).await.expect("rmi");
        assert!(!docker::image_exists(pinned).await.expect("inspect"));
        docker::run(&["pull", "--quiet", pinned])
            .await
            .expect("pull by digest");
    }

    // --- 1.0.0 on a fresh host: staged, agent installed and active.
    let run = run_job(host, &v1_pinned, &endpoints).await;
    let s = run.summary();
    assert_eq!(s.version, "1.0.0");
    assert_eq!(s.bundle, StageAction::Staged);
    assert_eq!(s.agent.action, AgentAction::Installed, "{s:?}");
    assert_eq!(s.files, v1.manifest.files().len());
    assert!(s.changed);
    let staged = "/var/lib/baton/bundles/1.0.0";
    assert_eq!(
        host_file(host, &format!("{staged}/manifest.json")).await,
        v1.manifest.to_json()
    );
    for c in &v1.manifest.components {
        for f in &c.files {
            let want = std::fs::read(v1_source.join(&f.path)).expect("source file");
            assert_eq!(
                host_file(host, &format!("{staged}/{}", f.path)).await,
                want,
                "{}",
                f.path
            );
        }
    }
    // The image the bundle came from, by digest, for the agent to match `desired` against.
    let record = StagedBundle::parse(&host_file(host, &format!("{staged}/bundle.json")).await)
        .expect("staged record");
    assert_eq!(
        Some(record.image_digest.as_str()),
        v1_pinned.split_once('@').map(|(_, digest)| digest)
    );
    let agent_v1 = std::fs::read(&bins.agents[0]).expect("agent 1.0.0");
    assert_eq!(
        host_file(host, "/var/lib/baton/agent/1.0.0/baton-agent").await,
        agent_v1
    );
    let config_text =
        String::from_utf8(host_file(host, "/etc/baton/agent.toml").await).expect("utf-8");
    let config =
        AgentConfig::parse(Path::new("/etc/baton/agent.toml"), &config_text).expect("agent config");
    assert_eq!(config.host_id.as_str(), host.name());
    assert_eq!(config.etcd_endpoints, endpoints);
    assert_eq!(config.boot_id_file, Path::new(BOOT_ID_PATH));
    let unit = String::from_utf8(host_file(host, "/etc/systemd/system/baton-agent.service").await)
        .expect("utf-8");
    assert!(
        unit.contains("Type=notify") && unit.contains("WatchdogSec=30"),
        "{unit}"
    );
    assert_eq!(
        host.sh("readlink /var/lib/baton/agent/current")
            .await
            .expect("readlink")
            .trim(),
        "1.0.0"
    );
    assert_agent_active(host).await;
    let alive = wait_alive(&etcd, host, "1.0.0").await;
    let pid_v1 = agent_main_pid(host).await;
    assert_eq!(
        alive.pid.to_string(),
        pid_v1,
        "the alive key is the running agent's"
    );

    // --- The same bundle again: nothing changes, the agent is not restarted.
    let before = snapshot(host.root());
    let again = run_job(host, &v1_pinned, &endpoints).await.summary();
    assert!(!again.changed, "{again:?}");
    assert_eq!(again.bundle, StageAction::Unchanged);
    assert_eq!(again.agent.action, AgentAction::Unchanged);
    assert_same(
        &before,
        &snapshot(host.root()),
        "a second run of the same bundle",
    );
    assert_eq!(
        agent_main_pid(host).await,
        pid_v1,
        "the agent was restarted"
    );
    assert_agent_active(host).await;

    // --- Bad bundles (all claiming 2.0.0, derived from the good one): refused, host untouched.
    let hello = "packages/hello/baton-hello";
    let good_hello = std::fs::read(v2_source.join(hello)).expect("hello");
    let tampered_hello = String::from_utf8_lossy(&good_hello)
        .replace("2.0.0", "6.6.6")
        .into_bytes();
    assert_eq!(tampered_hello.len(), good_hello.len());
    let manifest_with = |edit: &dyn Fn(&mut serde_json::Value)| {
        let mut m: serde_json::Value =
            serde_json::from_slice(&v2.manifest.to_json()).expect("json");
        edit(&mut m);
        serde_json::to_vec_pretty(&m).expect("json")
    };
    let parent_path = manifest_with(&|m| {
        m["components"][0]["files"][0]["path"] = "../../host/etc/baton/agent.toml".into();
    });
    let absolute_path = manifest_with(&|m| {
        m["agent"]["file"]["path"] = "/host/usr/local/bin/baton-agent".into();
    });
    struct Bad<'a> {
        name: &'a str,
        files: Vec<(&'a str, Vec<u8>, u32)>,
        links: Vec<(&'a str, &'a str)>,
        expect: &'a [&'a str],
    }
    let bad = [
        Bad {
            name: "tampered-package",
            files: vec![(hello, tampered_hello, 0o755)],
            links: vec![],
            expect: &[
                "/bundle/packages/hello/baton-hello",
                "components[0].files[0].sha256",
            ],
        },
        Bad {
            name: "parent-path",
            files: vec![("manifest.json", parent_path, 0o644)],
            links: vec![],
            expect: &["/bundle/manifest.json", "components[0].files[0].path", ".."],
        },
        Bad {
            name: "absolute-path",
            files: vec![("manifest.json", absolute_path, 0o644)],
            links: vec![],
            expect: &["/bundle/manifest.json", "agent.file.path", "absolute"],
        },
        Bad {
            name: "symlink-escape",
            files: vec![],
            links: vec![("packages/escape", "../../host/etc")],
            expect: &["/bundle/packages/escape", "symbolic link to ../../host/etc"],
        },
        Bad {
            name: "symlinked-package",
            files: vec![],
            links: vec![("packages/kernel/vmlinuz-6.1.0-baton2", "/host/etc/shadow")],
            expect: &["vmlinuz-6.1.0-baton2", "symbolic link to /host/etc/shadow"],
        },
    ];
    for b in &bad {
        let tag = format!("baton-bad-bundle-{}:{}", fleet.run_id(), b.name);
        cleanup.0.push(tag.clone());
        derived_bundle(&v2_pinned, &tag, &b.files, &b.links).await;
        let before = snapshot(host.root());
        let run = run_job(host, &tag, &endpoints).await;
        let line = run.refusal();
        for want in b.expect {
            assert!(line.contains(want), "{}: {want:?} not in {line:?}", b.name);
        }
        eprintln!("{}: {line}", b.name);
        assert_same(&before, &snapshot(host.root()), b.name);
        assert_eq!(
            agent_main_pid(host).await,
            pid_v1,
            "{}: the agent was restarted",
            b.name
        );
    }

    // --- 2.0.0: the agent is replaced by 2.0.0's, 1.0.0's binary is kept.
    let up = run_job(host, &v2_pinned, &endpoints).await.summary();
    assert_eq!(up.version, "2.0.0");
    assert_eq!(up.bundle, StageAction::Staged);
    assert_eq!(up.agent.action, AgentAction::Restarted, "{up:?}");
    assert_eq!(up.agent.previous.as_deref(), Some("1.0.0"));
    assert_agent_active(host).await;
    let alive = wait_alive(&etcd, host, "2.0.0").await;
    let pid_v2 = agent_main_pid(host).await;
    assert_ne!(pid_v2, pid_v1, "the agent was not restarted");
    assert_eq!(alive.pid.to_string(), pid_v2);
    let exe = host
        .sh(&format!("readlink /proc/{pid_v2}/exe"))
        .await
        .expect("readlink exe");
    assert_eq!(exe.trim(), "/var/lib/baton/agent/2.0.0/baton-agent");
    assert_eq!(
        host.sh("readlink /var/lib/baton/agent/current; readlink /var/lib/baton/agent/previous")
            .await
            .expect("readlink"),
        "2.0.0\n1.0.0\n"
    );
    assert_eq!(
        host_file(host, "/var/lib/baton/agent/1.0.0/baton-agent").await,
        agent_v1,
        "1.0.0's agent is kept"
    );
    assert_eq!(
        host_file(host, "/var/lib/baton/agent/2.0.0/baton-agent").await,
        std::fs::read(&bins.agents[1]).expect("agent 2.0.0")
    );
    assert!(
        host.file_exists("/var/lib/baton/bundles/1.0.0/manifest.json")
            .await
            .expect("exists")
    );

    // And 2.0.0 again changes nothing.
    let before = snapshot(host.root());
    let again = run_job(host, &v2_pinned, &endpoints).await.summary();
    assert!(!again.changed, "{again:?}");
    assert_same(
        &before,
        &snapshot(host.root()),
        "a second run of bundle 2.0.0",
    );
    assert_eq!(agent_main_pid(host).await, pid_v2);

    drop(cleanup);
    fleet.destroy().expect("fleet cleanup");
}

/// Bad bundle sources are refused before any image is built.
#[tokio::test]
async fn bundle_build_refuses_bad_sources_before_building() {
    require_docker().await;
    let bins = binaries();
    let docker_api = bundle::connect().await.expect("connect");
    let source = tempfile::tempdir().expect("temp dir");
    prepare_source("1.0.0", source.path()).await;
    let template_path = source.path().join(bundle::TEMPLATE_FILE);
    let template: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&template_path).expect("template")).expect("json");
    let unique = source
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");

    type Edit = fn(&Path, &mut serde_json::Value);
    let cases: [(&str, Edit, &[&str]); 5] = [
        (
            "missing-file",
            |dir, _| std::fs::remove_file(dir.join("packages/hello/baton-hello")).expect("rm"),
            &[
                "packages/hello/baton-hello",
                "components[0].files[0]",
                "No such file",
            ],
        ),
        (
            "unsafe-path",
            |_, t| t["components"][1]["files"][0]["path"] = "../../etc/passwd".into(),
            &["manifest.template.json", "components[1].files[0].path"],
        ),
        (
            "bad-version",
            |_, t| t["version"] = "v1".into(),
            &["manifest.template.json", "field version"],
        ),
        (
            "duplicate-component",
            |_, t| t["components"][2]["name"] = "baton-echo".into(),
            &["manifest.template.json", "components[2].name", "duplicate"],
        ),
        (
            "agent-version",
            |_, t| t["agent"]["version"] = "9.9.9".into(),
            &["agent.version", "9.9.9"],
        ),
    ];
    for (name, edit, expect) in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(source.path().join("."))
            .arg(dir.path())
            .status()
            .expect("cp");
        assert!(status.success());
        let mut t = template.clone();
        edit(dir.path(), &mut t);
        std::fs::write(
            dir.path().join(bundle::TEMPLATE_FILE),
            serde_json::to_vec(&t).expect("json"),
        )
        .expect("write template");
        let tag = format!("baton-refused-bundle-{unique}:{name}");
        let err = bundle::build(
            &docker_api,
            &BuildOptions {
                dir: dir.path().to_owned(),
                tag: tag.clone(),
                agent: bins.agents[0].clone(),
                downloader: bins.downloader.clone(),
                push: false,
                check_agent_version: true,
                manifest_out: None,
                install: baton_protocol::manifest::InstallPolicy::default(),
                trusted_keys: Vec::new(),
            },
            &bundle::Quiet,
        )
        .await
        .expect_err(name)
        .to_string();
        for want in expect {
            assert!(err.contains(want), "{name}: {want:?} not in {err:?}");
        }
        assert!(
            !docker::image_exists(&tag).await.expect("inspect"),
            "{name}: an image was built"
        );
    }
}
