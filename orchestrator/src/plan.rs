//! The install plan of an upgrade: the batch each selected host belongs to. Computed once,
//! when the upgrade is created, and stored in the upgrade record (`hosts.<id>.batch`), so
//! every leader follows the same plan even if labels change meanwhile.
//!
//! - rolling: canaries first (batch 0, all from the first zone when `zone_label` is set),
//!   then the other hosts in batches of `batch`; with `zone_label`, hosts are taken zone by
//!   zone and a batch never spans two zones. A batch never holds every selected host (the
//!   cluster is never all down at once) unless only one host is selected.
//! - all-at-once: one batch.
//! - daisy-chain: one host per batch, in host id order (the chain's order).
//!
//! A bundle with a member of a quorum cluster (etcd) goes to one host per batch whatever
//! the strategy ([`one_at_a_time`]): two members down at once could lose the quorum.

use std::collections::BTreeMap;

use baton_protocol::HostId;
use baton_protocol::documents::{BatchSize, Strategy};

use crate::validate::FieldError;

/// Host → batch number (0 first).
pub type Plan = BTreeMap<HostId, u32>;

/// Plans the batches of `hosts` (each with its labels) under `strategy`.
pub fn batches(
    strategy: &Strategy,
    hosts: &BTreeMap<HostId, BTreeMap<String, String>>,
) -> Result<Plan, FieldError> {
    match strategy {
        Strategy::AllAtOnce { .. } => Ok(hosts.keys().map(|h| (h.clone(), 0)).collect()),
        Strategy::DaisyChain => Ok(hosts
            .keys()
            .enumerate()
            .map(|(i, h)| (h.clone(), u32::try_from(i).unwrap_or(u32::MAX)))
            .collect()),
        Strategy::Rolling {
            batch,
            canary,
            zone_label,
            ..
        } => rolling(*batch, *canary as usize, zone_label.as_deref(), hosts),
    }
}

/// `plan` with every host in a batch of its own, in the order the plan takes them (batch,
/// then host id): for bundles that carry a quorum cluster's member. A rolling plan's
/// canaries stay first, so a pause after the canary comes after the first host.
pub fn one_at_a_time(plan: Plan) -> Plan {
    let mut order: Vec<(u32, HostId)> = plan.into_iter().map(|(h, b)| (b, h)).collect();
    order.sort();
    order
        .into_iter()
        .enumerate()
        .map(|(i, (_, h))| (h, u32::try_from(i).unwrap_or(u32::MAX)))
        .collect()
}

