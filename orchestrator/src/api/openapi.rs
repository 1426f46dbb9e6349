//! `GET /openapi.json`: the API described by OpenAPI, generated (utoipa) from the handlers'
//! `#[utoipa::path]` attributes and the protocol's wire types, so the schemas are the types
//! the server reads and writes. A test checks that it lists exactly the routes the router
//! serves and that every schema it references is defined.
//!
//! What the [`gate`](crate::api::gate) checks before any handler is added from the route
//! table, so the document states it for every route: the bearer security scheme (none for
//! the probes), 401 and 403 where a role is needed, 413 and 415 on writes.

use axum::Json;
use axum::extract::State;
use baton_protocol::api::{ErrorBody, FleetSnapshot, HostRemoved, UpgradeEvent};
use serde_json::Value;
use utoipa::OpenApi;

use crate::api::error::responses::{
    BadGateway, BadRequest, Conflict, Forbidden, NotFound, TooLarge, Unauthorized, Unavailable,
    Unprocessable, UnsupportedMediaType,
};
use crate::api::{
    AppState, ROUTES, Verb, health, hosts, maintenance, register, stream, tokens, upgrades, windows,
};
use crate::auth::Access;
use crate::validate::HostPolicy;

/// The API's description: paths from the handlers, schemas from the types they name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton orchestrator",
        description = "Upgrades a fleet from update bundles, coordinated through etcd. Every route but /healthz and /readyz takes Authorization: Bearer <token> with a role (viewer: reads; operator: upgrades and maintenance; admin: hosts and tokens). Writes send Content-Type: application/json, bodies of at most 64 KiB (1 MiB for POST /v1/hosts, which takes up to 1,000 registrations). Reads are served by every replica; writes by the leader only (others answer 503 naming it). Errors are {\"error\": \"<field or key>: <what is wrong>\"}; a refused request writes nothing."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        serve,
        hosts::list,
        register::register,
        hosts::show,
        hosts::remove,
        maintenance::host,
        maintenance::group,
        windows::get_fleet,
        windows::set_fleet,
        windows::clear_fleet,
        windows::get_group,
        windows::set_group,
        windows::clear_group,
        upgrades::list,
        upgrades::create,
        upgrades::show,
        upgrades::events,
        upgrades::pause,
        upgrades::resume,
        upgrades::abort,
        stream::stream,
        tokens::list,
        tokens::create,
        tokens::revoke,
    ),
    components(
        // The error answers' body, which the reusable responses below carry, and the
        // messages of /v1/stream (named in its description: an event stream has no schema).
        schemas(ErrorBody, FleetSnapshot, HostRemoved, UpgradeEvent),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge,
            UnsupportedMediaType, Unprocessable, BadGateway, Unavailable))
)]
struct ApiDoc;

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "openapi",
    tag = "health",
    summary = "This document",
    responses((status = 200, description = "OpenAPI", body = Object))
)]
pub async fn serve(State(state): State<AppState>) -> Json<Value> {
    Json(document(state.hosts()))
}

/// The document, with this build's version, the gate's rules and what `hosts` lets a
/// registration name.
pub fn document(hosts: &HostPolicy) -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_owned();
    let mut doc = serde_json::to_value(doc).unwrap_or_else(|e| {
        // The document is built from types: it always serialises; say so if it ever does not.
        serde_json::json!({"error": format!("OpenAPI document: {e}")})
    });
    add_gate(&mut doc);
    crate::api::limits::state(&mut doc, hosts);
    doc
}

