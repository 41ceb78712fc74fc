//! Parsing a `POST /jobs` body, JSON, HTML form or multipart form with files, into a
//! [`NewJob`]: the edge where raw text becomes typed kinds and checked payloads.

use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use offload_shared::{
    JobKind, Priority,
    limits::{MAX_JSON_DEPTH, json_depth},
};

mod form;
pub mod multipart;

use crate::{
    error::ApiError,
    kinds::{Kinds, UnknownKind},
    store::{IdempotencyKey, JobRecord, StoredFile},
};

/// Longest accepted `Idempotency-Key`.
pub const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, if present: 1–255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value.to_str().unwrap_or("").trim();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::Malformed(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        )));
    }
    Ok(Some(key.to_owned()))
}

/// Most jobs in one `POST /jobs/batch`.
pub const MAX_BATCH_JOBS: usize = 1000;

/// Most attempts a job may ask for.
pub use offload_shared::kinds::MAX_ATTEMPTS_LIMIT;
/// Attempts when the request names none.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// Longest `delay_s` accepted: 366 days (a `run_at` may name any time).
pub const MAX_DELAY_S: u64 = 366 * 24 * 3600;

/// When a job submitted to run later is to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Later {
    /// At this time (`run_at`).
    At(OffsetDateTime),
    /// This many seconds after it was submitted (`delay_s`).
    After(u64),
}

impl Later {
    /// The time it names for a job submitted at `now`, in UTC to the microsecond (as the store
    /// keeps it, so the answer shows what a later read shows).
    pub fn time(self, now: OffsetDateTime) -> OffsetDateTime {
        let t = match self {
            Later::At(t) => t,
            Later::After(s) => now.saturating_add(time::Duration::seconds(
                i64::try_from(s).unwrap_or(i64::MAX),
            )),
        };
        let t = t.checked_to_offset(time::UtcOffset::UTC).unwrap_or(t);
        t.replace_nanosecond(t.nanosecond() / 1000 * 1000)
            .unwrap_or(t)
    }

    /// Reads the request's `run_at` and `delay_s`: at most one of them, `run_at` RFC 3339 (any
    /// time; one already past runs at once), `delay_s` at most [`MAX_DELAY_S`].
    fn parse(run_at: Option<&str>, delay_s: Option<u64>) -> Result<Option<Self>, ApiError> {
        let later = match (run_at, delay_s) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                return Err(ApiError::Invalid(
                    "run_at and delay_s both set: give one of them".into(),
                ));
            }
            (Some(text), None) => Later::At(
                OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|e| {
                        ApiError::Invalid(format!(
                            "run_at {:?} is not an RFC 3339 time such as 2026-12-03T18:00:00Z: {e}",
                            text.chars().take(64).collect::<String>()
                        ))
                    })?,
            ),
            (None, Some(s)) => Later::After(s),
        };
        if let Later::After(s) = later
            && s > MAX_DELAY_S
        {
            return Err(ApiError::Invalid(format!(
                "delay_s is {s}; at most {MAX_DELAY_S} ({} days) is accepted (or give run_at)",
                MAX_DELAY_S / 86_400
            )));
        }
        Ok(Some(later))
    }
}

/// A checked job request.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// A registered kind.
    pub kind: JobKind,
    /// A payload `kind` accepts.
    pub payload: Value,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Run-time limit of one attempt, in seconds, if the request set one.
    pub timeout_s: Option<u64>,
    /// Input files (a multipart submit's file parts), in the order sent.
    pub files: Vec<StoredFile>,
    /// When to run it, if not at once.
    pub later: Option<Later>,
    /// Its priority: the request's, else the kind's, else `normal`.
    pub priority: Priority,
    /// The key it shares a concurrency limit with, and the limit.
    pub concurrency: Option<(String, u32)>,
    /// True if a concurrency limit applies (its key's, or its kind's `max_running`): it waits
    /// in the store for a slot.
    pub gated: bool,
}

