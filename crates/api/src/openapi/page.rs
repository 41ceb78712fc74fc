//! `/docs`: the OpenAPI document as one HTML page, rendered here from the same document
//! `/openapi.json` serves. No script and nothing fetched from elsewhere: the page works offline
//! and its Content-Security-Policy forbids anything but its own inline style.

use std::fmt::Write as _;

use axum::{
    extract::State,
    http::header,
    response::{Html, IntoResponse, Response},
};
use serde_json::Value;

use crate::{openapi::document, state::AppState};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}\
section{border-top:1px solid #ccc;margin-top:1.5rem}code,pre{font-family:ui-monospace,monospace}\
pre{background:#f4f4f4;padding:.5rem;overflow:auto}table{border-collapse:collapse}\
td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top}\
.method{font-weight:700;text-transform:uppercase}";

/// `GET /docs`: the API's reference, rendered by the API from its OpenAPI document.
#[utoipa::path(get, path = "/docs", tag = "docs",
    responses((status = 200, description = "HTML page: every operation with its parameters, \
        body, responses and security, and every schema", content_type = "text/html")))]
pub async fn docs(State(state): State<AppState>) -> Response {
    let doc = document(&state.kinds, state.settings.max_job_timeout_s);
    (
        [
            // Built per request (the kinds change): never served stale.
            (header::CACHE_CONTROL, "no-cache"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        render(&doc),
    )
        .into_response()
}

/// The page for `doc`.
pub fn render(doc: &Value) -> Html<String> {
    let mut out = String::new();
    let title = text(&doc["info"]["title"]);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} API</title>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <style>{STYLE}</style></head><body><h1>{title} API</h1><p>{}</p>\
         <p>The machine-readable document: <a href=\"/openapi.json\">/openapi.json</a>.</p>",
        text(&doc["info"]["description"])
    );
    out.push_str("<h2>Operations</h2>");
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for (method, operation) in item.as_object().into_iter().flatten() {
                operation_section(&mut out, method, path, operation);
            }
        }
    }
    out.push_str("<h2>Security schemes</h2><ul>");
    for (name, scheme) in doc["components"]["securitySchemes"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            out,
            "<li><code>{}</code>: {}</li>",
            escape(name),
            text(&scheme["description"])
        );
    }
    out.push_str("</ul><h2>Schemas</h2>");
    for (name, schema) in doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let _ = write!(
            out,
            "<details id=\"schema-{0}\"><summary><code>{0}</code></summary><pre>{1}</pre></details>",
            escape(name),
            escape(&serde_json::to_string_pretty(schema).unwrap_or_default())
        );
    }
    out.push_str("</body></html>");
    Html(out)
}

fn operation_section(out: &mut String, method: &str, path: &str, operation: &Value) {
    let _ = write!(
        out,
        "<section><h3><span class=\"method\">{}</span> <code>{}</code></h3><p>{} {}</p>",
        escape(method),
        escape(path),
        text(&operation["summary"]),
        text(&operation["description"])
    );
    let security = operation["security"].as_array();
    match security {
        Some(alternatives) if !alternatives.is_empty() => {
            let shown: Vec<String> = alternatives
                .iter()
                .filter_map(Value::as_object)
                .flat_map(|r| r.iter())
                .map(|(scheme, scopes)| {
                    let scopes: Vec<&str> = scopes
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    format!("{scheme} ({})", scopes.join(", "))
                })
                .collect();
            let _ = write!(out, "<p>Needs one of: {}</p>", escape(&shown.join(" · ")));
        }
        _ => out.push_str("<p>Open: no credentials needed.</p>"),
    }
    if let Some(params) = operation["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<table><tr><th>Parameter</th><th>In</th><th>Required</th><th>Schema</th>\
             <th>Description</th></tr>",
        );
        for param in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                text(&param["name"]),
                text(&param["in"]),
                if param["required"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "no"
                },
                escape(&param["schema"].to_string()),
                text(&param["description"])
            );
        }
        out.push_str("</table>");
    }
    if let Some(content) = operation["requestBody"]["content"].as_object() {
        out.push_str("<p>Body:</p><ul>");
        for (media, body) in content {
            let _ = write!(
                out,
                "<li><code>{}</code>: <code>{}</code></li>",
                escape(media),
                escape(&body["schema"].to_string())
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<table><tr><th>Status</th><th>Description</th><th>Headers</th></tr>");
    for (status, response) in operation["responses"].as_object().into_iter().flatten() {
        let headers: Vec<&str> = response["headers"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, _)| name.as_str())
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(status),
            text(&response["description"]),
            escape(&headers.join(", "))
        );
    }
    out.push_str("</table></section>");
}

/// A string field of the document, escaped (empty when absent).
fn text(value: &Value) -> String {
    escape(value.as_str().unwrap_or(""))
}

/// Escapes text for HTML element content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::Kinds;

    #[test]
    fn the_page_lists_every_operation_and_loads_nothing_from_elsewhere() {
        let page = render(&document(&Kinds::builtin(), 3600)).0;
        for route in crate::routes::ROUTES {
            assert!(
                page.contains(&format!("<code>{}</code></h3>", escape(route))),
                "{route} is not on the page"
            );
        }
        assert!(!page.contains("<script"), "the page runs no script");
        assert!(
            !page.contains("https://"),
            "the page links nothing outside the API"
        );
        assert!(page.contains("schema-payload.sleep"));
        assert!(page.contains("Needs one of: bearer (submit)"));
        assert!(
            page.contains("checks the job, records it"),
            "summaries shown"
        );
    }
}
