//! Faults of the registry the bundles come from:
//!
//! 4. the registry stopped at a random moment of the download phase for a random while,
//!    then started again: the downloads retry and the upgrade succeeds, or it fails
//!    naming the registry once the attempts are spent — either way every invariant holds;
//! 9. the bundle's tag pushed again, pointing at the other version's image, right after
//!    the upgrade was created: every host still gets (and runs) the digest the upgrade
//!    pinned.

use std::time::Duration;

use baton_protocol::documents::Desired;
use baton_protocol::{HostId, HostKey, Keyspace, UpgradePhase};
use baton_tests::docker;
use futures::future::LocalBoxFuture;
use rand::rngs::StdRng;

use super::{World, moment};

/// Fault 4.
pub fn outage(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        // Without the bundle on the engine, each downloader job must pull it.
        let to = if world.on == "1.0.0" {
            "2.0.0"
        } else {
            "1.0.0"
        };
        let tag = world.bundles[to].tag.clone();
        let _ = docker::run(&["image", "rm", &tag]).await;
        let run = world.begin("registry", &replay).await;
        let downloading = world
            .wait_until(&run, |u| u.upgrade.phase != UpgradePhase::Pending)
            .await;
        let _ = docker::run(&["image", "rm", &downloading.upgrade.bundle]).await;
        let at = moment(&mut rng, Duration::ZERO..Duration::from_secs(3));
        tokio::time::sleep(at).await;
        // The jobs try twice, 3 s apart: a short outage is ridden out, a long one fails the
        // host's download.
        let down = moment(&mut rng, Duration::from_secs(1)..Duration::from_secs(12));
        eprintln!(
            "CHAOS {}: registry stopped at +{at:?} of {:?} for {down:?}",
            run.id, downloading.upgrade.phase
        );
        world.sim.registry.stop();
        tokio::time::sleep(down).await;
        world
            .sim
            .registry
            .restart()
            .await
            .expect("registry restarts");
        eprintln!("CHAOS {}: registry started", run.id);
        let info = world.finish_checked(&run).await;
        match info.upgrade.phase {
            UpgradePhase::Succeeded => {}
            UpgradePhase::Failed => {
                let reason = info.upgrade.reason.clone().unwrap_or_default();
                let registry = world.sim.registry.host();
                assert!(
                    reason.contains(&registry),
                    "{replay}: failed without naming the registry {registry}: {reason}"
                );
            }
            other => panic!("{replay}: ended {other:?}: {:?}", info.upgrade.reason),
        }
    })
}

/// Fault 9.
pub fn repoint(world: &mut World, _rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let to = if world.on == "1.0.0" {
            "2.0.0"
        } else {
            "1.0.0"
        };
        let other = if to == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let tag = world.bundles[to].tag.clone();
        let other_tag = world.bundles[other].tag.clone();
        // Both images on the engine (an earlier fault may have removed them).
        for t in [&tag, &other_tag] {
            docker::run(&["pull", "--quiet", t])
                .await
                .unwrap_or_else(|e| panic!("pull {t}: {e}"));
        }
        let run = world.begin("repoint", &replay).await;
        let created = world.upgrade(&run.id).await.expect("the upgrade");
        let pinned = created.upgrade.bundle.clone();
        docker::run(&["tag", &other_tag, &tag]).await.expect("tag");
        docker::run(&["push", "--quiet", &tag]).await.expect("push");
        eprintln!("CHAOS {}: {tag} now points at bundle {other}", run.id);
        world.wait_until(&run, |_| false).await;
        // The tag back where it was, for the runs after this one.
        docker::run(&["pull", "--quiet", &pinned])
            .await
            .expect("pull the pinned bundle");
        docker::run(&["tag", &pinned, &tag])
            .await
            .expect("tag back");
        docker::run(&["push", "--quiet", &tag])
            .await
            .expect("push back");
        world.finish_succeeded(&run).await;
        let keys = Keyspace::default();
        for host in world.sim.fleet.hosts() {
            let key = keys.host(&HostId::new(host.name()).expect("id"), HostKey::Desired);
            let desired = baton_protocol::etcd::read::<Desired>(&world.client, &key)
                .await
                .expect("read desired")
                .expect("desired")
                .value;
            assert_eq!(
                desired.bundle,
                pinned,
                "{replay}: {} was told another bundle than the pinned one",
                host.name()
            );
        }
    })
}
