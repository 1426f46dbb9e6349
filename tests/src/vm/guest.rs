//! Commands run inside a guest, for fault injection and checks: the guest
//! has no SSH server, but its Docker Engine serves TLS (with a seed that has
//! Docker's TLS), and a privileged container in the guest's host PID and
//! network namespaces reaches everything the guest runs. The test machine's
//! Docker CLI drives it.

use std::path::Path;
use std::process::Stdio;

use super::{DOCKER_TLS_PORT, Vm, VmError, io_err};
use crate::pki::DockerClientTls;

/// The image [`Vm::guest_exec`] runs: the test machine's static busybox as
/// `/bin/busybox`, its entrypoint, imported into the guest's Docker on first
/// use (nothing can be pulled).
pub const TOOLS_IMAGE: &str = "baton-vm-tools";
/// Debian's `busybox-static`: statically linked, so it runs in an image
/// holding nothing else.
const BUSYBOX: &str = "/bin/busybox";
const DOCKER: &str = "docker";
const DOCKER_HINT: &str = "install the Docker CLI (docker.io): scripts/install-deps.sh";
const BUSYBOX_HINT: &str = "install busybox-static: scripts/install-deps.sh";

fn endpoint(vm: &Vm) -> Result<String, VmError> {
    vm.docker_endpoint().ok_or_else(|| VmError::Unsupported {
        vm: vm.name.clone(),
        what: format!(
            "the guest's Docker over TLS is not reachable: port {DOCKER_TLS_PORT} is not \
             forwarded (give the VM a seed with Docker's TLS)"
        ),
    })
}

pub(super) async fn docker_cli(
    vm: &Vm,
    tls: &DockerClientTls,
    args: &[&str],
) -> Result<String, VmError> {
    docker(tls, &endpoint(vm)?, args, None).await
}

pub(super) async fn exec(vm: &Vm, tls: &DockerClientTls, argv: &[&str]) -> Result<String, VmError> {
    let endpoint = endpoint(vm)?;
    vm.tools_image
        .get_or_try_init(|| import_tools(vm, tls, &endpoint))
        .await?;
    let mut args = vec![
        "run",
        "--rm",
        "--pid=host",
        // The guest's own loopback: its proxies, its services.
        "--network=host",
        "--privileged",
        TOOLS_IMAGE,
    ];
    args.extend_from_slice(argv);
    docker(tls, &endpoint, &args, None).await
}

/// Imports [`TOOLS_IMAGE`] into the guest's Docker unless it is there (a VM
/// restarted from the same disk copy keeps it).
async fn import_tools(vm: &Vm, tls: &DockerClientTls, endpoint: &str) -> Result<(), VmError> {
    if docker(tls, endpoint, &["image", "inspect", TOOLS_IMAGE], None)
        .await
        .is_ok()
    {
        return Ok(());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(VmError::Missing {
            what: BUSYBOX.to_owned(),
            hint: BUSYBOX_HINT,
        });
    }
    // The tarball's root holds bin/busybox only.
    let root = vm.dir().join("tools-image");
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin).map_err(io_err(&bin))?;
    std::fs::copy(BUSYBOX, bin.join("busybox")).map_err(io_err(Path::new(BUSYBOX)))?;
    let tarball = vm.dir().join("tools-image.tar");
    let status = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tarball)
        .arg("bin")
        .status()
        .await
        .map_err(|source| VmError::Spawn {
            program: "tar".to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(VmError::Command {
            command: format!("tar -C {} -cf {} bin", root.display(), tarball.display()),
            status,
            stderr: String::new(),
        });
    }
    let tarball = tarball.to_string_lossy().into_owned();
    docker(
        tls,
        endpoint,
        &[
            "import",
            "--change",
            r#"ENTRYPOINT ["/bin/busybox"]"#,
            "-",
            TOOLS_IMAGE,
        ],
        Some(Path::new(&tarball)),
    )
    .await?;
    Ok(())
}

/// Runs the Docker CLI against `endpoint` with the client's TLS files,
/// `stdin` from a file if given; returns stdout.
async fn docker(
    tls: &DockerClientTls,
    endpoint: &str,
    args: &[&str],
    stdin: Option<&Path>,
) -> Result<String, VmError> {
    let mut command = tokio::process::Command::new(DOCKER);
    command
        .args(["-H", endpoint, "--tlsverify"])
        .arg("--tlscacert")
        .arg(&tls.ca)
        .arg("--tlscert")
        .arg(&tls.cert)
        .arg("--tlskey")
        .arg(&tls.key)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match stdin {
        Some(path) => {
            let file = std::fs::File::open(path).map_err(io_err(path))?;
            command.stdin(file);
        }
        None => {
            command.stdin(Stdio::null());
        }
    }
    let out = command
        .output()
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => VmError::Missing {
                what: DOCKER.to_owned(),
                hint: DOCKER_HINT,
            },
            _ => VmError::Spawn {
                program: DOCKER.to_owned(),
                source,
            },
        })?;
    if !out.status.success() {
        return Err(VmError::Command {
            command: format!("docker -H {endpoint} {}", args.join(" ")),
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