/// The gate's rules, from the route table: security, and the answers it gives.
fn add_gate(doc: &mut Value) {
    doc["components"]["securitySchemes"]["bearer"] = serde_json::json!({
        "type": "http",
        "scheme": "bearer",
        "description": "baton_<name>_<64 hex digits>, from `batonctl token create` or the orchestrator's --admin-token-file"
    });
    doc["security"] = serde_json::json!([{"bearer": []}]);
    let reference =
        |name: &str| serde_json::json!({"$ref": format!("#/components/responses/{name}")});
    for route in ROUTES {
        let Some(op) = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(route.path))
            .and_then(|p| p.get_mut(route.verb.name()))
        else {
            continue;
        };
        let Access::Role(role) = route.access else {
            op["security"] = serde_json::json!([]);
            continue;
        };
        let needs = format!("Needs role {role} or higher.");
        op["description"] = Value::String(match op["description"].as_str() {
            Some(own) => format!("{needs} {own}"),
            None => needs,
        });
        let responses = &mut op["responses"];
        responses["401"] = reference("Unauthorized");
        responses["403"] = reference("Forbidden");
        if route.verb != Verb::Get {
            responses["413"] = reference("TooLarge");
            responses["415"] = reference("UnsupportedMediaType");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::ROUTES;

    #[test]
    fn documents_exactly_the_served_routes() {
        let doc = document(&HostPolicy::default());
        let mut documented = BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.insert((method.clone(), path.clone()));
            }
        }
        let served: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|r| (r.verb.name().to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, served);
        // Every reference resolves.
        let text = doc.to_string();
        for kind in ["schemas", "responses"] {
            for name in text.split(&format!("#/components/{kind}/")).skip(1) {
                let name = name.split('"').next().expect("name");
                assert!(
                    doc["components"][kind].get(name).is_some(),
                    "{kind}: {name} is referenced but not defined"
                );
            }
        }
    }

    #[test]
    fn the_gate_and_the_limits_are_documented() {
        let doc = document(&HostPolicy::default());
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["security"],
            serde_json::json!([])
        );
        assert!(doc["paths"]["/healthz"]["get"].get("parameters").is_none());
        let create = &doc["paths"]["/v1/upgrades"]["post"];
        for status in ["401", "403", "413", "415"] {
            assert!(create["responses"].get(status).is_some(), "{status}");
        }
        let show = &doc["paths"]["/v1/hosts/{host}"]["get"];
        assert_eq!(
            show["parameters"][0]["schema"]["pattern"],
            crate::api::limits::NAME
        );
        let modes = doc["components"]["schemas"]["SetMaintenance"]["oneOf"].to_string();
        assert!(
            modes.contains("restart") && modes.contains("[false]"),
            "{modes}"
        );
    }

    #[test]
    fn operation_ids_are_unique() {
        let doc = document(&HostPolicy::default());
        let mut ids = BTreeSet::new();
        for ops in doc["paths"].as_object().expect("paths").values() {
            for op in ops.as_object().expect("operations").values() {
                let id = op["operationId"].as_str().expect("operationId");
                assert!(ids.insert(id.to_owned()), "{id} twice");
            }
        }
    }

    #[test]
    fn request_and_answer_schemas_are_the_wire_types() {
        let doc = document(&HostPolicy::default());
        let schemas = &doc["components"]["schemas"];
        let start = &schemas["StartUpgrade"];
        assert_eq!(start["required"], serde_json::json!(["image", "strategy"]));
        assert!(start["properties"]["strategy"].is_object(), "{start}");
        let kinds = &schemas["StrategyKind"]["enum"];
        assert_eq!(
            kinds,
            &serde_json::json!(["rolling", "all-at-once", "daisy-chain", "auto"])
        );
        assert_eq!(
            schemas["OnFailure"]["enum"],
            serde_json::json!(["halt", "revert"])
        );
        let phases = schemas["UpgradePhase"]["enum"].to_string();
        assert!(
            phases.contains("\"Reverting\"") && phases.contains("\"Reverted\""),
            "{phases}"
        );
        let outcome = schemas["HostOutcome"]["properties"].to_string();
        assert!(
            outcome.contains("PreviousBundle") && outcome.contains("HostRevert"),
            "{outcome}"
        );
        let modes = &schemas["MaintenanceMode"]["enum"];
        assert!(modes.to_string().contains("autohealing-off"), "{modes}");
        assert!(schemas["UpgradeInfo"].to_string().contains("counts"));
        assert_eq!(doc["info"]["version"], crate::VERSION);
        let body = &doc["paths"]["/v1/upgrades"]["post"]["requestBody"];
        assert!(body.to_string().contains("StartUpgrade"), "{body}");
    }

    #[test]
    fn the_stream_is_documented_with_its_messages() {
        let doc = document(&HostPolicy::default());
        let op = &doc["paths"]["/v1/stream"]["get"];
        assert_eq!(op["operationId"], "streamFleet");
        assert!(
            op["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some(),
            "{op}"
        );
        let description = op["description"].as_str().expect("description");
        for message in [
            "snapshot",
            "host",
            "host-removed",
            "upgrade",
            "event",
            "retry",
        ] {
            assert!(description.contains(&format!("`{message}")), "{message}");
        }
        assert!(description.contains("Needs role viewer"), "{description}");
        let schemas = &doc["components"]["schemas"];
        for schema in ["FleetSnapshot", "HostRemoved", "UpgradeEvent"] {
            assert!(schemas.get(schema).is_some(), "{schema}");
        }
        assert!(schemas["FleetSnapshot"].to_string().contains("HostInfo"));
    }

    #[test]
    fn lists_state_their_pages() {
        let doc = document(&HostPolicy::default());
        for (path, after) in [
            ("/v1/hosts", "string"),
            ("/v1/upgrades", "string"),
            ("/v1/tokens", "string"),
            ("/v1/upgrades/{id}/events", "integer"),
        ] {
            let op = &doc["paths"][path]["get"];
            let params = op["parameters"].as_array().expect("parameters");
            let find = |name: &str| {
                params
                    .iter()
                    .find(|p| p["name"] == name && p["in"] == "query")
                    .unwrap_or_else(|| panic!("{path}: no {name}"))
            };
            let limit = &find("limit")["schema"];
            assert_eq!(limit["minimum"], 1, "{path}: {limit}");
            assert_eq!(limit["maximum"], 1000, "{path}: {limit}");
            let cursor = &find("after")["schema"];
            assert!(cursor.to_string().contains(after), "{path}: {cursor}");
            if after == "string" {
                assert_eq!(cursor["pattern"], crate::api::limits::NAME, "{path}");
            }
            let link = &op["responses"]["200"]["headers"]["Link"];
            assert!(link.is_object(), "{path}: no Link header");
        }
    }
}
