//! `down` (stop the processes, remove the fleet, the bundle tags and the folders) and
//! `status` of the demo in a state dir.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baton_protocol::api::Health;
use batonctl::display;

use super::daemons::{is_running, stop};
use super::state::{DemoState, owner_of, remove_state_dir};
use super::summary::print_explore;
use super::{DemoError, api_error};
use crate::{docker, fleet};

/// Removes the demo in `state_dir`: its processes, its fleet (and any fleet run labelled
/// with its owner), its bundle tags and the folder. Returns what it did; blocking (tests
/// call it from `Drop`). Nothing there is not an error.
pub fn down(state_dir: &Path) -> Result<Vec<String>, DemoError> {
    let owner = owner_of(state_dir);
    let state = match DemoState::load(state_dir) {
        Ok(state) => state,
        Err(e) => {
            eprintln!("baton-demo: ignoring an unreadable state file: {e}");
            None
        }
    };
    let mut done = Vec::new();
    let mut problems = Vec::new();
    let mut runs: BTreeMap<String, PathBuf> = BTreeMap::new();
    if let Some(state) = &state {
        // The orchestrator first: it resigns its leadership in etcd.
        for daemon in state.processes.iter().rev() {
            match stop(daemon) {
                Ok(true) => done.push(format!("stopped {} (pid {})", daemon.name, daemon.pid)),
                Ok(false) => {}
                Err(e) => problems.push(e),
            }
        }
        if let Some(run) = &state.run_id {
            let root = state
                .fleet_root
                .clone()
                .unwrap_or_else(|| fleet_root_of(run));
            runs.insert(run.clone(), root);
        }
    }
    match fleet::runs_owned_by(&owner) {
        Ok(owned) => {
            for run in owned {
                let root = fleet_root_of(&run);
                runs.entry(run).or_insert(root);
            }
        }
        Err(e) => problems.push(e.to_string()),
    }
    for (run, root) in &runs {
        let left = fleet::cleanup_run(run, Some(root));
        if left.is_empty() {
            done.push(format!(
                "removed fleet run {run} (containers, network baton-{run}, {})",
                root.display()
            ));
        }
        problems.extend(left);
    }
    // After the fleet's containers: the orchestrator 2.0.0's container uses its image.
    for image in state.iter().flat_map(|s| &s.images) {
        if docker::run_blocking(&["image", "inspect", image]).is_ok() {
            match docker::run_blocking(&["rmi", image]) {
                Ok(_) => done.push(format!("untagged {image}")),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    match remove_state_dir(state_dir) {
        Ok(true) => done.push(format!("removed {}", state_dir.display())),
        Ok(false) => {}
        Err(e) => problems.push(e),
    }
    if problems.is_empty() {
        Ok(done)
    } else {
        Err(DemoError::Teardown(problems))
    }
}

fn fleet_root_of(run: &str) -> PathBuf {
    std::env::temp_dir().join(format!("baton-fleet-{run}"))
}

/// Prints what runs of the demo in `state_dir`; whether it is complete and healthy.
pub async fn status(state_dir: &Path) -> Result<bool, DemoError> {
    let Some(state) = DemoState::load(state_dir)? else {
        println!(
            "no demo in {} (`make demo` starts one)",
            state_dir.display()
        );
        return Ok(false);
    };
    let mut healthy = true;
    println!(
        "demo in {} (started {})",
        state_dir.display(),
        state.started_at
    );
    let api = state.api_client().map_err(api_error("API URL"))?;
    for daemon in &state.processes {
        let running = is_running(daemon);
        // The demo's orchestrator exits once it has handed over to bundle 2.0.0's.
        let successor = if running || daemon.name != "orchestrator" {
            None
        } else {
            api.get::<Health>("/healthz").await.ok()
        };
        healthy &= running || successor.is_some();
        let how = match (&successor, running) {
            (_, true) => "running".to_owned(),
            (Some(h), false) => format!(
                "exited: handed over to orchestrator {} (replica {}; docker logs {})",
                h.version, h.replica, h.replica
            ),
            (None, false) => "NOT RUNNING".to_owned(),
        };
        println!(
            "  {:<13} pid {:<8} {how}  (log {})",
            daemon.name,
            daemon.pid,
            daemon.log.display()
        );
    }
    if let Some(run) = &state.run_id {
        let filter = format!("label={}={run}", fleet::LABEL_RUN);
        let listing = docker::run(&[
            "ps",
            "--all",
            "--filter",
            &filter,
            "--format",
            "{{.Names}}\t{{.Status}}",
        ])
        .await?;
        println!("  fleet run {run}:");
        for host in &state.hosts {
            let line = listing
                .lines()
                .find(|l| l.split('\t').next() == Some(host.container.as_str()));
            let up = line.is_some_and(|l| l.contains("\tUp"));
            healthy &= up;
            println!(
                "    {:<16} zone {}  {}",
                host.name,
                host.zone,
                line.and_then(|l| l.split('\t').nth(1)).unwrap_or("missing")
            );
        }
    } else {
        healthy = false;
        println!("  no fleet recorded");
    }
    match api.hosts().await {
        Ok(hosts) => {
            println!();
            for line in display::hosts_table(&hosts, false).lines() {
                println!("  {line}");
            }
        }
        Err(e) => {
            healthy = false;
            println!("  API {}: {e}", state.api);
        }
    }
    print_explore(&state);
    Ok(healthy)
}
