//! `GET /openapi.json`: the API described by OpenAPI, generated (utoipa) from the handlers'
//! `#[utoipa::path]` attributes and the protocol's wire types, so the schemas are the types
//! the server reads and writes. A test checks that it lists exactly the routes the router
//! serves and that every schema it references is defined.

use axum::Json;
use baton_protocol::api::ErrorBody;
use serde_json::Value;
use utoipa::OpenApi;

use crate::api::error::responses::{
    BadGateway, BadRequest, Conflict, NotFound, Unavailable, Unprocessable,
};
use crate::api::{health, hosts, maintenance, upgrades};

/// The API's description: paths from the handlers, schemas from the types they name.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Baton orchestrator",
        description = "Upgrades a fleet from update bundles, coordinated through etcd. Reads are served by every replica; writes by the leader only (others answer 503 naming it). Errors are {\"error\": \"<field or key>: <what is wrong>\"}; a refused request writes nothing."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        serve,
        hosts::list,
        hosts::register,
        hosts::show,
        maintenance::host,
        maintenance::group,
        upgrades::list,
        upgrades::create,
        upgrades::show,
        upgrades::events,
        upgrades::pause,
        upgrades::resume,
        upgrades::abort,
    ),
    components(
        // The error answers' body, which the reusable responses below carry.
        schemas(ErrorBody),
        responses(BadRequest, NotFound, Conflict, Unprocessable, BadGateway, Unavailable))
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
pub async fn serve() -> Json<Value> {
    Json(document())
}

/// The document, with this build's version.
pub fn document() -> Value {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_owned();
    serde_json::to_value(doc).unwrap_or_else(|e| {
        // The document is built from types: it always serialises; say so if it ever does not.
        serde_json::json!({"error": format!("OpenAPI document: {e}")})
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
    fn operation_ids_are_unique() {
        let doc = document();
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
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        let start = &schemas["StartUpgrade"];
        assert_eq!(start["required"], serde_json::json!(["image", "strategy"]));
        assert!(start["properties"]["strategy"].is_object(), "{start}");
        let kinds = &schemas["StrategyKind"]["enum"];
        assert_eq!(
            kinds,
            &serde_json::json!(["rolling", "all-at-once", "daisy-chain"])
        );
        let modes = &schemas["MaintenanceMode"]["enum"];
        assert!(modes.to_string().contains("autohealing-off"), "{modes}");
        assert!(schemas["UpgradeInfo"].to_string().contains("counts"));
        assert_eq!(doc["info"]["version"], crate::VERSION);
        let body = &doc["paths"]["/v1/upgrades"]["post"]["requestBody"];
        assert!(body.to_string().contains("StartUpgrade"), "{body}");
    }
}
