//! The request to start an upgrade (`POST /v1/upgrades`): its image and id, the hosts it
//! selects, and whether the bundle fits the strategy. The strategy itself is checked in
//! `strategy`.

use std::collections::BTreeMap;

use baton_protocol::api::StartUpgrade;
use baton_protocol::documents::{HostSpec, Strategy};
use baton_protocol::manifest::{Manifest, check_image_ref};
use baton_protocol::{HostId, UpgradeId};

use super::FieldError;
use super::fields::check_labels;

/// The image reference: syntax only (resolving it needs the Docker Engine).
pub fn image(image: &str) -> Result<(), FieldError> {
    check_image_ref("image", image).map_err(FieldError::from_manifest)
}

/// An upgrade id given in the request.
pub fn upgrade_id(id: &str) -> Result<UpgradeId, FieldError> {
    UpgradeId::new(id).map_err(|e| FieldError::new("id", e.to_string()))
}

/// The hosts an upgrade targets: registered hosts carrying every selector label, and, if
/// the request lists hosts, only those (each must be registered and match).
pub fn select(
    req: &StartUpgrade,
    specs: &BTreeMap<HostId, HostSpec>,
) -> Result<Vec<HostId>, FieldError> {
    check_labels("selector", &req.selector)?;
    let matches = |spec: &HostSpec| {
        req.selector
            .iter()
            .all(|(k, v)| spec.labels.get(k) == Some(v))
    };
    if let Some(hosts) = &req.hosts {
        if hosts.is_empty() {
            return Err(FieldError::new(
                "hosts",
                "is empty; leave it out to select by labels",
            ));
        }
        let mut selected = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let field = format!("hosts[{i}]");
            let id = HostId::new(h.as_str()).map_err(|e| FieldError::new(&field, e.to_string()))?;
            let spec = specs
                .get(&id)
                .ok_or_else(|| FieldError::new(&field, format!("host {id} is not registered")))?;
            if !matches(spec) {
                return Err(FieldError::new(
                    &field,
                    format!("host {id} does not match the selector"),
                ));
            }
            if selected.contains(&id) {
                return Err(FieldError::new(
                    &field,
                    format!("host {id} is listed twice"),
                ));
            }
            selected.push(id);
        }
        selected.sort();
        return Ok(selected);
    }
    let selected: Vec<HostId> = specs
        .values()
        .filter(|s| matches(s))
        .map(|s| s.host.clone())
        .collect();
    if selected.is_empty() {
        let reason = if specs.is_empty() {
            "no host is registered (POST /v1/hosts first)".to_owned()
        } else if req.selector.is_empty() {
            "matches no registered host".to_owned()
        } else {
            let wanted: Vec<String> = req
                .selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            format!(
                "{} matches no registered host; known labels: {}",
                wanted.join(","),
                known_labels(specs)
            )
        };
        return Err(FieldError::new("selector", reason));
    }
    Ok(selected)
}

fn known_labels(specs: &BTreeMap<HostId, HostSpec>) -> String {
    let mut all: Vec<String> = specs
        .values()
        .flat_map(|s| s.labels.iter().map(|(k, v)| format!("{k}={v}")))
        .collect();
    all.sort();
    all.dedup();
    if all.is_empty() {
        "none".to_owned()
    } else {
        all.join(", ")
    }
}

/// Whether the bundle may be installed with the strategy: a bundle that is not backward
/// compatible must not leave old and new hosts side by side, so only all-at-once takes it.
pub fn bundle_fits(strategy: &Strategy, manifest: &Manifest) -> Result<(), FieldError> {
    if manifest.backward_compatible || matches!(strategy, Strategy::AllAtOnce { .. }) {
        return Ok(());
    }
    let kind = match strategy {
        Strategy::Rolling { .. } => "rolling",
        Strategy::DaisyChain => "daisy-chain",
        Strategy::AllAtOnce { .. } => "all-at-once",
    };
    Err(FieldError::new(
        "strategy.kind",
        format!(
            "bundle {} is not backward compatible (manifest backward_compatible: false): {kind} would run old and new hosts side by side; use all-at-once with allow_downtime: true",
            manifest.version
        ),
    ))
}

