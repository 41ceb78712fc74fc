//! The dashboard's other pages: live workers, schedules (pause, resume, run now), the audit list,
//! and the submit page, whose form per kind is made from the kind's payload schema.

use askama::Template;
use axum::{
    Extension,
    body::Body,
    extract::{Path, RawQuery, State},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

use super::{Chrome, PageError, back_to, render, shown_time};
use crate::{
    auth::Caller,
    error::ApiError,
    routes::{registry, schedules},
    state::AppState,
};

/// A worker's row.
pub struct WorkerRow {
    pub name: String,
    pub state: String,
    pub kinds: String,
    pub queues: String,
    pub in_flight: u32,
    pub prefetch: u16,
    pub last_seen: String,
    pub software: String,
}

#[derive(Template)]
#[template(path = "workers.html")]
struct WorkersPage {
    chrome: Chrome,
    workers: Vec<WorkerRow>,
}

/// `GET /ui/workers`: the live workers.
pub async fn workers_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Response, PageError> {
    let workers = registry::live_workers(&state)
        .await
        .map_err(|e| PageError(e, Some(caller.clone())))?;
    let rows = workers
        .into_iter()
        .map(|w| WorkerRow {
            state: format!("{:?}", w.state).to_lowercase(),
            kinds: w
                .kinds
                .iter()
                .map(|k| k.name.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            queues: w
                .queues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            in_flight: w.in_flight,
            prefetch: w.prefetch,
            last_seen: shown_time(Some(w.last_seen_at)),
            software: w.software,
            name: w.name,
        })
        .collect();
    Ok(render(&WorkersPage {
        chrome: Chrome::new(Some(&caller), "/ui/workers"),
        workers: rows,
    }))
}

/// A schedule's row.
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub kind: String,
    pub state: &'static str,
    pub paused: bool,
    pub next_run: String,
    pub last_job: Option<String>,
    pub runs: u64,
    pub skipped: u64,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct SchedulesPage {
    chrome: Chrome,
    schedules: Vec<ScheduleRow>,
    admin: bool,
}

/// The `done` message of a page's query, if any.
pub(crate) fn done_of(query: Option<&str>) -> Option<String> {
    #[derive(Deserialize)]
    struct Done {
        done: Option<String>,
    }
    serde_urlencoded::from_str::<Done>(query.unwrap_or(""))
        .ok()
        .and_then(|d| d.done)
}

/// `GET /ui/schedules`.
pub async fn schedules_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    let all = state
        .store
        .schedules()
        .await
        .map_err(|e| PageError(e.into(), Some(caller.clone())))?;
    let rows = all
        .into_iter()
        .map(|s| ScheduleRow {
            kind: s
                .job
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned(),
            state: if s.paused { "paused" } else { "active" },
            paused: s.paused,
            next_run: shown_time(s.next_run_at),
            last_job: s.last_job_id.map(|id| id.to_string()),
            runs: s.runs,
            skipped: s.skipped,
            cron: s.cron,
            timezone: s.timezone,
            name: s.name,
        })
        .collect();
    Ok(render(&SchedulesPage {
        chrome: Chrome::new(Some(&caller), "/ui/schedules").flash(done_of(query.as_deref())),
        schedules: rows,
        admin: caller.is_admin(),
    }))
}

/// `POST /ui/schedules/{name}/{pause|resume|run}`: as the API's own routes, back to the list.
pub async fn schedule_action(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((name, action)): Path<(String, String)>,
    body: Body,
) -> Response {
    let result = async {
        super::checked_form(&caller, body).await?;
        let (state, who, path) = (State(state), Extension(caller.clone()), Path(name.clone()));
        match action.as_str() {
            "pause" => schedules::pause_schedule(state, who, path)
                .await
                .map(|_| "paused"),
            "resume" => schedules::resume_schedule(state, who, path)
                .await
                .map(|_| "resumed"),
            "run" => schedules::run_schedule(state, who, path, HeaderMap::new())
                .await
                .map(|_| "run now"),
            other => Err(ApiError::NotFound(format!(
                "/ui/schedules/{name}/{}",
                other.chars().take(40).collect::<String>()
            ))),
        }
    }
    .await;
    match result {
        Ok(what) => {
            let flash = format!("schedule {name} {what}");
            back_to("/ui/schedules", flash)
        }
        Err(e) => PageError(e, Some(caller)).into_response(),
    }
}

/// An audit entry as shown.
pub struct AuditRow {
    pub at: String,
    pub key_name: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Chrome,
    entries: Vec<AuditRow>,
    next: Option<String>,
}

/// Audit entries per page.
const AUDIT_PAGE: u32 = 100;

/// `GET /ui/audit?before=<seq>`.
pub async fn audit_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    RawQuery(query): RawQuery,
) -> Result<Response, PageError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Query {
        before: Option<i64>,
    }
    let q: Query = serde_urlencoded::from_str(query.as_deref().unwrap_or("")).map_err(|e| {
        PageError(
            ApiError::Invalid(format!("query: {e}")),
            Some(caller.clone()),
        )
    })?;
    let entries = state
        .store
        .audit_list(q.before, AUDIT_PAGE)
        .await
        .map_err(|e| PageError(e.into(), Some(caller.clone())))?;
    let next = (entries.len() == AUDIT_PAGE as usize)
        .then(|| {
            entries
                .last()
                .map(|e| format!("/ui/audit?before={}", e.seq))
        })
        .flatten();
    Ok(render(&AuditPage {
        chrome: Chrome::new(Some(&caller), "/ui/audit"),
        entries: entries
            .into_iter()
            .map(|e| AuditRow {
                at: shown_time(Some(e.at)),
                key_name: e.key_name,
                action: e.action,
                target: e.target,
                detail: e.detail.unwrap_or_default(),
            })
            .collect(),
        next,
    }))
}

