//! Sample bundles and the downloader job for tests: the prebuilt static binaries, bundle
//! sources (`images/sample-bundle`), building and pushing bundles with the orchestrator's
//! `bundle build`, running a bundle as the downloader job for a simulated host the way the
//! orchestrator does, and waiting for the agent it installs.
//!
//! Test support: every helper panics with a message naming what failed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_downloader::Summary;
use baton_protocol::documents::{Alive, decode};
use baton_protocol::keys::HostKey;
use baton_protocol::manifest::Manifest;
use baton_protocol::signing::BundleSignature;
use baton_protocol::{HostId, Keyspace};
use batonctl::bundle::{self, BuildOptions, Built};

use crate::docker;
use crate::etcd::EtcdServer;
use crate::fleet::Host;
use crate::registry::Registry;
use crate::signing::{self, TestKey};
use crate::simhost_image::{BOOT_ID_PATH, BOOTED_KERNEL_PATH};

/// The sample bundle versions.
pub const VERSIONS: [&str; 2] = ["1.0.0", "2.0.0"];

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

/// The prebuilt binaries a bundle carries.
#[derive(Debug)]
pub struct Binaries {
    /// The static `baton-downloader`.
    pub downloader: PathBuf,
    /// `baton-agent` built as each of [`VERSIONS`].
    pub agents: [PathBuf; 2],
}

/// Cargo's target folder: `CARGO_TARGET_DIR`, else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// The prebuilt static binaries, or which one is missing and how to build it.
pub fn find_binaries() -> Result<Binaries, String> {
    let target = target_dir();
    let downloader = target.join("x86_64-unknown-linux-gnu/debug/baton-downloader");
    let agents = VERSIONS.map(|v| target.join(format!("bundle-agents/{v}/baton-agent")));
    for path in std::iter::once(&downloader).chain(agents.iter()) {
        if !path.is_file() {
            return Err(format!(
                "{} is missing: build the static downloader and the versioned agents first \
                 (`make static bundle-agents`; `make test` and `make demo` do)",
                path.display()
            ));
        }
    }
    Ok(Binaries { downloader, agents })
}

/// The prebuilt static binaries; fails saying how to build them if missing.
pub fn binaries() -> Binaries {
    find_binaries().unwrap_or_else(|e| panic!("{e}"))
}

/// The static `baton-orchestrator` built as `version` (`make bundle-orchestrators`), or
/// which file is missing and how to build it.
pub fn find_orchestrator_binary(version: &str) -> Result<PathBuf, String> {
    let path = target_dir().join(format!("bundle-orchestrators/{version}/baton-orchestrator"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: build the versioned orchestrator first \
             (`make bundle-orchestrators`; `make test` and `make demo` do)",
            path.display()
        ))
    }
}

/// The static `baton-orchestrator` built as `version`; fails saying how to build it.
pub fn orchestrator_binary(version: &str) -> PathBuf {
    find_orchestrator_binary(version).unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the orchestrator image `tag` from `binary` with `images/orchestrator/build.sh`.
pub async fn build_orchestrator_image(binary: &Path, tag: &str) -> Result<(), String> {
    run_script(
        "images/orchestrator/build.sh",
        &[binary.as_os_str(), tag.as_ref()],
    )
    .await
}

/// Names `image` as the orchestrator image in the bundle source folder `source`'s
/// `manifest.template.json` (the bundle then carries the orchestrator's self-update).
pub fn set_orchestrator_image(source: &Path, image: &str) -> Result<(), String> {
    let template = source.join("manifest.template.json");
    let read = |e: &dyn std::fmt::Display| format!("{}: {e}", template.display());
    let bytes = std::fs::read(&template).map_err(|e| read(&e))?;
    let mut manifest: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| read(&e))?;
    manifest["orchestrator_image"] = serde_json::Value::String(image.to_owned());
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| read(&e))?;
    std::fs::write(&template, bytes).map_err(|e| read(&e))
}

