//! The kinds of the events in an upgrade's audit trail (`events/<id>/<seq>`, the
//! [`crate::documents::Event`] document), by the names they are stored as.

use serde::{Deserialize, Serialize};

/// What kind of event an `Event` is; stored as its kebab-case name (`host-dispatched`).
/// A name this build does not know (written by a newer one) is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// An upgrade or task record was created (`created`).
    Created,
    /// The upgrade moved to another phase (`phase`).
    Phase,
    /// A host's downloader job staged the bundle (`host-downloaded`).
    HostDownloaded,
    /// A host was told to install (`host-dispatched`).
    HostDispatched,
    /// A host succeeded (`host-succeeded`); a restart task's is its resume event.
    HostSucceeded,
    /// A host failed (`host-failed`).
    HostFailed,
    /// A host was skipped (`host-skipped`).
    HostSkipped,
    /// A paused host the upgrade waits for, or its release (`host-held`).
    HostHeld,
    /// A host's outcome changed otherwise (`host-state`).
    HostState,
    /// A self-update's new version leads from here (`orchestrator-handover`).
    OrchestratorHandover,
    /// The maintenance mode a task carried out was set back to `none`
    /// (`maintenance-cleared`).
    MaintenanceCleared,
    /// A host's revert `desired` was written: back to the bundle it ran before
    /// (`host-reverting`).
    HostReverting,
    /// A host is back on the bundle it ran before (`host-reverted`).
    HostReverted,
    /// A host could not be reverted (`host-revert-failed`).
    HostRevertFailed,
    /// A batch's soak started, passed or failed (`soak`).
    Soak,
    /// The upgrade waits for a maintenance window to open, or it opened (`window`).
    Window,
    /// A kind this build does not know.
    Other(String),
}

impl EventKind {
    /// Every kind this build writes.
    pub const KNOWN: [EventKind; 16] = [
        EventKind::Created,
        EventKind::Phase,
        EventKind::HostDownloaded,
        EventKind::HostDispatched,
        EventKind::HostSucceeded,
        EventKind::HostFailed,
        EventKind::HostSkipped,
        EventKind::HostHeld,
        EventKind::HostState,
        EventKind::OrchestratorHandover,
        EventKind::MaintenanceCleared,
        EventKind::HostReverting,
        EventKind::HostReverted,
        EventKind::HostRevertFailed,
        EventKind::Soak,
        EventKind::Window,
    ];

    /// The stored name.
    pub fn as_str(&self) -> &str {
        match self {
            EventKind::Created => "created",
            EventKind::Phase => "phase",
            EventKind::HostDownloaded => "host-downloaded",
            EventKind::HostDispatched => "host-dispatched",
            EventKind::HostSucceeded => "host-succeeded",
            EventKind::HostFailed => "host-failed",
            EventKind::HostSkipped => "host-skipped",
            EventKind::HostHeld => "host-held",
            EventKind::HostState => "host-state",
            EventKind::OrchestratorHandover => "orchestrator-handover",
            EventKind::MaintenanceCleared => "maintenance-cleared",
            EventKind::HostReverting => "host-reverting",
            EventKind::HostReverted => "host-reverted",
            EventKind::HostRevertFailed => "host-revert-failed",
            EventKind::Soak => "soak",
            EventKind::Window => "window",
            EventKind::Other(name) => name,
        }
    }

    /// The kind stored as `name`.
    pub fn from_name(name: &str) -> EventKind {
        Self::KNOWN
            .into_iter()
            .find(|k| k.as_str() == name)
            .unwrap_or_else(|| EventKind::Other(name.to_owned()))
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for EventKind {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for EventKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Serialize for EventKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Ok(EventKind::from_name(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_kinds_keep_their_stored_names() {
        for kind in EventKind::KNOWN {
            let json = serde_json::to_string(&kind).expect("json");
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(
                serde_json::from_str::<EventKind>(&json).expect("back"),
                kind
            );
        }
        assert_eq!(EventKind::HostDispatched, "host-dispatched");
        let newer: EventKind = serde_json::from_str("\"host-signed\"").expect("unknown kind");
        assert_eq!(newer, EventKind::Other("host-signed".into()));
        assert_eq!(
            serde_json::to_string(&newer).expect("json"),
            "\"host-signed\""
        );
    }
}
