//! The signed document and its envelope.
//!
//! [`SignedBundle`] says which bundle is vouched for (image manifest digest, version, sha256
//! of its `manifest.json`), until when, and by which key. [`BundleSignature`] carries it as
//! the exact JSON text that was signed (so no verifier has to re-serialise it the same way)
//! and the ed25519 signature over [`DOMAIN`] followed by that text: the domain keeps a
//! bundle signature from being valid as anything else signed with the same key.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::keys::{SigningKey, TrustedKeys};
use super::{SignatureError, b64, unb64};
use crate::manifest::{check_sha256, check_version, image_digest};

/// Prepended to the payload before signing.
pub const DOMAIN: &[u8] = b"baton-bundle-signature-v1\n";
/// Schema of [`SignedBundle`].
pub const SIGNED_SCHEMA_VERSION: u32 = 1;
/// The largest signature document accepted (a payload of a few hundred bytes in practice).
pub const MAX_SIGNATURE_BYTES: usize = 8 * 1024;

/// What a signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedBundle {
    /// [`SIGNED_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// The image's manifest digest in its registry, `sha256:<hex>`.
    pub image_digest: String,
    /// The bundle version.
    pub version: String,
    /// sha256 (hex) of the bundle's `/bundle/manifest.json`, which lists every file's sha256.
    pub manifest_sha256: String,
    /// When the signature stops being accepted (RFC 3339, UTC).
    pub expires: String,
    /// The signing key's id.
    pub key_id: String,
}

/// The bundle a signature must be for: what the verifier observed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject<'a> {
    /// The image digest (`sha256:<hex>`, or a reference pinned by one).
    pub image: &'a str,
    /// The bundle version.
    pub version: &'a str,
    /// sha256 (hex) of its `manifest.json`, when the verifier has read it.
    pub manifest_sha256: Option<&'a str>,
}

/// A signed [`SignedBundle`]: stored in the registry, the upgrade record, each `desired`, the
/// job's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BundleSignature {
    /// The signed document, exactly as signed (JSON text of a `SignedBundle`: image_digest,
    /// version, manifest_sha256, expires, key_id).
    pub payload: String,
    /// The ed25519 signature, base64.
    pub signature: String,
}

impl BundleSignature {
    /// Signs `subject` (its manifest sha256 is required) with `key`, valid until `expires`.
    pub fn sign(
        key: &SigningKey,
        subject: &Subject<'_>,
        expires: SystemTime,
    ) -> Result<Self, SignatureError> {
        let manifest_sha256 = subject.manifest_sha256.ok_or_else(|| {
            SignatureError::malformed("manifest_sha256", "the bundle's manifest was not read")
        })?;
        let payload = SignedBundle {
            schema_version: SIGNED_SCHEMA_VERSION,
            image_digest: image_digest("image_digest", subject.image)
                .map_err(|e| SignatureError::malformed(e.field, e.reason))?
                .to_owned(),
            version: subject.version.to_owned(),
            manifest_sha256: manifest_sha256.to_owned(),
            expires: humantime::format_rfc3339_seconds(expires).to_string(),
            key_id: key.public().key_id().to_owned(),
        };
        payload.check()?;
        let payload =
            serde_json::to_string(&payload).map_err(|e| SignatureError::malformed("payload", e))?;
        let signature = b64(&key.sign(&message(&payload)));
        Ok(Self { payload, signature })
    }

    /// Parses the envelope's JSON (as stored in a signature image's label).
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        if text.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::malformed(
                ".",
                format!("larger than {MAX_SIGNATURE_BYTES} bytes"),
            ));
        }
        serde_json::from_str(text).map_err(|e| SignatureError::malformed(".", e))
    }

    /// The envelope's JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The signed document, parsed and checked, without verifying the signature: for
    /// display, and to name the key a refused signature was made with.
    pub fn claims(&self) -> Result<SignedBundle, SignatureError> {
        if self.payload.len() > MAX_SIGNATURE_BYTES {
            return Err(SignatureError::malformed(
                "payload",
                format!("larger than {MAX_SIGNATURE_BYTES} bytes"),
            ));
        }
        let de = &mut serde_json::Deserializer::from_str(&self.payload);
        let payload: SignedBundle = serde_path_to_error::deserialize(de)
            .map_err(|e| SignatureError::malformed(format!("payload.{}", e.path()), e.inner()))?;
        payload.check()?;
        Ok(payload)
    }

    /// Verifies the signature with `trusted` at time `now` and that it is for `subject`;
    /// returns what it vouches for. Refusals say why: untrusted key, altered document,
    /// expired, or signed for another image, version or manifest.
    pub fn verify(
        &self,
        trusted: &TrustedKeys,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> Result<SignedBundle, SignatureError> {
        let payload = self.claims()?;
        let key = trusted
            .get(&payload.key_id)
            .ok_or_else(|| SignatureError::UntrustedKey {
                key_id: payload.key_id.clone(),
                trusted: trusted.ids(),
            })?;
        let signature = unb64("signature", &self.signature)?;
        if !key.verifies(&message(&self.payload), &signature) {
            return Err(SignatureError::BadSignature {
                key_id: payload.key_id,
            });
        }
        let expires = humantime::parse_rfc3339(&payload.expires)
            .map_err(|e| SignatureError::malformed("payload.expires", e))?;
        if expires <= now {
            return Err(SignatureError::Expired {
                expires: payload.expires,
            });
        }
        payload.matches(subject)?;
        Ok(payload)
    }
}

