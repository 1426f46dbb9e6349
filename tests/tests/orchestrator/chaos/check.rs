//! The invariants every chaos run must end with, read from etcd, the hosts and Docker —
//! never from Baton's own counters:
//!
//! 1. every host rests in a terminal state, and etcd's `installed`, the host's own
//!    `installed.json` and its running services (the utility's output, the daemon's unit
//!    and version file, the platform container's image) name the same bundle: the target
//!    for a host the upgrade succeeded on, the one it ran when the run began for every
//!    other ([`super::Run::ran`]: nothing half-applied) — either, for a host the fault kept away past the health timeout
//!    ([`super::Run::lost`]), which may have finished its install after it was failed;
//! 2. no host got a `desired` for the upgrade twice, and every host it succeeded on was told:
//!    the key's history from the upgrade's start revision, read at past revisions;
//! 3. the upgrade's events are `0..events`, without a gap;
//! 4. the upgrade's phase matches its hosts' outcomes, and `active` no longer names it;
//! 5. no downloader container of the upgrade is left on the Docker Engine.
//!
//! What the hosts and Docker show may lag etcd by a moment (a unit restarting, a job
//! container being removed): the checker reads again until they agree or
//! [`SETTLE_LIMIT`] passes, then fails with what still disagrees.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use baton_protocol::api::UpgradeInfo;
use baton_protocol::documents::{self, Desired, HostOutcomeState, HostStatus, Installed};
use baton_protocol::keys::Key;
use baton_protocol::{HostId, HostKey, HostState, Keyspace, UpgradePhase};
use baton_tests::docker;
use baton_tests::fleet::{Host, LABEL_RUN};

use super::{Run, VERSIONS, World};

/// How long the hosts and Docker may take to agree with etcd once the upgrade ended.
const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// Where the agent keeps its own record of what the host runs.
const INSTALLED_FILE: &str = "/var/lib/baton/installed.json";

/// Asserts every invariant for `run`, which ended as `info`; fails with the run's replay
/// line and everything that is wrong.
pub async fn run(world: &World, run: &Run, info: &UpgradeInfo) {
    let mut problems = phase_matches_hosts(run, info);
    problems.extend(events_without_gaps(world, run).await);
    problems.extend(told_once(world, run, info).await);
    let started = Instant::now();
    let settled = loop {
        let mut now = Vec::new();
        for host in world.sim.fleet.hosts() {
            now.extend(host_agrees(world, run, info, host).await);
        }
        now.extend(no_orphaned_jobs(world, run).await);
        if now.is_empty() || started.elapsed() > SETTLE_LIMIT {
            break now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    problems.extend(settled);
    assert!(
        problems.is_empty(),
        "{}: upgrade {} ({} -> {}) ended {:?} ({:?}) breaking invariants:\n  {}",
        run.replay,
        run.id,
        run.from,
        run.to,
        info.upgrade.phase,
        info.upgrade.reason,
        problems.join("\n  ")
    );
    eprintln!(
        "CHAOS CHECK {}: {:?}, every invariant holds",
        run.id, info.upgrade.phase
    );
}

/// The bundle version the fleet's first host runs (etcd's `installed`), as one of the
/// sample versions (empty when it runs none).
pub async fn fleet_version(world: &World) -> &'static str {
    let Some(host) = world.sim.fleet.hosts().first() else {
        return "";
    };
    host_version(world, host).await
}

/// The sample bundle `host` runs, as its `installed` in etcd says ("" for none).
pub async fn host_version(world: &World, host: &Host) -> &'static str {
    let installed = read::<Installed>(world, &key(host, HostKey::Installed)).await;
    let version = installed.and_then(|i| i.bundle_version).unwrap_or_default();
    VERSIONS.into_iter().find(|v| *v == version).unwrap_or("")
}

/// The key of one of `host`'s documents.
pub fn key(host: &Host, doc: HostKey) -> String {
    Keyspace::default().host(&HostId::new(host.name()).expect("host id"), doc)
}

