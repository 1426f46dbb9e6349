//! An upgrade's strategy: how hosts are dispatched during the install phase, and how many
//! a rolling batch holds.

use serde::{Deserialize, Serialize};

/// How many hosts a rolling batch holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum BatchSize {
    /// A number of hosts (at least 1).
    Count(u32),
    /// A percentage of the selected hosts (1..=100), rounded up.
    Percent(u32),
}

impl BatchSize {
    /// Hosts per batch for `total` selected hosts: at least 1, at most `total`.
    pub fn hosts(self, total: usize) -> usize {
        let n = match self {
            BatchSize::Count(n) => n as usize,
            BatchSize::Percent(p) => (total * p as usize).div_ceil(100),
        };
        n.clamp(1, total.max(1))
    }
}

/// How hosts are dispatched during the install phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Strategy {
    /// Batches of hosts, for backward-compatible bundles.
    Rolling {
        /// Hosts per batch.
        batch: BatchSize,
        /// Hosts updated first, alone.
        #[serde(default)]
        canary: u32,
        /// Wait for `resume` after the canaries.
        #[serde(default)]
        pause_after_canary: bool,
        /// A batch never spans two values of this label.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        zone_label: Option<String>,
        /// Failed hosts tolerated before the upgrade halts.
        #[serde(default)]
        max_failures: u32,
    },
    /// Every host at once, for incompatible bundles; needs `allow_downtime`.
    AllAtOnce {
        /// The operator accepts that the whole fleet is down together.
        allow_downtime: bool,
    },
    /// Each host hands the baton to the next.
    DaisyChain,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategies_have_a_readable_shape() {
        let s: Strategy = serde_json::from_str(
            r#"{"kind":"rolling","batch":{"percent":50},"zone_label":"zone","max_failures":1}"#,
        )
        .expect("rolling");
        assert_eq!(
            s,
            Strategy::Rolling {
                batch: BatchSize::Percent(50),
                canary: 0,
                pause_after_canary: false,
                zone_label: Some("zone".into()),
                max_failures: 1
            }
        );
        let s: Strategy =
            serde_json::from_str(r#"{"kind":"all-at-once","allow_downtime":true}"#).expect("aao");
        assert_eq!(
            s,
            Strategy::AllAtOnce {
                allow_downtime: true
            }
        );
    }

    #[test]
    fn batch_sizes_round_up_and_clamp() {
        assert_eq!(BatchSize::Count(2).hosts(4), 2);
        assert_eq!(BatchSize::Count(9).hosts(4), 4);
        assert_eq!(BatchSize::Count(0).hosts(4), 1);
        assert_eq!(BatchSize::Percent(25).hosts(4), 1);
        assert_eq!(BatchSize::Percent(30).hosts(4), 2);
        assert_eq!(BatchSize::Percent(100).hosts(3), 3);
    }
}
