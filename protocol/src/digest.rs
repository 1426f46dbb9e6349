//! sha256 while streaming, with a size cap: the one way Baton checks content against the
//! digest and size a manifest names. The bytes are hashed as they pass to their
//! destination (one pass), and reading stops as soon as more than the cap arrived, so a
//! file that grows or lies about its size is never read to its end.
//!
//! Beside [`crate::durable`] in `protocol` for the same reason: the agent and the downloader
//! job both depend on `protocol`, and `sha2` is small.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

/// Bytes read per step.
const CHUNK: usize = 64 * 1024;

/// Streaming stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source could not be read.
    #[error("read: {0}")]
    Read(io::Error),
    /// The destination could not be written.
    #[error("write: {0}")]
    Write(io::Error),
    /// More than the cap arrived.
    #[error("more than {cap} bytes ({read} read so far)")]
    TooLarge {
        /// The cap.
        cap: u64,
        /// Bytes read when streaming stopped.
        read: u64,
    },
}

/// What passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hashed {
    /// Bytes streamed.
    pub bytes: u64,
    /// Their sha256, lowercase hex.
    pub sha256: String,
}

/// Streams `reader` into `sink` (or only hashes it when there is no sink), refusing it as
/// soon as more than `cap` bytes arrived.
pub fn copy_hashed(
    reader: &mut dyn Read,
    mut sink: Option<&mut dyn Write>,
    cap: u64,
) -> Result<Hashed, StreamError> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Read(e)),
        };
        total += n as u64;
        if total > cap {
            return Err(StreamError::TooLarge { cap, read: total });
        }
        let chunk = &buf[..n];
        hasher.update(chunk);
        if let Some(w) = sink.as_mut() {
            w.write_all(chunk).map_err(StreamError::Write)?;
        }
    }
    Ok(Hashed {
        bytes: total,
        sha256: hex(&hasher.finalize()),
    })
}

/// Content did not match the size and sha256 a manifest names.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Streaming stopped (a read or write failed, or more than the size arrived).
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// Fewer bytes than the manifest names.
    #[error("{actual} bytes, not the manifest's {expected}")]
    Size {
        /// The manifest's size.
        expected: u64,
        /// Bytes read.
        actual: u64,
    },
    /// Other content.
    #[error("sha256 {actual}, not the manifest's {expected}")]
    Sha256 {
        /// The manifest's digest.
        expected: String,
        /// The content's.
        actual: String,
    },
}

/// Streams `reader` into `sink` (or only hashes it) and checks it is exactly `size` bytes
/// with sha256 `sha256`, never reading more than `size` bytes. The caller discards what
/// reached the sink when this fails.
pub fn copy_verified(
    reader: &mut dyn Read,
    sink: Option<&mut dyn Write>,
    size: u64,
    sha256: &str,
) -> Result<Hashed, VerifyError> {
    let hashed = copy_hashed(reader, sink, size)?;
    if hashed.bytes != size {
        return Err(VerifyError::Size {
            expected: size,
            actual: hashed.bytes,
        });
    }
    if hashed.sha256 != sha256 {
        return Err(VerifyError::Sha256 {
            expected: sha256.to_owned(),
            actual: hashed.sha256,
        });
    }
    Ok(hashed)
}

/// The lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn hashes_what_it_copies() {
        let mut out = Vec::new();
        let h = copy_hashed(&mut &b"hello"[..], Some(&mut out), 5).expect("copy");
        assert_eq!(h.bytes, 5);
        assert_eq!(h.sha256, HELLO);
        assert_eq!(out, b"hello");
        assert_eq!(sha256_hex(b"hello"), HELLO);
    }

    #[test]
    fn verifies_size_and_digest() {
        let mut out = Vec::new();
        copy_verified(&mut &b"hello"[..], Some(&mut out), 5, HELLO).expect("same");
        assert_eq!(out, b"hello");
        let err = copy_verified(&mut &b"hellO"[..], None, 5, HELLO).expect_err("flipped");
        assert!(matches!(err, VerifyError::Sha256 { .. }), "{err}");
        let err = copy_verified(&mut &b"hell"[..], None, 5, HELLO).expect_err("short");
        assert!(matches!(err, VerifyError::Size { actual: 4, .. }), "{err}");
        let err = copy_verified(&mut &b"hello!"[..], None, 5, HELLO).expect_err("long");
        assert!(
            matches!(err, VerifyError::Stream(StreamError::TooLarge { .. })),
            "{err}"
        );
    }

    #[test]
    fn stops_reading_past_the_cap() {
        let mut endless = io::repeat(b'a');
        let err = copy_hashed(&mut endless, None, 5).expect_err("cap");
        assert!(
            matches!(err, StreamError::TooLarge { cap: 5, read } if read > 5),
            "{err}"
        );
    }
}
