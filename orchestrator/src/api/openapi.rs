//! `GET /openapi.json`: the API described by hand (OpenAPI 3.0). A test checks that it lists
//! exactly the routes the router serves.

use axum::Json;
use serde_json::{Value, json};

/// `GET /openapi.json`.
pub async fn serve() -> Json<Value> {
    Json(document())
}

fn error_responses(codes: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for code in codes {
        let description = match *code {
            "400" => {
                "the body is not JSON of the expected shape (unknown field, wrong type); the message names the field"
            }
            "404" => "no such host or upgrade",
            "409" => {
                "conflicts with the current state (an upgrade is active; the command does not apply)"
            }
            "422" => {
                "a field's value is refused (bad image, unknown host, empty selection, bad batch…); the message names the field"
            }
            "502" => "the Docker Engine or the registry failed while resolving the bundle",
            "503" => "not the leader (the message names it) or etcd unreachable",
            _ => "error",
        };
        out.insert(
            (*code).to_owned(),
            json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
        );
    }
    Value::Object(out)
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn with(mut responses: Value, code: &str, response: Value) -> Value {
    if let Some(map) = responses.as_object_mut() {
        map.insert(code.to_owned(), response);
    }
    responses
}

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

fn body(name: &str, required: bool) -> Value {
    json!({"required": required, "content": {"application/json": {"schema": schema(name)}}})
}

fn command(verb: &str, what: &str) -> Value {
    json!({"post": {
        "summary": what,
        "operationId": format!("{verb}Upgrade"),
        "parameters": [path_param("id", "upgrade id")],
        "requestBody": body("Control", false),
        "responses": with(error_responses(&["400", "404", "409", "503"]), "200", ok("the upgrade after the command", schema("UpgradeInfo")))
    }})
}

/// The document.
pub fn document() -> Value {
    let maintenance = |param: &str, what: &str| {
        json!({"put": {
            "summary": format!("Set the maintenance mode of a {what}"),
            "parameters": [path_param(param, what)],
            "requestBody": body("SetMaintenance", true),
            "responses": with(error_responses(&["400", "404", "409", "503"]), "200", ok("the mode set", schema("Maintenance")))
        }})
    };
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Baton orchestrator",
            "version": baton_protocol::VERSION,
            "description": "Upgrades a fleet from update bundles, coordinated through etcd. Reads are served by every replica; writes by the leader only (others answer 503 naming it). Errors are {\"error\": \"<field or key>: <what is wrong>\"}; a refused request writes nothing."
        },
        "paths": {
            "/healthz": {"get": {"summary": "The process answers", "responses": {"200": ok("version, replica, role", schema("Health"))}}},
            "/readyz": {"get": {"summary": "etcd answers", "responses": with(error_responses(&["503"]), "200", ok("ready", schema("Health")))}},
            "/metrics": {"get": {"summary": "Prometheus metrics: upgrades by phase, hosts by state, leader flag, engine counters", "responses": {"200": {"description": "text exposition 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/v1/hosts": {
                "get": {"summary": "Every host, merged from its keys", "responses": with(error_responses(&["503"]), "200", ok("hosts in id order", json!({"type": "array", "items": schema("HostInfo")})))},
                "post": {"summary": "Register (or update) a host", "requestBody": body("RegisterHost", true),
                         "responses": with(with(error_responses(&["400", "422", "503"]), "201", ok("registered", schema("HostSpec"))), "200", ok("updated, or already so", schema("HostSpec")))}
            },
            "/v1/hosts/{host}": {"get": {"summary": "One host: spec, alive, desired, status, installed, maintenance", "parameters": [path_param("host", "host id")],
                                 "responses": with(error_responses(&["400", "404", "503"]), "200", ok("the host", schema("HostInfo")))}},
            "/v1/hosts/{host}/maintenance": maintenance("host", "host"),
            "/v1/groups/{group}/maintenance": maintenance("group", "group"),
            "/v1/upgrades": {
                "get": {"summary": "Every upgrade, oldest first", "responses": with(error_responses(&["503"]), "200", ok("upgrades", json!({"type": "array", "items": schema("UpgradeInfo")})))},
                "post": {"summary": "Start an upgrade: validated, the image resolved to a digest once, stored with the active key in one transaction",
                         "requestBody": body("StartUpgrade", true),
                         "responses": with(error_responses(&["400", "409", "422", "502", "503"]), "201", ok("created", schema("UpgradeInfo")))}
            },
            "/v1/upgrades/{id}": {"get": {"summary": "One upgrade", "parameters": [path_param("id", "upgrade id")],
                                  "responses": with(error_responses(&["400", "404", "503"]), "200", ok("the upgrade", schema("UpgradeInfo")))}},
            "/v1/upgrades/{id}/events": {"get": {"summary": "The upgrade's audit trail", "parameters": [path_param("id", "upgrade id")],
                                  "responses": with(error_responses(&["400", "404", "503"]), "200", ok("events in order", json!({"type": "array", "items": schema("Event")})))}},
            "/v1/upgrades/{id}/pause": command("pause", "Pause: in-flight hosts finish, nothing new starts"),
            "/v1/upgrades/{id}/resume": command("resume", "Resume where it was paused (after canaries: approve them)"),
            "/v1/upgrades/{id}/abort": command("abort", "Abort: nothing new starts; the active key is cleared")
        },
        "components": {"schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
            "Health": {"type": "object", "properties": {"status": {"type": "string"}, "version": {"type": "string"}, "replica": {"type": "string"}, "role": {"type": "string", "enum": ["leader", "follower"]}}},
            "RegisterHost": {"type": "object", "additionalProperties": false, "required": ["id", "docker"], "properties": {
                "id": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "group, zone, …"},
                "docker": {"type": "string", "description": "unix:///var/run/docker.sock or tcp://host:port"},
                "path_map": {"type": "object", "additionalProperties": {"type": "string"}, "description": "host path -> path the host's Docker Engine sees for it"},
                "boot_id_file": {"type": "string"}, "kernel_release_file": {"type": "string"}, "container_prefix": {"type": "string"}}},
            "HostSpec": {"type": "object", "description": "hosts/<host>/spec (docs/keyspace.md)"},
            "Maintenance": {"type": "object", "properties": {"mode": schema("MaintenanceMode"), "reason": {"type": "string"}, "since": {"type": "string"}, "reboot": {"type": "boolean", "description": "mode restart: the host is rebooted; absent when false"}}},
            "MaintenanceMode": {"type": "string", "enum": ["none", "paused", "autohealing-off", "restart", "replace"]},
            "SetMaintenance": {"type": "object", "additionalProperties": false, "required": ["mode"], "properties": {"mode": schema("MaintenanceMode"), "reason": {"type": "string"}, "reboot": {"type": "boolean", "default": false, "description": "only with mode restart (else 400): reboot the host instead of restarting its managed services"}}},
            "HostInfo": {"type": "object", "properties": {
                "id": {"type": "string"}, "spec": schema("HostSpec"), "alive": {"type": "object", "nullable": true},
                "desired": {"type": "object", "nullable": true}, "status": {"type": "object", "nullable": true},
                "installed": {"type": "object", "nullable": true}, "maintenance": {"type": "object", "nullable": true},
                "group_maintenance": {"type": "object", "nullable": true}, "effective_maintenance": schema("MaintenanceMode")}},
            "Strategy": {"type": "object", "additionalProperties": false, "required": ["kind"], "properties": {
                "kind": {"type": "string", "enum": ["rolling", "all-at-once", "daisy-chain"]},
                "batch": {"type": "object", "additionalProperties": false, "description": "rolling: exactly one of count (>= 1) and percent (1..=100)",
                          "properties": {"count": {"type": "integer", "minimum": 1}, "percent": {"type": "integer", "minimum": 1, "maximum": 100}}},
                "canary": {"type": "integer", "minimum": 0}, "pause_after_canary": {"type": "boolean"},
                "zone_label": {"type": "string"}, "max_failures": {"type": "integer", "minimum": 0},
                "allow_downtime": {"type": "boolean", "description": "all-at-once: must be true"}}},
            "StartUpgrade": {"type": "object", "additionalProperties": false, "required": ["image", "strategy"], "properties": {
                "image": {"type": "string", "description": "bundle image: a tag (resolved to a digest once) or repo@sha256:…"},
                "strategy": schema("Strategy"),
                "selector": {"type": "object", "additionalProperties": {"type": "string"}, "description": "hosts carrying all these labels"},
                "hosts": {"type": "array", "items": {"type": "string"}, "description": "only these registered hosts"},
                "id": {"type": "string"},
                "skip_paused": {"type": "boolean", "description": "skip hosts in maintenance mode paused instead of waiting for them"}}},
            "Control": {"type": "object", "additionalProperties": false, "properties": {"reason": {"type": "string"}}},
            "UpgradeInfo": {"type": "object", "description": "upgrades/<id> (docs/keyspace.md) plus counts (hosts per state) and active", "properties": {
                "id": {"type": "string"}, "bundle": {"type": "string"}, "version": {"type": "string"},
                "phase": {"type": "string", "enum": ["Pending", "Downloading", "UpdatingAgents", "Installing", "Paused", "Succeeded", "Failed", "Aborted"]},
                "hosts": {"type": "object"}, "counts": {"type": "object", "additionalProperties": {"type": "integer"}}, "active": {"type": "boolean"}}},
            "Event": {"type": "object", "properties": {"seq": {"type": "integer"}, "at": {"type": "string"}, "source": {"type": "string"}, "host": {"type": "string"}, "kind": {"type": "string"}, "message": {"type": "string"}}}
        }}
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::ROUTES;

    #[test]
    fn documents_exactly_the_served_routes() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(documented, served);
        // Every reference resolves.
        let text = doc.to_string();
        for name in text.split("#/components/schemas/").skip(1) {
            let name = name.split('"').next().expect("name");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
    }
}