/// A downgrade is deliberate: a bundle of a lower version than a selected host runs
/// (`running`: host → installed bundle version) is refused naming the host and both
/// versions, unless the request says `allow_downgrade: true`.
pub fn no_downgrade(
    allow_downgrade: bool,
    version: &str,
    running: &BTreeMap<HostId, String>,
) -> Result<(), FieldError> {
    if allow_downgrade {
        return Ok(());
    }
    match running
        .iter()
        .find(|(_, current)| baton_protocol::version::is_downgrade(current, version))
    {
        Some((host, current)) => Err(FieldError::new(
            "allow_downgrade",
            format!(
                "host {host} runs {current}; bundle {version} would downgrade it: say \"allow_downgrade\": true to mean it"
            ),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::{policy, register, rolling};
    use crate::validate::host_spec;

    fn specs() -> BTreeMap<HostId, HostSpec> {
        let mut out = BTreeMap::new();
        for (id, zone) in [("h1", "a"), ("h2", "a"), ("h3", "b")] {
            let mut r = register();
            r.id = id.into();
            r.labels.insert("zone".into(), zone.into());
            let spec = host_spec(&r, &policy(), "t".into()).expect("spec");
            out.insert(spec.host.clone(), spec);
        }
        out
    }

    fn start(selector: &[(&str, &str)], hosts: Option<&[&str]>) -> StartUpgrade {
        StartUpgrade {
            image: "127.0.0.1:5000/baton/bundle:2.0.0".into(),
            strategy: rolling(),
            selector: selector
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            hosts: hosts.map(|h| h.iter().map(|s| (*s).to_owned()).collect()),
            id: None,
            skip_paused: None,
            allow_downgrade: None,
            on_failure: None,
            soak: None,
            gates: None,
        }
    }

    #[test]
    fn selection_by_labels_and_ids() {
        let ids = |v: Vec<HostId>| v.into_iter().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            ids(select(&start(&[], None), &specs()).expect("all")),
            ["h1", "h2", "h3"]
        );
        assert_eq!(
            ids(select(&start(&[("zone", "a")], None), &specs()).expect("zone a")),
            ["h1", "h2"]
        );
        assert_eq!(
            ids(select(&start(&[], Some(&["h3", "h1"])), &specs()).expect("listed")),
            ["h1", "h3"]
        );
    }

    #[test]
    fn selection_refusals_name_the_field() {
        let cases: &[(StartUpgrade, &str, &str)] = &[
            (
                start(&[("zone", "c")], None),
                "selector",
                "zone=c matches no registered host",
            ),
            (start(&[("rack", "r1")], None), "selector", "known labels"),
            (
                start(&[], Some(&["h1", "nope"])),
                "hosts[1]",
                "not registered",
            ),
            (
                start(&[("zone", "b")], Some(&["h1"])),
                "hosts[0]",
                "does not match",
            ),
            (start(&[], Some(&["h1", "h1"])), "hosts[1]", "twice"),
            (start(&[], Some(&[])), "hosts", "empty"),
        ];
        for (req, field, reason) in cases {
            let err = select(req, &specs()).expect_err(field);
            assert_eq!(err.field, *field, "{err}");
            assert!(err.reason.contains(reason), "{err}");
        }
        let err = select(&start(&[], None), &BTreeMap::new()).expect_err("none");
        assert!(err.reason.contains("no host is registered"), "{err}");
    }

    #[test]
    fn images_are_checked_naming_the_field() {
        assert!(image("127.0.0.1:5000/baton/bundle:2.0.0").is_ok());
        let err = image("127.0.0.1:5000/Baton/Bundle:2.0.0").expect_err("uppercase");
        assert_eq!(err.field, "image");
        let err = image("").expect_err("empty");
        assert_eq!(err.field, "image");
    }

    fn running(hosts: &[(&str, &str)]) -> BTreeMap<HostId, String> {
        hosts
            .iter()
            .map(|(h, v)| (HostId::new(*h).expect("id"), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_downgrade_is_refused_naming_the_host_and_both_versions_unless_allowed() {
        let fleet = running(&[("h1", "1.0.0"), ("h2", "2.0.0")]);
        let err = no_downgrade(false, "1.5.0", &fleet).expect_err("h2 runs 2.0.0");
        assert_eq!(err.field, "allow_downgrade");
        for want in ["h2", "2.0.0", "1.5.0"] {
            assert!(err.reason.contains(want), "{want:?} not in {err}");
        }
        assert!(no_downgrade(true, "1.5.0", &fleet).is_ok());
        assert!(no_downgrade(false, "2.0.0", &fleet).is_ok());
        assert!(no_downgrade(false, "2.0.1-rc.1", &fleet).is_ok());
        let err = no_downgrade(false, "2.0.0-rc.1", &fleet).expect_err("pre-release");
        assert!(err.reason.contains("h2"), "{err}");
    }
}
