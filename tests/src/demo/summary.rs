//! What the demo prints at the end: every host's versions before and after (from etcd's
//! `installed` keys), the time taken, and how to explore and stop the fleet.

use std::time::Duration;

use baton_protocol::documents::Installed;
use baton_protocol::etcd;
use baton_protocol::{HostId, HostKey, Keyspace};
use batonctl::display;

use super::commands::{shell_line, shown};
use super::state::{DemoHost, DemoState};
use super::{COMPONENTS, DemoError, DemoReport, UPGRADE_V2, batonctl_args, down_command};

/// What one host ran, from its `installed` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostVersions {
    pub host: String,
    pub zone: String,
    pub installed: Option<Installed>,
}

/// Every host's `installed` document.
pub async fn read_versions(
    client: &etcd::Client,
    keyspace: &Keyspace,
    hosts: &[DemoHost],
) -> Result<Vec<HostVersions>, DemoError> {
    let mut out = Vec::new();
    for host in hosts {
        let id = HostId::new(&host.name)
            .map_err(|e| DemoError::Setup(format!("host id {}: {e}", host.name)))?;
        let key = keyspace.host(&id, HostKey::Installed);
        let installed = etcd::read::<Installed>(client, &key).await?;
        out.push(HostVersions {
            host: host.name.clone(),
            zone: host.zone.clone(),
            installed: installed.map(|v| v.value),
        });
    }
    Ok(out)
}

fn change(before: Option<&str>, after: Option<&str>) -> String {
    let before = before.unwrap_or("-");
    let after = after.unwrap_or("-");
    if before == after {
        after.to_owned()
    } else {
        format!("{before} → {after}")
    }
}

/// The per-host table of versions before and after the rolling upgrade.
pub fn versions_table(before: &[HostVersions], after: &[HostVersions]) -> String {
    let mut header = vec!["HOST", "ZONE", "KERNEL"];
    header.extend(COMPONENTS.iter().map(|(kind, _)| *kind));
    header.push("AGENT");
    let mut names = vec![String::new(), String::new(), String::new()];
    names.extend(COMPONENTS.iter().map(|(_, name)| (*name).to_owned()));
    names.push("baton-agent".to_owned());
    let mut rows = vec![names];
    for a in after {
        let b = before
            .iter()
            .find(|b| b.host == a.host)
            .and_then(|b| b.installed.as_ref());
        let a_inst = a.installed.as_ref();
        let mut row = vec![
            a.host.clone(),
            a.zone.clone(),
            change(
                b.and_then(|i| i.kernel.as_deref()),
                a_inst.and_then(|i| i.kernel.as_deref()),
            ),
        ];
        for (_, component) in COMPONENTS {
            row.push(change(
                b.and_then(|i| i.components.get(component).map(String::as_str)),
                a_inst.and_then(|i| i.components.get(component).map(String::as_str)),
            ));
        }
        row.push(change(
            b.map(|i| i.agent_version.as_str()),
            a_inst.map(|i| i.agent_version.as_str()),
        ));
        rows.push(row);
    }
    display::table(&header, &rows)
}

