//! Faults of the etcd cluster Baton coordinates through (three members, TLS and
//! authentication on, every part of Baton given all three):
//!
//! 3. one member killed (`SIGKILL`) at a random moment of an upgrade and started again
//!    after a random while; then, in the next upgrade, two members killed — the quorum
//!    lost — for [`QUORUM_LOST`] and started again. The upgrade waits and continues;
//!    nothing is half-applied and every invariant holds.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use rand::Rng;
use rand::rngs::StdRng;

use super::{World, moment};

/// How long the cluster stays without a quorum.
const QUORUM_LOST: Duration = Duration::from_secs(20);

/// The window the moments are drawn from (about the first half of a rolling upgrade of
/// three hosts on the development machine).
const WINDOW: Duration = Duration::from_secs(15);

/// Fault 3.
pub fn members(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let size = world.sim.etcd.size();
        // One member down, then back.
        let run = world.begin("member", &replay).await;
        let at = moment(&mut rng, Duration::ZERO..WINDOW);
        if world.sleep_in(&run, at).await {
            let i = rng.gen_range(0..size);
            let down = moment(&mut rng, Duration::from_secs(1)..Duration::from_secs(10));
            eprintln!(
                "CHAOS {}: etcd member {i} killed at +{at:?} for {down:?}",
                run.id
            );
            world.sim.etcd.kill(i);
            tokio::time::sleep(down).await;
            world
                .sim
                .etcd
                .restart(i)
                .await
                .unwrap_or_else(|e| panic!("{replay}: restart member {i}: {e}"));
            eprintln!("CHAOS {}: etcd member {i} back", run.id);
        }
        world.finish_succeeded(&run).await;

        // Two members down: no quorum for QUORUM_LOST, then back.
        let run = world.begin("quorum", &replay).await;
        let at = moment(&mut rng, Duration::ZERO..WINDOW);
        if world.sleep_in(&run, at).await {
            let spared = rng.gen_range(0..size);
            let killed: Vec<usize> = (0..size).filter(|&i| i != spared).collect();
            eprintln!(
                "CHAOS {}: etcd members {killed:?} killed at +{at:?} for {QUORUM_LOST:?}",
                run.id
            );
            for &i in &killed {
                world.sim.etcd.kill(i);
            }
            tokio::time::sleep(QUORUM_LOST).await;
            world
                .sim
                .etcd
                .restore(&killed)
                .await
                .unwrap_or_else(|e| panic!("{replay}: restore members {killed:?}: {e}"));
            eprintln!("CHAOS {}: etcd members {killed:?} back", run.id);
        }
        world.finish_succeeded(&run).await;
    })
}