/// The body of `POST /jobs`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonRequest {
    /// A registered kind: `noop` or `sleep`.
    #[schema(example = "sleep")]
    kind: String,
    /// The handler's input (`sleep`: `{"ms": 500}`); default `{}`.
    #[serde(default)]
    #[schema(value_type = Option<Object>, example = json!({"ms": 500}))]
    payload: Option<Value>,
    /// Runs allowed before the job is dead-lettered, 1–100 (default 5).
    #[serde(default, deserialize_with = "whole_number")]
    max_attempts: Option<u32>,
    /// Run-time limit of one attempt in seconds (default OFFLOAD_JOB_TIMEOUT_S).
    #[serde(default, deserialize_with = "whole_number")]
    timeout_s: Option<u64>,
    /// When to run it (RFC 3339, e.g. `2026-12-03T18:00:00Z`): the job is `scheduled` until
    /// then, kept in the store (not the broker), and published when it is due. A time already
    /// past runs at once. Not with `delay_s`.
    #[serde(default)]
    #[schema(format = DateTime)]
    run_at: Option<String>,
    /// Seconds from now to run it, up to 366 days: like `run_at`. Not with `run_at`.
    #[serde(default, deserialize_with = "whole_number")]
    delay_s: Option<u64>,
    /// `normal` or `high` (default: the kind's, else `normal`): a high job starts before
    /// every waiting normal job of its queue.
    #[serde(default)]
    priority: Option<String>,
    /// Jobs sharing this key (e.g. a tenant) run at most `concurrency_limit` at once across
    /// every worker; the rest wait, `scheduled`, in the store. Not with `run_at`/`delay_s`.
    #[serde(default)]
    concurrency_key: Option<String>,
    /// The key's limit, 1–10,000 (default 1). Only with `concurrency_key`.
    #[serde(default, deserialize_with = "whole_number")]
    concurrency_limit: Option<u32>,
}

/// Longest `concurrency_key`.
pub const MAX_CONCURRENCY_KEY_LEN: usize = 128;

/// A whole number, written as JSON Schema's `integer` allows: `5` or `5.0` (a number whose
/// fraction is zero); a fraction, a negative number or one too large for the field is refused.
fn whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    let whole = match (number.as_u64(), number.as_f64()) {
        (Some(n), _) => n,
        // Below 2^64, so the conversion is exact.
        (None, Some(f)) if (0.0..18_446_744_073_709_551_616.0).contains(&f) && f.fract() == 0.0 => {
            f as u64
        }
        _ => {
            return Err(D::Error::custom(format!(
                "invalid value: {number}, expected a whole number below 2^64"
            )));
        }
    };
    T::try_from(whole)
        .map(Some)
        .map_err(|_| D::Error::custom(format!("invalid value: {number}, too large")))
}

/// The body of `POST /jobs/batch`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 jobs, each as the body of `POST /jobs`.
    jobs: Vec<JsonRequest>,
}

/// Which body format the client sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// `application/json` (or any `+json` type).
    Json,
    /// `application/x-www-form-urlencoded`.
    Form,
    /// `multipart/form-data`: form fields and files.
    Multipart,
}

impl BodyFormat {
    /// Reads the `Content-Type` header; anything else is a 415.
    pub fn from_content_type(value: Option<&str>) -> Result<Self, ApiError> {
        let raw = value.unwrap_or("");
        let essence = raw
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Ok(BodyFormat::Json),
            e if e.starts_with("application/") && e.ends_with("+json") => Ok(BodyFormat::Json),
            "application/x-www-form-urlencoded" => Ok(BodyFormat::Form),
            "multipart/form-data" => Ok(BodyFormat::Multipart),
            _ => Err(ApiError::UnsupportedMediaType(
                shown(raw),
                "application/json, application/x-www-form-urlencoded or multipart/form-data",
            )),
        }
    }

    /// Like [`BodyFormat::from_content_type`], for a route that takes JSON only.
    pub fn json_only(value: Option<&str>) -> Result<(), ApiError> {
        match BodyFormat::from_content_type(value) {
            Ok(BodyFormat::Json) => Ok(()),
            _ => Err(ApiError::UnsupportedMediaType(
                shown(value.unwrap_or("")),
                "application/json",
            )),
        }
    }
}

/// A content type as an error shows it.
fn shown(raw: &str) -> String {
    if raw.is_empty() {
        "(none)".to_owned()
    } else {
        raw.chars().take(100).collect()
    }
}

impl NewJob {
    /// The job's first row, with id `id`, accepted at `submitted_at`: its limits (its own
    /// timeout, else `default_timeout_s`), priority and concurrency limit.
    pub fn record(
        &self,
        id: offload_shared::JobId,
        submitted_at: OffsetDateTime,
        default_timeout_s: u64,
    ) -> JobRecord {
        let timeout_ms = self.timeout_s.unwrap_or(default_timeout_s) * 1000;
        JobRecord::queued(
            id,
            self.kind.clone(),
            self.max_attempts,
            timeout_ms,
            submitted_at,
        )
        .with_priority(self.priority)
        .gated(
            self.concurrency.as_ref().map(|(key, _)| key.clone()),
            self.concurrency.as_ref().map(|(_, limit)| *limit),
            self.gated,
        )
    }

