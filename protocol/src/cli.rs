//! What the binaries' command lines share: the etcd TLS flags ([`EtcdTlsArgs`]), logging
//! setup ([`init_logging`]), and an optional TOML configuration file whose keys are the
//! flags' names ([`with_config_file`]), so a daemon can be configured by flags, file or
//! environment (in that order of precedence) with one definition of each setting (its clap
//! argument).

use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::error::ContextKind;
use clap::parser::ValueSource;
use clap::{ArgAction, Args, CommandFactory};
use serde::Serialize;

use crate::etcd::EtcdTls;

/// TLS for an etcd connection over `https://` (files named on the machine that connects).
#[derive(Debug, Clone, Default, PartialEq, Eq, Args, Serialize)]
pub struct EtcdTlsArgs {
    /// CA certificate (PEM) for `https://` etcd endpoints.
    #[arg(long, env = "BATON_ETCD_CA_FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd.
    #[arg(long, env = "BATON_ETCD_CERT_FILE", requires = "etcd_ca_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, env = "BATON_ETCD_KEY_FILE", requires = "etcd_ca_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_key_file: Option<PathBuf>,
    /// Name to verify etcd's certificate against, if not the endpoint's host.
    #[arg(long, env = "BATON_ETCD_DOMAIN", requires = "etcd_ca_file")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_domain: Option<String>,
}

/// A TLS setting refused; names the flag(s) at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {reason}")]
pub struct TlsFlagError {
    /// The flag, e.g. `--etcd-ca-file`.
    pub flag: String,
    /// Why.
    pub reason: String,
}

impl EtcdTlsArgs {
    /// The TLS settings, if a CA file is named; checked, errors naming the flag with
    /// `prefix` (`--etcd` for these flags, `--agent-etcd` for the orchestrator's agent ones).
    pub fn tls(&self, prefix: &str) -> Result<Option<EtcdTls>, TlsFlagError> {
        tls_from(
            prefix,
            &self.etcd_ca_file,
            &self.etcd_cert_file,
            &self.etcd_key_file,
            &self.etcd_domain,
        )
    }

    /// The files named (mounted where another process must read them).
    pub fn files(&self) -> Vec<PathBuf> {
        [
            &self.etcd_ca_file,
            &self.etcd_cert_file,
            &self.etcd_key_file,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect()
    }
}

/// TLS settings from separate values, checked; errors name the flag `<prefix>-<field>`.
pub fn tls_from(
    prefix: &str,
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
    domain: &Option<String>,
) -> Result<Option<EtcdTls>, TlsFlagError> {
    let Some(ca_file) = ca_file.clone() else {
        return Ok(None);
    };
    let tls = EtcdTls {
        ca_file,
        cert_file: cert_file.clone(),
        key_file: key_file.clone(),
        domain: domain.clone(),
    };
    tls.check()
        .map_err(|(field, reason)| match field.strip_prefix("tls.") {
            Some(f) => TlsFlagError {
                flag: format!("{prefix}-{}", f.replace('_', "-")),
                reason,
            },
            None => TlsFlagError {
                flag: format!("{prefix}-cert-file and {prefix}-key-file"),
                reason,
            },
        })?;
    Ok(Some(tls))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Where and how a binary logs (`RUST_LOG` filters, `info` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    /// Pretty or JSON.
    pub format: LogFormat,
    /// To stderr (colours only on a terminal, compact lines without the target), leaving
    /// stdout to the program's output; else to stdout.
    pub stderr: bool,
    /// With timestamps (off where the journal adds its own).
    pub timestamps: bool,
}

impl Logging {
    /// A daemon's logging: stdout, with timestamps.
    pub fn daemon(json: bool) -> Self {
        Self {
            format: if json {
                LogFormat::Json
            } else {
                LogFormat::Pretty
            },
            stderr: false,
            timestamps: true,
        }
    }
}

/// Sets up `tracing` output for the process (once, from `main`).
pub fn init_logging(logging: Logging) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (logging.stderr, logging.timestamps, logging.format) {
        (true, _, format) => {
            let builder = builder
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_target(false);
            match format {
                LogFormat::Pretty => builder.compact().init(),
                LogFormat::Json => builder.json().init(),
            }
        }
        (false, true, LogFormat::Pretty) => builder.init(),
        (false, true, LogFormat::Json) => builder.json().init(),
        (false, false, LogFormat::Pretty) => builder.without_time().init(),
        (false, false, LogFormat::Json) => builder.without_time().json().init(),
    }
}

/// A configuration file could not be used; names the file (and the key).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not TOML.
    #[error("{}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A key is no setting, or its value is not one the setting takes.
    #[error("{}: {key}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A configuration could not be written as a file.
    #[error("writing the configuration as TOML: {0}")]
    Write(#[from] toml::ser::Error),
}

/// The command line `args` (program name first) with the settings of the configuration
/// file named by the argument `config` (`--config FILE`, or its environment variable)
/// put in front: each key is a flag's name with `_` for `-` (`download_timeout = "10m"`,
/// `etcd = ["http://…"]`, `log_json = true`). Flags win over the file, and the file over
/// environment variables (which in a container are often the image's defaults: the
/// orchestrator image sets `BATON_LISTEN`). A key that names no flag, or a value the flag refuses, is an error naming the file
/// and the key. Without a file, or if the command line does not parse, `args` is returned
/// unchanged (parsing it again reports the problem).
pub fn with_config_file<C: CommandFactory>(
    args: Vec<OsString>,
    config: &str,
) -> Result<Vec<OsString>, ConfigFileError> {
    let command = C::command();
    let Ok(matches) = command.clone().try_get_matches_from(args.iter()) else {
        return Ok(args);
    };
    let Some(path) = matches.get_one::<PathBuf>(config).cloned() else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigFileError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigFileError::Parse {
        path: path.clone(),
        source,
    })?;
    let mut from_file: Vec<OsString> = Vec::new();
    for (key, value) in &table {
        let key_error = |reason: String| ConfigFileError::Key {
            path: path.clone(),
            key: key.clone(),
            reason,
        };
        let long = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(long.as_str()) && a.get_id() != config)
            .ok_or_else(|| key_error("no such setting".to_owned()))?;
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine)
        );
        if given {
            continue;
        }
        let switch = matches!(arg.get_action(), ArgAction::SetTrue);
        let values: Vec<String> = match value {
            toml::Value::Boolean(on) if switch => {
                if *on {
                    from_file.push(format!("--{long}").into());
                }
                continue;
            }
            toml::Value::Array(items) => items
                .iter()
                .map(|v| scalar(v).ok_or_else(|| key_error("expected a list of values".into())))
                .collect::<Result<_, _>>()?,
            v => vec![scalar(v).ok_or_else(|| key_error("expected a value".into()))?],
        };
        from_file.extend(values.into_iter().map(|v| format!("--{long}={v}").into()));
    }
    let mut out = Vec::with_capacity(args.len() + from_file.len());
    let mut rest = args.into_iter();
    out.extend(rest.next());
    out.extend(from_file);
    out.extend(rest);
    // The command line alone parsed: an error now comes from the file's values.
    if let Err(e) = command.try_get_matches_from(out.iter()) {
        let key = e
            .get(ContextKind::InvalidArg)
            .map(|a| a.to_string())
            .and_then(|a| a.split_whitespace().next().map(str::to_owned))
            .map(|a| a.trim_start_matches('-').replace('-', "_"))
            .unwrap_or_else(|| ".".to_owned());
        return Err(ConfigFileError::Key {
            path,
            key,
            reason: first_line(&e.to_string()),
        });
    }
    Ok(out)
}

