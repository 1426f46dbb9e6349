//! `events/<id>/<seq>`: the entries of an upgrade's audit trail.

use serde::{Deserialize, Serialize};

use super::{Document, EventKind, Timestamp, schema};
use crate::names::HostId;

/// `events/<id>/<seq>`: one entry of an upgrade's audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// When it happened.
    pub at: Timestamp,
    /// Who wrote it: `orchestrator` or `agent/<host>`.
    pub source: String,
    /// The host concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostId>,
    /// What kind of event, e.g. `host-dispatched`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "host-dispatched"))]
    pub kind: EventKind,
    /// What happened, for people.
    pub message: String,
}

impl Document for Event {
    const KIND: &'static str = "event";
}