fn rolling(
    batch: BatchSize,
    canary: usize,
    zone_label: Option<&str>,
    hosts: &BTreeMap<HostId, BTreeMap<String, String>>,
) -> Result<Plan, FieldError> {
    let total = hosts.len();
    let size = batch.hosts(total);
    if total > 1 && size >= total {
        let field = match batch {
            BatchSize::Count(_) => "strategy.batch.count",
            BatchSize::Percent(_) => "strategy.batch.percent",
        };
        return Err(FieldError::new(
            field,
            format!(
                "a batch of {size} takes all {total} selected hosts down at once; use a smaller batch, or all-at-once with allow_downtime"
            ),
        ));
    }
    if total > 1 && canary >= total {
        return Err(FieldError::new(
            "strategy.canary",
            format!("{canary} canaries of {total} selected hosts would take them all down at once"),
        ));
    }
    // Zone → hosts, zones and hosts in a stable order.
    let mut zones: BTreeMap<&str, Vec<&HostId>> = BTreeMap::new();
    for (host, labels) in hosts {
        let zone = match zone_label {
            Some(label) => labels.get(label).map(String::as_str).ok_or_else(|| {
                FieldError::new(
                    "strategy.zone_label",
                    format!("selected host {host} has no label {label:?}"),
                )
            })?,
            None => "",
        };
        zones.entry(zone).or_default().push(host);
    }
    let mut plan = Plan::new();
    let mut next: u32 = 0;
    let mut zones: Vec<Vec<&HostId>> = zones.into_values().collect();
    if canary > 0 {
        let first = zones.first_mut().map(std::mem::take).unwrap_or_default();
        if first.len() < canary {
            return Err(FieldError::new(
                "strategy.canary",
                format!(
                    "{canary} canaries do not fit in the first zone ({} hosts); a batch never spans two zones",
                    first.len()
                ),
            ));
        }
        let (canaries, rest) = first.split_at(canary);
        for h in canaries {
            plan.insert((*h).clone(), 0);
        }
        next = 1;
        if let Some(z) = zones.first_mut() {
            *z = rest.to_vec();
        }
    }
    for zone in zones {
        for chunk in zone.chunks(size) {
            for h in chunk {
                plan.insert((*h).clone(), next);
            }
            next += 1;
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(hosts: &[(&str, &str)]) -> BTreeMap<HostId, BTreeMap<String, String>> {
        hosts
            .iter()
            .map(|(h, zone)| {
                (
                    HostId::new(*h).expect("id"),
                    [("zone".to_owned(), (*zone).to_owned())].into(),
                )
            })
            .collect()
    }

    fn rolling(batch: BatchSize, canary: u32, zone: bool) -> Strategy {
        Strategy::Rolling {
            batch,
            canary,
            pause_after_canary: false,
            zone_label: zone.then(|| "zone".to_owned()),
            max_failures: 0,
        }
    }

    fn groups(plan: &Plan) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        for (h, b) in plan {
            let b = *b as usize;
            if out.len() <= b {
                out.resize(b + 1, Vec::new());
            }
            out[b].push(h.to_string());
        }
        out
    }

    #[test]
    fn plans_table() {
        let four = fleet(&[("h1", "a"), ("h2", "b"), ("h3", "a"), ("h4", "b")]);
        let five = fleet(&[
            ("h1", "a"),
            ("h2", "a"),
            ("h3", "a"),
            ("h4", "b"),
            ("h5", "b"),
        ]);
        let cases: Vec<(&str, Strategy, &BTreeMap<_, _>, Vec<Vec<&str>>)> = vec![
            (
                "batches of one",
                rolling(BatchSize::Count(1), 0, false),
                &four,
                vec![vec!["h1"], vec!["h2"], vec!["h3"], vec!["h4"]],
            ),
            (
                "batches of two",
                rolling(BatchSize::Count(2), 0, false),
                &four,
                vec![vec!["h1", "h2"], vec!["h3", "h4"]],
            ),
            (
                "percent rounds up",
                rolling(BatchSize::Percent(30), 0, false),
                &four,
                vec![vec!["h1", "h2"], vec!["h3", "h4"]],
            ),
            (
                "canary first",
                rolling(BatchSize::Count(2), 1, false),
                &four,
                vec![vec!["h1"], vec!["h2", "h3"], vec!["h4"]],
            ),
            (
                "zones never share a batch",
                rolling(BatchSize::Count(2), 0, true),
                &five,
                vec![vec!["h1", "h2"], vec!["h3"], vec!["h4", "h5"]],
            ),
            (
                "zone canary from the first zone",
                rolling(BatchSize::Count(2), 1, true),
                &five,
                vec![vec!["h1"], vec!["h2", "h3"], vec!["h4", "h5"]],
            ),
            (
                "all at once",
                Strategy::AllAtOnce {
                    allow_downtime: true,
                },
                &four,
                vec![vec!["h1", "h2", "h3", "h4"]],
            ),
            (
                "daisy chain in id order",
                Strategy::DaisyChain,
                &four,
                vec![vec!["h1"], vec!["h2"], vec!["h3"], vec!["h4"]],
            ),
        ];
        for (name, strategy, hosts, want) in cases {
            let plan = batches(&strategy, hosts).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(groups(&plan), want, "{name}");
            assert_eq!(plan.len(), hosts.len(), "{name}: every host planned");
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let four = fleet(&[("h1", "a"), ("h2", "b"), ("h3", "a"), ("h4", "b")]);
        let cases = [
            (
                rolling(BatchSize::Count(4), 0, false),
                "strategy.batch.count",
            ),
            (
                rolling(BatchSize::Percent(100), 0, false),
                "strategy.batch.percent",
            ),
            (rolling(BatchSize::Count(1), 4, false), "strategy.canary"),
            (rolling(BatchSize::Count(1), 3, true), "strategy.canary"),
        ];
        for (strategy, field) in cases {
            let err = batches(&strategy, &four).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        let mut unlabelled = four.clone();
        if let Some(labels) = unlabelled.values_mut().next() {
            labels.clear();
        }
        let err = batches(&rolling(BatchSize::Count(1), 0, true), &unlabelled).expect_err("zone");
        assert_eq!(err.field, "strategy.zone_label");
        assert!(err.reason.contains("h1"), "{err}");
        // A single host may be upgraded with any batch.
        let one = fleet(&[("h1", "a")]);
        assert!(batches(&rolling(BatchSize::Count(3), 0, false), &one).is_ok());
    }

    #[test]
    fn a_quorum_bundle_takes_one_host_at_a_time_in_the_plans_order() {
        let hosts = fleet(&[("a", "z1"), ("b", "z2"), ("c", "z1"), ("d", "z2")]);
        let plan = batches(&rolling(BatchSize::Count(2), 1, true), &hosts).expect("plan");
        assert_eq!(groups(&plan), [vec!["a"], vec!["c"], vec!["b", "d"]]);
        let single = one_at_a_time(plan);
        assert_eq!(
            groups(&single),
            [vec!["a"], vec!["c"], vec!["b"], vec!["d"]]
        );
        let all = batches(
            &Strategy::AllAtOnce {
                allow_downtime: true,
            },
            &hosts,
        )
        .expect("plan");
        assert_eq!(groups(&one_at_a_time(all)).len(), 4);
    }
}
