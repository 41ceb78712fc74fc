//! Every rule the server enforces, written into the generated document: who may call each
//! operation (security schemes and scopes), every error it can answer with (problem+json, with
//! `WWW-Authenticate`, `Retry-After` and `RateLimit` where they are sent), and the bounds and
//! formats of its inputs. The bounds come from the constants (and the running settings) the
//! handlers check, so the document cannot drift from them.

use serde_json::{Map, Value, json};

use offload_shared::{
    JobStatus, Priority,
    envelope::MAX_INPUT_FILES,
    kinds::{MAX_CONCURRENCY_LIMIT, MAX_NAME_LEN},
};

use crate::{
    routes::jobs::{DEFAULT_PAGE, MAX_PAGE},
    submit::{
        DEFAULT_MAX_ATTEMPTS, MAX_ATTEMPTS_LIMIT, MAX_BATCH_JOBS, MAX_CONCURRENCY_KEY_LEN,
        MAX_DELAY_S, MAX_KEY_LEN,
    },
};

/// The bearer token scheme's name in `components.securitySchemes`.
pub const BEARER: &str = "bearer";
/// The browser session cookie scheme's name.
pub const SESSION: &str = "session";
/// The browser session cookie.
pub const SESSION_COOKIE: &str = "offload_session";
/// Longest client `X-Request-Id` the API keeps (longer ones are replaced by a new id).
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without credentials.
    Open,
    /// A token or session with this scope, or `admin`.
    Scope(&'static str),
    /// Only `admin`.
    Admin,
    /// A token with `metrics` or `admin` (no browser session: scrapers send tokens).
    Metrics,
}

/// One operation and what the document must say about it.
#[derive(Debug)]
pub struct Operation {
    /// Lower-case HTTP method, as in the document.
    pub method: &'static str,
    /// The route, as in `routes::ROUTES`.
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Every error status it can answer with, besides the 401/403 its access implies.
    pub errors: &'static [u16],
}

/// Headers too large: hyper's own answer, without a body.
pub const HEADERS_TOO_LARGE: u16 = 431;

/// Errors of a submit: a body, a rate limit, the broker.
const SUBMIT_ERRORS: &[u16] = &[400, 408, 409, 413, 415, 422, 429, 431, 503];

/// Every operation of the API. A route added to `routes::ROUTES` must be added here too (a test
/// says so), with who may call it and what it can answer. `Access` mirrors the
/// authentication middleware's table of scopes.
pub const OPERATIONS: &[Operation] = &[
    // The page shows the sign-in form until a session exists.
    op("get", "/", Access::Open, &[431]),
    // Signing in and out (the auth branch's routes): open, but same-origin only (403).
    op("post", "/session", Access::Open, &[400, 403, 431, 503]),
    op("post", "/session/logout", Access::Open, &[403, 431, 503]),
    op("post", "/jobs", Access::Scope("submit"), SUBMIT_ERRORS),
    op(
        "post",
        "/jobs/batch",
        Access::Scope("submit"),
        SUBMIT_ERRORS,
    ),
    op("get", "/jobs", Access::Scope("read"), &[422, 431, 503]),
    op("get", "/jobs/{id}", Access::Scope("read"), &[404, 431, 503]),
    op(
        "get",
        "/jobs/{id}/result",
        Access::Scope("read"),
        &[404, 409, 422, 431, 503],
    ),
    op(
        "get",
        "/jobs/{id}/events",
        Access::Scope("read"),
        &[404, 431, 503],
    ),
    op(
        "post",
        "/jobs/cancel",
        Access::Admin,
        &[400, 408, 413, 415, 422, 431, 503],
    ),
    op(
        "post",
        "/jobs/{id}/cancel",
        Access::Scope("submit"),
        &[404, 409, 431, 503],
    ),
    op(
        "post",
        "/jobs/{id}/retry",
        Access::Admin,
        &[404, 409, 431, 503],
    ),
    op(
        "post",
        "/schedules",
        Access::Admin,
        &[400, 408, 409, 413, 415, 422, 431, 503],
    ),
    op("get", "/schedules", Access::Scope("read"), &[431, 503]),
    op(
        "get",
        "/schedules/{name}",
        Access::Scope("read"),
        &[404, 431, 503],
    ),
    op(
        "delete",
        "/schedules/{name}",
        Access::Admin,
        &[404, 431, 503],
    ),
    op(
        "post",
        "/schedules/{name}/pause",
        Access::Admin,
        &[404, 431, 503],
    ),
    op(
        "post",
        "/schedules/{name}/resume",
        Access::Admin,
        &[404, 431, 503],
    ),
    op(
        "post",
        "/schedules/{name}/run",
        Access::Admin,
        &[404, 422, 431, 503],
    ),
    op("get", "/kinds", Access::Scope("read"), &[431, 503]),
    op("get", "/workers", Access::Scope("read"), &[431, 503]),
    op("get", "/health/live", Access::Open, &[431]),
    op("get", "/health/ready", Access::Open, &[431]),
    op("get", "/metrics", Access::Metrics, &[431]),
    op("get", "/openapi.json", Access::Open, &[431]),
    op("get", "/docs", Access::Open, &[431]),
];

