//! The two binaries a bundle carries besides its packages: the static `baton-downloader`
//! (the image's entrypoint, so it must run `FROM scratch`: no ELF interpreter) and the
//! bundle's `baton-agent` (which must report the manifest's `agent.version`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bundle::error::BundleError;

/// The target the static binaries are built for (`make static`).
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile they are built with.
pub const STATIC_PROFILE_DIR: &str = "debug";
/// How long `baton-agent --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// `ETXTBSY`: executing a file open for writing.
const ETXTBSY: i32 = 26;
/// ELF program header type of the interpreter entry.
const PT_INTERP: u32 = 3;

/// Where `make static` leaves binary `name`: `$CARGO_TARGET_DIR` (default `target`, relative
/// to the working directory) `/x86_64-unknown-linux-gnu/debug/<name>`.
pub fn default_static_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target
        .join(STATIC_TARGET)
        .join(STATIC_PROFILE_DIR)
        .join(name)
}

/// The ELF interpreter of the executable at `path` (`None` for a static executable);
/// errors if it is not a 64-bit little-endian ELF file.
pub fn elf_interpreter(path: &Path) -> Result<Option<String>, BundleError> {
    let bytes = std::fs::read(path).map_err(|e| BundleError::io(path, "read", e))?;
    let not_elf = |why: &str| {
        BundleError::io(
            path,
            "check executable",
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not a 64-bit ELF executable: {why}"),
            ),
        )
    };
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err(not_elf("no ELF header"));
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err(not_elf("not ELF64 little-endian"));
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(u32::from_le_bytes)
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Err(not_elf("truncated header"));
    };
    for i in 0..usize::from(phnum) {
        let ph = phoff as usize + i * usize::from(phentsize);
        let Some(p_type) = u32_at(ph) else {
            return Err(not_elf("truncated program headers"));
        };
        if p_type != PT_INTERP {
            continue;
        }
        let (Some(offset), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return Err(not_elf("truncated program headers"));
        };
        let interp = bytes
            .get(offset as usize..(offset + size) as usize)
            .ok_or_else(|| not_elf("interpreter outside the file"))?;
        let interp = String::from_utf8_lossy(interp)
            .trim_end_matches('\0')
            .to_owned();
        return Ok(Some(interp));
    }
    Ok(None)
}

/// Refuses a downloader that is not a static executable.
pub fn check_static(path: &Path) -> Result<(), BundleError> {
    match elf_interpreter(path)? {
        None => Ok(()),
        Some(interpreter) => Err(BundleError::NotStatic {
            path: path.to_owned(),
            interpreter,
        }),
    }
}

/// Runs `<agent> --version` and refuses the agent unless the last word it prints is
/// `expected` (clap prints `baton-agent 2.0.0`).
pub fn check_agent_version(path: &Path, expected: &str) -> Result<(), BundleError> {
    let spawn = || {
        Command::new(path)
            .arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
    };
    let mut attempt = 0;
    let mut child = loop {
        match spawn() {
            // A file just written may still be open in a process forked meanwhile.
            Err(e) if e.raw_os_error() == Some(ETXTBSY) && attempt < 20 => {
                attempt += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other.map_err(|e| BundleError::io(path, "run --version", e))?,
        }
    };
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BundleError::io(
                    path,
                    "run --version",
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
            Err(e) => return Err(BundleError::io(path, "run --version", e)),
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        // Bounded: a version line is short.
        let _ = (&mut stdout).take(4096).read_to_string(&mut out);
    }
    let reported = out.split_whitespace().last().unwrap_or_default().to_owned();
    if reported == expected {
        Ok(())
    } else {
        Err(BundleError::AgentVersion {
            path: path.to_owned(),
            expected: expected.to_owned(),
            reported: out.trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_dynamic_executable_has_an_interpreter() {
        // The test binary itself is dynamically linked (a normal host build).
        let me = std::env::current_exe().unwrap();
        let interp = elf_interpreter(&me).unwrap();
        assert!(
            interp.as_deref().is_some_and(|i| i.contains("ld-")),
            "{interp:?}"
        );
        let err = check_static(&me).unwrap_err().to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("make static"),
            "{err}"
        );
    }

    #[test]
    fn a_non_elf_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("script");
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        let err = elf_interpreter(&p).unwrap_err().to_string();
        assert!(err.contains("not a 64-bit ELF"), "{err}");
    }

    #[test]
    fn agent_version_must_match() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("baton-agent");
        std::fs::write(&p, "#!/bin/sh\necho baton-agent 1.0.0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_agent_version(&p, "1.0.0").unwrap();
        let err = check_agent_version(&p, "2.0.0").unwrap_err().to_string();
        assert!(err.contains("BATON_BUILD_VERSION=2.0.0"), "{err}");
    }

    #[test]
    fn default_binaries_are_in_the_static_target_dir() {
        let p = default_static_binary("baton-downloader");
        assert!(
            p.ends_with("x86_64-unknown-linux-gnu/debug/baton-downloader"),
            "{}",
            p.display()
        );
    }
}
