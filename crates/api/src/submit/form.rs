//! Decoding the HTML form of `POST /jobs` into its fields. It needs only serde, so the fuzz
//! target of the form parser (`fuzz/fuzz_targets/submit_form.rs`) compiles this file on its own.

use serde::Deserialize;
use serde_json::Value;

/// The form as sent: every field is text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FormRequest {
    kind: String,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    max_attempts: Option<String>,
    #[serde(default)]
    timeout_s: Option<String>,
}

/// The form's fields, typed; an empty field is absent.
#[derive(Debug, Clone, PartialEq)]
pub struct FormFields {
    /// The kind, as given (checked later, with the other fields).
    pub kind: String,
    /// The payload, parsed from its JSON text.
    pub payload: Option<Value>,
    /// Attempts (saturated at `u32::MAX`: the range check refuses it).
    pub max_attempts: Option<u32>,
    /// Run-time limit in seconds.
    pub timeout_s: Option<u64>,
}

/// Why a form does not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormError {
    /// Not text at all (400).
    Malformed(String),
    /// Text, but not the form of a job (422).
    Invalid(String),
}

/// Decodes an `application/x-www-form-urlencoded` body.
pub fn decode(body: &[u8]) -> Result<FormFields, FormError> {
    std::str::from_utf8(body)
        .map_err(|e| FormError::Malformed(format!("form data is not UTF-8: {e}")))?;
    let form: FormRequest =
        serde_urlencoded::from_bytes(body).map_err(|e| FormError::Invalid(format!("form: {e}")))?;
    let non_empty = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let payload = non_empty(form.payload)
        .map(|text| {
            serde_json::from_str::<Value>(&text)
                .map_err(|e| FormError::Invalid(format!("form field payload is not JSON: {e}")))
        })
        .transpose()?;
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
        number("max_attempts", form.max_attempts)?.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    Ok(FormFields {
        kind: form.kind,
        payload,
        max_attempts,
        timeout_s: number("timeout_s", form.timeout_s)?,
    })
}
