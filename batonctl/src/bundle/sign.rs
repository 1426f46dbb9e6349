//! `batonctl bundle sign` and `bundle verify`: a bundle's signature beside it in its
//! registry (docs/bundle.md, "Signatures").
//!
//! Signing pins the image to the digest its registry serves, reads its manifest, signs
//! digest, version and manifest sha256 with an expiry, and pushes the signature as a tiny
//! image tagged `sha256-<hex>.sig` in the bundle's repository; reading it back is the
//! protocol's [`fetch_signature`], which the orchestrator uses too.

use std::time::SystemTime;

use baton_protocol::docker::signature::{fetch_signature, label_value, signature_ref, untag};
use baton_protocol::docker::{DockerError, ensure_image, pin, read_bundle_manifest};
use baton_protocol::signing::{
    BundleSignature, SIGNATURE_LABEL, SignedBundle, SigningKey, Subject, TrustedKeys,
};
use bollard::Docker;
use bytes::Bytes;

use crate::bundle::build::{push, run_build};
use crate::bundle::error::BundleError;
use crate::bundle::progress::Progress;

/// A signed bundle.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The bundle, pinned: `repo@sha256:…`.
    pub pinned: String,
    /// Where the signature was pushed: `repo:sha256-<hex>.sig`.
    pub signature_ref: String,
    /// The signature.
    pub signature: BundleSignature,
}

/// Signs the bundle `image` (a tag or a pinned reference, in a registry) with `key`, valid
/// until `expires`, and pushes the signature beside it.
pub async fn sign(
    docker: &Docker,
    image: &str,
    key: &SigningKey,
    expires: SystemTime,
    progress: &dyn Progress,
) -> Result<Signed, BundleError> {
    let pinned = pinned(docker, image, progress).await?;
    let read = read_bundle_manifest(docker, &pinned, progress).await?;
    let signature = BundleSignature::sign(
        key,
        &Subject {
            image: &pinned,
            version: &read.manifest.version,
            manifest_sha256: Some(&read.sha256),
        },
        expires,
    )
    .map_err(|reason| BundleError::Signature {
        image: pinned.clone(),
        reason,
    })?;
    let signature_ref = signature_ref(&pinned)?;
    push_signature(docker, &signature_ref, &signature, progress).await?;
    progress.line(&format!(
        "signed {pinned} (bundle {}) with key {}, valid until {}",
        read.manifest.version,
        key.public().key_id(),
        humantime::format_rfc3339_seconds(expires)
    ));
    Ok(Signed {
        pinned,
        signature_ref,
        signature,
    })
}

/// Verifies the signature stored beside the bundle `image` with `trusted` keys, now: the
/// signed digest, version and manifest sha256 must be the image's.
pub async fn verify(
    docker: &Docker,
    image: &str,
    trusted: &TrustedKeys,
    progress: &dyn Progress,
) -> Result<(String, SignedBundle), BundleError> {
    let pinned = pinned(docker, image, progress).await?;
    let read = read_bundle_manifest(docker, &pinned, progress).await?;
    let refused = |reason| BundleError::Signature {
        image: pinned.clone(),
        reason,
    };
    let signature = fetch_signature(docker, &pinned, progress)
        .await?
        .ok_or_else(|| {
            refused(baton_protocol::signing::SignatureError::Unsigned(format!(
                "the registry has no {}",
                signature_ref(&pinned).unwrap_or_default()
            )))
        })?;
    let signed = signature
        .verify(
            trusted,
            &Subject {
                image: &pinned,
                version: &read.manifest.version,
                manifest_sha256: Some(&read.sha256),
            },
            SystemTime::now(),
        )
        .map_err(refused)?;
    Ok((pinned, signed))
}

/// `image` pinned to the digest its registry serves (pulled if not present locally).
async fn pinned(
    docker: &Docker,
    image: &str,
    progress: &dyn Progress,
) -> Result<String, BundleError> {
    ensure_image(docker, image, progress).await?;
    let digests = docker
        .inspect_image(image)
        .await
        .map_err(BundleError::docker(format!("inspect {image}")))?
        .repo_digests
        .unwrap_or_default();
    pin(image, &digests).ok_or_else(|| {
        BundleError::Docker(DockerError::NotABundle {
            image: image.to_owned(),
            reason: format!(
                "no registry digest for it (RepoDigests {digests:?}): push it first (bundle build --push)"
            ),
        })
    })
}

/// Builds the signature image `reference` (`FROM scratch`, the signature in its label and
/// as `/signature.json`) and pushes it.
async fn push_signature(
    docker: &Docker,
    reference: &str,
    signature: &BundleSignature,
    progress: &dyn Progress,
) -> Result<(), BundleError> {
    let json = signature.to_json();
    // base64 holds no quote or backslash, so the label needs no escaping.
    let dockerfile = format!(
        "FROM scratch\nLABEL {SIGNATURE_LABEL}=\"{}\"\nCOPY signature.json /signature.json\n",
        label_value(signature)
    );
    let context = tar_of(&[
        ("Dockerfile", dockerfile.as_bytes()),
        ("signature.json", json.as_bytes()),
    ])
    .map_err(|e| BundleError::io("(signature build context)", "write", e))?;
    let stream = futures::stream::once(async move { Ok(Bytes::from(context)) });
    // Uncached: the image is untagged (and its steps removed) right after the push, which
    // must not take away a step another signing of the same bundle is reusing.
    let (_, engine_error) = run_build(docker, reference, stream, false, progress).await;
    if let Some(message) = engine_error {
        return Err(BundleError::engine(format!("build {reference}"), message));
    }
    let pushed = push(docker, reference, progress).await;
    untag(docker, reference).await;
    pushed.map(|_| ())
}

fn tar_of(files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, *data)?;
    }
    tar.into_inner()
}
