//! One fleet of the benchmark, and of the test that checks it at a few hundred hosts: a real
//! etcd (TLS and authentication), a real registry holding three tiny signed bundles (`2.0.0`
//! and `2.1.0`, not backward compatible, for the first and the steady-state all-at-once
//! upgrades; `3.0.0`, backward compatible, for the rolling one) whose agent is this build's, the stand-in Docker Engine that stages them,
//! the real `baton-orchestrator` process, and the simulated hosts' agents, registered
//! through the API.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use baton_protocol::api::{MAX_BULK_REGISTRATIONS, RegisterHost, UpgradeInfo};
use baton_protocol::documents::HostSpec;
use baton_protocol::etcd::Client;
use baton_protocol::{Keyspace, UpgradeId, UpgradePhase};
use batonctl::client::ClientError;
use hyper::StatusCode;

use super::docker::StandInDocker;
use super::fleet::{self, SimulatedFleet};
use super::history::{self, History};
use super::orchestrator::OrchestratorProcess;
use crate::bundles::{RemoveImages, push_tiny_bundle, target_dir, tiny_manifest_with_agent};
use crate::error::HarnessError;
use crate::etcd::EtcdServer;
use crate::registry::Registry;

/// Longest the benchmark waits for the orchestrator to lead again.
const LEADER_WAIT: Duration = Duration::from_secs(60);
/// Longest an upgrade of the benchmark may take.
pub const UPGRADE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The bundle of the first all-at-once upgrade (which makes every host's etcd identity).
pub const ALL_AT_ONCE_VERSION: &str = "2.0.0";
/// The bundle of the steady-state all-at-once upgrade (every host has its identity and a
/// live agent: what an upgrade costs from then on).
pub const STEADY_VERSION: &str = "2.1.0";
/// Hosts registered last, one request each (the rest in bulk): the time per host of a
/// single registration into a fleet of nearly the full size.
pub const SINGLE_REGISTRATIONS: usize = 50;
/// The bundle of the rolling upgrade.
pub const ROLLING_VERSION: &str = "3.0.0";

/// Everything one fleet runs on; dropped in reverse order of start.
pub struct World {
    /// The simulated hosts.
    pub fleet: SimulatedFleet,
    /// The orchestrator.
    pub orchestrator: OrchestratorProcess,
    /// The stand-in Docker Engine.
    pub docker: StandInDocker,
    /// `(tag, pinned)` of each bundle, by version.
    pub bundles: Vec<(String, String, String)>,
    /// How long registering every host through the API took.
    pub registration: Duration,
    /// Registration in bulk: hosts, and how long.
    pub bulk_registration: (usize, Duration),
    /// Registration one request per host, of the last hosts: hosts, and how long.
    pub single_registration: (usize, Duration),
    /// The registry.
    pub registry: Registry,
    /// etcd.
    pub etcd: EtcdServer,
    _images: RemoveImages,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("fleet", &self.fleet)
            .field("bundles", &self.bundles)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Starts it all for `hosts` hosts.
    pub async fn start(hosts: usize) -> Result<World, HarnessError> {
        let etcd = EtcdServer::start_secure(&[]).await?;
        let registry = Registry::start()
            .await
            .map_err(|e| HarnessError(format!("registry: {e}")))?;
        let dir = tempfile::Builder::new()
            .prefix("baton-bench-")
            .tempdir()
            .map_err(|e| HarnessError(format!("temp dir: {e}")))?;
        let docker = StandInDocker::start(&dir.path().join("docker.sock"))?;
        let mut images = RemoveImages(Vec::new());
        let mut bundles = Vec::new();
        for (version, backward_compatible) in [
            (ALL_AT_ONCE_VERSION, false),
            (STEADY_VERSION, false),
            (ROLLING_VERSION, true),
        ] {
            let manifest =
                tiny_manifest_with_agent(version, baton_agent::VERSION, backward_compatible);
            let (tag, pinned) =
                push_tiny_bundle(&registry, version, &manifest, &mut images.0).await;
            let bytes = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| HarnessError(format!("manifest {version}: {e}")))?;
            docker.add_bundle(&pinned, &bytes)?;
            bundles.push((version.to_owned(), tag, pinned));
        }
        let orchestrator = OrchestratorProcess::start(
            &etcd,
            &dir.path().join("orchestrator"),
            &orchestrator_log(hosts),
            dir.path(),
            &[],
        )
        .await?;
        // The agents first: a registered host without an agent would be healed.
        let fleet = SimulatedFleet::start(&etcd, dir.path(), hosts).await?;
        let single = SINGLE_REGISTRATIONS.min(hosts / 2);
        let started = Instant::now();
        register(
            &orchestrator,
            dir.path(),
            0..hosts - single,
            docker.endpoint(),
        )
        .await?;
        let bulk_registration = (hosts - single, started.elapsed());
        let singles = Instant::now();
        register_one_by_one(
            &orchestrator,
            dir.path(),
            hosts - single..hosts,
            docker.endpoint(),
        )
        .await?;
        let single_registration = (single, singles.elapsed());
        let registration = started.elapsed();
        Ok(World {
            fleet,
            orchestrator,
            docker,
            bundles,
            registration,
            bulk_registration,
            single_registration,
            registry,
            etcd,
            _images: images,
            _dir: dir,
        })
    }

    /// The tag of bundle `version`.
    pub fn bundle(&self, version: &str) -> Result<&str, HarnessError> {
        self.bundles
            .iter()
            .find(|(v, _, _)| v == version)
            .map(|(_, tag, _)| tag.as_str())
            .ok_or_else(|| HarnessError(format!("no bundle {version}")))
    }

    /// A new client as etcd's root: a client's authentication token expires after some
    /// minutes unused, and a watch does not renew it.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        self.etcd.client().await
    }

    /// etcd's revision now.
    pub async fn revision(&self) -> Result<i64, HarnessError> {
        let resp = self
            .client()
            .await?
            .kv_client()
            .get(
                "/baton-bench/",
                Some(etcd_client::GetOptions::new().with_count_only()),
            )
            .await
            .map_err(|e| HarnessError(format!("etcd get: {e}")))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }

    /// Records every change from now on.
    pub async fn history(&self) -> Result<History, HarnessError> {
        Ok(History::start(
            self.client().await?,
            Keyspace::default(),
            self.revision().await? + 1,
        ))
    }

    /// Starts an upgrade with `request` (its `id` is set here); its id.
    pub async fn start_upgrade(
        &self,
        id: &str,
        mut request: serde_json::Value,
    ) -> Result<UpgradeId, HarnessError> {
        request["id"] = id.into();
        let created: UpgradeInfo =
            while_no_leader(|| self.orchestrator.api.post("/v1/upgrades", &request))
                .await
                .map_err(|e| HarnessError(format!("POST /v1/upgrades {request}: {e}")))?;
        Ok(created.upgrade.id)
    }

    /// Waits until upgrade `id` ends (as `history` saw it); its phase.
    pub async fn wait_end(
        &self,
        history: &History,
        id: &UpgradeId,
    ) -> Result<UpgradePhase, HarnessError> {
        history
            .wait_for(&format!("upgrade {id} to end"), UPGRADE_TIMEOUT, |c| {
                history::finished(c, id).is_some()
            })
            .await
            .map_err(|e| {
                HarnessError(format!(
                    "{e}; orchestrator log:\n{}",
                    self.orchestrator.log_tail()
                ))
            })?;
        history::finished(&history.changes(), id)
            .ok_or_else(|| HarnessError(format!("upgrade {id} ended unseen")))
    }
}