/// `value` as TOML text, for [`with_config_file`] to read back.
pub fn config_file_text<T: Serialize>(value: &T) -> Result<String, ConfigFileError> {
    Ok(toml::to_string(value)?)
}

/// The file named `path` as [`with_config_file`] reads it: its text, checked to be TOML.
pub fn read_config_file(path: &Path) -> Result<String, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_owned(),
        source,
    })?;
    text.parse::<toml::Table>()
        .map_err(|source| ConfigFileError::Parse {
            path: path.to_owned(),
            source,
        })?;
    Ok(text)
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// clap's error without its usage lines.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser, PartialEq)]
    struct Cli {
        #[arg(long, env = "BATON_TEST_CLI_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
        etcd: Vec<String>,
        #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
        timeout: Duration,
        #[arg(long)]
        log_json: bool,
        #[command(flatten)]
        tls: EtcdTlsArgs,
    }

    fn parse(file: &str, flags: &[&str]) -> Result<Cli, ConfigFileError> {
        let dir = std::env::temp_dir().join(format!("baton-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(format!("{}.toml", flags.len()));
        std::fs::write(&path, file).expect("write");
        let mut args: Vec<OsString> = vec!["x".into(), "--config".into(), path.clone().into()];
        args.extend(flags.iter().map(OsString::from));
        let args = with_config_file::<Cli>(args, "config");
        let _ = std::fs::remove_file(&path);
        Ok(Cli::try_parse_from(args?).expect("parses"))
    }

    #[test]
    fn the_file_sets_what_the_flags_do_not() {
        let c = parse(
            "etcd = [\"http://a:1\", \"http://b:1\"]\ntimeout = \"90s\"\nlog_json = true\netcd_ca_file = \"/etc/baton/ca.pem\"\n",
            &["--timeout", "2m"],
        )
        .expect("config");
        assert_eq!(c.etcd, ["http://a:1", "http://b:1"]);
        assert_eq!(c.timeout, Duration::from_secs(120), "the flag wins");
        assert!(c.log_json);
        assert_eq!(
            c.tls.tls("--etcd").expect("tls").map(|t| t.ca_file),
            Some(PathBuf::from("/etc/baton/ca.pem"))
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let err = parse("sideways = 1\n", &[])
            .expect_err("unknown")
            .to_string();
        assert!(err.contains(".toml: sideways: no such setting"), "{err}");
        let err = parse("timeout = \"soon\"\n", &[])
            .expect_err("bad")
            .to_string();
        assert!(err.contains(".toml: timeout: "), "{err}");
        let err = parse("timeout = [", &[]).expect_err("toml").to_string();
        assert!(err.contains(".toml"), "{err}");
        let err = with_config_file::<Cli>(
            vec![
                "x".into(),
                "--config".into(),
                "/nonexistent/baton.toml".into(),
            ],
            "config",
        )
        .expect_err("missing")
        .to_string();
        assert!(err.starts_with("/nonexistent/baton.toml: "), "{err}");
    }

    #[test]
    fn tls_errors_name_the_flag() {
        let args = EtcdTlsArgs {
            etcd_ca_file: Some("/etc/baton/ca.pem".into()),
            etcd_cert_file: Some("/etc/baton/c.pem".into()),
            ..Default::default()
        };
        let err = args.tls("--agent-etcd").expect_err("cert without key");
        assert_eq!(err.flag, "--agent-etcd-cert-file and --agent-etcd-key-file");
        let relative = EtcdTlsArgs {
            etcd_ca_file: Some("ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            relative.tls("--etcd").expect_err("relative").flag,
            "--etcd-ca-file"
        );
    }
}
