//! Job kinds are data: a [`KindSpec`] names a kind, the JSON Schema its payloads must meet, the
//! queue its jobs go to and its defaults. Workers announce the specs of the kinds they run
//! ([`crate::announce`]); the API records them and checks every payload against the kind's
//! [`KindSchema`] before a job is accepted. Nothing here knows any particular kind.

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::limits::{MAX_JSON_DEPTH, json_depth, json_len};

/// Longest kind or queue name.
pub const MAX_NAME_LEN: usize = 64;

/// Largest payload schema a kind may announce, in bytes of JSON.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;

/// Most attempts a kind (or a job) may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;

/// Highest concurrency limit a kind (`max_running`) or a job (`concurrency_limit`) may name.
pub const MAX_CONCURRENCY_LIMIT: u32 = 10_000;

/// Longest time limit of one attempt of a long kind's job, in seconds: 24 hours.
pub const LONG_JOB_MAX_TIMEOUT_S: u64 = 86_400;

/// A name that breaks the naming rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} name {given:?} is not valid: use 1 to 64 characters of a-z 0-9 _ . -, starting with a \
     letter (e.g. \"resize\", \"pdf.render\")"
)]
pub struct NameError {
    /// "kind" or "queue".
    pub what: &'static str,
    /// What was given, cut to 80 characters.
    pub given: String,
}

/// `[a-z][a-z0-9_.-]{0,63}`: safe as an AMQP routing key, a queue-name suffix, a metric label and
/// a URL path segment, with nothing to escape anywhere.
fn check_name(raw: &str, what: &'static str) -> Result<Arc<str>, NameError> {
    let mut chars = raw.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && raw.len() <= MAX_NAME_LEN {
        Ok(Arc::from(raw))
    } else {
        Err(NameError {
            what,
            given: raw.chars().take(80).collect(),
        })
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Checks `raw` against the naming rule.
            pub fn parse(raw: &str) -> Result<Self, NameError> {
                check_name(raw, $what).map($name)
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                $name::parse(&s)
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0.to_string()
            }
        }
    };
}

name_type!(
    /// The name of a job kind: which handler runs a job, and the routing key of its messages.
    JobKind,
    "kind"
);

name_type!(
    /// The name of a work queue. Jobs of every kind naming it wait there; the queue `default`
    /// is `<prefix>.jobs`, any other `<prefix>.jobs.<name>`.
    QueueName,
    "queue"
);

impl QueueName {
    /// The name of the queue a kind uses when it names none.
    pub const DEFAULT: &str = "default";

    /// The queue `default`.
    pub fn default_queue() -> Self {
        QueueName(Arc::from(Self::DEFAULT))
    }

    /// True for the queue `default`.
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }
}

impl Default for QueueName {
    fn default() -> Self {
        QueueName::default_queue()
    }
}

/// What a kind is: its name, the schema of its payloads, its queue and its defaults. Workers
/// announce it; an operator may pin it in the API's kinds file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindSpec {
    /// The kind's name.
    pub name: JobKind,
    /// The queue its jobs go to.
    #[serde(default)]
    pub queue: QueueName,
    /// JSON Schema (draft 2020-12 unless `$schema` says otherwise) every payload must meet;
    /// `true` accepts any payload.
    #[serde(default = "any_payload")]
    pub payload_schema: Value,
    /// Runs allowed when the request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Run-time limit of one attempt in seconds when the request names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Priority of its jobs when the request names none (`normal` when this is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<crate::priority::Priority>,
    /// At most this many of its jobs queued or running at once, across every worker (the rest
    /// wait in the API's store); no limit when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// Its jobs may run for hours (a `timeout_s` up to [`LONG_JOB_MAX_TIMEOUT_S`]): a worker
    /// acknowledges such a job's delivery once it has started and holds it by a lease it renews
    /// with heartbeats, so the broker's consumer timeout never applies; the API starts the job
    /// again if the lease lapses (its worker died).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub long: bool,
}

fn any_payload() -> Value {
    Value::Bool(true)
}

/// Why a kind's spec cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("kind {kind}: {reason}")]
pub struct SpecError {
    /// The kind whose spec is wrong.
    pub kind: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl KindSpec {
    /// A spec of `name` on the queue `default` that accepts any payload.
    pub fn new(name: JobKind) -> Self {
        KindSpec {
            name,
            queue: QueueName::default_queue(),
            payload_schema: any_payload(),
            max_attempts: None,
            timeout_s: None,
            priority: None,
            max_running: None,
            long: false,
        }
    }

    /// The longest `timeout_s` a job of this kind may have: [`LONG_JOB_MAX_TIMEOUT_S`] for a
    /// long kind, else `max_timeout_s` (`OFFLOAD_MAX_JOB_TIMEOUT_S`, which keeps a job within the
    /// broker's consumer timeout).
    pub fn max_timeout_s(&self, max_timeout_s: u64) -> u64 {
        if self.long {
            LONG_JOB_MAX_TIMEOUT_S
        } else {
            max_timeout_s
        }
    }

    /// Checks the spec and compiles its schema: the schema must be a valid JSON Schema within
    /// [`MAX_SCHEMA_BYTES`] and [`MAX_JSON_DEPTH`], and the defaults in range.
    pub fn compile(&self) -> Result<KindSchema, SpecError> {
        let invalid = |reason: String| SpecError {
            kind: self.name.to_string(),
            reason,
        };
        if self.name.as_str() == crate::topology::LEGACY_ROUTING_KEY {
            return Err(invalid(
                "the name \"job\" is reserved (the routing key of jobs published before kinds \
                 had queues); choose another"
                    .to_owned(),
            ));
        }
        if let Some(n) = self.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&n)
        {
            return Err(invalid(format!(
                "max_attempts is {n}; use 1 to {MAX_ATTEMPTS_LIMIT}"
            )));
        }
        if let Some(n) = self.max_running
            && !(1..=MAX_CONCURRENCY_LIMIT).contains(&n)
        {
            return Err(invalid(format!(
                "max_running is {n}; use 1 to {MAX_CONCURRENCY_LIMIT}"
            )));
        }
        if self.timeout_s == Some(0) {
            return Err(invalid("timeout_s is 0; use at least 1".to_owned()));
        }
        if let Some(t) = self.timeout_s
            && t > LONG_JOB_MAX_TIMEOUT_S
        {
            return Err(invalid(format!(
                "timeout_s is {t}; at most {LONG_JOB_MAX_TIMEOUT_S} (24 hours, for a long kind)"
            )));
        }
        KindSchema::compile(&self.payload_schema).map_err(invalid)
    }
}

