//! A stand-in Docker Engine for the benchmark's downloader dispatch: it answers, on a Unix
//! socket, the few Engine API calls the orchestrator makes to run a downloader job (version,
//! image inspect, container inspect/create/upload/start/wait/logs/remove), and "runs" each
//! job by staging what the real downloader would leave for the agent — the bundle's
//! `manifest.json` and the record of the image it came from, under the host's
//! `/var/lib/baton/bundles/<version>/` (found through the job's bind mounts) — then reports
//! the job's summary line. No container runs, no image is pulled: the benchmark measures the
//! orchestrator and the agents, and names this stand-in in its output.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use baton_protocol::job::{
    AgentAction, AgentSummary, FileAction, JobSettings, SETTINGS_ENV, SUMMARY_SCHEMA_VERSION,
    StageAction, Summary,
};
use baton_protocol::manifest::Manifest;
use baton_protocol::staged::{STAGED_RECORD_FILE, StagedBundle};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;

use crate::error::HarnessError;

/// Where the job sees the host's `/var/lib/baton`.
const JOB_STATE_DIR: &str = "/host/var/lib/baton";

/// A bundle the stand-in can stage: its manifest, by the image's digest.
#[derive(Debug, Clone)]
struct Bundle {
    version: String,
    manifest: Vec<u8>,
}

/// One job container: what it was created with, and how its run ended.
#[derive(Debug, Default)]
struct Container {
    settings: Option<JobSettings>,
    state_dir: Option<PathBuf>,
    /// Exit code and log, once started.
    ended: Option<(i64, String)>,
}

#[derive(Debug, Default)]
struct State {
    bundles: HashMap<String, Bundle>,
    containers: HashMap<String, Container>,
}

/// The stand-in engine, serving until dropped.
#[derive(Debug)]
pub struct StandInDocker {
    endpoint: String,
    state: Arc<Mutex<State>>,
    jobs: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for StandInDocker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandInDocker {
    /// Serves on the Unix socket `socket` (created; its folder must exist).
    pub fn start(socket: &Path) -> Result<StandInDocker, HarnessError> {
        let listener = UnixListener::bind(socket).map_err(|e| {
            HarnessError(format!("stand-in Docker Engine {}: {e}", socket.display()))
        })?;
        let state = Arc::new(Mutex::new(State::default()));
        let jobs = Arc::new(AtomicU64::new(0));
        let (served, counted) = (state.clone(), jobs.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (state, jobs) = (served.clone(), counted.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let (state, jobs) = (state.clone(), jobs.clone());
                        async move { Ok::<_, Infallible>(answer(request, &state, &jobs).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(StandInDocker {
            endpoint: format!("unix://{}", socket.display()),
            state,
            jobs,
            task,
        })
    }

    /// Its endpoint, as hosts register it: `unix:///…/docker.sock`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Makes the bundle image `pinned` (`repo@sha256:…`) with `manifest` stageable.
    pub fn add_bundle(&self, pinned: &str, manifest: &[u8]) -> Result<(), HarnessError> {
        let parsed = Manifest::parse(manifest)
            .map_err(|e| HarnessError(format!("stand-in bundle {pinned}: manifest: {e}")))?;
        lock(&self.state).bundles.insert(
            digest_of(pinned).to_owned(),
            Bundle {
                version: parsed.version,
                manifest: manifest.to_vec(),
            },
        );
        Ok(())
    }

    /// How many jobs it has run.
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }
}

/// The `sha256:…` of a pinned reference (the registry's address may be spelt otherwise).
fn digest_of(pinned: &str) -> &str {
    pinned.rsplit_once('@').map_or(pinned, |(_, digest)| digest)
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The route of a request, without the API version prefix (`/v1.44`).
fn route(path: &str) -> &str {
    match path.strip_prefix("/v1.") {
        Some(rest) => rest.find('/').map_or(path, |i| &rest[i..]),
        None => path,
    }
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

fn not_found(what: &str) -> Response<Full<Bytes>> {
    json(
        StatusCode::NOT_FOUND,
        serde_json::json!({ "message": format!("No such {what}") }),
    )
}

/// The query parameter `name` of `query`.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_owned())
    })
}

async fn answer(
    request: Request<Incoming>,
    state: &Mutex<State>,
    jobs: &AtomicU64,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = route(request.uri().path()).to_owned();
    let query = request.uri().query().map(str::to_owned);
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return empty(StatusCode::BAD_REQUEST),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["version"]) => json(
            StatusCode::OK,
            serde_json::json!({
                "Version": "bench-stand-in",
                "ApiVersion": "1.44",
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64"
            }),
        ),
        (&Method::GET, ["_ping"]) => empty(StatusCode::OK),
        // Every bundle image is "present": nothing is pulled.
        (&Method::GET, ["images", .., "json"]) => json(
            StatusCode::OK,
            serde_json::json!({ "Id": "sha256:stand-in", "RepoDigests": [] }),
        ),
        (&Method::POST, ["images", "create"]) => {
            json(StatusCode::OK, serde_json::json!({ "status": "present" }))
        }
        (&Method::POST, ["containers", "create"]) => {
            let Some(name) = query_param(query.as_deref(), "name") else {
                return json(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!({ "message": "no container name" }),
                );
            };
            let container = match created(&body) {
                Ok(c) => c,
                Err(message) => {
                    return json(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({ "message": message }),
                    );
                }
            };
            lock(state).containers.insert(name.clone(), container);
            json(
                StatusCode::CREATED,
                serde_json::json!({ "Id": name, "Warnings": [] }),
            )
        }
        (&Method::GET, ["containers", name, "json"]) => match lock(state).containers.get(*name) {
            Some(c) => json(
                StatusCode::OK,
                serde_json::json!({
                    "Id": name,
                    "Name": format!("/{name}"),
                    "State": { "Running": false, "Status": if c.ended.is_some() { "exited" } else { "created" } }
                }),
            ),
            None => not_found(&format!("container: {name}")),
        },
        (&Method::PUT, ["containers", name, "archive"]) => {
            if lock(state).containers.contains_key(*name) {
                empty(StatusCode::OK)
            } else {
                not_found(&format!("container: {name}"))
            }
        }
        (&Method::POST, ["containers", name, "start"]) => {
            let mut state = lock(state);
            let State {
                bundles,
                containers,
            } = &mut *state;
            let Some(container) = containers.get_mut(*name) else {
                return not_found(&format!("container: {name}"));
            };
            container.ended = Some(match run_job(container, bundles) {
                Ok(line) => (0, line),
                Err(error) => (1, error),
            });
            jobs.fetch_add(1, Ordering::Relaxed);
            empty(StatusCode::NO_CONTENT)
        }
        (&Method::POST, ["containers", name, "wait"]) => match lock(state).containers.get(*name) {
            Some(c) => json(
                StatusCode::OK,
                serde_json::json!({ "StatusCode": c.ended.as_ref().map_or(-1, |(code, _)| *code) }),
            ),
            None => not_found(&format!("container: {name}")),
        },
        (&Method::GET, ["containers", name, "logs"]) => match lock(state).containers.get(*name) {
            // Multiplexed like a container without a TTY: success on stdout, errors on stderr.
            Some(c) => {
                let (stream, text) = match &c.ended {
                    Some((0, line)) => (1u8, format!("{line}\n")),
                    Some((_, error)) => (2u8, format!("baton-downloader: error: {error}\n")),
                    None => (2u8, "not started\n".to_owned()),
                };
                let mut frame = vec![stream, 0, 0, 0];
                frame.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_be_bytes());
                frame.extend_from_slice(text.as_bytes());
                let mut response = Response::new(Full::new(Bytes::from(frame)));
                response.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(
                        "application/vnd.docker.multiplexed-stream",
                    ),
                );
                response
            }
            None => not_found(&format!("container: {name}")),
        },
        (&Method::DELETE, ["containers", name]) => match lock(state).containers.remove(*name) {
            Some(_) => empty(StatusCode::NO_CONTENT),
            None => not_found(&format!("container: {name}")),
        },
        _ => not_found(&format!("route: {method} {path}")),
    }
}

