//! ed25519 key pairs for signing bundles, and their files.
//!
//! Both files are small JSON documents (`schema_version`, `kind`, `algorithm`, `key_id`),
//! so an operator can tell them apart and see which key a signature names:
//! - the public key (`kind: baton-public-key`): `public_key`, the 32 bytes in base64;
//! - the signing key (`kind: baton-signing-key`): the public key and either `seed` (the 32
//!   secret bytes, base64) or `encrypted_seed`: the seed sealed with AES-256-GCM under a key
//!   derived from a passphrase by PBKDF2-HMAC-SHA256 (iterations, salt and nonce stored
//!   beside it). Written mode 0600.
//!
//! A key's id is the first 16 bytes of the sha256 of its public key, in hex: derived, never
//! trusted from the file (a file whose id does not match its key is refused).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{SignatureError, b64, unb64};

/// Schema of the key files.
pub const KEY_SCHEMA_VERSION: u32 = 1;
/// The only algorithm.
pub const ALGORITHM: &str = "ed25519";
/// `kind` of a public key file.
pub const PUBLIC_KIND: &str = "baton-public-key";
/// `kind` of a signing key file.
pub const SIGNING_KIND: &str = "baton-signing-key";
/// PBKDF2 iterations for a new passphrase-protected key (OWASP's figure for
/// PBKDF2-HMAC-SHA256).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
/// The largest key file read.
const MAX_KEY_FILE: u64 = 64 * 1024;

/// A key file could not be read, written or used; names the file.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file's content is not a key of the kind expected.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The system's random generator failed.
    #[error("the system's random number generator failed")]
    Random,
}

/// A public key and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PublicKey {
    key_id: String,
    bytes: [u8; 32],
}

/// The public key file's document; also how a bundle manifest's `trusted_keys` lists keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyFile {
    /// [`KEY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// [`PUBLIC_KIND`].
    pub kind: String,
    /// [`ALGORITHM`].
    pub algorithm: String,
    /// The key's id (checked against the key).
    pub key_id: String,
    /// The 32-byte public key, base64.
    pub public_key: String,
}

impl PublicKey {
    /// The key of 32 `bytes`.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let hash = Sha256::digest(bytes);
        Self {
            key_id: hex::encode(&hash[..16]),
            bytes,
        }
    }

    /// Its id: 32 hex characters.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The document of its file.
    pub fn to_document(&self) -> PublicKeyFile {
        PublicKeyFile {
            schema_version: KEY_SCHEMA_VERSION,
            kind: PUBLIC_KIND.to_owned(),
            algorithm: ALGORITHM.to_owned(),
            key_id: self.key_id.clone(),
            public_key: b64(&self.bytes),
        }
    }

    /// Its file's content (pretty JSON and a newline).
    pub fn to_file(&self) -> Vec<u8> {
        pretty(&self.to_document())
    }

    /// The key of a document; `field` names it in errors (`trusted_keys[0]`).
    pub fn from_document(field: &str, doc: &PublicKeyFile) -> Result<Self, SignatureError> {
        check_header(
            field,
            doc.schema_version,
            &doc.kind,
            PUBLIC_KIND,
            &doc.algorithm,
        )?;
        let bytes = unb64(&format!("{field}.public_key"), &doc.public_key)?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            SignatureError::malformed(
                format!("{field}.public_key"),
                format!("{} bytes, not the 32 of an ed25519 key", b.len()),
            )
        })?;
        let key = Self::from_bytes(bytes);
        if key.key_id != doc.key_id {
            return Err(SignatureError::malformed(
                format!("{field}.key_id"),
                format!("{:?} is not the key's id {}", doc.key_id, key.key_id),
            ));
        }
        Ok(key)
    }

    /// Reads a public key file.
    pub fn read(path: &Path) -> Result<Self, KeyError> {
        let doc: PublicKeyFile = read_json(path)?;
        Self::from_document("", &doc).map_err(|e| invalid(path, e))
    }

    /// Whether `signature` over `message` is this key's.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

/// A signing key (the private half, with its public key).
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
    seed: [u8; 32],
}

