//! The demo's signed bundles: a key pair made with `batonctl key generate` (the orchestrator
//! trusts its public half), every bundle signed beside it in the registry, and an unsigned
//! copy of a bundle refused with 422 before anything is written.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use baton_protocol::docker::Docker;
use baton_protocol::signing::SigningKey;
use batonctl::bundle;
use batonctl::client::ApiClient;

use super::commands::{run_captured, shell_line};
use super::state::{DemoState, KEYS_DIR};
use super::{DemoError, Indented, api_error};
use batonctl::bundle::Progress;

/// How long the demo's signatures are valid.
const VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// The repository the unsigned copy is pushed to (its signature would be looked up there).
pub(super) const UNSIGNED_REPOSITORY: &str = "baton/unsigned-bundle";

/// The key pair's files: `<state>/keys/demo.key` (mode 0600) and `demo.pub`.
pub(super) fn key_files(state: &DemoState) -> (PathBuf, PathBuf) {
    let dir = state.state_dir.join(KEYS_DIR);
    (dir.join("demo.key"), dir.join("demo.pub"))
}

/// Makes the demo's key pair with `batonctl key generate` (printed) and reads it.
pub(super) async fn generate_key(state: &DemoState) -> Result<SigningKey, DemoError> {
    let (key, _) = key_files(state);
    let dir = state.state_dir.join(KEYS_DIR);
    std::fs::create_dir_all(&dir).map_err(|source| DemoError::Io {
        path: dir.clone(),
        source,
    })?;
    let args = [
        state.batonctl.display().to_string(),
        "key".to_owned(),
        "generate".to_owned(),
        "--out".to_owned(),
        dir.join("demo").display().to_string(),
    ];
    Indented.line(&format!("$ {}", shell_line(&args)));
    let id = run_captured(&args).await?;
    Indented.line(&format!(
        "signing key {} in {} (mode 0600); the orchestrator trusts its .pub",
        id.trim(),
        key.display()
    ));
    SigningKey::read(&key, None).map_err(|e| DemoError::Setup(e.to_string()))
}

/// Signs the pushed bundle `pinned` (as `batonctl bundle sign` does).
pub(super) async fn sign(
    docker: &Docker,
    pinned: &str,
    version: &str,
    key: &SigningKey,
) -> Result<(), DemoError> {
    bundle::sign(docker, pinned, key, SystemTime::now() + VALIDITY, &Indented)
        .await
        .map(|_| ())
        .map_err(|source| DemoError::Bundle {
            version: version.to_owned(),
            source,
        })
}

/// Pushes the signed bundle `pinned` again to another repository, where no signature lies
/// beside it, and shows the orchestrator refusing it: 422, nothing written.
pub(super) async fn show_unsigned_refused(
    state: &DemoState,
    api: &ApiClient,
    pinned: &str,
) -> Result<(), DemoError> {
    let docker = bundle::connect()
        .await
        .map_err(|source| DemoError::Bundle {
            version: "unsigned copy".to_owned(),
            source: source.into(),
        })?;
    let unsigned = format!("{}/{UNSIGNED_REPOSITORY}:2.0.0", state.registry);
    crate::docker::run(&["tag", pinned, &unsigned]).await?;
    bundle::push(&docker, &unsigned, &bundle::Quiet)
        .await
        .map_err(|source| DemoError::Bundle {
            version: "unsigned copy".to_owned(),
            source,
        })?;
    let body = format!(
        r#"{{"image": "{unsigned}", "strategy": {{"kind": "rolling", "batch": {{"count": 1}}}}}}"#
    );
    println!("\n    $ POST /v1/upgrades {body}");
    let (status, answer) = api
        .raw(
            "POST"
                .parse()
                .map_err(|_| DemoError::Setup("method".into()))?,
            "/v1/upgrades",
            Some(body.into_bytes()),
        )
        .await
        .map_err(api_error("POST /v1/upgrades (unsigned)"))?;
    let answer = String::from_utf8_lossy(&answer);
    println!("    {} {}\n", status.as_u16(), answer.trim());
    if status.as_u16() != 422 {
        return Err(DemoError::Setup(format!(
            "the unsigned bundle {unsigned} was not refused with 422: {status} {answer}"
        )));
    }
    Ok(())
}