/// The document at `key` now, if any (an etcd error fails the run).
pub async fn read<T: documents::Document>(world: &World, key: &str) -> Option<T> {
    baton_protocol::etcd::read::<T>(&world.client, key)
        .await
        .unwrap_or_else(|e| panic!("etcd read {key}: {e}"))
        .map(|v| v.value)
}

/// 4: the phase against the hosts' outcomes.
fn phase_matches_hosts(run: &Run, info: &UpgradeInfo) -> Vec<String> {
    let mut problems = Vec::new();
    let u = &info.upgrade;
    let count = |s| u.hosts.values().filter(|h| h.state == s).count();
    if !u.phase.is_terminal() {
        problems.push(format!("phase {:?} is not terminal", u.phase));
    }
    if info.active {
        problems.push("`active` still names the ended upgrade".to_owned());
    }
    if count(HostOutcomeState::Dispatched) > 0 {
        problems.push(format!(
            "{} host(s) still Dispatched in an ended upgrade",
            count(HostOutcomeState::Dispatched)
        ));
    }
    match u.phase {
        UpgradePhase::Succeeded => {
            let done = count(HostOutcomeState::Succeeded) + count(HostOutcomeState::Skipped);
            if done != u.hosts.len() {
                problems.push(format!(
                    "Succeeded with {done} of {} hosts succeeded: {:?}",
                    u.hosts.len(),
                    u.hosts
                ));
            }
        }
        UpgradePhase::Failed => {
            if u.reason.as_deref().is_none_or(str::is_empty) {
                problems.push("Failed without a reason".to_owned());
            }
        }
        other => problems.push(format!(
            "{} ended {other:?}, which no fault asks for",
            run.id
        )),
    }
    problems
}

/// 3: the event keys are exactly `0..events`.
async fn events_without_gaps(world: &World, run: &Run) -> Vec<String> {
    let info = match world.try_upgrade(&run.id).await {
        Ok(info) => info,
        Err(e) => {
            let mut why = format!("no replica serves the upgrade to count its events: {e}");
            for r in &world.replicas {
                why.push_str(&format!("\n--- {} log:\n{}", r.name, r.log_tail()));
            }
            return vec![why];
        }
    };
    let keys = Keyspace::default();
    let id = info.upgrade.id.clone();
    let resp = world
        .client
        .kv_client()
        .get(
            keys.events_prefix(&id),
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_keys_only(),
            ),
        )
        .await
        .expect("read events");
    let mut seqs: Vec<u64> = resp
        .kvs()
        .iter()
        .filter_map(|kv| match keys.parse(&String::from_utf8_lossy(kv.key())) {
            Ok(Key::Event(_, seq)) => Some(seq),
            _ => None,
        })
        .collect();
    seqs.sort_unstable();
    let expected: Vec<u64> = (0..info.upgrade.events).collect();
    if seqs == expected {
        Vec::new()
    } else {
        let missing: Vec<u64> = expected
            .iter()
            .filter(|s| !seqs.contains(s))
            .copied()
            .collect();
        let extra: Vec<u64> = seqs
            .iter()
            .filter(|s| !expected.contains(s))
            .copied()
            .collect();
        vec![format!(
            "events: the record counts {}, etcd holds {} (missing {missing:?}, beyond the count {extra:?})",
            info.upgrade.events,
            seqs.len()
        )]
    }
}

