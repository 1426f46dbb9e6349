//! The Debian packages (`make packages`) as an operator installs them: `dpkg -i` on a
//! simulated Debian host, the orchestrator configured in its packaged
//! /etc/baton/orchestrator.toml and started by systemd as the package's own user, driven
//! by the installed `batonctl`, stopped cleanly by systemd, then purged.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use baton_tests::bundles;
use baton_tests::fleet::Host;
use baton_tests::signing::TestKey;

use crate::support::{SimFleet, api_files};

/// The packages `make test` (and `make packages`) leaves in the target folder, and the
/// version they carry (`batonctl_<version>_<arch>.deb`).
fn packages() -> (Vec<PathBuf>, String) {
    let dir = bundles::target_dir().join("packages");
    let found: Vec<PathBuf> = ["baton-orchestrator_", "batonctl_"]
        .iter()
        .filter_map(|prefix| {
            std::fs::read_dir(&dir)
                .ok()?
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".deb"))
                })
        })
        .collect();
    assert_eq!(
        found.len(),
        2,
        "the Debian packages are missing from {}: build them with `make packages` \
         (`make test` does, from the debug build)",
        dir.display()
    );
    let version = found[1]
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').nth(1))
        .expect("batonctl_<version>_<arch>.deb")
        .to_owned();
    (found, version)
}

/// Runs `script` on `host` as root; panics with its output unless it succeeds.
async fn sh(host: &Host, script: &str) -> String {
    host.sh(script)
        .await
        .unwrap_or_else(|e| panic!("on {}: {script}\n{e}", host.name()))
}

/// Runs the installed batonctl on `host` against the packaged orchestrator, with the
/// token in `token_file` (on the host); its exit code and what it printed.
async fn batonctl(host: &Host, token_file: &str, args: &str) -> (i32, String) {
    let out = host
        .exec(&[
            "sh",
            "-c",
            &format!(
                "BATON_API=https://127.0.0.1:7480 BATON_CA_FILE=/etc/baton/api-ca.pem \
                 BATON_TOKEN_FILE={token_file} batonctl {args}"
            ),
        ])
        .await
        .expect("run batonctl on the host");
    (out.status, format!("{}{}", out.stdout, out.stderr))
}

