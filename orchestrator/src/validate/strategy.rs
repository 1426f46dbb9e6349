//! An upgrade request's `strategy`, checked and turned into the protocol's strategy — or,
//! for `auto`, into the choice the bundle's manifest decides once it is known.

use baton_protocol::api::{StrategyKind, StrategyRequest};
use baton_protocol::documents::{BatchSize, Strategy};
use baton_protocol::manifest::Manifest;

use super::FieldError;
use super::fields::check_label_key;

fn non_negative(field: &str, value: Option<i64>) -> Result<u32, FieldError> {
    match value {
        None => Ok(0),
        Some(v) => u32::try_from(v)
            .map_err(|_| FieldError::new(field, format!("must be 0 or more, got {v}"))),
    }
}

/// A field set that only `kinds` takes is refused, naming it.
fn only(field: &str, present: bool, kinds: &str) -> Result<(), FieldError> {
    if present {
        Err(FieldError::new(
            format!("strategy.{field}"),
            format!("only {kinds} takes it"),
        ))
    } else {
        Ok(())
    }
}

/// The fields only rolling takes, refused (the first one set) for the other kinds.
fn no_rolling_fields(req: &StrategyRequest) -> Result<(), FieldError> {
    let rolling_fields = [
        ("batch", req.batch.is_some()),
        ("canary", req.canary.is_some()),
        ("pause_after_canary", req.pause_after_canary.is_some()),
        ("zone_label", req.zone_label.is_some()),
        ("max_failures", req.max_failures.is_some()),
    ];
    for (field, present) in rolling_fields {
        only(field, present, "rolling")?;
    }
    Ok(())
}

/// A request's strategy, checked: fixed by the request, or chosen from the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// `rolling`, `all-at-once` or `daisy-chain`.
    Fixed(Strategy),
    /// `auto`: `rolling` for a backward-compatible bundle, all-at-once for one that is not
    /// (only when `allow_downtime` says so).
    Auto {
        /// The rolling strategy the request's settings make.
        rolling: Strategy,
        /// The request said `allow_downtime: true`.
        allow_downtime: bool,
    },
}

impl Requested {
    /// The strategy to check the request against before the bundle is read (for `auto`, its
    /// rolling settings).
    pub fn candidate(&self) -> &Strategy {
        match self {
            Requested::Fixed(s) | Requested::Auto { rolling: s, .. } => s,
        }
    }

    /// The strategy for the bundle `manifest` describes, with why when it was chosen; a
    /// fixed strategy the bundle does not fit is refused, naming why.
    pub fn choose(&self, manifest: &Manifest) -> Result<(Strategy, Option<String>), FieldError> {
        let version = &manifest.version;
        match self {
            Requested::Fixed(s) => {
                super::upgrades::bundle_fits(s, manifest)?;
                Ok((s.clone(), None))
            }
            Requested::Auto { rolling, .. } if manifest.backward_compatible => Ok((
                rolling.clone(),
                Some(format!(
                    "auto: bundle {version} is backward compatible (manifest \
                     backward_compatible: true), so rolling"
                )),
            )),
            Requested::Auto {
                allow_downtime: true,
                ..
            } => Ok((
                Strategy::AllAtOnce {
                    allow_downtime: true,
                },
                Some(format!(
                    "auto: bundle {version} is not backward compatible (manifest \
                     backward_compatible: false), so all-at-once: old and new hosts must not \
                     run side by side"
                )),
            )),
            Requested::Auto { .. } => Err(FieldError::new(
                "strategy.allow_downtime",
                format!(
                    "bundle {version} is not backward compatible (manifest backward_compatible: \
                     false), so auto chooses all-at-once, which takes every selected host down \
                     together: say allow_downtime: true to mean it"
                ),
            )),
        }
    }
}

