//! Two small HTML pages for people with a browser: a form to submit a job and a job's status.

use axum::{Extension, extract::State, response::Html};

use crate::{auth::Caller, state::AppState, store::JobRecord};

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem}\
label{display:block;margin-top:1rem}textarea,select,input{font:inherit;width:100%}\
dt{font-weight:600}dd{margin:0 0 .5rem}pre{background:#f4f4f4;padding:.5rem;overflow:auto}";

/// The home page's second form: an image upload as an `image.thumbnail` job, built from
/// `payload.<key>` fields so it needs no JSON. Posted like the first form (same origin).
const THUMBNAIL_FORM: &str = "<h2>Make a thumbnail</h2>\
<form id=\"thumbnail-form\" method=\"post\" action=\"/jobs\" enctype=\"multipart/form-data\">\
<input type=\"hidden\" name=\"kind\" value=\"image.thumbnail\">\
<input type=\"hidden\" name=\"payload.file\" value=\"image\">\
<label>Image <input type=\"file\" name=\"image\" accept=\"image/*\" required></label>\
<label>Width (pixels) <input type=\"number\" name=\"payload.width\" value=\"256\" min=\"1\"></label>\
<label>Format <select name=\"payload.format\"><option value=\"webp\">webp</option>\
<option value=\"png\">png</option><option value=\"jpeg\">jpeg</option></select></label>\
<p><button type=\"submit\">Make thumbnail</button></p></form>";

/// `GET /`: a form that posts a job; without a session (or key), a form to sign in with a token.
#[utoipa::path(get, path = "/", tag = "docs",
    responses((status = 200, description = "An HTML form to submit a job, or to sign in", content_type = "text/html")))]
pub async fn index(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
) -> Html<String> {
    let Some(Extension(caller)) = caller else {
        return crate::auth::session::sign_in_form();
    };
    // Kind names are `[a-z][a-z0-9_.-]*`: nothing in them needs escaping. `sleep` is chosen
    // first: the example payload is one of its.
    let options: String = state
        .kinds
        .all()
        .iter()
        .map(|k| {
            let selected = if k.spec.name.as_str() == "sleep" {
                " selected"
            } else {
                ""
            };
            format!("<option value=\"{0}\"{selected}>{0}</option>", k.spec.name)
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Offload</title>\
         <style>{STYLE}</style></head><body><h1>Offload</h1><p>Submit a job; you will be taken to its status page.</p>\
         <form method=\"post\" action=\"/jobs\">\
         <label>Kind <select name=\"kind\">{options}</select></label>\
         <label>Payload (JSON) <textarea name=\"payload\" rows=\"4\">{{\"ms\": 500}}</textarea></label>\
         <label>Priority <select name=\"priority\"><option value=\"\" selected>the kind's default</option>\
         <option value=\"normal\">normal</option><option value=\"high\">high</option></select></label>\
         <p><button type=\"submit\">Submit job</button></p></form>{THUMBNAIL_FORM}{signed_in}</body></html>",
        signed_in = if caller.key_id.is_some() {
            format!(
                "<form method=\"post\" action=\"/session/logout\"><p>Signed in as {} \
                 <button type=\"submit\">Sign out</button></p></form>",
                escape(&caller.name)
            )
        } else {
            String::new()
        }
    ))
}

/// The sign-in form: paste an API key's token (`offload-api keys create`).
pub fn sign_in_page(error: Option<&str>) -> Html<String> {
    let error = error.map_or_else(String::new, |e| {
        format!("<p role=\"alert\">{}</p>", escape(e))
    });
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Offload: sign in</title>\
         <style>{STYLE}</style></head><body><h1>Offload</h1>{error}\
         <p>Sign in with an API key's token (an operator makes one with \
         <code>offload-api keys create --name me --scope submit --scope read</code>).</p>\
         <form method=\"post\" action=\"/session\">\
         <label>Token <input type=\"password\" name=\"token\" autocomplete=\"off\" required></label>\
         <p><button type=\"submit\">Sign in</button></p></form></body></html>"
    ))
}

/// Follows the job's event stream (`GET /jobs/{id}/events`) and shows each change; reloads the
/// page once the job has finished, so its artifacts show.
const LIVE_SCRIPT: &str = "<script>(() => {\
    const source = new EventSource(location.pathname + '/events');\
    const show = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };\
    source.addEventListener('job', (e) => {\
      const job = JSON.parse(e.data);\
      show('status', job.status);\
      show('attempt', job.attempt + ' of ' + job.max_attempts);\
      show('worker', job.worker || '–');\
      show('error', job.error || '–');\
      show('progress', job.progress ? Math.round(job.progress.fraction * 100) + ' %' + (job.progress.message ? ' – ' + job.progress.message : '') : '–');\
      show('heartbeat', job.heartbeat_at || '–');\
      show('json', JSON.stringify(job, null, 2));\
    });\
    source.addEventListener('end', () => { source.close(); location.reload(); });\
    source.addEventListener('gone', () => { source.close(); location.reload(); });\
  })();</script>";

