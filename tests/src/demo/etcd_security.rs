//! The demo's etcd with TLS and authentication, as Baton runs it (docs/security.md, "etcd
//! identities"): a CA and a server certificate for 127.0.0.1 and the fleet's gateway, a
//! client certificate etcd requires, `root` with a fresh password (the orchestrator's
//! administrative identity), and a read-only user for the `etcdctl` commands the demo
//! prints, in an environment file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use baton_protocol::Keyspace;
use baton_protocol::durable;
use baton_protocol::etcd::identity::READER_ROLE;
use baton_protocol::etcd::{self, Client, Credential, EtcdTls, auth};

use super::{DemoError, DemoState};
use crate::fleet::Host;
use crate::pki::TestPki;

/// etcd's certificates' folder in the state folder.
pub const ETCD_PKI_DIR: &str = "etcd-pki";
/// `root`'s credential (the orchestrator's `--etcd-admin-credential-file`).
pub const ROOT_CREDENTIAL: &str = "etcd-root-credential";
/// The orchestrator's everyday credential (it creates it).
pub const ORCHESTRATOR_CREDENTIAL: &str = "orchestrator-etcd-credential";
/// The environment file for a read-only `etcdctl`.
pub const ETCDCTL_ENV: &str = "etcdctl.env";
/// The read-only user it names.
const READER_USER: &str = "baton-demo-reader";
/// Where the hosts keep etcd's CA and the client certificate (their /etc/baton).
pub const HOST_CA: &str = "/etc/baton/etcd-ca.pem";
/// The client certificate on the hosts.
pub const HOST_CERT: &str = "/etc/baton/etcd-client.pem";
/// Its key on the hosts.
pub const HOST_KEY: &str = "/etc/baton/etcd-client-key.pem";

fn setup<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> DemoError {
    move |e| DemoError::Setup(format!("{what}: {e}"))
}

/// Makes etcd's PKI for 127.0.0.1 and `gateway`.
pub fn make_pki(state: &DemoState, gateway: Option<IpAddr>) -> Result<TestPki, DemoError> {
    let dir = state.state_dir.join(ETCD_PKI_DIR);
    std::fs::create_dir_all(&dir).map_err(setup("etcd PKI folder"))?;
    let mut sans = vec!["IP:127.0.0.1".to_owned()];
    sans.extend(gateway.map(|ip| format!("IP:{ip}")));
    TestPki::generate_for(&dir, &sans.join(",")).map_err(setup("etcd PKI"))
}

/// The PKI made by [`make_pki`].
pub fn pki(state: &DemoState) -> TestPki {
    TestPki::at(&state.state_dir.join(ETCD_PKI_DIR))
}

/// The TLS files a client on this machine uses.
pub fn client_tls(state: &DemoState) -> EtcdTls {
    let pki = pki(state);
    EtcdTls {
        ca_file: pki.ca,
        cert_file: Some(pki.client_cert),
        key_file: Some(pki.client_key),
        domain: None,
    }
}

/// `root`'s credential file.
pub fn root_credential_file(state: &DemoState) -> PathBuf {
    state.state_dir.join(ROOT_CREDENTIAL)
}

/// A client connected as `root`.
pub async fn root_client(state: &DemoState) -> Result<Client, DemoError> {
    let root = Credential::load(&root_credential_file(state)).map_err(setup("etcd root"))?;
    Ok(etcd::connect_as(
        std::slice::from_ref(&state.etcd),
        Some(&client_tls(state)),
        Some(&root),
    )
    .await?)
}

fn password() -> String {
    crate::etcd::random_password()
}

/// Creates `root`, switches authentication on, and creates the read-only user with its
/// `etcdctl` environment file.
pub async fn enable_auth(state: &DemoState) -> Result<(), DemoError> {
    let tls = client_tls(state);
    let endpoints = std::slice::from_ref(&state.etcd);
    let anonymous = etcd::connect_tls(endpoints, Some(&tls)).await?;
    let root = Credential {
        user: "root".to_owned(),
        password: password(),
    };
    let mut a = anonymous.auth_client();
    a.user_add("root", root.password.as_str(), None)
        .await
        .map_err(setup("etcd user add root"))?;
    a.user_grant_role("root", "root")
        .await
        .map_err(setup("etcd user grant-role root root"))?;
    a.auth_enable().await.map_err(setup("etcd auth enable"))?;
    write_secret(&root_credential_file(state), &root.to_file_text())?;

    let admin = root_client(state).await?;
    let keyspace = Keyspace::default();
    auth::ensure_roles(&admin, &keyspace).await?;
    let reader = Credential {
        user: READER_USER.to_owned(),
        password: password(),
    };
    auth::ensure_user(&admin, &reader, READER_ROLE).await?;
    write_secret(
        &state.state_dir.join(ETCDCTL_ENV),
        &etcdctl_env(state, &tls, &reader),
    )
}

/// The environment of a read-only `etcdctl` (`set -a; . FILE; set +a`).
fn etcdctl_env(state: &DemoState, tls: &EtcdTls, reader: &Credential) -> String {
    let path = |p: &Option<PathBuf>| p.as_deref().map(Path::display).map(|d| d.to_string());
    format!(
        "# A read-only etcdctl (role {READER_ROLE}) for the demo's etcd: set -a; . THIS_FILE; set +a\n\
         ETCDCTL_API=3\nETCDCTL_ENDPOINTS={}\nETCDCTL_CACERT={}\nETCDCTL_CERT={}\nETCDCTL_KEY={}\nETCDCTL_USER={}:{}\n",
        state.etcd,
        tls.ca_file.display(),
        path(&tls.cert_file).unwrap_or_default(),
        path(&tls.key_file).unwrap_or_default(),
        reader.user,
        reader.password,
    )
}

fn write_secret(path: &Path, text: &str) -> Result<(), DemoError> {
    durable::write(path, text.as_bytes(), 0o600)
        .map_err(|e| DemoError::Setup(format!("{}: {e}", path.display())))
}

/// Puts etcd's CA and the client certificate into every host's /etc/baton, where the
/// orchestrator's `--agent-etcd-*-file` flags name them.
pub fn copy_to_hosts(state: &DemoState, hosts: &[Host]) -> Result<(), DemoError> {
    let pki = pki(state);
    for host in hosts {
        for (from, to) in [
            (&pki.ca, HOST_CA),
            (&pki.client_cert, HOST_CERT),
            (&pki.client_key, HOST_KEY),
        ] {
            let dest = host.root().join(to.trim_start_matches('/'));
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir).map_err(setup("host /etc/baton"))?;
            }
            std::fs::copy(from, &dest).map_err(|e| {
                DemoError::Setup(format!(
                    "copy {} to {}: {e}",
                    from.display(),
                    dest.display()
                ))
            })?;
        }
    }
    Ok(())
}
