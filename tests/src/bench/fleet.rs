//! The benchmark's simulated fleet: many hosts in this process, each the real agent
//! ([`baton_agent::agent::Agent`]) on the no-work host ([`super::host::NoWorkHost`]) with
//! its own state folder, all sharing a few etcd clients (one connection each) instead of a
//! connection per host. The hosts share one etcd identity, which may write every host's
//! keys (a real host's identity covers only its own).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use baton_agent::agent::Agent;
use baton_protocol::Keyspace;
use baton_protocol::agent_config::AgentConfig;
use baton_protocol::api::RegisterHost;
use baton_protocol::etcd::identity::{Access, Credential, Grant};
use baton_protocol::etcd::{self, Client, auth};
use tokio::task::JoinHandle;

use super::host::NoWorkHost;
use crate::error::HarnessError;
use crate::etcd::{EtcdServer, random_password};

/// etcd clients the simulated agents share.
pub const AGENT_CLIENTS: usize = 4;
/// How often the shared clients authenticate again: etcd's simple tokens expire after
/// 5 minutes unused, and the agents' streams (keep-alives, watches) do not count as use.
const REAUTHENTICATE: std::time::Duration = std::time::Duration::from_secs(120);
/// The etcd user and role of the simulated hosts.
const AGENTS_IDENTITY: &str = "baton-bench-hosts";

/// The id of simulated host `i`.
pub fn host_id(i: usize) -> String {
    format!("sim-{i:05}")
}

/// Where simulated host `id` keeps its files, under the fleet's folder `root`.
fn host_root(root: &Path, id: &str) -> PathBuf {
    root.join("hosts").join(id)
}

/// The registration of simulated host `i`: jobs through `docker` (the stand-in engine),
/// mounting its `/var/lib/baton` from its folder under `root` (the orchestrator's
/// `--path-map-root`).
pub fn registration(root: &Path, i: usize, docker: &str, labels: &[(&str, &str)]) -> RegisterHost {
    let id = host_id(i);
    let machine = host_root(root, &id).join("var/lib/baton");
    RegisterHost {
        id: id.clone(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        docker: docker.to_owned(),
        path_map: BTreeMap::from([("/var/lib/baton".to_owned(), machine.display().to_string())]),
        boot_id_file: None,
        kernel_release_file: None,
        container_prefix: Some(format!("{id}-")),
        quorum_member: false,
    }
}

/// The running agents of the simulated hosts; dropping it stops them (their leases then
/// expire).
pub struct SimulatedFleet {
    agents: Vec<JoinHandle<()>>,
    clients: Vec<Client>,
    /// Keeps the clients' authentication tokens fresh.
    reauthenticate: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SimulatedFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedFleet")
            .field("agents", &self.agents.len())
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl Drop for SimulatedFleet {
    fn drop(&mut self) {
        for agent in self.agents.iter().chain(&self.reauthenticate) {
            agent.abort();
        }
    }
}

impl SimulatedFleet {
    /// Starts the agents of hosts `0..hosts` (their folders under `root`) against `etcd`,
    /// sharing [`AGENT_CLIENTS`] clients connected as the simulated hosts' identity.
    pub async fn start(etcd: &EtcdServer, root: &Path, hosts: usize) -> Result<Self, HarnessError> {
        let (clients, credential) = agent_clients(etcd).await?;
        let reauthenticate = credential.map(|c| {
            let clients = clients.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(REAUTHENTICATE).await;
                    for client in &clients {
                        let mut client = client.clone();
                        if let Err(error) = client
                            .set_client_auth(c.user.clone(), c.password.clone())
                            .await
                        {
                            eprintln!("simulated hosts' etcd client: authenticate: {error}");
                        }
                    }
                }
            })
        });
        let trusted = root.join("trusted-keys");
        std::fs::create_dir_all(&trusted)
            .map_err(|e| HarnessError(format!("{}: {e}", trusted.display())))?;
        let mut agents = Vec::with_capacity(hosts);
        for i in 0..hosts {
            let id = host_id(i);
            let config = agent_config(root, &id, etcd, &trusted)?;
            let client = clients[i % clients.len()].clone();
            let agent = Agent::with_client(config, Arc::new(NoWorkHost), client)
                .map_err(|e| HarnessError(format!("agent of {id}: {e}")))?;
            agents.push(tokio::spawn(async move {
                agent.run(std::future::pending()).await;
            }));
        }
        Ok(SimulatedFleet {
            agents,
            clients,
            reauthenticate,
        })
    }

    /// How many agents run.
    pub fn len(&self) -> usize {
        self.agents.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    /// One of the agents' clients (for reads made as the hosts' identity).
    pub fn client(&self) -> Option<&Client> {
        self.clients.first()
    }
}

