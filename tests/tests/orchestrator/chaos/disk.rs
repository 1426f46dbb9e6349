//! Fault 7: a host's `/var/lib/baton` full. Every chaos host's `/var/lib/baton` is a tmpfs
//! of [`STATE_DISK`] bytes on the machine (`FleetOptions::sized_host_paths`), which the host
//! and its downloader job both mount; the fault fills it with one file (`Host::fill`), so
//! the kernel refuses the next write there with `ENOSPC`. Two upgrades:
//!
//! - staging: the first batch's host, its staged copy of the target removed, filled to
//!   leave a seeded number of pages (fewer than the bundle's packages take): its downloader
//!   job fails naming the path and leaves no partial copy; the upgrade fails under its
//!   budget (no failure tolerated) before any host is told;
//! - install: the host of the first batch, filled (0 or 1 page left, from the seed) once
//!   every host staged the bundle and while the upgrade is paused (so before it is told):
//!   the agent's first write into `/var/lib/baton` (its journal, or the backup of a
//!   component) fails; it reports the failure naming the path, rolls back what it applied,
//!   the host keeps its previous version, and the upgrade fails.
//!
//! After each, the filler is removed so the fleet goes on; the checker asserts the
//! invariants (the failed host on its previous version, nothing half-written).

use std::time::{Duration, Instant};

use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{HostOutcomeState, HostStatus};
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradePhase};
use baton_tests::fleet::Host;
use futures::future::LocalBoxFuture;
use rand::Rng;
use rand::rngs::StdRng;

use super::{Run, World};

/// Size of each chaos host's `/var/lib/baton`: room for two staged bundles, two agents and
/// the backups of an upgrade, with margin (a tmpfs only takes the memory it holds).
pub const STATE_DISK: u64 = 1 << 30;

/// The host path the fault fills.
pub const STATE_DIR: &str = "/var/lib/baton";

/// A page: tmpfs hands out space by pages.
const PAGE: u64 = 4096;

/// What the kernel's `ENOSPC` reads as in an error message.
const ENOSPC: &str = "No space left on device";

/// Fault 7.
pub fn full(world: &mut World, mut rng: StdRng, replay: String) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        staging(world, &mut rng, &replay).await;
        install(world, &mut rng, &replay).await;
    })
}

/// The disk full while the downloader job stages the bundle.
async fn staging(world: &mut World, rng: &mut StdRng, replay: &str) {
    // The first batch's host (the plan takes hosts in id order): the upgrade must fail
    // before any host is told. (A download failing while an earlier batch installs halts
    // the upgrade with that batch's host still `Dispatched` in the record, and the host
    // then finishes the install unjudged: invariant 4 catches it, the engine does not
    // wait for it yet.)
    let mut hosts = world.sim.fleet.hosts().to_vec();
    hosts.sort_by(|a, b| a.name().cmp(b.name()));
    let host = hosts[0].clone();
    let to = match world.on {
        "1.0.0" => "2.0.0",
        _ => "1.0.0",
    };
    // A host that has not staged the target yet: the job must write all of it.
    let staged = host
        .machine_path(&format!("{STATE_DIR}/bundles/{to}"))
        .expect("path")
        .expect("under a host path");
    if staged.exists() {
        std::fs::remove_dir_all(&staged).expect("remove the staged copy");
    }
    let leave = rng.gen_range(0..16) * PAGE;
    let free = host.fill(STATE_DIR, leave).await.expect("fill");
    eprintln!(
        "CHAOS fault 7 (staging): {}'s {STATE_DIR} full, {free} bytes free",
        host.name()
    );
    let run = world.begin("disk-staging", replay).await;
    let created = world.upgrade(&run.id).await.expect("the upgrade");
    let batch = created
        .upgrade
        .hosts
        .get(&HostId::new(host.name()).expect("id"))
        .and_then(|h| h.batch);
    assert_eq!(
        batch,
        Some(0),
        "{replay}: {} is not in {}'s first batch",
        host.name(),
        run.id
    );
    let info = world.finish_checked(&run).await;
    let unfilled = host.unfill(STATE_DIR).await;
    let reason = failure_of(&info, &host);
    assert_eq!(
        info.upgrade.phase,
        UpgradePhase::Failed,
        "{replay}: {} ended {:?}, not Failed under its budget, with {}'s disk full: {reason}",
        run.id,
        info.upgrade.phase,
        host.name()
    );
    assert_names_the_full_disk(&run, &host, &reason);
    eprintln!("CHAOS fault 7 (staging): {} failed: {reason}", run.id);
    assert!(
        !staged.exists(),
        "{replay}: {} holds a staged {to} after its staging failed",
        host.name()
    );
    let leftovers: Vec<String> = std::fs::read_dir(staged.parent().expect("bundles"))
        .expect("bundles folder")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "{replay}: {} keeps partial copies in {STATE_DIR}/bundles: {leftovers:?}",
        host.name()
    );
    unfilled.expect("free the disk");
}

