//! The job envelope, version 1 of the wire contract: the JSON body of every job message.
//!
//! AMQP properties travel beside it: `delivery_mode=2`, `message_id` = job id,
//! `content_type=application/json`, `type` = kind, `timestamp`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::kinds::JobKind;

/// Version of the envelope and event formats this build writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// A job's id: a UUID v7, so ids sort by submission time. Also the AMQP `message_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    /// The id that is this UUID (a v7 one sorts by its time).
    pub fn from_uuid(uuid: Uuid) -> Self {
        JobId(uuid)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// The body of a job message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEnvelope {
    /// Wire version; see [`WIRE_VERSION`].
    pub v: u32,
    /// The job's id.
    pub id: JobId,
    /// Which handler runs it.
    pub kind: JobKind,
    /// The handler's input: checked against the kind's schema by the API; a handler still
    /// parses it (another producer may have published the job).
    pub payload: Value,
    /// 1 for the first run; counts runs the job was given, not broker redeliveries.
    pub attempt: u32,
    /// Runs allowed before the job is dead-lettered.
    pub max_attempts: u32,
    /// Run-time limit of one attempt.
    pub timeout_ms: u64,
    /// When the API accepted the job.
    #[serde(with = "time::serde::rfc3339")]
    pub submitted_at: OffsetDateTime,
    /// The job's input files (`multipart/form-data` uploads), by form field; absent when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<EnvelopeFile>,
}

/// Most input files one job carries.
pub const MAX_INPUT_FILES: usize = 16;

/// One input file in a job envelope: its bytes as standard base64 with their size and SHA-256,
/// so a receiver can tell a damaged file from a good one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeFile {
    /// The form field the file was uploaded under: handlers find it by this name.
    pub field: String,
    /// The file name the client gave, if any.
    #[serde(default)]
    pub filename: Option<String>,
    /// Its media type as the client declared it (`application/octet-stream` when it did not).
    pub content_type: String,
    /// Its length in bytes (decoded).
    pub size: u64,
    /// Lower-case hex SHA-256 of its bytes (decoded).
    pub sha256: String,
    /// Its bytes, standard base64 with padding.
    pub data: String,
}

/// Why an [`EnvelopeFile`] does not decode to the file it describes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    /// `data` is not standard base64.
    #[error("input file {0:?}: data is not standard base64")]
    Base64(String),
    /// The decoded length is not `size`.
    #[error("input file {field:?}: {got} bytes, the envelope says {want}")]
    Size {
        /// The file's field.
        field: String,
        /// Decoded bytes.
        got: u64,
        /// The declared size.
        want: u64,
    },
    /// The decoded bytes' SHA-256 is not `sha256`.
    #[error("input file {0:?}: its SHA-256 does not match the envelope's")]
    Digest(String),
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl EnvelopeFile {
    /// The envelope entry for a file's bytes.
    pub fn new(
        field: String,
        filename: Option<String>,
        content_type: String,
        bytes: &[u8],
    ) -> Self {
        use base64::Engine;
        EnvelopeFile {
            field,
            filename,
            content_type,
            size: bytes.len() as u64,
            sha256: sha256_hex(bytes),
            data: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// The file's bytes, checked against its size and SHA-256.
    pub fn decode(&self) -> Result<Vec<u8>, FileError> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(self.data.as_bytes())
            .map_err(|_| FileError::Base64(self.field.clone()))?;
        if bytes.len() as u64 != self.size {
            return Err(FileError::Size {
                field: self.field.clone(),
                got: bytes.len() as u64,
                want: self.size,
            });
        }
        if !sha256_hex(&bytes).eq_ignore_ascii_case(&self.sha256) {
            return Err(FileError::Digest(self.field.clone()));
        }
        Ok(bytes)
    }
}

/// Why a message body is not a job envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or not the envelope's shape.
    #[error("message body is not a job envelope: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A version this build does not read.
    #[error("envelope version {0} is not supported (this build reads version {WIRE_VERSION})")]
    Version(u32),
}