/// A kind's payload schema, compiled once and checked against every payload.
#[derive(Clone)]
pub struct KindSchema {
    validator: Arc<jsonschema::Validator>,
}

impl fmt::Debug for KindSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KindSchema")
    }
}

/// A payload that breaks its kind's schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("payload{} {message}", if pointer.is_empty() { String::new() } else { format!(" field {pointer}") })]
pub struct PayloadError {
    /// JSON pointer to the failing value (`/width`), empty for the payload as a whole.
    pub pointer: String,
    /// What the schema wants, in the validator's words.
    pub message: String,
}

impl KindSchema {
    /// Compiles `schema`, or says why it is not one. Remote `$ref`s are not fetched: a schema
    /// must be self-contained.
    pub fn compile(schema: &Value) -> Result<Self, String> {
        if !(schema.is_object() || schema.is_boolean()) {
            return Err("payload_schema must be a JSON Schema: an object or a boolean".to_owned());
        }
        let len = json_len(schema);
        if len > MAX_SCHEMA_BYTES {
            return Err(format!(
                "payload_schema is {len} bytes, above the limit of {MAX_SCHEMA_BYTES}"
            ));
        }
        let depth = json_depth(schema);
        if depth > MAX_JSON_DEPTH {
            return Err(format!(
                "payload_schema nests {depth} levels deep, above the limit of {MAX_JSON_DEPTH}"
            ));
        }
        if let Err(e) = jsonschema::meta::validate(schema) {
            let at = e.instance_path().as_str();
            let at = if at.is_empty() { "/" } else { at };
            return Err(format!(
                "payload_schema is not a valid JSON Schema at {at}: {e}"
            ));
        }
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| format!("payload_schema does not compile: {e}"))?;
        Ok(KindSchema {
            validator: Arc::new(validator),
        })
    }

    /// Checks `payload`, naming the first failing field by JSON pointer.
    pub fn check(&self, payload: &Value) -> Result<(), PayloadError> {
        match self.validator.validate(payload) {
            Ok(()) => Ok(()),
            Err(e) => Err(PayloadError {
                pointer: e.instance_path().as_str().to_owned(),
                message: e.to_string().chars().take(500).collect(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_the_rule() {
        for good in ["resize", "pdf.render", "a", "a-b_c.9", &"x".repeat(64)] {
            assert!(JobKind::parse(good).is_ok(), "{good}");
            assert!(QueueName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Resize",
            "9lives",
            "has space",
            "ünï",
            "a/b",
            &"x".repeat(65),
        ] {
            let err = JobKind::parse(bad).expect_err(bad);
            assert!(err.to_string().contains("kind name"), "{err}");
        }
        let from_json: Result<JobKind, _> = serde_json::from_value(json!("Bad Name"));
        assert!(from_json.is_err());
        assert!(QueueName::default().is_default());
    }

    #[test]
    fn specs_deserialise_with_defaults() {
        let spec: KindSpec = serde_json::from_value(json!({"name": "resize"})).expect("minimal");
        assert_eq!(
            spec,
            KindSpec::new(JobKind::parse("resize").expect("valid"))
        );
        assert!(spec.compile().is_ok());
    }

    #[test]
    fn schemas_are_checked_and_name_the_failing_field() {
        let mut spec = KindSpec::new(JobKind::parse("resize").expect("valid"));
        spec.payload_schema = json!({
            "type": "object",
            "properties": {"width": {"type": "integer", "minimum": 1}},
            "required": ["width"],
            "additionalProperties": false
        });
        let schema = spec.compile().expect("valid schema");
        assert!(schema.check(&json!({"width": 10})).is_ok());
        let err = schema
            .check(&json!({"width": "wide"}))
            .expect_err("wrong type");
        assert_eq!(err.pointer, "/width");
        assert!(
            err.to_string().starts_with("payload field /width "),
            "{err}"
        );
        let whole = schema.check(&json!([])).expect_err("not an object");
        assert_eq!(whole.pointer, "");
    }

    #[test]
    fn bad_specs_say_why() {
        let base = KindSpec::new(JobKind::parse("k").expect("valid"));
        let cases = [
            (json!("string"), "an object or a boolean"),
            (json!({"type": "nonsense"}), "not a valid JSON Schema"),
            (json!({"minimum": "one"}), "not a valid JSON Schema"),
            (
                json!({"description": "x".repeat(MAX_SCHEMA_BYTES)}),
                "above the limit",
            ),
        ];
        for (schema, expected) in cases {
            let spec = KindSpec {
                payload_schema: schema.clone(),
                ..base.clone()
            };
            let err = spec.compile().expect_err("refused");
            assert!(err.to_string().contains(expected), "{schema}: {err}");
        }
        let spec = KindSpec {
            max_attempts: Some(0),
            ..base
        };
        assert!(
            spec.compile()
                .expect_err("0 attempts")
                .reason
                .contains("max_attempts")
        );
    }
}