/// The disk full when the agent starts installing.
async fn install(world: &mut World, rng: &mut StdRng, replay: &str) {
    let leave = rng.gen_range(0..2) * PAGE;
    let run = world.begin("disk-install", replay).await;
    let id = world.pause_once_staged(&run).await;
    let host = world
        .sim
        .fleet
        .host(id.as_str())
        .expect("the first host")
        .clone();
    let free = host.fill(STATE_DIR, leave).await.expect("fill");
    eprintln!(
        "CHAOS fault 7 (install): {}'s {STATE_DIR} full, {free} bytes free, before it is told",
        host.name()
    );
    world.resume(&run).await;
    let info = world.finish(&run).await;
    // Free before the checker reads: the invariants hold with the disk full, but a host
    // whose agent waits for space must not keep the next run waiting.
    let unfilled = host.unfill(STATE_DIR).await;
    super::check::run(world, &run, &info).await;
    let reason = failure_of(&info, &host);
    assert_eq!(
        (info.upgrade.phase, outcome_of(&info, &host)),
        (UpgradePhase::Failed, Some(HostOutcomeState::Failed)),
        "{replay}: {} with {}'s disk full: {reason}",
        run.id,
        host.name()
    );
    assert_names_the_full_disk(&run, &host, &reason);
    let status = host_status(world, &host).await;
    eprintln!(
        "CHAOS fault 7 (install): {} failed: {reason}; {}'s status: {:?}",
        run.id,
        host.name(),
        status.as_ref().map(|s| (s.state, s.message.as_str()))
    );
    assert!(
        status.as_ref().is_some_and(|s| matches!(
            s.state,
            HostState::Failed | HostState::RolledBack
        ) && s.message.contains(STATE_DIR)
            && s.message.contains(ENOSPC)),
        "{replay}: {}'s status should name the full disk: {status:?}",
        host.name()
    );
    unfilled.expect("free the disk");
    settle_agent(world, &host, replay).await;
}

fn outcome_of(info: &UpgradeInfo, host: &Host) -> Option<HostOutcomeState> {
    let id = HostId::new(host.name()).expect("host id");
    info.upgrade.hosts.get(&id).map(|h| h.state)
}

/// What the API says about the failure: the upgrade's reason and the host's.
fn failure_of(info: &UpgradeInfo, host: &Host) -> String {
    let id = HostId::new(host.name()).expect("host id");
    format!(
        "upgrade: {:?}; {}: {:?}",
        info.upgrade.reason,
        host.name(),
        info.upgrade.hosts.get(&id).map(|h| h.reason.as_str())
    )
}

/// The failure, as the API shows it, names the path and the kernel's error.
fn assert_names_the_full_disk(run: &Run, host: &Host, reason: &str) {
    assert!(
        reason.contains(STATE_DIR) && reason.contains(ENOSPC),
        "{}: {} should fail naming {}'s full {STATE_DIR} ({ENOSPC}): {reason}",
        run.replay,
        run.id,
        host.name()
    );
}

async fn host_status(world: &World, host: &Host) -> Option<HostStatus> {
    let key = Keyspace::default().host(&HostId::new(host.name()).expect("id"), HostKey::Status);
    baton_protocol::etcd::read::<HostStatus>(&world.client, &key)
        .await
        .ok()
        .flatten()
        .map(|v| v.value)
}

/// Waits (up to a minute) until the agent is active after the disk was freed, so the next
/// run starts from a host that answers.
async fn settle_agent(world: &World, host: &Host, replay: &str) {
    let started = Instant::now();
    loop {
        let active = host
            .exec(&["systemctl", "is-active", "baton-agent.service"])
            .await
            .is_ok_and(|o| o.stdout.trim() == "active");
        if active && host_status(world, host).await.is_some() {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{replay}: {}'s agent is not active a minute after its disk was freed",
            host.name()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