/// Where the orchestrator of a fleet of `hosts` hosts logs: `<target>/bench/`, kept after
/// the fleet's folders are gone, one file per fleet size and build profile (the last run's).
pub fn orchestrator_log(hosts: usize) -> PathBuf {
    target_dir().join("bench").join(format!(
        "orchestrator-{hosts}-hosts-{}.log",
        super::orchestrator::PROFILE
    ))
}

/// Sends `request` again while the orchestrator answers that it is not the leader (503: its
/// leadership lapsed, etcd too slow to renew its lease on a loaded machine, and it campaigns
/// again; nothing was written), for at most [`LEADER_WAIT`].
async fn while_no_leader<T, F, Fut>(mut request: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let started = Instant::now();
    loop {
        match request().await {
            Err(e)
                if e.status() == Some(StatusCode::SERVICE_UNAVAILABLE)
                    && started.elapsed() < LEADER_WAIT =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            answer => return answer,
        }
    }
}

/// Registers hosts `hosts` through the API's bulk form, at most
/// [`MAX_BULK_REGISTRATIONS`] a request.
async fn register(
    orchestrator: &OrchestratorProcess,
    root: &Path,
    hosts: Range<usize>,
    docker: &str,
) -> Result<(), HarnessError> {
    let requests: Vec<RegisterHost> = hosts
        .map(|i| fleet::registration(root, i, docker, &[("group", "bench")]))
        .collect();
    for chunk in requests.chunks(MAX_BULK_REGISTRATIONS) {
        while_no_leader(|| orchestrator.api.register_many(chunk))
            .await
            .map_err(|e| HarnessError(format!("register {} hosts: {e}", chunk.len())))?;
    }
    Ok(())
}

/// Registers hosts `hosts` one request each.
async fn register_one_by_one(
    orchestrator: &OrchestratorProcess,
    root: &Path,
    hosts: Range<usize>,
    docker: &str,
) -> Result<(), HarnessError> {
    for i in hosts {
        let request = fleet::registration(root, i, docker, &[("group", "bench")]);
        let _: HostSpec = while_no_leader(|| orchestrator.api.post("/v1/hosts", &request))
            .await
            .map_err(|e| HarnessError(format!("register {}: {e}", request.id)))?;
    }
    Ok(())
}
