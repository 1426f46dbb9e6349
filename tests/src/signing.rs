//! The tests' signing keys and signing: fixed seeds, so every run and every test signs with
//! the same keys, their public key files written once per process, and signing a pushed
//! bundle the way `batonctl bundle sign` does (the signature pushed beside it).
//!
//! Test support: every helper panics with a message naming what failed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use baton_protocol::signing::{BundleSignature, SigningKey};
use batonctl::bundle;

/// The tests' keys: `Release` signs every test bundle and is what the orchestrators and
/// hosts of the tests trust; `Other` is a second key (rotation, an untrusted signer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestKey {
    /// The key test bundles are signed with.
    Release,
    /// Another key.
    Other,
    /// A key nothing trusts.
    Rogue,
}

impl TestKey {
    fn seed(self) -> [u8; 32] {
        match self {
            TestKey::Release => [0x42; 32],
            TestKey::Other => [0x17; 32],
            TestKey::Rogue => [0x66; 32],
        }
    }

    fn name(self) -> &'static str {
        match self {
            TestKey::Release => "release",
            TestKey::Other => "other",
            TestKey::Rogue => "rogue",
        }
    }

    /// The signing key.
    pub fn signing(self) -> SigningKey {
        SigningKey::from_seed(self.seed()).expect("a fixed ed25519 seed")
    }

    /// Its public key file (written once per process).
    pub fn public_file(self) -> PathBuf {
        static DIR: OnceLock<PathBuf> = OnceLock::new();
        let dir = DIR.get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("baton-test-keys-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("test key folder");
            for key in [TestKey::Release, TestKey::Other, TestKey::Rogue] {
                std::fs::write(
                    dir.join(format!("{}.pub", key.name())),
                    key.signing().public().to_file(),
                )
                .expect("test public key");
            }
            dir
        });
        dir.join(format!("{}.pub", self.name()))
    }
}

/// How long test signatures are valid.
pub const TEST_VALIDITY: Duration = Duration::from_secs(24 * 3600);

/// Signs the pushed bundle `image` with `key`, valid for [`TEST_VALIDITY`]; returns the
/// signature.
pub async fn sign(image: &str, key: TestKey) -> BundleSignature {
    sign_until(image, key, SystemTime::now() + TEST_VALIDITY).await
}

/// Signs the pushed bundle `image` with `key`, valid until `expires` (which may have passed).
pub async fn sign_until(image: &str, key: TestKey, expires: SystemTime) -> BundleSignature {
    let docker = bundle::connect().await.expect("connect to Docker");
    bundle::sign(&docker, image, &key.signing(), expires, &bundle::Quiet)
        .await
        .unwrap_or_else(|e| panic!("sign {image}: {e}"))
        .signature
}
