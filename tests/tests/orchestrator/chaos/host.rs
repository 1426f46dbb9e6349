//! Faults of a host's machine:
//!
//! 6. a host that never comes back after its reboot: a host (drawn from the seed among those
//!    whose install reboots, i.e. not on the target bundle already) has its container's
//!    restart policy turned off before the upgrade, so the reboot its agent asks for the
//!    bundle's kernel (the real path: `systemctl reboot` over D-Bus, systemd shuts down,
//!    the container exits) leaves it down. The engine keeps the host's slot while its
//!    agent is gone, fails it once the health timeout passes, and the upgrade halts
//!    (`max_failures` 0): `Failed`, its reason naming the host; the hosts before it
//!    succeeded, the ones after it were never told. The host is then powered on again: its
//!    agent finds its journal, boots into the new kernel, confirms it and reports `Done` —
//!    the host is on the target although the engine failed it, which it could not see. The
//!    checker accepts either bundle on such a host ([`super::Run::lost`]), as long as every
//!    source agrees on it.

use std::time::{Duration, Instant};

use baton_protocol::documents::{Desired, HostOutcomeState, HostStatus, Installed};
use baton_protocol::{HostId, HostKey, HostState, UpgradePhase};
use baton_tests::docker;
use baton_tests::fleet::Host;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use rand::Rng;
use rand::rngs::StdRng;

use super::{Run, World, check};

/// The restart policy of a simulated host's container (tests/src/fleet.rs): a reboot
/// inside it brings it back.
const RESTART_POLICY: &str = "unless-stopped";

/// Longest a host powered on again may take to boot, and its agent to finish its journal.
const BACK_LIMIT: Duration = Duration::from_secs(120);

/// Fault 6.
pub fn never_back(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let to = super::other(world.on);
        // A host already on the target confirms its kernel without a reboot.
        let mut rebooting = Vec::new();
        for host in world.sim.fleet.hosts() {
            if installed_version(world, host).await.as_deref() != Some(to) {
                rebooting.push(host.clone());
            }
        }
        assert!(
            !rebooting.is_empty(),
            "{replay}: every host runs {to} already"
        );
        let host = rebooting[rng.gen_range(0..rebooting.len())].clone();
        set_restart_policy(&host, "no", &replay).await;
        let mut run = world.begin("lost", &replay).await;
        run.lost.insert(host.name().to_owned());
        let outcome = std::panic::AssertUnwindSafe(lost(world, &run, &host))
            .catch_unwind()
            .await;
        // Whatever happened, the host is up and reboots like the others for the next runs.
        set_restart_policy(&host, RESTART_POLICY, &replay).await;
        if host.container_state().await.ok().as_deref() != Some("running") {
            if let Err(e) = docker::run(&["start", host.container()]).await {
                eprintln!("CHAOS {}: powering {} on: {e}", run.id, host.name());
            }
            if let Err(e) = host.wait_booted(BACK_LIMIT).await {
                eprintln!("CHAOS {}: {} booting: {e}", run.id, host.name());
            }
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        back(world, &run, &host).await;
        world.finish_checked(&run).await;
    })
}

/// Follows `run` while `host` goes down in its reboot and stays down; checks that the
/// engine failed it and halted.
async fn lost(world: &World, run: &Run, host: &Host) {
    let replay = &run.replay;
    let started = Instant::now();
    loop {
        if host.container_state().await.ok().as_deref() == Some("exited") {
            break;
        }
        assert!(
            world.sleep_in(run, Duration::from_millis(500)).await,
            "{replay}: {} ended before {} went down in its reboot",
            run.id,
            host.name()
        );
        assert!(
            started.elapsed() < super::UPGRADE_TIMEOUT,
            "{replay}: {} did not reboot within {:?}",
            host.name(),
            super::UPGRADE_TIMEOUT
        );
    }
    let down_at = Instant::now();
    eprintln!(
        "CHAOS {}: {} went down in its reboot {:?} into the upgrade; kept down",
        run.id,
        host.name(),
        started.elapsed()
    );
    let info = world.wait_until(run, |_| false).await;
    eprintln!(
        "CHAOS {}: ended {:?} {:?} after the host went down: {:?}",
        run.id,
        info.upgrade.phase,
        down_at.elapsed(),
        info.upgrade.reason
    );
    let id = HostId::new(host.name()).expect("host id");
    let outcome = info.upgrade.hosts.get(&id);
    assert_eq!(
        info.upgrade.phase,
        UpgradePhase::Failed,
        "{replay}: with {} down, {} ended {:?} ({:?})",
        host.name(),
        run.id,
        info.upgrade.phase,
        info.upgrade.reason
    );
    assert!(
        outcome
            .is_some_and(|o| o.state == HostOutcomeState::Failed && o.reason.contains("not alive")),
        "{replay}: {} is not failed for its agent being gone: {outcome:?}",
        host.name()
    );
    let reason = info.upgrade.reason.clone().unwrap_or_default();
    assert!(
        reason.contains(host.name()),
        "{replay}: the failure reason does not name {}: {reason}",
        host.name()
    );
    // Halted: every other host succeeded before it, or was never told.
    for other in world.sim.fleet.hosts() {
        if other.name() == host.name() {
            continue;
        }
        let other_id = HostId::new(other.name()).expect("host id");
        let state = info.upgrade.hosts.get(&other_id).map(|o| o.state);
        if state == Some(HostOutcomeState::Succeeded) {
            continue;
        }
        let desired = check::read::<Desired>(world, &check::key(other, HostKey::Desired)).await;
        assert!(
            desired
                .as_ref()
                .is_none_or(|d| d.upgrade_id.as_str() != run.id),
            "{replay}: {} was told after {} failed (outcome {state:?}): {desired:?}",
            other.name(),
            host.name()
        );
    }
}

/// Once `host` is powered on again: its agent finishes the install its journal holds and
/// reports `Done` for `run`, on the target bundle.
async fn back(world: &World, run: &Run, host: &Host) {
    let key = check::key(host, HostKey::Status);
    let started = Instant::now();
    loop {
        let status = check::read::<HostStatus>(world, &key).await;
        let ours = status
            .as_ref()
            .is_some_and(|s| s.upgrade_id.as_ref().is_some_and(|u| u.as_str() == run.id));
        if ours && status.as_ref().is_some_and(|s| s.state == HostState::Done) {
            break;
        }
        assert!(
            started.elapsed() < BACK_LIMIT,
            "{}: {} back on, but not Done for {} after {BACK_LIMIT:?}: {status:?}",
            run.replay,
            host.name(),
            run.id
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let version = installed_version(world, host).await;
    assert_eq!(
        version.as_deref(),
        Some(run.to),
        "{}: {} finished its journal but its `installed` says {version:?}",
        run.replay,
        host.name()
    );
    eprintln!(
        "CHAOS {}: {} back on, finished its install ({}) {:?} later",
        run.id,
        host.name(),
        run.to,
        started.elapsed()
    );
}

async fn installed_version(world: &World, host: &Host) -> Option<String> {
    check::read::<Installed>(world, &check::key(host, HostKey::Installed))
        .await
        .and_then(|i| i.bundle_version)
}

async fn set_restart_policy(host: &Host, policy: &str, replay: &str) {
    docker::run(&["update", "--restart", policy, host.container()])
        .await
        .unwrap_or_else(|e| panic!("{replay}: restart policy of {}: {e}", host.name()));
}
