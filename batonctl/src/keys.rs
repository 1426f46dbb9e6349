//! `batonctl key generate` and the key files `bundle build --sign`/`bundle sign` read: the
//! signing key (optionally passphrase-protected) and the public keys a bundle carries.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use baton_protocol::signing::{PublicKey, SigningKey};

use crate::bundle::BundleError;
use crate::cli::{KeyCommand, PassphraseArgs, SignArgs};
use crate::error::CtlError;

/// The passphrase variable read when no --passphrase-file is given.
pub const PASSPHRASE_ENV: &str = "BATON_KEY_PASSPHRASE";

/// Runs a `key` subcommand.
pub fn run(command: KeyCommand) -> Result<(), CtlError> {
    match command {
        KeyCommand::Generate { out, passphrase } => {
            let passphrase = read_passphrase(&passphrase)?;
            let key = SigningKey::generate().map_err(|e| CtlError::Key(e.to_string()))?;
            let private = with_extension(&out, "key");
            let public = with_extension(&out, "pub");
            for path in [&private, &public] {
                if path.exists() {
                    return Err(CtlError::Key(format!(
                        "{}: exists; a key is never overwritten",
                        path.display()
                    )));
                }
            }
            let sealed = key
                .to_file(passphrase.as_deref())
                .map_err(|e| CtlError::Key(e.to_string()))?;
            write_new(&private, &sealed, 0o600)?;
            write_new(&public, &key.public().to_file(), 0o644)?;
            eprintln!(
                "key {}: signing key {} (mode 0600{}), public key {}",
                key.public().key_id(),
                private.display(),
                if passphrase.is_some() {
                    ", passphrase-protected"
                } else {
                    ""
                },
                public.display()
            );
            println!("{}", key.public().key_id());
        }
    }
    Ok(())
}

/// Reads a signing key, with the passphrase of `args` if it is protected.
pub fn signing_key(path: &Path, args: &PassphraseArgs) -> Result<SigningKey, CtlError> {
    let passphrase = read_passphrase(args)?;
    SigningKey::read(path, passphrase.as_deref())
        .map_err(|e| CtlError::Signing("sign", BundleError::Key(e)))
}

/// The expiry of a signature made now with `args`.
pub fn expiry(args: &SignArgs) -> Result<SystemTime, CtlError> {
    SystemTime::now()
        .checked_add(args.expires_in)
        .ok_or_else(|| CtlError::Key(format!("--expires-in {:?} is too far", args.expires_in)))
}

/// The public keys a bundle lists as trusted: the --trust-key files, or else the signing
/// key's own public key.
pub fn bundle_trusted_keys(
    files: &[PathBuf],
    signing: Option<&SigningKey>,
) -> Result<Vec<PublicKey>, CtlError> {
    if files.is_empty() {
        return Ok(signing.map(|k| k.public().clone()).into_iter().collect());
    }
    files
        .iter()
        .map(|f| PublicKey::read(f).map_err(|e| CtlError::Build(BundleError::Key(e))))
        .collect()
}

fn read_passphrase(args: &PassphraseArgs) -> Result<Option<String>, CtlError> {
    if let Some(file) = &args.passphrase_file {
        let text = std::fs::read_to_string(file)
            .map_err(|e| CtlError::Key(format!("{}: {e}", file.display())))?;
        let line = text.lines().next().unwrap_or_default().to_owned();
        if line.is_empty() {
            return Err(CtlError::Key(format!(
                "{}: the first line (the passphrase) is empty",
                file.display()
            )));
        }
        return Ok(Some(line));
    }
    Ok(std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()))
}

fn with_extension(out: &Path, ext: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(format!(".{ext}"));
    PathBuf::from(name)
}

/// Creates `path` (never replacing a file) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CtlError> {
    let fail = |e: std::io::Error| CtlError::Key(format!("{}: {e}", path.display()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn generate_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("dir");
        let out = dir.path().join("release");
        let passphrase = dir.path().join("passphrase");
        std::fs::write(&passphrase, "correct horse\n").expect("write");
        let generate = || {
            run(KeyCommand::Generate {
                out: out.clone(),
                passphrase: PassphraseArgs {
                    passphrase_file: Some(passphrase.clone()),
                },
            })
        };
        generate().expect("generate");
        let private = dir.path().join("release.key");
        let mode = std::fs::metadata(&private)
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = signing_key(
            &private,
            &PassphraseArgs {
                passphrase_file: Some(passphrase.clone()),
            },
        )
        .expect("opens with the passphrase");
        let public = PublicKey::read(&dir.path().join("release.pub")).expect("public");
        assert_eq!(key.public(), &public);
        let err = generate().expect_err("overwrite");
        assert!(err.to_string().contains("never overwritten"), "{err}");
    }
}
