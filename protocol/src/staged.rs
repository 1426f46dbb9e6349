//! The record the downloader job leaves beside a staged bundle
//! (`<state_dir>/bundles/<version>/bundle.json`): which image the staged files came from,
//! by digest. The agent installs a staged bundle only for a `desired` whose `bundle` has
//! that digest, so a bundle nobody verified under that name is never installed.

use serde::{Deserialize, Serialize};

use crate::manifest::{ManifestError, check_version, image_digest};

/// The record's file name inside the staged bundle's folder.
pub const STAGED_RECORD_FILE: &str = "bundle.json";
/// Schema of [`StagedBundle`].
pub const STAGED_SCHEMA_VERSION: u32 = 1;

/// Which image a staged bundle came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StagedBundle {
    /// [`STAGED_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The bundle version (the folder's name and the manifest's `version`).
    pub version: String,
    /// The image's digest, `sha256:<64 hex>`.
    pub image_digest: String,
}

impl StagedBundle {
    /// The record for bundle `version` staged from the image `image` (a digest, or a
    /// reference pinned by one); refused naming the field when either is not valid.
    pub fn new(version: &str, image: &str) -> Result<Self, ManifestError> {
        check_version("version", version)?;
        Ok(Self {
            schema_version: STAGED_SCHEMA_VERSION,
            version: version.to_owned(),
            image_digest: image_digest("image", image)?.to_owned(),
        })
    }

    /// Parses and validates a record; errors name the field.
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        let record: StagedBundle =
            serde_path_to_error::deserialize(de).map_err(|e| ManifestError {
                field: e.path().to_string(),
                reason: e.into_inner().to_string(),
            })?;
        if record.schema_version != STAGED_SCHEMA_VERSION {
            return Err(ManifestError {
                field: "schema_version".to_owned(),
                reason: format!(
                    "{} is not the supported {STAGED_SCHEMA_VERSION}",
                    record.schema_version
                ),
            });
        }
        check_version("version", &record.version)?;
        if image_digest("image_digest", &record.image_digest)? != record.image_digest {
            return Err(ManifestError {
                field: "image_digest".to_owned(),
                reason: format!("{:?} is not a bare digest", record.image_digest),
            });
        }
        Ok(record)
    }

    /// The record as written (one JSON object and a newline).
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn records_the_digest_of_a_pinned_reference_and_reads_it_back() {
        let record = StagedBundle::new("2.0.0", &format!("registry:5000/baton/bundle@{DIGEST}"))
            .expect("valid");
        assert_eq!(record.image_digest, DIGEST);
        assert_eq!(
            StagedBundle::parse(&record.to_json()).expect("parses"),
            record
        );
    }

    #[test]
    fn refusals_name_the_field() {
        let err = StagedBundle::new("2.0.0", "registry:5000/baton/bundle:2.0.0").expect_err("tag");
        assert_eq!(err.field, "image");
        let err = StagedBundle::new("../x", DIGEST).expect_err("path");
        assert_eq!(err.field, "version");
        let text =
            format!(r#"{{"schema_version":1,"version":"2.0.0","image_digest":"r/b@{DIGEST}"}}"#);
        let err = StagedBundle::parse(text.as_bytes()).expect_err("not bare");
        assert_eq!(err.field, "image_digest");
        let err =
            StagedBundle::parse(br#"{"schema_version":1,"version":"2.0.0"}"#).expect_err("missing");
        assert!(err.reason.contains("image_digest"), "{err}");
    }
}
