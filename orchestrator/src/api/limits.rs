//! What the API enforces beyond the wire types' shapes, stated in the OpenAPI document so a
//! client (or a schema-driven fuzzer) knows in advance what is accepted: name syntax, label
//! keys and values, paths, Docker endpoints, image references, integer ranges, and the
//! field combinations of a strategy, of a maintenance mode and of a soak's gate.
//!
//! The patterns restate the validators' rules (`baton_protocol::names`, `crate::validate`,
//! `crate::docker`); the tests below hold both to the same examples, so neither drifts.

use serde_json::{Value, json};

use crate::engine::dispatch::DEFAULT_HOST_PATHS;
use crate::validate::HostPolicy;

/// A name that becomes a key segment (host id, group, upgrade id, token name, label value).
pub const NAME: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$";
/// A label key.
pub const LABEL_KEY: &str = r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$";
/// One segment of a normalised path: not empty, `.` or `..`; no NUL or backslash.
const SEGMENT: &str = r"(?:[^/.\x00\\][^/\x00\\]*|\.[^/.\x00\\][^/\x00\\]*|\.\.[^/\x00\\]+)";
/// The same for a socket path, where a backslash is just a character.
const SOCKET_SEGMENT: &str = r"(?:[^/.\x00][^/\x00]*|\.[^/.\x00][^/\x00]*|\.\.[^/\x00]+)";
/// A TCP port, 1..=65535, without a leading zero.
const PORT: &str =
    r"(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";
/// A container prefix.
pub const CONTAINER_PREFIX: &str = r"^[A-Za-z0-9._-]{0,63}$";
/// An image reference: `[registry/]name[/name…][:tag][@sha256:<64 hex>]`, 1..=255 characters.
pub const IMAGE: &str = r"^(?:(?:[A-Za-z0-9-]*[.:][A-Za-z0-9.:-]*|localhost)/)?[a-z0-9._-]+(?:/[a-z0-9._-]+)*(?::[A-Za-z0-9._-]{1,128})?(?:@sha256:[0-9a-f]{64})?$";
/// Largest count the engine keeps (u32).
const MAX_COUNT: u64 = u32::MAX as u64;

/// An absolute, normalised path below `/`.
pub fn absolute_path() -> String {
    format!("^(?:/{SEGMENT})+$")
}

/// `text` as a pattern matching exactly it (a path has no other metacharacters).
fn literal(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = ".^$*+?()[]{}|\\".contains(c).then_some('\\');
            escape.into_iter().chain([c])
        })
        .collect()
}

/// The engine path a registration may map `host_path` to under `hosts`: the path itself, or
/// a folder under one of the path-map roots.
pub fn mapped_path(host_path: &str, hosts: &HostPolicy) -> String {
    let mut choices = vec![literal(host_path)];
    for root in &hosts.path_map_roots {
        let root = if root == "/" { "" } else { root.as_str() };
        choices.push(format!("{}(?:/{SEGMENT})+", literal(root)));
    }
    format!("^(?:{})$", choices.join("|"))
}

/// A Docker Engine endpoint; `tcp://` only when `tcp` (the orchestrator can reach those).
pub fn docker_endpoint(tcp: bool) -> String {
    let unix = format!("unix://(?:/{SOCKET_SEGMENT})+");
    if tcp {
        format!(r"^(?:{unix}|tcp://[A-Za-z0-9.\[\]:-]+:{PORT})$")
    } else {
        format!("^{unix}$")
    }
}

fn name() -> Value {
    json!({"type": "string", "pattern": NAME, "minLength": 1, "maxLength": 63})
}

fn labels() -> Value {
    json!({
        "type": "object",
        "propertyNames": {"pattern": LABEL_KEY, "minLength": 1, "maxLength": 63},
        "additionalProperties": name()
    })
}

fn count(min: u64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": MAX_COUNT})
}

