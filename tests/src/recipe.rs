//! Image recipes under `images/` (`simhost`, `vmhost`): each recipe's `build.sh` is the
//! only place that computes its cache key (a content hash of the recipe folder) and decides
//! whether to build, serialising concurrent builds with a lock file. This module runs it
//! with an action (`tag`, `path`, `ensure`, …) and returns the last line it printed.

use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Lines of the script's stderr kept in an error.
const LOG_TAIL_LINES: usize = 40;

/// A recipe's `build.sh` could not be run, failed, or printed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error("could not run {script}: {source}")]
    Spawn {
        script: PathBuf,
        source: std::io::Error,
    },
    #[error("{script} {action} failed ({status}); last output:\n{log_tail}")]
    Failed {
        script: PathBuf,
        action: &'static str,
        status: std::process::ExitStatus,
        log_tail: String,
    },
    #[error("{script} {action} printed {stdout:?}, not {expected}")]
    Unexpected {
        script: PathBuf,
        action: &'static str,
        expected: &'static str,
        stdout: String,
    },
}

/// The recipe folder `images/<name>/` of this workspace.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .join("images")
        .join(name)
}

/// Runs `images/<name>/build.sh <action>` and returns the last line it printed on stdout,
/// trimmed, if `accept` takes it (`expected` says what it should have been).
pub async fn run(
    name: &str,
    action: &'static str,
    expected: &'static str,
    accept: impl Fn(&str) -> bool,
) -> Result<String, RecipeError> {
    let script = dir(name).join("build.sh");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|source| RecipeError::Spawn {
            script: script.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        return Err(RecipeError::Failed {
            script,
            action,
            status: out.status,
            log_tail: lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"),
        });
    }
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    match stdout.lines().last().map(str::trim) {
        Some(line) if accept(line) => Ok(line.to_owned()),
        _ => Err(RecipeError::Unexpected {
            script,
            action,
            expected,
            stdout,
        }),
    }
}