    /// Binds `key` to this request: the fingerprint is a SHA-256 of the request's meaning
    /// (kind, payload, options), so the same job sent as JSON or as a form matches.
    pub fn idempotency(&self, key: String) -> IdempotencyKey {
        // serde_json's maps are sorted, so this text is canonical.
        let mut canonical = json!({
            "kind": self.kind,
            "payload": self.payload,
            "max_attempts": self.max_attempts,
            "timeout_s": self.timeout_s,
        });
        // Only when set, so a job to run at once keeps the fingerprint it always had. As asked:
        // the same `delay_s` repeated later is the same request.
        match self.later {
            None => {}
            Some(Later::At(t)) => canonical["run_at"] = json!(t.unix_timestamp_nanos().to_string()),
            Some(Later::After(s)) => canonical["delay_s"] = json!(s),
        }
        // Likewise only when high, or limited.
        if self.priority != Priority::Normal {
            canonical["priority"] = json!(self.priority);
        }
        if let Some((key, limit)) = &self.concurrency {
            canonical["concurrency"] = json!([key, limit]);
        }
        // Only when there are files, so a job without them keeps the fingerprint it always had.
        if !self.files.is_empty() {
            canonical["files"] = self
                .files
                .iter()
                .map(|f| json!([f.field, f.filename, f.content_type, f.sha256]))
                .collect();
        }
        let canonical = canonical.to_string();
        let digest = Sha256::digest(canonical.as_bytes());
        let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect();
        IdempotencyKey { key, fingerprint }
    }

    /// Parses and checks a body of the given format.
    pub fn parse(
        format: BodyFormat,
        body: &[u8],
        kinds: &Kinds,
        max_timeout_s: u64,
    ) -> Result<Self, ApiError> {
        let request = match format {
            BodyFormat::Json => serde_json::from_slice::<JsonRequest>(body).map_err(json_error)?,
            BodyFormat::Form => from_form(body)?,
            BodyFormat::Multipart => {
                return Err(ApiError::Malformed(
                    "a multipart body needs its boundary: see NewJob::parse_multipart".into(),
                ));
            }
        };
        NewJob::check(request, Vec::new(), kinds, max_timeout_s)
    }

    /// Parses and checks a `multipart/form-data` body whose `Content-Type` is `content_type`:
    /// its text fields as the HTML form's, its file parts the job's input files.
    pub async fn parse_multipart(
        content_type: &str,
        body: axum::body::Bytes,
        kinds: &Kinds,
        max_timeout_s: u64,
    ) -> Result<Self, ApiError> {
        let boundary = multipart::boundary(content_type).map_err(form_error)?;
        let (fields, uploads) = multipart::decode(body, &boundary)
            .await
            .map_err(form_error)?;
        let files = uploads
            .into_iter()
            .map(|u| StoredFile::new(u.field, u.filename, u.content_type, u.data))
            .collect();
        NewJob::check(json_request(fields), files, kinds, max_timeout_s)
    }

    /// Parses and checks a batch body (JSON): every job must be valid, or the error names the
    /// first bad one by its position, `jobs[i]`.
    pub fn parse_batch(
        body: &[u8],
        kinds: &Kinds,
        max_timeout_s: u64,
    ) -> Result<Vec<Self>, ApiError> {
        let batch = serde_json::from_slice::<BatchRequest>(body).map_err(json_error)?;
        if batch.jobs.is_empty() || batch.jobs.len() > MAX_BATCH_JOBS {
            return Err(ApiError::Invalid(format!(
                "a batch holds 1 to {MAX_BATCH_JOBS} jobs; this one holds {}",
                batch.jobs.len()
            )));
        }
        batch
            .jobs
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                NewJob::check(request, Vec::new(), kinds, max_timeout_s).map_err(|e| match e {
                    ApiError::Invalid(why) => ApiError::Invalid(format!("jobs[{i}]: {why}")),
                    ApiError::UnknownKind(why) => ApiError::UnknownKind(UnknownKind {
                        in_batch: Some(i),
                        ..why
                    }),
                    other => other,
                })
            })
            .collect()
    }

    /// Checks a parsed request: a known kind, a payload it accepts, options in range.
    fn check(
        request: JsonRequest,
        files: Vec<StoredFile>,
        kinds: &Kinds,
        max_timeout_s: u64,
    ) -> Result<Self, ApiError> {
        let known = kinds.get(&request.kind)?;
        // A long kind's jobs are held by a lease, not an unacknowledged delivery, so the
        // broker's consumer timeout does not bound them.
        let max_timeout_s = known.spec.max_timeout_s(max_timeout_s);
        let later = Later::parse(request.run_at.as_deref(), request.delay_s)?;
        let priority = match request.priority.as_deref() {
            Some(raw) => Priority::parse(raw).map_err(ApiError::Invalid)?,
            None => known.spec.priority.unwrap_or_default(),
        };
        let concurrency = concurrency(
            request.concurrency_key.as_deref(),
            request.concurrency_limit,
            later.is_some(),
        )?;
        let gated = concurrency.is_some() || known.spec.max_running.is_some();
        let kind = known.spec.name.clone();
        let payload = request
            .payload
            .unwrap_or_else(|| Value::Object(Default::default()));
        // What the worker and the event path can carry: a payload nested deeper would come back
        // (in a result) inside an event batch nested past what serde_json reads.
        let depth = json_depth(&payload);
        if depth > MAX_JSON_DEPTH {
            return Err(ApiError::Invalid(format!(
                "payload nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted"
            )));
        }
        known
            .schema
            .check(&payload)
            .map_err(|e| ApiError::Invalid(format!("invalid payload for kind {kind}: {e}")))?;
        let max_attempts = request
            .max_attempts
            .or(known.spec.max_attempts)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts) {
            return Err(ApiError::Invalid(format!(
                "max_attempts is {max_attempts}; it must be between 1 and {MAX_ATTEMPTS_LIMIT}"
            )));
        }
        if let Some(t) = request.timeout_s
            && !(1..=max_timeout_s).contains(&t)
        {
            return Err(ApiError::Invalid(format!(
                "timeout_s is {t}; it must be between 1 and {max_timeout_s}"
            )));
        }
        Ok(NewJob {
            kind,
            payload,
            max_attempts,
            timeout_s: request
                .timeout_s
                .or(known.spec.timeout_s.map(|t| t.min(max_timeout_s))),
            files,
            later,
            priority,
            concurrency,
            gated,
        })
    }
}

