//! Whole manifests through [`Manifest::parse`]: a valid sample, and each rule refused
//! naming its field.

use super::*;

const SHA: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn sample() -> serde_json::Value {
    serde_json::json!({
        "schema_version": 1,
        "version": "2.0.0",
        "backward_compatible": true,
        "agent": {"version": "2.0.0", "file": {"path": "agent/baton-agent", "size": 0, "sha256": SHA, "mode": "0755"}},
        "components": [
            {"name": "baton-hello", "version": "2.0.0", "kind": "file", "order": 10,
             "files": [{"path": "packages/hello/baton-hello", "dest": "/usr/local/bin/baton-hello", "size": 0, "sha256": SHA, "mode": "0755"}]},
            {"name": "baton-echo", "version": "2.0.0", "kind": "service", "unit": "baton-echo.service", "order": 20,
             "files": [
                {"path": "packages/echo/baton-echo", "dest": "/usr/local/sbin/baton-echo", "size": 0, "sha256": SHA, "mode": "0755"},
                {"path": "packages/echo/baton-echo.service", "dest": "/etc/systemd/system/baton-echo.service", "size": 0, "sha256": SHA}],
             "health": [{"check": "unit-active"}]},
            {"name": "baton-kv", "version": "2.0.0", "kind": "container", "image": "baton/kv:2.0.0", "container": "baton-kv", "order": 30,
             "files": [{"path": "packages/kv/image.tar", "size": 0, "sha256": SHA}],
             "health": [{"check": "container-running"}, {"check": "http", "url": "http://127.0.0.1:7070/health"}]},
            {"name": "kernel", "version": "2.0.0", "kind": "kernel", "release": "6.1.0-baton2", "order": 40, "reboot": true,
             "files": [{"path": "packages/kernel/vmlinuz-6.1.0-baton2", "dest": "/boot/vmlinuz-6.1.0-baton2", "size": 0, "sha256": SHA}]}
        ]
    })
}

fn parse(v: &serde_json::Value) -> Result<Manifest, ManifestError> {
    Manifest::parse(&serde_json::to_vec(v).expect("json"))
}

fn refused(edit: impl FnOnce(&mut serde_json::Value)) -> ManifestError {
    let mut v = sample();
    edit(&mut v);
    parse(&v).expect_err("should be refused")
}

#[test]
fn sample_is_valid_and_ordered() {
    let m = parse(&sample()).expect("valid");
    let order: Vec<&str> = m.apply_order().iter().map(|c| c.kind.name()).collect();
    assert_eq!(order, ["file", "service", "container", "kernel"]);
    assert_eq!(Manifest::parse(&m.to_json()).expect("round trip"), m);
}

#[test]
fn the_orchestrator_image_is_pinned_by_digest() {
    let e = refused(|v| v["orchestrator_image"] = "r:5000/baton/orchestrator:2.0.0".into());
    assert_eq!(e.field, "orchestrator_image");
    assert!(e.reason.contains("pinned by digest"), "{e}");
    let mut v = sample();
    v["orchestrator_image"] = format!("r:5000/baton/orchestrator@sha256:{}", "a".repeat(64)).into();
    parse(&v).expect("pinned");
}

#[test]
fn refuses_parent_segments() {
    let e =
        refused(|v| v["components"][0]["files"][0]["path"] = "packages/../../etc/passwd".into());
    assert_eq!(e.field, "components[0].files[0].path");
    assert!(e.reason.contains(".."), "{e}");
}

#[test]
fn refuses_absolute_bundle_paths() {
    let e = refused(|v| v["agent"]["file"]["path"] = "/bin/sh".into());
    assert_eq!(e.field, "agent.file.path");
    assert!(e.reason.contains("absolute"), "{e}");
}

#[test]
fn refuses_empty_paths_and_segments() {
    let e = refused(|v| v["components"][1]["files"][0]["path"] = "".into());
    assert_eq!(e.field, "components[1].files[0].path");
    let e = refused(|v| v["components"][1]["files"][0]["path"] = "a//b".into());
    assert!(e.reason.contains("empty segment"), "{e}");
}

#[test]
fn refuses_relative_or_escaping_destinations() {
    let e = refused(|v| v["components"][0]["files"][0]["dest"] = "usr/bin/x".into());
    assert_eq!(e.field, "components[0].files[0].dest");
    let e = refused(|v| v["components"][0]["files"][0]["dest"] = "/usr/../etc/shadow".into());
    assert_eq!(e.field, "components[0].files[0].dest");
}

#[test]
fn refuses_bad_digests() {
    for bad in ["", "abc", &SHA.to_uppercase(), &format!("{}g", &SHA[..63])] {
        let e = refused(|v| v["components"][2]["files"][0]["sha256"] = bad.into());
        assert_eq!(e.field, "components[2].files[0].sha256", "{bad}");
    }
}

#[test]
fn refuses_duplicate_component_names() {
    let e = refused(|v| v["components"][1]["name"] = "baton-hello".into());
    assert_eq!(e.field, "components[1].name");
    assert!(e.reason.contains("duplicate"), "{e}");
}

#[test]
fn refuses_unknown_kinds_naming_the_component() {
    let e = refused(|v| v["components"][0]["kind"] = "firmware".into());
    assert!(e.field.starts_with("components[0]"), "{e}");
    assert!(e.reason.contains("firmware"), "{e}");
}

#[test]
fn refuses_fields_of_another_kind_and_missing_kind_fields() {
    let e = refused(|v| v["components"][0]["release"] = "x".into());
    assert_eq!(e.field, "components[0].release");
    let e = refused(|v| {
        v["components"][1]
            .as_object_mut()
            .expect("obj")
            .remove("unit")
            .map(|_| ())
            .unwrap_or(())
    });
    assert_eq!(e.field, "components[1].unit");
}

