//! Resolving a requested bundle image, once, when an upgrade is created: pull it through the
//! orchestrator's Docker Engine, pin it to the digest the registry serves
//! (`repo@sha256:…`, from the image's `RepoDigests`), read its manifest (the protocol's
//! [`read_bundle_manifest`], which `batonctl bundle inspect` uses too: a container is
//! created, never started, the manifest copied out), check its manifest-sha256 label, and
//! fetch the signature stored beside it (verified by [`crate::trust`]).
//! From then on only the pinned reference is used.

use std::future::Future;
use std::pin::Pin;

use baton_protocol::docker::bundle::MANIFEST_SHA256_LABEL;
pub use baton_protocol::docker::pin;
use baton_protocol::docker::signature::fetch_signature;
use baton_protocol::docker::{self, DockerError, Quiet, read_bundle_manifest};
use baton_protocol::manifest::Manifest;
use baton_protocol::signing::BundleSignature;
use bollard::Docker;
use tokio::sync::OnceCell;

use crate::docker::{Endpoint, TcpAccess};

/// A bundle pinned by digest, with its manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `repo@sha256:…`.
    pub pinned: String,
    /// The bundle's manifest.
    pub manifest: Manifest,
    /// sha256 (hex) of its `manifest.json`.
    pub manifest_sha256: String,
    /// The signature stored beside it in its registry, if any (not yet verified:
    /// [`BundleTrust::verify`](crate::trust::BundleTrust::verify) does that).
    pub signature: Option<BundleSignature>,
}

/// Why an image could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The registry does not have it, or it is not a Baton bundle: the request is wrong.
    #[error("{image}: {reason}")]
    Refused {
        /// The image requested.
        image: String,
        /// Why.
        reason: String,
    },
    /// The Docker Engine or the registry could not be reached or failed.
    #[error("{image}: {reason}")]
    Unavailable {
        /// The image requested.
        image: String,
        /// What failed.
        reason: String,
    },
}

/// Future returned by [`Resolver::resolve`].
pub type ResolveFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Resolved, ResolveError>> + Send + 'a>>;

/// Pins bundle images and reads their manifests.
pub trait Resolver: Send + Sync {
    /// Resolves `image` (a tag or a digest reference).
    fn resolve<'a>(&'a self, image: &'a str) -> ResolveFuture<'a>;
}

/// The real resolver: a Docker Engine (connected on first use).
#[derive(Debug)]
pub struct DockerResolver {
    endpoint: Option<Endpoint>,
    tcp: TcpAccess,
    docker: OnceCell<Docker>,
}

impl DockerResolver {
    /// Uses `endpoint`, or the engine named by `DOCKER_HOST` (default: the local socket).
    /// A `tcp://` endpoint is reached over TLS with `tls`, when given.
    pub fn new(endpoint: Option<Endpoint>, tcp: TcpAccess) -> Self {
        Self {
            endpoint,
            tcp,
            docker: OnceCell::new(),
        }
    }

    async fn docker(&self, image: &str) -> Result<&Docker, ResolveError> {
        let unavailable = |reason: String| ResolveError::Unavailable {
            image: image.to_owned(),
            reason,
        };
        self.docker
            .get_or_try_init(|| async {
                match &self.endpoint {
                    Some(e) => e
                        .connect(&self.tcp)
                        .await
                        .map_err(|e| unavailable(e.to_string())),
                    None => docker::connect()
                        .await
                        .map_err(|e| unavailable(e.to_string())),
                }
            })
            .await
    }

    async fn resolve_now(&self, image: &str) -> Result<Resolved, ResolveError> {
        let docker = self.docker(image).await?;
        docker::pull(docker, image, &Quiet)
            .await
            .map_err(|e| classify(image, e))?;
        let inspected =
            docker
                .inspect_image(image)
                .await
                .map_err(|e| ResolveError::Unavailable {
                    image: image.to_owned(),
                    reason: format!("docker inspect: {e}"),
                })?;
        let digests = inspected.repo_digests.unwrap_or_default();
        let pinned = pin(image, &digests).ok_or_else(|| ResolveError::Refused {
            image: image.to_owned(),
            reason: format!(
                "the registry reported no digest for it (RepoDigests {digests:?}); push it to a registry first"
            ),
        })?;
        let read = read_bundle_manifest(docker, &pinned, &Quiet)
            .await
            .map_err(|e| classify(image, e))?;
        // The label `bundle build` writes must agree with what the image holds.
        let label = inspected
            .config
            .and_then(|c| c.labels)
            .and_then(|mut l| l.remove(MANIFEST_SHA256_LABEL));
        if let Some(label) = label
            && label != read.sha256
        {
            return Err(ResolveError::Refused {
                image: image.to_owned(),
                reason: format!(
                    "its label {MANIFEST_SHA256_LABEL} says {label}, but its manifest.json hashes to {}",
                    read.sha256
                ),
            });
        }
        let signature = fetch_signature(docker, &pinned, &Quiet)
            .await
            .map_err(|e| classify(image, e))?;
        Ok(Resolved {
            pinned,
            manifest: read.manifest,
            manifest_sha256: read.sha256,
            signature,
        })
    }
}

impl Resolver for DockerResolver {
    fn resolve<'a>(&'a self, image: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.resolve_now(image))
    }
}

fn classify(image: &str, e: DockerError) -> ResolveError {
    let refused = e.is_refusal();
    let reason = e.to_string();
    let image = image.to_owned();
    if refused {
        ResolveError::Refused { image, reason }
    } else {
        ResolveError::Unavailable { image, reason }
    }
}
