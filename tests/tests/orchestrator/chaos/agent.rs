//! Faults of one host's agent:
//!
//! 8. etcd compacted past the watch of a frozen agent. The upgrade is paused once every
//!    host staged the bundle; the agent of the host told first is frozen (`SIGSTOP`) and
//!    its connections to etcd closed under it, as a broken link would. Then the upgrade is
//!    resumed: the orchestrator writes that host's `desired`, and etcd is compacted past it.
//!    The agent is thawed within its lease (a seeded 3–7 s after the freeze). Its watch
//!    resumes from the revision before the `desired`, etcd refuses it as compacted, and the
//!    agent must re-read its keys, install, and the upgrade succeed.
//!
//! Closing the connections is what makes the fault exact: a frozen process's socket still
//! takes in what etcd sends, so without it the agent would read the `desired` event on
//! thaw and never resume its watch.

use std::time::{Duration, Instant};

use baton_protocol::HostId;
use baton_protocol::documents::HostOutcomeState;
use baton_tests::fleet::Host;
use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;

use super::{World, check, moment};

/// The agent's unit on every host.
const AGENT_UNIT: &str = "baton-agent.service";

/// What the agent logs when etcd refuses its watch as compacted (protocol's
/// `ResumableWatch`).
const COMPACTED_WATCH: &str = "watch revision was compacted";

/// Fault 8.
pub fn compacted(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut run = world.begin("compact", &replay).await;
        let id = world.pause_once_staged(&run).await;
        let host = world
            .sim
            .fleet
            .host(id.as_str())
            .expect("the host told first")
            .clone();
        let refused_before = compacted_watches(&host).await;
        // Thawed within its lease (10 s), so the engine never sees it gone.
        let within = moment(&mut rng, Duration::from_secs(3)..Duration::from_secs(7));
        let frozen_at = Instant::now();
        let frozen = Frozen::agent_of(&host).await;
        let gateway = world.sim.fleet.gateway_ip();
        let ports = world.sim.etcd.client_ports();
        let closed = host
            .close_connections(gateway, &ports)
            .await
            .unwrap_or_else(|e| panic!("{replay}: close {}'s etcd connections: {e}", host.name()));
        assert!(
            closed > 0,
            "{replay}: {} has no etcd connection to close (or the kernel cannot close \
             sockets: it needs CONFIG_INET_DIAG_DESTROY)",
            host.name()
        );
        eprintln!(
            "CHAOS {}: {}'s agent frozen, {closed} etcd connection(s) closed under it",
            run.id,
            host.name()
        );
        world.resume(&run).await;
        let told = tokio::time::timeout(
            within.saturating_sub(frozen_at.elapsed()),
            world.wait_until(&run, |u| told(u, &id)),
        )
        .await
        .is_ok_and(|u| told(&u, &id));
        assert!(
            told,
            "{replay}: {} was not told within {within:?} of its agent's freeze",
            host.name()
        );
        // Past the `desired` just written: the frozen agent's watch is behind it.
        run.early_history = check::record_history(world, &run).await;
        let mut kv = world.client.kv_client();
        kv.put("/chaos/compact-mark", run.id.as_str(), None)
            .await
            .expect("write past the desired");
        let revision = world.revision().await;
        kv.compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        run.compacted_at = revision;
        eprintln!("CHAOS {}: compacted at revision {revision}", run.id);
        tokio::time::sleep(within.saturating_sub(frozen_at.elapsed())).await;
        drop(frozen);
        eprintln!(
            "CHAOS {}: {}'s agent resumed after {:?}",
            run.id,
            host.name(),
            frozen_at.elapsed()
        );
        world.finish_succeeded(&run).await;
        let refused = compacted_watches(&host).await;
        assert!(
            refused > refused_before,
            "{replay}: {}'s agent never logged {COMPACTED_WATCH:?}: its watch did not resume \
             past the compaction, so the fault was not exercised",
            host.name()
        );
    })
}

/// Whether `host` is told (its outcome past `Downloaded`).
fn told(u: &baton_protocol::api::UpgradeInfo, host: &HostId) -> bool {
    u.upgrade.hosts.get(host).is_some_and(|h| {
        !matches!(
            h.state,
            HostOutcomeState::Pending | HostOutcomeState::Downloaded
        )
    })
}

/// How many times the host's agent logged a watch refused as compacted.
async fn compacted_watches(host: &Host) -> usize {
    host.exec_ok(&[
        "journalctl",
        "--unit",
        AGENT_UNIT,
        "--no-pager",
        "--output",
        "cat",
    ])
    .await
    .expect("the agent's journal")
    .matches(COMPACTED_WATCH)
    .count()
}

/// A host's agent frozen (`SIGSTOP`) until this is dropped, also when the run fails: the
/// next run must find it going.
struct Frozen {
    container: String,
}

impl Frozen {
    async fn agent_of(host: &Host) -> Frozen {
        host.exec_ok(&["systemctl", "kill", "--signal=SIGSTOP", AGENT_UNIT])
            .await
            .expect("freeze the agent");
        Frozen {
            container: host.container().to_owned(),
        }
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let thawed = std::process::Command::new("docker")
            .args([
                "exec",
                &self.container,
                "systemctl",
                "kill",
                "--signal=SIGCONT",
                AGENT_UNIT,
            ])
            .status();
        if !thawed.as_ref().is_ok_and(|s| s.success()) {
            eprintln!(
                "CHAOS {}: the agent could not be thawed: {thawed:?}",
                self.container
            );
        }
    }
}
