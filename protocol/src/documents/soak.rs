//! An upgrade's soak: how long each batch is watched once its hosts are done (installing,
//! or — when the upgrade reverts — back on the bundle they ran before), the fleet gates
//! checked meanwhile, and the soak under way — all kept in the upgrade record (`soak`).

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// Expected HTTP status of a gate when the request names none.
pub const DEFAULT_GATE_STATUS: u16 = 200;

fn default_status() -> u16 {
    DEFAULT_GATE_STATUS
}

/// A fleet-level check that must keep passing while a batch soaks (after its install, and
/// after its revert).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Gate {
    /// `GET url` must answer `status` (http or https).
    Http {
        /// The URL (`http://` or `https://`).
        url: String,
        /// The status it must answer (default 200).
        #[serde(default = "default_status")]
        #[cfg_attr(feature = "openapi", schema(minimum = 100, maximum = 599))]
        status: u16,
    },
    /// An instant query against the orchestrator's configured Prometheus must give one
    /// number within `[min, max]` (each bound optional, at least one set).
    Prometheus {
        /// The PromQL expression.
        query: String,
        /// Lowest value allowed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
        min: Option<serde_json::Number>,
        /// Highest value allowed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>))]
        max: Option<serde_json::Number>,
    },
}

impl std::fmt::Display for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Gate::Http { url, status } => write!(f, "http {url} answers {status}"),
            Gate::Prometheus { query, min, max } => {
                write!(f, "prometheus {query}")?;
                match (min, max) {
                    (Some(lo), Some(hi)) => write!(f, " within [{lo}, {hi}]"),
                    (Some(lo), None) => write!(f, " >= {lo}"),
                    (None, Some(hi)) => write!(f, " <= {hi}"),
                    (None, None) => Ok(()),
                }
            }
        }
    }
}

/// `soak` of an upgrade record: the request's soak and the one under way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Soak {
    /// How long each batch soaks once all its hosts are done, e.g. `30s`; a revert soaks
    /// each reverted batch as long, with the same gates, before it reverts the one before.
    pub duration: String,
    /// Fleet gates checked while a batch soaks, installed or reverted (the hosts' own health
    /// checks always are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<Gate>,
    /// The batch soaking now, if any: after its install, or after its revert while the
    /// upgrade is `Reverting`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u32>,
    /// When the soak of `batch` started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// When the soak of `batch` ends (its hosts succeed — or, reverting, are recorded
    /// reverted — then, if all held up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Timestamp>,
}

impl Soak {
    /// The soak's length, parsed from [`Self::duration`] (zero if unreadable: validated at
    /// creation).
    pub fn length(&self) -> std::time::Duration {
        humantime::parse_duration(&self.duration).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_have_a_readable_shape() {
        let g: Gate =
            serde_json::from_str(r#"{"kind":"http","url":"https://x/healthz"}"#).expect("http");
        assert_eq!(
            g,
            Gate::Http {
                url: "https://x/healthz".into(),
                status: 200
            }
        );
        let g: Gate =
            serde_json::from_str(r#"{"kind":"prometheus","query":"up","min":1}"#).expect("prom");
        assert_eq!(g.to_string(), "prometheus up >= 1");
        assert!(serde_json::from_str::<Gate>(r#"{"kind":"http","url":"u","x":1}"#).is_err());
    }
}
