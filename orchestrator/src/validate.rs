//! Validation of API requests, as pure functions: each refusal is a [`FieldError`] naming
//! the request field at fault (`strategy.batch.count`, `hosts[2]`, `path_map["/x"]`), so the
//! API can answer `{"error": "<field>: <reason>"}` before anything is written.

use std::collections::BTreeMap;

use baton_protocol::api::{RegisterHost, StartUpgrade, StrategyKind, StrategyRequest};
use baton_protocol::documents::{BatchSize, HostSpec, SCHEMA_VERSION, Strategy, Timestamp};
use baton_protocol::manifest::{Manifest, ManifestError, check_absolute_path, check_image_ref};
use baton_protocol::names::check_name;
use baton_protocol::{HostId, UpgradeId};

use crate::docker::Endpoint;

/// A request field was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as a path into the request (`strategy.batch.count`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FieldError {
    /// A refusal of `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    fn from_manifest(e: ManifestError) -> Self {
        Self::new(e.field, e.reason)
    }
}

/// Longest label key or value.
const MAX_LABEL_LEN: usize = 63;

/// A label key: 1..=63 of `[A-Za-z0-9._/-]`, starting with a letter or digit.
pub fn check_label_key(field: &str, key: &str) -> Result<(), FieldError> {
    let ok = !key.is_empty()
        && key.len() <= MAX_LABEL_LEN
        && key.as_bytes()[0].is_ascii_alphanumeric()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._/-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!(
                "label key {key:?} must be 1..=63 of letters, digits, '.', '_', '/', '-', starting with a letter or digit"
            ),
        ))
    }
}

/// Labels (or a selector): valid keys, values that are valid names (a `group` value becomes
/// a key segment).
pub fn check_labels(field: &str, labels: &BTreeMap<String, String>) -> Result<(), FieldError> {
    for (key, value) in labels {
        check_label_key(field, key)?;
        check_name("label value", value)
            .map_err(|e| FieldError::new(format!("{field}.{key}"), e.to_string()))?;
    }
    Ok(())
}

fn optional_absolute(field: &str, path: &Option<String>) -> Result<(), FieldError> {
    match path {
        Some(p) => check_absolute_path(field, p).map_err(FieldError::from_manifest),
        None => Ok(()),
    }
}

/// `POST /v1/hosts` → the spec to store.
pub fn host_spec(req: &RegisterHost, registered_at: Timestamp) -> Result<HostSpec, FieldError> {
    let host = HostId::new(req.id.as_str()).map_err(|e| FieldError::new("id", e.to_string()))?;
    check_labels("labels", &req.labels)?;
    Endpoint::parse(&req.docker).map_err(|e| FieldError::new("docker", e.to_string()))?;
    for (host_path, engine_path) in &req.path_map {
        let field = format!("path_map[{host_path:?}]");
        if host_path != "/" {
            check_absolute_path(&field, host_path).map_err(FieldError::from_manifest)?;
        }
        if engine_path != "/" {
            check_absolute_path(&field, engine_path).map_err(FieldError::from_manifest)?;
        }
    }
    optional_absolute("boot_id_file", &req.boot_id_file)?;
    optional_absolute("kernel_release_file", &req.kernel_release_file)?;
    if let Some(prefix) = &req.container_prefix {
        let ok = prefix.len() <= MAX_LABEL_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(FieldError::new(
                "container_prefix",
                format!("{prefix:?} must be at most 63 of letters, digits, '.', '_', '-'"),
            ));
        }
    }
    Ok(HostSpec {
        schema_version: SCHEMA_VERSION,
        host,
        labels: req.labels.clone(),
        docker: req.docker.clone(),
        path_map: req.path_map.clone(),
        boot_id_file: req.boot_id_file.clone(),
        kernel_release_file: req.kernel_release_file.clone(),
        container_prefix: req.container_prefix.clone(),
        registered_at,
    })
}

/// The image reference: syntax only (resolving it needs the Docker Engine).
pub fn image(image: &str) -> Result<(), FieldError> {
    check_image_ref("image", image).map_err(FieldError::from_manifest)
}

/// An upgrade id given in the request.
pub fn upgrade_id(id: &str) -> Result<UpgradeId, FieldError> {
    UpgradeId::new(id).map_err(|e| FieldError::new("id", e.to_string()))
}

fn non_negative(field: &str, value: Option<i64>) -> Result<u32, FieldError> {
    match value {
        None => Ok(0),
        Some(v) => u32::try_from(v)
            .map_err(|_| FieldError::new(field, format!("must be 0 or more, got {v}"))),
    }
}

