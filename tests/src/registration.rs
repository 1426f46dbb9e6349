//! How the tests and the demo register a simulated host with the orchestrator.

use baton_orchestrator::engine::dispatch::DEFAULT_HOST_PATHS;
use baton_protocol::api::RegisterHost;

use crate::fleet::{self, Host};
use crate::simhost_image::{BOOT_ID_PATH, BOOTED_KERNEL_PATH};

/// The registration of `host` with `labels`: the machine's Docker Engine runs its jobs,
/// which mount the host's folders (under the fleet's folder: the orchestrator's
/// `--path-map-root`); the agent reads the simulated boot id and kernel, and
/// names its service containers after the host's container so the fleet's cleanup finds
/// them.
pub fn registration(host: &Host, labels: &[(&str, &str)]) -> RegisterHost {
    RegisterHost {
        id: host.name().to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        docker: format!("unix://{}", fleet::DOCKER_SOCKET),
        // The paths the downloader job mounts (the host has more, which the job never
        // touches and a registration may not name).
        path_map: host
            .host_paths()
            .into_iter()
            .filter(|(path, _)| DEFAULT_HOST_PATHS.contains(&path.as_str()))
            .map(|(path, machine)| (path, machine.display().to_string()))
            .collect(),
        boot_id_file: Some(BOOT_ID_PATH.to_owned()),
        kernel_release_file: Some(BOOTED_KERNEL_PATH.to_owned()),
        container_prefix: Some(host.sibling_name("")),
        quorum_member: false,
    }
}
