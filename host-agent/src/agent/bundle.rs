//! The staged bundles the agent installs from: `<state_dir>/bundles/<version>/`, put there
//! by the downloader job with `manifest.json` and the record of the image they came from
//! (`bundle.json`, [`StagedBundle`]). A bundle is used for a `desired` only when its
//! version is a version (never a path), its manifest says that version, and its record
//! names the image digest the `desired` names: the agent installs only what the job staged
//! and verified under that digest, and only to destinations its install policy allows.

use std::path::PathBuf;
use std::time::SystemTime;

use baton_protocol::digest::sha256_hex;
use baton_protocol::documents::Desired;
use baton_protocol::manifest::{Manifest, ManifestError, check_version};
use baton_protocol::signing::{SignatureError, Subject, TrustedKeys};
use baton_protocol::staged::{STAGED_RECORD_FILE, StagedBundle};

use super::Agent;

/// A staged bundle could not be used; nothing was installed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A field of `desired` (or a version read from the agent's records) is refused.
    #[error("{}: {}", source.field, source.reason)]
    Field {
        /// The field at fault and why.
        source: ManifestError,
    },
    /// The bundle's manifest is not on the host.
    #[error(
        "bundle {version} is not staged ({}: {source}); run the downloader job first",
        path.display()
    )]
    NotStaged {
        /// The bundle version.
        version: String,
        /// The manifest's path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The staged manifest is refused.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The manifest's path.
        path: PathBuf,
        /// The field at fault and why.
        source: ManifestError,
    },
    /// The staged manifest is of another version than its folder.
    #[error("{}: manifest field version is {found}, not {version}", path.display())]
    WrongVersion {
        /// The manifest's path.
        path: PathBuf,
        /// The version it names.
        found: String,
        /// The version asked for.
        version: String,
    },
    /// The job left no (readable) record of the image the bundle came from.
    #[error(
        "bundle {version} has no record of the image it was staged from ({}: {reason}); run \
         the downloader job of the desired bundle",
        path.display()
    )]
    NoRecord {
        /// The bundle version.
        version: String,
        /// The record's path.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The bundle was staged from another image than the one `desired` names.
    #[error(
        "bundle {version} was staged from image {staged} ({}), not from desired.bundle's \
         {desired}; run the downloader job of the desired bundle",
        path.display()
    )]
    OtherImage {
        /// The bundle version.
        version: String,
        /// The record's path.
        path: PathBuf,
        /// The digest the record names.
        staged: String,
        /// The digest `desired` names.
        desired: String,
    },
    /// The host trusts keys and `desired` carries no signature that verifies with them.
    #[error("bundle signature refused: {reason}")]
    Signature {
        /// Why, naming the key, the expiry or what the signature is for.
        reason: String,
    },
}

impl From<ManifestError> for BundleError {
    fn from(source: ManifestError) -> Self {
        BundleError::Field { source }
    }
}

impl Agent {
    /// `<state_dir>/bundles/<version>`, for a version that passed [`check_version`].
    pub(super) fn bundle_dir(&self, version: &str) -> PathBuf {
        self.config.state_dir.join("bundles").join(version)
    }

    /// The staged manifest of bundle `version` (one the agent recorded as installed).
    pub(super) fn manifest(&self, version: &str) -> Result<Manifest, BundleError> {
        check_version("version", version)?;
        let path = self.bundle_dir(version).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|source| BundleError::NotStaged {
            version: version.to_owned(),
            path: path.clone(),
            source,
        })?;
        let manifest = Manifest::parse(&bytes).map_err(|source| BundleError::Invalid {
            path: path.clone(),
            source,
        })?;
        if manifest.version != version {
            return Err(BundleError::WrongVersion {
                path,
                found: manifest.version,
                version: version.to_owned(),
            });
        }
        Ok(manifest)
    }

    /// The manifest of the bundle `desired` names, if it is staged from that very image.
    /// On a host that trusts keys, `desired` must carry a signature that verifies with them
    /// for its digest and version — checked before the staged bundle is looked at — and for
    /// the staged manifest's exact bytes.
    pub(super) fn desired_bundle(&self, desired: &Desired) -> Result<Manifest, BundleError> {
        let digest = desired.validate()?;
        self.verify_signature(desired, digest, None)?;
        let manifest = self.staged(&desired.version, digest)?;
        let path = self.bundle_dir(&desired.version).join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|source| BundleError::NotStaged {
            version: desired.version.clone(),
            path,
            source,
        })?;
        self.verify_signature(desired, digest, Some(&sha256_hex(&bytes)))?;
        Ok(manifest)
    }

    /// `desired.signature` against the keys the host trusts (`trusted_keys_dir`); a host
    /// that trusts none (never given a signed bundle) accepts any.
    fn verify_signature(
        &self,
        desired: &Desired,
        digest: &str,
        manifest_sha256: Option<&str>,
    ) -> Result<(), BundleError> {
        let refused = |reason: String| BundleError::Signature { reason };
        let trusted = TrustedKeys::read_dir(&self.config.trusted_keys_dir)
            .map_err(|e| refused(e.to_string()))?;
        if trusted.is_empty() {
            return Ok(());
        }
        let signature = desired.signature.as_ref().ok_or_else(|| {
            refused(
                SignatureError::Unsigned(format!(
                    "desired has no signature and the host trusts keys {} ({})",
                    trusted.ids(),
                    self.config.trusted_keys_dir.display()
                ))
                .to_string(),
            )
        })?;
        signature
            .verify(
                &trusted,
                &Subject {
                    image: digest,
                    version: &desired.version,
                    manifest_sha256,
                },
                SystemTime::now(),
            )
            .map(|_| ())
            .map_err(|e| refused(e.to_string()))
    }

    /// The manifest of bundle `version`, if it was staged from the image `digest`.
    /// Its destinations must be allowed by this host's install policy (`agent.toml`).
    pub(super) fn staged(&self, version: &str, digest: &str) -> Result<Manifest, BundleError> {
        let manifest = self.manifest(version)?;
        self.config
            .install_policy()
            .check(&manifest)
            .map_err(|source| BundleError::Invalid {
                path: self.bundle_dir(version).join("manifest.json"),
                source,
            })?;
        let path = self.bundle_dir(version).join(STAGED_RECORD_FILE);
        let no_record = |reason: String| BundleError::NoRecord {
            version: version.to_owned(),
            path: path.clone(),
            reason,
        };
        let bytes = std::fs::read(&path).map_err(|e| no_record(e.to_string()))?;
        let record = StagedBundle::parse(&bytes).map_err(|e| no_record(e.to_string()))?;
        if record.version != version {
            return Err(no_record(format!(
                "it is the record of bundle {}",
                record.version
            )));
        }
        if record.image_digest != digest {
            return Err(BundleError::OtherImage {
                version: version.to_owned(),
                path,
                staged: record.image_digest,
                desired: digest.to_owned(),
            });
        }
        Ok(manifest)
    }
}