/// `strategy` → the protocol's strategy. Fields that belong to another kind are refused, so
/// a typo'd kind is not silently ignored.
pub fn strategy(req: &StrategyRequest) -> Result<Strategy, FieldError> {
    let only = |field: &str, present: bool, kinds: &str| {
        if present {
            Err(FieldError::new(
                format!("strategy.{field}"),
                format!("only {kinds} takes it"),
            ))
        } else {
            Ok(())
        }
    };
    match req.kind {
        StrategyKind::Rolling => {
            only(
                "allow_downtime",
                req.allow_downtime.is_some(),
                "all-at-once",
            )?;
            let batch = req.batch.as_ref().ok_or_else(|| {
                FieldError::new(
                    "strategy.batch",
                    "is required for rolling, e.g. {\"count\": 1} or {\"percent\": 25}",
                )
            })?;
            let batch = match (batch.count, batch.percent) {
                (Some(n), None) => BatchSize::Count(
                    u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                        FieldError::new(
                            "strategy.batch.count",
                            format!("must be at least 1, got {n}"),
                        )
                    })?,
                ),
                (None, Some(p)) => BatchSize::Percent(
                    u32::try_from(p)
                        .ok()
                        .filter(|p| (1..=100).contains(p))
                        .ok_or_else(|| {
                            FieldError::new(
                                "strategy.batch.percent",
                                format!("must be 1..=100, got {p}"),
                            )
                        })?,
                ),
                _ => {
                    return Err(FieldError::new(
                        "strategy.batch",
                        "needs exactly one of count and percent",
                    ));
                }
            };
            if let Some(label) = &req.zone_label {
                check_label_key("strategy.zone_label", label)?;
            }
            Ok(Strategy::Rolling {
                batch,
                canary: non_negative("strategy.canary", req.canary)?,
                pause_after_canary: req.pause_after_canary.unwrap_or(false),
                zone_label: req.zone_label.clone(),
                max_failures: non_negative("strategy.max_failures", req.max_failures)?,
            })
        }
        StrategyKind::AllAtOnce => {
            only("batch", req.batch.is_some(), "rolling")?;
            only("canary", req.canary.is_some(), "rolling")?;
            only(
                "pause_after_canary",
                req.pause_after_canary.is_some(),
                "rolling",
            )?;
            only("zone_label", req.zone_label.is_some(), "rolling")?;
            only("max_failures", req.max_failures.is_some(), "rolling")?;
            if req.allow_downtime != Some(true) {
                return Err(FieldError::new(
                    "strategy.allow_downtime",
                    "must be true: all-at-once takes every selected host down together",
                ));
            }
            Ok(Strategy::AllAtOnce {
                allow_downtime: true,
            })
        }
        StrategyKind::DaisyChain => {
            only("batch", req.batch.is_some(), "rolling")?;
            only("canary", req.canary.is_some(), "rolling")?;
            only(
                "pause_after_canary",
                req.pause_after_canary.is_some(),
                "rolling",
            )?;
            only("zone_label", req.zone_label.is_some(), "rolling")?;
            only("max_failures", req.max_failures.is_some(), "rolling")?;
            only(
                "allow_downtime",
                req.allow_downtime.is_some(),
                "all-at-once",
            )?;
            Ok(Strategy::DaisyChain)
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use baton_protocol::api::BatchRequest;

    fn rolling() -> StrategyRequest {
        StrategyRequest {
            kind: StrategyKind::Rolling,
            batch: Some(BatchRequest {
                count: Some(1),
                percent: None,
            }),
            canary: None,
            pause_after_canary: None,
            zone_label: None,
            max_failures: None,
            allow_downtime: None,
        }
    }

    fn bare(kind: StrategyKind) -> StrategyRequest {
        StrategyRequest {
            kind,
            batch: None,
            ..rolling()
        }
    }

    #[test]
    fn strategies_are_refused_naming_the_field() {
        type Edit = fn(&mut StrategyRequest);
        let cases: &[(&str, Edit, &str, &str)] = &[
            (
                "negative batch",
                |s| {
                    s.batch = Some(BatchRequest {
                        count: Some(-1),
                        percent: None,
                    })
                },
                "strategy.batch.count",
                "at least 1, got -1",
            ),
            (
                "zero batch",
                |s| {
                    s.batch = Some(BatchRequest {
                        count: Some(0),
                        percent: None,
                    })
                },
                "strategy.batch.count",
                "got 0",
            ),
            (
                "percent over 100",
                |s| {
                    s.batch = Some(BatchRequest {
                        count: None,
                        percent: Some(101),
                    })
                },
                "strategy.batch.percent",
                "1..=100",
            ),
            (
                "both count and percent",
                |s| {
                    s.batch = Some(BatchRequest {
                        count: Some(1),
                        percent: Some(5),
                    })
                },
                "strategy.batch",
                "exactly one",
            ),
            ("no batch", |s| s.batch = None, "strategy.batch", "required"),
            (
                "negative canary",
                |s| s.canary = Some(-2),
                "strategy.canary",
                "got -2",
            ),
            (
                "negative max_failures",
                |s| s.max_failures = Some(-1),
                "strategy.max_failures",
                "got -1",
            ),
            (
                "bad zone label",
                |s| s.zone_label = Some("a b".into()),
                "strategy.zone_label",
                "label key",
            ),
            (
                "allow_downtime on rolling",
                |s| s.allow_downtime = Some(true),
                "strategy.allow_downtime",
                "only all-at-once",
            ),
        ];
        for (name, edit, field, reason) in cases {
            let mut s = rolling();
            edit(&mut s);
            let err = strategy(&s).expect_err(name);
            assert_eq!(err.field, *field, "{name}: {err}");
            assert!(err.reason.contains(reason), "{name}: {err}");
        }
    }

    #[test]
    fn all_at_once_needs_allow_downtime_and_nothing_else() {
        let mut s = bare(StrategyKind::AllAtOnce);
        let err = strategy(&s).expect_err("no allow_downtime");
        assert_eq!(err.field, "strategy.allow_downtime");
        s.allow_downtime = Some(false);
        assert_eq!(
            strategy(&s).expect_err("false").field,
            "strategy.allow_downtime"
        );
        s.allow_downtime = Some(true);
        assert_eq!(
            strategy(&s).expect("true"),
            Strategy::AllAtOnce {
                allow_downtime: true
            }
        );
        s.canary = Some(1);
        assert_eq!(strategy(&s).expect_err("canary").field, "strategy.canary");
    }

    #[test]
    fn valid_strategies_convert() {
        let mut s = rolling();
        s.batch = Some(BatchRequest {
            count: None,
            percent: Some(25),
        });
        s.canary = Some(1);
        s.pause_after_canary = Some(true);
        s.zone_label = Some("zone".into());
        s.max_failures = Some(2);
        assert_eq!(
            strategy(&s).expect("rolling"),
            Strategy::Rolling {
                batch: BatchSize::Percent(25),
                canary: 1,
                pause_after_canary: true,
                zone_label: Some("zone".into()),
                max_failures: 2
            }
        );
        assert_eq!(
            strategy(&bare(StrategyKind::DaisyChain)).expect("daisy"),
            Strategy::DaisyChain
        );
        let mut d = bare(StrategyKind::DaisyChain);
        d.allow_downtime = Some(true);
        assert_eq!(
            strategy(&d).expect_err("daisy").field,
            "strategy.allow_downtime"
        );
    }

    fn register() -> RegisterHost {
        RegisterHost {
            id: "host-1".into(),
            labels: [("group".into(), "edge".into()), ("zone".into(), "a".into())].into(),
            docker: "unix:///var/run/docker.sock".into(),
            path_map: [("/var/lib/baton".into(), "/srv/h1/var/lib/baton".into())].into(),
            boot_id_file: Some("/run/baton/boot-id".into()),
            kernel_release_file: None,
            container_prefix: Some("host-1-".into()),
        }
    }

    #[test]
    fn host_registrations_are_refused_naming_the_field() {
        type Edit = fn(&mut RegisterHost);
        let cases: &[(&str, Edit, &str)] = &[
            ("bad id", |r| r.id = "a/b".into(), "id"),
            ("empty id", |r| r.id = String::new(), "id"),
            ("http docker", |r| r.docker = "http://x:1".into(), "docker"),
            (
                "bad label key",
                |r| {
                    r.labels.insert("bad key".into(), "x".into());
                },
                "labels",
            ),
            (
                "bad label value",
                |r| {
                    r.labels.insert("zone".into(), "a/b".into());
                },
                "labels.zone",
            ),
            (
                "relative path map",
                |r| {
                    r.path_map.insert("etc/baton".into(), "/x".into());
                },
                "path_map[\"etc/baton\"]",
            ),
            (
                "escaping path map",
                |r| {
                    r.path_map.insert("/etc/baton".into(), "/srv/../etc".into());
                },
                "path_map[\"/etc/baton\"]",
            ),
            (
                "relative boot id file",
                |r| r.boot_id_file = Some("run/x".into()),
                "boot_id_file",
            ),
            (
                "container prefix with slash",
                |r| r.container_prefix = Some("a/".into()),
                "container_prefix",
            ),
        ];
        for (name, edit, field) in cases {
            let mut r = register();
            edit(&mut r);
            let err = host_spec(&r, "t".into()).expect_err(name);
            assert_eq!(err.field, *field, "{name}: {err}");
        }
        let spec = host_spec(&register(), "t".into()).expect("valid");
        assert_eq!(spec.host.as_str(), "host-1");
        assert_eq!(spec.container_prefix.as_deref(), Some("host-1-"));
    }

    fn specs() -> BTreeMap<HostId, HostSpec> {
        let mut out = BTreeMap::new();
        for (id, zone) in [("h1", "a"), ("h2", "a"), ("h3", "b")] {
            let mut r = register();
            r.id = id.into();
            r.labels.insert("zone".into(), zone.into());
            let spec = host_spec(&r, "t".into()).expect("spec");
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
}
