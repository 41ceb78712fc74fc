//! Artifacts on the wire: files a handler returns beside its JSON result. Each one travels as its
//! own persistent message on `<prefix>.artifacts` (raw bytes, its media type as the content type,
//! the headers below), confirmed before the job's success event, which lists them by
//! [`ArtifactMeta`].

use serde::{Deserialize, Serialize};

/// Header of an artifact message: the job's id.
pub const JOB_ID_HEADER: &str = "job_id";
/// Header of an artifact message: the attempt that produced it.
pub const ATTEMPT_HEADER: &str = "attempt";
/// Header of an artifact message: its name.
pub const NAME_HEADER: &str = "name";
/// Header of an artifact message: the SHA-256 of its bytes, lowercase hex.
pub const SHA256_HEADER: &str = "sha256";
/// Header of an artifact message: its size in bytes.
pub const SIZE_HEADER: &str = "size";

/// Longest artifact name, in characters.
pub const MAX_NAME_CHARS: usize = 128;

/// What a message carries besides an artifact's bytes: its properties and headers.
pub const ARTIFACT_OVERHEAD_BYTES: u64 = 4096;

/// An artifact as the success event lists it (its bytes travel apart).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactMeta {
    /// Its file name, unique within the job.
    pub name: String,
    /// Its media type.
    pub content_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// The SHA-256 of its bytes, lowercase hex.
    pub sha256: String,
}

/// Why `name` cannot name an artifact, if it cannot: it must be 1 to [`MAX_NAME_CHARS`]
/// characters without `/`, `\` or control characters (it becomes a download's file name).
pub fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!(
            "artifact name {:?} is {chars} characters; use 1 to {MAX_NAME_CHARS}",
            name.chars().take(MAX_NAME_CHARS).collect::<String>()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| matches!(c, '/' | '\\') || c.is_control())
    {
        return Err(format!(
            "artifact name {name:?} contains {bad:?}; names may not contain '/', '\\' or control characters"
        ));
    }
    Ok(())
}

/// Why `content_type` cannot be an artifact's media type, if it cannot: it must be printable
/// ASCII of at most 255 bytes (it travels as an AMQP short string and an HTTP header).
pub fn check_content_type(content_type: &str) -> Result<(), String> {
    if content_type.is_empty()
        || content_type.len() > 255
        || !content_type.bytes().all(|b| (0x20..0x7f).contains(&b))
    {
        return Err(format!(
            "artifact content type {:?} is not 1 to 255 printable ASCII characters",
            content_type.chars().take(64).collect::<String>()
        ));
    }
    Ok(())
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_plain_file_names() {
        let longest = "a".repeat(MAX_NAME_CHARS);
        let too_long = "é".repeat(MAX_NAME_CHARS + 1);
        let cases: [(&str, bool, &str); 9] = [
            ("out.png", true, "a file name"),
            ("résumé final.pdf", true, "spaces and non-ASCII letters"),
            (longest.as_str(), true, "at the limit"),
            (
                too_long.as_str(),
                false,
                "one character over (counted in characters)",
            ),
            ("", false, "empty"),
            ("a/b", false, "a slash"),
            ("a\\b", false, "a backslash"),
            ("a\nb", false, "a newline"),
            ("a\u{7f}", false, "DEL"),
        ];
        for (name, ok, why) in cases {
            assert_eq!(
                check_name(name).is_ok(),
                ok,
                "{why}: {:?}",
                check_name(name)
            );
        }
        let err = check_name("x/y").expect_err("refused");
        assert!(err.contains("\"x/y\"") && err.contains("'/'"), "{err}");
    }

    #[test]
    fn content_types_are_printable_ascii() {
        assert!(check_content_type("image/png").is_ok());
        assert!(check_content_type("text/html; charset=utf-8").is_ok());
        assert!(check_content_type("").is_err());
        assert!(check_content_type("text/plain\r\nX: y").is_err());
        assert!(check_content_type(&"a".repeat(256)).is_err());
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0, 15, 255]), "000fff");
    }
}
