//! Building and pushing bundle images through the Docker Engine API (bollard); reading a
//! bundle image's manifest back is the protocol's [`read_manifest`](baton_protocol::docker::read_manifest).
//!
//! The build context is produced by [`write_context`] on a blocking thread and streamed to
//! the engine through a bounded channel, so a bundle of any size is never held in memory.
//! Images are built with the classic builder (`FROM scratch` needs nothing pulled). A push
//! reports the digest the registry stored, `<repository>@sha256:…`, by which the bundle is
//! referenced from then on.

use std::path::PathBuf;

use baton_protocol::docker::{DockerError, split_reference};
use baton_protocol::manifest::{InstallPolicy, Manifest, check_image_ref};
use bollard::Docker;
use bollard::query_parameters::{BuildImageOptionsBuilder, PushImageOptionsBuilder};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::bundle::context::write_context;
use crate::bundle::error::BundleError;
use crate::bundle::progress::{Progress, human_bytes};
use crate::bundle::template::{Prepared, Sources, prepare};

/// Bytes per chunk of build context sent to the engine.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the tar writer and the HTTP body.
const CHANNEL_DEPTH: usize = 8;

/// What `bundle build` does.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The bundle source folder (template and package files).
    pub dir: PathBuf,
    /// The image reference to tag the bundle with (`127.0.0.1:5000/baton/bundle:2.0.0`).
    pub tag: String,
    /// The bundle's agent binary.
    pub agent: PathBuf,
    /// The static downloader binary.
    pub downloader: PathBuf,
    /// Push the image to its registry after building.
    pub push: bool,
    /// Require `<agent> --version` to report the manifest's agent version.
    pub check_agent_version: bool,
    /// Also write the completed manifest here.
    pub manifest_out: Option<PathBuf>,
    /// Where the bundle may install files (the hosts' agents check the same).
    pub install: InstallPolicy,
    /// Public keys written into the manifest's `trusted_keys` (beside the template's own):
    /// what the hosts trust once the bundle is installed.
    pub trusted_keys: Vec<baton_protocol::signing::PublicKey>,
}

/// A built (and maybe pushed) bundle.
#[derive(Debug, Clone)]
pub struct Built {
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// The local image id (`sha256:…`).
    pub image_id: String,
    /// The tag it was built as.
    pub tag: String,
    /// `<repository>@sha256:…` when pushed.
    pub pushed: Option<String>,
    /// Bytes of files sent in the build context.
    pub context_bytes: u64,
}

/// Prepares (validates) the bundle, builds its image and, if asked, pushes it.
pub async fn build(
    docker: &Docker,
    options: &BuildOptions,
    progress: &dyn Progress,
) -> Result<Built, BundleError> {
    check_image_ref("--tag", &options.tag).map_err(|source| BundleError::Reference {
        reference: options.tag.clone(),
        source,
    })?;
    if options.tag.contains('@') {
        return Err(BundleError::Reference {
            reference: options.tag.clone(),
            source: baton_protocol::manifest::ManifestError {
                field: "--tag".into(),
                reason: "must be a tag, not a digest".into(),
            },
        });
    }
    progress.line(&format!(
        "bundle {}: checking and hashing files",
        options.dir.display()
    ));
    let prepared = {
        // Hashing reads every file: keep it off the async threads.
        let dir = options.dir.clone();
        let agent = options.agent.clone();
        let downloader = options.downloader.clone();
        let check = options.check_agent_version;
        let install = options.install.clone();
        let trusted_keys = options.trusted_keys.clone();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let collected = lines.clone();
        let prepared = tokio::task::spawn_blocking(move || {
            prepare(
                &Sources {
                    dir: &dir,
                    agent: &agent,
                    downloader: &downloader,
                    check_agent_version: check,
                    install: &install,
                    trusted_keys: &trusted_keys,
                },
                &Collect(collected),
            )
        })
        .await
        .map_err(|e| BundleError::io(&options.dir, "prepare", std::io::Error::other(e)))?;
        if let Ok(lines) = lines.lock() {
            for line in lines.iter() {
                progress.line(line);
            }
        }
        prepared?
    };
    progress.line(&format!(
        "bundle {} (agent {}): {} files, {}; manifest valid",
        prepared.manifest.version,
        prepared.manifest.agent.version,
        prepared.files.len(),
        human_bytes(prepared.bytes())
    ));
    if let Some(out) = &options.manifest_out {
        std::fs::write(out, &prepared.manifest_bytes)
            .map_err(|e| BundleError::io(out, "write", e))?;
    }

    let (image_id, context_bytes) = build_image(docker, &prepared, &options.tag, progress).await?;
    progress.line(&format!("built {} ({image_id})", options.tag));
    let pushed = if options.push {
        Some(push(docker, &options.tag, progress).await?)
    } else {
        None
    };
    Ok(Built {
        manifest: prepared.manifest,
        image_id,
        tag: options.tag.clone(),
        pushed,
        context_bytes,
    })
}

/// Buffers progress lines from a blocking thread.
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Progress for Collect {
    fn line(&self, line: &str) {
        if let Ok(mut lines) = self.0.lock() {
            lines.push(line.to_owned());
        }
    }
}

