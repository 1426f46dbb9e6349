//! Durable, atomic file writes, the one way every part of Baton replaces a file on a host:
//! a temporary file in the destination's folder, filled, fsynced, renamed over the
//! destination, then the folder fsynced. A reader sees the old file or the new one, never
//! a mix, and once the call returns the new file survives a power loss. An fsync error is
//! fatal for the write (the caller's step fails).
//!
//! It lives in `protocol`, with no feature gate and only `std`, because both the agent and
//! the downloader job write files on hosts this way and `protocol` is the one crate both
//! already depend on; `systemd-bus` is about the bus and pulls in zbus. The file system is
//! reached through [`DurableFs`] so the downloader's fault-injecting fake can fail each
//! step; [`StdFs`] is the real one.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every temporary name; such entries are never bundles, agent versions or
/// installed files, and whoever owns the folder may remove them as leftovers.
pub const TEMP_PREFIX: &str = ".baton-tmp-";

/// One step of a durable write failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {action}: {source}")]
pub struct DurableError {
    /// The file or folder the step acted on.
    pub path: PathBuf,
    /// The step (`create`, `write`, `fsync`, `rename into place`, …).
    pub action: &'static str,
    /// The I/O error.
    pub source: io::Error,
}

impl DurableError {
    /// An error of `action` on `path`.
    pub fn new(path: impl Into<PathBuf>, action: &'static str, source: io::Error) -> Self {
        Self {
            path: path.into(),
            action,
            source,
        }
    }
}

/// The file system operations a durable write makes.
pub trait DurableFs {
    /// A file being written.
    type File: Write;
    /// Creates a new file (it must not exist) with exactly `mode`.
    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Self::File>;
    /// Flushes the file's data and metadata to disk (fsync).
    fn sync_file(&self, file: &mut Self::File) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing a file at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// fsyncs a folder, making renames in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct StdFs;

impl DurableFs for StdFs {
    type File = File;

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<File> {
        // O_CREAT|O_EXCL, and O_NOFOLLOW: a name planted in the folder (a link to elsewhere)
        // is never written through.
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(nofollow())
            .mode(0o600)
            .open(path)?;
        // Exactly `mode`, whatever the umask.
        file.set_permissions(Permissions::from_mode(mode))?;
        Ok(file)
    }

    fn sync_file(&self, file: &mut File) -> io::Result<()> {
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

fn nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Opens `path` for reading without following a symbolic link at its last component (a
/// staged or backed-up file is a regular file; a link there is refused, `ELOOP`).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow())
        .open(path)
}

/// A fresh name for a temporary entry in `dir`: [`TEMP_PREFIX`], `what`, the process id,
/// the time and a counter, so concurrent writers never collide.
pub fn temp_path(dir: &Path, what: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{TEMP_PREFIX}{what}-{}-{nanos:08x}-{n}",
        std::process::id()
    ))
}

/// A fresh temporary name in the folder of `path`, for an entry that will be renamed over
/// it.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    temp_path(parent_of(path), &name)
}

/// The folder holding `path` (its parent; `.` for a bare name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Replaces `path` with content produced by `fill`, durably: `fill` streams into a new
/// temporary file beside `path` (and may refuse it, e.g. on a digest mismatch: the
/// temporary file is then removed and nothing changes), which is fsynced, renamed over
/// `path`, and the folder fsynced. The folder must exist.
pub fn write_with<F, E>(
    fs: &F,
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut F::File, &Path) -> Result<(), E>,
) -> Result<(), E>
where
    F: DurableFs + ?Sized,
    E: From<DurableError>,
{
    let dir = parent_of(path);
    let tmp = temp_beside(path);
    let result = (|| {
        let mut file = fs
            .create_new(&tmp, mode)
            .map_err(|e| DurableError::new(&tmp, "create", e))?;
        fill(&mut file, &tmp)?;
        file.flush()
            .map_err(|e| DurableError::new(&tmp, "write", e))?;
        fs.sync_file(&mut file)
            .map_err(|e| DurableError::new(&tmp, "fsync", e))?;
        drop(file);
        fs.rename(&tmp, path)
            .map_err(|e| DurableError::new(path, "rename into place", e))?;
        Ok(())
    })();
    if result.is_err() {
        // Best effort: a leftover temporary file is harmless (and named as one).
        let _ = fs.remove_file(&tmp);
        return result;
    }
    fs.sync_dir(dir)
        .map_err(|e| DurableError::new(dir, "fsync", e).into())
}

/// Replaces `path` with `bytes` durably (see [`write_with`]), creating its folder if
/// needed.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), DurableError> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir).map_err(|e| DurableError::new(dir, "create folder", e))?;
    write_with(&StdFs, path, mode, |file, tmp| {
        file.write_all(bytes)
            .map_err(|e| DurableError::new(tmp, "write", e))
    })
}

