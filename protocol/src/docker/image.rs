//! Images: pulling from a registry (with progress lines), pulling only when missing, and
//! splitting a reference into repository and tag.

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

use super::{DockerError, Progress, is_not_found};

/// `<repository>` and `<tag>` of a reference (`latest` when it names no tag).
pub fn split_reference(reference: &str) -> (&str, &str) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

/// Pulls `image` from its registry.
pub async fn pull(
    docker: &Docker,
    image: &str,
    progress: &dyn Progress,
) -> Result<(), DockerError> {
    progress.line(&format!("pulling {image}"));
    let action = format!("pull {image}");
    let options = CreateImageOptionsBuilder::new().from_image(image).build();
    let mut stream = docker.create_image(Some(options), None, None);
    while let Some(item) = stream.next().await {
        let info = item.map_err(DockerError::stream(&action))?;
        if let Some(e) = info.error_detail.and_then(|d| d.message).or(info.error) {
            return Err(DockerError::Engine { action, message: e });
        }
        if let (Some(status), None) = (info.status, info.progress) {
            progress.line(&format!("  {status}"));
        }
    }
    Ok(())
}

/// Pulls `image` unless the engine has it already.
pub async fn ensure_image(
    docker: &Docker,
    image: &str,
    progress: &dyn Progress,
) -> Result<(), DockerError> {
    match docker.inspect_image(image).await {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => pull(docker, image, progress).await,
        Err(source) => Err(DockerError::Docker {
            action: format!("inspect image {image}"),
            source,
        }),
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

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(
            split_reference("127.0.0.1:5000/baton/bundle:2.0.0"),
            ("127.0.0.1:5000/baton/bundle", "2.0.0")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/baton/bundle"),
            ("127.0.0.1:5000/baton/bundle", "latest")
        );
        assert_eq!(split_reference("bundle:1"), ("bundle", "1"));
    }
}