/// One input of a kind's form.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    /// The payload key.
    pub name: String,
    /// `text`, `number`, `select`, `file`, `textarea` (JSON), `url`.
    pub input: &'static str,
    pub required: bool,
    pub value: String,
    pub options: Vec<String>,
    pub min: Option<String>,
    pub max: Option<String>,
    pub help: String,
}

/// A kind's form.
pub struct KindForm {
    pub name: String,
    pub description: String,
    pub fields: Vec<Field>,
    /// True when a field takes a file: the form is sent as multipart.
    pub multipart: bool,
}

/// The type a property names (the first of a list other than `null`).
fn type_of(prop: &Value) -> Option<&str> {
    match prop.get("type") {
        Some(Value::String(t)) => Some(t),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

/// The form of a payload schema: one field per top-level property (booleans and enums as
/// choices, numbers with their range, a string property that names an uploaded file's form
/// field as a file input, anything else as JSON), required ones marked.
pub fn form_fields(schema: &Value) -> Vec<Field> {
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // `$defs` an enum property refers to (schemars writes enums as references).
    let resolve = |prop: &Value| -> Value {
        let reference = prop
            .get("$ref")
            .or_else(|| {
                prop.get("allOf")
                    .and_then(|a| a.get(0))
                    .and_then(|a| a.get("$ref"))
            })
            .and_then(Value::as_str);
        match reference.and_then(|r| r.strip_prefix("#/$defs/")) {
            Some(name) => schema
                .get("$defs")
                .and_then(|d| d.get(name))
                .cloned()
                .unwrap_or(Value::Null),
            None => prop.clone(),
        }
    };
    props
        .iter()
        .map(|(name, prop)| {
            let resolved = resolve(prop);
            let description = prop
                .get("description")
                .or_else(|| resolved.get("description"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let default = prop.get("default").or_else(|| resolved.get("default"));
            let shown = |v: Option<&Value>| match v {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let mut field = Field {
                name: name.clone(),
                input: "textarea",
                required: required.contains(&name.as_str()),
                value: shown(default),
                options: Vec::new(),
                min: shown(prop.get("minimum"))
                    .chars()
                    .next()
                    .map(|_| shown(prop.get("minimum"))),
                max: shown(prop.get("maximum"))
                    .chars()
                    .next()
                    .map(|_| shown(prop.get("maximum"))),
                help: description.clone(),
            };
            let choices: Option<Vec<String>> = resolved
                .get("enum")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .or_else(|| {
                    resolved
                        .get("oneOf")
                        .and_then(Value::as_array)
                        .map(|variants| {
                            variants
                                .iter()
                                .filter_map(|v| v.get("const").and_then(Value::as_str))
                                .map(str::to_owned)
                                .collect()
                        })
                })
                .filter(|c: &Vec<String>| !c.is_empty());
            if let Some(choices) = choices {
                field.input = "select";
                field.options = choices;
            } else {
                match type_of(prop).or_else(|| type_of(&resolved)) {
                    Some("boolean") => {
                        field.input = "select";
                        field.options = vec!["true".into(), "false".into()];
                    }
                    Some("integer" | "number") => field.input = "number",
                    Some("string") => {
                        let lower = description.to_ascii_lowercase();
                        field.input = if lower.contains("uploaded") || lower.contains("form field")
                        {
                            "file"
                        } else if prop.get("format").and_then(Value::as_str) == Some("uri") {
                            "url"
                        } else {
                            "text"
                        };
                    }
                    _ => {}
                }
            }
            field
        })
        .collect()
}

#[derive(Template)]
#[template(path = "submit.html")]
struct SubmitPage {
    chrome: Chrome,
    forms: Vec<KindForm>,
}

/// `GET /ui/submit`: a form per kind.
pub async fn submit_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let forms = state
        .kinds
        .all()
        .iter()
        .map(|k| {
            let fields = form_fields(&k.spec.payload_schema);
            KindForm {
                name: k.spec.name.to_string(),
                description: k
                    .spec
                    .payload_schema
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                multipart: fields.iter().any(|f| f.input == "file"),
                fields,
            }
        })
        .collect();
    render(&SubmitPage {
        chrome: Chrome::new(Some(&caller), "/ui/submit"),
        forms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_kinds_form_follows_its_schema() {
        let schema = json!({
            "type": "object",
            "required": ["width"],
            "properties": {
                "file": {"type": ["string", "null"], "description": "The form field the image was uploaded under"},
                "width": {"type": "integer", "minimum": 1, "maximum": 4096},
                "fit": {"$ref": "#/$defs/Fit", "default": "contain"},
                "loud": {"type": "boolean"},
                "tags": {"type": "array"},
            },
            "$defs": {"Fit": {"type": "string", "enum": ["contain", "cover"]}}
        });
        let fields = form_fields(&schema);
        let get = |n: &str| fields.iter().find(|f| f.name == n).expect("field");
        assert_eq!(get("file").input, "file");
        let width = get("width");
        assert_eq!((width.input, width.required), ("number", true));
        assert_eq!(
            (width.min.as_deref(), width.max.as_deref()),
            (Some("1"), Some("4096"))
        );
        let fit = get("fit");
        assert_eq!((fit.input, fit.value.as_str()), ("select", "contain"));
        assert_eq!(fit.options, ["contain", "cover"]);
        assert_eq!(get("loud").options, ["true", "false"]);
        assert_eq!(get("tags").input, "textarea");
        assert!(form_fields(&json!({"type": "object"})).is_empty());
    }
}
