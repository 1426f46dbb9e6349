//! What `batonctl` prints: tables of hosts and upgrades, and the progress lines of
//! `upgrade watch` (a line when the upgrade's phase or a host's state changes), as pure
//! functions of what the API returned.

use std::collections::BTreeMap;

use baton_protocol::UpgradePhase;
use baton_protocol::api::{HostInfo, TokenInfo, UpgradeInfo};
use baton_protocol::documents::HostOutcomeState;

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn or_dash(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("-").to_owned()
}

/// `batonctl host ls`; `wide` adds the running kernel, the upgrade the host was last told
/// and its current step.
pub fn hosts_table(hosts: &[HostInfo], wide: bool) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            let label = |k: &str| {
                or_dash(
                    h.spec
                        .as_ref()
                        .and_then(|s| s.labels.get(k))
                        .map(String::as_str),
                )
            };
            let mut row = vec![
                h.id.to_string(),
                label("group"),
                label("zone"),
                or_dash(h.alive.as_ref().map(|a| a.agent_version.as_str())),
                h.status
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |s| s.state.to_string()),
                or_dash(
                    h.installed
                        .as_ref()
                        .and_then(|i| i.bundle_version.as_deref()),
                ),
                format!("{:?}", h.effective_maintenance).to_lowercase(),
                if h.spec.is_some() { "yes" } else { "no" }.to_owned(),
            ];
            if wide {
                row.extend([
                    or_dash(h.installed.as_ref().and_then(|i| i.kernel.as_deref())),
                    or_dash(h.desired.as_ref().map(|d| d.upgrade_id.as_str())),
                    or_dash(h.status.as_ref().map(|s| s.message.as_str())),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec![
        "HOST",
        "GROUP",
        "ZONE",
        "AGENT",
        "STATE",
        "BUNDLE",
        "MAINTENANCE",
        "REGISTERED",
    ];
    if wide {
        header.extend(["KERNEL", "UPGRADE", "STEP"]);
    }
    table(&header, &rows)
}

/// `batonctl token ls`: names, roles and creation times (the API never returns a token).
pub fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| vec![t.name.clone(), t.role.to_string(), t.created_at.clone()])
        .collect();
    table(&["NAME", "ROLE", "CREATED"], &rows)
}

fn succeeded_of(u: &UpgradeInfo) -> String {
    format!(
        "{}/{}",
        u.count(HostOutcomeState::Succeeded),
        u.upgrade.hosts.len()
    )
}

/// `batonctl upgrade ls`; `wide` adds the bundle's digest and the reason it ended or waits.
pub fn upgrades_table(upgrades: &[UpgradeInfo], wide: bool) -> String {
    let rows: Vec<Vec<String>> = upgrades
        .iter()
        .map(|u| {
            let mut row = vec![
                format!("{}{}", u.upgrade.id, if u.active { " *" } else { "" }),
                u.upgrade.version.clone(),
                u.upgrade.phase.to_string(),
                strategy_name(&u.upgrade.strategy).to_owned(),
                succeeded_of(u),
                u.upgrade.created_at.clone(),
            ];
            if wide {
                row.extend([
                    u.upgrade.bundle.clone(),
                    or_dash(u.upgrade.reason.as_deref()),
                ]);
            }
            row
        })
        .collect();
    let mut header = vec![
        "UPGRADE",
        "VERSION",
        "PHASE",
        "STRATEGY",
        "SUCCEEDED",
        "CREATED",
    ];
    if wide {
        header.extend(["BUNDLE", "REASON"]);
    }
    table(&header, &rows)
}

fn strategy_name(s: &baton_protocol::documents::Strategy) -> &'static str {
    use baton_protocol::documents::Strategy;
    match s {
        Strategy::Rolling { .. } => "rolling",
        Strategy::AllAtOnce { .. } => "all-at-once",
        Strategy::DaisyChain => "daisy-chain",
    }
}

/// What `upgrade watch` last printed about each thing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    phase: Option<UpgradePhase>,
    hosts: BTreeMap<String, String>,
    handed_over: bool,
    pacing: Option<String>,
}

