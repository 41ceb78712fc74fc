//! The OpenAPI description, generated from the handlers' annotations, and a docs page. At
//! request time each known kind's payload schema joins it (`components.schemas["payload.<kind>"]`)
//! and the `POST /jobs` body becomes a `oneOf` of one request per kind, so a generated client
//! sends payloads the API accepts.

use axum::{Json, extract::State, response::Html};
use serde_json::{Map, Value, json};
use utoipa::OpenApi;

use crate::{
    error::Problem,
    kinds::Kinds,
    routes,
    state::AppState,
    store::{JobRecord, JobSummary},
    submit::{BatchRequest, JsonRequest},
};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Offload",
        description = "Takes slow jobs off the request path: submit a job, get 202 once RabbitMQ \
                       stored it, follow it by id. Errors are RFC 9457 problem documents."
    ),
    paths(
        routes::pages::index,
        crate::auth::session::sign_in,
        crate::auth::session::sign_out,
        routes::jobs::submit,
        routes::jobs::submit_batch,
        routes::jobs::list_jobs,
        routes::jobs::get_job,
        routes::jobs::retry_job,
        routes::registry::list_kinds,
        routes::registry::list_workers,
        routes::health::live,
        routes::health::ready,
        crate::metrics::serve,
        spec,
        docs,
    ),
    components(schemas(
        JobRecord,
        JobSummary,
        JsonRequest,
        BatchRequest,
        Problem,
        routes::jobs::JobPage,
        routes::jobs::BatchAccepted,
        routes::registry::KindList,
        routes::registry::KindView,
        routes::registry::WorkerList,
        routes::registry::WorkerView,
        crate::depth::QueueDepth,
        crate::store::registry::KindSource
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn spec(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.kinds))
}

/// The document with the kinds' schemas and per-kind request bodies.
pub fn document(kinds: &Kinds) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    let mut requests = Vec::new();
    let mut mapping = Map::new();
    for known in kinds.all() {
        let kind = known.spec.name.as_str();
        let payload = format!("payload.{kind}");
        let request = format!("request.{kind}");
        let mut defs = Vec::new();
        let schema = component(known.spec.payload_schema.clone(), &payload, &mut defs);
        let schemas = &mut doc["components"]["schemas"];
        for (name, def) in defs {
            schemas[name] = def;
        }
        schemas[&payload] = schema;
        schemas[&request] = json!({
            "description": format!("A job of kind {kind}"),
            "allOf": [
                {"$ref": "#/components/schemas/JsonRequest"},
                {
                    "type": "object",
                    "required": ["kind"],
                    "properties": {
                        "kind": {"const": kind},
                        "payload": {"$ref": format!("#/components/schemas/{payload}")},
                    },
                },
            ],
        });
        let target = format!("#/components/schemas/{request}");
        mapping.insert(kind.to_owned(), Value::String(target.clone()));
        requests.push(json!({ "$ref": target }));
    }
    // The mapping names each kind's request: without it a discriminator value is read as a
    // schema name (`request.sleep`), not the kind (`sleep`).
    let body = json!({
        "oneOf": requests,
        "discriminator": {"propertyName": "kind", "mapping": mapping},
    });
    if let Some(content) = doc
        .pointer_mut("/paths/~1jobs/post/requestBody/content/application~1json")
        .and_then(Value::as_object_mut)
    {
        content.insert("schema".to_owned(), body);
    }
    doc
}

/// A kind's JSON Schema as an OpenAPI component named `name`: `true` becomes `{}`, `$schema`
/// goes (the document's dialect applies), and its `$defs` become components of their own,
/// `<name>.<def>`, with the references to them rewritten.
fn component(schema: Value, name: &str, defs: &mut Vec<(String, Value)>) -> Value {
    let Value::Object(mut object) = schema else {
        return json!({});
    };
    object.remove("$schema");
    let local = object
        .remove("$defs")
        .or_else(|| object.remove("definitions"));
    if let Some(Value::Object(found)) = local {
        for (def, value) in found {
            defs.push((format!("{name}.{def}"), rewrite_refs(value, name)));
        }
    }
    rewrite_refs(Value::Object(object), name)
}

