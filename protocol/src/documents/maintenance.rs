//! Maintenance modes and the `maintenance` document an operator sets on a host or a group.

use serde::{Deserialize, Serialize};

use super::{Document, Timestamp, schema};

/// A maintenance mode (see `docs/operations.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceMode {
    /// Normal operation.
    #[default]
    None,
    /// Excluded from dispatch, for diagnostics.
    Paused,
    /// The orchestrator does not re-run the downloader to revive a dead agent.
    AutohealingOff,
    /// The agent restarts the host's managed services (or, with `reboot`, reboots the host),
    /// then the mode clears.
    Restart,
    /// Managed components are reinstalled from the current bundle, then the mode clears.
    Replace,
}

impl MaintenanceMode {
    /// The kebab-case name, as stored and accepted by the API.
    pub fn name(self) -> &'static str {
        match self {
            MaintenanceMode::None => "none",
            MaintenanceMode::Paused => "paused",
            MaintenanceMode::AutohealingOff => "autohealing-off",
            MaintenanceMode::Restart => "restart",
            MaintenanceMode::Replace => "replace",
        }
    }
}

/// `hosts/<host>/maintenance` and `groups/<group>/maintenance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Maintenance {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The mode.
    pub mode: MaintenanceMode,
    /// Why, as given by the operator.
    #[serde(default)]
    pub reason: String,
    /// When it was set.
    pub since: Timestamp,
    /// Mode `restart` only: reboot the host instead of restarting its managed services.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot: bool,
}

impl Document for Maintenance {
    const KIND: &'static str = "maintenance";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::documents::{decode, encode};

    #[test]
    fn maintenance_mode_names_are_the_stored_form() {
        for mode in [
            MaintenanceMode::None,
            MaintenanceMode::Paused,
            MaintenanceMode::AutohealingOff,
            MaintenanceMode::Restart,
            MaintenanceMode::Replace,
        ] {
            assert_eq!(
                serde_json::to_value(mode).expect("mode"),
                serde_json::Value::from(mode.name())
            );
        }
    }

    #[test]
    fn reboot_is_written_only_when_asked() {
        let m: Maintenance = decode(
            "/baton/hosts/h1/maintenance",
            br#"{"schema_version":1,"mode":"restart","since":"t"}"#,
        )
        .expect("maintenance without reboot");
        assert!(!m.reboot);
        assert!(
            !String::from_utf8(encode(&m))
                .expect("utf8")
                .contains("reboot")
        );
        let m = Maintenance { reboot: true, ..m };
        let text = String::from_utf8(encode(&m)).expect("utf8");
        assert!(text.contains(r#""reboot":true"#), "{text}");
        let back: Maintenance =
            decode("/baton/hosts/h1/maintenance", text.as_bytes()).expect("back");
        assert!(back.reboot);
    }
}
