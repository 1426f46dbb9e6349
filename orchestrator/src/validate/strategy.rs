//! An upgrade request's `strategy`, checked and turned into the protocol's strategy.

use baton_protocol::api::{StrategyKind, StrategyRequest};
use baton_protocol::documents::{BatchSize, Strategy};

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

/// `strategy` → the protocol's strategy. Fields that belong to another kind are refused, so
/// a typo'd kind is not silently ignored.
pub fn strategy(req: &StrategyRequest) -> Result<Strategy, FieldError> {
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
            no_rolling_fields(req)?;
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
            no_rolling_fields(req)?;
            only(
                "allow_downtime",
                req.allow_downtime.is_some(),
                "all-at-once",
            )?;
            Ok(Strategy::DaisyChain)
        }
    }
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
}
