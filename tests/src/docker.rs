//! Runs the `docker` CLI against the machine's real Docker Engine for the
//! harness: async calls for tests, blocking calls for `Drop` impls, every
//! error naming the command that failed, and a clear message telling how to
//! install Docker when it is missing.

use std::io;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// What to do when Docker is missing or unreachable.
pub const DOCKER_INSTALL_HINT: &str = "install Docker Engine (Debian: `apt-get install docker.io`, \
     others: https://docs.docker.com/engine/install/), start the daemon, and make sure this user \
     can reach /var/run/docker.sock";

/// Upper bound for one `docker` invocation, so a wedged daemon fails the test
/// instead of hanging it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// A failed `docker` invocation.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the `docker` command is not installed: {}", DOCKER_INSTALL_HINT)]
    NotInstalled,
    #[error(
        "the Docker daemon is not reachable ({detail}): {}",
        DOCKER_INSTALL_HINT
    )]
    DaemonUnreachable { detail: String },
    #[error("could not run `docker {command}`: {source}")]
    Spawn { command: String, source: io::Error },
    #[error("`docker {command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: ExitStatus,
        stderr: String,
    },
    #[error("`docker {command}` did not finish within {timeout:?}")]
    Timeout { command: String, timeout: Duration },
}

fn command_line(args: &[&str]) -> String {
    args.join(" ")
}

fn spawn_error(args: &[&str], source: io::Error) -> DockerError {
    if source.kind() == io::ErrorKind::NotFound {
        DockerError::NotInstalled
    } else {
        DockerError::Spawn {
            command: command_line(args),
            source,
        }
    }
}

/// Turns a finished invocation into its trimmed stdout, or an error.
fn checked(args: &[&str], output: Output) -> Result<String, DockerError> {
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned());
    }
    if stderr.contains("Cannot connect to the Docker daemon")
        || stderr.contains("permission denied while trying to connect to the Docker daemon")
    {
        return Err(DockerError::DaemonUnreachable { detail: stderr });
    }
    Err(DockerError::Failed {
        command: command_line(args),
        status: output.status,
        stderr,
    })
}

/// Runs `docker ARGS`, returning the raw output whatever the exit status.
pub async fn output(args: &[&str]) -> Result<Output, DockerError> {
    output_with_stdin(args, None).await
}

async fn output_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Result<Output, DockerError> {
    let mut command = tokio::process::Command::new("docker");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| spawn_error(args, e))?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)
            .await
            .map_err(|source| DockerError::Spawn {
                command: command_line(args),
                source,
            })?;
        // Dropping the pipe closes it: the command sees end of input.
    }
    match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
        Ok(result) => result.map_err(|source| DockerError::Spawn {
            command: command_line(args),
            source,
        }),
        Err(_) => Err(DockerError::Timeout {
            command: command_line(args),
            timeout: COMMAND_TIMEOUT,
        }),
    }
}

/// Runs `docker ARGS` and returns its trimmed stdout; a non-zero exit is an
/// error carrying stderr.
pub async fn run(args: &[&str]) -> Result<String, DockerError> {
    let out = output(args).await?;
    checked(args, out)
}

/// Like [`run`], feeding `input` to the command's stdin.
pub async fn run_with_stdin(args: &[&str], input: &[u8]) -> Result<String, DockerError> {
    let out = output_with_stdin(args, Some(input)).await?;
    checked(args, out)
}

/// Blocking [`run`], for `Drop` impls (which cannot await).
pub fn run_blocking(args: &[&str]) -> Result<String, DockerError> {
    let out = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| spawn_error(args, e))?;
    checked(args, out)
}

/// Checks that the CLI is installed and the daemon answers; returns the
/// daemon's version.
pub async fn ensure_available() -> Result<String, DockerError> {
    run(&["version", "--format", "{{.Server.Version}}"]).await
}

/// Whether a local image with this reference exists.
pub async fn image_exists(reference: &str) -> Result<bool, DockerError> {
    let out = output(&["image", "inspect", reference]).await?;
    Ok(out.status.success())
}