/// A request's `concurrency_key` and `concurrency_limit`, checked: the key 1–128 characters
/// without control characters, the limit 1–10,000 (default 1) and only with a key, neither for a
/// job to run later.
fn concurrency(
    key: Option<&str>,
    limit: Option<u32>,
    later: bool,
) -> Result<Option<(String, u32)>, ApiError> {
    use offload_shared::kinds::MAX_CONCURRENCY_LIMIT;
    let Some(key) = key else {
        return match limit {
            Some(_) => Err(ApiError::Invalid(
                "concurrency_limit needs a concurrency_key (the jobs it limits)".into(),
            )),
            None => Ok(None),
        };
    };
    if key.is_empty()
        || key.chars().count() > MAX_CONCURRENCY_KEY_LEN
        || key.chars().any(char::is_control)
    {
        return Err(ApiError::Invalid(format!(
            "concurrency_key must be 1 to {MAX_CONCURRENCY_KEY_LEN} characters without control \
             characters"
        )));
    }
    let limit = limit.unwrap_or(1);
    if !(1..=MAX_CONCURRENCY_LIMIT).contains(&limit) {
        return Err(ApiError::Invalid(format!(
            "concurrency_limit is {limit}; it must be between 1 and {MAX_CONCURRENCY_LIMIT}"
        )));
    }
    if later {
        return Err(ApiError::Invalid(
            "concurrency_key with run_at or delay_s: a limited job waits for a slot, not a time; \
             give one or the other"
                .into(),
        ));
    }
    Ok(Some((key.to_owned(), limit)))
}

/// Syntax errors are 400; well-formed JSON of the wrong shape is 422.
pub(crate) fn json_error(e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::Invalid(e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => ApiError::Malformed(e.to_string()),
    }
}

fn form_error(e: form::FormError) -> ApiError {
    match e {
        form::FormError::Malformed(why) => ApiError::Malformed(why),
        form::FormError::Invalid(why) => ApiError::Invalid(why),
    }
}

fn json_request(fields: form::FormFields) -> JsonRequest {
    JsonRequest {
        kind: fields.kind,
        payload: fields.payload,
        max_attempts: fields.max_attempts,
        timeout_s: fields.timeout_s,
        run_at: fields.run_at,
        delay_s: fields.delay_s,
        priority: fields.priority,
        concurrency_key: fields.concurrency_key,
        concurrency_limit: fields.concurrency_limit,
    }
}