impl std::fmt::Debug for SigningKey {
    // Never the seed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &self.public.key_id)
            .finish_non_exhaustive()
    }
}

/// The signing key file's document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SigningKeyFile {
    schema_version: u32,
    kind: String,
    algorithm: String,
    key_id: String,
    public_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seed: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    encrypted_seed: Option<EncryptedSeed>,
}

/// A seed sealed under a passphrase.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EncryptedSeed {
    /// `pbkdf2-hmac-sha256`.
    kdf: String,
    iterations: u32,
    salt: String,
    /// `aes-256-gcm`.
    cipher: String,
    nonce: String,
    /// The sealed seed and its tag.
    ciphertext: String,
}

const KDF: &str = "pbkdf2-hmac-sha256";
const CIPHER: &str = "aes-256-gcm";

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        SystemRandom::new()
            .fill(&mut seed)
            .map_err(|_| KeyError::Random)?;
        Self::from_seed(seed).ok_or(KeyError::Random)
    }

    /// The key of a 32-byte seed (tests use fixed seeds).
    pub fn from_seed(seed: [u8; 32]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(&seed).ok()?;
        let public: [u8; 32] = pair.public_key().as_ref().try_into().ok()?;
        Some(Self {
            pair,
            public: PublicKey::from_bytes(public),
            seed,
        })
    }

    /// Its public key.
    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The signature of `message`.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// Its file's content: the seed in clear, or sealed under `passphrase`.
    pub fn to_file(&self, passphrase: Option<&str>) -> Result<Vec<u8>, KeyError> {
        let (seed, encrypted_seed) = match passphrase {
            None => (Some(b64(&self.seed)), None),
            Some(p) => (None, Some(seal(&self.seed, p)?)),
        };
        Ok(pretty(&SigningKeyFile {
            schema_version: KEY_SCHEMA_VERSION,
            kind: SIGNING_KIND.to_owned(),
            algorithm: ALGORITHM.to_owned(),
            key_id: self.public.key_id.clone(),
            public_key: b64(&self.public.bytes),
            seed,
            encrypted_seed,
        }))
    }

    /// Reads a signing key file; `passphrase` opens a protected one (and is required for it).
    pub fn read(path: &Path, passphrase: Option<&str>) -> Result<Self, KeyError> {
        let doc: SigningKeyFile = read_json(path)?;
        check_header(
            "",
            doc.schema_version,
            &doc.kind,
            SIGNING_KIND,
            &doc.algorithm,
        )
        .map_err(|e| invalid(path, e))?;
        let seed = match (&doc.seed, &doc.encrypted_seed, passphrase) {
            (Some(seed), None, _) => unb64("seed", seed).map_err(|e| invalid(path, e))?,
            (None, Some(sealed), Some(p)) => open(sealed, p).map_err(|e| invalid(path, e))?,
            (None, Some(_), None) => {
                return Err(KeyError::Invalid {
                    path: path.to_owned(),
                    reason: "the key is passphrase-protected: give the passphrase \
                             (--passphrase-file or BATON_KEY_PASSPHRASE)"
                        .to_owned(),
                });
            }
            _ => {
                return Err(KeyError::Invalid {
                    path: path.to_owned(),
                    reason: "exactly one of seed and encrypted_seed must be given".to_owned(),
                });
            }
        };
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::Invalid {
            path: path.to_owned(),
            reason: "seed: not 32 bytes".to_owned(),
        })?;
        let key = Self::from_seed(seed).ok_or_else(|| KeyError::Invalid {
            path: path.to_owned(),
            reason: "seed: not an ed25519 seed".to_owned(),
        })?;
        if key.public.key_id != doc.key_id || b64(&key.public.bytes) != doc.public_key {
            return Err(KeyError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "key_id/public_key do not belong to the seed (its id is {})",
                    key.public.key_id
                ),
            });
        }
        Ok(key)
    }
}

/// The public keys a verifier trusts, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys {
    keys: BTreeMap<String, PublicKey>,
}

impl TrustedKeys {
    /// The set of `keys`.
    pub fn new(keys: impl IntoIterator<Item = PublicKey>) -> Self {
        Self {
            keys: keys.into_iter().map(|k| (k.key_id.clone(), k)).collect(),
        }
    }

