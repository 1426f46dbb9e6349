//! The build context of a bundle image, written as a tar stream: a `Dockerfile`, the static
//! `baton-downloader`, and `bundle/` with `manifest.json` and every package. Each file is
//! streamed with its size capped and its sha256 checked against the prepared manifest, so a
//! file changed since it was hashed aborts the build instead of shipping a bundle that does
//! not match its manifest. Entries have fixed owners (root) and times, so the same inputs
//! give the same layers.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use sha2::{Digest, Sha256};

use crate::bundle::error::BundleError;
use crate::bundle::template::Prepared;

/// Where the downloader is in the image (the entrypoint).
pub const DOWNLOADER_PATH: &str = "/baton-downloader";
pub use baton_protocol::docker::BUNDLE_DIR;
/// Image label: the bundle version.
pub const LABEL_VERSION: &str = "io.baton.bundle.version";
/// Image label: the agent version.
pub const LABEL_AGENT_VERSION: &str = "io.baton.bundle.agent-version";
/// Image label: the manifest's sha256.
pub const LABEL_MANIFEST_SHA256: &str = baton_protocol::docker::bundle::MANIFEST_SHA256_LABEL;
/// Modification time of every entry (2020-01-01T00:00:00Z), for reproducible layers.
const MTIME: u64 = 1_577_836_800;

/// The Dockerfile of a bundle image.
pub fn dockerfile(prepared: &Prepared) -> String {
    format!(
        "FROM scratch\n\
         COPY baton-downloader {DOWNLOADER_PATH}\n\
         COPY bundle/ {BUNDLE_DIR}/\n\
         LABEL {LABEL_VERSION}=\"{}\" {LABEL_AGENT_VERSION}=\"{}\" {LABEL_MANIFEST_SHA256}=\"{}\"\n\
         ENTRYPOINT [\"{DOWNLOADER_PATH}\"]\n",
        prepared.manifest.version,
        prepared.manifest.agent.version,
        prepared.manifest_sha256(),
    )
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(MTIME);
    h
}

/// Writes the build context to `out`; returns the bytes of files written.
pub fn write_context(prepared: &Prepared, out: impl Write) -> Result<u64, BundleError> {
    let mut tar = tar::Builder::new(out);
    let tar_err = |e: std::io::Error| BundleError::io("(build context)", "write", e);

    let dockerfile = dockerfile(prepared);
    let mut h = header(tar::EntryType::Regular, dockerfile.len() as u64, 0o644);
    tar.append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .map_err(tar_err)?;

    // The downloader: size as prepared, content as is (it is not in the manifest).
    let file = std::fs::File::open(&prepared.downloader)
        .map_err(|e| BundleError::io(&prepared.downloader, "open", e))?;
    let mut counted = Counted::new(file.take(prepared.downloader_size));
    let mut h = header(tar::EntryType::Regular, prepared.downloader_size, 0o755);
    tar.append_data(&mut h, "baton-downloader", &mut counted)
        .map_err(tar_err)?;
    if counted.bytes != prepared.downloader_size {
        return Err(BundleError::Changed {
            path: prepared.downloader.clone(),
            field: "(downloader)".to_owned(),
            reason: format!("{} bytes, was {}", counted.bytes, prepared.downloader_size),
        });
    }

    // Folders first, so each has a fixed mode and owner.
    let mut dirs = BTreeSet::from(["bundle".to_owned()]);
    for f in &prepared.files {
        let mut parent = String::from("bundle");
        let segments: Vec<&str> = f.entry.path.split('/').collect();
        for s in &segments[..segments.len().saturating_sub(1)] {
            parent.push('/');
            parent.push_str(s);
            dirs.insert(parent.clone());
        }
    }
    for dir in &dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        tar.append_data(&mut h, format!("{dir}/"), std::io::empty())
            .map_err(tar_err)?;
    }

    let m = &prepared.manifest_bytes;
    let mut h = header(tar::EntryType::Regular, m.len() as u64, 0o644);
    tar.append_data(&mut h, "bundle/manifest.json", m.as_slice())
        .map_err(tar_err)?;

    let mut total = prepared.downloader_size;
    for f in &prepared.files {
        let file =
            std::fs::File::open(&f.source).map_err(|e| BundleError::io(&f.source, "open", e))?;
        let mut counted = Counted::new(file.take(f.entry.size));
        let mut h = header(tar::EntryType::Regular, f.entry.size, f.entry.mode_bits());
        tar.append_data(&mut h, format!("bundle/{}", f.entry.path), &mut counted)
            .map_err(tar_err)?;
        let sha256 = hex::encode(counted.hasher.finalize_reset());
        if counted.bytes != f.entry.size || sha256 != f.entry.sha256 {
            return Err(BundleError::Changed {
                path: f.source.clone(),
                field: f.field.clone(),
                reason: format!(
                    "now {} bytes sha256 {sha256}, manifest says {} bytes sha256 {}",
                    counted.bytes, f.entry.size, f.entry.sha256
                ),
            });
        }
        total += f.entry.size;
    }
    tar.into_inner()
        .map_err(tar_err)?
        .flush()
        .map_err(tar_err)?;
    Ok(total)
}