const fn op(
    method: &'static str,
    path: &'static str,
    access: Access,
    errors: &'static [u16],
) -> Operation {
    Operation {
        method,
        path,
        access,
        errors,
    }
}

/// Writes every rule into `doc`. `max_timeout_s` is the running `OFFLOAD_MAX_JOB_TIMEOUT_S`.
pub fn apply(doc: &mut Value, max_timeout_s: u64) {
    security_schemes(doc);
    for operation in OPERATIONS {
        if let Some(Value::Object(target)) = doc
            .get_mut("paths")
            .and_then(|p| p.get_mut(operation.path))
            .and_then(|p| p.get_mut(operation.method))
        {
            describe(target, operation);
        }
    }
    parameters(doc);
    request_bodies(doc, max_timeout_s);
}

fn security_schemes(doc: &mut Value) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    let components = root
        .entry("components")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(components) = components {
        components.insert(
            "securitySchemes".to_owned(),
            json!({
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key: `Authorization: Bearer <token>`. Create one with \
                        `offload-api keys create --name N --scope submit --scope read`; its \
                        scopes are `submit`, `read`, `admin` (everything) and `metrics` \
                        (GET /metrics only)."
                },
                SESSION: {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "A browser session (HttpOnly, SameSite=Strict), set by \
                        signing in with a token; it carries the token's scopes. Forms that \
                        change state also check the request's origin."
                },
            }),
        );
    }
}

/// The security requirement (alternatives: any one suffices) of an access rule.
fn requirement(access: Access) -> Value {
    let both = |scope: &str| {
        let mut alternatives = vec![json!({ BEARER: [scope] }), json!({ SESSION: [scope] })];
        if scope != "admin" {
            alternatives.push(json!({ BEARER: ["admin"] }));
            alternatives.push(json!({ SESSION: ["admin"] }));
        }
        Value::Array(alternatives)
    };
    match access {
        Access::Open => json!([]),
        Access::Scope(scope) => both(scope),
        Access::Admin => both("admin"),
        Access::Metrics => json!([{ BEARER: ["metrics"] }, { BEARER: ["admin"] }]),
    }
}

