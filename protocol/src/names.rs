//! Validated names that become etcd key segments: host ids, group names, upgrade ids and
//! API token names.
//!
//! A name is one key segment, so it must never contain `/` or be `.`/`..`; it is kept to a
//! conservative character set so it is also a valid hostname label, container name part and
//! file name on the host.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest name accepted; a DNS label is at most 63 bytes.
pub const MAX_NAME_LEN: usize = 63;

/// A name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct NameError {
    /// What kind of name it was meant to be (`host id`, `group name`, …).
    pub what: &'static str,
    /// The refused value.
    pub value: String,
    /// Why it was refused.
    pub reason: &'static str,
}

/// Checks one key segment: 1..=63 characters of `[A-Za-z0-9._-]`, starting with a letter or
/// digit (which also rules out `.` and `..`).
pub fn check_name(what: &'static str, value: &str) -> Result<(), NameError> {
    let refuse = |reason| {
        Err(NameError {
            what,
            value: value.to_owned(),
            reason,
        })
    };
    if value.is_empty() {
        return refuse("must not be empty");
    }
    if value.len() > MAX_NAME_LEN {
        return refuse("must be at most 63 characters");
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return refuse("must start with a letter or digit");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return refuse("may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(value_type = String))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps a name.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_name($what, &value)?;
                Ok(Self(value))
            }

            /// The name as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::new(value)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<Self, NameError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_type!(
    /// A registered host, e.g. `host-1`.
    HostId,
    "host id"
);
name_type!(
    /// A group of hosts (the `group` label), e.g. `edge`.
    GroupName,
    "group name"
);
name_type!(
    /// One upgrade, e.g. `u-20261121-2330-2.0.0`.
    UpgradeId,
    "upgrade id"
);
/// What [`UpgradeId::revert`] appends.
pub const REVERT_SUFFIX: &str = ".revert";

impl UpgradeId {
    /// The id a revert of this upgrade gives its hosts' `desired` (and their agents' `status`
    /// and journal): `<id>.revert`, the id shortened to fit. A revert is new work for an
    /// agent, which has already handled this upgrade's id: under the same id it would only
    /// report that upgrade's outcome again.
    pub fn revert(&self) -> UpgradeId {
        let room = MAX_NAME_LEN - REVERT_SUFFIX.len();
        // Names are ASCII: any byte is a character boundary.
        let kept = &self.0[..self.0.len().min(room)];
        UpgradeId(format!("{kept}{REVERT_SUFFIX}"))
    }
}

name_type!(
    /// An API token's name, e.g. `ci`.
    TokenName,
    "token name"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["host-1", "a", "H.example_2", "0", &"x".repeat(63)] {
            assert!(HostId::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_names_that_break_the_key_layout() {
        let cases = [
            ("", "must not be empty"),
            ("a/b", "may only contain"),
            ("..", "must start with"),
            (".", "must start with"),
            ("-x", "must start with"),
            ("a b", "may only contain"),
            ("é", "must start with"),
        ];
        for (bad, reason) in cases {
            let err = HostId::new(bad).expect_err(bad);
            assert!(err.reason.contains(reason), "{bad}: {err}");
            assert!(err.to_string().contains("host id"), "{err}");
        }
        assert!(GroupName::new("x".repeat(64)).is_err());
    }

    #[test]
    fn a_revert_id_is_a_valid_id_of_its_own() {
        let short = UpgradeId::new("u-2.0.0").expect("id");
        assert_eq!(short.revert().as_str(), "u-2.0.0.revert");
        let long = UpgradeId::new("x".repeat(63)).expect("id");
        let revert = long.revert();
        assert_ne!(revert, long);
        assert!(UpgradeId::new(revert.as_str()).is_ok(), "{revert}");
        assert!(revert.as_str().ends_with(REVERT_SUFFIX), "{revert}");
    }

    #[test]
    fn deserialising_validates() {
        let err = serde_json::from_str::<HostId>("\"a/b\"").expect_err("slash");
        assert!(err.to_string().contains("host id"), "{err}");
    }
}
