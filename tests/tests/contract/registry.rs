//! The loopback registry is a real OCI registry: an image built locally is
//! pushed to it, removed locally, and pulled back by digest.

use baton_tests::docker;
use baton_tests::registry::Registry;

/// Removes the listed local images when the test ends, also on panic.
struct RemoveImages(Vec<String>);

impl Drop for RemoveImages {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = docker::run_blocking(&["rmi", "--force", image]);
        }
    }
}

async fn require_docker() {
    if let Err(e) = docker::ensure_available().await {
        panic!("this test needs a working Docker Engine: {e}");
    }
}

#[tokio::test]
async fn pushed_image_is_pulled_back_by_digest() {
    require_docker().await;
    let registry = Registry::start().await.unwrap();

    // A tiny image with unique content, so its digest is new to this engine.
    let context = tempfile::tempdir().unwrap();
    let unique = context
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_lowercase()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let payload = format!("hello from {unique}\n");
    std::fs::write(context.path().join("hello.txt"), &payload).unwrap();
    std::fs::write(
        context.path().join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /hello.txt\n",
    )
    .unwrap();
    let local = format!("baton-registry-test:{unique}");
    let pushed_tag = format!("{}:v1", registry.reference("baton/tiny"));
    let mut cleanup = RemoveImages(vec![local.clone(), pushed_tag.clone()]);
    docker::run(&[
        "build",
        "--quiet",
        "--tag",
        &local,
        &context.path().to_string_lossy(),
    ])
    .await
    .unwrap();

    let pinned = registry.push(&local, "baton/tiny", "v1").await.unwrap();
    cleanup.0.push(pinned.clone());
    let prefix = format!("127.0.0.1:{}/baton/tiny@sha256:", registry.addr().port());
    assert!(
        pinned.starts_with(&prefix) && pinned.len() == prefix.len() + 64,
        "pinned reference {pinned:?} is not {prefix}<64 hex digits>"
    );
    let blobs = registry
        .storage_dir()
        .join("docker/registry/v2/blobs/sha256");
    assert!(
        std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0) > 0,
        "the registry stored no blobs under {}",
        blobs.display()
    );

    // Forget the image locally, then get it back from the registry only.
    docker::run(&["rmi", "--force", &local, &pushed_tag])
        .await
        .unwrap();
    assert!(
        !docker::image_exists(&pinned).await.unwrap(),
        "{pinned} still exists locally after rmi"
    );
    docker::run(&["pull", "--quiet", &pinned]).await.unwrap();
    assert!(
        docker::image_exists(&pinned).await.unwrap(),
        "{pinned} missing after pull"
    );

    // Same content: copy the file out of a container of the pulled image.
    let container = format!("baton-registry-test-{unique}");
    docker::run(&["create", "--name", &container, &pinned, "/none"])
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let copied = docker::run(&[
        "cp",
        &format!("{container}:/hello.txt"),
        &out.path().to_string_lossy(),
    ])
    .await;
    docker::run(&["rm", "--force", &container]).await.unwrap();
    copied.unwrap();
    assert_eq!(
        std::fs::read_to_string(out.path().join("hello.txt")).unwrap(),
        payload
    );
}

#[tokio::test]
async fn registry_stops_on_drop() {
    let registry = Registry::start().await.unwrap();
    let addr = registry.addr();
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    drop(registry);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "registry still listening on {addr} after drop"
    );
}