fn describe(target: &mut Map<String, Value>, operation: &Operation) {
    target.insert("security".to_owned(), requirement(operation.access));
    let mut statuses: Vec<u16> = operation.errors.to_vec();
    if operation.access != Access::Open {
        statuses.extend([401, 403]);
    }
    let responses = target
        .entry("responses")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(responses) = responses else {
        return;
    };
    for status in statuses {
        let entry = responses
            .entry(status.to_string())
            .or_insert_with(|| json!({ "description": error_description(status) }));
        if let Value::Object(response) = entry {
            // Every error is a problem document, even the ones the handler's annotation lists,
            // but 431: the HTTP layer answers it before the request reaches the router.
            if status == HEADERS_TOO_LARGE {
                response.remove("content");
            } else {
                response.insert(
                    "content".to_owned(),
                    json!({"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}),
                );
            }
            let headers = error_headers(status);
            if !headers.is_empty() {
                let slot = response.entry("headers").or_insert_with(|| json!({}));
                if let Value::Object(slot) = slot {
                    slot.extend(headers);
                }
            }
        }
    }
    for response in responses.values_mut().filter_map(Value::as_object_mut) {
        let slot = response.entry("headers").or_insert_with(|| json!({}));
        if let Value::Object(slot) = slot {
            slot.insert("X-Request-Id".to_owned(), request_id_header());
        }
    }
}

fn error_description(status: u16) -> &'static str {
    match status {
        400 => "Malformed request (JSON syntax, a header's value)",
        401 => "No valid credentials: the token or session is missing, unknown, revoked or expired",
        403 => {
            "The credentials lack the scope this operation needs, or a form was posted from \
             another origin"
        }
        404 => "No such job",
        408 => "The request body did not arrive in time",
        409 => "Conflict with the job's state",
        413 => "Body over OFFLOAD_MAX_BODY_BYTES, or a message over what the broker takes",
        415 => "Unsupported Content-Type",
        422 => "Well-formed but invalid",
        429 => "Over the key's rate limit: retry after Retry-After seconds",
        431 => {
            "Request line and headers over OFFLOAD_HTTP_MAX_HEADER_BYTES: answered by the HTTP \
             layer, without a body, and the connection is closed"
        }
        503 => "Unavailable (broker, store or queue full): retry after Retry-After seconds",
        _ => "Error",
    }
}

fn header(description: &str, schema: Value) -> Value {
    json!({ "description": description, "schema": schema })
}

fn error_headers(status: u16) -> Map<String, Value> {
    let mut headers = Map::new();
    let retry_after = || {
        header(
            "Seconds to wait before repeating the request",
            json!({"type": "integer", "minimum": 0}),
        )
    };
    match status {
        401 | 403 => {
            headers.insert(
                "WWW-Authenticate".to_owned(),
                header(
                    "`Bearer realm=\"offload\"`, with `error=\"invalid_token\"` (401) or \
                     `error=\"insufficient_scope\", scope=\"...\"` (403) (RFC 6750)",
                    json!({"type": "string"}),
                ),
            );
        }
        429 => {
            headers.insert("Retry-After".to_owned(), retry_after());
            headers.insert(
                "RateLimit".to_owned(),
                header(
                    "The key's quota now, `\"default\";r=<requests left>;t=<seconds until \
                     the bucket is full>` (draft-ietf-httpapi-ratelimit-headers)",
                    json!({"type": "string"}),
                ),
            );
            headers.insert(
                "RateLimit-Policy".to_owned(),
                header(
                    "The key's rate limit, `\"default\";q=<burst>;w=<seconds to refill>`",
                    json!({"type": "string"}),
                ),
            );
        }
        409 | 503 => {
            headers.insert("Retry-After".to_owned(), retry_after());
        }
        _ => {}
    }
    headers
}

/// What `X-Request-Id` holds in a response: the client's, when plain and short, else a new one.
fn request_id_header() -> Value {
    header(
        "The request's id: the client's X-Request-Id when it is at most 128 characters of \
         [A-Za-z0-9._-], else a new UUID",
        request_id_schema(),
    )
}

fn request_id_schema() -> Value {
    json!({
        "type": "string",
        "maxLength": MAX_REQUEST_ID_LEN,
        "pattern": "^[A-Za-z0-9._-]+$",
    })
}

fn parameters(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for target in item.values_mut().filter_map(Value::as_object_mut) {
            let params = target
                .entry("parameters")
                .or_insert_with(|| json!([]))
                .as_array_mut();
            let Some(params) = params else {
                continue;
            };
            for param in params.iter_mut() {
                constrain(param, path);
            }
            params.push(json!({
                "name": "X-Request-Id",
                "in": "header",
                "required": false,
                "description": "Your id for this request: kept when it is at most \
                    128 characters of [A-Za-z0-9._-]; any other value is replaced by a new \
                    UUID, not refused. Returned in the response and carried with the job",
                "schema": {"type": "string"},
            }));
        }
    }
}

