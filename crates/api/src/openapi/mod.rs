//! The OpenAPI description, generated from the handlers' annotations, and a docs page. At
//! request time each known kind's payload schema joins it (`components.schemas["payload.<kind>"]`)
//! and the `POST /jobs` body becomes a `oneOf` of one request per kind, so a generated client
//! sends payloads the API accepts; [`rules`] adds every constraint the server enforces.
//!
//! - [`rules`]: security, error responses and input bounds of every operation.
//! - [`page`]: `/docs`, the document as an HTML page rendered by the API itself.

pub mod page;
pub mod rules;

pub use page::docs;

use axum::{Json, extract::State};
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
        routes::cancel::cancel_job,
        routes::cancel::cancel_jobs,
        routes::result::get_result,
        routes::live::job_events,
        routes::registry::list_kinds,
        routes::registry::list_workers,
        routes::schedules::create_schedule,
        routes::schedules::list_schedules,
        routes::schedules::get_schedule,
        routes::schedules::delete_schedule,
        routes::schedules::pause_schedule,
        routes::schedules::resume_schedule,
        routes::schedules::run_schedule,
        routes::health::live,
        routes::health::ready,
        crate::metrics::serve,
        spec,
        page::docs,
    ),
    components(schemas(
        JobRecord,
        JobSummary,
        crate::store::ArtifactLink,
        JsonRequest,
        BatchRequest,
        Problem,
        routes::jobs::JobPage,
        routes::jobs::BatchAccepted,
        routes::cancel::CancelRequest,
        routes::cancel::Cancelled,
        routes::registry::KindList,
        routes::registry::KindView,
        routes::registry::WorkerList,
        routes::registry::WorkerView,
        crate::depth::QueueDepth,
        crate::schedules::ScheduleRequest,
        crate::schedules::ScheduleView,
        routes::schedules::ScheduleList,
        crate::store::registry::KindSource
    ))
)]
pub struct ApiDoc;

/// `GET /openapi.json`: this document.
#[utoipa::path(get, path = "/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn spec(State(state): State<AppState>) -> Json<Value> {
    Json(document(&state.kinds, state.settings.max_job_timeout_s))
}

