//! An upgrade request's `soak` and `gates`: a soak length, and fleet gates that are
//! checked while a batch soaks — each field checked and named when refused.

use std::time::Duration;

use baton_protocol::api::{StartUpgrade, StrategyKind};
use baton_protocol::documents::{Gate, Soak};

use super::FieldError;

/// The shortest soak.
const MIN_SOAK: Duration = Duration::from_secs(1);
/// The longest soak: a day per batch.
const MAX_SOAK: Duration = Duration::from_secs(24 * 3600);

/// The record's `soak` for `req` (`None`: no soak). `prometheus`: whether the orchestrator
/// is configured with a Prometheus to ask.
pub fn soak(req: &StartUpgrade, prometheus: bool) -> Result<Option<Soak>, FieldError> {
    let gates = req.gates.clone().unwrap_or_default();
    let Some(text) = &req.soak else {
        if req.gates.is_some() {
            return Err(FieldError::new(
                "gates",
                "are checked during a soak: set soak too (e.g. \"soak\": \"30s\")",
            ));
        }
        return Ok(None);
    };
    if req.strategy.kind == StrategyKind::DaisyChain {
        return Err(FieldError::new(
            "soak",
            "a daisy chain's hosts start one another without the orchestrator, so there is \
             no batch to soak: use rolling, all-at-once or auto",
        ));
    }
    let length = humantime::parse_duration(text).map_err(|e| {
        FieldError::new(
            "soak",
            format!("{text:?} is not a duration ({e}), e.g. 30s or 5m"),
        )
    })?;
    if !(MIN_SOAK..=MAX_SOAK).contains(&length) {
        return Err(FieldError::new(
            "soak",
            format!("must be 1s … 24h, got {text}"),
        ));
    }
    for (i, gate) in gates.iter().enumerate() {
        check_gate(&format!("gates[{i}]"), gate, prometheus)?;
    }
    Ok(Some(Soak {
        duration: humantime::format_duration(length).to_string(),
        gates,
        batch: None,
        since: None,
        until: None,
    }))
}

fn check_gate(field: &str, gate: &Gate, prometheus: bool) -> Result<(), FieldError> {
    match gate {
        Gate::Http { url, status } => {
            let uri: hyper::Uri = url.parse().map_err(|e| {
                FieldError::new(format!("{field}.url"), format!("{url:?} is not a URL: {e}"))
            })?;
            let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
            if !scheme_ok || uri.host().is_none_or(str::is_empty) {
                return Err(FieldError::new(
                    format!("{field}.url"),
                    format!("{url:?} must be an http:// or https:// URL with a host"),
                ));
            }
            if !(100..=599).contains(status) {
                return Err(FieldError::new(
                    format!("{field}.status"),
                    format!("must be an HTTP status (100 … 599), got {status}"),
                ));
            }
        }
        Gate::Prometheus { query, min, max } => {
            if !prometheus {
                return Err(FieldError::new(
                    field,
                    "no Prometheus is configured to ask (--prometheus-url)",
                ));
            }
            if query.trim().is_empty() {
                return Err(FieldError::new(format!("{field}.query"), "is empty"));
            }
            let lo = min.as_ref().and_then(serde_json::Number::as_f64);
            let hi = max.as_ref().and_then(serde_json::Number::as_f64);
            match (lo, hi) {
                (None, None) => {
                    return Err(FieldError::new(field, "needs a bound: min, max or both"));
                }
                (Some(lo), Some(hi)) if lo > hi => {
                    return Err(FieldError::new(
                        format!("{field}.min"),
                        format!("{lo} is above max {hi}"),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::rolling;

    fn request(soak: Option<&str>, gates: Option<serde_json::Value>) -> StartUpgrade {
        StartUpgrade {
            image: "r/b:1".into(),
            strategy: rolling(),
            selector: Default::default(),
            hosts: None,
            id: None,
            skip_paused: None,
            allow_downgrade: None,
            on_failure: None,
            soak: soak.map(str::to_owned),
            gates: gates.map(|g| serde_json::from_value(g).expect("gates")),
        }
    }

    #[test]
    fn a_soak_is_stored_with_its_gates() {
        let req = request(
            Some("90s"),
            Some(serde_json::json!([{"kind": "http", "url": "https://svc.example/healthz"}])),
        );
        let soak = soak(&req, false).expect("valid").expect("a soak");
        assert_eq!(soak.duration, "1m 30s");
        assert_eq!(soak.length(), Duration::from_secs(90));
        assert_eq!(soak.gates.len(), 1);
        assert_eq!(super::soak(&request(None, None), false), Ok(None));
    }

    #[test]
    fn bad_soaks_and_gates_are_refused_naming_the_field() {
        use serde_json::json;
        let cases = [
            (request(Some("soon"), None), "soak"),
            (request(Some("0s"), None), "soak"),
            (request(Some("2days"), None), "soak"),
            (request(None, Some(json!([]))), "gates"),
            (
                request(
                    Some("5s"),
                    Some(json!([{"kind": "http", "url": "ftp://x/"}])),
                ),
                "gates[0].url",
            ),
            (
                request(
                    Some("5s"),
                    Some(json!([{"kind": "http", "url": "not a url"}])),
                ),
                "gates[0].url",
            ),
            (
                request(
                    Some("5s"),
                    Some(
                        json!([{"kind": "http", "url": "http://x/"}, {"kind": "http", "url": "http://x/", "status": 42}]),
                    ),
                ),
                "gates[1].status",
            ),
            (
                request(
                    Some("5s"),
                    Some(json!([{"kind": "prometheus", "query": "up", "min": 1}])),
                ),
                "gates[0]",
            ),
        ];
        for (req, field) in cases {
            let err = soak(&req, false).expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
        let prom = |g: serde_json::Value| soak(&request(Some("5s"), Some(json!([g]))), true);
        assert_eq!(
            prom(json!({"kind": "prometheus", "query": " "}))
                .expect_err("q")
                .field,
            "gates[0].query"
        );
        assert_eq!(
            prom(json!({"kind": "prometheus", "query": "up"}))
                .expect_err("bound")
                .field,
            "gates[0]"
        );
        assert_eq!(
            prom(json!({"kind": "prometheus", "query": "up", "min": 2, "max": 1}))
                .expect_err("order")
                .field,
            "gates[0].min"
        );
        assert!(prom(json!({"kind": "prometheus", "query": "up", "max": 0.5})).is_ok());
        let mut chain = request(Some("5s"), None);
        chain.strategy.kind = StrategyKind::DaisyChain;
        chain.strategy.batch = None;
        assert_eq!(soak(&chain, false).expect_err("chain").field, "soak");
    }
}
