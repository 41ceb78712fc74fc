//! Decoding the HTML form of `POST /jobs` into its fields, urlencoded or (its text fields)
//! multipart. It needs only serde, so the fuzz target of the form parser
//! (`fuzz/fuzz_targets/submit_form.rs`) compiles this file on its own.

use serde_json::{Map, Value};

/// The form's fields, typed; an empty field is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct FormFields {
    /// The kind, as given (checked later, with the other fields).
    pub kind: String,
    /// The payload: `payload` parsed from its JSON text, with the `payload.<key>` fields set
    /// over it.
    pub payload: Option<Value>,
    /// Attempts (saturated at `u32::MAX`: the range check refuses it).
    pub max_attempts: Option<u32>,
    /// Run-time limit in seconds.
    pub timeout_s: Option<u64>,
    /// When to run it (RFC 3339 text, checked later).
    pub run_at: Option<String>,
    /// Seconds from now to run it.
    pub delay_s: Option<u64>,
    /// `normal` or `high` (checked later).
    pub priority: Option<String>,
    /// The concurrency key (checked later).
    pub concurrency_key: Option<String>,
    /// The key's limit.
    pub concurrency_limit: Option<u32>,
}

/// Why a form does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Not text at all (400).
    Malformed(String),
    /// Text, but not the form of a job (422).
    Invalid(String),
}

/// The prefix of a field that sets one top-level key of the payload.
pub const PAYLOAD_KEY_PREFIX: &str = "payload.";

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn decode(body: &[u8]) -> Result<FormFields, FormError> {
    std::str::from_utf8(body)
        .map_err(|e| FormError::Malformed(format!("form data is not UTF-8: {e}")))?;
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|e| FormError::Invalid(format!("form: {e}")))?;
    from_pairs(pairs)
}

/// A `payload.<key>` value: JSON if it reads as a JSON number, boolean, null, object or array;
/// otherwise the text itself (so `hi` and `"hi"` are both strings, the second with its quotes).
fn loose_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::String(_)) | Err(_) => Value::String(text.to_owned()),
        Ok(value) => value,
    }
}

/// The fields of a form from its `(name, value)` pairs, in order. Each of `kind`, `payload`,
/// `max_attempts`, `timeout_s`, `run_at`, `delay_s`, `priority`, `concurrency_key`,
/// `concurrency_limit` and `payload.<key>` may appear once; any other name is refused, all of
/// them named.
pub fn from_pairs(pairs: Vec<(String, String)>) -> Result<FormFields, FormError> {
    let mut kind = None;
    let mut payload = None;
    let mut max_attempts = None;
    let mut timeout_s = None;
    let mut run_at = None;
    let mut delay_s = None;
    let mut priority = None;
    let mut concurrency_key = None;
    let mut concurrency_limit = None;
    let mut keys: Map<String, Value> = Map::new();
    let mut unknown = Vec::new();
    for (name, value) in pairs {
        let slot = match name.as_str() {
            "kind" => &mut kind,
            "payload" => &mut payload,
            "max_attempts" => &mut max_attempts,
            "timeout_s" => &mut timeout_s,
            "run_at" => &mut run_at,
            "delay_s" => &mut delay_s,
            "priority" => &mut priority,
            "concurrency_key" => &mut concurrency_key,
            "concurrency_limit" => &mut concurrency_limit,
            other => {
                match other.strip_prefix(PAYLOAD_KEY_PREFIX) {
                    // An empty field is an input left blank: the key is left out, so the
                    // kind's default applies (a form cannot send an empty string).
                    Some(key) if !key.is_empty() && value.is_empty() => {}
                    Some(key) if !key.is_empty() => {
                        if keys.insert(key.to_owned(), loose_value(&value)).is_some() {
                            return Err(FormError::Invalid(format!(
                                "form: duplicate field `{name}`"
                            )));
                        }
                    }
                    _ => unknown.push(format!("`{}`", shown(other))),
                }
                continue;
            }
        };
        if slot.replace(value).is_some() {
            return Err(FormError::Invalid(format!(
                "form: duplicate field `{name}`"
            )));
        }
    }
    if !unknown.is_empty() {
        return Err(FormError::Invalid(format!(
            "form: unknown field{} {}, expected one of `kind`, `payload`, `payload.<key>`, \
             `max_attempts`, `timeout_s`, `run_at`, `delay_s`, `priority`, `concurrency_key`, \
             `concurrency_limit`",
            if unknown.len() == 1 { "" } else { "s" },
            unknown.join(", ")
        )));
    }
    let kind = kind.ok_or_else(|| FormError::Invalid("form: missing field `kind`".into()))?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let mut payload = non_empty(payload)
        .map(|text| {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| FormError::Invalid(format!("form field payload is not JSON: {e}")))
        })
        .transpose()?;
    if !keys.is_empty() {
        match payload.get_or_insert_with(|| Value::Object(Map::new())) {
            Value::Object(object) => object.extend(keys),
            _ => {
                return Err(FormError::Invalid(
                    "form: `payload.<key>` fields need `payload` to be a JSON object (or absent)"
                        .into(),
                ));
            }
        }
    }
    let number = |field: &str, v: Option<String>| -> Result<Option<u64>, FormError> {
        non_empty(v)
            .map(|t| {
                t.trim().parse::<u64>().map_err(|_| {
                    FormError::Invalid(format!("form field {field} is not a whole number: {t:?}"))
                })
            })
            .transpose()
    };
    let max_attempts =
        number("max_attempts", max_attempts)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(FormFields {
        kind,
        payload,
        max_attempts,
        timeout_s: number("timeout_s", timeout_s)?,
        run_at: non_empty(run_at).map(|t| t.trim().to_owned()),
        delay_s: number("delay_s", delay_s)?,
        priority: non_empty(priority).map(|p| p.trim().to_owned()),
        // As given: a key is any text, spaces included (an empty field is absent).
        concurrency_key: concurrency_key.filter(|k| !k.is_empty()),
        concurrency_limit: number("concurrency_limit", concurrency_limit)?
            .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
    })
}

/// A field name as an error shows it: at most 100 characters.
fn shown(name: &str) -> String {
    name.chars().take(100).collect()
}
