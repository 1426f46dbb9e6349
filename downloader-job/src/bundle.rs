//! The bundle as the job finds it in its image (`/bundle`): its manifest, parsed and
//! validated by `baton_protocol::manifest`, and its files.
//!
//! Before anything is read, the whole tree is walked without following links: a bundle holds
//! only regular files and folders, so a symlink (which could lead out of the bundle, e.g.
//! into `/host`), a device, a FIFO or a socket anywhere in it refuses the bundle. Files are
//! then opened with `O_NOFOLLOW` and checked again on the open descriptor.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use baton_protocol::manifest::{FileEntry, MAX_MANIFEST_BYTES, Manifest};

use crate::error::JobError;
use crate::fs::open_nofollow;
use crate::layout::MANIFEST_FILE;
use crate::verify::{check_size, copy_verified};

/// Deepest folder nesting accepted in a bundle (a sanity cap for the walk).
const MAX_DEPTH: usize = 32;

/// A bundle whose tree and manifest were checked.
#[derive(Debug)]
pub struct Bundle {
    root: PathBuf,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
}

impl Bundle {
    /// Checks the tree under `root` and reads its `manifest.json`.
    pub fn open(root: &Path) -> Result<Self, JobError> {
        scan(root, 0)?;
        let path = root.join(MANIFEST_FILE);
        let (file, meta) = open_regular(&path)?;
        if meta.len() > MAX_MANIFEST_BYTES as u64 {
            return Err(JobError::refused(
                &path,
                format!("larger than {MAX_MANIFEST_BYTES} bytes"),
            ));
        }
        let mut manifest_bytes = Vec::new();
        file.take(MAX_MANIFEST_BYTES as u64 + 1)
            .read_to_end(&mut manifest_bytes)
            .map_err(|e| JobError::io(&path, "read", e))?;
        let manifest = Manifest::parse(&manifest_bytes)
            .map_err(|source| JobError::Manifest { path, source })?;
        Ok(Self {
            root: root.to_owned(),
            manifest,
            manifest_bytes,
        })
    }

    /// The bundle's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The manifest's file in the bundle, for messages.
    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as shipped (staged byte for byte).
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Where a manifest path is in the bundle (paths were validated relative and `..`-free).
    pub fn path_of(&self, entry: &FileEntry) -> PathBuf {
        self.root.join(&entry.path)
    }

    /// Opens a package for reading after checking it is a regular file of the manifest size.
    pub fn open_package(
        &self,
        field: &str,
        entry: &FileEntry,
    ) -> Result<(File, PathBuf), JobError> {
        let path = self.path_of(entry);
        let (file, meta) = open_regular(&path)?;
        check_size(&path, field, entry, meta.len())?;
        Ok((file, path))
    }

    /// Verifies every package (size, then sha256) without copying it.
    pub fn verify_all(&self) -> Result<(), JobError> {
        for (field, entry) in self.manifest.files() {
            let (mut file, path) = self.open_package(&field, entry)?;
            copy_verified(&mut file, &path, &field, entry, None)?;
        }
        Ok(())
    }
}

/// Opens `path` without following a final link and refuses anything but a regular file.
fn open_regular(path: &Path) -> Result<(File, Metadata), JobError> {
    let file = open_nofollow(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            JobError::refused(
                path,
                "is a symbolic link; a bundle holds only regular files",
            )
        } else {
            JobError::io(path, "open", e)
        }
    })?;
    let meta = file.metadata().map_err(|e| JobError::io(path, "stat", e))?;
    if !meta.is_file() {
        return Err(JobError::refused(
            path,
            format!("is a {}, not a regular file", kind_name(&meta)),
        ));
    }
    Ok((file, meta))
}

/// Walks `dir` without following links, refusing any entry that is not a regular file or a
/// folder.
fn scan(dir: &Path, depth: usize) -> Result<(), JobError> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| JobError::io(dir, "stat", e))?;
    if !meta.is_dir() {
        return Err(JobError::refused(
            dir,
            format!("is a {}, not a folder", describe(dir, &meta)),
        ));
    }
    if depth > MAX_DEPTH {
        return Err(JobError::refused(
            dir,
            format!("nested deeper than {MAX_DEPTH} folders"),
        ));
    }
    let entries = std::fs::read_dir(dir).map_err(|e| JobError::io(dir, "list", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| JobError::io(dir, "list", e))?;
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| JobError::io(&path, "stat", e))?;
        if meta.is_dir() {
            scan(&path, depth + 1)?;
        } else if !meta.is_file() {
            return Err(JobError::refused(
                &path,
                format!(
                    "is a {}; a bundle holds only regular files and folders",
                    describe(&path, &meta)
                ),
            ));
        }
    }
    Ok(())
}

