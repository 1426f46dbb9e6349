//! Whether the host trusts the bundle, decided before anything is staged, and the keys it
//! trusts afterwards.
//!
//! The host trusts the public keys in `/etc/baton/trusted-keys/` (one file per key). With a
//! signature (from the orchestrator, in the settings' `signature`), the job verifies it
//! against those keys — or, on a host that trusts none yet (its first install), against the
//! keys the bundle itself lists in `trusted_keys` — and requires it to be for the image
//! digest it was given, the manifest's version and the manifest's exact bytes, unexpired.
//! Once the bundle is staged, its `trusted_keys` replace the host's keys: that is how the
//! first install brings keys and how a signed bundle rotates them.
//!
//! A host that trusts keys refuses a bundle without a signature; one that trusts none (never
//! given a signed bundle) accepts it, as before signatures existed, and installs no keys.

use std::time::SystemTime;

use baton_protocol::digest::sha256_hex;
use baton_protocol::signing::keys::key_file_name;
use baton_protocol::signing::{BundleSignature, SignatureError, Subject, TrustedKeys};

use crate::bundle::Bundle;
use crate::error::JobError;
use crate::fs::{HostFs, ensure_dir};
use crate::host_files::write_if_changed;
use crate::layout::HostLayout;

/// What was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The signature verified with key `key_id`; the bundle's keys are to be installed.
    Signed {
        /// The signing key.
        key_id: String,
    },
    /// No signature, on a host that trusts no key.
    Unsigned,
}

/// Verifies `signature` for `bundle` (from `image`) with the host's keys, or the bundle's on
/// a host that trusts none. Reads only.
pub fn verify(
    layout: &HostLayout,
    bundle: &Bundle,
    image: Option<&str>,
    signature: Option<&BundleSignature>,
) -> Result<Verdict, JobError> {
    let dir = layout.trusted_keys_dir();
    let host_keys = TrustedKeys::read_dir(&dir).map_err(|e| JobError::Signature {
        reason: e.to_string(),
    })?;
    let refuse = |e: SignatureError| JobError::Signature {
        reason: e.to_string(),
    };
    let Some(signature) = signature else {
        if host_keys.is_empty() {
            tracing::warn!(dir = %dir.display(), "the bundle is not signed and the host trusts no key yet: accepted, no keys installed");
            return Ok(Verdict::Unsigned);
        }
        return Err(refuse(SignatureError::Unsigned(format!(
            "the host trusts keys {} ({}) and no signature was given",
            host_keys.ids(),
            dir.display()
        ))));
    };
    let image = image.ok_or_else(|| JobError::Signature {
        reason: "a signature needs the image it is for (--image)".to_owned(),
    })?;
    let keys = if host_keys.is_empty() {
        // First install: the orchestrator verified the bundle with its own keys; the host
        // checks it is consistent with the keys it is about to trust.
        bundle.manifest().trusted_keys()
    } else {
        host_keys
    };
    let manifest_sha256 = sha256_hex(bundle.manifest_bytes());
    let signed = signature
        .verify(
            &keys,
            &Subject {
                image,
                version: &bundle.manifest().version,
                manifest_sha256: Some(&manifest_sha256),
            },
            SystemTime::now(),
        )
        .map_err(refuse)?;
    tracing::info!(key = %signed.key_id, expires = %signed.expires, "bundle signature verified");
    Ok(Verdict::Signed {
        key_id: signed.key_id,
    })
}

