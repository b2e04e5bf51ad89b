//! The OpenAPI 3.1 document, built from the route table ([`super::routes::table`]) and the
//! request types' `JsonSchema`s, so it describes exactly the routes the router serves.

use axum::Json;
use serde_json::{json, Map, Value};

use super::routes::{table, Route};

fn problem_response(what: &str) -> Value {
    json!({"description": what, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn operation(r: &Route) -> Value {
    let mut params: Vec<Value> = Vec::new();
    for seg in r.path.split('/') {
        if let Some(name) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            params.push(
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}),
            );
        }
    }
    if let Some(q) = r.query {
        let schema = q();
        if let Some(props) = schema["properties"].as_object() {
            for (name, s) in props {
                params.push(json!({"name": name, "in": "query", "required": false, "schema": s}));
            }
        }
    }
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({"description": "OK", "content": {r.produces: {}}}),
    );
    responses.insert("422".into(), problem_response("Bad input"));
    let mut op = json!({
        "summary": r.summary,
        "operationId": format!("{} {}", r.method, r.path),
        "parameters": params,
    });
    if r.path.contains('{') {
        responses.insert(
            "404".into(),
            problem_response("No such agent, task or dead letter"),
        );
    }
    if r.method != axum::http::Method::GET {
        responses.insert(
            "409".into(),
            problem_response("Not allowed in the current state"),
        );
    }
    if let Some(scope) = r.scope {
        op["security"] = json!([{"apiKey": [scope.to_string()]}]);
        op["x-scope"] = json!(scope.to_string());
        responses.insert("401".into(), problem_response("No valid API key"));
        responses.insert(
            "403".into(),
            problem_response("The key's scope is too small"),
        );
        responses.insert(
            "429".into(),
            problem_response("Rate limited (see Retry-After)"),
        );
    }
    responses.insert("503".into(), problem_response("Redis cannot be reached"));
    if let Some(body) = r.body {
        op["requestBody"] = json!({"required": r.body_required, "content": {"application/json": {"schema": body()}}});
    }
    op["responses"] = Value::Object(responses);
    op
}

pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for r in table() {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method.as_str().to_ascii_lowercase()] = operation(&r);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tinytown townhall",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The town's REST API. Scopes: read < write < manage. Errors are RFC 9457 problem details.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer", "description": "tt_<id>_<secret> from `tt auth key add`"}},
            "schemas": {"Problem": {
                "type": "object",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"},
                    "status": {"type": "integer"}, "detail": {"type": "string"},
                    "hint": {"type": "string"}, "retry_after": {"type": "integer"},
                },
            }},
        },
    })
}

pub async fn serve() -> Json<Value> {
    Json(document())
}
