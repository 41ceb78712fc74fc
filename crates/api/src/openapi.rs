//! The OpenAPI description, generated from the handlers' annotations, and a docs page.

use axum::{Json, response::Html};
use utoipa::OpenApi;

use crate::{
    error::Problem,
    routes,
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
pub async fn spec() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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
}
