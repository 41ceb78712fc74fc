//! Decoding a `multipart/form-data` body of `POST /jobs`: its text parts are the HTML form's
//! fields ([`super::form`]), its file parts the job's input files. The body is already in
//! memory (read under the body limit and timeout), so multer reads it from one chunk.

use axum::body::Bytes;

use offload_shared::envelope::MAX_INPUT_FILES;

use super::form::{self, FormError, FormFields};

/// Most parts one multipart body may have (text fields and files together): a body of many
/// tiny parts is refused at this count instead of being decoded part by part.
pub const MAX_PARTS: usize = 256;

/// A file part of a multipart submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upload {
    /// The form field it was sent under.
    pub field: String,
    /// The file name the client gave; `None` when it gave an empty one.
    pub filename: Option<String>,
    /// Its declared media type (`application/octet-stream` when none).
    pub content_type: String,
    /// Its bytes.
    pub data: Bytes,
}

/// The boundary of a `multipart/form-data` content type, or why there is none (400).
pub fn boundary(content_type: &str) -> Result<String, FormError> {
    multer::parse_boundary(content_type).map_err(|_| {
        FormError::Malformed(
            "multipart/form-data needs a boundary parameter in its Content-Type".into(),
        )
    })
}

/// Decodes `body` (a whole multipart body with `boundary`) into the form's fields and files.
pub async fn decode(body: Bytes, boundary: &str) -> Result<(FormFields, Vec<Upload>), FormError> {
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut pairs = Vec::new();
    let mut files: Vec<Upload> = Vec::new();
    let mut parts = 0usize;
    while let Some(field) = multipart.next_field().await.map_err(malformed)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(FormError::Invalid(format!(
                "the form has more than {MAX_PARTS} parts; at most {MAX_PARTS} are accepted"
            )));
        }
        let Some(name) = field.name().map(str::to_owned) else {
            return Err(FormError::Malformed(
                "a part of the form has no name (Content-Disposition: form-data; name=...)".into(),
            ));
        };
        match field.file_name().map(str::to_owned) {
            Some(filename) => {
                let content_type = field.content_type().map_or_else(
                    || "application/octet-stream".to_owned(),
                    ToString::to_string,
                );
                let data = field.bytes().await.map_err(malformed)?;
                // What a browser sends for a file input left empty.
                if filename.is_empty() && data.is_empty() {
                    continue;
                }
                if is_form_field(&name) {
                    return Err(FormError::Invalid(format!(
                        "form field `{name}` is text; it cannot be a file"
                    )));
                }
                if files.iter().any(|f| f.field == name) {
                    return Err(FormError::Invalid(format!(
                        "form: more than one file in field `{}`",
                        name.chars().take(100).collect::<String>()
                    )));
                }
                if files.len() == MAX_INPUT_FILES {
                    return Err(FormError::Invalid(format!(
                        "the form has more than {MAX_INPUT_FILES} files; at most \
                         {MAX_INPUT_FILES} are accepted"
                    )));
                }
                files.push(Upload {
                    field: name,
                    filename: Some(filename).filter(|f| !f.is_empty()),
                    content_type,
                    data,
                });
            }
            None => {
                let bytes = field.bytes().await.map_err(malformed)?;
                let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                    FormError::Malformed(format!(
                        "form field `{}` is not UTF-8 text",
                        name.chars().take(100).collect::<String>()
                    ))
                })?;
                pairs.push((name, text));
            }
        }
    }
    let fields = form::from_pairs(pairs)?;
    Ok((fields, files))
}

/// True for the names of the form's text fields.
fn is_form_field(name: &str) -> bool {
    matches!(name, "kind" | "payload" | "max_attempts" | "timeout_s")
        || name.starts_with(form::PAYLOAD_KEY_PREFIX)
}

