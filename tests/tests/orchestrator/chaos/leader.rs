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

use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;

use super::replica::Replica;
use super::{Run, World, moment};

/// Leader kills in one run of fault 1 (`BATON_CHAOS_RUNS` runs: twice as many moments).
const KILLS_PER_RUN: usize = 2;

/// The window the moments are drawn from: a rolling upgrade of three hosts lasts about
/// this long on the development machine.
const WINDOW: Duration = Duration::from_secs(30);

/// How long a replica may take to take over from a killed or frozen leader (its lease
/// expires in the configured 3 s; election and first pass add a little).
const TAKEOVER: Duration = Duration::from_secs(30);

/// Does `what` (`fault`) to the leading replica and waits until the other one leads;
/// returns which was struck and which leads now.
async fn strike(
    world: &mut World,
    run: &Run,
    what: &str,
    fault: fn(&mut Replica),
) -> (usize, usize) {
    let leader = world.leader().await;
    let other = 1 - leader;
    eprintln!(
        "CHAOS {}: {what} {} (leader)",
        run.id, world.replicas[leader].name
    );
    fault(&mut world.replicas[leader]);
    world.replicas[other]
        .wait_role("leader", TAKEOVER, &format!("{}: after {what}", run.replay))
        .await;
    (leader, other)
}

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
            let (leader, _) = strike(world, &run, "kill -9", Replica::kill).await;
            world.replicas[leader].restart().await;
        }
        world.finish_succeeded(&run).await;
    })
}

/// Fault 2.
pub fn freeze(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let run = world.begin("freeze", &replay).await;
        let at = moment(&mut rng, Duration::ZERO..WINDOW / 2);
        if world.sleep_in(&run, at).await {
            let (leader, other) = strike(world, &run, "SIGSTOP", Replica::freeze).await;
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
        world.finish_succeeded(&run).await;
    })
}