/// A job's status page. Until the job has finished it follows the job's event stream (or,
/// without JavaScript, reloads itself every second).
pub fn job_page(job: &JobRecord) -> Html<String> {
    let (refresh, live, cancel) = if job.status.is_terminal() {
        ("", "", String::new())
    } else {
        (
            "<noscript><meta http-equiv=\"refresh\" content=\"1\"></noscript>",
            LIVE_SCRIPT,
            format!(
                "<form method=\"post\" action=\"/jobs/{}/cancel\"><button type=\"submit\">Cancel this job</button></form>",
                job.id
            ),
        )
    };
    let field = |v: Option<String>| escape(&v.unwrap_or_else(|| "–".to_owned()));
    let json = serde_json::to_string_pretty(job).unwrap_or_default();
    let artifacts = artifact_list(job);
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>Job {id}</title>\
         <style>{STYLE}</style></head><body><h1>Job <code>{id}</code></h1><dl>\
         <dt>Status</dt><dd id=\"status\">{status}</dd><dt>Kind</dt><dd>{kind}</dd><dt>Priority</dt><dd>{priority}</dd>\
         <dt>Attempt</dt><dd id=\"attempt\">{attempt} of {max}</dd><dt>Worker</dt><dd id=\"worker\">{worker}</dd>\
         <dt>Progress</dt><dd id=\"progress\">{progress}</dd>{heartbeat}<dt>Error</dt><dd id=\"error\">{error}</dd></dl>{artifacts}{cancel}<pre id=\"json\">{json}</pre><p><a href=\"/\">Submit another job</a></p>{live}</body></html>",
        id = job.id,
        status = job.status,
        kind = job.kind,
        priority = job.priority,
        attempt = job.attempt,
        max = job.max_attempts,
        worker = field(job.worker.clone()),
        error = field(job.error.clone()),
        progress = field(job.progress.as_ref().map(|p| {
            let percent = (p.fraction * 100.0).round();
            match &p.message {
                Some(m) => format!("{percent} % – {m}"),
                None => format!("{percent} %"),
            }
        })),
        // Only a long job has one: its worker's latest heartbeat.
        heartbeat = job.heartbeat_at.map_or(String::new(), |t| {
            let at = t
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            format!(
                "<dt>Heartbeat</dt><dd id=\"heartbeat\">{}</dd>",
                escape(&at)
            )
        }),
        json = escape(&json),
    ))
}

/// The job's artifacts as download links, images shown; nothing until the job succeeded.
fn artifact_list(job: &JobRecord) -> String {
    if job.status != offload_shared::JobStatus::Succeeded || job.artifacts.is_empty() {
        return String::new();
    }
    let items: String = job
        .artifacts
        .iter()
        .map(|a| {
            let image = if a.content_type.to_ascii_lowercase().starts_with("image/") {
                format!(
                    "<br><img class=\"artifact\" alt=\"{name}\" src=\"{url}\">",
                    name = escape(&a.name),
                    url = escape(&a.url)
                )
            } else {
                String::new()
            };
            format!(
                "<li><a href=\"{url}\" download=\"{name}\">{name}</a> ({ct}, {size} bytes){image}</li>",
                url = escape(&a.url),
                name = escape(&a.name),
                ct = escape(&a.content_type),
                size = a.size,
            )
        })
        .collect();
    format!("<h2>Artifacts</h2><ul id=\"artifacts\">{items}</ul>")
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

    #[test]
    fn artifacts_are_listed_escaped_and_images_shown_once_the_job_succeeded() {
        use offload_shared::{JobId, JobKind, JobStatus, artifacts::ArtifactMeta};
        let id = JobId::new();
        let meta = |name: &str, ct: &str| ArtifactMeta {
            name: name.into(),
            content_type: ct.into(),
            size: 3,
            sha256: "00".into(),
        };
        let mut job = JobRecord::queued(
            id,
            JobKind::parse("k").expect("valid"),
            1,
            1000,
            time::OffsetDateTime::now_utc(),
        );
        job.artifacts = vec![
            crate::store::ArtifactLink::new(id, meta("<b>x\".png", "image/png")),
            crate::store::ArtifactLink::new(id, meta("r.txt", "text/plain")),
        ];
        assert!(
            !job_page(&job).0.contains("<img"),
            "not before it succeeded"
        );
        job.status = JobStatus::Succeeded;
        let page = job_page(&job).0;
        assert!(
            page.contains(&format!(
                "<img class=\"artifact\" alt=\"&lt;b&gt;x&quot;.png\" src=\"/jobs/{id}/result?name=%3Cb%3Ex%22.png\">"
            )),
            "{page}"
        );
        assert!(
            page.contains(&format!("href=\"/jobs/{id}/result?name=r.txt\"")),
            "{page}"
        );
        assert_eq!(page.matches("<img").count(), 1, "only the image is shown");
        assert!(!page.contains("<b>x"), "the name is escaped everywhere");
    }

    #[test]
    fn a_long_jobs_heartbeat_shows_and_other_jobs_have_none() {
        use offload_shared::{JobId, JobKind};
        use time::macros::datetime;
        let mut job = JobRecord::queued(
            JobId::new(),
            JobKind::parse("report.build").expect("valid"),
            1,
            1000,
            time::OffsetDateTime::now_utc(),
        );
        assert!(!job_page(&job).0.contains("<dt>Heartbeat</dt>"));
        job.heartbeat_at = Some(datetime!(2026-12-07 03:04:05 UTC));
        let page = job_page(&job).0;
        assert!(
            page.contains("<dt>Heartbeat</dt><dd id=\"heartbeat\">2026-12-07T03:04:05Z</dd>"),
            "{page}"
        );
    }

    #[test]
    fn markup_in_results_is_escaped() {
        assert_eq!(
            escape("<script>\"x\"&'"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;"
        );
    }
}