/// States the limits in `doc` (the generated document), with what `hosts` lets a
/// registration name.
pub fn state(doc: &mut Value, hosts: &HostPolicy) {
    // Every path parameter is a name.
    if let Some(paths) = doc["paths"].as_object_mut() {
        for ops in paths.values_mut() {
            for op in ops.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
                let params = op.get_mut("parameters").and_then(Value::as_array_mut);
                for param in params.into_iter().flatten() {
                    // A list's cursor names an item, like a path parameter.
                    let named_cursor = param["in"] == "query"
                        && param["name"] == "after"
                        && param["schema"]["type"].to_string().contains("string");
                    if param["in"] == "path" || named_cursor {
                        param["schema"] = name();
                    }
                }
            }
        }
    }
    let schemas = &mut doc["components"]["schemas"];
    let optional = |v: Value| json!({"oneOf": [v, {"type": "null"}]});
    let register = &mut schemas["RegisterHost"]["properties"];
    register["id"] = name();
    register["labels"] = labels();
    register["docker"] = json!({"type": "string", "pattern": docker_endpoint(hosts.tcp_docker)});
    let mapped: serde_json::Map<String, Value> = DEFAULT_HOST_PATHS
        .iter()
        .map(|p| {
            let engine = json!({"type": "string", "pattern": mapped_path(p, hosts)});
            ((*p).to_owned(), engine)
        })
        .collect();
    register["path_map"] = json!({
        "type": "object",
        "description": "Where the engine finds the host paths the downloader job mounts: each is the path itself or a folder under one of the orchestrator's path-map roots.",
        "properties": mapped,
        "additionalProperties": false
    });
    for file in ["boot_id_file", "kernel_release_file"] {
        register[file] = optional(json!({"type": "string", "pattern": absolute_path()}));
    }
    register["container_prefix"] =
        optional(json!({"type": "string", "pattern": CONTAINER_PREFIX, "maxLength": 63}));
    schemas["CreateToken"]["properties"]["name"] = name();

    let start = &mut schemas["StartUpgrade"]["properties"];
    start["image"] = json!({"type": "string", "pattern": IMAGE, "minLength": 1, "maxLength": 255});
    start["selector"] = labels();
    start["hosts"] = optional(json!({
        "type": "array", "items": name(), "minItems": 1, "uniqueItems": true
    }));
    start["id"] = optional(name());
    schemas["StrategyRequest"] = strategy();

    schemas["SetMaintenance"] = maintenance();
    schemas["Gate"] = gate();
}

/// A soak's fleet gate: each kind with exactly its own fields (`crate::validate::soak`).
fn gate() -> Value {
    let number = json!({"oneOf": [{"type": "number"}, {"type": "null"}]});
    json!({
        "description": "A fleet check during soaks: an HTTP GET answering `status`, or a Prometheus instant query within its bounds.",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["http"]},
                    "url": {"type": "string", "pattern": "^https?://[^/?#@\\s]+(?:[/?#]\\S*)?$"},
                    "status": {"type": "integer", "minimum": 100, "maximum": 599}
                },
                "required": ["kind", "url"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {
                    "kind": {"type": "string", "enum": ["prometheus"]},
                    "query": {"type": "string", "minLength": 1},
                    "min": number,
                    "max": number
                },
                "required": ["kind", "query"],
                "additionalProperties": false
            }
        ]
    })
}

