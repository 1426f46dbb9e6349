//! The JSON documents stored under Baton's keys, and the one place that (de)serialises them.
//!
//! Every document carries `schema_version`. A reader refuses a document written by a newer
//! schema (it cannot know what the new fields mean) with an error naming the key; older
//! documents are read with defaults for the fields they lack.
//!
//! This module owns the schema version, [`encode`] and [`decode`]; the documents live in
//! files by subject (a host's, maintenance, the upgrade record with its strategy and task,
//! its hosts' outcomes, the replicas' coordination, events, API tokens) and are all
//! reachable from here.

mod coordination;
mod event;
mod host;
mod maintenance;
mod outcomes;
mod revert;
mod soak;
mod strategy;
mod task;
mod token;
mod upgrade;
mod window;

use std::time::SystemTime;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use self::coordination::{Active, Candidate};
pub use self::event::Event;
pub use self::host::{Alive, Desired, DesiredAction, HostHealth, HostSpec, HostStatus, Installed};
pub use self::maintenance::{Maintenance, MaintenanceMode};
pub use self::outcomes::{
    HostsLayout, RecordWrite, UpgradeHost, assemble, record_writes, stored_record,
};
pub use self::revert::{HostRevert, OnFailure, PreviousBundle, RevertState};
pub use self::soak::{DEFAULT_GATE_STATUS, Gate, Soak};
pub use self::strategy::{BatchSize, Strategy};
pub use self::task::{Task, TaskKind};
pub use self::token::{ApiRole, ApiToken};
pub use self::upgrade::{HostOutcome, OrchestratorUpdate, Upgrade, WindowWait};
pub use self::window::{Day, Rule, Window, WindowError, Windows, allowed, next_allowed, rules};
pub use crate::events::EventKind;
pub use crate::state::HostOutcomeState;

/// The schema version this build writes and the newest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// An RFC 3339 UTC timestamp with milliseconds, e.g. `2026-11-21T23:30:00.123Z`.
pub type Timestamp = String;

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// A stored document could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// Not JSON, or not the expected shape.
    #[error("key {key}: invalid {kind} document: {source}")]
    Invalid {
        /// The key it was read from.
        key: String,
        /// The document kind expected.
        kind: &'static str,
        /// The parse error (names the field).
        source: serde_json::Error,
    },
    /// The `schema_version` field is missing.
    #[error("key {key}: {kind} document has no schema_version")]
    MissingSchema {
        /// The key.
        key: String,
        /// The document kind.
        kind: &'static str,
    },
    /// Written by a newer Baton.
    #[error(
        "key {key}: {kind} document has schema_version {found}, this build reads at most {supported}; upgrade this component"
    )]
    NewerSchema {
        /// The key.
        key: String,
        /// The document kind.
        kind: &'static str,
        /// The version found.
        found: u64,
        /// The newest this build reads.
        supported: u32,
    },
}

/// A document stored under a Baton key.
pub trait Document: Serialize + DeserializeOwned {
    /// Name used in errors, e.g. `host status`.
    const KIND: &'static str;
}

/// Serialises a document for storing (compact JSON, readable with `etcdctl get`).
#[allow(clippy::expect_used)]
pub fn encode<T: Document>(doc: &T) -> Vec<u8> {
    // Cannot fail: documents are plain structs whose map keys are all strings.
    serde_json::to_vec(doc).expect("documents always serialise")
}

/// Parses a document read from `key`, refusing newer schemas.
pub fn decode<T: Document>(key: &str, bytes: &[u8]) -> Result<T, DocumentError> {
    let invalid = |source| DocumentError::Invalid {
        key: key.to_owned(),
        kind: T::KIND,
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(invalid)?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| DocumentError::MissingSchema {
            key: key.to_owned(),
            kind: T::KIND,
        })?;
    if found > u64::from(SCHEMA_VERSION) {
        return Err(DocumentError::NewerSchema {
            key: key.to_owned(),
            kind: T::KIND,
            found,
            supported: SCHEMA_VERSION,
        });
    }
    serde_json::from_value(value).map_err(invalid)
}

