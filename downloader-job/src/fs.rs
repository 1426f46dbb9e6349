//! Host file system side effects behind [`HostFs`], and the durable-write helpers built on
//! it: a file is written to a temporary name in its final folder, fsynced, renamed into
//! place and the folder fsynced; a fsync error fails the step. The write itself is the one
//! every part shares, [`baton_protocol::durable`], run over [`HostFs`].
//!
//! Every operation takes the full path it acts on (under the host root the job was given),
//! so tests run against a temp dir; [`testing::FaultyFs`] fails every mutating operation from
//! the n-th on, which is how the tests simulate a crash at each step.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use baton_protocol::durable::{self, DurableFs};

use crate::error::JobError;
use crate::layout::TEMP_PREFIX;

/// A file being written: bytes, then `sync` (fsync) before it is renamed into place.
pub trait FileSink: Write + Send {
    /// Flushes the file's data and metadata to disk.
    fn sync(&mut self) -> io::Result<()>;
    /// Starts writing what was written so far to disk, without waiting for it, while more
    /// is coming: so the final [`FileSink::sync`] has less to wait for. Durability is still
    /// that one's.
    fn start_write_back(&mut self) -> io::Result<()>;
}

impl FileSink for File {
    fn sync(&mut self) -> io::Result<()> {
        self.sync_all()
    }
    fn start_write_back(&mut self) -> io::Result<()> {
        // Linux starts the write-back of a range's dirty pages (without waiting) before
        // dropping its clean ones from the cache; nobody reads a staged file soon.
        rustix::fs::fadvise(&*self, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(())
    }
}

/// The file system operations the job performs on the host.
pub trait HostFs: std::fmt::Debug + Send + Sync {
    /// `lstat`; `None` when nothing is there.
    fn symlink_metadata(&self, path: &Path) -> io::Result<Option<Metadata>>;
    /// `stat` (follows links); `None` when nothing is there.
    fn metadata(&self, path: &Path) -> io::Result<Option<Metadata>>;
    /// A link's target; `None` when nothing is there.
    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>>;
    /// Opens a file for reading without following a final symlink.
    fn open_read(&self, path: &Path) -> io::Result<File>;
    /// The names in a folder.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>>;

    /// Creates a folder (its parent must exist) with exactly `mode`.
    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()>;
    /// Creates a new file (it must not exist) with exactly `mode`.
    fn create_file(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FileSink>>;
    /// fsyncs a folder, making renames and creations in it durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames `from` to `to`, replacing a file or link at `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Atomically swaps `a` and `b` (`renameat2(RENAME_EXCHANGE)`), both must exist.
    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()>;
    /// Creates a symlink `link` pointing at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Removes a file or link.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes a folder and everything in it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealFs;

fn absent_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl HostFs for RealFs {
    fn symlink_metadata(&self, path: &Path) -> io::Result<Option<Metadata>> {
        absent_is_none(std::fs::symlink_metadata(path))
    }

    fn metadata(&self, path: &Path) -> io::Result<Option<Metadata>> {
        absent_is_none(std::fs::metadata(path))
    }

    fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
        absent_is_none(std::fs::read_link(path))
    }

    fn open_read(&self, path: &Path) -> io::Result<File> {
        open_nofollow(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
        std::fs::read_dir(path)?
            .map(|e| e.map(|e| e.file_name()))
            .collect()
    }

    fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::create_dir(path)?;
        // Exactly `mode`, whatever the umask.
        std::fs::set_permissions(path, Permissions::from_mode(mode))
    }

    fn create_file(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FileSink>> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nofollow_flag())
            .open(path)?;
        file.set_permissions(Permissions::from_mode(mode))?;
        Ok(Box::new(file))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
        use rustix::fs::{CWD, RenameFlags, renameat_with};
        renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
    }

    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
}

fn nofollow_flag() -> i32 {
    // O_NOFOLLOW's bits fit an i32 (open(2) flags are a C int).
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Opens `path` for reading; a symlink as the final component is refused (`ELOOP`).
pub fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nofollow_flag())
        .open(path)
}