/// The rolling strategy of `req`'s rolling fields; `default_batch` when it names no batch
/// (`None`: the batch is required).
fn rolling(
    req: &StrategyRequest,
    default_batch: Option<BatchSize>,
) -> Result<Strategy, FieldError> {
    let batch = match (&req.batch, default_batch) {
        (Some(batch), _) => batch_size(batch)?,
        (None, Some(default)) => default,
        (None, None) => {
            return Err(FieldError::new(
                "strategy.batch",
                "is required for rolling, e.g. {\"count\": 1} or {\"percent\": 25}",
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

/// `strategy.batch`: exactly one of a count of at least 1 and a percentage.
fn batch_size(batch: &baton_protocol::api::BatchRequest) -> Result<BatchSize, FieldError> {
    Ok(match (batch.count, batch.percent) {
        (Some(n), None) => {
            BatchSize::Count(u32::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                FieldError::new(
                    "strategy.batch.count",
                    format!("must be at least 1, got {n}"),
                )
            })?)
        }
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
    })
}

/// `strategy` → what the request asks for. Fields that belong to another kind are refused,
/// so a typo'd kind is not silently ignored.
pub fn strategy(req: &StrategyRequest) -> Result<Requested, FieldError> {
    Ok(match req.kind {
        StrategyKind::Rolling => {
            only(
                "allow_downtime",
                req.allow_downtime.is_some(),
                "all-at-once",
            )?;
            Requested::Fixed(rolling(req, None)?)
        }
        StrategyKind::Auto => Requested::Auto {
            rolling: rolling(req, Some(BatchSize::Count(1)))?,
            allow_downtime: req.allow_downtime == Some(true),
        },
        StrategyKind::AllAtOnce => {
            no_rolling_fields(req)?;
            if req.allow_downtime != Some(true) {
                return Err(FieldError::new(
                    "strategy.allow_downtime",
                    "must be true: all-at-once takes every selected host down together",
                ));
            }
            Requested::Fixed(Strategy::AllAtOnce {
                allow_downtime: true,
            })
        }
        StrategyKind::DaisyChain => {
            no_rolling_fields(req)?;
            only(
                "allow_downtime",
                req.allow_downtime.is_some(),
                "all-at-once",
            )?;
            Requested::Fixed(Strategy::DaisyChain)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::rolling;
    use baton_protocol::api::BatchRequest;

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
            Requested::Fixed(Strategy::AllAtOnce {
                allow_downtime: true
            })
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
            Requested::Fixed(Strategy::Rolling {
                batch: BatchSize::Percent(25),
                canary: 1,
                pause_after_canary: true,
                zone_label: Some("zone".into()),
                max_failures: 2
            })
        );
        assert_eq!(
            strategy(&bare(StrategyKind::DaisyChain)).expect("daisy"),
            Requested::Fixed(Strategy::DaisyChain)
        );
        let mut d = bare(StrategyKind::DaisyChain);
        d.allow_downtime = Some(true);
        assert_eq!(
            strategy(&d).expect_err("daisy").field,
            "strategy.allow_downtime"
        );
    }

    /// A manifest of `version`, backward compatible or not.
    fn manifest(version: &str, backward_compatible: bool) -> Manifest {
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let file = serde_json::json!({"path": "packages/x", "dest": "/usr/local/bin/x", "size": 0, "sha256": sha, "mode": "0755"});
        let json = serde_json::json!({
            "schema_version": 1,
            "version": version,
            "backward_compatible": backward_compatible,
            "agent": {"version": version, "file": {"path": "agent/baton-agent", "size": 0, "sha256": sha, "mode": "0755"}},
            "components": [{"name": "x", "version": version, "kind": "file", "order": 10, "files": [file]}]
        });
        Manifest::parse(&serde_json::to_vec(&json).expect("json")).expect("manifest")
    }

    #[test]
    fn auto_follows_the_bundle_and_says_why() {
        let compatible = manifest("2.0.0", true);
        let incompatible = manifest("3.0.0", false);
        let mut req = bare(StrategyKind::Auto);
        req.canary = Some(1);
        let auto = strategy(&req).expect("auto");
        let (chosen, why) = auto.choose(&compatible).expect("compatible");
        assert_eq!(
            chosen,
            Strategy::Rolling {
                batch: BatchSize::Count(1),
                canary: 1,
                pause_after_canary: false,
                zone_label: None,
                max_failures: 0
            },
            "rolling with the request's settings, batches of one by default"
        );
        assert!(why.expect("why").contains("backward compatible"));
        let err = auto.choose(&incompatible).expect_err("no allow_downtime");
        assert_eq!(err.field, "strategy.allow_downtime");
        assert!(err.reason.contains("not backward compatible"), "{err}");
        req.allow_downtime = Some(true);
        let (chosen, why) = strategy(&req)
            .expect("auto")
            .choose(&incompatible)
            .expect("incompatible with downtime");
        assert_eq!(
            chosen,
            Strategy::AllAtOnce {
                allow_downtime: true
            }
        );
        assert!(why.expect("why").contains("all-at-once"));
        // A fixed strategy is not re-chosen: rolling an incompatible bundle is refused.
        let rolling = strategy(&rolling()).expect("rolling");
        assert_eq!(
            rolling.choose(&incompatible).expect_err("refused").field,
            "strategy.kind"
        );
        assert_eq!(rolling.choose(&compatible).expect("fits").1, None);
    }
}