impl SignedBundle {
    /// Every field is well formed.
    fn check(&self) -> Result<(), SignatureError> {
        let bad = |e: crate::manifest::ManifestError| {
            SignatureError::malformed(format!("payload.{}", e.field), e.reason)
        };
        if self.schema_version != SIGNED_SCHEMA_VERSION {
            return Err(SignatureError::malformed(
                "payload.schema_version",
                format!(
                    "{} is not the supported {SIGNED_SCHEMA_VERSION}",
                    self.schema_version
                ),
            ));
        }
        if image_digest("image_digest", &self.image_digest).map_err(bad)? != self.image_digest {
            return Err(SignatureError::malformed(
                "payload.image_digest",
                "not a bare digest",
            ));
        }
        check_version("version", &self.version).map_err(bad)?;
        check_sha256("manifest_sha256", &self.manifest_sha256).map_err(bad)?;
        humantime::parse_rfc3339(&self.expires)
            .map_err(|e| SignatureError::malformed("payload.expires", e))?;
        Ok(())
    }

    /// It vouches for `subject`.
    pub fn matches(&self, subject: &Subject<'_>) -> Result<(), SignatureError> {
        let actual = image_digest("image", subject.image)
            .map_err(|e| SignatureError::malformed(e.field, e.reason))?;
        if actual != self.image_digest {
            return Err(SignatureError::Mismatch {
                field: "image digest",
                signed: self.image_digest.clone(),
                actual: actual.to_owned(),
            });
        }
        if subject.version != self.version {
            return Err(SignatureError::Mismatch {
                field: "version",
                signed: self.version.clone(),
                actual: subject.version.to_owned(),
            });
        }
        match subject.manifest_sha256 {
            Some(sha) if sha != self.manifest_sha256 => Err(SignatureError::Mismatch {
                field: "manifest sha256",
                signed: self.manifest_sha256.clone(),
                actual: sha.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

fn message(payload: &str) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(payload.as_bytes());
    m
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn subject<'a>(image: &'a str, manifest: &'a str) -> Subject<'a> {
        Subject {
            image,
            version: "2.0.0",
            manifest_sha256: Some(manifest),
        }
    }

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed([seed; 32]).expect("key")
    }

    #[test]
    fn a_signature_verifies_for_its_bundle_only() {
        let (a, b) = (key(1), key(2));
        let image = format!("registry:5000/baton/bundle@{}", digest('a'));
        let manifest = "c".repeat(64);
        let now = SystemTime::now();
        let sig = BundleSignature::sign(
            &a,
            &subject(&image, &manifest),
            now + Duration::from_secs(60),
        )
        .expect("sign");
        let trusted = TrustedKeys::new([a.public().clone()]);
        let signed = sig
            .verify(&trusted, &subject(&digest('a'), &manifest), now)
            .expect("verifies");
        assert_eq!(signed.key_id, a.public().key_id());

        // Only B trusted.
        let only_b = TrustedKeys::new([b.public().clone()]);
        let err = sig
            .verify(&only_b, &subject(&image, &manifest), now)
            .expect_err("untrusted");
        assert!(matches!(err, SignatureError::UntrustedKey { .. }), "{err}");
        // Copied onto another image, version or manifest.
        let other = digest('b');
        let err = sig
            .verify(&trusted, &subject(&other, &manifest), now)
            .expect_err("image");
        assert!(err.to_string().contains("image digest"), "{err}");
        let mut v = subject(&image, &manifest);
        v.version = "3.0.0";
        let err = sig.verify(&trusted, &v, now).expect_err("version");
        assert!(
            err.to_string().contains("version 2.0.0, not 3.0.0"),
            "{err}"
        );
        let other_manifest = "d".repeat(64);
        let err = sig
            .verify(&trusted, &subject(&image, &other_manifest), now)
            .expect_err("manifest");
        assert!(err.to_string().contains("manifest sha256"), "{err}");
        // Expired.
        let err = sig
            .verify(
                &trusted,
                &subject(&image, &manifest),
                now + Duration::from_secs(61),
            )
            .expect_err("expired");
        assert!(matches!(err, SignatureError::Expired { .. }), "{err}");
    }

    #[test]
    fn an_altered_payload_or_a_signature_by_another_key_does_not_verify() {
        let (a, b) = (key(1), key(2));
        let image = digest('a');
        let manifest = "c".repeat(64);
        let now = SystemTime::now();
        let expires = now + Duration::from_secs(60);
        let sig = BundleSignature::sign(&a, &subject(&image, &manifest), expires).expect("sign");
        let trusted = TrustedKeys::new([a.public().clone()]);
        // Later expiry written into the payload by hand.
        let altered = BundleSignature {
            payload: sig.payload.replace("20", "21"),
            signature: sig.signature.clone(),
        };
        let err = altered
            .verify(&trusted, &subject(&image, &manifest), now)
            .expect_err("altered");
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
        // B's signature over a payload naming A's key.
        let forged = BundleSignature {
            payload: sig.payload.clone(),
            signature: b64(&b.sign(&message(&sig.payload))),
        };
        let err = forged
            .verify(&trusted, &subject(&image, &manifest), now)
            .expect_err("forged");
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
        assert_eq!(BundleSignature::parse(&sig.to_json()).expect("parses"), sig);
    }

    #[test]
    fn malformed_payloads_name_the_field() {
        let sig = BundleSignature {
            payload: r#"{"schema_version":1,"image_digest":"sha256:x","version":"2.0.0","manifest_sha256":"","expires":"","key_id":""}"#.to_owned(),
            signature: String::new(),
        };
        let err = sig.claims().expect_err("bad");
        assert!(err.to_string().contains("payload.image_digest"), "{err}");
        let err = BundleSignature::parse("{}").expect_err("missing");
        assert!(err.to_string().contains("payload"), "{err}");
    }
}