/// What holds the upgrade back on purpose, if anything: the soak under way, or a wait for a
/// maintenance window.
pub fn pacing(upgrade: &baton_protocol::documents::Upgrade) -> Option<String> {
    if upgrade.phase.is_terminal() {
        return None;
    }
    if let Some(soak) = &upgrade.soak
        && let Some(batch) = soak.batch
    {
        // While reverting, the soak is of a batch back on the bundle it ran before.
        let done = if upgrade.reverting() {
            "reverted"
        } else {
            "done"
        };
        let gates: Vec<String> = soak.gates.iter().map(ToString::to_string).collect();
        let gates = if gates.is_empty() {
            String::new()
        } else {
            format!("; gates: {}", gates.join("; "))
        };
        return Some(format!(
            "soak: batch {batch} {done}, soaking {} until {} (hosts' health checks{gates})",
            soak.duration,
            soak.until.as_deref().unwrap_or("?")
        ));
    }
    upgrade
        .waiting_for_window
        .as_ref()
        .map(|w| match &w.next_opening {
            Some(t) => format!("waiting for window {t}"),
            None => "waiting for window: none opens within a week".to_owned(),
        })
}

/// The lines to print for what changed since `before`, and what is now printed.
pub fn watch_lines(
    before: &Watched,
    upgrade: &UpgradeInfo,
    hosts: &[HostInfo],
) -> (Vec<String>, Watched) {
    let mut lines = Vec::new();
    let handover = upgrade
        .upgrade
        .orchestrator
        .as_ref()
        .filter(|o| o.handed_over_at.is_some());
    let mut now = Watched {
        phase: Some(upgrade.upgrade.phase),
        hosts: BTreeMap::new(),
        handed_over: handover.is_some(),
        pacing: pacing(&upgrade.upgrade),
    };
    if let Some(o) = handover
        && !before.handed_over
    {
        lines.push(format!(
            "  orchestrator: handed over to {} in container {} ({})",
            upgrade.upgrade.version,
            o.container.as_deref().unwrap_or("?"),
            o.image
        ));
    }
    let by_id: BTreeMap<String, &HostInfo> = hosts.iter().map(|h| (h.id.to_string(), h)).collect();
    // The agents report a revert under the revert's id.
    let works = [upgrade.upgrade.id.clone(), upgrade.upgrade.id.revert()];
    for (id, outcome) in &upgrade.upgrade.hosts {
        let id = id.to_string();
        let mut line = format!("{:<10}", format!("{:?}", outcome.state));
        if let Some(revert) = &outcome.revert {
            line.push_str(&format!(" revert {:?}", revert.state));
            if let Some(previous) = &outcome.previous {
                line.push_str(&format!(" to {}", previous.version));
            }
            if !revert.reason.is_empty() {
                line.push_str(&format!(" ({})", revert.reason));
            }
        }
        if let Some(h) = by_id.get(&id)
            && let Some(s) = &h.status
            && s.upgrade_id.as_ref().is_some_and(|w| works.contains(w))
        {
            line.push_str(&format!(" agent: {}", s.state));
            if let Some(step) = &s.step {
                line.push_str(&format!(" ({step})"));
            }
            if !s.message.is_empty() {
                line.push_str(&format!(": {}", s.message));
            }
            match &s.health {
                Some(h) if h.healthy => line.push_str(" [health checks passing]"),
                Some(h) => line.push_str(&format!(" [unhealthy: {}]", h.message)),
                None => {}
            }
        }
        if !outcome.reason.is_empty() {
            line.push_str(&format!(" — {}", outcome.reason));
        }
        if before.hosts.get(&id) != Some(&line) {
            lines.push(format!("  {id:<20} {line}"));
        }
        now.hosts.insert(id, line);
    }
    if now.pacing != before.pacing
        && let Some(p) = &now.pacing
    {
        lines.push(format!("  {p}"));
    }
    if before.phase != now.phase {
        let mut head = format!(
            "upgrade {} to {}: {} ({} succeeded)",
            upgrade.upgrade.id,
            upgrade.upgrade.version,
            upgrade.upgrade.phase,
            succeeded_of(upgrade)
        );
        if let Some(reason) = &upgrade.upgrade.reason {
            head.push_str(&format!(": {reason}"));
        }
        lines.insert(0, head);
    }
    (lines, now)
}

/// The line `upgrade watch` prints when nothing changed for a while, so a long wait (a
/// kernel reboot, a soak, a slow download) shows it is still following: the phase, hosts
/// per outcome, and for how long nothing changed.
pub fn progress_line(upgrade: &UpgradeInfo, quiet_for: std::time::Duration) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for outcome in upgrade.upgrade.hosts.values() {
        *counts.entry(format!("{:?}", outcome.state)).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "upgrade {}: still {} ({}); no change for {}",
        upgrade.upgrade.id,
        upgrade.upgrade.phase,
        counts.join(", "),
        humantime::format_duration(std::time::Duration::from_secs(quiet_for.as_secs()))
    )
}