/// The schema of one parameter, as the handlers check it.
fn constrain(param: &mut Value, path: &str) {
    let name = param["name"].as_str().unwrap_or("").to_owned();
    let place = param["in"].as_str().unwrap_or("").to_owned();
    let schema = match (place.as_str(), name.as_str()) {
        ("path", "id") => json!({"type": "string", "format": "uuid"}),
        ("path", "name") if path.starts_with("/schedules") => schedule_name_schema(),
        ("header", "Idempotency-Key") => json!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_KEY_LEN,
            "pattern": "^[!-~]+$",
        }),
        ("query", "status") if path == "/jobs" => json!({
            "type": "string",
            "enum": JobStatus::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        }),
        ("query", "kind") if path == "/jobs" => kind_schema(),
        ("query", "limit") if path == "/jobs" => json!({
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_PAGE,
            "default": DEFAULT_PAGE,
        }),
        ("query", "cursor") if path == "/jobs" => json!({"type": "string", "format": "uuid"}),
        _ => return,
    };
    param["schema"] = schema;
}

/// A kind name: `[a-z][a-z0-9_.-]*`, at most 64 characters.
fn kind_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_NAME_LEN,
        "pattern": "^[a-z][a-z0-9_.-]*$",
    })
}

fn request_bodies(doc: &mut Value, max_timeout_s: u64) {
    let schemas = &mut doc["components"]["schemas"];
    let request = &mut schemas["JsonRequest"]["properties"];
    request["kind"] = json!({"description": "A registered kind (see GET /kinds)"});
    request["kind"]
        .as_object_mut()
        .into_iter()
        .for_each(|k| k.extend(kind_schema().as_object().cloned().unwrap_or_default()));
    request["max_attempts"] = json!({
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_ATTEMPTS_LIMIT,
        "description": format!(
            "Runs allowed before the job is dead-lettered, 1–{MAX_ATTEMPTS_LIMIT} (default: the \
             kind's, else {DEFAULT_MAX_ATTEMPTS})"
        ),
    });
    request["timeout_s"] = json!({
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": max_timeout_s,
        "description": format!(
            "Run-time limit of one attempt in seconds, 1–{max_timeout_s} \
             (OFFLOAD_MAX_JOB_TIMEOUT_S; default: the kind's, else OFFLOAD_JOB_TIMEOUT_S); a long \
             kind's jobs (`long` in GET /kinds) accept up to 86400"
        ),
    });
    request["run_at"] = json!({
        "type": ["string", "null"],
        "format": "date-time",
        "description": "When to run it (RFC 3339): the job is `scheduled` in the store until \
            then and published when due; a time already past runs at once. Not with `delay_s`",
    });
    request["delay_s"] = json!({
        "type": ["integer", "null"],
        "minimum": 0,
        "maximum": MAX_DELAY_S,
        "description": format!(
            "Seconds from now to run it, 0–{MAX_DELAY_S} (366 days), like `run_at`. Not with `run_at`"
        ),
    });
    request["priority"] = json!({
        "type": ["string", "null"],
        "enum": Priority::ALL.map(|p| Some(p.as_str())).into_iter().chain([None]).collect::<Vec<_>>(),
        "description": "`high` starts before every waiting `normal` job of its queue (default: \
            the kind's priority, else `normal`)",
    });
    request["concurrency_key"] = concurrency_key_schema();
    request["concurrency_limit"] = json!({
        "type": ["integer", "null"],
        "minimum": 1,
        "maximum": MAX_CONCURRENCY_LIMIT,
        "description": "At most this many jobs of the concurrency_key queued or running at once \
            (default 1); only with concurrency_key",
    });
    if let Value::Object(request) = &mut schemas["JsonRequest"] {
        // 422 when both times are given, or a time with a concurrency key.
        request.insert("not".to_owned(), later_conflicts());
        request.insert(
            "dependentRequired".to_owned(),
            json!({"concurrency_limit": ["concurrency_key"]}),
        );
    }
    schemas["CancelRequest"] = cancel_request();
    schedule_request(&mut schemas["ScheduleRequest"]);
    schemas["FormRequest"] = form_request(max_timeout_s);
    schemas["MultipartRequest"] = multipart_request(max_timeout_s);
    let jobs = &mut schemas["BatchRequest"]["properties"]["jobs"];
    if let Value::Object(jobs) = jobs {
        jobs.insert("minItems".to_owned(), json!(1));
        jobs.insert("maxItems".to_owned(), json!(MAX_BATCH_JOBS));
        jobs.insert(
            "description".to_owned(),
            json!(format!(
                "1 to {MAX_BATCH_JOBS} jobs, each as the body of POST /jobs, and no more than \
                 the key's rate-limit burst (a batch takes one token per job): 422 otherwise"
            )),
        );
    }
    // The sign-in form: one field, the token.
    if let Some(content) = doc
        .pointer_mut("/paths/~1session/post/requestBody/content")
        .and_then(Value::as_object_mut)
    {
        content.insert(
            "application/x-www-form-urlencoded".to_owned(),
            json!({"schema": {
                "type": "object",
                "required": ["token"],
                "additionalProperties": false,
                "properties": {"token": {
                    "type": "string",
                    "minLength": 1,
                    "description": "An API key's token (offload-api keys create)",
                }},
            }}),
        );
    }
}