fn from_form(body: &[u8]) -> Result<JsonRequest, ApiError> {
    form::decode(body).map(json_request).map_err(form_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use offload_shared::kinds::KindSpec;
    use serde_json::json;

    fn json_status(body: &str) -> Result<NewJob, u16> {
        NewJob::parse(BodyFormat::Json, body.as_bytes(), &Kinds::builtin(), 3600).map_err(|e| {
            match e {
                ApiError::Malformed(_) => 400,
                ApiError::Invalid(_) | ApiError::UnknownKind(_) => 422,
                other => panic!("unexpected {other:?}"),
            }
        })
    }

    #[test]
    fn a_long_kind_accepts_a_time_limit_of_up_to_a_day_and_others_stay_under_the_maximum() {
        let kinds = Kinds::builtin();
        let mut long = KindSpec::new(JobKind::parse("report.build").expect("valid"));
        long.long = true;
        long.timeout_s = Some(7200);
        kinds.insert(long).expect("valid");
        let parse = |body: &str| NewJob::parse(BodyFormat::Json, body.as_bytes(), &kinds, 1500);
        let cases = [
            (
                r#"{"kind":"report.build","timeout_s":86400}"#,
                Some(86_400),
                "a day",
            ),
            (
                r#"{"kind":"report.build"}"#,
                Some(7200),
                "the kind's default, past the maximum",
            ),
            (
                r#"{"kind":"report.build","timeout_s":86401}"#,
                None,
                "over a day",
            ),
            (
                r#"{"kind":"noop","timeout_s":1500}"#,
                Some(1500),
                "the maximum",
            ),
            (
                r#"{"kind":"noop","timeout_s":1501}"#,
                None,
                "a kind that is not long",
            ),
        ];
        for (body, timeout_s, why) in cases {
            match (parse(body), timeout_s) {
                (Ok(job), Some(t)) => assert_eq!(job.timeout_s, Some(t), "{why}"),
                (Err(ApiError::Invalid(m)), None) => assert!(m.contains("timeout_s"), "{why}: {m}"),
                (got, _) => panic!("{why}: {got:?}"),
            }
        }
    }

    #[test]
    fn priority_is_the_requests_else_the_kinds_else_normal() {
        let kinds = Kinds::builtin();
        let mut urgent =
            offload_shared::kinds::KindSpec::new(JobKind::parse("urgent").expect("valid"));
        urgent.priority = Some(Priority::High);
        kinds.insert(urgent).expect("valid spec");
        let parse = |body: &str| NewJob::parse(BodyFormat::Json, body.as_bytes(), &kinds, 3600);
        let priority = |body: &str| parse(body).expect(body).priority;
        assert_eq!(priority(r#"{"kind":"noop"}"#), Priority::Normal);
        assert_eq!(
            priority(r#"{"kind":"noop","priority":"high"}"#),
            Priority::High
        );
        assert_eq!(priority(r#"{"kind":"urgent"}"#), Priority::High);
        assert_eq!(
            priority(r#"{"kind":"urgent","priority":"normal"}"#),
            Priority::Normal
        );
        for bad in [r#""urgent""#, r#""""#, "1", r#""HIGH""#] {
            let body = format!(r#"{{"kind":"noop","priority":{bad}}}"#);
            assert!(matches!(parse(&body), Err(ApiError::Invalid(_))), "{body}");
        }
        let form = |body: &str| NewJob::parse(BodyFormat::Form, body.as_bytes(), &kinds, 3600);
        assert_eq!(
            form("kind=noop&priority=high").expect("form").priority,
            Priority::High
        );
        assert_eq!(
            form("kind=urgent&priority=").expect("empty").priority,
            Priority::High
        );
        assert!(matches!(
            form("kind=noop&priority=soon"),
            Err(ApiError::Invalid(_))
        ));
        // A normal job keeps the fingerprint it had before priorities; a high one differs.
        let key = |body: &str| parse(body).expect(body).idempotency("k".into()).fingerprint;
        assert_eq!(
            key(r#"{"kind":"noop"}"#),
            key(r#"{"kind":"noop","priority":"normal"}"#)
        );
        assert_ne!(
            key(r#"{"kind":"noop"}"#),
            key(r#"{"kind":"noop","priority":"high"}"#)
        );
    }

    #[test]
    fn a_concurrency_key_gates_the_job_and_its_limit_is_checked() {
        let job = json_status(r#"{"kind":"noop","concurrency_key":"tenant-1"}"#).expect("valid");
        assert_eq!(job.concurrency, Some(("tenant-1".to_owned(), 1)));
        assert!(job.gated);
        let job = json_status(r#"{"kind":"noop","concurrency_key":"t","concurrency_limit":5.0}"#)
            .expect("valid");
        assert_eq!(job.concurrency, Some(("t".to_owned(), 5)));
        assert!(!json_status(r#"{"kind":"noop"}"#).expect("valid").gated);
        for bad in [
            r#"{"kind":"noop","concurrency_limit":2}"#,
            r#"{"kind":"noop","concurrency_key":""}"#,
            r#"{"kind":"noop","concurrency_key":"a\u0007"}"#,
            r#"{"kind":"noop","concurrency_key":"a","concurrency_limit":0}"#,
            r#"{"kind":"noop","concurrency_key":"a","concurrency_limit":10001}"#,
            r#"{"kind":"noop","concurrency_key":"a","run_at":"2030-01-01T00:00:00Z"}"#,
        ] {
            assert_eq!(json_status(bad).err(), Some(422), "{bad}");
        }
        let long = format!(
            r#"{{"kind":"noop","concurrency_key":"{}"}}"#,
            "é".repeat(129)
        );
        assert_eq!(json_status(&long).err(), Some(422));
    }

    #[test]
    fn valid_json_parses_with_defaults() {
        let job = json_status(r#"{"kind":"sleep","payload":{"ms":3}}"#).expect("valid");
        assert_eq!(job.kind, JobKind::parse("sleep").expect("valid"));
        assert_eq!(job.max_attempts, DEFAULT_MAX_ATTEMPTS);
        let job = json_status(r#"{"kind":"noop"}"#).expect("payload optional");
        assert_eq!(job.payload, json!({}));
    }

    #[test]
    fn run_at_names_any_time_and_delay_s_at_most_a_year_in_utc_to_the_microsecond() {
        let now = time::macros::datetime!(2026-12-03 12:00:00.123_456_789 UTC);
        let parse = |run_at, delay_s| Later::parse(run_at, delay_s).map(|l| l.map(|l| l.time(now)));
        assert_eq!(parse(None, None).ok(), Some(None));
        assert_eq!(
            parse(None, Some(60)).ok().flatten(),
            Some(time::macros::datetime!(2026-12-03 12:01:00.123_456 UTC))
        );
        let at = parse(Some("2026-12-03T17:30:00.5+05:30"), None)
            .ok()
            .flatten()
            .expect("a time");
        assert_eq!(at, time::macros::datetime!(2026-12-03 12:00:00.5 UTC));
        assert_eq!(at.offset(), time::UtcOffset::UTC);
        // A time already past is kept: the job runs at once.
        assert!(parse(Some("2000-01-01T00:00:00Z"), None).is_ok());
        for (run_at, delay_s, why) in [
            (Some("2027-01-01T00:00:00Z"), Some(1), "both given"),
            (Some("tomorrow"), None, "not RFC 3339"),
            (Some("2026-12-03 12:00:00"), None, "no offset"),
            (None, Some(MAX_DELAY_S + 1), "delay over a year"),
            (None, Some(u64::MAX), "delay past any time"),
        ] {
            assert!(
                matches!(parse(run_at, delay_s), Err(ApiError::Invalid(_))),
                "{why}"
            );
        }
        assert!(parse(None, Some(MAX_DELAY_S)).is_ok());
        // Any time RFC 3339 can name is accepted, even one past the last UTC time.
        assert!(parse(Some("2400-01-01T00:00:00Z"), None).is_ok());
        assert!(parse(Some("9999-12-31T23:59:59-23:59"), None).is_ok());
    }

    #[test]
    fn bad_json_bodies_get_400_or_422() {
        let deep = format!(
            r#"{{"kind":"noop","payload":{}1{}}}"#,
            "[".repeat(65),
            "]".repeat(65)
        );
        let cases = [
            ("{", 400, "truncated JSON"),
            ("not json", 400, "not JSON at all"),
            ("", 400, "empty body"),
            (r#"{"kind":"resize"}"#, 422, "unknown kind"),
            (r#"{"kind":"noop","colour":1}"#, 422, "unknown field"),
            (
                r#"{"kind":"sleep","payload":{"ms":"x"}}"#,
                422,
                "bad payload",
            ),
            (r#"{"payload":{}}"#, 422, "kind missing"),
            (r#"{"kind":"noop","max_attempts":0}"#, 422, "zero attempts"),
            (
                r#"{"kind":"noop","timeout_s":99999}"#,
                422,
                "timeout over the maximum",
            ),
            ("[1,2]", 422, "not an object"),
            (
                r#"{"kind":"sleep","payload":{"ms":1e999}}"#,
                422,
                "a number past f64 where the schema wants an integer",
            ),
            (r#"{"kind":"noop","timeout_s":1.5}"#, 422, "a fraction"),
            (r#"{"kind":"noop","max_attempts":-1}"#, 422, "negative"),
            (r#"{"kind":"noop","max_attempts":1e300}"#, 422, "huge"),
            (r#"{"kind":"noop","max_attempts":"3"}"#, 422, "a string"),
            (deep.as_str(), 422, "payload nested past the limit"),
        ];
        for (body, status, why) in cases {
            assert_eq!(json_status(body).map(|_| 0), Err(status), "{why}: {body}");
        }
    }

    #[test]
    fn odd_numbers_are_accepted_and_keep_their_text() {
        let job = json_status(
            r#"{"kind":"noop","payload":{"a":1e999,"b":-0,"c":1.0,"d":12345678901234567890123}}"#,
        )
        .expect("any JSON number is a valid noop payload");
        assert_eq!(
            job.payload.to_string(),
            r#"{"a":1e+999,"b":-0,"c":1.0,"d":12345678901234567890123}"#
        );
        let job = json_status(r#"{"kind":"sleep","payload":{"ms":5}}"#).expect("valid");
        assert_eq!(job.payload, json!({"ms": 5}));
    }

    #[test]
    fn integers_written_with_a_zero_fraction_are_whole_numbers() {
        // JSON Schema's `integer` (the document's type) includes 3.0.
        let job = json_status(r#"{"kind":"noop","max_attempts":3.0,"timeout_s":60.0}"#)
            .expect("3.0 is an integer");
        assert_eq!((job.max_attempts, job.timeout_s), (3, Some(60)));
        let job = json_status(r#"{"kind":"noop","max_attempts":null}"#).expect("null");
        assert_eq!(job.max_attempts, DEFAULT_MAX_ATTEMPTS);
    }

    #[test]
    fn a_payload_at_the_depth_limit_is_accepted() {
        let at_limit = format!(
            r#"{{"kind":"noop","payload":{}{}}}"#,
            "[".repeat(MAX_JSON_DEPTH),
            "]".repeat(MAX_JSON_DEPTH)
        );
        assert!(json_status(&at_limit).is_ok());
    }

    #[test]
    fn forms_carry_payload_as_json_text() {
        let job = NewJob::parse(
            BodyFormat::Form,
            b"kind=sleep&payload=%7B%22ms%22%3A5%7D",
            &Kinds::builtin(),
            60,
        )
        .expect("valid form");
        assert_eq!(job.payload, json!({"ms": 5}));
        let job = NewJob::parse(
            BodyFormat::Form,
            b"kind=noop&payload=",
            &Kinds::builtin(),
            60,
        )
        .expect("empty payload");
        assert_eq!(job.payload, json!({}));
        for body in [
            "kind=noop&payload=%7B",
            "kind=nope",
            "payload=1",
            "kind=noop&x=1",
        ] {
            assert!(
                matches!(
                    NewJob::parse(BodyFormat::Form, body.as_bytes(), &Kinds::builtin(), 60),
                    Err(ApiError::Invalid(_) | ApiError::UnknownKind(_))
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn payload_keys_build_a_payload_without_json() {
        let job = NewJob::parse(
            BodyFormat::Form,
            b"kind=sleep&payload.ms=5",
            &Kinds::builtin(),
            60,
        )
        .expect("valid form");
        assert_eq!(job.payload, json!({"ms": 5}));
        let job = NewJob::parse(
            BodyFormat::Form,
            b"kind=noop&payload=%7B%22a%22%3A1%2C%22b%22%3A2%7D&payload.b=x&payload.c=null",
            &Kinds::builtin(),
            60,
        )
        .expect("keys over payload");
        assert_eq!(job.payload, json!({"a": 1, "b": "x", "c": null}));
        // A blank input is left out: the kind's default applies.
        let job = NewJob::parse(
            BodyFormat::Form,
            b"kind=sleep&payload.ms=5&payload.fail=&payload.fail_attempts=",
            &Kinds::builtin(),
            60,
        )
        .expect("blank fields left out");
        assert_eq!(job.payload, json!({"ms": 5}));
        for (body, why) in [
            ("kind=noop&payload.=1", "an empty key"),
            ("kind=noop&payload.a=1&payload.a=2", "a key twice"),
            (
                "kind=noop&payload=1&payload.a=1",
                "keys over a payload that is no object",
            ),
            ("kind=noop&colour=red&size=9", "unknown fields"),
        ] {
            let got = NewJob::parse(BodyFormat::Form, body.as_bytes(), &Kinds::builtin(), 60);
            assert!(matches!(got, Err(ApiError::Invalid(_))), "{why}: {got:?}");
        }
        let got = NewJob::parse(
            BodyFormat::Form,
            b"kind=noop&colour=red&size=9",
            &Kinds::builtin(),
            60,
        );
        assert!(
            matches!(&got, Err(ApiError::Invalid(m)) if m.contains("`colour`") && m.contains("`size`")),
            "{got:?}"
        );
        // Percent-escaped bytes that are not UTF-8 decode lossily: an unknown kind, a 422.
        let got = NewJob::parse(BodyFormat::Form, b"kind=%FF", &Kinds::builtin(), 60);
        assert!(
            matches!(got, Err(ApiError::UnknownKind(_) | ApiError::Invalid(_))),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn multipart_files_are_checked_and_fingerprinted() {
        let body = |file: &str| {
            axum::body::Bytes::from(format!(
                "--b\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nnoop\r\n\
                 --b\r\nContent-Disposition: form-data; name=\"payload.note\"\r\n\r\nhi\r\n\
                 --b\r\nContent-Disposition: form-data; name=\"doc\"; filename=\"a.txt\"\r\n\
                 Content-Type: text/plain\r\n\r\n{file}\r\n--b--\r\n"
            ))
        };
        let kinds = Kinds::builtin();
        let parse = |b| NewJob::parse_multipart("multipart/form-data; boundary=b", b, &kinds, 60);
        let a = parse(body("hello")).await.expect("valid");
        assert_eq!(a.payload, json!({"note": "hi"}));
        assert_eq!(a.files.len(), 1);
        assert_eq!(a.files[0].size, 5);
        assert_eq!(
            a.files[0].sha256,
            offload_shared::envelope::sha256_hex(b"hello")
        );
        let b = parse(body("hello")).await.expect("valid");
        let c = parse(body("other")).await.expect("valid");
        let fp = |j: &NewJob| j.idempotency("k".into()).fingerprint;
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c), "the files are part of the request");
        let plain = NewJob::parse(
            BodyFormat::Form,
            b"kind=noop&payload.note=hi",
            &Kinds::builtin(),
            60,
        )
        .expect("form");
        assert_ne!(fp(&a), fp(&plain));
        let no_boundary =
            NewJob::parse_multipart("multipart/form-data", body("x"), &Kinds::builtin(), 60).await;
        assert!(
            matches!(no_boundary, Err(ApiError::Malformed(_))),
            "{no_boundary:?}"
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("multipart/form-data; boundary=b")).ok(),
            Some(BodyFormat::Multipart)
        );
    }

    #[test]
    fn the_same_job_has_the_same_fingerprint_whatever_its_format() {
        let a = NewJob::parse(
            BodyFormat::Json,
            br#"{"kind":"sleep","payload":{"ms":5}}"#,
            &Kinds::builtin(),
            60,
        )
        .expect("json");
        let b = NewJob::parse(
            BodyFormat::Form,
            b"kind=sleep&payload=%7B%22ms%22%3A5%7D",
            &Kinds::builtin(),
            60,
        )
        .expect("form");
        let c = NewJob::parse(
            BodyFormat::Json,
            br#"{"kind":"sleep","payload":{"ms":6}}"#,
            &Kinds::builtin(),
            60,
        )
        .expect("json");
        let fp = |j: &NewJob| j.idempotency("k".into()).fingerprint;
        assert_eq!(fp(&a), fp(&b));
        assert_ne!(fp(&a), fp(&c));
        assert_eq!(fp(&a).len(), 64);
    }

    #[test]
    fn a_batch_is_checked_job_by_job_and_names_the_bad_one() {
        let ok = NewJob::parse_batch(
            br#"{"jobs":[{"kind":"noop"},{"kind":"sleep","payload":{"ms":1}}]}"#,
            &Kinds::builtin(),
            60,
        )
        .expect("valid batch");
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].kind, JobKind::parse("sleep").expect("valid"));
        let bad = NewJob::parse_batch(
            br#"{"jobs":[{"kind":"noop"},{"kind":"noop"},{"kind":"resize"}]}"#,
            &Kinds::builtin(),
            60,
        );
        assert!(
            matches!(&bad, Err(e @ ApiError::UnknownKind(_)) if e.to_string().starts_with("jobs[2]: unknown job kind")),
            "{bad:?}"
        );
        let empty = NewJob::parse_batch(br#"{"jobs":[]}"#, &Kinds::builtin(), 60);
        assert!(matches!(empty, Err(ApiError::Invalid(_))), "{empty:?}");
        let too_many = format!(
            r#"{{"jobs":[{}]}}"#,
            vec![r#"{"kind":"noop"}"#; MAX_BATCH_JOBS + 1].join(",")
        );
        let over = NewJob::parse_batch(too_many.as_bytes(), &Kinds::builtin(), 60);
        assert!(
            matches!(&over, Err(ApiError::Invalid(m)) if m.contains("1001")),
            "{over:?}"
        );
        for (body, want) in [
            ("{", 400),
            (r#"[{"kind":"noop"}]"#, 422),
            (r#"{"jobs":[],"x":1}"#, 422),
        ] {
            let got = match NewJob::parse_batch(body.as_bytes(), &Kinds::builtin(), 60) {
                Err(ApiError::Malformed(_)) => 400,
                Err(ApiError::Invalid(_)) => 422,
                other => panic!("{body}: {other:?}"),
            };
            assert_eq!(got, want, "{body}");
        }
    }

    #[test]
    fn content_types_are_recognised() {
        use BodyFormat::*;
        assert_eq!(
            BodyFormat::from_content_type(Some("application/json; charset=utf-8")).ok(),
            Some(Json)
        );
        assert_eq!(
            BodyFormat::from_content_type(Some("application/x-www-form-urlencoded")).ok(),
            Some(Form)
        );
        assert!(BodyFormat::from_content_type(Some("text/plain")).is_err());
        assert!(BodyFormat::from_content_type(None).is_err());
        assert!(BodyFormat::json_only(Some("application/json")).is_ok());
        assert!(BodyFormat::json_only(Some("application/x-www-form-urlencoded")).is_err());
    }
}