#[test]
fn refuses_unknown_fields() {
    let e = refused(|v| v["components"][0]["colour"] = "red".into());
    assert!(e.field.starts_with("components[0]"), "{e}");
    assert!(e.reason.contains("colour"), "{e}");
}

#[test]
fn refuses_bad_versions() {
    for bad in ["", "v2", "2..0", "2.0.0-", "2.0.0 beta", "2.0.0-rc/1"] {
        let e = refused(|v| v["version"] = bad.into());
        assert_eq!(e.field, "version", "{bad}");
    }
    let e = refused(|v| v["components"][3]["version"] = "x".into());
    assert_eq!(e.field, "components[3].version");
}

#[test]
fn refuses_kernel_not_last_or_without_reboot() {
    let e = refused(|v| v["components"][3]["order"] = 5.into());
    assert_eq!(e.field, "components[3].order");
    let e = refused(|v| v["components"][3]["reboot"] = false.into());
    assert_eq!(e.field, "components[3].reboot");
}

#[test]
fn refuses_service_without_its_unit_file() {
    let e = refused(|v| {
        v["components"][1]["files"][1]["dest"] = "/etc/systemd/system/other.service".into()
    });
    assert_eq!(e.field, "components[1].files");
}

#[test]
fn refuses_duplicate_bundle_paths_and_destinations() {
    let e =
        refused(|v| v["components"][1]["files"][0]["path"] = "packages/hello/baton-hello".into());
    assert_eq!(e.field, "components[1].files[0].path");
    let e =
        refused(|v| v["components"][1]["files"][0]["dest"] = "/usr/local/bin/baton-hello".into());
    assert_eq!(e.field, "components[1].files[0].dest");
}

#[test]
fn refuses_bad_modes_and_health_checks() {
    let e = refused(|v| v["components"][0]["files"][0]["mode"] = "rwx".into());
    assert_eq!(e.field, "components[0].files[0].mode");
    let e =
        refused(|v| v["components"][0]["health"] = serde_json::json!([{"check": "unit-active"}]));
    assert_eq!(e.field, "components[0].health[0]");
    let e = refused(|v| v["components"][2]["health"][1]["url"] = "ftp://x".into());
    assert_eq!(e.field, "components[2].health[1].url");
}

/// The sample's service marked as an etcd member.
fn with_member(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let mut v = sample();
    v["components"][1]["quorum"] = serde_json::json!({
        "cluster": "etcd", "endpoint": "http://127.0.0.1:2379", "data_dir": "/var/lib/etcd"
    });
    edit(&mut v);
    v
}

#[test]
fn a_service_may_be_a_quorum_member() {
    let m = parse(&with_member(|_| {})).expect("valid");
    let quorum = m.components[1].quorum.as_ref().expect("quorum");
    assert_eq!(quorum.cluster, QuorumCluster::Etcd);
    assert_eq!(quorum.endpoint, "http://127.0.0.1:2379");
    assert!(m.has_quorum_member());
    assert!(!parse(&sample()).expect("valid").has_quorum_member());
    assert_eq!(Manifest::parse(&m.to_json()).expect("round trip"), m);
}

#[test]
fn only_a_service_is_a_quorum_member() {
    let mut v = with_member(|_| {});
    v["components"][2]["quorum"] = v["components"][1]["quorum"].clone();
    let e = parse(&v).expect_err("container member");
    assert_eq!(e.field, "components[2].quorum");
    assert!(e.reason.contains("container"), "{e}");
}

#[test]
fn a_quorum_member_needs_a_client_endpoint() {
    for bad in [
        "127.0.0.1:2379",
        "http://127.0.0.1",
        "http://:2379",
        "http://h:0",
        "unix:///x",
    ] {
        let e = parse(&with_member(|v| {
            v["components"][1]["quorum"]["endpoint"] = bad.into();
        }))
        .expect_err(bad);
        assert_eq!(e.field, "components[1].quorum.endpoint", "{bad}");
    }
    parse(&with_member(|v| {
        v["components"][1]["quorum"]["endpoint"] = "https://etcd-1:2379".into();
    }))
    .expect("https");
}

#[test]
fn a_quorum_members_data_folder_is_absolute() {
    let e = parse(&with_member(|v| {
        v["components"][1]["quorum"]["data_dir"] = "var/lib/etcd".into();
    }))
    .expect_err("relative");
    assert_eq!(e.field, "components[1].quorum.data_dir");
}

#[test]
fn no_file_is_installed_in_a_quorum_members_data() {
    let e = parse(&with_member(|v| {
        v["components"][1]["files"][0]["dest"] = "/var/lib/etcd/member/snap/db".into();
    }))
    .expect_err("file in the data folder");
    assert_eq!(e.field, "components[1].files[0].dest");
    assert!(e.reason.contains("data folder"), "{e}");
    // A sibling folder sharing the prefix is not inside it.
    parse(&with_member(|v| {
        v["components"][1]["files"][0]["dest"] = "/var/lib/etcd-tools/x".into();
    }))
    .expect("sibling");
}

#[test]
fn an_unknown_quorum_cluster_or_field_is_refused() {
    let e = parse(&with_member(|v| {
        v["components"][1]["quorum"]["cluster"] = "zookeeper".into();
    }))
    .expect_err("unknown cluster");
    assert!(e.field.starts_with("components[1].quorum"), "{e}");
    let e = parse(&with_member(|v| {
        v["components"][1]["quorum"]["peers"] = 3.into();
    }))
    .expect_err("unknown field");
    assert!(e.field.starts_with("components[1].quorum"), "{e}");
}
