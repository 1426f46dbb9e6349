//! A bundle's signature in its registry: a tiny image tagged `sha256-<hex>.sig` in the
//! bundle's repository (cosign's convention), whose label [`SIGNATURE_LABEL`] holds the
//! [`BundleSignature`] (base64 of its JSON). Copying the bundle and that tag to another
//! registry keeps the bundle verifiable. Reading it is shared by `batonctl bundle verify`
//! and the orchestrator; `batonctl bundle sign` writes it.

use base64::Engine;
use bollard::Docker;

use super::{DockerError, Progress, pull, split_reference};
use crate::manifest::image_digest;
use crate::signing::{BundleSignature, SIGNATURE_LABEL, signature_tag};

/// `<repository>:sha256-<hex>.sig` for the pinned bundle reference `pinned`.
pub fn signature_ref(pinned: &str) -> Result<String, DockerError> {
    let (name, _) = pinned
        .split_once('@')
        .ok_or_else(|| DockerError::Reference {
            reference: pinned.to_owned(),
            source: crate::manifest::ManifestError {
                field: "image".to_owned(),
                reason: format!("{pinned:?} is not pinned by a digest (repo@sha256:…)"),
            },
        })?;
    let digest = image_digest("image", pinned).map_err(|source| DockerError::Reference {
        reference: pinned.to_owned(),
        source,
    })?;
    let (repository, _) = split_reference(name);
    Ok(format!("{repository}:{}", signature_tag(digest)))
}

/// The label value carrying `signature`.
pub fn label_value(signature: &BundleSignature) -> String {
    base64::engine::general_purpose::STANDARD.encode(signature.to_json())
}

/// The signature stored beside the pinned bundle `pinned` in its registry, pulled fresh
/// (never a local copy); `None` when the registry has none.
pub async fn fetch_signature(
    docker: &Docker,
    pinned: &str,
    progress: &dyn Progress,
) -> Result<Option<BundleSignature>, DockerError> {
    let reference = signature_ref(pinned)?;
    if let Err(e) = pull(docker, &reference, progress).await {
        let lower = e.to_string().to_lowercase();
        if ["not found", "manifest unknown", "does not exist"]
            .iter()
            .any(|s| lower.contains(s))
        {
            return Ok(None);
        }
        return Err(e);
    }
    let inspected = docker
        .inspect_image(&reference)
        .await
        .map_err(DockerError::docker(format!("inspect {reference}")));
    // Every read pulls afresh: the local copy is not kept.
    untag(docker, &reference).await;
    let inspected = inspected?;
    let label = inspected
        .config
        .and_then(|c| c.labels)
        .and_then(|mut l| l.remove(SIGNATURE_LABEL));
    let not_signature = |reason: String| DockerError::NotABundle {
        image: reference.clone(),
        reason,
    };
    let Some(label) = label else {
        return Err(not_signature(format!(
            "it has no {SIGNATURE_LABEL} label: not a bundle signature"
        )));
    };
    let json = base64::engine::general_purpose::STANDARD
        .decode(label.trim())
        .map_err(|e| not_signature(format!("label {SIGNATURE_LABEL}: not base64: {e}")))?;
    let json = String::from_utf8(json)
        .map_err(|e| not_signature(format!("label {SIGNATURE_LABEL}: not UTF-8: {e}")))?;
    BundleSignature::parse(&json)
        .map(Some)
        .map_err(|e| not_signature(format!("label {SIGNATURE_LABEL}: {e}")))
}

/// Removes the local tag `reference` (a signature image, which is never read locally);
/// best effort.
pub async fn untag(docker: &Docker, reference: &str) {
    let _ = docker
        .remove_image(
            reference,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_lives_in_the_bundles_repository() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            signature_ref(&format!("127.0.0.1:5000/baton/bundle@{digest}")).expect("pinned"),
            format!("127.0.0.1:5000/baton/bundle:sha256-{}.sig", "ab".repeat(32))
        );
        assert!(signature_ref("127.0.0.1:5000/baton/bundle:2.0.0").is_err());
    }
}
