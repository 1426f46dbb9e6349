//! Host registration (`POST /v1/hosts`): the request checked and turned into the spec to
//! store.

use baton_protocol::HostId;
use baton_protocol::api::RegisterHost;
use baton_protocol::documents::{HostSpec, SCHEMA_VERSION, Timestamp};
use baton_protocol::manifest::check_absolute_path;

use super::FieldError;
use super::fields::{MAX_LABEL_LEN, check_labels};
use crate::docker::Endpoint;

fn optional_absolute(field: &str, path: &Option<String>) -> Result<(), FieldError> {
    match path {
        Some(p) => check_absolute_path(field, p).map_err(FieldError::from_manifest),
        None => Ok(()),
    }
}

/// `POST /v1/hosts` → the spec to store.
pub fn host_spec(req: &RegisterHost, registered_at: Timestamp) -> Result<HostSpec, FieldError> {
    let host = HostId::new(req.id.as_str()).map_err(|e| FieldError::new("id", e.to_string()))?;
    check_labels("labels", &req.labels)?;
    Endpoint::parse(&req.docker).map_err(|e| FieldError::new("docker", e.to_string()))?;
    for (host_path, engine_path) in &req.path_map {
        let field = format!("path_map[{host_path:?}]");
        for path in [host_path, engine_path] {
            if path != "/" {
                check_absolute_path(&field, path).map_err(FieldError::from_manifest)?;
            }
        }
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
        registered_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::fixtures::register;

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
        for (name, edit, field) in cases {
            let mut r = register();
            edit(&mut r);
            let err = host_spec(&r, "t".into()).expect_err(name);
            assert_eq!(err.field, *field, "{name}: {err}");
        }
        let spec = host_spec(&register(), "t".into()).expect("valid");
        assert_eq!(spec.host.as_str(), "host-1");
        assert_eq!(spec.container_prefix.as_deref(), Some("host-1-"));
    }
}