/// Streams the context of `prepared` to the engine and builds `tag`; returns the image id
/// and the bytes of files sent.
async fn build_image(
    docker: &Docker,
    prepared: &Prepared,
    tag: &str,
    progress: &dyn Progress,
) -> Result<(String, u64), BundleError> {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHANNEL_DEPTH);
    let writer_prepared = prepared.clone();
    let writer = tokio::task::spawn_blocking(move || {
        let mut sink = ChannelWriter::new(tx.clone());
        let result = write_context(&writer_prepared, &mut sink);
        if let Err(e) = &result {
            // Fail the request body, so the engine stops instead of building half a context.
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
        result.map(|bytes| (bytes, sink.sent))
    });
    let body = receiver_stream(rx);

    let action = format!("build {tag}");
    let (image_id, engine_error) = run_build(docker, tag, body, true, progress).await;
    let written = writer
        .await
        .map_err(|e| BundleError::io("(build context)", "write", std::io::Error::other(e)))?;
    // The writer's own error (a file changed, unreadable) explains a failed build best.
    let (file_bytes, sent) = match written {
        Err(e) if !is_receiver_gone(&e) => return Err(e),
        Err(e) => {
            return Err(BundleError::engine(
                action,
                engine_error.unwrap_or_else(|| e.to_string()),
            ));
        }
        Ok(v) => v,
    };
    if let Some(message) = engine_error {
        return Err(BundleError::engine(action, message));
    }
    progress.line(&format!("  sent build context: {}", human_bytes(sent)));
    let image_id = match image_id {
        Some(id) => id,
        None => docker
            .inspect_image(tag)
            .await
            .map_err(BundleError::docker(format!("inspect {tag}")))?
            .id
            .unwrap_or_default(),
    };
    Ok((image_id, file_bytes))
}

/// Sends a build of `tag` with the tar `context` to the engine (`cache`: may reuse cached
/// steps) and follows its output: the image id it reported and the engine's error, if any.
pub(crate) async fn run_build(
    docker: &Docker,
    tag: &str,
    context: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    cache: bool,
    progress: &dyn Progress,
) -> (Option<String>, Option<String>) {
    let body = bollard::body_try_stream(context);
    let options = BuildImageOptionsBuilder::new()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .nocache(!cache)
        .build();
    let mut stream = docker.build_image(options, None, Some(body));
    let mut image_id = None;
    let mut engine_error = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream.as_deref().map(str::trim_end)
                    && !line.is_empty()
                {
                    progress.line(&format!("  {line}"));
                }
                if let Some(id) = info.aux.and_then(|a| a.id) {
                    image_id = Some(id);
                }
                if let Some(e) = info.error_detail.and_then(|d| d.message).or(info.error) {
                    engine_error = Some(e);
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                engine_error = Some(error);
            }
            Err(e) => {
                engine_error = Some(e.to_string());
                break;
            }
        }
    }
    (image_id, engine_error)
}

fn is_receiver_gone(e: &BundleError) -> bool {
    matches!(e, BundleError::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

fn receiver_stream(
    mut rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A `Write` that sends chunks of what is written over a channel (from a blocking thread).
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    sent: u64,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.sent += chunk.len() as u64;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the Docker Engine stopped reading the build context",
            )
        })
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Pushes `tag` to its registry; returns `<repository>@sha256:…` as the registry stored it.
pub async fn push(
    docker: &Docker,
    tag: &str,
    progress: &dyn Progress,
) -> Result<String, BundleError> {
    let (repository, tag_part) = split_reference(tag);
    let action = format!("push {tag}");
    progress.line(&format!("pushing {tag}"));
    let options = PushImageOptionsBuilder::new().tag(tag_part).build();
    let mut stream = docker.push_image(repository, Some(options), None);
    let mut digest = None;
    let mut last_status: Option<String> = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(DockerError::stream(&action))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(BundleError::engine(action, e));
        }
        let Some(status) = info.status else { continue };
        // "<tag>: digest: sha256:<hex> size: <n>"
        if let Some(rest) = status.split("digest: ").nth(1) {
            digest = rest.split_whitespace().next().map(str::to_owned);
        }
        // Skip progress ticks and repeats (the API does not say which layer a line is about).
        if info.progress.is_none() && last_status.as_deref() != Some(status.as_str()) {
            progress.line(&format!("  {status}"));
            last_status = Some(status);
        }
    }
    let digest = match digest {
        Some(d) => d,
        // Fall back to what the engine recorded for the repository.
        None => docker
            .inspect_image(tag)
            .await
            .map_err(BundleError::docker(format!("inspect {tag}")))?
            .repo_digests
            .unwrap_or_default()
            .into_iter()
            .find_map(|d| d.strip_prefix(&format!("{repository}@")).map(str::to_owned))
            .ok_or_else(|| {
                BundleError::engine(action.clone(), "the registry reported no digest")
            })?,
    };
    let pinned = format!("{repository}@{digest}");
    progress.line(&format!("pushed {pinned}"));
    Ok(pinned)
}