fn malformed(e: multer::Error) -> FormError {
    FormError::Malformed(format!("multipart/form-data: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const B: &str = "XyZ";

    fn part(name: &str, filename: Option<&str>, body: &[u8]) -> Vec<u8> {
        let mut out =
            format!("--{B}\r\nContent-Disposition: form-data; name=\"{name}\"").into_bytes();
        if let Some(f) = filename {
            out.extend(format!("; filename=\"{f}\"\r\nContent-Type: image/png").as_bytes());
        }
        out.extend(b"\r\n\r\n");
        out.extend(body);
        out.extend(b"\r\n");
        out
    }

    fn body(parts: &[Vec<u8>]) -> Bytes {
        let mut out: Vec<u8> = parts.concat();
        out.extend(format!("--{B}--\r\n").as_bytes());
        out.into()
    }

    fn run(b: Bytes) -> Result<(FormFields, Vec<Upload>), FormError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(decode(b, B))
    }

    #[test]
    fn text_fields_files_and_payload_keys() {
        let (fields, files) = run(body(&[
            part("kind", None, b"noop"),
            part("payload", None, br#"{"a":1,"note":"x"}"#),
            part("payload.note", None, b"hi"),
            part("payload.n", None, b"42"),
            part("payload.flag", None, b"true"),
            part("payload.list", None, b"[1,2]"),
            part("payload.quoted", None, br#""q""#),
            part("image", Some("a.png"), b"\x89PNG\x00\xff"),
            part("empty", Some(""), b""),
        ]))
        .expect("decodes");
        assert_eq!(fields.kind, "noop");
        assert_eq!(
            fields.payload,
            Some(json!({"a":1,"note":"hi","n":42,"flag":true,"list":[1,2],"quoted":"\"q\""}))
        );
        assert_eq!(files.len(), 1, "the empty file input is ignored");
        assert_eq!(files[0].field, "image");
        assert_eq!(files[0].filename.as_deref(), Some("a.png"));
        assert_eq!(files[0].content_type, "image/png");
        assert_eq!(&files[0].data[..], b"\x89PNG\x00\xff");
    }

    #[test]
    fn hostile_bodies_are_refused_as_400_or_422() {
        let many: Vec<Vec<u8>> = (0..=MAX_PARTS)
            .map(|i| part(&format!("payload.k{i}"), None, b"1"))
            .collect();
        let files: Vec<Vec<u8>> = std::iter::once(part("kind", None, b"noop"))
            .chain((0..=MAX_INPUT_FILES).map(|i| part(&format!("f{i}"), Some("x"), b"1")))
            .collect();
        let cases: Vec<(Bytes, bool, &str)> = vec![
            (body(&many), false, "more parts than the limit"),
            (body(&files), false, "more files than the limit"),
            (
                body(&[part("kind", None, b"\xff\xfe")]),
                true,
                "non-UTF-8 text field",
            ),
            (
                body(&[part("kind", None, b"noop"), part("colour", None, b"red")]),
                false,
                "unknown field",
            ),
            (body(&[part("payload", None, b"{}")]), false, "kind missing"),
            (
                body(&[part("kind", None, b"a"), part("kind", None, b"b")]),
                false,
                "kind twice",
            ),
            (
                body(&[
                    part("kind", None, b"noop"),
                    part("f", Some("a"), b"1"),
                    part("f", Some("b"), b"2"),
                ]),
                false,
                "two files in one field",
            ),
            (
                body(&[part("kind", Some("k.txt"), b"noop")]),
                false,
                "a text field sent as a file",
            ),
            (
                body(&[
                    part("kind", None, b"noop"),
                    part("payload", None, b"[1]"),
                    part("payload.a", None, b"1"),
                ]),
                false,
                "payload keys over a payload that is not an object",
            ),
            (
                Bytes::from_static(
                    b"--XyZ\r\nContent-Disposition: form-data; name=\"kind\"\r\n\r\nnoop",
                ),
                true,
                "truncated",
            ),
            (
                Bytes::from_static(b"no multipart here"),
                true,
                "not multipart at all",
            ),
            (
                Bytes::from_static(b"--XyZ\r\nContent-Type: text/plain\r\n\r\nx\r\n--XyZ--\r\n"),
                true,
                "a part without a name",
            ),
        ];
        for (b, malformed, why) in cases {
            match run(b) {
                Err(FormError::Malformed(_)) if malformed => {}
                Err(FormError::Invalid(_)) if !malformed => {}
                other => panic!("{why}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_content_type_without_a_boundary_is_malformed() {
        assert!(matches!(
            boundary("multipart/form-data"),
            Err(FormError::Malformed(_))
        ));
        assert_eq!(
            boundary("multipart/form-data; boundary=abc")
                .ok()
                .as_deref(),
            Some("abc")
        );
    }
}