    /// Reads every listed public key file.
    pub fn read_files(paths: &[PathBuf]) -> Result<Self, KeyError> {
        let keys = paths
            .iter()
            .map(|p| PublicKey::read(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self::new(keys))
    }

    /// Reads every `*.json` file of `dir`; a missing folder trusts nothing.
    pub fn read_dir(dir: &Path) -> Result<Self, KeyError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(KeyError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| KeyError::Io {
                path: dir.to_owned(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        Self::read_files(&paths)
    }

    /// The key with id `key_id`.
    pub fn get(&self, key_id: &str) -> Option<&PublicKey> {
        self.keys.get(key_id)
    }

    /// Whether it trusts no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Every key, by id.
    pub fn iter(&self) -> impl Iterator<Item = &PublicKey> {
        self.keys.values()
    }

    /// The ids, comma-separated, or `none`.
    pub fn ids(&self) -> String {
        if self.keys.is_empty() {
            "none".to_owned()
        } else {
            self.keys.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// The name of a trusted key's file in a host's trusted-keys folder: `<key id>.json`.
pub fn key_file_name(key: &PublicKey) -> String {
    format!("{}.json", key.key_id)
}

fn check_header(
    field: &str,
    schema_version: u32,
    kind: &str,
    expected_kind: &str,
    algorithm: &str,
) -> Result<(), SignatureError> {
    let at = |name: &str| {
        if field.is_empty() {
            name.to_owned()
        } else {
            format!("{field}.{name}")
        }
    };
    if schema_version != KEY_SCHEMA_VERSION {
        return Err(SignatureError::malformed(
            at("schema_version"),
            format!("{schema_version} is not the supported {KEY_SCHEMA_VERSION}"),
        ));
    }
    if kind != expected_kind {
        return Err(SignatureError::malformed(
            at("kind"),
            format!("{kind:?} is not {expected_kind:?}"),
        ));
    }
    if algorithm != ALGORITHM {
        return Err(SignatureError::malformed(
            at("algorithm"),
            format!("{algorithm:?} is not {ALGORITHM:?}"),
        ));
    }
    Ok(())
}

fn pbkdf2_key(
    passphrase: &str,
    salt: &[u8],
    iterations: u32,
) -> Result<LessSafeKey, SignatureError> {
    let iterations = NonZeroU32::new(iterations)
        .ok_or_else(|| SignatureError::malformed("encrypted_seed.iterations", "must be > 0"))?;
    let mut key = [0u8; 32];
    ring::pbkdf2::derive(
        ring::pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        passphrase.as_bytes(),
        &mut key,
    );
    let unbound = UnboundKey::new(&AES_256_GCM, &key)
        .map_err(|_| SignatureError::malformed("encrypted_seed", "cannot make an AES key"))?;
    Ok(LessSafeKey::new(unbound))
}

fn seal(seed: &[u8; 32], passphrase: &str) -> Result<EncryptedSeed, KeyError> {
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut salt).map_err(|_| KeyError::Random)?;
    rng.fill(&mut nonce).map_err(|_| KeyError::Random)?;
    let key = pbkdf2_key(passphrase, &salt, PBKDF2_ITERATIONS).map_err(|_| KeyError::Random)?;
    let mut sealed = seed.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::empty(),
        &mut sealed,
    )
    .map_err(|_| KeyError::Random)?;
    Ok(EncryptedSeed {
        kdf: KDF.to_owned(),
        iterations: PBKDF2_ITERATIONS,
        salt: b64(&salt),
        cipher: CIPHER.to_owned(),
        nonce: b64(&nonce),
        ciphertext: b64(&sealed),
    })
}

fn open(sealed: &EncryptedSeed, passphrase: &str) -> Result<Vec<u8>, SignatureError> {
    if sealed.kdf != KDF || sealed.cipher != CIPHER {
        return Err(SignatureError::malformed(
            "encrypted_seed",
            format!("only {KDF} with {CIPHER} is supported"),
        ));
    }
    let salt = unb64("encrypted_seed.salt", &sealed.salt)?;
    let nonce: [u8; NONCE_LEN] = unb64("encrypted_seed.nonce", &sealed.nonce)?
        .try_into()
        .map_err(|_| SignatureError::malformed("encrypted_seed.nonce", "not 12 bytes"))?;
    let mut data = unb64("encrypted_seed.ciphertext", &sealed.ciphertext)?;
    let key = pbkdf2_key(passphrase, &salt, sealed.iterations)?;
    let seed = key
        .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
        .map_err(|_| SignatureError::malformed("encrypted_seed", "wrong passphrase"))?;
    Ok(seed.to_vec())
}

fn pretty<T: Serialize>(doc: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn invalid(path: &Path, e: SignatureError) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        reason: match e {
            SignatureError::Malformed { field, reason } => format!("{field}: {reason}"),
            other => other.to_string(),
        },
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, KeyError> {
    use std::io::Read;
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_KEY_FILE)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let de = &mut serde_json::Deserializer::from_slice(&bytes);
    serde_path_to_error::deserialize(de).map_err(|e| KeyError::Invalid {
        path: path.to_owned(),
        reason: format!("{}: {}", e.path(), e.inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_round_trip_with_and_without_a_passphrase() {
        let dir = tempfile::tempdir().expect("dir");
        let key = SigningKey::generate().expect("key");
        let plain = dir.path().join("plain.json");
        std::fs::write(&plain, key.to_file(None).expect("file")).expect("write");
        assert_eq!(
            SigningKey::read(&plain, None).expect("read").public(),
            key.public()
        );

        let sealed = dir.path().join("sealed.json");
        std::fs::write(&sealed, key.to_file(Some("correct horse")).expect("file")).expect("write");
        let text = std::fs::read_to_string(&sealed).expect("read");
        assert!(!text.contains("\"seed\""), "{text}");
        assert_eq!(
            SigningKey::read(&sealed, Some("correct horse"))
                .expect("open")
                .public(),
            key.public()
        );
        let err = SigningKey::read(&sealed, Some("wrong")).expect_err("wrong passphrase");
        assert!(err.to_string().contains("wrong passphrase"), "{err}");
        let err = SigningKey::read(&sealed, None).expect_err("no passphrase");
        assert!(err.to_string().contains("passphrase-protected"), "{err}");

        let public = dir.path().join("public.json");
        std::fs::write(&public, key.public().to_file()).expect("write");
        assert_eq!(&PublicKey::read(&public).expect("public"), key.public());
        // A signing key is not a public key file.
        let err = PublicKey::read(&plain).expect_err("kind");
        assert!(err.to_string().contains("seed"), "{err}");
    }

    #[test]
    fn a_key_id_that_does_not_match_the_key_is_refused() {
        let key = SigningKey::from_seed([7; 32]).expect("key");
        let mut doc = key.public().to_document();
        doc.key_id = "0".repeat(32);
        let err = PublicKey::from_document("trusted_keys[0]", &doc).expect_err("id");
        assert!(err.to_string().contains("trusted_keys[0].key_id"), "{err}");
    }

    #[test]
    fn signatures_verify_only_with_their_key() {
        let a = SigningKey::from_seed([1; 32]).expect("a");
        let b = SigningKey::from_seed([2; 32]).expect("b");
        let sig = a.sign(b"message");
        assert!(a.public().verifies(b"message", &sig));
        assert!(!a.public().verifies(b"messagE", &sig));
        assert!(!b.public().verifies(b"message", &sig));
    }

    #[test]
    fn a_trusted_keys_folder_reads_its_json_files() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(
            TrustedKeys::read_dir(&dir.path().join("missing"))
                .expect("none")
                .is_empty()
        );
        let a = SigningKey::from_seed([1; 32]).expect("a");
        std::fs::write(
            dir.path().join(key_file_name(a.public())),
            a.public().to_file(),
        )
        .expect("write");
        std::fs::write(dir.path().join("README"), "not a key").expect("write");
        let trusted = TrustedKeys::read_dir(dir.path()).expect("read");
        assert_eq!(trusted.ids(), a.public().key_id());
    }
}