/// A concurrency key: 1–128 characters, none of them a control character.
fn concurrency_key_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_CONCURRENCY_KEY_LEN,
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]+$",
        "description": "Jobs sharing this key (e.g. a tenant) run at most concurrency_limit at \
            once across every worker; the rest wait, scheduled, in the store. Not with run_at or \
            delay_s",
    })
}

/// What a request may not combine: `run_at` with `delay_s`, or either with a concurrency key.
fn later_conflicts() -> Value {
    json!({"anyOf": [
        {"required": ["run_at", "delay_s"]},
        {"required": ["concurrency_key", "run_at"]},
        {"required": ["concurrency_key", "delay_s"]},
    ]})
}

/// A schedule name: `[a-z0-9][a-z0-9_.-]*`, at most 64 characters.
fn schedule_name_schema() -> Value {
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": crate::schedules::MAX_NAME_LEN,
        "pattern": "^[a-z0-9][a-z0-9_.-]*$",
    })
}

/// Cron expressions the document promises to accept: 5 fields, or 6 with seconds first, each
/// `*`, `*/n` or one number in its range. The API accepts more (lists, ranges, names, `L`, `W`,
/// `#`: croner's syntax); every expression this pattern matches is accepted (a unit test
/// checks).
pub const CRON_PATTERN: &str = concat!(
    r"^((\*(/[1-9])?|[1-5]?[0-9]) )?",
    r"(\*(/[1-9])?|[1-5]?[0-9]) ",
    r"(\*(/[1-9])?|1?[0-9]|2[0-3]) ",
    r"(\*(/[1-9])?|[1-9]|[12][0-9]|3[01]) ",
    r"(\*(/[1-9])?|[1-9]|1[0-2]) ",
    r"(\*(/[1-6])?|[0-6])$",
);

/// The body of `POST /schedules`, as the handler checks it (its `job` is set by the document,
/// one request per kind).
fn schedule_request(schema: &mut Value) {
    let properties = &mut schema["properties"];
    properties["name"] = schedule_name_schema();
    properties["cron"] = json!({
        "type": "string",
        "pattern": CRON_PATTERN,
        "description": "A cron expression: 5 fields (minute hour day-of-month month \
            day-of-week) or 6 with seconds first; lists, ranges, names, L, W and # work too \
            (croner's syntax)",
    });
    let mut zones: Vec<Value> = crate::schedules::timing::zone_names()
        .into_iter()
        .map(Value::String)
        .collect();
    zones.push(Value::Null);
    properties["timezone"] = json!({
        "type": ["string", "null"],
        "enum": zones,
        "description": "The IANA time zone the expression is read in (default UTC)",
    });
    properties["overlap"] = json!({
        "type": ["string", "null"],
        "enum": ["skip", "allow", null],
        "description": "skip: no job while the previous one has not finished; allow (default): \
            a job every tick",
    });
    properties["paused"] = json!({"type": ["boolean", "null"], "description": "Created paused"});
}

