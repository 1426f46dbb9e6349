//! Commands the demo shows and runs: printed as one shell line, then run as printed, their
//! output passed through as it comes.

use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::DemoError;

/// `args` as one shell line: arguments with anything but `[A-Za-z0-9_./:=@,+-]` single-quoted.
pub fn shell_line(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_./:=@,+-".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The path to show for a program: relative to the current folder when under it.
pub(super) fn shown(program: &Path) -> String {
    std::env::current_dir()
        .ok()
        .and_then(|cwd| program.strip_prefix(cwd).ok().map(Path::to_path_buf))
        .unwrap_or_else(|| program.to_owned())
        .display()
        .to_string()
}

/// Runs `program args`, printing the command and then its output line by line as it comes
/// (indented; `println!`, so a test captures it). Fails unless it exits 0.
pub(super) async fn run_streamed(program: &Path, args: &[String]) -> Result<(), DemoError> {
    let mut line = vec![shown(program)];
    line.extend(args.iter().cloned());
    let command = shell_line(&line);
    println!("\n    $ {command}\n");
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| DemoError::Setup(format!("could not run {command}: {e}")))?;
    let mut stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
    let mut stderr = child.stderr.take().map(|s| BufReader::new(s).lines());
    let mut last_error = String::new();
    loop {
        tokio::select! {
            line = async { stdout.as_mut()?.next_line().await.ok().flatten() }, if stdout.is_some() => match line {
                Some(line) => println!("    {line}"),
                None => stdout = None,
            },
            line = async { stderr.as_mut()?.next_line().await.ok().flatten() }, if stderr.is_some() => match line {
                Some(line) => {
                    println!("    {line}");
                    last_error = line;
                }
                None => stderr = None,
            },
            else => break,
        }
    }
    let status = child
        .wait()
        .await
        .map_err(|e| DemoError::Setup(format!("waiting for {command}: {e}")))?;
    println!();
    if status.success() {
        Ok(())
    } else {
        Err(DemoError::Command {
            command,
            status: status.to_string(),
            detail: if last_error.is_empty() {
                String::new()
            } else {
                format!(": {last_error}")
            },
        })
    }
}

/// Runs `args` (the program first); returns its stdout. Fails unless it exits 0.
pub(super) async fn run_captured(args: &[String]) -> Result<String, DemoError> {
    let command = shell_line(args);
    let (program, rest) = args
        .split_first()
        .ok_or_else(|| DemoError::Setup("empty command".into()))?;
    let out = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| DemoError::Setup(format!("could not run {command}: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(DemoError::Command {
            command,
            status: out.status.to_string(),
            detail: format!(
                ": {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_quote_what_a_shell_would_split_or_expand() {
        let args = [
            "curl",
            "-d",
            r#"{"a": 1}"#,
            "it's",
            "http://127.0.0.1:7480/v1",
        ]
        .map(str::to_owned);
        assert_eq!(
            shell_line(&args),
            r#"curl -d '{"a": 1}' 'it'\''s' http://127.0.0.1:7480/v1"#
        );
    }
}
