//! Signed bundles: who may decide what a host runs.
//!
//! A bundle is trusted when its image's manifest digest, its version and the sha256 of its
//! `manifest.json` are signed, with an expiry, by a key the verifier trusts. The signature
//! ([`BundleSignature`]) is stored in the registry beside the image, under the tag
//! [`signature_tag`] of the digest (cosign's convention), so copying both keeps the image
//! verifiable; the orchestrator verifies it before an upgrade is stored, records it in the
//! upgrade and in each host's `desired`, and passes it to the downloader job; the job and the
//! agent verify it again against the keys installed on the host.
//!
//! - [`keys`]: ed25519 key pairs, their files (the private one optionally
//!   passphrase-protected) and a set of trusted public keys;
//! - [`envelope`]: the signed document, signing and verifying;
//! - [`registries`]: the allow-list of registries Baton pulls from.
//!
//! The cryptography is `ring`'s (the library the TLS stack already uses).

pub mod envelope;
pub mod keys;
pub mod registries;

pub use envelope::{BundleSignature, SignedBundle, Subject};
pub use keys::{KeyError, PublicKey, SigningKey, TrustedKeys};
pub use registries::{RegistryAllowList, registry_of};

/// Where a host keeps the public keys it trusts for bundles: one key file per key, written
/// by the downloader job from a verified bundle's `trusted_keys`.
pub const HOST_TRUSTED_KEYS_DIR: &str = "/etc/baton/trusted-keys";

/// The label of a signature image carrying a [`BundleSignature`] (its JSON).
pub const SIGNATURE_LABEL: &str = "io.baton.signature";

/// The tag under which the signature of the image `digest` (`sha256:<hex>`) is stored in the
/// image's repository: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// Why a bundle's signature was refused; every variant names the reason, for a 422 and for a
/// host's `Failed` status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No signature was found or given.
    #[error("the bundle is not signed: {0}")]
    Unsigned(String),
    /// The signature document does not parse, or a field is not valid.
    #[error("signature field {field}: {reason}")]
    Malformed {
        /// The field (`payload.expires`, `signature`).
        field: String,
        /// Why.
        reason: String,
    },
    /// Signed by a key the verifier does not trust.
    #[error("the bundle is signed by key {key_id}, which is not trusted (trusted: {trusted})")]
    UntrustedKey {
        /// The signing key's id.
        key_id: String,
        /// The trusted keys' ids, comma-separated (or `none`).
        trusted: String,
    },
    /// The signature does not verify with the key it names.
    #[error(
        "the signature does not verify with key {key_id}: the signed document was altered or signed by another key"
    )]
    BadSignature {
        /// The key it names.
        key_id: String,
    },
    /// The signature's expiry has passed.
    #[error("the signature expired at {expires}; sign the bundle again")]
    Expired {
        /// When it expired.
        expires: String,
    },
    /// The signature is valid but for something else.
    #[error("the signature is for {field} {signed}, not {actual}")]
    Mismatch {
        /// What differs (`image digest`, `version`, `manifest sha256`).
        field: &'static str,
        /// The signed value.
        signed: String,
        /// The bundle's value.
        actual: String,
    },
}

impl SignatureError {
    pub(crate) fn malformed(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SignatureError::Malformed {
            field: field.into(),
            reason: reason.to_string(),
        }
    }
}

/// base64 (standard alphabet, padded), as the key and signature documents carry bytes.
pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Decodes [`b64`]; `field` names the value in the error.
pub(crate) fn unb64(field: &str, text: &str) -> Result<Vec<u8>, SignatureError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| SignatureError::malformed(field, format!("not base64: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_tag_follows_the_digest() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            signature_tag(&digest),
            format!("sha256-{}.sig", "ab".repeat(32))
        );
    }
}
