//! Host registration (`POST /v1/hosts`): the request checked and turned into the spec to
//! store.

use baton_protocol::HostId;
use baton_protocol::api::RegisterHost;
use baton_protocol::documents::{HostSpec, SCHEMA_VERSION, Timestamp};
use baton_protocol::manifest::check_absolute_path;

use super::FieldError;
use super::fields::{MAX_LABEL_LEN, check_labels};
use crate::docker::{Endpoint, TcpAccess};
use crate::engine::dispatch::DEFAULT_HOST_PATHS;

/// What a registration may name beyond the shapes of its fields, from the orchestrator's
/// configuration: a host's Docker Engine runs the downloader job as root with the mapped
/// folders mounted, so which engines and folders it may name is the operator's decision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// Whether `tcp://` engines can be reached (over TLS, or plain when asked for).
    pub tcp_docker: bool,
    /// Folders of engines' machines under which a host's paths may be mapped
    /// (`--path-map-root`, e.g. where simulated hosts keep their files); without one, a host
    /// path maps only to itself.
    pub path_map_roots: Vec<String>,
}

impl HostPolicy {
    /// The policy of an orchestrator that reaches `tcp://` engines as `tcp` says.
    pub fn new(tcp: &TcpAccess, path_map_roots: Vec<String>) -> Self {
        Self {
            tcp_docker: tcp.allows_tcp(),
            path_map_roots,
        }
    }

    /// Checks one path-map entry: the host path is one the job mounts, and the engine's
    /// path is the same path or lies under a configured root.
    fn check_mapping(&self, host_path: &str, engine_path: &str) -> Result<(), FieldError> {
        let field = format!("path_map[{host_path:?}]");
        if !DEFAULT_HOST_PATHS.contains(&host_path) {
            return Err(FieldError::new(
                &field,
                format!(
                    "{host_path:?} is not a path the downloader job mounts; the path map \
                     may name {}",
                    DEFAULT_HOST_PATHS.join(", ")
                ),
            ));
        }
        check_absolute_path(&field, engine_path).map_err(FieldError::from_manifest)?;
        let under_root = self.path_map_roots.iter().any(|root| {
            engine_path
                .strip_prefix(root.as_str())
                .is_some_and(|rest| rest.starts_with('/') || root == "/")
        });
        if engine_path == host_path || under_root {
            return Ok(());
        }
        let roots = if self.path_map_roots.is_empty() {
            "none is configured".to_owned()
        } else {
            self.path_map_roots.join(", ")
        };
        Err(FieldError::new(
            &field,
            format!(
                "{engine_path:?} must be {host_path:?} itself or a folder under one of the \
                 orchestrator's --path-map-root folders ({roots})"
            ),
        ))
    }
}

fn optional_absolute(field: &str, path: &Option<String>) -> Result<(), FieldError> {
    match path {
        Some(p) => check_absolute_path(field, p).map_err(FieldError::from_manifest),
        None => Ok(()),
    }
}

