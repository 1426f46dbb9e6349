//! Faults of a host's network:
//!
//! 5. a host (drawn from the seed) cut off the fleet network (`docker network disconnect`:
//!    it keeps running, its agent reaches etcd no more) right after it reported a seeded one
//!    of its install's steps, kept off until its `alive` is gone from etcd (its lease
//!    expired) and a seeded 0–5 s more, then reconnected. Its agent finishes the step in
//!    progress (the host work does not need etcd), stops at the next report, keeps its
//!    journal, and once back opens a new session and carries the install on from the
//!    journal: no step reported after the cut comes before the one reported at it. The
//!    engine kept the host's slot while its agent was gone (less than the health timeout)
//!    and records it succeeded once it reports `Done`: the upgrade succeeds.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use baton_protocol::documents::{Alive, HostStatus};
use baton_protocol::{HostKey, HostState};
use baton_tests::fleet::Host;
use futures::FutureExt;
use futures::future::LocalBoxFuture;
use rand::Rng;
use rand::rngs::StdRng;

use super::{Run, World, check, moment};

/// The install reports the cut may follow: a sample bundle's install reports thirteen steps
/// (back up, apply and check its three components, back up and apply the kernel, the reboot
/// into it, its verification) before `Done`; the cut follows one of the first twelve, so
/// the install is still under way when the host is off.
const CUT_AFTER_REPORTS: usize = 12;

/// Longest the host's `alive` may outlive the cut: its lease (10 s) and etcd's expiry.
const ALIVE_EXPIRY_LIMIT: Duration = Duration::from_secs(60);

/// Fault 5.
pub fn cut_mid_install(
    world: &mut World,
    mut rng: StdRng,
    replay: String,
) -> LocalBoxFuture<'_, ()> {
    Box::pin(async move {
        let hosts = world.sim.fleet.hosts();
        let host = hosts[rng.gen_range(0..hosts.len())].clone();
        let after = rng.gen_range(0..CUT_AFTER_REPORTS);
        let run = world.begin("netcut", &replay).await;
        let outcome = std::panic::AssertUnwindSafe(cut(world, &run, &host, after, rng))
            .catch_unwind()
            .await;
        // Whatever happened, the host is back on the network for the runs after this one.
        if let Err(e) = host.reconnect().await
            && !e.to_string().contains("already exists")
        {
            eprintln!("CHAOS {}: reconnecting {}: {e}", run.id, host.name());
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
        world.finish_succeeded(&run).await;
    })
}

