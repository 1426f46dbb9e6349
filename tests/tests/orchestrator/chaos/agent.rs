//! Faults of one host's agent:
//!
//! 8. the agent of the upgrade's last host frozen (`SIGSTOP`) right before its turn, etcd
//!    compacted past its `desired` once the orchestrator wrote it, then the agent resumed
//!    within its lease: its watch is refused as compacted, it must re-read its keys,
//!    install, and the upgrade succeed. (When the orchestrator has not told it within the
//!    freeze, the run says so and nothing is compacted.)

use std::time::Duration;

use baton_protocol::documents::HostOutcomeState;
use baton_protocol::documents::HostStatus;
use baton_protocol::{HostId, HostKey, HostState, Keyspace};
use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;

use super::{World, check, moment};

/// The agent's unit on every host.
const AGENT_UNIT: &str = "baton-agent.service";

/// Fault 8.
pub fn compacted(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let host = world.sim.fleet.hosts().last().expect("a host").clone();
        let id = HostId::new(host.name()).expect("id");
        let mut run = world.begin("compact", &replay).await;
        // Frozen right before its turn: as soon as every other host's agent reports Done
        // for the upgrade (read from etcd, faster than the API), the orchestrator tells it.
        let others: Vec<String> = world
            .sim
            .fleet
            .hosts()
            .iter()
            .filter(|h| h.name() != host.name())
            .map(|h| Keyspace::default().host(&HostId::new(h.name()).expect("id"), HostKey::Status))
            .collect();
        let started = std::time::Instant::now();
        loop {
            let mut done = 0;
            for key in &others {
                let status = baton_protocol::etcd::read::<HostStatus>(&world.client, key)
                    .await
                    .ok()
                    .flatten()
                    .map(|v| v.value);
                if status.is_some_and(|s| {
                    s.state == HostState::Done
                        && s.upgrade_id.as_ref().is_some_and(|u| u.as_str() == run.id)
                }) {
                    done += 1;
                }
            }
            if done == others.len() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{replay}: the other hosts are not done after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let others_done = world.upgrade(&run.id).await.expect("the upgrade");
        let before = others_done.upgrade.hosts.get(&id).map(|h| h.state);
        host.exec_ok(&["systemctl", "kill", "--signal=SIGSTOP", AGENT_UNIT])
            .await
            .expect("freeze the agent");
        eprintln!(
            "CHAOS {}: {}'s agent frozen (its outcome {before:?})",
            run.id,
            host.name()
        );
        // Resumed within its lease (10 s).
        let within = moment(&mut rng, Duration::from_secs(3)..Duration::from_secs(7));
        let frozen_at = std::time::Instant::now();
        let told = tokio::time::timeout(
            within,
            world.wait_until(&run, |u| {
                u.upgrade
                    .hosts
                    .get(&id)
                    .is_some_and(|h| h.state == HostOutcomeState::Dispatched)
            }),
        )
        .await
        .is_ok();
        if told {
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
        }
        tokio::time::sleep(within.saturating_sub(frozen_at.elapsed())).await;
        host.exec_ok(&["systemctl", "kill", "--signal=SIGCONT", AGENT_UNIT])
            .await
            .expect("thaw the agent");
        eprintln!(
            "CHAOS {}: {}'s agent resumed after {within:?} ({})",
            run.id,
            host.name(),
            if told {
                "told and compacted past while frozen"
            } else {
                "not told while frozen"
            }
        );
        world.finish_succeeded(&run).await;
    })
}
