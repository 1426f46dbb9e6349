//! A bundle image's layout, and reading its manifest without running it: a container is
//! created (never started), `/bundle/manifest.json` copied out through the API, the
//! container removed. `batonctl bundle inspect` and the orchestrator's resolver both use it.

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;

use super::{DockerError, Progress, is_not_found, pull};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, check_image_ref};

/// The label of a bundle image holding the sha256 (hex) of its `manifest.json`.
pub const MANIFEST_SHA256_LABEL: &str = "io.baton.bundle.manifest-sha256";
/// Where the bundle is in a bundle image.
pub const BUNDLE_DIR: &str = "/bundle";
/// Label of the containers created to read a manifest.
const PURPOSE_LABEL: (&str, &str) = ("io.baton.purpose", "bundle-inspect");

/// A bundle's manifest and the sha256 of its bytes (what a signature vouches for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadManifest {
    /// The validated manifest.
    pub manifest: Manifest,
    /// sha256 (hex) of `/bundle/manifest.json` as stored in the image.
    pub sha256: String,
}

/// Reads `/bundle/manifest.json` out of a bundle image (pulled if not present locally)
/// without running it.
pub async fn read_manifest(
    docker: &Docker,
    image: &str,
    progress: &dyn Progress,
) -> Result<Manifest, DockerError> {
    Ok(read_bundle_manifest(docker, image, progress)
        .await?
        .manifest)
}

/// [`read_manifest`], with the sha256 of the manifest's bytes.
pub async fn read_bundle_manifest(
    docker: &Docker,
    image: &str,
    progress: &dyn Progress,
) -> Result<ReadManifest, DockerError> {
    check_image_ref("IMAGE", image).map_err(|source| DockerError::Reference {
        reference: image.to_owned(),
        source,
    })?;
    if let Err(e) = docker.inspect_image(image).await {
        if !is_not_found(&e) {
            return Err(DockerError::Docker {
                action: format!("inspect {image}"),
                source: e,
            });
        }
        pull(docker, image, progress).await?;
    }
    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        labels: Some([(PURPOSE_LABEL.0.to_owned(), PURPOSE_LABEL.1.to_owned())].into()),
        ..Default::default()
    };
    let created = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(DockerError::docker(format!(
            "create a container of {image}"
        )))?;
    let copied = copy_manifest(docker, &created.id, image).await;
    let removed = docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .map_err(DockerError::docker(format!(
            "remove container {}",
            created.id
        )));
    let bytes = copied?;
    removed?;
    let manifest = Manifest::parse(&bytes).map_err(|source| DockerError::Manifest {
        path: format!("{image}:{BUNDLE_DIR}/manifest.json"),
        source,
    })?;
    Ok(ReadManifest {
        manifest,
        sha256: crate::digest::sha256_hex(&bytes),
    })
}

async fn copy_manifest(
    docker: &Docker,
    container: &str,
    image: &str,
) -> Result<Vec<u8>, DockerError> {
    let path = format!("{BUNDLE_DIR}/manifest.json");
    let options = DownloadFromContainerOptionsBuilder::new()
        .path(&path)
        .build();
    let mut stream = docker.download_from_container(container, Some(options));
    let mut archive = Vec::new();
    // The manifest plus tar headers; a bigger answer is not a bundle's manifest.
    let cap = MAX_MANIFEST_BYTES + 64 * 1024;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            if is_not_found(&e) {
                DockerError::NotABundle {
                    image: image.to_owned(),
                    reason: format!("it has no {path}"),
                }
            } else {
                DockerError::Docker {
                    action: format!("copy {path} from {image}"),
                    source: e,
                }
            }
        })?;
        archive.extend_from_slice(&chunk);
        if archive.len() > cap {
            return Err(DockerError::NotABundle {
                image: image.to_owned(),
                reason: format!("{path} is larger than {MAX_MANIFEST_BYTES} bytes"),
            });
        }
    }
    first_file(&archive, &path, image)
}

/// The content of the first entry of a tar `archive`, which must be a regular file.
fn first_file(archive: &[u8], path: &str, image: &str) -> Result<Vec<u8>, DockerError> {
    let unreadable = |source| DockerError::Archive {
        path: path.to_owned(),
        source,
    };
    let mut tar = tar::Archive::new(archive);
    let entries = tar.entries().map_err(unreadable)?;
    let Some(entry) = entries.into_iter().next() else {
        return Err(DockerError::NotABundle {
            image: image.to_owned(),
            reason: format!("the engine returned no {path}"),
        });
    };
    let mut entry = entry.map_err(unreadable)?;
    if !entry.header().entry_type().is_file() {
        return Err(DockerError::NotABundle {
            image: image.to_owned(),
            reason: format!("{path} is not a regular file"),
        });
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(unreadable)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entry_type: tar::EntryType, data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(entry_type);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "manifest.json", data)
            .expect("append");
        builder.into_inner().expect("tar")
    }

    #[test]
    fn the_manifest_is_the_archives_first_file() {
        let tar = archive(tar::EntryType::Regular, b"{}");
        assert_eq!(
            first_file(&tar, "/bundle/manifest.json", "i").expect("file"),
            b"{}"
        );
    }

    #[test]
    fn anything_but_a_regular_file_is_not_a_bundle() {
        let tar = archive(tar::EntryType::Directory, b"");
        let err = first_file(&tar, "/bundle/manifest.json", "i").expect_err("dir");
        assert!(err.to_string().contains("is not a regular file"), "{err}");
        let err = first_file(&[0u8; 1024], "/bundle/manifest.json", "i").expect_err("empty");
        assert!(err.to_string().contains("returned no"), "{err}");
    }
}
