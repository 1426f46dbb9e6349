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

#[cfg(test)]
mod tests {
    use super::*;

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