fn kind_name(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_symlink() {
        "symbolic link"
    } else if t.is_dir() {
        "folder"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

/// The entry's kind, with a link's target (which may point out of the bundle).
fn describe(path: &Path, meta: &Metadata) -> String {
    if meta.file_type().is_symlink() {
        match std::fs::read_link(path) {
            Ok(target) => format!("symbolic link to {}", target.display()),
            Err(_) => "symbolic link".to_owned(),
        }
    } else {
        kind_name(meta).to_owned()
    }
}

/// Bundles written on disk for tests.
#[cfg(test)]
pub mod testing {
    use std::path::Path;

    use crate::verify::sha256_hex;

    /// Writes a valid bundle under `root` (version `version`, agent `agent`) and returns its
    /// manifest JSON value (already written to `manifest.json`).
    pub fn write_bundle(root: &Path, version: &str, agent: &[u8]) -> serde_json::Value {
        let files: [(&str, &[u8]); 3] = [
            ("agent/baton-agent", agent),
            ("packages/hello/baton-hello", b"#!/bin/sh\necho hello\n"),
            ("packages/kernel/vmlinuz-6.1.0-baton2", b"kernel image\n"),
        ];
        for (path, content) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, content).unwrap();
        }
        let entry = |path: &str, content: &[u8], dest: Option<&str>, mode: &str| {
            let mut v = serde_json::json!({
                "path": path, "size": content.len(), "sha256": sha256_hex(content), "mode": mode
            });
            if let Some(d) = dest {
                v["dest"] = d.into();
            }
            v
        };
        let manifest = serde_json::json!({
            "schema_version": 1,
            "version": version,
            "backward_compatible": true,
            "agent": {"version": version, "file": entry(files[0].0, files[0].1, None, "0755")},
            "components": [
                {"name": "baton-hello", "version": version, "kind": "file", "order": 10,
                 "files": [entry(files[1].0, files[1].1, Some("/usr/local/bin/baton-hello"), "0755")]},
                {"name": "kernel", "version": version, "kind": "kernel", "order": 90, "reboot": true,
                 "release": "6.1.0-baton2",
                 "files": [entry(files[2].0, files[2].1, Some("/boot/vmlinuz-6.1.0-baton2"), "0644")]}
            ]
        });
        write_manifest(root, &manifest);
        manifest
    }

    /// (Re)writes `manifest.json`.
    pub fn write_manifest(root: &Path, manifest: &serde_json::Value) {
        std::fs::write(
            root.join("manifest.json"),
            serde_json::to_vec_pretty(manifest).unwrap(),
        )
        .unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{write_bundle, write_manifest};
    use super::*;

    #[test]
    fn a_valid_bundle_opens_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        let b = Bundle::open(dir.path()).unwrap();
        assert_eq!(b.manifest().version, "2.0.0");
        b.verify_all().unwrap();
    }

    #[test]
    fn a_tampered_package_is_refused_naming_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        std::fs::write(
            dir.path().join("packages/hello/baton-hello"),
            b"#!/bin/sh\necho HELLO\n",
        )
        .unwrap();
        let err = Bundle::open(dir.path()).unwrap().verify_all().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("packages/hello/baton-hello"), "{msg}");
        assert!(msg.contains("components[0].files[0].sha256"), "{msg}");
    }

    #[test]
    fn a_grown_package_is_refused_by_size_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        std::fs::write(dir.path().join("agent/baton-agent"), b"agent v2, longer").unwrap();
        let err = Bundle::open(dir.path()).unwrap().verify_all().unwrap_err();
        assert!(matches!(err, JobError::SizeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("agent.file.size"), "{err}");
    }

    #[test]
    fn manifest_paths_with_parent_segments_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = write_bundle(dir.path(), "2.0.0", b"agent v2");
        m["components"][0]["files"][0]["path"] = "../../host/etc/shadow".into();
        write_manifest(dir.path(), &m);
        let err = Bundle::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("manifest.json"), "{msg}");
        assert!(msg.contains("components[0].files[0].path"), "{msg}");
    }

    #[test]
    fn absolute_manifest_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = write_bundle(dir.path(), "2.0.0", b"agent v2");
        m["agent"]["file"]["path"] = "/host/usr/bin/bash".into();
        write_manifest(dir.path(), &m);
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("agent.file.path"), "{err}");
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn a_symlink_anywhere_in_the_bundle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        std::os::unix::fs::symlink("../../../host/etc", dir.path().join("packages/escape"))
            .unwrap();
        let err = Bundle::open(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, JobError::Refused { .. }), "{msg}");
        assert!(
            msg.contains("packages/escape") && msg.contains("symbolic link to ../../../host/etc"),
            "{msg}"
        );
    }

    #[test]
    fn a_listed_package_replaced_by_a_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        let p = dir.path().join("packages/hello/baton-hello");
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &p).unwrap();
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("symbolic link to /etc/passwd"),
            "{err}"
        );
    }

    #[test]
    fn a_fifo_in_the_bundle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        let fifo = dir.path().join("packages/pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let err = Bundle::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("FIFO"), "{err}");
    }

    #[test]
    fn a_missing_package_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        write_bundle(dir.path(), "2.0.0", b"agent v2");
        std::fs::remove_file(dir.path().join("packages/kernel/vmlinuz-6.1.0-baton2")).unwrap();
        let err = Bundle::open(dir.path()).unwrap().verify_all().unwrap_err();
        assert!(
            err.to_string().contains("vmlinuz-6.1.0-baton2: open"),
            "{err}"
        );
    }
}