/// Makes the host trust exactly the bundle's `trusted_keys` (when it lists any): new keys
/// written, keys it no longer lists removed. Returns whether anything changed.
pub fn install_keys(
    fs: &dyn HostFs,
    layout: &HostLayout,
    bundle: &Bundle,
) -> Result<bool, JobError> {
    let wanted = bundle.manifest().trusted_keys();
    if wanted.is_empty() {
        return Ok(false);
    }
    let dir = layout.trusted_keys_dir();
    let mut changed = ensure_dir(fs, &dir)?;
    let mut names = Vec::new();
    for key in wanted.iter() {
        let name = key_file_name(key);
        changed |= write_if_changed(fs, &dir.join(&name), &key.to_file(), 0o644)?;
        names.push(name);
    }
    for existing in fs
        .read_dir(&dir)
        .map_err(|e| JobError::io(&dir, "list", e))?
    {
        let existing = existing.to_string_lossy().into_owned();
        if existing.ends_with(".json") && !names.contains(&existing) {
            let path = dir.join(&existing);
            fs.remove_file(&path)
                .map_err(|e| JobError::io(&path, "remove", e))?;
            changed = true;
        }
    }
    if changed {
        fs.sync_dir(&dir)
            .map_err(|e| JobError::io(&dir, "fsync", e))?;
        tracing::info!(keys = %wanted.ids(), dir = %dir.display(), "the host now trusts the bundle's keys");
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use baton_protocol::signing::SigningKey;

    use super::*;
    use crate::bundle::testing::{write_bundle, write_manifest};
    use crate::fs::RealFs;

    const IMAGE: &str =
        "r/b@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed([seed; 32]).expect("key")
    }

    /// A bundle listing `trusts` as its trusted keys, and its signature by `signer`.
    fn signed_bundle(
        root: &Path,
        trusts: &[&SigningKey],
        signer: &SigningKey,
    ) -> (Bundle, BundleSignature) {
        let mut manifest = write_bundle(root, "2.0.0", b"agent");
        manifest["trusted_keys"] = trusts
            .iter()
            .map(|k| serde_json::to_value(k.public().to_document()).expect("json"))
            .collect();
        write_manifest(root, &manifest);
        let bundle = Bundle::open(root).expect("bundle");
        let sha = sha256_hex(bundle.manifest_bytes());
        let signature = BundleSignature::sign(
            signer,
            &Subject {
                image: IMAGE,
                version: "2.0.0",
                manifest_sha256: Some(&sha),
            },
            SystemTime::now() + Duration::from_secs(60),
        )
        .expect("sign");
        (bundle, signature)
    }

    #[test]
    fn the_first_signed_install_brings_keys_and_later_bundles_need_a_trusted_signature() {
        let dir = tempfile::tempdir().expect("dir");
        let layout = HostLayout::new(dir.path().join("host"));
        let (a, b) = (key(1), key(2));
        let (bundle, by_a) = signed_bundle(&dir.path().join("b1"), &[&a], &a);

        // A host that trusts nothing takes an unsigned bundle and installs no key.
        assert_eq!(
            verify(&layout, &bundle, Some(IMAGE), None).expect("unsigned"),
            Verdict::Unsigned
        );
        // The first signed install verifies against the bundle's own keys, then trusts them.
        let verdict = verify(&layout, &bundle, Some(IMAGE), Some(&by_a)).expect("first install");
        assert_eq!(
            verdict,
            Verdict::Signed {
                key_id: a.public().key_id().to_owned()
            }
        );
        assert!(install_keys(&RealFs, &layout, &bundle).expect("install"));
        assert!(
            !install_keys(&RealFs, &layout, &bundle).expect("again"),
            "idempotent"
        );

        // From then on: unsigned, or signed by an untrusted key, is refused.
        let err = verify(&layout, &bundle, Some(IMAGE), None).expect_err("unsigned");
        assert!(err.to_string().contains("no signature was given"), "{err}");
        let (other, by_b) = signed_bundle(&dir.path().join("b2"), &[&b], &b);
        let err = verify(&layout, &other, Some(IMAGE), Some(&by_b)).expect_err("untrusted");
        assert!(err.to_string().contains("which is not trusted"), "{err}");
        // A signature of another manifest is refused too.
        let err = verify(&layout, &other, Some(IMAGE), Some(&by_a)).expect_err("other manifest");
        assert!(err.to_string().contains("manifest sha256"), "{err}");

        // Rotation: a bundle signed by A listing only B makes the host trust only B.
        let (rotate, by_a_rotating) = signed_bundle(&dir.path().join("b3"), &[&b], &a);
        verify(&layout, &rotate, Some(IMAGE), Some(&by_a_rotating)).expect("signed by A");
        install_keys(&RealFs, &layout, &rotate).expect("rotate");
        let trusted = TrustedKeys::read_dir(&layout.trusted_keys_dir()).expect("read");
        assert_eq!(trusted.ids(), b.public().key_id());
        verify(&layout, &other, Some(IMAGE), Some(&by_b)).expect("B is trusted now");
    }
}
