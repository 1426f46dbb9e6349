//! Bearer tokens: their format, generation and hash, and the admin token file that gives a
//! fresh installation its first admin without a window in which the API is open.
//!
//! A token is `baton_<name>_<64 hex digits>`: 256 random bits from the operating system,
//! after the name they are stored under, so a request costs one etcd read of
//! `tokens/<name>`. Only the token's SHA-256 is stored; the token itself is shown once.

use std::fmt;
use std::path::{Path, PathBuf};

use baton_protocol::TokenName;
use baton_protocol::documents::{ApiRole, ApiToken, SCHEMA_VERSION, now};
use baton_protocol::durable::{self, DurableError};
use baton_protocol::etcd::{self, Client, EtcdError};
use baton_protocol::keys::Keyspace;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// What every token starts with (so a leaked one is easy to recognise and to scan for).
pub const TOKEN_PREFIX: &str = "baton_";
/// Random bytes in a token.
const SECRET_BYTES: usize = 32;
/// The name of the token the admin token file creates.
pub const BOOTSTRAP_NAME: &str = "admin";

/// A bearer token. Its `Debug` output never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    name: TokenName,
    text: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({TOKEN_PREFIX}{}_<redacted>)", self.name)
    }
}

impl Token {
    /// A fresh random token named `name`.
    pub fn generate(name: TokenName) -> Self {
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let text = format!("{TOKEN_PREFIX}{name}_{}", hex::encode(secret));
        Self { name, text }
    }

    /// Reads a token presented by a caller; `None` if it is not one of Baton's.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(TOKEN_PREFIX)?;
        let split = rest.len().checked_sub(SECRET_BYTES * 2 + 1)?;
        let (name, secret) = (rest.get(..split)?, rest.get(split..)?);
        let secret = secret.strip_prefix('_')?;
        if !secret
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return None;
        }
        let name = TokenName::new(name).ok()?;
        Some(Self {
            name,
            text: text.to_owned(),
        })
    }

    /// The name it is stored under.
    pub fn name(&self) -> &TokenName {
        &self.name
    }

    /// The token itself, for the one answer that shows it (and the admin token file).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// Hex SHA-256 of the token, as stored.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }

    /// Whether `stored` is this token's record: compared in constant time, so the time a
    /// refusal takes says nothing about how much of the hash matched.
    pub fn matches(&self, stored: &ApiToken) -> bool {
        let (a, b) = (self.sha256(), stored.sha256.as_bytes().to_vec());
        a.len() == b.len() && a.bytes().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The record that stores it with `role`.
    pub fn record(&self, role: ApiRole) -> ApiToken {
        ApiToken {
            schema_version: SCHEMA_VERSION,
            name: self.name.clone(),
            role,
            sha256: self.sha256(),
            created_at: now(),
        }
    }
}

/// The admin token file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Reading or writing the file.
    #[error("--admin-token-file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
    /// Writing the file durably.
    #[error("--admin-token-file: {0}")]
    Write(#[from] DurableError),
    /// Storing its hash in etcd.
    #[error("--admin-token-file: storing the token's hash: {0}")]
    Etcd(#[from] EtcdError),
}

/// Makes sure the token in `path` is an admin token: creates the file (mode 0600) with a
/// fresh token named [`BOOTSTRAP_NAME`] if it does not exist, and stores the token's hash
/// under `tokens/<name>` unless it is there already. The file wins over what etcd holds
/// under its name, so whoever can read the file (root on the orchestrator's machine) can
/// always regain admin access.
pub async fn bootstrap_admin(
    client: &Client,
    keyspace: &Keyspace,
    path: &Path,
) -> Result<TokenName, BootstrapError> {
    let file_error = |reason: String| BootstrapError::File {
        path: path.to_owned(),
        reason,
    };
    let token = match std::fs::read_to_string(path) {
        Ok(text) => Token::parse(text.trim()).ok_or_else(|| {
            file_error(format!(
                "does not hold a Baton token ({TOKEN_PREFIX}<name>_<64 hex digits>); remove it to have a new one made"
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = TokenName::new(BOOTSTRAP_NAME)
                .map_err(|e| file_error(format!("token name: {e}")))?;
            let token = Token::generate(name);
            durable::write(path, format!("{}\n", token.expose()).as_bytes(), 0o600)?;
            tracing::info!(file = %path.display(), "created an admin token file");
            token
        }
        Err(e) => return Err(file_error(format!("cannot read it: {e}"))),
    };
    let key = keyspace.token(token.name());
    let stored = etcd::read::<ApiToken>(client, &key).await?;
    let current = stored
        .as_ref()
        .is_some_and(|s| s.value.role == ApiRole::Admin && token.matches(&s.value));
    if !current {
        let read_at = stored.map_or(0, |s| s.mod_revision);
        let record = token.record(ApiRole::Admin);
        if etcd::put_if_unchanged(client, &key, &record, read_at)
            .await?
            .is_none()
        {
            return Err(file_error(format!(
                "{key} changed while its hash was being stored; start again"
            )));
        }
        tracing::info!(token = %token.name(), "admin token from --admin-token-file stored");
    }
    Ok(token.name().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_back_and_hash_to_their_record() {
        let name = TokenName::new("ci_bot.1").expect("name");
        let token = Token::generate(name.clone());
        assert!(token.expose().starts_with("baton_ci_bot.1_"));
        assert_eq!(token.expose().len(), "baton_ci_bot.1_".len() + 64);
        let parsed = Token::parse(token.expose()).expect("parses");
        assert_eq!(parsed.name(), &name);
        let record = token.record(ApiRole::Operator);
        assert!(parsed.matches(&record));
        assert!(!record.sha256.contains(&token.expose()[15..]));
        let other = Token::generate(name);
        assert!(!other.matches(&record), "another secret, same name");
        assert!(!format!("{token:?}").contains(&token.expose()[15..]));
    }

    #[test]
    fn foreign_strings_are_not_tokens() {
        let hex = "a".repeat(64);
        for bad in [
            String::new(),
            "baton_".to_owned(),
            format!("baton__{hex}"),
            format!("baton_ci{hex}"),
            format!("baton_ci_{}", "A".repeat(64)),
            format!("baton_ci_{}", "g".repeat(64)),
            format!("baton_ci_{}", "a".repeat(63)),
            format!("other_ci_{hex}"),
            format!("baton_../x_{hex}"),
        ] {
            assert!(Token::parse(&bad).is_none(), "{bad}");
        }
        assert!(Token::parse(&format!("baton_ci_{hex}")).is_some());
    }
}
