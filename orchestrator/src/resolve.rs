//! Resolving a requested bundle image, once, when an upgrade is created: pull it through the
//! orchestrator's Docker Engine, pin it to the digest the registry serves
//! (`repo@sha256:…`, from the image's `RepoDigests`), and read its manifest (the protocol's
//! [`read_manifest`], which `batonctl bundle inspect` uses too: a container is created, never
//! started, the manifest copied out).
//! From then on only the pinned reference is used.

use std::future::Future;
use std::pin::Pin;

use baton_protocol::docker::{self, DockerError, Quiet, read_manifest, split_reference};
use baton_protocol::manifest::Manifest;
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
        let manifest = read_manifest(docker, &pinned, &Quiet)
            .await
            .map_err(|e| classify(image, e))?;
        Ok(Resolved { pinned, manifest })
    }
}

impl Resolver for DockerResolver {
    fn resolve<'a>(&'a self, image: &'a str) -> ResolveFuture<'a> {
        Box::pin(self.resolve_now(image))
    }
}

/// The pinned reference for `image` among an image's `RepoDigests`.
pub fn pin(image: &str, repo_digests: &[String]) -> Option<String> {
    if let Some((name, digest)) = image.split_once('@') {
        let (repository, _) = split_reference(name);
        let wanted = format!("{repository}@{digest}");
        return repo_digests.contains(&wanted).then_some(wanted);
    }
    let (repository, _) = split_reference(image);
    repo_digests
        .iter()
        .find(|d| {
            d.split_once('@')
                .is_some_and(|(repo, _)| repo == repository)
        })
        .cloned()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_the_repository_of_the_request() {
        let digests = vec![
            "other/name@sha256:aa".to_owned(),
            "127.0.0.1:5000/baton/bundle@sha256:bb".to_owned(),
        ];
        assert_eq!(
            pin("127.0.0.1:5000/baton/bundle:2.0.0", &digests).as_deref(),
            Some("127.0.0.1:5000/baton/bundle@sha256:bb")
        );
        assert_eq!(
            pin("127.0.0.1:5000/baton/bundle@sha256:bb", &digests).as_deref(),
            Some("127.0.0.1:5000/baton/bundle@sha256:bb")
        );
        assert_eq!(pin("127.0.0.1:5000/baton/bundle@sha256:cc", &digests), None);
        assert_eq!(pin("local/only:1", &digests), None);
    }
}