fn minutes(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// `etcdctl` as the demo's read-only user: the environment file sets the endpoint, the TLS
/// files and the user (`set -a; . FILE; set +a` once per shell).
fn etcdctl(_state: &DemoState) -> String {
    "etcdctl".to_owned()
}

/// The line that loads the read-only `etcdctl` environment.
fn etcdctl_env_line(state: &DemoState) -> String {
    format!(
        "set -a; . {}; set +a",
        state
            .state_dir
            .join(super::etcd_security::ETCDCTL_ENV)
            .display()
    )
}

fn batonctl_line(state: &DemoState) -> String {
    let mut line = vec![shown(&state.batonctl)];
    line.extend(batonctl_args(state));
    shell_line(&line)
}

pub(super) fn print_summary(report: &DemoReport) {
    let state = &report.state;
    println!(
        "\nUpgrade {} to {}: {} — every host ran, before and after (from etcd `installed`):\n",
        report.upgrade.upgrade.id, report.upgrade.upgrade.version, report.upgrade.upgrade.phase
    );
    for line in versions_table(&report.before, &report.after).lines() {
        println!("  {line}");
    }
    let (o1, o2) = (&report.orchestrator_before, &report.orchestrator_after);
    if o1.version != o2.version {
        println!(
            "\nThe orchestrator upgraded itself first: {} (replica {}) → {} (replica {}, a container: \
             docker logs {}).",
            o1.version, o1.replica, o2.version, o2.replica, o2.replica
        );
    }
    println!(
        "\n1.0.0 on the empty hosts (all at once): {}; rolling to 2.0.0 (canary, then zone by zone): {}; whole demo: {}.",
        minutes(report.install_took),
        minutes(report.upgrade_took),
        minutes(report.total)
    );
    let first = state.hosts.first().map_or("host-1", |h| h.name.as_str());
    println!(
        "Raw state: {}; {} get --prefix /baton/hosts/{first}/",
        etcdctl_env_line(state),
        etcdctl(state)
    );
    print_explore(state);
}

/// How to look around a running demo and how to stop it.
pub fn print_explore(state: &DemoState) {
    let first = state.hosts.first();
    let host = first.map_or("host-1", |h| h.name.as_str());
    let container = first.map_or("<container>", |h| h.container.as_str());
    let batonctl = batonctl_line(state);
    let etcdctl = etcdctl(state);
    println!(
        "\nThe fleet keeps running (state: {}). The API's admin token: {token}. Explore it:\n\
         \n  {api}/ in a browser: the fleet page (trust {ca}, sign in with the token)\
         \n  {curl} {api}/v1/hosts/{host}\
         \n  {curl} {api}/v1/upgrades/{UPGRADE_V2}\
         \n  {curl} {api}/metrics | grep ^baton_\
         \n  {batonctl} host ls\
         \n  {batonctl} upgrade ls\
         \n  {batonctl} upgrade show {UPGRADE_V2} --events\
         \n  {etcdctl_env}    # a read-only etcdctl (etcd runs with TLS and authentication)\
         \n  {etcdctl} get --prefix /baton/hosts/{host}/\
         \n  {etcdctl} get /baton/upgrades/{UPGRADE_V2} --print-value-only\
         \n  {etcdctl} watch --prefix /baton/\
         \n  docker exec {container} systemctl status baton-agent baton-echo\
         \n  docker exec {container} /usr/local/bin/baton-hello\
         \n\nLogs: {dir}/{{etcd,registry,orchestrator}}.log. Stop and remove everything: {down}",
        state.path().display(),
        api = state.api,
        curl = super::curl_prefix(state),
        token = state.token_file().display(),
        ca = state.api_pki().ca.display(),
        etcdctl_env = etcdctl_env_line(state),
        dir = state.state_dir.display(),
        down = down_command(&state.state_dir),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_changes_and_missing_documents() {
        let installed = |v: &str, k: &str| Installed {
            schema_version: 1,
            bundle_version: Some(v.into()),
            agent_version: v.into(),
            kernel: Some(k.into()),
            components: COMPONENTS
                .iter()
                .map(|(_, c)| ((*c).to_owned(), v.to_owned()))
                .collect(),
            updated_at: "t".into(),
        };
        let row = |host: &str, i: Option<Installed>| HostVersions {
            host: host.into(),
            zone: "a".into(),
            installed: i,
        };
        let table = versions_table(
            &[
                row("host-1", Some(installed("1.0.0", "6.1.0-baton1"))),
                row("host-2", None),
            ],
            &[
                row("host-1", Some(installed("2.0.0", "6.1.0-baton2"))),
                row("host-2", Some(installed("2.0.0", "6.1.0-baton2"))),
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("HOST"), "{table}");
        assert!(lines[1].contains("baton-echo"), "{table}");
        assert!(
            lines[2].contains("6.1.0-baton1 → 6.1.0-baton2") && lines[2].contains("1.0.0 → 2.0.0"),
            "{table}"
        );
        assert!(lines[3].contains("- → 2.0.0"), "{table}");
    }
}