/// The document with the kinds' schemas, per-kind request bodies and every rule of [`rules`];
/// `max_timeout_s` is the running `OFFLOAD_MAX_JOB_TIMEOUT_S`.
pub fn document(kinds: &Kinds, max_timeout_s: u64) -> Value {
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
        // A payload is required when `{}` cannot be one: its schema requires properties or
        // picks among alternatives.
        let spec_schema = &known.spec.payload_schema;
        let needs_payload = spec_schema["required"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
            || spec_schema.get("oneOf").is_some()
            || spec_schema.get("anyOf").is_some();
        let required = if needs_payload {
            json!(["kind", "payload"])
        } else {
            json!(["kind"])
        };
        schemas[&payload] = schema;
        schemas[&request] = json!({
            "description": format!("A job of kind {kind}"),
            "allOf": [
                {"$ref": "#/components/schemas/JsonRequest"},
                {
                    "type": "object",
                    "required": required,
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
    rules::apply(&mut doc, max_timeout_s);
    // A job without artifacts answers its result as JSON.
    if let Some(content) = doc
        .pointer_mut("/paths/~1jobs~1{id}~1result/get/responses/200/content")
        .and_then(Value::as_object_mut)
    {
        content.insert("application/json".to_owned(), json!({"schema": {}}));
        // An artifact carries its own media type (image/webp, application/pdf, ...).
        content.insert(
            "*/*".to_owned(),
            json!({"schema": {"type": "string", "format": "binary"}}),
        );
    }
    // A batch's jobs are the same requests, one per kind; a schedule's job too, without a time.
    doc["components"]["schemas"]["BatchRequest"]["properties"]["jobs"]["items"] = body.clone();
    doc["components"]["schemas"]["ScheduleRequest"]["properties"]["job"] = json!({
        "description": "The job each tick makes: a POST /jobs body without run_at and delay_s",
        "allOf": [
            body.clone(),
            {"not": {"anyOf": [{"required": ["run_at"]}, {"required": ["delay_s"]}]}},
        ],
    });
    if let Some(content) = doc
        .pointer_mut("/paths/~1jobs/post/requestBody/content")
        .and_then(Value::as_object_mut)
    {
        content.insert("application/json".to_owned(), json!({ "schema": body }));
        content.insert(
            "application/x-www-form-urlencoded".to_owned(),
            json!({"schema": {"$ref": "#/components/schemas/FormRequest"}}),
        );
        content.insert(
            "multipart/form-data".to_owned(),
            json!({"schema": {"$ref": "#/components/schemas/MultipartRequest"}}),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        routes::jobs::MAX_PAGE,
        submit::{MAX_ATTEMPTS_LIMIT, MAX_BATCH_JOBS, MAX_KEY_LEN},
    };
    use offload_shared::JobStatus;

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
    fn every_operation_states_who_may_call_it_and_every_error() {
        let doc = document(&Kinds::builtin(), 3600);
        let mut described = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            assert!(
                routes::ROUTES.contains(&path.as_str()),
                "{path} is not routed"
            );
            for (method, op) in item.as_object().expect("item") {
                let rule = rules::OPERATIONS
                    .iter()
                    .find(|o| o.path == path && o.method == method)
                    .unwrap_or_else(|| panic!("{method} {path} is not in rules::OPERATIONS"));
                described += 1;
                let security = op["security"].as_array().expect("security");
                let responses = &op["responses"];
                let mut errors = rule.errors.to_vec();
                if rule.access == rules::Access::Open {
                    assert!(security.is_empty(), "{method} {path} is open");
                } else {
                    assert!(!security.is_empty(), "{method} {path} needs credentials");
                    errors.extend([401, 403]);
                    for s in [401, 403] {
                        assert!(
                            responses[s.to_string()]["headers"]["WWW-Authenticate"].is_object(),
                            "{method} {path} {s} has WWW-Authenticate"
                        );
                    }
                }
                for status in errors {
                    let response = &responses[status.to_string()];
                    if status == rules::HEADERS_TOO_LARGE {
                        assert!(
                            response.is_object() && response.get("content").is_none(),
                            "{method} {path} 431 has no body"
                        );
                        continue;
                    }
                    assert_eq!(
                        response
                            .pointer("/content/application~1problem+json/schema/$ref")
                            .and_then(Value::as_str),
                        Some("#/components/schemas/Problem"),
                        "{method} {path} {status} is a problem document"
                    );
                    if matches!(status, 429 | 503) {
                        assert!(
                            response["headers"]["Retry-After"].is_object(),
                            "{method} {path} {status} has Retry-After"
                        );
                    }
                    if status == 429 {
                        assert!(response["headers"]["RateLimit"].is_object());
                    }
                }
            }
        }
        // Every rule names a documented operation (of a route this build serves).
        let routed = rules::OPERATIONS
            .iter()
            .filter(|o| routes::ROUTES.contains(&o.path))
            .count();
        assert_eq!(described, routed, "every rule names an operation");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes["bearer"]["scheme"], "bearer");
        assert_eq!(schemes["session"]["in"], "cookie");
        assert_eq!(schemes["session"]["name"], "offload_session");
    }

    #[test]
    fn inputs_carry_the_bounds_the_handlers_check() {
        let doc = document(&Kinds::builtin(), 120);
        let schemas = &doc["components"]["schemas"];
        let request = &schemas["JsonRequest"]["properties"];
        assert_eq!(request["max_attempts"]["minimum"], 1);
        assert_eq!(request["max_attempts"]["maximum"], MAX_ATTEMPTS_LIMIT);
        assert_eq!(request["timeout_s"]["minimum"], 1);
        assert_eq!(request["timeout_s"]["maximum"], 120, "the running settings");
        assert_eq!(
            schemas["FormRequest"]["properties"]["timeout_s"]["maximum"],
            120
        );
        let jobs = &schemas["BatchRequest"]["properties"]["jobs"];
        assert_eq!(jobs["minItems"], 1);
        assert_eq!(jobs["maxItems"], MAX_BATCH_JOBS);
        assert!(jobs["items"]["oneOf"].is_array(), "one request per kind");
        let param = |path: &str, method: &str, name: &str| {
            doc["paths"][path][method]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name))
                .map(|p| p["schema"].clone())
                .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))
        };
        let list = |name: &str| param("/jobs", "get", name);
        assert_eq!(list("limit")["minimum"], 1);
        assert_eq!(list("limit")["maximum"], MAX_PAGE);
        assert_eq!(list("cursor")["format"], "uuid");
        assert_eq!(list("kind")["maxLength"], 64);
        let statuses: Vec<String> = JobStatus::ALL.iter().map(ToString::to_string).collect();
        assert_eq!(list("status")["enum"], json!(statuses));
        assert_eq!(param("/jobs/{id}", "get", "id")["format"], "uuid");
        assert_eq!(param("/jobs/{id}/retry", "post", "id")["format"], "uuid");
        for path in ["/jobs", "/jobs/batch"] {
            let key = param(path, "post", "Idempotency-Key");
            assert_eq!(key["maxLength"], MAX_KEY_LEN);
            assert_eq!(key["minLength"], 1);
        }
        for route in routes::ROUTES {
            for method in doc["paths"][route].as_object().expect("item").keys() {
                param(route, method, "X-Request-Id");
            }
        }
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
        let doc = document(&kinds, 3600);
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
                "#/components/schemas/request.http.request",
                "#/components/schemas/request.image.thumbnail",
                "#/components/schemas/request.noop",
                "#/components/schemas/request.pdf.render",
                "#/components/schemas/request.resize",
                "#/components/schemas/request.sleep"
            ]
        );
    }
}

#[cfg(test)]
mod input_tests {
    use super::*;

    #[test]
    fn the_multipart_body_and_the_jobs_inputs_are_documented() {
        let doc = document(&Kinds::builtin(), 60);
        let content = &doc["paths"]["/jobs"]["post"]["requestBody"]["content"];
        assert_eq!(
            content["multipart/form-data"]["schema"]["$ref"],
            "#/components/schemas/MultipartRequest"
        );
        let multipart = &doc["components"]["schemas"]["MultipartRequest"];
        assert!(multipart["properties"]["kind"].is_object(), "{multipart}");
        assert!(
            multipart["patternProperties"]["^payload\\..+$"].is_object(),
            "{multipart}"
        );
        let text = doc.to_string();
        assert!(
            text.contains("#/components/schemas/InputMeta"),
            "inputs listed"
        );
        assert!(
            doc["components"]["schemas"]["InputMeta"]["properties"]["sha256"].is_object(),
            "every $ref to InputMeta resolves"
        );
    }
}