/// `POST /v1/hosts` → the spec to store, if `policy` allows it.
pub fn host_spec(
    req: &RegisterHost,
    policy: &HostPolicy,
    registered_at: Timestamp,
) -> Result<HostSpec, FieldError> {
    let host = HostId::new(req.id.as_str()).map_err(|e| FieldError::new("id", e.to_string()))?;
    check_labels("labels", &req.labels)?;
    let tcp = if policy.tcp_docker {
        TcpAccess::Plain
    } else {
        TcpAccess::Refused
    };
    Endpoint::parse(&req.docker)
        .and_then(|e| e.check_reachable(&tcp))
        .map_err(|e| FieldError::new("docker", e.to_string()))?;
    for (host_path, engine_path) in &req.path_map {
        policy.check_mapping(host_path, engine_path)?;
    }
    optional_absolute("boot_id_file", &req.boot_id_file)?;
    optional_absolute("kernel_release_file", &req.kernel_release_file)?;
    if let Some(prefix) = &req.container_prefix {
        let ok = prefix.len() <= MAX_LABEL_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !ok {
            return Err(FieldError::new(
                "container_prefix",
                format!("{prefix:?} must be at most 63 of letters, digits, '.', '_', '-'"),
            ));
        }
    }
    Ok(HostSpec {
        schema_version: SCHEMA_VERSION,
        host,
        labels: req.labels.clone(),
        docker: req.docker.clone(),
        path_map: req.path_map.clone(),
        boot_id_file: req.boot_id_file.clone(),
        kernel_release_file: req.kernel_release_file.clone(),
        container_prefix: req.container_prefix.clone(),
        quorum_member: req.quorum_member,
        registered_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::{policy, register};

    #[test]
    fn host_registrations_are_refused_naming_the_field() {
        type Edit = fn(&mut RegisterHost);
        let cases: &[(&str, Edit, &str)] = &[
            ("bad id", |r| r.id = "a/b".into(), "id"),
            ("empty id", |r| r.id = String::new(), "id"),
            ("http docker", |r| r.docker = "http://x:1".into(), "docker"),
            (
                "bad label key",
                |r| {
                    r.labels.insert("bad key".into(), "x".into());
                },
                "labels",
            ),
            (
                "bad label value",
                |r| {
                    r.labels.insert("zone".into(), "a/b".into());
                },
                "labels.zone",
            ),
            (
                "relative path map",
                |r| {
                    r.path_map.insert("etc/baton".into(), "/x".into());
                },
                "path_map[\"etc/baton\"]",
            ),
            (
                "escaping path map",
                |r| {
                    r.path_map.insert("/etc/baton".into(), "/srv/../etc".into());
                },
                "path_map[\"/etc/baton\"]",
            ),
            (
                "the whole host mapped",
                |r| {
                    r.path_map.insert("/".into(), "/".into());
                },
                "path_map[\"/\"]",
            ),
            (
                "a path the job does not mount",
                |r| {
                    r.path_map.insert("/usr/bin".into(), "/usr/bin".into());
                },
                "path_map[\"/usr/bin\"]",
            ),
            (
                "an engine folder outside the roots",
                |r| {
                    r.path_map.insert("/etc/baton".into(), "/etc".into());
                },
                "path_map[\"/etc/baton\"]",
            ),
            (
                "a root's sibling",
                |r| {
                    r.path_map
                        .insert("/etc/baton".into(), "/srv/h1x/etc/baton".into());
                },
                "path_map[\"/etc/baton\"]",
            ),
            (
                "tcp docker without tls",
                |r| r.docker = "tcp://10.0.0.7:2375".into(),
                "docker",
            ),
            (
                "relative boot id file",
                |r| r.boot_id_file = Some("run/x".into()),
                "boot_id_file",
            ),
            (
                "container prefix with slash",
                |r| r.container_prefix = Some("a/".into()),
                "container_prefix",
            ),
        ];
        let policy = policy();
        for (name, edit, field) in cases {
            let mut r = register();
            edit(&mut r);
            let err = host_spec(&r, &policy, "t".into()).expect_err(name);
            assert_eq!(err.field, *field, "{name}: {err}");
        }
        let spec = host_spec(&register(), &policy, "t".into()).expect("valid");
        assert_eq!(spec.host.as_str(), "host-1");
        assert_eq!(spec.container_prefix.as_deref(), Some("host-1-"));
    }

    #[test]
    fn the_policy_decides_tcp_engines_and_engine_folders() {
        let mut r = register();
        r.docker = "tcp://10.0.0.7:2376".into();
        r.path_map = [("/etc/baton".into(), "/etc/baton".into())].into();
        let tcp = HostPolicy::new(&TcpAccess::Plain, Vec::new());
        host_spec(&r, &tcp, "t".into()).expect("tcp allowed, identity mapping");
        let err = host_spec(&r, &HostPolicy::default(), "t".into()).expect_err("tcp refused");
        assert!(err.reason.contains("--docker-tls-ca-file"), "{err}");
        r.path_map = [("/etc/baton".into(), "/srv/h1/etc/baton".into())].into();
        let err = host_spec(&r, &tcp, "t".into()).expect_err("no roots");
        assert!(err.reason.contains("--path-map-root"), "{err}");
    }
}