/// Runs the workspace's `script` with `args`; an error names the command and says why.
pub async fn run_script(script: &str, args: &[&std::ffi::OsStr]) -> Result<(), String> {
    let script = workspace().join(script);
    let command = std::iter::once(script.as_os_str())
        .chain(args.iter().copied())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let output = tokio::process::Command::new("bash")
        .arg(&script)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("run {command}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{command} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Fails the test with how to get Docker if the engine does not answer.
pub async fn require_docker() {
    if let Err(e) = docker::ensure_available().await {
        panic!("this test needs a working Docker Engine: {e}");
    }
}

/// Removes the listed local images when the test ends, also on panic.
#[derive(Debug)]
pub struct RemoveImages(pub Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker::run_blocking(&["rmi", "--force", image]);
        }
    }
}

/// `images/sample-bundle/prepare.sh VERSION OUT`; an error names the script and says why.
pub async fn try_prepare_source(version: &str, out: &Path) -> Result<(), String> {
    run_script(
        "images/sample-bundle/prepare.sh",
        &[version.as_ref(), out.as_os_str()],
    )
    .await
}

/// `images/sample-bundle/prepare.sh VERSION OUT`.
pub async fn prepare_source(version: &str, out: &Path) {
    try_prepare_source(version, out)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Builds the bundle `tag` from `source` (trusting the tests' release key), pushes it and
/// signs it with that key.
pub async fn build_bundle(
    version: &str,
    source: &Path,
    tag: &str,
    agent: &Path,
    downloader: &Path,
) -> Built {
    let sources = BundleSources {
        source,
        agent,
        downloader,
    };
    build_signed_bundle(
        version,
        &sources,
        tag,
        &[TestKey::Release],
        TestKey::Release,
    )
    .await
    .0
}

/// What a bundle is built from.
#[derive(Debug, Clone, Copy)]
pub struct BundleSources<'a> {
    /// The prepared source folder.
    pub source: &'a Path,
    /// The bundle's agent.
    pub agent: &'a Path,
    /// The static downloader.
    pub downloader: &'a Path,
}

/// Builds the bundle `tag` listing `trusts` as its trusted keys, pushes it and signs it with
/// `signer`; returns it and the signature.
pub async fn build_signed_bundle(
    version: &str,
    sources: &BundleSources<'_>,
    tag: &str,
    trusts: &[TestKey],
    signer: TestKey,
) -> (Built, BundleSignature) {
    let BundleSources {
        source,
        agent,
        downloader,
    } = *sources;
    let docker = bundle::connect().await.expect("connect to Docker");
    let started = Instant::now();
    let built = bundle::build(
        &docker,
        &BuildOptions {
            dir: source.to_owned(),
            tag: tag.to_owned(),
            agent: agent.to_owned(),
            downloader: downloader.to_owned(),
            push: true,
            check_agent_version: true,
            manifest_out: None,
            install: baton_protocol::manifest::InstallPolicy::default(),
            trusted_keys: trusts
                .iter()
                .map(|k| k.signing().public().clone())
                .collect(),
        },
        &bundle::Stderr,
    )
    .await
    .unwrap_or_else(|e| panic!("bundle build {version}: {e}"));
    let pinned = built.pushed.as_deref().expect("pushed");
    let signature = signing::sign(pinned, signer).await;
    eprintln!(
        "TIMING bundle {version}: built and pushed in {:?} ({} MiB of files)",
        started.elapsed(),
        built.context_bytes / (1024 * 1024)
    );
    (built, signature)
}

/// What one run of the job returned.
#[derive(Debug)]
pub struct JobRun {
    /// Exit status.
    pub status: i32,
    /// Standard output (the summary line last).
    pub stdout: String,
    /// Standard error (the error line last).
    pub stderr: String,
}

impl JobRun {
    /// The summary, after checking the job succeeded.
    pub fn summary(&self) -> Summary {
        assert_eq!(self.status, 0, "the job failed:\n{}", self.stderr);
        Summary::from_log(&self.stdout)
            .unwrap_or_else(|| panic!("no summary line in the job's stdout:\n{}", self.stdout))
    }

    /// The job's last stderr line, after checking it failed.
    pub fn refusal(&self) -> String {
        assert_ne!(
            self.status, 0,
            "the job accepted a bad bundle:\n{}\n{}",
            self.stdout, self.stderr
        );
        assert!(
            Summary::from_log(&self.stdout).is_none(),
            "a refused job printed a summary: {}",
            self.stdout
        );
        let last = self.stderr.lines().last().unwrap_or_default().to_owned();
        assert!(
            last.starts_with("baton-downloader: error: "),
            "last stderr line is not the error: {last:?}\n{}",
            self.stderr
        );
        last
    }
}

/// Runs the bundle `image` as the downloader job for `host`, the way the orchestrator does:
/// a sibling container with the host's paths mounted under `/host`, no network.
pub async fn run_job(host: &Host, image: &str, etcd: &[String]) -> JobRun {
    run_signed_job(host, image, etcd, None).await
}

/// [`run_job`], passing the bundle's `signature` as the orchestrator does.
pub async fn run_signed_job(
    host: &Host,
    image: &str,
    etcd: &[String],
    signature: Option<&BundleSignature>,
) -> JobRun {
    let name = host.sibling_name("downloader");
    let mounts: Vec<String> = host
        .host_paths()
        .iter()
        .map(|(path, machine)| format!("{}:/host{path}", machine.display()))
        .collect();
    // Named like the host's other siblings, so the fleet cleans up the agent's containers.
    let prefix = host.sibling_name("");
    let endpoints = etcd.join(",");
    let mut args = vec!["run", "--rm", "--name", &name, "--network", "none"];
    for m in &mounts {
        args.extend(["--volume", m.as_str()]);
    }
    args.push(image);
    // A pinned image is recorded beside the staged bundle (the agent installs only that).
    if image.contains("@sha256:") {
        args.extend(["--image", image]);
    }
    let signature = signature.map(BundleSignature::to_json);
    if let Some(s) = &signature {
        args.extend(["--signature", s.as_str()]);
    }
    args.extend([
        "--host-id",
        host.name(),
        "--etcd-endpoint",
        &endpoints,
        "--boot-id-file",
        BOOT_ID_PATH,
        "--kernel-release-file",
        BOOTED_KERNEL_PATH,
        "--container-prefix",
        &prefix,
    ]);
    let started = Instant::now();
    let out = docker::output(&args).await.expect("docker run");
    let run = JobRun {
        status: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!(
        "TIMING job {image} on {}: exit {} in {:?}",
        host.name(),
        run.status,
        started.elapsed()
    );
    for line in run.stderr.lines().chain(run.stdout.lines()) {
        eprintln!("  | {line}");
    }
    run
}

/// `systemctl ARGS` inside the host; its trimmed stdout.
pub async fn systemctl(host: &Host, args: &[&str]) -> String {
    let mut command = vec!["systemctl"];
    command.extend_from_slice(args);
    let out = host.exec(&command).await.expect("exec systemctl");
    out.stdout.trim().to_owned()
}

/// The agent unit's main pid.
pub async fn agent_main_pid(host: &Host) -> String {
    systemctl(
        host,
        &["show", "--property", "MainPID", "--value", "baton-agent"],
    )
    .await
}

/// Waits until the agent's `alive` key reports `version`; returns it.
pub async fn wait_alive(etcd: &EtcdServer, host: &Host, version: &str) -> Alive {
    let key = Keyspace::new("/baton")
        .expect("prefix")
        .host(&HostId::new(host.name()).expect("host id"), HostKey::Alive);
    let mut client = etcd.client().await.expect("etcd client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("no alive key");
    loop {
        let resp = client.get(key.as_str(), None).await.expect("etcd get");
        if let Some(kv) = resp.kvs().first() {
            let alive: Alive = decode(&key, kv.value()).expect("alive document");
            if alive.agent_version == version {
                return alive;
            }
            last = format!("agent_version {}", alive.agent_version);
        }
        if Instant::now() > deadline {
            let journal = host
                .exec(&["journalctl", "-u", "baton-agent", "--no-pager", "-n", "30"])
                .await
                .map(|o| o.stdout)
                .unwrap_or_default();
            panic!(
                "{key} did not report agent {version} within 30 s ({last}); agent log:\n{journal}"
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A bundle image derived from `base` with `files` (context path, content, mode) copied over
/// `/bundle`, and symlinks (path in /bundle, target) added: how a tampered bundle looks.
pub async fn derived_bundle(
    base: &str,
    tag: &str,
    files: &[(&str, Vec<u8>, u32)],
    links: &[(&str, &str)],
) {
    let ctx = tempfile::tempdir().expect("temp dir");
    let bundle = ctx.path().join("bundle");
    for (path, content, mode) in files {
        let p = bundle.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).expect("chmod");
    }
    for (path, target) in links {
        let p = bundle.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, &p).expect("symlink");
    }
    std::fs::create_dir_all(&bundle).expect("mkdir");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY bundle/ /bundle/\n"),
    )
    .expect("Dockerfile");
    // The classic builder, as `bundle build` uses: FROM a local image, nothing pulled.
    build_image(ctx.path(), tag).await;
}

/// A minimal valid manifest: an agent and one utility (the image is never run).
pub fn tiny_manifest(version: &str, backward_compatible: bool) -> serde_json::Value {
    tiny_manifest_with_agent(version, version, backward_compatible)
}

/// [`tiny_manifest`] whose agent is `agent_version`.
pub fn tiny_manifest_with_agent(
    version: &str,
    agent_version: &str,
    backward_compatible: bool,
) -> serde_json::Value {
    let file = |path: &str, dest: Option<&str>| {
        let mut f =
            serde_json::json!({"path": path, "size": 3, "sha256": "a".repeat(64), "mode": "0755"});
        if let Some(d) = dest {
            f["dest"] = d.into();
        }
        f
    };
    let manifest = serde_json::json!({
        "schema_version": 1,
        "version": version,
        "backward_compatible": backward_compatible,
        "agent": {"version": agent_version, "file": file("agent/baton-agent", None)},
        "components": [{
            "name": "baton-hello", "version": version, "kind": "file", "order": 10,
            "files": [file("packages/hello/baton-hello", Some("/usr/local/bin/baton-hello"))]
        }]
    });
    Manifest::parse(&serde_json::to_vec(&manifest).expect("json"))
        .unwrap_or_else(|e| panic!("the test manifest is invalid: {e}"));
    manifest
}

/// Builds a bundle-shaped image holding only `/bundle/manifest.json` (enough to resolve and
/// inspect it) and pushes it as `<registry>/baton-test/bundle:<tag>`; returns the tag
/// reference and the pinned one, signed with the tests' release key. The local images are
/// removed when `cleanup` drops.
pub async fn push_tiny_bundle(
    registry: &Registry,
    tag: &str,
    manifest: &serde_json::Value,
    cleanup: &mut Vec<String>,
) -> (String, String) {
    let ctx = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(ctx.path().join("bundle")).expect("mkdir");
    std::fs::write(
        ctx.path().join("bundle/manifest.json"),
        serde_json::to_vec_pretty(manifest).expect("json"),
    )
    .expect("write manifest");
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY bundle/ /bundle/\nENTRYPOINT [\"/baton-downloader\"]\n",
    )
    .expect("Dockerfile");
    let local = format!(
        "baton-orchestrator-test-{}:{tag}",
        ctx.path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "")
    );
    build_image(ctx.path(), &local).await;
    cleanup.push(local.clone());
    let pinned = registry
        .push(&local, "baton-test/bundle", tag)
        .await
        .expect("push");
    signing::sign(&pinned, TestKey::Release).await;
    let reference = format!("{}:{tag}", registry.reference("baton-test/bundle"));
    cleanup.push(reference.clone());
    (reference, pinned)
}

/// Builds without the build cache: tests running side by side build identical contexts, and
/// one test's `rmi --force` of its image would otherwise delete the cached layers another
/// test's build is using at that moment ("No such image: sha256:…").
pub async fn build_image(ctx: &Path, tag: &str) {
    let out = tokio::process::Command::new("docker")
        .args(["build", "--quiet", "--no-cache", "--tag", tag])
        .arg(ctx)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .await
        .expect("docker build");
    assert!(
        out.status.success(),
        "build {tag}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
