//! `/openapi.json`, generated from the route table in `lib.rs` (the same table builds the
//! router, so the document can't list a route that doesn't exist or miss one that does).
//! It describes paths, methods, auth and error shape; bodies are described in
//! `docs/billing.md`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::Json;
use axum::routing::MethodRouter;
use serde_json::{Value, json};

use crate::{Access, Billing, Route};

/// Groups routes by path, merging their methods (axum wants one `route` call per path).
pub(crate) fn merged(routes: Vec<Route>) -> Vec<(&'static str, MethodRouter<Billing>)> {
    let mut by_path: BTreeMap<&'static str, MethodRouter<Billing>> = BTreeMap::new();
    for route in routes {
        let mr = match by_path.remove(route.path) {
            Some(existing) => existing.merge(route.handler),
            None => route.handler,
        };
        by_path.insert(route.path, mr);
    }
    by_path.into_iter().collect()
}

fn error_response(description: &str) -> Value {
    json!({"description": description,
           "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// The OpenAPI 3.1 document.
pub(crate) fn document() -> Value {
    let mut paths: BTreeMap<&str, serde_json::Map<String, Value>> = BTreeMap::new();
    for route in crate::routes() {
        let mut responses = serde_json::Map::new();
        responses.insert("2XX".into(), json!({"description": "success (JSON)"}));
        responses.insert("400".into(), error_response("malformed request"));
        if route.method != "get" {
            responses.insert("413".into(), error_response("body over 64 KiB"));
        }
        let security = match route.access {
            Access::Public => json!([]),
            Access::User => {
                responses.insert("401".into(), error_response("missing or invalid token"));
                responses.insert("403".into(), error_response("account banned"));
                json!([{"bearer": []}])
            }
            Access::Admin => {
                responses.insert("401".into(), error_response("missing or invalid token"));
                responses.insert("403".into(), error_response("not an admin"));
                json!([{"bearer": []}])
            }
            Access::Node => {
                responses.insert("401".into(), error_response("invalid node secret"));
                json!([{"nodeSecret": []}])
            }
            Access::Signed => {
                responses.insert("401".into(), error_response("bad signature"));
                json!([{"webhookSignature": []}])
            }
        };
        if matches!(
            route.path,
            "/v1/accounts"
                | "/v1/auth/login"
                | "/v1/auth/refresh"
                | "/v1/nodes/join"
                | "/v1/sessions"
                | "/v1/payments/webhook/donatepay"
        ) {
            responses.insert("429".into(), error_response("rate limited (Retry-After)"));
        }
        let parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "tags": [route.tag],
            "security": security,
            "responses": responses,
        });
        if !parameters.is_empty() {
            op["parameters"] = Value::Array(parameters);
        }
        if route.method != "get" && route.method != "delete" {
            op["requestBody"] = json!({"required": false,
                "content": {"application/json": {"schema": {"type": "object"}}}});
        }
        paths
            .entry(route.path)
            .or_default()
            .insert(route.method.into(), op);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "PLG Booster billing API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Accounts, plans, payments, session tickets, mesh CA and node join, admin. \
                            Errors are {\"error\": {\"code\", \"message\"}}; see docs/billing.md.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "nodeSecret": {"type": "http", "scheme": "bearer", "description": "node_secret from /v1/nodes/join"},
                "webhookSignature": {"type": "apiKey", "in": "header", "name": "X-Signature"},
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "object", "required": ["code", "message"],
                        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
                },
            },
        },
    })
}

/// `GET /openapi.json`.
pub(crate) async fn serve() -> Json<Value> {
    static DOC: OnceLock<Value> = OnceLock::new();
    Json(DOC.get_or_init(document).clone())
}