#[cfg(test)]
mod tests {
    use baton_protocol::documents::{HostStatus, MaintenanceMode, SCHEMA_VERSION, Upgrade};
    use baton_protocol::{HostId, HostState, UpgradeId};

    use super::*;

    /// Upgrade `u1` to 2.0.0 in `phase`, with host `h1` in `h1`, as the API answers it.
    fn upgrade(phase: UpgradePhase, h1: HostOutcomeState) -> UpgradeInfo {
        let record: Upgrade = serde_json::from_value(serde_json::json!({
            "schema_version": SCHEMA_VERSION, "id": "u1", "bundle": "r@sha256:0",
            "version": "2.0.0", "strategy": {"kind": "rolling", "batch": {"count": 1}},
            "selector": {}, "phase": phase, "hosts": {"h1": {"state": h1, "batch": 0}},
            "created_at": "t", "updated_at": "t",
        }))
        .expect("an upgrade record");
        UpgradeInfo::new(record, true)
    }

    fn host(state: HostState, step: Option<&str>) -> HostInfo {
        HostInfo {
            id: HostId::new("h1").expect("id"),
            spec: None,
            alive: None,
            desired: None,
            status: Some(HostStatus {
                schema_version: SCHEMA_VERSION,
                upgrade_id: Some(UpgradeId::new("u1").expect("id")),
                state,
                step: step.map(str::to_owned),
                message: String::new(),
                started_at: None,
                updated_at: "t".into(),
                health: None,
            }),
            installed: None,
            maintenance: None,
            group_maintenance: None,
            effective_maintenance: MaintenanceMode::None,
        }
    }

    #[test]
    fn watch_prints_only_changes() {
        let u = upgrade(UpgradePhase::Installing, HostOutcomeState::Dispatched);
        let (lines, seen) = watch_lines(
            &Watched::default(),
            &u,
            &[host(HostState::Updating, Some("apply file baton-hello"))],
        );
        assert_eq!(
            lines,
            [
                "upgrade u1 to 2.0.0: Installing (0/1 succeeded)",
                "  h1                   Dispatched agent: Updating (apply file baton-hello)"
            ]
        );
        let (lines, seen) = watch_lines(
            &seen,
            &u,
            &[host(HostState::Updating, Some("apply file baton-hello"))],
        );
        assert!(lines.is_empty(), "{lines:?}");
        let done = upgrade(UpgradePhase::Succeeded, HostOutcomeState::Succeeded);
        let (lines, _) = watch_lines(&seen, &done, &[host(HostState::Done, None)]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("Succeeded (1/1 succeeded)"), "{lines:?}");
    }

    #[test]
    fn watch_shows_a_hosts_revert_and_what_its_agent_reports_for_it() {
        let mut u = upgrade(UpgradePhase::Reverting, HostOutcomeState::Succeeded);
        if let Some(h1) = u.upgrade.hosts.values_mut().next() {
            h1.previous = Some(baton_protocol::documents::PreviousBundle {
                bundle: "r@sha256:1".into(),
                version: "1.0.0".into(),
                upgrade: UpgradeId::new("u0").expect("id"),
            });
            h1.revert = Some(baton_protocol::documents::HostRevert {
                state: baton_protocol::documents::RevertState::Dispatched,
                reason: String::new(),
                dispatched_at: None,
            });
        }
        let mut reverting = host(HostState::Updating, Some("apply file baton-hello"));
        if let Some(s) = reverting.status.as_mut() {
            s.upgrade_id = Some(u.upgrade.id.revert());
        }
        let (lines, _) = watch_lines(&Watched::default(), &u, &[reverting]);
        assert_eq!(
            lines,
            [
                "upgrade u1 to 2.0.0: Reverting (1/1 succeeded)",
                "  h1                   Succeeded  revert Dispatched to 1.0.0 agent: Updating (apply file baton-hello)"
            ]
        );
    }

    #[test]
    fn a_quiet_wait_says_where_the_upgrade_stands() {
        let u = upgrade(UpgradePhase::Installing, HostOutcomeState::Dispatched);
        assert_eq!(
            progress_line(&u, std::time::Duration::from_millis(90_400)),
            "upgrade u1: still Installing (1 Dispatched); no change for 1m 30s"
        );
    }

