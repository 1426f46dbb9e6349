//! Faults of one host's agent:
//!
//! 8. the agent of the upgrade's last host frozen (`SIGSTOP`) before it is told, etcd
//!    compacted past its `desired` once the orchestrator wrote it, then the agent resumed
//!    within its lease: its watch is refused as compacted, it must re-read its keys,
//!    install, and the upgrade succeed. The order is made, not hoped for: the upgrade is
//!    paused while the batch before the last installs, so the last host cannot be told
//!    before its agent is frozen; the frozen agent's connections to etcd are then closed
//!    (`ss -K` in the host's network namespace), so the `desired` the resumed upgrade writes
//!    cannot reach it through a socket buffer either and its watch must be opened again
//!    from its old revision. The agent's log must show the compacted watch.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use baton_protocol::documents::{Desired, HostOutcomeState};
use baton_protocol::{HostId, HostKey, Keyspace, UpgradePhase};
use baton_tests::docker;
use baton_tests::fleet::Host;
use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;
use serde_json::{Value, json};

use super::{World, check, moment};

/// The agent's unit on every host.
const AGENT_UNIT: &str = "baton-agent.service";

/// What the agent logs when its watch's revision was compacted away
/// (`baton_protocol::etcd::ResumableWatch`).
const COMPACTED_LOG: &str = "watch revision was compacted";

/// The agents' lease: a freeze must end well within it (else the agent starts a new session
/// with a fresh read, and the compacted watch is not what is tested).
const LEASE: Duration = Duration::from_secs(10);

/// Fault 8.
pub fn compacted(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let mut run = world.begin("compact", &replay).await;
        let api = world.api().await.expect("a replica answers");
        let created = world.upgrade(&run.id).await.expect("the upgrade");
        let mut order: Vec<(Option<u32>, HostId)> = created
            .upgrade
            .hosts
            .iter()
            .map(|(id, h)| (h.batch, id.clone()))
            .collect();
        order.sort();
        let [.., (_, before), (_, last)] = order.as_slice() else {
            panic!("{replay}: fault 8 needs two batches: {order:?}");
        };
        let (before, last) = (before.clone(), last.clone());
        let host = world
            .sim
            .fleet
            .host(last.as_str())
            .expect("the last host")
            .clone();
        // Paused while the batch before the last installs: the last host is told only once
        // the upgrade is resumed, after its agent is frozen.
        world
            .wait_until(&run, |u| {
                u.upgrade.hosts.get(&before).is_some_and(|h| {
                    h.state != HostOutcomeState::Pending && h.state != HostOutcomeState::Downloaded
                })
            })
            .await;
        api.post::<_, Value>(&format!("/v1/upgrades/{}/pause", run.id), &json!({}))
            .await
            .unwrap_or_else(|e| panic!("{replay}: pause {}: {e}", run.id));
        let paused = world
            .wait_until(&run, |u| {
                u.upgrade
                    .hosts
                    .get(&before)
                    .is_some_and(|h| h.state != HostOutcomeState::Dispatched)
            })
            .await;
        let last_state = paused.upgrade.hosts.get(&last).map(|h| h.state);
        assert_eq!(
            (paused.upgrade.phase, last_state),
            (UpgradePhase::Paused, Some(HostOutcomeState::Downloaded)),
            "{replay}: {} should be paused with {last} not told yet: {:?}",
            run.id,
            paused.upgrade.hosts
        );

        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        host.exec_ok(&["systemctl", "kill", "--signal=SIGSTOP", AGENT_UNIT])
            .await
            .expect("freeze the agent");
        let frozen_at = Instant::now();
        let closed = close_etcd_connections(world, &host).await;
        eprintln!(
            "CHAOS {}: {last}'s agent frozen before it was told; its connections to etcd closed: {closed}",
            run.id
        );
        let before_resume = world.revision().await;
        api.post::<_, Value>(&format!("/v1/upgrades/{}/resume", run.id), &json!({}))
            .await
            .unwrap_or_else(|e| panic!("{replay}: resume {}: {e}", run.id));
        let told_at = told(world, &last, &run.id, before_resume, &replay).await;
        // Past the `desired` just written: the frozen agent's watch is behind it.
        run.early_history = check::record_history(world, &run).await;
        let mut kv = world.client.kv_client();
        for _ in 0..2 {
            kv.put("/chaos/compact-mark", run.id.as_str(), None)
                .await
                .expect("write past the desired");
        }
        let revision = world.revision().await;
        kv.compact(
            revision,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");
        run.compacted_at = revision;
        eprintln!(
            "CHAOS {}: {last} told at revision {told_at}, compacted at {revision} while its agent is frozen",
            run.id
        );
        // Resumed within its lease.
        let within = moment(&mut rng, Duration::from_secs(3)..Duration::from_secs(7));
        tokio::time::sleep(within.saturating_sub(frozen_at.elapsed())).await;
        host.exec_ok(&["systemctl", "kill", "--signal=SIGCONT", AGENT_UNIT])
            .await
            .expect("thaw the agent");
        let frozen = frozen_at.elapsed();
        eprintln!("CHAOS {}: {last}'s agent resumed after {frozen:?}", run.id);
        assert!(
            frozen < LEASE,
            "{replay}: {last}'s agent was frozen {frozen:?}, past its {LEASE:?} lease"
        );
        world.finish_succeeded(&run).await;
        let log = host
            .exec_ok(&[
                "journalctl",
                "--unit",
                AGENT_UNIT,
                "--no-pager",
                "--output",
                "cat",
                "--since",
                &format!("@{since}"),
            ])
            .await
            .expect("the agent's log");
        assert!(
            log.contains(COMPACTED_LOG),
            "{replay}: {last}'s agent did not go through the compacted watch (no {COMPACTED_LOG:?} in its log since the freeze):\n{log}"
        );
    })
}

/// Closes every TCP connection of `host` to the machine's gateway (where etcd listens):
/// `ss -K` in the host's network namespace, so a frozen agent receives nothing more on
/// them. Returns what `ss` listed.
async fn close_etcd_connections(world: &World, host: &Host) -> String {
    let pid = docker::run(&["inspect", "--format", "{{.State.Pid}}", host.container()])
        .await
        .expect("the host's pid");
    let gateway = world.sim.fleet.gateway_ip().to_string();
    let out = tokio::process::Command::new("nsenter")
        .args([
            "--target",
            pid.trim(),
            "--net",
            "ss",
            "--kill",
            "--tcp",
            "dst",
        ])
        .arg(&gateway)
        .output()
        .await
        .expect("nsenter ss");
    assert!(
        out.status.success(),
        "ss -K in {}'s network namespace: {}",
        host.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.lines().count() > 1,
        "{}'s agent has no connection to etcd at {gateway} to close: {listed}",
        host.name()
    );
    format!("{} connection(s)", listed.lines().count() - 1)
}

/// Waits (within the lease) until the orchestrator wrote `host`'s `desired` for `upgrade`
/// after `after`; returns its revision.
async fn told(world: &World, host: &HostId, upgrade: &str, after: i64, replay: &str) -> i64 {
    let key = Keyspace::default().host(host, HostKey::Desired);
    let started = Instant::now();
    loop {
        let desired = baton_protocol::etcd::read::<Desired>(&world.client, &key)
            .await
            .ok()
            .flatten();
        if let Some(d) = desired
            && d.value.upgrade_id.as_str() == upgrade
            && d.mod_revision > after
        {
            return d.mod_revision;
        }
        assert!(
            started.elapsed() < LEASE / 2,
            "{replay}: {host} not told within {:?} of the resume",
            LEASE / 2
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