/// Replaces `dest` with a copy of `source` durably (see [`write_with`]), creating its
/// folder if needed.
pub fn copy(source: &Path, dest: &Path, mode: u32) -> Result<(), DurableError> {
    let dir = parent_of(dest);
    std::fs::create_dir_all(dir).map_err(|e| DurableError::new(dir, "create folder", e))?;
    let mut from = open_nofollow(source).map_err(|e| DurableError::new(source, "open", e))?;
    write_with(&StdFs, dest, mode, |file, tmp| {
        io::copy(&mut from, file)
            .map(|_| ())
            .map_err(|e| DurableError::new(tmp, "copy", e))
    })
}

/// fsyncs the folder `dir` (after removing or renaming an entry in it).
pub fn sync_dir(dir: &Path) -> Result<(), DurableError> {
    StdFs
        .sync_dir(dir)
        .map_err(|e| DurableError::new(dir, "fsync", e))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_replaces_and_sets_the_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("a/b/file");
        write(&path, b"one", 0o640).expect("write");
        write(&path, b"two", 0o755).expect("again");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        assert_eq!(names(parent_of(&path)), ["file"], "no temp file left");
    }

    #[test]
    fn never_writes_or_reads_through_a_link() {
        let dir = tempfile::tempdir().expect("tmp");
        let target = dir.path().join("target");
        std::fs::write(&target, b"keep").expect("target");
        let planted = dir.path().join("planted");
        std::os::unix::fs::symlink(&target, &planted).expect("link");
        let err = StdFs.create_new(&planted, 0o644).expect_err("exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        let err = open_nofollow(&planted).expect_err("a link");
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::LOOP.raw_os_error())
        );
        let err = copy(&planted, &dir.path().join("copy"), 0o644).expect_err("a link");
        assert!(err.to_string().contains("planted: open"), "{err}");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
    }

    #[test]
    fn copies_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("src"), b"content").expect("src");
        copy(&dir.path().join("src"), &dir.path().join("d/dest"), 0o600).expect("copy");
        assert_eq!(
            std::fs::read(dir.path().join("d/dest")).expect("read"),
            b"content"
        );
        let err = copy(&dir.path().join("nope"), &dir.path().join("x"), 0o600)
            .expect_err("missing source");
        assert!(err.to_string().contains("nope: open"), "{err}");
    }

    /// Records each step and fails from the `fail_from`-th on.
    struct Recording {
        ops: RefCell<Vec<&'static str>>,
        fail_from: usize,
    }

    impl Recording {
        fn step(&self, op: &'static str) -> io::Result<()> {
            let mut ops = self.ops.borrow_mut();
            ops.push(op);
            if ops.len() > self.fail_from {
                Err(io::Error::other("injected"))
            } else {
                Ok(())
            }
        }
    }

    impl DurableFs for Recording {
        type File = File;
        fn create_new(&self, path: &Path, mode: u32) -> io::Result<File> {
            self.step("create")?;
            StdFs.create_new(path, mode)
        }
        fn sync_file(&self, file: &mut File) -> io::Result<()> {
            self.step("fsync")?;
            StdFs.sync_file(file)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.step("rename")?;
            StdFs.rename(from, to)
        }
        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.step("sync_dir")?;
            StdFs.sync_dir(dir)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            StdFs.remove_file(path)
        }
    }

    #[test]
    fn fsyncs_the_file_then_the_folder_and_keeps_the_old_file_on_any_failure() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let fs = Recording {
            ops: RefCell::new(Vec::new()),
            fail_from: usize::MAX,
        };
        write_with(&fs, &path, 0o644, |f, _| {
            f.write_all(b"old")
                .map_err(|e| DurableError::new("f", "write", e))
        })
        .expect("write");
        assert_eq!(*fs.ops.borrow(), ["create", "fsync", "rename", "sync_dir"]);
        for n in 0..3 {
            let fs = Recording {
                ops: RefCell::new(Vec::new()),
                fail_from: n,
            };
            let err = write_with(&fs, &path, 0o644, |f, _| {
                f.write_all(b"new")
                    .map_err(|e| DurableError::new("f", "write", e))
            })
            .expect_err("injected");
            assert!(err.to_string().contains("injected"), "{err}");
            assert_eq!(std::fs::read(&path).expect("read"), b"old", "step {n}");
            assert_eq!(names(dir.path()), ["f"], "temp file removed after step {n}");
        }
    }

    #[test]
    fn a_refused_fill_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("f");
        let err = write_with(&StdFs, &path, 0o644, |_, tmp| {
            Err(DurableError::new(tmp, "verify", io::Error::other("digest")))
        })
        .expect_err("refused");
        assert_eq!(err.action, "verify");
        assert!(names(dir.path()).is_empty());
    }
}