    #[test]
    fn watch_says_once_when_the_orchestrator_handed_over() {
        let mut u = upgrade(UpgradePhase::Pending, HostOutcomeState::Pending);
        u.upgrade.orchestrator = Some(baton_protocol::documents::OrchestratorUpdate {
            image: "r/orchestrator:2.0.0".into(),
            container: None,
            handed_over_at: None,
        });
        let (_, seen) = watch_lines(&Watched::default(), &u, &[]);
        if let Some(o) = u.upgrade.orchestrator.as_mut() {
            o.container = Some("c2".into());
            o.handed_over_at = Some("t".into());
        }
        let (lines, seen) = watch_lines(&seen, &u, &[]);
        assert_eq!(
            lines,
            ["  orchestrator: handed over to 2.0.0 in container c2 (r/orchestrator:2.0.0)"]
        );
        assert!(watch_lines(&seen, &u, &[]).0.is_empty());
    }

    #[test]
    fn watch_shows_the_soak_and_the_wait_for_a_window() {
        let mut u = upgrade(UpgradePhase::Installing, HostOutcomeState::Dispatched);
        u.upgrade.waiting_for_window = Some(baton_protocol::documents::WindowWait {
            since: "t0".into(),
            next_opening: Some("2026-12-07T22:00:00.000Z".into()),
        });
        let (lines, seen) = watch_lines(&Watched::default(), &u, &[]);
        assert!(
            lines.contains(&"  waiting for window 2026-12-07T22:00:00.000Z".to_owned()),
            "{lines:?}"
        );
        u.upgrade.waiting_for_window = None;
        u.upgrade.soak = Some(baton_protocol::documents::Soak {
            duration: "30s".into(),
            gates: vec![baton_protocol::documents::Gate::Http {
                url: "http://svc/healthz".into(),
                status: 200,
            }],
            batch: Some(0),
            since: Some("t1".into()),
            until: Some("t2".into()),
        });
        let mut healthy = host(HostState::Done, None);
        if let Some(s) = healthy.status.as_mut() {
            s.health = Some(baton_protocol::documents::HostHealth {
                healthy: true,
                message: String::new(),
                since: "t1".into(),
            });
        }
        let (lines, seen) = watch_lines(&seen, &u, &[healthy.clone()]);
        assert_eq!(
            lines,
            [
                "  h1                   Dispatched agent: Done [health checks passing]",
                "  soak: batch 0 done, soaking 30s until t2 (hosts' health checks; gates: http http://svc/healthz answers 200)"
            ]
        );
        assert!(watch_lines(&seen, &u, &[healthy]).0.is_empty());
    }

    #[test]
    fn watch_shows_a_reverts_soak_like_an_installs() {
        let mut u = upgrade(UpgradePhase::Reverting, HostOutcomeState::Succeeded);
        u.upgrade.soak = Some(baton_protocol::documents::Soak {
            duration: "30s".into(),
            gates: Vec::new(),
            batch: Some(1),
            since: Some("t1".into()),
            until: Some("t2".into()),
        });
        let mut back = host(HostState::Done, None);
        if let Some(s) = back.status.as_mut() {
            s.upgrade_id = Some(u.upgrade.id.revert());
            s.health = Some(baton_protocol::documents::HostHealth {
                healthy: false,
                message: "unit baton-echo inactive".into(),
                since: "t1".into(),
            });
        }
        let (lines, _) = watch_lines(&Watched::default(), &u, &[back]);
        assert!(
            lines.contains(
                &"  soak: batch 1 reverted, soaking 30s until t2 (hosts' health checks)".to_owned()
            ),
            "{lines:?}"
        );
        assert!(
            lines.contains(
                &"  h1                   Succeeded  agent: Done [unhealthy: unit baton-echo inactive]"
                    .to_owned()
            ),
            "{lines:?}"
        );
        // Paused while reverting: still the revert's soak. Ended: no soak any more.
        u.upgrade.phase = UpgradePhase::Paused;
        u.upgrade.paused_from = Some(UpgradePhase::Reverting);
        assert!(pacing(&u.upgrade).is_some_and(|p| p.contains("batch 1 reverted")));
        u.upgrade.phase = UpgradePhase::Failed;
        u.upgrade.paused_from = None;
        assert_eq!(pacing(&u.upgrade), None);
    }

    #[test]
    fn tables_align() {
        let t = table(&["A", "BB"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "A     BB\nlong  x");
    }
}
