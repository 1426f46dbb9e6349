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
