//! Faults of the orchestrator itself, with two replicas:
//!
//! 1. the leader killed with `SIGKILL` at [`KILLS_PER_RUN`] random moments of a rolling
//!    upgrade (each time the other replica takes over and the killed one is started
//!    again, as a service manager would);
//! 2. the leader frozen with `SIGSTOP` at a random moment until the other replica leads
//!    and its lease is long gone, then resumed with `SIGCONT`: it must find itself
//!    fenced and follow, its writes refused.
//!
//! Either way the upgrade must succeed and pass every invariant ([`super::check`]).

use std::time::Duration;

use baton_protocol::UpgradePhase;
use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;

use super::{World, check, moment};

/// Leader kills in one run of fault 1 (`BATON_CHAOS_RUNS` runs: twice as many moments).
const KILLS_PER_RUN: usize = 2;

/// The window the moments are drawn from: a rolling upgrade of three hosts lasts about
/// this long on the development machine.
const WINDOW: Duration = Duration::from_secs(30);

/// How long a replica may take to take over from a killed or frozen leader (its lease
/// expires in the configured 3 s; election and first pass add a little).
const TAKEOVER: Duration = Duration::from_secs(30);

/// Fault 1.
pub fn kill(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let run = world.begin("kill", &replay).await;
        for k in 0..KILLS_PER_RUN {
            let at = moment(&mut rng, Duration::ZERO..WINDOW / KILLS_PER_RUN as u32);
            if !world.sleep_in(&run, at).await {
                eprintln!("CHAOS {}: ended before kill {k} (+{at:?})", run.id);
                break;
            }
            let leader = world.leader().await;
            let other = 1 - leader;
            eprintln!(
                "CHAOS {}: kill -9 {} (leader) at +{at:?}",
                run.id, world.replicas[leader].name
            );
            world.replicas[leader].kill();
            world.replicas[other]
                .wait_role("leader", TAKEOVER, &format!("{replay}: after kill {k}"))
                .await;
            world.replicas[leader].restart().await;
        }
        let info = world.finish(&run).await;
        check::run(world, &run, &info).await;
        assert_eq!(
            info.upgrade.phase,
            UpgradePhase::Succeeded,
            "{replay}: {:?}",
            info.upgrade.reason
        );
    })
}

/// Fault 2.
pub fn freeze(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let run = world.begin("freeze", &replay).await;
        let at = moment(&mut rng, Duration::ZERO..WINDOW / 2);
        if world.sleep_in(&run, at).await {
            let leader = world.leader().await;
            let other = 1 - leader;
            eprintln!(
                "CHAOS {}: SIGSTOP {} (leader) at +{at:?}",
                run.id, world.replicas[leader].name
            );
            world.replicas[leader].freeze();
            world.replicas[other]
                .wait_role("leader", TAKEOVER, &format!("{replay}: while frozen"))
                .await;
            // Well past the frozen one's lease: the other leads and has been writing.
            let past = moment(&mut rng, Duration::from_secs(3)..Duration::from_secs(10));
            tokio::time::sleep(past).await;
            eprintln!("CHAOS {}: SIGCONT {}", run.id, world.replicas[leader].name);
            world.replicas[leader].thaw();
            // It wakes up believing it leads; it must find out it does not and follow
            // (or exit for its service manager to restart it).
            let started = std::time::Instant::now();
            loop {
                if world.replicas[leader].exited() {
                    eprintln!(
                        "CHAOS {}: {} exited after resuming",
                        run.id, world.replicas[leader].name
                    );
                    world.replicas[leader].restart().await;
                    break;
                }
                if world.replicas[leader].role().await.as_deref() == Some("follower") {
                    break;
                }
                assert!(
                    started.elapsed() < TAKEOVER,
                    "{replay}: {} still says it leads {TAKEOVER:?} after it resumed; its log:\n{}",
                    world.replicas[leader].name,
                    world.replicas[leader].log_tail()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_eq!(
                world.replicas[other].role().await.as_deref(),
                Some("leader"),
                "{replay}: the replica that took over no longer leads"
            );
        }
        let info = world.finish(&run).await;
        check::run(world, &run, &info).await;
        assert_eq!(
            info.upgrade.phase,
            UpgradePhase::Succeeded,
            "{replay}: {:?}",
            info.upgrade.reason
        );
    })
}
