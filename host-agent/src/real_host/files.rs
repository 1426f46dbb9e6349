//! The real host's file copies: a staged file installed only as the manifest names it
//! (streamed into a temporary file beside its destination while hashed, renamed into place
//! only if size and sha256 match), a staged file checked before another program gets it,
//! and backups taken and put back with their mode and owner. Sources are opened
//! `O_NOFOLLOW`; temporaries are created `O_CREAT|O_EXCL|O_NOFOLLOW` (`durable`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use baton_protocol::digest::{self, StreamError, VerifyError};
use baton_protocol::durable::{self, DurableError};
use baton_protocol::manifest::FileEntry;
use baton_systemd_bus::Systemd;

use super::RealHost;
use crate::ops::{OpError, OpResult};

impl<S: Systemd> RealHost<S> {
    /// Installs the staged file `source` at `dest`, re-hashed while copied (see
    /// [`HostOps::install_file`](crate::ops::HostOps::install_file)).
    pub(super) fn install_verified(
        &self,
        source: &Path,
        dest: &Path,
        file: &FileEntry,
    ) -> OpResult<()> {
        let full = self.path(dest);
        let mut from = self.open_source(source)?;
        ensure_parent(&full)?;
        durable::write_with(&durable::StdFs, &full, file.mode_bits(), |out, tmp| {
            digest::copy_verified(&mut from, Some(out), file.size, &file.sha256)
                .map(drop)
                .map_err(|e| CopyError::Verify(e, tmp.to_owned()))
        })
        .map_err(|e| e.into_op(source, dest))
    }

    /// Checks the staged file `source` against `file`'s size and sha256.
    pub(super) fn verify(&self, source: &Path, file: &FileEntry) -> OpResult<()> {
        let mut from = self.open_source(source)?;
        digest::copy_verified(&mut from, None, file.size, &file.sha256)
            .map(drop)
            .map_err(|e| CopyError::Verify(e, PathBuf::new()).into_op(source, source))
    }

    /// Opens a staged or backed-up file, never through a link.
    pub(super) fn open_source(&self, source: &Path) -> OpResult<std::fs::File> {
        durable::open_nofollow(&self.path(source)).map_err(|e| OpError::File {
            action: "open",
            path: source.to_owned(),
            source: e,
        })
    }

    /// Copies `from` to `to` durably with `from`'s mode and owner (a backup, and putting
    /// it back): the temporary copy gets the owner first, then the mode (a change of owner
    /// clears setuid and setgid bits), and only then is renamed into place.
    pub(super) fn copy_as_is(&self, from: &Path, to: &Path, action: &'static str) -> OpResult<()> {
        use std::os::unix::fs::MetadataExt;
        let mut source = self.open_source(from)?;
        let meta = source.metadata().map_err(|e| OpError::File {
            action,
            path: from.to_owned(),
            source: e,
        })?;
        let mode = meta.mode() & 0o7777;
        let full = self.path(to);
        ensure_parent(&full)?;
        durable::write_with(&durable::StdFs, &full, mode, |out, tmp| {
            let attrs = |e| CopyError::Attributes(e, tmp.to_owned());
            std::io::copy(&mut source, out).map_err(attrs)?;
            std::os::unix::fs::fchown(&*out, Some(meta.uid()), Some(meta.gid())).map_err(attrs)?;
            out.set_permissions(std::fs::Permissions::from_mode(mode))
                .map_err(attrs)
        })
        .map_err(|e| e.into_op(from, to))
    }
}

/// Why a copy failed, before it is told which files it was about.
#[derive(Debug)]
enum CopyError {
    /// The durable write failed (the error names its file).
    Durable(DurableError),
    /// The content was refused or could not be streamed (to the temporary file given).
    Verify(VerifyError, PathBuf),
    /// The copy's mode or owner could not be set.
    Attributes(std::io::Error, PathBuf),
}

impl From<DurableError> for CopyError {
    fn from(e: DurableError) -> Self {
        CopyError::Durable(e)
    }
}

impl CopyError {
    fn into_op(self, source: &Path, dest: &Path) -> OpError {
        match self {
            CopyError::Durable(source) => OpError::Install {
                dest: dest.to_owned(),
                source,
            },
            CopyError::Verify(VerifyError::Stream(StreamError::Read(e)), _) => OpError::File {
                action: "read",
                path: source.to_owned(),
                source: e,
            },
            CopyError::Verify(VerifyError::Stream(StreamError::Write(e)), tmp)
            | CopyError::Attributes(e, tmp) => OpError::File {
                action: "write",
                path: tmp,
                source: e,
            },
            CopyError::Verify(e, _) => OpError::Mismatch {
                file: source.to_owned(),
                reason: e.to_string(),
            },
        }
    }
}

