//! Which bundles the orchestrator accepts, decided in one place before an upgrade is stored:
//! every image it will pull or run (the bundle, the orchestrator image a bundle names) must
//! come from an allowed registry (`--allowed-registry`), and the bundle must carry a
//! signature by a trusted key (`--trusted-key`, several for rotation) that has not expired
//! and vouches for the very digest, version and manifest the registry served. Every refusal
//! is a 422 naming the reason; nothing has been written when it happens.

use std::path::PathBuf;
use std::time::SystemTime;

use baton_protocol::signing::{
    BundleSignature, KeyError, RegistryAllowList, SignatureError, SignedBundle, Subject,
    TrustedKeys,
};

use crate::api::error::ApiError;
use crate::resolve::Resolved;

/// How the API gets bundles: the resolver and what it accepts.
pub struct Bundles {
    /// Pins images and reads their manifests and signatures.
    pub resolver: std::sync::Arc<dyn crate::resolve::Resolver>,
    /// The keys and registries accepted.
    pub trust: BundleTrust,
}

impl std::fmt::Debug for Bundles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundles")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

/// The trusted keys and the registry allow-list.
#[derive(Debug, Clone, Default)]
pub struct BundleTrust {
    keys: TrustedKeys,
    registries: RegistryAllowList,
}

/// The trust configuration is refused; names the flag and the file or entry.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A `--trusted-key` file.
    #[error("--trusted-key: {0}")]
    Key(#[from] KeyError),
    /// An `--allowed-registry` entry.
    #[error("--allowed-registry: {0}")]
    Registry(String),
}

impl BundleTrust {
    /// Reads the public key files and checks the registry entries.
    pub fn load(key_files: &[PathBuf], registries: &[String]) -> Result<Self, TrustError> {
        Ok(Self {
            keys: TrustedKeys::read_files(key_files)?,
            registries: RegistryAllowList::new(registries).map_err(TrustError::Registry)?,
        })
    }

    /// The keys trusted.
    pub fn keys(&self) -> &TrustedKeys {
        &self.keys
    }

    /// 422 unless `image` (request field `field`) is from an allowed registry.
    pub fn check_registry(&self, field: &str, image: &str) -> Result<(), ApiError> {
        self.registries
            .check(field, image)
            .map_err(ApiError::unprocessable)
    }

    /// The bundle's signature and what it vouches for, if it verifies now for the resolved
    /// bundle; else 422 naming why (unsigned, untrusted key, altered, expired, signed for
    /// another image).
    pub fn verify(&self, resolved: &Resolved) -> Result<(BundleSignature, SignedBundle), ApiError> {
        let refuse = |e: SignatureError| ApiError::unprocessable(format!("image: {e}"));
        if self.keys.is_empty() {
            return Err(ApiError::unprocessable(
                "image: no signing key is trusted, so no bundle is accepted: start the \
                 orchestrator with --trusted-key",
            ));
        }
        let signature = resolved.signature.as_ref().ok_or_else(|| {
            refuse(SignatureError::Unsigned(format!(
                "{} has no signature beside it in its registry (batonctl bundle sign)",
                resolved.pinned
            )))
        })?;
        let signed = signature
            .verify(
                &self.keys,
                &Subject {
                    image: &resolved.pinned,
                    version: &resolved.manifest.version,
                    manifest_sha256: Some(&resolved.manifest_sha256),
                },
                SystemTime::now(),
            )
            .map_err(refuse)?;
        Ok((signature.clone(), signed))
    }
}