/// The agents' configuration for host `id`: its own state folder, boot id and kernel
/// files, trusting no key (the orchestrator verified the bundle's signature).
fn agent_config(
    root: &Path,
    id: &str,
    etcd: &EtcdServer,
    trusted: &Path,
) -> Result<AgentConfig, HarnessError> {
    let dir = host_root(root, id);
    let state = dir.join("var/lib/baton");
    std::fs::create_dir_all(&state)
        .map_err(|e| HarnessError(format!("{}: {e}", state.display())))?;
    let (boot_id, kernel) = (dir.join("boot-id"), dir.join("kernel-release"));
    std::fs::write(&boot_id, format!("{id}-boot-1\n"))
        .and_then(|()| std::fs::write(&kernel, "6.1.0-bench\n"))
        .map_err(|e| HarnessError(format!("{}: {e}", dir.display())))?;
    let text = config_text(id, etcd, &state, &boot_id, &kernel, trusted, "");
    let path = dir.join("agent.toml");
    AgentConfig::parse(&path, &text).map_err(|e| HarnessError(e.to_string()))
}

/// An agent's configuration file for host `id` against `etcd` (with its TLS), its files
/// where given, and `extra` top-level settings.
pub(super) fn config_text(
    id: &str,
    etcd: &EtcdServer,
    state: &Path,
    boot_id: &Path,
    kernel: &Path,
    trusted: &Path,
    extra: &str,
) -> String {
    let mut text = format!(
        "host_id = {id:?}\netcd_endpoints = {:?}\nstate_dir = {state:?}\n\
         boot_id_file = {boot_id:?}\nkernel_release_file = {kernel:?}\n\
         trusted_keys_dir = {trusted:?}\ncontainer_prefix = \"{id}-\"\n{extra}",
        etcd.endpoints()
    );
    if let Some(tls) = etcd.client_tls() {
        text.push_str(&format!("\n[tls]\nca_file = {:?}\n", tls.ca_file));
        if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
            text.push_str(&format!("cert_file = {cert:?}\nkey_file = {key:?}\n"));
        }
    }
    text
}

/// [`AGENT_CLIENTS`] clients connected as the simulated hosts' identity (made once), and
/// that identity (authentication on).
async fn agent_clients(
    etcd: &EtcdServer,
) -> Result<(Vec<Client>, Option<Credential>), HarnessError> {
    let credential = match etcd.root() {
        Some(_) => Some(hosts_identity(etcd).await?),
        None => None,
    };
    let mut clients = Vec::new();
    for _ in 0..AGENT_CLIENTS {
        clients.push(match &credential {
            Some(c) => etcd.client_as(c).await?,
            None => etcd.client().await?,
        });
    }
    Ok((clients, credential))
}

/// The simulated hosts' etcd identity (authentication on): a user whose role may write
/// every host's keys and read the upgrade records, with a fresh password.
pub async fn hosts_identity(etcd: &EtcdServer) -> Result<Credential, HarnessError> {
    let keyspace = Keyspace::default();
    let grants = [
        Grant {
            access: Access::ReadWrite,
            key: keyspace.hosts_prefix(),
            prefix: true,
        },
        Grant {
            access: Access::Read,
            key: keyspace.upgrades_prefix(),
            prefix: true,
        },
    ];
    let credential = Credential {
        user: AGENTS_IDENTITY.to_owned(),
        password: random_password(),
    };
    let root = etcd.client().await?;
    let fail = |e: etcd::EtcdError| HarnessError(format!("simulated hosts' etcd identity: {e}"));
    auth::ensure_role(&root, AGENTS_IDENTITY, &grants)
        .await
        .map_err(fail)?;
    auth::ensure_user(&root, &credential, AGENTS_IDENTITY)
        .await
        .map_err(fail)?;
    Ok(credential)
}