/// Points `#/$defs/x` (and `#/definitions/x`) references at the component `<name>.x`.
fn rewrite_refs(value: Value, name: &str) -> Value {
    match value {
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(k, v)| match (k.as_str(), &v) {
                    ("$ref", Value::String(target)) => {
                        let def = target
                            .strip_prefix("#/$defs/")
                            .or_else(|| target.strip_prefix("#/definitions/"));
                        let v = def.map_or(v.clone(), |d| {
                            Value::String(format!("#/components/schemas/{name}.{d}"))
                        });
                        (k, v)
                    }
                    _ => (k, rewrite_refs(v, name)),
                })
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| rewrite_refs(v, name)).collect())
        }
        other => other,
    }
}

/// `GET /docs`: an interactive page for the document (Redoc, loaded by the browser).
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "HTML page", content_type = "text/html")))]
pub async fn docs() -> Html<&'static str> {
    Html(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Offload API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head><body>\
         <redoc spec-url=\"/openapi.json\"></redoc>\
         <script src=\"https://cdn.redoc.ly/redoc/latest/bundles/redoc.standalone.js\"></script>\
         </body></html>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_in_the_document() {
        let doc = ApiDoc::openapi();
        let paths: Vec<&String> = doc.paths.paths.keys().collect();
        for route in routes::ROUTES {
            let route = &route.to_string();
            assert!(
                doc.paths.paths.contains_key(route),
                "{route} is not documented: {paths:?}"
            );
        }
        assert_eq!(
            paths.len(),
            routes::ROUTES.len(),
            "documented but not routed: {paths:?}"
        );
    }

    #[test]
    fn each_kind_has_its_payload_schema_and_request_body() {
        let kinds = Kinds::builtin();
        kinds
            .insert(
                serde_json::from_value(json!({
                    "name": "resize",
                    "payload_schema": {
                        "$schema": "https://json-schema.org/draft/2020-12/schema",
                        "type": "object",
                        "properties": {"size": {"$ref": "#/$defs/size"}},
                        "$defs": {"size": {"type": "integer", "minimum": 1}},
                    },
                }))
                .expect("spec"),
            )
            .expect("compiles");
        let doc = document(&kinds);
        let schemas = &doc["components"]["schemas"];
        // The built-in sleep's schema comes from its Rust type.
        assert!(
            schemas["payload.sleep"]["properties"]["ms"].is_object(),
            "{}",
            schemas["payload.sleep"]
        );
        // noop takes any JSON (its payload type is `serde_json::Value`): no constraint at all.
        let noop = &schemas["payload.noop"];
        assert!(
            noop.is_object()
                && ["type", "properties", "$ref"]
                    .iter()
                    .all(|k| noop.get(k).is_none()),
            "{noop}"
        );
        assert_eq!(
            schemas["payload.resize"]["properties"]["size"]["$ref"],
            "#/components/schemas/payload.resize.size"
        );
        assert!(schemas["payload.resize"].get("$schema").is_none());
        assert_eq!(schemas["payload.resize.size"]["minimum"], 1);
        assert_eq!(
            schemas["request.sleep"]["allOf"][1]["properties"]["kind"]["const"],
            "sleep"
        );
        let body = doc
            .pointer("/paths/~1jobs/post/requestBody/content/application~1json/schema/oneOf")
            .and_then(Value::as_array)
            .expect("a oneOf body");
        let refs: Vec<&str> = body.iter().filter_map(|r| r["$ref"].as_str()).collect();
        let mapping = doc
            .pointer("/paths/~1jobs/post/requestBody/content/application~1json/schema/discriminator/mapping/sleep")
            .and_then(Value::as_str);
        assert_eq!(mapping, Some("#/components/schemas/request.sleep"));
        assert_eq!(
            refs,
            [
                "#/components/schemas/request.noop",
                "#/components/schemas/request.resize",
                "#/components/schemas/request.sleep"
            ]
        );
    }
}