/// A job container from its create request: its settings and the machine folder bound to
/// the host's `/var/lib/baton`.
fn created(body: &[u8]) -> Result<Container, String> {
    let request: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("create body: {e}"))?;
    let settings = request["Env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .find_map(|e| {
            e.strip_prefix(&format!("{SETTINGS_ENV}="))
                .map(str::to_owned)
        })
        .ok_or_else(|| format!("Env has no {SETTINGS_ENV}"))?;
    let settings = JobSettings::parse(&settings).map_err(|e| e.to_string())?;
    let state_dir = request["HostConfig"]["Binds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .find_map(|bind| {
            let (machine, inside) = bind.split_once(':')?;
            (inside == JOB_STATE_DIR).then(|| PathBuf::from(machine))
        })
        .ok_or_else(|| format!("HostConfig.Binds mounts nothing at {JOB_STATE_DIR}"))?;
    Ok(Container {
        settings: Some(settings),
        state_dir: Some(state_dir),
        ended: None,
    })
}

/// What the real job leaves for the agent, staged; its summary line.
fn run_job(container: &Container, bundles: &HashMap<String, Bundle>) -> Result<String, String> {
    let settings = container.settings.as_ref().ok_or("no settings")?;
    let state_dir = container.state_dir.as_ref().ok_or("no state folder")?;
    let image = settings.image.as_deref().ok_or("settings name no image")?;
    let bundle = bundles
        .get(digest_of(image))
        .ok_or_else(|| format!("{image}: not a bundle this stand-in stages"))?;
    let dir = state_dir.join("bundles").join(&bundle.version);
    let record = StagedBundle::new(&bundle.version, image).map_err(|e| e.to_string())?;
    let write = |name: &str, bytes: &[u8]| {
        baton_protocol::durable::write(&dir.join(name), bytes, 0o644)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write("manifest.json", &bundle.manifest)?;
    write(STAGED_RECORD_FILE, &record.to_json())?;
    Ok(Summary {
        schema_version: SUMMARY_SCHEMA_VERSION,
        version: bundle.version.clone(),
        files: 1,
        bytes: bundle.manifest.len() as u64,
        bundle: StageAction::Staged,
        agent: AgentSummary {
            version: baton_agent::VERSION.to_owned(),
            action: AgentAction::Unchanged,
            previous: None,
        },
        config: FileAction::Unchanged,
        unit: FileAction::Unchanged,
        changed: true,
    }
    .to_line())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_lose_their_api_version() {
        assert_eq!(route("/v1.44/containers/create"), "/containers/create");
        assert_eq!(route("/version"), "/version");
        assert_eq!(route("/v1.41/version"), "/version");
    }
}
