//! Where the API is and how to prove who we are: flags, else environment variables (both
//! read by clap), else the config file, else the defaults. The token is read from a file
//! (or `BATON_TOKEN`), never taken as a flag's value, so it stays out of shell history and
//! the process list.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::Connection;
use crate::client::{ApiClient, ClientCertFiles, Credentials, DEFAULT_API};

/// The config file's name under the user's config folder.
const CONFIG_FILE: &str = "baton/batonctl.toml";

/// `batonctl.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    api: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
}

/// The config file could not be read.
#[derive(Debug, thiserror::Error)]
#[error("config file {path}: {reason}")]
pub struct SettingsError {
    path: PathBuf,
    reason: String,
}

fn default_config_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join(CONFIG_FILE))
}

fn read_file(path: &Path, required: bool) -> Result<FileSettings, SettingsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| SettingsError {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            Ok(FileSettings::default())
        }
        Err(e) => Err(SettingsError {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// The API client the command line asks for.
pub fn client(cli: &Connection) -> Result<ApiClient, crate::CtlError> {
    let file = match &cli.config {
        Some(path) => read_file(path, true)?,
        None => match default_config_path() {
            Some(path) => read_file(&path, false)?,
            None => FileSettings::default(),
        },
    };
    let api = cli
        .api
        .clone()
        .or(file.api)
        .unwrap_or_else(|| DEFAULT_API.to_owned());
    let token = match cli.token_file.clone().or(file.token_file) {
        Some(path) => Some(Credentials::read_token(&path)?),
        None => std::env::var("BATON_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty()),
    };
    // The certificate and its key come from one place together, never one from each.
    let client_cert = match (&cli.client_cert_file, &cli.client_key_file) {
        (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
        _ => match (file.client_cert_file, file.client_key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => {
                return Err(SettingsError {
                    path: cli
                        .config
                        .clone()
                        .or_else(default_config_path)
                        .unwrap_or_default(),
                    reason: "client_cert_file and client_key_file go together: give both or \
                             neither"
                        .to_owned(),
                }
                .into());
            }
        },
    };
    let credentials = Credentials {
        token: token.map(|t| t.trim().to_owned()),
        ca_file: cli.ca_file.clone().or(file.ca_file),
        client_cert: client_cert.map(|(cert_file, key_file)| ClientCertFiles {
            cert_file,
            key_file,
        }),
    };
    Ok(ApiClient::with(&api, &credentials)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().expect("dir");
        let config = dir.path().join("batonctl.toml");
        let token = dir.path().join("token");
        std::fs::write(&token, format!("baton_ci_{}\n", "a".repeat(64))).expect("token");
        std::fs::write(
            &config,
            format!(
                "api = \"http://127.0.0.1:7999\"\ntoken_file = \"{}\"\n",
                token.display()
            ),
        )
        .expect("config");
        let cli = Cli::try_parse_from([
            "batonctl",
            "--config",
            &config.display().to_string(),
            "host",
            "ls",
        ])
        .expect("flags");
        assert_eq!(
            client(&cli.connection).expect("client").base(),
            "http://127.0.0.1:7999"
        );
        let cli = Cli::try_parse_from([
            "batonctl",
            "--config",
            &config.display().to_string(),
            "--api",
            "http://127.0.0.1:7000",
            "host",
            "ls",
        ])
        .expect("flags");
        assert_eq!(
            client(&cli.connection).expect("client").base(),
            "http://127.0.0.1:7000"
        );
        std::fs::write(&config, "colour = 1\n").expect("config");
        let cli = Cli::try_parse_from([
            "batonctl",
            "--config",
            &config.display().to_string(),
            "host",
            "ls",
        ])
        .expect("flags");
        let err = client(&cli.connection)
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("batonctl.toml") && err.contains("colour"),
            "{err}"
        );
    }
}