/// A strategy: its fields depend on its kind.
fn strategy() -> Value {
    let batch = json!({"oneOf": [
        {"type": "object", "properties": {"count": count(1)}, "required": ["count"], "additionalProperties": false},
        {"type": "object", "properties": {"percent": {"type": "integer", "format": "int64", "minimum": 1, "maximum": 100}}, "required": ["percent"], "additionalProperties": false}
    ]});
    json!({
        "description": "How hosts are dispatched; which fields go with which kind is stated per kind.",
        "oneOf": [
            {
                "type": "object",
                "description": "rolling: batches of hosts (backward-compatible bundles)",
                "properties": {
                    "kind": {"type": "string", "enum": ["rolling"]},
                    "batch": batch,
                    "canary": count(0),
                    "pause_after_canary": {"type": "boolean"},
                    "zone_label": {"type": "string", "pattern": LABEL_KEY, "minLength": 1, "maxLength": 63},
                    "max_failures": count(0)
                },
                "required": ["kind", "batch"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "description": "all-at-once: every selected host at once; allow_downtime must be true",
                "properties": {
                    "kind": {"type": "string", "enum": ["all-at-once"]},
                    "allow_downtime": {"type": "boolean", "enum": [true]}
                },
                "required": ["kind", "allow_downtime"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "description": "auto: rolling (with these settings; batches of one by default) for a backward-compatible bundle, all-at-once for one that is not (refused unless allow_downtime is true)",
                "properties": {
                    "kind": {"type": "string", "enum": ["auto"]},
                    "batch": batch,
                    "canary": count(0),
                    "pause_after_canary": {"type": "boolean"},
                    "zone_label": {"type": "string", "pattern": LABEL_KEY, "minLength": 1, "maxLength": 63},
                    "max_failures": count(0),
                    "allow_downtime": {"type": "boolean"}
                },
                "required": ["kind"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "description": "daisy-chain: one host after the other",
                "properties": {"kind": {"type": "string", "enum": ["daisy-chain"]}},
                "required": ["kind"],
                "additionalProperties": false
            }
        ]
    })
}

/// A maintenance mode: `reboot` only with `restart`.
fn maintenance() -> Value {
    let reason = json!({"type": "string", "description": "Why."});
    json!({
        "description": "A maintenance mode; `reboot: true` only with mode `restart`.",
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["restart"]},
                    "reason": reason,
                    "reboot": {"type": "boolean", "description": "Reboot the host instead of restarting its managed services."}
                },
                "required": ["mode"],
                "additionalProperties": false
            },
            {
                "type": "object",
                "properties": {
                    "mode": {"type": "string", "enum": ["none", "paused", "autohealing-off", "replace"]},
                    "reason": reason,
                    "reboot": {"type": "boolean", "enum": [false]}
                },
                "required": ["mode"],
                "additionalProperties": false
            }
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::Endpoint;
    use baton_protocol::manifest::{check_absolute_path, check_image_ref};
    use baton_protocol::names::check_name;
    use regex::Regex;

    fn agree(pattern: &str, what: &str, valid: impl Fn(&str) -> bool, samples: &[&str]) {
        let re = Regex::new(pattern).expect(what);
        for s in samples {
            assert_eq!(re.is_match(s), valid(s), "{what}: {s:?}");
        }
    }

    #[test]
    fn patterns_accept_exactly_what_the_validators_accept() {
        let long = "a".repeat(64);
        agree(
            NAME,
            "name",
            |s| check_name("x", s).is_ok(),
            &[
                "h1",
                "a",
                "A-b_c.d",
                "",
                "-a",
                ".a",
                "a/b",
                "a b",
                "é",
                &long[..63],
                &long,
            ],
        );
        agree(
            LABEL_KEY,
            "label key",
            |s| crate::validate::check_label_key("x", s).is_ok(),
            &["zone", "k8s.io/zone", "/x", "", "a b", &long],
        );
        agree(
            &absolute_path(),
            "path",
            |s| check_absolute_path("x", s).is_ok(),
            &[
                "/var/lib/baton",
                "/",
                "",
                "var",
                "/a//b",
                "/a/./b",
                "/a/../b",
                "/..",
                "/.a",
                "/..a",
                "/a/",
                "/a\\b",
                "/a\u{0}b",
                "/é",
            ],
        );
        agree(
            &docker_endpoint(true),
            "docker",
            |s| Endpoint::parse(s).is_ok(),
            &[
                "unix:///var/run/docker.sock",
                "unix://",
                "unix:///",
                "unix://rel",
                "unix:///a/../b",
                "unix:///a\\b",
                "tcp://h:2375",
                "tcp://10.0.0.1:1",
                "tcp://[::1]:65535",
                "tcp://h:0",
                "tcp://h:65536",
                "tcp://h:080",
                "tcp://h:+80",
                "tcp://:80",
                "tcp://h",
                "http://h:1",
                "tcp://h_x:1",
            ],
        );
        agree(
            &docker_endpoint(false),
            "docker without tcp",
            |s| {
                Endpoint::parse(s)
                    .and_then(|e| e.check_reachable(&crate::docker::TcpAccess::Refused))
                    .is_ok()
            },
            &["unix:///var/run/docker.sock", "unix:///", "tcp://h:2375"],
        );
        let hosts = HostPolicy {
            tcp_docker: false,
            path_map_roots: vec!["/srv/a.b".into(), "/".into()],
        };
        let register = |engine: &str| {
            let mut r = crate::validate::fixtures::register();
            r.path_map = [("/etc/baton".to_owned(), engine.to_owned())].into();
            r
        };
        for roots in [
            Vec::new(),
            vec!["/srv/a.b".to_owned()],
            hosts.path_map_roots.clone(),
        ] {
            let hosts = HostPolicy {
                path_map_roots: roots,
                ..hosts.clone()
            };
            agree(
                &mapped_path("/etc/baton", &hosts),
                "mapped path",
                |s| crate::validate::host_spec(&register(s), &hosts, "t".into()).is_ok(),
                &[
                    "/etc/baton",
                    "/etc",
                    "/srv/a.b/h1/etc/baton",
                    "/srv/a.b",
                    "/srv/aXb/h1",
                    "/srv/a.b/../etc",
                    "/x/y",
                    "/",
                ],
            );
        }
        agree(
            IMAGE,
            "image",
            |s| check_image_ref("x", s).is_ok(),
            &[
                "127.0.0.1:5000/baton/bundle:2.0.0",
                "localhost/b",
                "b",
                "B",
                "a.b/C/d",
                "r/b:",
                "r//b",
                "/b",
                "r/b@sha256:",
                &format!("r/b@sha256:{}", "a".repeat(64)),
                &format!("r/b:t@sha256:{}", "a".repeat(64)),
                "r/b:t:t",
                "a:b/c",
                "r/b:é",
            ],
        );
    }
}
