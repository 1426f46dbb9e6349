//! API tokens: the roles a bearer token can carry and the `tokens/<name>` document, which
//! holds the token's SHA-256 and never the token itself (see docs/security.md).

use serde::{Deserialize, Serialize};

use super::{Document, Timestamp, schema};
use crate::names::TokenName;

/// What a caller of the REST API may do; each role may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum ApiRole {
    /// Reads: hosts, upgrades, events, metrics.
    Viewer,
    /// Also upgrades (start, pause, resume, abort) and maintenance modes.
    Operator,
    /// Also host registration and API tokens.
    Admin,
}

impl ApiRole {
    /// Every role, weakest first.
    pub const ALL: [ApiRole; 3] = [ApiRole::Viewer, ApiRole::Operator, ApiRole::Admin];

    /// The name, as stored and accepted by the API.
    pub fn name(self) -> &'static str {
        match self {
            ApiRole::Viewer => "viewer",
            ApiRole::Operator => "operator",
            ApiRole::Admin => "admin",
        }
    }
}

impl std::fmt::Display for ApiRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `tokens/<name>`: one API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Schema version.
    #[serde(default = "schema")]
    pub schema_version: u32,
    /// The token's name (also the key's last segment).
    pub name: TokenName,
    /// What it may do.
    pub role: ApiRole,
    /// Hex SHA-256 of the whole token: the token is 256 random bits, so a fast hash is
    /// enough to make the stored value useless to whoever reads etcd.
    pub sha256: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Document for ApiToken {
    const KIND: &'static str = "token";
}