/// Every `desired` value `key` held after `from_revision` by its revision, read at past
/// revisions (each read at the revision before the last change found), down to
/// `floor` (the revision etcd was compacted at, 0 for none: older ones are gone).
async fn desired_history(
    world: &World,
    key: &str,
    from_revision: i64,
    floor: i64,
) -> Result<BTreeMap<i64, Desired>, String> {
    let mut kv = world.client.kv_client();
    let mut at: Option<i64> = None;
    let mut history = BTreeMap::new();
    loop {
        if at.is_some_and(|r| r < floor) {
            return Ok(history);
        }
        let options = at.map(|r| etcd_client::GetOptions::new().with_revision(r));
        let resp = kv
            .get(key, options)
            .await
            .map_err(|e| format!("{key} at revision {at:?}: {e}"))?;
        let Some(found) = resp.kvs().first() else {
            return Ok(history);
        };
        if found.mod_revision() <= from_revision {
            return Ok(history);
        }
        let value = documents::decode::<Desired>(key, found.value()).map_err(|e| e.to_string())?;
        history.insert(found.mod_revision(), value);
        at = Some(found.mod_revision() - 1);
    }
}

/// Every host's `desired` history since `run` started (for a fault about to compact
/// etcd: [`Run::early_history`]).
pub async fn record_history(world: &World, run: &Run) -> BTreeMap<String, BTreeMap<i64, Desired>> {
    let mut all = BTreeMap::new();
    for host in world.sim.fleet.hosts() {
        let history = desired_history(world, &key(host, HostKey::Desired), run.start_revision, 0)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", run.replay));
        all.insert(host.name().to_owned(), history);
    }
    all
}

/// 2: each host told at most once, and exactly once if its outcome says it was dispatched.
async fn told_once(world: &World, run: &Run, info: &UpgradeInfo) -> Vec<String> {
    let mut problems = Vec::new();
    for host in world.sim.fleet.hosts() {
        let key = key(host, HostKey::Desired);
        let mut history =
            match desired_history(world, &key, run.start_revision, run.compacted_at).await {
                Ok(h) => h,
                Err(e) => {
                    problems.push(format!("{}: desired history: {e}", host.name()));
                    continue;
                }
            };
        if let Some(early) = run.early_history.get(host.name()) {
            history.extend(early.clone());
        }
        let told = history
            .values()
            .filter(|d| d.upgrade_id.as_str() == run.id)
            .count();
        let outcome = outcome(info, host);
        // A host may fail before it is told (its download failed); one that succeeded
        // was told.
        let dispatched = matches!(
            outcome,
            Some(HostOutcomeState::Succeeded | HostOutcomeState::Dispatched)
        );
        if told > 1 || (dispatched && told == 0) {
            problems.push(format!(
                "{}: told {told} time(s) for {} (outcome {outcome:?}): {history:?}",
                host.name(),
                run.id
            ));
        }
    }
    problems
}

fn outcome(info: &UpgradeInfo, host: &Host) -> Option<HostOutcomeState> {
    let id = HostId::new(host.name()).expect("host id");
    info.upgrade.hosts.get(&id).map(|h| h.state)
}

/// What a host runs, from each place that says it.
#[derive(Debug)]
struct Seen {
    status: Option<HostStatus>,
    installed: Option<Installed>,
    on_disk: Option<Installed>,
    hello: String,
    echo_version: String,
    echo_active: String,
    kv_image: String,
}

async fn shell(host: &Host, script: &str) -> String {
    match host.exec(&["sh", "-c", script]).await {
        Ok(out) => out.stdout.trim().to_owned(),
        Err(e) => format!("({e})"),
    }
}

async fn seen(world: &World, host: &Host) -> Seen {
    let on_disk = std::fs::read(host.root().join(INSTALLED_FILE.trim_start_matches('/')))
        .ok()
        .and_then(|b| documents::decode::<Installed>(INSTALLED_FILE, &b).ok());
    let kv = format!("{}baton-kv", host.sibling_name(""));
    let kv_image = docker::run(&["inspect", "--format", "{{.Config.Image}}", &kv])
        .await
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|e| format!("({e})"));
    Seen {
        status: read(world, &key(host, HostKey::Status)).await,
        installed: read(world, &key(host, HostKey::Installed)).await,
        on_disk,
        hello: shell(host, "/usr/local/bin/baton-hello").await,
        echo_version: shell(host, "cat /run/baton-echo/version").await,
        echo_active: shell(host, "systemctl is-active baton-echo.service").await,
        kv_image,
    }
}