/// The body of `POST /jobs/cancel`: at least one of `kind`, `status` and `queue` (422 without),
/// the status one a job can still be cancelled in.
fn cancel_request() -> Value {
    let cancellable: Vec<&str> = JobStatus::ALL
        .into_iter()
        .filter(|s| s.is_cancellable())
        .map(JobStatus::as_str)
        .collect();
    let nullable = |mut schema: Value| {
        schema["type"] = json!(["string", "null"]);
        schema
    };
    let mut status = json!({"type": ["string", "null"], "enum": cancellable});
    status["enum"]
        .as_array_mut()
        .into_iter()
        .for_each(|e| e.push(Value::Null));
    let given =
        |field: &str| json!({"required": [field], "properties": {field: {"type": "string"}}});
    json!({
        "type": "object",
        "additionalProperties": false,
        "description": "Which unfinished jobs to cancel: every field given must match; at least \
            one is needed (a cancel of every job is refused). A kind or queue nothing runs on \
            matches no job",
        "properties": {
            "kind": nullable(kind_schema()),
            "status": status,
            "queue": nullable(kind_schema()),
        },
        "anyOf": [given("kind"), given("status"), given("queue")],
    })
}

/// The HTML form of `POST /jobs`: the same fields as JSON, every one text; empty fields are
/// left out.
fn form_request(max_timeout_s: u64) -> Value {
    json!({
        "type": "object",
        "description": "The HTML form of POST /jobs (application/x-www-form-urlencoded)",
        "required": ["kind"],
        "additionalProperties": false,
        "properties": {
            "kind": kind_schema(),
            "payload": {
                "type": "string",
                "contentMediaType": "application/json",
                "description": "The payload as JSON text; it must meet the kind's payload schema",
            },
            "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_LIMIT},
            "timeout_s": {"type": "integer", "minimum": 1, "maximum": max_timeout_s},
            "run_at": {"type": "string", "format": "date-time"},
            "delay_s": {"type": "integer", "minimum": 0, "maximum": MAX_DELAY_S},
            "priority": {"type": "string", "enum": Priority::ALL.map(Priority::as_str)},
            "concurrency_key": concurrency_key_schema(),
            "concurrency_limit": {"type": "integer", "minimum": 1, "maximum": MAX_CONCURRENCY_LIMIT},
        },
        "not": later_conflicts(),
        "dependentRequired": {"concurrency_limit": ["concurrency_key"]},
        "patternProperties": {
            "^payload\\..+$": {
                "type": "string",
                "description": "`payload.<key>` sets the payload's top-level key <key>, over \
                    `payload`: JSON if the text is a JSON number, boolean, null, object or array, \
                    otherwise the text as a string",
            },
        },
    })
}

/// `multipart/form-data` of `POST /jobs`: the HTML form's text fields, and files.
fn multipart_request(max_timeout_s: u64) -> Value {
    let mut schema = form_request(max_timeout_s);
    schema["description"] = json!(format!(
        "POST /jobs as multipart/form-data: the text fields of the HTML form, and up to \
         {MAX_INPUT_FILES} file parts (parts with a filename) that become the job's input files \
         under their field names; a handler finds each by its field name (name it in the \
         payload, e.g. payload.file=image). An empty file part with an empty filename (a file \
         input left empty) is ignored. The whole job message, files in base64, must fit \
         OFFLOAD_BROKER_MAX_MESSAGE_BYTES (413 otherwise)"
    ));
    schema
}