pub use baton_protocol::durable::{parent_of, temp_path};

/// Makes sure `dir` exists as a folder, creating missing ancestors (mode `0755`) and
/// fsyncing each parent after a creation. Returns whether anything was created.
pub fn ensure_dir(fs: &dyn HostFs, dir: &Path) -> Result<bool, JobError> {
    let found = match fs.metadata(dir) {
        // A file where an ancestor folder belongs: found (and named) further up.
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => None,
        other => other.map_err(|e| JobError::io(dir, "stat", e))?,
    };
    match found {
        Some(m) if m.is_dir() => return Ok(false),
        Some(_) => return Err(JobError::refused(dir, "exists and is not a folder")),
        None => {}
    }
    let parent = parent_of(dir);
    if parent != dir {
        ensure_dir(fs, parent)?;
    }
    fs.create_dir(dir, 0o755)
        .map_err(|e| JobError::io(dir, "create folder", e))?;
    fs.sync_dir(parent)
        .map_err(|e| JobError::io(parent, "fsync", e))?;
    Ok(true)
}

/// Writes `contents` to `path` durably and atomically: a temp file beside it, fsync, rename
/// over `path`, fsync the folder. A reader sees the old file or the new one, never a mix.
pub fn write_atomic(
    fs: &dyn HostFs,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<(), JobError> {
    write_atomic_with(fs, path, mode, |sink, tmp| {
        sink.write_all(contents)
            .map_err(|e| JobError::io(tmp, "write", e))
    })
}

/// Like [`write_atomic`], with the content produced by `fill` (which streams into the temp
/// file and may refuse it, e.g. on a digest mismatch; the temp file is then removed). The
/// steps are the shared [`baton_protocol::durable::write_with`].
pub fn write_atomic_with(
    fs: &dyn HostFs,
    path: &Path,
    mode: u32,
    fill: impl FnOnce(&mut dyn FileSink, &Path) -> Result<(), JobError>,
) -> Result<(), JobError> {
    durable::write_with(fs, path, mode, |sink, tmp| fill(sink.as_mut(), tmp))
}

/// The host file system as the shared durable write sees it.
impl DurableFs for dyn HostFs + '_ {
    type File = Box<dyn FileSink>;

    fn create_new(&self, path: &Path, mode: u32) -> io::Result<Self::File> {
        self.create_file(path, mode)
    }

    fn sync_file(&self, file: &mut Self::File) -> io::Result<()> {
        file.sync()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        HostFs::rename(self, from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        HostFs::sync_dir(self, dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        HostFs::remove_file(self, path)
    }
}

/// Points the symlink `link` at `target`, atomically (a temp link renamed over it), and
/// fsyncs the folder.
pub fn replace_symlink(fs: &dyn HostFs, link: &Path, target: &Path) -> Result<(), JobError> {
    let dir = parent_of(link);
    let tmp = durable::temp_beside(link);
    fs.symlink(target, &tmp)
        .map_err(|e| JobError::io(&tmp, "create link", e))?;
    if let Err(e) = fs.rename(&tmp, link) {
        let _ = fs.remove_file(&tmp);
        return Err(JobError::io(link, "rename link into place", e));
    }
    fs.sync_dir(dir).map_err(|e| JobError::io(dir, "fsync", e))
}

/// The content of a regular file of at most `cap` bytes; `None` if nothing is there or it is
/// not a regular file (a link or folder counts as "not our file": it will be replaced).
pub fn read_existing(fs: &dyn HostFs, path: &Path, cap: u64) -> Result<Option<Vec<u8>>, JobError> {
    match fs
        .symlink_metadata(path)
        .map_err(|e| JobError::io(path, "stat", e))?
    {
        Some(m) if m.is_file() && m.len() <= cap => {}
        _ => return Ok(None),
    }
    let file = fs
        .open_read(path)
        .map_err(|e| JobError::io(path, "open", e))?;
    let mut bytes = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| JobError::io(path, "read", e))?;
    Ok(Some(bytes))
}

/// Removes leftovers of interrupted runs (entries named [`TEMP_PREFIX`]…) from `dir`.
pub fn remove_temp_entries(fs: &dyn HostFs, dir: &Path) -> Result<usize, JobError> {
    let names = match fs.read_dir(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(JobError::io(dir, "list", e)),
    };
    let mut removed = 0;
    for name in names {
        if !name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = dir.join(&name);
        let is_dir = fs
            .symlink_metadata(&path)
            .map_err(|e| JobError::io(&path, "stat", e))?
            .is_some_and(|m| m.is_dir());
        let r = if is_dir {
            fs.remove_dir_all(&path)
        } else {
            fs.remove_file(&path)
        };
        r.map_err(|e| JobError::io(&path, "remove leftover", e))?;
        removed += 1;
    }
    if removed > 0 {
        fs.sync_dir(dir)
            .map_err(|e| JobError::io(dir, "fsync", e))?;
    }
    Ok(removed)
}

/// Test doubles for [`HostFs`].
#[cfg(test)]
pub mod testing {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// The real file system, recording every mutating operation and failing all of them from
    /// the `fail_from`-th (0-based) on, as if the process had died there.
    #[derive(Debug, Default)]
    pub struct FaultyFs {
        fail_from: Option<usize>,
        count: AtomicUsize,
        ops: Mutex<Vec<String>>,
    }

    impl FaultyFs {
        /// Fails nothing; only records.
        pub fn recording() -> Self {
            Self::default()
        }

        /// Fails every mutating operation from the `n`-th on.
        pub fn failing_from(n: usize) -> Self {
            Self {
                fail_from: Some(n),
                ..Self::default()
            }
        }

        /// The mutating operations attempted so far (`op path`).
        pub fn ops(&self) -> Vec<String> {
            self.ops.lock().map(|o| o.clone()).unwrap_or_default()
        }

        /// Number of mutating operations attempted.
        pub fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }

        fn step(&self, op: &str, path: &Path) -> io::Result<()> {
            let n = self.count.fetch_add(1, Ordering::SeqCst);
            if let Ok(mut ops) = self.ops.lock() {
                ops.push(format!("{op} {}", path.display()));
            }
            match self.fail_from {
                Some(f) if n >= f => Err(io::Error::other(format!("injected crash at op {n}"))),
                _ => Ok(()),
            }
        }
    }

    struct FaultySink<'a> {
        inner: Box<dyn FileSink>,
        fs: &'a FaultyFs,
        path: PathBuf,
        wrote: bool,
    }

    impl Write for FaultySink<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.wrote {
                self.wrote = true;
                self.fs.step("write", &self.path)?;
            }
            self.inner.write(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            self.inner.flush()
        }
    }

    impl FileSink for FaultySink<'_> {
        fn sync(&mut self) -> io::Result<()> {
            self.fs.step("fsync", &self.path)?;
            self.inner.sync()
        }
        fn start_write_back(&mut self) -> io::Result<()> {
            self.inner.start_write_back()
        }
    }

    // A sink borrows its FaultyFs and a boxed sink is 'static, so the tests leak their
    // FaultyFs (see `leak`), a few bytes per test.
    impl HostFs for &'static FaultyFs {
        fn symlink_metadata(&self, path: &Path) -> io::Result<Option<Metadata>> {
            RealFs.symlink_metadata(path)
        }
        fn metadata(&self, path: &Path) -> io::Result<Option<Metadata>> {
            RealFs.metadata(path)
        }
        fn read_link(&self, path: &Path) -> io::Result<Option<PathBuf>> {
            RealFs.read_link(path)
        }
        fn open_read(&self, path: &Path) -> io::Result<File> {
            RealFs.open_read(path)
        }
        fn read_dir(&self, path: &Path) -> io::Result<Vec<OsString>> {
            RealFs.read_dir(path)
        }
        fn create_dir(&self, path: &Path, mode: u32) -> io::Result<()> {
            self.step("create_dir", path)?;
            RealFs.create_dir(path, mode)
        }
        fn create_file(&self, path: &Path, mode: u32) -> io::Result<Box<dyn FileSink>> {
            self.step("create_file", path)?;
            let inner = RealFs.create_file(path, mode)?;
            Ok(Box::new(FaultySink {
                inner,
                fs: self,
                path: path.to_owned(),
                wrote: false,
            }))
        }
        fn sync_dir(&self, path: &Path) -> io::Result<()> {
            self.step("sync_dir", path)?;
            RealFs.sync_dir(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            self.step("rename", to)?;
            RealFs.rename(from, to)
        }
        fn exchange(&self, a: &Path, b: &Path) -> io::Result<()> {
            self.step("exchange", b)?;
            RealFs.exchange(a, b)
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.step("symlink", link)?;
            RealFs.symlink(target, link)
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.step("remove_file", path)?;
            RealFs.remove_file(path)
        }
        fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
            self.step("remove_dir_all", path)?;
            RealFs.remove_dir_all(path)
        }
    }

    /// A `FaultyFs` that lives for the rest of the test process (sinks borrow it).
    pub fn leak(fs: FaultyFs) -> &'static FaultyFs {
        Box::leak(Box::new(fs))
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{FaultyFs, leak};
    use super::*;

    #[test]
    fn write_atomic_replaces_and_sets_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file");
        ensure_dir(&RealFs, parent_of(&path)).unwrap();
        write_atomic(&RealFs, &path, b"one", 0o640).unwrap();
        write_atomic(&RealFs, &path, b"two", 0o755).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        // No temp file is left behind.
        assert_eq!(std::fs::read_dir(parent_of(&path)).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_keeps_the_old_file_when_interrupted_at_any_step() {
        for n in 0..4 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("file");
            std::fs::write(&path, b"old").unwrap();
            let fs = leak(FaultyFs::failing_from(n));
            let err = write_atomic(&fs, &path, b"new", 0o644).unwrap_err();
            assert!(err.to_string().contains("injected crash"), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), b"old", "failing from op {n}");
        }
    }

    #[test]
    fn write_atomic_fsyncs_file_then_folder() {
        let dir = tempfile::tempdir().unwrap();
        let fs = leak(FaultyFs::recording());
        write_atomic(&fs, &dir.path().join("f"), b"x", 0o644).unwrap();
        let ops: Vec<String> = fs
            .ops()
            .iter()
            .map(|o| o.split(' ').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(ops, ["create_file", "write", "fsync", "rename", "sync_dir"]);
    }

    #[test]
    fn ensure_dir_refuses_a_file_in_the_way() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"").unwrap();
        let err = ensure_dir(&RealFs, &dir.path().join("x/y")).unwrap_err();
        assert!(err.to_string().contains("not a folder"), "{err}");
    }

    #[test]
    fn replace_symlink_switches_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        replace_symlink(&RealFs, &link, Path::new("1.0.0")).unwrap();
        replace_symlink(&RealFs, &link, Path::new("2.0.0")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("2.0.0"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn read_existing_ignores_links_and_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        assert_eq!(read_existing(&RealFs, &f, 10).unwrap(), None);
        std::os::unix::fs::symlink("/etc/hostname", &f).unwrap();
        assert_eq!(read_existing(&RealFs, &f, 10).unwrap(), None);
    }

    #[test]
    fn temp_entries_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(temp_path(dir.path(), "x")).unwrap();
        std::fs::write(temp_path(dir.path(), "y"), b"").unwrap();
        std::fs::write(dir.path().join("keep"), b"").unwrap();
        assert_eq!(remove_temp_entries(&RealFs, dir.path()).unwrap(), 2);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