/// Creates the folder of `path` if needed.
fn ensure_parent(path: &Path) -> OpResult<()> {
    let dir = durable::parent_of(path);
    std::fs::create_dir_all(dir).map_err(|source| OpError::File {
        action: "create folder",
        path: dir.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use baton_protocol::digest;

    use super::*;
    use crate::ops::HostOps;

    fn entry(content: &str, mode: &str) -> FileEntry {
        FileEntry {
            path: "b/new".into(),
            dest: Some("/usr/local/bin/tool".into()),
            size: content.len() as u64,
            sha256: digest::sha256_hex(content.as_bytes()),
            mode: mode.into(),
        }
    }

    fn names(dir: &Path) -> Vec<std::ffi::OsString> {
        std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect()
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("meta").permissions().mode() & 0o7777
    }

    #[test]
    fn installs_atomically_keeps_backups_and_restores() {
        let root = tempfile::tempdir().expect("tmp");
        let host = RealHost::new(root.path());
        std::fs::create_dir_all(root.path().join("b")).expect("dir");
        std::fs::write(root.path().join("b/new"), "v2").expect("write");
        std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("dir");
        let installed = root.path().join("usr/local/bin/tool");
        std::fs::write(&installed, "v1").expect("write");
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o2711))
            .expect("chmod");

        let existed = host
            .backup_file(Path::new("/usr/local/bin/tool"), Path::new("/backup/tool"))
            .expect("backup");
        assert!(existed);
        host.install_file(
            Path::new("/b/new"),
            Path::new("/usr/local/bin/tool"),
            &entry("v2", "0755"),
        )
        .expect("install");
        assert_eq!(std::fs::read_to_string(&installed).expect("read"), "v2");
        assert_eq!(mode(&installed), 0o755);
        assert_eq!(
            names(&root.path().join("usr/local/bin")),
            ["tool"],
            "no temp files left behind"
        );
        host.restore_file(Path::new("/backup/tool"), Path::new("/usr/local/bin/tool"))
            .expect("restore");
        assert_eq!(std::fs::read_to_string(&installed).expect("read"), "v1");
        // The mode it had, setgid bit included, not the new file's.
        assert_eq!(mode(&installed), 0o2711);
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&installed).expect("meta");
        let backup = std::fs::metadata(root.path().join("backup/tool")).expect("meta");
        assert_eq!((meta.uid(), meta.gid()), (backup.uid(), backup.gid()));
        assert!(
            !host
                .backup_file(Path::new("/nope"), Path::new("/backup/nope"))
                .expect("backup")
        );
    }

    #[test]
    fn a_staged_file_that_differs_from_the_manifest_installs_nothing() {
        let root = tempfile::tempdir().expect("tmp");
        let host = RealHost::new(root.path());
        std::fs::create_dir_all(root.path().join("b")).expect("dir");
        std::fs::create_dir_all(root.path().join("usr/local/bin")).expect("dir");
        let installed = root.path().join("usr/local/bin/tool");
        std::fs::write(&installed, "v1").expect("write");
        // One flipped byte, the same size.
        std::fs::write(root.path().join("b/new"), "v3").expect("write");
        let err = host
            .install_file(
                Path::new("/b/new"),
                Path::new("/usr/local/bin/tool"),
                &entry("v2", "0755"),
            )
            .expect_err("flipped");
        assert!(matches!(err, OpError::Mismatch { .. }), "{err}");
        assert!(err.to_string().starts_with("/b/new: sha256 "), "{err}");
        assert_eq!(std::fs::read_to_string(&installed).expect("read"), "v1");
        assert_eq!(names(&root.path().join("usr/local/bin")), ["tool"]);
        let err = host
            .verify_staged(Path::new("/b/new"), &entry("v2", "0644"))
            .expect_err("flipped");
        assert!(matches!(err, OpError::Mismatch { .. }), "{err}");
        // Longer than the manifest says: refused without reading it to its end.
        std::fs::write(root.path().join("b/new"), "v2 and more").expect("write");
        let err = host
            .verify_staged(Path::new("/b/new"), &entry("v2", "0644"))
            .expect_err("longer");
        assert!(err.to_string().contains("more than 2 bytes"), "{err}");
        // A link in the staged folder is not followed.
        std::fs::remove_file(root.path().join("b/new")).expect("rm");
        std::os::unix::fs::symlink(&installed, root.path().join("b/new")).expect("link");
        let err = host
            .verify_staged(Path::new("/b/new"), &entry("v1", "0644"))
            .expect_err("link");
        assert!(err.to_string().starts_with("open /b/new"), "{err}");
    }
}
