//! Requests the validation tests start from and edit.

use baton_protocol::api::{BatchRequest, RegisterHost, StrategyKind, StrategyRequest};

/// A valid rolling strategy: batches of one host, nothing else set.
pub(crate) fn rolling() -> StrategyRequest {
    StrategyRequest {
        kind: StrategyKind::Rolling,
        batch: Some(BatchRequest {
            count: Some(1),
            percent: None,
        }),
        canary: None,
        pause_after_canary: None,
        zone_label: None,
        max_failures: None,
        allow_downtime: None,
    }
}

/// The policy [`register`] passes: host paths mapped under `/srv/h1`.
pub(crate) fn policy() -> super::HostPolicy {
    super::HostPolicy {
        tcp_docker: false,
        path_map_roots: vec!["/srv/h1".into()],
    }
}

/// A valid registration of `host-1`, with labels, a path map and the optional files.
pub(crate) fn register() -> RegisterHost {
    RegisterHost {
        id: "host-1".into(),
        labels: [("group".into(), "edge".into()), ("zone".into(), "a".into())].into(),
        docker: "unix:///var/run/docker.sock".into(),
        path_map: [("/var/lib/baton".into(), "/srv/h1/var/lib/baton".into())].into(),
        boot_id_file: Some("/run/baton/boot-id".into()),
        kernel_release_file: None,
        container_prefix: Some("host-1-".into()),
        quorum_member: false,
    }
}