impl JobEnvelope {
    /// Serialises the envelope for publishing.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising a struct of plain fields and a `Value` cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and checks a message body.
    pub fn from_bytes(body: &[u8]) -> Result<Self, EnvelopeError> {
        let env: JobEnvelope = serde_json::from_slice(body)?;
        if env.v != WIRE_VERSION {
            return Err(EnvelopeError::Version(env.v));
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> JobEnvelope {
        JobEnvelope {
            v: WIRE_VERSION,
            id: JobId::new(),
            kind: JobKind::parse("sleep").expect("valid"),
            payload: json!({"ms": 10}),
            attempt: 1,
            max_attempts: 5,
            timeout_ms: 1000,
            submitted_at: OffsetDateTime::UNIX_EPOCH,
            files: Vec::new(),
        }
    }

    #[test]
    fn files_round_trip_and_are_absent_when_none() {
        let env = sample();
        let text = String::from_utf8(env.to_bytes()).expect("utf-8");
        assert!(!text.contains("files"), "{text}");
        let mut env = sample();
        env.files.push(EnvelopeFile::new(
            "image".into(),
            Some("a.png".into()),
            "image/png".into(),
            b"\x89PNG bytes",
        ));
        let back = JobEnvelope::from_bytes(&env.to_bytes()).expect("parses");
        assert_eq!(back, env);
        assert_eq!(back.files[0].decode().expect("intact"), b"\x89PNG bytes");
        assert_eq!(back.files[0].size, 10);
    }

    #[test]
    fn damaged_files_are_refused_saying_how() {
        let good = EnvelopeFile::new("f".into(), None, "text/plain".into(), b"hello");
        assert_eq!(
            good.sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let mut bad = good.clone();
        bad.data = "not base64!".into();
        assert!(matches!(bad.decode(), Err(FileError::Base64(_))));
        let mut bad = good.clone();
        bad.size = 6;
        assert!(matches!(bad.decode(), Err(FileError::Size { got: 5, .. })));
        let mut bad = good.clone();
        bad.sha256 = sha256_hex(b"other");
        assert!(matches!(bad.decode(), Err(FileError::Digest(_))));
    }

    #[test]
    fn round_trips() {
        let env = sample();
        let back = JobEnvelope::from_bytes(&env.to_bytes()).expect("parses");
        assert_eq!(back, env);
        let text = String::from_utf8(env.to_bytes()).expect("utf-8");
        assert!(text.contains("\"kind\":\"sleep\""), "{text}");
        assert!(
            text.contains("\"submitted_at\":\"1970-01-01T00:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn numbers_keep_their_text_through_the_envelope() {
        // serde_json's `arbitrary_precision`: a number is carried as the text it was sent as
        // (no `1e15` becoming `1000000000000000.0`, no precision lost). The one rewrite is of
        // exponents: `E` is written `e`, and an unsigned exponent gets its `+`, so a number
        // grows by at most one byte.
        for (sent, carried) in [
            ("1e15", "1e+15"),
            ("1e999", "1e+999"),
            ("-0", "-0"),
            ("1.0", "1.0"),
            ("12345678901234567890123", "12345678901234567890123"),
            ("-1.5E-7", "-1.5e-7"),
            ("2E+3", "2e+3"),
            ("0.1", "0.1"),
        ] {
            let payload: Value =
                serde_json::from_str(&format!("{{\"n\":{sent}}}")).expect("parses");
            let mut env = sample();
            env.payload = payload;
            let bytes = env.to_bytes();
            let text = String::from_utf8(bytes.clone()).expect("utf-8");
            assert!(
                text.contains(&format!("\"payload\":{{\"n\":{carried}}}")),
                "{sent}: {text}"
            );
            assert!(carried.len() <= sent.len() + 1, "{sent}");
            let back = JobEnvelope::from_bytes(&bytes).expect("parses back");
            assert_eq!(back.payload.to_string(), format!("{{\"n\":{carried}}}"));
        }
    }

    #[test]
    fn strings_never_grow_when_reserialised() {
        // Escapes come out no longer than they went in: `\u00e9` becomes `é`, `\/` becomes `/`,
        // and a control character is written with the shortest escape JSON allows.
        let sent = r#"["\u00e9\/\n\u0001\"\\ \ud83d\ude00"]"#;
        let value: Value = serde_json::from_str(sent).expect("parses");
        let out = value.to_string();
        assert!(out.len() <= sent.len(), "{out} is longer than {sent}");
    }

    #[test]
    fn garbage_and_other_versions_are_refused() {
        assert!(JobEnvelope::from_bytes(b"not json").is_err());
        assert!(JobEnvelope::from_bytes(b"{}").is_err());
        let mut env = sample();
        env.v = 2;
        assert!(matches!(
            JobEnvelope::from_bytes(&env.to_bytes()),
            Err(EnvelopeError::Version(2))
        ));
        let mut bad_kind = serde_json::to_value(sample()).expect("json");
        bad_kind["kind"] = json!("Not A Kind");
        let err = JobEnvelope::from_bytes(bad_kind.to_string().as_bytes()).expect_err("kind");
        assert!(err.to_string().contains("kind name"), "{err}");
    }

    #[test]
    fn ids_are_v7_and_time_ordered() {
        let a = JobId::new();
        let b = JobId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b);
    }
}