/// Cuts `host` off after its `after`-th install report of `run`, until its `alive` expired
/// and a seeded while more; checks what the agent reports once back.
async fn cut(world: &World, run: &Run, host: &Host, after: usize, mut rng: StdRng) {
    let replay = &run.replay;
    let status_key = check::key(host, HostKey::Status);
    let reports = InstallReports::follow(world, run, &status_key).await;
    let started = Instant::now();
    let mut checked = Instant::now();
    while reports.count() <= after {
        if checked.elapsed() > Duration::from_secs(1) {
            checked = Instant::now();
            let ended = world.upgrade(&run.id).await;
            assert!(
                !ended.is_some_and(|u| u.upgrade.phase.is_terminal()) || reports.count() > after,
                "{replay}: {} ended before {} made {} install report(s)",
                run.id,
                host.name(),
                after + 1
            );
        }
        assert!(
            started.elapsed() < super::UPGRADE_TIMEOUT,
            "{replay}: {} made {} install report(s) of {} in {:?}, the cut waits for {}",
            host.name(),
            reports.count(),
            run.id,
            super::UPGRADE_TIMEOUT,
            after + 1
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The host may be rebooting (its container restarting): the engine refuses it then.
    let mut tries = 0;
    while let Err(e) = host.disconnect().await {
        tries += 1;
        assert!(tries < 50, "{replay}: cutting {} off: {e}", host.name());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cut_at = Instant::now();
    // What the host reported last before the cut: mid-install (nothing after it arrives).
    let at_cut = check::read::<HostStatus>(world, &status_key).await;
    let reported = reports.count();
    eprintln!(
        "CHAOS {}: {} cut off after install report {} ({reported} seen): status {:?} {:?}; journal {}",
        run.id,
        host.name(),
        after + 1,
        at_cut.as_ref().map(|s| s.state),
        at_cut.as_ref().and_then(|s| s.step.clone()),
        journal_steps(host)
    );
    assert!(
        at_cut.as_ref().is_some_and(|s| {
            s.upgrade_id.as_ref().is_some_and(|u| u.as_str() == run.id)
                && matches!(
                    s.state,
                    HostState::Updating | HostState::Rebooting | HostState::Verifying
                )
        }),
        "{replay}: {} was not installing when it was cut off: {at_cut:?}",
        host.name()
    );
    // Off until the lease expired: etcd removed `alive`.
    let alive_key = check::key(host, HostKey::Alive);
    loop {
        if check::read::<Alive>(world, &alive_key).await.is_none() {
            break;
        }
        assert!(
            cut_at.elapsed() < ALIVE_EXPIRY_LIMIT,
            "{replay}: {}'s `alive` still there {ALIVE_EXPIRY_LIMIT:?} after the cut",
            host.name()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let expired = cut_at.elapsed();
    let more = moment(&mut rng, Duration::ZERO..Duration::from_secs(5));
    tokio::time::sleep(more).await;
    eprintln!(
        "CHAOS {}: {}'s `alive` expired {expired:?} after the cut; reconnected {:?} after it; journal {}",
        run.id,
        host.name(),
        cut_at.elapsed(),
        journal_steps(host)
    );
    host.reconnect()
        .await
        .unwrap_or_else(|e| panic!("{replay}: reconnecting {}: {e}", host.name()));
    let info = world.wait_until(run, |_| false).await;
    // The journal was kept: the install went on from where it was, never back to a step
    // before the one reported at the cut.
    let all = reports.steps();
    let index = |step: &str| all.iter().position(|s| s == step);
    let cut_step = index(&all[reported - 1]);
    if let Some(earlier) = all[reported..]
        .iter()
        .find(|s| index(s.as_str()) < cut_step)
    {
        panic!(
            "{replay}: {} reported {earlier:?} after the cut at {:?}: the install started over ({all:?})",
            host.name(),
            all[reported - 1]
        );
    }
    eprintln!(
        "CHAOS {}: {} ended {:?}; {}'s reports: {all:?}",
        run.id,
        run.id,
        info.upgrade.phase,
        host.name()
    );
}

/// A host's install reports for one upgrade (`status` with a step while `Updating`,
/// `Rebooting` or `Verifying`), in the order etcd took them, from a watch of its `status`
/// since the upgrade was created.
struct InstallReports {
    steps: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl InstallReports {
    async fn follow(world: &World, run: &Run, key: &str) -> InstallReports {
        let options = etcd_client::WatchOptions::new().with_start_revision(run.start_revision + 1);
        let (watcher, mut stream) = world
            .client
            .watch_client()
            .watch(key, Some(options))
            .await
            .unwrap_or_else(|e| panic!("{}: watch {key}: {e}", run.replay));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (into, id, key) = (steps.clone(), run.id.clone(), key.to_owned());
        let task = tokio::spawn(async move {
            let _watcher = watcher;
            while let Ok(Some(resp)) = stream.message().await {
                for event in resp.events() {
                    let Some(status) = event.kv().and_then(|kv| {
                        baton_protocol::documents::decode::<HostStatus>(&key, kv.value()).ok()
                    }) else {
                        continue;
                    };
                    let installing = matches!(
                        status.state,
                        HostState::Updating | HostState::Rebooting | HostState::Verifying
                    );
                    if installing
                        && status.upgrade_id.as_ref().is_some_and(|u| u.as_str() == id)
                        && let Some(step) = status.step
                    {
                        into.lock().expect("reports").push(step);
                    }
                }
            }
        });
        InstallReports { steps, task }
    }

    fn count(&self) -> usize {
        self.steps.lock().expect("reports").len()
    }

    fn steps(&self) -> Vec<String> {
        self.steps.lock().expect("reports").clone()
    }
}

impl Drop for InstallReports {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The host's journal as `component:state` pairs (and its outcome), read from its folder.
fn journal_steps(host: &Host) -> String {
    let path = host.root().join("var/lib/baton/journal.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return "(none)".to_owned();
    };
    let Ok(journal) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return "(unreadable)".to_owned();
    };
    let steps: Vec<String> = journal["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            format!(
                "{}:{}",
                s["component"].as_str().unwrap_or("?"),
                s["state"]["state"].as_str().unwrap_or("?")
            )
        })
        .collect();
    format!(
        "{} [{}] {}",
        journal["upgrade_id"].as_str().unwrap_or("?"),
        steps.join(" "),
        journal["outcome"]["outcome"]
            .as_str()
            .unwrap_or("unfinished")
    )
}