#[tokio::test]
async fn packages_install_run_under_systemd_and_are_driven_by_the_installed_batonctl() {
    let (debs, version) = packages();
    let sim = SimFleet::start(1).await;
    let host = &sim.fleet.hosts()[0];

    // Install, as an operator does.
    for deb in &debs {
        let name = deb.file_name().and_then(|n| n.to_str()).expect("name");
        host.write_file(
            &format!("/tmp/{name}"),
            &std::fs::read(deb).expect("read .deb"),
        )
        .await
        .expect("copy the package to the host");
    }
    let installed = sh(host, "dpkg -i /tmp/*.deb 2>&1").await;
    assert!(
        installed.contains("edit /etc/baton/orchestrator.toml"),
        "a first install says what to do next:\n{installed}"
    );
    sh(
        host,
        "id baton && test -f /lib/systemd/system/baton-orchestrator.service",
    )
    .await;
    assert_eq!(
        sh(host, "stat -c '%U:%G %a' /etc/baton/orchestrator.toml")
            .await
            .trim(),
        "root:baton 640",
        "the configuration is readable by the service's user only"
    );
    assert_eq!(
        sh(host, "systemctl is-active baton-orchestrator || true")
            .await
            .trim(),
        "inactive",
        "not started before it is configured"
    );
    sh(
        host,
        "test -s /usr/share/man/man1/batonctl.1.gz \
         && test -s /usr/share/man/man1/batonctl-upgrade-start.1.gz \
         && test -s /usr/share/zsh/vendor-completions/_batonctl \
         && test -s /usr/share/fish/vendor_completions.d/batonctl.fish \
         && bash -c '. /usr/share/bash-completion/completions/batonctl && complete -p batonctl'",
    )
    .await;

    // Configure: the files the packaged configuration names, plus etcd (secured as in
    // every fleet test) on the fleet's gateway.
    let api = api_files(&sim.etcd);
    let tls = sim.etcd.client_tls().expect("etcd TLS").clone();
    let files = [
        ("/etc/baton/api.pem", api.pki.server_cert.clone()),
        ("/etc/baton/api-key.pem", api.pki.server_key.clone()),
        ("/etc/baton/api-ca.pem", api.pki.ca.clone()),
        ("/etc/baton/orchestrator/etcd-ca.pem", tls.ca_file.clone()),
        (
            "/etc/baton/orchestrator/etcd-client.pem",
            tls.cert_file.clone().expect("client cert"),
        ),
        (
            "/etc/baton/orchestrator/etcd-client-key.pem",
            tls.key_file.clone().expect("client key"),
        ),
        (
            "/etc/baton/orchestrator/etcd-root-credential",
            sim.etcd.root_credential_file(),
        ),
        (
            "/etc/baton/trusted-keys/release.pub",
            TestKey::Release.public_file(),
        ),
    ];
    for (path, from) in &files {
        host.write_file(path, &std::fs::read(from).expect("read a test file"))
            .await
            .expect("copy a file to the host");
    }
    sh(
        host,
        "chown -R root:baton /etc/baton/orchestrator /etc/baton/api-key.pem \
         && chmod 0750 /etc/baton/orchestrator && chmod 0640 /etc/baton/orchestrator/* /etc/baton/api-key.pem",
    )
    .await;
    let endpoints = sim
        .etcd
        .endpoints_on(IpAddr::V4(sim.fleet.gateway_ip()))
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let settings = format!(
        "etcd = [{endpoints}]\n\
         etcd_ca_file = \"/etc/baton/orchestrator/etcd-ca.pem\"\n\
         etcd_cert_file = \"/etc/baton/orchestrator/etcd-client.pem\"\n\
         etcd_key_file = \"/etc/baton/orchestrator/etcd-client-key.pem\"\n\
         etcd_admin_credential_file = \"/etc/baton/orchestrator/etcd-root-credential\"\n\
         trusted_key = [\"/etc/baton/trusted-keys/release.pub\"]\n\
         allowed_registry = [\"127.0.0.1\"]\n"
    );
    // The operator's settings go before the packaged ones, which stay as shipped.
    let packaged = sh(host, "cat /etc/baton/orchestrator.toml").await;
    host.write_file(
        "/etc/baton/orchestrator.toml",
        format!("{settings}{packaged}").as_bytes(),
    )
    .await
    .expect("write the configuration");

    sh(host, "systemctl enable --now baton-orchestrator").await;
    let admin = "/var/lib/baton-orchestrator/admin-token";
    let ready = wait_ready(host, admin).await;
    assert!(
        ready,
        "the packaged orchestrator never answered /readyz:\n{}",
        sh(
            host,
            "journalctl -u baton-orchestrator --no-pager | tail -40"
        )
        .await
    );
    assert_eq!(
        sh(
            host,
            "ps -o user= -p $(systemctl show -p MainPID --value baton-orchestrator)"
        )
        .await
        .trim(),
        "baton",
        "the orchestrator runs as the package's own user"
    );
    assert_eq!(
        sh(
            host,
            "stat -c '%U %a' /var/lib/baton-orchestrator/admin-token"
        )
        .await
        .trim(),
        "baton 600",
        "the first admin token is made in the state folder, readable by the service only"
    );

    // Driven by the installed batonctl with the bootstrap admin token.
    let (code, out) = batonctl(host, admin, "version").await;
    assert_eq!(code, 0, "batonctl version: {out}");
    assert!(
        out.matches(version.as_str()).count() >= 2,
        "version names the client and the server: {out}"
    );
    let (code, out) = batonctl(
        host,
        admin,
        "token create reader --role viewer > /root/reader-token",
    )
    .await;
    assert_eq!(code, 0, "batonctl token create: {out}");
    let (code, out) = batonctl(host, "/root/reader-token", "host ls -o json").await;
    assert_eq!(code, 0, "batonctl host ls with the new viewer token: {out}");
    assert_eq!(out.trim(), "[]", "no host is registered yet");
    // The trust settings of the configuration file are in force: a bundle from a registry
    // it does not allow is refused (exit code 4) naming the registry.
    let (code, out) = batonctl(
        host,
        admin,
        "upgrade start registry.invalid/baton/bundle@sha256:0000000000000000000000000000000000000000000000000000000000000000",
    )
    .await;
    assert_eq!(
        code, 4,
        "a bundle from a registry not allowed is refused: {out}"
    );
    assert!(out.contains("registry.invalid"), "{out}");

    // systemd stops it cleanly (SIGTERM), then purge removes its state.
    sh(host, "systemctl stop baton-orchestrator").await;
    assert_eq!(
        sh(
            host,
            "systemctl show -p Result -p ExecMainStatus --value baton-orchestrator"
        )
        .await
        .split_whitespace()
        .collect::<Vec<_>>(),
        ["success", "0"],
        "stopped by SIGTERM with exit status 0"
    );
    sh(host, "dpkg --purge baton-orchestrator batonctl").await;
    sh(
        host,
        "! test -e /var/lib/baton-orchestrator && ! test -e /etc/baton/orchestrator.toml \
         && ! test -e /usr/bin/batonctl",
    )
    .await;
}

/// Waits (up to a minute) until the orchestrator on `host` answers the installed
/// batonctl with the admin token it makes at first start.
async fn wait_ready(host: &Host, admin: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while tokio::time::Instant::now() < deadline {
        if batonctl(host, admin, "version").await.0 == 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}