/// A reader that counts and hashes what passes through it.
struct Counted<R> {
    inner: R,
    bytes: u64,
    hasher: Sha256,
}

impl<R> Counted<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            bytes: 0,
            hasher: Sha256::new(),
        }
    }
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The entries of a context written by [`write_context`] (for tests and diagnostics).
pub fn list_entries(tar_bytes: &[u8]) -> std::io::Result<Vec<(String, u32, Vec<u8>)>> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        let mode = entry.header().mode()?;
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((path, mode, content));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::progress::Quiet;
    use crate::bundle::template::tests::{fake_static_downloader, source};
    use crate::bundle::template::{Sources, prepare};

    fn prepared(s: &crate::bundle::template::tests::Source) -> Prepared {
        let downloader = fake_static_downloader(s.dir.path());
        prepare(
            &Sources {
                dir: s.dir.path(),
                agent: &s.agent,
                downloader: &downloader,
                check_agent_version: false,
                install: &baton_protocol::manifest::InstallPolicy::default(),
                trusted_keys: &[],
            },
            &Quiet,
        )
        .unwrap()
    }

    #[test]
    fn context_holds_dockerfile_downloader_manifest_and_packages() {
        let s = source("2.0.0");
        let p = prepared(&s);
        let mut tar = Vec::new();
        let bytes = write_context(&p, &mut tar).unwrap();
        assert_eq!(bytes, p.bytes() + p.downloader_size);
        let entries = list_entries(&tar).unwrap();
        let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Dockerfile",
                "baton-downloader",
                "bundle/",
                "bundle/agent/",
                "bundle/packages/",
                "bundle/packages/hello/",
                "bundle/packages/kernel/",
                "bundle/manifest.json",
                "bundle/agent/baton-agent",
                "bundle/packages/hello/baton-hello",
                "bundle/packages/kernel/vmlinuz-6.1.0-baton2",
            ]
        );
        let (_, mode, dockerfile) = &entries[0];
        assert_eq!(*mode, 0o644);
        let dockerfile = String::from_utf8_lossy(dockerfile);
        assert!(dockerfile.starts_with("FROM scratch\n"), "{dockerfile}");
        assert!(
            dockerfile.contains("ENTRYPOINT [\"/baton-downloader\"]"),
            "{dockerfile}"
        );
        let agent = entries
            .iter()
            .find(|e| e.0 == "bundle/agent/baton-agent")
            .unwrap();
        assert_eq!(agent.1, 0o755);
        let manifest = entries
            .iter()
            .find(|e| e.0 == "bundle/manifest.json")
            .unwrap();
        assert_eq!(manifest.2, p.manifest_bytes);
    }

    #[test]
    fn a_file_changed_after_hashing_aborts_the_context() {
        let s = source("2.0.0");
        let p = prepared(&s);
        // Same size, other content.
        std::fs::write(
            s.dir.path().join("packages/hello/baton-hello"),
            "#!/bin/sh\necho HELLO\n",
        )
        .unwrap();
        let err = write_context(&p, std::io::sink()).unwrap_err().to_string();
        assert!(
            err.contains("changed while the bundle was being built"),
            "{err}"
        );
        assert!(err.contains("components[0].files[0]"), "{err}");
    }

    #[test]
    fn the_same_inputs_give_the_same_context() {
        let s = source("2.0.0");
        let p = prepared(&s);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_context(&p, &mut a).unwrap();
        write_context(&p, &mut b).unwrap();
        assert_eq!(a, b);
    }
}
