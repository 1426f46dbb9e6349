//! Verification of a package against its manifest entry: the size first (from the file's
//! metadata, before reading a byte), then the sha256 computed while the bytes are streamed
//! to their destination — one pass, never more than the declared size read (the shared
//! [`baton_protocol::digest::copy_verified`]).

use std::io::{Read, Write};
use std::path::Path;

use baton_protocol::digest::{self, StreamError, VerifyError};
use baton_protocol::manifest::FileEntry;

use crate::error::JobError;
use crate::fs::HostFs;

/// Refuses a file whose size (from its metadata) differs from the manifest's.
pub fn check_size(
    path: &Path,
    field: &str,
    entry: &FileEntry,
    actual: u64,
) -> Result<(), JobError> {
    if actual == entry.size {
        Ok(())
    } else {
        Err(JobError::SizeMismatch {
            path: path.to_owned(),
            field: field.to_owned(),
            expected: entry.size,
            actual,
        })
    }
}

/// Streams `reader` (the package at `src`) into `sink` (at `dest`), or only hashes it when
/// there is no sink, refusing it as soon as it exceeds the manifest size and at the end if
/// it is shorter or its sha256 differs. Returns the bytes copied.
pub fn copy_verified(
    reader: &mut dyn Read,
    src: &Path,
    field: &str,
    entry: &FileEntry,
    sink: Option<(&mut dyn Write, &Path)>,
) -> Result<u64, JobError> {
    let (writer, dest) = match sink {
        Some((w, dest)) => (Some(w), Some(dest)),
        None => (None, None),
    };
    let size_mismatch = |actual| JobError::SizeMismatch {
        path: src.to_owned(),
        field: field.to_owned(),
        expected: entry.size,
        actual,
    };
    let hashed =
        digest::copy_verified(reader, writer, entry.size, &entry.sha256).map_err(|e| match e {
            VerifyError::Stream(StreamError::Read(e)) => JobError::io(src, "read", e),
            VerifyError::Stream(StreamError::Write(e)) => {
                JobError::io(dest.unwrap_or(src), "write", e)
            }
            VerifyError::Stream(StreamError::TooLarge { read, .. }) => size_mismatch(read),
            VerifyError::Size { actual, .. } => size_mismatch(actual),
            VerifyError::Sha256 { expected, actual } => JobError::DigestMismatch {
                path: src.to_owned(),
                field: field.to_owned(),
                expected,
                actual,
            },
        })?;
    Ok(hashed.bytes)
}

/// Whether the file at `path` on the host is a regular file with the manifest entry's size
/// and sha256 and exactly `mode`; anything else (missing, a link, other content) is `false`.
pub fn file_matches(
    fs: &dyn HostFs,
    path: &Path,
    field: &str,
    entry: &FileEntry,
    mode: u32,
) -> Result<bool, JobError> {
    use std::os::unix::fs::PermissionsExt;
    match fs
        .symlink_metadata(path)
        .map_err(|e| JobError::io(path, "stat", e))?
    {
        Some(m)
            if m.is_file() && m.len() == entry.size && m.permissions().mode() & 0o7777 == mode => {}
        _ => return Ok(false),
    }
    let mut file = fs
        .open_read(path)
        .map_err(|e| JobError::io(path, "open", e))?;
    match copy_verified(&mut file, path, field, entry, None) {
        Ok(_) => Ok(true),
        Err(JobError::SizeMismatch { .. } | JobError::DigestMismatch { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

pub use baton_protocol::digest::sha256_hex;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(content: &[u8]) -> FileEntry {
        FileEntry {
            path: "packages/x".into(),
            dest: None,
            size: content.len() as u64,
            sha256: sha256_hex(content),
            mode: "0644".into(),
        }
    }

    #[test]
    fn copies_matching_content() {
        let e = entry(b"hello");
        let mut out = Vec::new();
        let n = copy_verified(
            &mut &b"hello"[..],
            Path::new("src"),
            "f",
            &e,
            Some((&mut out, Path::new("dst"))),
        )
        .unwrap();
        assert_eq!(n, 5);
        assert_eq!(out, b"hello");
    }

    #[test]
    fn refuses_same_size_other_content_naming_the_field() {
        let e = entry(b"hello");
        let err = copy_verified(
            &mut &b"jello"[..],
            Path::new("/bundle/x"),
            "components[0].files[1]",
            &e,
            None,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, JobError::DigestMismatch { .. }), "{msg}");
        assert!(
            msg.contains("/bundle/x") && msg.contains("components[0].files[1].sha256"),
            "{msg}"
        );
    }

    #[test]
    fn stops_reading_past_the_declared_size() {
        let e = entry(b"hello");
        // An endless reader: the cap must stop it.
        let mut endless = std::io::repeat(b'a');
        let err = copy_verified(&mut endless, Path::new("src"), "f", &e, None).unwrap_err();
        assert!(
            matches!(err, JobError::SizeMismatch { actual, .. } if actual > 5),
            "{err}"
        );
    }

    #[test]
    fn refuses_short_content() {
        let e = entry(b"hello");
        let err = copy_verified(&mut &b"hell"[..], Path::new("src"), "f", &e, None).unwrap_err();
        assert!(
            matches!(
                err,
                JobError::SizeMismatch {
                    actual: 4,
                    expected: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn size_is_checked_from_metadata() {
        let e = entry(b"hello");
        assert!(check_size(Path::new("p"), "f", &e, 5).is_ok());
        let err = check_size(Path::new("p"), "agent.file", &e, 6).unwrap_err();
        assert!(err.to_string().contains("agent.file.size 5"), "{err}");
    }
}