fn schema() -> u32 {
    SCHEMA_VERSION
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{HostId, UpgradeId};
    use crate::state::HostState;

    fn status() -> HostStatus {
        HostStatus {
            schema_version: SCHEMA_VERSION,
            upgrade_id: Some(UpgradeId::new("u1").expect("id")),
            state: HostState::Updating,
            step: Some("apply file baton-hello".into()),
            message: String::new(),
            started_at: Some(now()),
            updated_at: now(),
            health: None,
        }
    }

    #[test]
    fn round_trips() {
        let doc = status();
        let bytes = encode(&doc);
        let back: HostStatus = decode("/baton/hosts/h1/status", &bytes).expect("decode");
        assert_eq!(back, doc);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(text.contains("\"schema_version\":1"), "{text}");
        assert!(text.contains("\"state\":\"Updating\""), "{text}");
    }

    #[test]
    fn refuses_newer_schema_naming_the_key() {
        let mut value = serde_json::to_value(status()).expect("value");
        value["schema_version"] = 2.into();
        let bytes = serde_json::to_vec(&value).expect("bytes");
        let err = decode::<HostStatus>("/baton/hosts/h1/status", &bytes).expect_err("newer");
        let text = err.to_string();
        assert!(matches!(err, DocumentError::NewerSchema { found: 2, .. }));
        assert!(text.contains("/baton/hosts/h1/status"), "{text}");
    }

    #[test]
    fn refuses_missing_schema_and_bad_shapes_naming_the_key() {
        let err = decode::<Active>("/baton/active", br#"{"upgrade_id":"u1"}"#).expect_err("x");
        assert!(matches!(err, DocumentError::MissingSchema { .. }), "{err}");
        let err = decode::<Active>(
            "/baton/active",
            br#"{"schema_version":1,"upgrade_id":"a/b"}"#,
        )
        .expect_err("bad id");
        assert!(err.to_string().contains("/baton/active"), "{err}");
        assert!(err.to_string().contains("host id") || err.to_string().contains("upgrade id"));
        let err = decode::<Active>("/baton/active", b"not json").expect_err("not json");
        assert!(matches!(err, DocumentError::Invalid { .. }));
    }

    #[test]
    fn records_written_before_the_engine_fields_still_read() {
        let upgrade: Upgrade = decode(
            "/baton/upgrades/u1",
            br#"{"schema_version":1,"id":"u1","bundle":"r@sha256:00","version":"2.0.0","strategy":{"kind":"daisy-chain"},"phase":"Installing","hosts":{"h1":{"state":"Dispatched"}},"created_at":"t","updated_at":"t"}"#,
        )
        .expect("old upgrade record");
        assert_eq!(upgrade.events, 0);
        assert!(!upgrade.canary_approved);
        assert_eq!(upgrade.agent_version, None);
        let h1 = HostId::new("h1").expect("id");
        assert_eq!(upgrade.hosts[&h1].batch, None);
        let text = String::from_utf8(encode(&upgrade)).expect("utf8");
        assert!(!text.contains("canary_approved"), "{text}");
        assert!(!text.contains("batch"), "{text}");
        let spec: HostSpec = decode(
            "/baton/hosts/h1/spec",
            br#"{"schema_version":1,"host":"h1","docker":"unix:///var/run/docker.sock","registered_at":"t"}"#,
        )
        .expect("old spec");
        assert_eq!(spec.boot_id_file, None);
        assert!(
            !String::from_utf8(encode(&spec))
                .expect("utf8")
                .contains("container_prefix")
        );
        let candidate: Candidate = decode(
            "/baton/leader/694d",
            br#"{"schema_version":1,"replica":"orch-a","since":"t"}"#,
        )
        .expect("candidate");
        assert_eq!(candidate.api, None);
    }
}