/// 1: the host rests, and etcd, its `installed.json` and its services name one version,
/// the one its outcome calls for.
async fn host_agrees(world: &World, run: &Run, info: &UpgradeInfo, host: &Host) -> Vec<String> {
    let s = seen(world, host).await;
    let name = host.name();
    let mut problems = Vec::new();
    let mut wrong = |what: String| problems.push(format!("{name}: {what} (seen: {s:?})"));
    let Some(installed) = &s.installed else {
        wrong("no `installed` in etcd".to_owned());
        return problems;
    };
    let v = installed.bundle_version.clone().unwrap_or_default();
    match &s.on_disk {
        Some(disk)
            if disk.bundle_version == installed.bundle_version
                && disk.components == installed.components => {}
        other => wrong(format!(
            "{INSTALLED_FILE} says {other:?}, etcd's `installed` {installed:?}"
        )),
    }
    if let Some((c, cv)) = installed.components.iter().find(|(_, cv)| **cv != v) {
        wrong(format!("component {c} at {cv} on bundle {v}"));
    }
    if !s.hello.ends_with(&v) {
        wrong(format!("baton-hello says {:?}, not {v}", s.hello));
    }
    if s.echo_version != v || s.echo_active != "active" {
        wrong(format!(
            "baton-echo is {} at {:?}, not active at {v}",
            s.echo_active, s.echo_version
        ));
    }
    if !s.kv_image.ends_with(&format!(":{v}")) {
        wrong(format!("baton-kv runs {}, not {v}", s.kv_image));
    }
    let state = s.status.as_ref().map(|st| st.state);
    let resting = matches!(
        state,
        Some(
            HostState::Idle
                | HostState::Downloaded
                | HostState::Done
                | HostState::Failed
                | HostState::RolledBack
        )
    );
    if !resting {
        wrong(format!("not resting: {state:?}"));
    }
    let outcome_calls_for = match outcome(info, host) {
        Some(HostOutcomeState::Succeeded) => {
            let ours = s
                .status
                .as_ref()
                .and_then(|st| st.upgrade_id.as_ref())
                .map(|u| u.as_str());
            if state != Some(HostState::Done) || ours != Some(run.id.as_str()) {
                wrong(format!(
                    "succeeded, but its status is {state:?} for {ours:?}"
                ));
            }
            run.to
        }
        // Not changed by this run: what it ran when the run began.
        _ => run.ran.get(name).copied().unwrap_or(run.from),
    };
    // A host the engine could not see (`Run::lost`) may have finished the install after it
    // was failed: either bundle, as long as it is whole.
    let lost = run.lost.contains(name) && v == run.to;
    if v != outcome_calls_for && !lost {
        wrong(format!(
            "runs {v:?}, its outcome calls for {outcome_calls_for:?}"
        ));
    }
    problems
}

/// 5: no downloader container of the upgrade is left on the engine.
async fn no_orphaned_jobs(world: &World, run: &Run) -> Vec<String> {
    let filters = [
        "label=io.baton.purpose=downloader".to_owned(),
        format!("label=io.baton.upgrade={}", run.id),
        format!("label={LABEL_RUN}={}", world.sim.fleet.run_id()),
    ];
    let mut args = vec!["ps", "--all", "--format", "{{.Names}} {{.State}}"];
    for f in &filters {
        args.extend(["--filter", f.as_str()]);
    }
    match docker::run(&args).await {
        Ok(out) if out.trim().is_empty() => Vec::new(),
        Ok(out) => vec![format!(
            "downloader containers left: {}",
            out.trim().replace('\n', ", ")
        )],
        Err(e) => vec![format!("docker ps: {e}")],
    }
}
